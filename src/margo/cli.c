/*
 * margo/cli: `berth app push DIR REF`, `berth app pull REF DIR`, `berth app inspect REF`: margo
 * Application Packages between a package folder (margo.yaml + resources/) and any OCI registry,
 * as the reference tooling's `oras push` does (artifactType, the empty config, one layer per file
 * with its title and resource annotations, tag = metadata.version).
 *
 * REF is [http://|https://]host[:port]/repository[:tag] (https unless given). Credentials come
 * from --user user:password or BERTH_REGISTRY_USER / BERTH_REGISTRY_PASSWORD (Basic).
 */
#include "client/regclient.h"
#include "helm/helm.h"
#include "margo/margo.h"
#include "proxy/upstream.h"
#include "util/digest.h"
#include "util/err.h"
#include "util/file.h"
#include "util/tar.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MT_MANIFEST "application/vnd.oci.image.manifest.v1+json"

static int file_sink(void *arg, const char *data, size_t len)
{
    return fwrite(data, 1, len, (FILE *)arg) == len ? 0 : -1;
}

static int parse(const char *refs, const char *user, rc_ref *r)
{
    rc_opts o = {.user = user};
    return rc_parse(refs, &o, r);
}

/* PUT the manifest under r's tag and say so. */
static int put_manifest(rc_ref *r, const char *man)
{
    int rc = rc_put_manifest(r, r->ref, MT_MANIFEST, man, strlen(man));
    char dg[DIGEST_STR_MAX];
    digest_buf(DIGEST_SHA256, man, strlen(man), dg);
    if (rc == 0) printf("pushed %s/%s:%s %s\n", r->base, r->repo, r->ref, dg);
    return rc;
}

/* application/vnd.margo.app.<kind>.v1+<format>, the format from the file's extension. */
static void resource_type(const char *kind, const char *path, char *out, size_t len)
{
    const char *dot = strrchr(path, '.');
    const char *ext = dot && !strchr(dot, '/') ? dot + 1 : "octet-stream";
    static const char *const map[][2] = {
        {"jpg", "jpeg"}, {"md", "markdown"}, {"txt", "plain"}, {"svg", "svg+xml"}, {"htm", "html"}};
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (!strcasecmp(ext, map[i][0])) ext = map[i][1];
    snprintf(out, len, "application/vnd.margo.app.%s.v1+%s", kind, ext);
}

static int app_push(const char *dir, const char *refs, const char *user)
{
    rc_ref r;
    int rc = parse(refs, user, &r);
    if (rc < 0) return rc;
    char p[4096];
    snprintf(p, sizeof p, "%s/margo.yaml", dir);
    size_t dlen;
    char *desc = file_read_all(p, &dlen);
    if (!desc) return berr_set(BERR_IO, "%s: %s", p, strerror(errno));
    json_t *d = NULL;
    const char *version = NULL;
    rc = helm_yaml_to_json(desc, dlen, "margo.yaml", &d);
    if (rc == 0) rc = margo_check_description(d, &version);
    if (rc == 0 && !r.ref[0]) {
        snprintf(r.ref, sizeof r.ref, "%s", version);
        for (char *c = r.ref; *c; c++)
            if (*c == '+') *c = '_';
    }
    json_t *layers = json_array();
    char dg[DIGEST_STR_MAX];
    if (rc == 0) rc = rc_push_blob_mem(&r, desc, dlen, dg);
    if (rc == 0)
        json_array_append_new(layers,
                              json_pack("{s:s,s:s,s:I,s:{s:s}}", "mediaType",
                                        "application/vnd.margo.app.description.v1+yaml", "digest",
                                        dg, "size", (json_int_t)dlen, "annotations",
                                        "org.opencontainers.image.title", "margo.yaml"));
    static const char *const kinds[] = {"icon", "descriptionFile", "releaseNotes", "licenseFile"};
    json_t *app =
        json_object_get(json_object_get(json_object_get(d, "metadata"), "catalog"), "application");
    for (size_t i = 0; rc == 0 && i < sizeof kinds / sizeof *kinds; i++) {
        const char *rel = json_string_value(json_object_get(app, kinds[i]));
        if (!rel) continue;
        if (rel[0] == '/' || strstr(rel, "..")) {
            rc = berr_set(BERR_CONFIG, "margo.yaml: %s '%s' must be a path inside the package",
                          kinds[i], rel);
            break;
        }
        snprintf(p, sizeof p, "%s/%s", dir, rel);
        size_t len;
        char *data = file_read_all(p, &len);
        if (!data) {
            rc = berr_set(BERR_IO, "%s (metadata.catalog.application.%s): %s", p, kinds[i],
                          strerror(errno));
            break;
        }
        rc = rc_push_blob_mem(&r, data, len, dg);
        free(data);
        char mt[160], res[96];
        resource_type(kinds[i], rel, mt, sizeof mt);
        snprintf(res, sizeof res, "metadata.catalog.application.%s", kinds[i]);
        if (rc == 0)
            json_array_append_new(layers, json_pack("{s:s,s:s,s:I,s:{s:s,s:s}}", "mediaType", mt,
                                                    "digest", dg, "size", (json_int_t)len,
                                                    "annotations", "org.opencontainers.image.title",
                                                    rel, "org.margo.app.resource", res));
    }
    if (rc == 0) rc = rc_push_blob_mem(&r, "{}", 2, dg);
    char *man = NULL;
    if (rc == 0) {
        json_t *m = json_pack("{s:i,s:s,s:s,s:{s:s,s:s,s:i,s:s},s:O}", "schemaVersion", 2,
                              "mediaType", MT_MANIFEST, "artifactType", MARGO_MT_APP, "config",
                              "mediaType", "application/vnd.oci.empty.v1+json", "digest", dg,
                              "size", 2, "data", "e30=", "layers", layers);
        man = json_dumps(m, JSON_COMPACT);
        json_decref(m);
    }
    if (rc == 0) rc = put_manifest(&r, man);
    free(man);
    json_decref(layers);
    json_decref(d);
    free(desc);
    return rc;
}

