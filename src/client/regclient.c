/*
 * client/regclient: see regclient.h. One request per call, no retries beyond the Bearer sign-in
 * that proxy/upstream does; every body received is checked against the digest it was asked by.
 */
#include "client/regclient.h"
#include "util/strbuf.h"
#include "margo/images.h"
#include "registry/registry.h"
#include "util/err.h"
#include "util/ref.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MANIFEST_ACCEPT                                                                            \
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "        \
    "application/vnd.docker.distribution.manifest.list.v2+json, "                                  \
    "application/vnd.docker.distribution.manifest.v2+json"

void rc_client(const rc_opts *o, config_mirror *m)
{
    memset(m, 0, sizeof *m);
    m->name = "client";
    m->connect_ms = 10000;
    m->transfer_ms = 600000;
    static char u[256], pw[256];
    const char *cred = o && o->user ? o->user : getenv("BERTH_REGISTRY_USER");
    if (!cred) return;
    const char *c = o && o->user ? strchr(o->user, ':') : NULL;
    snprintf(u, sizeof u, "%.*s", c ? (int)(c - cred) : (int)strlen(cred), cred);
    const char *env = getenv("BERTH_REGISTRY_PASSWORD");
    snprintf(pw, sizeof pw, "%s", c ? c + 1 : env ? env : "");
    m->username = u;
    m->password = pw;
}

/* Splits "repo[:tag][@digest]" (no host) into r->repo and r->ref. */
static int split_ref(const char *s, const char *what, rc_ref *r)
{
    const char *at = strchr(s, '@');
    const char *colon = strrchr(s, ':');
    if (at && colon > at) colon = NULL;
    if (colon && strchr(colon, '/')) colon = NULL;
    size_t n = at ? (size_t)(at - s) : colon ? (size_t)(colon - s) : strlen(s);
    if (colon && (!at || colon < at)) n = (size_t)(colon - s);
    if (n >= sizeof r->repo) return berr_set(BERR_CONFIG, "reference '%s': name too long", what);
    memcpy(r->repo, s, n);
    r->repo[n] = '\0';
    if (at)
        snprintf(r->ref, sizeof r->ref, "%s", at + 1);
    else if (colon)
        snprintf(r->ref, sizeof r->ref, "%s", colon + 1);
    if (!ref_name_valid(r->repo))
        return berr_set(BERR_CONFIG, "reference '%s': invalid repository name", what);
    if (r->ref[0] && !(at ? digest_parse(r->ref, NULL) == 0 : ref_tag_valid(r->ref)))
        return berr_set(BERR_CONFIG, "reference '%s': invalid %s", what, at ? "digest" : "tag");
    return 0;
}

int rc_parse(const char *s, const rc_opts *o, rc_ref *r)
{
    memset(r, 0, sizeof *r);
    rc_client(o, &r->m);
    if ((!strncmp(s, "http://", 7) || !strncmp(s, "https://", 8)) && o && o->st)
        return berr_set(BERR_CONFIG,
                        "reference '%s': reading berth's own store takes repository "
                        "names, not URLs",
                        s);
    if (!strncmp(s, "http://", 7) || !strncmp(s, "https://", 8)) {
        const char *p = strstr(s, "://") + 3, *slash = strchr(p, '/');
        if (!slash || slash == p)
            return berr_set(BERR_CONFIG, "reference '%s': host/repository expected", s);
        snprintf(r->base, sizeof r->base, "%.*s", (int)(slash - s), s);
        int rc = split_ref(slash + 1, s, r);
        if (rc < 0) return rc;
        snprintf(r->name, sizeof r->name, "%s", r->repo);
        return 0;
    }
    if (o && o->st) {
        /* a local repository named as given wins over the original-name reading */
        r->st = o->st;
        rc_ref lit;
        memset(&lit, 0, sizeof lit);
        if (split_ref(s, s, &lit) == 0 && store_repo_exists(o->st, lit.repo) == 0) {
            snprintf(r->repo, sizeof r->repo, "%s", lit.repo);
            snprintf(r->ref, sizeof r->ref, "%s", lit.ref);
            snprintf(r->srepo, sizeof r->srepo, "%s", lit.repo);
            snprintf(r->name, sizeof r->name, "%s", lit.repo);
            return 0;
        }
    }
    char norm[1024];
    if (image_ref_normalize(s, norm, sizeof norm) < 0)
        return berr_rewrap(BERR_CONFIG, "reference: ");
    const char *slash = strchr(norm, '/');
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)(slash - norm), norm);
    int rc = split_ref(slash + 1, s, r);
    if (rc < 0) return rc;
    /* image_ref_normalize adds :latest; a reference given without tag keeps "no tag" only for
     * callers that list tags, which none do: keep it */
    snprintf(r->name, sizeof r->name, "%s/%s", host, r->repo);
    if (r->st) {
        ref_store_name(r->name, r->srepo, sizeof r->srepo);
        return 0;
    }
    const char *via = o ? o->via : NULL;
    if (via) {
        snprintf(r->base, sizeof r->base, "%s", via);
        size_t bl = strlen(r->base);
        while (bl && r->base[bl - 1] == '/')
            r->base[--bl] = '\0';
        const char *vh = strstr(r->base, "://");
        vh = vh ? vh + 3 : r->base;
        if (strcmp(vh, host)) snprintf(r->ns, sizeof r->ns, "%s", host);
    } else {
        snprintf(r->base, sizeof r->base, "%s://%s", o && o->plain_http ? "http" : "https",
                 strcmp(host, "docker.io") ? host : "registry-1.docker.io");
    }
    return 0;
}

