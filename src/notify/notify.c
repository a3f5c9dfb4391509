/*
 * notify: delivery of the events table to registry:2 notification endpoints (see notify.h for
 * the invariants). One thread per enabled endpoint:
 *
 *   take the endpoint's lease -> read its cursor -> enforce queuelimit -> read a batch after the
 *   cursor -> POST the events it does not ignore -> on a 2xx move the cursor past the batch and
 *   prune what every endpoint has; on a failure wait `backoff` (doubling while it keeps failing,
 *   at most 32 times) and send the same batch again.
 *
 * The envelope is registry:2's: Content-Type application/vnd.docker.distribution.events.v1+json,
 * body {"events":[{id, timestamp, action, target{mediaType, size, digest, length, repository,
 * url, tag[, fromRepository][, references]}, request{id, addr, host, method, useragent},
 * actor{name}, source{addr, instanceID}}]}.
 */
#include "notify/notify.h"
#include "http/http.h"
#include "auth/auth.h"
#include "util/curlx.h"
#include "util/err.h"
#include "util/log.h"
#include "util/metrics.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NOTIFY_MT "application/vnd.docker.distribution.events.v1+json"
#define POLL_MS 200           /* how often an idle endpoint looks for new events */
#define LEASE_MIN_MS 15000    /* an endpoint's lease, renewed every third of it */
#define BACKOFF_MAX_FACTOR 32 /* a failing endpoint waits at most backoff * this */

typedef struct {
    struct notify *n;
    const config_notify_endpoint *ep;
    pthread_t thread;
    bool started;
    atomic_llong pending; /* undelivered events, last counted */
} endpoint;

struct notify {
    const config *cfg;
    store *st;
    endpoint *eps;
    size_t neps;
    char owner[300]; /* this berth, as the holder of endpoint leases */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
};

static notify *gauge_of; /* the running instance, for the pending gauge */

static int64_t gauge_pending(void)
{
    notify *n = gauge_of;
    int64_t sum = 0;
    for (size_t i = 0; n && i < n->neps; i++)
        sum += atomic_load(&n->eps[i].pending);
    return sum;
}

/* Waits up to ms or until stopped; true when stopped. */
static bool nap(notify *n, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&n->mu);
    while (!n->stop && pthread_cond_timedwait(&n->cv, &n->mu, &ts) == 0)
        ;
    bool stop = n->stop;
    pthread_mutex_unlock(&n->mu);
    return stop;
}

static bool stopping(notify *n)
{
    pthread_mutex_lock(&n->mu);
    bool stop = n->stop;
    pthread_mutex_unlock(&n->mu);
    return stop;
}

static bool listed(char **l, size_t nl, const char *v)
{
    for (size_t i = 0; v && i < nl; i++)
        if (!strcmp(l[i], v)) return true;
    return false;
}

/* Whether the endpoint ignores e (ignore.actions, ignoredmediatypes / ignore.mediatypes). */
static bool ignored(const config_notify_endpoint *ep, const store_event *e)
{
    return listed(ep->ignore_actions, ep->nignore_actions, e->action) ||
           listed(ep->ignore_mediatypes, ep->nignore_mediatypes, e->media_type);
}

/* registry:2's timestamp: RFC 3339 in UTC (milliseconds). */
static void timestamp(int64_t ms, char *out, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, len, "%s.%03dZ", base, (int)(ms % 1000));
}

