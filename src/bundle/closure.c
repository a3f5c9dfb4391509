/*
 * bundle/closure: `berth app closure REF`. Reads the package's margo.yaml, resolves every
 * component of every deployment profile (helm and compose by `oci://` repository + revision;
 * Helm charts from classic HTTP repositories and older compose `packageLocation` URLs, of an
 * archive or of a plain compose.yaml, are read and their images listed, digests being the files'
 * sha256; through a registry or a store, a packageLocation is first looked up as the artifact a
 * bundle carries it in, named after the URL), reads each component's content for the images it
 * runs (margo/images.c), and resolves every image's tag to a digest. Nothing is written
 * anywhere; what cannot be resolved is listed with the reason.
 */
#include "bundle/bundle.h"
#include "helm/helm.h"
#include "margo/images.h"
#include "margo/margo.h"
#include "util/err.h"
#include "util/ref.h"
#include "util/tar.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MT_COMPOSE_LAYER "application/vnd.org.margo.component.compose.tar+gzip"
#define MT_DESCRIPTION "application/vnd.margo.app.description.v1+yaml"
#define ARCHIVE_MAX ((size_t)256 << 20)

static closure_item *add_item(closure *c, const char *kind, const char *ref)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        closure_item *n = realloc(c->items, cap * sizeof *n);
        if (!n) return NULL;
        c->items = n;
        c->cap = cap;
    }
    closure_item *it = &c->items[c->n++];
    memset(it, 0, sizeof *it);
    snprintf(it->kind, sizeof it->kind, "%s", kind);
    snprintf(it->ref, sizeof it->ref, "%s", ref);
    return it;
}

static void item_fail(closure_item *it, const char *fmt, const char *arg)
{
    char buf[1024];
    snprintf(buf, sizeof buf, fmt, arg);
    free(it->error);
    it->error = strdup(buf);
}

void closure_free(closure *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->items[i].error);
        free(c->items[i].media_type);
        json_decref(c->items[i].platforms);
    }
    free(c->items);
    memset(c, 0, sizeof *c);
}

bool closure_platform_match(json_t *p, const char *platforms)
{
    const char *os = json_string_value(json_object_get(p, "os"));
    const char *arch = json_string_value(json_object_get(p, "architecture"));
    const char *var = json_string_value(json_object_get(p, "variant"));
    if (!os || !arch) return false;
    const char *s = platforms;
    while (*s) {
        size_t n = strcspn(s, ",");
        char want[128], have[128];
        snprintf(want, sizeof want, "%.*s", (int)n, s);
        snprintf(have, sizeof have, "%s/%s", os, arch);
        if (!strcmp(want, have)) return true; /* os/arch matches any variant */
        if (var) {
            snprintf(have, sizeof have, "%s/%s/%s", os, arch, var);
            if (!strcmp(want, have)) return true;
        }
        s += n;
        if (*s == ',') s++;
    }
    return false;
}

static bool is_index(const char *mt)
{
    return mt && (!strcmp(mt, "application/vnd.oci.image.index.v1+json") ||
                  !strcmp(mt, "application/vnd.docker.distribution.manifest.list.v2+json"));
}

/* Resolves it->ref to a manifest; fills digest, media type and (for an index) the platforms
 * asked for. The manifest is returned parsed in *out when out is not NULL. */
