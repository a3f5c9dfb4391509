/*
 * meta_sql: the metadata operations (store_meta_ops), written once in SQL over a thin driver
 * (store/sqldrv.h: SQLite in meta_sqlite.c, PostgreSQL in meta_pg.c). The tables are the same on
 * both engines (src/store/schema/<engine>/NNN.sql); so are the statements, in $N form, with a
 * per-dialect text only where the SQL really differs.
 *
 * Invariants both engines keep through this file:
 *  - every write runs in a write transaction that holds the database-wide write lock (SQLite's
 *    single writer, PostgreSQL's advisory lock): a manifest PUT's "are my blobs there?" and gc's
 *    "is this blob unreferenced?" never interleave, and the chart change log commits in order.
 *    Readers never wait (WAL readers, MVCC).
 *  - a step that fails rolls the whole transaction back and its error (util/err.h code and
 *    message) is the one returned.
 *  - connections come from one pool per database (SQLite: 16; PostgreSQL: database.pool.maxopen),
 *    each keeping its prepared statements, so a manifest GET is one pool take, one bound
 *    statement and one give-back.
 *  - inside `locked`'s callback the thread's reads run on the connection holding the lock (inside
 *    its transaction), never on another pooled one, which could wait forever for a pool whose
 *    other connections all queue on the lock this thread holds; a write there is refused.
 */
#include "store/sqldrv.h"
#include "util/err.h"
#include "util/log.h"
#include "util/ref.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

/* "every row": the bound of lists that have no page size */
#define NO_LIMIT INT64_MAX

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
    Q_MAN_PARENTS,
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
    Q_BLOB_COUNT, /* the metrics' berth_store_blobs */
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
    Q_EVENT_ADD,
    Q_REPO_MIRRORED,
    Q_CHART_EXISTS,
    Q_EVENTS_READ,
    Q_CURSOR_GET,
    Q_CURSOR_ADD,
    Q_CURSOR_SET,
    Q_EVENTS_COUNT,
    Q_EVENTS_NTH,
    Q_EVENTS_PRUNE,
    Q__COUNT
};
_Static_assert(Q__COUNT <= SQLDRV_STMTS, "more statements than a connection holds");

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

typedef struct {
    const char *sql;
    const char *pg; /* PostgreSQL's own text, where it differs */
    bool stream;    /* a walk over every row: fetched one at a time */
} stmt_def;

