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
 * digest matches. Upstream 404s are remembered for a few seconds so clients that try a list of
 * hosts fall through fast. Steps that talk to the upstream run on worker threads.
 */
#include "proxy/upstream.h"
#include "registry/registry.h"
#include "util/err.h"
#include "util/log.h"
#include "util/ref.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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

int reg_mirror_route(http_req *r)
{
    const config *cfg = r->cfg;
    if (!cfg->nmirrors && !cfg->proxy) return 0;
    const char *up = r->name;
    const config_mirror *m = NULL;
    const char *ns = http_query(r, "ns");
    if (ns) m = find_mirror(cfg, ns, strlen(ns));
    if (!m) {
        const char *slash = strchr(r->name, '/');
        if (slash && (m = find_mirror(cfg, r->name, (size_t)(slash - r->name)))) up = slash + 1;
    }
    bool write = r->method != M_GET && r->method != M_HEAD;
    if (!m && cfg->proxy && !write && store_repo_exists(r->store, r->name) != 0) m = cfg->proxy;
    if (!m) return 0;
    if (m->library_prefix && !strchr(up, '/'))
        snprintf(r->upstream_repo, sizeof r->upstream_repo, "library/%s", up);
    else
        snprintf(r->upstream_repo, sizeof r->upstream_repo, "%s", up);
    char local[512];
    snprintf(local, sizeof local, "%s/%s", m->local, r->upstream_repo);
    if (strlen(local) >= sizeof r->name || !ref_name_valid(local))
        return berr_set(BERR_NAME_INVALID, "mirrored repository name too long");
    snprintf(r->name, sizeof r->name, "%s", local);
    r->mirror = m;
    if (write) return berr_set(BERR_DENIED, "%s is a read-only mirror", m->name);
    return 0;
}

/* ---- upstream health: log an outage once, not per request ---- */

static pthread_mutex_t state_mu = PTHREAD_MUTEX_INITIALIZER;

typedef struct down_entry {
    const config_mirror *m;
    time_t backoff_until; /* from a 429's Retry-After */
    bool down;
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
    if (d && d->down == up) {
        d->down = !up;
        if (up)
            log_info("msg=\"upstream reachable again\" mirror=%s", m->name);
        else
            log_warn("msg=\"upstream unavailable: serving cached content\" mirror=%s err=\"%s\"",
                     m->name, why);
    }
    pthread_mutex_unlock(&state_mu);
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
    if (u->status == 401 || u->status == 403)
        return berr_set(BERR_UNAVAILABLE, "upstream %s refused access (%ld)", m->name, u->status);
    return berr_set(BERR_UNAVAILABLE, "upstream %s unavailable: %s", m->name, why);
}

/* ---- manifests ---- */

static int serve_manifest(http_req *r, store_manifest *m)
{
    int rc = http_reply_owned(r, 200, m->media_type, m->content, m->size);
    m->content = NULL;
    if (rc == 0) {
        http_add_header(r, "Docker-Content-Digest", m->digest);
        http_add_headerf(r, "ETag", "\"%s\"", m->digest);
    }
    store_manifest_free(m);
    return rc;
}

/* Stores an upstream manifest byte for byte (tagged when ref is a tag) and serves it. */
static int store_upstream_manifest(http_req *r, upstream_resp *u)
{
    digest_algo algo = DIGEST_SHA256;
    bool by_digest = ref_is_digest(r->ref);
    if (by_digest) digest_parse(r->ref, &algo);
    char digest[DIGEST_STR_MAX];
    digest_buf(algo, u->body, u->len, digest);
    if (by_digest && strcmp(digest, r->ref) != 0)
        return berr_set(BERR_UNAVAILABLE, "upstream %s sent a manifest that does not match %s",
                        r->mirror->name, r->ref);
    if (!by_digest && u->digest[0] && !strncmp(u->digest, "sha256:", 7) &&
        strcmp(u->digest, digest) != 0)
        return berr_set(BERR_UNAVAILABLE, "upstream %s sent a manifest whose digest is not %s",
                        r->mirror->name, u->digest);
    store_manifest_put_req req;
    reg_manifest_parsed *parsed;
    int rc = reg_manifest_parse(u->body, u->len, u->content_type, &req, &parsed);
    if (rc < 0) return rc;
    const char *tags[1] = {r->ref};
    req.repo = r->name;
    req.digest = digest;
    req.tags = tags;
    req.ntags = by_digest ? 0 : 1;
    req.mirrored = true;
    rc = store_manifest_put(r->store, &req);
    store_manifest m = {0};
    if (rc == 0) {
        snprintf(m.digest, sizeof m.digest, "%s", digest);
        m.media_type = strdup(req.media_type);
        m.content = u->body;
        m.size = u->len;
        u->body = NULL;
    }
    reg_manifest_parsed_free(parsed);
    if (rc < 0) return rc;
    return serve_manifest(r, &m);
}

