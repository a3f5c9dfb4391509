/*
 * blobfs: the files backend (blob_files_ops) and the layout backend of `bundle serve`
 * (blob_layout_ops), and the blobfs_* helpers that dispatch to the store's backend.
 *
 * Files: blobs are <root>/blobs/<algo>/<2 hex>/<hex>. A file is only ever created by rename(2) of
 * a fully written, fsync'd and verified temporary file, and only ever removed by rename into
 * <root>/trash/ followed by unlink, so a reader sees a whole blob or none.
 *
 * Upload sessions live in <root>/uploads/<uuid>/: `data` (the bytes so far), `info` (repo and
 * digest algorithm) and `hash` (the saved hashing context and the size it covers). A request
 * works on a session under an exclusive flock on `data` (taken without waiting: a second
 * concurrent request on one session is refused); the hashing context is saved at the end
 * of each request, so chunked uploads never re-read what was already written, and a session
 * survives a restart (if `hash` is stale, finishing re-hashes the file).
 *
 * Layout: the files backend, except that a blob is first looked up in the store's blob source
 * (store_set_blob_source: a bundle or OCI layout read in place); the source is read-only, so
 * only open and stat differ.
 */
#include "store/fault.h"
#include "store/internal.h"
#include "util/err.h"
#include "util/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HASH_MAGIC 0x62657274u /* "bert" */

/* Writeback is started every WRITEBACK_STEP bytes while an upload streams in, so the fdatasync
 * that commits it finds little left to write. Pages more than a step behind that writeback has
 * cleaned are dropped from the page cache (POSIX_FADV_DONTNEED skips pages still dirty or under
 * writeback, so it never waits or loses a byte): an upload holds 16-24 MiB of page cache, not
 * its whole size, and the next window reuses the pages just freed. Fresh pages are what made
 * large pushes slow here: three 256 MiB pushes in a row took 0.39-0.50, 0.55-0.59 and 1.2-1.8 s,
 * 71% of it in the kernel's copy into new page-cache pages (a VM whose host backs freed guest
 * pages lazily); with the drop-behind each takes 0.41-0.44 s. Once the upload is verified and
 * synced, all but its last two steps leave the cache. So a pushed blob is read back from disk on
 * its first GET, and the page cache stays for what is pulled. Mirror fills write the same way:
 * a client streaming a cold pull more than a step behind the fill reads those bytes from disk. */
#define WRITEBACK_STEP (8u << 20)

/* Request bodies and upstream bodies arrive in pieces of 16-64 KiB; they are gathered into
 * writes of STAGE_SIZE, which the page cache takes in large folios. Measured on ext4 (one core,
 * 256 MiB monolithic PUT): 0.60 s in the pieces as they came, 0.49 s with 256 KiB writes, 0.40 s
 * with 1 MiB; 2 MiB was erratic (0.46-1.4 s). The staged bytes are hashed and written before
 * the session is saved, verified or hashed, at store_upload_flush, and when it is closed. */
#define STAGE_SIZE (1u << 20)

typedef struct {
    uint32_t magic;
    uint32_t algo;
    uint64_t size;
    digest_ctx ctx;
} hash_state;

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

static void rm_rf_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

