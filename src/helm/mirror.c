/*
 * helm/mirror: upstream HTTP chart repositories (`helm.upstreams.<name>`).
 *
 * GET /<name>/index.yaml serves the upstream's index with every chart URL rewritten to
 * charts/<chart>-<version>.tgz under berth. The index is fetched at most once per `refresh`
 * interval (one fetch at a time per upstream, on a fill's thread: requests waiting for it are
 * parked and hold no worker); the last good copy is kept on disk
 * (<root>/helm/upstreams/<name>/index.yaml, replaced atomically) and served, stale, whenever the
 * upstream cannot be reached, including after a restart.
 *
 * GET /<name>/charts/<file> serves the chart from the store when it is there, without asking the
 * upstream. Otherwise a fill (proxy/fill.h, the engine registry mirrors use too) fetches it from
 * the URL the upstream index gives, on a thread of its own: concurrent requests for the file join
 * that one fetch and are parked meanwhile (no worker waits on the upstream), berths sharing one
 * metadata database take a lease so only one of them fetches, and a chart over 1 MiB is streamed
 * to its clients while it arrives. The chart is hashed as it streams into an upload session,
 * refused unless its sha256 equals the index's digest (the last byte is held back until then),
 * checked like an uploaded chart, and stored as a mirrored (evictable) OCI chart in
 * <helm.oci_prefix>/<name>/<chart>, so it is pullable over OCI as well.
 */
#include "auth/auth.h"
#include "helm/helm.h"
#include "proxy/fill.h"
#include "proxy/upstream.h"
#include "util/err.h"
#include "util/file.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define INDEX_MAX (256u << 20)
#define RETRY_AFTER_FAILURE_S 5

typedef struct snap {
    json_t *files; /* "<chart>-<version>.tgz" -> {"url", "digest", "name", "version", "created"} */
    char *yaml;    /* the rewritten index */
    size_t yaml_len;
    int refs;
} snap;

typedef struct up_state {
    const config_mirror *up;
    pthread_mutex_t mu;       /* guards cur, fetched, tried */
    pthread_mutex_t fetch_mu; /* one index fetch at a time */
    snap *cur;
    time_t fetched, tried;
    struct up_state *next;
} up_state;

static pthread_mutex_t states_mu = PTHREAD_MUTEX_INITIALIZER;
static up_state *states;

const config_mirror *helm_upstream_find(const config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->helm.nupstreams; i++)
        if (!strcmp(cfg->helm.upstreams[i].name, name)) return &cfg->helm.upstreams[i];
    return NULL;
}

static up_state *state_of(const config_mirror *up)
{
    pthread_mutex_lock(&states_mu);
    up_state *s = states;
    while (s && s->up != up)
        s = s->next;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (s) {
            s->up = up;
            pthread_mutex_init(&s->mu, NULL);
            pthread_mutex_init(&s->fetch_mu, NULL);
            s->next = states;
            states = s;
        }
    }
    pthread_mutex_unlock(&states_mu);
    return s;
}

static void snap_put(snap *s)
{
    if (s && __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        json_decref(s->files);
        free(s->yaml);
        free(s);
    }
}

static snap *snap_get(up_state *st)
{
    pthread_mutex_lock(&st->mu);
    snap *s = st->cur;
    if (s) __atomic_add_fetch(&s->refs, 1, __ATOMIC_ACQ_REL);
    pthread_mutex_unlock(&st->mu);
    return s;
}

/* An entry URL resolved against the repository URL. */
static void resolve_url(const config_mirror *up, const char *u, char *out, size_t len)
{
    if (strstr(u, "://"))
        snprintf(out, len, "%s", u);
    else if (u[0] == '/') {
        const char *base = up->urls[0];
        const char *host = strstr(base, "://") + 3;
        snprintf(out, len, "%.*s%s", (int)(strcspn(host, "/") + (size_t)(host - base)), base, u);
    } else
        snprintf(out, len, "%s/%s", up->urls[0], u);
}

