/*
 * meta_sqlite: the embedded metadata backend (SQLite in WAL mode, synchronous=FULL so a 201 is
 * durable). Connections live in a small pool; each keeps its own prepared statements, so a
 * manifest GET is one pool take, one bound statement step and one give-back. Writes use
 * BEGIN IMMEDIATE so concurrent writers (server threads and a separate `berth gc` process)
 * queue on the database lock instead of failing on lock upgrade.
 */
#include "store/internal.h"
#include "util/err.h"
#include "util/log.h"
#include "util/ref.h"

#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POOL_MAX 16

enum {
    Q_BLOB_LINKED,
    Q_BLOB_ROW,
    Q_BLOB_UPSERT,
    Q_REPO_ADD,
    Q_REPO_MIRROR,
    Q_TOUCH,
    Q_LINK_ADD,
    Q_LINK_DEL,
    Q_MAN_BY_TAG,
    Q_MAN_BY_DIGEST,
    Q_MAN_EXISTS,
    Q_MAN_INSERT,
    Q_REF_INSERT,
    Q_TAG_UPSERT,
    Q_TAG_CHECKED,
    Q_TAG_EXISTS,
    Q_REF_LISTED,
    Q_REPO_EXISTS,
    Q_TAGS,
    Q_CATALOG,
    Q_REFERRERS,
    Q_REFERRERS_TYPE,
    Q_CHART_INSERT,
    Q_CHARTS,
    Q_CHARTS_REPO,
    Q_CHARTS_GEN,
    Q_CHARTS_CHANGES,
    Q_LEASE_TAKE,
    Q_LEASE_DROP,
    Q__COUNT
};

