/*
 * server: libmicrohttpd driven by an epoll event loop (one thread by default, `http.threads`
 * for more), plus a small pool of worker threads for the steps that may block (committing an
 * upload, writing metadata): such a step suspends its connection, runs on a worker, and resumes
 * it with the response ready, so a slow fsync never stalls other clients. When the store blocks,
 * an upload's body (body_io) is only copied into a bounded spool on the loop; a worker writes
 * each full spool while the connection is suspended, so the loop reads nothing meanwhile and
 * the bytes reach the store in order, from one thread at a time. Compared on one core
 * (noisy runs) with thread-per-connection mode, the loop served as many or more small requests
 * (a thread per connection pays a context switch per request). libmicrohttpd sends only 128 KiB
 * per sendfile call in this mode; bigsend.c widens the calls for file responses to 2 MiB.
 * Responses are always queued after the first call of the access handler (never on it), so
 * keep-alive survives: queueing on the first call makes libmicrohttpd close the connection.
 * An error found before a large body arrives is answered at once (the connection then closes)
 * rather than reading gigabytes to discard them.
 */
#include "http/bigsend.h"
#include "http/http.h"
#include "util/err.h"
#include "util/file.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/tlslazy.h"

#include <gnutls/gnutls.h>

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <microhttpd.h>
#include <stddef.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WORKERS 8

/* Per-connection memory (request headers, read buffer). libmicrohttpd clears the pool between
 * requests, so its size is paid on every request: measured on one core, 1 MiB pools served
 * 5-11k manifest GETs/s against 17-50k with 32-128 KiB, while uploads gained little from reads
 * larger than half of 64 KiB once writeback runs during the upload. */
#define CONN_POOL (64 * 1024)

struct http_server {
    struct MHD_Daemon *d;
    const config *cfg;
    store *st;
    http_site site;
    char *tls_key, *tls_cert, *tls_trust;
    atomic_int inflight;
    /* worker pool: a FIFO of suspended requests whose end() is to run; workers are started
     * when a request finds none idle (up to WORKERS), so an idle server holds no stacks */
    pthread_t workers[WORKERS];
    int nworkers, nidle;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    http_req **queue;
    size_t qhead, qlen, qcap;
    bool stopping;
    pthread_t sweeper; /* closes connections that take too long to send their headers */
    atomic_bool sweeping;
};

/* ---- header deadline (slowloris) ----
 * Every connection is watched from the moment it opens, or its previous request ended, until its
 * next request's headers are complete. One that is still sending headers after
 * http.headertimeout is shut down (shutdown(2) on its socket; libmicrohttpd then closes it). The
 * watch entry is unlinked, under the same lock, when libmicrohttpd reports the connection closed,
 * before it closes the socket, so a descriptor in the list always belongs to its connection. */
typedef struct conn_watch {
    int fd;
    int64_t waiting_since; /* ms, monotonic; 0 while a request is being handled */
    bool shut;
    struct conn_watch *prev, *next;
} conn_watch;

static pthread_mutex_t watch_mu = PTHREAD_MUTEX_INITIALIZER;
static conn_watch *watch_head;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void notify_conn(void *cls, struct MHD_Connection *conn, void **sock_ctx,
                        enum MHD_ConnectionNotificationCode toe)
{
    (void)cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        conn_watch *w = calloc(1, sizeof *w);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!w || !ci) {
            free(w);
            return;
        }
        w->fd = ci->connect_fd;
        w->waiting_since = mono_ms();
        pthread_mutex_lock(&watch_mu);
        w->next = watch_head;
        if (watch_head) watch_head->prev = w;
        watch_head = w;
        pthread_mutex_unlock(&watch_mu);
        *sock_ctx = w;
    } else if (*sock_ctx) {
        conn_watch *w = *sock_ctx;
        pthread_mutex_lock(&watch_mu);
        if (w->prev)
            w->prev->next = w->next;
        else
            watch_head = w->next;
        if (w->next) w->next->prev = w->prev;
        pthread_mutex_unlock(&watch_mu);
        free(w);
        *sock_ctx = NULL;
    }
}

static void watch_set(struct MHD_Connection *conn, int64_t since)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    conn_watch *w = ci ? ci->socket_context : NULL;
    if (!w) return;
    pthread_mutex_lock(&watch_mu);
    w->waiting_since = since;
    pthread_mutex_unlock(&watch_mu);
}

