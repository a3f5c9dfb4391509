/*
 * helm/index: index.yaml and the chart listings, as views over the store's chart entries.
 *
 * Every chart manifest carries its entry (JSON), so a view is one metadata query, a sort (names,
 * then SemVer precedence, newest first) and the YAML written out; nothing reads blobs or scans
 * storage. A view is cached per tenant and reused until the store's chart generation (moved by
 * triggers on every change to charts, from any process) differs, so a GET of an unchanged index
 * costs one small query and a copy of the bytes. Views are reference-counted and immutable, so
 * requests read them without locks.
 */
#include "helm/helm.h"
#include "util/err.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- text buffer ---- */

void helm_buf_add(helm_buf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *nb = realloc(b->buf, cap);
        if (!nb) {
            b->oom = true;
            return;
        }
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

void helm_buf_addf(helm_buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        helm_buf_add(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    helm_buf_add(b, big, (size_t)n);
    free(big);
}

/* ---- YAML writing ---- */

/* A string that YAML reads back as the same string when written plain: starts with a letter,
 * holds only unremarkable characters, and is not a word YAML 1.1 resolves to a bool or null. */
static bool plain_safe(const char *s)
{
    static const char *const words[] = {"y",   "yes", "n",    "no",    "true", "false",
                                        "on",  "off", "null", "nan",   "inf"};
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z'))) return false;
    size_t n = strlen(s);
    if (n > 200) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' || c == '_' || c == '/' || c == '+' || c == '@' ||
                  (c == ':' && s[i + 1] && s[i + 1] != ' ') || (c == ' ' && s[i + 1] != '#' && s[i + 1]);
        if (!ok) return false;
    }
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (!strcasecmp(s, words[i])) return false;
    return true;
}

void helm_yaml_scalar(helm_buf *b, json_t *v)
{
    if (json_is_string(v) && plain_safe(json_string_value(v))) {
        helm_buf_add(b, json_string_value(v), json_string_length(v));
        return;
    }
    /* JSON's string escapes are valid in YAML double-quoted scalars; numbers, booleans and null
     * are the same in both */
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!s) {
        b->oom = true;
        return;
    }
    helm_buf_add(b, s, strlen(s));
    free(s);
}

