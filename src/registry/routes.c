/*
 * routes: /v2/ path dispatch. Repository names may contain the endpoint keywords themselves
 * (`a/blobs/b` is a valid name), so the path is matched from the right: the last components
 * decide the endpoint and everything before them is the name. The name and the reference are
 * validated here against the distribution-spec grammar; a request whose name fails never
 * reaches a handler, let alone the filesystem.
 */
#include "registry/registry.h"
#include "util/digest.h"
#include "util/err.h"
#include "util/ref.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static bool set_name(http_req *r, const char *name, size_t len)
{
    if (len == 0 || len >= sizeof r->name) return false;
    memcpy(r->name, name, len);
    r->name[len] = '\0';
    return ref_name_valid(r->name);
}

static const http_handler *pick(http_req *r, const http_handler *get, const http_handler *put,
                                const http_handler *post, const http_handler *patch,
                                const http_handler *del)
{
    if (r->cfg->read_only && r->method != M_GET && r->method != M_HEAD) return NULL;
    switch (r->method) {
    case M_GET:
    case M_HEAD:
        return get;
    case M_PUT:
        return put;
    case M_POST:
        return post;
    case M_PATCH:
        return patch;
    case M_DELETE:
        return del;
    default:
        return NULL;
    }
}

/* Finds "/<kw>/" as the component right before the last one, or "/<kw>" at the end. */
static const char *kw_before_last(const char *rest, const char *kw, const char **last)
{
    const char *slash = strrchr(rest, '/');
    if (!slash) return NULL;
    size_t kwl = strlen(kw);
    if ((size_t)(slash - rest) < kwl + 1) return NULL;
    const char *kwpos = slash - kwl;
    if (memcmp(kwpos, kw, kwl) != 0 || kwpos[-1] != '/') return NULL;
    *last = slash + 1;
    return kwpos - 1; /* the slash ending the name */
}

bool registry_route(http_req *r)
{
    const char *p = r->path;
    if (strncmp(p, "/v2", 3) != 0) return false;
    if (!strcmp(p, "/v2") || !strcmp(p, "/v2/")) {
        r->h = pick(r, &reg_version_h, NULL, NULL, NULL, NULL);
        return true;
    }
    if (p[3] != '/') return false;
    if (r->raw_escaped) goto bad_name;
    const char *rest = p + 4;
    if (!strcmp(rest, "_catalog")) {
        r->h = pick(r, &reg_catalog_h, NULL, NULL, NULL, NULL);
        return true;
    }
    size_t len = strlen(rest);
    const char *last = NULL, *end;
    const http_handler *h = NULL;
    bool is_ref_digest = false, ref_is_tag_or_digest = false, ref_is_uuid = false;
    /* /v2/<name>/tags/list */
    if (len > 10 && !strcmp(rest + len - 10, "/tags/list")) {
        end = rest + len - 10;
        if (!set_name(r, rest, (size_t)(end - rest))) goto bad_name;
        r->h = pick(r, &reg_tags_h, NULL, NULL, NULL, NULL);
        int rc = r->h ? reg_mirror_route(r) : 0;
        if (rc < 0) {
            r->failed = true;
            http_reply_error(r, rc);
        }
        return true;
    }
    /* /v2/<name>/blobs/uploads/ (also without the trailing slash) and .../uploads/<uuid> */
    if (len > 14 && !strcmp(rest + len - 14, "/blobs/uploads")) {
        end = rest + len - 14;
        last = rest + len;
        if (!set_name(r, rest, (size_t)(end - rest))) goto bad_name;
        h = pick(r, NULL, NULL, &reg_upload_post_h, NULL, NULL);
    } else if ((end = kw_before_last(rest, "uploads", &last)) && end - rest > 6 &&
               !memcmp(end - 6, "/blobs", 6)) {
        end -= 6;
        if (!set_name(r, rest, (size_t)(end - rest))) goto bad_name;
        if (!*last) {
            h = pick(r, NULL, NULL, &reg_upload_post_h, NULL, NULL);
        } else {
            h = pick(r, &reg_upload_get_h, &reg_upload_put_h, NULL, &reg_upload_patch_h,
                     &reg_upload_delete_h);
            ref_is_uuid = true;
        }
    } else if ((end = kw_before_last(rest, "blobs", &last))) {
        h = pick(r, &reg_blob_get_h, NULL, NULL, NULL, &reg_blob_delete_h);
        is_ref_digest = true;
    } else if ((end = kw_before_last(rest, "manifests", &last))) {
        h = pick(r, &reg_manifest_get_h, &reg_manifest_put_h, NULL, NULL, &reg_manifest_delete_h);
        ref_is_tag_or_digest = true;
    } else if ((end = kw_before_last(rest, "referrers", &last))) {
        h = pick(r, &reg_referrers_h, NULL, NULL, NULL, NULL);
        is_ref_digest = true;
    } else {
        return false;
    }
    if (!r->name[0] && !set_name(r, rest, (size_t)(end - rest))) goto bad_name;
    if (strlen(last) >= sizeof r->ref) {
        r->failed = true;
        http_reply_error(r, berr_set(BERR_NAME_INVALID, "reference too long"));
        return true;
    }
    snprintf(r->ref, sizeof r->ref, "%s", last);
    r->h = h;
    if (!h) return true; /* method not allowed */
    int rc = 0;
    if (is_ref_digest) {
        rc = digest_parse(r->ref, NULL);
    } else if (ref_is_tag_or_digest) {
        if (ref_is_digest(r->ref))
            rc = digest_parse(r->ref, NULL);
        else if (!ref_tag_valid(r->ref)) /* no such manifest can exist: reads answer 404 */
            rc = r->method == M_GET || r->method == M_HEAD
                     ? berr_set(BERR_MANIFEST_UNKNOWN, "manifest unknown (invalid reference)")
                     : berr_set(BERR_MANIFEST_INVALID, "invalid tag");
    } else if (ref_is_uuid && !*r->ref) {
        rc = berr_set(BERR_BLOB_UPLOAD_UNKNOWN, "upload unknown");
    }
    if (rc == 0) rc = reg_mirror_route(r);
    if (rc < 0) {
        r->failed = true;
        http_reply_error(r, rc);
    }
    return true;
bad_name:
    r->failed = true;
    http_reply_error(r, berr_set(BERR_NAME_INVALID, "invalid repository name"));
    return true;
}

void reg_location(http_req *r, const char *fmt, ...)
{
    char path[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    if (r->cfg->host) {
        size_t hl = strlen(r->cfg->host);
        while (hl > 0 && r->cfg->host[hl - 1] == '/')
            hl--;
        http_add_headerf(r, "Location", "%.*s%s", (int)hl, r->cfg->host, path);
    } else {
        http_add_header(r, "Location", path);
    }
}
