/*
 * helm/api: the ChartMuseum-compatible HTTP API over the store (same paths, bodies and status
 * codes, so `helm repo add`, helm-push and existing scripts work):
 *
 *   GET|HEAD [/<tenant>]/index.yaml            GET [/<tenant>]/charts/<name>-<version>.tgz[.prov]
 *   POST /api[/<tenant>]/charts (raw .tgz, or multipart fields chart and prov)
 *   POST /api[/<tenant>]/prov                   GET /api[/<tenant>]/charts[?offset=&limit=]
 *   GET|HEAD /api[/<tenant>]/charts/<name>      GET|HEAD|DELETE /api[/<tenant>]/charts/<name>/<ver>
 *   GET|HEAD /<upstream>/index.yaml, /<upstream>/charts/<file>   (mirror.c)
 *
 * <tenant> is exactly helm.depth path components. An upload streams into an upload session of
 * the store (multipart bodies through libmicrohttpd's post processor), is inspected from that
 * file, and only a valid chart is committed; anything refused leaves nothing behind. Errors are
 * {"error":"..."} with ChartMuseum's statuses.
 */
#include "auth/auth.h"
#include "helm/helm.h"
#include "registry/registry.h"
#include "util/err.h"
#include "util/log.h"

#include <microhttpd.h> /* the multipart form parser */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROV_MAX (1u << 20)
#define MAX_COMPS 16

/* ---- responses ---- */

static int reply_json(http_req *r, int status, const char *body)
{
    return http_reply(r, status, "application/json", body, strlen(body));
}

