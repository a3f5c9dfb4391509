/*
 * margo/images: which container images a compose file or a Helm chart runs (see images.h).
 *
 * Nothing is rendered: YAML goes through yamlj_parse (libyaml; every scalar is text), a
 * chart archive is streamed once with util/tar's reader and only Chart.yaml, values.yaml and the
 * templates of each chart directory are kept (bounded per file and in total), then each chart is
 * read on its own. A chart directory is the archive's top directory followed by any number of
 * charts/<sub>/ hops; a nested charts/<sub>.tgz is copied into a memfd and read the same way.
 * A reference that needs rendering (templated, ${VAR} without default) is reported raw rather
 * than guessed.
 */
#include "margo/images.h"
#include "util/yamlj.h"
#include "util/strbuf.h"
#include "util/digest.h"
#include "util/err.h"
#include "util/ref.h"
#include "util/tar.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define IMG_FILE_MAX (4u << 20)  /* larger files in a chart are skipped */
#define IMG_ENTRIES_MAX 20000    /* entries read, nested archives included */
#define IMG_KEPT_MAX (64u << 20) /* YAML and template references kept while reading */
#define IMG_NEST_MAX 4           /* levels of charts/<sub>.tgz inside charts/<sub>.tgz */
#define IMG_REF_MAX 1024         /* longest reference considered */
#define IMG_INTERP_DEPTH 8       /* ${A:-${B:-...}} */

/* ---- lists ---- */

void img_list_free(img_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

int img_list_add(img_list *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->items[i], s)) return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        char **items = realloc(l->items, cap * sizeof *items);
        if (!items) return berr_set(BERR_INTERNAL, "out of memory");
        l->items = items;
        l->cap = cap;
    }
    char *dup = strdup(s);
    if (!dup) return berr_set(BERR_INTERNAL, "out of memory");
    l->items[l->n++] = dup;
    return 0;
}

static int img_list_merge(img_list *into, const img_list *from)
{
    for (size_t i = 0; i < from->n; i++) {
        int rc = img_list_add(into, from->items[i]);
        if (rc < 0) return rc;
    }
    return 0;
}

/* ---- normalisation ---- */

static int bad_ref(const char *in, const char *why)
{
    return berr_set(BERR_BAD_REQUEST, "image reference '%.200s': %s", in, why);
}

/* host[:port]: DNS-like labels or a bracketed IPv6 address, port 1-65535. */
static bool host_valid(const char *h)
{
    size_t i = 0, n = strlen(h);
    if (n && h[0] == '[') {
        const char *e = strchr(h, ']');
        if (!e || e - h < 3) return false;
        for (const char *p = h + 1; p < e; p++)
            if (!isxdigit((unsigned char)*p) && *p != ':') return false;
        i = (size_t)(e - h) + 1;
    } else {
        char prev = '.';
        for (; i < n && h[i] != ':'; i++) {
            char c = h[i];
            if (c == '-' || c == '.') {
                if (prev == '.' || prev == '-') return false;
            } else if (!isalnum((unsigned char)c)) {
                return false;
            }
            prev = c;
        }
        if (i == 0 || prev == '.' || prev == '-') return false;
    }
    if (i == n) return true;
    if (h[i] != ':') return false;
    const char *port = h + i + 1;
    size_t pl = strlen(port);
    if (pl == 0 || pl > 5 || strspn(port, "0123456789") != pl) return false;
    long v = strtol(port, NULL, 10);
    return v >= 1 && v <= 65535;
}

