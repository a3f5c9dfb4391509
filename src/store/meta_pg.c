/*
 * meta_pg: the PostgreSQL metadata backend (`database.enabled`), for several berth processes that
 * share one database and one storage directory. Same tables, columns and semantics as
 * meta_sqlite.c; what differs:
 *
 *  - libpq is loaded with dlopen on first use (as libcurl in src/proxy/upstream.c), so the
 *    embedded (SQLite) mode does not map it; its headers are used for the types only.
 *  - SQLite's single writer is what makes online gc safe (a manifest PUT's "do my blobs exist?"
 *    and gc's "is this blob unreferenced?" never interleave; the chart change log's sequence
 *    numbers commit in order). Every write transaction here therefore starts with
 *    pg_advisory_xact_lock(WRITE_LOCK): writers of all processes on the database queue on it, as
 *    on SQLite's write lock, and readers never wait (MVCC, like WAL readers).
 *  - the chart change log is written by PL/pgSQL triggers, the same rules as the SQLite triggers.
 *  - the schema is versioned (schema_version) and migrated at open under another advisory lock,
 *    so berth processes starting together migrate once; `berth migrate` only does that.
 *  - connections live in a pool of database.pool.maxopen; each prepares its statements on first
 *    use; a broken connection is reset when taken, and a statement outside a transaction that
 *    fails because the connection broke is retried once on a fresh one. Every value travels as a
 *    parameter ($1...); no SQL is built from values.
 *  - text columns use the "C" collation, so tag and catalog order (and pagination) are byte
 *    order, as in SQLite. Manifests are bytea (exact bytes).
 */
#include "store/internal.h"
#include "util/err.h"
#include "util/log.h"
#include "util/ref.h"

#include <dlfcn.h>
#include <endian.h>
#include <libpq-fe.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* pg_advisory_xact_lock keys ("berth" + 1 / 2) */
#define WRITE_LOCK "435761559553"
#define MIGRATE_LOCK "435761559554"

/* ---- libpq, loaded on first use ---- */

static struct {
    PGconn *(*connectdb_params)(const char *const *, const char *const *, int);
    ConnStatusType (*status)(const PGconn *);
    char *(*error_message)(const PGconn *);
    void (*finish)(PGconn *);
    void (*reset)(PGconn *);
    PGresult *(*exec)(PGconn *, const char *);
    PGresult *(*exec_params)(PGconn *, const char *, int, const Oid *, const char *const *,
                             const int *, const int *, int);
    PGresult *(*prepare)(PGconn *, const char *, const char *, int, const Oid *);
    PGresult *(*exec_prepared)(PGconn *, const char *, int, const char *const *, const int *,
                               const int *, int);
    int (*send_query_prepared)(PGconn *, const char *, int, const char *const *, const int *,
                               const int *, int);
    int (*set_single_row_mode)(PGconn *);
    PGresult *(*get_result)(PGconn *);
    ExecStatusType (*result_status)(const PGresult *);
    char *(*result_error_field)(const PGresult *, int);
    char *(*result_error_message)(const PGresult *);
    int (*ntuples)(const PGresult *);
    char *(*getvalue)(const PGresult *, int, int);
    int (*getlength)(const PGresult *, int, int);
    int (*getisnull)(const PGresult *, int, int);
    void (*clear)(PGresult *);
    char *(*cmd_tuples)(PGresult *);
    PGTransactionStatusType (*transaction_status)(const PGconn *);
    PQnoticeProcessor (*set_notice_processor)(PGconn *, PQnoticeProcessor, void *);
} px;

#define PQconnectdbParams px.connectdb_params
#define PQstatus px.status
#define PQerrorMessage px.error_message
#define PQfinish px.finish
#define PQreset px.reset
#define PQexec px.exec
#define PQexecParams px.exec_params
#define PQprepare px.prepare
#define PQexecPrepared px.exec_prepared
#define PQsendQueryPrepared px.send_query_prepared
#define PQsetSingleRowMode px.set_single_row_mode
#define PQgetResult px.get_result
#define PQresultStatus px.result_status
#define PQresultErrorField px.result_error_field
#define PQresultErrorMessage px.result_error_message
#define PQntuples px.ntuples
#define PQgetvalue px.getvalue
#define PQgetlength px.getlength
#define PQgetisnull px.getisnull
#define PQclear px.clear
#define PQcmdTuples px.cmd_tuples
#define PQtransactionStatus px.transaction_status
#define PQsetNoticeProcessor px.set_notice_processor

static pthread_once_t pq_once = PTHREAD_ONCE_INIT;
static bool pq_loaded;
static char pq_load_err[512];

static void load_pq(void)
{
    static const char *const names[] = {"libpq.so.5", "libpq.so"};
    void *lib = NULL;
    for (size_t i = 0; !lib && i < 2; i++)
        lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(pq_load_err, sizeof pq_load_err, "%s", dlerror());
        return;
    }
#define SYM(field, name) *(void **)&px.field = dlsym(lib, name)
    SYM(connectdb_params, "PQconnectdbParams");
    SYM(status, "PQstatus");
    SYM(error_message, "PQerrorMessage");
    SYM(finish, "PQfinish");
    SYM(reset, "PQreset");
    SYM(exec, "PQexec");
    SYM(exec_params, "PQexecParams");
    SYM(prepare, "PQprepare");
    SYM(exec_prepared, "PQexecPrepared");
    SYM(send_query_prepared, "PQsendQueryPrepared");
    SYM(set_single_row_mode, "PQsetSingleRowMode");
    SYM(get_result, "PQgetResult");
    SYM(result_status, "PQresultStatus");
    SYM(result_error_field, "PQresultErrorField");
    SYM(result_error_message, "PQresultErrorMessage");
    SYM(ntuples, "PQntuples");
    SYM(getvalue, "PQgetvalue");
    SYM(getlength, "PQgetlength");
    SYM(getisnull, "PQgetisnull");
    SYM(clear, "PQclear");
    SYM(cmd_tuples, "PQcmdTuples");
    SYM(transaction_status, "PQtransactionStatus");
    SYM(set_notice_processor, "PQsetNoticeProcessor");
#undef SYM
    void **fns = (void **)&px;
    for (size_t i = 0; i < sizeof px / sizeof(void *); i++)
        if (!fns[i]) {
            snprintf(pq_load_err, sizeof pq_load_err, "libpq lacks an entry point");
            return;
        }
    pq_loaded = true;
}

/* ---- statements ---- */

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
    Q_MAN_DEL,
    Q_MAN_TAGS_DEL,
    Q_MAN_REFS_DEL,
    Q_TAG_DEL,
    Q_GC_MANIFESTS,
    Q_GC_BLOBS,
    Q_GC_BLOB_DEL,
    Q_BLOB_LINKS_DEL,
    Q_MIRROR_MAN_DEL,
    Q_MIRROR_FREED,
    Q_MIRROR_BLOB_DEL,
    Q_USAGE,
    Q_MIRROR_USAGE,
    Q_MIRROR_LRU,
    Q_EACH_BLOB,
    Q_EACH_MANIFEST,
    Q_CHECK0,
    Q_CHECK1,
    Q_CHECK2,
    Q_CHECK3,
    Q_CHECK4,
    Q_CHECK5,
    Q_LEASE_TAKE,
    Q_LEASE_DROP,
    Q__COUNT
};

/* A manifest is garbage when old enough, untagged, not an index's child, and not a referrer of a
 * manifest that still exists. */
#define GC_MANIFEST_WHERE                                                                          \
    "m.created < $1 "                                                                              \
    "AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo = m.repo AND t.digest = m.digest) "         \
    "AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.child = m.digest AND r.kind = 1 "       \
    "  AND r.repo = m.repo) "                                                                      \
    "AND (m.subject IS NULL OR NOT EXISTS (SELECT 1 FROM manifests s WHERE s.repo = m.repo "       \
    "  AND s.digest = m.subject))"

/* A blob is garbage when old enough, referenced by no manifest and not freshly linked. */
#define GC_BLOB_WHERE                                                                              \
    "b.created < $1 "                                                                              \
    "AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.child = b.digest AND r.kind = 0) "      \
    "AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest AND rb.linked >= $1)"

/* Blobs that only mirrored repositories use: the ones eviction may take. */
#define MIRROR_ONLY_BLOB                                                                           \
    "EXISTS (SELECT 1 FROM repo_blobs l JOIN repos r ON r.name = l.repo "                          \
    "  WHERE l.digest = b.digest AND r.mirrored = 1) "                                             \
    "AND NOT EXISTS (SELECT 1 FROM repo_blobs l JOIN repos r ON r.name = l.repo "                  \
    "  WHERE l.digest = b.digest AND r.mirrored = 0)"

