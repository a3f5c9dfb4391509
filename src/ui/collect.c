/*
 * ui collect: the summary both views show (ui.h), built from the store and the configuration on
 * each call. Invariants: a repository the viewer may not pull never enters the result (its name,
 * tags, charts and packages are all skipped at the source, so no renderer can leak them); the
 * walk is bounded (UI_MAX_REPOS repositories, UI_MAX_TAGS tags each, blobs read only when small:
 * image configs and margo descriptions up to UI_MAX_READ, icons up to UI_MAX_ICON) and says when
 * it stopped early ("truncated").
 */
#include "margo/margo.h"
#include "ui/ui.h"
#include "util/err.h"

#include <fnmatch.h>
#include <nettle/base64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define UI_MAX_REPOS 2000
#define UI_MAX_TAGS 500
#define UI_MAX_READ (1u << 20)
#define UI_MAX_ICON (256u << 10)

#define MT_HELM_CONFIG "application/vnd.cncf.helm.config.v1+json"
#define MT_MARGO_DESC "application/vnd.margo.app.description.v1+yaml"

typedef struct {
    store *st;
    const config *cfg;
    ui_visible_fn visible;
    void *arg;
    json_t *pulls;
    bool truncated;
} coll;

static bool visible(coll *c, const char *repo)
{
    return !c->visible || c->visible(c->arg, repo);
}

