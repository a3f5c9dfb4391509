/*
 * s3mode: the s3 blob backend (blob_s3_ops, store/internal.h): the store with its blobs in
 * S3-compatible object storage (storage.s3), so several berth replicas sharing a bucket and a
 * PostgreSQL database serve one registry. Every operation may wait on the network, so the
 * backend reports STORE_CAP_BLOCKING and the server runs blob and session work off its event loop.
 *
 * Blobs are objects blobs/<algo>/<2 hex>/<hex>; gc and eviction move one to trash/<algo>-<hex>
 * (a copy, then a delete) inside their metadata transaction and delete it after the commit; at
 * start, a trashed object whose row survived is put back (recover).
 *
 * Upload sessions live in the bucket, so a chunked upload may continue on any replica:
 *   uploads/<uuid>/state       JSON: repo, digest algorithm, size, the hashing context (base64),
 *                              the multipart upload id and its parts' ETags, the tail generation
 *   uploads/<uuid>/data        the multipart upload the parts go to
 *   uploads/<uuid>/tail-<gen>  bytes after the last part (less than storage.s3.chunksize)
 * Bytes are hashed as they arrive and buffered in memory up to one part (chunksize); each full
 * part is uploaded at once, so no local copy of a blob is ever made. At the end of a request the
 * tail and then the state are written (a new tail generation first, so the state always names a
 * whole tail). A request holds the session's lease ("upload <uuid>", in the metadata engine,
 * renewed while it writes): a second concurrent request on one session is refused, as the
 * filesystem mode's flock does. A refused request writes no state: the session stays where it was.
 *
 * Finishing verifies the digest from the saved context (never re-reading), then puts the blob
 * object: a small blob (no part uploaded) is one PUT of the buffer; a larger one completes the
 * multipart upload and copies it server-side to blobs/<algo>/<2 hex>/<hex>. Only verified bytes
 * ever reach a blob key, and S3 makes an object visible whole or not at all. Inside the commit's
 * metadata transaction the object is checked again (and put again from the buffer or the
 * completed upload if a gc removed it meanwhile), as blobfs does for files.
 *
 * Reads: store_blob_open downloads a blob into an unlinked temporary file for the callers that
 * need a descriptor (Helm, margo checks, bundles, fsck); the registry's blob GET instead streams
 * the object in ranges (store_blob_read) or redirects to a presigned URL (store_blob_url).
 */
#include "store/internal.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <nettle/base64.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_MAX (4u << 20)
#define LEASE_TTL_MS (30 * 1000) /* a killed replica holds a session this long */
#define LEASE_RENEW_MS (10 * 1000)

/* ---- blobs: objects under blobs/, trashed under trash/ ---- */

static void trash_key(const char *digest, char *out, size_t outlen)
{
    const char *colon = strchr(digest, ':');
    snprintf(out, outlen, "trash/%.*s-%s", (int)(colon - digest), digest, colon + 1);
}

static int s3b_stat(const blobfs *b, const char *digest, uint64_t *size)
{
    char k[512];
    blobfs_key(digest, k, sizeof k);
    return s3_head(b->s3, k, size);
}

static void s3b_where(const blobfs *b, const char *digest, char *out, size_t len)
{
    (void)b;
    blobfs_key(digest, out, len);
}

static int s3b_trash(const blobfs *b, const char *digest)
{
    char k[512], t[512];
    uint64_t size;
    blobfs_key(digest, k, sizeof k);
    trash_key(digest, t, sizeof t);
    int rc = s3_head(b->s3, k, &size);
    if (rc == -BERR_BLOB_UNKNOWN) return 0;
    if (rc == 0) rc = s3_copy(b->s3, k, t, size);
    return rc < 0 ? rc : s3_delete(b->s3, k);
}