#define UNREFERENCED_BLOB                                                                          \
    "NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.child = b.digest AND r.kind = 0) "

static const char *const q_sql[Q__COUNT] = {
    [Q_BLOB_LINKED] = "SELECT b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest "
                      "WHERE rb.repo = $1 AND rb.digest = $2",
    [Q_BLOB_ROW] = "SELECT size FROM blobs WHERE digest = $1",
    [Q_BLOB_UPSERT] = "INSERT INTO blobs(digest, size, created) VALUES($1, $2, $3) "
                      "ON CONFLICT(digest) DO UPDATE SET created = excluded.created",
    [Q_REPO_ADD] = "INSERT INTO repos(name, created) VALUES($1, $2) ON CONFLICT DO NOTHING",
    [Q_REPO_MIRROR] = "INSERT INTO repos(name, created, mirrored) VALUES($1, $2, 1) "
                      "ON CONFLICT(name) DO UPDATE SET mirrored = 1",
    [Q_TOUCH] = "UPDATE manifests SET accessed = $3 WHERE repo = $1 AND digest = $2",
    [Q_LINK_ADD] = "INSERT INTO repo_blobs(repo, digest, linked) VALUES($1, $2, $3) "
                   "ON CONFLICT(repo, digest) DO UPDATE SET linked = excluded.linked",
    [Q_LINK_DEL] = "DELETE FROM repo_blobs WHERE repo = $1 AND digest = $2",
    [Q_MAN_BY_TAG] =
        "SELECT m.digest, m.media_type, m.content, t.checked FROM tags t JOIN manifests m "
        "ON m.repo = t.repo AND m.digest = t.digest WHERE t.repo = $1 AND t.tag = $2",
    [Q_MAN_BY_DIGEST] = "SELECT digest, media_type, content, NULL::bigint FROM manifests "
                        "WHERE repo = $1 AND digest = $2",
    [Q_MAN_EXISTS] = "SELECT 1 FROM manifests WHERE repo = $1 AND digest = $2",
    [Q_MAN_INSERT] =
        "INSERT INTO manifests(repo, digest, media_type, content, subject, artifact_type, "
        "annotations, created, mirrored) VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9) "
        "ON CONFLICT(repo, digest) DO UPDATE SET created = excluded.created",
    [Q_REF_INSERT] = "INSERT INTO manifest_refs(repo, digest, child, kind) "
                     "VALUES($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    [Q_TAG_UPSERT] =
        "INSERT INTO tags(repo, tag, digest, updated, checked) VALUES($1, $2, $3, $4, $5) "
        "ON CONFLICT(repo, tag) DO UPDATE SET digest = excluded.digest, "
        "updated = excluded.updated, checked = excluded.checked",
    [Q_TAG_CHECKED] = "UPDATE tags SET checked = $3 WHERE repo = $1 AND tag = $2",
    [Q_TAG_EXISTS] = "SELECT 1 FROM tags WHERE repo = $1 AND tag = $2",
    [Q_REF_LISTED] = "SELECT 1 FROM manifest_refs WHERE child = $2 AND kind = 0 AND repo = $1 "
                     "LIMIT 1",
    [Q_REPO_EXISTS] = "SELECT 1 FROM repos WHERE name = $1",
    [Q_TAGS] = "SELECT tag FROM tags WHERE repo = $1 AND tag > $2 ORDER BY tag LIMIT $3",
    [Q_CATALOG] = "SELECT name FROM repos WHERE name > $1 ORDER BY name LIMIT $2",
    [Q_REFERRERS] = "SELECT digest, media_type, octet_length(content), artifact_type, annotations "
                    "FROM manifests WHERE repo = $1 AND subject = $2 ORDER BY created, digest",
    [Q_REFERRERS_TYPE] =
        "SELECT digest, media_type, octet_length(content), artifact_type, annotations "
        "FROM manifests WHERE repo = $1 AND subject = $2 AND artifact_type = $3 "
        "ORDER BY created, digest",
    [Q_CHART_INSERT] = "INSERT INTO charts(repo, digest, tag, entry, yaml) VALUES($1,$2,$3,$4,$5) "
                       "ON CONFLICT(repo, digest) DO UPDATE SET tag = excluded.tag, "
                       "entry = excluded.entry, yaml = excluded.yaml",
    /* $2 is $1 with its last character incremented: the range of names starting with $1 */
    [Q_CHARTS] = "SELECT c.repo, c.tag, c.entry, c.digest, c.yaml FROM charts c "
                 "JOIN tags t ON t.repo = c.repo AND t.digest = c.digest AND t.tag = c.tag "
                 "WHERE c.repo >= $1 AND c.repo < $2",
    [Q_CHARTS_REPO] = "SELECT c.repo, c.tag, c.entry, c.digest, c.yaml FROM charts c "
                      "JOIN tags t ON t.repo = c.repo AND t.digest = c.digest AND t.tag = c.tag "
                      "WHERE c.repo = $1",
    [Q_CHARTS_GEN] = "SELECT coalesce(max(seq), 0), coalesce(min(seq), 0) FROM charts_changes",
    [Q_CHARTS_CHANGES] = "SELECT DISTINCT repo FROM charts_changes WHERE seq > $1 "
                         "AND starts_with(repo, $2::text)",
    [Q_LEASE_TAKE] =
        "INSERT INTO leases(key, owner, until) VALUES($1, $2, $3) "
        "ON CONFLICT(key) DO UPDATE SET owner = excluded.owner, until = excluded.until "
        "WHERE leases.until < $4 OR leases.owner = excluded.owner",
    [Q_LEASE_DROP] = "DELETE FROM leases WHERE key = $1 AND owner = $2",
    [Q_MAN_DEL] = "DELETE FROM manifests WHERE repo = $1 AND digest = $2",
    [Q_MAN_TAGS_DEL] = "DELETE FROM tags WHERE repo = $1 AND digest = $2",
    [Q_MAN_REFS_DEL] = "DELETE FROM manifest_refs WHERE repo = $1 AND digest = $2",
    [Q_TAG_DEL] = "DELETE FROM tags WHERE repo = $1 AND tag = $2",
    [Q_GC_MANIFESTS] = "SELECT m.repo, m.digest FROM manifests m WHERE " GC_MANIFEST_WHERE,
    [Q_GC_BLOBS] = "SELECT b.digest FROM blobs b WHERE " GC_BLOB_WHERE,
    [Q_GC_BLOB_DEL] = "DELETE FROM blobs AS b WHERE b.digest = $2 AND " GC_BLOB_WHERE,
    [Q_BLOB_LINKS_DEL] = "DELETE FROM repo_blobs WHERE digest = $1",
    [Q_MIRROR_MAN_DEL] = "DELETE FROM manifests WHERE repo = $1 AND digest = $2 AND mirrored = 1",
    [Q_MIRROR_FREED] =
        "SELECT b.digest FROM blobs b WHERE " UNREFERENCED_BLOB "AND " MIRROR_ONLY_BLOB,
    [Q_MIRROR_BLOB_DEL] =
        "DELETE FROM blobs AS b WHERE b.digest = $1 AND " UNREFERENCED_BLOB "AND " MIRROR_ONLY_BLOB,
    [Q_USAGE] = "SELECT COALESCE(SUM(size), 0)::bigint FROM blobs",
    [Q_MIRROR_USAGE] =
        "SELECT COALESCE(SUM(b.size), 0)::bigint FROM blobs b WHERE " MIRROR_ONLY_BLOB,
    [Q_MIRROR_LRU] = "SELECT m.repo || '@' || m.digest FROM manifests m JOIN repos r "
                     "ON r.name = m.repo WHERE r.mirrored = 1 "
                     "AND COALESCE(m.accessed, m.created) < $2 "
                     "ORDER BY COALESCE(m.accessed, m.created) ASC LIMIT $1",
    [Q_EACH_BLOB] = "SELECT digest, size FROM blobs ORDER BY digest",
    [Q_EACH_MANIFEST] = "SELECT repo, digest, content FROM manifests ORDER BY repo, digest",
    [Q_CHECK0] =
        "SELECT 'manifest ' || r.repo || '@' || r.digest || ' references missing blob ' || r.child "
        "FROM manifest_refs r JOIN manifests m ON m.repo = r.repo AND m.digest = r.digest "
        "WHERE m.mirrored = 0 AND r.kind = 0 AND NOT EXISTS (SELECT 1 FROM blobs b "
        "WHERE b.digest = r.child)",
    [Q_CHECK1] =
        "SELECT 'manifest ' || r.repo || '@' || r.digest || ' references blob ' || r.child || "
        "' not linked to the repository' FROM manifest_refs r JOIN manifests m ON m.repo = r.repo "
        "AND m.digest = r.digest WHERE m.mirrored = 0 AND r.kind = 0 AND NOT EXISTS "
        "(SELECT 1 FROM repo_blobs l WHERE l.repo = r.repo AND l.digest = r.child)",
    [Q_CHECK2] =
        "SELECT 'index ' || r.repo || '@' || r.digest || ' references missing manifest ' || "
        "r.child FROM manifest_refs r JOIN manifests p ON p.repo = r.repo AND p.digest = r.digest "
        "WHERE p.mirrored = 0 AND r.kind = 1 AND NOT EXISTS (SELECT 1 FROM manifests m "
        "WHERE m.repo = r.repo AND m.digest = r.child)",
    [Q_CHECK3] =
        "SELECT 'tag ' || t.repo || ':' || t.tag || ' points at missing manifest ' || t.digest "
        "FROM tags t WHERE NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo = t.repo AND "
        "m.digest = t.digest)",
    [Q_CHECK4] =
        "SELECT 'reference from ' || r.repo || '@' || r.digest || ' whose manifest is missing' "
        "FROM manifest_refs r WHERE NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo = r.repo "
        "AND m.digest = r.digest)",
    [Q_CHECK5] =
        "SELECT 'repository ' || l.repo || ' links missing blob ' || l.digest FROM repo_blobs l "
        "WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = l.digest)",
};

