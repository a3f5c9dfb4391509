/*
 * metrics: see metrics.h. Requests are counted by route kind x method x status in a fixed table
 * (every status berth answers has a slot; others count as "other"), durations in a histogram per
 * route kind with Prometheus' default buckets. Mirrors are found by name in a small table that
 * only grows (a name is set once, then read without a lock).
 */
#include "util/metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *const metric_names[METRIC__COUNT][2] = {
    [METRIC_BYTES_IN] = {"berth_http_request_bytes_total", "request body bytes received"},
    [METRIC_BYTES_OUT] = {"berth_http_response_bytes_total", "response body bytes sent"},
    [METRIC_SIGNIN_FAILURES] = {"berth_signin_failures_total", "sign-ins refused"},
    [METRIC_SIGNIN_THROTTLED] = {"berth_signin_throttled_total",
                                 "sign-ins refused by the per-address back-off"},
    [METRIC_GC_RUNS] = {"berth_gc_runs_total", "garbage collections run"},
    [METRIC_GC_BYTES] = {"berth_gc_reclaimed_bytes_total", "bytes of blobs gc removed"},
    [METRIC_EVICTIONS] = {"berth_cache_evictions_total", "mirrored manifests evicted"},
    [METRIC_EVICTED_BYTES] = {"berth_cache_evicted_bytes_total", "bytes freed by evictions"},
    [METRIC_HELM_REBUILDS] = {"berth_helm_index_builds_total", "index.yaml views built"},
    [METRIC_NOTIFY_SENT] = {"berth_notifications_sent_total",
                            "events notification endpoints acknowledged"},
    [METRIC_NOTIFY_FAILED] = {"berth_notifications_failed_total",
                              "events in notification POSTs that failed (sent again)"},
    [METRIC_NOTIFY_DROPPED] = {"berth_notifications_dropped_total",
                               "undelivered events dropped past an endpoint's queuelimit"},
};
static atomic_uint_least64_t counters[METRIC__COUNT];
static uint64_t (*_Atomic sources[METRIC__COUNT])(void);

void metrics_counter_source(metric_id id, uint64_t (*read)(void))
{
    atomic_store(&sources[id], read);
}

/* ---- requests ---- */

static const char *const kinds[] = {"base",     "manifest",   "blob",      "blob_upload",
                                    "tags",     "catalog",    "referrers", "helm_index",
                                    "helm_api", "helm_chart", "health",    "other"};
#define NKINDS (sizeof kinds / sizeof *kinds)
static const char *const methods[] = {"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "other"};
#define NMETHODS (sizeof methods / sizeof *methods)
static const int codes[] = {200, 201, 202, 204, 206, 301, 302, 307, 400, 401, 403,
                            404, 405, 409, 413, 416, 429, 500, 502, 503, 507, 0};
#define NCODES (sizeof codes / sizeof *codes)
static const double bounds[] = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};
#define NBOUNDS (sizeof bounds / sizeof *bounds)

static atomic_uint_least64_t requests[NKINDS][NMETHODS][NCODES];
static atomic_uint_least64_t hist[NKINDS][NCODES][NBOUNDS + 1]; /* the last: +Inf */
static atomic_uint_least64_t hist_sum_us[NKINDS][NCODES];

static size_t kind_of(const char *path)
{
    if (!strncmp(path, "/v2", 3)) {
        if (!path[3] || !strcmp(path + 3, "/")) return 0;
        if (!strcmp(path, "/v2/_catalog")) return 5;
        if (strstr(path, "/blobs/uploads")) return 3;
        if (strstr(path, "/manifests/")) return 1;
        if (strstr(path, "/blobs/")) return 2;
        if (strstr(path, "/tags/list")) return 4;
        if (strstr(path, "/referrers/")) return 6;
        return NKINDS - 1;
    }
    size_t n = strlen(path);
    if (n >= 11 && !strcmp(path + n - 11, "/index.yaml")) return 7;
    if (!strncmp(path, "/api/", 5)) return 8;
    if (strstr(path, "/charts/")) return 9;
    if (!strcmp(path, "/health") || !strcmp(path, "/debug/health") || !strcmp(path, "/healthz"))
        return 10;
    return NKINDS - 1;
}

