/*
 * ingest: the one way in for manifests (see ingest.h for the hook order).
 *
 * Invariants: nothing reaches store_manifest_put except through ingest_manifest; every
 * pre-commit hook has returned 0 before the store is asked; the hook table only grows, and is
 * read under a read lock (registration takes the write lock), so hooks may be added while
 * ingests run. The built-in hooks (layer URLs here, margo, Helm) are registered once, on the
 * first ingest, so CLI commands (sync, bundle import) get them without start-up code.
 */
#include "registry/ingest.h"
#include "helm/helm.h"
#include "margo/margo.h"
#include "registry/registry.h"
#include "util/err.h"
#include "util/log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HOOKS 32

typedef struct {
    ingest_phase phase;
    int order;
    unsigned seq;
    const char *name;
    ingest_hook_fn fn;
    void *arg;
} hook;

static hook hooks[MAX_HOOKS]; /* sorted by (phase, order, seq) */
static size_t nhooks;
static unsigned hook_seq;
static pthread_rwlock_t hooks_lock = PTHREAD_RWLOCK_INITIALIZER;
static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;

struct ingest_defer {
    void *p;
    struct ingest_defer *next;
};

typedef struct {
    ingest_ctx c;
    reg_manifest_parsed *parsed;
} ingest_state;

const char *ingest_source_name(ingest_source s)
{
    switch (s) {
    case INGEST_PUSH:
        return "push";
    case INGEST_MIRROR:
        return "mirror";
    case INGEST_HELM_UPLOAD:
        return "helm-upload";
    case INGEST_HELM_MIRROR:
        return "helm-mirror";
    case INGEST_BUNDLE:
        return "bundle";
    }
    return "?";
}

static bool hook_before(const hook *a, const hook *b)
{
    if (a->phase != b->phase) return a->phase < b->phase;
    if (a->order != b->order) return a->order < b->order;
    return a->seq < b->seq;
}

int ingest_hook_add(ingest_phase phase, int order, const char *name, ingest_hook_fn fn, void *arg)
{
    if (phase >= INGEST_NPHASES || !fn) return berr_set(BERR_INTERNAL, "ingest hook %s", name);
    pthread_rwlock_wrlock(&hooks_lock);
    if (nhooks == MAX_HOOKS) {
        pthread_rwlock_unlock(&hooks_lock);
        return berr_set(BERR_INTERNAL, "more than %d ingest hooks", MAX_HOOKS);
    }
    hook h = {phase, order, hook_seq++, name, fn, arg};
    size_t i = nhooks;
    while (i > 0 && hook_before(&h, &hooks[i - 1])) {
        hooks[i] = hooks[i - 1];
        i--;
    }
    hooks[i] = h;
    nhooks++;
    pthread_rwlock_unlock(&hooks_lock);
    return 0;
}

void ingest_defer_free(ingest_ctx *c, void *p)
{
    if (!p) return;
    struct ingest_defer *d = malloc(sizeof *d);
    if (!d) { /* cannot defer: the caller's string stays referenced, so leak rather than free */
        log_warn("msg=\"ingest: out of memory deferring a free\"");
        return;
    }
    d->p = p;
    d->next = c->defer;
    c->defer = d;
}

int ingest_blob_ensure(ingest_ctx *c, const char *digest)
{
    if (!c->in->blob_ensure) return 0;
    return c->in->blob_ensure(c->in->blob_arg, digest);
}

/* registry:2's layer URL rule applies to what clients push, not to what upstreams serve. */
static int urls_hook(ingest_ctx *c, void *arg)
{
    (void)arg;
    if (c->in->mirrored) return 0;
    const ingest_state *s = (const ingest_state *)c;
    return reg_manifest_check_urls(s->parsed, &c->cfg->validation);
}

static void builtin_hooks(void)
{
    ingest_hook_add(INGEST_VALIDATE, 0, "layer-urls", urls_hook, NULL);
    margo_ingest_register();
    helm_ingest_register();
}

/* Runs the hooks of one phase; stops at the first refusal (pre-commit phases). */
static int run_phase(ingest_ctx *c, ingest_phase phase)
{
    int rc = 0;
    pthread_rwlock_rdlock(&hooks_lock);
    for (size_t i = 0; i < nhooks && rc == 0; i++) {
        if (hooks[i].phase != phase) continue;
        rc = hooks[i].fn(c, hooks[i].arg);
        if (rc < 0 && phase == INGEST_COMMITTED) {
            log_warn("msg=\"ingest hook failed after the commit\" hook=%s repo=%s digest=%s "
                     "err=\"%s\"",
                     hooks[i].name, c->in->repo, c->in->digest, berr_msg());
            berr_clear();
            rc = 0;
        }
    }
    pthread_rwlock_unlock(&hooks_lock);
    return rc;
}

int ingest_manifest(store *st, const config *cfg, const ingest_req *q, ingest_result *res)
{
    pthread_once(&builtin_once, builtin_hooks);
    store_manifest_put_req req;
    ingest_state s = {.c = {.st = st, .cfg = cfg, .in = q, .put = &req}};
    int rc = reg_manifest_parse(q->content, q->len, q->content_type, &req, &s.parsed);
    if (rc < 0) return rc;
    req.repo = q->repo;
    req.digest = q->digest;
    req.tags = q->tags;
    req.ntags = q->ntags;
    req.mirrored = q->mirrored;
    req.new_blobs = q->new_blobs;
    req.nnew_blobs = q->nnew_blobs;
    req.absent_repos = q->absent_repos;
    req.absent_tags = q->absent_tags;
    req.nabsent = q->nabsent;
    req.chart_tag = q->chart_tag;
    req.chart_entry = q->chart_entry;
    req.chart_yaml = q->chart_yaml;
    rc = run_phase(&s.c, INGEST_VALIDATE);
    if (rc == 0) rc = run_phase(&s.c, INGEST_POLICY);
    if (rc == 0) rc = store_manifest_put(st, &req);
    if (rc == 0 && res) {
        snprintf(res->subject, sizeof res->subject, "%s", req.subject ? req.subject : "");
        snprintf(res->media_type, sizeof res->media_type, "%s", req.media_type);
    }
    if (rc == 0) run_phase(&s.c, INGEST_COMMITTED);
    while (s.c.defer) {
        struct ingest_defer *d = s.c.defer;
        s.c.defer = d->next;
        free(d->p);
        free(d);
    }
    reg_manifest_parsed_free(s.parsed);
    return rc;
}