/* One event in registry:2's form. */
static json_t *event_json(const notify *n, const store_event *e)
{
    json_t *ctx = e->context ? json_loads(e->context, 0, NULL) : NULL;
    if (!ctx) ctx = json_object();
    json_t *target = json_object();
    if (e->media_type) json_object_set_new(target, "mediaType", json_string(e->media_type));
    if (e->size >= 0) json_object_set_new(target, "size", json_integer(e->size));
    if (e->digest) json_object_set_new(target, "digest", json_string(e->digest));
    if (e->size >= 0) json_object_set_new(target, "length", json_integer(e->size));
    json_object_set_new(target, "repository", json_string(e->repo));
    json_t *req = json_object_get(ctx, "request");
    const char *host = json_string_value(json_object_get(req, "host"));
    const char *src = json_string_value(json_object_get(json_object_get(ctx, "source"), "addr"));
    if (e->digest) {
        bool blob = e->media_type && !strcmp(e->media_type, "application/octet-stream");
        char url[1200];
        snprintf(url, sizeof url, "%s://%s/v2/%s/%s/%s", n->cfg->tls_cert ? "https" : "http",
                 host && *host ? host
                 : src         ? src
                               : "localhost",
                 e->repo, blob ? "blobs" : "manifests", e->digest);
        json_object_set_new(target, "url", json_string(url));
    }
    if (e->tag) json_object_set_new(target, "tag", json_string(e->tag));
    json_t *from = json_object_get(ctx, "fromRepository");
    if (from) json_object_set(target, "fromRepository", from);
    json_t *refs = e->refs ? json_loads(e->refs, 0, NULL) : NULL;
    if (refs) json_object_set_new(target, "references", refs);
    char ts[48];
    timestamp(e->created, ts, sizeof ts);
    json_t *o = json_pack("{s:s, s:s, s:s, s:o}", "id", e->uuid, "timestamp", ts, "action",
                          e->action, "target", target);
    const char *parts[] = {"request", "actor", "source"};
    for (int i = 0; o && i < 3; i++) {
        json_t *p = json_object_get(ctx, parts[i]);
        json_object_set_new(o, parts[i], p ? json_incref(p) : json_object());
    }
    json_decref(ctx);
    return o;
}

static size_t discard(char *p, size_t size, size_t nmemb, void *arg)
{
    (void)p;
    (void)arg;
    return size * nmemb;
}

/* POSTs body to the endpoint: 0 on a 2xx, else negative (the reason in berr_msg()). */
static int post(CURL *h, const config_notify_endpoint *ep, const char *body, size_t len)
{
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: " NOTIFY_MT);
    for (size_t i = 0; i < ep->nheaders; i++) {
        char line[1024];
        snprintf(line, sizeof line, "%s: %s", ep->headers[i].name, ep->headers[i].value);
        hdrs = curl_slist_append(hdrs, line);
    }
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, ep->url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)ep->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)ep->timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    if (cc == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdrs);
    if (cc != CURLE_OK) return berr_set(BERR_UNAVAILABLE, "%s", curl_easy_strerror(cc));
    if (status < 200 || status > 299)
        return berr_set(BERR_UNAVAILABLE, "the endpoint answered %ld", status);
    return 0;
}

/* Removes the events every enabled endpoint has acknowledged. */
static void prune(notify *n)
{
    int64_t low = INT64_MAX;
    for (size_t i = 0; i < n->neps; i++) {
        int64_t c;
        if (store_event_cursor(n->st, n->eps[i].ep->name, &c) < 0) return;
        if (c < low) low = c;
    }
    if (low != INT64_MAX && low > 0 && store_events_prune(n->st, low) < 0)
        log_warn("msg=\"notifications: pruning delivered events failed\" err=\"%s\"", berr_msg());
}

/* Skips what is past the endpoint's queuelimit; returns the cursor after it. */
static int64_t bound(endpoint *e, int64_t cursor)
{
    const config_notify_endpoint *ep = e->ep;
    int64_t count = 0, drop_to = cursor;
    if (store_events_backlog(e->n->st, cursor, ep->queue_limit, &count, &drop_to) < 0)
        return cursor;
    atomic_store(&e->pending, count);
    if (drop_to <= cursor) return cursor;
    if (store_event_cursor_set(e->n->st, ep->name, drop_to) < 0) return cursor;
    int64_t dropped = count - ep->queue_limit;
    log_warn("msg=\"notifications: endpoint queue over its limit, oldest undelivered events "
             "dropped\" endpoint=%s queuelimit=%lld dropped=%lld through_seq=%lld",
             ep->name, (long long)ep->queue_limit, (long long)dropped, (long long)drop_to);
    metrics_add(METRIC_NOTIFY_DROPPED, (uint64_t)dropped);
    atomic_store(&e->pending, ep->queue_limit);
    return drop_to;
}

