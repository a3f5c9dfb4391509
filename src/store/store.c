/*
 * store: lifecycle, crash recovery, blob access and upload sessions; manifests and listings are
 * passed through to the metadata backend. See store.h for the layout and the invariants.
 *
 * Upload sessions live in <root>/uploads/<uuid>/: `data` (the bytes so far), `info` (repo and
 * digest algorithm) and `hash` (the saved hashing context and the size it covers). A request
 * works on a session under an exclusive flock on `data` (taken without waiting: a second
 * concurrent request on one session is refused); the hashing context is saved at the end
 * of each request, so chunked uploads never re-read what was already written, and a session
 * survives a restart (if `hash` is stale, finishing re-hashes the file).
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
#include <sys/random.h>
#include <sys/mman.h>
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

int64_t store_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *store_root(const store *s)
{
    return s->root;
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

/* Finishes or undoes gc removals interrupted by a crash: a trashed blob whose row survived (the
 * gc transaction rolled back) goes back into place; any other is deleted. Runs under the metadata
 * write lock, so a gc of another berth sharing the storage (PostgreSQL metadata) is never caught
 * between its rename into trash/ and its commit. */
static int recover_trash_locked(void *arg);
static void recover_trash(store *s)
{
    s->meta->ops->locked(s->meta, recover_trash_locked, s);
}

static int recover_trash_locked(void *arg)
{
    store *s = arg;
    if (s->fs.s3) return s3m_recover_trash(s);
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

/* Temporary files (monolithic uploads in flight, health probes) never survive a restart. With
 * shared metadata other berths may be using the same storage, so only files untouched for an
 * hour are theirs to lose. */
static void recover_tmp(store *s, bool shared)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tmp", s->root);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (shared && (stat(p, &st) < 0 || time(NULL) - st.st_mtime < 3600)) continue;
        unlink(p);
    }
    closedir(d);
}

int store_open(store **out, const config *cfg)
{
    store *s = calloc(1, sizeof *s);
    if (!s) return berr_set(BERR_INTERNAL, "out of memory");
    s->root = realpath(cfg->root, NULL);
    if (!s->root) {
        int rc = mkdir_p(cfg->root);
        if (rc < 0) {
            free(s);
            return rc;
        }
        s->root = realpath(cfg->root, NULL);
    }
    if (!s->root) {
        free(s);
        return berr_set(BERR_IO, "storage root %s: %s", cfg->root, strerror(errno));
    }
    s->fs.root = s->root;
    static const char *const subdirs[] = {"blobs", "uploads", "trash", "tmp"};
    char p[4096];
    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", s->root, subdirs[i]);
        int rc = mkdir_p(p);
        if (rc < 0) {
            free(s->root);
            free(s);
            return rc;
        }
    }
    snprintf(p, sizeof p, "%s/metadata.db", s->root);
    int rc = cfg->database.enabled ? store_meta_pg_open(&s->meta, &cfg->database)
                                   : store_meta_sqlite_open(&s->meta, p);
    if (rc < 0) {
        free(s->root);
        free(s);
        return rc;
    }
    if (cfg->s3.enabled && (rc = s3m_open(s, cfg)) < 0) {
        s->meta->ops->close(s->meta);
        free(s->root);
        free(s);
        return rc;
    }
    recover_trash(s);
    recover_tmp(s, cfg->database.enabled);
    s->quota = cfg->quota;
    if (s->quota > 0) store_refresh_usage(s);
    store_events_configure(cfg); /* notifications: whether changes write events */
    *out = s;
    return 0;
}

void store_close(store *s)
{
    if (!s) return;
    s->meta->ops->close(s->meta);
    s3_close(s->fs.s3);
    free(s->root);
    free(s);
}

int store_refresh_usage(store *s)
{
    uint64_t b = 0;
    int rc = s->meta->ops->usage(s->meta, &b);
    if (rc == 0) s->used = (int64_t)b;
    return rc;
}

