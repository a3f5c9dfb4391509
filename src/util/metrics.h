/*
 * metrics: berth's counters, for Prometheus (http.debug.prometheus). Every module counts into
 * fixed tables of atomics (no locks, no allocation on the request path: counting costs an atomic
 * add); metrics_render writes them in Prometheus' text format when scraped, asking the providers
 * registered at start for the gauges that are read, not counted (in-flight requests, worker
 * queue, store size). Names follow Prometheus' conventions and registry:2's where it has the same
 * metric (registry_http_requests_total, registry_http_request_duration_seconds,
 * registry_http_in_flight_requests, registry_storage_cache_requests_total).
 */
#ifndef BERTH_METRICS_H
#define BERTH_METRICS_H

#include "util/strbuf.h"

#include <stdbool.h>
#include <stdint.h>

/* Counters without labels. */
typedef enum {
    METRIC_BYTES_IN,         /* request bodies received */
    METRIC_BYTES_OUT,        /* response bodies sent */
    METRIC_SIGNIN_FAILURES,  /* refused sign-ins (wrong password, unknown user, bad token) */
    METRIC_SIGNIN_THROTTLED, /* sign-ins refused by the per-address back-off */
    METRIC_GC_RUNS,
    METRIC_GC_BYTES,      /* bytes of blobs gc removed */
    METRIC_EVICTIONS,     /* mirrored manifests evicted for space or age */
    METRIC_EVICTED_BYTES, /* and the bytes their blobs freed */
    METRIC_HELM_REBUILDS, /* index.yaml views built */
    /* notifications: events an endpoint acknowledged (2xx), events in POSTs that failed (sent
     * again later), undelivered events dropped past an endpoint's queuelimit */
    METRIC_NOTIFY_SENT,
    METRIC_NOTIFY_FAILED,
    METRIC_NOTIFY_DROPPED,
    METRIC__COUNT
} metric_id;

void metrics_add(metric_id id, uint64_t n);
static inline void metrics_inc(metric_id id)
{
    metrics_add(id, 1);
}

/* A counter whose value another process adds to (gc runs by `berth gc`): when a source is set,
 * the counter's value is what read() returns (which must count this process's events too). */
void metrics_counter_source(metric_id id, uint64_t (*read)(void));

/* One finished request: its route kind (metrics_route_kind), method, status, seconds; the
 * duration histogram is kept by route kind and status. */
void metrics_request(const char *path, const char *method, int status, double seconds);

/* A mirror's answer: hit (served from the store) or miss (asked its upstream); an upstream
 * fetch's bytes, and its failures. name is the mirror's; at most METRICS_MIRRORS are tracked
 * (the rest are counted under "other"). */
#define METRICS_MIRRORS 32
void metrics_mirror(const char *name, bool hit);
void metrics_upstream(const char *name, uint64_t bytes, bool ok);
/* An exchange with a mirror's upstream failed (proxy/upstream.c): kind is "connect", "timeout",
 * "tls", "http" or "other" (berth_upstream_errors_total{mirror,kind}; a blob fill that failed,
 * metrics_upstream(name, 0, false), counts under kind "fill"). */
void metrics_upstream_error(const char *name, const char *kind);
/* A mirror's counts so far (all zero when it has none): for the web view (src/ui/). */
typedef struct {
    uint64_t hits, misses, bytes, errors, last_ok_s;
} metrics_mirror_counts;
void metrics_mirror_read(const char *name, metrics_mirror_counts *out);

/* A trust policy's denial (src/trust/): where is "pull", "fill", "import" or "push". At most
 * METRICS_TRUST (policy, where) pairs are tracked; the rest count under policy "other". */
#define METRICS_TRUST 64
void metrics_trust_denial(const char *policy, const char *where);

/* Gauges read when scraped: each returns its current value. */
typedef enum {
    GAUGE_IN_FLIGHT,      /* requests being served */
    GAUGE_QUEUE,          /* steps waiting for a worker thread */
    GAUGE_UPLOADS,        /* requests receiving a body */
    GAUGE_STORE_BYTES,    /* bytes of stored blobs */
    GAUGE_CACHE_BYTES,    /* of which mirrored content */
    GAUGE_CACHE_MAX,      /* cache.maxsize (0: none) */
    GAUGE_UPSTREAMS_DOWN, /* upstreams marked down */
    /* notifications: events not yet delivered, summed over endpoints */
    GAUGE_NOTIFY_PENDING,
    GAUGE_STORE_BLOBS /* blobs stored */
} gauge_id;
void metrics_gauge(gauge_id id, int64_t (*read)(void));

/* The whole exposition, Prometheus text format 0.0.4. */
void metrics_render(strbuf *b);
/* Forgets every count (tests). */
void metrics_reset(void);

#endif