static const char *str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* A blob of repo, whole, when at most max bytes (malloc'd, NUL-terminated). */
static int read_blob(store *st, const char *repo, const char *digest, size_t max, char **out,
                     size_t *len)
{
    store_blob b;
    int rc = store_blob_open(st, repo, digest, &b);
    if (rc < 0) return rc;
    if (b.size > max) {
        store_blob_release(&b);
        return berr_set(BERR_TOO_LARGE, "blob %s is larger than %zu bytes", digest, max);
    }
    char *buf = malloc(b.size + 1);
    if (!buf) {
        store_blob_release(&b);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    if (b.fd < 0) {
        memcpy(buf, b.mem, b.size);
    } else {
        size_t got = 0;
        while (got < b.size) {
            ssize_t n = pread(b.fd, buf + got, b.size - got, (off_t)(b.offset + got));
            if (n <= 0) break;
            got += (size_t)n;
        }
        if (got < b.size) {
            free(buf);
            store_blob_release(&b);
            return berr_set(BERR_IO, "short read of blob %s", digest);
        }
    }
    buf[b.size] = '\0';
    *len = b.size;
    *out = buf;
    store_blob_release(&b);
    return 0;
}

static json_int_t last_pull(coll *c, const char *repo, const char *ref)
{
    char key[520];
    snprintf(key, sizeof key, "%s\t%s", repo, ref);
    return json_integer_value(json_object_get(c->pulls, key));
}

static const config_mirror *mirror_of(const config *cfg, const char *repo)
{
    for (size_t i = 0; i <= cfg->nmirrors; i++) {
        const config_mirror *m = i < cfg->nmirrors ? &cfg->mirrors[i] : cfg->proxy;
        if (!m || !m->local) continue;
        size_t n = strlen(m->local);
        if (n == 0 || (!strncmp(repo, m->local, n) && repo[n] == '/')) return m;
    }
    return NULL;
}

static bool pinned(const config *cfg, const char *repo)
{
    for (size_t i = 0; i < cfg->npins; i++)
        if (!strcmp(cfg->pins[i], repo) || fnmatch(cfg->pins[i], repo, 0) == 0) return true;
    return false;
}

static uint64_t descriptors_size(json_t *man)
{
    uint64_t n =
        (uint64_t)json_integer_value(json_object_get(json_object_get(man, "config"), "size"));
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(man, "layers"), i, l) n +=
        (uint64_t)json_integer_value(json_object_get(l, "size"));
    return n;
}

static void add_platform(json_t *plats, json_t *p)
{
    const char *os = str(p, "os"), *arch = str(p, "architecture"), *var = str(p, "variant");
    if (!os || !arch || !strcmp(os, "unknown")) return; /* attestations */
    char s[200];
    snprintf(s, sizeof s, "%s/%s%s%s", os, arch, var ? "/" : "", var ? var : "");
    size_t i;
    json_t *have;
    json_array_foreach(plats, i, have) if (!strcmp(json_string_value(have), s)) return;
    json_array_append_new(plats, json_string(s));
}

/* The platform an image manifest's config names, when its blob is stored. */
static void config_platform(coll *c, const char *repo, json_t *man, json_t *plats)
{
    json_t *cfgd = json_object_get(man, "config");
    const char *digest = str(cfgd, "digest");
    const char *mt = str(cfgd, "mediaType");
    if (!digest || (mt && !strstr(mt, "image.config") && !strstr(mt, "container.image"))) return;
    char *buf = NULL;
    size_t len = 0;
    if (read_blob(c->st, repo, digest, UI_MAX_READ, &buf, &len) < 0) {
        berr_clear();
        return;
    }
    json_t *j = json_loadb(buf, len, 0, NULL);
    free(buf);
    if (j) add_platform(plats, j);
    json_decref(j);
}

static const char *icon_mime(const char *mt)
{
    if (!mt) return NULL;
    if (strstr(mt, "+png") || !strcmp(mt, "image/png")) return "image/png";
    if (strstr(mt, "+svg") || !strncmp(mt, "image/svg", 9)) return "image/svg+xml";
    if (strstr(mt, "+jpeg") || strstr(mt, "+jpg") || !strcmp(mt, "image/jpeg")) return "image/jpeg";
    if (strstr(mt, "+gif") || !strcmp(mt, "image/gif")) return "image/gif";
    return NULL;
}

/* A margo Application Package: what its margo.yaml says, and its icon as a data: URI. */
static json_t *margo_app(coll *c, const char *repo, const char *tag, const char *digest,
                         json_t *man)
{
    json_t *layers = json_object_get(man, "layers"), *l, *desc = NULL;
    size_t i;
    json_array_foreach(layers, i, l)
    {
        const char *mt = str(l, "mediaType");
        if (!mt || strcmp(mt, MT_MARGO_DESC) != 0 || !str(l, "digest")) continue;
        char *buf = NULL;
        size_t len = 0;
        if (read_blob(c->st, repo, str(l, "digest"), UI_MAX_READ, &buf, &len) == 0)
            margo_yaml(buf, len, &desc);
        free(buf);
        berr_clear();
        break;
    }
    json_t *meta = json_object_get(desc, "metadata");
    const char *icon_path =
        str(json_object_get(json_object_get(meta, "catalog"), "application"), "icon");
    json_t *app = json_pack("{s:s,s:s,s:s}", "repository", repo, "tag", tag, "digest", digest);
    json_object_set_new(app, "id",
                        json_string(str(meta, "id") ? str(meta, "id") : str(desc, "id")));
    json_object_set_new(app, "name", json_string(str(meta, "name")));
    json_object_set_new(app, "version", json_string(str(meta, "version")));
    json_object_set_new(app, "description", json_string(str(meta, "description")));
    json_object_set_new(app, "last_pull", json_integer(last_pull(c, repo, tag)));
    json_array_foreach(layers, i, l)
    {
        json_t *ann = json_object_get(l, "annotations");
        const char *mt = str(l, "mediaType"), *title = str(ann, "org.opencontainers.image.title");
        const char *res = str(ann, "org.margo.app.resource");
        bool is_icon = (mt && strstr(mt, "margo.app.icon")) ||
                       (res && !strcmp(res, "metadata.catalog.application.icon")) ||
                       (icon_path && title && !strcmp(icon_path, title));
        const char *mime = icon_mime(mt);
        if (!mime && title) { /* a plain type: by the file name's extension */
            const char *dot = strrchr(title, '.');
            if (dot && !strcmp(dot, ".png")) mime = "image/png";
            if (dot && !strcmp(dot, ".svg")) mime = "image/svg+xml";
            if (dot && (!strcmp(dot, ".jpg") || !strcmp(dot, ".jpeg"))) mime = "image/jpeg";
        }
        if (!is_icon || !mime || !str(l, "digest")) continue;
        char *buf = NULL;
        size_t len = 0;
        if (read_blob(c->st, repo, str(l, "digest"), UI_MAX_ICON, &buf, &len) < 0) {
            berr_clear();
            break;
        }
        size_t plen = strlen("data:") + strlen(mime) + strlen(";base64,");
        char *uri = malloc(plen + BASE64_ENCODE_RAW_LENGTH(len) + 1);
        if (uri) {
            snprintf(uri, plen + 1, "data:%s;base64,", mime);
            base64_encode_raw(uri + plen, len, (const uint8_t *)buf);
            uri[plen + BASE64_ENCODE_RAW_LENGTH(len)] = '\0';
            json_object_set_new(app, "icon", json_string(uri));
            json_object_set_new(app, "icon_bytes", json_integer((json_int_t)len));
        }
        free(uri);
        free(buf);
        break;
    }
    json_decref(desc);
    return app;
}

/* One tag: kind, size (the manifest, and for an index its children, with their config and
 * layers), platforms, last pull. Margo packages are also added to apps. */
static json_t *tag_info(coll *c, const char *repo, const char *tag, json_t *apps)
{
    store_manifest m;
    if (store_manifest_get(c->st, repo, tag, &m) < 0) {
        berr_clear();
        return NULL;
    }
    json_t *man = json_loadb(m.content, m.size, 0, NULL);
    json_t *plats = json_array();
    uint64_t size = m.size;
    const char *kind = "image";
    json_t *list = json_object_get(man, "manifests");
    const char *at = str(man, "artifactType");
    const char *cmt = str(json_object_get(man, "config"), "mediaType");
    json_int_t pulled = last_pull(c, repo, tag), pd = last_pull(c, repo, m.digest);
    if (pd > pulled) pulled = pd;
    if (json_is_array(list)) {
        kind = "index";
        size_t i;
        json_t *d;
        json_array_foreach(list, i, d)
        {
            const char *cd = str(d, "digest");
            json_t *p = json_object_get(d, "platform");
            if (p) add_platform(plats, p);
            store_manifest cm;
            if (cd && store_manifest_get(c->st, repo, cd, &cm) == 0) {
                json_t *child = json_loadb(cm.content, cm.size, 0, NULL);
                size += cm.size + descriptors_size(child);
                if (!p) config_platform(c, repo, child, plats);
                json_decref(child);
                store_manifest_free(&cm);
            } else {
                berr_clear();
                size += (uint64_t)json_integer_value(json_object_get(d, "size"));
            }
        }
    } else {
        size += descriptors_size(man);
        if ((at && (!strcmp(at, MARGO_MT_APP) || !strcmp(at, MARGO_MT_APP_OLD))) ||
            (cmt && (!strcmp(cmt, MARGO_MT_APP) || !strcmp(cmt, MARGO_MT_APP_OLD)))) {
            kind = "margo-app";
            json_array_append_new(apps, margo_app(c, repo, tag, m.digest, man));
        } else if (cmt && !strcmp(cmt, MT_HELM_CONFIG)) {
            kind = "helm-chart";
        } else if (at || (cmt && !strstr(cmt, "image.config") && !strstr(cmt, "container.image"))) {
            kind = "artifact";
        } else {
            config_platform(c, repo, man, plats);
        }
    }
    json_t *t = json_pack("{s:s,s:s,s:s,s:s,s:I,s:o,s:I}", "tag", tag, "digest", m.digest,
                          "media_type", m.media_type ? m.media_type : "", "kind", kind, "size",
                          (json_int_t)size, "platforms", plats, "last_pull", pulled);
    json_decref(man);
    store_manifest_free(&m);
    return t;
}

static json_t *repositories(coll *c, json_t *apps, json_t *pinned_repos, json_t *chart_repos)
{
    json_t *out = json_array();
    char last[256] = "";
    size_t seen = 0;
    for (;;) {
        store_list l = {0};
        if (store_catalog(c->st, last[0] ? last : NULL, 500, &l) < 0) {
            json_decref(out);
            return NULL;
        }
        for (size_t i = 0; i < l.n; i++) {
            const char *repo = l.items[i];
            snprintf(last, sizeof last, "%s", repo);
            if (!visible(c, repo)) continue;
            if (++seen > UI_MAX_REPOS) {
                c->truncated = true;
                break;
            }
            store_list tl = {0};
            if (store_tags_list(c->st, repo, NULL, UI_MAX_TAGS, &tl) < 0) {
                berr_clear();
                continue;
            }
            if (tl.more) c->truncated = true;
            json_t *tags = json_array();
            uint64_t size = 0;
            json_int_t pulled = 0;
            bool has_chart = false;
            for (size_t k = 0; k < tl.n; k++) {
                json_t *t = tag_info(c, repo, tl.items[k], apps);
                if (!t) continue;
                has_chart = has_chart ||
                            !strcmp(json_string_value(json_object_get(t, "kind")), "helm-chart");
                size += (uint64_t)json_integer_value(json_object_get(t, "size"));
                json_int_t p = json_integer_value(json_object_get(t, "last_pull"));
                if (p > pulled) pulled = p;
                json_array_append_new(tags, t);
            }
            store_list_free(&tl);
            if (has_chart) json_array_append_new(chart_repos, json_string(repo));
            const config_mirror *m = mirror_of(c->cfg, repo);
            bool pin = m && pinned(c->cfg, repo);
            if (pin) json_array_append_new(pinned_repos, json_string(repo));
            json_array_append_new(out,
                                  json_pack("{s:s,s:o,s:I,s:I,s:s?,s:b}", "name", repo, "tags",
                                            tags, "size", (json_int_t)size, "last_pull", pulled,
                                            "mirror", m ? m->name : NULL, "pinned", pin));
        }
        bool more = l.more && l.n > 0 && seen <= UI_MAX_REPOS;
        store_list_free(&l);
        if (!more) break;
    }
    return out;
}

static int chart_cmp(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int d = strcmp(str(x, "name") ? str(x, "name") : "", str(y, "name") ? str(y, "name") : "");
    if (d) return d;
    d = strcmp(str(x, "repository"), str(y, "repository"));
    return d ? d
             : strcmp(str(x, "version") ? str(x, "version") : "",
                      str(y, "version") ? str(y, "version") : "");
}

/* The charts of the repositories holding chart manifests (each one the viewer may pull). */
static json_t *charts(coll *c, json_t *chart_repos)
{
    store_chart_list l = {0};
    size_t ri;
    json_t *rn;
    json_array_foreach(chart_repos, ri, rn)
    {
        store_chart_list one = {0};
        if (store_charts_repo(c->st, json_string_value(rn), &one) < 0) {
            store_chart_list_free(&l);
            return NULL;
        }
        store_chart *grown = realloc(l.items, (l.n + one.n + 1) * sizeof *grown);
        if (!grown) {
            store_chart_list_free(&one);
            store_chart_list_free(&l);
            berr_set(BERR_INTERNAL, "out of memory");
            return NULL;
        }
        l.items = grown;
        memcpy(l.items + l.n, one.items, one.n * sizeof *one.items);
        l.n += one.n;
        free(one.items);
    }
    json_t **items = calloc(l.n + 1, sizeof *items);
    size_t n = 0;
    for (size_t i = 0; items && i < l.n; i++) {
        json_t *e = json_loads(l.items[i].entry ? l.items[i].entry : "{}", 0, NULL);
        items[n++] = json_pack("{s:s,s:s?,s:s?,s:s?,s:s?,s:s,s:s}", "repository", l.items[i].repo,
                               "name", str(e, "name"), "version", str(e, "version"), "app_version",
                               str(e, "appVersion"), "description", str(e, "description"), "tag",
                               l.items[i].tag, "digest", l.items[i].digest);
        json_decref(e);
    }
    if (items) qsort(items, n, sizeof *items, chart_cmp);
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(out, items[i]);
    free(items);
    store_chart_list_free(&l);
    return out;
}

static json_int_t num_of(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

json_t *ui_collect(store *st, const config *cfg, ui_visible_fn vis, void *arg, bool live)
{
    coll c = {.st = st, .cfg = cfg, .visible = vis, .arg = arg, .pulls = ui_pulls(st)};
    json_t *apps = json_array(), *pinned_repos = json_array(), *chart_repos = json_array();
    json_t *repos = repositories(&c, apps, pinned_repos, chart_repos);
    json_t *ch = repos ? charts(&c, chart_repos) : NULL;
    json_decref(chart_repos);
    if (!repos || !ch) {
        json_decref(repos);
        json_decref(apps);
        json_decref(pinned_repos);
        json_decref(c.pulls);
        return NULL;
    }
    uint64_t all = 0, mirrored = 0;
    if (store_usage(st, &all, &mirrored) < 0) berr_clear();
    json_t *rt = live ? ui_runtime(cfg) : ui_state_read(st, "runtime.json");
    json_int_t hits = json_integer_value(json_object_get(rt, "hits"));
    json_int_t misses = json_integer_value(json_object_get(rt, "misses"));
    json_t *ups = json_object_get(rt, "upstreams");
    ups = json_is_array(ups) ? json_incref(ups) : json_array();
    json_t *pins = json_array();
    for (size_t i = 0; i < cfg->npins; i++)
        json_array_append_new(pins, json_string(cfg->pins[i]));
    json_t *cache =
        json_pack("{s:I,s:I,s:I,s:I,s:I,s:o,s:I}", "used", (json_int_t)mirrored, "store_bytes",
                  (json_int_t)all, "limit",
                  cfg->cache_max >= 0 ? (json_int_t)cfg->cache_max : num_of(rt, "cache_limit"),
                  "hits", hits, "misses", misses, "hit_ratio",
                  hits + misses ? json_real((double)hits / (double)(hits + misses)) : json_null(),
                  "runtime_as_of", json_integer_value(json_object_get(rt, "as_of")));
    json_decref(rt);
    json_t *gc = ui_state_read(st, "gc.json"), *fsck = ui_state_read(st, "fsck.json");
    json_t *out = json_pack("{s:I,s:o,s:o,s:o,s:o,s:o,s:{s:o,s:o},s:o,s:o,s:b}", "generated",
                            (json_int_t)store_now(), "repositories", repos, "charts", ch, "apps",
                            apps, "cache", cache, "upstreams", ups, "pins", "patterns", pins,
                            "repositories", pinned_repos, "gc", gc ? gc : json_null(), "fsck",
                            fsck ? fsck : json_null(), "truncated", c.truncated);
    json_decref(c.pulls);
    return out;
}
