/*
 * blobs: GET/HEAD (with RFC 9110 single byte ranges, served by sendfile from the blob file) and
 * DELETE of a repository's link to a blob.
 */
#include "registry/registry.h"
#include "util/err.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { RANGE_NONE, RANGE_OK, RANGE_UNSATISFIABLE } range_result;

/* Parses "bytes=a-b", "bytes=a-", "bytes=-n" against size. Anything else, including multiple
 * ranges, is ignored (RFC 9110 lets a server answer a whole 200 then). */
static range_result parse_range(const char *h, uint64_t size, uint64_t *off, uint64_t *len)
{
    if (!h) return RANGE_NONE;
    while (*h == ' ')
        h++;
    if (strncasecmp(h, "bytes=", 6) != 0) return RANGE_NONE;
    const char *p = h + 6;
    while (*p == ' ')
        p++;
    if (strchr(p, ',')) return RANGE_NONE;
    char *end;
    if (*p == '-') {
        if (!isdigit((unsigned char)p[1])) return RANGE_NONE;
        unsigned long long n = strtoull(p + 1, &end, 10);
        while (*end == ' ')
            end++;
        if (*end) return RANGE_NONE;
        if (n == 0 || size == 0) return RANGE_UNSATISFIABLE;
        if (n > size) n = size;
        *off = size - n;
        *len = n;
        return RANGE_OK;
    }
    if (!isdigit((unsigned char)*p)) return RANGE_NONE;
    unsigned long long a = strtoull(p, &end, 10);
    if (*end != '-') return RANGE_NONE;
    p = end + 1;
    unsigned long long b;
    if (!*p) {
        b = size ? size - 1 : 0;
    } else {
        if (!isdigit((unsigned char)*p)) return RANGE_NONE;
        b = strtoull(p, &end, 10);
        while (*end == ' ')
            end++;
        if (*end || b < a) return RANGE_NONE;
        if (b >= size) b = size ? size - 1 : 0;
    }
    if (a >= size) return RANGE_UNSATISFIABLE;
    *off = a;
    *len = b - a + 1;
    return RANGE_OK;
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
    int rc = store_blob_open(r->store, r->name, r->ref, &b);
    if (rc < 0) return rc;
    uint64_t off = 0, len = b.size;
    range_result rr =
        r->method == M_GET ? parse_range(http_header(r, "Range"), b.size, &off, &len) : RANGE_NONE;
    if (rr == RANGE_UNSATISFIABLE) {
        store_blob_release(&b);
        rc = http_reply_error(r, berr_set(BERR_RANGE_INVALID, "requested range not satisfiable"));
        http_add_headerf(r, "Content-Range", "bytes */%llu", (unsigned long long)b.size);
        return rc;
    }
    int status = rr == RANGE_OK ? 206 : 200;
    if (b.fd >= 0) {
        rc = http_reply_fd(r, status, b.fd, off, len);
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
        if (rr == RANGE_OK)
            http_add_headerf(r, "Content-Range", "bytes %llu-%llu/%llu", (unsigned long long)off,
                             (unsigned long long)(off + len - 1), (unsigned long long)b.size);
    }
    store_blob_release(&b);
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