static int resolve(closure_item *it, const rc_opts *o, const char *platforms, json_t **out)
{
    rc_ref r;
    rc_manifest mf;
    int rc = rc_parse(it->ref, o, &r);
    if (rc == 0) rc = rc_get_manifest(&r, NULL, &mf);
    if (rc < 0) {
        item_fail(it, "%s", berr_msg());
        return rc;
    }
    snprintf(it->digest, sizeof it->digest, "%s", mf.digest);
    it->media_type = strdup(mf.media_type);
    json_t *m = json_loadb(mf.body, mf.len, 0, NULL);
    rc_manifest_free(&mf);
    if (!m) {
        item_fail(it, "%s: the manifest is not JSON", it->ref);
        return -BERR_IO;
    }
    if (is_index(it->media_type)) { /* every platform, or those asked for */
        it->platforms = json_array();
        size_t i;
        json_t *d;
        json_array_foreach(json_object_get(m, "manifests"), i, d)
        {
            json_t *p = json_object_get(d, "platform");
            if (!json_is_object(p) || (platforms && !closure_platform_match(p, platforms)))
                continue;
            const char *var = json_string_value(json_object_get(p, "variant"));
            char name[160];
            snprintf(name, sizeof name, "%s/%s%s%s", json_string_value(json_object_get(p, "os")),
                     json_string_value(json_object_get(p, "architecture")), var ? "/" : "",
                     var ? var : "");
            json_array_append_new(it->platforms, json_pack("{s:s,s:O}", "platform", name, "digest",
                                                           json_object_get(d, "digest")));
        }
        if (json_array_size(it->platforms) == 0)
            item_fail(it, "no manifest for platform %s", platforms);
    }
    if (out)
        *out = m;
    else
        json_decref(m);
    return it->error ? -BERR_IO : 0;
}

static int to_fd(void *arg, const char *data, size_t len)
{
    int fd = *(int *)arg;
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n <= 0) return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The layer of manifest m with media type mt, fetched into an anonymous file. */
static int fetch_layer(closure_item *it, const rc_opts *o, json_t *m, const char *mt, int *fd)
{
    size_t i;
    json_t *l;
    const char *digest = NULL;
    json_array_foreach(json_object_get(m, "layers"), i, l)
    {
        const char *lmt = json_string_value(json_object_get(l, "mediaType"));
        if (lmt && !strcmp(lmt, mt)) digest = json_string_value(json_object_get(l, "digest"));
    }
    if (!digest) {
        item_fail(it, "no layer of type %s", mt);
        return -BERR_IO;
    }
    rc_ref r;
    int rc = rc_parse(it->ref, o, &r);
    *fd = memfd_create("berth-closure", MFD_CLOEXEC);
    if (*fd < 0) return berr_set(BERR_IO, "memfd: %s", strerror(errno));
    if (rc == 0) rc = rc_get_blob(&r, digest, 0, to_fd, fd);
    if (rc < 0) {
        item_fail(it, "%s", berr_msg());
        close(*fd);
        *fd = -1;
    }
    return rc;
}

static void add_images(closure *c, img_list *found, img_list *unresolved, const char *from_ref)
{
    char from[700]; /* from_ref may live in c->items, which add_item moves */
    snprintf(from, sizeof from, "%s", from_ref);
    for (size_t i = 0; i < found->n; i++) {
        bool seen = false;
        for (size_t j = 0; j < c->n && !seen; j++)
            seen = !strcmp(c->items[j].kind, "image") && !strcmp(c->items[j].ref, found->items[i]);
        if (!seen) add_item(c, "image", found->items[i]);
    }
    for (size_t i = 0; i < unresolved->n; i++) {
        closure_item *it = add_item(c, "image", unresolved->items[i]);
        if (it) item_fail(it, "cannot be resolved without rendering (in %s)", from);
    }
}

/* Images of a compose archive in fd (checked as berth checks it at push), or of a plain
 * compose.yaml (an older packageLocation may name one: "a direct path to the compose.yaml or
 * compose.yaml file archived in tar.gz"). */
