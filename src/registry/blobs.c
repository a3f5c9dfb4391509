/*
 * blobs: GET/HEAD (with RFC 9110 single byte ranges, served by sendfile from the blob file) and
 * DELETE of a repository's link to a blob. With storage.s3 a GET answers 307 to a presigned URL
 * (storage.redirect, registry:2's default), or streams the object through berth in ranged reads
 * of REMOTE_BLOCK bytes, one block ahead of the client (see remote_ctx). When the store says
 * its engines block (STORE_CAP_BLOCKING: S3, PostgreSQL), a GET runs on the worker pool, so a
 * slow bucket stalls only the requests that wait for it, never the event loop.
 */
#include "registry/httpparse.h"
#include "registry/registry.h"
#include "util/err.h"
#include "util/metrics.h"
#include "util/log.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REMOTE_BLOCK (4u << 20)

/* A blob streamed from object storage: a fetcher thread reads the range in REMOTE_BLOCK ranged
 * GETs into two buffers, one ahead of the one the client is taking, so the event loop never
 * waits on S3; when the client catches up its connection is suspended until the fetcher
 * resumes it. The context is freed by the last of the response and the fetcher. */
typedef struct {
    store_blob b;
    uint64_t start, len; /* the served range within the blob */
    struct MHD_Connection *conn;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *blk[2];
    uint64_t boff[2]; /* offsets in the range of each block's bytes */
    size_t blen[2];
    bool ready[2];
    int cur;           /* the block the client takes next */
    uint64_t next;     /* the next offset to fetch */
    bool suspended;    /* the client caught up and waits */
    bool failed;       /* a fetch failed: the response is cut */
    _Atomic bool stop; /* the response is gone */
    int refs;
} remote_ctx;

typedef struct {
    char *buf;
    size_t n, cap;
    remote_ctx *c;
} block_sink;

static int remote_sink(void *arg, const char *data, size_t len)
{
    block_sink *k = arg;
    if (k->c->stop || k->n + len > k->cap) return -1;
    memcpy(k->buf + k->n, data, len);
    k->n += len;
    return 0;
}

/* Fetches range bytes [off, off+want) into block i; 0 or a negative berr. */
static int fetch_block(remote_ctx *c, int i, uint64_t off, size_t want)
{
    block_sink k = {c->blk[i], 0, REMOTE_BLOCK, c};
    int rc = store_blob_read(&c->b, c->start + off, want, remote_sink, &k);
    if (rc == 0 && k.n != want)
        rc = berr_set(BERR_IO, "blob %s: short read from object storage", c->b.digest);
    if (rc == 0) {
        c->boff[i] = off;
        c->blen[i] = want;
    }
    return rc;
}

static void remote_unref(remote_ctx *c) /* with c->mu held; unlocks it */
{
    bool last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (!last) return;
    store_blob_release(&c->b);
    free(c->blk[0]);
    free(c->blk[1]);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

static void *remote_fetcher(void *arg)
{
    remote_ctx *c = arg;
    pthread_mutex_lock(&c->mu);
    for (int i = 1; !c->stop && !c->failed && c->next < c->len; i ^= 1) {
        while (!c->stop && c->ready[i])
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->stop) break;
        uint64_t off = c->next;
        size_t want = c->len - off < REMOTE_BLOCK ? (size_t)(c->len - off) : REMOTE_BLOCK;
        c->next += want;
        pthread_mutex_unlock(&c->mu);
        int rc = fetch_block(c, i, off, want);
        pthread_mutex_lock(&c->mu);
        if (rc < 0 && !c->stop) {
            log_error("msg=\"blob read from object storage failed\" digest=%s err=\"%s\"",
                      c->b.digest, berr_msg());
            c->failed = true;
        } else if (rc == 0) {
            c->ready[i] = true;
        }
        if (c->suspended) {
            c->suspended = false;
            MHD_resume_connection(c->conn);
        }
    }
    remote_unref(c);
    return NULL;
}

static ssize_t remote_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    remote_ctx *c = cls;
    if (pos >= c->len) return MHD_CONTENT_READER_END_OF_STREAM;
    pthread_mutex_lock(&c->mu);
    int i = c->cur;
    if (c->ready[i] && pos >= c->boff[i] && pos < c->boff[i] + c->blen[i]) {
        size_t n = (size_t)(c->boff[i] + c->blen[i] - pos);
        if (n > max) n = max;
        memcpy(buf, c->blk[i] + (pos - c->boff[i]), n);
        if (pos + n == c->boff[i] + c->blen[i]) { /* taken: the fetcher may refill it */
            c->ready[i] = false;
            c->cur ^= 1;
            pthread_cond_signal(&c->cv);
        }
        pthread_mutex_unlock(&c->mu);
        return (ssize_t)n;
    }
    if (c->failed) {
        pthread_mutex_unlock(&c->mu);
        return MHD_CONTENT_READER_END_WITH_ERROR; /* cut: never a short body taken as whole */
    }
    c->suspended = true;
    MHD_suspend_connection(c->conn); /* the fetcher resumes it when the block lands */
    pthread_mutex_unlock(&c->mu);
    return 0;
}

static void remote_free(void *cls)
{
    remote_ctx *c = cls;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_signal(&c->cv);
    remote_unref(c);
}