/* Parses an upstream index and builds its rewritten form. */
static int snap_build(const config_mirror *up, const char *text, size_t len, snap **out)
{
    json_t *idx;
    int rc = yamlj_parse(text, len, "upstream index.yaml", &idx);
    if (rc < 0) return rc;
    json_t *entries = json_object_get(idx, "entries");
    if (!json_is_object(entries)) {
        json_decref(idx);
        return berr_set(BERR_BAD_REQUEST, "upstream index.yaml: no entries");
    }
    json_t *files = json_object();
    const char *name;
    json_t *list;
    json_object_foreach(entries, name, list)
    {
        size_t i;
        json_t *e;
        json_array_foreach(list, i, e)
        {
            const char *ver = json_string_value(json_object_get(e, "version"));
            json_t *urls = json_object_get(e, "urls");
            const char *u = json_string_value(json_array_get(urls, 0));
            if (!ver || !u || !helm_name_valid(name) || !semver_valid(ver)) continue;
            char file[300], abs[2048];
            snprintf(file, sizeof file, "%s-%s.tgz", name, ver);
            resolve_url(up, u, abs, sizeof abs);
            const char *dg = json_string_value(json_object_get(e, "digest"));
            const char *cr = json_string_value(json_object_get(e, "created"));
            json_object_set_new(files, file,
                                json_pack("{s:s,s:s?,s:s,s:s,s:s?}", "url", abs, "digest", dg,
                                          "name", name, "version", ver, "created", cr));
            char rel[320];
            snprintf(rel, sizeof rel, "charts/%s", file);
            json_object_set_new(e, "urls", json_pack("[s]", rel));
        }
    }
    strbuf b = {0};
    yamlj_value(&b, idx, 0);
    json_decref(idx);
    if (b.oom) {
        free(b.buf);
        json_decref(files);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    snap *s = calloc(1, sizeof *s);
    if (!s) {
        free(b.buf);
        json_decref(files);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    s->files = files;
    s->yaml = b.buf;
    s->yaml_len = b.len;
    s->refs = 1;
    *out = s;
    return 0;
}

static void index_path(store *s, const config_mirror *up, char *out, size_t len)
{
    snprintf(out, len, "%s/helm/upstreams/%s", store_root(s), up->name);
}

/* Keeps the last good upstream index on disk (written whole, then renamed). */
static void index_save(store *s, const config_mirror *up, const char *text, size_t len)
{
    char dir[4096], tmp[4200], final[4200];
    index_path(s, up, dir, sizeof dir);
    char mk[4096];
    snprintf(mk, sizeof mk, "%s/helm", store_root(s));
    mkdir(mk, 0755);
    snprintf(mk, sizeof mk, "%s/helm/upstreams", store_root(s));
    mkdir(mk, 0755);
    mkdir(dir, 0755);
    snprintf(tmp, sizeof tmp, "%s/index.yaml.tmp", dir);
    snprintf(final, sizeof final, "%s/index.yaml", dir);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    bool ok = fd >= 0;
    for (size_t off = 0; ok && off < len;) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR) continue;
        ok = n > 0;
        if (ok) off += (size_t)n;
    }
    if (ok) ok = fdatasync(fd) == 0;
    if (fd >= 0) close(fd);
    if (ok) ok = rename(tmp, final) == 0;
    if (!ok) {
        unlink(tmp);
        log_warn("msg=\"cannot keep upstream chart index\" upstream=%s", up->name);
    }
}

static char *index_load(store *s, const config_mirror *up, size_t *len)
{
    char p[4200];
    index_path(s, up, p, sizeof p);
    strncat(p, "/index.yaml", sizeof p - strlen(p) - 1);
    return file_read_all(p, len);
}

static void install(up_state *st, snap *s, time_t fetched)
{
    pthread_mutex_lock(&st->mu);
    snap *old = st->cur;
    st->cur = s;
    if (fetched) st->fetched = fetched;
    pthread_mutex_unlock(&st->mu);
    snap_put(old);
}

/* A snapshot of the upstream index: refreshed when older than the interval; when the upstream
 * fails, the last good one (from memory or disk). */