int blobfs_storage_err(const char *what, int e)
{
    if (e == ENOSPC || e == EDQUOT) return berr_set(BERR_STORAGE_FULL, "%s: storage full", what);
    return berr_set(BERR_IO, "%s: %s", what, strerror(e));
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

static void trash_path(const blobfs *b, const char *digest, char *out, size_t outlen)
{
    const char *colon = strchr(digest, ':');
    snprintf(out, outlen, "%s/trash/%.*s-%s", b->root, (int)(colon - digest), digest, colon + 1);
}

/* ---- the helpers the store's maintenance calls: the backend's operations ---- */

bool blobfs_exists(const blobfs *b, const char *digest)
{
    return b->ops->stat(b, digest, NULL) == 0;
}

int blobfs_size(const blobfs *b, const char *digest, uint64_t *size)
{
    *size = 0;
    return b->ops->stat(b, digest, size);
}

int blobfs_hash(const blobfs *b, const char *digest, digest_algo algo, char *got, uint64_t *size,
                char *where, size_t wlen)
{
    return b->ops->hash(b, digest, algo, got, size, where, wlen);
}

int blobfs_each(const blobfs *b, bool trash,
                int (*cb)(void *arg, const char *digest, int64_t mtime), void *arg)
{
    return b->ops->each(b, trash, cb, arg);
}

int blobfs_trash(const blobfs *b, const char *digest)
{
    return b->ops->trash(b, digest);
}

int blobfs_trash_purge(const blobfs *b, const char *digest)
{
    return b->ops->trash_purge(b, digest);
}

/* ---- files: blobs ---- */

static int files_stat(const blobfs *b, const char *digest, uint64_t *size)
{
    char p[4096];
    struct stat st;
    blobfs_path(b, digest, p, sizeof p);
    if (stat(p, &st) < 0) return berr_set(BERR_BLOB_UNKNOWN, "%s: %s", p, strerror(errno));
    if (size) *size = (uint64_t)st.st_size;
    return 0;
}

static void files_where(const blobfs *b, const char *digest, char *out, size_t len)
{
    blobfs_path(b, digest, out, len);
}

static int files_hash(const blobfs *b, const char *digest, digest_algo algo, char *got,
                      uint64_t *size, char *where, size_t wlen)
{
    blobfs_path(b, digest, where, wlen);
    return digest_file(where, algo, got, size);
}

static int files_trash(const blobfs *b, const char *digest)
{
    char src[4096], dst[4096];
    blobfs_path(b, digest, src, sizeof src);
    trash_path(b, digest, dst, sizeof dst);
    if ((store_fault_hit(STORE_FAULT_RENAME) || rename(src, dst) < 0) && errno != ENOENT)
        return berr_set(BERR_IO, "rename %s to trash: %s", src, strerror(errno));
    return 0;
}

static int files_trash_purge(const blobfs *b, const char *digest)
{
    char p[4096];
    trash_path(b, digest, p, sizeof p);
    if (unlink(p) < 0 && errno != ENOENT)
        return berr_set(BERR_IO, "unlink %s: %s", p, strerror(errno));
    return 0;
}

static int files_open(store *s, const char *digest, uint64_t size, bool serve, store_blob *out)
{
    (void)serve; /* a descriptor either way: served with sendfile */
    char path[4096];
    blobfs_path(&s->fs, digest, path, sizeof path);
    out->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (out->fd < 0 && errno == ENOENT) {
        log_error("msg=\"blob file missing\" digest=%s err=\"%s\"", digest, strerror(errno));
        return berr_set(BERR_BLOB_UNKNOWN, "blob unknown to registry");
    }
    if (out->fd < 0) { /* out of descriptors, EIO...: a local failure, retryable, not "unknown" */
        int e = errno;
        log_error("msg=\"cannot open a stored blob\" digest=%s err=\"%s\"", digest, strerror(e));
        return berr_set(BERR_UNAVAILABLE, "cannot open stored blob %s: %s", digest, strerror(e));
    }
    out->size = size;
    return 0;
}

/* len bytes at base + off of fd to sink, in 64 KiB reads; what names the blob in errors */
static int fd_read_range(int fd, uint64_t base, uint64_t off, uint64_t len, blob_sink sink,
                         void *arg, const char *what)
{
    char buf[65536];
    int rc = 0;
    while (rc == 0 && len > 0) {
        ssize_t n =
            pread(fd, buf, len < sizeof buf ? (size_t)len : sizeof buf, (off_t)(base + off));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            rc = berr_set(BERR_IO, "read %s: %s", what, n < 0 ? strerror(errno) : "short file");
            break;
        }
        if (sink(arg, buf, (size_t)n) < 0) rc = berr_set(BERR_IO, "blob read stopped");
        off += (uint64_t)n;
        len -= (uint64_t)n;
    }
    return rc;
}