static void compose_images(closure *c, closure_item *it, int fd)
{
    unsigned char magic[2] = {0};
    off_t size = lseek(fd, 0, SEEK_END);
    if (pread(fd, magic, 2, 0) == 2 && !(magic[0] == 0x1f && magic[1] == 0x8b)) {
        img_list found = {0}, unres = {0};
        char *text = size > 0 && size <= (4 << 20) ? malloc((size_t)size) : NULL;
        if (!text || pread(fd, text, (size_t)size, 0) != size)
            item_fail(it, "%s", "neither a gzip archive nor a compose.yaml of at most 4 MiB");
        else if (images_from_compose(text, (size_t)size, &found, &unres) < 0)
            item_fail(it, "%s", berr_msg());
        else
            add_images(c, &found, &unres, it->ref);
        free(text);
        img_list_free(&found);
        img_list_free(&unres);
        return;
    }
    tar_scan_opts so = {.what = "compose archive",
                        .max_uncompressed = (int64_t)1 << 30,
                        .symlinks_inside = true,
                        .no_special_bits = true,
                        .capture = "compose.yaml",
                        .capture_max = 4 << 20};
    img_list found = {0}, unres = {0};
    if (tar_scan(fd, &so) < 0 || !so.captured)
        item_fail(it, "%s", so.captured ? berr_msg() : "the archive has no compose.yaml");
    else if (images_from_compose(so.captured, so.captured_len, &found, &unres) < 0)
        item_fail(it, "%s", berr_msg());
    else
        add_images(c, &found, &unres, it->ref);
    tar_scan_free(&so);
    img_list_free(&found);
    img_list_free(&unres);
}

static void chart_images(closure *c, closure_item *it, int fd)
{
    img_list found = {0}, unres = {0};
    if (images_from_chart(fd, &found, &unres) < 0)
        item_fail(it, "%s", berr_msg());
    else
        add_images(c, &found, &unres, it->ref);
    img_list_free(&found);
    img_list_free(&unres);
}

typedef struct {
    int fd;
    digest_ctx ctx;
} hashing_fd;

static int to_hashing_fd(void *arg, const char *data, size_t len)
{
    hashing_fd *h = arg;
    digest_update(&h->ctx, data, len);
    return to_fd(&h->fd, data, len);
}

int closure_fetch_url(const rc_opts *o, const char *url, int *fd, char *digest)
{
    config_mirror m;
    rc_client(o, &m);
    hashing_fd h = {.fd = memfd_create("berth-closure", MFD_CLOEXEC)};
    if (h.fd < 0) return berr_set(BERR_IO, "memfd: %s", strerror(errno));
    digest_init(&h.ctx, DIGEST_SHA256);
    upstream_resp resp;
    int rc = upstream_get_url(&m, url, to_hashing_fd, &h, 0, &resp);
    if (rc == 0 && resp.status != 200)
        rc = berr_set(resp.status == 404 ? BERR_NOT_FOUND : BERR_IO, "%s: HTTP %ld", url,
                      resp.status);
    upstream_resp_free(&resp);
    if (rc < 0) {
        close(h.fd);
        *fd = -1;
        return rc;
    }
    digest_final(&h.ctx, digest);
    *fd = h.fd;
    return 0;
}

/* A chart from a classic HTTP repository: index.yaml's entry for name/version, its archive
 * verified against the entry's digest. */
static void http_chart(closure *c, const rc_opts *o, const char *repo, const char *name,
                       const char *version)
{
    char url[2048];
    size_t rl = strlen(repo);
    while (rl && repo[rl - 1] == '/')
        rl--;
    snprintf(url, sizeof url, "%.*s/%s-%s.tgz", (int)rl, repo, name, version);
    closure_item *it = add_item(c, "chart", url);
    if (!it) return;
    char iurl[2048], dg[DIGEST_STR_MAX];
    snprintf(iurl, sizeof iurl, "%.*s/index.yaml", (int)rl, repo);
    int fd = -1;
    if (closure_fetch_url(o, iurl, &fd, dg) < 0) {
        item_fail(it, "%s", berr_msg());
        return;
    }
    off_t size = lseek(fd, 0, SEEK_END);
    char *text = size > 0 ? malloc((size_t)size + 1) : NULL;
    json_t *idx = NULL;
    if (text && pread(fd, text, (size_t)size, 0) == size)
        yamlj_parse(text, (size_t)size, "index.yaml", &idx);
    free(text);
    close(fd);
    const char *want_s = NULL, *curl = NULL;
    char want[DIGEST_STR_MAX] = "";
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(json_object_get(idx, "entries"), name), i, e)
    {
        const char *v = json_string_value(json_object_get(e, "version"));
        if (!v || strcmp(v, version)) continue;
        want_s = json_string_value(json_object_get(e, "digest"));
        const char *cr = json_string_value(json_object_get(e, "created"));
        if (cr) snprintf(it->created, sizeof it->created, "%s", cr);
        curl = json_string_value(json_array_get(json_object_get(e, "urls"), 0));
    }
    if (!curl) {
        item_fail(it, "%s", "the repository's index.yaml has no such chart version");
        json_decref(idx);
        return;
    }
    if (!strstr(curl, "://"))
        snprintf(url, sizeof url, "%.*s/%s", (int)rl, repo, curl);
    else
        snprintf(url, sizeof url, "%s", curl);
    snprintf(it->ref, sizeof it->ref, "%s", url);
    if (want_s) snprintf(want, sizeof want, "%s", want_s); /* idx goes now */
    json_decref(idx);
    if (closure_fetch_url(o, url, &fd, dg) < 0) {
        item_fail(it, "%s", berr_msg());
        return;
    }
    if (want[0] && strcmp(dg + 7, want)) {
        item_fail(it, "the archive's sha256 differs from index.yaml's digest %s", want);
    } else {
        snprintf(it->digest, sizeof it->digest, "%s", dg);
        chart_images(c, it, fd);
    }
    close(fd);
}

