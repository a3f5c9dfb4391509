/*
 * helm/index: index.yaml and the chart listings, as views over the store's chart entries.
 *
 * Every chart manifest carries its entry, as JSON and as rendered index.yaml text, written once
 * when the chart is stored. A view (one per tenant) holds the charts sorted by name, each with
 * its versions sorted by SemVer precedence (newest first) and its block of index.yaml, plus the
 * whole index.yaml. The store logs every change to charts by repository (triggers, so changes by
 * any process count); a request that finds the log ahead of its view builds the next view by
 * re-reading only the charts logged since, sharing every other chart with the old view, and
 * concatenating the blocks. Nothing parses entries, reads blobs or scans storage, and an
 * unchanged index costs one small query. Views and charts are reference-counted and immutable,
 * so requests read them without locks; a response sends the blocks with writev, never copying
 * or concatenating them.
 */
#include "helm/helm.h"
#include "util/err.h"
#include "util/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void helm_yaml_entry(strbuf *b, json_t *entry)
{
    yamlj_list_item(b, entry, 2);
}

/* ---- views ---- */

static pthread_mutex_t views_mu = PTHREAD_MUTEX_INITIALIZER;
static helm_view *views; /* the current view of each tenant */

#define MAX_INCREMENTAL 2000 /* more changed charts than this: rebuild the view */

static void chart_put(helm_chart *c)
{
    if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    for (size_t i = 0; i < c->n; i++) {
        helm_version *v = &c->versions[i];
        free((char *)v->version);
        free((char *)v->json);
        free((char *)v->repo);
        free((char *)v->tag);
        free((char *)v->digest);
    }
    free(c->versions);
    free((char *)c->name);
    free(c->yaml);
    free(c);
}

static void view_free(helm_view *v)
{
    if (!v) return;
    for (size_t i = 0; i < v->ncharts; i++)
        chart_put(v->charts[i]);
    free(v->charts);
    free(v->iov);
    free(v->tenant);
    free(v);
}

void helm_view_put(helm_view *v)
{
    if (v && __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) == 0) view_free(v);
}

static int version_cmp(const void *pa, const void *pb)
{
    const helm_version *a = pa, *b = pb;
    return -semver_cmp(a->version, b->version); /* newest first */
}

/* Builds one chart (all versions of one repository) from its rows, taking their strings. */
static int chart_build(const char *name, store_chart *rows, size_t n, helm_chart **out)
{
    helm_chart *c = calloc(1, sizeof *c);
    if (!c) return berr_set(BERR_INTERNAL, "out of memory");
    c->refs = 1;
    c->name = strdup(name);
    c->versions = calloc(n ? n : 1, sizeof *c->versions);
    int rc = c->name && c->versions ? 0 : berr_set(BERR_INTERNAL, "out of memory");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        helm_version *v = &c->versions[c->n++];
        char *ver = strdup(rows[i].tag); /* SemVer has no '_': the tag maps back exactly */
        for (char *p = ver; p && *p; p++)
            if (*p == '_') *p = '+';
        v->name = c->name;
        v->version = ver;
        v->json = rows[i].entry;
        v->repo = rows[i].repo;
        v->tag = rows[i].tag;
        v->digest = strdup(rows[i].digest);
        v->yaml = rows[i].yaml;
        rows[i].entry = rows[i].repo = rows[i].tag = NULL; /* moved; yaml stays with the row */
        if (!ver || !v->digest) rc = berr_set(BERR_INTERNAL, "out of memory");
    }
    if (rc == 0) {
        qsort(c->versions, c->n, sizeof *c->versions, version_cmp);
        strbuf b = {0};
        yamlj_key(&b, c->name, 2);
        strbuf_add(&b, "\n", 1);
        for (size_t i = 0; i < c->n; i++) {
            strbuf_add(&b, c->versions[i].yaml, strlen(c->versions[i].yaml));
            c->versions[i].yaml = NULL; /* points into the rows, freed with them */
        }
        c->yaml = b.buf;
        c->yaml_len = b.len;
        if (b.oom) rc = berr_set(BERR_INTERNAL, "out of memory");
    }
    for (size_t i = 0; i < c->n; i++)
        c->versions[i].yaml = NULL;
    if (rc < 0) {
        chart_put(c);
        return rc;
    }
    *out = c;
    return 0;
}

static int row_cmp(const void *pa, const void *pb)
{
    const store_chart *a = pa, *b = pb;
    return strcmp(a->repo, b->repo);
}

