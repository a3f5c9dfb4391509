/*
 * fill: one fill per key, streamed to every client while it fills (see fill.h).
 *
 * Invariants: a fill is in `fills` from fill_join until its thread ends, so a key has at most
 * one running fill in this process; a reader never reads past `written` (bytes the upload holds)
 * and never past size - 1 until the content is verified or committed; every request parked on a
 * fill is requeued exactly once, when the first bytes land or the fill ends; every suspended
 * reader is resumed when more bytes land or the fill ends. A fill's memory is freed when its last
 * reference (the thread's, each client's, each parked request's) is dropped. State is guarded by
 * one mutex: fills are few and the critical sections short.
 */
#include "proxy/fill.h"
#include "util/err.h"
#include "util/log.h"
#include "util/metrics.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef enum { FILL_STARTING, FILL_STREAMING, FILL_DONE, FILL_FAILED } fill_state;

/* readers are woken in steps, not per write: each wake costs a resume and a send */
#define WAKE_STEP (1u << 20)
/* How long a fill's lease lasts unless renewed. The holder renews it every third of that on a
 * thread of its own for as long as the fill runs, whether or not bytes arrive (a slow or stalled
 * upstream keeps its one fetch); a holder that dies (SIGKILL, a lost machine) stops renewing, and
 * another berth takes the lease over within FILL_LEASE_MS. */
#define FILL_LEASE_MS 6000

typedef struct waiter {
    struct MHD_Connection *conn;
    struct waiter *next;
} waiter;

typedef struct parked {
    http_req *r;
    struct parked *next;
} parked;

struct fill {
    char key[700], name[128];
    bool metrics;
    uint64_t limit, stream_min;
    store *st;
    fill_ops ops;
    void *arg;
    fill_state state;
    int rc;
    char err[256]; /* the failure's detail, for every client of the fill */
    int64_t size;  /* from the upstream's Content-Length, -1 when unknown */
    uint64_t written;
    uint64_t woken; /* written, as of the last wake */
    bool verified;  /* all size bytes are there and known good: readers may finish */
    bool leased;
    char lease_key[800], lease_owner[160];
    pthread_t renewer; /* renews the lease while leased (joined when the fill ends) */
    bool lease_end;    /* tells the renewer to stop (under fill_mu) */
    pthread_cond_t lease_cv;
    uint64_t skip; /* bytes of a whole-content answer to a resume that are already written */
    store_upload *u;
    upstream_resp resp;
    int refs;
    waiter *waiters;
    parked *parked; /* requests waiting for the first bytes (or the end) */
    struct fill *next;
};

static pthread_mutex_t fill_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fill_cv = PTHREAD_COND_INITIALIZER;
static fill *fills;

/* Requeues each request of a detached list (called without locks held). */
static void requeue_all(parked *p)
{
    while (p) {
        parked *n = p->next;
        http_req_requeue(p->r);
        free(p);
        p = n;
    }
}

/* Called with fill_mu held. */
static void wake_readers(fill *f)
{
    while (f->waiters) {
        waiter *w = f->waiters;
        f->waiters = w->next;
        MHD_resume_connection(w->conn);
        free(w);
    }
}

/* Called with fill_mu held. */
static void release_locked(fill *f)
{
    if (--f->refs > 0) return;
    upstream_resp_free(&f->resp);
    free(f);
}

void fill_release(fill *f)
{
    pthread_mutex_lock(&fill_mu);
    release_locked(f);
    pthread_mutex_unlock(&fill_mu);
}

int fill_upload_open(fill *f, const char *repo, digest_algo algo)
{
    char uuid[STORE_UUID_LEN + 1];
    store_upload *u = NULL;
    int rc = store_upload_create(f->st, repo, algo, uuid);
    if (rc == 0) rc = store_upload_open(f->st, repo, uuid, &u);
    if (rc == 0) rc = store_upload_spool(u); /* S3: readers stream a local copy of the fill */
    if (rc < 0 && u) store_upload_close(u);
    if (rc == 0) f->u = u;
    return rc;
}

