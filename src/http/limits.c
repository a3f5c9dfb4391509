/*
 * http/limits: admission before a request reaches its handler.
 *
 * - Per-client request rate (`limits.rate` requests per second, `limits.burst` at once): a token
 *   bucket per client address, in a fixed table (open addressing; a full neighbourhood evicts its
 *   stalest bucket, which at worst forgives a client). Over the rate: 429 TOOMANYREQUESTS with
 *   Retry-After, the seconds until a token is back.
 * - Concurrent request bodies (`limits.uploads`): at most that many requests that carry a body
 *   (uploads, manifest and chart PUTs/POSTs) at once; more: 429 with Retry-After: 1.
 * - Failed sign-ins per client address: SIGNIN_FREE failures within SIGNIN_WINDOW seconds are
 *   free; each one after that blocks the address for twice as long as the one before (1 s, 2 s,
 *   ... up to SIGNIN_BLOCK_MAX), and while blocked its sign-ins are refused with 429 before any
 *   password is checked, so a guesser costs a bcrypt per few seconds, not a worker per request.
 */
#include "http/http.h"
#include "util/err.h"
#include "util/metrics.h"

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

#define SIGNIN_FREE 5
#define SIGNIN_WINDOW 60.0
#define SIGNIN_BLOCK_MAX 60.0
#define SIGNIN_SLOTS 1024

typedef struct {
    uint8_t addr[16];
    bool used;
    int failures;
    double first, until; /* seconds, monotonic */
} signin;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static bucket table[BUCKETS];
static signin signins[SIGNIN_SLOTS];
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
    addr_key(client, r->client);
    if (cfg->rate_limit > 0) {
        const uint8_t *key = r->client;
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

static uint32_t addr_hash(const uint8_t key[16])
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    return h;
}

/* The address's record (made when create; the stalest of its neighbourhood is reused); called
 * with mu held. */
static signin *signin_of(const uint8_t key[16], bool create, double t)
{
    uint32_t h = addr_hash(key);
    signin *stalest = NULL;
    for (int i = 0; i < PROBE; i++) {
        signin *c = &signins[(h + (uint32_t)i) % SIGNIN_SLOTS];
        if (c->used && !memcmp(c->addr, key, 16)) return c;
        if (!stalest || !c->used || (stalest->used && c->first < stalest->first)) stalest = c;
    }
    if (!create) return NULL;
    memset(stalest, 0, sizeof *stalest);
    memcpy(stalest->addr, key, 16);
    stalest->used = true;
    stalest->first = t;
    return stalest;
}

void limits_signin_failed(const http_req *r)
{
    double t = now_s();
    pthread_mutex_lock(&mu);
    signin *e = signin_of(r->client, true, t);
    if (t - e->first > SIGNIN_WINDOW && t >= e->until) { /* a new window */
        e->failures = 0;
        e->first = t;
    }
    metrics_inc(METRIC_SIGNIN_FAILURES);
    if (++e->failures > SIGNIN_FREE) {
        int k = e->failures - SIGNIN_FREE - 1;
        double block = k >= 6 ? SIGNIN_BLOCK_MAX : (double)(1 << k);
        e->until = t + block;
    }
    pthread_mutex_unlock(&mu);
}

long limits_signin_wait(const http_req *r)
{
    double t = now_s();
    long wait = 0;
    pthread_mutex_lock(&mu);
    signin *e = signin_of(r->client, false, t);
    if (e && e->until > t) {
        double w = e->until - t;
        wait = (long)w;
        if ((double)wait < w) wait++;
    }
    pthread_mutex_unlock(&mu);
    return wait;
}

int64_t limits_bodies(void)
{
    return atomic_load(&bodies);
}
