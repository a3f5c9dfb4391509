/*
 * http: the libmicrohttpd glue. A request is routed once its headers are in, then fed to its
 * handler in three steps (begin with headers, data for each piece of the body as it streams,
 * end when the body is complete), and answered with one response built by the helpers below.
 * Bodies stream to the store: begin() and data() run on the event loop and must not wait; an
 * end() that may (fsync, metadata writes) is marked `offload` and runs on a worker thread while
 * its connection is suspended. When the store blocks (STORE_CAP_BLOCKING), a `body_io` handler's
 * body is gathered in a bounded spool on the loop and written by a worker (data() there).
 *
 * Error convention: a handler step returns 0 or a negative berr; on error the layer answers with
 * the OCI error JSON ({"errors":[{"code","message","detail"}]}) and the code's status, unless the
 * handler already chose a response.
 *
 * This layer knows nothing above it: serve.c hands http_server_start a site, i.e. the routers
 * (which parse a path into an endpoint number and the repository name and reference), one route
 * table (endpoint x methods -> handler, and who may call it) and the auth hooks. Access is
 * checked here, once, from the route's declaration, before the handler's begin() runs; handlers
 * only filter listings or check items whose repository is known from content. Routers and
 * handlers return errors; only this layer answers them. Only the files that speak HTTP itself
 * (server.c, debug.c, bigsend.c, and handlers that stream or parse forms) include
 * <microhttpd.h>; this header does not.
 */
#ifndef BERTH_HTTP_H
#define BERTH_HTTP_H

#include "config.h"
#include "store/store.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

struct MHD_Connection;
struct MHD_Response;

typedef struct http_req http_req;
typedef struct http_server http_server;
typedef struct http_route http_route;

typedef struct {
    int (*begin)(http_req *r);                             /* headers received */
    int (*data)(http_req *r, const char *buf, size_t len); /* body bytes (may be NULL) */
    int (*end)(http_req *r);                               /* body complete: respond */
    void (*cleanup)(http_req *r);                          /* always called last (may be NULL) */
    bool offload; /* end() may block (fsync, metadata writes): run it on a worker thread */
    /* end() only reads the store: run on a worker when the store's engines block (S3 blobs,
     * PostgreSQL metadata: STORE_CAP_BLOCKING), on the event loop when they do not (files) */
    bool store_io;
    /* data() writes the body to the store (uploads): when the store blocks, the event loop only
     * gathers the body in a bounded spool (HTTP_SPOOL) and a worker writes each full spool while
     * the connection is suspended (it reads no more meanwhile), then the rest before end();
     * begin() (opening the session) then runs on a worker too */
    bool body_io;
} http_handler;

/* The most body a body_io request gathers before a worker writes it (with one read of the
 * connection on top: the spool may pass it by less than the connection's buffer). */
#define HTTP_SPOOL (1024 * 1024)

/* An end() may return HTTP_OFFLOAD to be called again on a worker thread (r->on_worker set),
 * when it finds it must wait after all (an upstream fetch on a cache miss). */
#define HTTP_OFFLOAD 1
/* An end() on a worker may return HTTP_PARKED after handing the request to code that calls
 * http_req_requeue(r) once what it waits for has happened (an upstream's answer): the connection
 * stays suspended and no worker is held meanwhile; end() then runs again on a worker. */
#define HTTP_PARKED 2

typedef enum { M_GET, M_HEAD, M_PUT, M_POST, M_PATCH, M_DELETE, M_OTHER } http_method;

#define HTTP_MAX_PARTS 4

struct http_req {
    struct MHD_Connection *conn;
    const config *cfg;
    store *store;
    http_method method;
    const char *method_str;
    char *path; /* decoded path, owned */
    /* routing results (registry/): repository name and the part after the keyword */
    char name[256];
    char ref[256];
    const http_route *route; /* its line in the route table (NULL: 405) */
    const http_handler *h;   /* route->h */
    void *ctx;               /* handler's per-request state */
    struct MHD_Response *resp;
    int status;
    uint64_t body_bytes, resp_bytes;
    struct timespec start;
    bool started;     /* handler begin() ran */
    bool initialized; /* first access-handler call done */
    bool offloaded;   /* end() handed to a worker; the connection is suspended until it is done */
    bool on_worker;   /* end() is running on a worker thread */
    bool admitting;   /* sign-in and begin() run on a worker (a password check, or the begin()
                       * of a body_io handler with a blocking store: opening a session) */
    int verdict;      /* identify's, for admit() on a worker when it was not HTTP_AUTH_SLOW */
    bool draining;    /* a worker is writing the spool (body_io); the connection is suspended */
    char *spool;      /* body_io: body gathered on the event loop, not yet written (spooled) */
    size_t spooled, spool_cap;
    uint8_t client[16];  /* the client's address (IPv4 in the first 4 bytes), for limits.c */
    char client_str[56]; /* "ip:port" / "[ip6]:port", made on first use (http_client) */
    /* mirror routing (registry/mirror.c): the upstream and its repository name, when the
     * request is for cached upstream content; name then holds the local (store) name */
    const config_mirror *mirror;
    char upstream_repo[256];
    bool raw_escaped;     /* the raw path held percent-escapes other than %3A */
    bool plain_errors;    /* errors as {"error":"..."} (the Helm/ChartMuseum API), not OCI JSON */
    void *auth;           /* the auth hooks' per-request state (who signed in), or NULL */
    bool holds_body_slot; /* limits.c: counted among the concurrent request bodies */
    long retry_after;     /* seconds, sent with a 429 */
    bool bigsend;         /* http_reply_fd registered the response with bigsend (bigsend.h) */
    int bigsend_file, bigsend_sock;
    bool failed;      /* a response (usually an error) is set; the rest of the body is discarded */
    http_server *srv; /* the server the request came to (for http_req_requeue) */
};

