/*
 * bundle: what an application needs to install offline, and how it crosses an air gap.
 *
 *  - closure.c: `berth app closure REF` resolves a margo Application Package into its components
 *    (Helm charts and compose archives by oci:// reference) and the container images they run
 *    (margo/images.c finds them), every tag resolved to a digest.
 *  - bundle.c: `berth bundle create|import|serve`: one OCI image layout tar (oci-layout,
 *    index.json, blobs/sha256/...) carrying artifacts with their referrers, and
 *    org.opencontainers.image.ref.name giving each original reference; imported into a store or
 *    a running registry only after every digest is verified, or served in place, read-only.
 */
#ifndef BERTH_BUNDLE_H
#define BERTH_BUNDLE_H

#include "client/regclient.h"

#include <jansson.h>

typedef struct {
    char kind[16];               /* package, chart, compose, image */
    char ref[700];               /* the original reference, name:tag or name@digest */
    char digest[DIGEST_STR_MAX]; /* of the manifest the reference names; "" when unresolved */
    char *media_type;
    json_t *platforms; /* images narrowed by --platform: [{platform, digest}], else NULL */
    char *error;       /* why it could not be resolved, else NULL */
    char created[64];  /* a chart from an HTTP repository: its index.yaml entry's time */
    char carried[700]; /* a legacy packageLocation read from the artifact a bundle carried */
} closure_item;

/* A legacy compose packageLocation (a URL of an archive or of a compose.yaml) travels in a
 * bundle as an OCI artifact named after the URL (closure_url_name), tagged CLOSURE_URL_TAG, with
 * the file as its one layer: artifactType CLOSURE_MT_URL, io.berth.bundle.source = the URL. */
#define CLOSURE_URL_TAG "url"
#define CLOSURE_MT_URL "application/vnd.berth.bundle.url.v1"
/* The repository name for a URL: host and path, lower case, characters a repository name cannot
 * hold made '-' (https://Example.com:8443/a/App.tar.gz -> example.com-8443/a/app.tar.gz). */
int closure_url_name(const char *url, char *out, size_t len);

typedef struct {
    closure_item *items;
    size_t n, cap;
} closure;

/* Resolves the package ref and everything it needs; items that cannot be resolved carry error
 * (the call still succeeds). platforms: "os/arch[/variant],..." or NULL. Negative only when the
 * package itself cannot be read. */
int closure_resolve(const char *ref, const rc_opts *o, const char *platforms, closure *out);
void closure_free(closure *c);
/* GETs url (any scheme the client speaks) into an anonymous file (*fd, from offset 0) and its
 * sha256 into digest. */
int closure_fetch_url(const rc_opts *o, const char *url, int *fd, char *digest);
/* True when the platform object ({os, architecture, variant}) is one of the list. */
bool closure_platform_match(json_t *platform, const char *platforms);

int bundle_closure_cli(int argc, char **argv);
int bundle_cli(int argc, char **argv);

#endif