static const stmt_def q_def[Q__COUNT] = {
    [Q_BLOB_LINKED] = {.sql =
                           "SELECT b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest "
                           "WHERE rb.repo = $1 AND rb.digest = $2"},
    [Q_BLOB_ROW] = {.sql = "SELECT size FROM blobs WHERE digest = $1"},
    [Q_BLOB_UPSERT] = {.sql = "INSERT INTO blobs(digest, size, created) VALUES($1, $2, $3) "
                              "ON CONFLICT(digest) DO UPDATE SET created = excluded.created"},
    [Q_REPO_ADD] = {.sql =
                        "INSERT INTO repos(name, created) VALUES($1, $2) ON CONFLICT DO NOTHING"},
    [Q_REPO_MIRROR] = {.sql = "INSERT INTO repos(name, created, mirrored) VALUES($1, $2, 1) "
                              "ON CONFLICT(name) DO UPDATE SET mirrored = 1"},
    [Q_TOUCH] = {.sql = "UPDATE manifests SET accessed = $3 WHERE repo = $1 AND digest = $2"},
    [Q_LINK_ADD] = {.sql = "INSERT INTO repo_blobs(repo, digest, linked) VALUES($1, $2, $3) "
                           "ON CONFLICT(repo, digest) DO UPDATE SET linked = excluded.linked"},
    [Q_LINK_DEL] = {.sql = "DELETE FROM repo_blobs WHERE repo = $1 AND digest = $2"},
    [Q_MAN_BY_TAG] = {.sql = "SELECT m.digest, m.media_type, m.content, t.checked FROM tags t "
                             "JOIN manifests m ON m.repo = t.repo AND m.digest = t.digest "
                             "WHERE t.repo = $1 AND t.tag = $2"},
    [Q_MAN_BY_DIGEST] = {.sql = "SELECT digest, media_type, content, CAST(NULL AS BIGINT) "
                                "FROM manifests WHERE repo = $1 AND digest = $2"},
    [Q_MAN_EXISTS] = {.sql = "SELECT 1 FROM manifests WHERE repo = $1 AND digest = $2"},
    [Q_MAN_INSERT] = {.sql = "INSERT INTO manifests(repo, digest, media_type, content, subject, "
                             "artifact_type, annotations, created, mirrored) "
                             "VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9) "
                             "ON CONFLICT(repo, digest) DO UPDATE SET created = excluded.created"},
    [Q_REF_INSERT] = {.sql = "INSERT INTO manifest_refs(repo, digest, child, kind) "
                             "VALUES($1, $2, $3, $4) ON CONFLICT DO NOTHING"},
    [Q_TAG_UPSERT] = {.sql = "INSERT INTO tags(repo, tag, digest, updated, checked) "
                             "VALUES($1, $2, $3, $4, $5) "
                             "ON CONFLICT(repo, tag) DO UPDATE SET digest = excluded.digest, "
                             "updated = excluded.updated, checked = excluded.checked"},
    [Q_TAG_CHECKED] = {.sql = "UPDATE tags SET checked = $3 WHERE repo = $1 AND tag = $2"},
    [Q_TAG_EXISTS] = {.sql = "SELECT 1 FROM tags WHERE repo = $1 AND tag = $2"},
    [Q_REF_LISTED] = {.sql =
                          "SELECT 1 FROM manifest_refs WHERE child = $2 AND kind = 0 AND repo = $1 "
                          "LIMIT 1"},
    [Q_REPO_EXISTS] = {.sql = "SELECT 1 FROM repos WHERE name = $1"},
    [Q_TAGS] = {.sql = "SELECT tag FROM tags WHERE repo = $1 AND tag > $2 ORDER BY tag LIMIT $3"},
    [Q_CATALOG] = {.sql = "SELECT name FROM repos WHERE name > $1 ORDER BY name LIMIT $2"},
    /* length() of a blob (SQLite) or bytea (PostgreSQL) counts bytes */
    [Q_REFERRERS] =
        {.sql = "SELECT digest, media_type, length(content), artifact_type, annotations "
                "FROM manifests WHERE repo = $1 AND subject = $2 ORDER BY created, digest"},
    [Q_REFERRERS_TYPE] = {.sql = "SELECT digest, media_type, length(content), artifact_type, "
                                 "annotations FROM manifests WHERE repo = $1 AND subject = $2 "
                                 "AND artifact_type = $3 ORDER BY created, digest"},
    [Q_CHART_INSERT] = {.sql = "INSERT INTO charts(repo, digest, tag, entry, yaml) "
                               "VALUES($1, $2, $3, $4, $5) "
                               "ON CONFLICT(repo, digest) DO UPDATE SET tag = excluded.tag, "
                               "entry = excluded.entry, yaml = excluded.yaml"},
    /* charts in index.yaml: a chart manifest counts under the tag its version maps to; $2 is
     * $1 with its last character incremented: the range of names starting with $1 */
    [Q_CHARTS] = {.sql = "SELECT c.repo, c.tag, c.entry, c.digest, c.yaml FROM charts c "
                         "JOIN tags t ON t.repo = c.repo AND t.digest = c.digest AND t.tag = c.tag "
                         "WHERE c.repo >= $1 AND c.repo < $2"},
    [Q_CHARTS_REPO] =
        {.sql = "SELECT c.repo, c.tag, c.entry, c.digest, c.yaml FROM charts c "
                "JOIN tags t ON t.repo = c.repo AND t.digest = c.digest AND t.tag = c.tag "
                "WHERE c.repo = $1"},
    [Q_CHARTS_GEN] =
        {.sql = "SELECT coalesce(max(seq), 0), coalesce(min(seq), 0) FROM charts_changes"},
    [Q_MAN_PARENTS] = {.sql = "SELECT DISTINCT r.digest FROM manifest_refs r WHERE r.child = $2 "
                              "AND r.kind = 1 AND r.repo = $1 AND EXISTS (SELECT 1 FROM tags t "
                              "WHERE t.repo = r.repo AND t.digest = r.digest) ORDER BY r.digest"},
    [Q_CHARTS_CHANGES] = {.sql = "SELECT DISTINCT repo FROM charts_changes WHERE seq > $1 "
                                 "AND substr(repo, 1, length($2)) = $2",
                          .pg = "SELECT DISTINCT repo FROM charts_changes WHERE seq > $1 "
                                "AND starts_with(repo, $2::text)"},
    [Q_MAN_DEL] = {.sql = "DELETE FROM manifests WHERE repo = $1 AND digest = $2"},
    [Q_MAN_TAGS_DEL] = {.sql = "DELETE FROM tags WHERE repo = $1 AND digest = $2"},
    [Q_MAN_REFS_DEL] = {.sql = "DELETE FROM manifest_refs WHERE repo = $1 AND digest = $2"},
    [Q_TAG_DEL] = {.sql = "DELETE FROM tags WHERE repo = $1 AND tag = $2"},
    [Q_GC_MANIFESTS] = {.sql = "SELECT m.repo || '@' || m.digest FROM manifests m "
                               "WHERE " GC_MANIFEST_WHERE},
    [Q_GC_BLOBS] = {.sql = "SELECT b.digest FROM blobs b WHERE " GC_BLOB_WHERE},
    [Q_GC_BLOB_DEL] = {.sql = "DELETE FROM blobs AS b WHERE b.digest = $2 AND " GC_BLOB_WHERE},
    [Q_BLOB_LINKS_DEL] = {.sql = "DELETE FROM repo_blobs WHERE digest = $1"},
    [Q_MIRROR_MAN_DEL] = {.sql = "DELETE FROM manifests WHERE repo = $1 AND digest = $2 "
                                 "AND mirrored = 1"},
    [Q_MIRROR_FREED] = {.sql = "SELECT b.digest FROM blobs b WHERE " UNREFERENCED_BLOB
                               "AND " MIRROR_ONLY_BLOB},
    [Q_MIRROR_BLOB_DEL] = {.sql =
                               "DELETE FROM blobs AS b WHERE b.digest = $1 AND " UNREFERENCED_BLOB
                               "AND " MIRROR_ONLY_BLOB},
    [Q_USAGE] = {.sql = "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs"},
    [Q_BLOB_COUNT] = {.sql = "SELECT CAST(COUNT(*) AS BIGINT) FROM blobs"},
    [Q_MIRROR_USAGE] = {.sql = "SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM blobs b "
                               "WHERE " MIRROR_ONLY_BLOB},
    [Q_MIRROR_LRU] = {.sql = "SELECT m.repo || '@' || m.digest FROM manifests m JOIN repos r "
                             "ON r.name = m.repo WHERE r.mirrored = 1 "
                             "AND COALESCE(m.accessed, m.created) < $2 "
                             "ORDER BY COALESCE(m.accessed, m.created) ASC LIMIT $1"},
    [Q_EACH_BLOB] = {.sql = "SELECT digest, size FROM blobs ORDER BY digest", .stream = true},
    [Q_EACH_MANIFEST] = {.sql = "SELECT repo, digest, content FROM manifests ORDER BY repo, digest",
                         .stream = true},
    [Q_CHECK0] = {.sql =
                      "SELECT 'manifest ' || r.repo || '@' || r.digest || "
                      "' references missing blob ' || r.child "
                      "FROM manifest_refs r JOIN manifests m ON m.repo = r.repo "
                      "AND m.digest = r.digest WHERE m.mirrored = 0 AND r.kind = 0 AND NOT EXISTS "
                      "(SELECT 1 FROM blobs b WHERE b.digest = r.child)"},
    [Q_CHECK1] = {.sql =
                      "SELECT 'manifest ' || r.repo || '@' || r.digest || ' references blob ' || "
                      "r.child || ' not linked to the repository' FROM manifest_refs r "
                      "JOIN manifests m ON m.repo = r.repo AND m.digest = r.digest "
                      "WHERE m.mirrored = 0 AND r.kind = 0 AND NOT EXISTS "
                      "(SELECT 1 FROM repo_blobs l WHERE l.repo = r.repo AND l.digest = r.child)"},
    [Q_CHECK2] = {.sql =
                      "SELECT 'index ' || r.repo || '@' || r.digest || "
                      "' references missing manifest ' || r.child FROM manifest_refs r "
                      "JOIN manifests p ON p.repo = r.repo AND p.digest = r.digest "
                      "WHERE p.mirrored = 0 AND r.kind = 1 AND NOT EXISTS "
                      "(SELECT 1 FROM manifests m WHERE m.repo = r.repo AND m.digest = r.child)"},
    [Q_CHECK3] =
        {.sql = "SELECT 'tag ' || t.repo || ':' || t.tag || ' points at missing manifest ' || "
                "t.digest FROM tags t WHERE NOT EXISTS (SELECT 1 FROM manifests m "
                "WHERE m.repo = t.repo AND m.digest = t.digest)"},
    [Q_CHECK4] = {.sql =
                      "SELECT 'reference from ' || r.repo || '@' || r.digest || "
                      "' whose manifest is missing' FROM manifest_refs r WHERE NOT EXISTS "
                      "(SELECT 1 FROM manifests m WHERE m.repo = r.repo AND m.digest = r.digest)"},
    [Q_CHECK5] = {.sql = "SELECT 'repository ' || l.repo || ' links missing blob ' || l.digest "
                         "FROM repo_blobs l WHERE NOT EXISTS (SELECT 1 FROM blobs b "
                         "WHERE b.digest = l.digest)"},
    [Q_LEASE_TAKE] = {.sql = "INSERT INTO leases(key, owner, until) VALUES($1, $2, $3) "
                             "ON CONFLICT(key) DO UPDATE SET owner = excluded.owner, "
                             "until = excluded.until "
                             "WHERE leases.until < $4 OR leases.owner = excluded.owner"},
    [Q_LEASE_DROP] = {.sql = "DELETE FROM leases WHERE key = $1 AND owner = $2"},
    [Q_EVENT_ADD] = {.sql = "INSERT INTO events(uuid, created, action, repo, digest, media_type, "
                            "size, tag, context, refs) "
                            "VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"},
    [Q_REPO_MIRRORED] = {.sql = "SELECT 1 FROM repos WHERE name = $1 AND mirrored = 1"},
    [Q_CHART_EXISTS] = {.sql = "SELECT 1 FROM charts WHERE repo = $1 AND digest = $2"},
    [Q_EVENTS_READ] = {.sql =
                           "SELECT seq, uuid, created, action, repo, digest, media_type, size, "
                           "tag, context, refs FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"},
    [Q_CURSOR_GET] = {.sql = "SELECT seq FROM event_cursors WHERE endpoint = $1"},
    [Q_CURSOR_ADD] = {.sql = "INSERT INTO event_cursors(endpoint, seq) VALUES($1, 0) "
                             "ON CONFLICT DO NOTHING"},
    /* a cursor only moves forward */
    [Q_CURSOR_SET] = {.sql = "UPDATE event_cursors SET seq = $2 WHERE endpoint = $1 AND seq < $2"},
    [Q_EVENTS_COUNT] = {.sql = "SELECT count(*) FROM events WHERE seq > $1"},
    [Q_EVENTS_NTH] = {.sql =
                          "SELECT seq FROM events WHERE seq > $1 ORDER BY seq LIMIT 1 OFFSET $2"},
    [Q_EVENTS_PRUNE] = {.sql = "DELETE FROM events WHERE seq <= $1"},
};

typedef struct {
    store_meta base;
    const sqldrv *drv;
    sqldrv_db *db;
    sql_dialect dialect;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sqldrv_conn **idle;
    int nidle, nopen, max;
} sql_meta;

/* The connection holding the write lock in this thread's `locked` call (see the top). */
static _Thread_local sqldrv_conn *tl_locked;
static _Thread_local const sql_meta *tl_locked_owner;
static _Thread_local int tl_borrowed;

/* ---- values ---- */

static sqlv v_text(const char *s)
{
    return s ? (sqlv){.type = SQLV_TEXT, .s = s} : (sqlv){.type = SQLV_NULL};
}