static int files_read(const blobfs *b, const char *digest, uint64_t off, uint64_t len,
                      blob_sink sink, void *arg)
{
    char path[4096];
    blobfs_path(b, digest, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return berr_set(BERR_BLOB_UNKNOWN, "%s: %s", path, strerror(errno));
    int rc = fd_read_range(fd, 0, off, len, sink, arg, path);
    close(fd);
    return rc;
}

/* blobs/<algo>/<2 hex>/<hex> (trash false) or trash/<algo>-<hex> (true), with their mtimes */
static int files_each(const blobfs *b, bool trash,
                      int (*cb)(void *arg, const char *digest, int64_t mtime), void *arg)
{
    char dir[4096];
    if (trash) {
        snprintf(dir, sizeof dir, "%s/trash", b->root);
        DIR *d = opendir(dir);
        if (!d) return 0;
        struct dirent *e;
        int rc = 0;
        while (rc == 0 && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char digest[DIGEST_STR_MAX + 300], path[4400];
            snprintf(digest, sizeof digest, "%s", e->d_name);
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            char *dash = strchr(digest, '-');
            struct stat st;
            if (!dash || stat(path, &st) < 0) continue;
            *dash = ':';
            if (digest_parse(digest, NULL) == 0) rc = cb(arg, digest, (int64_t)st.st_mtime * 1000);
        }
        closedir(d);
        return rc;
    }
    static const char *const algos[] = {"sha256", "sha512"};
    int rc = 0;
    for (size_t a = 0; rc == 0 && a < 2; a++) {
        snprintf(dir, sizeof dir, "%s/blobs/%s", b->root, algos[a]);
        DIR *d1 = opendir(dir);
        if (!d1) continue;
        struct dirent *e1;
        while (rc == 0 && (e1 = readdir(d1))) {
            if (e1->d_name[0] == '.') continue;
            char sub[4400];
            snprintf(sub, sizeof sub, "%s/%s", dir, e1->d_name);
            DIR *d2 = opendir(sub);
            if (!d2) continue;
            struct dirent *e2;
            while (rc == 0 && (e2 = readdir(d2))) {
                if (e2->d_name[0] == '.') continue;
                char digest[DIGEST_STR_MAX + 300], path[4800];
                snprintf(digest, sizeof digest, "%s:%s", algos[a], e2->d_name);
                snprintf(path, sizeof path, "%s/%s", sub, e2->d_name);
                struct stat st;
                if (stat(path, &st) < 0 || digest_parse(digest, NULL) < 0) continue;
                rc = cb(arg, digest, (int64_t)st.st_mtime * 1000);
            }
            closedir(d2);
        }
        closedir(d1);
    }
    return rc;
}

/* Finishes or undoes gc removals interrupted by a crash: a trashed blob whose row survived (the
 * gc transaction rolled back) goes back into place; any other is deleted. */
static int files_recover(store *s)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/trash", s->root);
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char digest[DIGEST_STR_MAX + 8], path[4096];
        snprintf(digest, sizeof digest, "%s", e->d_name);
        char *dash = strchr(digest, '-');
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (dash) *dash = ':';
        if (dash && digest_parse(digest, NULL) == 0 &&
            s->meta->ops->blob_lookup(s->meta, NULL, digest, NULL) == 0) {
            log_warn("msg=\"recovery: restoring blob from interrupted gc\" digest=%s", digest);
            blobfs_place(&s->fs, path, digest);
        } else {
            unlink(path);
        }
    }
    closedir(d);
    return 0;
}