int store_usage(store *s, uint64_t *all, uint64_t *mirrored)
{
    int rc = s->meta->ops->usage(s->meta, all);
    if (rc == 0) rc = s->meta->ops->mirror_usage(s->meta, mirrored);
    return rc;
}

/* storage.quota: refuses bytes that would take the store past it (uploads in flight count as
 * they are written; the count is refreshed from the metadata every few seconds). */
static int quota_check(store *s, uint64_t more)
{
    if (s->quota > 0 && s->used + (int64_t)more > s->quota)
        return berr_set(BERR_STORAGE_FULL, "storage quota of %lld bytes reached",
                        (long long)s->quota);
    return 0;
}

int store_check_writable(store *s)
{
    if (s->fs.s3) return s3m_check_writable(s);
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

int store_lease_take(store *s, const char *key, const char *owner, int64_t ttl_ms)
{
    int64_t now = store_now();
    return s->meta->ops->lease_take(s->meta, key, owner, now + ttl_ms, now);
}

int store_lease_drop(store *s, const char *key, const char *owner)
{
    return s->meta->ops->lease_drop(s->meta, key, owner);
}

int store_check_metadata(store *s)
{
    int64_t latest = 0;
    int rc = s->meta->ops->charts_gen(s->meta, &latest, NULL); /* one cheap query */
    return rc < 0 ? berr_rewrap(BERR_UNAVAILABLE, "metadata unreachable: ") : 0;
}

/* ---- blobs ---- */

static int blob_open(store *s, const char *repo, const char *digest, store_blob *out, bool serve)
{
    memset(out, 0, sizeof *out);
    out->fd = -1;
    uint64_t size;
    int rc = s->meta->ops->blob_lookup(s->meta, repo, digest, &size);
    if (rc == -BERR_BLOB_UNKNOWN) {
        /* manifests are content too: serve them through the blobs endpoint as registry:2 does */
        store_manifest m;
        if (s->meta->ops->manifest_get(s->meta, repo, digest, &m) == 0) {
            out->mem = m.content;
            out->size = m.size;
            out->media_type = m.media_type;
            return 0;
        }
        return berr_set(BERR_BLOB_UNKNOWN, "blob unknown to registry");
    }
    if (rc < 0) return rc;
    if (s->fs.ext && s->fs.ext->open(s->fs.ext->arg, digest, &out->fd, &out->offset) == 0) {
        out->size = size;
        return 0;
    }
    if (s->fs.s3 && serve) {
        out->remote = s;
        out->size = size;
        snprintf(out->digest, sizeof out->digest, "%s", digest);
        return 0;
    }
    if (s->fs.s3) return s3m_blob_fetch(s, digest, size, out);
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

int store_blob_open(store *s, const char *repo, const char *digest, store_blob *out)
{
    return blob_open(s, repo, digest, out, false);
}

int store_blob_open_serve(store *s, const char *repo, const char *digest, store_blob *out)
{
    return blob_open(s, repo, digest, out, true);
}

int store_blob_read(store_blob *b, uint64_t off, uint64_t len,
                    int (*sink)(void *arg, const char *data, size_t len), void *arg)
{
    if (!b->remote) return berr_set(BERR_INTERNAL, "store_blob_read: not a remote blob");
    char k[512];
    blobfs_key(b->digest, k, sizeof k);
    return s3_get(b->remote->fs.s3, k, off, len, sink, arg);
}

int store_blob_url(store *s, const char *digest, char *url, size_t len)
{
    if (!s->fs.s3 || !s->redirect) return -BERR_UNSUPPORTED;
    char k[512];
    blobfs_key(digest, k, sizeof k);
    return s3_presign(s->fs.s3, k, s->redirect_expiry, url, len);
}

int store_upload_spool(store_upload *u)
{
    return u->s->fs.s3 ? s3m_upload_spool(u) : 0;
}

bool store_upload_growing(const store_upload *u)
{
    return !u->s->fs.s3 || u->spool >= 0;
}

bool store_blob_present(store *s, const char *digest)
{
    return blobfs_exists(&s->fs, digest);
}

void store_set_blob_source(store *s, const store_blob_source *src)
{
    s->fs.ext = src;
}

void store_blob_release(store_blob *b)
{
    if (b->fd >= 0) close(b->fd);
    free(b->mem);
    free(b->media_type);
    b->fd = -1;
    b->mem = NULL;
    b->media_type = NULL;
}

int store_blob_mount(store *s, const char *repo, const char *from, const char *digest)
{
    return s->meta->ops->blob_link(s->meta, repo, from, digest);
}

int store_blob_link_listed(store *s, const char *repo, const char *digest)
{
    return s->meta->ops->blob_link_listed(s->meta, repo, digest);
}

int store_blob_unlink(store *s, const char *repo, const char *digest)
{
    return s->meta->ops->blob_unlink(s->meta, repo, digest);
}

/* ---- uploads ---- */

/* An I/O failure: 507 when the disk (or quota) is full, else 500; the message names both. */
static int storage_err(const char *what, int e)
{
    if (e == ENOSPC || e == EDQUOT) return berr_set(BERR_STORAGE_FULL, "%s: storage full", what);
    return berr_set(BERR_IO, "%s: %s", what, strerror(e));
}

static int upload_dir(store *s, const char *uuid, char *out, size_t len)
{
    /* uuids are generated here; anything else never reaches the filesystem */
    if (strlen(uuid) != STORE_UUID_LEN) return berr_set(BERR_BLOB_UPLOAD_UNKNOWN, "upload unknown");
    for (const char *p = uuid; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || *p == '-'))
            return berr_set(BERR_BLOB_UPLOAD_UNKNOWN, "upload unknown");
    snprintf(out, len, "%s/uploads/%s", s->root, uuid);
    return 0;
}

int store_upload_create(store *s, const char *repo, digest_algo algo, char *uuid_out)
{
    uint8_t r[16];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        return berr_set(BERR_INTERNAL, "getrandom: %s", strerror(errno));
    r[6] = (uint8_t)((r[6] & 0x0f) | 0x40);
    r[8] = (uint8_t)((r[8] & 0x3f) | 0x80);
    snprintf(uuid_out, STORE_UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1],
             r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14],
             r[15]);
    if (s->fs.s3) return s3m_upload_create(s, repo, algo, uuid_out);
    char dir[4096], p[4200];
    upload_dir(s, uuid_out, dir, sizeof dir);
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