static int reply_buf(http_req *r, int status, strbuf *b)
{
    if (b->oom) {
        free(b->buf);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    int rc = http_reply_owned(r, status, "application/json", b->buf, b->len);
    b->buf = NULL;
    return rc;
}

static const char *tenant_of(http_req *r)
{
    return r->name;
}

/* ---- index.yaml ---- */

static void view_release(void *v)
{
    helm_view_put(v);
}

typedef struct {
    helm_view *v;
    http_iovec *iov;
} filtered;

static void filtered_release(void *p)
{
    filtered *f = p;
    helm_view_put(f->v);
    free(f->iov);
    free(f);
}

/* The charts of a view this caller may pull: the view itself when that is all of them. */
static bool chart_visible(http_req *r, const helm_chart *c)
{
    return c->n == 0 || auth_allowed(r, c->versions[0].repo, CONFIG_PULL);
}

static int index_end(http_req *r)
{
    helm_view *v;
    int rc = helm_view_get(r->store, r->cfg, tenant_of(r), &v);
    if (rc < 0) return rc;
    bool all = true;
    for (size_t i = 0; all && i < v->ncharts; i++)
        all = chart_visible(r, v->charts[i]);
    if (!all) {
        filtered *f = calloc(1, sizeof *f);
        if (f) f->iov = calloc(v->niov, sizeof *f->iov);
        if (!f || !f->iov) {
            free(f);
            helm_view_put(v);
            return berr_set(BERR_INTERNAL, "out of memory");
        }
        f->v = v;
        unsigned n = 1;
        uint64_t len = 0;
        for (size_t i = 0; i < v->ncharts; i++)
            if (chart_visible(r, v->charts[i])) f->iov[n++] = v->iov[i + 1];
        static const char none[] = "apiVersion: v1\nentries: {}\n";
        f->iov[0] = n > 1 ? v->iov[0] : (http_iovec){none, sizeof none - 1};
        f->iov[n++] = v->iov[v->niov - 1];
        for (unsigned i = 0; i < n; i++)
            len += f->iov[i].len;
        return http_reply_iov(r, 200, "application/x-yaml", f->iov, n, len, filtered_release, f);
    }
    /* the view's bytes are sent as they are; the response holds a reference until sent */
    return http_reply_iov(r, 200, "application/x-yaml", v->iov, v->niov, v->yaml_len, view_release,
                          v);
}

/* ---- chart files ---- */

int helm_serve_layer(http_req *r, const char *repo, const char *digest, const char *ct)
{
    store_blob b;
    int rc = store_blob_open_serve(r->store, repo, digest, &b);
    if (rc < 0) return berr_set(BERR_NOT_FOUND, "chart content missing");
    return reg_blob_reply(r, &b, 200, 0, b.size, ct);
}

/* A chart file that is missing or that the caller may not pull: the same answer either way, so
 * it tells nothing about what exists. A signed-in caller gets 404; an anonymous one 401 (sign in)
 * unless anonymous callers could pull a chart of that file name, whose absence is then a 404. */
static int hidden_file(http_req *r, const char *base)
{
    if (!r->cfg->auth.enabled || auth_signed_in(r))
        return berr_set(BERR_NOT_FOUND, "%.200s not found", base);
    helm_file_chart c[HELM_FILE_CHARTS];
    size_t n = helm_file_charts(base, c, HELM_FILE_CHARTS);
    for (size_t i = 0; i < n; i++) {
        char repo[512];
        helm_repo_name(r->cfg, tenant_of(r), c[i].name, repo, sizeof repo);
        if (auth_allowed(r, repo, CONFIG_PULL))
            return berr_set(BERR_NOT_FOUND, "%.200s not found", base);
    }
    return berr_set(BERR_UNAUTHORIZED, "authentication required");
}

static int file_end(http_req *r)
{
    const char *file = r->ref;
    size_t n = strlen(file);
    bool prov = n > 9 && !strcmp(file + n - 9, ".tgz.prov");
    if (!prov && !(n > 4 && !strcmp(file + n - 4, ".tgz")))
        return berr_set(BERR_NOT_FOUND, "no such file");
    char base[300];
    snprintf(base, sizeof base, "%.*s", (int)(n - (prov ? 9 : 4)), file);
    char repo[512], digest[DIGEST_STR_MAX];
    store_manifest m;
    int rc = helm_chart_find(r->store, r->cfg, tenant_of(r), base, repo, sizeof repo, &m);
    if (rc == 0 && !auth_allowed(r, repo, CONFIG_PULL)) {
        store_manifest_free(&m);
        rc = -BERR_NOT_FOUND;
    }
    if (rc < 0) return hidden_file(r, base);
    rc = helm_manifest_layer(&m, prov ? HELM_MT_PROV : HELM_MT_CHART, digest, NULL);
    store_manifest_free(&m);
    if (rc < 0) return berr_set(BERR_NOT_FOUND, "%s not found", file);
    return helm_serve_layer(r, repo, digest,
                            prov ? "application/pgp-signature" : "application/x-tar");
}

/* ---- listings ---- */

static void add_versions(strbuf *b, const helm_chart *c)
{
    strbuf_add(b, "[", 1);
    for (size_t i = 0; i < c->n; i++) {
        if (i) strbuf_add(b, ",", 1);
        strbuf_add(b, c->versions[i].json, strlen(c->versions[i].json));
    }
    strbuf_add(b, "]", 1);
}

static int list_end(http_req *r)
{
    const char *off_s = http_query(r, "offset"), *lim_s = http_query(r, "limit");
    long off = off_s ? strtol(off_s, NULL, 10) : 0, lim = lim_s ? strtol(lim_s, NULL, 10) : -1;
    if (off < 0 || (lim_s && lim < 0))
        return berr_set(BERR_BAD_REQUEST, "offset and limit must be non-negative numbers");
    helm_view *v;
    int rc = helm_view_get(r->store, r->cfg, tenant_of(r), &v);
    if (rc < 0) return rc;
    strbuf b = {0};
    strbuf_add(&b, "{", 1);
    size_t shown = 0;
    for (size_t i = 0, skip = (size_t)off; i < v->ncharts && (lim < 0 || shown < (size_t)lim);
         i++) {
        if (!chart_visible(r, v->charts[i])) continue;
        if (skip) {
            skip--;
            continue;
        }
        json_t *k = json_string(v->charts[i]->name);
        char *ks = json_dumps(k, JSON_ENCODE_ANY);
        json_decref(k);
        if (shown++) strbuf_add(&b, ",", 1);
        strbuf_addf(&b, "%s:", ks ? ks : "\"\"");
        free(ks);
        add_versions(&b, v->charts[i]);
    }
    strbuf_add(&b, "}\n", 2);
    helm_view_put(v);
    return reply_buf(r, 200, &b);
}

/* r->ref: "<name>" or "<name>/<version>" */
static int chart_end(http_req *r)
{
    helm_view *v;
    int rc = helm_view_get(r->store, r->cfg, tenant_of(r), &v);
    if (rc < 0) return rc;
    const helm_chart *c = helm_view_chart(v, r->ref);
    if (!c || !chart_visible(r, c)) {
        helm_view_put(v);
        return berr_set(BERR_NOT_FOUND, "chart not found");
    }
    strbuf b = {0};
    add_versions(&b, c);
    strbuf_add(&b, "\n", 1);
    helm_view_put(v);
    return reply_buf(r, 200, &b);
}

static void split_version(http_req *r, char *name, size_t nl, const char **version)
{
    const char *slash = strchr(r->ref, '/');
    snprintf(name, nl, "%.*s", (int)(slash - r->ref), r->ref);
    *version = slash + 1;
}

/* The view and the version r->ref ("<name>/<version>") names; -BERR_NOT_FOUND when it is not
 * there (or not visible to the caller). The caller puts *v. */
static int find_version(http_req *r, bool latest_ok, helm_view **v, const helm_version **hv)
{
    char name[HELM_NAME_MAX + 1];
    const char *version;
    split_version(r, name, sizeof name, &version);
    int rc = helm_view_get(r->store, r->cfg, tenant_of(r), v);
    if (rc < 0) return rc;
    *hv = helm_view_version(*v, name, version);
    if (!*hv || (!latest_ok && !strcmp(version, "latest")) ||
        !auth_allowed(r, (*hv)->repo, CONFIG_PULL)) {
        helm_view_put(*v);
        return berr_set(BERR_NOT_FOUND, "no chart version found for %s-%.130s", name, version);
    }
    return 0;
}

static int version_end(http_req *r)
{
    helm_view *v;
    const helm_version *hv;
    int rc = find_version(r, true, &v, &hv);
    if (rc < 0) return rc;
    strbuf b = {0};
    strbuf_add(&b, hv->json, strlen(hv->json));
    strbuf_add(&b, "\n", 1);
    helm_view_put(v);
    return reply_buf(r, 200, &b);
}

static int delete_end(http_req *r)
{
    helm_view *v;
    const helm_version *hv;
    int rc = find_version(r, false, &v, &hv);
    if (rc < 0) return rc;
    rc = auth_require(r, hv->repo, CONFIG_DELETE);
    if (rc == 0) rc = store_manifest_delete(r->store, hv->repo, hv->digest);
    helm_view_put(v);
    if (rc == -BERR_MANIFEST_UNKNOWN) return berr_set(BERR_NOT_FOUND, "no chart version found");
    if (rc < 0) return rc;
    return reply_json(r, 200, "{\"deleted\":true}\n");
}

/* ---- uploads ---- */

typedef struct {
    bool prov_only; /* POST /api/prov */
    store_upload *u;
    struct MHD_PostProcessor *pp;
    uint64_t chart_bytes;
    bool chart_seen;
    char *prov;
    size_t prov_len;
    int err;
} up_ctx;

static int prov_add(up_ctx *c, const char *data, size_t len)
{
    if (c->prov_len + len > PROV_MAX)
        return berr_set(BERR_TOO_LARGE, "provenance file larger than 1 MiB");
    char *p = realloc(c->prov, c->prov_len + len + 1);
    if (!p) return berr_set(BERR_INTERNAL, "out of memory");
    memcpy(p + c->prov_len, data, len);
    c->prov = p;
    c->prov_len += len;
    c->prov[c->prov_len] = '\0';
    return 0;
}

static int chart_add(http_req *r, up_ctx *c, const char *data, size_t len)
{
    c->chart_seen = true;
    c->chart_bytes += len;
    if (c->chart_bytes > (uint64_t)r->cfg->helm.max_upload)
        return berr_set(BERR_TOO_LARGE, "chart larger than %lld bytes",
                        (long long)r->cfg->helm.max_upload);
    return len ? store_upload_write(c->u, data, len) : 0;
}

static enum MHD_Result post_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *filename, const char *content_type,
                                 const char *transfer_encoding, const char *data, uint64_t off,
                                 size_t size)
{
    (void)kind;
    (void)filename;
    (void)content_type;
    (void)transfer_encoding;
    (void)off;
    http_req *r = cls;
    up_ctx *c = r->ctx;
    int rc = 0;
    if (!key) return MHD_YES;
    if (!strcmp(key, "chart") && !c->prov_only)
        rc = chart_add(r, c, data, size);
    else if (!strcmp(key, "prov"))
        rc = prov_add(c, data, size);
    if (rc < 0) {
        c->err = rc;
        return MHD_NO;
    }
    return MHD_YES;
}