/* The manifest r names, parsed. */
static int get_json_manifest(rc_ref *r, json_t **out)
{
    rc_manifest mf;
    int rc = rc_get_manifest(r, NULL, &mf);
    if (rc < 0) return rc;
    *out = json_loadb(mf.body, mf.len, 0, NULL);
    rc_manifest_free(&mf);
    return *out ? 0 : berr_set(BERR_IO, "%s: the manifest is not JSON", r->name);
}

static int get_manifest(rc_ref *r, json_t **out)
{
    json_t *m = NULL;
    int rc = get_json_manifest(r, &m);
    const char *at = json_string_value(json_object_get(m, "artifactType"));
    if (rc == 0 && (!at || (strcmp(at, MARGO_MT_APP) && strcmp(at, MARGO_MT_APP_OLD))))
        rc = berr_set(BERR_IO, "%s:%s is not a margo application package (artifactType %s)",
                      r->repo, r->ref, at ? at : "none");
    if (rc < 0) {
        json_decref(m);
        return rc;
    }
    *out = m;
    return 0;
}

static int mkdirs(const char *path)
{
    char b[4096];
    snprintf(b, sizeof b, "%s", path);
    for (char *c = b + 1; *c; c++)
        if (*c == '/') {
            *c = '\0';
            if (mkdir(b, 0755) < 0 && errno != EEXIST) return -1;
            *c = '/';
        }
    return 0;
}

static int app_pull(const char *refs, const char *dir, const char *user)
{
    rc_ref r;
    int rc = parse(refs, user, &r);
    json_t *m = NULL;
    if (rc == 0) rc = get_manifest(&r, &m);
    if (rc < 0) return rc;
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        rc = berr_set(BERR_IO, "%s: %s", dir, strerror(errno));
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(m, "layers"), i, l)
    {
        if (rc < 0) break;
        const char *title = json_string_value(
            json_object_get(json_object_get(l, "annotations"), "org.opencontainers.image.title"));
        const char *digest = json_string_value(json_object_get(l, "digest"));
        if (!title || !digest || title[0] == '/' || strstr(title, "..")) {
            rc = berr_set(BERR_IO, "layer %zu: a title inside the package is required", i);
            break;
        }
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, title);
        FILE *f = mkdirs(p) == 0 ? fopen(p, "wb") : NULL;
        if (!f) {
            rc = berr_set(BERR_IO, "%s: %s", p, strerror(errno));
            break;
        }
        rc = rc_get_blob(&r, digest, 0, file_sink, f);
        if (fclose(f) != 0 && rc == 0) rc = berr_set(BERR_IO, "%s: write failed", p);
        if (rc == 0) printf("%s\n", title);
    }
    json_decref(m);
    return rc;
}