void metrics_request(const char *path, const char *method, int status, double seconds)
{
    size_t k = kind_of(path ? path : ""), m = NMETHODS - 1, c = NCODES - 1;
    for (size_t i = 0; i + 1 < NMETHODS; i++)
        if (method && !strcmp(method, methods[i])) m = i;
    for (size_t i = 0; i + 1 < NCODES; i++)
        if (codes[i] == status) c = i;
    atomic_fetch_add_explicit(&requests[k][m][c], 1, memory_order_relaxed);
    size_t b = 0;
    while (b < NBOUNDS && seconds > bounds[b])
        b++;
    atomic_fetch_add_explicit(&hist[k][c][b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&hist_sum_us[k][c], (uint64_t)(seconds * 1e6), memory_order_relaxed);
}

void metrics_add(metric_id id, uint64_t n)
{
    atomic_fetch_add_explicit(&counters[id], n, memory_order_relaxed);
}

/* ---- mirrors ---- */

/* berth_upstream_errors_total's kinds: the failed exchanges (proxy/upstream.c), then failed
 * fills (metrics_upstream) */
static const char *const error_kinds[] = {"connect", "timeout", "tls", "http", "other", "fill"};
#define NERRKINDS (sizeof error_kinds / sizeof *error_kinds)
#define KIND_FILL (NERRKINDS - 1)

typedef struct {
    char name[128];
    atomic_uint_least64_t hits, misses, bytes, errors, last_ok_s;
    atomic_uint_least64_t errors_by[NERRKINDS];
} mirror_counts;
static mirror_counts mirrors[METRICS_MIRRORS + 1]; /* the last: "other" */
static atomic_int nmirrors;
static pthread_mutex_t mirrors_mu = PTHREAD_MUTEX_INITIALIZER;

static mirror_counts *mirror_of(const char *name)
{
    int n = atomic_load(&nmirrors);
    for (int i = 0; i < n; i++)
        if (!strcmp(mirrors[i].name, name)) return &mirrors[i];
    pthread_mutex_lock(&mirrors_mu);
    n = atomic_load(&nmirrors);
    mirror_counts *m = NULL;
    for (int i = 0; i < n && !m; i++)
        if (!strcmp(mirrors[i].name, name)) m = &mirrors[i];
    if (!m && n < METRICS_MIRRORS) {
        m = &mirrors[n];
        snprintf(m->name, sizeof m->name, "%s", name);
        atomic_store(&nmirrors, n + 1); /* published after the name is written */
    }
    pthread_mutex_unlock(&mirrors_mu);
    return m ? m : &mirrors[METRICS_MIRRORS];
}

void metrics_mirror(const char *name, bool hit)
{
    mirror_counts *m = mirror_of(name);
    atomic_fetch_add_explicit(hit ? &m->hits : &m->misses, 1, memory_order_relaxed);
}

void metrics_upstream(const char *name, uint64_t bytes, bool ok)
{
    mirror_counts *m = mirror_of(name);
    atomic_fetch_add_explicit(&m->bytes, bytes, memory_order_relaxed);
    if (!ok) {
        atomic_fetch_add_explicit(&m->errors, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&m->errors_by[KIND_FILL], 1, memory_order_relaxed);
    }
    if (ok) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        atomic_store_explicit(&m->last_ok_s, (uint64_t)ts.tv_sec, memory_order_relaxed);
    }
}

void metrics_upstream_error(const char *name, const char *kind)
{
    size_t k = KIND_FILL - 1; /* "other" */
    for (size_t i = 0; i < KIND_FILL; i++)
        if (!strcmp(kind, error_kinds[i])) k = i;
    atomic_fetch_add_explicit(&mirror_of(name)->errors_by[k], 1, memory_order_relaxed);
}

void metrics_mirror_read(const char *name, metrics_mirror_counts *out)
{
    memset(out, 0, sizeof *out);
    int n = atomic_load(&nmirrors);
    for (int i = 0; i < n; i++) {
        mirror_counts *m = &mirrors[i];
        if (strcmp(m->name, name) != 0) continue;
        out->hits = atomic_load_explicit(&m->hits, memory_order_relaxed);
        out->misses = atomic_load_explicit(&m->misses, memory_order_relaxed);
        out->bytes = atomic_load_explicit(&m->bytes, memory_order_relaxed);
        out->errors = atomic_load_explicit(&m->errors, memory_order_relaxed);
        out->last_ok_s = atomic_load_explicit(&m->last_ok_s, memory_order_relaxed);
        return;
    }
}

/* ---- gauges ---- */

static const char *const gauge_names[][2] = {
    [GAUGE_IN_FLIGHT] = {"registry_http_in_flight_requests", "requests being served"},
    [GAUGE_QUEUE] = {"berth_worker_queue_depth", "steps waiting for a worker thread"},
    [GAUGE_UPLOADS] = {"berth_uploads_in_progress", "requests receiving a body"},
    [GAUGE_STORE_BYTES] = {"berth_store_bytes", "bytes of stored blobs"},
    [GAUGE_CACHE_BYTES] = {"berth_cache_bytes", "bytes of mirrored content"},
    [GAUGE_CACHE_MAX] = {"berth_cache_max_bytes", "cache.maxsize (0: no limit)"},
    [GAUGE_UPSTREAMS_DOWN] = {"berth_upstreams_down", "upstreams marked down"},
    [GAUGE_NOTIFY_PENDING] = {"berth_notifications_pending", "events not yet delivered"},
    [GAUGE_STORE_BLOBS] = {"berth_store_blobs", "blobs stored"},
};
#define NGAUGES (sizeof gauge_names / sizeof *gauge_names)
static int64_t (*_Atomic gauges[NGAUGES])(void);

