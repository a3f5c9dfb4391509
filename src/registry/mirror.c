/*
 * mirror: the pull-through cache, as a view over the same store. A request is for a mirror when
 * containerd's ?ns=<registry> names a configured mirror, when the repository name starts with a
 * mirror's name (/v2/ghcr.io/org/app/...), or, for the registry:2 default upstream
 * (proxy.remoteurl), when no local repository of that name exists (pushed content wins).
 * Cached content lives in the store under "<mirror>/<upstream repository>", read-only to clients.
 *
 * Semantics: content by digest is immutable, fetched once; a tag is re-checked upstream (HEAD)
 * at most once per `revalidate` interval and served from the store in between; when the upstream
 * cannot be reached, times out, answers 5xx or 429, the cached tag is served (stale-if-error) and
 * the outage is logged once. A cold blob is fetched once however many clients ask at the same
 * time (the others wait for that fill), hashed while it is written and committed only when the
 * digest matches; berths sharing one metadata database take a lease per blob, so only one of
 * them fetches it and the others serve it once committed. Upstream 404s are remembered for a few
 * seconds so clients that try a list of hosts fall through fast. Steps that talk to the upstream
 * run on threads of their own (a fill, a tag's check): a request waiting for one is parked
 * without holding a worker, so a silent upstream never starves local requests or other
 * upstreams. A cached tag's check is bounded by timeout.revalidate; an upstream that does not
 * answer is marked down and probed in the background (see "upstream health" below).
 */
#include "proxy/fill.h"
#include "proxy/upstream.h"
#include "registry/ingest.h"
#include "registry/registry.h"
#include "trust/trust.h"
#include "util/err.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/ref.h"

#include <fnmatch.h>
#include <microhttpd.h> /* streaming fills: suspend/resume and the content reader */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define NEGATIVE_TTL_S 10

/* ---- routing ---- */

static const config_mirror *find_mirror(const config *cfg, const char *name, size_t len)
{
    for (size_t i = 0; i < cfg->nmirrors; i++) {
        const config_mirror *m = &cfg->mirrors[i];
        if ((strlen(m->name) == len && !strncasecmp(m->name, name, len)) ||
            (strlen(m->local) == len && !strncmp(m->local, name, len)))
            return m;
    }
    return NULL;
}

bool reg_mirror_serves(const config_mirror *m, const char *upstream_repo)
{
    if (m->nrepos == 0) return true;
    for (size_t i = 0; i < m->nrepos; i++) {
        const char *p = m->repos[i];
        if (!strcmp(p, "**") || fnmatch(p, upstream_repo, 0) == 0) return true;
        /* a pattern ending in "/" and two stars takes everything below that prefix */
        size_t n = strlen(p);
        if (n > 3 && !strcmp(p + n - 3, "/**") && !strncmp(p, upstream_repo, n - 2)) return true;
    }
    return false;
}

/* ?ns=<registry> naming no configured mirror: a read of "<registry>/<name>" when such a local
 * repository exists (content imported from a bundle, or pushed under the registry's name), so
 * containerd finds it with its usual hosts.toml. */
static void route_ns_local(http_req *r, const char *ns)
{
    if (r->method != M_GET && r->method != M_HEAD) return;
    char local[512];
    bool hub = !strcmp(ns, "docker.io") || !strcmp(ns, "index.docker.io");
    int n = snprintf(local, sizeof local, "%s/%s%s", hub ? "docker.io" : ns,
                     hub && !strchr(r->name, '/') ? "library/" : "", r->name);
    if (n < 0 || (size_t)n >= sizeof r->name) return;
    for (char *c = local; *c && *c != '/'; c++)
        if (*c == ':') *c = '-';
    if (ref_name_valid(local) && store_repo_exists(r->store, local) == 0)
        snprintf(r->name, sizeof r->name, "%s", local);
}

/* A name that cannot be Docker Hub's: its first component is a registry host
 * ("registry.example.com/app", "host:5000/x", "localhost/x", as Docker reads names), or it has
 * more than two components (Docker Hub's are "name" or "namespace/name"). */
static bool not_hub_name(const char *name)
{
    size_t n = strcspn(name, "/");
    if (!name[n]) return false; /* one component: library/<name> */
    if (strchr(name + n + 1, '/')) return true;
    return memchr(name, '.', n) || memchr(name, ':', n) ||
           (n == 9 && !strncmp(name, "localhost", 9));
}

const config_mirror *reg_mirror_hub(const config *cfg)
{
    for (size_t i = 0; i < cfg->nmirrors; i++)
        if (cfg->mirrors[i].library_prefix) return &cfg->mirrors[i];
    return NULL;
}