static const char *const q_sql[Q__COUNT] = {
    [Q_BLOB_LINKED] = "SELECT b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest "
                      "WHERE rb.repo = ?1 AND rb.digest = ?2",
    [Q_BLOB_ROW] = "SELECT size FROM blobs WHERE digest = ?1",
    [Q_BLOB_UPSERT] = "INSERT INTO blobs(digest, size, created) VALUES(?1, ?2, ?3) "
                      "ON CONFLICT(digest) DO UPDATE SET created = excluded.created",
    [Q_REPO_ADD] = "INSERT OR IGNORE INTO repos(name, created) VALUES(?1, ?2)",
    [Q_REPO_MIRROR] = "INSERT INTO repos(name, created, mirrored) VALUES(?1, ?2, 1) "
                      "ON CONFLICT(name) DO UPDATE SET mirrored = 1",
    [Q_TOUCH] = "UPDATE manifests SET accessed = ?3 WHERE repo = ?1 AND digest = ?2",
    [Q_LINK_ADD] = "INSERT INTO repo_blobs(repo, digest, linked) VALUES(?1, ?2, ?3) "
                   "ON CONFLICT(repo, digest) DO UPDATE SET linked = excluded.linked",
    [Q_LINK_DEL] = "DELETE FROM repo_blobs WHERE repo = ?1 AND digest = ?2",
    [Q_MAN_BY_TAG] =
        "SELECT m.digest, m.media_type, m.content, t.checked FROM tags t JOIN manifests m "
        "ON m.repo = t.repo AND m.digest = t.digest WHERE t.repo = ?1 AND t.tag = ?2",
    [Q_MAN_BY_DIGEST] = "SELECT digest, media_type, content, NULL FROM manifests "
                        "WHERE repo = ?1 AND digest = ?2",
    [Q_MAN_EXISTS] = "SELECT 1 FROM manifests WHERE repo = ?1 AND digest = ?2",
    [Q_MAN_INSERT] =
        "INSERT INTO manifests(repo, digest, media_type, content, subject, artifact_type, "
        "annotations, created, mirrored) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9) "
        "ON CONFLICT(repo, digest) DO UPDATE SET created = excluded.created",
    [Q_CHART_INSERT] = "INSERT INTO charts(repo, digest, tag, entry, yaml) VALUES(?1,?2,?3,?4,?5) "
                       "ON CONFLICT(repo, digest) DO UPDATE SET tag = excluded.tag, "
                       "entry = excluded.entry, yaml = excluded.yaml",
    [Q_REF_INSERT] = "INSERT OR IGNORE INTO manifest_refs(repo, digest, child, kind) "
                     "VALUES(?1, ?2, ?3, ?4)",
    [Q_TAG_UPSERT] =
        "INSERT INTO tags(repo, tag, digest, updated, checked) VALUES(?1, ?2, ?3, ?4, ?5) "
        "ON CONFLICT(repo, tag) DO UPDATE SET digest = excluded.digest, "
        "updated = excluded.updated, checked = excluded.checked",
    [Q_TAG_CHECKED] = "UPDATE tags SET checked = ?3 WHERE repo = ?1 AND tag = ?2",
    [Q_TAG_EXISTS] = "SELECT 1 FROM tags WHERE repo = ?1 AND tag = ?2",
    [Q_REF_LISTED] = "SELECT 1 FROM manifest_refs WHERE child = ?2 AND kind = 0 AND repo = ?1 "
                     "LIMIT 1",
    [Q_REPO_EXISTS] = "SELECT 1 FROM repos WHERE name = ?1",
    [Q_TAGS] = "SELECT tag FROM tags WHERE repo = ?1 AND tag > ?2 ORDER BY tag LIMIT ?3",
    [Q_CATALOG] = "SELECT name FROM repos WHERE name > ?1 ORDER BY name LIMIT ?2",
    [Q_REFERRERS] = "SELECT digest, media_type, length(content), artifact_type, annotations "
                    "FROM manifests WHERE repo = ?1 AND subject = ?2 ORDER BY created, digest",
    [Q_REFERRERS_TYPE] = "SELECT digest, media_type, length(content), artifact_type, annotations "
                         "FROM manifests WHERE repo = ?1 AND subject = ?2 AND artifact_type = ?3 "
                         "ORDER BY created, digest",
    /* charts in index.yaml: a chart manifest counts under the tag its version maps to */
    /* ?2 is ?1 with its last character incremented: the range of names starting with ?1 */
    [Q_CHARTS] = "SELECT c.repo, c.tag, c.entry, c.digest, c.yaml FROM charts c "
                 "JOIN tags t ON t.repo = c.repo AND t.digest = c.digest AND t.tag = c.tag "
                 "WHERE c.repo >= ?1 AND c.repo < ?2",
    [Q_CHARTS_REPO] = "SELECT c.repo, c.tag, c.entry, c.digest, c.yaml FROM charts c "
                      "JOIN tags t ON t.repo = c.repo AND t.digest = c.digest AND t.tag = c.tag "
                      "WHERE c.repo = ?1",
    [Q_CHARTS_GEN] = "SELECT coalesce(max(seq), 0), coalesce(min(seq), 0) FROM charts_changes",
    [Q_CHARTS_CHANGES] = "SELECT DISTINCT repo FROM charts_changes WHERE seq > ?1 "
                         "AND substr(repo, 1, length(?2)) = ?2",
    [Q_LEASE_TAKE] =
        "INSERT INTO leases(key, owner, until) VALUES(?1, ?2, ?3) "
        "ON CONFLICT(key) DO UPDATE SET owner = excluded.owner, until = excluded.until "
        "WHERE leases.until < ?4 OR leases.owner = excluded.owner",
    [Q_LEASE_DROP] = "DELETE FROM leases WHERE key = ?1 AND owner = ?2",
};

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS blobs(digest TEXT PRIMARY KEY, size INTEGER NOT NULL,"
    "  created INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS repos(name TEXT PRIMARY KEY, created INTEGER NOT NULL,"
    "  mirrored INTEGER NOT NULL DEFAULT 0)"
    "  WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS repo_blobs(repo TEXT NOT NULL, digest TEXT NOT NULL,"
    "  linked INTEGER NOT NULL, PRIMARY KEY(repo, digest)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS repo_blobs_digest ON repo_blobs(digest);"
    "CREATE TABLE IF NOT EXISTS manifests(repo TEXT NOT NULL, digest TEXT NOT NULL,"
    "  media_type TEXT NOT NULL, content BLOB NOT NULL, subject TEXT, artifact_type TEXT,"
    "  annotations TEXT, created INTEGER NOT NULL, mirrored INTEGER NOT NULL DEFAULT 0,"
    "  accessed INTEGER,"
    "  PRIMARY KEY(repo, digest));"
    "CREATE INDEX IF NOT EXISTS manifests_subject ON manifests(repo, subject)"
    "  WHERE subject IS NOT NULL;"
    "CREATE TABLE IF NOT EXISTS manifest_refs(repo TEXT NOT NULL, digest TEXT NOT NULL,"
    "  child TEXT NOT NULL, kind INTEGER NOT NULL, PRIMARY KEY(repo, digest, child, kind))"
    "  WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS manifest_refs_child ON manifest_refs(child, kind, repo);"
    "CREATE TABLE IF NOT EXISTS tags(repo TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL,"
    "  updated INTEGER NOT NULL, checked INTEGER, PRIMARY KEY(repo, tag)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS tags_digest ON tags(repo, digest);"
    "CREATE TABLE IF NOT EXISTS leases(key TEXT PRIMARY KEY, owner TEXT NOT NULL,"
    "  until INTEGER NOT NULL) WITHOUT ROWID;";

/* Helm charts (a view over manifests, see src/helm/): manifests of Helm charts carry their
 * index.yaml entry. charts_changes logs every change to the set of indexed charts by repository,
 * written by triggers so every writer (server, `berth gc`, eviction) records it; an index cache
 * catches up by re-reading only the repositories logged since its sequence number. The log keeps
 * its last 50,000 changes; a cache older than that rebuilds. */
#define CHART_CHANGED(r) "BEGIN INSERT INTO charts_changes(repo) VALUES(" r "); END;"
static const char
    charts_schema_sql[] =
        "CREATE TABLE IF NOT EXISTS charts(repo TEXT NOT NULL, digest TEXT NOT NULL, tag TEXT NOT "
        "NULL,"
        "  entry TEXT NOT NULL, yaml TEXT NOT NULL, PRIMARY KEY(repo, digest)) WITHOUT ROWID;"
        "CREATE TABLE IF NOT EXISTS charts_changes(seq INTEGER PRIMARY KEY, repo TEXT NOT NULL);"
        "CREATE TRIGGER IF NOT EXISTS charts_changes_prune AFTER INSERT ON charts_changes "
        "  WHEN NEW.seq % 1000 = 0 BEGIN DELETE FROM charts_changes WHERE seq < NEW.seq - 50000; "
        "END;"
        /* a chart row lives as long as its manifest */
        "CREATE TRIGGER IF NOT EXISTS charts_manifest_del AFTER DELETE ON manifests "
        "  BEGIN DELETE FROM charts WHERE repo = OLD.repo AND digest = OLD.digest; END;"
        "CREATE TRIGGER IF NOT EXISTS charts_ins AFTER INSERT ON charts " CHART_CHANGED("NEW.repo") "CREATE TRIGGER IF NOT EXISTS charts_upd AFTER UPDATE ON charts " CHART_CHANGED(
            "NEW.repo") "CREATE TRIGGER IF NOT EXISTS charts_del AFTER DELETE ON "
                        "charts " CHART_CHANGED(
                            "OLD.repo") "CREATE TRIGGER IF NOT EXISTS "
                                        "charts_tag_ins AFTER INSERT ON tags "
                                        "WHEN EXISTS (SELECT 1 FROM "
                                        "  charts c WHERE c.repo = NEW.repo "
                                        "AND c.digest = "
                                        "NEW.digest) " CHART_CHANGED(
                                            "NEW.repo") "CREATE TRIGGER IF NOT "
                                                        "EXISTS charts_tag_upd "
                                                        "AFTER UPDATE OF "
                                                        "digest ON tags WHEN "
                                                        "  OLD.digest != "
                                                        "NEW.digest AND EXISTS "
                                                        "(SELECT 1 FROM charts "
                                                        "c WHERE c.repo = "
                                                        "NEW.repo AND "
                                                        "  c.digest IN "
                                                        "(OLD.digest, "
                                                        "NEW.digest))"
                                                        " " CHART_CHANGED(
                                                            "NEW.repo") "CREATE"
                                                                        " TRIGG"
                                                                        "ER IF "
                                                                        "NOT "
                                                                        "EXISTS"
                                                                        " chart"
                                                                        "s_tag_"
                                                                        "del "
                                                                        "AFTER "
                                                                        "DELETE"
                                                                        " ON "
                                                                        "tags "
                                                                        "WHEN "
                                                                        "EXISTS"
                                                                        " ("
                                                                        "SELECT"
                                                                        " 1 "
                                                                        "FROM "
                                                                        "  "
                                                                        "charts"
                                                                        " c "
                                                                        "WHERE "
                                                                        "c."
                                                                        "repo "
                                                                        "= "
                                                                        "OLD."
                                                                        "repo "
                                                                        "AND "
                                                                        "c."
                                                                        "digest"
                                                                        " = "
                                                                        "OLD."
                                                                        "digest"
                                                                        ")"
                                                                        " " CHART_CHANGED("OL"
                                                                                          "D."
                                                                                          "re"
                                                                                          "p"
                                                                                          "o");

/* A manifest is garbage when old enough, untagged, not an index's child, and not a referrer of a
 * manifest that still exists. */
#define GC_MANIFEST_WHERE                                                                          \
    "m.created < ?1 "                                                                              \
    "AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo = m.repo AND t.digest = m.digest) "         \
    "AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.child = m.digest AND r.kind = 1 "       \
    "  AND r.repo = m.repo) "                                                                      \
    "AND (m.subject IS NULL OR NOT EXISTS (SELECT 1 FROM manifests s WHERE s.repo = m.repo "       \
    "  AND s.digest = m.subject))"

/* A blob is garbage when old enough, referenced by no manifest and not freshly linked. */
#define GC_BLOB_WHERE                                                                              \
    "b.created < :cutoff "                                                                         \
    "AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.child = b.digest AND r.kind = 0) "      \
    "AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest AND rb.linked >= "     \
    ":cutoff)"

typedef struct {
    sqlite3 *db;
    sqlite3_stmt *st[Q__COUNT];
} conn;

typedef struct {
    store_meta base;
    char *path;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    conn *idle[POOL_MAX];
    int nidle, nopen;
} sqlite_meta;

static int db_err(sqlite3 *db, const char *what)
{
    int code = sqlite3_errcode(db);
    if (code == SQLITE_FULL) return berr_set(BERR_STORAGE_FULL, "%s: storage full", what);
    return berr_set(BERR_IO, "%s: %s", what, sqlite3_errmsg(db));
}

static int conn_open(const char *path, conn **out)
{
    conn *c = calloc(1, sizeof *c);
    if (!c) return berr_set(BERR_INTERNAL, "out of memory");
    if (sqlite3_open_v2(path, &c->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        int rc = db_err(c->db, "open metadata database");
        sqlite3_close(c->db);
        free(c);
        return rc;
    }
    sqlite3_busy_timeout(c->db, 60000);
    char *msg = NULL;
    if (sqlite3_exec(c->db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF;"
                     "PRAGMA cache_size=-2000;",
                     NULL, NULL, &msg) != SQLITE_OK) {
        int rc = berr_set(BERR_IO, "configure metadata database: %s", msg ? msg : "?");
        sqlite3_free(msg);
        sqlite3_close(c->db);
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

static void conn_close(conn *c)
{
    for (int i = 0; i < Q__COUNT; i++)
        sqlite3_finalize(c->st[i]);
    sqlite3_close(c->db);
    free(c);
}

static int conn_take(sqlite_meta *m, conn **out)
{
    pthread_mutex_lock(&m->mu);
    while (m->nidle == 0 && m->nopen >= POOL_MAX)
        pthread_cond_wait(&m->cv, &m->mu);
    if (m->nidle > 0) {
        *out = m->idle[--m->nidle];
        pthread_mutex_unlock(&m->mu);
        return 0;
    }
    m->nopen++;
    pthread_mutex_unlock(&m->mu);
    int rc = conn_open(m->path, out);
    if (rc < 0) {
        pthread_mutex_lock(&m->mu);
        m->nopen--;
        pthread_cond_signal(&m->cv);
        pthread_mutex_unlock(&m->mu);
    }
    return rc;
}

static void conn_give(sqlite_meta *m, conn *c)
{
    pthread_mutex_lock(&m->mu);
    m->idle[m->nidle++] = c;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

/* The connection's prepared statement q, reset and with bindings cleared. */
static sqlite3_stmt *stmt(conn *c, int q)
{
    if (!c->st[q]) {
        if (sqlite3_prepare_v3(c->db, q_sql[q], -1, SQLITE_PREPARE_PERSISTENT, &c->st[q], NULL) !=
            SQLITE_OK) {
            log_error("msg=\"prepare failed\" err=\"%s\"", sqlite3_errmsg(c->db));
            return NULL;
        }
    } else {
        sqlite3_reset(c->st[q]);
        sqlite3_clear_bindings(c->st[q]);
    }
    return c->st[q];
}

static void bind_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, i);
}

static char *col_strdup(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? strdup((const char *)t) : NULL;
}

static int exec(conn *c, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(c->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = sqlite3_errcode(c->db) == SQLITE_FULL
                     ? berr_set(BERR_STORAGE_FULL, "%s: storage full", sql)
                     : berr_set(BERR_IO, "%s: %s", sql, msg ? msg : "?");
        sqlite3_free(msg);
        return rc;
    }
    return 0;
}

static int begin(conn *c)
{
    return exec(c, "BEGIN IMMEDIATE");
}

/* Commits (rc == 0) or rolls back. A failed COMMIT keeps its own error: SQLite may have rolled
 * the transaction back already, and a ROLLBACK then must not replace the reason. */
static int finish_tx(conn *c, int rc)
{
    if (rc == 0) {
        rc = exec(c, "COMMIT");
        if (rc < 0 && !sqlite3_get_autocommit(c->db)) {
            char keep[1024];
            snprintf(keep, sizeof keep, "%s", berr_msg());
            exec(c, "ROLLBACK");
            berr_set((berr)-rc, "%s", keep);
        }
        return rc;
    }
    if (!sqlite3_get_autocommit(c->db)) {
        char keep[1024];
        snprintf(keep, sizeof keep, "%s", berr_msg());
        exec(c, "ROLLBACK");
        berr_set((berr)-rc, "%s", keep);
    }
    return rc;
}

/* Steps a write statement to completion. */
static int step_done(conn *c, sqlite3_stmt *s)
{
    if (!s) return berr_set(BERR_INTERNAL, "statement unavailable");
    int r = sqlite3_step(s);
    sqlite3_reset(s);
    return r == SQLITE_DONE ? 0 : db_err(c->db, "write metadata");
}

/* ---- blobs ---- */

/* Looks a blob up (linked to repo, or the row itself when repo is NULL) on c. Returns 0, or
 * -missing when absent. */
static int blob_find(conn *c, const char *repo, const char *digest, uint64_t *size, berr missing)
{
    sqlite3_stmt *s = stmt(c, repo ? Q_BLOB_LINKED : Q_BLOB_ROW);
    bind_text(s, 1, repo ? repo : digest);
    if (repo) bind_text(s, 2, digest);
    int r = sqlite3_step(s), rc = 0;
    if (r == SQLITE_ROW) {
        if (size) *size = (uint64_t)sqlite3_column_int64(s, 0);
    } else if (r == SQLITE_DONE) {
        rc = berr_set(missing, "blob unknown to registry: %s", digest);
    } else {
        rc = db_err(c->db, "blob lookup");
    }
    sqlite3_reset(s);
    return rc;
}

static int sq_blob_lookup(store_meta *base, const char *repo, const char *digest, uint64_t *size)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    rc = blob_find(c, repo, digest, size, BERR_BLOB_UNKNOWN);
    conn_give(m, c);
    return rc;
}

static int link_blob(conn *c, const char *repo, const char *digest, int64_t now)
{
    sqlite3_stmt *s = stmt(c, Q_REPO_ADD);
    bind_text(s, 1, repo);
    sqlite3_bind_int64(s, 2, now);
    int rc = step_done(c, s);
    if (rc < 0) return rc;
    s = stmt(c, Q_LINK_ADD);
    bind_text(s, 1, repo);
    bind_text(s, 2, digest);
    sqlite3_bind_int64(s, 3, now);
    return step_done(c, s);
}

static int sq_blob_commit(store_meta *base, const char *repo, const char *digest, uint64_t size,
                          store_place_fn place, void *arg)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    int64_t now = store_now();
    rc = begin(c);
    if (rc == 0) rc = place(arg);
    if (rc == 0) {
        sqlite3_stmt *s = stmt(c, Q_BLOB_UPSERT);
        bind_text(s, 1, digest);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)size);
        sqlite3_bind_int64(s, 3, now);
        rc = step_done(c, s);
    }
    if (rc == 0) rc = link_blob(c, repo, digest, now);
    rc = finish_tx(c, rc);
    conn_give(m, c);
    return rc;
}