static int s3b_trash_purge(const blobfs *b, const char *digest)
{
    char t[512];
    trash_key(digest, t, sizeof t);
    return s3_delete(b->s3, t);
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

static int s3b_hash(const blobfs *b, const char *digest, digest_algo algo, char *got,
                    uint64_t *size, char *where, size_t wlen)
{
    blobfs_key(digest, where, wlen);
    hash_sink_arg h = {.n = 0};
    digest_init(&h.ctx, algo);
    int rc = s3_get(b->s3, where, 0, 0, hash_sink, &h);
    if (rc < 0) return rc;
    digest_final(&h.ctx, got);
    *size = h.n;
    return 0;
}

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

static int s3b_each(const blobfs *b, bool trash,
                    int (*cb)(void *arg, const char *digest, int64_t mtime), void *arg)
{
    walk_arg w = {b, cb, arg, trash};
    return s3_list(b->s3, trash ? "trash/" : "blobs/", walk_obj, &w);
}

static int s3b_restore(const blobfs *b, const char *digest)
{
    char k[512], t[512];
    uint64_t size;
    blobfs_key(digest, k, sizeof k);
    trash_key(digest, t, sizeof t);
    int rc = s3_head(b->s3, t, &size);
    if (rc == 0) rc = s3_copy(b->s3, t, k, size);
    return rc < 0 ? rc : s3_delete(b->s3, t);
}

static int s3b_read(const blobfs *b, const char *digest, uint64_t off, uint64_t len, blob_sink sink,
                    void *arg)
{
    char k[512];
    blobfs_key(digest, k, sizeof k);
    return s3_get(b->s3, k, off, len, sink, arg);
}

static int s3b_url(store *s, const char *digest, char *url, size_t len)
{
    char k[512];
    blobfs_key(digest, k, sizeof k);
    return s3_presign(s->fs.s3, k, s->redirect_expiry, url, len);
}

/* Serving: only the identity (the bytes stay in the bucket: read or url); otherwise a copy in
 * an unlinked local file for callers that need a descriptor. */
static int s3m_blob_fetch(store *s, const char *digest, uint64_t size, store_blob *out);
static void s3m_upload_remove(store_upload *u);
static int s3b_open(store *s, const char *digest, uint64_t size, bool serve, store_blob *out)
{
    if (!serve) return s3m_blob_fetch(s, digest, size, out);
    out->remote = s;
    out->size = size;
    snprintf(out->digest, sizeof out->digest, "%s", digest);
    return 0;
}

static void s3b_close(blobfs *b)
{
    s3_close(b->s3);
    b->s3 = NULL;
}

static int s3m_open(store *s, const config *cfg)
{
    int rc = s3_open(&s->fs.s3, &cfg->s3);
    if (rc < 0) return rc;
    s->chunk = (size_t)cfg->s3.chunksize;
    s->redirect = cfg->s3.redirect;
    s->redirect_expiry = (long)cfg->s3.redirect_expiry_s;
    rc = s3_check(s->fs.s3);
    if (rc < 0) {
        s3_close(s->fs.s3);
        s->fs.s3 = NULL;
    }
    return rc;
}

static int restore_trashed(void *arg, const char *digest, int64_t mtime)
{
    (void)mtime;
    store *s = arg;
    if (s->meta->ops->blob_lookup(s->meta, NULL, digest, NULL) == 0) {
        log_warn("msg=\"recovery: restoring blob from interrupted gc\" digest=%s", digest);
        return s3b_restore(&s->fs, digest) < 0 ? 0 : 0;
    }
    s3b_trash_purge(&s->fs, digest);
    return 0;
}

static int s3m_recover_trash(store *s)
{
    return s3b_each(&s->fs, true, restore_trashed, s);
}

static int s3m_check_writable(store *s)
{
    char k[128], host[64] = "";
    gethostname(host, sizeof host - 1);
    snprintf(k, sizeof k, "tmp/health-%s-%d-%ld", host, (int)getpid(), (long)gettid());
    int rc = s3_put(s->fs.s3, k, "ok", 2);
    if (rc == 0) rc = s3_delete(s->fs.s3, k);
    return rc < 0 ? berr_rewrap(BERR_UNAVAILABLE, "blob storage (S3) not writable: ") : 0;
}

/* ---- reads ---- */

static int fd_sink(void *arg, const char *data, size_t len)
{
    int fd = *(int *)arg;
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static int s3m_blob_fetch(store *s, const char *digest, uint64_t size, store_blob *out)
{
    char dir[4096], k[512];
    snprintf(dir, sizeof dir, "%s/tmp", s->root);
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) return berr_set(BERR_IO, "temporary file in %s: %s", dir, strerror(errno));
    blobfs_key(digest, k, sizeof k);
    int rc = s3_get(s->fs.s3, k, 0, 0, fd_sink, &fd);
    struct stat st;
    if (rc == 0 && (fstat(fd, &st) < 0 || (uint64_t)st.st_size != size))
        rc = berr_set(BERR_IO, "blob %s: object size differs from the recorded %llu", digest,
                      (unsigned long long)size);
    if (rc < 0) {
        close(fd);
        if (rc == -BERR_BLOB_UNKNOWN)
            log_error("msg=\"blob object missing\" digest=%s key=%s", digest, k);
        return rc == -BERR_BLOB_UNKNOWN ? berr_set(BERR_BLOB_UNKNOWN, "blob unknown to registry")
                                        : rc;
    }
    out->fd = fd;
    out->offset = 0;
    out->size = size;
    return 0;
}

/* ---- upload sessions ---- */

static void ukey(const store_upload *u, const char *what, char *out, size_t len)
{
    snprintf(out, len, "uploads/%s/%s", u->uuid, what);
}

static void tail_key(const store_upload *u, uint64_t gen, char *out, size_t len)
{
    snprintf(out, len, "uploads/%s/tail-%llu", u->uuid, (unsigned long long)gen);
}

static char *ctx_b64(const digest_ctx *ctx)
{
    size_t n = BASE64_ENCODE_RAW_LENGTH(sizeof *ctx);
    char *out = malloc(n + 1);
    if (!out) return NULL;
    base64_encode_raw(out, sizeof *ctx, (const uint8_t *)ctx);
    out[n] = '\0';
    return out;
}

static bool ctx_unb64(const char *in, digest_ctx *ctx)
{
    struct base64_decode_ctx d;
    size_t n = sizeof *ctx + 8;
    uint8_t buf[sizeof *ctx + 8];
    base64_decode_init(&d);
    if (!base64_decode_update(&d, &n, buf, strlen(in), in) || !base64_decode_final(&d) ||
        n != sizeof *ctx)
        return false;
    memcpy(ctx, buf, sizeof *ctx);
    return true;
}

static int state_put(store_upload *u)
{
    json_t *parts = json_array();
    for (int i = 0; i < u->nparts; i++)
        json_array_append_new(parts, json_string(u->etags[i]));
    char *h = ctx_b64(&u->ctx);
    json_t *j = json_pack("{s:s, s:s, s:I, s:s, s:s, s:o, s:I, s:I}", "repo", u->repo, "algo",
                          digest_algo_name(u->algo), "size", (json_int_t)u->size, "hash",
                          h ? h : "", "mpu", u->mpu, "parts", parts, "tail",
                          (json_int_t)u->tail_gen, "tailsize", (json_int_t)u->tail_size);
    free(h);
    char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!txt) return berr_set(BERR_INTERNAL, "out of memory");
    char k[128];
    ukey(u, "state", k, sizeof k);
    int rc = s3_put(u->s->fs.s3, k, txt, strlen(txt));
    free(txt);
    return rc;
}