static int files_check_writable(store *s)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/tmp/health-%d-%ld", s->root, (int)getpid(), (long)gettid());
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return berr_set(BERR_UNAVAILABLE, "storage not writable: %s", strerror(errno));
    int rc = 0;
    if (write(fd, "ok", 2) != 2 || fsync(fd) < 0)
        rc = berr_set(BERR_UNAVAILABLE, "storage not writable: %s", strerror(errno));
    close(fd);
    unlink(p);
    return rc;
}

static int files_place_mem(store *s, const void *data, size_t len, const char *digest)
{
    char p[4200];
    uint64_t r;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (uint64_t)store_now();
    snprintf(p, sizeof p, "%s/tmp/blob-%016llx", s->root, (unsigned long long)r);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return berr_set(BERR_IO, "create %s: %s", p, strerror(errno));
    bool ok = true;
    for (size_t off = 0; ok && off < len;) {
        ssize_t n = store_fault_hit(STORE_FAULT_WRITE)
                        ? -1
                        : write(fd, (const char *)data + off, len - off);
        if (n < 0 && errno == EINTR) continue;
        ok = n > 0;
        if (ok) off += (size_t)n;
    }
    int e = errno;
    if (ok) ok = !store_fault_hit(STORE_FAULT_FSYNC) && fdatasync(fd) == 0;
    close(fd);
    bool placed = false;
    int rc = ok ? blobfs_preplace(&s->fs, p, digest, &placed) : blobfs_storage_err("write blob", e);
    if (!placed) unlink(p);
    return rc;
}

/* ---- files: upload sessions ---- */

static int files_upload_create(store *s, const char *repo, digest_algo algo, const char *uuid)
{
    char dir[4096], p[4200];
    snprintf(dir, sizeof dir, "%s/uploads/%s", s->root, uuid);
    if (mkdir(dir, 0755) < 0) return berr_set(BERR_IO, "mkdir %s: %s", dir, strerror(errno));
    snprintf(p, sizeof p, "%s/info", dir);
    FILE *f = fopen(p, "w");
    if (!f) return berr_set(BERR_IO, "create %s: %s", p, strerror(errno));
    fprintf(f, "%s\n%s\n", repo, digest_algo_name(algo));
    int bad = fclose(f) != 0;
    snprintf(p, sizeof p, "%s/data", dir);
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || bad) {
        if (fd >= 0) close(fd);
        rm_rf_dir(dir);
        return berr_set(BERR_IO, "create upload %s: %s", dir, strerror(errno));
    }
    close(fd);
    return 0;
}

static int files_upload_open(store *s, const char *repo, const char *uuid, store_upload **out)
{
    char dir[4096], p[4200];
    snprintf(dir, sizeof dir, "%s/uploads/%s", s->root, uuid);
    snprintf(p, sizeof p, "%s/info", dir);
    FILE *f = fopen(p, "r");
    if (!f) return berr_set(BERR_BLOB_UPLOAD_UNKNOWN, "upload unknown to registry");
    char srepo[300] = "", salgo[32] = "";
    bool ok = fgets(srepo, sizeof srepo, f) && fgets(salgo, sizeof salgo, f);
    fclose(f);
    srepo[strcspn(srepo, "\n")] = '\0';
    salgo[strcspn(salgo, "\n")] = '\0';
    digest_algo algo;
    if (!ok || strcmp(srepo, repo) != 0 || digest_algo_parse(salgo, &algo) < 0)
        return berr_set(BERR_BLOB_UPLOAD_UNKNOWN, "upload unknown to registry");
    store_upload *u = calloc(1, sizeof *u);
    if (!u) return berr_set(BERR_INTERNAL, "out of memory");
    u->s = s;
    u->algo = algo;
    snprintf(u->dir, sizeof u->dir, "%s", dir);
    snprintf(u->repo, sizeof u->repo, "%s", repo);
    snprintf(p, sizeof p, "%s/data", dir);
    u->fd = open(p, O_RDWR | O_CLOEXEC);
    if (u->fd < 0) {
        free(u);
        return berr_set(BERR_BLOB_UPLOAD_UNKNOWN, "upload unknown to registry");
    }
    /* the event loop must never wait: a session another request is writing is busy */
    if (flock(u->fd, LOCK_EX | LOCK_NB) < 0) {
        close(u->fd);
        free(u);
        return berr_set(BERR_BLOB_UPLOAD_INVALID, "upload session is in use by another request");
    }
    struct stat st;
    /* the session may have been finished or cancelled while we waited for the lock */
    if (fstat(u->fd, &st) < 0 || st.st_nlink == 0) {
        close(u->fd);
        free(u);
        return berr_set(BERR_BLOB_UPLOAD_UNKNOWN, "upload unknown to registry");
    }
    u->size = (uint64_t)st.st_size;
    u->flushed = u->size;
    u->opened = u->size;
    snprintf(p, sizeof p, "%s/hash", dir);
    hash_state hs;
    int hfd = open(p, O_RDONLY | O_CLOEXEC);
    if (hfd >= 0) {
        if (read(hfd, &hs, sizeof hs) == (ssize_t)sizeof hs && hs.magic == HASH_MAGIC &&
            hs.size == u->size && hs.algo == (uint32_t)algo) {
            u->ctx = hs.ctx;
            u->ctx_valid = true;
        }
        close(hfd);
    } else if (u->size == 0) {
        digest_init(&u->ctx, algo);
        u->ctx_valid = true;
    }
    if (lseek(u->fd, 0, SEEK_END) < 0) {
        store_upload_close(u);
        return berr_set(BERR_IO, "seek: %s", strerror(errno));
    }
    *out = u;
    return 0;
}