static int sq_blob_link(store_meta *base, const char *repo, const char *from, const char *digest)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    rc = begin(c);
    if (rc == 0) rc = blob_find(c, from, digest, NULL, BERR_BLOB_UNKNOWN);
    if (rc == 0) rc = link_blob(c, repo, digest, store_now());
    rc = finish_tx(c, rc);
    conn_give(m, c);
    return rc;
}

static int sq_blob_link_listed(store_meta *base, const char *repo, const char *digest)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    rc = begin(c);
    if (rc == 0) {
        sqlite3_stmt *s = stmt(c, Q_REF_LISTED);
        bind_text(s, 1, repo);
        bind_text(s, 2, digest);
        int r = sqlite3_step(s);
        sqlite3_reset(s);
        if (r == SQLITE_DONE)
            rc = berr_set(BERR_BLOB_UNKNOWN, "blob unknown to registry: %s", digest);
        else if (r != SQLITE_ROW)
            rc = db_err(c->db, "reference lookup");
    }
    if (rc == 0) rc = blob_find(c, NULL, digest, NULL, BERR_BLOB_UNKNOWN);
    if (rc == 0) rc = link_blob(c, repo, digest, store_now());
    rc = finish_tx(c, rc);
    conn_give(m, c);
    return rc;
}

static int sq_blob_unlink(store_meta *base, const char *repo, const char *digest)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    sqlite3_stmt *s = stmt(c, Q_LINK_DEL);
    bind_text(s, 1, repo);
    bind_text(s, 2, digest);
    rc = step_done(c, s);
    if (rc == 0 && sqlite3_changes(c->db) == 0)
        rc = berr_set(BERR_BLOB_UNKNOWN, "blob unknown to registry");
    conn_give(m, c);
    return rc;
}