int store_upload_open(store *s, const char *repo, const char *uuid, store_upload **out)
{
    char dir[4096], p[4200];
    int rc = upload_dir(s, uuid, dir, sizeof dir);
    if (rc < 0) return rc;
    if (s->fs.s3) return s3m_upload_open(s, repo, uuid, out);
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

uint64_t store_upload_size(const store_upload *u)
{
    return u->size + u->staged;
}

uint64_t store_upload_written(const store_upload *u)
{
    return u->size;
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
            return storage_err("write upload", e);
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

int store_upload_write(store_upload *u, const void *data, size_t len)
{
    int qrc = quota_check(u->s, u->size + u->staged + len);
    if (qrc < 0) return qrc;
    if (u->s->fs.s3) return s3m_upload_write(u, data, len);
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

int store_upload_reader(store_upload *u)
{
    if (u->s->fs.s3) return s3m_upload_reader(u);
    /* no flush here: a mirror's readers open it from other threads while the fill writes */
    char p[4200];
    snprintf(p, sizeof p, "%s/data", u->dir);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    return fd >= 0 ? fd : berr_set(BERR_IO, "open %s: %s", p, strerror(errno));
}

int store_upload_save(store_upload *u)
{
    if (u->s->fs.s3) return s3m_upload_save(u);
    int rc = store_upload_flush(u);
    if (rc < 0) return rc;
    if (!u->ctx_valid) return 0;
    char p[4200], tmp[4200];
    snprintf(p, sizeof p, "%s/hash", u->dir);
    snprintf(tmp, sizeof tmp, "%s/hash.tmp", u->dir);
    hash_state hs = {
        .magic = HASH_MAGIC, .algo = (uint32_t)u->algo, .size = u->size, .ctx = u->ctx};
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return storage_err("save upload state", errno);
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
        return storage_err("save upload state", e);
    }
    return 0;
}

void store_upload_rollback(store_upload *u)
{
    if (u->s->fs.s3) {
        s3m_upload_rollback(u);
        return;
    }
    u->staged = 0;
    if (u->size == u->opened) return;
    if (ftruncate(u->fd, (off_t)u->opened) == 0) {
        lseek(u->fd, 0, SEEK_END);
        u->size = u->flushed = u->opened;
        /* the saved hash state (if any) is the one for this size; ours ran past it */
        u->ctx_valid = false;
    }
}

static void upload_remove(store_upload *u)
{
    if (u->s->fs.s3)
        s3m_upload_remove(u);
    else
        rm_rf_dir(u->dir);
}

typedef struct {
    store *s;
    const char *src;
    const char *digest;
    bool placed;     /* blobfs_preplace moved it already */
    store_upload *u; /* S3 mode: the session the object came from */
} place_arg;

static int place_cb(void *arg)
{
    place_arg *a = arg;
    if (a->u && a->s->fs.s3) return s3m_upload_commit_place(a->u, a->digest);
    if (a->placed)
        return blobfs_exists(&a->s->fs, a->digest)
                   ? 0
                   : berr_set(BERR_IO, "blob %s vanished before its commit", a->digest);
    return blobfs_place(&a->s->fs, a->src, a->digest);
}

static int present_cb(void *arg)
{
    place_arg *a = arg;
    return blobfs_exists(&a->s->fs, a->digest)
               ? 0
               : berr_set(BERR_BLOB_UNKNOWN, "blob %s is not stored", a->digest);
}

int store_blob_adopt(store *s, const char *repo, const char *digest, uint64_t size)
{
    place_arg a = {.s = s, .digest = digest};
    return s->meta->ops->blob_commit(s->meta, repo, digest, size, present_cb, &a);
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
        upload_remove(u);
        return berr_set(BERR_DIGEST_INVALID, "provided digest did not match uploaded content");
    }
    if (store_fault_hit(STORE_FAULT_FSYNC) || fdatasync(u->fd) < 0)
        return berr_set(BERR_IO, "fsync upload: %s", strerror(errno));
    if (u->size > 2 * WRITEBACK_STEP) /* all clean now: keep only the last two steps cached */
        posix_fadvise(u->fd, 0, (off_t)(u->size - 2 * WRITEBACK_STEP), POSIX_FADV_DONTNEED);
    return 0;
}

int store_upload_place(store_upload *u, const char *digest, store_new_blob *out)
{
    char data[4200];
    bool placed;
    int rc;
    if (u->s->fs.s3) {
        rc = s3m_upload_verify_place(u, digest, &placed);
    } else {
        rc = upload_verify(u, digest, data, sizeof data);
        if (rc == 0) rc = blobfs_preplace(&u->s->fs, data, digest, &placed);
    }
    if (rc < 0) return rc;
    if (placed) u->s->used += (int64_t)u->size;
    snprintf(out->digest, sizeof out->digest, "%s", digest);
    out->size = u->size;
    upload_remove(u);
    return 0;
}

int store_blob_place_mem(store *s, const void *data, size_t len, store_new_blob *out)
{
    digest_buf(DIGEST_SHA256, data, len, out->digest);
    out->size = len;
    if (blobfs_exists(&s->fs, out->digest)) return 0;
    int qrc = quota_check(s, len);
    if (qrc < 0) return qrc;
    if (s->fs.s3) return s3m_blob_place_mem(s, data, len, out->digest);
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
    int rc = ok ? blobfs_preplace(&s->fs, p, out->digest, &placed) : storage_err("write blob", e);
    if (!placed) unlink(p);
    return rc;
}

int store_upload_finish(store_upload *u, const char *digest)
{
    char data[4200];
    place_arg a = {u->s, data, digest, false, u};
    int rc;
    if (u->s->fs.s3) {
        rc = s3m_upload_verify_place(u, digest, &a.placed);
    } else {
        rc = upload_verify(u, digest, data, sizeof data);
        if (rc == 0) rc = blobfs_preplace(&u->s->fs, data, digest, &a.placed);
    }
    if (rc < 0) return rc;
    rc = u->s->meta->ops->blob_commit(u->s->meta, u->repo, digest, u->size, place_cb, &a);
    if (rc < 0) return rc;
    if (a.placed) u->s->used += (int64_t)u->size;
    upload_remove(u);
    return 0;
}

int store_upload_digest(store_upload *u, char *out)
{
    int rc = store_upload_flush(u); /* nothing is ever staged in S3 mode */
    if (rc < 0) return rc;
    if (u->ctx_valid) {
        digest_ctx copy = u->ctx;
        digest_final(&copy, out);
        return 0;
    }
    char data[4200];
    snprintf(data, sizeof data, "%s/data", u->dir);
    return digest_file(data, u->algo, out, NULL);
}

int store_upload_cancel(store_upload *u)
{
    u->staged = 0;
    upload_remove(u);
    return 0;
}

void store_upload_close(store_upload *u)
{
    if (!u) return;
    if (u->s->fs.s3) {
        s3m_upload_close(u);
        return;
    }
    if (store_upload_flush(u) < 0)
        log_warn("msg=\"upload: received bytes not written at close\" err=\"%s\"", berr_msg());
    close(u->fd); /* releases the flock */
    if (u->stage) munmap(u->stage, STAGE_SIZE);
    free(u);
}

int store_upload_purge(store *s, int64_t max_age)
{
    if (s->fs.s3) return s3m_upload_purge(s, max_age);
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

/* ---- manifests and listings ---- */

int store_manifest_get(store *s, const char *repo, const char *ref, store_manifest *out)
{
    return s->meta->ops->manifest_get(s->meta, repo, ref, out);
}

void store_manifest_free(store_manifest *m)
{
    free(m->media_type);
    free(m->content);
    m->media_type = m->content = NULL;
}

typedef struct {
    store *s;
    const store_manifest_put_req *req;
} new_blobs_arg;

static int new_blobs_check(void *arg)
{
    new_blobs_arg *a = arg;
    for (size_t i = 0; i < a->req->nnew_blobs; i++)
        if (!blobfs_exists(&a->s->fs, a->req->new_blobs[i].digest))
            return berr_set(BERR_IO, "blob %s vanished before its commit",
                            a->req->new_blobs[i].digest);
    return 0;
}

int store_manifest_put(store *s, const store_manifest_put_req *req)
{
    if (req->nnew_blobs) {
        store_manifest_put_req q = *req;
        new_blobs_arg a = {s, req};
        q.check = new_blobs_check;
        q.check_arg = &a;
        return s->meta->ops->manifest_put(s->meta, &q);
    }
    return s->meta->ops->manifest_put(s->meta, req);
}

int store_manifest_delete(store *s, const char *repo, const char *digest)
{
    return s->meta->ops->manifest_delete(s->meta, repo, digest);
}

int store_tag_delete(store *s, const char *repo, const char *tag)
{
    return s->meta->ops->tag_delete(s->meta, repo, tag);
}

int store_tag_checked(store *s, const char *repo, const char *tag)
{
    return s->meta->ops->tag_checked(s->meta, repo, tag);
}

int store_repo_exists(store *s, const char *repo)
{
    return s->meta->ops->repo_exists(s->meta, repo);
}

int store_tags_list(store *s, const char *repo, const char *last, long n, store_list *out)
{
    memset(out, 0, sizeof *out);
    return s->meta->ops->tags_list(s->meta, repo, last, n, out);
}

int store_catalog(store *s, const char *last, long n, store_list *out)
{
    memset(out, 0, sizeof *out);
    return s->meta->ops->catalog(s->meta, last, n, out);
}

int store_list_add(store_list *l, const char *v)
{
    char **items = realloc(l->items, (l->n + 1) * sizeof *items);
    if (!items) return berr_set(BERR_INTERNAL, "out of memory");
    l->items = items;
    l->items[l->n] = strdup(v);
    if (!l->items[l->n]) return berr_set(BERR_INTERNAL, "out of memory");
    l->n++;
    return 0;
}

void store_list_free(store_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

int store_referrers(store *s, const char *repo, const char *digest, const char *artifact_type,
                    store_referrer_list *out)
{
    memset(out, 0, sizeof *out);
    return s->meta->ops->referrers(s->meta, repo, digest, artifact_type, out);
}

int store_charts(store *s, const char *prefix, store_chart_list *out)
{
    memset(out, 0, sizeof *out);
    int rc = s->meta->ops->charts(s->meta, prefix, false, out);
    if (rc < 0) store_chart_list_free(out);
    return rc;
}

int store_charts_repo(store *s, const char *repo, store_chart_list *out)
{
    memset(out, 0, sizeof *out);
    int rc = s->meta->ops->charts(s->meta, repo, true, out);
    if (rc < 0) store_chart_list_free(out);
    return rc;
}

int store_charts_changes(store *s, int64_t since, const char *prefix, store_list *out)
{
    memset(out, 0, sizeof *out);
    int rc = s->meta->ops->charts_changes(s->meta, since, prefix, out);
    if (rc < 0) store_list_free(out);
    return rc;
}

void store_chart_list_free(store_chart_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i].repo);
        free(l->items[i].tag);
        free(l->items[i].entry);
        free(l->items[i].yaml);
    }
    free(l->items);
    memset(l, 0, sizeof *l);
}