static void *deliver(void *arg)
{
    endpoint *e = arg;
    notify *n = e->n;
    const config_notify_endpoint *ep = e->ep;
    CURL *h = curl_easy_init();
    if (!h) {
        log_error("msg=\"notifications: no HTTP client\" endpoint=%s", ep->name);
        return NULL;
    }
    char lease[300];
    snprintf(lease, sizeof lease, "notify:%s", ep->name);
    int64_t ttl = ep->timeout_ms * 4 > LEASE_MIN_MS ? ep->timeout_ms * 4 : LEASE_MIN_MS;
    int64_t renewed = 0; /* when the lease was last taken (0: not held) */
    int64_t bounded = 0; /* when the queue bound was last checked */
    int failures = 0;
    while (!stopping(n)) {
        int64_t now = store_now();
        if (!renewed || now - renewed > ttl / 3) {
            if (store_lease_take(n->st, lease, n->owner, ttl) < 0) {
                if (renewed)
                    log_info("msg=\"notifications: another berth delivers now\" endpoint=%s",
                             ep->name);
                renewed = 0;
                nap(n, 1000);
                continue;
            }
            renewed = now;
        }
        int64_t cursor;
        if (store_event_cursor(n->st, ep->name, &cursor) < 0) {
            log_warn("msg=\"notifications: cannot read the cursor\" endpoint=%s err=\"%s\"",
                     ep->name, berr_msg());
            nap(n, 1000);
            continue;
        }
        store_event_list l = {0};
        int rrc = store_events_read(n->st, cursor, ep->batch, &l);
        /* a full batch, or one over the bound: maybe more waiting than the bound (counted at
         * most once a second) */
        bool full = l.n == (size_t)ep->batch || (int64_t)l.n > ep->queue_limit;
        if (rrc == 0 && full && now - bounded >= 1000) {
            bounded = now;
            int64_t after = bound(e, cursor);
            if (after != cursor) {
                cursor = after;
                store_event_list_free(&l);
                rrc = store_events_read(n->st, cursor, ep->batch, &l);
            }
        } else if (rrc == 0 && !full) {
            atomic_store(&e->pending, (long long)l.n);
        }
        if (rrc < 0) {
            log_warn("msg=\"notifications: cannot read events\" endpoint=%s err=\"%s\"", ep->name,
                     berr_msg());
            store_event_list_free(&l);
            nap(n, 1000);
            continue;
        }
        if (l.n == 0) {
            store_event_list_free(&l);
            nap(n, POLL_MS);
            continue;
        }
        int64_t last = l.items[l.n - 1].seq;
        json_t *events = json_array();
        for (size_t i = 0; i < l.n; i++)
            if (!ignored(ep, &l.items[i]))
                json_array_append_new(events, event_json(n, &l.items[i]));
        size_t sent = json_array_size(events);
        int rc = 0;
        if (sent) {
            json_t *env = json_pack("{s:o}", "events", events);
            char *body = json_dumps(env, JSON_COMPACT);
            json_decref(env);
            rc = body ? post(h, ep, body, strlen(body)) : berr_set(BERR_INTERNAL, "out of memory");
            free(body);
        } else {
            json_decref(events);
        }
        store_event_list_free(&l);
        if (rc == 0) {
            if (failures >= ep->threshold)
                log_info("msg=\"notifications: endpoint back\" endpoint=%s", ep->name);
            failures = 0;
            metrics_add(METRIC_NOTIFY_SENT, sent);
            if (store_event_cursor_set(n->st, ep->name, last) < 0)
                log_warn("msg=\"notifications: cannot move the cursor (events will be sent "
                         "again)\" endpoint=%s err=\"%s\"",
                         ep->name, berr_msg());
            else
                prune(n);
            continue;
        }
        metrics_add(METRIC_NOTIFY_FAILED, sent);
        failures++;
        if (failures == ep->threshold)
            log_warn("msg=\"notifications: endpoint down, retrying with backoff\" endpoint=%s "
                     "failures=%d err=\"%s\"",
                     ep->name, failures, berr_msg());
        else
            log_debug("msg=\"notifications: delivery failed\" endpoint=%s err=\"%s\"", ep->name,
                      berr_msg());
        int shift = failures - 1 < 5 ? failures - 1 : 5;
        int64_t wait = ep->backoff_ms * ((int64_t)1 << shift);
        if (wait > ep->backoff_ms * BACKOFF_MAX_FACTOR) wait = ep->backoff_ms * BACKOFF_MAX_FACTOR;
        nap(n, wait);
    }
    if (renewed) store_lease_drop(n->st, lease, n->owner);
    curl_easy_cleanup(h);
    return NULL;
}