static void prefix_of(const config *cfg, const char *tenant, char *out, size_t len)
{
    if (*tenant)
        snprintf(out, len, "%s/%s/", cfg->helm.oci_prefix, tenant);
    else
        snprintf(out, len, "%s/", cfg->helm.oci_prefix);
}

/* Groups rows by repository into charts (rows sorted by repo); skips deeper tenants' rows. */
static int charts_from_rows(store_chart_list *l, size_t plen, helm_chart ***out, size_t *nout)
{
    if (l->n > 1) qsort(l->items, l->n, sizeof *l->items, row_cmp);
    helm_chart **cs = calloc(l->n ? l->n : 1, sizeof *cs);
    size_t n = 0;
    if (!cs) return berr_set(BERR_INTERNAL, "out of memory");
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < l->n;) {
        size_t j = i + 1;
        while (j < l->n && !strcmp(l->items[j].repo, l->items[i].repo))
            j++;
        const char *name = l->items[i].repo + plen;
        if (!strchr(name, '/')) {
            char nm[HELM_NAME_MAX + 1];
            snprintf(nm, sizeof nm, "%s", name);
            rc = chart_build(nm, &l->items[i], j - i, &cs[n]);
            if (rc == 0) n++;
        }
        i = j;
    }
    if (rc < 0) {
        for (size_t k = 0; k < n; k++)
            chart_put(cs[k]);
        free(cs);
        return rc;
    }
    *out = cs;
    *nout = n;
    return 0;
}

/* index.yaml as pieces: nothing is copied, whatever the number of charts. */
static int render(helm_view *v)
{
    v->iov = calloc(v->ncharts + 2, sizeof *v->iov);
    if (!v->iov) return berr_set(BERR_INTERNAL, "out of memory");
    snprintf(v->head, sizeof v->head, "apiVersion: v1\n%s",
             v->ncharts ? "entries:\n" : "entries: {}\n");
    char now[64];
    helm_now_rfc3339(now, sizeof now);
    snprintf(v->foot, sizeof v->foot, "generated: \"%s\"\nserverInfo: {}\n", now);
    v->iov[v->niov++] = (http_iovec){v->head, strlen(v->head)};
    for (size_t i = 0; i < v->ncharts; i++)
        v->iov[v->niov++] = (http_iovec){v->charts[i]->yaml, v->charts[i]->yaml_len};
    v->iov[v->niov++] = (http_iovec){v->foot, strlen(v->foot)};
    v->yaml_len = 0;
    for (unsigned int i = 0; i < v->niov; i++)
        v->yaml_len += v->iov[i].len;
    return 0;
}

static helm_view *view_new(const char *tenant, int64_t gen)
{
    helm_view *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->gen = gen;
    v->refs = 1;
    v->tenant = strdup(tenant);
    if (!v->tenant) {
        free(v);
        return NULL;
    }
    return v;
}

static int view_full(store *s, const config *cfg, const char *tenant, int64_t gen, helm_view **out)
{
    char prefix[512];
    prefix_of(cfg, tenant, prefix, sizeof prefix);
    store_chart_list l;
    int rc = store_charts(s, prefix, &l);
    if (rc < 0) return rc;
    helm_view *v = view_new(tenant, gen);
    if (!v) rc = berr_set(BERR_INTERNAL, "out of memory");
    if (rc == 0) rc = charts_from_rows(&l, strlen(prefix), &v->charts, &v->ncharts);
    store_chart_list_free(&l);
    if (rc == 0) rc = render(v);
    if (rc < 0) {
        view_free(v);
        return rc;
    }
    *out = v;
    return 0;
}

static int chart_name_cmp(const void *key, const void *elem)
{
    return strcmp(key, (*(helm_chart *const *)elem)->name);
}

/* A new view from old: the charts of the repositories that changed after old->gen are read
 * again; every other chart is shared with old. -BERR_UNAVAILABLE when a rebuild is cheaper. */
