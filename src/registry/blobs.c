/*
 * blobs: GET/HEAD (with RFC 9110 single byte ranges, served by sendfile from the blob file) and
 * DELETE of a repository's link to a blob.
 */
#include "registry/httpparse.h"
#include "registry/registry.h"
#include "util/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    if (b.fd >= 0) {
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