static int upload_begin(http_req *r, bool prov_only)
{
    /* the chart's repository is only known from its content: a caller who may push nowhere is
     * refused before one byte of the body is read or parsed */
    if (!auth_may_push_somewhere(r))
        return auth_signed_in(r)
                   ? berr_set(BERR_DENIED, "%s may not push charts", auth_user(r))
                   : berr_set(BERR_UNAUTHORIZED, "authentication required to push charts");
    const char *cl = http_header(r, "Content-Length");
    int64_t limit = prov_only ? (int64_t)PROV_MAX * 2 : r->cfg->helm.max_upload + 65536;
    if (cl && strtoll(cl, NULL, 10) > limit)
        return berr_set(BERR_TOO_LARGE, "request body larger than %lld bytes", (long long)limit);
    up_ctx *c = calloc(1, sizeof *c);
    if (!c) return berr_set(BERR_INTERNAL, "out of memory");
    r->ctx = c;
    c->prov_only = prov_only;
    const char *ct = http_header(r, "Content-Type");
    if (ct && !strncasecmp(ct, "multipart/form-data", 19)) {
        c->pp = MHD_create_post_processor(r->conn, 65536, post_iter, r);
        if (!c->pp) return berr_set(BERR_BAD_REQUEST, "malformed multipart/form-data request");
    }
    if (prov_only) return 0;
    char uuid[STORE_UUID_LEN + 1];
    int rc = store_upload_create(r->store, r->cfg->helm.oci_prefix, DIGEST_SHA256, uuid);
    if (rc == 0) rc = store_upload_open(r->store, r->cfg->helm.oci_prefix, uuid, &c->u);
    return rc;
}