int reg_mirror_manifest_get(http_req *r)
{
    const config_mirror *mi = r->mirror;
    store_manifest m;
    int rc = store_manifest_get(r->store, r->name, r->ref, &m);
    if (rc < 0 && rc != -BERR_MANIFEST_UNKNOWN) return rc;
    bool cached = rc == 0;
    bool by_digest = ref_is_digest(r->ref);
    if (cached && (by_digest || store_now() - m.checked < mi->revalidate_s * 1000))
        return serve_manifest(r, &m);
    if (!r->on_worker) {
        if (cached) store_manifest_free(&m);
        return HTTP_OFFLOAD;
    }
    char key[600];
    snprintf(key, sizeof key, "%s\n%s\nmanifest %s", mi->name, r->upstream_repo, r->ref);
    if (!cached && neg_hit(key))
        return berr_set(BERR_MANIFEST_UNKNOWN, "manifest unknown to upstream %s", mi->name);
    if (in_backoff(mi)) {
        if (cached) return serve_manifest(r, &m);
        return berr_set(BERR_TOOMANYREQUESTS, "upstream %s is rate limiting", mi->name);
    }
    upstream_resp u;
    /* with a cached copy, a HEAD tells whether the tag moved without being charged a pull */
    rc = upstream_manifest(mi, r->upstream_repo, r->ref, cached, &u);
    if (transient(rc, &u)) {
        int err = unavailable(mi, rc, &u);
        upstream_resp_free(&u);
        if (cached) return serve_manifest(r, &m);
        return err;
    }
    mark_up(mi, true, NULL);
    if (u.status == 404) {
        upstream_resp_free(&u);
        if (cached) store_manifest_free(&m);
        neg_add(key);
        return berr_set(BERR_MANIFEST_UNKNOWN, "manifest unknown to upstream %s", mi->name);
    }
    if (cached && u.status == 200 && u.digest[0] && !strcmp(u.digest, m.digest)) {
        upstream_resp_free(&u);
        store_tag_checked(r->store, r->name, r->ref);
        return serve_manifest(r, &m);
    }
    if (cached) { /* the tag moved (or the upstream sent no digest): fetch the manifest */
        store_manifest_free(&m);
        upstream_resp_free(&u);
        rc = upstream_manifest(mi, r->upstream_repo, r->ref, false, &u);
        if (transient(rc, &u)) {
            int err = unavailable(mi, rc, &u);
            upstream_resp_free(&u);
            if (store_manifest_get(r->store, r->name, r->ref, &m) == 0)
                return serve_manifest(r, &m);
            return err;
        }
    }
    if (u.status != 200 || !u.body) {
        long st = u.status;
        upstream_resp_free(&u);
        return berr_set(st == 404 ? BERR_MANIFEST_UNKNOWN : BERR_UNAVAILABLE,
                        "upstream %s answered %ld", mi->name, st);
    }
    rc = store_upstream_manifest(r, &u);
    upstream_resp_free(&u);
    return rc;
}

/* ---- blobs: one fill per digest, however many clients ---- */

typedef struct fill {
    char digest[DIGEST_STR_MAX];
    bool done;
    int rc;
    int waiters;
    pthread_cond_t cv;
    struct fill *next;
} fill;

static pthread_mutex_t fill_mu = PTHREAD_MUTEX_INITIALIZER;
static fill *fills;

