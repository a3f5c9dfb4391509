/*
 * bundle/layout: reading and checking an OCI image layout bundle (see layout.c), shared by
 * `berth bundle import|serve|verify`.
 */
#ifndef BERTH_BUNDLE_LAYOUT_H
#define BERTH_BUNDLE_LAYOUT_H

#include "util/digest.h"
#include "util/ref.h"
#include "util/tar.h"

#include <jansson.h>
#include <sys/stat.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define COPY_BUF (1 << 20)

typedef struct {
    char digest[DIGEST_STR_MAX];
    uint64_t size;
    int64_t header_pos; /* of its tar entry; data offset once known */
    int64_t offset;
    char *mem; /* kept when small and JSON-like (manifests) */
    bool used; /* referenced by the plan */
    /* a directory bundle's blob file as it was hashed (bundle serve checks it is unchanged) */
    ino_t ino;
    struct timespec ctime;
    bool manifest; /* a planned manifest: stored as metadata, not as a blob */
} bblob;

typedef struct {
    const char *path;
    bool dir; /* an OCI layout directory */
    bblob *v;
    size_t n, cap;
    json_t *map; /* digest -> index in v */
    json_t *index;
    bool compressed;
    struct stat st; /* the tar as opened, before it was hashed (bundle serve checks it) */
    size_t kept;
    uint64_t bytes;
} bundle;

typedef struct {
    char repo[600];
    char tag[REF_TAG_MAX + 1]; /* "" for by-digest */
    bblob *m;                  /* the manifest */
    char *mt;
    char keep[DIGEST_STR_MAX]; /* a platform-narrowed image: the original index's digest; a tag
                                  already on it stays there */
    bblob **blobs;             /* its config and layers (foreign layers left out) */
    size_t nblobs;
} step;

typedef struct {
    step *v;
    size_t n, cap;
    json_t *walked; /* "repo\ndigest" of manifests walked as a child: each is walked once */
} plan;

/* Reads path (a tar or a layout directory) and plans its import; *fdp is the open tar (or -1).
 * A bare-tag ref.name goes to default_repo. With in_place (serving the tar where it lies) the
 * tar must be uncompressed, and each blob is hashed at the data offset it will be served from,
 * which checks the offsets as well. 0, or -BERR_BAD_REQUEST / -BERR_DIGEST_INVALID naming what
 * is wrong (a truncated archive, a damaged blob, a missing manifest or layer). */
int layout_open(const char *path, bundle *b, plan *p, const char *default_repo, bool in_place,
                int *fdp);
void layout_free(bundle *b);
void layout_plan_free(plan *p);
bblob *layout_find(const bundle *b, const char *digest);
/* Hashes x's bytes, from the reader tr or from fd at off, and checks them (buf: COPY_BUF). */
int layout_hash_blob(bundle *b, bblob *x, tar_reader *tr, int fd, int64_t off, char *buf);
bool layout_blob_name(const char *name, char *digest);
void layout_blob_path(const char *digest, char *out, size_t len);

#endif
