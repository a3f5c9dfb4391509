/*
 * manifest: validation of a pushed manifest (jansson). Accepted: OCI image manifest and index,
 * Docker schema2 manifest and manifest list. The bytes are never re-serialised: parsing only
 * decides whether to accept them and which blobs, child manifests, subject, artifact type and
 * annotations to index.
 */
#include "registry/registry.h"
#include "util/err.h"

#include <jansson.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"

struct reg_manifest_parsed {
    json_t *root;
    char *media_type;
    char *annotations;
    const char **refs; /* blobs then children, pointing into root */
};

void reg_manifest_parsed_free(reg_manifest_parsed *p)
{
    if (!p) return;
    json_decref(p->root);
    free(p->media_type);
    free(p->annotations);
    free(p->refs);
    free(p);
}

/* Media type without parameters ("type; charset=utf-8" -> "type"). */
static char *bare_type(const char *ct)
{
    size_t n = strcspn(ct, ";");
    while (n > 0 && ct[n - 1] == ' ')
        n--;
    char *s = strndup(ct, n);
    return s;
}

static bool is_index(const char *mt)
{
    return !strcmp(mt, MT_OCI_INDEX) || !strcmp(mt, MT_DOCKER_LIST);
}

/* Checks one descriptor; returns its digest or NULL with the error set. */
static const char *descriptor(json_t *d, const char *where, int *rc)
{
    if (!json_is_object(d)) {
        *rc = berr_set(BERR_MANIFEST_INVALID, "%s: descriptor must be an object", where);
        return NULL;
    }
    json_t *mt = json_object_get(d, "mediaType"), *dg = json_object_get(d, "digest"),
           *sz = json_object_get(d, "size");
    if (!json_is_string(mt)) {
        *rc = berr_set(BERR_MANIFEST_INVALID, "%s: mediaType missing", where);
        return NULL;
    }
    if (!json_is_string(dg) || digest_parse(json_string_value(dg), NULL) < 0) {
        *rc = berr_set(BERR_MANIFEST_INVALID, "%s: invalid digest", where);
        return NULL;
    }
    if (!json_is_integer(sz) || json_integer_value(sz) < 0) {
        *rc = berr_set(BERR_MANIFEST_INVALID, "%s: size must be a non-negative integer", where);
        return NULL;
    }
    return json_string_value(dg);
}

/* Layers that live elsewhere (urls, foreign/non-distributable types) need not be in the repo. */
static bool external_layer(json_t *d)
{
    const char *mt = json_string_value(json_object_get(d, "mediaType"));
    json_t *urls = json_object_get(d, "urls");
    return (json_is_array(urls) && json_array_size(urls) > 0) ||
           (mt && (strstr(mt, "foreign") || strstr(mt, "nondistributable")));
}