/* ---- manifests ---- */

static int sq_manifest_get(store_meta *base, const char *repo, const char *ref, store_manifest *out)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    sqlite3_stmt *s = stmt(c, ref_is_digest(ref) ? Q_MAN_BY_DIGEST : Q_MAN_BY_TAG);
    bind_text(s, 1, repo);
    bind_text(s, 2, ref);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW) {
        snprintf(out->digest, sizeof out->digest, "%s", (const char *)sqlite3_column_text(s, 0));
        out->media_type = col_strdup(s, 1);
        out->size = (size_t)sqlite3_column_bytes(s, 2);
        out->checked = sqlite3_column_int64(s, 3);
        out->content = malloc(out->size + 1);
        if (out->content && out->media_type) {
            memcpy(out->content, sqlite3_column_blob(s, 2), out->size);
            out->content[out->size] = '\0';
            rc = 0;
        } else {
            free(out->content);
            free(out->media_type);
            rc = berr_set(BERR_INTERNAL, "out of memory");
        }
    } else if (r == SQLITE_DONE) {
        rc = berr_set(BERR_MANIFEST_UNKNOWN, "manifest unknown to registry");
    } else {
        rc = db_err(c->db, "manifest lookup");
    }
    sqlite3_reset(s);
    conn_give(m, c);
    return rc;
}

static int sq_manifest_put(store_meta *base, const store_manifest_put_req *q)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    int64_t now = store_now();
    rc = begin(c);
    if (rc == 0 && q->check) rc = q->check(q->check_arg);
    for (size_t i = 0; rc == 0 && i < q->nabsent; i++) {
        sqlite3_stmt *s = stmt(c, Q_TAG_EXISTS);
        bind_text(s, 1, q->absent_repos[i]);
        bind_text(s, 2, q->absent_tags[i]);
        int r = sqlite3_step(s);
        sqlite3_reset(s);
        if (r == SQLITE_ROW)
            rc = berr_set(BERR_CONFLICT, "%s:%s already exists", q->absent_repos[i],
                          q->absent_tags[i]);
        else if (r != SQLITE_DONE)
            rc = db_err(c->db, "tag lookup");
    }
    for (size_t i = 0; rc == 0 && i < q->nnew_blobs; i++) {
        sqlite3_stmt *s = stmt(c, Q_BLOB_UPSERT);
        bind_text(s, 1, q->new_blobs[i].digest);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)q->new_blobs[i].size);
        sqlite3_bind_int64(s, 3, now);
        rc = step_done(c, s);
        if (rc == 0) rc = link_blob(c, q->repo, q->new_blobs[i].digest, now);
    }
    /* mirrored manifests reference content fetched later, on demand */
    for (size_t i = 0; rc == 0 && !q->mirrored && i < q->nblobs; i++)
        rc = blob_find(c, q->repo, q->blobs[i], NULL, BERR_MANIFEST_BLOB_UNKNOWN);
    for (size_t i = 0; rc == 0 && !q->mirrored && i < q->nchildren; i++) {
        sqlite3_stmt *s = stmt(c, Q_MAN_EXISTS);
        bind_text(s, 1, q->repo);
        bind_text(s, 2, q->children[i]);
        int r = sqlite3_step(s);
        sqlite3_reset(s);
        if (r == SQLITE_DONE)
            rc = berr_set(BERR_MANIFEST_BLOB_UNKNOWN, "manifest unknown to registry: %s",
                          q->children[i]);
        else if (r != SQLITE_ROW)
            rc = db_err(c->db, "manifest lookup");
    }
    if (rc == 0) {
        sqlite3_stmt *s = stmt(c, q->mirrored ? Q_REPO_MIRROR : Q_REPO_ADD);
        bind_text(s, 1, q->repo);
        sqlite3_bind_int64(s, 2, now);
        rc = step_done(c, s);
    }
    if (rc == 0) {
        sqlite3_stmt *s = stmt(c, Q_MAN_INSERT);
        bind_text(s, 1, q->repo);
        bind_text(s, 2, q->digest);
        bind_text(s, 3, q->media_type);
        sqlite3_bind_blob(s, 4, q->content, (int)q->size, SQLITE_STATIC);
        bind_text(s, 5, q->subject);
        bind_text(s, 6, q->artifact_type);
        bind_text(s, 7, q->annotations_json);
        sqlite3_bind_int64(s, 8, now);
        sqlite3_bind_int(s, 9, q->mirrored ? 1 : 0);
        rc = step_done(c, s);
    }
    if (rc == 0 && q->chart_tag && q->chart_entry && q->chart_yaml) {
        sqlite3_stmt *s = stmt(c, Q_CHART_INSERT);
        bind_text(s, 1, q->repo);
        bind_text(s, 2, q->digest);
        bind_text(s, 3, q->chart_tag);
        bind_text(s, 4, q->chart_entry);
        bind_text(s, 5, q->chart_yaml);
        rc = step_done(c, s);
    }
    for (size_t i = 0; rc == 0 && i < q->nblobs + q->nchildren; i++) {
        bool blob = i < q->nblobs;
        sqlite3_stmt *s = stmt(c, Q_REF_INSERT);
        bind_text(s, 1, q->repo);
        bind_text(s, 2, q->digest);
        bind_text(s, 3, blob ? q->blobs[i] : q->children[i - q->nblobs]);
        sqlite3_bind_int(s, 4, blob ? 0 : 1);
        rc = step_done(c, s);
    }
    for (size_t i = 0; rc == 0 && i < q->ntags; i++) {
        sqlite3_stmt *s = stmt(c, Q_TAG_UPSERT);
        bind_text(s, 1, q->repo);
        bind_text(s, 2, q->tags[i]);
        bind_text(s, 3, q->digest);
        sqlite3_bind_int64(s, 4, now);
        if (q->mirrored) sqlite3_bind_int64(s, 5, now);
        rc = step_done(c, s);
    }
    rc = finish_tx(c, rc);
    conn_give(m, c);
    return rc;
}

