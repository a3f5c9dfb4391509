/*
 * margo: push-time checks of margo's artifacts (facts: docs/margo.md, the specification's
 * application-registry and SUP-01 pages). A manifest PUT whose artifactType names a margo
 * Application Package or Compose Archive is checked before it is stored:
 *
 * Application Package (application/vnd.margo.app.v1+json; older
 * application/vnd.org.margo.app.v1+json)
 *   - config is the OCI empty descriptor; exactly one margo.yaml layer
 *     (application/vnd.margo.app.description.v1+yaml); every other layer is a margo resource type
 *     (icon, descriptionFile, licenseFile, releaseNotes), or any type carrying
 *     org.margo.app.resource (the earlier registry page); every layer has a relative
 *     org.opencontainers.image.title
 *   - margo.yaml is a valid ApplicationDescription, checked as the conformance kit does
 *     (margo_description_findings): apiVersion; kind (none with apiVersion v1); id (top level,
 *     or metadata.id); metadata name, version, catalog, organizations with names; profiles of a
 *     known type, with ids in the newer spellings, components named [a-z0-9-], the properties
 *     their type needs (SUP-01 for compose), wait/timeout forms, requiredResources quantities;
 *     parameter targets naming existing components; configuration sections, settings and schema
 *     that refer to each other. Every finding is collected; unknown and x- keys are allowed.
 *   - every tag equals metadata.version ('+' written '_')
 * Compose Archive (application/vnd.org.margo.component.compose+json)
 *   - exactly one layer of application/vnd.org.margo.component.compose.tar+gzip, annotated
 *     org.margo.component.type: compose and org.margo.component.version: a SemVer 2 revision
 *     (org.opencontainers.image.version, when set, the same); the annotations on the manifest
 *     instead (the registry page's oras example) are refused saying where they belong
 *   - every tag equals the revision; the archive passes util/tar's rules (one top directory holding
 *     compose.yaml, no absolute or ".." paths, no links leaving it, no setuid/setgid/sticky bits)
 *
 * A violation is MANIFEST_INVALID with a message naming the rule, the field and the value.
 * margo.validation chooses reject (default), warn (log every finding and store) or off.
 */
#include "margo/margo.h"
#include "registry/ingest.h"
#include "util/yamlj.h"
#include "util/semver.h"
#include "util/err.h"
#include "util/log.h"
#include "util/tar.h"

#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <yaml.h>
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

/* ---- the Application Description ---- */

/* Every violation found, each naming the field and the value (a JSON array of strings). */
static void add(json_t *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(json_t *f, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_array_append_new(f, json_string(msg));
}

/* A non-empty string member, else NULL. */
static const char *nstr(json_t *o, const char *k)
{
    const char *s = str(o, k);
    return s && *s ? s : NULL;
}

static bool all_of(const char *s, const char *extra)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || strchr(extra, *s)))
            return false;
    return true;
}

/* ^[0-9]+(u1|u2|...)$ with units a space-separated list. */
static bool quantity(const char *s, const char *units)
{
    size_t d = strspn(s, "0123456789");
    if (d == 0) return false;
    const char *u = s + d;
    size_t ul = strlen(u);
    for (const char *p = units; *p;) {
        size_t n = strcspn(p, " ");
        if (n == ul && !strncmp(p, u, n)) return true;
        p += n;
        while (*p == ' ')
            p++;
    }
    return false;
}

/* "##m##s": one or more of <digits>h, <digits>m, <digits>s in that order. */
static bool duration(const char *s)
{
    const char *order = "hms";
    bool any = false;
    while (*s) {
        size_t d = strspn(s, "0123456789");
        const char *u = d ? strchr(order, s[d]) : NULL;
        if (!u || !s[d]) return false;
        order = u + 1;
        s += d + 1;
        any = true;
    }
    return any;
}

static bool boolean_word(const char *s)
{
    return !strcasecmp(s, "true") || !strcasecmp(s, "false");
}