/* Queues a request parked by HTTP_PARKED for its end() to run again on a worker. */
void http_req_requeue(http_req *r);

/* ---- routes ---- */

/* Who may call an endpoint. The server asks the auth hooks once per request, after routing and
 * before begin(); with auth off every request passes. */
typedef enum {
    HTTP_PUBLIC,    /* anyone, even with auth on (/, /health: load balancers) */
    HTTP_SIGNED_IN, /* callers who signed in; others get the challenge (the API root, where
                     * clients learn how to sign in) */
    HTTP_KNOWN,     /* callers who signed in, or anyone when some anonymous access is configured;
                     * the handler filters its listing or checks each item (catalog, Helm) */
    HTTP_REPO,      /* the route's action (pull, push or delete) on the routed repository */
} http_access;

/* Method sets of a route (GET also answers HEAD). */
#define HTTP_GET ((1u << M_GET) | (1u << M_HEAD))
#define HTTP_PUT (1u << M_PUT)
#define HTTP_POST (1u << M_POST)
#define HTTP_PATCH (1u << M_PATCH)
#define HTTP_DELETE (1u << M_DELETE)

/* Route flags. In read-only mode (storage.maintenance.readonly) only GET and HEAD routes exist. */
#define HTTP_IF_DELETE 1u /* exists only with storage.delete.enabled */

typedef struct http_router http_router;

/* One line of the route table: an endpoint of a router, the methods, the handler and its access.
 * A path a router matches with a method no line has is answered 405. */
struct http_route {
    const char *path; /* what the router matches, for the reader ("/v2/<name>/tags/list") */
    const http_router *router; /* the router that matches it */
    int endpoint;              /* the router's endpoint number */
    unsigned methods;          /* HTTP_GET, HTTP_PUT... */
    const http_handler *h;
    http_access access;
    unsigned action; /* HTTP_REPO: CONFIG_PULL, CONFIG_PUSH or CONFIG_DELETE */
    unsigned flags;  /* HTTP_IF_DELETE */
};

/* Parses a path. match returns 1 with *endpoint set (and r->name, r->ref when the path holds
 * them), 0 when the path is not its, or a negative berr (an invalid name: answered as is).
 * prepare, when set, runs once the route is found, before the access check: it validates the
 * reference for the route and may resolve r->name (mirror routing); 0 or a negative berr. */
struct http_router {
    const char *name;
    int (*match)(http_req *r, int *endpoint);
    int (*prepare)(http_req *r, const http_route *rt);
    bool plain_errors; /* errors as {"error":"..."} */
};

/* The auth hooks. identify decides who is asking, once, from the request's headers, on the event
 * loop: 0 (signed in, or anonymous), HTTP_AUTH_SLOW when a password must be checked (costly by
 * design: identify_slow then finishes on a worker thread), or a negative berr (refused). check
 * is the route's access rule; challenge the WWW-Authenticate value for a 401; done releases the
 * per-request state (r->auth). */
#define HTTP_AUTH_SLOW 1
typedef struct {
    int (*identify)(http_req *r);
    int (*identify_slow)(http_req *r);
    int (*check)(http_req *r, http_access access, unsigned action);
    void (*challenge)(const http_req *r, char *out, size_t len);
    void (*done)(http_req *r);
} http_auth_hooks;

/* What a server serves: routers tried in order, the route table, the auth hooks (may be NULL:
 * no access control). All must outlive the server. */
typedef struct {
    const http_router *const *routers;
    size_t nrouters;
    const http_route *routes;
    size_t nroutes;
    const http_auth_hooks *auth;
    /* called on the thread about to run a handler step (begin, or end on the loop or a worker),
     * before it: per-thread request context for what the step writes (notifications) */
    void (*on_step)(http_req *r);
} http_site;