typedef struct {
    store_upload *u;
} sink_arg;

static int sink_write(void *arg, const char *data, size_t len)
{
    sink_arg *a = arg;
    return store_upload_write(a->u, data, len);
}

/* Fetches a blob from upstream into the store; returns 0 or a negative berr. */
static int fetch_blob(http_req *r)
{
    const config_mirror *mi = r->mirror;
    char key[600];
    snprintf(key, sizeof key, "%s\n%s\nblob %s", mi->name, r->upstream_repo, r->ref);
    if (neg_hit(key)) return berr_set(BERR_BLOB_UNKNOWN, "blob unknown to upstream %s", mi->name);
    if (in_backoff(mi))
        return berr_set(BERR_TOOMANYREQUESTS, "upstream %s is rate limiting", mi->name);
    digest_algo algo;
    digest_parse(r->ref, &algo);
    char uuid[STORE_UUID_LEN + 1];
    int rc = store_upload_create(r->store, r->name, algo, uuid);
    sink_arg a = {NULL};
    if (rc == 0) rc = store_upload_open(r->store, r->name, uuid, &a.u);
    if (rc < 0) return rc;
    upstream_resp u;
    rc = upstream_blob(mi, r->upstream_repo, r->ref, sink_write, &a, &u);
    if (rc == 0 && u.status == 200) {
        rc = store_upload_finish(a.u, r->ref); /* verifies the digest, commits, links */
        if (rc == -BERR_DIGEST_INVALID) {
            log_error("msg=\"upstream sent corrupt blob: nothing committed\" mirror=%s digest=%s",
                      mi->name, r->ref);
            rc = berr_set(BERR_UNAVAILABLE, "upstream %s sent content that does not match %s",
                          mi->name, r->ref);
        } else if (rc == 0) {
            mark_up(mi, true, NULL);
        }
    } else {
        store_upload_cancel(a.u);
        if (rc == 0 && u.status == 404) {
            mark_up(mi, true, NULL);
            neg_add(key);
            rc = berr_set(BERR_BLOB_UNKNOWN, "blob unknown to upstream %s", mi->name);
        } else if (rc != -BERR_IO) {
            rc = unavailable(mi, rc, &u);
        }
    }
    store_upload_close(a.u);
    upstream_resp_free(&u);
    return rc;
}

/* Joins the fill of r->ref (starting it when none runs) and waits for its result. */
static int fill_blob(http_req *r)
{
    pthread_mutex_lock(&fill_mu);
    fill *f = fills;
    while (f && strcmp(f->digest, r->ref))
        f = f->next;
    if (f) {
        f->waiters++;
        while (!f->done)
            pthread_cond_wait(&f->cv, &fill_mu);
        int rc = f->rc;
        if (--f->waiters == 0) {
            pthread_cond_destroy(&f->cv);
            free(f);
        }
        pthread_mutex_unlock(&fill_mu);
        return rc;
    }
    f = calloc(1, sizeof *f);
    if (!f) {
        pthread_mutex_unlock(&fill_mu);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    snprintf(f->digest, sizeof f->digest, "%s", r->ref);
    pthread_cond_init(&f->cv, NULL);
    f->waiters = 1;
    f->next = fills;
    fills = f;
    pthread_mutex_unlock(&fill_mu);

    int rc = fetch_blob(r);

    pthread_mutex_lock(&fill_mu);
    for (fill **p = &fills; *p; p = &(*p)->next)
        if (*p == f) {
            *p = f->next;
            break;
        }
    f->done = true;
    f->rc = rc;
    pthread_cond_broadcast(&f->cv);
    if (--f->waiters == 0) {
        pthread_cond_destroy(&f->cv);
        free(f);
    }
    pthread_mutex_unlock(&fill_mu);
    return rc;
}

/* Called by the blob GET handler when the blob is not in the mirror repository yet. */
int reg_mirror_blob_fill(http_req *r)
{
    /* the same content may already be here under another name: link it instead of fetching */
    if (store_blob_mount(r->store, r->name, NULL, r->ref) == 0) return 0;
    if (!r->on_worker) return HTTP_OFFLOAD;
    return fill_blob(r);
}