int reg_mirror_route(http_req *r)
{
    const config *cfg = r->cfg;
    const char *ns = http_query(r, "ns");
    const config_mirror *m = NULL;
    if (ns) m = find_mirror(cfg, ns, strlen(ns));
    if (ns && !m) route_ns_local(r, ns);
    if (!cfg->nmirrors && !cfg->proxy) return 0;
    const char *up = r->name;
    if (!m) {
        const char *slash = strchr(r->name, '/');
        if (slash && (m = find_mirror(cfg, r->name, (size_t)(slash - r->name)))) up = slash + 1;
    }
    bool write = r->method != M_GET && r->method != M_HEAD;
    /* a bare name (no ?ns=, no mirror prefix: what dockerd's registry-mirrors and registry:2
     * clients ask) that is no local repository goes to the default upstream: proxy.remoteurl,
     * else the mirror that stands for Docker Hub */
    const config_mirror *dflt = cfg->proxy ? cfg->proxy : reg_mirror_hub(cfg);
    if (!cfg->proxy && not_hub_name(r->name)) dflt = NULL;
    bool bare = !m && dflt;
    if (bare && write && cfg->proxy && !cfg->proxy_localpush)
        return berr_set(BERR_UNSUPPORTED,
                        "this registry is a pull-through cache of %s (proxy.remoteurl): it takes "
                        "no pushes or deletes, as registry:2 in proxy mode (proxy.localpush: true "
                        "allows local repositories)",
                        cfg->proxy->name);
    if (bare && store_repo_exists(r->store, r->name) != 0) m = dflt;
    if (!m) return 0;
    if (m->library_prefix && !strchr(up, '/'))
        snprintf(r->upstream_repo, sizeof r->upstream_repo, "library/%s", up);
    else
        snprintf(r->upstream_repo, sizeof r->upstream_repo, "%s", up);
    if (!reg_mirror_serves(m, r->upstream_repo)) {
        /* not this mirror's: an ordinary local repository of that name, or nothing */
        r->upstream_repo[0] = '\0';
        if (write && !bare) return berr_set(BERR_DENIED, "%s is a read-only mirror", m->name);
        return 0;
    }
    if (bare && write && m == cfg->proxy) { /* proxy.localpush: a new local repository */
        r->upstream_repo[0] = '\0';
        return 0;
    }
    if (bare && write)
        return berr_set(BERR_DENIED,
                        "%s is %s/%s here (mirrors.%s): a push under this name would stand in "
                        "for the mirrored one; push under a name the mirror does not serve "
                        "(see its repositories patterns)",
                        r->name, m->name, r->upstream_repo, m->name);
    char local[512];
    snprintf(local, sizeof local, "%s/%s", m->local, r->upstream_repo);
    if (strlen(local) >= sizeof r->name || !ref_name_valid(local))
        return berr_set(BERR_NAME_INVALID, "mirrored repository name too long");
    snprintf(r->name, sizeof r->name, "%s", local);
    r->mirror = m;
    if (write) return berr_set(BERR_DENIED, "%s is a read-only mirror", m->name);
    return 0;
}

/* ---- upstream health: log an outage once, not per request ----
 * An upstream that does not answer (refused, reset, timed out) or answers 502-504 is marked
 * down: from then on a request for a cached tag is served what berth has without asking, and a
 * request that needs the upstream fails at once (503) instead of waiting for it; the
 * maintenance thread probes it (GET /v2/, bounded by timeout.revalidate) 1 s later, then with a
 * doubling gap up to a minute, and the first answer marks it up again. /health lists it. */

static pthread_mutex_t state_mu = PTHREAD_MUTEX_INITIALIZER;

#define PROBE_FIRST_MS 1000
#define PROBE_MAX_MS 60000

typedef struct down_entry {
    const config_mirror *m;
    time_t backoff_until; /* from a 429's Retry-After */
    bool down;            /* an outage was logged */
    bool dark;            /* no answer: marked down, probed in the background */
    bool probing;
    int64_t next_probe, gap_ms, since;
    char why[200];
    struct down_entry *next;
} down_entry;
static down_entry *downs;

static down_entry *down_of(const config_mirror *m)
{
    down_entry *d = downs;
    while (d && d->m != m)
        d = d->next;
    if (!d && (d = calloc(1, sizeof *d))) {
        d->m = m;
        d->next = downs;
        downs = d;
    }
    return d;
}

static void mark_up(const config_mirror *m, bool up, const char *why)
{
    pthread_mutex_lock(&state_mu);
    down_entry *d = down_of(m);
    if (d && up) {
        d->dark = false;
        d->gap_ms = 0;
    }
    if (d && d->down == up) {
        d->down = !up;
        if (up)
            log_info("msg=\"upstream reachable again\" mirror=%s", m->name);
        else
            log_warn("msg=\"upstream unavailable: only cached content is served until it answers\" "
                     "mirror=%s err=\"%s\"",
                     m->name, why);
    }
    pthread_mutex_unlock(&state_mu);
}

/* Marks m down after it did not answer: probed from the maintenance thread from now on. */
static void mark_dark(const config_mirror *m, const char *why)
{
    pthread_mutex_lock(&state_mu);
    down_entry *d = down_of(m);
    if (d && !d->dark) {
        d->dark = true;
        d->since = store_now();
        d->gap_ms = PROBE_FIRST_MS;
        d->next_probe = store_now() + d->gap_ms;
        log_warn("msg=\"upstream down: cached content is served, other requests fail at once; "
                 "probing it in the background\" mirror=%s err=\"%s\"",
                 m->name, why);
    }
    if (d) snprintf(d->why, sizeof d->why, "%s", why);
    pthread_mutex_unlock(&state_mu);
}