static void pad(helm_buf *b, int n)
{
    static const char sp[] = "                                                                ";
    while (n > 0) {
        int k = n < 64 ? n : 64;
        helm_buf_add(b, sp, (size_t)k);
        n -= k;
    }
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void yaml_key(helm_buf *b, const char *k)
{
    json_t *ks = json_string(k);
    helm_yaml_scalar(b, ks);
    json_decref(ks);
    helm_buf_add(b, ":", 1);
}

static void yaml_map(helm_buf *b, json_t *o, int indent, bool first_inline);

/* A value after "key:" (on the same line for scalars and empty collections). */
static void yaml_after_key(helm_buf *b, json_t *v, int indent)
{
    if (json_is_object(v) && json_object_size(v) > 0) {
        helm_buf_add(b, "\n", 1);
        yaml_map(b, v, indent + 2, false);
    } else if (json_is_array(v) && json_array_size(v) > 0) {
        helm_buf_add(b, "\n", 1);
        helm_yaml_value(b, v, indent); /* sequences in a mapping are not indented, as Go writes */
    } else if (json_is_object(v)) {
        helm_buf_add(b, " {}\n", 4);
    } else if (json_is_array(v)) {
        helm_buf_add(b, " []\n", 4);
    } else {
        helm_buf_add(b, " ", 1);
        helm_yaml_scalar(b, v);
        helm_buf_add(b, "\n", 1);
    }
}

static void yaml_map(helm_buf *b, json_t *o, int indent, bool first_inline)
{
    size_t n = json_object_size(o), i = 0;
    const char **keys = malloc((n ? n : 1) * sizeof *keys);
    if (!keys) {
        b->oom = true;
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) keys[i++] = k;
    qsort(keys, n, sizeof *keys, key_cmp);
    for (i = 0; i < n; i++) {
        if (!(first_inline && i == 0)) pad(b, indent);
        yaml_key(b, keys[i]);
        yaml_after_key(b, json_object_get(o, keys[i]), indent);
    }
    free(keys);
}

void helm_yaml_value(helm_buf *b, json_t *v, int indent)
{
    if (json_is_object(v)) {
        if (json_object_size(v) == 0) {
            pad(b, indent);
            helm_buf_add(b, "{}\n", 3);
        } else {
            yaml_map(b, v, indent, false);
        }
        return;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *it;
        json_array_foreach(v, i, it)
        {
            pad(b, indent);
            helm_buf_add(b, "- ", 2);
            if (json_is_object(it) && json_object_size(it) > 0) {
                yaml_map(b, it, indent + 2, true);
            } else if (json_is_array(it) && json_array_size(it) > 0) {
                helm_buf_add(b, "\n", 1);
                helm_yaml_value(b, it, indent + 2);
            } else if (json_is_object(it)) {
                helm_buf_add(b, "{}\n", 3);
            } else if (json_is_array(it)) {
                helm_buf_add(b, "[]\n", 3);
            } else {
                helm_yaml_scalar(b, it);
                helm_buf_add(b, "\n", 1);
            }
        }
        return;
    }
    pad(b, indent);
    helm_yaml_scalar(b, v);
    helm_buf_add(b, "\n", 1);
}

/* ---- views ---- */

static pthread_mutex_t views_mu = PTHREAD_MUTEX_INITIALIZER;
static helm_view *views; /* the current view of each tenant */

typedef struct {
    helm_version v;
    json_t *entry;
} row;

static int row_cmp(const void *pa, const void *pb)
{
    const row *a = pa, *b = pb;
    int c = strcmp(a->v.name, b->v.name);
    if (c) return c;
    return -helm_semver_cmp(a->v.version, b->v.version);
}

static void view_free(helm_view *v)
{
    if (!v) return;
    for (size_t i = 0; i < v->nversions; i++) {
        free((char *)v->versions[i].json);
        free((char *)v->versions[i].repo);
        free((char *)v->versions[i].tag);
        free((char *)v->versions[i].digest);
        /* name and version point into json-derived copies */
        free((char *)v->versions[i].name);
        free((char *)v->versions[i].version);
    }
    free(v->versions);
    free(v->charts);
    free(v->yaml);
    free(v->tenant);
    free(v);
}

void helm_view_put(helm_view *v)
{
    if (!v) return;
    if (__atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) == 0) view_free(v);
}