static int index_current(store *s, up_state *st, snap **out)
{
    const config_mirror *up = st->up;
    time_t now = time(NULL);
    pthread_mutex_lock(&st->mu);
    bool fresh = st->cur && now - st->fetched < up->revalidate_s;
    bool backoff = st->cur && now - st->tried < RETRY_AFTER_FAILURE_S;
    pthread_mutex_unlock(&st->mu);
    if (!fresh && !backoff) {
        pthread_mutex_lock(&st->fetch_mu);
        pthread_mutex_lock(&st->mu);
        fresh = st->cur && time(NULL) - st->fetched < up->revalidate_s;
        pthread_mutex_unlock(&st->mu);
        if (!fresh) {
            char url[2100];
            snprintf(url, sizeof url, "%s/index.yaml", up->urls[0]);
            upstream_resp resp;
            int rc = upstream_get_url(up, url, NULL, NULL, INDEX_MAX, &resp);
            snap *ns = NULL;
            if (rc == 0 && resp.status == 200 && resp.body &&
                snap_build(up, resp.body, resp.len, &ns) == 0) {
                index_save(s, up, resp.body, resp.len);
                install(st, ns, time(NULL));
                log_info("msg=\"chart index refreshed\" upstream=%s bytes=%zu", up->name, resp.len);
            } else {
                log_warn("msg=\"chart index refresh failed: serving the last good copy\" "
                         "upstream=%s status=%ld err=\"%s\"",
                         up->name, resp.status, rc < 0 ? berr_msg() : "");
                pthread_mutex_lock(&st->mu);
                st->tried = time(NULL);
                bool have = st->cur != NULL;
                pthread_mutex_unlock(&st->mu);
                if (!have) { /* first request since start: the copy on disk */
                    size_t len;
                    char *text = index_load(s, up, &len);
                    if (text && snap_build(up, text, len, &ns) == 0) install(st, ns, 0);
                    free(text);
                }
            }
            upstream_resp_free(&resp);
        }
        pthread_mutex_unlock(&st->fetch_mu);
    }
    *out = snap_get(st);
    if (!*out)
        return berr_set(BERR_UNAVAILABLE,
                        "upstream chart repository %s unavailable and no copy "
                        "of its index is kept",
                        up->name);
    return 0;
}

/* Whether a request must wait for a refresh of the index (else the current copy is served). */
static bool index_due(up_state *st)
{
    time_t now = time(NULL);
    pthread_mutex_lock(&st->mu);
    bool fresh = st->cur && now - st->fetched < st->up->revalidate_s;
    bool backoff = st->cur && now - st->tried < RETRY_AFTER_FAILURE_S;
    pthread_mutex_unlock(&st->mu);
    return !fresh && !backoff;
}

static int serve_index(http_req *r)
{
    const config_mirror *up = helm_upstream_find(r->cfg, r->name); /* routed by its name */
    up_state *st = up ? state_of(up) : NULL;
    snap *s = st ? snap_get(st) : NULL;
    if (!s)
        return berr_set(BERR_UNAVAILABLE,
                        "upstream chart repository %s unavailable and no copy of its index is kept",
                        r->name);
    int rc = http_reply(r, 200, "application/x-yaml", s->yaml, s->yaml_len);
    snap_put(s);
    return rc;
}

typedef struct {
    store *st;
    up_state *ups;
} index_job;

/* A refresh is a fill without bytes (proxy/fill.h): one at a time per upstream, on its own
 * thread, its clients parked meanwhile. */
static int index_run(fill *f, void *arg)
{
    (void)f;
    index_job *j = arg;
    snap *s;
    int rc = index_current(j->st, j->ups, &s);
    if (rc == 0) snap_put(s);
    return rc;
}