static int app_inspect(const char *refs, const char *user)
{
    rc_ref r;
    int rc = parse(refs, user, &r);
    json_t *m = NULL;
    if (rc == 0) rc = get_manifest(&r, &m);
    if (rc < 0) return rc;
    const char *digest = NULL;
    size_t i, j;
    json_t *l;
    json_array_foreach(json_object_get(m, "layers"), i, l)
    {
        const char *mt = json_string_value(json_object_get(l, "mediaType"));
        if (mt && !strcmp(mt, "application/vnd.margo.app.description.v1+yaml"))
            digest = json_string_value(json_object_get(l, "digest"));
    }
    char *text = NULL;
    size_t len = 0;
    json_t *d = NULL;
    if (!digest) rc = berr_set(BERR_IO, "no margo.yaml layer");
    if (rc == 0) rc = rc_get_blob_mem(&r, digest, 16 << 20, &text, &len);
    if (rc == 0) rc = helm_yaml_to_json(text, len, "margo.yaml", &d);
    if (rc == 0) {
        json_t *md = json_object_get(d, "metadata");
        const char *id = json_string_value(json_object_get(md, "id"));
        if (!id) id = json_string_value(json_object_get(d, "id"));
        printf("id: %s\nname: %s\nversion: %s\n", id ? id : "?",
               json_string_value(json_object_get(md, "name")) ?: "?",
               json_string_value(json_object_get(md, "version")) ?: "?");
        json_t *p;
        json_array_foreach(json_object_get(d, "deploymentProfiles"), i, p)
        {
            printf("profile: %s %s\n", json_string_value(json_object_get(p, "type")) ?: "?",
                   json_string_value(json_object_get(p, "id")) ?: "");
            json_t *c;
            json_array_foreach(json_object_get(p, "components"), j, c)
            {
                json_t *pr = json_object_get(c, "properties");
                const char *repo = json_string_value(json_object_get(pr, "repository"));
                const char *rev = json_string_value(json_object_get(pr, "revision"));
                const char *loc = json_string_value(json_object_get(pr, "packageLocation"));
                printf("  component: %s %s%s%s\n",
                       json_string_value(json_object_get(c, "name")) ?: "?",
                       repo  ? repo
                       : loc ? loc
                             : "?",
                       rev ? "@" : "", rev ? rev : "");
            }
        }
    }
    json_decref(d);
    free(text);
    json_decref(m);
    return rc;
}

/* ---- compose archives ---- */

#define MT_COMPOSE_LAYER "application/vnd.org.margo.component.compose.tar+gzip"

static int compose_push(const char *dir, const char *refs, const char *user)
{
    rc_ref r;
    int rc = parse(refs, user, &r);
    if (rc < 0) return rc;
    char rev[129];
    snprintf(rev, sizeof rev, "%s", r.ref);
    for (char *c = rev; *c; c++)
        if (*c == '_') *c = '+';
    if (!r.ref[0] || !helm_semver_valid(rev))
        return berr_set(BERR_CONFIG,
                        "the reference needs a tag that is a SemVer 2 revision "
                        "(no leading v; '+' written '_'): %s",
                        refs);
    char top[256];
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    const char *base = dir;
    for (size_t i = 0; i < dl; i++)
        if (dir[i] == '/') base = dir + i + 1;
    snprintf(top, sizeof top, "%.*s", (int)(dir + dl - base), base);
    char tmp[] = "/tmp/berth-compose-XXXXXX";
    int fd = mkstemp(tmp);
    if (fd < 0) return berr_set(BERR_IO, "temporary file: %s", strerror(errno));
    rc = tar_create(dir, top, tmp);
    tar_scan_opts o = {.what = "compose archive",
                       .max_uncompressed = (int64_t)1 << 30,
                       .symlinks_inside = true,
                       .no_special_bits = true,
                       .capture = "compose.yaml",
                       .capture_max = 1 << 20};
    if (rc == 0) rc = tar_scan(fd, &o);
    if (rc == 0 && !o.captured) rc = berr_set(BERR_CONFIG, "%s has no compose.yaml", dir);
    tar_scan_free(&o);
    close(fd);
    size_t len = 0;
    char *data = rc == 0 ? file_read_all(tmp, &len) : NULL;
    unlink(tmp);
    if (rc == 0 && !data) rc = berr_set(BERR_IO, "read %s", tmp);
    char dg[DIGEST_STR_MAX], cfgd[DIGEST_STR_MAX];
    if (rc == 0) rc = rc_push_blob_mem(&r, data, len, dg);
    if (rc == 0) rc = rc_push_blob_mem(&r, "{}", 2, cfgd);
    free(data);
    if (rc < 0) return rc;
    char title[300];
    snprintf(title, sizeof title, "%s.tar.gz", top);
    json_t *m =
        json_pack("{s:i,s:s,s:s,s:{s:s,s:s,s:i},s:[{s:s,s:s,s:I,s:{s:s,s:s,s:s}}]}",
                  "schemaVersion", 2, "mediaType", MT_MANIFEST, "artifactType", MARGO_MT_COMPOSE,
                  "config", "mediaType", "application/vnd.oci.empty.v1+json", "digest", cfgd,
                  "size", 2, "layers", "mediaType", MT_COMPOSE_LAYER, "digest", dg, "size",
                  (json_int_t)len, "annotations", "org.margo.component.type", "compose",
                  "org.margo.component.version", rev, "org.opencontainers.image.title", title);
    char *man = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    rc = put_manifest(&r, man);
    free(man);
    return rc;
}