static sqlv v_int(int64_t i)
{
    return (sqlv){.type = SQLV_INT, .i = i};
}

static sqlv v_bytes(const void *p, size_t len)
{
    return (sqlv){.type = SQLV_BYTES, .s = p ? p : "", .len = len};
}

#define ARGS(...) (const sqlv[]){__VA_ARGS__}, (int)(sizeof((sqlv[]){__VA_ARGS__}) / sizeof(sqlv))

/* ---- the pool ---- */

static int conn_take(sql_meta *m, sqldrv_conn **out)
{
    if (tl_locked && tl_locked_owner == m) {
        tl_borrowed++;
        *out = tl_locked;
        return 0;
    }
    pthread_mutex_lock(&m->mu);
    while (m->nidle == 0 && m->nopen >= m->max)
        pthread_cond_wait(&m->cv, &m->mu);
    if (m->nidle > 0) {
        sqldrv_conn *c = m->idle[--m->nidle];
        pthread_mutex_unlock(&m->mu);
        int rc = m->drv->check ? m->drv->check(c) : 0;
        if (rc < 0) {
            pthread_mutex_lock(&m->mu);
            m->idle[m->nidle++] = c;
            pthread_cond_signal(&m->cv);
            pthread_mutex_unlock(&m->mu);
            return rc;
        }
        *out = c;
        return 0;
    }
    m->nopen++;
    pthread_mutex_unlock(&m->mu);
    int rc = m->drv->connect(m->db, out);
    if (rc < 0) {
        pthread_mutex_lock(&m->mu);
        m->nopen--;
        pthread_cond_signal(&m->cv);
        pthread_mutex_unlock(&m->mu);
    }
    return rc;
}