notify *notify_start(const config *cfg, store *st)
{
    if (!store_events_on()) return NULL;
    if (curlx_init() < 0) {
        log_error("msg=\"notifications: libcurl cannot be loaded: no events are sent (they stay "
                  "queued)\" err=\"%s\"",
                  berr_msg());
        return NULL;
    }
    notify *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->cfg = cfg;
    n->st = st;
    pthread_mutex_init(&n->mu, NULL);
    pthread_cond_init(&n->cv, NULL);
    n->eps = calloc(cfg->notify.nendpoints, sizeof *n->eps);
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    snprintf(n->owner, sizeof n->owner, "%s %s", host, cfg->addr ? cfg->addr : "");
    for (size_t i = 0; n->eps && i < cfg->notify.nendpoints; i++) {
        const config_notify_endpoint *ep = &cfg->notify.endpoints[i];
        if (ep->disabled) continue;
        endpoint *e = &n->eps[n->neps++];
        e->n = n;
        e->ep = ep;
    }
    gauge_of = n;
    metrics_gauge(GAUGE_NOTIFY_PENDING, gauge_pending);
    for (size_t i = 0; i < n->neps; i++) {
        endpoint *e = &n->eps[i];
        e->started = pthread_create(&e->thread, NULL, deliver, e) == 0;
        log_info("msg=\"notifications: delivering\" endpoint=%s url=%s queuelimit=%lld",
                 e->ep->name, e->ep->url, (long long)e->ep->queue_limit);
    }
    return n;
}

void notify_stop(notify *n)
{
    if (!n) return;
    pthread_mutex_lock(&n->mu);
    n->stop = true;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    for (size_t i = 0; i < n->neps; i++)
        if (n->eps[i].started) pthread_join(n->eps[i].thread, NULL);
    gauge_of = NULL;
    pthread_cond_destroy(&n->cv);
    pthread_mutex_destroy(&n->mu);
    free(n->eps);
    free(n);
}

void notify_request_context(http_req *r)
{
    if (!store_events_on()) return;
    char id[40];
    const char *addr = http_client(r);
    /* the request's id: the same for every step of one request (its start time and slot) */
    uint64_t x = (uint64_t)(uintptr_t)r ^ ((uint64_t)r->start.tv_sec << 32) ^
                 (uint64_t)r->start.tv_nsec,
             y = x * 0x9e3779b97f4a7c15ull;
    y ^= y >> 31;
    snprintf(id, sizeof id, "%08x-%04x-4%03x-8%03x-%012llx", (unsigned)(y >> 32),
             (unsigned)(y >> 16) & 0xffff, (unsigned)(x >> 20) & 0xfff, (unsigned)(x >> 8) & 0xfff,
             (unsigned long long)((x ^ (y << 7)) & 0xffffffffffffull));
    store_event_ctx ctx = {.actor = auth_signed_in(r) ? auth_user(r) : NULL,
                           .request_id = id,
                           .addr = addr,
                           .host = http_header(r, "Host"),
                           .method = r->method_str,
                           .useragent = http_header(r, "User-Agent")};
    store_event_context(&ctx);
}