/* ---- schema: migrations[i] takes schema_version from i to i + 1 ---- */

#define T "TEXT COLLATE \"C\""
static const char *const migrations[] = {
    /* 1: the tables of meta_sqlite.c, and the chart change log's triggers */
    "CREATE TABLE IF NOT EXISTS blobs(digest " T " PRIMARY KEY, size BIGINT NOT NULL,"
    "  created BIGINT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS repos(name " T " PRIMARY KEY, created BIGINT NOT NULL,"
    "  mirrored INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS repo_blobs(repo " T " NOT NULL, digest " T " NOT NULL,"
    "  linked BIGINT NOT NULL, PRIMARY KEY(repo, digest));"
    "CREATE INDEX IF NOT EXISTS repo_blobs_digest ON repo_blobs(digest);"
    "CREATE TABLE IF NOT EXISTS manifests(repo " T " NOT NULL, digest " T " NOT NULL,"
    "  media_type " T " NOT NULL, content BYTEA NOT NULL, subject " T ", artifact_type " T ","
    "  annotations " T ", created BIGINT NOT NULL, mirrored INTEGER NOT NULL DEFAULT 0,"
    "  accessed BIGINT, PRIMARY KEY(repo, digest));"
    "CREATE INDEX IF NOT EXISTS manifests_subject ON manifests(repo, subject)"
    "  WHERE subject IS NOT NULL;"
    "CREATE TABLE IF NOT EXISTS manifest_refs(repo " T " NOT NULL, digest " T " NOT NULL,"
    "  child " T " NOT NULL, kind INTEGER NOT NULL, PRIMARY KEY(repo, digest, child, kind));"
    "CREATE INDEX IF NOT EXISTS manifest_refs_child ON manifest_refs(child, kind, repo);"
    "CREATE TABLE IF NOT EXISTS tags(repo " T " NOT NULL, tag " T " NOT NULL, digest " T
    " NOT NULL,"
    "  updated BIGINT NOT NULL, checked BIGINT, PRIMARY KEY(repo, tag));"
    "CREATE INDEX IF NOT EXISTS tags_digest ON tags(repo, digest);"
    "CREATE TABLE IF NOT EXISTS charts(repo " T " NOT NULL, digest " T " NOT NULL, tag " T
    " NOT NULL,"
    "  entry " T " NOT NULL, yaml " T " NOT NULL, PRIMARY KEY(repo, digest));"
    "CREATE TABLE IF NOT EXISTS charts_changes(seq BIGINT GENERATED BY DEFAULT AS IDENTITY"
    "  PRIMARY KEY, repo " T " NOT NULL);"
    /* the log keeps its last 50,000 changes */
    "CREATE OR REPLACE FUNCTION berth_charts_prune() RETURNS trigger LANGUAGE plpgsql AS $$"
    "  BEGIN DELETE FROM charts_changes WHERE seq < NEW.seq - 50000; RETURN NULL; END $$;"
    "CREATE OR REPLACE TRIGGER charts_changes_prune AFTER INSERT ON charts_changes"
    "  FOR EACH ROW WHEN (NEW.seq % 1000 = 0) EXECUTE FUNCTION berth_charts_prune();"
    /* a chart row lives as long as its manifest */
    "CREATE OR REPLACE FUNCTION berth_charts_manifest_del() RETURNS trigger LANGUAGE plpgsql AS $$"
    "  BEGIN DELETE FROM charts WHERE repo = OLD.repo AND digest = OLD.digest; RETURN NULL; END $$;"
    "CREATE OR REPLACE TRIGGER charts_manifest_del AFTER DELETE ON manifests"
    "  FOR EACH ROW EXECUTE FUNCTION berth_charts_manifest_del();"
    /* every change to charts */
    "CREATE OR REPLACE FUNCTION berth_charts_changed() RETURNS trigger LANGUAGE plpgsql AS $$"
    "  BEGIN"
    "    IF TG_OP = 'DELETE' THEN INSERT INTO charts_changes(repo) VALUES(OLD.repo);"
    "    ELSE INSERT INTO charts_changes(repo) VALUES(NEW.repo); END IF;"
    "    RETURN NULL;"
    "  END $$;"
    "CREATE OR REPLACE TRIGGER charts_changed AFTER INSERT OR UPDATE OR DELETE ON charts"
    "  FOR EACH ROW EXECUTE FUNCTION berth_charts_changed();"
    /* tags moving onto, off or between chart manifests */
    "CREATE OR REPLACE FUNCTION berth_charts_tag_changed() RETURNS trigger LANGUAGE plpgsql AS $$"
    "  BEGIN"
    "    IF TG_OP = 'INSERT' THEN"
    "      IF EXISTS (SELECT 1 FROM charts c WHERE c.repo = NEW.repo AND c.digest = NEW.digest)"
    "      THEN INSERT INTO charts_changes(repo) VALUES(NEW.repo); END IF;"
    "    ELSIF TG_OP = 'UPDATE' THEN"
    "      IF OLD.digest <> NEW.digest AND EXISTS (SELECT 1 FROM charts c WHERE c.repo = NEW.repo"
    "        AND c.digest IN (OLD.digest, NEW.digest))"
    "      THEN INSERT INTO charts_changes(repo) VALUES(NEW.repo); END IF;"
    "    ELSE"
    "      IF EXISTS (SELECT 1 FROM charts c WHERE c.repo = OLD.repo AND c.digest = OLD.digest)"
    "      THEN INSERT INTO charts_changes(repo) VALUES(OLD.repo); END IF;"
    "    END IF;"
    "    RETURN NULL;"
    "  END $$;"
    "CREATE OR REPLACE TRIGGER charts_tag_changed AFTER INSERT OR DELETE OR UPDATE OF digest"
    "  ON tags FOR EACH ROW EXECUTE FUNCTION berth_charts_tag_changed();",
    /* 2: leases shared by the replicas (one upstream fetch per blob during a mirror fill) */
    "CREATE TABLE IF NOT EXISTS leases(key " T " PRIMARY KEY, owner " T " NOT NULL,"
    "  until BIGINT NOT NULL);",
};
#undef T
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof *migrations))

/* ---- connections ---- */

typedef struct {
    PGconn *pg;
    bool prepared[Q__COUNT];
    bool in_tx;
    int borrowed; /* lent to reads inside its own `locked` callback */
} conn;

/* The connection holding the write lock in this thread's `locked` call: reads made by its
 * callback run on it (inside the transaction), not on another pooled connection, which could
 * wait forever for a pool whose other connections all queue on the lock this thread holds. */
static _Thread_local conn *tl_locked;
static _Thread_local const void *tl_locked_owner;

#define KW_MAX 16