int image_ref_normalize(const char *in, char *out, size_t len)
{
    size_t inlen = strlen(in);
    if (inlen == 0) return berr_set(BERR_BAD_REQUEST, "image reference is empty");
    if (inlen >= IMG_REF_MAX) return bad_ref(in, "too long");
    char buf[IMG_REF_MAX];
    memcpy(buf, in, inlen + 1);

    char *digest = NULL, *at = strchr(buf, '@');
    if (at) {
        *at = '\0';
        digest = at + 1;
        digest_algo algo;
        if (digest_parse(digest, &algo) < 0) return bad_ref(in, "not a valid digest");
    }
    char *name = buf;
    const char *host = NULL;
    char *slash = strchr(name, '/');
    if (slash) {
        size_t hl = (size_t)(slash - name);
        if (memchr(name, '.', hl) || memchr(name, ':', hl) ||
            (hl == 9 && !strncmp(name, "localhost", 9))) {
            *slash = '\0';
            host = name;
            name = slash + 1;
            if (!host_valid(host)) return bad_ref(in, "not a valid registry host");
        }
    }
    char *tag = NULL, *colon = strrchr(name, ':'); /* the host is gone: ':' starts the tag */
    if (colon) {
        *colon = '\0';
        tag = colon + 1;
        if (!ref_tag_valid(tag)) return bad_ref(in, "not a valid tag");
    }
    if (!host || !strcmp(host, "index.docker.io")) host = "docker.io";
    bool library = !strcmp(host, "docker.io") && !strchr(name, '/');
    char repo[IMG_REF_MAX + 8];
    snprintf(repo, sizeof repo, "%s%s", library ? "library/" : "", name);
    if (!ref_name_valid(repo))
        return bad_ref(in, "not a valid repository name (lower-case letters, digits and "
                           "separators)");
    int n = snprintf(out, len, "%s/%s%s%s%s%s", host, repo, tag ? ":" : "", tag ? tag : "",
                     digest ? "@" : "", digest ? digest : "");
    if (!tag && !digest && n >= 0) n = snprintf(out, len, "%s/%s:latest", host, repo);
    if (n < 0 || (size_t)n >= len) return bad_ref(in, "too long");
    return 0;
}

/* Normalises raw into found, or keeps it raw in unresolved. */
static int add_ref(const char *raw, img_list *found, img_list *unresolved)
{
    char norm[IMG_REF_MAX + 16];
    if (image_ref_normalize(raw, norm, sizeof norm) == 0) return img_list_add(found, norm);
    berr_clear();
    return img_list_add(unresolved, raw);
}

/* ---- small helpers ---- */

/* A growing string (strbuf, NUL-terminated); sb_put fails on out of memory. */
typedef strbuf sbuf;

static int sb_put(sbuf *b, const char *s, size_t n)
{
    strbuf_add(b, s, n);
    return b->oom ? berr_set(BERR_INTERNAL, "out of memory") : 0;
}

/* A YAML scalar as text: strings as they are, numbers printed; NULL for anything else. */
static const char *scalar_text(json_t *v, char *buf, size_t len)
{
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(buf, len, "%lld", (long long)json_integer_value(v));
        return buf;
    }
    if (json_is_real(v)) {
        snprintf(buf, len, "%.15g", json_real_value(v));
        return buf;
    }
    return NULL;
}

/* Text holding nothing but comments, blank lines and document markers. */
static bool yaml_blank(const char *s, size_t n)
{
    const char *p = s, *end = s + n;
    while (p < end) {
        const char *le = memchr(p, '\n', (size_t)(end - p));
        if (!le) le = end;
        while (p < le && isspace((unsigned char)*p))
            p++;
        const char *q = le;
        while (q > p && isspace((unsigned char)q[-1]))
            q--;
        size_t l = (size_t)(q - p);
        if (l && *p != '#' && !(l == 3 && (!memcmp(p, "---", 3) || !memcmp(p, "...", 3))))
            return false;
        p = le + 1;
    }
    return true;
}

/* ---- compose ---- */

/* Compose interpolation of s[0..n) into out: 1 resolved, 0 a variable without default, <0 error. */
static int interpolate(const char *s, size_t n, sbuf *out, int depth)
{
    if (depth > IMG_INTERP_DEPTH) return 0;
    for (size_t i = 0; i < n; i++) {
        int rc;
        if (s[i] != '$') {
            if ((rc = sb_put(out, s + i, 1)) < 0) return rc;
            continue;
        }
        if (i + 1 < n && s[i + 1] == '$') { /* $$ is a literal $ */
            if ((rc = sb_put(out, "$", 1)) < 0) return rc;
            i++;
            continue;
        }
        if (i + 1 >= n || s[i + 1] != '{') return 0; /* $VAR, or a lone $ */
        size_t j = i + 2;
        int level = 1;
        for (; j < n; j++) {
            if (s[j] == '{') level++;
            if (s[j] == '}' && --level == 0) break;
        }
        if (j >= n) return 0;
        const char *body = s + i + 2;
        size_t bl = j - (i + 2), nl = 0;
        while (nl < bl && (isalnum((unsigned char)body[nl]) || body[nl] == '_'))
            nl++;
        if (nl == 0) return 0;
        const char *op = body + nl;
        size_t ol = bl - nl;
        if (ol >= 2 && op[0] == ':' && op[1] == '-')
            rc = interpolate(op + 2, ol - 2, out, depth + 1);
        else if (ol >= 1 && op[0] == '-')
            rc = interpolate(op + 1, ol - 1, out, depth + 1);
        else
            return 0; /* ${VAR}, ${VAR:?err}, ${VAR:+alt}...: needs the environment */
        if (rc <= 0) return rc;
        i = j;
    }
    return 1;
}