/* Runs a one-off parameterised write (repo, key) inside the caller's transaction. */
static int run2(conn *c, const char *sql, const char *a, const char *b, int *changes)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(c->db, sql, -1, &s, NULL) != SQLITE_OK) return db_err(c->db, "prepare");
    bind_text(s, 1, a);
    bind_text(s, 2, b);
    int r = sqlite3_step(s);
    sqlite3_finalize(s);
    if (r != SQLITE_DONE) return db_err(c->db, "write metadata");
    if (changes) *changes = sqlite3_changes(c->db);
    return 0;
}

static int sq_manifest_delete(store_meta *base, const char *repo, const char *digest)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    int changes = 0;
    rc = begin(c);
    if (rc == 0)
        rc = run2(c, "DELETE FROM manifests WHERE repo = ?1 AND digest = ?2", repo, digest,
                  &changes);
    if (rc == 0 && changes == 0)
        rc = berr_set(BERR_MANIFEST_UNKNOWN, "manifest unknown to registry");
    if (rc == 0)
        rc = run2(c, "DELETE FROM tags WHERE repo = ?1 AND digest = ?2", repo, digest, NULL);
    if (rc == 0)
        rc = run2(c, "DELETE FROM manifest_refs WHERE repo = ?1 AND digest = ?2", repo, digest,
                  NULL);
    rc = finish_tx(c, rc);
    conn_give(m, c);
    return rc;
}

static int sq_tag_checked(store_meta *base, const char *repo, const char *tag)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    sqlite3_stmt *s = stmt(c, Q_TAG_CHECKED);
    bind_text(s, 1, repo);
    bind_text(s, 2, tag);
    sqlite3_bind_int64(s, 3, store_now());
    rc = step_done(c, s);
    conn_give(m, c);
    return rc;
}

static int sq_repo_exists(store_meta *base, const char *repo)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    sqlite3_stmt *s = stmt(c, Q_REPO_EXISTS);
    bind_text(s, 1, repo);
    int r = sqlite3_step(s);
    sqlite3_reset(s);
    rc = r == SQLITE_ROW    ? 0
         : r == SQLITE_DONE ? berr_set(BERR_NAME_UNKNOWN, "repository unknown")
                            : db_err(c->db, "repository lookup");
    conn_give(m, c);
    return rc;
}

static int sq_tag_delete(store_meta *base, const char *repo, const char *tag)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    int changes = 0;
    rc = run2(c, "DELETE FROM tags WHERE repo = ?1 AND tag = ?2", repo, tag, &changes);
    if (rc == 0 && changes == 0) rc = berr_set(BERR_MANIFEST_UNKNOWN, "tag unknown to registry");
    conn_give(m, c);
    return rc;
}

/* Collects column 0 of s into out, at most n items, flagging `more` when an n+1th exists. */
static int collect(conn *c, sqlite3_stmt *s, long n, store_list *out)
{
    int r, rc = 0;
    while (rc == 0 && (r = sqlite3_step(s)) == SQLITE_ROW) {
        if ((long)out->n >= n) {
            out->more = true;
            break;
        }
        rc = store_list_add(out, (const char *)sqlite3_column_text(s, 0));
    }
    if (rc == 0 && r != SQLITE_ROW && r != SQLITE_DONE) rc = db_err(c->db, "list");
    sqlite3_reset(s);
    return rc;
}

static int sq_tags_list(store_meta *base, const char *repo, const char *last, long n,
                        store_list *out)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    sqlite3_stmt *s = stmt(c, Q_REPO_EXISTS);
    bind_text(s, 1, repo);
    int r = sqlite3_step(s);
    sqlite3_reset(s);
    if (r == SQLITE_DONE)
        rc = berr_set(BERR_NAME_UNKNOWN, "repository name not known to registry");
    else if (r != SQLITE_ROW)
        rc = db_err(c->db, "repository lookup");
    if (rc == 0) {
        s = stmt(c, Q_TAGS);
        bind_text(s, 1, repo);
        bind_text(s, 2, last ? last : "");
        sqlite3_bind_int64(s, 3, n + 1);
        rc = collect(c, s, n, out);
    }
    conn_give(m, c);
    return rc;
}

static int sq_catalog(store_meta *base, const char *last, long n, store_list *out)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    sqlite3_stmt *s = stmt(c, Q_CATALOG);
    bind_text(s, 1, last ? last : "");
    sqlite3_bind_int64(s, 2, n + 1);
    rc = collect(c, s, n, out);
    conn_give(m, c);
    return rc;
}