/* Whether m is marked down; why (when not NULL) receives the last failure. */
static bool is_dark(const config_mirror *m, char *why, size_t len)
{
    pthread_mutex_lock(&state_mu);
    down_entry *d = downs;
    while (d && d->m != m)
        d = d->next;
    bool dark = d && d->dark;
    if (dark && why) snprintf(why, len, "%s", d->why);
    pthread_mutex_unlock(&state_mu);
    return dark;
}

static int down_error(const config_mirror *m)
{
    char why[200] = "";
    is_dark(m, why, sizeof why);
    return berr_set(BERR_UNAVAILABLE, "upstream %s is down (%s); retrying it in the background",
                    m->name, why);
}

static void *probe_main(void *arg)
{
    const config_mirror *m = arg;
    berr_clear();
    upstream_resp u;
    int rc = upstream_ping(m, (long)m->revalidate_ms, &u);
    upstream_resp_free(&u);
    if (rc == 0) mark_up(m, true, NULL);
    pthread_mutex_lock(&state_mu);
    down_entry *d = down_of(m);
    if (d) {
        d->probing = false;
        if (rc < 0 && d->dark) {
            d->gap_ms = d->gap_ms * 2 < PROBE_MAX_MS ? d->gap_ms * 2 : PROBE_MAX_MS;
            d->next_probe = store_now() + d->gap_ms;
            snprintf(d->why, sizeof d->why, "%s", berr_msg());
        }
    }
    pthread_mutex_unlock(&state_mu);
    return NULL;
}

/* Starts the probe of each upstream marked down whose time has come (one at a time each). */
static void probe_due(const config *cfg)
{
    int64_t now = store_now();
    pthread_mutex_lock(&state_mu);
    for (down_entry *d = downs; d; d = d->next) {
        if (!d->dark || d->probing || d->next_probe > now) continue;
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, probe_main, (void *)d->m) == 0) d->probing = true;
        pthread_attr_destroy(&attr);
    }
    pthread_mutex_unlock(&state_mu);
    (void)cfg;
}

json_t *reg_mirror_health(void)
{
    json_t *list = NULL;
    pthread_mutex_lock(&state_mu);
    for (down_entry *d = downs; d; d = d->next) {
        if (!d->dark) continue;
        if (!list) list = json_array();
        json_array_append_new(list,
                              json_pack("{s:s,s:s,s:I}", "mirror", d->m->name, "error", d->why,
                                        "down_ms", (json_int_t)(store_now() - d->since)));
    }
    pthread_mutex_unlock(&state_mu);
    return list;
}

static bool in_backoff(const config_mirror *m)
{
    pthread_mutex_lock(&state_mu);
    down_entry *d = down_of(m);
    bool b = d && d->backoff_until > time(NULL);
    pthread_mutex_unlock(&state_mu);
    return b;
}

static void set_backoff(const config_mirror *m, long secs)
{
    pthread_mutex_lock(&state_mu);
    down_entry *d = down_of(m);
    if (d) d->backoff_until = time(NULL) + (secs > 0 ? secs : 10);
    pthread_mutex_unlock(&state_mu);
}

/* ---- negative cache ---- */

typedef struct neg_entry {
    char key[600];
    time_t until;
    struct neg_entry *next;
} neg_entry;
static neg_entry *negs;

static bool neg_hit(const char *key)
{
    bool hit = false;
    time_t now = time(NULL);
    pthread_mutex_lock(&state_mu);
    for (neg_entry **p = &negs; *p;) {
        if ((*p)->until <= now) { /* expired: drop */
            neg_entry *e = *p;
            *p = e->next;
            free(e);
            continue;
        }
        if (!strcmp((*p)->key, key)) hit = true;
        p = &(*p)->next;
    }
    pthread_mutex_unlock(&state_mu);
    return hit;
}

static void neg_add(const char *key)
{
    neg_entry *e = calloc(1, sizeof *e);
    if (!e) return;
    snprintf(e->key, sizeof e->key, "%s", key);
    e->until = time(NULL) + NEGATIVE_TTL_S;
    pthread_mutex_lock(&state_mu);
    e->next = negs;
    negs = e;
    pthread_mutex_unlock(&state_mu);
}

/* An upstream answer that means "cannot tell now": serve stale where possible. */
static bool transient(int rc, const upstream_resp *u)
{
    return rc < 0 || u->status >= 500 || u->status == 429 || u->status == 401 || u->status == 403 ||
           u->status == 0;
}

static int unavailable(const config_mirror *m, int rc, const upstream_resp *u)
{
    if (u->status == 429) set_backoff(m, u->retry_after);
    char why[256];
    if (rc < 0)
        snprintf(why, sizeof why, "%s", berr_msg());
    else
        snprintf(why, sizeof why, "upstream answered %ld", u->status);
    mark_up(m, false, why);
    if (rc < 0 || u->status == 502 || u->status == 503 || u->status == 504) mark_dark(m, why);
    if (u->status == 401 || u->status == 403)
        return berr_set(BERR_UNAVAILABLE, "upstream %s refused access (%ld)", m->name, u->status);
    return berr_set(BERR_UNAVAILABLE, "upstream %s unavailable: %s", m->name, why);
}

