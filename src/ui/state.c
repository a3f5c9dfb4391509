/*
 * ui state: the small records the web view and `berth status` show and no other part keeps (see
 * ui.h). Invariants: a state file is only ever replaced whole by rename(2) after fsync, so a
 * reader sees one complete version; pulls are noted in memory under one mutex (at most
 * PULL_SLOTS pending distinct references; a note past that is counted as dropped until the next
 * write) and only the writer thread, ui_flush or ui_stop touch the disk; a pull is at most
 * FLUSH_S seconds late in pulls.json (lost only when the server is killed in between), which
 * keeps the PULLS_KEPT most recently pulled references.
 */
#include "proxy/upstream.h"
#include "registry/registry.h"
#include "ui/ui.h"
#include "util/err.h"
#include "util/file.h"
#include "util/log.h"
#include "util/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PULL_SLOTS 4096
#define FLUSH_S 5
#define PULLS_KEPT 100000
#define STATE_DIR "ui-state"

typedef struct {
    char key[520]; /* "repo\tref" */
    int64_t when;
} pull_slot;

static pthread_mutex_t pull_mu = PTHREAD_MUTEX_INITIALIZER;
static pull_slot *pulls; /* open addressing, PULL_SLOTS entries; key[0] == 0: free */
static size_t npulls;
static unsigned long pulls_dropped;
/* serialises writers of pulls.json (the thread and ui_flush from a page) */
static pthread_mutex_t write_mu = PTHREAD_MUTEX_INITIALIZER;

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void writer_ensure(void);

void ui_pull_note(const char *repo, const char *ref)
{
    writer_ensure();
    char key[520];
    if (snprintf(key, sizeof key, "%s\t%s", repo, ref) >= (int)sizeof key) return;
    int64_t now = store_now();
    pthread_mutex_lock(&pull_mu);
    if (!pulls) pulls = calloc(PULL_SLOTS, sizeof *pulls);
    if (pulls) {
        size_t i = hash(key) % PULL_SLOTS;
        for (size_t n = 0; n < PULL_SLOTS; n++, i = (i + 1) % PULL_SLOTS) {
            if (!pulls[i].key[0] && npulls + 1 >= PULL_SLOTS) { /* keep one slot free */
                pulls_dropped++;
                break;
            }
            if (!pulls[i].key[0]) {
                snprintf(pulls[i].key, sizeof pulls[i].key, "%s", key);
                npulls++;
            }
            if (!strcmp(pulls[i].key, key)) {
                pulls[i].when = now;
                break;
            }
        }
    }
    pthread_mutex_unlock(&pull_mu);
}

static void state_path(store *st, const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s/" STATE_DIR "/%s", store_root(st), name);
}

json_t *ui_state_read(store *st, const char *name)
{
    char path[4096];
    state_path(st, name, path, sizeof path);
    return json_load_file(path, 0, NULL);
}

/* Replaces <root>/ui-state/name with j: temporary file, fsync, rename. */
static int state_write(store *st, const char *name, json_t *j)
{
    char dir[4096], path[4096], tmp[4200];
    snprintf(dir, sizeof dir, "%s/" STATE_DIR, store_root(st));
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return berr_set(BERR_IO, "mkdir %s: %s", dir, strerror(errno));
    state_path(st, name, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text) return berr_set(BERR_INTERNAL, "out of memory");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    size_t n = strlen(text);
    bool ok = fd >= 0 && write(fd, text, n) == (ssize_t)n && fsync(fd) == 0;
    int e = errno;
    free(text);
    if (fd >= 0) close(fd);
    if (!ok || rename(tmp, path) < 0) {
        if (ok) e = errno;
        unlink(tmp);
        return berr_set(BERR_IO, "cannot write %s: %s", path, strerror(e));
    }
    return 0;
}

static void record(store *st, const char *name, json_t *j)
{
    if (j && state_write(st, name, j) < 0)
        log_warn("msg=\"cannot record %s for the web view\" err=\"%s\"", name, berr_msg());
    json_decref(j);
}

void ui_state_gc(store *st, const store_gc_opts *o, int rc)
{
    if (o->dry_run) return;
    /* the totals of every gc that succeeded, whichever process ran it: the server's
     * berth_gc_runs_total and berth_gc_reclaimed_bytes_total (gc_total) */
    json_t *prev = ui_state_read(st, "gc.json");
    json_int_t runs = json_integer_value(json_object_get(prev, "runs_total"));
    json_int_t bytes = json_integer_value(json_object_get(prev, "reclaimed_total"));
    json_decref(prev);
    if (rc == 0) {
        runs++;
        bytes += (json_int_t)o->bytes_removed;
    }
    record(st, "gc.json",
           json_pack("{s:I,s:b,s:I,s:I,s:I,s:I,s:s,s:I,s:I}", "finished", (json_int_t)store_now(),
                     "ok", rc == 0, "manifests_removed", (json_int_t)o->manifests_removed,
                     "blobs_removed", (json_int_t)o->blobs_removed, "bytes_removed",
                     (json_int_t)o->bytes_removed, "files_removed", (json_int_t)o->files_removed,
                     "error", rc < 0 ? berr_msg() : "", "runs_total", runs, "reclaimed_total",
                     bytes));
}