static int s3m_upload_create(store *s, const char *repo, digest_algo algo, const char *uuid)
{
    store_upload u = {.s = s, .algo = algo};
    snprintf(u.uuid, sizeof u.uuid, "%s", uuid);
    snprintf(u.repo, sizeof u.repo, "%s", repo);
    digest_init(&u.ctx, algo);
    return state_put(&u);
}

static int lease_key(const char *uuid, char *out, size_t len)
{
    return snprintf(out, len, "upload %s", uuid);
}

static int state_load(store_upload *u)
{
    char k[128], *txt = NULL;
    size_t len;
    ukey(u, "state", k, sizeof k);
    int rc = s3_get_mem(u->s->fs.s3, k, STATE_MAX, &txt, &len);
    if (rc == -BERR_BLOB_UNKNOWN)
        return berr_set(BERR_BLOB_UPLOAD_UNKNOWN, "upload unknown to registry");
    if (rc < 0) return rc;
    json_error_t je;
    json_t *j = json_loadb(txt, len, 0, &je);
    free(txt);
    const char *repo = NULL, *algo = NULL, *hash = NULL, *mpu = NULL;
    json_int_t size = 0, tail = 0, tailsize = 0;
    json_t *parts = NULL;
    if (!j ||
        json_unpack(j, "{s:s, s:s, s:I, s:s, s:s, s:o, s:I, s:I}", "repo", &repo, "algo", &algo,
                    "size", &size, "hash", &hash, "mpu", &mpu, "parts", &parts, "tail", &tail,
                    "tailsize", &tailsize) < 0 ||
        !json_is_array(parts) || digest_algo_parse(algo, &u->algo) < 0 ||
        !ctx_unb64(hash, &u->ctx) || strlen(mpu) >= sizeof u->mpu) {
        json_decref(j);
        return berr_set(BERR_IO, "upload %s: unreadable session state", u->uuid);
    }
    if (!u->repo[0]) { /* the purge: any repository */
        snprintf(u->repo, sizeof u->repo, "%s", repo);
    } else if (strcmp(repo, u->repo) != 0) {
        json_decref(j);
        return berr_set(BERR_BLOB_UPLOAD_UNKNOWN, "upload unknown to registry");
    }
    u->size = u->saved_size = u->opened = (uint64_t)size;
    u->tail_gen = (uint64_t)tail;
    u->tail_size = (uint64_t)tailsize;
    snprintf(u->mpu, sizeof u->mpu, "%s", mpu);
    u->nparts = u->saved_parts = (int)json_array_size(parts);
    u->cap_parts = u->nparts + 16;
    u->etags = calloc((size_t)u->cap_parts, S3_ETAG_MAX);
    if (!u->etags) {
        json_decref(j);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    for (int i = 0; i < u->nparts; i++) {
        const char *e = json_string_value(json_array_get(parts, (size_t)i));
        snprintf(u->etags[i], S3_ETAG_MAX, "%s", e ? e : "");
    }
    json_decref(j);
    u->ctx_valid = true;
    return 0;
}

static int s3m_upload_open(store *s, const char *repo, const char *uuid, store_upload **out)
{
    store_upload *u = calloc(1, sizeof *u);
    if (!u) return berr_set(BERR_INTERNAL, "out of memory");
    u->s = s;
    u->fd = -1;
    u->spool = -1;
    snprintf(u->uuid, sizeof u->uuid, "%s", uuid);
    snprintf(u->repo, sizeof u->repo, "%s", repo);
    uint64_t r[2];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) r[0] = r[1] = (uint64_t)store_now();
    snprintf(u->owner, sizeof u->owner, "%016llx%016llx", (unsigned long long)r[0],
             (unsigned long long)r[1]);
    char lk[64];
    lease_key(uuid, lk, sizeof lk);
    int rc = store_lease_take(s, lk, u->owner, LEASE_TTL_MS);
    if (rc == -BERR_CONFLICT) {
        free(u);
        return berr_set(BERR_BLOB_UPLOAD_INVALID, "upload session is in use by another request");
    }
    if (rc == 0) rc = state_load(u);
    if (rc < 0) {
        u->owner[0] ? store_lease_drop(s, lk, u->owner) : 0;
        free(u->etags);
        free(u);
        return rc;
    }
    u->renewed = store_now();
    *out = u;
    return 0;
}

