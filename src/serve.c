/*
 * serve: runs the registry over an open store until SIGTERM or SIGINT: the HTTP server and the
 * maintenance thread (storage health, mirror upkeep, Helm index views, quota, upload purging).
 * `berth serve` and `berth bundle serve` both end here. The health check covers both engines:
 * the blob storage (a synced probe file) and the metadata (one query).
 */
#include "serve.h"
#include "auth/auth.h"
#include "helm/helm.h"
#include "http/http.h"
#include "registry/registry.h"
#include "util/err.h"
#include "util/log.h"

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* ---- serve ---- */

typedef struct {
    const config *cfg;
    store *st;
    volatile bool stop;
} maint_arg;

static void *maintenance(void *p)
{
    maint_arg *m = p;
    int failures = 0;
    time_t last_purge = 0;
    for (int tick = 0; !m->stop; tick++) {
        if (m->cfg->health_enabled && tick % (int)m->cfg->health_interval_s == 0) {
            if (store_check_writable(m->st) < 0 || store_check_metadata(m->st) < 0) {
                if (++failures >= m->cfg->health_threshold && http_server_healthy()) {
                    log_error("msg=\"storage health check failed\" err=\"%s\"", berr_msg());
                    http_server_set_health(false, berr_msg());
                }
            } else {
                if (!http_server_healthy()) log_info("msg=\"storage healthy again\"");
                failures = 0;
                http_server_set_healthy(true);
            }
        }
        if (m->cfg->nmirrors || m->cfg->proxy) reg_mirror_maintain(m->st, m->cfg, tick % 5 == 0);
        if (m->cfg->helm.enabled) helm_views_warm(m->st, m->cfg);
        if (m->cfg->quota > 0 && tick % 5 == 0) store_refresh_usage(m->st);
        if (m->cfg->purge_enabled && time(NULL) - last_purge >= m->cfg->purge_interval_s) {
            store_upload_purge(m->st, m->cfg->purge_age_s);
            last_purge = time(NULL);
        }
        sleep(1);
    }
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

int serve_run(config *cfg, store *st)
{
    unsigned long long nofile = raise_nofile();
    /* signals are taken by sigwait below; threads started from here inherit the mask */
    serve_block_signals();
    sigset_t set;
    signal_set(&set);
    http_server *srv;
    if (http_server_start(&srv, cfg, st) < 0) {
        log_error("msg=\"cannot start server\" err=\"%s\"", berr_msg());
        return -1;
    }
    log_info("msg=\"berth serving\" version=%s addr=%s root=%s tls=%s delete=%s%s nofile=%llu",
             BERTH_VERSION, cfg->addr, store_root(st), cfg->tls_cert ? "on" : "off",
             cfg->delete_enabled ? "enabled" : "disabled", cfg->read_only ? " read_only=true" : "",
             nofile);
    maint_arg m = {cfg, st, false};
    pthread_t mt;
    pthread_create(&mt, NULL, maintenance, &m);
    int sig = 0;
    sigwait(&set, &sig);
    log_info("msg=\"shutting down\" signal=%d", sig);
    http_server_stop(srv, 30);
    m.stop = true;
    pthread_join(mt, NULL);
    helm_views_free();
    helm_mirror_free();
    auth_free_cache();
    auth_token_free();
    log_info("msg=\"stopped\"");
    return 0;
}