static int sq_referrers(store_meta *base, const char *repo, const char *digest, const char *atype,
                        store_referrer_list *out)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    sqlite3_stmt *s = stmt(c, atype ? Q_REFERRERS_TYPE : Q_REFERRERS);
    bind_text(s, 1, repo);
    bind_text(s, 2, digest);
    if (atype) bind_text(s, 3, atype);
    int r;
    while (rc == 0 && (r = sqlite3_step(s)) == SQLITE_ROW) {
        store_referrer *items = realloc(out->items, (out->n + 1) * sizeof *items);
        if (!items) {
            rc = berr_set(BERR_INTERNAL, "out of memory");
            break;
        }
        out->items = items;
        store_referrer *it = &out->items[out->n++];
        memset(it, 0, sizeof *it);
        snprintf(it->digest, sizeof it->digest, "%s", (const char *)sqlite3_column_text(s, 0));
        it->media_type = col_strdup(s, 1);
        it->size = (uint64_t)sqlite3_column_int64(s, 2);
        it->artifact_type = col_strdup(s, 3);
        it->annotations_json = col_strdup(s, 4);
    }
    if (rc == 0 && r != SQLITE_DONE) rc = db_err(c->db, "referrers");
    sqlite3_reset(s);
    conn_give(m, c);
    return rc;
}

/* ---- gc ---- */

static int query_list(conn *c, const char *sql, int64_t cutoff, store_list *out)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(c->db, sql, -1, &s, NULL) != SQLITE_OK) return db_err(c->db, "prepare");
    if (sqlite3_bind_parameter_count(s) > 0) sqlite3_bind_int64(s, 1, cutoff);
    int rc = collect(c, s, 1L << 40, out);
    sqlite3_finalize(s);
    return rc;
}

static int sq_gc_manifests(store_meta *base, int64_t cutoff, bool dry_run, size_t *removed,
                           store_list *blobs)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    *removed = 0;
    rc = begin(c);
    while (rc == 0) {
        /* repo and digest of each garbage manifest, joined as "repo@digest" */
        store_list l = {0};
        rc = query_list(
            c, "SELECT m.repo || '@' || m.digest FROM manifests m WHERE " GC_MANIFEST_WHERE, cutoff,
            &l);
        for (size_t i = 0; rc == 0 && i < l.n; i++) {
            char *at = strchr(l.items[i], '@');
            *at = '\0';
            const char *repo = l.items[i], *digest = at + 1;
            log_info("msg=\"gc: %s manifest\" repo=%s digest=%s",
                     dry_run ? "would remove" : "remove", repo, digest);
            rc = run2(c, "DELETE FROM manifests WHERE repo = ?1 AND digest = ?2", repo, digest,
                      NULL);
            if (rc == 0)
                rc = run2(c, "DELETE FROM manifest_refs WHERE repo = ?1 AND digest = ?2", repo,
                          digest, NULL);
        }
        *removed += l.n;
        bool again = l.n > 0;
        store_list_free(&l);
        if (!again) break;
    }
    if (rc == 0)
        rc = query_list(c, "SELECT b.digest FROM blobs b WHERE " GC_BLOB_WHERE, cutoff, blobs);
    if (dry_run) {
        if (!sqlite3_get_autocommit(c->db)) exec(c, "ROLLBACK");
    } else {
        rc = finish_tx(c, rc);
    }
    conn_give(m, c);
    return rc;
}

/* Deletes the blob row matching `DELETE ... WHERE b.digest = :digest AND <cond>` (cond may use
 * :cutoff), its links, and moves its file with trash() inside the same transaction. */
static int blob_remove_where(store_meta *base, const char *sql, const char *digest, int64_t cutoff,
                             store_place_fn trash, void *arg, bool *removed)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    *removed = false;
    rc = begin(c);
    if (rc == 0) {
        sqlite3_stmt *s;
        if (sqlite3_prepare_v2(c->db, sql, -1, &s, NULL) != SQLITE_OK) {
            rc = db_err(c->db, "prepare");
        } else {
            bind_text(s, sqlite3_bind_parameter_index(s, ":digest"), digest);
            int ci = sqlite3_bind_parameter_index(s, ":cutoff");
            if (ci) sqlite3_bind_int64(s, ci, cutoff);
            if (sqlite3_step(s) != SQLITE_DONE) rc = db_err(c->db, "remove blob");
            sqlite3_finalize(s);
            *removed = rc == 0 && sqlite3_changes(c->db) == 1;
        }
    }
    if (rc == 0 && *removed)
        rc = run2(c, "DELETE FROM repo_blobs WHERE digest = ?1", digest, NULL, NULL);
    if (rc == 0 && *removed) rc = trash(arg);
    rc = finish_tx(c, rc);
    if (rc < 0) *removed = false;
    conn_give(m, c);
    return rc;
}

static int sq_gc_blob_remove(store_meta *base, const char *digest, int64_t cutoff,
                             store_place_fn trash, void *arg, bool *removed)
{
    return blob_remove_where(base,
                             "DELETE FROM blobs AS b WHERE b.digest = :digest AND " GC_BLOB_WHERE,
                             digest, cutoff, trash, arg, removed);
}

static int sq_locked(store_meta *base, store_place_fn fn, void *arg)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    rc = begin(c);
    if (rc == 0) rc = fn(arg);
    rc = finish_tx(c, rc);
    conn_give(m, c);
    return rc;
}

/* ---- mirror space: access times and eviction ---- */

/* Blobs that only mirrored repositories use: the ones eviction may take. */
#define MIRROR_ONLY_BLOB                                                                           \
    "EXISTS (SELECT 1 FROM repo_blobs l JOIN repos r ON r.name = l.repo "                          \
    "  WHERE l.digest = b.digest AND r.mirrored = 1) "                                             \
    "AND NOT EXISTS (SELECT 1 FROM repo_blobs l JOIN repos r ON r.name = l.repo "                  \
    "  WHERE l.digest = b.digest AND r.mirrored = 0)"

static int sq_repo_mark_mirror(store_meta *base, const char *repo)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    sqlite3_stmt *s = stmt(c, Q_REPO_MIRROR);
    bind_text(s, 1, repo);
    sqlite3_bind_int64(s, 2, store_now());
    rc = step_done(c, s);
    conn_give(m, c);
    return rc;
}

static int sq_touch(store_meta *base, const store_access *a, size_t n)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    rc = begin(c);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        sqlite3_stmt *s = stmt(c, Q_TOUCH);
        bind_text(s, 1, a[i].repo);
        bind_text(s, 2, a[i].digest);
        sqlite3_bind_int64(s, 3, a[i].when);
        rc = step_done(c, s);
    }
    rc = finish_tx(c, rc);
    conn_give(m, c);
    return rc;
}