int reg_manifest_parse(const char *content, size_t len, const char *content_type,
                       store_manifest_put_req *req, reg_manifest_parsed **out)
{
    *out = NULL;
    json_error_t jerr;
    json_t *root = json_loadb(content, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return berr_set(BERR_MANIFEST_INVALID, "invalid JSON: %s", jerr.text);
    reg_manifest_parsed *p = calloc(1, sizeof *p);
    if (!p) {
        json_decref(root);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    p->root = root;
    int rc = 0;
    if (!json_is_object(root)) {
        rc = berr_set(BERR_MANIFEST_INVALID, "manifest must be a JSON object");
        goto fail;
    }
    json_t *sv = json_object_get(root, "schemaVersion");
    if (!json_is_integer(sv) || json_integer_value(sv) != 2) {
        rc = berr_set(BERR_MANIFEST_INVALID, "schemaVersion must be 2");
        goto fail;
    }
    const char *body_mt = json_string_value(json_object_get(root, "mediaType"));
    char *ct = content_type && *content_type ? bare_type(content_type) : NULL;
    if (ct && !strcmp(ct, "application/octet-stream")) { /* generic clients: trust the body */
        free(ct);
        ct = NULL;
    }
    if (ct && body_mt && strcmp(ct, body_mt) != 0) {
        rc = berr_set(BERR_MANIFEST_INVALID, "Content-Type %s does not match mediaType %s", ct,
                      body_mt);
        free(ct);
        goto fail;
    }
    if (ct)
        p->media_type = ct;
    else if (body_mt)
        p->media_type = strdup(body_mt);
    else if (json_object_get(root, "manifests"))
        p->media_type = strdup(MT_OCI_INDEX);
    else
        p->media_type = strdup(MT_OCI_MANIFEST);
    const char *mt = p->media_type;
    if (strcmp(mt, MT_OCI_MANIFEST) && strcmp(mt, MT_OCI_INDEX) && strcmp(mt, MT_DOCKER_MANIFEST) &&
        strcmp(mt, MT_DOCKER_LIST)) {
        rc = berr_set(BERR_MANIFEST_INVALID, "unsupported manifest media type %s", mt);
        goto fail;
    }
    memset(req, 0, sizeof *req);
    req->media_type = mt;
    req->content = content;
    req->size = len;
    json_t *list = json_object_get(root, is_index(mt) ? "manifests" : "layers");
    if (!json_is_array(list)) {
        rc = berr_set(BERR_MANIFEST_INVALID, "%s must be an array",
                      is_index(mt) ? "manifests" : "layers");
        goto fail;
    }
    p->refs = calloc(json_array_size(list) + 1, sizeof *p->refs);
    if (!p->refs) {
        rc = berr_set(BERR_INTERNAL, "out of memory");
        goto fail;
    }
    size_t n = 0;
    if (!is_index(mt)) {
        json_t *cfg = json_object_get(root, "config");
        const char *d = descriptor(cfg, "config", &rc);
        if (!d) goto fail;
        p->refs[n++] = d;
        const char *at = json_string_value(json_object_get(root, "artifactType"));
        req->artifact_type = at ? at : json_string_value(json_object_get(cfg, "mediaType"));
    } else {
        req->artifact_type = json_string_value(json_object_get(root, "artifactType"));
    }
    size_t i;
    json_t *d;
    json_array_foreach(list, i, d)
    {
        const char *dg = descriptor(d, is_index(mt) ? "manifests[]" : "layers[]", &rc);
        if (!dg) goto fail;
        if (!is_index(mt) && external_layer(d)) continue;
        p->refs[n++] = dg;
    }
    if (is_index(mt)) {
        req->children = p->refs;
        req->nchildren = n;
    } else {
        req->blobs = p->refs;
        req->nblobs = n;
    }
    json_t *subject = json_object_get(root, "subject");
    if (subject) {
        req->subject = descriptor(subject, "subject", &rc);
        if (!req->subject) goto fail;
    }
    json_t *ann = json_object_get(root, "annotations");
    if (ann && !json_is_object(ann)) {
        rc = berr_set(BERR_MANIFEST_INVALID, "annotations must be an object");
        goto fail;
    }
    if (ann && json_object_size(ann) > 0) {
        p->annotations = json_dumps(ann, JSON_COMPACT | JSON_SORT_KEYS);
        req->annotations_json = p->annotations;
    }
    *out = p;
    return 0;
fail:
    reg_manifest_parsed_free(p);
    return rc;
}

/* One layer URL against registry:2's rule: http(s), a host, no fragment, allowed, not denied. */
static bool url_allowed(const char *u, const config_validation *v)
{
    const char *host = !strncmp(u, "http://", 7)    ? u + 7
                       : !strncmp(u, "https://", 8) ? u + 8
                                                    : NULL;
    if (!host || !*host || *host == '/' || strchr(u, '#')) return false;
    bool allowed = false;
    for (size_t i = 0; !allowed && i < v->nallow; i++)
        allowed = regexec(&v->allow[i], u, 0, NULL, 0) == 0;
    for (size_t i = 0; allowed && i < v->ndeny; i++)
        allowed = regexec(&v->deny[i], u, 0, NULL, 0) != 0;
    return allowed;
}

int reg_manifest_check_urls(const reg_manifest_parsed *p, const config_validation *v)
{
    if (v->disabled || is_index(p->media_type)) return 0;
    json_t *layers = json_object_get(p->root, "layers"), *d;
    size_t i;
    json_array_foreach(layers, i, d)
    {
        const char *mt = json_string_value(json_object_get(d, "mediaType"));
        json_t *urls = json_object_get(d, "urls"), *u;
        bool foreign = mt && (strstr(mt, "foreign") || strstr(mt, "nondistributable"));
        if (urls && !json_is_array(urls))
            return berr_set(BERR_MANIFEST_INVALID, "layers[%zu]: urls must be an array", i);
        if (foreign && json_array_size(urls) == 0)
            return berr_set(BERR_MANIFEST_INVALID, "layers[%zu]: a %s layer needs urls", i, mt);
        size_t j;
        json_array_foreach(urls, j, u)
        {
            if (!json_is_string(u) || !url_allowed(json_string_value(u), v))
                return berr_set(BERR_MANIFEST_INVALID,
                                "layers[%zu]: URL %.200s not allowed (validation.manifests.urls)",
                                i, json_is_string(u) ? json_string_value(u) : "(not a string)");
        }
    }
    return 0;
}