static bool number(const char *s)
{
    char *end;
    if (!*s) return false;
    double v = strtod(s, &end);
    return *end == '\0' && v >= 0;
}

static void check_top(json_t *d, json_t *f)
{
    json_t *api = json_object_get(d, "apiVersion"), *kind = json_object_get(d, "kind");
    const char *av = json_string_value(api), *kv = json_string_value(kind);
    if (!av || !*av) add(f, "apiVersion is required");
    if (!kind || json_is_null(kind)) {
        /* one revision (apiVersion "v1") has no kind; every other needs it */
        if (!av || strcmp(av, "v1")) add(f, "kind is required (ApplicationDescription)");
    } else if (!kv || (strcmp(kv, "ApplicationDescription") && strcmp(kv, "application"))) {
        add(f, "kind '%.60s' must be ApplicationDescription", kv ? kv : "(not a string)");
    }
    json_t *md = json_object_get(d, "metadata");
    /* id: top level in the newest schema and the conformance kit, metadata.id before; each one
     * given must match */
    json_t *ids[2] = {json_object_get(d, "id"), json_object_get(md, "id")};
    static const char *const fields[2] = {"id", "metadata.id"};
    bool any = false;
    for (int k = 0; k < 2; k++) {
        if (!ids[k] || json_is_null(ids[k])) continue;
        any = true;
        const char *idv = json_string_value(ids[k]);
        if (!idv || !all_of(idv, "-") || strlen(idv) > 200)
            add(f, "%s '%.100s' must match ^[a-z0-9-]{1,200}$", fields[k],
                idv ? idv : "(not a string)");
    }
    if (!any) add(f, "id is required (top level; metadata.id in older revisions)");
    if (!json_is_object(md)) {
        add(f, "metadata is required");
        return;
    }
    if (!nstr(md, "name")) add(f, "metadata.name is required");
    if (!nstr(md, "version")) add(f, "metadata.version is required");
    json_t *cat = json_object_get(md, "catalog");
    if (!json_is_object(cat)) {
        add(f, "metadata.catalog is required (with organization)");
        return;
    }
    json_t *orgs = json_object_get(cat, "organization"), *org;
    size_t i;
    if (!json_is_array(orgs) || json_array_size(orgs) == 0)
        add(f, "metadata.catalog.organization is required (a list of organizations with a name)");
    json_array_foreach(orgs, i, org) if (!nstr(org, "name"))
        add(f, "metadata.catalog.organization[%zu].name is required", i);
}

static void check_component(json_t *c, const char *cw, bool helm, json_t *names, json_t *f)
{
    const char *cn = nstr(c, "name");
    if (!cn)
        add(f, "%s.name is required", cw);
    else if (!all_of(cn, "-"))
        add(f,
            "%s.name '%.100s' must be lower case letters, digits and dashes (no upper case, _ "
            "or .)",
            cw, cn);
    else
        json_object_set_new(names, cn, json_true());
    json_t *props = json_object_get(c, "properties");
    if (!json_is_object(props)) {
        add(f, "%s.properties is required", cw);
        return;
    }
    const char *repo = nstr(props, "repository"), *rev = nstr(props, "revision");
    const char *loc = nstr(props, "packageLocation");
    if (helm) {
        if (!repo) add(f, "%s.properties.repository is required (helm)", cw);
        if (!rev) add(f, "%s.properties.revision is required (helm)", cw);
    } else if (repo || rev || !loc) { /* SUP-01: an OCI repository and a SemVer revision */
        if (!repo)
            add(f,
                "%s.properties.repository is required (compose: an oci:// repository and a "
                "revision, or the older packageLocation)",
                cw);
        else if (strncmp(repo, "oci://", 6) || !repo[6])
            add(f, "%s.properties.repository '%.200s' must be an oci:// reference (compose)", cw,
                repo);
        if (!rev)
            add(f, "%s.properties.revision is required (compose: SemVer 2, no leading v)", cw);
        else if (!semver_valid(rev))
            add(f, "%s.properties.revision '%.100s' must be SemVer 2 without a leading v (compose)",
                cw, rev);
    }
    json_t *w = json_object_get(props, "wait");
    if (w && !json_is_null(w) && !json_is_boolean(w) &&
        !(json_is_string(w) && boolean_word(json_string_value(w))))
        add(f, "%s.properties.wait '%.60s' must be true or false", cw,
            json_is_string(w) ? json_string_value(w) : "(not a scalar)");
    json_t *t = json_object_get(props, "timeout");
    if (t && !json_is_null(t) && !(json_is_string(t) && duration(json_string_value(t))))
        add(f, "%s.properties.timeout '%.60s' must be of the form ##m##s (e.g. 8m30s)", cw,
            json_is_string(t) ? json_string_value(t) : "(not a scalar)");
}