/* One byte count (a SELECT of one integer) on a pooled connection. */
static int sum_bytes(store_meta *base, const char *sql, uint64_t *bytes)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(c->db, sql, -1, &s, NULL) != SQLITE_OK) {
        rc = db_err(c->db, "prepare");
    } else {
        if (sqlite3_step(s) == SQLITE_ROW)
            *bytes = (uint64_t)sqlite3_column_int64(s, 0);
        else
            rc = db_err(c->db, "usage");
        sqlite3_finalize(s);
    }
    conn_give(m, c);
    return rc;
}

static int sq_usage(store_meta *base, uint64_t *bytes)
{
    return sum_bytes(base, "SELECT COALESCE(SUM(size), 0) FROM blobs", bytes);
}

static int sq_mirror_usage(store_meta *base, uint64_t *bytes)
{
    return sum_bytes(base, "SELECT COALESCE(SUM(b.size), 0) FROM blobs b WHERE " MIRROR_ONLY_BLOB,
                     bytes);
}

static int sq_mirror_lru(store_meta *base, size_t max, int64_t before, store_list *out)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(c->db,
                           "SELECT m.repo || '@' || m.digest FROM manifests m JOIN repos r "
                           "ON r.name = m.repo WHERE r.mirrored = 1 "
                           "AND COALESCE(m.accessed, m.created) < ?2 "
                           "ORDER BY COALESCE(m.accessed, m.created) ASC LIMIT ?1",
                           -1, &s, NULL) != SQLITE_OK) {
        rc = db_err(c->db, "prepare");
    } else {
        sqlite3_bind_int64(s, 1, (sqlite3_int64)max);
        sqlite3_bind_int64(s, 2, before > 0 ? (sqlite3_int64)before : INT64_MAX);
        rc = collect(c, s, (long)max, out);
        sqlite3_finalize(s);
    }
    conn_give(m, c);
    return rc;
}

/* Removes one mirrored manifest (its tags and references), then lists the blobs that only
 * mirrored repositories use and that no manifest references any more. */
static int sq_mirror_evict(store_meta *base, const char *repo, const char *digest,
                           store_list *freed)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    rc = begin(c);
    if (rc == 0)
        rc = run2(c, "DELETE FROM manifests WHERE repo = ?1 AND digest = ?2 AND mirrored = 1", repo,
                  digest, NULL);
    if (rc == 0)
        rc = run2(c, "DELETE FROM tags WHERE repo = ?1 AND digest = ?2", repo, digest, NULL);
    if (rc == 0)
        rc = run2(c, "DELETE FROM manifest_refs WHERE repo = ?1 AND digest = ?2", repo, digest,
                  NULL);
    rc = finish_tx(c, rc);
    if (rc == 0)
        rc = query_list(
            c,
            "SELECT b.digest FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM "
            "manifest_refs r WHERE r.child = b.digest AND r.kind = 0) AND " MIRROR_ONLY_BLOB,
            0, freed);
    conn_give(m, c);
    return rc;
}

/* Removes a blob that only mirrored repositories use and nothing references (re-checked under
 * the write lock), moving its file with trash() inside the transaction. */
static int sq_mirror_blob_remove(store_meta *base, const char *digest, store_place_fn trash,
                                 void *arg, bool *removed)
{
    return blob_remove_where(base,
                             "DELETE FROM blobs AS b WHERE b.digest = :digest AND NOT EXISTS "
                             "(SELECT 1 FROM manifest_refs r WHERE r.child = b.digest AND "
                             "r.kind = 0) AND " MIRROR_ONLY_BLOB,
                             digest, 0, trash, arg, removed);
}

/* ---- fsck ---- */

static int sq_each_blob(store_meta *base, int (*cb)(void *, const char *, uint64_t), void *arg)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(c->db, "SELECT digest, size FROM blobs ORDER BY digest", -1, &s, NULL) !=
        SQLITE_OK) {
        rc = db_err(c->db, "prepare");
    } else {
        while (rc == 0 && sqlite3_step(s) == SQLITE_ROW)
            rc = cb(arg, (const char *)sqlite3_column_text(s, 0),
                    (uint64_t)sqlite3_column_int64(s, 1));
        sqlite3_finalize(s);
    }
    conn_give(m, c);
    return rc;
}

static int sq_each_manifest(store_meta *base,
                            int (*cb)(void *, const char *, const char *, const char *, size_t),
                            void *arg)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(c->db,
                           "SELECT repo, digest, content FROM manifests ORDER BY repo, digest", -1,
                           &s, NULL) != SQLITE_OK) {
        rc = db_err(c->db, "prepare");
    } else {
        while (rc == 0 && sqlite3_step(s) == SQLITE_ROW)
            rc = cb(arg, (const char *)sqlite3_column_text(s, 0),
                    (const char *)sqlite3_column_text(s, 1),
                    (const char *)sqlite3_column_blob(s, 2), (size_t)sqlite3_column_bytes(s, 2));
        sqlite3_finalize(s);
    }
    conn_give(m, c);
    return rc;
}

static int sq_check_refs(store_meta *base, void (*cb)(void *, const char *), void *arg)
{
    static const char *const checks[] = {
        "SELECT 'manifest ' || r.repo || '@' || r.digest || ' references missing blob ' || r.child "
        "FROM manifest_refs r JOIN manifests m ON m.repo = r.repo AND m.digest = r.digest "
        "WHERE m.mirrored = 0 AND r.kind = 0 AND NOT EXISTS (SELECT 1 FROM blobs b "
        "WHERE b.digest = r.child)",
        "SELECT 'manifest ' || r.repo || '@' || r.digest || ' references blob ' || r.child || "
        "' not linked to the repository' FROM manifest_refs r JOIN manifests m ON m.repo = r.repo "
        "AND m.digest = r.digest WHERE m.mirrored = 0 AND r.kind = 0 AND NOT EXISTS "
        "(SELECT 1 FROM repo_blobs l WHERE l.repo = r.repo AND l.digest = r.child)",
        "SELECT 'index ' || r.repo || '@' || r.digest || ' references missing manifest ' || "
        "r.child FROM manifest_refs r JOIN manifests p ON p.repo = r.repo AND p.digest = r.digest "
        "WHERE p.mirrored = 0 AND r.kind = 1 AND NOT EXISTS (SELECT 1 FROM manifests m "
        "WHERE m.repo = r.repo AND m.digest = r.child)",
        "SELECT 'tag ' || t.repo || ':' || t.tag || ' points at missing manifest ' || t.digest "
        "FROM tags t WHERE NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo = t.repo AND "
        "m.digest = t.digest)",
        "SELECT 'reference from ' || r.repo || '@' || r.digest || ' whose manifest is missing' "
        "FROM manifest_refs r WHERE NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo = r.repo "
        "AND m.digest = r.digest)",
        "SELECT 'repository ' || l.repo || ' links missing blob ' || l.digest FROM repo_blobs l "
        "WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = l.digest)",
    };
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    for (size_t i = 0; rc == 0 && i < sizeof checks / sizeof *checks; i++) {
        sqlite3_stmt *s;
        if (sqlite3_prepare_v2(c->db, checks[i], -1, &s, NULL) != SQLITE_OK) {
            rc = db_err(c->db, "prepare");
            break;
        }
        while (sqlite3_step(s) == SQLITE_ROW)
            cb(arg, (const char *)sqlite3_column_text(s, 0));
        sqlite3_finalize(s);
    }
    conn_give(m, c);
    return rc;
}

