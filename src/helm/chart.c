/*
 * helm/chart: chart archives and their metadata. An archive is checked by util/tar (libarchive,
 * straight from the upload's file, never extracted): only Chart.yaml's bytes are kept, and the
 * declared sizes are summed before any data is inflated, so a bomb is refused before it costs
 * anything. Chart.yaml is parsed with libyaml into JSON (the form Helm's OCI config blob
 * and index entries use); scalars stay text as Helm reads them, except the boolean fields.
 * The stored form of a chart is the OCI chart manifest `helm push` writes (see helm.h).
 */
#include "helm/helm.h"
#include "registry/ingest.h"
#include "registry/registry.h"
#include "util/err.h"
#include "util/log.h"
#include "util/ref.h"
#include "util/tar.h"

#include <ctype.h>
#include <pthread.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

#define CHART_YAML_MAX (1u << 20)

bool helm_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > HELM_NAME_MAX) return false;
    bool prev_sep = true;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        bool sep = c == '.' || c == '_' || c == '-';
        if (!alnum && !sep) return false;
        if (sep && prev_sep) return false;
        prev_sep = sep;
    }
    return !prev_sep;
}

/* ---- metadata ---- */

int helm_chart_check_meta(json_t *meta, helm_chart_info *info)
{
    const char *api = json_string_value(json_object_get(meta, "apiVersion"));
    const char *name = json_string_value(json_object_get(meta, "name"));
    const char *version = json_string_value(json_object_get(meta, "version"));
    if (!api || !*api) return berr_set(BERR_BAD_REQUEST, "Chart.yaml: apiVersion is required");
    if (strcmp(api, "v1") && strcmp(api, "v2"))
        return berr_set(BERR_BAD_REQUEST, "Chart.yaml: apiVersion '%.40s' is not v1 or v2", api);
    if (!name || !*name) return berr_set(BERR_BAD_REQUEST, "Chart.yaml: name is required");
    if (!helm_name_valid(name))
        return berr_set(BERR_BAD_REQUEST,
                        "Chart.yaml: name '%.130s' must be lowercase letters and digits "
                        "separated by '.', '_' or '-' (it names an OCI repository)",
                        name);
    if (!version || !*version) return berr_set(BERR_BAD_REQUEST, "Chart.yaml: version is required");
    if (!semver_valid(version))
        return berr_set(BERR_BAD_REQUEST, "Chart.yaml: version '%.130s' is not a SemVer 2 version",
                        version);
    snprintf(info->name, sizeof info->name, "%s", name);
    snprintf(info->version, sizeof info->version, "%s", version);
    snprintf(info->tag, sizeof info->tag, "%s", version);
    for (char *p = info->tag; *p; p++)
        if (*p == '+') *p = '_';
    return 0;
}

void helm_chart_info_free(helm_chart_info *info)
{
    json_decref(info->meta);
    info->meta = NULL;
}

/* ---- archives ---- */

int helm_chart_inspect(int fd, int64_t max_uncompressed, helm_chart_info *info)
{
    memset(info, 0, sizeof *info);
    tar_scan_opts o = {.what = "chart archive",
                       .max_uncompressed = max_uncompressed,
                       .capture = "Chart.yaml",
                       .capture_max = CHART_YAML_MAX};
    int rc = tar_scan(fd, &o);
    if (rc < 0) return rc;
    if (!o.captured)
        rc = berr_set(BERR_BAD_REQUEST, "chart archive: no Chart.yaml in '%s/'", o.top);
    if (rc == 0) rc = yamlj_parse(o.captured, o.captured_len, "Chart.yaml", &info->meta);
    tar_scan_free(&o);
    if (rc == 0) rc = helm_chart_check_meta(info->meta, info);
    if (rc < 0) helm_chart_info_free(info);
    return rc;
}

/* ---- storing ---- */

void helm_now_rfc3339(char *out, size_t len)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, len, "%s.%09ldZ", base, ts.tv_nsec);
}

void helm_repo_name(const config *cfg, const char *tenant, const char *name, char *out,
                    size_t outlen)
{
    if (tenant && *tenant)
        snprintf(out, outlen, "%s/%s/%s", cfg->helm.oci_prefix, tenant, name);
    else
        snprintf(out, outlen, "%s/%s", cfg->helm.oci_prefix, name);
}

void helm_entry_free(helm_entry *e)
{
    free(e->json);
    free(e->yaml);
    e->json = e->yaml = NULL;
}

/* The index entry: the chart's metadata plus urls, created and digest (hex of the .tgz), as JSON
 * and as the index.yaml text it is written as (rendered once, here, not per index build). */