static void check_resources(json_t *rr, const char *where, json_t *f)
{
    if (!rr || json_is_null(rr)) return;
    if (!json_is_object(rr)) {
        add(f, "%s.requiredResources must be a mapping", where);
        return;
    }
    json_t *mem = json_object_get(rr, "memory"), *sto = json_object_get(rr, "storage");
    if (mem && !json_is_null(mem) &&
        !(json_is_string(mem) && quantity(json_string_value(mem), "Ki Mi Gi")))
        add(f, "%s.requiredResources.memory '%.60s' must match ^[0-9]+(Ki|Mi|Gi)$", where,
            json_is_string(mem) ? json_string_value(mem) : "(not a scalar)");
    if (sto && !json_is_null(sto) &&
        !(json_is_string(sto) && quantity(json_string_value(sto), "Ki Mi Gi Ti Pi Ei")))
        add(f, "%s.requiredResources.storage '%.60s' must match ^[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei)$", where,
            json_is_string(sto) ? json_string_value(sto) : "(not a scalar)");
    json_t *cpu = json_object_get(rr, "cpu");
    if (cpu && !json_is_null(cpu)) {
        json_t *cores = json_object_get(cpu, "cores");
        if (!cores || json_is_null(cores))
            add(f, "%s.requiredResources.cpu.cores is required when cpu is given", where);
        else if (!json_is_number(cores) &&
                 !(json_is_string(cores) && number(json_string_value(cores))))
            add(f, "%s.requiredResources.cpu.cores '%.60s' must be a number of cores", where,
                json_is_string(cores) ? json_string_value(cores) : "(not a scalar)");
    }
}

static void check_profiles(json_t *d, json_t *names, json_t *f)
{
    json_t *profiles = json_object_get(d, "deploymentProfiles"), *p;
    size_t i, j;
    if (!json_is_array(profiles) || json_array_size(profiles) == 0) {
        add(f, "deploymentProfiles: at least one deployment profile is required");
        return;
    }
    json_array_foreach(profiles, i, p)
    {
        char where[64];
        snprintf(where, sizeof where, "deploymentProfiles[%zu]", i);
        const char *type = str(p, "type");
        bool newer = type && (!strcmp(type, "helm") || !strcmp(type, "compose"));
        bool helm = type && (!strcmp(type, "helm") || !strcmp(type, "helm.v3"));
        bool compose = type && (!strcmp(type, "compose") || !strcmp(type, "docker-compose"));
        if (!type)
            add(f, "%s.type is required (helm or compose)", where);
        else if (!helm && !compose)
            add(f, "%s.type '%.40s' must be helm or compose", where, type);
        /* the profile id came with the newer type spellings (2025 revisions, conformance kit) */
        if (newer && !nstr(p, "id")) add(f, "%s.id is required (type %s)", where, type);
        check_resources(json_object_get(p, "requiredResources"), where, f);
        json_t *comps = json_object_get(p, "components"), *c;
        if (!json_is_array(comps) || json_array_size(comps) == 0) {
            add(f, "%s.components: at least one component is required", where);
            continue;
        }
        json_array_foreach(comps, j, c)
        {
            char cw[96];
            snprintf(cw, sizeof cw, "%s.components[%zu]", where, j);
            if (helm || compose)
                check_component(c, cw, helm, names, f);
            else if (nstr(c, "name"))
                json_object_set_new(names, nstr(c, "name"), json_true());
        }
    }
}