/* Appends to the session's file and hash; on failure the file goes back to its last good size. */
static int write_through(store_upload *u, const void *data, size_t len)
{
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = store_fault_hit(STORE_FAULT_WRITE) ? -1 : write(u->fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            /* never leave a partial chunk behind: the session stays at its last good size */
            if (ftruncate(u->fd, (off_t)u->size) == 0) lseek(u->fd, 0, SEEK_END);
            return blobfs_storage_err("write upload", e);
        }
        p += n;
        left -= (size_t)n;
    }
    if (u->ctx_valid) digest_update(&u->ctx, data, len);
    u->size += len;
    if (u->size - u->flushed >= WRITEBACK_STEP) {
        sync_file_range(u->fd, (off_t)u->flushed, (off_t)(u->size - u->flushed),
                        SYNC_FILE_RANGE_WRITE);
        if (u->flushed >= WRITEBACK_STEP) { /* [lo, flushed - step): 7 steps behind and older */
            uint64_t lo = u->flushed > 8 * WRITEBACK_STEP ? u->flushed - 8 * WRITEBACK_STEP : 0;
            posix_fadvise(u->fd, (off_t)lo, (off_t)(u->flushed - WRITEBACK_STEP - lo),
                          POSIX_FADV_DONTNEED);
        }
        u->flushed = u->size;
    }
    return 0;
}

int store_upload_flush(store_upload *u)
{
    if (!u->staged) return 0;
    size_t n = u->staged;
    u->staged = 0; /* on failure they are dropped: the session is its last good size */
    return write_through(u, u->stage, n);
}

static int files_upload_write(store_upload *u, const void *data, size_t len)
{
    if (!u->staged && len >= STAGE_SIZE) return write_through(u, data, len);
    if (!u->stage) {
        /* mapped, not malloc'd: glibc's heap would keep a freed 1 MiB buffer (its mmap threshold
         * grows with every such free), so memory taken by many uploads at once was never given
         * back; a mapping goes back to the system when the session closes */
        void *m = store_fault_hit(STORE_FAULT_ALLOC)
                      ? MAP_FAILED
                      : mmap(NULL, STAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                             -1, 0);
        if (m == MAP_FAILED) return write_through(u, data, len);
        u->stage = m;
    }
    const char *p = data;
    while (len > 0) {
        size_t n = len < STAGE_SIZE - u->staged ? len : STAGE_SIZE - u->staged;
        memcpy(u->stage + u->staged, p, n);
        u->staged += n;
        p += n;
        len -= n;
        if (u->staged == STAGE_SIZE) {
            int rc = store_upload_flush(u);
            if (rc < 0) return rc;
        }
    }
    return 0;
}