static int make_entry(json_t *meta, const helm_chart_info *ci, const char *chart_digest,
                      const char *created, helm_entry *out)
{
    memset(out, 0, sizeof *out);
    json_t *e = json_deep_copy(meta);
    if (!e) return berr_set(BERR_INTERNAL, "out of memory");
    char url[300];
    snprintf(url, sizeof url, "charts/%s-%s.tgz", ci->name, ci->version);
    json_object_set_new(e, "urls", json_pack("[s]", url));
    json_object_set_new(e, "created", json_string(created));
    json_object_set_new(e, "digest", json_string(digest_hex(chart_digest)));
    out->json = json_dumps(e, JSON_COMPACT | JSON_SORT_KEYS);
    strbuf b = {0};
    helm_yaml_entry(&b, e);
    json_decref(e);
    out->yaml = b.buf;
    snprintf(out->tag, sizeof out->tag, "%s", ci->tag);
    if (!out->json || b.oom || !out->yaml) {
        helm_entry_free(out);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    return 0;
}

char *helm_chart_manifest(const helm_chart_info *ci, const char *chart_digest, uint64_t chart_size,
                          const char *cfg_digest, size_t cfg_len, const char *prov_digest,
                          size_t prov_len, const char *created)
{
    json_t *layers = json_pack("[{s:s,s:s,s:I}]", "mediaType", HELM_MT_CHART, "digest",
                               chart_digest, "size", (json_int_t)chart_size);
    if (prov_digest)
        json_array_append_new(layers,
                              json_pack("{s:s,s:s,s:I}", "mediaType", HELM_MT_PROV, "digest",
                                        prov_digest, "size", (json_int_t)prov_len));
    json_t *ann = json_pack("{s:s,s:s,s:s}", "org.opencontainers.image.created", created,
                            "org.opencontainers.image.title", ci->name,
                            "org.opencontainers.image.version", ci->version);
    const char *desc = json_string_value(json_object_get(ci->meta, "description"));
    if (desc) json_object_set_new(ann, "org.opencontainers.image.description", json_string(desc));
    json_t *man = json_pack("{s:i,s:s,s:{s:s,s:s,s:I},s:o,s:o}", "schemaVersion", 2, "mediaType",
                            "application/vnd.oci.image.manifest.v1+json", "config", "mediaType",
                            HELM_MT_CONFIG, "digest", cfg_digest, "size", (json_int_t)cfg_len,
                            "layers", layers, "annotations", ann);
    char *content = man ? json_dumps(man, JSON_COMPACT) : NULL;
    json_decref(man);
    return content;
}

/* The tags that must not exist when ci is stored in repo: its own (unless overwriting), and
 * those of every other chart whose download file "<name>-<version>.tgz" would be the same name
 * ("web-1.0.0" 0.0.0 against "web" 1.0.0-0.0.0). */
typedef struct {
    char repos[HELM_FILE_CHARTS + 1][512], tags[HELM_FILE_CHARTS + 1][HELM_VERSION_MAX + 1];
    const char *rp[HELM_FILE_CHARTS + 1], *tp[HELM_FILE_CHARTS + 1];
    size_t n;
} absent_set;

static void chart_absent(const helm_store_req *q, absent_set *a)
{
    const helm_chart_info *ci = q->info;
    a->n = 0;
    size_t rl = strlen(q->repo), nl = strlen(ci->name);
    if (rl < nl) return;
    int plen = (int)(rl - nl); /* the repository prefix (helm.ocirepository and tenant) */
    if (!q->overwrite) {
        snprintf(a->repos[a->n], sizeof a->repos[0], "%s", q->repo);
        snprintf(a->tags[a->n], sizeof a->tags[0], "%s", ci->tag);
        a->n++;
    }
    char base[HELM_NAME_MAX + HELM_VERSION_MAX + 2];
    snprintf(base, sizeof base, "%s-%s", ci->name, ci->version);
    helm_file_chart c[HELM_FILE_CHARTS];
    size_t n = helm_file_charts(base, c, HELM_FILE_CHARTS);
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(c[i].name, ci->name)) continue; /* this chart itself */
        snprintf(a->repos[a->n], sizeof a->repos[0], "%.*s%s", plen, q->repo, c[i].name);
        snprintf(a->tags[a->n], sizeof a->tags[0], "%s", c[i].tag);
        a->n++;
    }
    for (size_t i = 0; i < a->n; i++) {
        a->rp[i] = a->repos[i];
        a->tp[i] = a->tags[i];
    }
}

