-- schema version 2: event notifications (src/notify/). Every change a notifications endpoint may
-- hear of is one row of events, inserted in the transaction of the change it reports (pulls, which
-- change nothing, in their own insert). seq only grows (AUTOINCREMENT: never reused after rows are
-- pruned), so an endpoint's cursor (event_cursors: the last seq it acknowledged with a 2xx) names
-- exactly what it still has to receive; rows every configured endpoint has are pruned.
CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT NOT NULL,
  created INTEGER NOT NULL, action TEXT NOT NULL, repo TEXT NOT NULL, digest TEXT,
  media_type TEXT, size INTEGER, tag TEXT, context TEXT, refs TEXT);
CREATE TABLE IF NOT EXISTS event_cursors(endpoint TEXT PRIMARY KEY, seq INTEGER NOT NULL)
  WITHOUT ROWID;