static void check_parameters(json_t *d, json_t *names, json_t *f)
{
    json_t *params = json_object_get(d, "parameters"), *p;
    const char *pn;
    if (!params || json_is_null(params)) return;
    if (!json_is_object(params)) {
        add(f, "parameters must be a mapping of parameter names");
        return;
    }
    json_object_foreach(params, pn, p)
    {
        json_t *targets = json_object_get(p, "targets"), *t;
        size_t i, j;
        if (targets && !json_is_null(targets) && !json_is_array(targets)) {
            add(f, "parameters.%.80s.targets must be a list of targets", pn);
            continue;
        }
        if (json_array_size(targets) == 0) {
            add(f, "parameters.%.80s.targets is required (at least one target)", pn);
            continue;
        }
        json_array_foreach(targets, i, t)
        {
            if (!nstr(t, "pointer"))
                add(f, "parameters.%.80s.targets[%zu].pointer is required", pn, i);
            json_t *comps = json_object_get(t, "components"), *c;
            if (comps && !json_is_null(comps) && !json_is_array(comps)) {
                add(f, "parameters.%.80s.targets[%zu].components must be a list of component names",
                    pn, i);
                continue;
            }
            if (json_array_size(comps) == 0) {
                add(f, "parameters.%.80s.targets[%zu].components is required", pn, i);
                continue;
            }
            json_array_foreach(comps, j, c)
            {
                const char *cn = json_string_value(c);
                if (!cn || !json_object_get(names, cn))
                    add(f,
                        "parameters.%.80s.targets[%zu].components[%zu] '%.80s' is no component of "
                        "the deployment profiles",
                        pn, i, j, cn ? cn : "(not a string)");
            }
        }
    }
}

static void check_configuration(json_t *d, json_t *f)
{
    json_t *conf = json_object_get(d, "configuration");
    if (!conf || json_is_null(conf)) return;
    json_t *sections = json_object_get(conf, "sections"), *schema = json_object_get(conf, "schema");
    json_t *schemas = json_object(), *s, *params = json_object_get(d, "parameters");
    size_t i, j;
    if (!json_is_array(sections) || json_array_size(sections) == 0)
        add(f, "configuration.sections is required when configuration is given");
    if (!json_is_array(schema) || json_array_size(schema) == 0)
        add(f, "configuration.schema is required when configuration is given");
    json_array_foreach(schema, i, s)
    {
        const char *sn = nstr(s, "name");
        if (!sn) add(f, "configuration.schema[%zu].name is required", i);
        if (!nstr(s, "dataType"))
            add(f, "configuration.schema[%zu].dataType is required (schema '%.80s')", i,
                sn ? sn : "");
        if (sn) json_object_set_new(schemas, sn, json_true());
    }
    json_array_foreach(sections, i, s)
    {
        json_t *settings = json_object_get(s, "settings"), *st;
        if (!nstr(s, "name")) add(f, "configuration.sections[%zu].name is required", i);
        if (!json_is_array(settings) || json_array_size(settings) == 0)
            add(f, "configuration.sections[%zu].settings is required", i);
        json_array_foreach(settings, j, st)
        {
            const char *par = nstr(st, "parameter"), *sch = nstr(st, "schema");
            if (!par)
                add(f, "configuration.sections[%zu].settings[%zu].parameter is required", i, j);
            else if (!json_object_get(params, par))
                add(f,
                    "configuration.sections[%zu].settings[%zu].parameter '%.80s' is no parameter "
                    "of parameters",
                    i, j, par);
            if (!sch)
                add(f, "configuration.sections[%zu].settings[%zu].schema is required", i, j);
            else if (!json_object_get(schemas, sch))
                add(f,
                    "configuration.sections[%zu].settings[%zu].schema '%.80s' is no entry of "
                    "configuration.schema",
                    i, j, sch);
        }
    }
    json_decref(schemas);
}