/* The server's gc counters, read from gc.json when scraped (gc runs in `berth gc`). */
static store *gc_store;

static uint64_t gc_total(const char *key)
{
    json_t *j = gc_store ? ui_state_read(gc_store, "gc.json") : NULL;
    json_int_t v = json_integer_value(json_object_get(j, key));
    json_decref(j);
    return v > 0 ? (uint64_t)v : 0;
}

static uint64_t gc_runs(void)
{
    return gc_total("runs_total");
}

static uint64_t gc_bytes(void)
{
    return gc_total("reclaimed_total");
}

/* berth_store_blobs (beside berth_store_bytes): registered here, with the store, at start */
static int64_t blob_count(void)
{
    uint64_t n = 0;
    if (gc_store) store_blob_count(gc_store, &n);
    return (int64_t)n;
}

void ui_state_fsck(store *st, long blobs, long manifests, long problems, int rc)
{
    record(st, "fsck.json",
           json_pack("{s:I,s:b,s:I,s:I,s:I,s:s}", "finished", (json_int_t)store_now(), "ok",
                     rc == 0 && problems == 0, "blobs", (json_int_t)blobs, "manifests",
                     (json_int_t)manifests, "problems", (json_int_t)problems, "error",
                     rc < 0 ? berr_msg() : ""));
}

/* Moves the pending pulls into obj (the later time of each key wins); returns how many. */
static size_t take_pulls(json_t *obj, bool clear)
{
    size_t n = 0;
    pthread_mutex_lock(&pull_mu);
    for (size_t i = 0; pulls && i < PULL_SLOTS; i++) {
        if (!pulls[i].key[0]) continue;
        json_t *old = json_object_get(obj, pulls[i].key);
        if (!old || json_integer_value(old) < pulls[i].when)
            json_object_set_new(obj, pulls[i].key, json_integer(pulls[i].when));
        if (clear) pulls[i].key[0] = '\0';
        n++;
    }
    if (clear) npulls = 0;
    if (clear && pulls_dropped) {
        log_warn("msg=\"web view: pulls not recorded (too many distinct references between two "
                 "writes)\" count=%lu",
                 pulls_dropped);
        pulls_dropped = 0;
    }
    pthread_mutex_unlock(&pull_mu);
    return n;
}

json_t *ui_pulls(store *st)
{
    json_t *j = ui_state_read(st, "pulls.json");
    if (!json_is_object(j)) {
        json_decref(j);
        j = json_object();
    }
    if (j) take_pulls(j, false);
    return j;
}

json_t *ui_runtime(const config *cfg)
{
    json_t *ups = json_array();
    json_t *down = reg_mirror_health();
    uint64_t hits = 0, misses = 0;
    for (size_t i = 0; i <= cfg->nmirrors; i++) {
        const config_mirror *m = i < cfg->nmirrors ? &cfg->mirrors[i] : cfg->proxy;
        if (!m) continue;
        metrics_mirror_counts c;
        metrics_mirror_read(m->name, &c);
        hits += c.hits;
        misses += c.misses;
        const char *err = NULL;
        json_int_t down_ms = 0;
        size_t k;
        json_t *d;
        json_array_foreach(down, k, d)
        {
            if (!strcmp(json_string_value(json_object_get(d, "mirror")), m->name)) {
                err = json_string_value(json_object_get(d, "error"));
                down_ms = json_integer_value(json_object_get(d, "down_ms"));
            }
        }
        /* the last failed exchange (proxy/upstream.c), kept after the upstream is back */
        upstream_state us;
        upstream_state_read(m->name, &us);
        bool down = err != NULL;
        if (us.last_error[0]) err = us.last_error;
        json_t *urls = json_array();
        for (size_t u = 0; u < m->nurls; u++)
            json_array_append_new(urls, json_string(m->urls[u]));
        json_array_append_new(
            ups, json_pack("{s:s,s:s,s:o,s:s,s:s?,s:s?,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "mirror",
                           m->name, "local", m->local ? m->local : "", "urls", urls, "state",
                           down ? "down" : "up", "last_error", err, "last_error_kind",
                           us.last_error_kind[0] ? us.last_error_kind : NULL, "last_error_at",
                           (json_int_t)us.last_error_ms, "down_ms", down_ms, "hits",
                           (json_int_t)c.hits, "misses", (json_int_t)c.misses, "errors",
                           (json_int_t)us.errors, "fetched_bytes", (json_int_t)c.bytes,
                           "last_success", (json_int_t)c.last_ok_s * 1000));
    }
    json_decref(down);
    return json_pack("{s:I,s:I,s:I,s:I,s:o}", "as_of", (json_int_t)store_now(), "cache_limit",
                     (json_int_t)(cfg->cache_max > 0 ? cfg->cache_max : 0), "hits",
                     (json_int_t)hits, "misses", (json_int_t)misses, "upstreams", ups);
}