store_upload *fill_upload(fill *f)
{
    return f->u;
}

upstream_resp *fill_resp(fill *f)
{
    return &f->resp;
}

int64_t fill_size(const fill *f)
{
    return f->size;
}

void fill_skip(fill *f, uint64_t n)
{
    f->skip = n;
}

int fill_sink(void *arg, const char *data, size_t len)
{
    fill *f = arg;
    if (f->metrics) metrics_upstream(f->name, len, true);
    if (f->skip > 0 && f->resp.range_start < 0) { /* a resume answered with the whole content */
        size_t n = f->skip < len ? (size_t)f->skip : len;
        f->skip -= n;
        data += n;
        len -= n;
        if (len == 0) return 0;
    }
    if (f->limit && store_upload_size(f->u) + len > f->limit)
        return berr_set(BERR_TOO_LARGE, "%s: content larger than %llu bytes", f->name,
                        (unsigned long long)f->limit);
    int rc = store_upload_write(f->u, data, len);
    if (rc < 0) {
        log_error("msg=\"writing a fill failed\" upstream=%s key=\"%s\" err=\"%s\"", f->name,
                  f->key, berr_msg());
        return rc;
    }
    uint64_t written = store_upload_written(f->u); /* readers follow the file */
    parked *wake = NULL;
    pthread_mutex_lock(&fill_mu);
    if (f->state == FILL_STARTING && f->size < 0) f->size = f->resp.content_length;
    if (f->state == FILL_STARTING && written >= f->stream_min) {
        f->state = FILL_STREAMING;
        pthread_cond_broadcast(&fill_cv);
        wake = f->parked;
        f->parked = NULL;
    }
    f->written = written;
    if (f->written - f->woken >= WAKE_STEP) {
        f->woken = f->written;
        wake_readers(f);
    }
    pthread_mutex_unlock(&fill_mu);
    requeue_all(wake);
    return 0;
}

void fill_verified(fill *f)
{
    uint64_t written = store_upload_written(f->u); /* the digest wrote the last bytes */
    pthread_mutex_lock(&fill_mu);
    f->written = written;
    if (f->size > 0 && f->written == (uint64_t)f->size) {
        f->verified = true;
        wake_readers(f);
    }
    pthread_mutex_unlock(&fill_mu);
}

/* The lease holder's renewer: takes the lease again every FILL_LEASE_MS / 3 until the fill ends. */
static void *lease_renew(void *arg)
{
    fill *f = arg;
    pthread_mutex_lock(&fill_mu);
    while (!f->lease_end) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (int64_t)(FILL_LEASE_MS / 3) * 1000000;
        ts.tv_sec += (time_t)(ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&f->lease_cv, &fill_mu, &ts);
        if (f->lease_end) break;
        pthread_mutex_unlock(&fill_mu);
        if (store_lease_take(f->st, f->lease_key, f->lease_owner, FILL_LEASE_MS) < 0) {
            log_warn("msg=\"cannot renew a fill's lease\" upstream=%s key=\"%s\" err=\"%s\"",
                     f->name, f->key, berr_msg());
            berr_clear();
        }
        pthread_mutex_lock(&fill_mu);
    }
    pthread_mutex_unlock(&fill_mu);
    return NULL;
}

int fill_lease(fill *f, const char *lease_key, int64_t deadline, int (*present)(void *arg),
               void *arg)
{
    if (f->leased) return 0; /* one lease (and one renewer) per fill */
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    snprintf(f->lease_key, sizeof f->lease_key, "%s", lease_key);
    snprintf(f->lease_owner, sizeof f->lease_owner, "%s %d fill %p", host, (int)getpid(),
             (void *)f);
    for (;;) {
        if (present(arg)) return 1; /* another berth committed it */
        int lrc = store_lease_take(f->st, f->lease_key, f->lease_owner, FILL_LEASE_MS);
        if (lrc == 0 && present(arg)) { /* committed between the check and the lease */
            store_lease_drop(f->st, f->lease_key, f->lease_owner);
            return 1;
        }
        if (lrc == 0) {
            pthread_cond_init(&f->lease_cv, NULL);
            if (pthread_create(&f->renewer, NULL, lease_renew, f) != 0) {
                pthread_cond_destroy(&f->lease_cv); /* no renewer: the lease may lapse */
                log_warn("msg=\"cannot start a fill's lease renewer\" key=\"%s\"", f->key);
                return 0;
            }
            f->leased = true;
            return 0;
        }
        if (lrc != -BERR_CONFLICT) return 0; /* the metadata cannot say: fetch anyway */
        if (store_now() > deadline)
            return berr_set(BERR_UNAVAILABLE, "another berth's fill of %s did not finish", f->key);
        usleep(100 * 1000);
    }
}