static void *sweeper(void *p)
{
    http_server *srv = p;
    int64_t limit = srv->cfg->header_timeout_ms;
    while (atomic_load(&srv->sweeping)) {
        usleep(250000);
        int64_t now = mono_ms();
        int shut = 0;
        pthread_mutex_lock(&watch_mu);
        for (conn_watch *w = watch_head; w; w = w->next) {
            if (w->waiting_since && !w->shut && now - w->waiting_since > limit) {
                shutdown(w->fd, SHUT_RDWR);
                w->shut = true;
                shut++;
            }
        }
        pthread_mutex_unlock(&watch_mu);
        if (shut)
            log_warn("msg=\"closed connections that sent no complete request in time\" count=%d "
                     "timeout_ms=%lld",
                     shut, (long long)limit);
    }
    return NULL;
}

static atomic_bool server_healthy = true;
static pthread_mutex_t health_mu = PTHREAD_MUTEX_INITIALIZER;
static char health_reason[256];

bool http_server_healthy(void)
{
    return atomic_load(&server_healthy);
}

void http_server_set_healthy(bool ok)
{
    http_server_set_health(ok, NULL);
}

void http_server_set_health(bool ok, const char *reason)
{
    pthread_mutex_lock(&health_mu);
    snprintf(health_reason, sizeof health_reason, "%s", ok || !reason ? "" : reason);
    pthread_mutex_unlock(&health_mu);
    atomic_store(&server_healthy, ok);
}

void http_server_health_reason(char *out, size_t len)
{
    pthread_mutex_lock(&health_mu);
    snprintf(out, len, "%s", health_reason);
    pthread_mutex_unlock(&health_mu);
}

static http_method parse_method(const char *m)
{
    static const char *const names[] = {"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"};
    for (int i = 0; i < 6; i++)
        if (!strcmp(m, names[i])) return (http_method)i;
    return M_OTHER;
}

const char *http_client(http_req *r)
{
    if (r->client_str[0]) return r->client_str;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    char ip[INET6_ADDRSTRLEN];
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        snprintf(r->client_str, sizeof r->client_str, "%s:%u", ip, ntohs(in->sin_port));
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in->sin6_addr, ip, sizeof ip);
        snprintf(r->client_str, sizeof r->client_str, "[%s]:%u", ip, ntohs(in->sin6_port));
    }
    return r->client_str;
}

const char *http_header(http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *http_query(http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

bool http_query_has(http_req *r, const char *name)
{
    const char *v = NULL;
    size_t vl = 0;
    return MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name), &v,
                                         &vl) == MHD_YES;
}

typedef struct {
    const char *name;
    const char **out;
    size_t max, n;
} query_iter;

static enum MHD_Result collect_query(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void)kind;
    query_iter *it = cls;
    if (value && !strcmp(key, it->name) && it->n < it->max) it->out[it->n++] = value;
    return MHD_YES;
}

size_t http_query_all(http_req *r, const char *name, const char **out, size_t max)
{
    query_iter it = {name, out, max, 0};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, collect_query, &it);
    return it.n;
}

static void set_response(http_req *r, struct MHD_Response *resp, int status, const char *ct,
                         uint64_t len)
{
    if (r->bigsend) {
        bigsend_forget(r->bigsend_file, r->bigsend_sock);
        r->bigsend = false;
    }
    if (r->resp) MHD_destroy_response(r->resp);
    r->resp = resp;
    r->status = status;
    r->resp_bytes = len;
    r->failed = true; /* a response exists: further body bytes are not for the handler */
    if (!resp) return;
    if (ct) MHD_add_response_header(resp, "Content-Type", ct);
    MHD_add_response_header(resp, "Docker-Distribution-API-Version", "registry/2.0");
    if (r->mirror) MHD_add_response_header(resp, "OCI-Namespace", r->mirror->name);
    for (size_t i = 0; i < r->cfg->nheaders; i++)
        MHD_add_response_header(resp, r->cfg->headers[i].name, r->cfg->headers[i].value);
}

int http_reply(http_req *r, int status, const char *ct, const char *body, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)(body ? body : ""), MHD_RESPMEM_MUST_COPY);
    if (!resp) return berr_set(BERR_INTERNAL, "cannot create response");
    set_response(r, resp, status, ct, len);
    return 0;
}

