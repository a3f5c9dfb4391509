/*
 * trust/bundle: trust policies over an air-gap bundle, before anything of it is written.
 * The bundle's plan (bundle/layout.h) is the source: a manifest is found by repository and tag
 * or digest, a referrer by its subject field, a parent by an index's manifests list, and a blob
 * from the bytes the layout pass kept in memory (small JSON blobs such as cosign payloads) or
 * from a layout directory's file, each checked against its digest. Invariant: a bundle holding
 * a manifest an enforcing policy does not accept is refused whole (the import writes nothing);
 * signatures and attestations are never subjects themselves.
 */
#include "bundle/bundle.h"
#include "bundle/layout.h"
#include "config.h"
#include "trust/trust.h"
#include "util/err.h"
#include "util/metrics.h"
#include "util/file.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const step *find_step(const plan *p, const char *repo, const char *ref)
{
    bool dg = ref_is_digest(ref);
    for (size_t i = 0; i < p->n; i++) {
        const step *s = &p->v[i];
        if (strcmp(s->repo, repo) != 0) continue;
        if (dg ? !strcmp(s->m->digest, ref) : !strcmp(s->tag, ref)) return s;
    }
    return NULL;
}

static int bs_get(void *arg, const char *repo, const char *ref, char **content, size_t *len,
                  char *digest, char *media_type)
{
    const plan *p = ((const void *const *)arg)[1];
    const step *s = find_step(p, repo, ref);
    if (!s || !s->m->mem)
        return berr_set(BERR_MANIFEST_UNKNOWN, "%s:%s not in the bundle", repo, ref);
    *content = malloc(s->m->size + 1);
    if (!*content) abort();
    memcpy(*content, s->m->mem, s->m->size);
    *len = s->m->size;
    snprintf(digest, DIGEST_STR_MAX, "%s", s->m->digest);
    snprintf(media_type, 256, "%s", s->mt ? s->mt : "");
    return 0;
}

/* steps of repo whose manifest has digest as its subject (want_subject) or lists it (an index) */
static int bs_scan(const plan *p, const char *repo, const char *digest, bool want_subject,
                   char (**out)[72], size_t *n)
{
    *out = calloc(p->n + 1, sizeof **out);
    if (!*out) abort();
    *n = 0;
    for (size_t i = 0; i < p->n; i++) {
        const step *s = &p->v[i];
        if (strcmp(s->repo, repo) != 0 || !s->m->mem) continue;
        json_t *j = json_loadb(s->m->mem, s->m->size, 0, NULL);
        bool hit = false;
        if (want_subject) {
            const char *sd =
                json_string_value(json_object_get(json_object_get(j, "subject"), "digest"));
            hit = sd && !strcmp(sd, digest);
        } else {
            size_t k;
            json_t *d;
            json_array_foreach(json_object_get(j, "manifests"), k, d)
            {
                const char *cd = json_string_value(json_object_get(d, "digest"));
                if (cd && !strcmp(cd, digest)) hit = true;
            }
        }
        json_decref(j);
        bool dup = false;
        for (size_t k = 0; hit && k < *n; k++)
            dup = dup || !strcmp((*out)[k], s->m->digest);
        if (hit && !dup) snprintf((*out)[(*n)++], 72, "%s", s->m->digest);
    }
    return 0;
}

static int bs_referrers(void *arg, const char *repo, const char *digest, char (**out)[72],
                        size_t *n)
{
    return bs_scan(((const void *const *)arg)[1], repo, digest, true, out, n);
}

static int bs_parents(void *arg, const char *repo, const char *digest, char (**out)[72], size_t *n)
{
    return bs_scan(((const void *const *)arg)[1], repo, digest, false, out, n);
}