void rc_url(const rc_ref *r, const char *kind, const char *what, char *out, size_t len)
{
    snprintf(out, len, "%s/v2/%s/%s/%s%s%s%s", r->base, r->repo, kind, what,
             r->ns[0] ? (strchr(what, '?') ? "&" : "?") : "", r->ns[0] ? "ns=" : "", r->ns);
}

static int fail(const char *what, const char *url, int rc, const upstream_resp *resp)
{
    if (rc < 0) return rc;
    if (resp->status == 404) {
        berr code = strstr(url, "/manifests/") ? BERR_MANIFEST_UNKNOWN : BERR_BLOB_UNKNOWN;
        return berr_set(code, "%s: %s: not found", what, url);
    }
    return berr_set(BERR_IO, "%s: %s: HTTP %ld %.300s", what, url, resp->status,
                    resp->body ? resp->body : "");
}

void rc_manifest_free(rc_manifest *m)
{
    free(m->body);
    m->body = NULL;
}

int rc_get_manifest(rc_ref *r, const char *ref, rc_manifest *out)
{
    memset(out, 0, sizeof *out);
    if (!ref) ref = r->ref[0] ? r->ref : "latest";
    if (r->st) {
        store_manifest sm;
        int rc = store_manifest_get(r->st, r->srepo, ref, &sm);
        if (rc < 0) return berr_set((berr)-rc, "%s:%s is not in the store", r->srepo, ref);
        out->body = sm.content;
        out->len = sm.size;
        sm.content = NULL;
        snprintf(out->media_type, sizeof out->media_type, "%s", sm.media_type);
        snprintf(out->digest, sizeof out->digest, "%s", sm.digest);
        store_manifest_free(&sm);
        return 0;
    }
    char url[2048];
    rc_url(r, "manifests", ref, url, sizeof url);
    upstream_resp resp;
    int rc = upstream_send(&r->m, "GET", url, NULL, NULL, 0, MANIFEST_ACCEPT, NULL, NULL, &resp);
    if (rc < 0 || resp.status != 200) {
        rc = fail("manifest", url, rc, &resp);
        upstream_resp_free(&resp);
        return rc;
    }
    out->body = resp.body ? resp.body : strdup("");
    out->len = resp.len;
    resp.body = NULL;
    snprintf(out->media_type, sizeof out->media_type, "%.*s", (int)strcspn(resp.content_type, "; "),
             resp.content_type);
    digest_algo algo = DIGEST_SHA256;
    if (ref_is_digest(ref) && digest_parse(ref, &algo) < 0) algo = DIGEST_SHA256;
    digest_buf(algo, out->body, out->len, out->digest);
    if (ref_is_digest(ref) && strcmp(out->digest, ref)) {
        rc_manifest_free(out);
        return berr_set(BERR_IO, "manifest %s arrived with digest %s: refused", ref, out->digest);
    }
    /* the media type the body declares wins over the Content-Type header */
    json_t *j = json_loadb(out->body, out->len, 0, NULL);
    const char *mt = json_string_value(json_object_get(j, "mediaType"));
    if (mt) snprintf(out->media_type, sizeof out->media_type, "%s", mt);
    json_decref(j);
    return 0;
}

