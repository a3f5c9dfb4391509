/*
 * http/limits: admission before a request reaches its handler.
 *
 * - Per-client request rate (`limits.rate` requests per second, `limits.burst` at once): a token
 *   bucket per client address, in a fixed table (open addressing; a full neighbourhood evicts its
 *   stalest bucket, which at worst forgives a client). Over the rate: 429 TOOMANYREQUESTS with
 *   Retry-After, the seconds until a token is back.
 * - Concurrent request bodies (`limits.uploads`): at most that many requests that carry a body
 *   (uploads, manifest and chart PUTs/POSTs) at once; more: 429 with Retry-After: 1.
 */
#include "http/http.h"
#include "util/err.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>

#define BUCKETS 4096
#define PROBE 8

typedef struct {
    uint8_t addr[16];
    bool used;
    double tokens;
    double last; /* seconds, monotonic */
} bucket;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static bucket table[BUCKETS];
static atomic_int bodies;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void addr_key(const struct sockaddr *sa, uint8_t key[16])
{
    memset(key, 0, 16);
    if (!sa) return;
    if (sa->sa_family == AF_INET)
        memcpy(key, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    else if (sa->sa_family == AF_INET6)
        memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
}

/* Takes a token for the address; 0, or seconds to wait. */
static long take(const uint8_t key[16], double rate, double burst)
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    double t = now_s();
    pthread_mutex_lock(&mu);
    bucket *b = NULL, *stalest = NULL;
    for (int i = 0; i < PROBE && !b; i++) {
        bucket *c = &table[(h + (uint32_t)i) % BUCKETS];
        if (c->used && !memcmp(c->addr, key, 16))
            b = c;
        else if (!stalest || !c->used || (stalest->used && c->last < stalest->last))
            stalest = c;
    }
    if (!b) {
        b = stalest;
        memcpy(b->addr, key, 16);
        b->used = true;
        b->tokens = burst;
        b->last = t;
    }
    double refilled = b->tokens + (t - b->last) * rate;
    b->tokens = refilled < burst ? refilled : burst;
    b->last = t;
    long wait = 0;
    if (b->tokens >= 1.0)
        b->tokens -= 1.0;
    else {
        double w = (1.0 - b->tokens) / rate; /* whole seconds, rounded up */
        wait = (long)w;
        if ((double)wait < w) wait++;
    }
    pthread_mutex_unlock(&mu);
    return wait;
}

int limits_admit(http_req *r, const struct sockaddr *client)
{
    const config *cfg = r->cfg;
    if (cfg->rate_limit > 0) {
        uint8_t key[16];
        addr_key(client, key);
        double burst = cfg->rate_burst > 0 ? cfg->rate_burst : cfg->rate_limit;
        long wait = take(key, cfg->rate_limit, burst);
        if (wait > 0) {
            r->retry_after = wait;
            return berr_set(BERR_TOOMANYREQUESTS,
                            "too many requests from this address: retry in %ld s", wait);
        }
    }
    if (cfg->max_bodies > 0 &&
        (r->method == M_PUT || r->method == M_POST || r->method == M_PATCH)) {
        const char *cl = http_header(r, "Content-Length");
        const char *te = http_header(r, "Transfer-Encoding");
        if ((cl && strcmp(cl, "0") != 0) || te) {
            if (atomic_fetch_add(&bodies, 1) >= cfg->max_bodies) {
                atomic_fetch_sub(&bodies, 1);
                r->retry_after = 1;
                return berr_set(BERR_TOOMANYREQUESTS,
                                "too many uploads in progress: retry shortly");
            }
            r->holds_body_slot = true;
        }
    }
    return 0;
}

void limits_done(http_req *r)
{
    if (r->holds_body_slot) {
        atomic_fetch_sub(&bodies, 1);
        r->holds_body_slot = false;
    }
}
