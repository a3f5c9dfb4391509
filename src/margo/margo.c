/*
 * margo: push-time checks of margo's artifacts (facts: docs/margo.md, the specification's
 * application-registry and SUP-01 pages). A manifest PUT whose artifactType names a margo
 * Application Package or Compose Archive is checked before it is stored:
 *
 * Application Package (application/vnd.margo.app.v1+json; older
 * application/vnd.org.margo.app.v1+json)
 *   - config is the OCI empty descriptor; exactly one margo.yaml layer
 *     (application/vnd.margo.app.description.v1+yaml); every other layer is a margo resource type
 *     (icon, descriptionFile, licenseFile, releaseNotes); every layer has a relative
 *     org.opencontainers.image.title
 *   - margo.yaml is a valid ApplicationDescription: apiVersion, kind (ApplicationDescription or the
 *     older application), metadata.id matching ^[a-z0-9-]{1,200}$ (top-level id accepted), name,
 *     version, at least one deploymentProfile of type helm/compose (older helm.v3, docker-compose),
 *     each with components that have a name and the properties their type needs
 *   - every tag equals metadata.version ('+' written '_')
 * Compose Archive (application/vnd.org.margo.component.compose+json)
 *   - exactly one layer of application/vnd.org.margo.component.compose.tar+gzip, annotated
 *     org.margo.component.type: compose and org.margo.component.version: a SemVer 2 revision
 *   - every tag equals the revision; the archive passes util/tar's rules (one top directory holding
 *     compose.yaml, no absolute or ".." paths, no links leaving it, no setuid/setgid/sticky bits)
 *
 * A violation is MANIFEST_INVALID with a message naming the rule and the field. margo.validation
 * chooses reject (default), warn (log and store) or off.
 */
#include "margo/margo.h"
#include "helm/helm.h"
#include "util/err.h"
#include "util/log.h"
#include "util/tar.h"

#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MT_EMPTY "application/vnd.oci.empty.v1+json"
#define EMPTY_DIGEST "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
#define MT_DESC "application/vnd.margo.app.description.v1+yaml"
#define MT_COMPOSE_LAYER "application/vnd.org.margo.component.compose.tar+gzip"
#define DESC_MAX (1u << 20)

static int bad(const char *rule, const char *fmt, const char *a, const char *b)
{
    char msg[512];
    snprintf(msg, sizeof msg, fmt, a ? a : "", b ? b : "");
    return berr_set(BERR_MANIFEST_INVALID, "margo %s: %s", rule, msg);
}

/* Every tag must be the version ('+' as '_'). */
static int check_tags(const char *what, const char *version, const char *const *tags, size_t ntags)
{
    char want[200];
    snprintf(want, sizeof want, "%s", version);
    for (char *p = want; *p; p++)
        if (*p == '+') *p = '_';
    for (size_t i = 0; i < ntags; i++)
        if (strcmp(tags[i], want) != 0)
            return berr_set(BERR_MANIFEST_INVALID,
                            "margo %s: tag '%.130s' must equal the version '%s'", what, tags[i],
                            want);
    return 0;
}

static const char *str(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static bool id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n < 1 || n > 200) return false;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= '0' && id[i] <= '9') || id[i] == '-'))
            return false;
    return true;
}

