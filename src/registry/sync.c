/*
 * sync: `berth sync -c config.yml list.yml` fills the mirror ahead of time, so a site can go
 * offline with what it needs. It runs the server's own mirror code (same store, same fills, same
 * verification) from the command line, next to a running server or alone. What is already in the
 * store is skipped, so an interrupted sync is resumed by running it again.
 *
 * list.yml:
 *   images:
 *     - docker.io/library/nginx:1.27          # a tag
 *     - ghcr.io/org/app@sha256:...            # a digest
 *     - ref: docker.io/library/alpine         # tags matching a pattern (fnmatch)
 *       tags: "3.*"
 *       platforms: [linux/amd64, linux/arm64] # from an index, only these (default: all)
 */
#include "proxy/upstream.h"
#include "registry/registry.h"
#include "util/err.h"
#include "util/ref.h"

#include <fnmatch.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

typedef struct {
    long manifests, fetched, present, errors;
    unsigned long long bytes;
    const char *const *platforms;
    size_t nplatforms;
} sync_stats;

static bool platform_wanted(const sync_stats *st, json_t *platform)
{
    if (st->nplatforms == 0) return true;
    const char *os = json_string_value(json_object_get(platform, "os"));
    const char *arch = json_string_value(json_object_get(platform, "architecture"));
    const char *variant = json_string_value(json_object_get(platform, "variant"));
    char full[128], base[96];
    snprintf(base, sizeof base, "%s/%s", os ? os : "", arch ? arch : "");
    snprintf(full, sizeof full, "%s%s%s", base, variant ? "/" : "", variant ? variant : "");
    for (size_t i = 0; i < st->nplatforms; i++)
        if (!strcmp(st->platforms[i], base) || !strcmp(st->platforms[i], full)) return true;
    return false;
}

static void blob(const reg_mirror_ctx *c, sync_stats *st, json_t *desc)
{
    const char *d = json_string_value(json_object_get(desc, "digest"));
    json_t *urls = json_object_get(desc, "urls");
    if (!d || (json_is_array(urls) && json_array_size(urls) > 0)) return; /* foreign layer */
    bool fetched = false;
    if (reg_mirror_blob_ensure(c, d, &fetched) < 0) {
        printf("error   %s blob %s: %s\n", c->local, d, berr_msg());
        st->errors++;
    } else if (fetched) {
        long long size = json_integer_value(json_object_get(desc, "size"));
        printf("fetched %s blob %s (%lld bytes)\n", c->local, d, size);
        st->fetched++;
        st->bytes += (unsigned long long)size;
    } else {
        st->present++;
    }
}

static void manifest(const reg_mirror_ctx *c, sync_stats *st, const char *ref, int depth)
{
    store_manifest m;
    if (reg_mirror_manifest_fetch(c, ref, &m) < 0) {
        printf("error   %s:%s: %s\n", c->local, ref, berr_msg());
        st->errors++;
        return;
    }
    st->manifests++;
    printf("have    %s%s%s -> %s\n", c->local, ref_is_digest(ref) ? "@" : ":", ref, m.digest);
    json_t *j = json_loadb(m.content, m.size, 0, NULL);
    json_t *children = json_object_get(j, "manifests");
    if (json_is_array(children) && depth < 2) {
        size_t i;
        json_t *child;
        json_array_foreach(children, i, child)
        {
            const char *d = json_string_value(json_object_get(child, "digest"));
            json_t *platform = json_object_get(child, "platform");
            if (d && (!json_is_object(platform) || platform_wanted(st, platform)))
                manifest(c, st, d, depth + 1);
        }
    } else {
        blob(c, st, json_object_get(j, "config"));
        size_t i;
        json_t *layer;
        json_array_foreach(json_object_get(j, "layers"), i, layer) blob(c, st, layer);
    }
    json_decref(j);
    store_manifest_free(&m);
}