typedef struct {
    store_meta base;
    const char *kw[KW_MAX + 1];
    char *val[KW_MAX + 1];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    conn **idle;
    int nidle, nopen, max;
} pg_meta;

static void quiet_notices(void *arg, const char *msg)
{
    (void)arg;
    log_debug("msg=\"postgres notice\" detail=\"%.*s\"", (int)strcspn(msg, "\n"), msg);
}

/* The server's message without its trailing newline. */
static const char *one_line(const char *msg, char *buf, size_t len)
{
    snprintf(buf, len, "%s", msg ? msg : "?");
    buf[strcspn(buf, "\n")] = '\0';
    return buf;
}

static int pg_fail(conn *c, const PGresult *r, const char *what)
{
    char buf[512];
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorMessage(r) : NULL;
    if (!msg || !*msg) msg = PQerrorMessage(c->pg);
    if (state && !strcmp(state, "53100"))
        return berr_set(BERR_STORAGE_FULL, "%s: database storage full", what);
    if (PQstatus(c->pg) == CONNECTION_BAD)
        return berr_set(BERR_UNAVAILABLE, "%s: database connection lost: %s", what,
                        one_line(msg, buf, sizeof buf));
    return berr_set(BERR_IO, "%s: %s", what, one_line(msg, buf, sizeof buf));
}

static int conn_open(pg_meta *m, conn **out)
{
    conn *c = calloc(1, sizeof *c);
    if (!c) return berr_set(BERR_INTERNAL, "out of memory");
    c->pg = PQconnectdbParams(m->kw, (const char *const *)m->val, 0);
    if (!c->pg || PQstatus(c->pg) != CONNECTION_OK) {
        char buf[512];
        int rc =
            berr_set(BERR_UNAVAILABLE, "connect to the metadata database: %s",
                     one_line(c->pg ? PQerrorMessage(c->pg) : "out of memory", buf, sizeof buf));
        if (c->pg) PQfinish(c->pg);
        free(c);
        return rc;
    }
    PQsetNoticeProcessor(c->pg, quiet_notices, NULL);
    *out = c;
    return 0;
}

static void conn_close(conn *c)
{
    PQfinish(c->pg);
    free(c);
}

/* Re-establishes a broken connection (its prepared statements are gone with it). */
static int conn_reset(conn *c)
{
    PQreset(c->pg);
    memset(c->prepared, 0, sizeof c->prepared);
    c->in_tx = false;
    if (PQstatus(c->pg) != CONNECTION_OK) {
        char buf[512];
        return berr_set(BERR_UNAVAILABLE, "metadata database unreachable: %s",
                        one_line(PQerrorMessage(c->pg), buf, sizeof buf));
    }
    log_warn("msg=\"postgres: reconnected\"");
    return 0;
}

static void conn_give(pg_meta *m, conn *c)
{
    if (c->borrowed > 0) {
        c->borrowed--;
        return;
    }
    pthread_mutex_lock(&m->mu);
    m->idle[m->nidle++] = c;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

static int conn_take(pg_meta *m, conn **out)
{
    if (tl_locked && tl_locked_owner == m) {
        tl_locked->borrowed++;
        *out = tl_locked;
        return 0;
    }
    pthread_mutex_lock(&m->mu);
    while (m->nidle == 0 && m->nopen >= m->max)
        pthread_cond_wait(&m->cv, &m->mu);
    if (m->nidle > 0) {
        conn *c = m->idle[--m->nidle];
        pthread_mutex_unlock(&m->mu);
        if (PQstatus(c->pg) != CONNECTION_OK) {
            int rc = conn_reset(c);
            if (rc < 0) {
                conn_give(m, c);
                return rc;
            }
        }
        *out = c;
        return 0;
    }
    m->nopen++;
    pthread_mutex_unlock(&m->mu);
    int rc = conn_open(m, out);
    if (rc < 0) {
        pthread_mutex_lock(&m->mu);
        m->nopen--;
        pthread_cond_signal(&m->cv);
        pthread_mutex_unlock(&m->mu);
    }
    return rc;
}

/* ---- running statements ---- */

#define PARAMS_MAX 10
typedef struct {
    int n;
    const char *v[PARAMS_MAX];
    int len[PARAMS_MAX];
    int fmt[PARAMS_MAX];
    char num[PARAMS_MAX][24];
} params;

static void p_text(params *p, const char *s) /* NULL: SQL NULL */
{
    p->v[p->n] = s;
    p->len[p->n] = 0;
    p->fmt[p->n] = 0;
    p->n++;
}

static void p_int(params *p, int64_t x)
{
    snprintf(p->num[p->n], sizeof p->num[p->n], "%lld", (long long)x);
    p_text(p, p->num[p->n]);
}

static void p_bytes(params *p, const void *data, size_t len)
{
    p->v[p->n] = data ? data : "";
    p->len[p->n] = (int)len;
    p->fmt[p->n] = 1;
    p->n++;
}

static bool prepare(conn *c, int q, PGresult **err)
{
    if (c->prepared[q]) return true;
    char name[16];
    snprintf(name, sizeof name, "q%d", q);
    PGresult *r = PQprepare(c->pg, name, q_sql[q], 0, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        *err = r;
        return false;
    }
    PQclear(r);
    c->prepared[q] = true;
    return true;
}

/* Runs statement q with p (NULL: none); results in binary when binary is set. *out (when not
 * NULL) receives the result, for the caller to PQclear. Outside a transaction, a statement that
 * fails because the connection broke is retried once on a reset connection. */
static int run_q(conn *c, int q, const params *p, bool binary, PGresult **out, const char *what)
{
    for (int attempt = 0;; attempt++) {
        PGresult *r = NULL;
        if (prepare(c, q, &r)) {
            char name[16];
            snprintf(name, sizeof name, "q%d", q);
            r = PQexecPrepared(c->pg, name, p ? p->n : 0, p ? p->v : NULL, p ? p->len : NULL,
                               p ? p->fmt : NULL, binary ? 1 : 0);
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            if (out)
                *out = r;
            else
                PQclear(r);
            return 0;
        }
        if (attempt == 0 && !c->in_tx && PQstatus(c->pg) == CONNECTION_BAD) {
            PQclear(r);
            int rc = conn_reset(c);
            if (rc < 0) return rc;
            continue;
        }
        int rc = pg_fail(c, r, what);
        PQclear(r);
        return rc;
    }
}

/* A write statement; *changes (when not NULL) gets the rows it affected. */
static int write_q(conn *c, int q, const params *p, int *changes)
{
    PGresult *r;
    int rc = run_q(c, q, p, false, &r, "write metadata");
    if (rc < 0) return rc;
    if (changes) *changes = atoi(PQcmdTuples(r));
    PQclear(r);
    return 0;
}

static int simple(conn *c, const char *sql, ExecStatusType want, const char *what)
{
    PGresult *r = PQexec(c->pg, sql);
    int rc = PQresultStatus(r) == want ? 0 : pg_fail(c, r, what);
    PQclear(r);
    return rc;
}

/* Starts a write transaction holding the write lock (SQLite's BEGIN IMMEDIATE). READ COMMITTED
 * whatever the server's default: each statement after the lock then sees every write committed
 * before it was granted (a snapshot taken when the transaction began would not). */
static int begin(conn *c)
{
    if (c->borrowed) return berr_set(BERR_INTERNAL, "metadata write inside a locked callback");
    for (int attempt = 0;; attempt++) {
        c->in_tx = true;
        PGresult *r = PQexec(c->pg, "BEGIN ISOLATION LEVEL READ COMMITTED; "
                                    "SELECT pg_advisory_xact_lock(" WRITE_LOCK ")");
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            PQclear(r);
            return 0;
        }
        if (attempt == 0 && PQstatus(c->pg) == CONNECTION_BAD) {
            PQclear(r);
            int rc = conn_reset(c);
            if (rc < 0) return rc;
            continue;
        }
        int rc = pg_fail(c, r, "begin");
        PQclear(r);
        if (PQtransactionStatus(c->pg) != PQTRANS_IDLE) PQclear(PQexec(c->pg, "ROLLBACK"));
        c->in_tx = false;
        return rc;
    }
}

