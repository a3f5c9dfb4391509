/*
 * http/debug: registry:2's debug listener. With http.debug.addr a second, plain-HTTP listener
 * (one thread of its own, apart from the API's event loop and workers, so a probe or a scrape is
 * answered while the API is busy) serves GET /debug/health, the same answer as /health, and,
 * with http.debug.prometheus.enabled, the metrics (util/metrics.h) at http.debug.prometheus.path.
 * Nothing else is served there; without the key nothing listens. Kubernetes probes and
 * Prometheus scrapes of existing registry:2 deployments keep working unchanged.
 */
#include "http/http.h"
#include "util/err.h"
#include "util/log.h"
#include "util/metrics.h"

#include <errno.h>
#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct http_debug {
    struct MHD_Daemon *d;
    const config *cfg;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *ct, char *body)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", ct);
    enum MHD_Result ok = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ok;
}

static enum MHD_Result debug_ahc(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    (void)version, (void)upload;
    http_debug *d = cls;
    static int first;
    if (!*con_cls) { /* answered on the second call: the connection then stays alive */
        *con_cls = &first;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return reply(c, 405, "text/plain", strdup("method not allowed\n"));
    if (!strcmp(url, "/debug/health") || !strcmp(url, "/health")) {
        int status;
        char *body = status_health_json(&status);
        return body ? reply(c, (unsigned)status, "application/json", body) : MHD_NO;
    }
    if (d->cfg->debug_prometheus && !strcmp(url, d->cfg->debug_prometheus_path)) {
        strbuf b = {0};
        metrics_render(&b);
        if (b.oom || !b.buf) {
            free(b.buf);
            return MHD_NO;
        }
        return reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.buf);
    }
    return reply(c, 404, "text/plain", strdup("not found\n"));
}

int http_debug_start(http_debug **out, const config *cfg)
{
    *out = NULL;
    if (!cfg->debug_addr) return 0;
    struct sockaddr_storage ss;
    unsigned len;
    int rc = http_parse_addr(cfg->debug_addr, &ss, &len);
    if (rc < 0) return berr_set(BERR_CONFIG, "http.debug.addr: %s", berr_msg());
    http_debug *d = calloc(1, sizeof *d);
    if (!d) return berr_set(BERR_INTERNAL, "out of memory");
    d->cfg = cfg;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    d->d = MHD_start_daemon(flags, 0, NULL, NULL, debug_ahc, d, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
    if (!d->d) {
        int e = errno;
        free(d);
        return berr_set(BERR_CONFIG, "http.debug.addr: cannot listen on %s: %s", cfg->debug_addr,
                        strerror(e));
    }
    log_info("msg=\"debug listener\" addr=%s health=/debug/health metrics=%s", cfg->debug_addr,
             cfg->debug_prometheus ? cfg->debug_prometheus_path : "off");
    *out = d;
    return 0;
}

void http_debug_stop(http_debug *d)
{
    if (!d) return;
    MHD_stop_daemon(d->d);
    free(d);
}
