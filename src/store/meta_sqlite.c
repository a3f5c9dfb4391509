/*
 * meta_sqlite: the SQLite driver of the metadata layer (store/sqldrv.h; the operations are
 * store/meta_sql.c's). The embedded `<root>/metadata.db` in WAL mode, synchronous=FULL so a 201
 * is durable. Each pooled connection keeps its statements prepared (SQLITE_PREPARE_PERSISTENT),
 * with meta_sql.c's $N parameters rewritten to SQLite's ?N once, when first prepared. Writes use
 * BEGIN IMMEDIATE so concurrent writers (server threads and a separate `berth gc` process) queue
 * on the database lock (60 s busy timeout) instead of failing on lock upgrade. The schema is
 * versioned with PRAGMA user_version (src/store/schema/sqlite/NNN.sql); a database made before
 * versions were recorded has version 0 and the tables of version 1, which migrate in place.
 */
#include "store/sqldrv.h"
#include "util/err.h"
#include "util/log.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../build/gen/schema_sqlite.h"

/* connections per process (WAL readers run in parallel; writers queue on the lock) */
#define POOL_MAX 16
#define SCHEMA_VERSION ((int)(sizeof schema_sqlite / sizeof *schema_sqlite))

struct sqldrv_db {
    char *path;
};

struct sqldrv_conn {
    sqlite3 *db;
    sqlite3_stmt *st[SQLDRV_STMTS];
};

static int db_err(sqlite3 *db, const char *what)
{
    int code = sqlite3_errcode(db);
    if (code == SQLITE_FULL) return berr_set(BERR_STORAGE_FULL, "%s: storage full", what);
    return berr_set(BERR_IO, "%s: %s", what, sqlite3_errmsg(db));
}

