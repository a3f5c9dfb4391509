/*
 * uploads: blob upload sessions. POST opens one (or mounts, or uploads in a single request with
 * ?digest=), PATCH appends a chunk (Content-Range is inclusive and must start where the session
 * ends, else 416) or streams without Content-Range, PUT ?digest= appends an optional last chunk
 * and commits after the digest is verified, GET reports progress, DELETE cancels. The body is
 * hashed as it streams in, so committing never re-reads the file.
 */
#include "auth/auth.h"
#include "registry/httpparse.h"
#include "registry/registry.h"
#include "util/err.h"
#include "util/ref.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    store_upload *u;
    char uuid[STORE_UUID_LEN + 1];
    const char *digest; /* commit at end (POST ?digest=, PUT) */
    const char *mount;  /* POST ?mount= */
    bool has_range;
    uint64_t range_end; /* inclusive end promised by Content-Range */
    bool ended;         /* committed or cancelled: nothing left to save */
} up_ctx;

static up_ctx *ctx_of(http_req *r)
{
    if (!r->ctx) r->ctx = calloc(1, sizeof(up_ctx));
    return r->ctx;
}

static void up_cleanup(http_req *r)
{
    up_ctx *c = r->ctx;
    if (!c) return;
    /* a request cut short by the client still leaves a resumable session (its hash state covers
     * what landed); one the server refused (storage full, a bad chunk) leaves it as it was */
    if (c->u && !c->ended) {
        if (r->failed)
            store_upload_rollback(c->u);
        else
            store_upload_save(c->u);
    }
    store_upload_close(c->u);
    free(c);
    r->ctx = NULL;
}

static void add_progress(http_req *r, const char *uuid, uint64_t size)
{
    reg_location(r, "/v2/%s/blobs/uploads/%s", r->name, uuid);
    http_add_headerf(r, "Range", "0-%llu", (unsigned long long)(size ? size - 1 : 0));
    http_add_header(r, "Docker-Upload-UUID", uuid);
}

/* Content-Range "a-b" (optionally "bytes a-b" / "bytes=a-b"); checks it continues the session. */
static int check_content_range(http_req *r, up_ctx *c)
{
    const char *h = http_header(r, "Content-Range");
    if (!h) return 0;
    uint64_t a, b;
    if (!reg_parse_content_range(h, &a, &b))
        return berr_set(BERR_RANGE_INVALID, "invalid Content-Range");
    uint64_t size = store_upload_size(c->u);
    if (b < a || a != size)
        return berr_set(BERR_RANGE_INVALID, "chunk out of order: the upload is at offset %llu",
                        (unsigned long long)size);
    const char *cl = http_header(r, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) != b - a + 1)
        return berr_set(BERR_RANGE_INVALID, "Content-Length does not match Content-Range");
    c->has_range = true;
    c->range_end = b;
    return 0;
}

/* On a range error the client learns where the session stands. */
static int range_failure(http_req *r, up_ctx *c, int rc)
{
    if (rc != -BERR_RANGE_INVALID) return rc;
    http_reply_error(r, rc);
    add_progress(r, c->uuid, store_upload_size(c->u));
    return rc;
}

static int up_open(http_req *r, up_ctx *c)
{
    snprintf(c->uuid, sizeof c->uuid, "%.*s", STORE_UUID_LEN, r->ref);
    if (strlen(r->ref) != STORE_UUID_LEN)
        return berr_set(BERR_BLOB_UPLOAD_UNKNOWN, "upload unknown to registry");
    return store_upload_open(r->store, r->name, c->uuid, &c->u);
}

static int up_data(http_req *r, const char *buf, size_t len)
{
    up_ctx *c = r->ctx;
    if (!c || !c->u) return 0; /* a body where none is expected is ignored */
    if (c->has_range && store_upload_size(c->u) + len > c->range_end + 1)
        return berr_set(BERR_RANGE_INVALID, "body longer than its Content-Range");
    return store_upload_write(c->u, buf, len);
}

static int commit(http_req *r, up_ctx *c)
{
    int rc = store_upload_finish(c->u, c->digest);
    c->ended = rc == 0 || rc == -BERR_DIGEST_INVALID;
    if (!c->ended) store_upload_save(c->u);
    store_upload_close(c->u);
    c->u = NULL;
    if (rc < 0) return rc;
    rc = http_reply(r, 201, NULL, NULL, 0);
    if (rc == 0) {
        reg_location(r, "/v2/%s/blobs/%s", r->name, c->digest);
        http_add_header(r, "Docker-Content-Digest", c->digest);
    }
    return rc;
}

/* ---- POST /v2/<name>/blobs/uploads/ ---- */

static int post_begin(http_req *r)
{
    up_ctx *c = ctx_of(r);
    if (!c) return berr_set(BERR_INTERNAL, "out of memory");
    int rc;
    c->mount = http_query(r, "mount");
    if (c->mount) {
        if ((rc = digest_parse(c->mount, NULL)) < 0) return rc;
        const char *from = http_query(r, "from");
        if (from && !ref_name_valid(from))
            return berr_set(BERR_NAME_INVALID, "invalid repository name in from");
        return 0; /* decided in post_end, on a worker: mounting writes metadata */
    }
    digest_algo algo = DIGEST_SHA256;
    c->digest = http_query(r, "digest");
    if (c->digest) {
        if ((rc = digest_parse(c->digest, &algo)) < 0) return rc;
    } else if (http_query(r, "digest-algorithm")) {
        if ((rc = digest_algo_parse(http_query(r, "digest-algorithm"), &algo)) < 0) return rc;
    }
    if ((rc = store_upload_create(r->store, r->name, algo, c->uuid)) < 0) return rc;
    if (c->digest) return store_upload_open(r->store, r->name, c->uuid, &c->u);
    return 0;
}