static int view_build(store *s, const config *cfg, const char *tenant, int64_t gen, helm_view **out)
{
    char prefix[512];
    if (*tenant)
        snprintf(prefix, sizeof prefix, "%s/%s/", cfg->helm.oci_prefix, tenant);
    else
        snprintf(prefix, sizeof prefix, "%s/", cfg->helm.oci_prefix);
    store_chart_list l;
    int rc = store_charts(s, prefix, &l);
    if (rc < 0) return rc;
    size_t plen = strlen(prefix);
    row *rows = calloc(l.n ? l.n : 1, sizeof *rows);
    size_t nrows = 0;
    if (!rows) {
        store_chart_list_free(&l);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    for (size_t i = 0; i < l.n; i++) {
        const char *name = l.items[i].repo + plen;
        if (strchr(name, '/')) continue; /* another tenant's, deeper down */
        json_t *e = json_loads(l.items[i].entry, 0, NULL);
        const char *ver = json_string_value(json_object_get(e, "version"));
        if (!e || !ver) {
            json_decref(e);
            continue;
        }
        row *r = &rows[nrows++];
        r->entry = e;
        r->v.name = strdup(name);
        r->v.version = strdup(ver);
        r->v.json = l.items[i].entry;
        r->v.repo = l.items[i].repo;
        r->v.tag = l.items[i].tag;
        r->v.digest = strdup(l.items[i].digest);
        l.items[i].entry = l.items[i].repo = l.items[i].tag = NULL; /* moved */
    }
    store_chart_list_free(&l);
    qsort(rows, nrows, sizeof *rows, row_cmp);
    helm_view *v = calloc(1, sizeof *v);
    if (!v) rc = berr_set(BERR_INTERNAL, "out of memory");
    if (v) {
        v->gen = gen;
        v->tenant = strdup(tenant);
        v->refs = 1;
        v->versions = calloc(nrows ? nrows : 1, sizeof *v->versions);
        v->charts = calloc(nrows ? nrows : 1, sizeof *v->charts);
        if (!v->versions || !v->charts || !v->tenant) rc = berr_set(BERR_INTERNAL, "out of memory");
    }
    helm_buf b = {0};
    if (rc == 0) {
        helm_buf_add(&b, "apiVersion: v1\n", 15);
        helm_buf_add(&b, nrows ? "entries:\n" : "entries: {}\n", nrows ? 9 : 12);
        for (size_t i = 0; i < nrows; i++) {
            bool first = i == 0 || strcmp(rows[i].v.name, v->versions[i - 1].name) != 0;
            if (first) {
                pad(&b, 2);
                yaml_key(&b, rows[i].v.name);
                helm_buf_add(&b, "\n", 1);
                v->charts[v->ncharts].name = rows[i].v.name;
                v->charts[v->ncharts].versions = &v->versions[i];
                v->ncharts++;
            }
            v->charts[v->ncharts - 1].n++;
            pad(&b, 2);
            helm_buf_add(&b, "- ", 2);
            yaml_map(&b, rows[i].entry, 4, true);
            v->versions[i] = rows[i].v;
            v->nversions++;
            rows[i].v = (helm_version){0};
        }
        char now[64];
        helm_now_rfc3339(now, sizeof now);
        helm_buf_addf(&b, "generated: \"%s\"\nserverInfo: {}\n", now);
        if (b.oom) rc = berr_set(BERR_INTERNAL, "out of memory");
    }
    for (size_t i = 0; i < nrows; i++) {
        json_decref(rows[i].entry);
        free((char *)rows[i].v.name);
        free((char *)rows[i].v.version);
        free((char *)rows[i].v.json);
        free((char *)rows[i].v.repo);
        free((char *)rows[i].v.tag);
        free((char *)rows[i].v.digest);
    }
    free(rows);
    if (rc < 0) {
        free(b.buf);
        view_free(v);
        return rc;
    }
    v->yaml = b.buf;
    v->yaml_len = b.len;
    *out = v;
    return 0;
}

int helm_view_get(store *s, const config *cfg, const char *tenant, helm_view **out)
{
    int64_t gen;
    int rc = store_charts_gen(s, &gen);
    if (rc < 0) return rc;
    pthread_mutex_lock(&views_mu);
    for (helm_view *v = views; v; v = v->next) {
        if (!strcmp(v->tenant, tenant) && v->gen == gen) {
            __atomic_add_fetch(&v->refs, 1, __ATOMIC_ACQ_REL);
            pthread_mutex_unlock(&views_mu);
            *out = v;
            return 0;
        }
    }
    pthread_mutex_unlock(&views_mu);
    helm_view *nv;
    rc = view_build(s, cfg, tenant, gen, &nv);
    if (rc < 0) return rc;
    nv->refs = 2; /* the cache's and the caller's */
    pthread_mutex_lock(&views_mu);
    helm_view **pp = &views;
    while (*pp && strcmp((*pp)->tenant, tenant) != 0)
        pp = &(*pp)->next;
    if (*pp && (*pp)->gen > gen) {
        /* a newer view arrived meanwhile: keep it, hand out ours once */
        nv->refs = 1;
    } else {
        helm_view *old = *pp;
        nv->next = old ? old->next : NULL;
        *pp = nv;
        if (old) helm_view_put(old);
    }
    pthread_mutex_unlock(&views_mu);
    *out = nv;
    return 0;
}

void helm_views_free(void)
{
    pthread_mutex_lock(&views_mu);
    while (views) {
        helm_view *n = views->next;
        helm_view_put(views);
        views = n;
    }
    pthread_mutex_unlock(&views_mu);
}

const helm_chart *helm_view_chart(const helm_view *v, const char *name)
{
    size_t lo = 0, hi = v->ncharts;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(v->charts[mid].name, name);
        if (c == 0) return &v->charts[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const helm_version *helm_view_version(const helm_view *v, const char *name, const char *version)
{
    const helm_chart *c = helm_view_chart(v, name);
    if (!c || c->n == 0) return NULL;
    if (!strcmp(version, "latest")) return &c->versions[0];
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->versions[i].version, version)) return &c->versions[i];
    return NULL;
}