static int files_upload_reader(store_upload *u)
{
    /* no flush here: a mirror's readers open it from other threads while the fill writes */
    char p[4200];
    snprintf(p, sizeof p, "%s/data", u->dir);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    return fd >= 0 ? fd : berr_set(BERR_IO, "open %s: %s", p, strerror(errno));
}

static int files_upload_spool(store_upload *u)
{
    (void)u; /* the session's file is readable while it is written */
    return 0;
}

static bool files_upload_growing(const store_upload *u)
{
    (void)u;
    return true;
}

static int files_upload_save(store_upload *u)
{
    int rc = store_upload_flush(u);
    if (rc < 0) return rc;
    if (!u->ctx_valid) return 0;
    char p[4200], tmp[4200];
    snprintf(p, sizeof p, "%s/hash", u->dir);
    snprintf(tmp, sizeof tmp, "%s/hash.tmp", u->dir);
    hash_state hs = {
        .magic = HASH_MAGIC, .algo = (uint32_t)u->algo, .size = u->size, .ctx = u->ctx};
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return blobfs_storage_err("save upload state", errno);
    bool ok =
        !store_fault_hit(STORE_FAULT_WRITE) && write(fd, &hs, sizeof hs) == (ssize_t)sizeof hs;
    int e = errno;
    close(fd);
    if (ok && (store_fault_hit(STORE_FAULT_RENAME) || rename(tmp, p) < 0)) {
        ok = false;
        e = errno;
    }
    if (!ok) {
        unlink(tmp);
        return blobfs_storage_err("save upload state", e);
    }
    return 0;
}

static void files_upload_rollback(store_upload *u)
{
    u->staged = 0;
    if (u->size == u->opened) return;
    if (ftruncate(u->fd, (off_t)u->opened) == 0) {
        lseek(u->fd, 0, SEEK_END);
        u->size = u->flushed = u->opened;
        /* the saved hash state (if any) is the one for this size; ours ran past it */
        u->ctx_valid = false;
    }
}

static void files_upload_remove(store_upload *u)
{
    rm_rf_dir(u->dir);
}

/* Hashes, checks and syncs the session's data (the first half of finishing it). */
static int upload_verify(store_upload *u, const char *digest, char *data, size_t dlen)
{
    digest_algo want;
    int rc = digest_parse(digest, &want);
    if (rc < 0 || (rc = store_upload_flush(u)) < 0) return rc;
    char got[DIGEST_STR_MAX];
    snprintf(data, dlen, "%s/data", u->dir);
    if (u->ctx_valid && want == u->algo) {
        digest_final(&u->ctx, got);
        u->ctx_valid = false;
    } else {
        rc = digest_file(data, want, got, NULL);
        if (rc < 0) return rc;
    }
    if (strcmp(got, digest) != 0) {
        files_upload_remove(u);
        return berr_set(BERR_DIGEST_INVALID, "provided digest did not match uploaded content");
    }
    if (store_fault_hit(STORE_FAULT_FSYNC) || fdatasync(u->fd) < 0)
        return berr_set(BERR_IO, "fsync upload: %s", strerror(errno));
    if (u->size > 2 * WRITEBACK_STEP) /* all clean now: keep only the last two steps cached */
        posix_fadvise(u->fd, 0, (off_t)(u->size - 2 * WRITEBACK_STEP), POSIX_FADV_DONTNEED);
    return 0;
}

static int files_upload_verify_place(store_upload *u, const char *digest, bool *placed)
{
    char data[4200];
    *placed = false;
    int rc = upload_verify(u, digest, data, sizeof data);
    return rc < 0 ? rc : blobfs_preplace(&u->s->fs, data, digest, placed);
}