/* Commits (rc == 0) or rolls back, keeping the first error's detail. */
static int finish_tx(conn *c, int rc)
{
    if (rc == 0) {
        PGresult *r = PQexec(c->pg, "COMMIT");
        if (PQresultStatus(r) != PGRES_COMMAND_OK) rc = pg_fail(c, r, "commit");
        PQclear(r);
    }
    if (rc < 0 && PQtransactionStatus(c->pg) != PQTRANS_IDLE && PQstatus(c->pg) == CONNECTION_OK) {
        char keep[1024];
        snprintf(keep, sizeof keep, "%s", berr_msg());
        PQclear(PQexec(c->pg, "ROLLBACK"));
        berr_set((berr)-rc, "%s", keep);
    }
    c->in_tx = false;
    return rc;
}

/* One statement in its own write transaction (under the write lock). */
static int write_one(pg_meta *m, int q, params *p)
{
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    rc = begin(c);
    if (rc == 0) rc = write_q(c, q, p, NULL);
    rc = finish_tx(c, rc);
    conn_give(m, c);
    return rc;
}

static char *dup_val(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : strdup(PQgetvalue(r, row, col));
}

static int64_t txt_i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static int64_t bin_i64(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 8) return 0;
    uint64_t v;
    memcpy(&v, PQgetvalue(r, row, col), 8);
    return (int64_t)be64toh(v);
}

/* ---- blobs ---- */

/* Looks a blob up (linked to repo, or the row itself when repo is NULL) on c. Returns 0, or
 * -missing when absent. */
static int blob_find(conn *c, const char *repo, const char *digest, uint64_t *size, berr missing)
{
    params p = {0};
    p_text(&p, repo ? repo : digest);
    if (repo) p_text(&p, digest);
    PGresult *r;
    int rc = run_q(c, repo ? Q_BLOB_LINKED : Q_BLOB_ROW, &p, false, &r, "blob lookup");
    if (rc < 0) return rc;
    if (PQntuples(r) > 0) {
        if (size) *size = (uint64_t)txt_i64(r, 0, 0);
    } else {
        rc = berr_set(missing, "blob unknown to registry: %s", digest);
    }
    PQclear(r);
    return rc;
}

static int pg_blob_lookup(store_meta *base, const char *repo, const char *digest, uint64_t *size)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    rc = blob_find(c, repo, digest, size, BERR_BLOB_UNKNOWN);
    conn_give(m, c);
    return rc;
}

static int link_blob(conn *c, const char *repo, const char *digest, int64_t now)
{
    params p = {0};
    p_text(&p, repo);
    p_int(&p, now);
    int rc = write_q(c, Q_REPO_ADD, &p, NULL);
    if (rc < 0) return rc;
    params l = {0};
    p_text(&l, repo);
    p_text(&l, digest);
    p_int(&l, now);
    return write_q(c, Q_LINK_ADD, &l, NULL);
}

static int blob_upsert(conn *c, const char *digest, uint64_t size, int64_t now)
{
    params p = {0};
    p_text(&p, digest);
    p_int(&p, (int64_t)size);
    p_int(&p, now);
    return write_q(c, Q_BLOB_UPSERT, &p, NULL);
}

static int pg_blob_commit(store_meta *base, const char *repo, const char *digest, uint64_t size,
                          store_place_fn place, void *arg)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    int64_t now = store_now();
    rc = begin(c);
    if (rc == 0) rc = place(arg);
    if (rc == 0) rc = blob_upsert(c, digest, size, now);
    if (rc == 0) rc = link_blob(c, repo, digest, now);
    rc = finish_tx(c, rc);
    conn_give(m, c);
    return rc;
}

static int pg_blob_link(store_meta *base, const char *repo, const char *from, const char *digest)
{
    pg_meta *m = (pg_meta *)base;
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

static int pg_blob_link_listed(store_meta *base, const char *repo, const char *digest)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    rc = begin(c);
    if (rc == 0) {
        params p = {0};
        p_text(&p, repo);
        p_text(&p, digest);
        PGresult *r;
        rc = run_q(c, Q_REF_LISTED, &p, false, &r, "reference lookup");
        if (rc == 0) {
            if (PQntuples(r) == 0)
                rc = berr_set(BERR_BLOB_UNKNOWN, "blob unknown to registry: %s", digest);
            PQclear(r);
        }
    }
    if (rc == 0) rc = blob_find(c, NULL, digest, NULL, BERR_BLOB_UNKNOWN);
    if (rc == 0) rc = link_blob(c, repo, digest, store_now());
    rc = finish_tx(c, rc);
    conn_give(m, c);
    return rc;
}

/* Runs one write statement of (a, b) in its own locked transaction; *changes gets its count. */
static int write2(store_meta *base, int q, const char *a, const char *b, int *changes)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    rc = begin(c);
    if (rc == 0) {
        params p = {0};
        p_text(&p, a);
        p_text(&p, b);
        rc = write_q(c, q, &p, changes);
    }
    rc = finish_tx(c, rc);
    conn_give(m, c);
    return rc;
}

static int pg_blob_unlink(store_meta *base, const char *repo, const char *digest)
{
    int changes = 0;
    int rc = write2(base, Q_LINK_DEL, repo, digest, &changes);
    if (rc == 0 && changes == 0) rc = berr_set(BERR_BLOB_UNKNOWN, "blob unknown to registry");
    return rc;
}

/* ---- manifests ---- */

static int pg_manifest_get(store_meta *base, const char *repo, const char *ref, store_manifest *out)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    params p = {0};
    p_text(&p, repo);
    p_text(&p, ref);
    PGresult *r;
    rc = run_q(c, ref_is_digest(ref) ? Q_MAN_BY_DIGEST : Q_MAN_BY_TAG, &p, true, &r,
               "manifest lookup");
    if (rc == 0) {
        if (PQntuples(r) > 0) {
            snprintf(out->digest, sizeof out->digest, "%.*s", PQgetlength(r, 0, 0),
                     PQgetvalue(r, 0, 0));
            out->media_type = strndup(PQgetvalue(r, 0, 1), (size_t)PQgetlength(r, 0, 1));
            out->size = (size_t)PQgetlength(r, 0, 2);
            out->checked = bin_i64(r, 0, 3);
            out->content = malloc(out->size + 1);
            if (out->content && out->media_type) {
                memcpy(out->content, PQgetvalue(r, 0, 2), out->size);
                out->content[out->size] = '\0';
            } else {
                free(out->content);
                free(out->media_type);
                out->content = out->media_type = NULL;
                rc = berr_set(BERR_INTERNAL, "out of memory");
            }
        } else {
            rc = berr_set(BERR_MANIFEST_UNKNOWN, "manifest unknown to registry");
        }
        PQclear(r);
    }
    conn_give(m, c);
    return rc;
}