/* ---- last access, batched: serving never writes ---- */

typedef struct {
    char repo[256];
    char digest[DIGEST_STR_MAX];
    int64_t when;
} access_rec;

#define ACCESS_MAX 4096
static access_rec accesses[ACCESS_MAX];
static size_t naccesses;

static void note_access(const char *repo, const char *digest)
{
    pthread_mutex_lock(&state_mu);
    size_t i = 0;
    while (i < naccesses && (strcmp(accesses[i].digest, digest) || strcmp(accesses[i].repo, repo)))
        i++;
    if (i == naccesses && naccesses < ACCESS_MAX) {
        snprintf(accesses[i].repo, sizeof accesses[i].repo, "%s", repo);
        snprintf(accesses[i].digest, sizeof accesses[i].digest, "%s", digest);
        naccesses++;
    }
    if (i < naccesses) accesses[i].when = store_now();
    pthread_mutex_unlock(&state_mu);
}

/* Who holds a lease: this host and process, what for, and which one (p) when there are many. */
static void lease_owner(char *out, size_t len, const char *what, const void *p)
{
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    snprintf(out, len, "%s %d %s %p", host, (int)getpid(), what, p);
}

void reg_mirror_maintain(store *st, const config *cfg, bool evict)
{
    probe_due(cfg);
    static access_rec batch[ACCESS_MAX];
    static store_access list[ACCESS_MAX];
    pthread_mutex_lock(&state_mu);
    size_t n = naccesses;
    memcpy(batch, accesses, n * sizeof *batch);
    naccesses = 0;
    pthread_mutex_unlock(&state_mu);
    for (size_t i = 0; i < n; i++)
        list[i] = (store_access){batch[i].repo, batch[i].digest, batch[i].when};
    if (store_touch(st, list, n) < 0)
        log_warn("msg=\"recording access times failed\" err=\"%s\"", berr_msg());
    int64_t ttl_ms = cfg->proxy ? cfg->proxy->ttl_s * 1000 : 0;
    if (!evict || (cfg->cache_max <= 0 && ttl_ms <= 0)) return;
    /* berths sharing one metadata database evict one at a time: the lease's holder decides */
    static char owner[160];
    if (!owner[0]) lease_owner(owner, sizeof owner, "evict", NULL);
    if (store_lease_take(st, "mirror evict", owner, 60000) == -BERR_CONFLICT) return;
    store_evict_opts o = {.max_bytes = cfg->cache_max > 0 ? (uint64_t)cfg->cache_max : UINT64_MAX,
                          .idle_ms = ttl_ms, /* proxy.ttl: the proxy's images unused that long */
                          .idle_prefix = cfg->proxy ? cfg->proxy->local : NULL,
                          .pins = (const char *const *)cfg->pins,
                          .npins = cfg->npins};
    int erc = store_evict(st, &o);
    store_lease_drop(st, "mirror evict", owner);
    if (erc < 0)
        log_warn("msg=\"mirror eviction failed\" err=\"%s\"", berr_msg());
    else if (o.manifests_evicted || o.manifests_expired)
        log_info("msg=\"mirror space over its limit or past proxy.ttl: evicted\" manifests=%zu "
                 "expired=%zu blobs=%zu bytes_before=%llu bytes_after=%llu",
                 o.manifests_evicted, o.manifests_expired, o.blobs_evicted,
                 (unsigned long long)o.bytes_before, (unsigned long long)o.bytes_after);
}

/* ---- manifests ---- */

static int serve_manifest(http_req *r, store_manifest *m)
{
    int rc = trust_serve_check(r, m->digest, m->media_type, m->content, m->size);
    if (rc != 0) { /* trust: fetches the upstream's signatures; unsigned is denied and dropped */
        store_manifest_free(m);
        return rc;
    }
    note_access(r->name, m->digest);
    rc = http_reply_owned(r, 200, m->media_type, m->content, m->size);
    m->content = NULL;
    if (rc == 0) {
        http_add_header(r, "Docker-Content-Digest", m->digest);
        http_add_headerf(r, "ETag", "\"%s\"", m->digest);
        if (r->method == M_GET) /* notifications: a pull event, from the cache or after a fill */
            store_event_pull(r->store, r->name, m->digest, m->media_type, m->size,
                             ref_is_digest(r->ref) ? NULL : r->ref);
    }
    store_manifest_free(m);
    return rc;
}

/* For the ingest hooks that must read a layer of a manifest being filled (margo). */
static int fill_blob_for_check(void *arg, const char *digest)
{
    bool fetched;
    return reg_mirror_blob_ensure(arg, digest, &fetched);
}

