/*
 * serve: runs the registry over an open store until SIGTERM or SIGINT: the HTTP server and the
 * maintenance thread (storage health, mirror upkeep, Helm index views, quota, upload purging).
 * `berth serve` and `berth bundle serve` both end here. The health check covers both engines:
 * the blob storage (a synced probe file) and the metadata (one query).
 *
 * Before serving it says what the configuration leaves unsafe or inert: an htpasswd file that
 * cannot be read (everyone needing sign-in is refused), and the mirror cache's bound, which
 * defaults to a share of the store's file system when cache.maxsize is not set.
 *
 * The route table below is every endpoint berth serves and who may call it, in one place: the
 * server checks that access through the auth hooks before any handler runs.
 */
#include "serve.h"
#include "auth/auth.h"
#include "helm/helm.h"
#include "http/http.h"
#include "notify/notify.h"
#include "registry/registry.h"
#include "ui/ui.h"
#include "util/err.h"
#include "util/log.h"
#include "util/metrics.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* ---- the route table ----
 * access: HTTP_PUBLIC anyone; HTTP_SIGNED_IN callers who signed in; HTTP_KNOWN callers who signed
 * in or anyone when some anonymous access is configured (the handler filters or checks each
 * item); HTTP_REPO the action on the path's repository. A path matched with a method not listed
 * is a 405; in read-only mode only GET and HEAD lines exist. */
/* clang-format off */
/* access (and flags) of a line */
#define PUBLIC      HTTP_PUBLIC, 0, 0               /* anyone */
#define SIGNED      HTTP_SIGNED_IN, 0, 0            /* callers who signed in */
#define KNOWN       HTTP_KNOWN, 0, 0                /* signed in, or anyone when anonymous access exists */
#define KNOWN_IFDEL HTTP_KNOWN, 0, HTTP_IF_DELETE   /* the same, and only with storage.delete.enabled */
#define PULL        HTTP_REPO, CONFIG_PULL, 0       /* pull on <name> */
#define PUSH        HTTP_REPO, CONFIG_PUSH, 0       /* push on <name> */
#define DELETE      HTTP_REPO, CONFIG_DELETE, 0     /* delete on <name> */
/* the router and its endpoint */
#define STATUS(ep)  &status_router, STATUS_##ep
#define OCI(ep)     &registry_router, REG_##ep
#define HELM(ep)    &helm_router, HELM_##ep
#define UI(ep)      &ui_router, UI_##ep
/* "/health" also answers /healthz and /debug/health */
static const http_route serve_routes[] = {
    /* path                           endpoint        methods      handler                 access */
    {"/",                             STATUS(ROOT),   HTTP_GET,    &status_root_h,         PUBLIC},
    {"/health",                       STATUS(HEALTH), HTTP_GET,    &status_health_h,       PUBLIC},
    /* OCI distribution API: <name> is the repository whose access is checked */
    {"/v2/",                          OCI(VERSION),   HTTP_GET,    &reg_version_h,         SIGNED},
    {"/v2/_catalog",                  OCI(CATALOG),   HTTP_GET,    &reg_catalog_h,         KNOWN},
    {"/v2/<name>/tags/list",          OCI(TAGS),      HTTP_GET,    &reg_tags_h,            PULL},
    {"/v2/<name>/manifests/<ref>",    OCI(MANIFEST),  HTTP_GET,    &reg_manifest_get_h,    PULL},
    {"/v2/<name>/manifests/<ref>",    OCI(MANIFEST),  HTTP_PUT,    &reg_manifest_put_h,    PUSH},
    {"/v2/<name>/manifests/<ref>",    OCI(MANIFEST),  HTTP_DELETE, &reg_manifest_delete_h, DELETE},
    {"/v2/<name>/blobs/<digest>",     OCI(BLOB),      HTTP_GET,    &reg_blob_get_h,        PULL},
    {"/v2/<name>/blobs/<digest>",     OCI(BLOB),      HTTP_DELETE, &reg_blob_delete_h,     DELETE},
    {"/v2/<name>/blobs/uploads/",     OCI(UPLOADS),   HTTP_POST,   &reg_upload_post_h,     PUSH},
    {"/v2/<name>/blobs/uploads/<id>", OCI(UPLOAD),    HTTP_GET,    &reg_upload_get_h,      PULL},
    {"/v2/<name>/blobs/uploads/<id>", OCI(UPLOAD),    HTTP_PATCH,  &reg_upload_patch_h,    PUSH},
    {"/v2/<name>/blobs/uploads/<id>", OCI(UPLOAD),    HTTP_PUT,    &reg_upload_put_h,      PUSH},
    {"/v2/<name>/blobs/uploads/<id>", OCI(UPLOAD),    HTTP_DELETE, &reg_upload_delete_h,   DELETE},
    {"/v2/<name>/referrers/<digest>", OCI(REFERRERS), HTTP_GET,    &reg_referrers_h,       PULL},
    /* Helm chart repository (ChartMuseum API): the handlers check each chart against its
     * repository (listings filtered, a hidden chart answered 404) */
    {"/<area>/index.yaml",            HELM(INDEX),    HTTP_GET,    &helm_index_h,          KNOWN},
    {"/<area>/charts/<file>",         HELM(FILE),     HTTP_GET,    &helm_file_h,           KNOWN},
    {"/api/<area>/charts",            HELM(CHARTS),   HTTP_GET,    &helm_list_h,           KNOWN},
    {"/api/<area>/charts",            HELM(CHARTS),   HTTP_POST,   &helm_upload_h,         KNOWN},
    {"/api/<area>/prov",              HELM(PROV),     HTTP_POST,   &helm_prov_h,           KNOWN},
    {"/api/<area>/charts/<n>",        HELM(CHART),    HTTP_GET,    &helm_chart_h,          KNOWN},
    {"/api/<area>/charts/<n>/<v>",    HELM(VERSION),  HTTP_GET,    &helm_version_h,        KNOWN},
    {"/api/<area>/charts/<n>/<v>",    HELM(VERSION),  HTTP_DELETE, &helm_delete_h,         KNOWN_IFDEL},
    {"/<upstream>/index.yaml",        HELM(UP_INDEX), HTTP_GET,    &helm_up_index_h,       KNOWN},
    {"/<upstream>/charts/<file>",     HELM(UP_FILE),  HTTP_GET,    &helm_up_file_h,        KNOWN},
    /* the web view (docs/ui.md): each repository is checked for pull as the page is built */
    {"/ui",                           UI(ROOT),       HTTP_GET,    &ui_redirect_h,         KNOWN},
    {"/ui/",                          UI(PAGE),       HTTP_GET,    &ui_page_h,             KNOWN},
    {"/ui/signin",                    UI(SIGNIN),     HTTP_GET,    &ui_signin_h,           KNOWN},
    {"/ui/status.json",               UI(JSON),       HTTP_GET,    &ui_json_h,             KNOWN},
};
/* clang-format on */
#undef PUBLIC
#undef SIGNED
#undef KNOWN
#undef PULL
#undef PUSH
#undef DELETE
#undef KNOWN_IFDEL
#undef STATUS
#undef OCI
#undef HELM
#undef UI