typedef struct {
    const char *key;
    json_int_t when;
} pull_age;

static int by_age(const void *a, const void *b)
{
    json_int_t x = ((const pull_age *)a)->when, y = ((const pull_age *)b)->when;
    return x < y ? -1 : x > y;
}

/* Keeps pulls.json bounded: past PULLS_KEPT references, the least recently pulled are forgotten
 * (a deleted repository's entries go that way too). */
static void prune(json_t *obj)
{
    size_t n = json_object_size(obj), i = 0;
    if (n <= PULLS_KEPT) return;
    pull_age *ages = calloc(n, sizeof *ages);
    if (!ages) return;
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) ages[i++] = (pull_age){k, json_integer_value(v)};
    qsort(ages, n, sizeof *ages, by_age);
    char **drop = calloc(n - PULLS_KEPT, sizeof *drop);
    for (i = 0; drop && i < n - PULLS_KEPT; i++)
        drop[i] = strdup(ages[i].key); /* keys die with their entries */
    free(ages);
    for (i = 0; drop && i < n - PULLS_KEPT; i++) {
        if (drop[i]) json_object_del(obj, drop[i]);
        free(drop[i]);
    }
    free(drop);
}

void ui_flush(store *st, const config *cfg)
{
    pthread_mutex_lock(&write_mu);
    json_t *j = ui_state_read(st, "pulls.json");
    if (!json_is_object(j)) {
        json_decref(j);
        j = json_object();
    }
    bool pending;
    pthread_mutex_lock(&pull_mu);
    pending = npulls > 0;
    pthread_mutex_unlock(&pull_mu);
    if (j && pending) {
        take_pulls(j, true);
        prune(j);
        record(st, "pulls.json", j);
    } else {
        json_decref(j);
    }
    /* at most once a second: page views do not each cost an fsync */
    static int64_t runtime_written;
    if (cfg && store_now() - runtime_written >= 1000) {
        record(st, "runtime.json", ui_runtime(cfg));
        runtime_written = store_now();
    }
    pthread_mutex_unlock(&write_mu);
}

/* ---- the server's writer thread ---- */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t t;
    bool running, stop;
    store *st;
    const config *cfg;
} writer = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void *writer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&writer.mu);
    while (!writer.stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += FLUSH_S;
        pthread_cond_timedwait(&writer.cv, &writer.mu, &until);
        pthread_mutex_unlock(&writer.mu);
        ui_flush(writer.st, writer.cfg);
        pthread_mutex_lock(&writer.mu);
    }
    pthread_mutex_unlock(&writer.mu);
    return NULL;
}

/* The writer starts with the server when it has mirrors (their upstream states and hit counts
 * change with no pull), else at the first pull noted or page shown: an idle registry runs no
 * thread for it (a thread's stack and a wake-up every few seconds, for nothing to write). */
static atomic_bool writer_up; /* the request path's check: no lock once it runs */

static void writer_ensure(void)
{
    if (atomic_load_explicit(&writer_up, memory_order_acquire)) return;
    pthread_mutex_lock(&writer.mu);
    if (!writer.running && writer.st && !writer.stop)
        writer.running = pthread_create(&writer.t, NULL, writer_main, NULL) == 0;
    if (writer.running) atomic_store_explicit(&writer_up, true, memory_order_release);
    pthread_mutex_unlock(&writer.mu);
}

void ui_start(const config *cfg, store *st)
{
    pthread_mutex_lock(&writer.mu);
    writer.st = st;
    writer.cfg = cfg;
    writer.stop = false;
    pthread_mutex_unlock(&writer.mu);
    if (cfg->nmirrors || cfg->proxy || cfg->helm.nupstreams) writer_ensure();
    gc_store = st;
    metrics_counter_source(METRIC_GC_RUNS, gc_runs);
    metrics_counter_source(METRIC_GC_BYTES, gc_bytes);
    metrics_gauge(GAUGE_STORE_BLOBS, blob_count);
}

void ui_shown(void)
{
    writer_ensure();
}

void ui_stop(void)
{
    pthread_mutex_lock(&writer.mu);
    bool running = writer.running;
    writer.stop = true;
    pthread_cond_broadcast(&writer.cv);
    pthread_mutex_unlock(&writer.mu);
    if (!running) return;
    pthread_join(writer.t, NULL); /* its last round wrote what was pending */
    gc_store = NULL;
    writer.running = false;
}