static int pg_manifest_put(store_meta *base, const store_manifest_put_req *q)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    int64_t now = store_now();
    rc = begin(c);
    if (rc == 0 && q->check) rc = q->check(q->check_arg);
    for (size_t i = 0; rc == 0 && i < q->nabsent; i++) {
        params p = {0};
        p_text(&p, q->absent_repos[i]);
        p_text(&p, q->absent_tags[i]);
        PGresult *r;
        rc = run_q(c, Q_TAG_EXISTS, &p, false, &r, "tag lookup");
        if (rc == 0) {
            if (PQntuples(r) > 0)
                rc = berr_set(BERR_CONFLICT, "%s:%s already exists", q->absent_repos[i],
                              q->absent_tags[i]);
            PQclear(r);
        }
    }
    for (size_t i = 0; rc == 0 && i < q->nnew_blobs; i++) {
        rc = blob_upsert(c, q->new_blobs[i].digest, q->new_blobs[i].size, now);
        if (rc == 0) rc = link_blob(c, q->repo, q->new_blobs[i].digest, now);
    }
    /* mirrored manifests reference content fetched later, on demand */
    for (size_t i = 0; rc == 0 && !q->mirrored && i < q->nblobs; i++)
        rc = blob_find(c, q->repo, q->blobs[i], NULL, BERR_MANIFEST_BLOB_UNKNOWN);
    for (size_t i = 0; rc == 0 && !q->mirrored && i < q->nchildren; i++) {
        params p = {0};
        p_text(&p, q->repo);
        p_text(&p, q->children[i]);
        PGresult *r;
        rc = run_q(c, Q_MAN_EXISTS, &p, false, &r, "manifest lookup");
        if (rc == 0) {
            if (PQntuples(r) == 0)
                rc = berr_set(BERR_MANIFEST_BLOB_UNKNOWN, "manifest unknown to registry: %s",
                              q->children[i]);
            PQclear(r);
        }
    }
    if (rc == 0) {
        params p = {0};
        p_text(&p, q->repo);
        p_int(&p, now);
        rc = write_q(c, q->mirrored ? Q_REPO_MIRROR : Q_REPO_ADD, &p, NULL);
    }
    if (rc == 0) {
        params p = {0};
        p_text(&p, q->repo);
        p_text(&p, q->digest);
        p_text(&p, q->media_type);
        p_bytes(&p, q->content, q->size);
        p_text(&p, q->subject);
        p_text(&p, q->artifact_type);
        p_text(&p, q->annotations_json);
        p_int(&p, now);
        p_int(&p, q->mirrored ? 1 : 0);
        rc = write_q(c, Q_MAN_INSERT, &p, NULL);
    }
    if (rc == 0 && q->chart_tag && q->chart_entry && q->chart_yaml) {
        params p = {0};
        p_text(&p, q->repo);
        p_text(&p, q->digest);
        p_text(&p, q->chart_tag);
        p_text(&p, q->chart_entry);
        p_text(&p, q->chart_yaml);
        rc = write_q(c, Q_CHART_INSERT, &p, NULL);
    }
    for (size_t i = 0; rc == 0 && i < q->nblobs + q->nchildren; i++) {
        bool blob = i < q->nblobs;
        params p = {0};
        p_text(&p, q->repo);
        p_text(&p, q->digest);
        p_text(&p, blob ? q->blobs[i] : q->children[i - q->nblobs]);
        p_int(&p, blob ? 0 : 1);
        rc = write_q(c, Q_REF_INSERT, &p, NULL);
    }
    for (size_t i = 0; rc == 0 && i < q->ntags; i++) {
        params p = {0};
        p_text(&p, q->repo);
        p_text(&p, q->tags[i]);
        p_text(&p, q->digest);
        p_int(&p, now);
        if (q->mirrored)
            p_int(&p, now);
        else
            p_text(&p, NULL);
        rc = write_q(c, Q_TAG_UPSERT, &p, NULL);
    }
    rc = finish_tx(c, rc);
    conn_give(m, c);
    return rc;
}

/* Removes a manifest's row, tags and references inside c's transaction. */
static int manifest_remove(conn *c, int q_del, const char *repo, const char *digest, int *changes)
{
    params p = {0};
    p_text(&p, repo);
    p_text(&p, digest);
    int rc = write_q(c, q_del, &p, changes);
    if (rc == 0 && (!changes || *changes > 0)) rc = write_q(c, Q_MAN_TAGS_DEL, &p, NULL);
    if (rc == 0 && (!changes || *changes > 0)) rc = write_q(c, Q_MAN_REFS_DEL, &p, NULL);
    return rc;
}

static int pg_manifest_delete(store_meta *base, const char *repo, const char *digest)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    int changes = 0;
    rc = begin(c);
    if (rc == 0) rc = manifest_remove(c, Q_MAN_DEL, repo, digest, &changes);
    if (rc == 0 && changes == 0)
        rc = berr_set(BERR_MANIFEST_UNKNOWN, "manifest unknown to registry");
    rc = finish_tx(c, rc);
    conn_give(m, c);
    return rc;
}

static int pg_tag_checked(store_meta *base, const char *repo, const char *tag)
{
    params p = {0};
    p_text(&p, repo);
    p_text(&p, tag);
    p_int(&p, store_now());
    return write_one((pg_meta *)base, Q_TAG_CHECKED, &p);
}

/* 0 when repo exists, -BERR_NAME_UNKNOWN (with msg) when not. */
static int repo_find(conn *c, const char *repo, const char *msg)
{
    params p = {0};
    p_text(&p, repo);
    PGresult *r;
    int rc = run_q(c, Q_REPO_EXISTS, &p, false, &r, "repository lookup");
    if (rc < 0) return rc;
    if (PQntuples(r) == 0) rc = berr_set(BERR_NAME_UNKNOWN, "%s", msg);
    PQclear(r);
    return rc;
}

static int pg_repo_exists(store_meta *base, const char *repo)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    rc = repo_find(c, repo, "repository unknown");
    conn_give(m, c);
    return rc;
}

static int pg_tag_delete(store_meta *base, const char *repo, const char *tag)
{
    int changes = 0;
    int rc = write2(base, Q_TAG_DEL, repo, tag, &changes);
    if (rc == 0 && changes == 0) rc = berr_set(BERR_MANIFEST_UNKNOWN, "tag unknown to registry");
    return rc;
}

/* Runs q and collects column 0 into out, at most n items, flagging `more` when an n+1th
 * exists. */
static int collect(conn *c, int q, const params *p, long n, store_list *out)
{
    PGresult *r;
    int rc = run_q(c, q, p, false, &r, "list");
    if (rc < 0) return rc;
    int rows = PQntuples(r);
    for (int i = 0; rc == 0 && i < rows; i++) {
        if ((long)out->n >= n) {
            out->more = true;
            break;
        }
        rc = store_list_add(out, PQgetvalue(r, i, 0));
    }
    PQclear(r);
    return rc;
}

static int pg_tags_list(store_meta *base, const char *repo, const char *last, long n,
                        store_list *out)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    rc = repo_find(c, repo, "repository name not known to registry");
    if (rc == 0) {
        params p = {0};
        p_text(&p, repo);
        p_text(&p, last ? last : "");
        p_int(&p, n + 1);
        rc = collect(c, Q_TAGS, &p, n, out);
    }
    conn_give(m, c);
    return rc;
}

static int pg_catalog(store_meta *base, const char *last, long n, store_list *out)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    params p = {0};
    p_text(&p, last ? last : "");
    p_int(&p, n + 1);
    rc = collect(c, Q_CATALOG, &p, n, out);
    conn_give(m, c);
    return rc;
}

static int pg_referrers(store_meta *base, const char *repo, const char *digest, const char *atype,
                        store_referrer_list *out)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    params p = {0};
    p_text(&p, repo);
    p_text(&p, digest);
    if (atype) p_text(&p, atype);
    PGresult *r;
    rc = run_q(c, atype ? Q_REFERRERS_TYPE : Q_REFERRERS, &p, false, &r, "referrers");
    if (rc == 0) {
        int rows = PQntuples(r);
        for (int i = 0; rc == 0 && i < rows; i++) {
            store_referrer *items = realloc(out->items, (out->n + 1) * sizeof *items);
            if (!items) {
                rc = berr_set(BERR_INTERNAL, "out of memory");
                break;
            }
            out->items = items;
            store_referrer *it = &out->items[out->n++];
            memset(it, 0, sizeof *it);
            snprintf(it->digest, sizeof it->digest, "%s", PQgetvalue(r, i, 0));
            it->media_type = dup_val(r, i, 1);
            it->size = (uint64_t)txt_i64(r, i, 2);
            it->artifact_type = dup_val(r, i, 3);
            it->annotations_json = dup_val(r, i, 4);
        }
        PQclear(r);
    }
    conn_give(m, c);
    return rc;
}

/* ---- gc ---- */

static int pg_gc_manifests(store_meta *base, int64_t cutoff, bool dry_run, size_t *removed,
                           store_list *blobs)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    *removed = 0;
    rc = begin(c);
    params cp = {0};
    p_int(&cp, cutoff);
    while (rc == 0) {
        PGresult *r;
        rc = run_q(c, Q_GC_MANIFESTS, &cp, false, &r, "gc manifests");
        if (rc < 0) break;
        int rows = PQntuples(r);
        for (int i = 0; rc == 0 && i < rows; i++) {
            const char *repo = PQgetvalue(r, i, 0), *digest = PQgetvalue(r, i, 1);
            log_info("msg=\"gc: %s manifest\" repo=%s digest=%s",
                     dry_run ? "would remove" : "remove", repo, digest);
            rc = manifest_remove(c, Q_MAN_DEL, repo, digest, NULL);
        }
        PQclear(r);
        *removed += (size_t)rows;
        if (rows == 0) break;
    }
    if (rc == 0) rc = collect(c, Q_GC_BLOBS, &cp, 1L << 40, blobs);
    if (dry_run) {
        if (PQtransactionStatus(c->pg) != PQTRANS_IDLE) PQclear(PQexec(c->pg, "ROLLBACK"));
        c->in_tx = false;
    } else {
        rc = finish_tx(c, rc);
    }
    conn_give(m, c);
    return rc;
}

/* Deletes a blob row with q (params p; 1 row when it still qualifies), its links, and moves its
 * file with trash() inside the same transaction. */