int images_from_compose(const char *yaml, size_t len, img_list *found, img_list *unresolved)
{
    json_t *doc;
    int rc = yamlj_parse(yaml, len, "compose.yaml", &doc);
    if (rc < 0) return rc;
    json_t *services = json_object_get(doc, "services"), *svc;
    const char *name;
    if (json_is_object(services)) {
        json_object_foreach(services, name, svc)
        {
            char num[64];
            const char *image = scalar_text(json_object_get(svc, "image"), num, sizeof num);
            if (!image || !*image) continue; /* build: only */
            sbuf b = {0};
            rc = interpolate(image, strlen(image), &b, 0);
            if (rc == 1)
                rc = b.buf && *b.buf ? add_ref(b.buf, found, unresolved) : 0;
            else if (rc == 0)
                rc = img_list_add(unresolved, image);
            free(b.buf);
            if (rc < 0) break;
        }
    }
    json_decref(doc);
    return rc < 0 ? rc : 0;
}

/* ---- charts: reading one chart's files ---- */

/* What one chart directory (or one nested archive) contributes. */
typedef struct {
    int depth;    /* charts/ hops below the top chart */
    char *prefix; /* "mychart/charts/sub"; NULL for a nested archive's results */
    char *chart_yaml, *values_yaml;
    size_t chart_len, values_len;
    img_list tmpl;              /* raw literal references from templates, in order */
    img_list found, unresolved; /* a nested archive's results */
} chart_unit;

typedef struct {
    chart_unit *u;
    size_t n, cap;
} unit_list;

typedef struct {
    unsigned entries;
    size_t kept;
} scan_ctx;

static void units_free(unit_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        chart_unit *u = &l->u[i];
        free(u->prefix);
        free(u->chart_yaml);
        free(u->values_yaml);
        img_list_free(&u->tmpl);
        img_list_free(&u->found);
        img_list_free(&u->unresolved);
    }
    free(l->u);
    memset(l, 0, sizeof *l);
}

static chart_unit *unit_new(unit_list *l)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        chart_unit *u = realloc(l->u, cap * sizeof *u);
        if (!u) return NULL;
        l->u = u;
        l->cap = cap;
    }
    chart_unit *u = &l->u[l->n++];
    memset(u, 0, sizeof *u);
    return u;
}

/* The unit of chart directory name[0..plen), made on first use. */
static chart_unit *unit_for(unit_list *l, const char *name, size_t plen, int depth)
{
    for (size_t i = l->n; i-- > 0;) {
        chart_unit *u = &l->u[i];
        if (u->prefix && strlen(u->prefix) == plen && !memcmp(u->prefix, name, plen)) return u;
    }
    char *prefix = strndup(name, plen);
    chart_unit *u = prefix ? unit_new(l) : NULL;
    if (!u) {
        free(prefix);
        return NULL;
    }
    u->prefix = prefix;
    u->depth = depth;
    return u;
}

/* Splits an entry name into its chart directory (top/charts/a/charts/b) and the path inside it;
 * NULL when the entry is not inside a directory. */
