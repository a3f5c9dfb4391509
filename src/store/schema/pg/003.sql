-- schema version 3: event notifications (src/notify/). Every change a notifications endpoint may
-- hear of is one row of events, inserted in the transaction of the change it reports (pulls, which
-- change nothing, in their own insert). Writers hold the advisory write lock for the whole
-- transaction, so seq values commit in the order they were taken; an endpoint's cursor
-- (event_cursors: the last seq it acknowledged with a 2xx) names what it still has to receive.
CREATE TABLE IF NOT EXISTS events(seq BIGSERIAL PRIMARY KEY, uuid TEXT COLLATE "C" NOT NULL,
  created BIGINT NOT NULL, action TEXT COLLATE "C" NOT NULL, repo TEXT COLLATE "C" NOT NULL,
  digest TEXT COLLATE "C", media_type TEXT COLLATE "C", size BIGINT, tag TEXT COLLATE "C",
  context TEXT, refs TEXT);
CREATE TABLE IF NOT EXISTS event_cursors(endpoint TEXT COLLATE "C" PRIMARY KEY,
  seq BIGINT NOT NULL);
