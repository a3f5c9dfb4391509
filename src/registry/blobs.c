/*
 * blobs: GET/HEAD (with RFC 9110 single byte ranges, served by sendfile from the blob file) and
 * DELETE of a repository's link to a blob. With storage.s3 a GET answers 307 to a presigned URL
 * (storage.redirect, registry:2's default), or streams the object through berth in ranged reads
 * of REMOTE_BLOCK bytes, each fetched when the client has taken the previous one.
 */
#include "registry/httpparse.h"
#include "registry/registry.h"
#include "util/err.h"
#include "util/log.h"

#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REMOTE_BLOCK (4u << 20)

typedef struct {
    store_blob b;
    uint64_t start; /* of the served range within the blob */
    uint64_t len;
    char *buf;
    uint64_t boff; /* buffer holds bytes [boff, boff + blen) of the range */
    size_t blen;
} remote_ctx;

static int remote_sink(void *arg, const char *data, size_t len)
{
    remote_ctx *c = arg;
    if (c->blen + len > REMOTE_BLOCK) return -1;
    memcpy(c->buf + c->blen, data, len);
    c->blen += len;
    return 0;
}

static ssize_t remote_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    remote_ctx *c = cls;
    if (pos >= c->len) return MHD_CONTENT_READER_END_OF_STREAM;
    if (pos < c->boff || pos >= c->boff + c->blen) {
        uint64_t want = c->len - pos < REMOTE_BLOCK ? c->len - pos : REMOTE_BLOCK;
        c->boff = pos;
        c->blen = 0;
        if (store_blob_read(&c->b, c->start + pos, want, remote_sink, c) < 0 || c->blen != want) {
            log_error("msg=\"blob read from object storage failed\" digest=%s err=\"%s\"",
                      c->b.digest, berr_msg());
            c->blen = 0;
            return MHD_CONTENT_READER_END_WITH_ERROR; /* cut: never a short body taken as whole */
        }
    }
    size_t n = (size_t)(c->boff + c->blen - pos);
    if (n > max) n = max;
    memcpy(buf, c->buf + (pos - c->boff), n);
    return (ssize_t)n;
}

static void remote_free(void *cls)
{
    remote_ctx *c = cls;
    store_blob_release(&c->b);
    free(c->buf);
    free(c);
}

/* A blob kept in object storage: a redirect, or a stream of ranged reads. */
static int serve_remote(http_req *r, store_blob *b, int status, uint64_t off, uint64_t len,
                        bool *redirected)
{
    char url[8192];
    if (r->method == M_GET && store_blob_url(r->store, r->ref, url, sizeof url) == 0) {
        *redirected = true;
        store_blob_release(b);
        int rc = http_reply(r, 307, NULL, NULL, 0);
        if (rc == 0) {
            http_add_header(r, "Location", url);
            http_add_header(r, "Docker-Content-Digest", r->ref);
        }
        return rc;
    }
    remote_ctx *c = calloc(1, sizeof *c);
    char *buf = r->method == M_GET ? malloc(REMOTE_BLOCK) : NULL;
    if (!c || (r->method == M_GET && !buf)) {
        free(c);
        free(buf);
        store_blob_release(b);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    c->b = *b;
    c->start = off;
    c->len = len;
    c->buf = buf;
    if (buf && len > 0) { /* the first block before the status: an unreachable store is a 503 */
        uint64_t want = len < REMOTE_BLOCK ? len : REMOTE_BLOCK;
        int rc = store_blob_read(&c->b, off, want, remote_sink, c);
        if (rc == 0 && c->blen != want)
            rc = berr_set(BERR_IO, "blob %s: short read from object storage", c->b.digest);
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
    bool remote = b.remote != NULL;
    if (remote) {
        bool redirected = false;
        rc = serve_remote(r, &b, status, off, len, &redirected);
        if (rc < 0 || redirected) return rc;
    } else if (b.fd >= 0) {
        rc = http_reply_fd(r, status, b.fd, b.offset + off, len);
        b.fd = -1; /* owned by the response now */
    } else {
        rc = http_reply(r, status, NULL, b.mem + off, (size_t)len);
    }
    if (rc == 0) {
        http_add_header(r, "Content-Type",
                        b.media_type ? b.media_type : "application/octet-stream");
        http_add_header(r, "Docker-Content-Digest", r->ref);
        http_add_header(r, "Accept-Ranges", "bytes");
        http_add_headerf(r, "ETag", "\"%s\"", r->ref);
        http_add_header(r, "Cache-Control", "max-age=31536000");
        if (rr == REG_RANGE_OK)
            http_add_headerf(r, "Content-Range", "bytes %llu-%llu/%llu", (unsigned long long)off,
                             (unsigned long long)(off + len - 1), (unsigned long long)b.size);
    }
    if (!remote) store_blob_release(&b); /* else the stream owns it */
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

const http_handler reg_blob_get_h = {.end = blob_get_end};
const http_handler reg_blob_delete_h = {.end = blob_delete_end, .offload = true};