static void sq_close(store_meta *base)
{
    sqlite_meta *m = (sqlite_meta *)base;
    for (int i = 0; i < m->nidle; i++)
        conn_close(m->idle[i]);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m->path);
    free(m);
}

static int sq_charts(store_meta *base, const char *prefix, bool exact, store_chart_list *out)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    sqlite3_stmt *s = stmt(c, exact ? Q_CHARTS_REPO : Q_CHARTS);
    char upper[600];
    snprintf(upper, sizeof upper, "%s", prefix);
    size_t ul = strlen(upper);
    if (ul) upper[ul - 1] = (char)(upper[ul - 1] + 1);
    if (!s) {
        rc = berr_set(BERR_INTERNAL, "statement unavailable");
    } else {
        bind_text(s, 1, prefix);
        if (!exact) bind_text(s, 2, upper);
    }
    int r = SQLITE_DONE;
    while (rc == 0 && (r = sqlite3_step(s)) == SQLITE_ROW) {
        store_chart *items = realloc(out->items, (out->n + 1) * sizeof *items);
        if (!items) {
            rc = berr_set(BERR_INTERNAL, "out of memory");
            break;
        }
        out->items = items;
        store_chart *it = &out->items[out->n++];
        it->repo = col_strdup(s, 0);
        it->tag = col_strdup(s, 1);
        it->entry = col_strdup(s, 2);
        snprintf(it->digest, sizeof it->digest, "%s", (const char *)sqlite3_column_text(s, 3));
        it->yaml = col_strdup(s, 4);
        if (!it->repo || !it->tag || !it->entry || !it->yaml)
            rc = berr_set(BERR_INTERNAL, "out of memory (or a chart entry without YAML)");
    }
    if (rc == 0 && r != SQLITE_DONE) rc = db_err(c->db, "chart listing");
    if (s) sqlite3_reset(s);
    conn_give(m, c);
    return rc;
}

static int sq_charts_gen(store_meta *base, int64_t *latest, int64_t *oldest)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    sqlite3_stmt *s = stmt(c, Q_CHARTS_GEN);
    if (!s) {
        conn_give(m, c);
        return berr_set(BERR_INTERNAL, "statement unavailable");
    }
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW) {
        *latest = sqlite3_column_int64(s, 0);
        if (oldest) *oldest = sqlite3_column_int64(s, 1);
    } else {
        rc = db_err(c->db, "chart changes");
    }
    sqlite3_reset(s);
    conn_give(m, c);
    return rc;
}

static int sq_charts_changes(store_meta *base, int64_t since, const char *prefix, store_list *out)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    sqlite3_stmt *s = stmt(c, Q_CHARTS_CHANGES);
    if (!s) {
        conn_give(m, c);
        return berr_set(BERR_INTERNAL, "statement unavailable");
    }
    sqlite3_bind_int64(s, 1, since);
    bind_text(s, 2, prefix);
    rc = collect(c, s, LONG_MAX - 1, out);
    conn_give(m, c);
    return rc;
}

static int sq_lease_take(store_meta *base, const char *key, const char *owner, int64_t until,
                         int64_t now)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    sqlite3_stmt *s = stmt(c, Q_LEASE_TAKE);
    bind_text(s, 1, key);
    bind_text(s, 2, owner);
    sqlite3_bind_int64(s, 3, until);
    sqlite3_bind_int64(s, 4, now);
    rc = step_done(c, s);
    if (rc == 0 && sqlite3_changes(c->db) == 0)
        rc = berr_set(BERR_CONFLICT, "lease %s is held", key);
    conn_give(m, c);
    return rc;
}

static int sq_lease_drop(store_meta *base, const char *key, const char *owner)
{
    sqlite_meta *m = (sqlite_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    sqlite3_stmt *s = stmt(c, Q_LEASE_DROP);
    bind_text(s, 1, key);
    bind_text(s, 2, owner);
    rc = step_done(c, s);
    conn_give(m, c);
    return rc;
}

static const store_meta_ops sqlite_ops = {
    .usage = sq_usage,
    .charts = sq_charts,
    .charts_gen = sq_charts_gen,
    .charts_changes = sq_charts_changes,
    .lease_take = sq_lease_take,
    .lease_drop = sq_lease_drop,
    .close = sq_close,
    .blob_lookup = sq_blob_lookup,
    .blob_commit = sq_blob_commit,
    .blob_link = sq_blob_link,
    .blob_link_listed = sq_blob_link_listed,
    .blob_unlink = sq_blob_unlink,
    .manifest_get = sq_manifest_get,
    .manifest_put = sq_manifest_put,
    .manifest_delete = sq_manifest_delete,
    .tag_delete = sq_tag_delete,
    .tag_checked = sq_tag_checked,
    .repo_exists = sq_repo_exists,
    .tags_list = sq_tags_list,
    .catalog = sq_catalog,
    .referrers = sq_referrers,
    .gc_manifests = sq_gc_manifests,
    .gc_blob_remove = sq_gc_blob_remove,
    .locked = sq_locked,
    .repo_mark_mirror = sq_repo_mark_mirror,
    .touch = sq_touch,
    .mirror_usage = sq_mirror_usage,
    .mirror_lru = sq_mirror_lru,
    .mirror_evict = sq_mirror_evict,
    .mirror_blob_remove = sq_mirror_blob_remove,
    .each_blob = sq_each_blob,
    .each_manifest = sq_each_manifest,
    .check_refs = sq_check_refs,
};

int store_meta_sqlite_open(store_meta **out, const char *path)
{
    sqlite_meta *m = calloc(1, sizeof *m);
    if (!m) return berr_set(BERR_INTERNAL, "out of memory");
    m->base.ops = &sqlite_ops;
    m->path = strdup(path);
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    conn *c;
    int rc = conn_take(m, &c);
    if (rc == 0) {
        rc = begin(c);
        if (rc == 0) rc = exec(c, schema_sql);
        if (rc == 0) rc = exec(c, charts_schema_sql);
        rc = finish_tx(c, rc);
        conn_give(m, c);
    }
    if (rc < 0) {
        sq_close(&m->base);
        return rc;
    }
    *out = &m->base;
    return 0;
}