/* Stores an upstream manifest byte for byte (tagged when ref is a tag); returns it in out. */
static int store_upstream_manifest(const reg_mirror_ctx *c, const char *ref, upstream_resp *u,
                                   store_manifest *out)
{
    digest_algo algo = DIGEST_SHA256;
    bool by_digest = ref_is_digest(ref);
    if (by_digest) digest_parse(ref, &algo);
    char digest[DIGEST_STR_MAX];
    digest_buf(algo, u->body, u->len, digest);
    if (by_digest && strcmp(digest, ref) != 0)
        return berr_set(BERR_UNAVAILABLE, "upstream %s sent a manifest that does not match %s",
                        c->mirror->name, ref);
    if (!by_digest && u->digest[0] && !strncmp(u->digest, "sha256:", 7) &&
        strcmp(u->digest, digest) != 0)
        return berr_set(BERR_UNAVAILABLE, "upstream %s sent a manifest whose digest is not %s",
                        c->mirror->name, u->digest);
    const char *tags[1] = {ref};
    ingest_req q = {.source = INGEST_MIRROR,
                    .repo = c->local,
                    .content = u->body,
                    .len = u->len,
                    .content_type = u->content_type,
                    .digest = digest,
                    .tags = tags,
                    .ntags = by_digest ? 0 : 1,
                    .mirrored = true,
                    .blob_ensure = fill_blob_for_check,
                    .blob_arg = (void *)c}; /* trust's INGEST_POLICY hook reads c too */
    ingest_result res;
    int rc = ingest_manifest(c->st, c->cfg, &q, &res);
    if (rc == 0) {
        memset(out, 0, sizeof *out);
        snprintf(out->digest, sizeof out->digest, "%s", digest);
        out->media_type = strdup(res.media_type);
        out->content = u->body;
        out->size = u->len;
        u->body = NULL;
    }
    return rc;
}

/* ---- single flight of upstream manifest checks ----
 * A tag's check (or an uncached manifest's fetch) is a fill without bytes (proxy/fill.h): it runs
 * on a thread of its own, one per tag at a time. An HTTP request waiting for it is parked
 * (HTTP_PARKED): it holds no worker, so requests for local content or for other upstreams never
 * queue behind a silent upstream; the check requeues it when done and it then answers from the
 * store (or with the check's error). `berth sync` waits for the same check on its own thread. */

typedef struct {
    char key[600];
    char local[256], upstream_repo[256], ref[256];
    store *st;
    const config *cfg;
    const config_mirror *mirror;
} check_job;

static int manifest_check(const reg_mirror_ctx *c, const char *ref, const char *key, bool cached,
                          store_manifest *cm, store_manifest *out);

/* The check's run (fill_ops.run), on its own thread. */
static int check_run(fill *f, void *arg)
{
    (void)f;
    check_job *j = arg;
    reg_mirror_ctx c = {j->st, j->mirror, j->local, j->upstream_repo, j->cfg};
    store_manifest m, out;
    int rc = store_manifest_get(j->st, j->local, j->ref, &m);
    if (rc == 0 || rc == -BERR_MANIFEST_UNKNOWN) {
        bool cached = rc == 0;
        if (cached && store_now() - m.checked < j->mirror->revalidate_s * 1000) {
            store_manifest_free(&m); /* checked meanwhile */
            rc = 0;
        } else {
            rc = manifest_check(&c, j->ref, j->key, cached, &m, &out);
            if (rc == 0) store_manifest_free(&out);
        }
    }
    return rc;
}

/* The running check of key, or a new one; returned with a reference held (NULL when none can be
 * started). */
static fill *check_join(const reg_mirror_ctx *c, const char *ref, const char *key)
{
    check_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    snprintf(j->key, sizeof j->key, "%s", key);
    snprintf(j->local, sizeof j->local, "%s", c->local);
    snprintf(j->upstream_repo, sizeof j->upstream_repo, "%s", c->upstream_repo);
    snprintf(j->ref, sizeof j->ref, "%s", ref);
    j->st = c->st;
    j->cfg = c->cfg;
    j->mirror = c->mirror;
    fill_spec s = {
        .key = key, .name = c->mirror->name, .st = c->st, .ops = {check_run, free}, .arg = j};
    return fill_join(&s);
}

static void manifest_key(const config_mirror *mi, const char *upstream_repo, const char *ref,
                         char *key, size_t len)
{
    snprintf(key, len, "%s\n%s\nmanifest %s", mi->name, upstream_repo, ref);
}

int reg_mirror_manifest_fetch(const reg_mirror_ctx *c, const char *ref, store_manifest *out)
{
    const config_mirror *mi = c->mirror;
    store_manifest m;
    int rc = store_manifest_get(c->st, c->local, ref, &m);
    if (rc < 0 && rc != -BERR_MANIFEST_UNKNOWN) return rc;
    bool cached = rc == 0;
    bool by_digest = ref_is_digest(ref);
    if (cached && (by_digest || store_now() - m.checked < mi->revalidate_s * 1000)) {
        *out = m;
        return 0;
    }
    char key[600];
    manifest_key(mi, c->upstream_repo, ref, key, sizeof key);
    if (!cached && neg_hit(key))
        return berr_set(BERR_MANIFEST_UNKNOWN, "manifest unknown to upstream %s", mi->name);
    if (cached) store_manifest_free(&m);
    fill *k = check_join(c, ref, key);
    if (!k) return berr_set(BERR_INTERNAL, "cannot start an upstream check");
    if ((rc = fill_wait(k)) < 0) return rc;
    if ((rc = store_manifest_get(c->st, c->local, ref, out)) == -BERR_MANIFEST_UNKNOWN)
        return berr_set(BERR_UNAVAILABLE, "manifest of %s went away while checked", c->local);
    return rc;
}

