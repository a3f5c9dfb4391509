/*
 * registry: the OCI distribution-spec v1.1 handlers. routes.c maps a path to a handler (names
 * and references are checked against the spec grammar there, before anything else runs);
 * blobs.c, uploads.c, manifests.c and lists.c implement the endpoints over the store.
 */
#ifndef BERTH_REGISTRY_H
#define BERTH_REGISTRY_H

#include "http/http.h"

#include <jansson.h>

/* routes.c: the OCI paths, matched from the right; the route table (serve.c) maps each endpoint
 * and method to its handler and access. */
enum {
    REG_VERSION,   /* /v2/ */
    REG_CATALOG,   /* /v2/_catalog */
    REG_TAGS,      /* /v2/<name>/tags/list */
    REG_UPLOADS,   /* /v2/<name>/blobs/uploads/ */
    REG_UPLOAD,    /* /v2/<name>/blobs/uploads/<uuid> */
    REG_BLOB,      /* /v2/<name>/blobs/<digest> */
    REG_MANIFEST,  /* /v2/<name>/manifests/<reference> */
    REG_REFERRERS, /* /v2/<name>/referrers/<digest> */
};
extern const http_router registry_router;

extern const http_handler reg_version_h;
extern const http_handler reg_blob_get_h, reg_blob_delete_h;
extern const http_handler reg_upload_post_h, reg_upload_patch_h, reg_upload_put_h, reg_upload_get_h,
    reg_upload_delete_h;
extern const http_handler reg_manifest_get_h, reg_manifest_put_h, reg_manifest_delete_h;
extern const http_handler reg_tags_h, reg_catalog_h, reg_referrers_h;

/* Manifest parsing for PUT (manifest.c): validates the JSON and fills req's derived fields.
 * The returned state owns the strings req points at; free it with reg_manifest_parsed_free. */
typedef struct reg_manifest_parsed reg_manifest_parsed;
int reg_manifest_parse(const char *content, size_t len, const char *content_type,
                       store_manifest_put_req *req, reg_manifest_parsed **out);
void reg_manifest_parsed_free(reg_manifest_parsed *p);
/* registry:2's validation of a pushed image manifest's layer URLs (validation: in the config):
 * unless validation.disabled, a layer that carries urls (or has a foreign/non-distributable
 * type, which must) is accepted only when every URL is http(s) without a fragment, matches one
 * validation.manifests.urls.allow expression (none set: refused) and no deny one.
 * -BERR_MANIFEST_INVALID names the first URL refused. */
int reg_manifest_check_urls(const reg_manifest_parsed *p, const config_validation *v);
/* The referrers API's "manifests" array for a list from the store. */
json_t *reg_referrer_descriptors(const store_referrer_list *l);
/* Mirror (mirror.c): routing, and the cache-miss paths of manifest and blob GETs. The core
 * works on a reg_mirror_ctx, so `berth sync` uses the same code as the server. */
typedef struct {
    store *st;
    const config_mirror *mirror;
    const char *local;         /* repository in the store: "<mirror>/<upstream repo>" */
    const char *upstream_repo; /* repository at the upstream */
    const config *cfg;         /* for the ingest hooks (registry/ingest.h) */
} reg_mirror_ctx;
/* The manifest for ref, from the store or the upstream (revalidating tags, stale-if-error). */
int reg_mirror_manifest_fetch(const reg_mirror_ctx *c, const char *ref, store_manifest *out);
/* Makes sure a blob is in the store (fetching it whole when not); *fetched says whether it was. */
int reg_mirror_blob_ensure(const reg_mirror_ctx *c, const char *digest, bool *fetched);
int reg_mirror_route(http_req *r);
/* The mirror that stands for Docker Hub (mirrors.docker.io), or NULL. */
const config_mirror *reg_mirror_hub(const config *cfg);
/* Whether a mirror serves an upstream repository (its `repositories` patterns). */
bool reg_mirror_serves(const config_mirror *m, const char *upstream_repo);
int reg_mirror_manifest_get(http_req *r);
/* Handlers' cleanup for mirror GETs: releases what a parked request still holds (r->ctx). */
void reg_mirror_manifest_cleanup(http_req *r);
void reg_mirror_blob_cleanup(http_req *r);
/* The upstreams marked down (no answer): [{"mirror","error","since"}], or NULL when none. */
json_t *reg_mirror_health(void);
/* A blob GET that missed in a mirror repository: link, fetch or join the running fetch, and
 * answer (streaming while it fills). HTTP_OFFLOAD to continue on a worker. */
int reg_mirror_blob_miss(http_req *r);
/* Periodic mirror upkeep (from the maintenance thread): records batched access times, probes
 * upstreams marked down (in the background, with backoff) and, when evict is set and
 * cache.maxsize is configured, evicts down to the limit. */
void reg_mirror_maintain(store *st, const config *cfg, bool evict);
/* `berth sync` (sync.c): fills the mirror from a list file; 0 when everything synced. */
int reg_sync(store *s, const config *cfg, const char *list_path);
/* Serves r->ref from r->name (blobs.c). */
int reg_blob_serve(http_req *r);
/* Sends bytes [off, off+len) of an open blob as the body (sendfile from its file, its bytes, or,
 * with storage.s3, a stream of ranged reads); takes b, also on failure. */
int reg_blob_reply(http_req *r, store_blob *b, int status, uint64_t off, uint64_t len,
                   const char *ct);

/* Location of a blob or upload: relative, or under http.host when configured. */
void reg_location(http_req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