static int blob_remove(store_meta *base, int q, const params *p, const char *digest,
                       store_place_fn trash, void *arg, bool *removed)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    *removed = false;
    rc = begin(c);
    int changes = 0;
    if (rc == 0) rc = write_q(c, q, p, &changes);
    *removed = rc == 0 && changes == 1;
    if (rc == 0 && *removed) {
        params d = {0};
        p_text(&d, digest);
        rc = write_q(c, Q_BLOB_LINKS_DEL, &d, NULL);
    }
    if (rc == 0 && *removed) rc = trash(arg);
    rc = finish_tx(c, rc);
    if (rc < 0) *removed = false;
    conn_give(m, c);
    return rc;
}

static int pg_gc_blob_remove(store_meta *base, const char *digest, int64_t cutoff,
                             store_place_fn trash, void *arg, bool *removed)
{
    params p = {0};
    p_int(&p, cutoff);
    p_text(&p, digest);
    return blob_remove(base, Q_GC_BLOB_DEL, &p, digest, trash, arg, removed);
}

static int pg_locked(store_meta *base, store_place_fn fn, void *arg)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    rc = begin(c);
    if (rc == 0) {
        tl_locked = c;
        tl_locked_owner = m;
        rc = fn(arg);
        tl_locked = NULL;
        tl_locked_owner = NULL;
    }
    rc = finish_tx(c, rc);
    conn_give(m, c);
    return rc;
}

/* ---- mirror space: access times and eviction ---- */

static int pg_repo_mark_mirror(store_meta *base, const char *repo)
{
    params p = {0};
    p_text(&p, repo);
    p_int(&p, store_now());
    return write_one((pg_meta *)base, Q_REPO_MIRROR, &p);
}

static int pg_touch(store_meta *base, const store_access *a, size_t n)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    rc = begin(c);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        params p = {0};
        p_text(&p, a[i].repo);
        p_text(&p, a[i].digest);
        p_int(&p, a[i].when);
        rc = write_q(c, Q_TOUCH, &p, NULL);
    }
    rc = finish_tx(c, rc);
    conn_give(m, c);
    return rc;
}

/* One byte count (a SELECT of one integer) on a pooled connection. */
static int sum_bytes(store_meta *base, int q, uint64_t *bytes)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    PGresult *r;
    rc = run_q(c, q, NULL, false, &r, "usage");
    if (rc == 0) {
        *bytes = PQntuples(r) > 0 ? (uint64_t)txt_i64(r, 0, 0) : 0;
        PQclear(r);
    }
    conn_give(m, c);
    return rc;
}

static int pg_usage(store_meta *base, uint64_t *bytes)
{
    return sum_bytes(base, Q_USAGE, bytes);
}

static int pg_mirror_usage(store_meta *base, uint64_t *bytes)
{
    return sum_bytes(base, Q_MIRROR_USAGE, bytes);
}

static int pg_mirror_lru(store_meta *base, size_t max, int64_t before, store_list *out)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    params p = {0};
    p_int(&p, (int64_t)max);
    p_int(&p, before > 0 ? before : INT64_MAX);
    rc = collect(c, Q_MIRROR_LRU, &p, (long)max, out);
    conn_give(m, c);
    return rc;
}

/* Removes one mirrored manifest (its tags and references), then lists the blobs that only
 * mirrored repositories use and that no manifest references any more. */
static int pg_mirror_evict(store_meta *base, const char *repo, const char *digest,
                           store_list *freed)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    rc = begin(c);
    if (rc == 0) {
        params p = {0};
        p_text(&p, repo);
        p_text(&p, digest);
        rc = write_q(c, Q_MIRROR_MAN_DEL, &p, NULL);
        if (rc == 0) rc = write_q(c, Q_MAN_TAGS_DEL, &p, NULL);
        if (rc == 0) rc = write_q(c, Q_MAN_REFS_DEL, &p, NULL);
    }
    rc = finish_tx(c, rc);
    if (rc == 0) rc = collect(c, Q_MIRROR_FREED, NULL, 1L << 40, freed);
    conn_give(m, c);
    return rc;
}

/* Removes a blob that only mirrored repositories use and nothing references (re-checked under
 * the write lock), moving its file with trash() inside the transaction. */
static int pg_mirror_blob_remove(store_meta *base, const char *digest, store_place_fn trash,
                                 void *arg, bool *removed)
{
    params p = {0};
    p_text(&p, digest);
    return blob_remove(base, Q_MIRROR_BLOB_DEL, &p, digest, trash, arg, removed);
}

/* ---- fsck ---- */

/* Streams the rows of q (one at a time, single-row mode: a large store is never held in memory
 * at once) to row(); stops at row()'s first non-zero return. */
static int stream_rows(store_meta *base, int q, bool binary,
                       int (*row)(void *ctx, const PGresult *r), void *ctx)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    PGresult *r = NULL;
    char name[16];
    snprintf(name, sizeof name, "q%d", q);
    if (!prepare(c, q, &r)) {
        rc = pg_fail(c, r, "list");
        PQclear(r);
        conn_give(m, c);
        return rc;
    }
    if (!PQsendQueryPrepared(c->pg, name, 0, NULL, NULL, NULL, binary ? 1 : 0)) {
        rc = pg_fail(c, NULL, "list");
        conn_give(m, c);
        return rc;
    }
    PQsetSingleRowMode(c->pg);
    int cb_rc = 0;
    while ((r = PQgetResult(c->pg))) {
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_SINGLE_TUPLE) {
            if (cb_rc == 0 && rc == 0) cb_rc = row(ctx, r);
        } else if (st != PGRES_TUPLES_OK && rc == 0) {
            rc = pg_fail(c, r, "list");
        }
        PQclear(r);
    }
    conn_give(m, c);
    return rc < 0 ? rc : cb_rc;
}

typedef struct {
    int (*blob)(void *, const char *, uint64_t);
    int (*manifest)(void *, const char *, const char *, const char *, size_t);
    void *arg;
} walk_ctx;

static int blob_row(void *ctx, const PGresult *r)
{
    walk_ctx *w = ctx;
    return w->blob(w->arg, PQgetvalue(r, 0, 0), (uint64_t)txt_i64(r, 0, 1));
}

static int pg_each_blob(store_meta *base, int (*cb)(void *, const char *, uint64_t), void *arg)
{
    walk_ctx w = {.blob = cb, .arg = arg};
    return stream_rows(base, Q_EACH_BLOB, false, blob_row, &w);
}

static int manifest_row(void *ctx, const PGresult *r)
{
    walk_ctx *w = ctx;
    char *repo = strndup(PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0));
    char *digest = strndup(PQgetvalue(r, 0, 1), (size_t)PQgetlength(r, 0, 1));
    int rc = repo && digest ? w->manifest(w->arg, repo, digest, PQgetvalue(r, 0, 2),
                                          (size_t)PQgetlength(r, 0, 2))
                            : berr_set(BERR_INTERNAL, "out of memory");
    free(repo);
    free(digest);
    return rc;
}

static int pg_each_manifest(store_meta *base,
                            int (*cb)(void *, const char *, const char *, const char *, size_t),
                            void *arg)
{
    walk_ctx w = {.manifest = cb, .arg = arg};
    return stream_rows(base, Q_EACH_MANIFEST, true, manifest_row, &w);
}

static int pg_check_refs(store_meta *base, void (*cb)(void *, const char *), void *arg)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    for (int q = Q_CHECK0; rc == 0 && q <= Q_CHECK5; q++) {
        PGresult *r;
        rc = run_q(c, q, NULL, false, &r, "check references");
        if (rc < 0) break;
        for (int i = 0; i < PQntuples(r); i++)
            cb(arg, PQgetvalue(r, i, 0));
        PQclear(r);
    }
    conn_give(m, c);
    return rc;
}

/* ---- Helm charts ---- */