static int ensure_tail(store_upload *u)
{
    if (u->tail_loaded) return 0;
    u->blen = 0;
    if (u->tail_size > 0) {
        char k[128], *data = NULL;
        size_t len;
        tail_key(u, u->tail_gen, k, sizeof k);
        int rc = s3_get_mem(u->s->fs.s3, k, u->s->chunk, &data, &len);
        if (rc == 0 && len != u->tail_size) {
            free(data);
            rc = berr_set(BERR_IO, "upload %s: tail object has %zu bytes, state says %llu", u->uuid,
                          len, (unsigned long long)u->tail_size);
        }
        if (rc < 0) return rc;
        free(u->buf);
        u->buf = data;
        u->blen = u->bcap = len;
    }
    u->tail_loaded = true;
    return 0;
}

/* Part uploads run on a thread of their own, one at a time, while the request goes on
 * receiving the next part: the client's bytes and S3's overlap instead of taking turns. */
typedef struct {
    store_upload *u;
    char key[128];
    int n;
    char *data;
    size_t len;
    char etag[S3_ETAG_MAX];
    int rc;
    char msg[512]; /* the error message (berr's is per thread) */
    bool threaded; /* sent by a thread of its own (else it already ran) */
} part_job;

static void *part_thread(void *arg)
{
    part_job *j = arg;
    store_upload *u = j->u;
    j->rc = s3_mpu_part(u->s->fs.s3, j->key, u->mpu, j->n, j->data, j->len, j->etag);
    if (j->rc < 0) snprintf(j->msg, sizeof j->msg, "%s", berr_msg());
    return NULL;
}