json_t *margo_description_findings(json_t *d)
{
    json_t *f = json_array(), *names = json_object();
    if (!json_is_object(d)) {
        add(f, "margo.yaml must be a mapping (an ApplicationDescription)");
    } else {
        check_top(d, f);
        check_profiles(d, names, f);
        check_parameters(d, names, f);
        check_configuration(d, f);
    }
    json_decref(names);
    return f;
}

/* The findings as one message: the first ones in full, then how many more. */
static int findings_error(json_t *f)
{
    char msg[480];
    size_t len = 0, i, shown = 0;
    json_t *s;
    json_array_foreach(f, i, s)
    {
        const char *t = json_string_value(s);
        if (len + strlen(t) + 40 > sizeof msg && shown) break;
        len += (size_t)snprintf(msg + len, sizeof msg - len, "%s%s", shown ? "; " : "", t);
        if (len >= sizeof msg) len = sizeof msg - 1;
        shown++;
    }
    if (shown < json_array_size(f))
        snprintf(msg + len, sizeof msg - len, " (and %zu more)", json_array_size(f) - shown);
    return berr_set(BERR_MANIFEST_INVALID, "margo description: %s", msg);
}

int margo_check_description(json_t *d, const char **version_out)
{
    json_t *f = margo_description_findings(d);
    int rc = json_array_size(f) ? findings_error(f) : 0;
    json_decref(f);
    if (rc == 0 && version_out) *version_out = str(json_object_get(d, "metadata"), "version");
    return rc;
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

/* Line number `line` (from 0) of text: its length, and its start in *out. */
static int line_text(const char *text, size_t len, size_t line, const char **out)
{
    const char *s = text, *end = text + len;
    for (size_t l = 0; l < line && s < end; l++) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        s = nl ? nl + 1 : end;
    }
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    *out = s;
    return (int)((nl ? nl : end) - s);
}

int margo_yaml(const char *text, size_t len, json_t **out)
{
    int rc = yamlj_parse(text, len, "margo.yaml", out);
    if (rc == 0 || rc != -BERR_BAD_REQUEST) return rc;
    /* a syntax error: say where, with the line it is about */
    yaml_parser_t p;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&p)) return rc;
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    if (yaml_parser_load(&p, &doc)) { /* parsed: the conversion refused it (named key) */
        yaml_document_delete(&doc);
        yaml_parser_delete(&p);
        return rc;
    }
    size_t line = p.problem_mark.line, col = p.problem_mark.column;
    const char *s, *cs;
    int n = line_text(text, len, line, &s);
    char at[200] = "", ctx[240] = "";
    if (n > 0) snprintf(at, sizeof at, " ('%.*s')", n > 120 ? 120 : n, s);
    if (p.context) {
        int cn = line_text(text, len, p.context_mark.line, &cs);
        snprintf(ctx, sizeof ctx, " (%s at line %zu: '%.*s')", p.context, p.context_mark.line + 1,
                 cn > 120 ? 120 : cn, cs);
    }
    rc = berr_set(BERR_BAD_REQUEST, "margo.yaml line %zu column %zu%s: %s%s", line + 1, col + 1, at,
                  p.problem ? p.problem : "invalid YAML", ctx);
    yaml_parser_delete(&p);
    return rc;
}

/* A resource layer: a margo resource media type, or (the earlier registry page) any media type
 * with org.margo.app.resource naming the margo.yaml field of the file. */
static bool resource_layer(json_t *l, const char *mt)
{
    const char *res = str(json_object_get(l, "annotations"), "org.margo.app.resource");
    return (mt && resource_type(mt)) || (mt && *mt && res && *res);
}