static int chart_upload_begin(http_req *r)
{
    return upload_begin(r, false);
}

static int prov_upload_begin(http_req *r)
{
    return upload_begin(r, true);
}

static int upload_data(http_req *r, const char *data, size_t len)
{
    up_ctx *c = r->ctx;
    if (c->pp) {
        if (MHD_post_process(c->pp, data, len) != MHD_YES)
            return c->err ? c->err
                          : berr_set(BERR_BAD_REQUEST, "malformed multipart/form-data request");
        return 0;
    }
    return c->prov_only ? prov_add(c, data, len) : chart_add(r, c, data, len);
}

static bool want_overwrite(http_req *r)
{
    const char *f = http_query(r, "force");
    if (r->cfg->helm.allow_overwrite) return true;
    if (!http_query_has(r, "force")) return false;
    return !f || (strcmp(f, "false") != 0 && strcmp(f, "0") != 0);
}

/* name and version from a provenance file's signed Chart.yaml part. */
static int prov_chart(const char *prov, size_t len, helm_chart_info *ci)
{
    static const char begin[] = "-----BEGIN PGP SIGNED MESSAGE-----";
    const char *p = memmem(prov, len, begin, sizeof begin - 1);
    const char *body = p ? strstr(p, "\n\n") : NULL;
    if (!body) return berr_set(BERR_BAD_REQUEST, "not a provenance file (no signed message)");
    body += 2;
    const char *end = strstr(body, "\n...\n");
    const char *sig = strstr(body, "-----BEGIN PGP SIGNATURE-----");
    if (!end || (sig && sig < end)) end = sig;
    if (!end) return berr_set(BERR_BAD_REQUEST, "not a provenance file (no signature)");
    json_t *meta;
    int rc = yamlj_parse(body, (size_t)(end - body), "provenance file", &meta);
    if (rc < 0) return rc;
    memset(ci, 0, sizeof *ci);
    ci->meta = meta;
    rc = helm_chart_check_meta(meta, ci);
    if (rc < 0) helm_chart_info_free(ci);
    return rc;
}