int helm_chart_store(store *s, const helm_store_req *q)
{
    const helm_chart_info *ci = q->info;
    absent_set absent;
    chart_absent(q, &absent);
    char *cfg_json = json_dumps(ci->meta, JSON_COMPACT);
    if (!cfg_json) return berr_set(BERR_INTERNAL, "out of memory");
    /* the .tgz, config and .prov are recorded in the manifest's own transaction: one commit */
    store_new_blob nb[3];
    size_t nnb = 0;
    if (q->chart_new) {
        snprintf(nb[0].digest, sizeof nb[0].digest, "%s", q->chart_digest);
        nb[0].size = q->chart_size;
        nnb = 1;
    }
    size_t cfg_len = strlen(cfg_json);
    store_new_blob *cfgb = &nb[nnb++], *provb = NULL;
    int rc = store_blob_place_mem(s, cfg_json, cfg_len, cfgb);
    free(cfg_json);
    if (rc == 0 && q->prov) {
        provb = &nb[nnb++];
        rc = store_blob_place_mem(s, q->prov, q->prov_len, provb);
    }
    if (rc < 0) return rc;
    char created[64];
    if (q->created)
        snprintf(created, sizeof created, "%s", q->created);
    else
        helm_now_rfc3339(created, sizeof created);
    char *content = helm_chart_manifest(ci, q->chart_digest, q->chart_size, cfgb->digest, cfg_len,
                                        provb ? provb->digest : NULL, q->prov_len, created);
    helm_entry entry;
    rc = content ? make_entry(ci->meta, ci, q->chart_digest, created, &entry)
                 : berr_set(BERR_INTERNAL, "out of memory");
    if (rc < 0) {
        free(content);
        return rc;
    }
    size_t len = strlen(content);
    char digest[DIGEST_STR_MAX];
    digest_buf(DIGEST_SHA256, content, len, digest);
    const char *tags[1] = {ci->tag};
    ingest_req in = {.source = q->mirrored ? INGEST_HELM_MIRROR : INGEST_HELM_UPLOAD,
                     .repo = q->repo,
                     .content = content,
                     .len = len,
                     .digest = digest,
                     .tags = tags,
                     .ntags = 1,
                     .mirrored = q->mirrored,
                     .new_blobs = nb,
                     .nnew_blobs = nnb,
                     .absent_repos = absent.rp,
                     .absent_tags = absent.tp,
                     .nabsent = absent.n,
                     .chart_tag = ci->tag,
                     .chart_entry = entry.json,
                     .chart_yaml = entry.yaml};
    if (q->mirrored) store_repo_mark_mirror(s, q->repo);
    rc = ingest_manifest(s, q->cfg, &in, NULL);
    if (rc == -BERR_CONFLICT) {
        char why[300];
        snprintf(why, sizeof why, "%s", berr_msg());
        rc = berr_set(BERR_CONFLICT, "file already exists (%s)", why);
    }
    free(content);
    helm_entry_free(&entry);
    return rc;
}

/* ---- finding stored charts ---- */

size_t helm_file_charts(const char *base, helm_file_chart *out, size_t max)
{
    size_t n = strlen(base), k = 0;
    for (size_t i = 1; i + 1 < n && k < max; i++) {
        if (base[i] != '-' || i > HELM_NAME_MAX || n - i - 1 > HELM_VERSION_MAX) continue;
        helm_file_chart *c = &out[k];
        memcpy(c->name, base, i);
        c->name[i] = '\0';
        snprintf(c->tag, sizeof c->tag, "%s", base + i + 1);
        if (!helm_name_valid(c->name) || !semver_valid(c->tag)) continue;
        for (char *p = c->tag; *p; p++)
            if (*p == '+') *p = '_';
        k++;
    }
    return k;
}

int helm_chart_find(store *s, const config *cfg, const char *tenant, const char *base, char *repo,
                    size_t repolen, store_manifest *m)
{
    helm_file_chart c[HELM_FILE_CHARTS];
    size_t n = helm_file_charts(base, c, HELM_FILE_CHARTS);
    for (size_t i = 0; i < n; i++) {
        helm_repo_name(cfg, tenant, c[i].name, repo, repolen);
        if (store_manifest_get(s, repo, c[i].tag, m) == 0) return 0;
    }
    return berr_set(BERR_NOT_FOUND, "chart %.200s not found", base);
}

