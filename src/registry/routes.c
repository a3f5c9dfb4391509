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

/* The endpoint of r->path; r->name and r->ref filled. An invalid name or an over-long reference
 * is an error whatever the method. */
static int reg_match(http_req *r, int *endpoint)
{
    const char *p = r->path;
    if (strncmp(p, "/v2", 3) != 0) return 0;
    if (!strcmp(p, "/v2") || !strcmp(p, "/v2/")) {
        *endpoint = REG_VERSION;
        return 1;
    }
    if (p[3] != '/') return 0;
    if (r->raw_escaped) goto bad_name;
    const char *rest = p + 4;
    if (!strcmp(rest, "_catalog")) {
        *endpoint = REG_CATALOG;
        return 1;
    }
    size_t len = strlen(rest);
    const char *last = NULL, *end;
    /* /v2/<name>/tags/list */
    if (len > 10 && !strcmp(rest + len - 10, "/tags/list")) {
        end = rest + len - 10;
        if (!set_name(r, rest, (size_t)(end - rest))) goto bad_name;
        *endpoint = REG_TAGS;
        return 1;
    }
    /* /v2/<name>/blobs/uploads/ (also without the trailing slash) and .../uploads/<uuid> */
    if (len > 14 && !strcmp(rest + len - 14, "/blobs/uploads")) {
        end = rest + len - 14;
        last = rest + len;
        *endpoint = REG_UPLOADS;
    } else if ((end = kw_before_last(rest, "uploads", &last)) && end - rest > 6 &&
               !memcmp(end - 6, "/blobs", 6)) {
        end -= 6;
        *endpoint = *last ? REG_UPLOAD : REG_UPLOADS;
    } else if ((end = kw_before_last(rest, "blobs", &last))) {
        *endpoint = REG_BLOB;
    } else if ((end = kw_before_last(rest, "manifests", &last))) {
        *endpoint = REG_MANIFEST;
    } else if ((end = kw_before_last(rest, "referrers", &last))) {
        *endpoint = REG_REFERRERS;
    } else {
        return 0;
    }
    if (!set_name(r, rest, (size_t)(end - rest))) goto bad_name;
    if (strlen(last) >= sizeof r->ref) return berr_set(BERR_NAME_INVALID, "reference too long");
    snprintf(r->ref, sizeof r->ref, "%s", last);
    return 1;
bad_name:
    return berr_set(BERR_NAME_INVALID, "invalid repository name");
}

/* Once the method's route is found: the reference checked for its endpoint, then mirror
 * routing (which may turn r->name into the mirror's local name before access is checked). */
static int reg_prepare(http_req *r, const http_route *rt)
{
    int rc = 0;
    switch (rt->endpoint) {
    case REG_VERSION:
    case REG_CATALOG:
        return 0;
    case REG_BLOB:
    case REG_REFERRERS:
        rc = digest_parse(r->ref, NULL);
        break;
    case REG_MANIFEST:
        if (ref_is_digest(r->ref))
            rc = digest_parse(r->ref, NULL);
        else if (!ref_tag_valid(r->ref)) /* no such manifest can exist: reads answer 404 */
            rc = r->method == M_GET || r->method == M_HEAD
                     ? berr_set(BERR_MANIFEST_UNKNOWN, "manifest unknown (invalid reference)")
                     : berr_set(BERR_MANIFEST_INVALID, "invalid tag");
        break;
    case REG_UPLOAD:
        if (!*r->ref) rc = berr_set(BERR_BLOB_UPLOAD_UNKNOWN, "upload unknown");
        break;
    default:
        break;
    }
    return rc < 0 ? rc : reg_mirror_route(r);
}

const http_router registry_router = {
    .name = "registry", .match = reg_match, .prepare = reg_prepare};

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