/* Routers, in the order they are tried: the OCI API first (its paths start with /v2), then
 * the fixed status paths, the web view, then Helm's (when helm.enabled). */
static const http_router *const serve_routers[] = {&registry_router, &status_router, &ui_router,
                                                   &helm_router};

static const http_site serve_site = {
    .routers = serve_routers,
    .nrouters = sizeof serve_routers / sizeof serve_routers[0],
    .routes = serve_routes,
    .nroutes = sizeof serve_routes / sizeof serve_routes[0],
    .auth = &auth_hooks,
    .on_step = notify_request_context,
};

/* Mirrored content may fill this share (percent) of the store's file system when cache.maxsize
 * is not set: an unchanged mirror config never fills the disk. */
#define SERVE_CACHE_SHARE 50

static void startup_checks(config *cfg, store *st)
{
    if (cfg->auth.htpasswd && access(cfg->auth.htpasswd, R_OK) != 0)
        log_warn("msg=\"auth.htpasswd.path cannot be read: every request that needs sign-in is "
                 "refused until it can\" path=\"%s\" err=\"%s\"",
                 cfg->auth.htpasswd, strerror(errno));
    if (!cfg->nmirrors && !cfg->proxy) return;
    if (cfg->cache_max == 0) {
        log_warn("msg=\"cache.maxsize is 0: mirrored content is never evicted and can fill the "
                 "disk\"");
        return;
    }
    if (cfg->cache_max > 0) {
        log_info("msg=\"mirror cache bounded\" cache.maxsize=%lld", (long long)cfg->cache_max);
        return;
    }
    struct statvfs vs;
    if (cfg->s3.enabled || statvfs(store_root(st), &vs) != 0) {
        cfg->cache_max = 0;
        log_warn("msg=\"cache.maxsize not set and the store has no local file system to take a "
                 "share of: mirrored content is not bounded; set cache.maxsize\"");
        return;
    }
    unsigned long long fs = (unsigned long long)vs.f_blocks * vs.f_frsize;
    cfg->cache_max = (int64_t)(fs / 100 * SERVE_CACHE_SHARE);
    if (cfg->cache_max < 1) cfg->cache_max = 1;
    log_info("msg=\"cache.maxsize not set: mirrored content bounded by default to a share of the "
             "store's file system\" share=%d%% filesystem=%llu cache.maxsize=%lld",
             SERVE_CACHE_SHARE, fs, (long long)cfg->cache_max);
}