/* The upstream part of reg_mirror_manifest_fetch, run by one request per tag at a time. */
static int manifest_check(const reg_mirror_ctx *c, const char *ref, const char *key, bool cached,
                          store_manifest *cm, store_manifest *out)
{
    const config_mirror *mi = c->mirror;
    store_manifest m = *cm;
    int rc;
    if (in_backoff(mi)) {
        if (cached) {
            *out = m;
            return 0;
        }
        return berr_set(BERR_TOOMANYREQUESTS, "upstream %s is rate limiting", mi->name);
    }
    upstream_resp u;
    /* with a cached copy, a HEAD tells whether the tag moved without being charged a pull, and
     * the check is bounded by timeout.revalidate: past it, the cached copy is served */
    long limit = cached ? (long)mi->revalidate_ms : 0;
    rc = upstream_manifest(mi, c->upstream_repo, ref, cached, limit, &u);
    if (!transient(rc, &u) && cached && u.status == 200 &&
        !(u.digest[0] && !strcmp(u.digest, m.digest))) {
        /* the tag moved (or the upstream sent no digest): fetch the manifest */
        upstream_resp_free(&u);
        rc = upstream_manifest(mi, c->upstream_repo, ref, false, limit, &u);
        if (rc == 0 && u.status == 200) {
            store_manifest_free(&m);
            cached = false;
        }
    }
    if (transient(rc, &u)) {
        int err = unavailable(mi, rc, &u);
        upstream_resp_free(&u);
        if (!cached) return err;
        *out = m; /* stale-if-error */
        return 0;
    }
    mark_up(mi, true, NULL);
    if (u.status == 404) {
        upstream_resp_free(&u);
        if (cached) store_manifest_free(&m);
        neg_add(key);
        return berr_set(BERR_MANIFEST_UNKNOWN, "manifest unknown to upstream %s", mi->name);
    }
    if (cached) { /* HEAD confirmed the cached digest */
        upstream_resp_free(&u);
        store_tag_checked(c->st, c->local, ref);
        *out = m;
        return 0;
    }
    if (u.status != 200 || !u.body) {
        long st = u.status;
        upstream_resp_free(&u);
        return berr_set(st == 404 ? BERR_MANIFEST_UNKNOWN : BERR_UNAVAILABLE,
                        "upstream %s answered %ld", mi->name, st);
    }
    rc = store_upstream_manifest(c, ref, &u, out);
    upstream_resp_free(&u);
    return rc;
}

static reg_mirror_ctx ctx_of_req(const http_req *r)
{
    return (reg_mirror_ctx){r->store, r->mirror, r->name, r->upstream_repo, r->cfg};
}

/* The check is done: the manifest is answered from the store. */
static int serve_stored_manifest(http_req *r)
{
    store_manifest m;
    int rc = store_manifest_get(r->store, r->name, r->ref, &m);
    return rc < 0 ? rc : serve_manifest(r, &m);
}

int reg_mirror_manifest_get(http_req *r)
{
    const config_mirror *mi = r->mirror;
    fill_serve_opts o = {.done = serve_stored_manifest};
    fill *k = r->ctx; /* a run after this request was parked on a check: take its result */
    r->ctx = NULL;
    if (k) return fill_serve(r, k, &o);
    store_manifest m;
    int rc = store_manifest_get(r->store, r->name, r->ref, &m);
    if (rc < 0 && rc != -BERR_MANIFEST_UNKNOWN) return rc;
    /* the hot path: a cached digest, or a tag checked recently, is served on the event loop */
    if (rc == 0 && (ref_is_digest(r->ref) || store_now() - m.checked < mi->revalidate_s * 1000))
        return serve_manifest(r, &m);
    /* an upstream marked down is not asked: what is cached is served, the rest fails at once */
    if (is_dark(mi, NULL, 0)) return rc == 0 ? serve_manifest(r, &m) : down_error(mi);
    if (rc == 0) store_manifest_free(&m);
    char key[600];
    manifest_key(mi, r->upstream_repo, r->ref, key, sizeof key);
    if (rc < 0 && neg_hit(key))
        return berr_set(BERR_MANIFEST_UNKNOWN, "manifest unknown to upstream %s", mi->name);
    if (!r->on_worker) return HTTP_OFFLOAD;
    reg_mirror_ctx c = ctx_of_req(r);
    if (!(k = check_join(&c, r->ref, key)))
        return berr_set(BERR_INTERNAL, "cannot start an upstream check");
    return fill_serve(r, k, &o); /* parked until the check ends */
}

void reg_mirror_manifest_cleanup(http_req *r)
{
    if (r->mirror) fill_serve_cleanup(r);
}

/* ---- blobs: one fill per digest and upstream (proxy/fill: coalesced, streamed, leased) ----
 *
 * A blob that misses is fetched by a fill (src/proxy/fill.h) keyed by the upstream and the
 * digest: every client asking for it meanwhile joins that fill, is parked until the first bytes
 * land and then reads the growing upload. Here is what is particular to registry blobs: the
 * upstream request (resumed after a cut), the negative cache and the rate-limit backoff, linking
 * a blob the store already holds, and the commit (store_upload_finish verifies the digest; the
 * last byte is released to readers as soon as the digest matched). */