void metrics_gauge(gauge_id id, int64_t (*read)(void))
{
    atomic_store(&gauges[id], read);
}

/* ---- exposition ---- */

/* ---- trust denials, by (policy, where) ---- */

typedef struct {
    char policy[128], where[16];
    atomic_uint_least64_t n;
} trust_counts;
static trust_counts trusts[METRICS_TRUST + 1]; /* the last: policy "other" */
static atomic_int ntrusts;
static pthread_mutex_t trusts_mu = PTHREAD_MUTEX_INITIALIZER;

void metrics_trust_denial(const char *policy, const char *where)
{
    trust_counts *t = NULL;
    int n = atomic_load(&ntrusts);
    for (int i = 0; i < n && !t; i++)
        if (!strcmp(trusts[i].policy, policy) && !strcmp(trusts[i].where, where)) t = &trusts[i];
    if (!t) {
        pthread_mutex_lock(&trusts_mu);
        n = atomic_load(&ntrusts);
        for (int i = 0; i < n && !t; i++)
            if (!strcmp(trusts[i].policy, policy) && !strcmp(trusts[i].where, where))
                t = &trusts[i];
        if (!t && n < METRICS_TRUST) {
            t = &trusts[n];
            snprintf(t->policy, sizeof t->policy, "%s", policy);
            snprintf(t->where, sizeof t->where, "%s", where);
            atomic_store(&ntrusts, n + 1); /* published after the names are written */
        }
        pthread_mutex_unlock(&trusts_mu);
    }
    if (!t) t = &trusts[METRICS_TRUST];
    atomic_fetch_add_explicit(&t->n, 1, memory_order_relaxed);
}