int helm_mirror_index(http_req *r, const config_mirror *up)
{
    fill *f = r->ctx; /* a run after this request was parked on a refresh */
    r->ctx = NULL;
    up_state *st = state_of(up);
    if (!st) {
        if (f) fill_release(f);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    if (!f && !index_due(st)) return serve_index(r);
    if (!f) {
        index_job *j = calloc(1, sizeof *j);
        if (!j) return berr_set(BERR_INTERNAL, "out of memory");
        j->st = r->store;
        j->ups = st;
        char key[300];
        snprintf(key, sizeof key, "helm-index %s", up->name);
        fill_spec s = {
            .key = key, .name = up->name, .st = r->store, .ops = {index_run, free}, .arg = j};
        if (!(f = fill_join(&s))) return berr_set(BERR_INTERNAL, "cannot start an index refresh");
    }
    fill_serve_opts o = {.done = serve_index};
    return fill_serve(r, f, &o);
}

/* ---- charts ---- */

/* The stored chart for file ("<name>-<version>.tgz") of upstream up, and its .tgz layer. */
static bool stored_chart(store *st, const config *cfg, const config_mirror *up, const char *file,
                         char *repo, size_t rl, char *digest)
{
    size_t n = strlen(file);
    if (n <= 4 || strcmp(file + n - 4, ".tgz")) return false;
    char base[300];
    snprintf(base, sizeof base, "%.*s", (int)(n - 4), file);
    store_manifest m;
    if (helm_chart_find(st, cfg, up->name, base, repo, rl, &m) < 0) {
        berr_clear();
        return false;
    }
    bool found = helm_manifest_layer(&m, HELM_MT_CHART, digest, NULL) == 0;
    store_manifest_free(&m);
    return found;
}

/* A URL's origin, "scheme://host:port" in lower case with the port made explicit. */
static void origin_of(const char *url, char *out, size_t len)
{
    const char *sep = strstr(url, "://");
    if (!sep) {
        snprintf(out, len, "%s", "");
        return;
    }
    size_t scheme = (size_t)(sep - url);
    const char *host = sep + 3;
    size_t hl = strcspn(host, "/?#");
    const char *at = memchr(host, '@', hl); /* userinfo is not part of the origin */
    if (at) {
        hl -= (size_t)(at + 1 - host);
        host = at + 1;
    }
    bool has_port = hl && memchr(host, ':', hl) && host[hl - 1] != ']';
    bool tls = scheme == 5 && !strncasecmp(url, "https", 5);
    snprintf(out, len, "%.*s://%.*s%s", (int)scheme, url, (int)hl, host,
             has_port ? ""
             : tls    ? ":443"
                      : ":80");
    for (char *c = out; *c; c++)
        *c = (char)tolower((unsigned char)*c);
}

static bool same_origin(const char *a, const char *b)
{
    char oa[600], ob[600];
    origin_of(a, oa, sizeof oa);
    origin_of(b, ob, sizeof ob);
    return oa[0] && !strcmp(oa, ob);
}

/* What a chart fill needs (the fill's arg). */
typedef struct {
    store *st;
    const config *cfg;
    up_state *ups;
    char file[300];
} chart_job;

/* Another berth (sharing the metadata) stored the chart meanwhile. */
static int chart_present(void *arg)
{
    chart_job *j = arg;
    char repo[512], digest[DIGEST_STR_MAX];
    return stored_chart(j->st, j->cfg, j->ups->up, j->file, repo, sizeof repo, digest);
}

/* The fill's run (proxy/fill): fetches the file from the upstream into the fill's upload (the
 * clients read it as it lands), verifies and stores it. On the fill's own thread. */
static int fetch_chart(fill *fl, void *arg)
{
    chart_job *j = arg;
    const config_mirror *up = j->ups->up;
    const char *file = j->file;
    snap *s;
    int rc = index_current(j->st, j->ups, &s);
    if (rc < 0) return rc;
    json_t *f = json_object_get(s->files, file);
    if (!f) {
        snap_put(s);
        return berr_set(BERR_NOT_FOUND, "chart %.200s is not in %s's index", file, up->name);
    }
    char url[2048], want[DIGEST_STR_MAX] = "", name[HELM_NAME_MAX + 1], created[64] = "";
    snprintf(url, sizeof url, "%s", json_string_value(json_object_get(f, "url")));
    snprintf(name, sizeof name, "%s", json_string_value(json_object_get(f, "name")));
    const char *dg = json_string_value(json_object_get(f, "digest"));
    if (dg) snprintf(want, sizeof want, "sha256:%s", dg);
    const char *cr = json_string_value(json_object_get(f, "created"));
    if (cr) snprintf(created, sizeof created, "%s", cr);
    snap_put(s);
    if (!want[0] || digest_parse(want, NULL) < 0)
        return berr_set(BERR_UNAVAILABLE, "%s's index gives no sha256 digest for %.200s", up->name,
                        file);
    /* one fetch per chart across every berth on this metadata */
    char lease[600];
    snprintf(lease, sizeof lease, "fill helm %s %s", up->name, file);
    rc = fill_lease(fl, lease, store_now() + up->connect_ms + up->transfer_ms, chart_present, j);
    if (rc != 0) return rc < 0 ? rc : 0;
    char repo[512];
    helm_repo_name(j->cfg, up->name, name, repo, sizeof repo);
    if ((rc = fill_upload_open(fl, repo, DIGEST_SHA256)) < 0) return rc;
    store_upload *u = fill_upload(fl);
    /* the index may name any host: the upstream's credentials go only to its own origin */
    config_mirror anon = *up;
    if (!same_origin(url, up->urls[0])) anon.username = anon.password = NULL;
    rc = upstream_get_url(&anon, url, fill_sink, fl, 0, fill_resp(fl));
    long status = fill_resp(fl)->status;
    if (rc == 0 && status != 200)
        rc = status == 404
                 ? berr_set(BERR_NOT_FOUND, "%s: %.200s not found upstream", up->name, file)
                 : berr_set(BERR_UNAVAILABLE, "%s answered %ld for %.200s", up->name, status, file);
    char got[DIGEST_STR_MAX];
    if (rc == 0) rc = store_upload_digest(u, got);
    if (rc == 0 && strcmp(got, want) != 0)
        rc = berr_set(BERR_UNAVAILABLE,
                      "%.200s from %s does not match the digest in its index (got %s): refused",
                      file, up->name, got);
    helm_chart_info ci = {0};
    if (rc == 0) {
        int fd = store_upload_reader(u);
        rc = fd < 0 ? fd : helm_chart_inspect(fd, j->cfg->helm.max_uncompressed, &ci);
        if (fd >= 0) close(fd);
        if (rc < 0) {
            char why[300];
            snprintf(why, sizeof why, "%.200s from %s is not a valid chart: ", file, up->name);
            rc = berr_rewrap(BERR_UNAVAILABLE, why);
        } else if (strcmp(ci.name, name))
            rc = berr_set(BERR_UNAVAILABLE, "%.200s from %s holds chart '%s'", file, up->name,
                          ci.name);
    }
    if (rc == 0) fill_verified(fl); /* readers may take the last byte */
    store_new_blob nb;
    uint64_t size = store_upload_size(u);
    if (rc == 0) rc = store_upload_place(u, got, &nb);
    if (rc == 0) {
        helm_store_req q = {.cfg = j->cfg,
                            .repo = repo,
                            .info = &ci,
                            .chart_digest = got,
                            .chart_size = size,
                            .chart_new = true,
                            .overwrite = true,
                            .mirrored = true,
                            .created = created[0] ? created : NULL};
        rc = helm_chart_store(j->st, &q);
    } else {
        store_upload_cancel(u);
    }
    if (rc == 0)
        log_info("msg=\"chart cached\" upstream=%s file=%s digest=%s", up->name, file, got);
    else
        log_warn("msg=\"chart fetch failed\" upstream=%s file=%s err=\"%s\"", up->name, file,
                 berr_msg());
    helm_chart_info_free(&ci);
    return rc;
}

/* The fill committed: the chart is served from the store. */
static int serve_stored(http_req *r)
{
    char repo[512], digest[DIGEST_STR_MAX];
    const config_mirror *up = helm_upstream_find(r->cfg, r->name);
    if (!up || !stored_chart(r->store, r->cfg, up, r->ref, repo, sizeof repo, digest))
        return berr_set(BERR_INTERNAL, "chart %.200s stored but not found", r->ref);
    return helm_serve_layer(r, repo, digest, "application/x-tar");
}

/* Charts are mostly small: a client is answered once the whole chart is checked unless it is
 * larger than this, when it gets the bytes as they arrive (cut should the chart turn out bad). */
#define CHART_STREAM_MIN (1u << 20)

int helm_mirror_chart(http_req *r, const config_mirror *up, const char *file)
{
    fill *f = r->ctx; /* a run after this request was parked on a fill */
    r->ctx = NULL;
    up_state *st = state_of(up);
    char area[512];
    helm_repo_name(r->cfg, "", up->name, area, sizeof area);
    int rc = st ? auth_require(r, area, CONFIG_PULL) : berr_set(BERR_INTERNAL, "out of memory");
    if (rc < 0) {
        if (f) fill_release(f);
        return rc;
    }
    if (!f) {
        char repo[512], digest[DIGEST_STR_MAX];
        if (stored_chart(r->store, r->cfg, up, file, repo, sizeof repo, digest))
            return helm_serve_layer(r, repo, digest, "application/x-tar");
        chart_job *j = calloc(1, sizeof *j);
        if (!j) return berr_set(BERR_INTERNAL, "out of memory");
        j->st = r->store;
        j->cfg = r->cfg;
        j->ups = st;
        snprintf(j->file, sizeof j->file, "%s", file);
        char key[600];
        snprintf(key, sizeof key, "helm %s %s", up->name, file);
        fill_spec s = {.key = key,
                       .name = up->name,
                       .limit = (uint64_t)r->cfg->helm.max_upload,
                       .stream_min = CHART_STREAM_MIN,
                       .st = r->store,
                       .ops = {fetch_chart, free},
                       .arg = j};
        if (!(f = fill_join(&s))) return berr_set(BERR_INTERNAL, "cannot start a chart fetch");
    }
    fill_serve_opts o = {"application/x-tar", NULL, serve_stored};
    return fill_serve(r, f, &o);
}

void helm_mirror_cleanup(http_req *r)
{
    fill_serve_cleanup(r);
}

void helm_mirror_free(void)
{
    pthread_mutex_lock(&states_mu);
    while (states) {
        up_state *n = states->next;
        snap_put(states->cur);
        pthread_mutex_destroy(&states->mu);
        pthread_mutex_destroy(&states->fetch_mu);
        free(states);
        states = n;
    }
    pthread_mutex_unlock(&states_mu);
}