int helm_manifest_layer(const store_manifest *m, const char *mt, char *digest, uint64_t *size)
{
    json_t *j = json_loadb(m->content, m->size, 0, NULL), *l;
    size_t i;
    int rc = -BERR_NOT_FOUND;
    json_array_foreach(json_object_get(j, "layers"), i, l)
    {
        const char *lmt = json_string_value(json_object_get(l, "mediaType"));
        const char *d = json_string_value(json_object_get(l, "digest"));
        if (lmt && d && !strcmp(lmt, mt)) {
            snprintf(digest, DIGEST_STR_MAX, "%s", d);
            if (size) *size = (uint64_t)json_integer_value(json_object_get(l, "size"));
            rc = 0;
            break;
        }
    }
    json_decref(j);
    return rc;
}

/* ---- charts pushed over OCI ---- */

int helm_oci_entry(store *s, const config *cfg, const char *repo, const char *content, size_t len,
                   helm_entry *e)
{
    memset(e, 0, sizeof *e);
    if (!cfg->helm.enabled) return 0;
    size_t pl = strlen(cfg->helm.oci_prefix);
    if (strncmp(repo, cfg->helm.oci_prefix, pl) != 0 || repo[pl] != '/') return 0;
    int slashes = 0;
    for (const char *p = repo + pl + 1; *p; p++)
        slashes += *p == '/';
    if (slashes != cfg->helm.depth) return 0;
    const char *name = strrchr(repo, '/') + 1;
    json_t *man = json_loadb(content, len, 0, NULL);
    const char *cfg_mt =
        json_string_value(json_object_get(json_object_get(man, "config"), "mediaType"));
    const char *cfg_digest =
        json_string_value(json_object_get(json_object_get(man, "config"), "digest"));
    const char *chart_digest = NULL, *created = NULL;
    json_t *layers = json_object_get(man, "layers"), *l;
    size_t i;
    json_array_foreach(layers, i, l)
    {
        const char *mt = json_string_value(json_object_get(l, "mediaType"));
        if (mt && !strcmp(mt, HELM_MT_CHART))
            chart_digest = json_string_value(json_object_get(l, "digest"));
    }
    created = json_string_value(
        json_object_get(json_object_get(man, "annotations"), "org.opencontainers.image.created"));
    int rc = 0;
    if (!cfg_mt || strcmp(cfg_mt, HELM_MT_CONFIG) || !cfg_digest || !chart_digest ||
        strncmp(chart_digest, "sha256:", 7))
        goto out;
    store_blob b;
    if (store_blob_open(s, repo, cfg_digest, &b) < 0) goto out; /* the put reports it */
    char *buf = NULL;
    if (b.size <= CHART_YAML_MAX) {
        buf = malloc(b.size + 1);
        if (buf && b.fd >= 0) {
            if (pread(b.fd, buf, b.size, (off_t)b.offset) != (ssize_t)b.size) {
                free(buf);
                buf = NULL;
            }
        } else if (buf) {
            memcpy(buf, b.mem, b.size);
        }
    }
    size_t blen = b.size;
    store_blob_release(&b);
    if (!buf) goto out;
    json_t *meta = json_loadb(buf, blen, 0, NULL);
    free(buf);
    helm_chart_info ci = {.meta = meta};
    if (!json_is_object(meta) || helm_chart_check_meta(meta, &ci) < 0 || strcmp(ci.name, name)) {
        log_warn("msg=\"helm chart pushed over OCI not indexed\" repo=%s reason=\"%s\"", repo,
                 json_is_object(meta) ? berr_msg() : "config is not a JSON object");
        berr_clear();
        json_decref(meta);
        goto out;
    }
    char now[64];
    if (!created) helm_now_rfc3339(now, sizeof now);
    rc = make_entry(meta, &ci, chart_digest, created ? created : now, e);
    json_decref(meta);
out:
    json_decref(man);
    return rc;
}

/* The ingest hook: a Helm chart pushed over OCI (or arriving by any other path) into a chart
 * repository is indexed in index.yaml too; charts stored through the chart API come with their
 * entry already made. */
static int helm_ingest_hook(ingest_ctx *c, void *arg)
{
    (void)arg;
    if (c->put->chart_entry) return 0;
    helm_entry e;
    int rc = helm_oci_entry(c->st, c->cfg, c->in->repo, c->in->content, c->in->len, &e);
    if (rc < 0 || !e.json) {
        helm_entry_free(&e);
        return rc;
    }
    char *tag = strdup(e.tag);
    if (!tag) {
        helm_entry_free(&e);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    c->put->chart_tag = tag;
    c->put->chart_entry = e.json;
    c->put->chart_yaml = e.yaml;
    ingest_defer_free(c, tag);
    ingest_defer_free(c, e.json);
    ingest_defer_free(c, e.yaml);
    return 0;
}

void helm_ingest_register(void)
{
    ingest_hook_add(INGEST_VALIDATE, 200, "helm", helm_ingest_hook, NULL);
}