/* Reads a small blob of repo into memory. */
static int read_blob(store *s, const char *repo, const char *digest, size_t max, char **out,
                     size_t *len)
{
    store_blob b;
    int rc = store_blob_open(s, repo, digest, &b);
    if (rc < 0) return berr_set(BERR_MANIFEST_BLOB_UNKNOWN, "blob unknown to registry: %s", digest);
    if (b.size > max) {
        store_blob_release(&b);
        return berr_set(BERR_MANIFEST_INVALID, "margo: %s is larger than %zu bytes", digest, max);
    }
    char *buf = malloc(b.size + 1);
    rc = buf ? 0 : berr_set(BERR_INTERNAL, "out of memory");
    if (rc == 0 && b.fd >= 0 && pread(b.fd, buf, b.size, (off_t)b.offset) != (ssize_t)b.size)
        rc = berr_set(BERR_IO, "read %s", digest);
    else if (rc == 0 && b.fd < 0)
        memcpy(buf, b.mem, b.size);
    size_t n = b.size;
    store_blob_release(&b);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

int margo_check_description(json_t *d, const char **version_out)
{
    const char *api = str(d, "apiVersion"), *kind = str(d, "kind");
    json_t *md = json_object_get(d, "metadata");
    if (!api || !*api) return bad("description", "apiVersion is required%s%s", NULL, NULL);
    if (!kind || (strcmp(kind, "ApplicationDescription") && strcmp(kind, "application")))
        return bad("description", "kind '%.60s' must be ApplicationDescription%s", kind, NULL);
    if (!json_is_object(md)) return bad("description", "metadata is required%s%s", NULL, NULL);
    const char *id = str(md, "id");
    if (!id) id = str(d, "id"); /* some drafts put it at the top level */
    if (!id) return bad("description", "metadata.id is required%s%s", NULL, NULL);
    if (!id_valid(id))
        return bad("description", "metadata.id '%.100s' must match ^[a-z0-9-]{1,200}$%s", id, NULL);
    const char *name = str(md, "name"), *version = str(md, "version");
    if (!name || !*name) return bad("description", "metadata.name is required%s%s", NULL, NULL);
    if (!version || !*version)
        return bad("description", "metadata.version is required%s%s", NULL, NULL);
    json_t *orgs = json_object_get(json_object_get(md, "catalog"), "organization"), *org;
    size_t i, j;
    json_array_foreach(orgs, i, org)
    {
        const char *on = str(org, "name");
        if (!on || !*on)
            return bad("description", "metadata.catalog.organization[%s].name is required%s", "",
                       NULL);
    }
    json_t *profiles = json_object_get(d, "deploymentProfiles"), *p;
    if (!json_is_array(profiles) || json_array_size(profiles) == 0)
        return bad("description", "at least one deploymentProfiles entry is required%s%s", NULL,
                   NULL);
    json_array_foreach(profiles, i, p)
    {
        const char *type = str(p, "type");
        char where[64];
        snprintf(where, sizeof where, "deploymentProfiles[%zu]", i);
        bool helm = type && (!strcmp(type, "helm") || !strcmp(type, "helm.v3"));
        bool compose = type && (!strcmp(type, "compose") || !strcmp(type, "docker-compose"));
        if (!helm && !compose)
            return bad("description", "%s.type '%.40s' must be helm or compose", where, type);
        json_t *comps = json_object_get(p, "components"), *c;
        if (!json_is_array(comps) || json_array_size(comps) == 0)
            return bad("description", "%s.components: at least one component is required%s", where,
                       NULL);
        json_array_foreach(comps, j, c)
        {
            char cw[96];
            snprintf(cw, sizeof cw, "%s.components[%zu]", where, j);
            const char *cn = str(c, "name");
            if (!cn || !*cn) return bad("description", "%s.name is required%s", cw, NULL);
            json_t *props = json_object_get(c, "properties");
            const char *repo = str(props, "repository"), *rev = str(props, "revision");
            const char *loc = str(props, "packageLocation");
            if (helm && (!repo || !*repo))
                return bad("description", "%s.properties.repository is required (helm)%s", cw,
                           NULL);
            if (compose && !(repo && rev) && !loc)
                return bad("description",
                           "%s.properties needs repository and revision (or the legacy "
                           "packageLocation)%s",
                           cw, NULL);
        }
    }
    if (version_out) *version_out = version;
    return 0;
}

static bool resource_type(const char *mt)
{
    static const char *const kinds[] = {"icon", "descriptionFile", "licenseFile", "releaseNotes"};
    const char *pre = "application/vnd.margo.app.";
    if (strncmp(mt, pre, strlen(pre)) != 0) return false;
    const char *k = mt + strlen(pre);
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        size_t n = strlen(kinds[i]);
        if (!strncmp(k, kinds[i], n) && !strncmp(k + n, ".v1+", 4) && k[n + 4]) return true;
    }
    return false;
}