/* Waits for the part in flight and records its ETag: 0 or its error. */
static int part_wait(store_upload *u)
{
    part_job *j = u->inflight;
    if (!j) return 0;
    if (j->threaded) pthread_join(u->inflight_th, NULL);
    u->inflight = NULL;
    int rc = j->rc < 0 ? berr_set((berr)-j->rc, "upload part %d: %s", j->n, j->msg) : 0;
    if (rc == 0) snprintf(u->etags[j->n - 1], S3_ETAG_MAX, "%s", j->etag);
    free(u->spare);
    u->spare = j->data; /* the next part's buffer */
    free(j);
    if (rc < 0) u->dead = true; /* the session as saved stays; this request fails */
    return rc;
}

/* Sends the first n bytes of the buffer as the next part (in the background when async). */
static int flush_part(store_upload *u, size_t n, bool async)
{
    int rc = part_wait(u);
    if (rc < 0) return rc;
    char k[128];
    ukey(u, "data", k, sizeof k);
    if (!u->mpu[0] && (rc = s3_mpu_create(u->s->fs.s3, k, u->mpu)) < 0) return rc;
    if (u->nparts == u->cap_parts) {
        int cap = u->cap_parts * 2 + 16;
        char(*e)[S3_ETAG_MAX] = realloc(u->etags, (size_t)cap * S3_ETAG_MAX);
        if (!e) return berr_set(BERR_INTERNAL, "out of memory");
        u->etags = e;
        u->cap_parts = cap;
    }
    if (u->nparts >= 10000)
        return berr_set(BERR_TOO_LARGE, "upload over 10000 parts (raise storage.s3.chunksize)");
    part_job *j = calloc(1, sizeof *j);
    /* the part keeps the buffer; what follows it moves to a fresh (or the spare) one */
    char *rest = u->spare && u->spare_cap >= u->bcap ? u->spare : malloc(u->bcap);
    if (rest == u->spare) u->spare = NULL;
    if (!j || !rest) {
        free(j);
        if (rest != u->spare) free(rest);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    memcpy(rest, u->buf + n, u->blen - n);
    *j = (part_job){.u = u, .n = u->nparts + 1, .data = u->buf, .len = n};
    snprintf(j->key, sizeof j->key, "%s", k);
    u->buf = rest;
    u->spare_cap = u->bcap;
    u->blen -= n;
    u->nparts++;
    u->inflight = j;
    j->threaded = async && pthread_create(&u->inflight_th, NULL, part_thread, j) == 0;
    if (j->threaded) return 0;
    part_thread(j); /* synchronously: the last part, or no thread to be had */
    return part_wait(u);
}

static int s3m_upload_write(store_upload *u, const void *data, size_t len)
{
    if (u->completed)
        return berr_set(BERR_INTERNAL, "upload %s: written after it was read", u->uuid);
    int rc = ensure_tail(u);
    if (rc < 0) return rc;
    int64_t now = store_now();
    if (now - u->renewed > LEASE_RENEW_MS) {
        char lk[64];
        lease_key(u->uuid, lk, sizeof lk);
        rc = store_lease_take(u->s, lk, u->owner, LEASE_TTL_MS);
        if (rc < 0) return berr_set(BERR_BLOB_UPLOAD_INVALID, "upload session lease lost");
        u->renewed = now;
    }
    if (u->blen + len > u->bcap) {
        size_t cap = u->bcap ? u->bcap : 64 * 1024;
        while (cap < u->blen + len)
            cap *= 2;
        char *nb = realloc(u->buf, cap);
        if (!nb) return berr_set(BERR_INTERNAL, "out of memory");
        u->buf = nb;
        u->bcap = cap;
    }
    if (u->spool >= 0) { /* readers see the bytes before the part is sent */
        const char *p = data;
        for (size_t off = 0; off < len;) {
            ssize_t n = pwrite(u->spool, p + off, len - off, (off_t)(u->size + off));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0)
                return berr_set(errno == ENOSPC ? BERR_STORAGE_FULL : BERR_IO, "spool write: %s",
                                strerror(errno));
            off += (size_t)n;
        }
    }
    memcpy(u->buf + u->blen, data, len);
    u->blen += len;
    digest_update(&u->ctx, data, len);
    u->size += len;
    while (u->blen >= u->s->chunk)
        if ((rc = flush_part(u, u->s->chunk, true)) < 0) return rc;
    return 0;
}

