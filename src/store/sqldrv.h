/*
 * store/sqldrv.h: the thin SQL driver under the metadata layer. store/meta_sql.c implements the
 * store_meta_ops once, in SQL, over one of these; a driver only connects, runs statements and
 * reads rows, and maps its engine's errors onto util/err.h codes:
 *
 *   store/meta_sqlite.c  SQLite (the embedded `<root>/metadata.db`)
 *   store/meta_pg.c      PostgreSQL (`database.enabled`; libpq loaded with dlopen)
 *
 * Statements are written once, with $1..$N parameters (a driver rewrites them to its own form
 * when it prepares them), and named by their index in meta_sql.c's table, so a driver can keep
 * each connection's prepared statements (SQLite's sqlite3_stmt, PostgreSQL's named statements).
 * Transactions are write transactions: begin takes the one database-wide write lock (SQLite's
 * BEGIN IMMEDIATE, PostgreSQL's pg_advisory_xact_lock), so every writer of every process queues
 * there and readers never wait. The connection pool is meta_sql.c's, shared by both drivers.
 */
#ifndef BERTH_STORE_SQLDRV_H
#define BERTH_STORE_SQLDRV_H

#include "store/internal.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* statements a connection can hold prepared (meta_sql.c's table stays below this) */
#define SQLDRV_STMTS 64
/* parameters of one statement */
#define SQLDRV_PARAMS 10

typedef struct sqldrv_db sqldrv_db;     /* the driver's database: how to connect */
typedef struct sqldrv_conn sqldrv_conn; /* one connection */

typedef enum { SQLV_NULL, SQLV_INT, SQLV_TEXT, SQLV_BYTES } sqlv_type;

/* One parameter value (a text of NULL travels as SQL NULL). */
typedef struct {
    sqlv_type type;
    int64_t i;
    const char *s;
    size_t len; /* SQLV_BYTES */
} sqlv;

/* A statement's rows, read one at a time with next(). */
typedef struct {
    sqldrv_conn *c;
    void *h;          /* the driver's handle: a sqlite3_stmt, a PGresult */
    int row, nrows;   /* PostgreSQL: the current row of a whole result */
    bool stream;      /* PostgreSQL: single-row mode */
    const char *what; /* for error messages */
} sqldrv_rows;

typedef struct sqldrv {
    const char *name;
    /* one connection to db; reconnects a broken one when `check` is called on it */
    int (*connect)(sqldrv_db *db, sqldrv_conn **out);
    void (*disconnect)(sqldrv_conn *c);
    int (*check)(sqldrv_conn *c);
    void (*db_free)(sqldrv_db *db);
    /* brings the schema to the newest version this berth knows, once (under a lock) */
    int (*migrate)(sqldrv_conn *c);
    /* a write transaction under the write lock; finish commits when rc == 0 and commit is set,
     * else rolls back; it returns rc, or the commit's error, keeping the first error's detail */
    int (*begin)(sqldrv_conn *c);
    int (*finish)(sqldrv_conn *c, int rc, bool commit);
    /* runs statement q (sql) with args; *changes (when not NULL) gets the rows it changed */
    int (*exec)(sqldrv_conn *c, int q, const char *sql, const sqlv *args, int nargs,
                int64_t *changes, const char *what);
    /* runs statement q and opens its rows (stream: fetched one at a time, for walks over every
     * row); rows_close must follow a successful query */
    int (*query)(sqldrv_conn *c, int q, const char *sql, const sqlv *args, int nargs, bool stream,
                 sqldrv_rows *r, const char *what);
    /* 1: a row is there; 0: no more rows; negative: an error */
    int (*next)(sqldrv_rows *r);
    /* column col of the current row: its bytes and length (NULL for SQL NULL), or its integer
     * (0 for SQL NULL) */
    const char *(*col_text)(sqldrv_rows *r, int col, size_t *len);
    int64_t (*col_int)(sqldrv_rows *r, int col);
    void (*rows_close)(sqldrv_rows *r);
} sqldrv;

/* which statement text a driver takes from meta_sql.c's table where the dialects differ */
typedef enum { SQL_DIALECT_SQLITE, SQL_DIALECT_PG } sql_dialect;

/* Implements store_meta_ops over drv and db (taken over, freed on failure too) with a pool of
 * at most pool connections; migrates the schema on the first connection. */
int meta_sql_open(store_meta **out, const sqldrv *drv, sqldrv_db *db, sql_dialect dialect,
                  int pool);

/* Fault injection, for tests (tests/unit/test_meta.c): with n > 0, the nth statement meta_sql.c
 * runs from now on (in any thread) fails with -BERR_IO "injected fault", as a failing disk would,
 * and injection is off again; 0 turns it off. Lets a test walk every statement of an operation and
 * check that each failure leaves nothing committed half-way. */
void meta_sql_fail_at(long n);

#endif
