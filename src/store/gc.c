/*
 * gc: online garbage collection. It runs while the registry serves, from the server or from a
 * separate `berth gc` process, with no read-only window:
 *  1. in one metadata transaction, untagged manifests that nothing references (no tag, no index,
 *     no existing subject) and that are older than the grace period are removed, repeatedly, so
 *     the children of a removed index follow it;
 *  2. each blob that no manifest references and that was neither uploaded nor linked within the
 *     grace period is re-checked and removed in its own short transaction, its file moved to
 *     trash inside that transaction and unlinked after it commits.
 * An upload that finishes or a mount that lands refreshes the blob's timestamps under the same
 * lock, and a manifest PUT checks its blobs under that lock too, so gc never removes a blob that
 * a push is about to reference: the push either sees the blob (and gc then sees the reference or
 * the fresh timestamp) or gets MANIFEST_BLOB_UNKNOWN and re-uploads. The grace period (gc.grace,
 * default 1h) is what protects blobs uploaded by a client that has not yet sent its manifest.
 * Files in blobs/ without a metadata row (left by a crash between rename and commit) are removed
 * too once older than the grace period.
 */
#include "store/internal.h"
#include "ui/ui.h"
#include "util/err.h"
#include "util/metrics.h"
#include "util/log.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    store *s;
    const char *digest;
} trash_arg;

static int trash_cb(void *arg)
{
    trash_arg *a = arg;
    return blobfs_trash(&a->s->fs, a->digest);
}

typedef struct {
    store *s;
    const char *digest;
    bool trashed;
} orphan_arg;

static int orphan_cb(void *arg)
{
    orphan_arg *a = arg;
    if (a->s->meta->ops->blob_lookup(a->s->meta, NULL, a->digest, NULL) != -BERR_BLOB_UNKNOWN)
        return 0; /* committed meanwhile: not an orphan any more */
    int rc = blobfs_trash(&a->s->fs, a->digest);
    a->trashed = rc == 0;
    return rc;
}

/* One orphan (file or object unknown to the metadata, older than the cutoff): re-checked under
 * the write lock, like any blob removal. */
static void gc_orphan(store *s, store_gc_opts *o, const char *digest, const char *where)
{
    log_info("msg=\"gc: %s orphan file\" path=%s", o->dry_run ? "would remove" : "remove", where);
    if (!o->dry_run) {
        orphan_arg oa = {s, digest, false};
        if (s->meta->ops->locked(s->meta, orphan_cb, &oa) == 0 && oa.trashed)
            blobfs_trash_purge(&s->fs, digest);
    }
    o->files_removed++;
}

typedef struct {
    store *s;
    store_gc_opts *o;
    int64_t cutoff;
} orphan_walk;

static int orphan_obj(void *arg, const char *digest, int64_t mtime)
{
    orphan_walk *w = arg;
    if (mtime >= w->cutoff ||
        w->s->meta->ops->blob_lookup(w->s->meta, NULL, digest, NULL) != -BERR_BLOB_UNKNOWN)
        return 0;
    char where[4096];
    w->s->fs.ops->where(&w->s->fs, digest, where, sizeof where);
    gc_orphan(w->s, w->o, digest, where);
    return 0;
}

/* Orphan files: in blobs/ but unknown to the metadata and older than the cutoff. */
static void gc_orphans(store *s, store_gc_opts *o, int64_t cutoff)
{
    orphan_walk w = {s, o, cutoff};
    blobfs_each(&s->fs, false, orphan_obj, &w);
}

int store_gc(store *s, store_gc_opts *o)
{
    int64_t cutoff = store_now() - o->grace_s * 1000;
    store_list cands = {0};
    int rc = s->meta->ops->gc_manifests(s->meta, cutoff, o->dry_run, &o->manifests_removed, &cands);
    if (rc < 0) return rc;
    for (size_t i = 0; rc == 0 && i < cands.n; i++) {
        const char *digest = cands.items[i];
        uint64_t size;
        blobfs_size(&s->fs, digest, &size);
        if (o->dry_run) {
            log_info("msg=\"gc: would remove blob\" digest=%s size=%llu", digest,
                     (unsigned long long)size);
            printf("would remove blob %s (%llu bytes)\n", digest, (unsigned long long)size);
            o->blobs_removed++;
            o->bytes_removed += size;
            continue;
        }
        bool removed = false;
        trash_arg ta = {s, digest};
        rc = s->meta->ops->gc_blob_remove(s->meta, digest, cutoff, trash_cb, &ta, &removed);
        if (rc == 0 && removed) {
            blobfs_trash_purge(&s->fs, digest);
            log_info("msg=\"gc: removed blob\" digest=%s size=%llu", digest,
                     (unsigned long long)size);
            printf("removed blob %s (%llu bytes)\n", digest, (unsigned long long)size);
            o->blobs_removed++;
            o->bytes_removed += size;
        }
    }
    store_list_free(&cands);
    if (rc == 0) gc_orphans(s, o, cutoff);
    if (rc == 0 && !o->dry_run) {
        metrics_inc(METRIC_GC_RUNS);
        metrics_add(METRIC_GC_BYTES, o->bytes_removed);
    }
    ui_state_gc(s, o, rc); /* the web view's "last gc" */
    return rc;
}