static int view_update(store *s, const config *cfg, const helm_view *old, int64_t gen,
                       helm_view **out)
{
    char prefix[512];
    prefix_of(cfg, old->tenant, prefix, sizeof prefix);
    size_t plen = strlen(prefix);
    store_list changed;
    int rc = store_charts_changes(s, old->gen, prefix, &changed);
    if (rc < 0) return rc;
    if (changed.n > MAX_INCREMENTAL) {
        store_list_free(&changed);
        return -BERR_UNAVAILABLE;
    }
    helm_view *v = view_new(old->tenant, gen);
    size_t cap = old->ncharts + changed.n;
    if (v) v->charts = calloc(cap ? cap : 1, sizeof *v->charts);
    if (!v || !v->charts) {
        view_free(v);
        store_list_free(&changed);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    for (size_t i = 0; i < old->ncharts; i++) {
        v->charts[v->ncharts++] = old->charts[i];
        __atomic_add_fetch(&old->charts[i]->refs, 1, __ATOMIC_ACQ_REL);
    }
    for (size_t k = 0; rc == 0 && k < changed.n; k++) {
        const char *name = changed.items[k] + plen;
        if (strchr(name, '/')) continue; /* a deeper tenant's */
        store_chart_list l;
        rc = store_charts_repo(s, changed.items[k], &l);
        helm_chart *c = NULL;
        if (rc == 0 && l.n) rc = chart_build(name, l.items, l.n, &c);
        store_chart_list_free(&l);
        if (rc < 0) break;
        helm_chart **at = bsearch(name, v->charts, v->ncharts, sizeof *v->charts, chart_name_cmp);
        if (at) {
            chart_put(*at);
            if (c) {
                *at = c;
            } else { /* the chart's last version went */
                size_t idx = (size_t)(at - v->charts);
                memmove(at, at + 1, (v->ncharts - idx - 1) * sizeof *at);
                v->ncharts--;
            }
        } else if (c) {
            size_t idx = 0;
            while (idx < v->ncharts && strcmp(v->charts[idx]->name, name) < 0)
                idx++;
            memmove(&v->charts[idx + 1], &v->charts[idx], (v->ncharts - idx) * sizeof *v->charts);
            v->charts[idx] = c;
            v->ncharts++;
        }
    }
    store_list_free(&changed);
    if (rc == 0) rc = render(v);
    if (rc < 0) {
        view_free(v);
        return rc;
    }
    *out = v;
    return 0;
}

int helm_view_get(store *s, const config *cfg, const char *tenant, helm_view **out)
{
    int64_t gen, oldest;
    int rc = store_charts_gen(s, &gen, &oldest);
    if (rc < 0) return rc;
    helm_view *cur = NULL;
    pthread_mutex_lock(&views_mu);
    for (helm_view *v = views; v; v = v->next) {
        if (!strcmp(v->tenant, tenant)) {
            cur = v;
            __atomic_add_fetch(&cur->refs, 1, __ATOMIC_ACQ_REL);
            break;
        }
    }
    pthread_mutex_unlock(&views_mu);
    if (cur && cur->gen == gen) {
        *out = cur;
        return 0;
    }
    /* the view is labelled with gen, read before the data: a change racing with this read is
     * applied again by the next request, which is harmless */
    helm_view *nv = NULL;
    rc = -BERR_UNAVAILABLE;
    if (cur && cur->gen >= oldest - 1) rc = view_update(s, cfg, cur, gen, &nv);
    if (rc == -BERR_UNAVAILABLE) rc = view_full(s, cfg, tenant, gen, &nv);
    helm_view_put(cur);
    if (rc < 0) return rc;
    metrics_inc(METRIC_HELM_REBUILDS);
    nv->refs = 2; /* the cache's and the caller's */
    pthread_mutex_lock(&views_mu);
    helm_view **pp = &views;
    while (*pp && strcmp((*pp)->tenant, tenant) != 0)
        pp = &(*pp)->next;
    if (*pp && (*pp)->gen >= gen) {
        nv->refs = 1; /* as new or newer arrived meanwhile: keep it, hand out ours once */
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

void helm_views_warm(store *s, const config *cfg)
{
    char tenants[16][256];
    size_t n = 0;
    pthread_mutex_lock(&views_mu);
    for (helm_view *v = views; v && n < 16; v = v->next)
        snprintf(tenants[n++], sizeof tenants[0], "%s", v->tenant);
    pthread_mutex_unlock(&views_mu);
    if (n == 0 && cfg->helm.depth == 0) tenants[n++][0] = '\0';
    for (size_t i = 0; i < n; i++) {
        helm_view *v;
        if (helm_view_get(s, cfg, tenants[i], &v) == 0) helm_view_put(v);
    }
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
    helm_chart **at = bsearch(name, v->charts, v->ncharts, sizeof *v->charts, chart_name_cmp);
    return at ? *at : NULL;
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