/* A blob kept in object storage, as a stream of ranged reads. */
static int reply_remote(http_req *r, store_blob *b, int status, uint64_t off, uint64_t len)
{
    remote_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        store_blob_release(b);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    c->b = *b;
    c->start = off;
    c->len = len;
    c->conn = r->conn;
    c->refs = 1;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (r->method == M_GET && len > 0) {
        c->blk[0] = malloc(REMOTE_BLOCK);
        c->blk[1] = len > REMOTE_BLOCK ? malloc(REMOTE_BLOCK) : NULL;
        int rc = !c->blk[0] || (len > REMOTE_BLOCK && !c->blk[1])
                     ? berr_set(BERR_INTERNAL, "out of memory")
                     : 0;
        /* the first block before the status: an unreachable store is a 503, not a cut body */
        size_t want = len < REMOTE_BLOCK ? (size_t)len : REMOTE_BLOCK;
        if (rc == 0) rc = fetch_block(c, 0, 0, want);
        pthread_t th;
        if (rc == 0) {
            c->ready[0] = true;
            c->next = want;
            if (c->next < len) {
                c->refs = 2;
                if (pthread_create(&th, NULL, remote_fetcher, c) != 0) {
                    c->refs = 1;
                    rc = berr_set(BERR_INTERNAL, "cannot start a fetcher thread");
                } else {
                    pthread_detach(th);
                }
            }
        }
        if (rc < 0) {
            remote_free(c);
            return rc == -BERR_BLOB_UNKNOWN
                       ? berr_set(BERR_BLOB_UNKNOWN, "blob unknown to registry")
                       : rc;
        }
    }
    return http_reply_stream(r, status, len, remote_read, c, remote_free);
}

static int blob_get_end(http_req *r)
{
    int rc = reg_blob_serve(r);
    if (rc == -BERR_BLOB_UNKNOWN && r->mirror) return reg_mirror_blob_miss(r);
    /* a hit; a request parked on a fill (r->ctx) was counted as a miss when it started it */
    if (rc == 0 && r->mirror && !r->ctx) metrics_mirror(r->mirror->name, true);
    return rc;
}

int reg_blob_serve(http_req *r)
{
    store_blob b;
    int rc = store_blob_open_serve(r->store, r->name, r->ref, &b);
    if (rc < 0) return rc;
    uint64_t off = 0, len = b.size;
    reg_range_result rr = r->method == M_GET
                              ? reg_parse_range(http_header(r, "Range"), b.size, &off, &len)
                              : REG_RANGE_NONE;
    if (rr == REG_RANGE_UNSATISFIABLE) {
        store_blob_release(&b);
        rc = http_reply_error(r, berr_set(BERR_RANGE_INVALID, "requested range not satisfiable"));
        http_add_headerf(r, "Content-Range", "bytes */%llu", (unsigned long long)b.size);
        return rc;
    }
    int status = rr == REG_RANGE_OK ? 206 : 200;
    char url[8192];
    if (b.remote && r->method == M_GET && store_blob_url(r->store, r->ref, url, sizeof url) == 0) {
        store_blob_release(&b); /* S3 with redirects: the client fetches it there */
        rc = http_reply(r, 307, NULL, NULL, 0);
        if (rc == 0) {
            http_add_header(r, "Location", url);
            http_add_header(r, "Docker-Content-Digest", r->ref);
        }
        return rc;
    }
    const char *ct = b.media_type ? b.media_type : "application/octet-stream";
    rc = reg_blob_reply(r, &b, status, off, len, ct);
    if (rc == 0 && r->method == M_GET && status == 200) /* notifications: a pull event */
        store_event_pull(r->store, r->name, r->ref, "application/octet-stream", len, NULL);
    if (rc == 0) {
        http_add_header(r, "Docker-Content-Digest", r->ref);
        http_add_header(r, "Accept-Ranges", "bytes");
        http_add_headerf(r, "ETag", "\"%s\"", r->ref);
        http_add_header(r, "Cache-Control", "max-age=31536000");
        if (rr == REG_RANGE_OK)
            http_add_headerf(r, "Content-Range", "bytes %llu-%llu/%llu", (unsigned long long)off,
                             (unsigned long long)(off + len - 1), (unsigned long long)b.size);
    }
    return rc;
}

int reg_blob_reply(http_req *r, store_blob *b, int status, uint64_t off, uint64_t len,
                   const char *ct)
{
    int rc;
    if (b->remote) {
        rc = reply_remote(r, b, status, off, len); /* the stream owns b now */
        b = NULL;
    } else if (b->fd >= 0) {
        rc = http_reply_fd(r, status, b->fd, b->offset + off, len);
        b->fd = -1; /* owned by the response now */
    } else {
        rc = http_reply(r, status, NULL, b->mem + off, (size_t)len);
    }
    if (rc == 0) http_add_header(r, "Content-Type", ct);
    if (b) store_blob_release(b);
    return rc;
}

static int blob_delete_end(http_req *r)
{
    if (!r->cfg->delete_enabled) return berr_set(BERR_UNSUPPORTED, "deletes are disabled");
    int rc = store_blob_unlink(r->store, r->name, r->ref);
    if (rc < 0) return rc;
    rc = http_reply(r, 202, NULL, NULL, 0);
    if (rc == 0) http_add_header(r, "Docker-Content-Digest", r->ref);
    return rc;
}

/* store_io: with blobs in a bucket (or metadata in PostgreSQL) opening one waits on the network */
const http_handler reg_blob_get_h = {
    .end = blob_get_end, .cleanup = reg_mirror_blob_cleanup, .store_io = true};
const http_handler reg_blob_delete_h = {.end = blob_delete_end, .offload = true};