static int post_end(http_req *r)
{
    up_ctx *c = r->ctx;
    int rc;
    if (c->mount) {
        /* a mount names its source and needs pull on it; without either it is answered exactly
         * as a digest the registry does not have (a new session), so the answer reveals nothing */
        const char *from = http_query(r, "from");
        rc = from && auth_allowed(r, from, CONFIG_PULL)
                 ? store_blob_mount(r->store, r->name, from, c->mount)
                 : -BERR_BLOB_UNKNOWN;
        if (rc == 0) {
            rc = http_reply(r, 201, NULL, NULL, 0);
            reg_location(r, "/v2/%s/blobs/%s", r->name, c->mount);
            http_add_header(r, "Docker-Content-Digest", c->mount);
            return rc;
        }
        if (rc != -BERR_BLOB_UNKNOWN) return rc;
        /* unknown blob: fall back to a new upload session (202), as the spec asks */
        if ((rc = store_upload_create(r->store, r->name, DIGEST_SHA256, c->uuid)) < 0) return rc;
    }
    if (c->u) return commit(r, c);
    rc = http_reply(r, 202, NULL, NULL, 0);
    if (rc == 0) add_progress(r, c->uuid, 0);
    return rc;
}

/* ---- PATCH /v2/<name>/blobs/uploads/<uuid> ---- */

static int patch_begin(http_req *r)
{
    up_ctx *c = ctx_of(r);
    if (!c) return berr_set(BERR_INTERNAL, "out of memory");
    int rc = up_open(r, c);
    if (rc < 0) return rc;
    return range_failure(r, c, check_content_range(r, c));
}

static int patch_end(http_req *r)
{
    up_ctx *c = r->ctx;
    uint64_t size = store_upload_size(c->u);
    /* save and unlock before answering, so the client's next request finds the session free */
    int rc = store_upload_save(c->u);
    if (rc < 0) store_upload_rollback(c->u); /* refused: the session stays where it was */
    store_upload_close(c->u);
    c->u = NULL;
    if (rc < 0) return rc;
    rc = http_reply(r, 202, NULL, NULL, 0);
    if (rc == 0) add_progress(r, c->uuid, size);
    return rc;
}

/* ---- PUT /v2/<name>/blobs/uploads/<uuid>?digest= ---- */

static int put_begin(http_req *r)
{
    up_ctx *c = ctx_of(r);
    if (!c) return berr_set(BERR_INTERNAL, "out of memory");
    c->digest = http_query(r, "digest");
    if (!c->digest) return berr_set(BERR_DIGEST_INVALID, "digest query parameter required");
    int rc = digest_parse(c->digest, NULL);
    if (rc < 0) return rc;
    if ((rc = up_open(r, c)) < 0) return rc;
    return range_failure(r, c, check_content_range(r, c));
}

static int put_end(http_req *r)
{
    return commit(r, r->ctx);
}

/* ---- GET / DELETE /v2/<name>/blobs/uploads/<uuid> ---- */

static int status_end(http_req *r)
{
    up_ctx *c = ctx_of(r);
    if (!c) return berr_set(BERR_INTERNAL, "out of memory");
    int rc = up_open(r, c);
    if (rc < 0) return rc;
    uint64_t size = store_upload_size(c->u);
    store_upload_close(c->u);
    c->u = NULL;
    rc = http_reply(r, 204, NULL, NULL, 0);
    if (rc == 0) add_progress(r, c->uuid, size);
    return rc;
}

static int delete_end(http_req *r)
{
    up_ctx *c = ctx_of(r);
    if (!c) return berr_set(BERR_INTERNAL, "out of memory");
    int rc = up_open(r, c);
    if (rc < 0) return rc;
    store_upload_cancel(c->u);
    c->ended = true;
    return http_reply(r, 204, NULL, NULL, 0);
}

/* body_io: writing the body to a bucket uploads multipart parts (and waits for the one before),
 * so with a blocking store the server has workers write it; store_io: saving a session in a
 * bucket (its tail and state objects) waits on the network */
const http_handler reg_upload_post_h = {.begin = post_begin,
                                        .data = up_data,
                                        .end = post_end,
                                        .cleanup = up_cleanup,
                                        .offload = true,
                                        .body_io = true};
const http_handler reg_upload_patch_h = {.begin = patch_begin,
                                         .data = up_data,
                                         .end = patch_end,
                                         .cleanup = up_cleanup,
                                         .store_io = true,
                                         .body_io = true};
const http_handler reg_upload_put_h = {.begin = put_begin,
                                       .data = up_data,
                                       .end = put_end,
                                       .cleanup = up_cleanup,
                                       .offload = true,
                                       .body_io = true};
const http_handler reg_upload_get_h = {.end = status_end, .cleanup = up_cleanup, .store_io = true};
const http_handler reg_upload_delete_h = {
    .begin = NULL, .data = NULL, .end = delete_end, .cleanup = up_cleanup, .offload = true};