/* Adds a provenance file to a chart that is already stored. */
static int prov_attach(http_req *r, const char *prov, size_t len, bool overwrite)
{
    helm_chart_info pc;
    int rc = prov_chart(prov, len, &pc);
    if (rc < 0) return rc;
    char repo[512], chart_digest[DIGEST_STR_MAX], prov_digest[DIGEST_STR_MAX];
    helm_repo_name(r->cfg, tenant_of(r), pc.name, repo, sizeof repo);
    if ((rc = auth_require(r, repo, CONFIG_PUSH)) < 0) {
        helm_chart_info_free(&pc);
        return rc;
    }
    store_manifest m;
    rc = store_manifest_get(r->store, repo, pc.tag, &m);
    if (rc < 0) {
        rc = berr_set(BERR_NOT_FOUND,
                      "chart %s-%s not found: upload the chart first, or both together", pc.name,
                      pc.version);
        helm_chart_info_free(&pc);
        return rc;
    }
    uint64_t chart_size = 0;
    bool has_prov = helm_manifest_layer(&m, HELM_MT_PROV, prov_digest, NULL) == 0;
    rc = helm_manifest_layer(&m, HELM_MT_CHART, chart_digest, &chart_size);
    json_t *man = json_loadb(m.content, m.size, 0, NULL);
    const char *cfg_digest =
        json_string_value(json_object_get(json_object_get(man, "config"), "digest"));
    char created[64] = "";
    const char *cr = json_string_value(
        json_object_get(json_object_get(man, "annotations"), "org.opencontainers.image.created"));
    if (cr) snprintf(created, sizeof created, "%s", cr);
    store_manifest_free(&m);
    if (rc == 0 && has_prov && !overwrite) rc = berr_set(BERR_CONFLICT, "file already exists");
    helm_chart_info ci = {0};
    store_blob b = {.fd = -1};
    if (rc == 0 && (!cfg_digest || store_blob_open(r->store, repo, cfg_digest, &b) < 0))
        rc = berr_set(BERR_IO, "chart %s-%s: its metadata is missing", pc.name, pc.version);
    if (rc == 0) {
        char *buf = malloc(b.size + 1);
        if (buf && b.fd >= 0 && pread(b.fd, buf, b.size, (off_t)b.offset) == (ssize_t)b.size)
            ci.meta = json_loadb(buf, b.size, 0, NULL);
        free(buf);
        store_blob_release(&b);
        if (!ci.meta || helm_chart_check_meta(ci.meta, &ci) < 0)
            rc = berr_set(BERR_IO, "chart %s-%s: unreadable metadata", pc.name, pc.version);
    }
    json_decref(man);
    if (rc == 0) {
        helm_store_req q = {.cfg = r->cfg,
                            .repo = repo,
                            .info = &ci,
                            .chart_digest = chart_digest,
                            .chart_size = chart_size,
                            .prov = prov,
                            .prov_len = len,
                            .overwrite = true,
                            .created = created[0] ? created : NULL};
        rc = helm_chart_store(r->store, &q);
    }
    helm_chart_info_free(&ci);
    helm_chart_info_free(&pc);
    return rc;
}