static_assert(sizeof(http_iovec) == sizeof(struct MHD_IoVec) &&
                  offsetof(http_iovec, base) == offsetof(struct MHD_IoVec, iov_base) &&
                  offsetof(http_iovec, len) == offsetof(struct MHD_IoVec, iov_len),
              "http_iovec has the layout of struct MHD_IoVec");

int http_reply_iov(http_req *r, int status, const char *ct, const http_iovec *iov, unsigned int n,
                   uint64_t len, void (*release)(void *), void *cls)
{
    struct MHD_Response *resp =
        MHD_create_response_from_iovec((const struct MHD_IoVec *)iov, n, release, cls);
    if (!resp) {
        release(cls);
        return berr_set(BERR_INTERNAL, "cannot create response");
    }
    set_response(r, resp, status, ct, len);
    return 0;
}

int http_reply_owned(http_req *r, int status, const char *ct, char *body, size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return berr_set(BERR_INTERNAL, "cannot create response");
    }
    set_response(r, resp, status, ct, len);
    return 0;
}

int http_reply_fd(http_req *r, int status, int fd, uint64_t off, uint64_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_fd_at_offset64(len, fd, off);
    if (!resp) {
        close(fd);
        return berr_set(BERR_INTERNAL, "cannot create response");
    }
    set_response(r, resp, status, NULL, len);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) {
        r->bigsend = true;
        r->bigsend_file = fd;
        r->bigsend_sock = ci->connect_fd;
        bigsend_allow(fd, ci->connect_fd, off, off + len);
    }
    return 0;
}

int http_reply_stream(http_req *r, int status, uint64_t size, http_reader reader, void *cls,
                      void (*free_cb)(void *cls))
{
    struct MHD_Response *resp =
        MHD_create_response_from_callback(size, 256 * 1024, reader, cls, free_cb);
    if (!resp) {
        free_cb(cls);
        return berr_set(BERR_INTERNAL, "cannot create response");
    }
    set_response(r, resp, status, NULL, size);
    return 0;
}

/* JSON string escaping for error messages (ASCII control characters and quotes). */
static size_t json_escape(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n] = '\0';
    return n;
}

int http_reply_error(http_req *r, int rc)
{
    berr code = (berr)(rc < 0 ? -rc : BERR_INTERNAL);
    if (code <= 0 || code >= BERR__COUNT) code = BERR_INTERNAL;
    int status = berr_http_status(code);
    const char *msg = berr_msg();
    if (!*msg) msg = berr_code_name(code);
    if (status >= 500) {
        char path[600];
        log_error("msg=\"request failed\" method=%s path=\"%s\" err=\"%s\"", r->method_str,
                  log_value(r->path, path, sizeof path), msg);
    }
    char esc[1200], body[1500];
    json_escape(esc, sizeof esc, msg);
    char challenge[1200] = "";
    const http_auth_hooks *auth = r->srv ? r->srv->site.auth : NULL;
    if (code == BERR_UNAUTHORIZED && auth) auth->challenge(r, challenge, sizeof challenge);
    if (r->plain_errors) {
        int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}\n", esc);
        int ret = http_reply(r, status, "application/json", body, (size_t)n);
        if (ret == 0 && code == BERR_UNAUTHORIZED)
            http_add_header(r, "WWW-Authenticate", challenge);
        if (ret == 0 && code == BERR_TOOMANYREQUESTS && r->retry_after > 0)
            http_add_headerf(r, "Retry-After", "%ld", r->retry_after);
        return ret;
    }
    int n = snprintf(body, sizeof body,
                     "{\"errors\":[{\"code\":\"%s\",\"message\":\"%s\",\"detail\":null}]}\n",
                     berr_code_name(code), esc);
    int ret = http_reply(r, status, "application/json", body, (size_t)n);
    if (ret == 0 && status == 405) {
        http_add_header(r, "Allow", r->h ? "GET, HEAD, PUT, POST, PATCH, DELETE" : "GET, HEAD");
    }
    if (ret == 0 && code == BERR_UNAUTHORIZED) http_add_header(r, "WWW-Authenticate", challenge);
    if (ret == 0 && code == BERR_TOOMANYREQUESTS && r->retry_after > 0)
        http_add_headerf(r, "Retry-After", "%ld", r->retry_after);
    return ret;
}

void http_add_header(http_req *r, const char *name, const char *value)
{
    if (r->resp) MHD_add_response_header(r->resp, name, value);
}

