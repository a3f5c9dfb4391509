/*
 * manifests: GET/HEAD/PUT/DELETE /v2/<name>/manifests/<reference>. A PUT body is collected in
 * memory up to the manifest limit (4 MiB by default; beyond it 413), and handed to ingest
 * (registry/ingest.h: parsed, checked by the hooks, stored byte for byte with its tags in one
 * metadata transaction); GET serves those exact bytes with the
 * manifest's own media type.
 */
#include "registry/ingest.h"
#include "registry/registry.h"
#include "trust/trust.h"
#include "ui/ui.h"
#include "util/err.h"
#include "util/ref.h"

#include <stdlib.h>
#include <string.h>

#define MAX_EXTRA_TAGS 64

typedef struct {
    char *buf;
    size_t len, cap;
} put_ctx;

static int get_end(http_req *r)
{
    if (r->mirror) return reg_mirror_manifest_get(r);
    store_manifest m;
    int rc = store_manifest_get(r->store, r->name, r->ref, &m);
    if (rc == 0 && (rc = trust_serve_check(r, m.digest, m.media_type, m.content, m.size)) != 0)
        store_manifest_free(&m); /* trust: unsigned in an enforcing policy, or needs a worker */
    if (rc != 0) return rc;
    rc = http_reply_owned(r, 200, m.media_type, m.content, m.size);
    m.content = NULL;
    if (rc == 0) {
        http_add_header(r, "Docker-Content-Digest", m.digest);
        http_add_headerf(r, "ETag", "\"%s\"", m.digest);
        if (r->method == M_GET) {
            ui_pull_note(r->name, r->ref); /* the web view's last pull */
            /* notifications: a pull event, when an endpoint wants pulls */
            store_event_pull(r->store, r->name, m.digest, m.media_type, m.size,
                             ref_is_digest(r->ref) ? NULL : r->ref);
        }
    }
    store_manifest_free(&m);
    return rc;
}

static int put_begin(http_req *r)
{
    const char *cl = http_header(r, "Content-Length");
    if (cl && strtoll(cl, NULL, 10) > r->cfg->max_manifest)
        return berr_set(BERR_TOO_LARGE, "manifest larger than %lld bytes",
                        (long long)r->cfg->max_manifest);
    r->ctx = calloc(1, sizeof(put_ctx));
    return r->ctx ? 0 : berr_set(BERR_INTERNAL, "out of memory");
}

static int put_data(http_req *r, const char *data, size_t len)
{
    put_ctx *c = r->ctx;
    if (c->len + len > (size_t)r->cfg->max_manifest)
        return berr_set(BERR_TOO_LARGE, "manifest larger than %lld bytes",
                        (long long)r->cfg->max_manifest);
    if (c->len + len > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + len)
            cap *= 2;
        char *nb = realloc(c->buf, cap);
        if (!nb) return berr_set(BERR_INTERNAL, "out of memory");
        c->buf = nb;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, data, len);
    c->len += len;
    return 0;
}

static int put_end(http_req *r)
{
    put_ctx *c = r->ctx;
    if (c->len == 0) return berr_set(BERR_MANIFEST_INVALID, "empty manifest");
    digest_algo algo = DIGEST_SHA256;
    bool by_digest = ref_is_digest(r->ref);
    if (by_digest) digest_parse(r->ref, &algo);
    char digest[DIGEST_STR_MAX];
    digest_buf(algo, c->buf, c->len, digest);
    const char *tags[MAX_EXTRA_TAGS + 1];
    size_t ntags = 0;
    if (by_digest) {
        if (strcmp(digest, r->ref) != 0)
            return berr_set(BERR_DIGEST_INVALID, "manifest digest %s does not match %s", digest,
                            r->ref);
    } else {
        tags[ntags++] = r->ref;
    }
    const char *extra[MAX_EXTRA_TAGS];
    size_t nextra = http_query_all(r, "tag", extra, MAX_EXTRA_TAGS);
    for (size_t i = 0; i < nextra; i++) {
        if (!ref_tag_valid(extra[i]))
            return berr_set(BERR_MANIFEST_INVALID, "invalid tag %.130s", extra[i]);
        tags[ntags++] = extra[i];
    }
    ingest_req q = {.source = INGEST_PUSH,
                    .repo = r->name,
                    .content = c->buf,
                    .len = c->len,
                    .content_type = http_header(r, "Content-Type"),
                    .digest = digest,
                    .tags = tags,
                    .ntags = ntags};
    ingest_result res;
    int rc = ingest_manifest(r->store, r->cfg, &q, &res);
    if (rc == 0) rc = http_reply(r, 201, NULL, NULL, 0);
    if (rc == 0) {
        reg_location(r, "/v2/%s/manifests/%s", r->name, digest);
        http_add_header(r, "Docker-Content-Digest", digest);
        if (res.subject[0]) http_add_header(r, "OCI-Subject", res.subject);
        for (size_t i = 0; i < nextra; i++)
            http_add_header(r, "OCI-Tag", extra[i]);
    }
    return rc;
}

static void put_cleanup(http_req *r)
{
    put_ctx *c = r->ctx;
    if (!c) return;
    free(c->buf);
    free(c);
    r->ctx = NULL;
}

static int delete_end(http_req *r)
{
    if (!r->cfg->delete_enabled) return berr_set(BERR_UNSUPPORTED, "deletes are disabled");
    int rc = ref_is_digest(r->ref) ? store_manifest_delete(r->store, r->name, r->ref)
                                   : store_tag_delete(r->store, r->name, r->ref);
    if (rc < 0) return rc;
    return http_reply(r, 202, NULL, NULL, 0);
}

const http_handler reg_manifest_get_h = {
    .end = get_end, .cleanup = reg_mirror_manifest_cleanup, .store_io = true};
const http_handler reg_manifest_put_h = {
    .begin = put_begin, .data = put_data, .end = put_end, .cleanup = put_cleanup, .offload = true};
const http_handler reg_manifest_delete_h = {.end = delete_end, .offload = true};