static int files_upload_commit_place(store_upload *u, const char *digest, bool placed)
{
    if (placed)
        return blobfs_exists(&u->s->fs, digest)
                   ? 0
                   : berr_set(BERR_IO, "blob %s vanished before its commit", digest);
    char data[4200];
    snprintf(data, sizeof data, "%s/data", u->dir);
    return blobfs_place(&u->s->fs, data, digest);
}

static void files_upload_close(store_upload *u)
{
    if (store_upload_flush(u) < 0)
        log_warn("msg=\"upload: received bytes not written at close\" err=\"%s\"", berr_msg());
    close(u->fd); /* releases the flock */
    if (u->stage) munmap(u->stage, STAGE_SIZE);
    free(u);
}

static int files_upload_purge(store *s, int64_t max_age)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/uploads", s->root);
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int n = 0;
    int64_t now = (int64_t)time(NULL);
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[4400];
        snprintf(p, sizeof p, "%s/%s/data", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && now - (int64_t)st.st_mtime < max_age) continue;
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0) { /* in use right now */
            close(fd);
            continue;
        }
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        rm_rf_dir(p);
        if (fd >= 0) close(fd);
        n++;
    }
    closedir(d);
    if (n) log_info("msg=\"purged stale uploads\" count=%d", n);
    return n;
}

/* what the files backend and the layout in front of it share: everything but reading */
#define FILES_SHARED_OPS                                                                           \
    .recover = files_recover, .check_writable = files_check_writable, .url = NULL,                 \
    .hash = files_hash, .where = files_where, .each = files_each, .place_mem = files_place_mem,    \
    .trash = files_trash, .trash_purge = files_trash_purge, .upload_create = files_upload_create,  \
    .upload_open = files_upload_open, .upload_write = files_upload_write,                          \
    .upload_reader = files_upload_reader, .upload_spool = files_upload_spool,                      \
    .upload_growing = files_upload_growing, .upload_save = files_upload_save,                      \
    .upload_rollback = files_upload_rollback, .upload_verify_place = files_upload_verify_place,    \
    .upload_commit_place = files_upload_commit_place, .upload_remove = files_upload_remove,        \
    .upload_close = files_upload_close, .upload_purge = files_upload_purge

const blob_backend_ops blob_files_ops = {
    .name = "files",
    .caps = STORE_CAP_SENDFILE,
    .open = files_open,
    .read = files_read,
    .stat = files_stat,
    FILES_SHARED_OPS,
};

/* ---- layout: a read-only blob source in front of the files ---- */

static int layout_open(store *s, const char *digest, uint64_t size, bool serve, store_blob *out)
{
    const store_blob_source *src = s->fs.ext;
    if (src->open(src->arg, digest, &out->fd, &out->offset) == 0) {
        out->size = size;
        return 0;
    }
    return files_open(s, digest, size, serve, out);
}

/* existence from the source; a size only from the files (the source's blobs end where their
 * rows say, so callers that need a size have the row) */
static int layout_stat(const blobfs *b, const char *digest, uint64_t *size)
{
    if (!size && b->ext->open(b->ext->arg, digest, NULL, NULL) == 0) return 0;
    return files_stat(b, digest, size);
}

static int layout_read(const blobfs *b, const char *digest, uint64_t off, uint64_t len,
                       blob_sink sink, void *arg)
{
    int fd = -1;
    uint64_t base = 0;
    if (b->ext->open(b->ext->arg, digest, &fd, &base) < 0)
        return files_read(b, digest, off, len, sink, arg);
    int rc = fd_read_range(fd, base, off, len, sink, arg, digest);
    close(fd);
    return rc;
}

const blob_backend_ops blob_layout_ops = {
    .name = "layout",
    .caps = STORE_CAP_SENDFILE,
    .open = layout_open,
    .read = layout_read,
    .stat = layout_stat,
    FILES_SHARED_OPS,
};