int closure_url_name(const char *url, char *out, size_t len)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    size_t n = 0, end = strcspn(p, "?#");
    bool sep = true; /* at the start of a component, or after a separator */
    for (size_t i = 0; i < end && n + 2 < len; i++) {
        char ch = p[i];
        if (ch >= 'A' && ch <= 'Z') ch = (char)(ch - 'A' + 'a');
        if (ch == '/') {
            while (n && (out[n - 1] == '-' || out[n - 1] == '.' || out[n - 1] == '_'))
                n--;
            if (n && out[n - 1] != '/') out[n++] = '/';
            sep = true;
            continue;
        }
        bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (!alnum && ch != '.' && ch != '_' && ch != '-') ch = '-';
        if (!alnum && sep) continue; /* no separator at a component's start or doubled */
        out[n++] = ch;
        sep = !alnum;
    }
    while (n && (out[n - 1] == '-' || out[n - 1] == '.' || out[n - 1] == '_' || out[n - 1] == '/'))
        n--;
    out[n] = '\0';
    return n && ref_name_valid(out) ? 0 : berr_set(BERR_CONFIG, "%s: no repository name", url);
}

/* A legacy packageLocation carried by a bundle (bundle.c): when reading through a registry or a
 * store, the artifact named after the URL, else the URL itself. */
static void legacy_compose(closure *c, const rc_opts *o, const char *loc)
{
    closure_item *it = add_item(c, "compose", loc);
    int fd = -1;
    char dg[DIGEST_STR_MAX], name[600];
    if (!it) return;
    size_t idx = (size_t)(it - c->items);
    if ((o->via || o->st) && closure_url_name(loc, name, sizeof name) == 0) {
        closure_item probe = {0};
        snprintf(probe.ref, sizeof probe.ref, "%s:%s", name, CLOSURE_URL_TAG);
        json_t *m = NULL, *layer = NULL;
        if (resolve(&probe, o, NULL, &m) == 0)
            layer = json_array_get(json_object_get(m, "layers"), 0);
        const char *mt = json_string_value(json_object_get(layer, "mediaType"));
        if (mt && fetch_layer(&probe, o, m, mt, &fd) == 0) {
            const char *ld = json_string_value(json_object_get(layer, "digest"));
            snprintf(c->items[idx].digest, sizeof c->items[idx].digest, "%s", ld ? ld : "");
            snprintf(c->items[idx].carried, sizeof c->items[idx].carried, "%s", probe.ref);
        }
        json_decref(m);
        free(probe.error);
        free(probe.media_type);
        json_decref(probe.platforms);
        berr_clear();
    }
    if (fd < 0) {
        if (closure_fetch_url(o, loc, &fd, dg) < 0) {
            item_fail(&c->items[idx], "%s", berr_msg());
            return;
        }
        snprintf(c->items[idx].digest, sizeof c->items[idx].digest, "%s", dg);
    }
    compose_images(c, &c->items[idx], fd);
    close(fd);
}