static int sq_connect(sqldrv_db *d, sqldrv_conn **out)
{
    sqldrv_conn *c = calloc(1, sizeof *c);
    if (!c) return berr_set(BERR_INTERNAL, "out of memory");
    if (sqlite3_open_v2(d->path, &c->db,
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

static void sq_disconnect(sqldrv_conn *c)
{
    for (int i = 0; i < SQLDRV_STMTS; i++)
        sqlite3_finalize(c->st[i]);
    sqlite3_close(c->db);
    free(c);
}

static void sq_db_free(sqldrv_db *d)
{
    if (!d) return;
    free(d->path);
    free(d);
}

static int exec(sqldrv_conn *c, const char *sql)
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

static int sq_begin(sqldrv_conn *c)
{
    return exec(c, "BEGIN IMMEDIATE");
}

/* Rolls back what is left of a transaction, keeping the error that ended it. */
static void rollback_keep(sqldrv_conn *c, int rc)
{
    if (sqlite3_get_autocommit(c->db)) return;
    char keep[1024];
    snprintf(keep, sizeof keep, "%s", berr_msg());
    exec(c, "ROLLBACK");
    if (rc < 0) berr_set((berr)-rc, "%s", keep);
}

/* A failed COMMIT keeps its own error: SQLite may have rolled the transaction back already, and
 * a ROLLBACK then must not replace the reason. */
static int sq_finish(sqldrv_conn *c, int rc, bool commit)
{
    if (rc == 0 && commit) {
        rc = exec(c, "COMMIT");
        if (rc < 0) rollback_keep(c, rc);
        return rc;
    }
    rollback_keep(c, rc);
    return rc;
}

/* The connection's prepared statement q, reset, its bindings cleared. */
static int stmt(sqldrv_conn *c, int q, const char *sql, sqlite3_stmt **out)
{
    if (c->st[q]) {
        sqlite3_reset(c->st[q]);
        sqlite3_clear_bindings(c->st[q]);
        *out = c->st[q];
        return 0;
    }
    /* $N (the statement table's form) to ?N, outside quoted literals */
    size_t n = strlen(sql);
    char *text = malloc(n + 1);
    if (!text) return berr_set(BERR_INTERNAL, "out of memory");
    bool quoted = false;
    for (size_t i = 0; i <= n; i++) {
        if (sql[i] == '\'') quoted = !quoted;
        text[i] = !quoted && sql[i] == '$' && sql[i + 1] >= '0' && sql[i + 1] <= '9' ? '?' : sql[i];
    }
    int r = sqlite3_prepare_v3(c->db, text, -1, SQLITE_PREPARE_PERSISTENT, &c->st[q], NULL);
    free(text);
    if (r != SQLITE_OK) {
        log_error("msg=\"prepare failed\" err=\"%s\"", sqlite3_errmsg(c->db));
        return db_err(c->db, "prepare");
    }
    *out = c->st[q];
    return 0;
}

static int bind(sqldrv_conn *c, sqlite3_stmt *s, const sqlv *args, int n)
{
    for (int i = 0; i < n; i++) {
        int r;
        switch (args[i].type) {
        case SQLV_INT:
            r = sqlite3_bind_int64(s, i + 1, args[i].i);
            break;
        case SQLV_TEXT:
            r = sqlite3_bind_text(s, i + 1, args[i].s, -1, SQLITE_STATIC);
            break;
        case SQLV_BYTES:
            r = sqlite3_bind_blob64(s, i + 1, args[i].s, args[i].len, SQLITE_STATIC);
            break;
        default:
            r = sqlite3_bind_null(s, i + 1);
        }
        if (r != SQLITE_OK) return db_err(c->db, "bind");
    }
    return 0;
}

static int sq_exec(sqldrv_conn *c, int q, const char *sql, const sqlv *args, int nargs,
                   int64_t *changes, const char *what)
{
    sqlite3_stmt *s;
    int rc = stmt(c, q, sql, &s);
    if (rc == 0) rc = bind(c, s, args, nargs);
    if (rc < 0) return rc;
    int r = sqlite3_step(s);
    sqlite3_reset(s);
    if (r != SQLITE_DONE) return db_err(c->db, what);
    if (changes) *changes = sqlite3_changes64(c->db);
    return 0;
}

static int sq_query(sqldrv_conn *c, int q, const char *sql, const sqlv *args, int nargs,
                    bool stream, sqldrv_rows *r, const char *what)
{
    (void)stream; /* stepping is streaming */
    sqlite3_stmt *s;
    int rc = stmt(c, q, sql, &s);
    if (rc == 0) rc = bind(c, s, args, nargs);
    if (rc < 0) return rc;
    *r = (sqldrv_rows){.c = c, .h = s, .what = what};
    return 0;
}

static int sq_next(sqldrv_rows *r)
{
    int s = sqlite3_step(r->h);
    if (s == SQLITE_ROW) return 1;
    if (s == SQLITE_DONE) return 0;
    return db_err(r->c->db, r->what);
}

static const char *sq_col_text(sqldrv_rows *r, int col, size_t *len)
{
    sqlite3_stmt *s = r->h;
    const char *v;
    switch (sqlite3_column_type(s, col)) {
    case SQLITE_NULL:
        *len = 0;
        return NULL;
    case SQLITE_BLOB:
        v = sqlite3_column_blob(s, col);
        break;
    default:
        v = (const char *)sqlite3_column_text(s, col);
    }
    *len = (size_t)sqlite3_column_bytes(s, col);
    return v ? v : "";
}

static int64_t sq_col_int(sqldrv_rows *r, int col)
{
    return sqlite3_column_int64(r->h, col);
}

static void sq_rows_close(sqldrv_rows *r)
{
    sqlite3_reset(r->h);
}

/* Brings the schema to SCHEMA_VERSION in one write transaction: berths opening one file together
 * queue on the lock, and the later ones find nothing left to do. */
static int sq_migrate(sqldrv_conn *c)
{
    int rc = sq_begin(c);
    int have = 0;
    if (rc == 0) {
        sqlite3_stmt *s;
        if (sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK) {
            rc = db_err(c->db, "migrate: user_version");
        } else {
            if (sqlite3_step(s) == SQLITE_ROW)
                have = sqlite3_column_int(s, 0);
            else
                rc = db_err(c->db, "migrate: user_version");
            sqlite3_finalize(s);
        }
    }
    if (rc == 0 && have > SCHEMA_VERSION)
        log_warn("msg=\"sqlite: the metadata schema is newer than this berth's\" "
                 "version=%d known=%d",
                 have, SCHEMA_VERSION);
    for (int v = have; rc == 0 && v < SCHEMA_VERSION; v++)
        rc = exec(c, schema_sqlite[v]);
    if (rc == 0 && have < SCHEMA_VERSION) {
        char set[64];
        snprintf(set, sizeof set, "PRAGMA user_version = %d", SCHEMA_VERSION);
        rc = exec(c, set);
        if (rc == 0)
            log_debug("msg=\"sqlite: schema migrated\" from=%d version=%d", have, SCHEMA_VERSION);
    }
    return sq_finish(c, rc, true);
}

static const sqldrv sqlite_drv = {
    .name = "sqlite",
    .connect = sq_connect,
    .disconnect = sq_disconnect,
    .check = NULL,
    .db_free = sq_db_free,
    .migrate = sq_migrate,
    .begin = sq_begin,
    .finish = sq_finish,
    .exec = sq_exec,
    .query = sq_query,
    .next = sq_next,
    .col_text = sq_col_text,
    .col_int = sq_col_int,
    .rows_close = sq_rows_close,
};

int store_meta_sqlite_open(store_meta **out, const char *path)
{
    sqldrv_db *d = calloc(1, sizeof *d);
    if (d) d->path = strdup(path);
    if (!d || !d->path) {
        free(d);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    return meta_sql_open(out, &sqlite_drv, d, SQL_DIALECT_SQLITE, POOL_MAX);
}