typedef struct {
    upstream_sink sink;
    void *arg;
    digest_ctx ctx;
    uint64_t got;
} verify_sink;

static int verify_cb(void *arg, const char *data, size_t len)
{
    verify_sink *v = arg;
    digest_update(&v->ctx, data, len);
    v->got += len;
    return v->sink ? v->sink(v->arg, data, len) : 0;
}

/* Feeds a blob in berth's own store to the verifying sink. */
static int store_feed(rc_ref *r, const char *digest, verify_sink *v)
{
    store_blob b;
    if (store_blob_open(r->st, r->srepo, digest, &b) < 0)
        return berr_set(BERR_BLOB_UNKNOWN, "%s: blob %s is not in the store", r->srepo, digest);
    int rc = 0;
    if (b.fd < 0) {
        rc = verify_cb(v, b.mem, (size_t)b.size) < 0 ? berr_set(BERR_IO, "write failed") : 0;
    } else {
        char *buf = malloc(1 << 20);
        if (!buf) rc = berr_set(BERR_INTERNAL, "out of memory");
        for (uint64_t pos = 0; rc == 0 && pos < b.size;) {
            size_t want = b.size - pos < (1 << 20) ? (size_t)(b.size - pos) : (1 << 20);
            ssize_t n = pread(b.fd, buf, want, (off_t)(b.offset + pos));
            if (n <= 0)
                rc = berr_set(BERR_IO, "read blob %s", digest);
            else if (verify_cb(v, buf, (size_t)n) < 0)
                rc = berr_set(BERR_IO, "write failed");
            pos += n > 0 ? (uint64_t)n : 0;
        }
        free(buf);
    }
    store_blob_release(&b);
    return rc;
}

int rc_get_blob(rc_ref *r, const char *digest, uint64_t size, upstream_sink sink, void *arg)
{
    digest_algo algo;
    if (digest_parse(digest, &algo) < 0) return berr_set(BERR_IO, "bad digest '%s'", digest);
    verify_sink v = {.sink = sink, .arg = arg};
    digest_init(&v.ctx, algo);
    int rc;
    if (r->st) {
        rc = store_feed(r, digest, &v);
    } else {
        char url[2048];
        rc_url(r, "blobs", digest, url, sizeof url);
        upstream_resp resp;
        rc = upstream_send(&r->m, "GET", url, NULL, NULL, 0, NULL, verify_cb, &v, &resp);
        if (rc < 0 || resp.status != 200) rc = fail("blob", url, rc, &resp);
        upstream_resp_free(&resp);
    }
    char got[DIGEST_STR_MAX];
    digest_final(&v.ctx, got);
    if (rc == 0 && (strcmp(got, digest) || (size && v.got != size)))
        rc = berr_set(BERR_IO, "blob %s arrived with digest %s (%llu bytes): refused", digest, got,
                      (unsigned long long)v.got);
    return rc;
}

typedef struct {
    strbuf b;
    size_t max;
} membuf;

static int mem_cb(void *arg, const char *data, size_t len)
{
    membuf *m = arg;
    if (m->b.len + len > m->max) return -1;
    strbuf_add(&m->b, data, len);
    return m->b.oom ? -1 : 0;
}

int rc_get_blob_mem(rc_ref *r, const char *digest, size_t max, char **out, size_t *len)
{
    membuf m = {.max = max};
    int rc = rc_get_blob(r, digest, 0, mem_cb, &m);
    if (rc < 0) {
        free(m.b.buf);
        return rc;
    }
    *out = m.b.buf ? m.b.buf : strdup("");
    *len = m.b.len;
    return 0;
}

