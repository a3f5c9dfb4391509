/*
 * lists: /v2/ (version check), tags list, catalog and referrers. Listings come sorted from the
 * metadata store (byte order) and paginate with n/last and an RFC 8288 Link header.
 */
#include "auth/auth.h"
#include "registry/registry.h"
#include "util/err.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT_N 10000

static int version_end(http_req *r)
{
    return http_reply(r, 200, "application/json", "{}", 2);
}

/* n from the query: absent -> default; invalid -> error. */
static int page_size(http_req *r, long *n)
{
    const char *s = http_query(r, "n");
    *n = LIST_DEFAULT_N;
    if (!s) return 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0) return berr_set(BERR_PAGINATION_NUMBER_INVALID, "invalid n: %s", s);
    *n = v > LIST_DEFAULT_N ? LIST_DEFAULT_N : v;
    return 0;
}

static int reply_json(http_req *r, json_t *obj, const char *ct)
{
    char *body = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!body) return berr_set(BERR_INTERNAL, "out of memory");
    return http_reply_owned(r, 200, ct, body, strlen(body));
}

static json_t *string_array(const store_list *l)
{
    json_t *a = json_array();
    for (size_t i = 0; i < l->n; i++)
        json_array_append_new(a, json_string(l->items[i]));
    return a;
}

static int tags_end(http_req *r)
{
    long n;
    int rc = page_size(r, &n);
    if (rc < 0) return rc;
    store_list l;
    rc = store_tags_list(r->store, r->name, http_query(r, "last"), n, &l);
    if (rc < 0) return rc;
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(r->name));
    json_object_set_new(o, "tags", string_array(&l));
    rc = reply_json(r, o, "application/json");
    if (rc == 0 && l.more && l.n > 0)
        http_add_headerf(r, "Link", "</v2/%s/tags/list?last=%s&n=%ld>; rel=\"next\"", r->name,
                         l.items[l.n - 1], n);
    store_list_free(&l);
    return rc;
}

static int catalog_end(http_req *r)
{
    long n;
    int rc = page_size(r, &n);
    if (rc < 0) return rc;
    /* a caller sees only the repositories it may pull: pages are read from the store until n
     * visible names are found, and the next page starts after the last name shown, so neither
     * the body nor the Link header ever names a hidden repository */
    store_list out = {0};
    char *cursor = http_query(r, "last") ? strdup(http_query(r, "last")) : NULL;
    bool more = true;
    while (rc == 0 && more && (long)out.n < n) {
        store_list l;
        rc = store_catalog(r->store, cursor, n - (long)out.n, &l);
        if (rc < 0) break;
        more = l.more && l.n > 0;
        if (l.n) {
            free(cursor);
            cursor = strdup(l.items[l.n - 1]);
        }
        for (size_t i = 0; i < l.n; i++) {
            if (!auth_allowed(r, l.items[i], CONFIG_PULL)) continue;
            char **grown = realloc(out.items, (out.n + 1) * sizeof *grown);
            if (!grown) {
                rc = berr_set(BERR_INTERNAL, "out of memory");
                break;
            }
            out.items = grown;
            out.items[out.n++] = l.items[i];
            l.items[i] = NULL;
        }
        store_list_free(&l);
    }
    free(cursor);
    if (rc < 0) {
        store_list_free(&out);
        return rc;
    }
    json_t *o = json_object();
    json_object_set_new(o, "repositories", string_array(&out));
    rc = reply_json(r, o, "application/json");
    if (rc == 0 && more && out.n)
        http_add_headerf(r, "Link", "</v2/_catalog?last=%s&n=%ld>; rel=\"next\"",
                         out.items[out.n - 1], n);
    store_list_free(&out);
    return rc;
}

json_t *reg_referrer_descriptors(const store_referrer_list *l)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < l->n; i++) {
        const store_referrer *it = &l->items[i];
        json_t *d = json_object();
        json_object_set_new(d, "mediaType", json_string(it->media_type));
        json_object_set_new(d, "digest", json_string(it->digest));
        json_object_set_new(d, "size", json_integer((json_int_t)it->size));
        if (it->artifact_type)
            json_object_set_new(d, "artifactType", json_string(it->artifact_type));
        if (it->annotations_json) {
            json_t *ann = json_loads(it->annotations_json, 0, NULL);
            if (ann) json_object_set_new(d, "annotations", ann);
        }
        json_array_append_new(arr, d);
    }
    return arr;
}

static int referrers_end(http_req *r)
{
    const char *atype = http_query(r, "artifactType");
    store_referrer_list l;
    int rc = store_referrers(r->store, r->name, r->ref, atype, &l);
    if (rc < 0) return rc;
    json_t *idx = json_object();
    json_object_set_new(idx, "schemaVersion", json_integer(2));
    json_object_set_new(idx, "mediaType", json_string("application/vnd.oci.image.index.v1+json"));
    json_t *arr = reg_referrer_descriptors(&l);
    json_object_set_new(idx, "manifests", arr);
    store_referrer_list_free(&l);
    rc = reply_json(r, idx, "application/vnd.oci.image.index.v1+json");
    if (rc == 0 && atype) http_add_header(r, "OCI-Filters-Applied", "artifactType");
    return rc;
}

const http_handler reg_version_h = {.end = version_end};
const http_handler reg_tags_h = {.end = tags_end};
const http_handler reg_catalog_h = {.end = catalog_end};
const http_handler reg_referrers_h = {.end = referrers_end};