static int pg_charts(store_meta *base, const char *prefix, bool exact, store_chart_list *out)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    char upper[600];
    snprintf(upper, sizeof upper, "%s", prefix);
    size_t ul = strlen(upper);
    if (ul) upper[ul - 1] = (char)(upper[ul - 1] + 1);
    params p = {0};
    p_text(&p, prefix);
    if (!exact) p_text(&p, upper);
    PGresult *r;
    rc = run_q(c, exact ? Q_CHARTS_REPO : Q_CHARTS, &p, false, &r, "chart listing");
    if (rc == 0) {
        int rows = PQntuples(r);
        for (int i = 0; rc == 0 && i < rows; i++) {
            store_chart *items = realloc(out->items, (out->n + 1) * sizeof *items);
            if (!items) {
                rc = berr_set(BERR_INTERNAL, "out of memory");
                break;
            }
            out->items = items;
            store_chart *it = &out->items[out->n++];
            it->repo = dup_val(r, i, 0);
            it->tag = dup_val(r, i, 1);
            it->entry = dup_val(r, i, 2);
            snprintf(it->digest, sizeof it->digest, "%s", PQgetvalue(r, i, 3));
            it->yaml = dup_val(r, i, 4);
            if (!it->repo || !it->tag || !it->entry || !it->yaml)
                rc = berr_set(BERR_INTERNAL, "out of memory (or a chart entry without YAML)");
        }
        PQclear(r);
    }
    conn_give(m, c);
    return rc;
}

static int pg_charts_gen(store_meta *base, int64_t *latest, int64_t *oldest)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    PGresult *r;
    rc = run_q(c, Q_CHARTS_GEN, NULL, false, &r, "chart changes");
    if (rc == 0) {
        *latest = txt_i64(r, 0, 0);
        if (oldest) *oldest = txt_i64(r, 0, 1);
        PQclear(r);
    }
    conn_give(m, c);
    return rc;
}

static int pg_charts_changes(store_meta *base, int64_t since, const char *prefix, store_list *out)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    params p = {0};
    p_int(&p, since);
    p_text(&p, prefix);
    rc = collect(c, Q_CHARTS_CHANGES, &p, LONG_MAX - 1, out);
    conn_give(m, c);
    return rc;
}

/* ---- lifecycle ---- */

static void pg_close(store_meta *base)
{
    pg_meta *m = (pg_meta *)base;
    for (int i = 0; i < m->nidle; i++)
        conn_close(m->idle[i]);
    free(m->idle);
    for (int i = 0; i < KW_MAX && m->kw[i]; i++)
        free(m->val[i]);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
}

/* Brings the schema to SCHEMA_VERSION in one transaction under the migration lock: processes
 * starting together queue, and the later ones find nothing left to do. */
static int migrate(conn *c)
{
    int rc = simple(c, "BEGIN; SELECT pg_advisory_xact_lock(" MIGRATE_LOCK ")", PGRES_TUPLES_OK,
                    "migrate: lock");
    if (rc < 0) return rc;
    c->in_tx = true;
    rc = simple(c, "CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)",
                PGRES_COMMAND_OK, "migrate: schema_version");
    int have = 0;
    if (rc == 0) {
        PGresult *r = PQexec(c->pg, "SELECT coalesce(max(version), 0) FROM schema_version");
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            have = (int)txt_i64(r, 0, 0);
        else
            rc = pg_fail(c, r, "migrate: schema_version");
        PQclear(r);
    }
    if (rc == 0 && have > SCHEMA_VERSION)
        log_warn("msg=\"postgres: the database schema is newer than this berth's\" "
                 "version=%d known=%d",
                 have, SCHEMA_VERSION);
    for (int v = have; rc == 0 && v < SCHEMA_VERSION; v++) {
        char what[64];
        snprintf(what, sizeof what, "migrate: to schema version %d", v + 1);
        rc = simple(c, migrations[v], PGRES_COMMAND_OK, what);
        if (rc == 0) {
            char num[16];
            snprintf(num, sizeof num, "%d", v + 1);
            const char *vals[1] = {num};
            PGresult *r = PQexecParams(c->pg, "INSERT INTO schema_version(version) VALUES($1)", 1,
                                       NULL, vals, NULL, NULL, 0);
            if (PQresultStatus(r) != PGRES_COMMAND_OK) rc = pg_fail(c, r, what);
            PQclear(r);
        }
        if (rc == 0) log_info("msg=\"postgres: schema migrated\" version=%d", v + 1);
    }
    return finish_tx(c, rc);
}

static void kw_add(pg_meta *m, int *n, const char *k, const char *v)
{
    if (!v || !*v || *n >= KW_MAX) return;
    m->kw[*n] = k;
    m->val[*n] = strdup(v);
    if (m->val[*n]) (*n)++;
}

static int pg_lease_take(store_meta *base, const char *key, const char *owner, int64_t until,
                         int64_t now)
{
    pg_meta *m = (pg_meta *)base;
    conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    params p = {0};
    p_text(&p, key);
    p_text(&p, owner);
    p_int(&p, until);
    p_int(&p, now);
    int changes = 0;
    rc = begin(c);
    if (rc == 0) rc = write_q(c, Q_LEASE_TAKE, &p, &changes);
    rc = finish_tx(c, rc);
    conn_give(m, c);
    if (rc == 0 && changes == 0) rc = berr_set(BERR_CONFLICT, "lease %s is held", key);
    return rc;
}

static int pg_lease_drop(store_meta *base, const char *key, const char *owner)
{
    params p = {0};
    p_text(&p, key);
    p_text(&p, owner);
    return write_one((pg_meta *)base, Q_LEASE_DROP, &p);
}

int store_meta_pg_open(store_meta **out, const config_database *db)
{
    pthread_once(&pq_once, load_pq);
    if (!pq_loaded)
        return berr_set(BERR_CONFIG,
                        "database.enabled: the PostgreSQL client library (libpq.so.5) could not "
                        "be loaded (%s); install libpq5 or disable database",
                        pq_load_err);
    pg_meta *m = calloc(1, sizeof *m);
    if (!m) return berr_set(BERR_INTERNAL, "out of memory");
    m->base.ops = NULL;
    int n = 0;
    char port[16];
    snprintf(port, sizeof port, "%d", db->port);
    kw_add(m, &n, "host", db->host);
    if (db->port > 0) kw_add(m, &n, "port", port);
    kw_add(m, &n, "user", db->user);
    kw_add(m, &n, "password", db->password);
    kw_add(m, &n, "dbname", db->dbname);
    kw_add(m, &n, "sslmode", db->sslmode);
    kw_add(m, &n, "application_name", "berth");
    kw_add(m, &n, "connect_timeout", "10");
    /* a peer gone without a word (host down, network cut) is noticed within about a minute */
    kw_add(m, &n, "keepalives_idle", "30");
    kw_add(m, &n, "keepalives_interval", "10");
    kw_add(m, &n, "keepalives_count", "3");
    m->max = db->maxopen;
    m->idle = calloc((size_t)m->max, sizeof *m->idle);
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    static const store_meta_ops pg_ops = {
        .usage = pg_usage,
        .charts = pg_charts,
        .charts_gen = pg_charts_gen,
        .charts_changes = pg_charts_changes,
        .lease_take = pg_lease_take,
        .lease_drop = pg_lease_drop,
        .close = pg_close,
        .blob_lookup = pg_blob_lookup,
        .blob_commit = pg_blob_commit,
        .blob_link = pg_blob_link,
        .blob_link_listed = pg_blob_link_listed,
        .blob_unlink = pg_blob_unlink,
        .manifest_get = pg_manifest_get,
        .manifest_put = pg_manifest_put,
        .manifest_delete = pg_manifest_delete,
        .tag_delete = pg_tag_delete,
        .tag_checked = pg_tag_checked,
        .repo_exists = pg_repo_exists,
        .tags_list = pg_tags_list,
        .catalog = pg_catalog,
        .referrers = pg_referrers,
        .gc_manifests = pg_gc_manifests,
        .gc_blob_remove = pg_gc_blob_remove,
        .locked = pg_locked,
        .repo_mark_mirror = pg_repo_mark_mirror,
        .touch = pg_touch,
        .mirror_usage = pg_mirror_usage,
        .mirror_lru = pg_mirror_lru,
        .mirror_evict = pg_mirror_evict,
        .mirror_blob_remove = pg_mirror_blob_remove,
        .each_blob = pg_each_blob,
        .each_manifest = pg_each_manifest,
        .check_refs = pg_check_refs,
    };
    m->base.ops = &pg_ops;
    int rc = m->idle ? 0 : berr_set(BERR_INTERNAL, "out of memory");
    conn *c = NULL;
    if (rc == 0) rc = conn_take(m, &c);
    if (rc == 0) {
        rc = migrate(c);
        conn_give(m, c);
    }
    if (rc < 0) {
        pg_close(&m->base);
        return rc;
    }
    log_debug("msg=\"metadata in postgres\" host=%s dbname=%s pool=%d", db->host ? db->host : "",
              db->dbname ? db->dbname : "", m->max);
    *out = &m->base;
    return 0;
}