/* ---- serve ---- */

typedef struct {
    const config *cfg;
    store *st;
    bool stop; /* under mu; cv wakes the one-second wait at once when it is set */
    pthread_mutex_t mu;
    pthread_cond_t cv;
} maint_arg;

/* Waits one second, or less when stop is set; returns whether to stop. */
static bool maint_wait(maint_arg *m)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 1;
    pthread_mutex_lock(&m->mu);
    while (!m->stop && pthread_cond_timedwait(&m->cv, &m->mu, &until) == 0)
        ;
    bool stop = m->stop;
    pthread_mutex_unlock(&m->mu);
    return stop;
}

static void *maintenance(void *p)
{
    maint_arg *m = p;
    int failures = 0;
    time_t last_purge = 0;
    char storage_err[256] = "";
    bool storage_ok = true;
    bool *present = calloc(m->cfg->nhealth_files + 1, sizeof *present); /* health.file */
    for (int tick = 0;; tick++) {
        if (m->cfg->health_enabled && tick % (int)m->cfg->health_interval_s == 0) {
            if (store_check_writable(m->st) < 0 || store_check_metadata(m->st) < 0) {
                if (++failures >= m->cfg->health_threshold && storage_ok) {
                    log_error("msg=\"storage health check failed\" err=\"%s\"", berr_msg());
                    snprintf(storage_err, sizeof storage_err, "%s", berr_msg());
                    storage_ok = false;
                }
            } else {
                if (!storage_ok) log_info("msg=\"storage healthy again\"");
                failures = 0;
                storage_ok = true;
            }
        }
        /* health.file (registry:2): unhealthy while one of the files exists */
        const char *file = NULL;
        for (size_t i = 0; present && i < m->cfg->nhealth_files; i++) {
            const char *path = m->cfg->health_files[i].path;
            if (tick % (int)m->cfg->health_files[i].interval_s == 0) {
                bool now = access(path, F_OK) == 0;
                if (now != present[i])
                    log_msg(now ? LOG_WARN : LOG_INFO,
                            "msg=\"health file %s: reporting %s\" file=\"%s\"",
                            now ? "present" : "gone", now ? "unhealthy" : "healthy", path);
                present[i] = now;
            }
            if (present[i] && !file) file = path;
        }
        if (!storage_ok) {
            http_server_set_health(false, storage_err);
        } else if (file) {
            char why[300];
            snprintf(why, sizeof why, "health file %s exists", file);
            http_server_set_health(false, why);
        } else if (!http_server_healthy()) {
            http_server_set_healthy(true);
        }
        if (m->cfg->nmirrors || m->cfg->proxy) reg_mirror_maintain(m->st, m->cfg, tick % 5 == 0);
        if (m->cfg->helm.enabled) helm_views_warm(m->st, m->cfg);
        if (m->cfg->quota > 0 && tick % 5 == 0) store_refresh_usage(m->st);
        if (m->cfg->purge_enabled && time(NULL) - last_purge >= m->cfg->purge_interval_s) {
            store_upload_purge(m->st, m->cfg->purge_age_s);
            last_purge = time(NULL);
        }
        if (maint_wait(m)) break;
    }
    free(present);
    return NULL;
}

static void signal_set(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
}