void http_add_headerf(http_req *r, const char *name, const char *fmt, ...)
{
    char v[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v, sizeof v, fmt, ap);
    va_end(ap);
    http_add_header(r, name, v);
}

/* Bytes of request body still to come, or UINT64_MAX when unknown (chunked). */
static uint64_t body_remaining(http_req *r)
{
    const char *te = http_header(r, "Transfer-Encoding");
    if (te && strcasecmp(te, "identity") != 0) return UINT64_MAX;
    const char *cl = http_header(r, "Content-Length");
    if (!cl) return 0;
    uint64_t total = strtoull(cl, NULL, 10);
    return total > r->body_bytes ? total - r->body_bytes : 0;
}

static enum MHD_Result queue(http_req *r)
{
    if (!r->resp) http_reply_error(r, berr_set(BERR_INTERNAL, "handler produced no response"));
    if (!r->resp) return MHD_NO;
    enum MHD_Result ok = MHD_queue_response(r->conn, (unsigned)r->status, r->resp);
    MHD_destroy_response(r->resp);
    r->resp = NULL;
    return ok;
}

static void fail(http_req *r, int rc)
{
    if (!r->resp) http_reply_error(r, rc);
    r->failed = true;
}

static void *worker(void *arg);

/* The server this process runs (for the metrics gauges). */
static http_server *_Atomic current;

int64_t http_server_in_flight(void)
{
    http_server *srv = atomic_load(&current);
    return srv ? atomic_load(&srv->inflight) : 0;
}

int64_t http_server_queue_depth(void)
{
    http_server *srv = atomic_load(&current);
    if (!srv) return 0;
    pthread_mutex_lock(&srv->mu);
    int64_t n = (int64_t)srv->qlen;
    pthread_mutex_unlock(&srv->mu);
    return n;
}

/* The route table's line for a router's endpoint and the request's method, or NULL (405). */
static const http_route *route_find(const http_req *r, const http_router *rt, int endpoint)
{
    const http_site *site = &r->srv->site;
    unsigned m = 1u << r->method;
    if (r->cfg->read_only && r->method != M_GET && r->method != M_HEAD) return NULL;
    for (size_t i = 0; i < site->nroutes; i++) {
        const http_route *e = &site->routes[i];
        if (e->router == rt && e->endpoint == endpoint && (e->methods & m) &&
            (!(e->flags & HTTP_IF_DELETE) || r->cfg->delete_enabled))
            return e;
    }
    return NULL;
}

/* Routes the request: r->route and r->h set (both NULL: 405), or a negative berr (404 for a
 * path no router knows). */
static int route(http_req *r)
{
    const http_site *site = &r->srv->site;
    for (size_t i = 0; i < site->nrouters; i++) {
        const http_router *rt = site->routers[i];
        int endpoint = -1;
        int rc = rt->match(r, &endpoint);
        if (rc == 0) continue;
        r->plain_errors = rt->plain_errors;
        if (rc < 0) return rc;
        r->route = route_find(r, rt, endpoint);
        r->h = r->route ? r->route->h : NULL;
        return r->route && rt->prepare ? rt->prepare(r, r->route) : 0;
    }
    return berr_set(BERR_NOT_FOUND, "no such endpoint");
}

/* With the sign-in's verdict (identify's, or identify_slow's on a worker): checks the route's
 * access, then runs the handler's begin(). */
static void admit(http_req *r, int verdict)
{
    const http_auth_hooks *auth = r->srv->site.auth;
    int rc = verdict;
    if (rc >= 0 && r->route && auth) rc = auth->check(r, r->route->access, r->route->action);
    if (rc < 0) {
        fail(r, rc);
    } else if (r->h) {
        if (r->srv->site.on_step) r->srv->site.on_step(r);
        rc = r->h->begin ? r->h->begin(r) : 0;
        r->started = true;
        if (rc < 0) fail(r, rc);
    } else {
        fail(r, berr_set(BERR_METHOD, "method not allowed"));
    }
}

/* Whether the request's body is written by workers (data() may block on the store). */
static bool data_on_worker(const http_req *r)
{
    return r->h->body_io && (store_caps(r->store) & STORE_CAP_BLOCKING);
}

/* Whether the request's end() runs on a worker (it may block). One place, per request. A body
 * still spooled is written first, on the same worker. */