static uint64_t get(atomic_uint_least64_t *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

static void help(strbuf *b, const char *name, const char *type, const char *text)
{
    strbuf_addf(b, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

static void render_mirror(strbuf *b, const char *name, const char *help_text,
                          size_t off /* of the counter in mirror_counts */, const char *type,
                          const char *extra)
{
    help(b, name, type, help_text);
    int n = atomic_load(&nmirrors);
    for (int i = 0; i <= n; i++) {
        mirror_counts *m = i < n ? &mirrors[i] : &mirrors[METRICS_MIRRORS];
        uint64_t v = get((atomic_uint_least64_t *)((char *)m + off));
        if (i == n && !v) continue; /* "other" only when used */
        strbuf_addf(b, "%s{mirror=\"%s\"%s} %llu\n", name, i < n ? m->name : "other", extra,
                    (unsigned long long)v);
    }
}

void metrics_render(strbuf *b)
{
    help(b, "registry_http_requests_total", "counter", "requests by route kind, method and status");
    for (size_t k = 0; k < NKINDS; k++)
        for (size_t m = 0; m < NMETHODS; m++)
            for (size_t c = 0; c < NCODES; c++) {
                uint64_t v = get(&requests[k][m][c]);
                if (!v) continue;
                char code[16];
                snprintf(code, sizeof code, "%d", codes[c]);
                strbuf_addf(
                    b,
                    "registry_http_requests_total{handler=\"%s\",method=\"%s\",code=\"%s\"} %llu\n",
                    kinds[k], methods[m], codes[c] ? code : "other", (unsigned long long)v);
            }
    help(b, "registry_http_request_duration_seconds", "histogram",
         "request durations by route kind and status");
    for (size_t k = 0; k < NKINDS; k++)
        for (size_t c = 0; c < NCODES; c++) {
            uint64_t n = 0;
            for (size_t i = 0; i <= NBOUNDS; i++)
                n += get(&hist[k][c][i]);
            if (!n) continue; /* a (kind, status) never answered */
            char code[16];
            snprintf(code, sizeof code, "%d", codes[c]);
            const char *cs = codes[c] ? code : "other";
            uint64_t cum = 0;
            for (size_t i = 0; i <= NBOUNDS; i++) {
                cum += get(&hist[k][c][i]);
                char le[16];
                snprintf(le, sizeof le, "%g", bounds[i < NBOUNDS ? i : 0]);
                strbuf_addf(b,
                            "registry_http_request_duration_seconds_bucket{handler=\"%s\","
                            "code=\"%s\",le=\"%s\"} %llu\n",
                            kinds[k], cs, i < NBOUNDS ? le : "+Inf", (unsigned long long)cum);
            }
            strbuf_addf(
                b, "registry_http_request_duration_seconds_sum{handler=\"%s\",code=\"%s\"} %.6f\n",
                kinds[k], cs, (double)get(&hist_sum_us[k][c]) / 1e6);
            strbuf_addf(b,
                        "registry_http_request_duration_seconds_count{handler=\"%s\",code=\"%s\"} "
                        "%llu\n",
                        kinds[k], cs, (unsigned long long)cum);
        }
    for (int i = 0; i < METRIC__COUNT; i++) {
        help(b, metric_names[i][0], "counter", metric_names[i][1]);
        uint64_t (*src)(void) = atomic_load(&sources[i]);
        strbuf_addf(b, "%s %llu\n", metric_names[i][0],
                    (unsigned long long)(src ? src() : get(&counters[i])));
    }
    for (size_t i = 0; i < NGAUGES; i++) {
        int64_t (*read)(void) = atomic_load(&gauges[i]);
        if (!read) continue;
        help(b, gauge_names[i][0], "gauge", gauge_names[i][1]);
        strbuf_addf(b, "%s %lld\n", gauge_names[i][0], (long long)read());
    }
    /* registry:2's cache metric, per mirror: a hit is served from the store */
    help(b, "registry_storage_cache_requests_total", "counter",
         "mirror requests answered from the store (Hit) or the upstream (Miss)");
    int n = atomic_load(&nmirrors);
    for (int i = 0; i <= n; i++) {
        mirror_counts *m = i < n ? &mirrors[i] : &mirrors[METRICS_MIRRORS];
        const char *name = i < n ? m->name : "other";
        if (i == n && !get(&m->hits) && !get(&m->misses)) continue;
        strbuf_addf(b, "registry_storage_cache_requests_total{mirror=\"%s\",type=\"Hit\"} %llu\n",
                    name, (unsigned long long)get(&m->hits));
        strbuf_addf(b, "registry_storage_cache_requests_total{mirror=\"%s\",type=\"Miss\"} %llu\n",
                    name, (unsigned long long)get(&m->misses));
    }
    render_mirror(b, "berth_upstream_fetched_bytes_total", "bytes fetched from each upstream",
                  offsetof(mirror_counts, bytes), "counter", "");
    help(b, "berth_upstream_errors_total", "counter",
         "failed exchanges with each upstream by kind (connect, timeout, tls, http, other), and "
         "failed blob fills (fill)");
    for (int i = 0; i <= n; i++) {
        mirror_counts *m = i < n ? &mirrors[i] : &mirrors[METRICS_MIRRORS];
        for (size_t k = 0; k < NERRKINDS; k++) {
            uint64_t v = get(&m->errors_by[k]);
            if (i == n && !v) continue; /* "other" only when used */
            strbuf_addf(b, "berth_upstream_errors_total{mirror=\"%s\",kind=\"%s\"} %llu\n",
                        i < n ? m->name : "other", error_kinds[k], (unsigned long long)v);
        }
    }
    render_mirror(b, "berth_upstream_last_success_timestamp_seconds",
                  "when each upstream last answered a fetch", offsetof(mirror_counts, last_ok_s),
                  "gauge", "");
    help(b, "berth_trust_denials_total", "counter",
         "manifests a trust policy refused, by policy and where: pull, fill, import, push");
    int nt = atomic_load(&ntrusts);
    for (int i = 0; i < nt; i++) /* policy names are config keys: quotes and backslashes escaped */
    {
        strbuf_addf(b, "berth_trust_denials_total{policy=\"");
        for (const char *c = trusts[i].policy; *c; c++) {
            if (*c == '"' || *c == '\\') strbuf_add(b, "\\", 1);
            if (*c != '\n') strbuf_add(b, c, 1);
        }
        strbuf_addf(b, "\",where=\"%s\"} %llu\n", trusts[i].where,
                    (unsigned long long)get(&trusts[i].n));
    }
    if (get(&trusts[METRICS_TRUST].n))
        strbuf_addf(b, "berth_trust_denials_total{policy=\"other\",where=\"any\"} %llu\n",
                    (unsigned long long)get(&trusts[METRICS_TRUST].n));
}

void metrics_reset(void)
{
    memset(counters, 0, sizeof counters);
    memset(requests, 0, sizeof requests);
    memset(hist, 0, sizeof hist);
    memset(hist_sum_us, 0, sizeof hist_sum_us);
    pthread_mutex_lock(&mirrors_mu);
    memset(mirrors, 0, sizeof mirrors);
    atomic_store(&nmirrors, 0);
    pthread_mutex_unlock(&mirrors_mu);
    pthread_mutex_lock(&trusts_mu);
    memset(trusts, 0, sizeof trusts);
    atomic_store(&ntrusts, 0);
    pthread_mutex_unlock(&trusts_mu);
}