int rc_referrers(rc_ref *r, const char *digest, json_t **out)
{
    if (r->st) {
        store_referrer_list l;
        int rc = store_referrers(r->st, r->srepo, digest, NULL, &l);
        if (rc < 0) {
            *out = json_array(); /* an unknown repository has no referrers */
            return 0;
        }
        *out = reg_referrer_descriptors(&l);
        store_referrer_list_free(&l);
        return 0;
    }
    char url[2048];
    rc_url(r, "referrers", digest, url, sizeof url);
    upstream_resp resp;
    int rc = upstream_send(&r->m, "GET", url, NULL, NULL, 0,
                           "application/vnd.oci.image.index.v1+json", NULL, NULL, &resp);
    json_t *list = NULL;
    if (rc == 0 && resp.status == 200) {
        json_t *j = json_loadb(resp.body ? resp.body : "", resp.len, 0, NULL);
        list = json_incref(json_object_get(j, "manifests"));
        json_decref(j);
    }
    upstream_resp_free(&resp);
    if (rc < 0) return rc;
    *out = json_is_array(list) ? list : json_array();
    if (list && *out != list) json_decref(list);
    return 0;
}

int rc_blob_exists(rc_ref *r, const char *digest)
{
    if (r->st) {
        store_blob b;
        if (store_blob_open(r->st, r->srepo, digest, &b) < 0) return 0;
        store_blob_release(&b);
        return 1;
    }
    char url[2048];
    rc_url(r, "blobs", digest, url, sizeof url);
    upstream_resp resp;
    int rc = upstream_send(&r->m, "HEAD", url, NULL, NULL, 0, NULL, NULL, NULL, &resp);
    upstream_resp_free(&resp);
    if (rc < 0) return rc;
    return resp.status == 200 ? 1 : 0;
}

/* POST an upload session; out receives the absolute URL to PUT to (with digest=). */
static int start_upload(rc_ref *r, const char *digest, char *out, size_t len)
{
    if (r->st) return berr_set(BERR_CONFIG, "writing to the store is not a client operation");
    char url[2048];
    rc_url(r, "blobs", "uploads/", url, sizeof url);
    upstream_resp resp;
    int rc = upstream_send(&r->m, "POST", url, NULL, "", 0, NULL, NULL, NULL, &resp);
    if (rc < 0 || resp.status != 202 || !resp.location[0]) {
        rc = fail("start upload", url, rc, &resp);
        upstream_resp_free(&resp);
        return rc;
    }
    char loc[2048];
    if (resp.location[0] == '/')
        snprintf(loc, sizeof loc, "%s%s", r->base, resp.location);
    else
        snprintf(loc, sizeof loc, "%s", resp.location);
    upstream_resp_free(&resp);
    snprintf(out, len, "%s%sdigest=%s", loc, strchr(loc, '?') ? "&" : "?", digest);
    return 0;
}

int rc_push_blob_mem(rc_ref *r, const void *data, size_t len, char *digest_out)
{
    digest_buf(DIGEST_SHA256, data, len, digest_out);
    int rc = rc_blob_exists(r, digest_out);
    if (rc != 0) return rc < 0 ? rc : 0;
    char url[2600];
    if ((rc = start_upload(r, digest_out, url, sizeof url)) < 0) return rc;
    upstream_resp resp;
    rc = upstream_send(&r->m, "PUT", url, "application/octet-stream", data, len, NULL, NULL, NULL,
                       &resp);
    if (rc < 0 || resp.status != 201) rc = fail("upload blob", url, rc, &resp);
    upstream_resp_free(&resp);
    return rc;
}

int rc_push_blob_stream(rc_ref *r, const char *digest, uint64_t size, upstream_source source,
                        void *arg)
{
    char url[2600];
    int rc = start_upload(r, digest, url, sizeof url);
    if (rc < 0) return rc;
    upstream_resp resp;
    rc = upstream_send_stream(&r->m, "PUT", url, "application/octet-stream", source, arg,
                              (size_t)size, &resp);
    if (rc < 0 || resp.status != 201) rc = fail("upload blob", url, rc, &resp);
    upstream_resp_free(&resp);
    return rc;
}

int rc_put_manifest(rc_ref *r, const char *ref, const char *media_type, const char *body,
                    size_t len)
{
    if (r->st) return berr_set(BERR_CONFIG, "writing to the store is not a client operation");
    char url[2048];
    rc_url(r, "manifests", ref, url, sizeof url);
    upstream_resp resp;
    int rc = upstream_send(&r->m, "PUT", url, media_type, body, len, NULL, NULL, NULL, &resp);
    if (rc < 0 || resp.status != 201) rc = fail("push manifest", url, rc, &resp);
    upstream_resp_free(&resp);
    return rc;
}