/* Completes the multipart upload (the tail as its last part) into uploads/<uuid>/data: after
 * this the session takes no more bytes. */
static int complete_mpu(store_upload *u)
{
    if (u->completed) return 0;
    int rc = 0;
    if (u->blen > 0 && (rc = flush_part(u, u->blen, false)) < 0) return rc;
    if ((rc = part_wait(u)) < 0) return rc;
    char k[128];
    ukey(u, "data", k, sizeof k);
    if ((rc = s3_mpu_complete(u->s->fs.s3, k, u->mpu, u->etags, u->nparts)) < 0) return rc;
    u->mpu[0] = '\0'; /* completed: nothing to abort */
    u->completed = true;
    return 0;
}

static int s3m_upload_spool(store_upload *u)
{
    if (u->spool >= 0) return 0;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tmp", u->s->root);
    u->spool = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (u->spool < 0) return berr_set(BERR_IO, "spool file in %s: %s", dir, strerror(errno));
    return 0;
}

static int s3m_upload_reader(store_upload *u)
{
    if (u->spool >= 0) { /* a reader of its own, at its own offsets */
        char p[64];
        snprintf(p, sizeof p, "/proc/self/fd/%d", u->spool);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        return fd >= 0 ? fd : berr_set(BERR_IO, "open spool: %s", strerror(errno));
    }
    int rc = part_wait(u);
    if (rc == 0) rc = ensure_tail(u);
    if (rc < 0) return rc;
    if (u->nparts > 0) { /* the bytes are in parts: complete them and read the object back */
        if ((rc = complete_mpu(u)) < 0) return rc;
        char dir[4096], k[128];
        snprintf(dir, sizeof dir, "%s/tmp", u->s->root);
        int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd < 0) return berr_set(BERR_IO, "temporary file in %s: %s", dir, strerror(errno));
        ukey(u, "data", k, sizeof k);
        rc = s3_get(u->s->fs.s3, k, 0, 0, fd_sink, &fd);
        if (rc == 0 && lseek(fd, 0, SEEK_SET) < 0)
            rc = berr_set(BERR_IO, "seek: %s", strerror(errno));
        if (rc < 0) {
            close(fd);
            return rc;
        }
        return fd;
    }
    int fd = memfd_create("berth-upload", MFD_CLOEXEC);
    if (fd < 0) return berr_set(BERR_IO, "memfd: %s", strerror(errno));
    if (fd_sink(&fd, u->buf, u->blen) < 0 || lseek(fd, 0, SEEK_SET) < 0) {
        close(fd);
        return berr_set(BERR_IO, "memfd write: %s", strerror(errno));
    }
    return fd;
}