static int check_package(store *s, const char *repo, json_t *man, const char *const *tags,
                         size_t ntags)
{
    json_t *cfgd = json_object_get(man, "config");
    if (strcmp(str(cfgd, "mediaType") ? str(cfgd, "mediaType") : "", MT_EMPTY) ||
        strcmp(str(cfgd, "digest") ? str(cfgd, "digest") : "", EMPTY_DIGEST) ||
        json_integer_value(json_object_get(cfgd, "size")) != 2)
        return bad("package", "config must be the OCI empty descriptor (%s, size 2)%s", MT_EMPTY,
                   NULL);
    json_t *layers = json_object_get(man, "layers"), *l;
    size_t i;
    const char *desc_digest = NULL;
    int ndesc = 0;
    json_array_foreach(layers, i, l)
    {
        const char *mt = str(l, "mediaType");
        const char *title =
            str(json_object_get(l, "annotations"), "org.opencontainers.image.title");
        char where[32];
        snprintf(where, sizeof where, "layers[%zu]", i);
        if (!title || !*title)
            return bad("package", "%s needs an org.opencontainers.image.title annotation%s", where,
                       NULL);
        if (title[0] == '/' || strstr(title, ".."))
            return bad("package", "%s title '%.100s' must be a relative path inside the package",
                       where, title);
        if (mt && !strcmp(mt, MT_DESC)) {
            ndesc++;
            desc_digest = str(l, "digest");
        } else if (!mt || !resource_type(mt)) {
            return bad("package",
                       "%s mediaType '%.100s' is not a margo type (description, icon, "
                       "descriptionFile, licenseFile, releaseNotes)",
                       where, mt);
        }
    }
    if (ndesc != 1)
        return berr_set(BERR_MANIFEST_INVALID,
                        "margo package: exactly one %s layer (margo.yaml) is required, found %d",
                        MT_DESC, ndesc);
    char *text = NULL;
    size_t len = 0;
    int rc = read_blob(s, repo, desc_digest, DESC_MAX, &text, &len);
    if (rc < 0) return rc;
    json_t *d;
    rc = helm_yaml_to_json(text, len, "margo.yaml", &d);
    free(text);
    if (rc < 0) return berr_rewrap(BERR_MANIFEST_INVALID, "margo description: ");
    const char *version = NULL;
    rc = margo_check_description(d, &version);
    if (rc == 0) rc = check_tags("package", version, tags, ntags);
    json_decref(d);
    return rc;
}

static int check_compose(store *s, const config *cfg, const char *repo, json_t *man,
                         const char *const *tags, size_t ntags)
{
    json_t *layers = json_object_get(man, "layers");
    json_t *l = json_array_get(layers, 0);
    if (json_array_size(layers) != 1 ||
        strcmp(str(l, "mediaType") ? str(l, "mediaType") : "", MT_COMPOSE_LAYER))
        return bad("compose", "exactly one layer of %s is required%s", MT_COMPOSE_LAYER, NULL);
    json_t *ann = json_object_get(l, "annotations");
    const char *type = str(ann, "org.margo.component.type");
    const char *rev = str(ann, "org.margo.component.version");
    if (!type || strcmp(type, "compose"))
        return bad("compose", "the layer's org.margo.component.type must be 'compose'%s%s", NULL,
                   NULL);
    if (!rev || !helm_semver_valid(rev))
        return bad("compose",
                   "the layer's org.margo.component.version '%.100s' must be a SemVer 2 revision "
                   "(no leading v)%s",
                   rev, NULL);
    int rc = check_tags("compose", rev, tags, ntags);
    if (rc < 0) return rc;
    store_blob b;
    const char *digest = str(l, "digest");
    if (!digest || store_blob_open(s, repo, digest, &b) < 0)
        return berr_set(BERR_MANIFEST_BLOB_UNKNOWN, "blob unknown to registry: %s",
                        digest ? digest : "?");
    if (b.fd < 0) {
        store_blob_release(&b);
        return bad("compose", "the layer is not an archive%s%s", NULL, NULL);
    }
    tar_scan_opts o = {.what = "margo compose archive",
                       .max_uncompressed = cfg->helm.max_uncompressed,
                       .symlinks_inside = true,
                       .no_special_bits = true,
                       .capture = "compose.yaml",
                       .capture_max = DESC_MAX};
    rc = tar_scan(b.fd, &o);
    store_blob_release(&b);
    if (rc == -BERR_BAD_REQUEST) return berr_rewrap(BERR_MANIFEST_INVALID, NULL);
    if (rc < 0) return rc;
    if (!o.captured)
        rc = berr_set(BERR_MANIFEST_INVALID,
                      "margo compose archive: no compose.yaml in '%s/' (compose.yml and "
                      "docker-compose.* are not accepted)",
                      o.top);
    tar_scan_free(&o);
    return rc;
}

int margo_check_manifest(store *s, const config *cfg, const char *repo, const char *content,
                         size_t len, const char *const *tags, size_t ntags)
{
    if (cfg->margo_validation == MARGO_OFF) return 0;
    json_t *man = json_loadb(content, len, 0, NULL);
    const char *at = str(man, "artifactType");
    int rc = 0;
    if (at && (!strcmp(at, MARGO_MT_APP) || !strcmp(at, MARGO_MT_APP_OLD)))
        rc = check_package(s, repo, man, tags, ntags);
    else if (at && !strcmp(at, MARGO_MT_COMPOSE))
        rc = check_compose(s, cfg, repo, man, tags, ntags);
    json_decref(man);
    if (rc == -BERR_MANIFEST_INVALID && cfg->margo_validation == MARGO_WARN) {
        log_warn("msg=\"margo artifact stored despite a violation (margo.validation: warn)\" "
                 "repo=%s err=\"%s\"",
                 repo, berr_msg());
        berr_clear();
        return 0;
    }
    return rc;
}
