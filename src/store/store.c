/*
 * store: lifecycle, crash recovery, blob access and upload sessions; manifests and listings are
 * passed through to the metadata backend. See store.h for the layout and the invariants.
 *
 * Blob bytes are the blob backend's (internal.h: blob_backend_ops, chosen once at store_open:
 * files, s3, or layout for `bundle serve`); this file holds what every backend shares: the
 * metadata transactions a blob's place and trash run inside, the quota, the session ids, and
 * the capabilities the server consults (store_caps).
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
    return s->fs.ops->recover(s);
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
    s->fs.ops = cfg->s3.enabled ? &blob_s3_ops : &blob_files_ops;
    s->meta_remote = cfg->database.enabled;
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
    if (s->fs.ops->init && (rc = s->fs.ops->init(s, cfg)) < 0) {
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
    if (s->fs.ops->close) s->fs.ops->close(&s->fs);
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

int store_blob_count(store *s, uint64_t *n)
{
    return s->meta->ops->blob_count(s->meta, n);
}

int store_quota_check(store *s, uint64_t more)
{
    if (s->quota > 0 && s->used + (int64_t)more > s->quota)
        return berr_set(BERR_STORAGE_FULL, "storage quota of %lld bytes reached",
                        (long long)s->quota);
    return 0;
}

int store_check_writable(store *s)
{
    return s->fs.ops->check_writable(s);
}

unsigned store_caps(const store *s)
{
    unsigned caps = s->fs.ops->caps;
    if (s->meta_remote) caps |= STORE_CAP_BLOCKING;
    if (!s->fs.ops->url || !s->redirect) caps &= ~STORE_CAP_REDIRECT;
    return caps;
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
    return s->fs.ops->open(s, digest, size, serve, out);
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
    return b->remote->fs.ops->read(&b->remote->fs, b->digest, off, len, sink, arg);
}

int store_blob_url(store *s, const char *digest, char *url, size_t len)
{
    if (!(store_caps(s) & STORE_CAP_REDIRECT)) return -BERR_UNSUPPORTED;
    return s->fs.ops->url(s, digest, url, len);
}

int store_upload_spool(store_upload *u)
{
    return u->s->fs.ops->upload_spool(u);
}

bool store_upload_growing(const store_upload *u)
{
    return u->s->fs.ops->upload_growing(u);
}

bool store_blob_present(store *s, const char *digest)
{
    return blobfs_exists(&s->fs, digest);
}

void store_set_blob_source(store *s, const store_blob_source *src)
{
    s->fs.ext = src;
    s->fs.ops = &blob_layout_ops; /* read-only source in front of the files */
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

static int uuid_check(const char *uuid)
{
    /* uuids are generated here; anything else never reaches the filesystem */
    if (strlen(uuid) != STORE_UUID_LEN) return berr_set(BERR_BLOB_UPLOAD_UNKNOWN, "upload unknown");
    for (const char *p = uuid; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || *p == '-'))
            return berr_set(BERR_BLOB_UPLOAD_UNKNOWN, "upload unknown");
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
    return s->fs.ops->upload_create(s, repo, algo, uuid_out);
}

int store_upload_open(store *s, const char *repo, const char *uuid, store_upload **out)
{
    int rc = uuid_check(uuid);
    return rc < 0 ? rc : s->fs.ops->upload_open(s, repo, uuid, out);
}

uint64_t store_upload_size(const store_upload *u)
{
    return u->size + u->staged;
}

uint64_t store_upload_written(const store_upload *u)
{
    return u->size;
}

int store_upload_write(store_upload *u, const void *data, size_t len)
{
    int qrc = store_quota_check(u->s, u->size + u->staged + len);
    return qrc < 0 ? qrc : u->s->fs.ops->upload_write(u, data, len);
}

int store_upload_reader(store_upload *u)
{
    return u->s->fs.ops->upload_reader(u);
}

int store_upload_save(store_upload *u)
{
    return u->s->fs.ops->upload_save(u);
}

void store_upload_rollback(store_upload *u)
{
    u->s->fs.ops->upload_rollback(u);
}

static void upload_remove(store_upload *u)
{
    u->s->fs.ops->upload_remove(u);
}

typedef struct {
    store *s;
    const char *digest;
    bool placed;     /* upload_verify_place put it in place already */
    store_upload *u; /* the session the blob came from (store_upload_finish) */
} place_arg;

static int place_cb(void *arg)
{
    place_arg *a = arg;
    return a->s->fs.ops->upload_commit_place(a->u, a->digest, a->placed);
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

int store_upload_place(store_upload *u, const char *digest, store_new_blob *out)
{
    bool placed;
    int rc = u->s->fs.ops->upload_verify_place(u, digest, &placed);
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
    int qrc = store_quota_check(s, len);
    return qrc < 0 ? qrc : s->fs.ops->place_mem(s, data, len, out->digest);
}

int store_upload_finish(store_upload *u, const char *digest)
{
    place_arg a = {u->s, digest, false, u};
    int rc = u->s->fs.ops->upload_verify_place(u, digest, &a.placed);
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
    if (u) u->s->fs.ops->upload_close(u);
}

int store_upload_purge(store *s, int64_t max_age)
{
    return s->fs.ops->upload_purge(s, max_age);
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

int store_manifest_parents(store *s, const char *repo, const char *digest, store_list *out)
{
    memset(out, 0, sizeof *out);
    int rc = s->meta->ops->manifest_parents(s->meta, repo, digest, out);
    if (rc < 0) store_list_free(out);
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
    store_event_note(s, "pull", repo, digest, media_type, size, tag);
}

void store_event_note(store *s, const char *action, const char *repo, const char *digest,
                      const char *media_type, uint64_t size, const char *tag)
{
    if (!store_events_on()) return;
    if (s->meta->ops->event_note(s->meta, action, repo, digest, media_type, size, tag) < 0)
        log_warn("msg=\"notifications: event not recorded\" action=%s repo=%s digest=%s "
                 "err=\"%s\"",
                 action, repo, digest, berr_msg());
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
