/*
 * blobfs: blob files on the local filesystem, <root>/blobs/<algo>/<2 hex>/<hex>. Files are only
 * ever created by rename(2) of a fully written, fsync'd and verified temporary file, and only ever
 * removed by rename into <root>/trash/ followed by unlink, so a reader sees a whole blob or none.
 *
 * With storage.s3 the same layout lives in the bucket (keys blobs/<algo>/<2 hex>/<hex> and
 * trash/<algo>-<hex> under the root): an object is only ever created whole (a PUT of verified
 * bytes, or a server-side copy of a completed, verified multipart upload) and only removed by a
 * copy into trash/ followed by a delete, so the same invariants hold. The functions below that
 * both modes share branch on b->s3.
 */
#include "store/fault.h"
#include "store/internal.h"
#include "store/s3.h"
#include "util/err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return berr_set(BERR_IO, "open %s: %s", dir, strerror(errno));
    int rc = store_fault_hit(STORE_FAULT_FSYNC) || fsync(fd) < 0
                 ? berr_set(BERR_IO, "fsync %s: %s", dir, strerror(errno))
                 : 0;
    close(fd);
    return rc;
}

int mkdir_p(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return berr_set(BERR_IO, "mkdir %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) < 0 && errno != EEXIST)
        return berr_set(BERR_IO, "mkdir %s: %s", buf, strerror(errno));
    return 0;
}

void blobfs_path(const blobfs *b, const char *digest, char *out, size_t outlen)
{
    const char *colon = strchr(digest, ':');
    int alen = (int)(colon - digest);
    snprintf(out, outlen, "%s/blobs/%.*s/%.2s/%s", b->root, alen, digest, colon + 1, colon + 1);
}

int blobfs_place(const blobfs *b, const char *src, const char *digest)
{
    char dst[4096], dir[4096];
    blobfs_path(b, digest, dst, sizeof dst);
    snprintf(dir, sizeof dir, "%s", dst);
    *strrchr(dir, '/') = '\0';
    struct stat st;
    if (stat(dst, &st) == 0) { /* already stored: content-addressed, keep the existing copy */
        unlink(src);
        return 0;
    }
    int rc = mkdir_p(dir);
    if (rc < 0) return rc;
    if (store_fault_hit(STORE_FAULT_RENAME) || rename(src, dst) < 0)
        return berr_set(BERR_IO, "rename into %s: %s", dst, strerror(errno));
    return fsync_dir(dir);
}

int blobfs_preplace(const blobfs *b, const char *src, const char *digest, bool *placed)
{
    char dst[4096], dir[4096];
    blobfs_path(b, digest, dst, sizeof dst);
    *placed = false;
    struct stat st;
    if (stat(dst, &st) == 0) return 0; /* the commit keeps the existing copy */
    snprintf(dir, sizeof dir, "%s", dst);
    *strrchr(dir, '/') = '\0';
    int rc = mkdir_p(dir);
    if (rc < 0) return rc;
    if (store_fault_hit(STORE_FAULT_RENAME) || rename(src, dst) < 0)
        return berr_set(BERR_IO, "rename into %s: %s", dst, strerror(errno));
    *placed = true;
    return fsync_dir(dir);
}

void blobfs_key(const char *digest, char *out, size_t outlen)
{
    const char *colon = strchr(digest, ':');
    int alen = (int)(colon - digest);
    snprintf(out, outlen, "blobs/%.*s/%.2s/%s", alen, digest, colon + 1, colon + 1);
}

static void trash_key(const char *digest, char *out, size_t outlen)
{
    const char *colon = strchr(digest, ':');
    snprintf(out, outlen, "trash/%.*s-%s", (int)(colon - digest), digest, colon + 1);
}

bool blobfs_exists(const blobfs *b, const char *digest)
{
    if (b->ext && b->ext->open(b->ext->arg, digest, NULL, NULL) == 0) return true;
    if (b->s3) {
        char k[512];
        blobfs_key(digest, k, sizeof k);
        return s3_head(b->s3, k, NULL) == 0;
    }
    char p[4096];
    blobfs_path(b, digest, p, sizeof p);
    struct stat st;
    return stat(p, &st) == 0;
}

static void trash_path(const blobfs *b, const char *digest, char *out, size_t outlen)
{
    const char *colon = strchr(digest, ':');
    snprintf(out, outlen, "%s/trash/%.*s-%s", b->root, (int)(colon - digest), digest, colon + 1);
}

int blobfs_trash(const blobfs *b, const char *digest)
{
    if (b->s3) {
        char k[512], t[512];
        uint64_t size;
        blobfs_key(digest, k, sizeof k);
        trash_key(digest, t, sizeof t);
        int rc = s3_head(b->s3, k, &size);
        if (rc == -BERR_BLOB_UNKNOWN) return 0;
        if (rc == 0) rc = s3_copy(b->s3, k, t, size);
        return rc < 0 ? rc : s3_delete(b->s3, k);
    }
    char src[4096], dst[4096];
    blobfs_path(b, digest, src, sizeof src);
    trash_path(b, digest, dst, sizeof dst);
    if ((store_fault_hit(STORE_FAULT_RENAME) || rename(src, dst) < 0) && errno != ENOENT)
        return berr_set(BERR_IO, "rename %s to trash: %s", src, strerror(errno));
    return 0;
}

int blobfs_trash_purge(const blobfs *b, const char *digest)
{
    if (b->s3) {
        char t[512];
        trash_key(digest, t, sizeof t);
        return s3_delete(b->s3, t);
    }
    char p[4096];
    trash_path(b, digest, p, sizeof p);
    if (unlink(p) < 0 && errno != ENOENT)
        return berr_set(BERR_IO, "unlink %s: %s", p, strerror(errno));
    return 0;
}

int blobfs_size(const blobfs *b, const char *digest, uint64_t *size)
{
    *size = 0;
    if (b->s3) {
        char k[512];
        blobfs_key(digest, k, sizeof k);
        return s3_head(b->s3, k, size);
    }
    char p[4096];
    struct stat st;
    blobfs_path(b, digest, p, sizeof p);
    if (stat(p, &st) < 0) return berr_set(BERR_BLOB_UNKNOWN, "%s: %s", p, strerror(errno));
    *size = (uint64_t)st.st_size;
    return 0;
}

typedef struct {
    digest_ctx ctx;
    uint64_t n;
} hash_sink_arg;

static int hash_sink(void *arg, const char *data, size_t len)
{
    hash_sink_arg *h = arg;
    digest_update(&h->ctx, data, len);
    h->n += len;
    return 0;
}

int blobfs_hash(const blobfs *b, const char *digest, digest_algo algo, char *got, uint64_t *size,
                char *where, size_t wlen)
{
    if (b->s3) {
        blobfs_key(digest, where, wlen);
        hash_sink_arg h = {.n = 0};
        digest_init(&h.ctx, algo);
        int rc = s3_get(b->s3, where, 0, 0, hash_sink, &h);
        if (rc < 0) return rc;
        digest_final(&h.ctx, got);
        *size = h.n;
        return 0;
    }
    blobfs_path(b, digest, where, wlen);
    return digest_file(where, algo, got, size);
}

/* ---- crash recovery and orphans ---- */

typedef struct {
    const blobfs *b;
    int (*cb)(void *arg, const char *digest, int64_t mtime);
    void *arg;
    bool trash;
} walk_arg;

static int walk_obj(void *arg, const char *key, uint64_t size, int64_t mtime)
{
    (void)size;
    walk_arg *w = arg;
    char digest[DIGEST_STR_MAX + 16];
    if (w->trash) { /* trash/<algo>-<hex> */
        snprintf(digest, sizeof digest, "%s", key + 6);
        char *dash = strchr(digest, '-');
        if (!dash) return 0;
        *dash = ':';
    } else { /* blobs/<algo>/<2 hex>/<hex> */
        const char *a = key + 6, *s1 = strchr(a, '/'), *hex = s1 ? strrchr(s1, '/') : NULL;
        if (!s1 || !hex) return 0;
        snprintf(digest, sizeof digest, "%.*s:%s", (int)(s1 - a), a, hex + 1);
    }
    if (digest_parse(digest, NULL) < 0) return 0;
    return w->cb(w->arg, digest, mtime * 1000);
}

int blobfs_each(const blobfs *b, bool trash,
                int (*cb)(void *arg, const char *digest, int64_t mtime), void *arg)
{
    walk_arg w = {b, cb, arg, trash};
    if (b->s3) return s3_list(b->s3, trash ? "trash/" : "blobs/", walk_obj, &w);
    return berr_set(BERR_INTERNAL, "blobfs_each: only for S3");
}

int blobfs_restore(const blobfs *b, const char *digest)
{
    char k[512], t[512];
    uint64_t size;
    blobfs_key(digest, k, sizeof k);
    trash_key(digest, t, sizeof t);
    int rc = s3_head(b->s3, t, &size);
    if (rc == 0) rc = s3_copy(b->s3, t, k, size);
    return rc < 0 ? rc : s3_delete(b->s3, t);
}
