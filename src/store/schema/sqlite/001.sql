-- berth metadata, SQLite, schema version 1 (PRAGMA user_version): the tables of every release
-- before versions were recorded, so a database made by one of them migrates by running this file
-- (every statement is IF NOT EXISTS) and recording version 1.
CREATE TABLE IF NOT EXISTS blobs(digest TEXT PRIMARY KEY, size INTEGER NOT NULL,
  created INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repos(name TEXT PRIMARY KEY, created INTEGER NOT NULL,
  mirrored INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repo_blobs(repo TEXT NOT NULL, digest TEXT NOT NULL,
  linked INTEGER NOT NULL, PRIMARY KEY(repo, digest)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS repo_blobs_digest ON repo_blobs(digest);
CREATE TABLE IF NOT EXISTS manifests(repo TEXT NOT NULL, digest TEXT NOT NULL,
  media_type TEXT NOT NULL, content BLOB NOT NULL, subject TEXT, artifact_type TEXT,
  annotations TEXT, created INTEGER NOT NULL, mirrored INTEGER NOT NULL DEFAULT 0,
  accessed INTEGER, PRIMARY KEY(repo, digest));
CREATE INDEX IF NOT EXISTS manifests_subject ON manifests(repo, subject)
  WHERE subject IS NOT NULL;
CREATE TABLE IF NOT EXISTS manifest_refs(repo TEXT NOT NULL, digest TEXT NOT NULL,
  child TEXT NOT NULL, kind INTEGER NOT NULL, PRIMARY KEY(repo, digest, child, kind))
  WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS manifest_refs_child ON manifest_refs(child, kind, repo);
CREATE TABLE IF NOT EXISTS tags(repo TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL,
  updated INTEGER NOT NULL, checked INTEGER, PRIMARY KEY(repo, tag)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_digest ON tags(repo, digest);
CREATE TABLE IF NOT EXISTS leases(key TEXT PRIMARY KEY, owner TEXT NOT NULL,
  until INTEGER NOT NULL) WITHOUT ROWID;

-- Helm charts (a view over manifests, see src/helm/): manifests of Helm charts carry their
-- index.yaml entry. charts_changes logs every change to the set of indexed charts by repository,
-- written by triggers so every writer (server, `berth gc`, eviction) records it; an index cache
-- catches up by re-reading only the repositories logged since its sequence number. The log keeps
-- its last 50,000 changes; a cache older than that rebuilds.
CREATE TABLE IF NOT EXISTS charts(repo TEXT NOT NULL, digest TEXT NOT NULL, tag TEXT NOT NULL,
  entry TEXT NOT NULL, yaml TEXT NOT NULL, PRIMARY KEY(repo, digest)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS charts_changes(seq INTEGER PRIMARY KEY, repo TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS charts_changes_prune AFTER INSERT ON charts_changes
  WHEN NEW.seq % 1000 = 0
  BEGIN DELETE FROM charts_changes WHERE seq < NEW.seq - 50000; END;
-- a chart row lives as long as its manifest
CREATE TRIGGER IF NOT EXISTS charts_manifest_del AFTER DELETE ON manifests
  BEGIN DELETE FROM charts WHERE repo = OLD.repo AND digest = OLD.digest; END;
-- every change to charts
CREATE TRIGGER IF NOT EXISTS charts_ins AFTER INSERT ON charts
  BEGIN INSERT INTO charts_changes(repo) VALUES(NEW.repo); END;
CREATE TRIGGER IF NOT EXISTS charts_upd AFTER UPDATE ON charts
  BEGIN INSERT INTO charts_changes(repo) VALUES(NEW.repo); END;
CREATE TRIGGER IF NOT EXISTS charts_del AFTER DELETE ON charts
  BEGIN INSERT INTO charts_changes(repo) VALUES(OLD.repo); END;
-- tags moving onto, off or between chart manifests
CREATE TRIGGER IF NOT EXISTS charts_tag_ins AFTER INSERT ON tags
  WHEN EXISTS (SELECT 1 FROM charts c WHERE c.repo = NEW.repo AND c.digest = NEW.digest)
  BEGIN INSERT INTO charts_changes(repo) VALUES(NEW.repo); END;
CREATE TRIGGER IF NOT EXISTS charts_tag_upd AFTER UPDATE OF digest ON tags
  WHEN OLD.digest != NEW.digest AND EXISTS (SELECT 1 FROM charts c WHERE c.repo = NEW.repo
    AND c.digest IN (OLD.digest, NEW.digest))
  BEGIN INSERT INTO charts_changes(repo) VALUES(NEW.repo); END;
CREATE TRIGGER IF NOT EXISTS charts_tag_del AFTER DELETE ON tags
  WHEN EXISTS (SELECT 1 FROM charts c WHERE c.repo = OLD.repo AND c.digest = OLD.digest)
  BEGIN INSERT INTO charts_changes(repo) VALUES(OLD.repo); END;
