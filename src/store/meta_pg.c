/*
 * meta_pg: the PostgreSQL driver of the metadata layer (store/sqldrv.h; the operations are
 * store/meta_sql.c's), for several berth processes that share one database and one storage
 * directory (`database.enabled`). What PostgreSQL needs beyond SQLite:
 *
 *  - libpq is loaded with dlopen on first use (as libcurl in src/proxy/upstream.c), so the
 *    embedded (SQLite) mode does not map it; its headers are used for the types only.
 *  - SQLite's single writer is what makes online gc safe (a manifest PUT's "do my blobs exist?"
 *    and gc's "is this blob unreferenced?" never interleave; the chart change log's sequence
 *    numbers commit in order). Every write transaction here therefore starts with
 *    pg_advisory_xact_lock(WRITE_LOCK): writers of all processes on the database queue on it, as
 *    on SQLite's write lock, and readers never wait (MVCC, like WAL readers).
 *  - the schema is versioned (schema_version; src/store/schema/pg/NNN.sql) and migrated at open
 *    under another advisory lock, so berth processes starting together migrate once; `berth
 *    migrate` only does that.
 *  - each connection prepares its statements on first use (named q<index>); a broken connection
 *    is reset when taken from the pool, and a statement outside a transaction that fails because
 *    the connection broke is retried once on a fresh one. Every value travels as a parameter
 *    ($1...); no SQL is built from values. Results come in binary (a manifest's bytea as its
 *    exact bytes; integers decoded by their column type); walks over every row (fsck) use
 *    single-row mode, so a large store is never held in memory at once.
 */
#include "store/sqldrv.h"
#include "util/err.h"
#include "util/log.h"

#include <dlfcn.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../build/gen/schema_pg.h"

#define SCHEMA_VERSION ((int)(sizeof schema_pg / sizeof *schema_pg))

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
    Oid (*ftype)(const PGresult *, int);
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
#define PQftype px.ftype
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
    SYM(ftype, "PQftype");
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

/* ---- connections ---- */

#define KW_MAX 16

struct sqldrv_db {
    const char *kw[KW_MAX + 1];
    char *val[KW_MAX + 1];
};

struct sqldrv_conn {
    PGconn *pg;
    bool prepared[SQLDRV_STMTS];
    bool in_tx;
};

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

static int pg_fail(sqldrv_conn *c, const PGresult *r, const char *what)
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