static const char *chart_split(const char *name, size_t *plen, int *depth)
{
    const char *slash = strchr(name, '/');
    if (!slash || slash == name) return NULL;
    const char *rel = slash + 1;
    *depth = 0;
    while (!strncmp(rel, "charts/", 7)) {
        const char *sub = rel + 7, *end = strchr(sub, '/');
        if (!end || end == sub) break; /* charts/<sub>.tgz belongs to this chart */
        rel = end + 1;
        (*depth)++;
    }
    *plen = (size_t)(rel - 1 - name);
    return rel;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

static int read_entry(tar_reader *r, uint64_t size, char **out, size_t *outlen)
{
    char *b = malloc((size_t)size + 1);
    if (!b) return berr_set(BERR_INTERNAL, "out of memory");
    size_t got = 0;
    while (got < size) {
        long k = tar_reader_read(r, b + got, (size_t)size - got);
        if (k < 0) {
            free(b);
            return (int)k;
        }
        if (k == 0) break;
        got += (size_t)k;
    }
    b[got] = '\0';
    *out = b;
    *outlen = got;
    return 0;
}

/* Literal `image: ref` / `- image: ref` lines of a template, raw, into l. */
static int scan_template(const char *buf, size_t n, img_list *l, scan_ctx *c)
{
    const char *p = buf, *end = buf + n;
    for (; p < end; p++) {
        const char *le = memchr(p, '\n', (size_t)(end - p));
        if (!le) le = end;
        const char *q = p;
        p = le;
        if (memmem(q, (size_t)(le - q), "{{", 2)) continue;
        while (q < le && (*q == ' ' || *q == '\t'))
            q++;
        if (q < le && *q == '-') {
            q++;
            if (q >= le || (*q != ' ' && *q != '\t')) continue;
            while (q < le && (*q == ' ' || *q == '\t'))
                q++;
        }
        if (le - q < 6 || memcmp(q, "image:", 6)) continue;
        q += 6;
        if (q < le && *q != ' ' && *q != '\t' && *q != '\r') continue;
        while (q < le && (*q == ' ' || *q == '\t'))
            q++;
        const char *ve = le;
        if (q < le && (*q == '"' || *q == '\'')) {
            const char *close = memchr(q + 1, *q, (size_t)(le - q - 1));
            if (!close) continue;
            q++;
            ve = close;
        } else {
            for (const char *h = q; h < le; h++)
                if (*h == '#' && h > q && (h[-1] == ' ' || h[-1] == '\t')) {
                    ve = h;
                    break;
                }
            while (ve > q && isspace((unsigned char)ve[-1]))
                ve--;
        }
        size_t vl = (size_t)(ve - q);
        if (vl == 0 || vl >= IMG_REF_MAX) continue;
        char ref[IMG_REF_MAX];
        memcpy(ref, q, vl);
        ref[vl] = '\0';
        c->kept += vl;
        if (c->kept > IMG_KEPT_MAX)
            return berr_set(BERR_TOO_LARGE, "chart archive: too many image references");
        int rc = img_list_add(l, ref);
        if (rc < 0) return rc;
    }
    return 0;
}

static int scan_archive(int fd, scan_ctx *c, int nest, img_list *found, img_list *unresolved);

/* A nested charts/<sub>.tgz: its bytes into a memfd, read as an archive of its own. */
static int scan_nested(const char *data, size_t len, const char *name, scan_ctx *c, int nest,
                       chart_unit *u)
{
    int mfd = memfd_create("berth-subchart", MFD_CLOEXEC);
    if (mfd < 0) return berr_set(BERR_IO, "memfd_create: %s", strerror(errno));
    int rc = 0;
    for (size_t off = 0; off < len && rc == 0;) {
        ssize_t w = write(mfd, data + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            rc = berr_set(BERR_IO, "%s: write to memfd: %s", name, strerror(errno));
        else
            off += (size_t)w;
    }
    if (rc == 0) rc = scan_archive(mfd, c, nest + 1, &u->found, &u->unresolved);
    close(mfd);
    if (rc == -BERR_BAD_REQUEST) {
        char prefix[512];
        snprintf(prefix, sizeof prefix, "%.400s: ", name);
        rc = berr_rewrap(BERR_BAD_REQUEST, prefix);
    }
    return rc;
}

/* Reads the archive's entries into units (no YAML parsed yet). */
static int collect(tar_reader *r, scan_ctx *c, int nest, unit_list *units)
{
    tar_entry e;
    int rc;
    while ((rc = tar_reader_next(r, &e)) == 1) {
        if (++c->entries > IMG_ENTRIES_MAX) return 0;
        if (e.type != 'f' || e.size > IMG_FILE_MAX) continue;
        const char *name = e.name;
        while (!strncmp(name, "./", 2))
            name += 2;
        while (*name == '/')
            name++;
        size_t plen;
        int depth;
        const char *rel = chart_split(name, &plen, &depth);
        if (!rel) continue;
        enum { K_NONE, K_CHART, K_VALUES, K_TEMPLATE, K_NESTED } kind = K_NONE;
        if (!strcmp(rel, "Chart.yaml"))
            kind = K_CHART;
        else if (!strcmp(rel, "values.yaml"))
            kind = K_VALUES;
        else if (!strncmp(rel, "templates/", 10) &&
                 (ends_with(rel, ".yaml") || ends_with(rel, ".yml") || ends_with(rel, ".tpl")))
            kind = K_TEMPLATE;
        else if (!strncmp(rel, "charts/", 7) && !strchr(rel + 7, '/') && ends_with(rel, ".tgz") &&
                 nest < IMG_NEST_MAX)
            kind = K_NESTED;
        if (kind == K_NONE) continue;
        char *data = NULL;
        size_t len = 0;
        if ((rc = read_entry(r, e.size, &data, &len)) < 0) return rc;
        if (kind == K_CHART || kind == K_VALUES) {
            c->kept += len;
            if (c->kept > IMG_KEPT_MAX) {
                free(data);
                return berr_set(BERR_TOO_LARGE, "chart archive: too much YAML (over %u MiB)",
                                IMG_KEPT_MAX >> 20);
            }
        }
        chart_unit *u = unit_for(units, name, plen, depth);
        if (!u) {
            free(data);
            return berr_set(BERR_INTERNAL, "out of memory");
        }
        if (kind == K_CHART) {
            free(u->chart_yaml);
            u->chart_yaml = data;
            u->chart_len = len;
            continue;
        }
        if (kind == K_VALUES) {
            free(u->values_yaml);
            u->values_yaml = data;
            u->values_len = len;
            continue;
        }
        if (kind == K_TEMPLATE) {
            rc = scan_template(data, len, &u->tmpl, c);
        } else {
            int pdepth = u->depth;
            chart_unit *n = unit_new(units);
            if (!n) {
                rc = berr_set(BERR_INTERNAL, "out of memory");
            } else {
                n->depth = pdepth + 1;
                rc = scan_nested(data, len, name, c, nest, n);
            }
        }
        free(data);
        if (rc < 0) return rc;
    }
    return rc;
}

/* ---- charts: what each chart names ---- */

/* artifacthub.io/images: a YAML list in a string. It is parsed as the value of a key (indented
 * under "images:") since yamlj_parse wants a mapping at the top. */
static int annotation_images(json_t *ann, const char *what, img_list *found, img_list *unresolved)
{
    json_t *list = NULL, *doc = NULL;
    if (json_is_array(ann)) {
        list = ann;
    } else if (json_is_string(ann)) {
        const char *s = json_string_value(ann), *end = s + json_string_length(ann);
        sbuf b = {0};
        int rc = sb_put(&b, "images:\n", 8);
        for (const char *p = s; p < end && rc == 0; p++) {
            const char *le = memchr(p, '\n', (size_t)(end - p));
            if (!le) le = end;
            bool marker = p == s && le - p >= 3 && !memcmp(p, "---", 3) &&
                          (le - p == 3 || isspace((unsigned char)p[3]));
            if (!marker) rc = sb_put(&b, "  ", 2);
            if (rc == 0 && !marker) rc = sb_put(&b, p, (size_t)(le - p));
            if (rc == 0) rc = sb_put(&b, "\n", 1);
            p = le;
        }
        if (rc == 0) rc = yamlj_parse(b.buf, b.len, what, &doc);
        free(b.buf);
        if (rc < 0) return rc;
        list = json_object_get(doc, "images");
    }
    int rc = 0;
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        const char *image = json_string_value(json_object_get(item, "image"));
        if (image && *image && (rc = add_ref(image, found, unresolved)) < 0) break;
    }
    json_decref(doc);
    return rc;
}

/* A values.yaml "image" value: 1 when it named an image (or an empty placeholder), 0 when it is
 * something else to look into. */
static int image_value(json_t *v, const char *app_version, img_list *found, img_list *unresolved)
{
    char num[64];
    const char *s = scalar_text(v, num, sizeof num);
    if (s) return *s ? (add_ref(s, found, unresolved) < 0 ? -BERR_INTERNAL : 1) : 1;
    if (!json_is_object(v) || !json_object_get(v, "repository")) return 0;
    char nr[64], nt[64], nd[64], ng[64];
    const char *repo = scalar_text(json_object_get(v, "repository"), nr, sizeof nr);
    const char *reg = scalar_text(json_object_get(v, "registry"), ng, sizeof ng);
    const char *tag = scalar_text(json_object_get(v, "tag"), nt, sizeof nt);
    const char *digest = scalar_text(json_object_get(v, "digest"), nd, sizeof nd);
    if (!repo || !*repo) return 1;
    if (tag && !*tag) tag = NULL;
    if (digest && !*digest) digest = NULL;
    if (!tag && !digest && app_version && *app_version) tag = app_version;
    sbuf b = {0};
    int rc = 0;
    if (reg && *reg) {
        rc = sb_put(&b, reg, strlen(reg));
        if (rc == 0 && reg[strlen(reg) - 1] != '/') rc = sb_put(&b, "/", 1);
    }
    if (rc == 0) rc = sb_put(&b, repo, strlen(repo));
    if (rc == 0 && tag) rc = sb_put(&b, ":", 1);
    if (rc == 0 && tag) rc = sb_put(&b, tag, strlen(tag));
    if (rc == 0 && digest) rc = sb_put(&b, "@", 1);
    if (rc == 0 && digest) rc = sb_put(&b, digest, strlen(digest));
    if (rc == 0) rc = add_ref(b.buf, found, unresolved);
    free(b.buf);
    return rc < 0 ? rc : 1;
}

static int walk_values(json_t *v, const char *app_version, img_list *found, img_list *unresolved)
{
    int rc = 0;
    if (json_is_array(v)) {
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item)
        {
            if ((rc = walk_values(item, app_version, found, unresolved)) < 0) return rc;
        }
        return 0;
    }
    if (!json_is_object(v)) return 0;
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        if (!strcmp(key, "image")) {
            rc = image_value(val, app_version, found, unresolved);
            if (rc < 0) return rc;
            if (rc == 1) continue;
        }
        if ((rc = walk_values(val, app_version, found, unresolved)) < 0) return rc;
    }
    return 0;
}