static int s3m_upload_save(store_upload *u)
{
    int prc = part_wait(u);
    if (prc < 0) return prc;
    if (u->dead || u->completed || (u->size == u->saved_size && u->nparts == u->saved_parts))
        return 0;
    uint64_t old_gen = u->tail_gen, old_size = u->tail_size;
    char k[128];
    int rc = 0;
    if (u->blen > 0) {
        tail_key(u, old_gen + 1, k, sizeof k);
        rc = s3_put(u->s->fs.s3, k, u->buf, u->blen);
        if (rc < 0) return rc;
    }
    u->tail_gen = old_gen + 1;
    u->tail_size = u->blen;
    rc = state_put(u);
    if (rc < 0) {
        u->tail_gen = old_gen;
        u->tail_size = old_size;
        return rc;
    }
    if (old_size > 0) {
        tail_key(u, old_gen, k, sizeof k);
        s3_delete(u->s->fs.s3, k);
    }
    u->saved_size = u->size;
    u->saved_parts = u->nparts;
    return 0;
}

static void s3m_upload_rollback(store_upload *u)
{
    /* nothing of this request was saved: the state in the bucket is the session as opened */
    u->dead = true;
    u->size = u->opened;
}

/* Puts the verified bytes under the blob's key: the buffer, or the completed multipart upload. */
static int place_object(store_upload *u, const char *key)
{
    if (u->nparts == 0) return s3_put(u->s->fs.s3, key, u->buf, u->blen);
    char k[128];
    ukey(u, "data", k, sizeof k);
    return s3_copy(u->s->fs.s3, k, key, u->size);
}

static int s3m_upload_verify_place(store_upload *u, const char *digest, bool *placed)
{
    *placed = false;
    digest_algo want;
    int rc = digest_parse(digest, &want);
    if (rc < 0) return rc;
    if ((rc = ensure_tail(u)) < 0) return rc;
    if (want != u->algo) {
        s3m_upload_remove(u);
        return berr_set(BERR_DIGEST_INVALID, "digest %s does not use the upload's algorithm (%s)",
                        digest, digest_algo_name(u->algo));
    }
    char got[DIGEST_STR_MAX];
    digest_ctx copy = u->ctx;
    digest_final(&copy, got);
    if (strcmp(got, digest) != 0) {
        s3m_upload_remove(u);
        return berr_set(BERR_DIGEST_INVALID, "provided digest did not match uploaded content");
    }
    if (u->nparts > 0 && (rc = complete_mpu(u)) < 0) return rc; /* the tail: its last part */
    char key[512];
    blobfs_key(digest, key, sizeof key);
    if (s3_head(u->s->fs.s3, key, NULL) == 0) return 0; /* stored already: the same bytes */
    rc = place_object(u, key);
    if (rc == 0) *placed = true;
    return rc;
}

static int s3m_upload_commit_place(store_upload *u, const char *digest, bool placed)
{
    (void)placed; /* checked again either way: a gc may have removed it since */
    char key[512];
    blobfs_key(digest, key, sizeof key);
    if (s3_head(u->s->fs.s3, key, NULL) == 0) return 0;
    log_warn("msg=\"blob removed before its commit: putting it back\" digest=%s", digest);
    return place_object(u, key);
}

static void s3m_upload_remove(store_upload *u)
{
    part_wait(u);
    char k[128];
    ukey(u, "data", k, sizeof k);
    if (u->mpu[0]) s3_mpu_abort(u->s->fs.s3, k, u->mpu);
    u->mpu[0] = '\0';
    s3_delete(u->s->fs.s3, k);
    if (u->tail_size > 0) {
        tail_key(u, u->tail_gen, k, sizeof k);
        s3_delete(u->s->fs.s3, k);
    }
    ukey(u, "state", k, sizeof k);
    s3_delete(u->s->fs.s3, k);
    u->dead = true;
}