void serve_block_signals(void)
{
    sigset_t set;
    signal_set(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Raises the soft descriptor limit to the hard one, as docker-registry does: every client
 * connection, blob being served, upload and upstream fill takes one, and systemd's default soft
 * limit of 1024 refuses a fleet of a hundred-odd devices pulling at once. Returns the limit. */
static unsigned long long raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = rl;
        want.rlim_cur = rl.rlim_max == RLIM_INFINITY ? 1048576 : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            rl = want;
        else
            log_warn("msg=\"cannot raise the descriptor limit\" soft=%llu hard=%llu",
                     (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
    }
    return (unsigned long long)rl.rlim_cur;
}

/* ---- the gauges of the metrics (read when scraped) ---- */

static store *metrics_store;
static const config *metrics_cfg;

static int64_t gauge_uploads(void)
{
    return limits_bodies();
}

static int64_t gauge_store(void)
{
    uint64_t all = 0, mirrored = 0;
    store_usage(metrics_store, &all, &mirrored);
    return (int64_t)all;
}

static int64_t gauge_cache(void)
{
    uint64_t all = 0, mirrored = 0;
    store_usage(metrics_store, &all, &mirrored);
    return (int64_t)mirrored;
}

static int64_t gauge_cache_max(void)
{
    return metrics_cfg->cache_max > 0 ? metrics_cfg->cache_max : 0;
}

static int64_t gauge_down(void)
{
    json_t *down = reg_mirror_health();
    int64_t n = (int64_t)json_array_size(down);
    json_decref(down);
    return n;
}

static void register_gauges(void)
{
    metrics_gauge(GAUGE_IN_FLIGHT, http_server_in_flight);
    metrics_gauge(GAUGE_QUEUE, http_server_queue_depth);
    metrics_gauge(GAUGE_UPLOADS, gauge_uploads);
    metrics_gauge(GAUGE_STORE_BYTES, gauge_store);
    metrics_gauge(GAUGE_CACHE_BYTES, gauge_cache);
    metrics_gauge(GAUGE_CACHE_MAX, gauge_cache_max);
    metrics_gauge(GAUGE_UPSTREAMS_DOWN, gauge_down);
}

int serve_run(config *cfg, store *st)
{
    unsigned long long nofile = raise_nofile();
    /* signals are taken by sigwait below; threads started from here inherit the mask */
    serve_block_signals();
    startup_checks(cfg, st);
    sigset_t set;
    signal_set(&set);
    http_server *srv;
    status_set_upstreams_down(reg_mirror_health);
    if (http_server_start(&srv, cfg, st, &serve_site) < 0) {
        log_error("msg=\"cannot start server\" err=\"%s\"", berr_msg());
        return -1;
    }
    log_info("msg=\"berth serving\" version=%s addr=%s root=%s tls=%s delete=%s%s nofile=%llu",
             BERTH_VERSION, cfg->addr, store_root(st), cfg->tls_cert ? "on" : "off",
             cfg->delete_enabled ? "enabled" : "disabled", cfg->read_only ? " read_only=true" : "",
             nofile);
    http_debug *dbg = NULL;
    metrics_store = st;
    metrics_cfg = cfg;
    register_gauges();
    notify *nt = notify_start(cfg, st); /* notifications: one delivery thread per endpoint */
    if (http_debug_start(&dbg, cfg) < 0) {
        log_error("msg=\"cannot start the debug listener\" err=\"%s\"", berr_msg());
        http_server_stop(srv, 0);
        return -1;
    }
    maint_arg m = {.cfg = cfg, .st = st};
    pthread_mutex_init(&m.mu, NULL);
    pthread_cond_init(&m.cv, NULL);
    pthread_t mt;
    pthread_create(&mt, NULL, maintenance, &m);
    ui_start(cfg, st); /* the web view's state writer (last pulls, runtime snapshot) */
    int sig = 0;
    sigwait(&set, &sig);
    log_info("msg=\"shutting down\" signal=%d", sig);
    http_server_stop(srv, 30);
    ui_stop();
    http_debug_stop(dbg);
    pthread_mutex_lock(&m.mu);
    m.stop = true;
    pthread_cond_signal(&m.cv);
    pthread_mutex_unlock(&m.mu);
    pthread_join(mt, NULL);
    notify_stop(nt);
    pthread_cond_destroy(&m.cv);
    pthread_mutex_destroy(&m.mu);
    helm_views_free();
    helm_mirror_free();
    auth_free_cache();
    auth_token_free();
    log_info("msg=\"stopped\"");
    return 0;
}