static bool end_on_worker(const http_req *r)
{
    return r->h->offload || r->spooled > 0 ||
           (r->h->store_io && (store_caps(r->store) & STORE_CAP_BLOCKING));
}

/* On a worker, the connection suspended: hands the spooled body to data(), in arrival order
 * (the loop appends nothing while a worker drains); 0 or data()'s error. */
static int drain(http_req *r)
{
    size_t n = r->spooled;
    r->spooled = 0;
    return n > 0 && !r->failed ? r->h->data(r, r->spool, n) : 0;
}

/* On the event loop: appends a piece of body to the spool; true when it is full (to drain). */
static bool spool_add(http_req *r, const char *data, size_t n)
{
    if (r->spooled + n > r->spool_cap) {
        size_t cap = r->spooled + n > HTTP_SPOOL ? r->spooled + n : HTTP_SPOOL;
        char *s = realloc(r->spool, cap);
        if (!s) {
            fail(r, berr_set(BERR_INTERNAL, "out of memory"));
            return false;
        }
        r->spool = s;
        r->spool_cap = cap;
    }
    memcpy(r->spool + r->spooled, data, n);
    r->spooled += n;
    return r->spooled >= HTTP_SPOOL;
}

static void offload(http_server *srv, http_req *r)
{
    pthread_mutex_lock(&srv->mu);
    if (srv->qlen == srv->qcap) {
        size_t cap = srv->qcap ? srv->qcap * 2 : 64;
        http_req **q = malloc(cap * sizeof *q);
        if (!q) abort();
        for (size_t i = 0; i < srv->qlen; i++)
            q[i] = srv->queue[(srv->qhead + i) % srv->qcap];
        free(srv->queue);
        srv->queue = q;
        srv->qcap = cap;
        srv->qhead = 0;
    }
    srv->queue[(srv->qhead + srv->qlen++) % srv->qcap] = r;
    if ((size_t)srv->nidle < srv->qlen && srv->nworkers < WORKERS &&
        pthread_create(&srv->workers[srv->nworkers], NULL, worker, srv) == 0)
        srv->nworkers++;
    pthread_cond_signal(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

/* Set once the server stops: a request parked then is gone with its daemon, not requeued. */
static atomic_bool requeue_closed;

void http_req_requeue(http_req *r)
{
    if (!atomic_load(&requeue_closed)) offload(r->srv, r);
}

static void *worker(void *arg)
{
    http_server *srv = arg;
    for (;;) {
        pthread_mutex_lock(&srv->mu);
        while (srv->qlen == 0 && !srv->stopping) {
            srv->nidle++;
            pthread_cond_wait(&srv->cv, &srv->mu);
            srv->nidle--;
        }
        if (srv->qlen == 0) {
            pthread_mutex_unlock(&srv->mu);
            return NULL;
        }
        http_req *r = srv->queue[srv->qhead];
        srv->qhead = (srv->qhead + 1) % srv->qcap;
        srv->qlen--;
        pthread_mutex_unlock(&srv->mu);
        berr_clear();
        if (r->admitting) {
            admit(r, r->verdict == HTTP_AUTH_SLOW ? srv->site.auth->identify_slow(r) : r->verdict);
        } else if (r->draining) { /* a full spool: the loop reads on once it is written */
            if (srv->site.on_step) srv->site.on_step(r);
            int rc = drain(r);
            if (rc < 0) fail(r, rc);
            r->draining = false;
        } else {
            r->on_worker = true;
            if (srv->site.on_step) srv->site.on_step(r);
            int rc = drain(r); /* the body's rest (body_io), before end() */
            if (rc == 0) rc = r->h->end(r);
            if (rc == HTTP_PARKED) continue; /* r belongs to whoever requeues it now */
            if (rc < 0) fail(r, rc);
        }
        MHD_resume_connection(r->conn);
    }
}

/* http.tls.clientcas: the client showed a certificate that chains to one of the CAs (GnuTLS
 * checks the chain, validity and signature); else the request is refused. */
static int client_cert_check(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    gnutls_session_t session = ci ? (gnutls_session_t)ci->tls_session : NULL;
    unsigned int status = 0, n = 0;
    if (!session || !gnutls_certificate_get_peers(session, &n) || n == 0)
        return berr_set(BERR_DENIED, "a client certificate is required");
    if (gnutls_certificate_verify_peers2(session, &status) != GNUTLS_E_SUCCESS || status != 0)
        return berr_set(BERR_DENIED, "client certificate not trusted");
    return 0;
}

/* An error found with the headers, with more than this much body announced, is answered at
 * once (the connection then closes) instead of reading the body to discard it. */
#define DISCARD_LIMIT (1u << 20)

/* A refused sign-in or access is answered at once, whatever body follows: a caller who may not
 * write gets no connection held open while it sends. */
static uint64_t discard_limit(const http_req *r)
{
    return r->status == 401 || r->status == 403 ? 0 : DISCARD_LIMIT;
}

static enum MHD_Result ahc(void *cls, struct MHD_Connection *conn, const char *url,
                           const char *method, const char *version, const char *upload_data,
                           size_t *upload_data_size, void **con_cls)
{
    (void)version;
    http_server *srv = cls;
    http_req *r = *con_cls;
    if (!r) return MHD_NO; /* uri_cb allocates every request */
    if (!r->initialized) {
        r->initialized = true;
        if (srv->cfg->header_timeout_ms > 0) watch_set(conn, 0);
        r->conn = conn;
        r->srv = srv;
        r->cfg = srv->cfg;
        r->store = srv->st;
        r->method_str = method;
        r->method = parse_method(method);
        r->path = strdup(url);
        r->status = 0;
        *con_cls = r;
        atomic_fetch_add(&srv->inflight, 1);
        berr_clear();
        if (!r->path) return MHD_NO;
        int arc;
        const union MHD_ConnectionInfo *ca =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if ((arc = limits_admit(r, ca ? ca->client_addr : NULL)) < 0)
            fail(r, arc);
        else if (srv->tls_trust && (arc = client_cert_check(conn)) < 0)
            fail(r, arc);
        else if ((arc = route(r)) < 0)
            fail(r, arc);
        else {
            const http_auth_hooks *auth = srv->site.auth;
            int verdict = auth ? auth->identify(r) : 0;
            if (verdict == HTTP_AUTH_SLOW || (verdict == 0 && r->h && data_on_worker(r))) {
                /* a password to check (milliseconds by design), or a session to open in a store
                 * that blocks: on a worker, so the event loop never waits on it; the connection
                 * resumes with the verdict */
                r->admitting = true;
                r->verdict = verdict;
                MHD_suspend_connection(conn);
                offload(srv, r);
                return MHD_YES;
            }
            admit(r, verdict);
        }
        if (r->failed && body_remaining(r) > discard_limit(r)) return queue(r);
        return MHD_YES;
    }
    if (r->admitting) { /* resumed after admission on a worker: the first call comes again */
        r->admitting = false;
        if (*upload_data_size == 0) {
            if (r->failed && body_remaining(r) > discard_limit(r)) return queue(r);
            return MHD_YES;
        }
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        r->body_bytes += n;
        if (!r->failed && r->h && r->h->data && data_on_worker(r)) {
            /* the store blocks: the loop only gathers; a worker writes each full spool while
             * the connection is suspended, so no more is read until it is written */
            if (spool_add(r, upload_data, n)) {
                r->draining = true;
                MHD_suspend_connection(conn);
                offload(srv, r);
            }
        } else if (!r->failed && r->h && r->h->data) {
            int rc = r->h->data(r, upload_data, n);
            /* libmicrohttpd accepts a response only before or after the body: an error found
             * mid-body is answered once the rest has been read and discarded */
            if (rc < 0) fail(r, rc);
        }
        return MHD_YES;
    }
    if (r->offloaded) return queue(r); /* resumed by the worker that ran end() */
    if (!r->failed && r->h && r->h->end) {
        bool worker = end_on_worker(r);
        if (!worker && srv->site.on_step) srv->site.on_step(r);
        int rc = worker ? HTTP_OFFLOAD : r->h->end(r);
        if (rc == HTTP_OFFLOAD) {
            r->offloaded = true;
            MHD_suspend_connection(conn);
            offload(srv, r);
            return MHD_YES;
        }
        if (rc < 0) fail(r, rc);
    }
    return queue(r);
}

/* Sees the raw request target before libmicrohttpd decodes it: names and references never
 * contain escapes, so a path that needed them (%2F, %2e...) is refused by the router. */
static void *uri_cb(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)conn;
    http_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    clock_gettime(CLOCK_MONOTONIC, &r->start);
    for (const char *p = uri; *p && *p != '?'; p++)
        if (*p == '%' && !(p[1] == '3' && (p[2] == 'A' || p[2] == 'a'))) r->raw_escaped = true;
    return r;
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    http_server *srv = cls;
    http_req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    if (!r->initialized) { /* the request never reached the handler */
        free(r);
        return;
    }
    if (srv->cfg->header_timeout_ms > 0) watch_set(conn, mono_ms());
    if (r->h && r->h->cleanup) r->h->cleanup(r);
    limits_done(r);
    if (srv->site.auth) srv->site.auth->done(r);
    if (r->bigsend) bigsend_forget(r->bigsend_file, r->bigsend_sock);
    if (r->resp) MHD_destroy_response(r->resp);
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    char path[600];
    double ms = (double)(end.tv_sec - r->start.tv_sec) * 1e3 +
                (double)(end.tv_nsec - r->start.tv_nsec) / 1e6;
    metrics_request(r->path, r->method_str, r->status, ms / 1e3);
    metrics_add(METRIC_BYTES_IN, r->body_bytes);
    if (r->method != M_HEAD) metrics_add(METRIC_BYTES_OUT, r->resp_bytes);
    log_level lvl = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? LOG_INFO : LOG_WARN;
    if (lvl <= log_get_level()) /* the path is escaped only for a line that is written */
        log_msg(lvl,
                "msg=request method=%s path=\"%s\" status=%d bytes_in=%llu bytes_out=%llu "
                "duration_ms=%.3f%s",
                r->method_str, log_value(r->path ? r->path : "", path, sizeof path), r->status,
                (unsigned long long)r->body_bytes,
                (unsigned long long)(r->method == M_HEAD ? 0 : r->resp_bytes), ms,
                toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " aborted=true");
    free(r->path);
    free(r->spool);
    free(r);
    atomic_fetch_sub(&srv->inflight, 1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    buf[strcspn(buf, "\n")] = '\0';
    log_debug("msg=\"http: %s\"", buf);
}

/* "host:port", ":port", "[v6]:port" -> sockaddr. */
int http_parse_addr(const char *addr, struct sockaddr_storage *ss, unsigned *len)
{
    char host[256] = "";
    const char *port;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':')
            return berr_set(BERR_CONFIG, "http.addr: bad address %s", addr);
        snprintf(host, sizeof host, "%.*s", (int)(close - addr - 1), addr + 1);
        port = close + 2;
    } else {
        const char *colon = strrchr(addr, ':');
        if (!colon) return berr_set(BERR_CONFIG, "http.addr: expected host:port, got %s", addr);
        snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
        port = colon + 1;
    }
    /* an address literal (or none: every IPv4 address) needs no resolver, whose code (NSS,
     * /etc/hosts, gai.conf) would otherwise stay mapped for the life of the server */
    char *end = NULL;
    errno = 0;
    long pn = strtol(port, &end, 10);
    bool numeric_port = *port && !*end && errno == 0 && pn >= 0 && pn <= 65535;
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof *ss);
    if (numeric_port && (!*host || inet_pton(AF_INET, host, &in4->sin_addr) == 1)) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)pn);
        *len = sizeof *in4;
        return 0;
    }
    if (numeric_port && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)pn);
        *len = sizeof *in6;
        return 0;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (!*host) hints.ai_family = AF_INET;
    int e = getaddrinfo(*host ? host : NULL, port, &hints, &res);
    if (e != 0 || !res)
        return berr_set(BERR_CONFIG, "http.addr: cannot resolve %s: %s", addr, gai_strerror(e));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static void stop_workers(http_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    srv->stopping = true;
    pthread_cond_broadcast(&srv->cv);
    int n = srv->nworkers;
    pthread_mutex_unlock(&srv->mu);
    for (int i = 0; i < n; i++)
        pthread_join(srv->workers[i], NULL);
    free(srv->queue);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cv);
}