static int unit_images(chart_unit *u, img_list *found, img_list *unresolved)
{
    if (!u->prefix) {
        int rc = img_list_merge(found, &u->found);
        return rc < 0 ? rc : img_list_merge(unresolved, &u->unresolved);
    }
    char what[600];
    json_t *meta = NULL, *values = NULL;
    int rc = 0;
    if (u->chart_yaml && !yaml_blank(u->chart_yaml, u->chart_len)) {
        snprintf(what, sizeof what, "%.400s/Chart.yaml", u->prefix);
        rc = yamlj_parse(u->chart_yaml, u->chart_len, what, &meta);
    }
    char num[64];
    const char *app_version = scalar_text(json_object_get(meta, "appVersion"), num, sizeof num);
    if (rc == 0 && meta) {
        json_t *ann =
            json_object_get(json_object_get(meta, "annotations"), "artifacthub.io/images");
        snprintf(what, sizeof what, "%.400s/Chart.yaml: annotation artifacthub.io/images",
                 u->prefix);
        if (ann) rc = annotation_images(ann, what, found, unresolved);
    }
    if (rc == 0 && u->values_yaml && !yaml_blank(u->values_yaml, u->values_len)) {
        snprintf(what, sizeof what, "%.400s/values.yaml", u->prefix);
        rc = yamlj_parse(u->values_yaml, u->values_len, what, &values);
        if (rc == 0) rc = walk_values(values, app_version, found, unresolved);
    }
    for (size_t i = 0; rc == 0 && i < u->tmpl.n; i++)
        rc = add_ref(u->tmpl.items[i], found, unresolved);
    json_decref(values);
    json_decref(meta);
    return rc;
}

static int scan_archive(int fd, scan_ctx *c, int nest, img_list *found, img_list *unresolved)
{
    if (lseek(fd, 0, SEEK_SET) < 0) return berr_set(BERR_IO, "chart archive: %s", strerror(errno));
    tar_reader *r;
    int rc = tar_reader_open(fd, "chart archive", &r);
    if (rc < 0) return rc;
    unit_list units = {0};
    rc = collect(r, c, nest, &units);
    tar_reader_close(r);
    /* the top chart first, then subcharts level by level, each level in archive order */
    int max_depth = 0;
    for (size_t i = 0; i < units.n; i++)
        if (units.u[i].depth > max_depth) max_depth = units.u[i].depth;
    for (int d = 0; rc >= 0 && d <= max_depth; d++)
        for (size_t i = 0; rc >= 0 && i < units.n; i++)
            if (units.u[i].depth == d) rc = unit_images(&units.u[i], found, unresolved);
    units_free(&units);
    return rc < 0 ? rc : 0;
}

int images_from_chart(int fd, img_list *found, img_list *unresolved)
{
    scan_ctx c = {0};
    return scan_archive(fd, &c, 0, found, unresolved);
}