int http_server_start(http_server **out, const config *cfg, store *st, const http_site *site);
/* Stops accepting, waits up to grace_s for in-flight requests, then stops. */
void http_server_stop(http_server *srv, int grace_s);
/* Storage health as seen by the periodic check (true when writable). */
bool http_server_healthy(void);
void http_server_set_healthy(bool ok);
/* The same, with why it is not healthy (for /health's body). */
void http_server_set_health(bool ok, const char *reason);
void http_server_health_reason(char *out, size_t len);

/* ---- request helpers ---- */
const char *http_header(http_req *r, const char *name);
/* The client's address as "ip:port" ("[ip6]:port"), or "" when unknown; formatted once. */
const char *http_client(http_req *r);
const char *http_query(http_req *r, const char *name);
/* Whether the query holds the argument at all (with or without a value: "?force"). */
bool http_query_has(http_req *r, const char *name);
/* All values of a repeated query argument; returns how many were stored (up to max). */
size_t http_query_all(http_req *r, const char *name, const char **out, size_t max);

/* ---- responses (each replaces a previous one) ---- */
/* Body copied; ct may be NULL. */
int http_reply(http_req *r, int status, const char *ct, const char *body, size_t len);
/* One piece of a gathered body (the layout of libmicrohttpd's struct MHD_IoVec). */
typedef struct {
    const void *base;
    size_t len;
} http_iovec;
/* Body gathered from n pieces (sent with writev, never copied); release(cls) when done. */
int http_reply_iov(http_req *r, int status, const char *ct, const http_iovec *iov, unsigned int n,
                   uint64_t len, void (*release)(void *), void *cls);
/* Body owned by the response afterwards (freed with free()). */
int http_reply_owned(http_req *r, int status, const char *ct, char *body, size_t len);
/* len bytes of fd from off (sendfile); the fd belongs to the response afterwards. */
int http_reply_fd(http_req *r, int status, int fd, uint64_t off, uint64_t len);
/* size bytes produced by reader (libmicrohttpd's content reader callback: bytes written, or its
 * MHD_CONTENT_READER_END_* values); free_cb(cls) when the response is done. */
typedef ssize_t (*http_reader)(void *cls, uint64_t pos, char *buf, size_t max);
int http_reply_stream(http_req *r, int status, uint64_t size, http_reader reader, void *cls,
                      void (*free_cb)(void *cls));
/* The OCI error JSON for a negative berr (detail from berr_msg()). */
int http_reply_error(http_req *r, int rc);
void http_add_header(http_req *r, const char *name, const char *value);
void http_add_headerf(http_req *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Admission (limits.c): per-address rate and concurrent bodies; 0 or -BERR_TOOMANYREQUESTS
 * (r->retry_after set). limits_done releases what limits_admit took. */
struct sockaddr;
int limits_admit(http_req *r, const struct sockaddr *client);
void limits_done(http_req *r);
/* Failed sign-ins per client address: after a few within a minute, the client's next ones are
 * refused without a password check until its back-off ends (seconds to wait, or 0). */
void limits_signin_failed(const http_req *r);
long limits_signin_wait(const http_req *r);
/* Requests receiving a body now. */
int64_t limits_bodies(void);

/* /health's body (malloc'd JSON) and status: 200 while storage and metadata answer (naming any
 * upstream marked down), else 503 with the reason (status.c; also the debug listener's). */
char *status_health_json(int *status);
/* Where status_health_json learns the upstreams marked down (a JSON array, or NULL when none):
 * set by serve.c to registry/'s reg_mirror_health before the server starts. */
struct json_t;
void status_set_upstreams_down(struct json_t *(*down)(void));
/* "host:port", ":port", "[v6]:port" -> sockaddr (a literal needs no resolver). */
struct sockaddr_storage;
int http_parse_addr(const char *addr, struct sockaddr_storage *ss, unsigned *len);
/* Requests being served, and end() steps waiting for a worker (metrics). */
int64_t http_server_in_flight(void);
int64_t http_server_queue_depth(void);
/* registry:2's debug listener (http.debug.addr): /debug/health, and Prometheus metrics at
 * http.debug.prometheus.path when enabled (debug.c). NULL when not configured. */
typedef struct http_debug http_debug;
int http_debug_start(http_debug **out, const config *cfg);
void http_debug_stop(http_debug *d);

/* status.c: "/" and the health paths (endpoints STATUS_ROOT, STATUS_HEALTH). */
enum { STATUS_ROOT, STATUS_HEALTH };
extern const http_router status_router;
extern const http_handler status_root_h, status_health_h;

#endif