static int pg_connect(sqldrv_db *d, sqldrv_conn **out)
{
    sqldrv_conn *c = calloc(1, sizeof *c);
    if (!c) return berr_set(BERR_INTERNAL, "out of memory");
    c->pg = PQconnectdbParams(d->kw, (const char *const *)d->val, 0);
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

static void pg_disconnect(sqldrv_conn *c)
{
    PQfinish(c->pg);
    free(c);
}

static void pg_db_free(sqldrv_db *d)
{
    if (!d) return;
    for (int i = 0; i < KW_MAX && d->kw[i]; i++)
        free(d->val[i]);
    free(d);
}

/* Re-establishes a broken connection (its prepared statements are gone with it). */
static int conn_reset(sqldrv_conn *c)
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

/* A pooled connection found broken when taken is reset. */
static int pg_check(sqldrv_conn *c)
{
    return PQstatus(c->pg) == CONNECTION_OK ? 0 : conn_reset(c);
}

/* ---- running statements ---- */

typedef struct {
    const char *v[SQLDRV_PARAMS];
    int len[SQLDRV_PARAMS];
    int fmt[SQLDRV_PARAMS];
    char num[SQLDRV_PARAMS][24];
} params;

/* Integers travel as text (the server infers each parameter's type), bytes in binary. */
static int to_params(const sqlv *args, int n, params *p)
{
    if (n > SQLDRV_PARAMS) return berr_set(BERR_INTERNAL, "too many statement parameters");
    for (int i = 0; i < n; i++) {
        p->len[i] = 0;
        p->fmt[i] = 0;
        switch (args[i].type) {
        case SQLV_INT:
            snprintf(p->num[i], sizeof p->num[i], "%lld", (long long)args[i].i);
            p->v[i] = p->num[i];
            break;
        case SQLV_TEXT:
            p->v[i] = args[i].s;
            break;
        case SQLV_BYTES:
            p->v[i] = args[i].s;
            p->len[i] = (int)args[i].len;
            p->fmt[i] = 1;
            break;
        default:
            p->v[i] = NULL;
        }
    }
    return 0;
}

static bool prepare(sqldrv_conn *c, int q, const char *sql, PGresult **err)
{
    if (c->prepared[q]) return true;
    char name[16];
    snprintf(name, sizeof name, "q%d", q);
    PGresult *r = PQprepare(c->pg, name, sql, 0, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        *err = r;
        return false;
    }
    PQclear(r);
    c->prepared[q] = true;
    return true;
}

/* Runs statement q, results in binary, into *out (for the caller to PQclear). Outside a
 * transaction, a statement that fails because the connection broke is retried once on a reset
 * connection. */
static int run_q(sqldrv_conn *c, int q, const char *sql, const sqlv *args, int nargs,
                 PGresult **out, const char *what)
{
    params p;
    int rc = to_params(args, nargs, &p);
    if (rc < 0) return rc;
    for (int attempt = 0;; attempt++) {
        PGresult *r = NULL;
        if (prepare(c, q, sql, &r)) {
            char name[16];
            snprintf(name, sizeof name, "q%d", q);
            r = PQexecPrepared(c->pg, name, nargs, p.v, p.len, p.fmt, 1);
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            *out = r;
            return 0;
        }
        if (attempt == 0 && !c->in_tx && PQstatus(c->pg) == CONNECTION_BAD) {
            PQclear(r);
            rc = conn_reset(c);
            if (rc < 0) return rc;
            continue;
        }
        rc = pg_fail(c, r, what);
        PQclear(r);
        return rc;
    }
}

static int pg_exec(sqldrv_conn *c, int q, const char *sql, const sqlv *args, int nargs,
                   int64_t *changes, const char *what)
{
    PGresult *r;
    int rc = run_q(c, q, sql, args, nargs, &r, what);
    if (rc < 0) return rc;
    if (changes) *changes = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return 0;
}

/* Streams the rows of q (single-row mode) */
static int stream_q(sqldrv_conn *c, int q, const char *sql, const sqlv *args, int nargs,
                    const char *what)
{
    params p;
    int rc = to_params(args, nargs, &p);
    if (rc < 0) return rc;
    PGresult *r = NULL;
    if (!prepare(c, q, sql, &r)) {
        rc = pg_fail(c, r, what);
        PQclear(r);
        return rc;
    }
    char name[16];
    snprintf(name, sizeof name, "q%d", q);
    if (!PQsendQueryPrepared(c->pg, name, nargs, p.v, p.len, p.fmt, 1))
        return pg_fail(c, NULL, what);
    PQsetSingleRowMode(c->pg);
    return 0;
}

static int pg_query(sqldrv_conn *c, int q, const char *sql, const sqlv *args, int nargs,
                    bool stream, sqldrv_rows *r, const char *what)
{
    *r = (sqldrv_rows){.c = c, .stream = stream, .row = -1, .what = what};
    if (stream) return stream_q(c, q, sql, args, nargs, what);
    PGresult *res;
    int rc = run_q(c, q, sql, args, nargs, &res, what);
    if (rc < 0) return rc;
    r->h = res;
    r->nrows = PQntuples(res);
    return 0;
}

/* Drains what is left of a streamed result (the connection is then ready again). */
static void drain(sqldrv_rows *r)
{
    PGresult *res;
    while ((res = PQgetResult(r->c->pg)))
        PQclear(res);
}

static int pg_next(sqldrv_rows *r)
{
    if (!r->stream) return ++r->row < r->nrows ? 1 : 0;
    if (r->h) PQclear(r->h);
    r->h = PQgetResult(r->c->pg);
    if (!r->h) {
        r->stream = false; /* ended */
        return 0;
    }
    ExecStatusType st = PQresultStatus(r->h);
    if (st == PGRES_SINGLE_TUPLE) {
        r->row = 0;
        return 1;
    }
    int rc = st == PGRES_TUPLES_OK ? 0 : pg_fail(r->c, r->h, r->what);
    PQclear(r->h);
    r->h = NULL;
    drain(r);
    r->stream = false;
    return rc;
}

static const char *pg_col_text(sqldrv_rows *r, int col, size_t *len)
{
    if (PQgetisnull(r->h, r->row, col)) {
        *len = 0;
        return NULL;
    }
    *len = (size_t)PQgetlength(r->h, r->row, col);
    return PQgetvalue(r->h, r->row, col);
}

/* Binary integers by their column type: int8, int4 or int2 (pg_type OIDs 20, 23, 21), each a
 * big-endian two's complement of its width. */
static int64_t pg_col_int(sqldrv_rows *r, int col)
{
    if (PQgetisnull(r->h, r->row, col)) return 0;
    Oid t = PQftype(r->h, col);
    int len = PQgetlength(r->h, r->row, col);
    if (!((t == 20 && len == 8) || (t == 23 && len == 4) || (t == 21 && len == 2))) {
        log_error("msg=\"postgres: not an integer column\" type=%u", (unsigned)t);
        return 0;
    }
    const unsigned char *v = (const unsigned char *)PQgetvalue(r->h, r->row, col);
    uint64_t x = v[0] & 0x80 ? UINT64_MAX : 0;
    for (int i = 0; i < len; i++)
        x = x << 8 | v[i];
    return (int64_t)x;
}

static void pg_rows_close(sqldrv_rows *r)
{
    if (r->h) PQclear(r->h);
    r->h = NULL;
    if (r->stream) drain(r);
}

static int simple(sqldrv_conn *c, const char *sql, ExecStatusType want, const char *what)
{
    PGresult *r = PQexec(c->pg, sql);
    int rc = PQresultStatus(r) == want ? 0 : pg_fail(c, r, what);
    PQclear(r);
    return rc;
}

/* Starts a write transaction holding the write lock (SQLite's BEGIN IMMEDIATE). READ COMMITTED
 * whatever the server's default: each statement after the lock then sees every write committed
 * before it was granted (a snapshot taken when the transaction began would not). */
static int pg_begin(sqldrv_conn *c)
{
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

/* Commits (rc == 0 and commit) or rolls back, keeping the first error's detail. */
static int pg_finish(sqldrv_conn *c, int rc, bool commit)
{
    if (rc == 0 && commit) {
        PGresult *r = PQexec(c->pg, "COMMIT");
        if (PQresultStatus(r) != PGRES_COMMAND_OK) rc = pg_fail(c, r, "commit");
        PQclear(r);
    }
    if ((rc < 0 || !commit) && PQtransactionStatus(c->pg) != PQTRANS_IDLE &&
        PQstatus(c->pg) == CONNECTION_OK) {
        char keep[1024];
        snprintf(keep, sizeof keep, "%s", berr_msg());
        PQclear(PQexec(c->pg, "ROLLBACK"));
        if (rc < 0) berr_set((berr)-rc, "%s", keep);
    }
    c->in_tx = false;
    return rc;
}

/* Brings the schema to SCHEMA_VERSION in one transaction under the migration lock: processes
 * starting together queue, and the later ones find nothing left to do. */
static int pg_migrate(sqldrv_conn *c)
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
            have = PQgetisnull(r, 0, 0) ? 0 : atoi(PQgetvalue(r, 0, 0));
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
        rc = simple(c, schema_pg[v], PGRES_COMMAND_OK, what);
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
    return pg_finish(c, rc, true);
}

static const sqldrv pg_drv = {
    .name = "postgres",
    .connect = pg_connect,
    .disconnect = pg_disconnect,
    .check = pg_check,
    .db_free = pg_db_free,
    .migrate = pg_migrate,
    .begin = pg_begin,
    .finish = pg_finish,
    .exec = pg_exec,
    .query = pg_query,
    .next = pg_next,
    .col_text = pg_col_text,
    .col_int = pg_col_int,
    .rows_close = pg_rows_close,
};

static void kw_add(sqldrv_db *d, int *n, const char *k, const char *v)
{
    if (!v || !*v || *n >= KW_MAX) return;
    d->kw[*n] = k;
    d->val[*n] = strdup(v);
    if (d->val[*n]) (*n)++;
}

int store_meta_pg_open(store_meta **out, const config_database *db)
{
    pthread_once(&pq_once, load_pq);
    if (!pq_loaded)
        return berr_set(BERR_CONFIG,
                        "database.enabled: the PostgreSQL client library (libpq.so.5) could not "
                        "be loaded (%s); install libpq5 or disable database",
                        pq_load_err);
    sqldrv_db *d = calloc(1, sizeof *d);
    if (!d) return berr_set(BERR_INTERNAL, "out of memory");
    int n = 0;
    char port[16];
    snprintf(port, sizeof port, "%d", db->port);
    kw_add(d, &n, "host", db->host);
    if (db->port > 0) kw_add(d, &n, "port", port);
    kw_add(d, &n, "user", db->user);
    kw_add(d, &n, "password", db->password);
    kw_add(d, &n, "dbname", db->dbname);
    kw_add(d, &n, "sslmode", db->sslmode);
    kw_add(d, &n, "application_name", "berth");
    kw_add(d, &n, "connect_timeout", "10");
    /* a peer gone without a word (host down, network cut) is noticed within about a minute */
    kw_add(d, &n, "keepalives_idle", "30");
    kw_add(d, &n, "keepalives_interval", "10");
    kw_add(d, &n, "keepalives_count", "3");
    int rc = meta_sql_open(out, &pg_drv, d, SQL_DIALECT_PG, db->maxopen);
    if (rc == 0)
        log_debug("msg=\"metadata in postgres\" host=%s dbname=%s pool=%d",
                  db->host ? db->host : "", db->dbname ? db->dbname : "", db->maxopen);
    return rc;
}
