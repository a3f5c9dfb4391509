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
#include "util/semver.h"
#include "margo/margo.h"
#include "proxy/upstream.h"
#include "util/digest.h"
#include "util/err.h"
#include "util/file.h"
#include "util/tar.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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

/* A file's format from its extension: the margo suffix (png, jpeg, markdown, plain, pdf, ...)
 * and the ordinary media type. */
static void file_format(const char *path, const char **suffix, const char **ordinary)
{
    static const char *const map[][3] = {{"png", "png", "image/png"},
                                         {"jpg", "jpeg", "image/jpeg"},
                                         {"jpeg", "jpeg", "image/jpeg"},
                                         {"svg", "svg+xml", "image/svg+xml"},
                                         {"gif", "gif", "image/gif"},
                                         {"md", "markdown", "text/markdown"},
                                         {"markdown", "markdown", "text/markdown"},
                                         {"txt", "plain", "text/plain"},
                                         {"htm", "html", "text/html"},
                                         {"html", "html", "text/html"},
                                         {"pdf", "pdf", "application/pdf"},
                                         {"yaml", "yaml", "application/yaml"},
                                         {"yml", "yaml", "application/yaml"},
                                         {"json", "json", "application/json"}};
    const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
    const char *ext = dot && (!slash || dot > slash) ? dot + 1 : "";
    *suffix = *ext ? ext : "octet-stream";
    *ordinary = "application/octet-stream";
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (!strcasecmp(ext, map[i][0])) {
            *suffix = map[i][1];
            *ordinary = map[i][2];
        }
}

/* A path inside the package as a title: "./resources//icon.png" -> "resources/icon.png". -1
 * when it leaves the package (absolute, or a ".." component). */
static int normalize_title(const char *rel, char *out, size_t len)
{
    size_t n = 0;
    const char *p = rel;
    if (*p == '/') return -1;
    while (*p) {
        size_t seg = strcspn(p, "/");
        if (seg == 2 && !strncmp(p, "..", 2)) return -1;
        if (seg > 0 && !(seg == 1 && *p == '.')) {
            if (n + seg + 2 > len) return -1;
            if (n) out[n++] = '/';
            memcpy(out + n, p, seg);
            n += seg;
        }
        p += seg;
        while (*p == '/')
            p++;
    }
    out[n] = '\0';
    return n ? 0 : -1;
}

/* Pushes the file dir/title as a layer of layers. */
static int push_file(rc_ref *r, const char *dir, const char *title, const char *mt,
                     const char *resource, json_t *layers)
{
    char p[4096], dg[DIGEST_STR_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, title);
    size_t len;
    char *data = file_read_all(p, &len);
    if (!data)
        return berr_set(BERR_IO, "%s%s%s: %s", p, resource ? " (" : "", resource ? resource : "",
                        strerror(errno));
    int rc = rc_push_blob_mem(r, data, len, dg);
    free(data);
    if (rc < 0) return rc;
    json_t *l = json_pack("{s:s,s:s,s:I,s:{s:s}}", "mediaType", mt, "digest", dg, "size",
                          (json_int_t)len, "annotations", "org.opencontainers.image.title", title);
    if (resource)
        json_object_set_new(json_object_get(l, "annotations"), "org.margo.app.resource",
                            json_string(resource));
    json_array_append_new(layers, l);
    return 0;
}

static bool has_title(json_t *layers, const char *title)
{
    size_t i;
    json_t *l;
    json_array_foreach(layers, i, l)
    {
        const char *t = json_string_value(
            json_object_get(json_object_get(l, "annotations"), "org.opencontainers.image.title"));
        if (t && !strcmp(t, title)) return true;
    }
    return false;
}

/* Every other regular file of the package folder (the registry page: each part of the package
 * is a layer), sorted, hidden ones skipped: ordinary media type, org.margo.app.resource = its
 * path. */
static int push_rest(rc_ref *r, const char *dir, const char *sub, json_t *layers, int depth)
{
    char p[4096];
    snprintf(p, sizeof p, "%s%s%s", dir, *sub ? "/" : "", sub);
    struct dirent **ents;
    int n = scandir(p, &ents, NULL, alphasort), rc = 0;
    if (n < 0) return berr_set(BERR_IO, "%s: %s", p, strerror(errno));
    for (int i = 0; i < n; i++) {
        const char *name = ents[i]->d_name;
        char rel[2048], full[4096];
        struct stat st;
        snprintf(rel, sizeof rel, "%s%s%s", sub, *sub ? "/" : "", name);
        snprintf(full, sizeof full, "%s/%s", dir, rel);
        if (rc < 0 || name[0] == '.' || lstat(full, &st) < 0) continue;
        if (S_ISDIR(st.st_mode) && depth < 8)
            rc = push_rest(r, dir, rel, layers, depth + 1);
        else if (S_ISREG(st.st_mode) && !has_title(layers, rel)) {
            const char *suffix, *ordinary;
            file_format(rel, &suffix, &ordinary);
            rc = push_file(r, dir, rel, ordinary, rel, layers);
        }
    }
    for (int i = 0; i < n; i++)
        free(ents[i]);
    free(ents);
    return rc;
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
    rc = margo_yaml(desc, dlen, &d);
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
    /* the resources margo.yaml names, with their margo media types */
    static const char *const kinds[] = {"icon", "descriptionFile", "releaseNotes", "licenseFile"};
    json_t *app =
        json_object_get(json_object_get(json_object_get(d, "metadata"), "catalog"), "application");
    for (size_t i = 0; rc == 0 && i < sizeof kinds / sizeof *kinds; i++) {
        const char *rel = json_string_value(json_object_get(app, kinds[i]));
        char title[1024], mt[160], res[96];
        if (!rel) continue;
        if (normalize_title(rel, title, sizeof title) < 0) {
            rc = berr_set(BERR_CONFIG,
                          "margo.yaml: metadata.catalog.application.%s '%s' must be a path "
                          "inside the package",
                          kinds[i], rel);
            break;
        }
        if (has_title(layers, title)) continue;
        const char *suffix, *ordinary;
        file_format(title, &suffix, &ordinary);
        snprintf(mt, sizeof mt, "application/vnd.margo.app.%s.v1+%s", kinds[i], suffix);
        snprintf(res, sizeof res, "metadata.catalog.application.%s", kinds[i]);
        rc = push_file(&r, dir, title, mt, res, layers);
    }
    /* and every other file of the folder */
    if (rc == 0) rc = push_rest(&r, dir, "", layers, 0);
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
    if (rc == 0) rc = margo_yaml(text, len, &d);
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
    if (!r.ref[0] || !semver_valid(rev))
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
    char tmp[4096];
    file_tmp_template(tmp, sizeof tmp, "berth-compose");
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
    char tmp[4096];
    file_tmp_template(tmp, sizeof tmp, "berth-compose");
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
