-- schema version 2: leases shared by the replicas (one upstream fetch per blob during a mirror
-- fill)
CREATE TABLE IF NOT EXISTS leases(key TEXT COLLATE "C" PRIMARY KEY, owner TEXT COLLATE "C" NOT NULL,
  until BIGINT NOT NULL);