static void s3m_upload_close(store_upload *u)
{
    part_wait(u);
    if (u->spool >= 0) close(u->spool);
    free(u->spare);
    char lk[64];
    lease_key(u->uuid, lk, sizeof lk);
    store_lease_drop(u->s, lk, u->owner);
    free(u->etags);
    free(u->buf);
    free(u);
}

typedef struct {
    store *s;
    int64_t cutoff;
    store_list stale;
} purge_walk;

static int purge_obj(void *arg, const char *key, uint64_t size, int64_t mtime)
{
    (void)size;
    purge_walk *w = arg;
    size_t kl = strlen(key);
    if (kl != 8 + STORE_UUID_LEN + 6 || strcmp(key + kl - 6, "/state") != 0) return 0;
    if (mtime * 1000 >= w->cutoff) return 0;
    char uuid[STORE_UUID_LEN + 1];
    snprintf(uuid, sizeof uuid, "%s", key + 8);
    return store_list_add(&w->stale, uuid);
}

static int s3m_upload_purge(store *s, int64_t max_age)
{
    purge_walk w = {s, store_now() - max_age * 1000, {0}};
    int rc = s3_list(s->fs.s3, "uploads/", purge_obj, &w);
    int n = 0;
    for (size_t i = 0; rc == 0 && i < w.stale.n; i++) {
        if (!w.stale.items[i]) continue;
        store_upload *u = calloc(1, sizeof *u);
        if (!u) break;
        u->s = s;
        u->spool = -1;
        snprintf(u->uuid, sizeof u->uuid, "%s", w.stale.items[i]);
        snprintf(u->owner, sizeof u->owner, "purge-%d", (int)getpid());
        char lk[64];
        lease_key(u->uuid, lk, sizeof lk);
        /* the repository is not known here: state_load takes the state's (u->repo empty) */
        if (store_lease_take(s, lk, u->owner, LEASE_TTL_MS) == 0 && state_load(u) == 0) {
            s3m_upload_remove(u);
            /* parts of a request whose replica died before it saved the session */
            char k[128];
            ukey(u, "data", k, sizeof k);
            s3_mpu_abort_all(s->fs.s3, k);
            n++;
        }
        s3m_upload_close(u);
    }
    store_list_free(&w.stale);
    if (n) log_info("msg=\"purged stale uploads\" count=%d", n);
    return rc < 0 ? rc : n;
}

static int s3m_blob_place_mem(store *s, const void *data, size_t len, const char *digest)
{
    char key[512];
    blobfs_key(digest, key, sizeof key);
    if (s3_head(s->fs.s3, key, NULL) == 0) return 0;
    return s3_put(s->fs.s3, key, data, len);
}

static bool s3m_upload_growing(const store_upload *u)
{
    return u->spool >= 0; /* readable while written only when spooled */
}

const blob_backend_ops blob_s3_ops = {
    .name = "s3",
    .caps = STORE_CAP_BLOCKING | STORE_CAP_REDIRECT,
    .init = s3m_open,
    .close = s3b_close,
    .recover = s3m_recover_trash,
    .check_writable = s3m_check_writable,
    .open = s3b_open,
    .read = s3b_read,
    .url = s3b_url,
    .stat = s3b_stat,
    .hash = s3b_hash,
    .where = s3b_where,
    .each = s3b_each,
    .place_mem = s3m_blob_place_mem,
    .trash = s3b_trash,
    .trash_purge = s3b_trash_purge,
    .upload_create = s3m_upload_create,
    .upload_open = s3m_upload_open,
    .upload_write = s3m_upload_write,
    .upload_reader = s3m_upload_reader,
    .upload_spool = s3m_upload_spool,
    .upload_growing = s3m_upload_growing,
    .upload_save = s3m_upload_save,
    .upload_rollback = s3m_upload_rollback,
    .upload_verify_place = s3m_upload_verify_place,
    .upload_commit_place = s3m_upload_commit_place,
    .upload_remove = s3m_upload_remove,
    .upload_close = s3m_upload_close,
    .upload_purge = s3m_upload_purge,
};
