/*
 * evict: keeps mirrored content within its space limit (cache.maxsize). Mirrored images are
 * evicted least recently used first: the manifest goes (with its tags and references), then
 * every blob that only mirrored repositories use and that no remaining manifest references.
 * A blob shared with a kept image, with pushed content or with a pinned repository is therefore
 * never removed; pinned repositories' manifests are skipped. Last access comes from batched
 * touches (store_touch), so serving a request never writes. Blob files leave through trash/
 * inside the metadata transaction, exactly as in gc. With an idle limit (proxy.ttl), images not
 * used for that long go first, whatever the space.
 */
#include "store/internal.h"
#include "util/err.h"
#include "util/metrics.h"
#include "util/log.h"

#include <fnmatch.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define LRU_BATCH 64

int store_repo_mark_mirror(store *s, const char *repo)
{
    return s->meta->ops->repo_mark_mirror(s->meta, repo);
}

int store_touch(store *s, const store_access *a, size_t n)
{
    return n ? s->meta->ops->touch(s->meta, a, n) : 0;
}

static bool pinned(const store_evict_opts *o, const char *repo)
{
    for (size_t i = 0; i < o->npins; i++)
        if (!strcmp(o->pins[i], repo) || fnmatch(o->pins[i], repo, 0) == 0) return true;
    return false;
}

typedef struct {
    store *s;
    const char *digest;
} trash_arg;

static int trash_cb(void *arg)
{
    trash_arg *a = arg;
    return blobfs_trash(&a->s->fs, a->digest);
}

/* Evicts one mirrored manifest and the blobs it alone kept; *used drops by what left. */
static int evict_one(store *s, store_evict_opts *o, const char *repo, const char *digest,
                     uint64_t *used, const char *why)
{
    store_list freed = {0};
    int rc = s->meta->ops->mirror_evict(s->meta, repo, digest, &freed);
    if (rc == 0)
        log_info("msg=\"evicted mirrored manifest\" repo=%s digest=%s reason=%s", repo, digest,
                 why);
    for (size_t j = 0; rc == 0 && j < freed.n; j++) {
        uint64_t size;
        blobfs_size(&s->fs, freed.items[j], &size);
        bool removed = false;
        trash_arg ta = {s, freed.items[j]};
        rc = s->meta->ops->mirror_blob_remove(s->meta, freed.items[j], trash_cb, &ta, &removed);
        if (rc == 0 && removed) {
            blobfs_trash_purge(&s->fs, freed.items[j]);
            o->blobs_evicted++;
            *used = *used > size ? *used - size : 0;
            log_info("msg=\"evicted mirrored blob\" digest=%s size=%llu", freed.items[j],
                     (unsigned long long)size);
        }
    }
    store_list_free(&freed);
    return rc;
}

/* Splits "repo@digest" in place; NULL when there is no '@'. */
static const char *split_at(char *item)
{
    char *at = strchr(item, '@');
    if (!at) return NULL;
    *at = '\0';
    return at + 1;
}

static bool under(const char *prefix, const char *repo)
{
    size_t n = prefix ? strlen(prefix) : 0;
    return !prefix || (!strncmp(repo, prefix, n) && repo[n] == '/');
}

/* proxy.ttl: every mirrored image under idle_prefix unused for idle_ms goes, in batches, until
 * a batch evicts nothing (the rest are pinned or elsewhere) or runs short. */
#define IDLE_BATCH 1024
static int expire_idle(store *s, store_evict_opts *o, uint64_t *used)
{
    int rc = 0;
    for (bool more = true; rc == 0 && more;) {
        store_list lru = {0};
        rc = s->meta->ops->mirror_lru(s->meta, IDLE_BATCH, store_now() - o->idle_ms, &lru);
        size_t before = o->manifests_expired;
        for (size_t i = 0; rc == 0 && i < lru.n; i++) {
            const char *digest = split_at(lru.items[i]), *repo = lru.items[i];
            if (!digest || !under(o->idle_prefix, repo) || pinned(o, repo)) continue;
            rc = evict_one(s, o, repo, digest, used, "ttl");
            if (rc == 0) o->manifests_expired++;
        }
        more = lru.n == IDLE_BATCH && o->manifests_expired > before;
        store_list_free(&lru);
    }
    return rc;
}

int store_evict(store *s, store_evict_opts *o)
{
    uint64_t used = 0;
    int rc = s->meta->ops->mirror_usage(s->meta, &used);
    o->bytes_before = o->bytes_after = used;
    if (rc == 0 && o->idle_ms > 0) rc = expire_idle(s, o, &used);
    if (rc < 0 || used <= o->max_bytes) {
        if (rc == 0 && o->manifests_expired) rc = s->meta->ops->mirror_usage(s->meta, &used);
        o->bytes_after = used;
        metrics_add(METRIC_EVICTIONS, o->manifests_expired);
        if (o->bytes_before > used) metrics_add(METRIC_EVICTED_BYTES, o->bytes_before - used);
        return rc;
    }
    store_list lru = {0};
    rc = s->meta->ops->mirror_lru(s->meta, LRU_BATCH, 0, &lru);
    for (size_t i = 0; rc == 0 && i < lru.n && used > o->max_bytes; i++) {
        const char *digest = split_at(lru.items[i]), *repo = lru.items[i];
        if (!digest || pinned(o, repo)) continue;
        rc = evict_one(s, o, repo, digest, &used, "maxsize");
        if (rc == 0) o->manifests_evicted++;
    }
    store_list_free(&lru);
    if (rc == 0) rc = s->meta->ops->mirror_usage(s->meta, &used);
    o->bytes_after = used;
    metrics_add(METRIC_EVICTIONS, o->manifests_evicted + o->manifests_expired);
    if (o->bytes_before > used) metrics_add(METRIC_EVICTED_BYTES, o->bytes_before - used);
    return rc;
}
