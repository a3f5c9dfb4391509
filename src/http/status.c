/*
 * status: the endpoints outside the OCI API. `GET /` names the service; `GET /health` (also
 * `/debug/health`, registry:2's path) answers 200 {"healthy":true} while the periodic checks of
 * the engines pass (blob storage writable, metadata reachable: SQLite, or PostgreSQL when
 * configured) and 503 {"healthy":false,"reason":...} when one fails, so a load balancer takes
 * the replica out. An upstream mirror marked down (registry/mirror.c) is named in
 * "upstreams_down" while the answer stays 200: berth still serves, cached content included.
 */
#include "http/http.h"
#include "util/err.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static int root_end(http_req *r)
{
    static const char body[] = "{\"service\":\"berth\",\"api\":\"/v2/\",\"health\":\"/health\"}\n";
    return http_reply(r, 200, "application/json", body, sizeof body - 1);
}

static json_t *(*_Atomic upstreams_down)(void);

void status_set_upstreams_down(json_t *(*down)(void))
{
    upstreams_down = down;
}

char *status_health_json(int *status)
{
    json_t *(*down_fn)(void) = upstreams_down;
    json_t *down = down_fn ? down_fn() : NULL, *j;
    *status = 200;
    if (http_server_healthy() && !down) {
        j = json_pack("{s:b}", "healthy", 1);
    } else if (http_server_healthy()) { /* serving, cached content included: say which is not */
        j = json_pack("{s:b,s:o}", "healthy", 1, "upstreams_down", down);
    } else {
        json_decref(down);
        char reason[256];
        http_server_health_reason(reason, sizeof reason);
        j = json_pack("{s:b,s:s}", "healthy", 0, "reason", reason[0] ? reason : "unhealthy");
        *status = 503;
    }
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!body) return NULL;
    size_t n = strlen(body);
    char *nl = realloc(body, n + 2);
    if (!nl) {
        free(body);
        return NULL;
    }
    nl[n] = '\n';
    nl[n + 1] = '\0';
    return nl;
}

static int health_end(http_req *r)
{
    int status;
    char *body = status_health_json(&status);
    if (!body) return berr_set(BERR_INTERNAL, "out of memory");
    return http_reply_owned(r, status, "application/json", body, strlen(body));
}

const http_handler status_root_h = {.end = root_end};
const http_handler status_health_h = {.end = health_end};

static int status_match(http_req *r, int *endpoint)
{
    if (!strcmp(r->path, "/"))
        *endpoint = STATUS_ROOT;
    else if (!strcmp(r->path, "/health") || !strcmp(r->path, "/debug/health") ||
             !strcmp(r->path, "/healthz"))
        *endpoint = STATUS_HEALTH;
    else
        return 0;
    return 1;
}

const http_router status_router = {.name = "status", .match = status_match};