static int bs_read(void *arg, const char *repo, const char *digest, size_t max, char **out,
                   size_t *outlen)
{
    (void)repo;
    const bundle *b = ((const void *const *)arg)[0];
    bblob *x = layout_find(b, digest);
    char *buf = NULL;
    size_t len = 0;
    if (x && x->mem && x->size <= max) {
        buf = malloc(x->size + 1);
        if (!buf) abort();
        memcpy(buf, x->mem, x->size);
        len = x->size;
    } else if (b->dir) {
        char rel[DIGEST_STR_MAX + 16], path[4400];
        layout_blob_path(digest, rel, sizeof rel);
        snprintf(path, sizeof path, "%s/%s", b->path, rel);
        if (!(buf = file_read_all(path, &len)) || len > max) {
            free(buf);
            return berr_set(BERR_BLOB_UNKNOWN, "blob %s cannot be read from the bundle", digest);
        }
    } else {
        return berr_set(BERR_BLOB_UNKNOWN, "blob %s is not in the bundle, or too large", digest);
    }
    digest_algo algo;
    char got[DIGEST_STR_MAX];
    if (digest_parse(digest, &algo) < 0 ||
        (digest_buf(algo, buf, len, got), strcmp(got, digest) != 0)) {
        free(buf);
        return berr_set(BERR_DIGEST_INVALID, "blob %s does not match its digest", digest);
    }
    *out = buf;
    *outlen = len;
    return 0;
}

int trust_bundle_check(const config *cfg, const void *bundle_, const void *plan_, FILE *out)
{
    const bundle *b = bundle_;
    const plan *p = plan_;
    if (!cfg->trust.npolicies) return 0;
    const void *arg[2] = {b, p};
    trust_source src = {bs_get, bs_referrers, bs_parents, bs_read, (void *)arg};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < p->n; i++) {
        const step *s = &p->v[i];
        if (!s->m->mem) continue;
        trust_verdict v;
        rc = trust_check(cfg, &src, s->repo, s->m->digest, s->mt, s->m->mem, s->m->size, &v, NULL,
                         NULL);
        if (rc < 0 || !v.policy) continue;
        char name[1000];
        snprintf(name, sizeof name, "%s%s%s (%s)", s->repo, s->tag[0] ? ":" : "@",
                 s->tag[0] ? s->tag : s->m->digest, s->m->digest);
        if (out && v.accepted)
            fprintf(out, "%s: policy '%s': accepted: signed by %s\n", name, v.policy, v.signer);
        if (v.accepted) continue;
        if (out)
            fprintf(out, "%s: policy '%s' (%s): NOT MET: %s\n", name, v.policy,
                    v.warn ? "warn" : "enforce", v.reason);
        if (!v.warn) {
            /* a denial: counted (an import; `berth bundle verify` prints instead). No store is
             * open yet (nothing is written), so no event: the log and the exit status say it */
            if (!out) metrics_trust_denial(v.policy, "import");
            rc =
                berr_set(BERR_DENIED, "trust policy '%s' refuses %s: %s", v.policy, name, v.reason);
        }
    }
    return rc;
}

int trust_bundle_cli(int argc, char **argv)
{
    const char *cfg_path = NULL, *repo = NULL, *path = NULL;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc)
            cfg_path = argv[++i];
        else if (!strcmp(argv[i], "--repository") && i + 1 < argc)
            repo = argv[++i];
        else if (argv[i][0] != '-' && !path)
            path = argv[i];
        else
            return bundle_cli(argc, argv);
    }
    if (!cfg_path || !path) return bundle_cli(argc, argv);
    config cfg;
    int rc = config_load(&cfg, cfg_path);
    if (rc < 0) {
        fprintf(stderr, "berth bundle verify: %s\n", berr_msg());
        return 2;
    }
    bundle b;
    plan p;
    int fd = -1;
    rc = layout_open(path, &b, &p, repo, false, &fd);
    if (rc == 0) {
        printf("%s: layout good: %zu manifests, %zu blobs\n", path, p.n, b.n);
        rc = trust_bundle_check(&cfg, &b, &p, stdout);
        if (rc == 0) printf("%s: every trust policy is met\n", path);
    }
    if (rc < 0) fprintf(stderr, "berth bundle verify: %s\n", berr_msg());
    if (fd >= 0) close(fd);
    layout_plan_free(&p);
    layout_free(&b);
    config_free(&cfg);
    return rc < 0 ? 1 : 0;
}