static int upload_end(http_req *r)
{
    up_ctx *c = r->ctx;
    if (c->pp) {
        enum MHD_Result ok = MHD_destroy_post_processor(c->pp);
        c->pp = NULL;
        if (c->err) return c->err;
        if (ok != MHD_YES)
            return berr_set(BERR_BAD_REQUEST, "truncated multipart/form-data request");
    }
    bool overwrite = want_overwrite(r);
    if (c->prov_only) {
        if (!c->prov_len) return berr_set(BERR_BAD_REQUEST, "no provenance file in the request");
        int rc = prov_attach(r, c->prov, c->prov_len, overwrite);
        return rc < 0 ? rc : reply_json(r, 201, "{\"saved\":true}\n");
    }
    if (!c->chart_bytes) return berr_set(BERR_BAD_REQUEST, "no chart in the request");
    int rc = store_upload_flush(c->u); /* the reader sees what is in the file */
    int fd = rc < 0 ? rc : store_upload_reader(c->u);
    if (fd < 0) return fd;
    helm_chart_info ci;
    rc = helm_chart_inspect(fd, r->cfg->helm.max_uncompressed, &ci);
    close(fd);
    if (rc < 0) return rc;
    char repo[512], digest[DIGEST_STR_MAX];
    helm_repo_name(r->cfg, tenant_of(r), ci.name, repo, sizeof repo);
    if ((rc = auth_require(r, repo, CONFIG_PUSH)) < 0) {
        helm_chart_info_free(&ci);
        return rc;
    }
    store_manifest old;
    if (!overwrite && store_manifest_get(r->store, repo, ci.tag, &old) == 0) {
        store_manifest_free(&old);
        rc = berr_set(BERR_CONFLICT, "file already exists");
    }
    store_new_blob nb;
    if (rc == 0) rc = store_upload_digest(c->u, digest);
    if (rc == 0) {
        rc = store_upload_place(c->u, digest, &nb);
        if (rc == 0) {
            store_upload_close(c->u);
            c->u = NULL;
        }
    }
    if (rc == 0) {
        helm_store_req q = {.cfg = r->cfg,
                            .repo = repo,
                            .info = &ci,
                            .chart_digest = digest,
                            .chart_size = c->chart_bytes,
                            .chart_new = true,
                            .prov = c->prov,
                            .prov_len = c->prov_len,
                            .overwrite = overwrite};
        rc = helm_chart_store(r->store, &q);
    }
    if (rc == 0)
        log_info("msg=\"chart saved\" repo=%s version=%s digest=%s", repo, ci.version, digest);
    helm_chart_info_free(&ci);
    return rc < 0 ? rc : reply_json(r, 201, "{\"saved\":true}\n");
}

static void upload_cleanup(http_req *r)
{
    up_ctx *c = r->ctx;
    if (!c) return;
    if (c->pp) MHD_destroy_post_processor(c->pp);
    if (c->u) {
        store_upload_cancel(c->u); /* anything not committed leaves nothing behind */
        store_upload_close(c->u);
    }
    free(c->prov);
    free(c);
    r->ctx = NULL;
}

/* ---- upstream mirrors ---- */

/* The router matched an upstream: r->name is its name. */
static int mirror_index_end(http_req *r)
{
    const config_mirror *up = helm_upstream_find(r->cfg, r->name);
    if (!up) return berr_set(BERR_NOT_FOUND, "no such chart repository");
    char repo[512];
    helm_repo_name(r->cfg, "", up->name, repo, sizeof repo);
    int rc = auth_require(r, repo, CONFIG_PULL);
    return rc < 0 ? rc : helm_mirror_index(r, up);
}

static int mirror_file_end(http_req *r)
{
    const config_mirror *up = helm_upstream_find(r->cfg, r->name);
    if (!up) return berr_set(BERR_NOT_FOUND, "no such chart repository");
    return helm_mirror_chart(r, up, r->ref);
}

const http_handler helm_index_h = {.end = index_end, .offload = true};
const http_handler helm_file_h = {.end = file_end, .offload = true};
const http_handler helm_list_h = {.end = list_end, .offload = true};
const http_handler helm_chart_h = {.end = chart_end, .offload = true};
const http_handler helm_version_h = {.end = version_end, .offload = true};
const http_handler helm_delete_h = {.end = delete_end, .offload = true};
const http_handler helm_upload_h = {.begin = chart_upload_begin,
                                    .data = upload_data,
                                    .end = upload_end,
                                    .cleanup = upload_cleanup,
                                    .offload = true};