static void component(closure *c, const rc_opts *o, const char *ptype, json_t *comp)
{
    json_t *pr = json_object_get(comp, "properties");
    const char *repo = json_string_value(json_object_get(pr, "repository"));
    const char *rev = json_string_value(json_object_get(pr, "revision"));
    const char *loc = json_string_value(json_object_get(pr, "packageLocation"));
    const char *name = json_string_value(json_object_get(comp, "name"));
    bool helm = !strcmp(ptype, "helm") || !strcmp(ptype, "helm.v3");
    bool compose = !strcmp(ptype, "compose") || !strcmp(ptype, "docker-compose");
    if (!helm && !compose) return;
    if (compose && !repo && loc) { /* legacy: a URL of the archive or the compose.yaml */
        legacy_compose(c, o, loc);
        return;
    }
    if (!repo || !rev) {
        closure_item *it = add_item(c, helm ? "chart" : "compose", name ? name : "?");
        if (it) item_fail(it, "component %s has no repository and revision", name ? name : "?");
        return;
    }
    if (helm && strncmp(repo, "oci://", 6)) {
        http_chart(c, o, repo, name ? name : "", rev);
        return;
    }
    char ref[700], tag[160];
    snprintf(tag, sizeof tag, "%s", rev);
    for (char *p = tag; *p; p++)
        if (*p == '+') *p = '_';
    snprintf(ref, sizeof ref, "%s:%s", strncmp(repo, "oci://", 6) ? repo : repo + 6, tag);
    closure_item *it = add_item(c, helm ? "chart" : "compose", ref);
    if (!it) return;
    json_t *m = NULL;
    if (resolve(it, o, NULL, &m) == 0) {
        int fd = -1;
        if (fetch_layer(it, o, m, helm ? HELM_MT_CHART : MT_COMPOSE_LAYER, &fd) == 0) {
            size_t idx = (size_t)(it - c->items);
            if (helm)
                chart_images(c, &c->items[idx], fd);
            else
                compose_images(c, &c->items[idx], fd);
            close(fd);
        }
    }
    json_decref(m);
}

int closure_resolve(const char *ref, const rc_opts *o, const char *platforms, closure *out)
{
    memset(out, 0, sizeof *out);
    rc_ref r;
    int rc = rc_parse(ref, o, &r);
    if (rc < 0) return rc;
    char pref[700];
    snprintf(pref, sizeof pref, "%s%s%s", r.name, r.ref[0] ? (strchr(r.ref, ':') ? "@" : ":") : "",
             r.ref);
    closure_item *pkg = add_item(out, "package", pref);
    if (!pkg) return berr_set(BERR_INTERNAL, "out of memory");
    rc_manifest mf;
    if ((rc = rc_get_manifest(&r, NULL, &mf)) < 0) return rc;
    snprintf(pkg->digest, sizeof pkg->digest, "%s", mf.digest);
    pkg->media_type = strdup(mf.media_type);
    json_t *m = json_loadb(mf.body, mf.len, 0, NULL);
    rc_manifest_free(&mf);
    const char *at = json_string_value(json_object_get(m, "artifactType"));
    const char *desc = NULL;
    size_t i, j;
    json_t *l;
    json_array_foreach(json_object_get(m, "layers"), i, l)
    {
        const char *mt = json_string_value(json_object_get(l, "mediaType"));
        if (mt && !strcmp(mt, MT_DESCRIPTION))
            desc = json_string_value(json_object_get(l, "digest"));
    }
    if (!at || (strcmp(at, MARGO_MT_APP) && strcmp(at, MARGO_MT_APP_OLD)) || !desc) {
        json_decref(m);
        return berr_set(BERR_IO, "%s is not a margo application package", ref);
    }
    char *text = NULL;
    size_t len = 0;
    json_t *d = NULL;
    rc = rc_get_blob_mem(&r, desc, 16 << 20, &text, &len);
    json_decref(m);
    if (rc == 0) rc = yamlj_parse(text, len, "margo.yaml", &d);
    free(text);
    if (rc < 0) return rc;
    json_t *p, *comp;
    json_array_foreach(json_object_get(d, "deploymentProfiles"), i, p)
    {
        const char *type = json_string_value(json_object_get(p, "type"));
        json_array_foreach(json_object_get(p, "components"), j, comp)
            component(out, o, type ? type : "", comp);
    }
    json_decref(d);
    for (i = 0; i < out->n; i++)
        if (!strcmp(out->items[i].kind, "image") && !out->items[i].error)
            resolve(&out->items[i], o, platforms, NULL);
    return 0;
}