int http_server_start(http_server **out, const config *cfg, store *st, const http_site *site)
{
    http_server *srv = calloc(1, sizeof *srv);
    current = srv;
    if (!srv) return berr_set(BERR_INTERNAL, "out of memory");
    srv->cfg = cfg;
    srv->st = st;
    srv->site = *site;
    struct sockaddr_storage ss;
    unsigned sslen;
    int rc = http_parse_addr(cfg->addr, &ss, &sslen);
    if (rc < 0) {
        free(srv);
        return rc;
    }
    unsigned flags = MHD_USE_ERROR_LOG | MHD_USE_ITC | MHD_USE_EPOLL_INTERNAL_THREAD |
                     MHD_USE_TURBO | MHD_ALLOW_SUSPEND_RESUME;
    unsigned pool = cfg->threads > 1 ? (unsigned)cfg->threads : 0;
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);
    if (ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    if (cfg->tls_cert && (rc = tlslazy_load()) < 0) {
        free(srv);
        return rc;
    }
    if (cfg->tls_cert) {
        srv->tls_cert = file_read_all(cfg->tls_cert, NULL);
        srv->tls_key = file_read_all(cfg->tls_key, NULL);
        if (!srv->tls_cert || !srv->tls_key) {
            free(srv->tls_cert);
            free(srv->tls_key);
            free(srv);
            return berr_set(BERR_CONFIG, "http.tls: cannot read %s or %s", cfg->tls_cert,
                            cfg->tls_key);
        }
        for (size_t i = 0; i < cfg->ntls_clientcas; i++) {
            char *ca = file_read_all(cfg->tls_clientcas[i], NULL);
            if (!ca) {
                free(srv->tls_cert);
                free(srv->tls_key);
                free(srv->tls_trust);
                free(srv);
                return berr_set(BERR_CONFIG, "http.tls.clientcas: cannot read %s",
                                cfg->tls_clientcas[i]);
            }
            size_t have = srv->tls_trust ? strlen(srv->tls_trust) : 0;
            char *all = realloc(srv->tls_trust, have + strlen(ca) + 2);
            if (!all) abort();
            snprintf(all + have, strlen(ca) + 2, "%s\n", ca);
            srv->tls_trust = all;
            free(ca);
        }
        flags |= MHD_USE_TLS;
    }
    struct MHD_OptionItem tls_opts[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, srv->tls_cert},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, srv->tls_key},
        {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"},
        /* with clientcas, clients are asked for a certificate (checked per request: ahc) */
        {srv->tls_trust ? MHD_OPTION_HTTPS_MEM_TRUST : MHD_OPTION_END, 0, srv->tls_trust},
        {MHD_OPTION_END, 0, NULL},
    };
    struct MHD_OptionItem no_opts[] = {{MHD_OPTION_END, 0, NULL}};
    srv->d = MHD_start_daemon(
        flags, 0, NULL, NULL, ahc, srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_NOTIFY_COMPLETED, completed, srv, MHD_OPTION_URI_LOG_CALLBACK, uri_cb, srv,
        MHD_OPTION_NOTIFY_CONNECTION, notify_conn, srv, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)CONN_POOL, MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->connection_limit,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->connections_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_THREAD_POOL_SIZE, pool, MHD_OPTION_ARRAY, cfg->tls_cert ? tls_opts : no_opts,
        MHD_OPTION_END);
    if (!srv->d) {
        int e = errno;
        stop_workers(srv);
        free(srv->tls_cert);
        free(srv->tls_key);
        free(srv);
        return berr_set(BERR_CONFIG, "cannot listen on %s: %s", cfg->addr, strerror(e));
    }
    if (cfg->header_timeout_ms > 0) {
        atomic_store(&srv->sweeping, true);
        pthread_create(&srv->sweeper, NULL, sweeper, srv);
    }
    *out = srv;
    return 0;
}

void http_server_stop(http_server *srv, int grace_s)
{
    if (!srv) return;
    http_server *me = srv;
    atomic_compare_exchange_strong(&current, &me, NULL);
    MHD_quiesce_daemon(srv->d);
    for (int i = 0; i < grace_s * 20 && atomic_load(&srv->inflight) > 0; i++)
        usleep(50000);
    if (atomic_load(&srv->inflight) > 0)
        log_warn("msg=\"shutdown: requests still in flight after grace period\" count=%d",
                 atomic_load(&srv->inflight));
    atomic_store(&requeue_closed, true);
    MHD_stop_daemon(srv->d);
    if (atomic_load(&srv->sweeping)) {
        atomic_store(&srv->sweeping, false);
        pthread_join(srv->sweeper, NULL);
    }
    stop_workers(srv);
    free(srv->tls_cert);
    free(srv->tls_key);
    free(srv->tls_trust);
    free(srv);
}