/* How many times a fill cut by the network is resumed without any progress in between. */
#define RESUME_TRIES 6

/* A blob already in the store (under another name) is linked into a mirror repository, instead
 * of fetched again, only when that repository's upstream holds it: a manifest cached from the
 * upstream for this repository lists it (link_listed, no network), or the upstream answers a
 * HEAD for it within the revalidation bound (link_confirmed, on the fill's thread: no worker
 * waits on the upstream). Never on the strength of a digest alone: that would hand a private
 * repository's blob to anyone who can name its digest. */
static int link_listed(const reg_mirror_ctx *c, const char *digest)
{
    int rc = store_blob_link_listed(c->st, c->local, digest);
    return rc < 0 ? rc : store_repo_mark_mirror(c->st, c->local);
}

static int link_confirmed(const reg_mirror_ctx *c, const char *digest)
{
    if (!store_blob_present(c->st, digest) || in_backoff(c->mirror))
        return berr_set(BERR_BLOB_UNKNOWN, "blob unknown to registry");
    upstream_resp u;
    int rc =
        upstream_blob_head(c->mirror, c->upstream_repo, digest, (long)c->mirror->revalidate_ms, &u);
    bool held = rc == 0 && u.status == 200;
    upstream_resp_free(&u);
    if (!held) return berr_set(BERR_BLOB_UNKNOWN, "blob unknown to registry");
    rc = store_blob_mount(c->st, c->local, NULL, digest);
    return rc < 0 ? rc : store_repo_mark_mirror(c->st, c->local);
}

/* What a blob fill needs (the fill's arg). */
typedef struct {
    char digest[DIGEST_STR_MAX];
    char repo[256], upstream_repo[256];
    const config_mirror *mirror;
    store *st;
} blob_job;

/* Another berth's fill of this repository committed (linked here already). */
static int blob_committed(void *arg)
{
    blob_job *j = arg;
    return store_blob_mount(j->st, j->repo, j->repo, j->digest) == 0;
}

/* Fetches the blob into the fill's upload; a transfer cut after some bytes is resumed from where
 * it stopped (Range; an upstream that ignores it sends the whole blob again and the bytes already
 * written are skipped). The digest covers every byte either way. */
static int fetch_upstream(fill *f, const blob_job *j, bool *whole)
{
    const config_mirror *mi = j->mirror;
    upstream_resp *resp = fill_resp(f);
    uint64_t from = 0;
    int tries = 0;
    for (;;) {
        int rc = upstream_blob(mi, j->upstream_repo, j->digest, from, fill_sink, f, resp);
        *whole = rc == 0 && (resp->status == 200 || (from > 0 && resp->status == 206 &&
                                                     resp->range_start == (long long)from));
        if (rc == 0) return 0; /* the blob, or an answer that is not (404, 5xx...) */
        uint64_t have = store_upload_size(fill_upload(f)); /* every byte taken (and hashed) */
        /* resumed only after the network cut a transfer that was under way */
        if (rc != -BERR_UNAVAILABLE || have == 0 ||
            (fill_size(f) > 0 && have >= (uint64_t)fill_size(f)))
            return rc;
        if (have > from)
            tries = 0;
        else if (++tries >= RESUME_TRIES)
            return rc;
        log_warn("msg=\"mirror fill cut: resuming\" mirror=%s digest=%s at=%llu err=\"%s\"",
                 mi->name, j->digest, (unsigned long long)have, berr_msg());
        from = have;
        fill_skip(f, have);
        usleep((useconds_t)(250000u << (tries < 4 ? tries : 4)));
    }
}