static void conn_give(sql_meta *m, sqldrv_conn *c)
{
    if (c == tl_locked && tl_borrowed > 0) {
        tl_borrowed--;
        return;
    }
    pthread_mutex_lock(&m->mu);
    m->idle[m->nidle++] = c;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

/* Opens an operation: declares m (the backend) and c (a pooled connection, or the one holding
 * the write lock inside `locked`) and rc; returns the error when no connection can be had. The
 * operation ends with conn_give(m, c). */
#define TAKE_CONN(base)                                                                            \
    sql_meta *m = (sql_meta *)(base);                                                              \
    sqldrv_conn *c;                                                                                \
    int rc = conn_take(m, &c);                                                                     \
    if (rc < 0) return rc

/* ---- running statements ---- */

static const char *sql_of(const sql_meta *m, int q)
{
    return m->dialect == SQL_DIALECT_PG && q_def[q].pg ? q_def[q].pg : q_def[q].sql;
}

static _Atomic long fail_countdown;

void meta_sql_fail_at(long n)
{
    fail_countdown = n;
}

/* Whether this statement is the one meta_sql_fail_at chose (then it fails with BERR_IO). */
static int injected(void)
{
    long n = fail_countdown;
    while (n > 0 && !atomic_compare_exchange_weak(&fail_countdown, &n, n - 1))
        ;
    return n == 1 ? berr_set(BERR_IO, "injected fault") : 0;
}

static int begin(sql_meta *m, sqldrv_conn *c)
{
    if (c == tl_locked && tl_borrowed > 0)
        return berr_set(BERR_INTERNAL, "metadata write inside a locked callback");
    return m->drv->begin(c);
}

static int finish(sql_meta *m, sqldrv_conn *c, int rc)
{
    return m->drv->finish(c, rc, true);
}

/* A write statement; *changes (when not NULL) gets the rows it changed. */
static int exec_q(sql_meta *m, sqldrv_conn *c, int q, const sqlv *args, int n, int64_t *changes)
{
    int rc = injected();
    if (rc < 0) return rc;
    return m->drv->exec(c, q, sql_of(m, q), args, n, changes, "write metadata");
}

static int query_q(sql_meta *m, sqldrv_conn *c, int q, const sqlv *args, int n, sqldrv_rows *r,
                   const char *what)
{
    int rc = injected();
    if (rc < 0) return rc;
    return m->drv->query(c, q, sql_of(m, q), args, n, q_def[q].stream, r, what);
}

/* Whether q has a row: 1, 0, or a negative error. */
static int exists_q(sql_meta *m, sqldrv_conn *c, int q, const sqlv *args, int n, const char *what)
{
    sqldrv_rows r;
    int rc = query_q(m, c, q, args, n, &r, what);
    if (rc < 0) return rc;
    rc = m->drv->next(&r);
    m->drv->rows_close(&r);
    return rc;
}

static char *col_dup(sql_meta *m, sqldrv_rows *r, int col)
{
    size_t len;
    const char *v = m->drv->col_text(r, col, &len);
    return v ? strndup(v, len) : NULL;
}

/* Runs q and collects column 0 into out, at most n items, flagging `more` when an n+1th
 * exists. */
static int collect(sql_meta *m, sqldrv_conn *c, int q, const sqlv *args, int nargs, int64_t n,
                   store_list *out)
{
    sqldrv_rows r;
    int rc = query_q(m, c, q, args, nargs, &r, "list");
    if (rc < 0) return rc;
    while ((rc = m->drv->next(&r)) == 1) {
        if ((int64_t)out->n >= n) {
            out->more = true;
            rc = 0;
            break;
        }
        size_t len;
        const char *v = m->drv->col_text(&r, 0, &len);
        rc = store_list_add(out, v ? v : "");
        if (rc < 0) break;
    }
    m->drv->rows_close(&r);
    return rc;
}

/* One write statement in its own write transaction; *changes gets its count. */
static int write_one(sql_meta *m, int q, const sqlv *args, int n, int64_t *changes)
{
    sqldrv_conn *c;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    rc = begin(m, c);
    if (rc == 0) rc = exec_q(m, c, q, args, n, changes);
    rc = finish(m, c, rc);
    conn_give(m, c);
    return rc;
}

/* ---- event notifications: the rows src/notify/ delivers ----
 * An event row is written by the transaction of the change it reports (or, for a pull, by its
 * own), only while this process has notifications configured (ev_on). Its context (request,
 * actor, source) is the calling thread's store_event_ctx, copied at each handler step. */

static atomic_bool ev_on, ev_pulls;
static bool ev_refs;
static char ev_source[300], ev_instance[40];

static _Thread_local struct {
    bool set;
    char actor[128], request_id[64], addr[80], host[256], method[16], useragent[256], action[32];
} tl_ev;

static void ev_copy(char *dst, size_t len, const char *src)
{
    snprintf(dst, len, "%s", src ? src : "");
}

void store_event_context(const store_event_ctx *ctx)
{
    tl_ev.set = ctx != NULL;
    if (!ctx || !atomic_load(&ev_on)) return;
    ev_copy(tl_ev.actor, sizeof tl_ev.actor, ctx->actor);
    ev_copy(tl_ev.request_id, sizeof tl_ev.request_id, ctx->request_id);
    ev_copy(tl_ev.addr, sizeof tl_ev.addr, ctx->addr);
    ev_copy(tl_ev.host, sizeof tl_ev.host, ctx->host);
    ev_copy(tl_ev.method, sizeof tl_ev.method, ctx->method);
    ev_copy(tl_ev.useragent, sizeof tl_ev.useragent, ctx->useragent);
    ev_copy(tl_ev.action, sizeof tl_ev.action, ctx->action);
}

/* A random (version 4) UUID: an event's id, stable once written. */
static void ev_uuid(char out[37])
{
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        /* getrandom never fails for 16 bytes once the pool is ready; fall back to the clock */
        uint64_t t = (uint64_t)store_now() ^ ((uint64_t)(uintptr_t)out << 20);
        for (int i = 0; i < 16; i++)
            b[i] = (unsigned char)(t >> (i % 8 * 8)) ^ (unsigned char)(i * 37);
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

void store_events_enable(bool on, bool pulls, bool refs, const char *source_addr,
                         const char *instance)
{
    ev_refs = refs;
    ev_copy(ev_source, sizeof ev_source, source_addr);
    ev_copy(ev_instance, sizeof ev_instance, instance);
    atomic_store(&ev_pulls, on && pulls);
    atomic_store(&ev_on, on);
}

bool store_events_on(void)
{
    return atomic_load(&ev_on);
}

bool store_events_pulls(void)
{
    return atomic_load(&ev_pulls);
}

void store_events_configure(const config *cfg)
{
    const config_notify *n = &cfg->notify;
    bool on = false, pulls = false;
    for (size_t i = 0; i < n->nendpoints; i++) {
        const config_notify_endpoint *e = &n->endpoints[i];
        if (e->disabled) continue;
        on = true;
        bool ignores = false;
        for (size_t j = 0; j < e->nignore_actions; j++)
            ignores |= !strcmp(e->ignore_actions[j], "pull");
        pulls |= !ignores;
    }
    /* source.addr: registry:2's host name and port of this instance */
    char host[256] = "localhost", src[300];
    gethostname(host, sizeof host - 1);
    const char *colon = cfg->addr ? strrchr(cfg->addr, ':') : NULL;
    snprintf(src, sizeof src, "%s%s", host, colon ? colon : ":5000");
    char instance[37];
    ev_uuid(instance);
    store_events_enable(on, pulls, n->include_references, src, instance);
}

/* The event's request, actor and source (and a mount's source repository), as JSON. */
static char *ev_context(const char *from)
{
    json_t *o = json_object();
    if (!o) return NULL;
    if (tl_ev.set) {
        json_object_set_new(o, "request",
                            json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", tl_ev.request_id, "addr",
                                      tl_ev.addr, "host", tl_ev.host, "method", tl_ev.method,
                                      "useragent", tl_ev.useragent));
        json_object_set_new(
            o, "actor", tl_ev.actor[0] ? json_pack("{s:s}", "name", tl_ev.actor) : json_object());
    }
    json_object_set_new(o, "source",
                        json_pack("{s:s, s:s}", "addr", ev_source, "instanceID", ev_instance));
    if (from) json_object_set_new(o, "fromRepository", json_string(from));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* events.includereferences: a manifest's config and layers, an index's manifests, as
 * descriptors (mediaType, size, digest); NULL when off or none. */
static char *ev_refs_json(const char *content, size_t size)
{
    if (!ev_refs || !content) return NULL;
    json_t *doc = json_loadb(content, size, 0, NULL);
    if (!doc) return NULL;
    json_t *out = json_array();
    json_t *cfg = json_object_get(doc, "config");
    if (json_is_object(cfg)) json_array_append(out, cfg);
    const char *lists[] = {"layers", "manifests"};
    for (int k = 0; k < 2; k++) {
        json_t *l = json_object_get(doc, lists[k]), *d;
        size_t i;
        json_array_foreach(l, i, d)
        {
            json_t *r = json_object();
            const char *keys[] = {"mediaType", "size", "digest"};
            for (int j = 0; j < 3; j++)
                if (json_object_get(d, keys[j]))
                    json_object_set(r, keys[j], json_object_get(d, keys[j]));
            json_array_append_new(out, r);
        }
    }
    char *s = json_array_size(out) ? json_dumps(out, JSON_COMPACT) : NULL;
    json_decref(out);
    json_decref(doc);
    return s;
}

/* Writes one event on c (inside the caller's transaction); 0 when events are off. A thread's
 * process-wide action (bundle import) names the pushes it makes. */
static int ev_write(sql_meta *m, sqldrv_conn *c, const char *action, const char *repo,
                    const char *digest, const char *media_type, int64_t size, const char *tag,
                    const char *from, const char *refs)
{
    if (!atomic_load(&ev_on)) return 0;
    if (tl_ev.set && tl_ev.action[0] && !strcmp(action, "push")) action = tl_ev.action;
    char uuid[37];
    ev_uuid(uuid);
    char *ctx = ev_context(from);
    if (!ctx) return berr_set(BERR_INTERNAL, "out of memory");
    int rc = exec_q(m, c, Q_EVENT_ADD,
                    ARGS(v_text(uuid), v_int(store_now()), v_text(action), v_text(repo),
                         v_text(digest), v_text(media_type), size >= 0 ? v_int(size) : v_text(NULL),
                         v_text(tag), v_text(ctx), v_text(refs)),
                    NULL);
    free(ctx);
    return rc;
}

/* Whether repo is a mirror's (its changes are fills): 1, 0, or an error. */
static int ev_repo_mirrored(sql_meta *m, sqldrv_conn *c, const char *repo)
{
    if (!atomic_load(&ev_on)) return 0;
    return exists_q(m, c, Q_REPO_MIRRORED, ARGS(v_text(repo)), "repository lookup");
}

#define EV_BLOB_MT "application/octet-stream"

/* ---- blobs ---- */

/* Looks a blob up (linked to repo, or the row itself when repo is NULL) on c. Returns 0, or
 * -missing when absent. */
static int blob_find(sql_meta *m, sqldrv_conn *c, const char *repo, const char *digest,
                     uint64_t *size, berr missing)
{
    sqldrv_rows r;
    int rc =
        repo ? query_q(m, c, Q_BLOB_LINKED, ARGS(v_text(repo), v_text(digest)), &r, "blob lookup")
             : query_q(m, c, Q_BLOB_ROW, ARGS(v_text(digest)), &r, "blob lookup");
    if (rc < 0) return rc;
    rc = m->drv->next(&r);
    if (rc == 1) {
        if (size) *size = (uint64_t)m->drv->col_int(&r, 0);
        rc = 0;
    } else if (rc == 0) {
        rc = berr_set(missing, "blob unknown to registry: %s", digest);
    }
    m->drv->rows_close(&r);
    return rc;
}

static int sql_blob_lookup(store_meta *base, const char *repo, const char *digest, uint64_t *size)
{
    TAKE_CONN(base);
    rc = blob_find(m, c, repo, digest, size, BERR_BLOB_UNKNOWN);
    conn_give(m, c);
    return rc;
}

static int link_blob(sql_meta *m, sqldrv_conn *c, const char *repo, const char *digest, int64_t now)
{
    int rc = exec_q(m, c, Q_REPO_ADD, ARGS(v_text(repo), v_int(now)), NULL);
    if (rc == 0)
        rc = exec_q(m, c, Q_LINK_ADD, ARGS(v_text(repo), v_text(digest), v_int(now)), NULL);
    return rc;
}

static int blob_upsert(sql_meta *m, sqldrv_conn *c, const char *digest, uint64_t size, int64_t now)
{
    return exec_q(m, c, Q_BLOB_UPSERT, ARGS(v_text(digest), v_int((int64_t)size), v_int(now)),
                  NULL);
}

static int sql_blob_commit(store_meta *base, const char *repo, const char *digest, uint64_t size,
                           store_place_fn place, void *arg)
{
    TAKE_CONN(base);
    int64_t now = store_now();
    rc = begin(m, c);
    if (rc == 0) rc = place(arg);
    if (rc == 0) rc = blob_upsert(m, c, digest, size, now);
    if (rc == 0) rc = link_blob(m, c, repo, digest, now);
    int mirrored = rc == 0 ? ev_repo_mirrored(m, c, repo) : 0;
    if (mirrored < 0) rc = mirrored;
    if (rc == 0)
        rc = ev_write(m, c, mirrored ? "fill" : "push", repo, digest, EV_BLOB_MT, (int64_t)size,
                      NULL, NULL, NULL);
    rc = finish(m, c, rc);
    conn_give(m, c);
    return rc;
}

static int sql_blob_link(store_meta *base, const char *repo, const char *from, const char *digest)
{
    TAKE_CONN(base);
    rc = begin(m, c);
    uint64_t size = 0;
    if (rc == 0) rc = blob_find(m, c, from, digest, &size, BERR_BLOB_UNKNOWN);
    if (rc == 0) rc = link_blob(m, c, repo, digest, store_now());
    /* a cross-repository mount; a mirror linking its own content reports nothing */
    if (rc == 0 && from && strcmp(from, repo))
        rc = ev_write(m, c, "mount", repo, digest, EV_BLOB_MT, (int64_t)size, NULL, from, NULL);
    rc = finish(m, c, rc);
    conn_give(m, c);
    return rc;
}

static int sql_blob_link_listed(store_meta *base, const char *repo, const char *digest)
{
    TAKE_CONN(base);
    rc = begin(m, c);
    if (rc == 0) {
        rc = exists_q(m, c, Q_REF_LISTED, ARGS(v_text(repo), v_text(digest)), "reference lookup");
        if (rc == 0) rc = berr_set(BERR_BLOB_UNKNOWN, "blob unknown to registry: %s", digest);
        if (rc == 1) rc = 0;
    }
    if (rc == 0) rc = blob_find(m, c, NULL, digest, NULL, BERR_BLOB_UNKNOWN);
    if (rc == 0) rc = link_blob(m, c, repo, digest, store_now());
    rc = finish(m, c, rc);
    conn_give(m, c);
    return rc;
}

static int sql_blob_unlink(store_meta *base, const char *repo, const char *digest)
{
    TAKE_CONN(base);
    int64_t changes = 0;
    rc = begin(m, c);
    if (rc == 0) rc = exec_q(m, c, Q_LINK_DEL, ARGS(v_text(repo), v_text(digest)), &changes);
    if (rc == 0 && changes == 0) rc = berr_set(BERR_BLOB_UNKNOWN, "blob unknown to registry");
    if (rc == 0) rc = ev_write(m, c, "delete", repo, digest, EV_BLOB_MT, -1, NULL, NULL, NULL);
    rc = finish(m, c, rc);
    conn_give(m, c);
    return rc;
}

/* ---- manifests ---- */

static int sql_manifest_get(store_meta *base, const char *repo, const char *ref,
                            store_manifest *out)
{
    TAKE_CONN(base);
    sqldrv_rows r;
    rc = query_q(m, c, ref_is_digest(ref) ? Q_MAN_BY_DIGEST : Q_MAN_BY_TAG,
                 ARGS(v_text(repo), v_text(ref)), &r, "manifest lookup");
    if (rc == 0) {
        rc = m->drv->next(&r);
        if (rc == 1) {
            size_t dlen, size;
            const char *digest = m->drv->col_text(&r, 0, &dlen);
            snprintf(out->digest, sizeof out->digest, "%.*s", (int)dlen, digest ? digest : "");
            out->media_type = col_dup(m, &r, 1);
            const char *content = m->drv->col_text(&r, 2, &size);
            out->size = size;
            out->checked = m->drv->col_int(&r, 3);
            out->content = malloc(out->size + 1);
            if (out->content && out->media_type) {
                if (size) memcpy(out->content, content, size);
                out->content[out->size] = '\0';
                rc = 0;
            } else {
                free(out->content);
                free(out->media_type);
                out->content = out->media_type = NULL;
                rc = berr_set(BERR_INTERNAL, "out of memory");
            }
        } else if (rc == 0) {
            rc = berr_set(BERR_MANIFEST_UNKNOWN, "manifest unknown to registry");
        }
        m->drv->rows_close(&r);
    }
    conn_give(m, c);
    return rc;
}

/* The checks of a manifest PUT, inside its transaction. */
static int manifest_checks(sql_meta *m, sqldrv_conn *c, const store_manifest_put_req *q,
                           int64_t now)
{
    int rc = q->check ? q->check(q->check_arg) : 0;
    for (size_t i = 0; rc == 0 && i < q->nabsent; i++) {
        rc = exists_q(m, c, Q_TAG_EXISTS,
                      ARGS(v_text(q->absent_repos[i]), v_text(q->absent_tags[i])), "tag lookup");
        if (rc == 1)
            rc = berr_set(BERR_CONFLICT, "%s:%s already exists", q->absent_repos[i],
                          q->absent_tags[i]);
    }
    for (size_t i = 0; rc == 0 && i < q->nnew_blobs; i++) {
        rc = blob_upsert(m, c, q->new_blobs[i].digest, q->new_blobs[i].size, now);
        if (rc == 0) rc = link_blob(m, c, q->repo, q->new_blobs[i].digest, now);
    }
    /* mirrored manifests reference content fetched later, on demand */
    for (size_t i = 0; rc == 0 && !q->mirrored && i < q->nblobs; i++)
        rc = blob_find(m, c, q->repo, q->blobs[i], NULL, BERR_MANIFEST_BLOB_UNKNOWN);
    for (size_t i = 0; rc == 0 && !q->mirrored && i < q->nchildren; i++) {
        rc = exists_q(m, c, Q_MAN_EXISTS, ARGS(v_text(q->repo), v_text(q->children[i])),
                      "manifest lookup");
        if (rc == 0)
            rc = berr_set(BERR_MANIFEST_BLOB_UNKNOWN, "manifest unknown to registry: %s",
                          q->children[i]);
        if (rc == 1) rc = 0;
    }
    return rc;
}

static int manifest_write(sql_meta *m, sqldrv_conn *c, const store_manifest_put_req *q, int64_t now)
{
    int rc = exec_q(m, c, q->mirrored ? Q_REPO_MIRROR : Q_REPO_ADD,
                    ARGS(v_text(q->repo), v_int(now)), NULL);
    if (rc == 0)
        rc = exec_q(m, c, Q_MAN_INSERT,
                    ARGS(v_text(q->repo), v_text(q->digest), v_text(q->media_type),
                         v_bytes(q->content, q->size), v_text(q->subject), v_text(q->artifact_type),
                         v_text(q->annotations_json), v_int(now), v_int(q->mirrored ? 1 : 0)),
                    NULL);
    if (rc == 0 && q->chart_tag && q->chart_entry && q->chart_yaml)
        rc = exec_q(m, c, Q_CHART_INSERT,
                    ARGS(v_text(q->repo), v_text(q->digest), v_text(q->chart_tag),
                         v_text(q->chart_entry), v_text(q->chart_yaml)),
                    NULL);
    for (size_t i = 0; rc == 0 && i < q->nblobs + q->nchildren; i++) {
        bool blob = i < q->nblobs;
        rc = exec_q(m, c, Q_REF_INSERT,
                    ARGS(v_text(q->repo), v_text(q->digest),
                         v_text(blob ? q->blobs[i] : q->children[i - q->nblobs]),
                         v_int(blob ? 0 : 1)),
                    NULL);
    }
    for (size_t i = 0; rc == 0 && i < q->ntags; i++)
        rc = exec_q(m, c, Q_TAG_UPSERT,
                    ARGS(v_text(q->repo), v_text(q->tags[i]), v_text(q->digest), v_int(now),
                         q->mirrored ? v_int(now) : v_text(NULL)),
                    NULL);
    return rc;
}

/* A manifest PUT's events: one per tag it sets (or one without a tag). */
static int ev_manifest(sql_meta *m, sqldrv_conn *c, const store_manifest_put_req *q)
{
    if (!atomic_load(&ev_on)) return 0;
    const char *action =
        q->mirrored    ? "fill"
        : q->chart_tag ? "chart.upload"
        : q->artifact_type && !strncmp(q->artifact_type, "application/vnd.margo.", 22)
            ? "margo.push"
            : "push";
    char *refs = ev_refs_json(q->content, q->size);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < (q->ntags ? q->ntags : 1); i++)
        rc = ev_write(m, c, action, q->repo, q->digest, q->media_type, (int64_t)q->size,
                      q->ntags ? q->tags[i] : NULL, NULL, refs);
    free(refs);
    return rc;
}

static int sql_manifest_put(store_meta *base, const store_manifest_put_req *q)
{
    TAKE_CONN(base);
    int64_t now = store_now();
    rc = begin(m, c);
    if (rc == 0) rc = manifest_checks(m, c, q, now);
    if (rc == 0) rc = manifest_write(m, c, q, now);
    if (rc == 0) rc = ev_manifest(m, c, q);
    rc = finish(m, c, rc);
    conn_give(m, c);
    return rc;
}

/* Removes a manifest's row (with q_del), tags and references inside c's transaction; *changes
 * (when not NULL) gets whether the row was there. */
static int manifest_remove(sql_meta *m, sqldrv_conn *c, int q_del, const char *repo,
                           const char *digest, int64_t *changes)
{
    int rc = exec_q(m, c, q_del, ARGS(v_text(repo), v_text(digest)), changes);
    if (rc == 0 && (!changes || *changes > 0))
        rc = exec_q(m, c, Q_MAN_TAGS_DEL, ARGS(v_text(repo), v_text(digest)), NULL);
    if (rc == 0 && (!changes || *changes > 0))
        rc = exec_q(m, c, Q_MAN_REFS_DEL, ARGS(v_text(repo), v_text(digest)), NULL);
    return rc;
}

static int sql_manifest_delete(store_meta *base, const char *repo, const char *digest)
{
    TAKE_CONN(base);
    int64_t changes = 0;
    rc = begin(m, c);
    int chart = 0;
    if (rc == 0 && atomic_load(&ev_on))
        rc = chart =
            exists_q(m, c, Q_CHART_EXISTS, ARGS(v_text(repo), v_text(digest)), "chart lookup");
    if (rc > 0) rc = 0;
    if (rc == 0) rc = manifest_remove(m, c, Q_MAN_DEL, repo, digest, &changes);
    if (rc == 0 && changes == 0)
        rc = berr_set(BERR_MANIFEST_UNKNOWN, "manifest unknown to registry");
    if (rc == 0)
        rc = ev_write(m, c, chart ? "chart.delete" : "delete", repo, digest, NULL, -1, NULL, NULL,
                      NULL);
    rc = finish(m, c, rc);
    conn_give(m, c);
    return rc;
}

static int sql_tag_checked(store_meta *base, const char *repo, const char *tag)
{
    return write_one((sql_meta *)base, Q_TAG_CHECKED,
                     ARGS(v_text(repo), v_text(tag), v_int(store_now())), NULL);
}

static int sql_tag_delete(store_meta *base, const char *repo, const char *tag)
{
    TAKE_CONN(base);
    int64_t changes = 0;
    rc = begin(m, c);
    if (rc == 0) rc = exec_q(m, c, Q_TAG_DEL, ARGS(v_text(repo), v_text(tag)), &changes);
    if (rc == 0 && changes == 0) rc = berr_set(BERR_MANIFEST_UNKNOWN, "tag unknown to registry");
    if (rc == 0) rc = ev_write(m, c, "delete", repo, NULL, NULL, -1, tag, NULL, NULL);
    rc = finish(m, c, rc);
    conn_give(m, c);
    return rc;
}

/* 0 when repo exists, -BERR_NAME_UNKNOWN (with msg) when not. */
static int repo_find(sql_meta *m, sqldrv_conn *c, const char *repo, const char *msg)
{
    int rc = exists_q(m, c, Q_REPO_EXISTS, ARGS(v_text(repo)), "repository lookup");
    return rc == 1 ? 0 : rc == 0 ? berr_set(BERR_NAME_UNKNOWN, "%s", msg) : rc;
}

static int sql_repo_exists(store_meta *base, const char *repo)
{
    TAKE_CONN(base);
    rc = repo_find(m, c, repo, "repository unknown");
    conn_give(m, c);
    return rc;
}

static int sql_tags_list(store_meta *base, const char *repo, const char *last, long n,
                         store_list *out)
{
    TAKE_CONN(base);
    rc = repo_find(m, c, repo, "repository name not known to registry");
    if (rc == 0)
        rc = collect(m, c, Q_TAGS,
                     ARGS(v_text(repo), v_text(last ? last : ""), v_int((int64_t)n + 1)), n, out);
    conn_give(m, c);
    return rc;
}

static int sql_catalog(store_meta *base, const char *last, long n, store_list *out)
{
    TAKE_CONN(base);
    rc = collect(m, c, Q_CATALOG, ARGS(v_text(last ? last : ""), v_int((int64_t)n + 1)), n, out);
    conn_give(m, c);
    return rc;
}

static int sql_referrers(store_meta *base, const char *repo, const char *digest, const char *atype,
                         store_referrer_list *out)
{
    TAKE_CONN(base);
    sqldrv_rows r;
    rc = atype ? query_q(m, c, Q_REFERRERS_TYPE, ARGS(v_text(repo), v_text(digest), v_text(atype)),
                         &r, "referrers")
               : query_q(m, c, Q_REFERRERS, ARGS(v_text(repo), v_text(digest)), &r, "referrers");
    if (rc == 0) {
        while ((rc = m->drv->next(&r)) == 1) {
            store_referrer *items = realloc(out->items, (out->n + 1) * sizeof *items);
            if (!items) {
                rc = berr_set(BERR_INTERNAL, "out of memory");
                break;
            }
            out->items = items;
            store_referrer *it = &out->items[out->n++];
            memset(it, 0, sizeof *it);
            size_t len;
            const char *d = m->drv->col_text(&r, 0, &len);
            snprintf(it->digest, sizeof it->digest, "%.*s", (int)len, d ? d : "");
            it->media_type = col_dup(m, &r, 1);
            it->size = (uint64_t)m->drv->col_int(&r, 2);
            it->artifact_type = col_dup(m, &r, 3);
            it->annotations_json = col_dup(m, &r, 4);
        }
        m->drv->rows_close(&r);
    }
    conn_give(m, c);
    return rc;
}

/* ---- gc ---- */

static int sql_gc_manifests(store_meta *base, int64_t cutoff, bool dry_run, size_t *removed,
                            store_list *blobs)
{
    TAKE_CONN(base);
    *removed = 0;
    rc = begin(m, c);
    while (rc == 0) {
        /* repo and digest of each garbage manifest, joined as "repo@digest" (all read before
         * the first removal) */
        store_list l = {0};
        rc = collect(m, c, Q_GC_MANIFESTS, ARGS(v_int(cutoff)), NO_LIMIT, &l);
        for (size_t i = 0; rc == 0 && i < l.n; i++) {
            char *at = strchr(l.items[i], '@');
            if (!at) continue;
            *at = '\0';
            const char *repo = l.items[i], *digest = at + 1;
            log_info("msg=\"gc: %s manifest\" repo=%s digest=%s",
                     dry_run ? "would remove" : "remove", repo, digest);
            rc = manifest_remove(m, c, Q_MAN_DEL, repo, digest, NULL);
        }
        *removed += l.n;
        bool again = l.n > 0;
        store_list_free(&l);
        if (!again) break;
    }
    if (rc == 0) rc = collect(m, c, Q_GC_BLOBS, ARGS(v_int(cutoff)), NO_LIMIT, blobs);
    rc = m->drv->finish(c, rc, !dry_run);
    conn_give(m, c);
    return rc;
}

/* Deletes a blob row with q (1 row when it still qualifies), its links, and moves its file with
 * trash() inside the same transaction. */
static int blob_remove(sql_meta *m, int q, const sqlv *args, int nargs, const char *digest,
                       store_place_fn trash, void *arg, bool *removed)
{
    sqldrv_conn *c;
    *removed = false;
    int rc = conn_take(m, &c);
    if (rc < 0) return rc;
    rc = begin(m, c);
    int64_t changes = 0;
    if (rc == 0) rc = exec_q(m, c, q, args, nargs, &changes);
    *removed = rc == 0 && changes == 1;
    if (rc == 0 && *removed) rc = exec_q(m, c, Q_BLOB_LINKS_DEL, ARGS(v_text(digest)), NULL);
    if (rc == 0 && *removed) rc = trash(arg);
    rc = finish(m, c, rc);
    if (rc < 0) *removed = false;
    conn_give(m, c);
    return rc;
}

static int sql_gc_blob_remove(store_meta *base, const char *digest, int64_t cutoff,
                              store_place_fn trash, void *arg, bool *removed)
{
    return blob_remove((sql_meta *)base, Q_GC_BLOB_DEL, ARGS(v_int(cutoff), v_text(digest)), digest,
                       trash, arg, removed);
}

static int sql_locked(store_meta *base, store_place_fn fn, void *arg)
{
    TAKE_CONN(base);
    rc = begin(m, c);
    if (rc == 0) {
        sqldrv_conn *outer = tl_locked;
        const sql_meta *outer_owner = tl_locked_owner;
        int outer_borrowed = tl_borrowed;
        tl_locked = c;
        tl_locked_owner = m;
        tl_borrowed = 0;
        rc = fn(arg);
        tl_locked = outer;
        tl_locked_owner = outer_owner;
        tl_borrowed = outer_borrowed;
    }
    rc = finish(m, c, rc);
    conn_give(m, c);
    return rc;
}

/* ---- mirror space: access times and eviction ---- */

static int sql_repo_mark_mirror(store_meta *base, const char *repo)
{
    return write_one((sql_meta *)base, Q_REPO_MIRROR, ARGS(v_text(repo), v_int(store_now())), NULL);
}

static int sql_touch(store_meta *base, const store_access *a, size_t n)
{
    TAKE_CONN(base);
    rc = begin(m, c);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = exec_q(m, c, Q_TOUCH, ARGS(v_text(a[i].repo), v_text(a[i].digest), v_int(a[i].when)),
                    NULL);
    rc = finish(m, c, rc);
    conn_give(m, c);
    return rc;
}

/* One byte count (a SELECT of one integer) on a pooled connection. */
static int sum_bytes(store_meta *base, int q, uint64_t *bytes)
{
    TAKE_CONN(base);
    sqldrv_rows r;
    rc = query_q(m, c, q, NULL, 0, &r, "usage");
    if (rc == 0) {
        rc = m->drv->next(&r);
        if (rc == 1) {
            *bytes = (uint64_t)m->drv->col_int(&r, 0);
            rc = 0;
        } else if (rc == 0) {
            *bytes = 0;
        }
        m->drv->rows_close(&r);
    }
    conn_give(m, c);
    return rc;
}

static int sql_usage(store_meta *base, uint64_t *bytes)
{
    return sum_bytes(base, Q_USAGE, bytes);
}

static int sql_mirror_usage(store_meta *base, uint64_t *bytes)
{
    return sum_bytes(base, Q_MIRROR_USAGE, bytes);
}

static int sql_blob_count(store_meta *base, uint64_t *n)
{
    return sum_bytes(base, Q_BLOB_COUNT, n);
}

static int sql_mirror_lru(store_meta *base, size_t max, int64_t before, store_list *out)
{
    TAKE_CONN(base);
    rc = collect(m, c, Q_MIRROR_LRU,
                 ARGS(v_int((int64_t)max), v_int(before > 0 ? before : INT64_MAX)), (int64_t)max,
                 out);
    conn_give(m, c);
    return rc;
}

/* Removes one mirrored manifest (its tags and references), then lists the blobs that only
 * mirrored repositories use and that no manifest references any more. */
static int sql_mirror_evict(store_meta *base, const char *repo, const char *digest,
                            store_list *freed)
{
    TAKE_CONN(base);
    rc = begin(m, c);
    int64_t changes = 0;
    if (rc == 0) rc = manifest_remove(m, c, Q_MIRROR_MAN_DEL, repo, digest, &changes);
    if (rc == 0 && changes > 0)
        rc = ev_write(m, c, "evict", repo, digest, NULL, -1, NULL, NULL, NULL);
    rc = finish(m, c, rc);
    if (rc == 0) rc = collect(m, c, Q_MIRROR_FREED, NULL, 0, NO_LIMIT, freed);
    conn_give(m, c);
    return rc;
}

/* Removes a blob that only mirrored repositories use and nothing references (re-checked under
 * the write lock), moving its file with trash() inside the transaction. */
static int sql_mirror_blob_remove(store_meta *base, const char *digest, store_place_fn trash,
                                  void *arg, bool *removed)
{
    return blob_remove((sql_meta *)base, Q_MIRROR_BLOB_DEL, ARGS(v_text(digest)), digest, trash,
                       arg, removed);
}

/* ---- fsck: walks over every row, one row at a time ---- */

static int sql_each_blob(store_meta *base, int (*cb)(void *, const char *, uint64_t), void *arg)
{
    TAKE_CONN(base);
    sqldrv_rows r;
    rc = query_q(m, c, Q_EACH_BLOB, NULL, 0, &r, "list");
    if (rc == 0) {
        int cb_rc = 0;
        while (cb_rc == 0 && (rc = m->drv->next(&r)) == 1) {
            size_t len;
            const char *d = m->drv->col_text(&r, 0, &len);
            cb_rc = cb(arg, d ? d : "", (uint64_t)m->drv->col_int(&r, 1));
        }
        m->drv->rows_close(&r);
        if (rc >= 0) rc = cb_rc;
    }
    conn_give(m, c);
    return rc;
}

static int sql_each_manifest(store_meta *base,
                             int (*cb)(void *, const char *, const char *, const char *, size_t),
                             void *arg)
{
    TAKE_CONN(base);
    sqldrv_rows r;
    rc = query_q(m, c, Q_EACH_MANIFEST, NULL, 0, &r, "list");
    if (rc == 0) {
        int cb_rc = 0;
        while (cb_rc == 0 && (rc = m->drv->next(&r)) == 1) {
            char *repo = col_dup(m, &r, 0), *digest = col_dup(m, &r, 1);
            size_t size;
            const char *content = m->drv->col_text(&r, 2, &size);
            cb_rc = repo && digest ? cb(arg, repo, digest, content ? content : "", size)
                                   : berr_set(BERR_INTERNAL, "out of memory");
            free(repo);
            free(digest);
        }
        m->drv->rows_close(&r);
        if (rc >= 0) rc = cb_rc;
    }
    conn_give(m, c);
    return rc;
}

static int sql_check_refs(store_meta *base, void (*cb)(void *, const char *), void *arg)
{
    TAKE_CONN(base);
    for (int q = Q_CHECK0; rc == 0 && q <= Q_CHECK5; q++) {
        sqldrv_rows r;
        rc = query_q(m, c, q, NULL, 0, &r, "check references");
        if (rc < 0) break;
        while ((rc = m->drv->next(&r)) == 1) {
            size_t len;
            const char *p = m->drv->col_text(&r, 0, &len);
            if (p) cb(arg, p);
        }
        m->drv->rows_close(&r);
    }
    conn_give(m, c);
    return rc;
}

/* ---- Helm charts ---- */

static int sql_charts(store_meta *base, const char *prefix, bool exact, store_chart_list *out)
{
    TAKE_CONN(base);
    char upper[600];
    snprintf(upper, sizeof upper, "%s", prefix);
    size_t ul = strlen(upper);
    if (ul) upper[ul - 1] = (char)(upper[ul - 1] + 1);
    sqldrv_rows r;
    rc = exact ? query_q(m, c, Q_CHARTS_REPO, ARGS(v_text(prefix)), &r, "chart listing")
               : query_q(m, c, Q_CHARTS, ARGS(v_text(prefix), v_text(upper)), &r, "chart listing");
    if (rc == 0) {
        while ((rc = m->drv->next(&r)) == 1) {
            store_chart *items = realloc(out->items, (out->n + 1) * sizeof *items);
            if (!items) {
                rc = berr_set(BERR_INTERNAL, "out of memory");
                break;
            }
            out->items = items;
            store_chart *it = &out->items[out->n++];
            it->repo = col_dup(m, &r, 0);
            it->tag = col_dup(m, &r, 1);
            it->entry = col_dup(m, &r, 2);
            size_t len;
            const char *d = m->drv->col_text(&r, 3, &len);
            snprintf(it->digest, sizeof it->digest, "%.*s", (int)len, d ? d : "");
            it->yaml = col_dup(m, &r, 4);
            if (!it->repo || !it->tag || !it->entry || !it->yaml) {
                rc = berr_set(BERR_INTERNAL, "out of memory (or a chart entry without YAML)");
                break;
            }
        }
        m->drv->rows_close(&r);
    }
    conn_give(m, c);
    return rc;
}

static int sql_charts_gen(store_meta *base, int64_t *latest, int64_t *oldest)
{
    TAKE_CONN(base);
    sqldrv_rows r;
    rc = query_q(m, c, Q_CHARTS_GEN, NULL, 0, &r, "chart changes");
    if (rc == 0) {
        rc = m->drv->next(&r);
        if (rc == 1) {
            *latest = m->drv->col_int(&r, 0);
            if (oldest) *oldest = m->drv->col_int(&r, 1);
            rc = 0;
        } else if (rc == 0) {
            rc = berr_set(BERR_IO, "chart changes: no row");
        }
        m->drv->rows_close(&r);
    }
    conn_give(m, c);
    return rc;
}

static int sql_manifest_parents(store_meta *base, const char *repo, const char *digest,
                                store_list *out)
{
    TAKE_CONN(base);
    rc = collect(m, c, Q_MAN_PARENTS, ARGS(v_text(repo), v_text(digest)), NO_LIMIT, out);
    conn_give(m, c);
    return rc;
}

static int sql_charts_changes(store_meta *base, int64_t since, const char *prefix, store_list *out)
{
    TAKE_CONN(base);
    rc = collect(m, c, Q_CHARTS_CHANGES, ARGS(v_int(since), v_text(prefix)), NO_LIMIT, out);
    conn_give(m, c);
    return rc;
}

/* ---- leases ---- */

static int sql_lease_take(store_meta *base, const char *key, const char *owner, int64_t until,
                          int64_t now)
{
    int64_t changes = 0;
    int rc = write_one((sql_meta *)base, Q_LEASE_TAKE,
                       ARGS(v_text(key), v_text(owner), v_int(until), v_int(now)), &changes);
    if (rc == 0 && changes == 0) rc = berr_set(BERR_CONFLICT, "lease %s is held", key);
    return rc;
}

static int sql_lease_drop(store_meta *base, const char *key, const char *owner)
{
    return write_one((sql_meta *)base, Q_LEASE_DROP, ARGS(v_text(key), v_text(owner)), NULL);
}

/* ---- event notifications: pulls and delivery ---- */

static int sql_event_note(store_meta *base, const char *action, const char *repo,
                          const char *digest, const char *media_type, uint64_t size,
                          const char *tag)
{
    TAKE_CONN(base);
    rc = begin(m, c);
    if (rc == 0)
        rc = ev_write(m, c, action, repo, digest, media_type, (int64_t)size, tag, NULL, NULL);
    rc = finish(m, c, rc);
    conn_give(m, c);
    return rc;
}

static int sql_events_read(store_meta *base, int64_t after, int limit, store_event_list *out)
{
    TAKE_CONN(base);
    sqldrv_rows r;
    rc = query_q(m, c, Q_EVENTS_READ, ARGS(v_int(after), v_int(limit)), &r, "events");
    if (rc == 0) {
        while ((rc = m->drv->next(&r)) == 1) {
            store_event *items = realloc(out->items, (out->n + 1) * sizeof *items);
            if (!items) {
                rc = berr_set(BERR_INTERNAL, "out of memory");
                break;
            }
            out->items = items;
            store_event *e = &out->items[out->n++];
            memset(e, 0, sizeof *e);
            e->seq = m->drv->col_int(&r, 0);
            e->uuid = col_dup(m, &r, 1);
            e->created = m->drv->col_int(&r, 2);
            e->action = col_dup(m, &r, 3);
            e->repo = col_dup(m, &r, 4);
            e->digest = col_dup(m, &r, 5);
            e->media_type = col_dup(m, &r, 6);
            size_t len;
            e->size = m->drv->col_text(&r, 7, &len) ? m->drv->col_int(&r, 7) : -1;
            e->tag = col_dup(m, &r, 8);
            e->context = col_dup(m, &r, 9);
            e->refs = col_dup(m, &r, 10);
            if (!e->uuid || !e->action || !e->repo) {
                rc = berr_set(BERR_INTERNAL, "out of memory");
                break;
            }
        }
        m->drv->rows_close(&r);
    }
    conn_give(m, c);
    return rc;
}

/* One integer of q's first row into *v (dflt when there is no row). */
static int int_q(sql_meta *m, sqldrv_conn *c, int q, const sqlv *args, int n, int64_t dflt,
                 int64_t *v)
{
    sqldrv_rows r;
    int rc = query_q(m, c, q, args, n, &r, "events");
    if (rc < 0) return rc;
    rc = m->drv->next(&r);
    *v = rc == 1 ? m->drv->col_int(&r, 0) : dflt;
    m->drv->rows_close(&r);
    return rc < 0 ? rc : 0;
}

static int sql_event_cursor(store_meta *base, const char *endpoint, int64_t *seq)
{
    TAKE_CONN(base);
    rc = int_q(m, c, Q_CURSOR_GET, ARGS(v_text(endpoint)), -1, seq);
    if (rc == 0 && *seq < 0) {
        rc = begin(m, c);
        if (rc == 0) rc = exec_q(m, c, Q_CURSOR_ADD, ARGS(v_text(endpoint)), NULL);
        rc = finish(m, c, rc);
        if (rc == 0) rc = int_q(m, c, Q_CURSOR_GET, ARGS(v_text(endpoint)), 0, seq);
    }
    conn_give(m, c);
    return rc;
}

static int sql_event_cursor_set(store_meta *base, const char *endpoint, int64_t seq)
{
    return write_one((sql_meta *)base, Q_CURSOR_SET, ARGS(v_text(endpoint), v_int(seq)), NULL);
}

static int sql_events_backlog(store_meta *base, int64_t after, int64_t keep, int64_t *count,
                              int64_t *drop_to)
{
    TAKE_CONN(base);
    rc = int_q(m, c, Q_EVENTS_COUNT, ARGS(v_int(after)), 0, count);
    *drop_to = after;
    if (rc == 0 && *count > keep)
        rc =
            int_q(m, c, Q_EVENTS_NTH, ARGS(v_int(after), v_int(*count - keep - 1)), after, drop_to);
    conn_give(m, c);
    return rc;
}

static int sql_events_prune(store_meta *base, int64_t upto)
{
    return write_one((sql_meta *)base, Q_EVENTS_PRUNE, ARGS(v_int(upto)), NULL);
}

/* ---- lifecycle ---- */

static void sql_close(store_meta *base)
{
    sql_meta *m = (sql_meta *)base;
    for (int i = 0; i < m->nidle; i++)
        m->drv->disconnect(m->idle[i]);
    free(m->idle);
    m->drv->db_free(m->db);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
}

static const store_meta_ops sql_ops = {
    .close = sql_close,
    .blob_lookup = sql_blob_lookup,
    .blob_commit = sql_blob_commit,
    .blob_link = sql_blob_link,
    .blob_link_listed = sql_blob_link_listed,
    .blob_unlink = sql_blob_unlink,
    .manifest_get = sql_manifest_get,
    .manifest_put = sql_manifest_put,
    .manifest_delete = sql_manifest_delete,
    .tag_delete = sql_tag_delete,
    .tag_checked = sql_tag_checked,
    .repo_exists = sql_repo_exists,
    .tags_list = sql_tags_list,
    .catalog = sql_catalog,
    .referrers = sql_referrers,
    .gc_manifests = sql_gc_manifests,
    .gc_blob_remove = sql_gc_blob_remove,
    .locked = sql_locked,
    .repo_mark_mirror = sql_repo_mark_mirror,
    .touch = sql_touch,
    .mirror_usage = sql_mirror_usage,
    .blob_count = sql_blob_count,
    .usage = sql_usage,
    .mirror_lru = sql_mirror_lru,
    .mirror_evict = sql_mirror_evict,
    .mirror_blob_remove = sql_mirror_blob_remove,
    .each_blob = sql_each_blob,
    .each_manifest = sql_each_manifest,
    .check_refs = sql_check_refs,
    .charts = sql_charts,
    .charts_gen = sql_charts_gen,
    .charts_changes = sql_charts_changes,
    .manifest_parents = sql_manifest_parents,
    .lease_take = sql_lease_take,
    .lease_drop = sql_lease_drop,
    .event_note = sql_event_note,
    .events_read = sql_events_read,
    .event_cursor = sql_event_cursor,
    .event_cursor_set = sql_event_cursor_set,
    .events_backlog = sql_events_backlog,
    .events_prune = sql_events_prune,
};

int meta_sql_open(store_meta **out, const sqldrv *drv, sqldrv_db *db, sql_dialect dialect, int pool)
{
    sql_meta *m = calloc(1, sizeof *m);
    if (m) m->idle = calloc((size_t)(pool > 0 ? pool : 1), sizeof *m->idle);
    if (!m || !m->idle) {
        if (m) free(m);
        drv->db_free(db);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    m->base.ops = &sql_ops;
    m->drv = drv;
    m->db = db;
    m->dialect = dialect;
    m->max = pool > 0 ? pool : 1;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    sqldrv_conn *c;
    int rc = conn_take(m, &c);
    if (rc == 0) {
        rc = drv->migrate(c);
        conn_give(m, c);
    }
    if (rc < 0) {
        sql_close(&m->base);
        return rc;
    }
    *out = &m->base;
    return 0;
}