const http_handler helm_prov_h = {.begin = prov_upload_begin,
                                  .data = upload_data,
                                  .end = upload_end,
                                  .cleanup = upload_cleanup,
                                  .offload = true};
const http_handler helm_up_index_h = {
    .end = mirror_index_end, .cleanup = helm_mirror_cleanup, .offload = true};
const http_handler helm_up_file_h = {
    .end = mirror_file_end, .cleanup = helm_mirror_cleanup, .offload = true};

/* ---- routing ---- */

static bool join(char **comps, int from, int n, char *out, size_t outlen)
{
    size_t len = 0;
    out[0] = '\0';
    for (int i = from; i < from + n; i++) {
        if (!helm_name_valid(comps[i])) return false;
        int w = snprintf(out + len, outlen - len, "%s%s", len ? "/" : "", comps[i]);
        if (w < 0 || (size_t)w >= outlen - len) return false;
        len += (size_t)w;
    }
    return true;
}

/* The endpoint of r->path (helm.depth components name the area, or the upstream chart
 * repository); r->name and r->ref filled. */
static int helm_match(http_req *r, int *endpoint)
{
    const config_helm *hc = &r->cfg->helm;
    if (!hc->enabled || r->path[0] != '/' || r->raw_escaped) return 0;
    char path[1024];
    if (strlen(r->path) >= sizeof path) return 0;
    snprintf(path, sizeof path, "%s", r->path + 1);
    char *comps[MAX_COMPS];
    int n = 0;
    for (char *save = NULL, *t = strtok_r(path, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (n == MAX_COMPS) return 0;
        comps[n++] = t;
    }
    if (n == 0) return 0;
    int d = hc->depth;
    bool matched = false;
    if (!strcmp(comps[0], "api") && n >= 2 + d) {
        if (!join(comps, 1, d, r->name, sizeof r->name)) return 0;
        int k = 1 + d; /* "charts" or "prov" */
        int rest = n - k - 1;
        if (!strcmp(comps[k], "prov") && rest == 0) {
            matched = true;
            *endpoint = HELM_PROV;
        } else if (!strcmp(comps[k], "charts") && rest >= 0 && rest <= 2) {
            matched = true;
            if (rest >= 1 && !helm_name_valid(comps[k + 1])) return 0;
            *endpoint = rest == 0 ? HELM_CHARTS : rest == 1 ? HELM_CHART : HELM_VERSION;
            if (rest == 1) snprintf(r->ref, sizeof r->ref, "%s", comps[k + 1]);
            if (rest == 2) {
                if (strlen(comps[k + 2]) > HELM_VERSION_MAX) return 0;
                snprintf(r->ref, sizeof r->ref, "%s/%s", comps[k + 1], comps[k + 2]);
            }
        }
    }
    if (!matched && n >= 2) {
        const config_mirror *up = helm_upstream_find(r->cfg, comps[0]);
        if (up && n == 2 && !strcmp(comps[1], "index.yaml")) {
            matched = true;
            snprintf(r->name, sizeof r->name, "%s", up->name);
            *endpoint = HELM_UP_INDEX;
        } else if (up && n == 3 && !strcmp(comps[1], "charts")) {
            matched = true;
            snprintf(r->name, sizeof r->name, "%s", up->name);
            snprintf(r->ref, sizeof r->ref, "%s", comps[2]);
            *endpoint = HELM_UP_FILE;
        }
    }
    if (!matched && n == d + 1 && !strcmp(comps[d], "index.yaml")) {
        if (!join(comps, 0, d, r->name, sizeof r->name)) return 0;
        matched = true;
        *endpoint = HELM_INDEX;
    }
    if (!matched && n == d + 2 && !strcmp(comps[d], "charts")) {
        if (!join(comps, 0, d, r->name, sizeof r->name)) return 0;
        matched = true;
        snprintf(r->ref, sizeof r->ref, "%s", comps[d + 1]);
        *endpoint = HELM_FILE;
    }
    if (!matched) {
        r->name[0] = r->ref[0] = '\0';
        return 0;
    }
    return 1;
}

const http_router helm_router = {.name = "helm", .match = helm_match, .plain_errors = true};