static int compose_pull(const char *refs, const char *dir, const char *user)
{
    rc_ref r;
    int rc = parse(refs, user, &r);
    if (rc < 0) return rc;
    json_t *m = NULL;
    rc = get_json_manifest(&r, &m);
    const char *at = json_string_value(json_object_get(m, "artifactType"));
    json_t *l = json_array_get(json_object_get(m, "layers"), 0);
    const char *digest = json_string_value(json_object_get(l, "digest"));
    if (rc == 0 && (!at || strcmp(at, MARGO_MT_COMPOSE) || !digest))
        rc = berr_set(BERR_IO, "%s:%s is not a margo compose archive", r.repo, r.ref);
    char tmp[] = "/tmp/berth-compose-XXXXXX";
    int fd = rc == 0 ? mkstemp(tmp) : -1;
    if (rc == 0 && fd < 0) rc = berr_set(BERR_IO, "temporary file: %s", strerror(errno));
    FILE *f = fd >= 0 ? fdopen(dup(fd), "wb") : NULL;
    if (rc == 0) rc = f ? rc_get_blob(&r, digest, 0, file_sink, f) : berr_set(BERR_IO, "fdopen");
    if (f) fclose(f);
    tar_scan_opts o = {.what = "compose archive",
                       .max_uncompressed = (int64_t)1 << 30,
                       .symlinks_inside = true,
                       .no_special_bits = true,
                       .capture = "compose.yaml",
                       .capture_max = 1 << 20};
    if (rc == 0) rc = tar_scan(fd, &o);
    if (rc == 0 && !o.captured) rc = berr_set(BERR_IO, "the archive has no compose.yaml");
    tar_scan_free(&o);
    if (rc == 0 && mkdir(dir, 0755) < 0 && errno != EEXIST)
        rc = berr_set(BERR_IO, "%s: %s", dir, strerror(errno));
    if (rc == 0) rc = tar_extract(fd, dir);
    if (rc == 0) printf("%s\n", o.top);
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    json_decref(m);
    return rc;
}

/* argv: positionals (up to 3) and --user; then libcurl. 0, or 1 when it cannot be loaded. */
static int cli_args(int argc, char **argv, const char *what, const char **user, const char *pos[3],
                    int *np)
{
    *user = NULL;
    *np = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--user") && i + 1 < argc)
            *user = argv[++i];
        else if (*np < 3)
            pos[(*np)++] = argv[i];
    }
    if (upstream_global_init() < 0) {
        fprintf(stderr, "berth %s: %s\n", what, berr_msg());
        return 1;
    }
    return 0;
}

static int cli_done(const char *what, const char *sub, int rc)
{
    if (rc < 0) fprintf(stderr, "berth %s %s: %s\n", what, sub, berr_msg());
    return rc < 0 ? 1 : 0;
}

int margo_compose_cli(int argc, char **argv)
{
    const char *user, *pos[3] = {0};
    int np;
    if (cli_args(argc, argv, "compose", &user, pos, &np)) return 1;
    if (np == 3 && !strcmp(pos[0], "push"))
        return cli_done("compose", pos[0], compose_push(pos[1], pos[2], user));
    if (np == 3 && !strcmp(pos[0], "pull"))
        return cli_done("compose", pos[0], compose_pull(pos[1], pos[2], user));
    fputs("usage: berth compose push DIR REF:REVISION | pull REF DIR  [--user USER:PASSWORD]\n",
          stderr);
    return 2;
}

int margo_cli(int argc, char **argv)
{
    const char *user, *pos[3] = {0};
    int np;
    if (cli_args(argc, argv, "app", &user, pos, &np)) return 1;
    if (np == 3 && !strcmp(pos[0], "push"))
        return cli_done("app", pos[0], app_push(pos[1], pos[2], user));
    if (np == 3 && !strcmp(pos[0], "pull"))
        return cli_done("app", pos[0], app_pull(pos[1], pos[2], user));
    if (np == 2 && !strcmp(pos[0], "inspect"))
        return cli_done("app", pos[0], app_inspect(pos[1], user));
    fputs("usage: berth app push DIR REF | pull REF DIR | inspect REF  [--user USER:PASSWORD]\n"
          "  REF: [http://|https://]host[:port]/repository[:tag]\n",
          stderr);
    return 2;
}