/* "ghcr.io/org/app:v1", "ghcr.io/org/app@sha256:..", "ghcr.io/org/app" (latest). */
static void sync_image(store *s, const config *cfg, sync_stats *st, const char *ref,
                       const char *pattern)
{
    char buf[600];
    snprintf(buf, sizeof buf, "%s", ref);
    char *at = strchr(buf, '@'), *tag = NULL;
    if (at) {
        *at = '\0';
    } else {
        char *slash = strrchr(buf, '/'), *colon = strrchr(buf, ':');
        if (colon && (!slash || colon > slash)) {
            *colon = '\0';
            tag = colon + 1;
        }
    }
    char *slash = strchr(buf, '/');
    const config_mirror *m = NULL;
    for (size_t i = 0; slash && i < cfg->nmirrors; i++)
        if (strlen(cfg->mirrors[i].name) == (size_t)(slash - buf) &&
            !strncasecmp(cfg->mirrors[i].name, buf, (size_t)(slash - buf)))
            m = &cfg->mirrors[i];
    if (!m) {
        printf("error   %s: the registry is not one of the configured mirrors\n", ref);
        st->errors++;
        return;
    }
    char up[300], local[600];
    const char *repo = slash + 1;
    snprintf(up, sizeof up, "%s%s", m->library_prefix && !strchr(repo, '/') ? "library/" : "",
             repo);
    snprintf(local, sizeof local, "%s/%s", m->local, up);
    if (!ref_name_valid(up) || !ref_name_valid(local)) {
        printf("error   %s: invalid repository name\n", ref);
        st->errors++;
        return;
    }
    if (!reg_mirror_serves(m, up)) {
        printf("error   %s: not among the repositories mirror %s serves\n", ref, m->name);
        st->errors++;
        return;
    }
    reg_mirror_ctx c = {s, m, local, up, cfg};
    if (at) {
        manifest(&c, st, at + 1, 0);
        return;
    }
    if (!pattern) {
        manifest(&c, st, tag ? tag : "latest", 0);
        return;
    }
    upstream_resp u;
    int rc = upstream_tags(m, up, &u);
    json_t *j = rc == 0 && u.status == 200 ? json_loadb(u.body, u.len, 0, NULL) : NULL;
    upstream_resp_free(&u);
    if (!j) {
        printf("error   %s: cannot list upstream tags\n", ref);
        st->errors++;
        return;
    }
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(j, "tags"), i, t)
    {
        const char *name = json_string_value(t);
        if (name && fnmatch(pattern, name, 0) == 0) manifest(&c, st, name, 0);
    }
    json_decref(j);
}

static const char *scalar(yaml_document_t *d, yaml_node_t *n)
{
    (void)d;
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static yaml_node_t *map_get(yaml_document_t *d, yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE) return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const char *k = scalar(d, yaml_document_get_node(d, p->key));
        if (k && !strcmp(k, key)) return yaml_document_get_node(d, p->value);
    }
    return NULL;
}

int reg_sync(store *s, const config *cfg, const char *list_path)
{
    FILE *f = fopen(list_path, "rb");
    if (!f) return berr_set(BERR_CONFIG, "cannot open %s", list_path);
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        int rc =
            berr_set(BERR_CONFIG, "%s: %s at line %zu", list_path,
                     parser.problem ? parser.problem : "parse error", parser.problem_mark.line + 1);
        yaml_parser_delete(&parser);
        fclose(f);
        return rc;
    }
    yaml_node_t *images = map_get(&doc, yaml_document_get_root_node(&doc), "images");
    sync_stats st = {0};
    int rc = 0;
    if (!images || images->type != YAML_SEQUENCE_NODE) {
        rc = berr_set(BERR_CONFIG, "%s: expected an `images:` list", list_path);
    } else {
        for (yaml_node_item_t *it = images->data.sequence.items.start;
             it < images->data.sequence.items.top; it++) {
            yaml_node_t *e = yaml_document_get_node(&doc, *it);
            const char *ref = scalar(&doc, e);
            const char *pattern = NULL;
            const char *plats[16];
            size_t nplats = 0;
            if (!ref) {
                ref = scalar(&doc, map_get(&doc, e, "ref"));
                pattern = scalar(&doc, map_get(&doc, e, "tags"));
                yaml_node_t *p = map_get(&doc, e, "platforms");
                if (p && p->type == YAML_SEQUENCE_NODE)
                    for (yaml_node_item_t *pi = p->data.sequence.items.start;
                         pi < p->data.sequence.items.top && nplats < 16; pi++) {
                        const char *v = scalar(&doc, yaml_document_get_node(&doc, *pi));
                        if (v) plats[nplats++] = v;
                    }
            }
            if (!ref) {
                printf("error   an entry of %s has no ref\n", list_path);
                st.errors++;
                continue;
            }
            st.platforms = plats;
            st.nplatforms = nplats;
            sync_image(s, cfg, &st, ref, pattern);
        }
    }
    printf(
        "synced %ld manifests: fetched %ld blobs (%llu bytes), %ld already present, %ld errors\n",
        st.manifests, st.fetched, st.bytes, st.present, st.errors);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    if (rc == 0 && st.errors)
        rc = berr_set(BERR_UNAVAILABLE, "%ld images or blobs failed", st.errors);
    return rc;
}