static void *fill_main(void *arg)
{
    fill *f = arg;
    berr_clear();
    int rc = f->ops.run(f, f->arg);
    char msg[256];
    snprintf(msg, sizeof msg, "%s", berr_msg());
    if (rc < 0 && rc != -BERR_BLOB_UNKNOWN && rc != -BERR_NOT_FOUND && f->metrics)
        metrics_upstream(f->name, 0, false);
    if (f->leased) {
        pthread_mutex_lock(&fill_mu);
        f->lease_end = true;
        pthread_cond_signal(&f->lease_cv);
        pthread_mutex_unlock(&fill_mu);
        pthread_join(f->renewer, NULL);
        pthread_cond_destroy(&f->lease_cv);
        store_lease_drop(f->st, f->lease_key, f->lease_owner);
    }
    if (f->u) store_upload_close(f->u);
    if (f->ops.free) f->ops.free(f->arg);
    pthread_mutex_lock(&fill_mu);
    f->u = NULL;
    f->arg = NULL;
    f->state = rc == 0 ? FILL_DONE : FILL_FAILED;
    f->rc = rc;
    snprintf(f->err, sizeof f->err, "%s", msg);
    for (fill **p = &fills; *p; p = &(*p)->next)
        if (*p == f) {
            *p = f->next;
            break;
        }
    wake_readers(f);
    parked *wake = f->parked;
    f->parked = NULL;
    pthread_cond_broadcast(&fill_cv);
    release_locked(f);
    pthread_mutex_unlock(&fill_mu);
    requeue_all(wake);
    return NULL;
}

fill *fill_join(const fill_spec *s)
{
    pthread_mutex_lock(&fill_mu);
    fill *f = fills;
    while (f && strcmp(f->key, s->key))
        f = f->next;
    if (f) {
        f->refs++;
        pthread_mutex_unlock(&fill_mu);
        if (s->ops.free) s->ops.free(s->arg);
        return f;
    }
    f = calloc(1, sizeof *f);
    if (!f) {
        pthread_mutex_unlock(&fill_mu);
        if (s->ops.free) s->ops.free(s->arg);
        return NULL;
    }
    snprintf(f->key, sizeof f->key, "%s", s->key);
    snprintf(f->name, sizeof f->name, "%s", s->name);
    f->metrics = s->metrics;
    f->limit = s->limit;
    f->stream_min = s->stream_min;
    f->st = s->st;
    f->ops = s->ops;
    f->arg = s->arg;
    f->size = -1;
    f->resp.range_start = -1;
    f->refs = 2; /* the fill thread's and the caller's */
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, fill_main, f) != 0) {
        pthread_attr_destroy(&attr);
        pthread_mutex_unlock(&fill_mu);
        if (s->ops.free) s->ops.free(s->arg);
        free(f);
        return NULL;
    }
    pthread_attr_destroy(&attr);
    f->next = fills;
    fills = f;
    pthread_mutex_unlock(&fill_mu);
    return f;
}

/* ---- serving a fill ---- */

