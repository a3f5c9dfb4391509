/*
 * client/regclient: berth's own registry client, used by `berth app`, `berth compose` and
 * `berth bundle`. It speaks the distribution API through proxy/upstream (libcurl: Basic, and the
 * Bearer flow when a registry asks for it) and verifies every digest it receives.
 *
 * A reference is either a repository AT a registry, `http[s]://host[:port]/repo[:tag|@digest]`,
 * or an original name, `[host/]repo[:tag|@digest]` in Docker's form (no host means docker.io,
 * which adds library/ to one-component names). An original name is fetched from its own registry
 * (https; docker.io is registry-1.docker.io), or, when a `via` registry is given (a berth that
 * mirrors the public registries, or holds what was imported), through that registry with
 * containerd's `?ns=<host>` routing. With a `store` instead, everything is read from berth's own
 * store (no server needed): a name is a repository there when one exists under it as given,
 * else its original name's repository (`<host>/<repo>`, where imports and the mirror keep it).
 */
#ifndef BERTH_REGCLIENT_H
#define BERTH_REGCLIENT_H

#include "config.h"
#include "proxy/upstream.h"
#include "store/store.h"
#include "util/digest.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *via;  /* fetch original names through this registry (scheme://host[:port]) */
    const char *user; /* user:password; else BERTH_REGISTRY_USER / BERTH_REGISTRY_PASSWORD */
    bool plain_http;  /* original names over http rather than https */
    store *st;        /* read from this store instead of a registry (reads only) */
} rc_opts;

typedef struct {
    char base[512]; /* scheme://host[:port] asked */
    char repo[256]; /* repository there */
    char ns[256];   /* ?ns= sent with every request, or "" */
    char ref[160];  /* tag or digest; "" when none was given */
    char name[600]; /* host/repo for original names, repo for references at a URL */
    config_mirror m;
    store *st; /* set: read from the store, repository srepo */
    char srepo[256];
} rc_ref;

/* The client settings (credentials, timeouts) of o, for any request (a chart repository URL). */
void rc_client(const rc_opts *o, config_mirror *m);
/* Parses s into r. 0, or -BERR_CONFIG naming what is wrong. */
int rc_parse(const char *s, const rc_opts *o, rc_ref *r);
/* "<base>/v2/<repo>/<kind>/<what>[?ns=...]" */
void rc_url(const rc_ref *r, const char *kind, const char *what, char *out, size_t len);

typedef struct {
    char *body;
    size_t len;
    char media_type[256];
    char digest[DIGEST_STR_MAX]; /* sha256 of body */
} rc_manifest;
void rc_manifest_free(rc_manifest *m);

/* GET a manifest by tag or digest (ref NULL: r->ref, else latest). By digest, the bytes must
 * hash to it. -BERR_MANIFEST_UNKNOWN on 404, -BERR_IO on other failures. */
int rc_get_manifest(rc_ref *r, const char *ref, rc_manifest *out);
/* GET a blob, streaming into sink, verifying its digest (and size, when size > 0). */
int rc_get_blob(rc_ref *r, const char *digest, uint64_t size, upstream_sink sink, void *arg);
/* GET a (small) blob into memory (malloc'd, NUL-terminated). */
int rc_get_blob_mem(rc_ref *r, const char *digest, size_t max, char **out, size_t *len);
/* The referrers of a manifest: a JSON array of descriptors (empty when the registry has none or
 * no referrers API). */
int rc_referrers(rc_ref *r, const char *digest, json_t **out);

/* 1 when the registry has the blob in r->repo, 0 when not. */
int rc_blob_exists(rc_ref *r, const char *digest);
/* Pushes bytes as a blob (skipped when present); digest_out receives its sha256 digest. */
int rc_push_blob_mem(rc_ref *r, const void *data, size_t len, char *digest_out);
/* Pushes a blob of size bytes read from source (a monolithic upload); the registry verifies it. */
int rc_push_blob_stream(rc_ref *r, const char *digest, uint64_t size, upstream_source source,
                        void *arg);
/* PUT a manifest under ref (tag or digest). */
int rc_put_manifest(rc_ref *r, const char *ref, const char *media_type, const char *body,
                    size_t len);

#endif