/* The fill's run (fill_ops.run), on the fill's thread. */
static int blob_fetch(fill *f, void *arg)
{
    blob_job *j = arg;
    const config_mirror *mi = j->mirror;
    char key[600];
    snprintf(key, sizeof key, "%s\n%s\nblob %s", mi->name, j->upstream_repo, j->digest);
    if (neg_hit(key)) return berr_set(BERR_BLOB_UNKNOWN, "blob unknown to upstream %s", mi->name);
    if (in_backoff(mi))
        return berr_set(BERR_TOOMANYREQUESTS, "upstream %s is rate limiting", mi->name);
    /* the store may hold these bytes under another name: linked when the upstream confirms it
     * holds them for this repository, instead of fetched again */
    reg_mirror_ctx vc = {j->st, mi, j->repo, j->upstream_repo, NULL}; /* no ingest */
    if (link_confirmed(&vc, j->digest) == 0) return 0;
    /* one upstream fetch per blob across every berth on this metadata: the others wait for the
     * holder's commit and serve the blob from the store */
    char lease[DIGEST_STR_MAX + 300];
    snprintf(lease, sizeof lease, "fill %s %s", j->digest, mi->name);
    int rc =
        fill_lease(f, lease, store_now() + mi->connect_ms + mi->transfer_ms, blob_committed, j);
    if (rc == 1) return store_repo_mark_mirror(j->st, j->repo);
    if (rc < 0) return rc;
    digest_algo algo;
    digest_parse(j->digest, &algo);
    if ((rc = fill_upload_open(f, j->repo, algo)) < 0) {
        log_error("msg=\"cannot start a mirror fill\" mirror=%s digest=%s err=\"%s\"", mi->name,
                  j->digest, berr_msg());
        return berr_set(BERR_UNAVAILABLE, "storing %s failed: %s", j->digest, berr_msg());
    }
    store_upload *u = fill_upload(f);
    bool whole = false;
    rc = fetch_upstream(f, j, &whole);
    if (rc == 0 && whole) {
        /* readers get the last bytes as soon as the content is known good, not after the fsync */
        char got[DIGEST_STR_MAX];
        if (store_upload_digest(u, got) == 0 && !strcmp(got, j->digest)) fill_verified(f);
        rc = store_upload_finish(u, j->digest); /* verifies the digest, commits, links */
        /* the repository exists from here on; it holds mirrored (evictable) content */
        if (rc == 0) rc = store_repo_mark_mirror(j->st, j->repo);
        if (rc == -BERR_DIGEST_INVALID) {
            log_error("msg=\"upstream sent corrupt blob: nothing committed\" mirror=%s digest=%s",
                      mi->name, j->digest);
            rc = berr_set(BERR_UNAVAILABLE, "upstream %s sent content that does not match %s",
                          mi->name, j->digest);
        } else if (rc == 0) {
            mark_up(mi, true, NULL);
        } else {
            log_error("msg=\"mirror fill not committed\" mirror=%s digest=%s err=\"%s\"", mi->name,
                      j->digest, berr_msg());
            if (rc != -BERR_UNAVAILABLE) /* a local failure: retryable, never "unknown" */
                rc = berr_set(BERR_UNAVAILABLE, "storing %s failed: %s", j->digest, berr_msg());
        }
    } else {
        store_upload_cancel(u);
        if (rc == 0 && fill_resp(f)->status == 404) {
            mark_up(mi, true, NULL);
            neg_add(key);
            rc = berr_set(BERR_BLOB_UNKNOWN, "blob unknown to upstream %s", mi->name);
        } else if (rc != -BERR_IO) {
            rc = unavailable(mi, rc, fill_resp(f));
        } else { /* writing it here failed: retryable, never "unknown", and logged */
            rc = berr_set(BERR_UNAVAILABLE, "storing %s failed: %s", j->digest, berr_msg());
        }
    }
    return rc;
}

/* Finds the running fill of digest from c's upstream, or starts one (a reference held). Fills
 * are per upstream: a client of a healthy upstream never waits on a silent one's fill of the
 * same content. */
static fill *blob_fill_join(const reg_mirror_ctx *c, const char *digest)
{
    blob_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    snprintf(j->digest, sizeof j->digest, "%s", digest);
    snprintf(j->repo, sizeof j->repo, "%s", c->local);
    snprintf(j->upstream_repo, sizeof j->upstream_repo, "%s", c->upstream_repo);
    j->mirror = c->mirror;
    j->st = c->st;
    char key[DIGEST_STR_MAX + 300];
    snprintf(key, sizeof key, "blob %s %s", c->mirror->name, digest);
    fill_spec s = {.key = key,
                   .name = c->mirror->name,
                   .metrics = true,
                   .st = c->st,
                   .ops = {blob_fetch, free},
                   .arg = j};
    return fill_join(&s);
}

int reg_mirror_blob_miss(http_req *r)
{
    reg_mirror_ctx mc = ctx_of_req(r);
    if (link_listed(&mc, r->ref) == 0) { /* no network: on the loop */
        metrics_mirror(r->mirror->name, true);
        return reg_blob_serve(r);
    }
    if (!r->on_worker) return HTTP_OFFLOAD;
    fill *f = r->ctx; /* a run after this request was parked on a fill */
    r->ctx = NULL;
    if (!f && is_dark(r->mirror, NULL, 0)) return down_error(r->mirror);
    if (!f) metrics_mirror(r->mirror->name, false); /* first run of this request: a miss */
    if (!f && !(f = blob_fill_join(&mc, r->ref)))
        return berr_set(BERR_INTERNAL, "cannot start a fill");
    fill_serve_opts o = {"application/octet-stream", r->ref, reg_blob_serve};
    return fill_serve(r, f, &o);
}

void reg_mirror_blob_cleanup(http_req *r)
{
    if (r->mirror) fill_serve_cleanup(r);
}

int reg_mirror_blob_ensure(const reg_mirror_ctx *c, const char *digest, bool *fetched)
{
    *fetched = false;
    store_blob b;
    if (store_blob_open(c->st, c->local, digest, &b) == 0) {
        store_blob_release(&b);
        return 0;
    }
    if (link_listed(c, digest) == 0) return 0; /* else the fill links it or fetches it */
    fill *f = blob_fill_join(c, digest);
    if (!f) return berr_set(BERR_INTERNAL, "cannot start a fill");
    int rc = fill_wait(f);
    if (rc < 0) return rc;
    *fetched = true;
    return 0;
}