typedef struct {
    fill *f;
    int fd;
    struct MHD_Connection *conn;
} stream_ctx;

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    stream_ctx *c = cls;
    fill *f = c->f;
    pthread_mutex_lock(&fill_mu);
    if (f->state == FILL_FAILED) {
        pthread_mutex_unlock(&fill_mu);
        return MHD_CONTENT_READER_END_WITH_ERROR; /* cut: the client must not take this as whole */
    }
    uint64_t limit = f->written;
    bool whole = f->state == FILL_DONE || f->verified;
    if (!whole && f->size > 0 && limit >= (uint64_t)f->size)
        limit = (uint64_t)f->size - 1; /* the last byte waits for the content's check */
    if (pos < limit) {
        pthread_mutex_unlock(&fill_mu);
        size_t want = limit - pos < max ? (size_t)(limit - pos) : max;
        ssize_t n = pread(c->fd, buf, want, (off_t)pos);
        return n > 0 ? n : MHD_CONTENT_READER_END_WITH_ERROR;
    }
    if (f->state == FILL_DONE || (f->verified && pos >= (uint64_t)f->size)) {
        pthread_mutex_unlock(&fill_mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    waiter *w = malloc(sizeof *w);
    if (!w) {
        pthread_mutex_unlock(&fill_mu);
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    w->conn = c->conn;
    w->next = f->waiters;
    f->waiters = w;
    MHD_suspend_connection(c->conn); /* the fill resumes it when more bytes land */
    pthread_mutex_unlock(&fill_mu);
    return 0;
}

static void stream_free(void *cls)
{
    stream_ctx *c = cls;
    if (c->fd >= 0) close(c->fd);
    fill_release(c->f);
    free(c);
}

/* Called with fill_mu held: a reader of the growing upload, or -1. */
static int reader_of(fill *f)
{
    if (f->state == FILL_STREAMING && f->size > 0 && f->u && store_upload_growing(f->u))
        return store_upload_reader(f->u);
    return -1;
}

int fill_serve(http_req *r, fill *f, const fill_serve_opts *o)
{
    pthread_mutex_lock(&fill_mu);
    int fd = reader_of(f);
    parked *p = NULL;
    if (f->state == FILL_STARTING || (f->state == FILL_STREAMING && fd < 0)) p = malloc(sizeof *p);
    if (p) { /* no worker waits for the upstream: the fill requeues r (not touched from here) */
        p->r = r;
        p->next = f->parked;
        f->parked = p;
        r->ctx = f;
        pthread_mutex_unlock(&fill_mu);
        return HTTP_PARKED;
    }
    while (f->state == FILL_STARTING)
        pthread_cond_wait(&fill_cv, &fill_mu);
    if (fd < 0) fd = reader_of(f);
    while (f->state == FILL_STREAMING && fd < 0)
        pthread_cond_wait(&fill_cv, &fill_mu);
    fill_state st = f->state;
    int rc = f->rc;
    char msg[256];
    snprintf(msg, sizeof msg, "%s", f->err);
    if (fd < 0) release_locked(f);
    pthread_mutex_unlock(&fill_mu);
    if (fd < 0) {
        if (st == FILL_DONE) return o->done(r);
        return berr_set((berr)-rc, "%s", msg);
    }
    stream_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        fill_release(f);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    c->f = f;
    c->fd = fd;
    c->conn = r->conn;
    rc = http_reply_stream(r, 200, (uint64_t)f->size, stream_read, c, stream_free);
    if (rc == 0) {
        http_add_header(r, "Content-Type", o->content_type);
        if (o->digest) http_add_header(r, "Docker-Content-Digest", o->digest);
    }
    return rc;
}

void fill_serve_cleanup(http_req *r)
{
    if (!r->ctx) return;
    fill_release(r->ctx);
    r->ctx = NULL;
}

int fill_wait(fill *f)
{
    pthread_mutex_lock(&fill_mu);
    while (f->state != FILL_DONE && f->state != FILL_FAILED)
        pthread_cond_wait(&fill_cv, &fill_mu);
    int rc = f->rc;
    char msg[256];
    snprintf(msg, sizeof msg, "%s", f->err);
    release_locked(f);
    pthread_mutex_unlock(&fill_mu);
    return rc < 0 ? berr_set((berr)-rc, "%s", msg) : 0;
}