static int check_package(store *s, const config *cfg, const char *repo, json_t *man,
                         const char *const *tags, size_t ntags)
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
        } else if (!resource_layer(l, mt)) {
            return bad("package",
                       "%s mediaType '%.100s' is not a margo type (description, icon, "
                       "descriptionFile, licenseFile, releaseNotes; or any type with an "
                       "org.margo.app.resource annotation)",
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
    rc = margo_yaml(text, len, &d);
    free(text);
    if (rc < 0) return berr_rewrap(BERR_MANIFEST_INVALID, "margo description: ");
    json_t *f = margo_description_findings(d);
    if (json_array_size(f) && cfg->margo_validation == MARGO_WARN) {
        json_t *x;
        json_array_foreach(f, i, x)
            log_warn("msg=\"margo description finding (margo.validation: warn)\" repo=%s "
                     "finding=\"%s\"",
                     repo, json_string_value(x));
    }
    /* the tags too, so that warn reports them along with the description's findings */
    const char *version = str(json_object_get(d, "metadata"), "version");
    rc = version ? check_tags("package", version, tags, ntags) : 0;
    if (rc < 0 && json_array_size(f) && cfg->margo_validation == MARGO_WARN)
        log_warn("msg=\"margo package finding (margo.validation: warn)\" repo=%s finding=\"%s\"",
                 repo, berr_msg());
    if (json_array_size(f)) rc = findings_error(f);
    json_decref(f);
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
    json_t *mann = json_object_get(man, "annotations");
    const char *type = str(ann, "org.margo.component.type");
    const char *rev = str(ann, "org.margo.component.version");
    if (!type && !rev &&
        (str(mann, "org.margo.component.type") || str(mann, "org.margo.component.version")))
        return bad("compose",
                   "org.margo.component.type and org.margo.component.version belong on the "
                   "layer (layers[0].annotations), not on the manifest's annotations (the "
                   "registry page's annotation table: \"MUST be set on the layer "
                   "descriptor\")%s%s",
                   NULL, NULL);
    if (!type || strcmp(type, "compose"))
        return bad("compose", "the layer's org.margo.component.type must be 'compose'%s%s", NULL,
                   NULL);
    if (!rev || !semver_valid(rev))
        return bad("compose",
                   "the layer's org.margo.component.version '%.100s' must be a SemVer 2 revision "
                   "(no leading v)%s",
                   rev, NULL);
    const char *ov = str(ann, "org.opencontainers.image.version");
    if (ov && strcmp(ov, rev))
        return bad("compose",
                   "the layer's org.opencontainers.image.version '%.100s' must equal "
                   "org.margo.component.version '%.100s'",
                   ov, rev);
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
        rc = check_package(s, cfg, repo, man, tags, ntags);
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

/* The ingest hook: every manifest entering the store, by any path, meets margo's rules. A mirror
 * fill has not fetched the layers yet: those of a margo artifact are fetched first (they are
 * what its clients pull next anyway). */
static int margo_ingest_hook(ingest_ctx *c, void *arg)
{
    (void)arg;
    if (c->cfg->margo_validation == MARGO_OFF) return 0;
    json_t *man = json_loadb(c->in->content, c->in->len, 0, NULL);
    const char *at = str(man, "artifactType");
    int rc = 0;
    if (at && (!strcmp(at, MARGO_MT_APP) || !strcmp(at, MARGO_MT_APP_OLD) ||
               !strcmp(at, MARGO_MT_COMPOSE))) {
        json_t *l;
        size_t i;
        json_array_foreach(json_object_get(man, "layers"), i, l)
        {
            const char *d = str(l, "digest");
            if (d && (rc = ingest_blob_ensure(c, d)) < 0) break;
        }
    }
    json_decref(man);
    if (rc < 0) return rc;
    return margo_check_manifest(c->st, c->cfg, c->in->repo, c->in->content, c->in->len, c->in->tags,
                                c->in->ntags);
}

void margo_ingest_register(void)
{
    ingest_hook_add(INGEST_VALIDATE, 100, "margo", margo_ingest_hook, NULL);
}