/* ---- berth app closure ---- */

static json_t *item_json(const closure_item *it)
{
    json_t *j = json_pack("{s:s,s:s}", "kind", it->kind, "ref", it->ref);
    if (it->digest[0]) json_object_set_new(j, "digest", json_string(it->digest));
    if (it->media_type) json_object_set_new(j, "mediaType", json_string(it->media_type));
    if (it->platforms) json_object_set(j, "platforms", it->platforms);
    if (it->error) json_object_set_new(j, "error", json_string(it->error));
    return j;
}

int bundle_closure_cli(int argc, char **argv)
{
    rc_opts o = {0};
    const char *ref = NULL, *platforms = NULL, *cfg_path = NULL;
    bool as_json = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--registry") && i + 1 < argc)
            o.via = argv[++i];
        else if (!strcmp(argv[i], "--user") && i + 1 < argc)
            o.user = argv[++i];
        else if (!strcmp(argv[i], "--platform") && i + 1 < argc)
            platforms = argv[++i];
        else if (!strcmp(argv[i], "--plain-http"))
            o.plain_http = true;
        else if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc)
            cfg_path = argv[++i];
        else if (!strcmp(argv[i], "--json"))
            as_json = true;
        else if (argv[i][0] != '-' && !ref)
            ref = argv[i];
        else
            ref = NULL, i = argc;
    }
    if (!ref) {
        fputs("usage: berth app closure REF [--registry URL | -c config.yml] [--json]\n"
              "                         [--platform OS/ARCH,...] [--user USER:PASSWORD] "
              "[--plain-http]\n",
              stderr);
        return 2;
    }
    config cfg;
    bool own = false; /* -c: read berth's own store, no server needed */
    /* libcurl: for a registry, and for HTTP chart repositories even when reading the store */
    int crc = upstream_global_init();
    int rc = cfg_path ? config_load(&cfg, cfg_path) : crc;
    if (rc == 0 && cfg_path) {
        own = true;
        rc = store_open(&o.st, &cfg);
    }
    closure c = {0};
    if (rc == 0) rc = closure_resolve(ref, &o, platforms, &c);
    if (o.st) store_close(o.st);
    if (own) config_free(&cfg);
    if (rc < 0) {
        fprintf(stderr, "berth app closure: %s\n", berr_msg());
        closure_free(&c);
        return 1;
    }
    bool bad = false;
    json_t *out = json_pack("{s:o,s:[],s:[],s:[]}", "package", item_json(&c.items[0]), "components",
                            "images", "unresolved");
    for (size_t i = 0; i < c.n; i++) {
        closure_item *it = &c.items[i];
        if (it->error) {
            bad = true;
            json_array_append_new(json_object_get(out, "unresolved"), item_json(it));
            if (!as_json) printf("unresolved %s %s %s\n", it->kind, it->ref, it->error);
            continue;
        }
        if (i > 0)
            json_array_append_new(
                json_object_get(out, !strcmp(it->kind, "image") ? "images" : "components"),
                item_json(it));
        if (as_json) continue;
        printf("%s %s %s", it->kind, it->ref, it->digest);
        size_t k;
        json_t *p;
        json_array_foreach(it->platforms, k, p)
            printf(" %s=%s", json_string_value(json_object_get(p, "platform")),
                   json_string_value(json_object_get(p, "digest")));
        printf("\n");
    }
    if (as_json) {
        char *s = json_dumps(out, JSON_INDENT(2));
        printf("%s\n", s);
        free(s);
    }
    json_decref(out);
    closure_free(&c);
    return bad ? 1 : 0;
}
