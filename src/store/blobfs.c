/*
 * blobfs: blob files on the local filesystem, <root>/blobs/<algo>/<2 hex>/<hex>. Files are only
 * ever created by rename(2) of a fully written, fsync'd and verified temporary file, and only ever
 * removed by rename into <root>/trash/ followed by unlink, so a reader sees a whole blob or none.
 */
#include "store/internal.h"
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
    int rc = fsync(fd) < 0 ? berr_set(BERR_IO, "fsync %s: %s", dir, strerror(errno)) : 0;
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
    if (rename(src, dst) < 0) return berr_set(BERR_IO, "rename into %s: %s", dst, strerror(errno));
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
    if (rename(src, dst) < 0) return berr_set(BERR_IO, "rename into %s: %s", dst, strerror(errno));
    *placed = true;
    return fsync_dir(dir);
}

bool blobfs_exists(const blobfs *b, const char *digest)
{
    if (b->ext && b->ext->open(b->ext->arg, digest, NULL, NULL) == 0) return true;
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
    char src[4096], dst[4096];
    blobfs_path(b, digest, src, sizeof src);
    trash_path(b, digest, dst, sizeof dst);
    if (rename(src, dst) < 0 && errno != ENOENT)
        return berr_set(BERR_IO, "rename %s to trash: %s", src, strerror(errno));
    return 0;
}

int blobfs_trash_purge(const blobfs *b, const char *digest)
{
    char p[4096];
    trash_path(b, digest, p, sizeof p);
    if (unlink(p) < 0 && errno != ENOENT)
        return berr_set(BERR_IO, "unlink %s: %s", p, strerror(errno));
    return 0;
}