int store_charts_gen(store *s, int64_t *latest, int64_t *oldest)
{
    return s->meta->ops->charts_gen(s->meta, latest, oldest);
}

void store_referrer_list_free(store_referrer_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i].media_type);
        free(l->items[i].artifact_type);
        free(l->items[i].annotations_json);
    }
    free(l->items);
    memset(l, 0, sizeof *l);
}

/* ---- event notifications (store.h; written by store/meta_sql.c, delivered by src/notify/) ---- */

void store_event_pull(store *s, const char *repo, const char *digest, const char *media_type,
                      uint64_t size, const char *tag)
{
    if (!store_events_pulls()) return;
    if (s->meta->ops->event_pull(s->meta, repo, digest, media_type, size, tag) < 0)
        log_warn("msg=\"notifications: pull event not recorded\" repo=%s digest=%s err=\"%s\"",
                 repo, digest, berr_msg());
}

void store_event_list_free(store_event_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        store_event *e = &l->items[i];
        free(e->uuid);
        free(e->action);
        free(e->repo);
        free(e->digest);
        free(e->media_type);
        free(e->tag);
        free(e->context);
        free(e->refs);
    }
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

int store_events_read(store *s, int64_t after, int limit, store_event_list *out)
{
    return s->meta->ops->events_read(s->meta, after, limit, out);
}

int store_event_cursor(store *s, const char *endpoint, int64_t *seq)
{
    return s->meta->ops->event_cursor(s->meta, endpoint, seq);
}

int store_event_cursor_set(store *s, const char *endpoint, int64_t seq)
{
    return s->meta->ops->event_cursor_set(s->meta, endpoint, seq);
}

int store_events_backlog(store *s, int64_t after, int64_t keep, int64_t *count, int64_t *drop_to)
{
    return s->meta->ops->events_backlog(s->meta, after, keep, count, drop_to);
}

int store_events_prune(store *s, int64_t upto)
{
    return s->meta->ops->events_prune(s->meta, upto);
}
