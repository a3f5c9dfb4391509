/*
 * trust: the policy engine (see trust.h and docs/trust.md).
 *
 * Invariants:
 *  - the first policy whose repository pattern matches decides; a repository no policy covers
 *    is served as before, at the cost of one pattern match per GET;
 *  - a manifest is accepted only when a verifier (cosign.c, and the Sigstore-bundle and Notary
 *    verifiers when built in) accepts one of its signatures under the policy's keys and trust
 *    stores, or when an index of the same repository that lists it is accepted; and, when the
 *    policy lists attestations, when that manifest (or index) also has, for each, a referrer of
 *    the attestation's artifactType that is itself signed under the attestation's material. An
 *    attestation referrer is served when its own signature is accepted (it needs no attestation
 *    of itself);
 *  - every enforcing denial is logged and counted (berth_trust_denials_total, by policy and
 *    where: pull, fill, import; a tag pushed unsigned is stored, held, and counted as push);
 *  - only acceptances are remembered, per (policy, subject digest), in a fixed-size table: a
 *    warm pull of a signed manifest costs one hash lookup, and a manifest denied now is checked
 *    again on its next pull, so a signature pushed later releases it. Content is
 *    content-addressed, so an acceptance cannot go stale; the table lives as long as the process
 *    and its config;
 *  - serving never verifies on the event loop: a cache miss is offloaded to a worker first;
 *  - in mirror space the upstream's signatures (the .sig tag and signature referrers) are
 *    fetched into the mirror repository before the check, and a manifest that fails an
 *    enforcing policy is removed from the store again.
 */
#include "trust/trust.h"
#include "http/http.h"
#include "proxy/upstream.h"
#include "registry/ingest.h"
#include "registry/registry.h"
#include "store/store.h"
#include "util/digest.h"
#include "util/err.h"
#include "util/log.h"
#include "util/metrics.h"

#include <fnmatch.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_SIMPLESIGNING "application/vnd.dev.cosign.simplesigning.v1+json"
#define AT_SIGSTORE "application/vnd.dev.sigstore.bundle"
#define AT_NOTARY "application/vnd.cncf.notary.signature"
#define SIG_MANIFEST_MAX ((size_t)4 << 20)

/* The Sigstore-bundle and Notary verifiers live in their own files (sigstore.c, notary.c); a
 * berth built without them reports their signatures as unverifiable instead of failing to link. */
#pragma weak trust_verify_sigstore
#pragma weak trust_verify_notary
#pragma weak trust_store_load
#pragma weak trust_store_free

/* ---- keys, stores and policies, loaded once per config ---- */

typedef struct {
    trust_key **keys;
    trust_store **stores;
    trust_material m;
} rmaterial;

typedef struct {
    rmaterial sig;  /* what signs the content */
    rmaterial *att; /* per attestation of the policy: what signs that referrer */
    size_t natt;
} rpolicy;

static pthread_mutex_t load_mu = PTHREAD_MUTEX_INITIALIZER;
static const config *loaded_cfg;
static int loaded_rc;
static char loaded_err[512];
static trust_key *keys;
static size_t nkeys;
static trust_store *stores;
static size_t nstores;
static rpolicy *rpols;

static void unload(void)
{
    for (size_t i = 0; rpols && loaded_cfg && i < loaded_cfg->trust.npolicies; i++) {
        free(rpols[i].sig.keys);
        free(rpols[i].sig.stores);
        for (size_t k = 0; k < rpols[i].natt; k++) {
            free(rpols[i].att[k].keys);
            free(rpols[i].att[k].stores);
        }
        free(rpols[i].att);
    }
    free(rpols);
    rpols = NULL;
    for (size_t i = 0; i < nkeys; i++)
        trust_key_free(&keys[i]);
    free(keys);
    keys = NULL;
    nkeys = 0;
    for (size_t i = 0; i < nstores; i++)
        if (trust_store_free) trust_store_free(&stores[i]);
    free(stores);
    stores = NULL;
    nstores = 0;
}

/* Points m at the loaded keys and stores a policy (or one of its attestations) names. */
static void material_bind(rmaterial *r, char *const *kn, size_t nk, char *const *sn, size_t ns,
                          char *const *ids, size_t nids, const config_trust_policy *p)
{
    r->keys = calloc(nk + 1, sizeof *r->keys);
    r->stores = calloc(ns + 1, sizeof *r->stores);
    if (!r->keys || !r->stores) abort();
    for (size_t k = 0; k < nk; k++)
        for (size_t j = 0; j < nkeys; j++)
            if (!strcmp(keys[j].name, kn[k])) r->keys[r->m.nkeys++] = &keys[j];
    for (size_t k = 0; k < ns; k++)
        for (size_t j = 0; j < nstores; j++) {
            char tn[600];
            snprintf(tn, sizeof tn, "%s:%s", stores[j].type, stores[j].name);
            if (!strcmp(tn, sn[k])) r->stores[r->m.nstores++] = &stores[j];
        }
    r->m.keys = (trust_key *const *)r->keys;
    r->m.stores = (trust_store *const *)r->stores;
    r->m.identities = (const char *const *)ids;
    r->m.nidentities = nids;
    r->m.level = (trust_level)p->level;
    for (int o = 0; o < 3; o++)
        r->m.override[o] = (unsigned char)p->override[o];
}

static int load_all(const config *cfg)
{
    const config_trust *t = &cfg->trust;
    keys = calloc(t->nkeys + 1, sizeof *keys);
    stores = calloc(t->nstores + 1, sizeof *stores);
    rpols = calloc(t->npolicies + 1, sizeof *rpols);
    if (!keys || !stores || !rpols) return berr_set(BERR_INTERNAL, "out of memory");
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < t->nkeys; i++) {
        keys[i].name = strdup(t->keys[i].name);
        keys[i].path = strdup(t->keys[i].path);
        nkeys++;
        rc = trust_key_load(&keys[i]);
    }
    for (size_t i = 0; rc == 0 && i < t->nstores; i++) {
        if (!trust_store_load)
            return berr_set(BERR_CONFIG,
                            "trust.stores.%s: this berth has no Notary Project verifier",
                            t->stores[i].name);
        trust_store *s = &stores[i];
        s->name = strdup(t->stores[i].name);
        s->type = strdup(t->stores[i].type);
        s->paths = calloc(t->stores[i].npaths, sizeof *s->paths);
        if (!s->paths) abort();
        for (size_t k = 0; k < t->stores[i].npaths; k++)
            s->paths[k] = strdup(t->stores[i].paths[k]);
        s->npaths = t->stores[i].npaths;
        nstores++;
        rc = trust_store_load(s);
    }
    for (size_t i = 0; rc == 0 && i < t->npolicies; i++) {
        const config_trust_policy *p = &t->policies[i];
        rpolicy *r = &rpols[i];
        material_bind(&r->sig, p->keys, p->nkeys, p->stores, p->nstores, p->identities,
                      p->nidentities, p);
        r->att = calloc(p->nattest + 1, sizeof *r->att);
        if (!r->att) abort();
        for (size_t k = 0; k < p->nattest; k++, r->natt++) {
            const config_trust_attestation *a = &p->attest[k];
            material_bind(&r->att[k], a->keys, a->nkeys, a->stores, a->nstores, a->identities,
                          a->nidentities, p);
        }
    }
    return rc;
}

static void hook_register(void);
static pthread_once_t hook_once;

int trust_load(const config *cfg)
{
    if (cfg->trust.npolicies) pthread_once(&hook_once, hook_register);
    pthread_mutex_lock(&load_mu);
    if (loaded_cfg != cfg) {
        unload();
        loaded_cfg = cfg;
        loaded_rc = load_all(cfg);
        snprintf(loaded_err, sizeof loaded_err, "%s", loaded_rc < 0 ? berr_msg() : "");
        if (loaded_rc < 0) log_error("msg=\"trust: cannot load\" error=\"%s\"", loaded_err);
    }
    int rc = loaded_rc;
    pthread_mutex_unlock(&load_mu);
    return rc < 0 ? berr_set((berr)-rc, "%s", loaded_err) : 0;
}

static long policy_index(const config *cfg, const char *repo)
{
    for (size_t i = 0; i < cfg->trust.npolicies; i++) {
        const config_trust_policy *p = &cfg->trust.policies[i];
        for (size_t k = 0; k < p->nrepos; k++)
            if (fnmatch(p->repos[k], repo, 0) == 0) return (long)i;
    }
    return -1;
}

const config_trust_policy *trust_policy_for(const config *cfg, const char *repo)
{
    long i = policy_index(cfg, repo);
    return i < 0 ? NULL : &cfg->trust.policies[i];
}

/* ---- accepted verdicts, per (policy, digest) ---- */

#define CACHE_SLOTS 8192
#define CACHE_PROBE 8
typedef struct {
    long pol;
    char digest[DIGEST_STR_MAX];
    char signer[200];
} slot;
static slot cache[CACHE_SLOTS];
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned cache_clock;

static size_t cache_hash(long pol, const char *digest)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)pol;
    for (const char *p = digest; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return (size_t)(h % CACHE_SLOTS);
}

static bool cache_get(long pol, const char *digest, char *signer, size_t len)
{
    size_t h = cache_hash(pol, digest);
    bool hit = false;
    pthread_mutex_lock(&cache_mu);
    for (size_t i = 0; i < CACHE_PROBE && !hit; i++) {
        slot *s = &cache[(h + i) % CACHE_SLOTS];
        if (s->digest[0] && s->pol == pol && !strcmp(s->digest, digest)) {
            hit = true;
            if (signer) snprintf(signer, len, "%s", s->signer);
        }
    }
    pthread_mutex_unlock(&cache_mu);
    return hit;
}

static void cache_put(long pol, const char *digest, const char *signer)
{
    size_t h = cache_hash(pol, digest);
    pthread_mutex_lock(&cache_mu);
    slot *v = NULL;
    for (size_t i = 0; i < CACHE_PROBE && !v; i++) {
        slot *s = &cache[(h + i) % CACHE_SLOTS];
        if (!s->digest[0] || (s->pol == pol && !strcmp(s->digest, digest))) v = s;
    }
    if (!v) v = &cache[(h + (cache_clock++ % CACHE_PROBE)) % CACHE_SLOTS]; /* evict one */
    v->pol = pol;
    snprintf(v->digest, sizeof v->digest, "%s", digest);
    snprintf(v->signer, sizeof v->signer, "%s", signer);
    pthread_mutex_unlock(&cache_mu);
}

/* ---- checking one subject ---- */

typedef struct {
    const trust_source *src;
    const char *repo;
} read_ctx;

static int read_tramp(void *arg, const char *digest, size_t max, char **out, size_t *outlen)
{
    read_ctx *c = arg;
    return c->src->read(c->src->arg, c->repo, digest, max, out, outlen);
}

static void addf(char *buf, size_t len, const char *s)
{
    size_t o = strlen(buf);
    if (o + 3 >= len) return;
    snprintf(buf + o, len - o, "%s%s", o ? "; " : "", s);
}

static bool is_index(const char *mt)
{
    return mt && (!strcmp(mt, MT_OCI_INDEX) || !strcmp(mt, MT_DOCKER_LIST));
}

/* Which verifier a signature artifact is for: 'c' cosign, 's' Sigstore bundle, 'n' Notary, or
 * 0 (not a signature: an SBOM, a scan report). */
static char sig_kind(const char *content, size_t len)
{
    json_t *j = json_loadb(content, len, 0, NULL);
    if (!j) return 0;
    const char *at = json_string_value(json_object_get(j, "artifactType"));
    if (!at) at = json_string_value(json_object_get(json_object_get(j, "config"), "mediaType"));
    char k = 0;
    if (at && !strncmp(at, AT_SIGSTORE, strlen(AT_SIGSTORE)))
        k = 's';
    else if (at && !strcmp(at, AT_NOTARY))
        k = 'n';
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(j, "layers"), i, l)
    {
        const char *mt = json_string_value(json_object_get(l, "mediaType"));
        if (!k && mt && !strcmp(mt, MT_SIMPLESIGNING)) k = 'c';
    }
    json_decref(j);
    return k;
}

/* Signatures and attestations are not themselves subjects of a policy: they travel with their
 * content. Only a manifest all of whose layers are signature envelopes counts (a cosign
 * simple-signing payload, a DSSE attestation, a Sigstore bundle, a Notary JWS or COSE envelope):
 * nothing in it can run, so an image cannot slip past a policy by carrying a subject field or an
 * extra signature-typed layer. */
static bool about_other(const char *content, size_t len)
{
    static const char *const env[] = {MT_SIMPLESIGNING, "application/vnd.dsse.envelope.v1+json",
                                      "application/jose+json", "application/cose"};
    if (!content) return false;
    json_t *j = json_loadb(content, len, 0, NULL);
    json_t *layers = json_object_get(j, "layers");
    bool all = json_array_size(layers) > 0;
    size_t i;
    json_t *l;
    json_array_foreach(layers, i, l)
    {
        const char *mt = json_string_value(json_object_get(l, "mediaType"));
        bool sig = mt && !strncmp(mt, AT_SIGSTORE, strlen(AT_SIGSTORE));
        for (size_t k = 0; mt && !sig && k < sizeof env / sizeof *env; k++)
            sig = !strcmp(mt, env[k]);
        all = all && sig;
    }
    json_decref(j);
    return all;
}

/* Verifies one signature artifact: 1 accepted (signer set), 0 refused (reason appended). */
static int verify_one(char kind, const char *where, const char *sig_digest, const char *content,
                      size_t len, const rmaterial *rp, const trust_source *src, const char *repo,
                      const char *digest, const char *mt, size_t size, trust_verdict *v,
                      trust_log_fn log, void *log_arg)
{
    read_ctx rc_ = {src, repo};
    trust_sig sig = {.subject_digest = digest,
                     .subject_media_type = mt,
                     .subject_size = (int64_t)size,
                     .sig_digest = sig_digest,
                     .sig_manifest = content,
                     .sig_manifest_len = len,
                     .read_blob = read_tramp,
                     .read_arg = &rc_,
                     .now = (int64_t)time(NULL)};
    trust_result res;
    memset(&res, 0, sizeof res);
    const char *what = kind == 'c' ? "cosign" : kind == 's' ? "Sigstore bundle" : "Notary";
    int (*fn)(const trust_sig *, const trust_material *, trust_result *) =
        kind == 'c'   ? trust_verify_cosign
        : kind == 's' ? trust_verify_sigstore
                      : trust_verify_notary;
    int rc;
    if (!fn) {
        snprintf(res.reason, sizeof res.reason, "%s signature %.80s: this berth has no %s verifier",
                 what, sig_digest, what);
        rc = 0;
    } else {
        rc = fn(&sig, &rp->m, &res);
    }
    char line[1200];
    if (rc < 0) {
        snprintf(line, sizeof line, "%s signature (%s): cannot be read: %s", what, where,
                 berr_msg());
        addf(v->reason, sizeof v->reason, line);
        if (log) log(log_arg, line);
        return 0;
    }
    if (rc == 1) {
        snprintf(v->signer, sizeof v->signer, "%.200s (%s signature, %.40s)", res.signer, what,
                 where);
        snprintf(line, sizeof line, "%s signature (%s): accepted: signed by %s", what, where,
                 res.signer);
    } else {
        addf(v->reason, sizeof v->reason, res.reason);
        snprintf(line, sizeof line, "%s signature (%s): refused: %s", what, where, res.reason);
    }
    if (log) log(log_arg, line);
    return rc == 1;
}

/* Every signature of digest in repo: 1 when one is accepted. */
static int check_sigs(const rmaterial *rp, const trust_source *src, const char *repo,
                      const char *digest, const char *mt, size_t size, trust_verdict *v,
                      trust_log_fn log, void *log_arg)
{
    size_t found = 0;
    int ok = 0;
    /* cosign's classic tag */
    if (!strncmp(digest, "sha256:", 7)) {
        char tag[128], sd[DIGEST_STR_MAX], smt[256];
        snprintf(tag, sizeof tag, "sha256-%s.sig", digest + 7);
        char *c = NULL;
        size_t cl = 0;
        int rc = src->get(src->arg, repo, tag, &c, &cl, sd, smt);
        if (rc == 0) {
            found++;
            char where[160];
            snprintf(where, sizeof where, "tag %s", tag);
            ok =
                verify_one('c', where, sd, c, cl, rp, src, repo, digest, mt, size, v, log, log_arg);
            free(c);
        } else if (rc != -BERR_MANIFEST_UNKNOWN && rc != -BERR_NAME_UNKNOWN) {
            return rc;
        }
    }
    /* referrers */
    char(*refs)[72] = NULL;
    size_t nrefs = 0;
    int rc = ok ? 0 : src->referrers(src->arg, repo, digest, &refs, &nrefs);
    if (rc < 0 && rc != -BERR_NAME_UNKNOWN) return rc;
    for (size_t i = 0; !ok && i < nrefs; i++) {
        char *c = NULL, sd[DIGEST_STR_MAX], smt[256];
        size_t cl = 0;
        if (src->get(src->arg, repo, refs[i], &c, &cl, sd, smt) < 0) continue;
        char kind = sig_kind(c, cl);
        if (kind) {
            found++;
            char where[160];
            snprintf(where, sizeof where, "referrer %.100s", refs[i]);
            ok = verify_one(kind, where, sd, c, cl, rp, src, repo, digest, mt, size, v, log,
                            log_arg);
        }
        free(c);
    }
    free(refs);
    if (!found && !ok) {
        char line[400];
        snprintf(line, sizeof line,
                 "%.80s has no signature (no tag sha256-<hex>.sig, no signature referrer)", digest);
        addf(v->reason, sizeof v->reason, line);
        if (log) log(log_arg, line);
    }
    return ok;
}

/* A manifest's artifactType (or its config's media type) into out ("" when none); whether it
 * has a subject. */
static bool artifact_type_of(const char *content, size_t len, char *out, size_t cap)
{
    out[0] = 0;
    json_t *j = content ? json_loadb(content, len, 0, NULL) : NULL;
    const char *at = json_string_value(json_object_get(j, "artifactType"));
    if (!at) at = json_string_value(json_object_get(json_object_get(j, "config"), "mediaType"));
    if (at) snprintf(out, cap, "%s", at);
    bool subject = json_is_object(json_object_get(j, "subject"));
    json_decref(j);
    return subject;
}

/* Attestation a of a policy: digest must have a referrer of a->artifact_type that is itself
 * signed under am (a cosign .sig tag of the referrer, or a Sigstore-bundle or Notary referrer of
 * it). 1 when one is, 0 (v->reason says why), or a negative berr. */
static int check_attest(const config_trust_attestation *a, const rmaterial *am,
                        const trust_source *src, const char *repo, const char *digest,
                        trust_verdict *v, trust_log_fn log, void *log_arg)
{
    char(*refs)[72] = NULL;
    size_t nrefs = 0, found = 0;
    int ok = 0, rc = src->referrers(src->arg, repo, digest, &refs, &nrefs);
    if (rc < 0 && rc != -BERR_NAME_UNKNOWN) return rc;
    char line[1400];
    for (size_t i = 0; !ok && i < nrefs; i++) {
        char *c = NULL, sd[DIGEST_STR_MAX], smt[256], at[256];
        size_t cl = 0;
        if (src->get(src->arg, repo, refs[i], &c, &cl, sd, smt) < 0) continue;
        artifact_type_of(c, cl, at, sizeof at);
        if (strcmp(at, a->artifact_type) != 0) {
            free(c);
            continue;
        }
        found++;
        snprintf(line, sizeof line, "attestation %.100s (referrer %.80s):", at, refs[i]);
        if (log) log(log_arg, line);
        trust_verdict av;
        memset(&av, 0, sizeof av);
        rc = check_sigs(am, src, repo, sd, smt, cl, &av, log, log_arg);
        free(c);
        if (rc < 0) {
            free(refs);
            return rc;
        }
        if (rc == 1) {
            ok = 1;
            size_t o = strlen(v->signer);
            snprintf(v->signer + o, sizeof v->signer - o, "; attestation %.60s by %.100s", at,
                     av.signer);
        } else {
            snprintf(line, sizeof line, "attestation %.100s %.80s is not accepted: %.900s", at,
                     refs[i], av.reason);
            addf(v->reason, sizeof v->reason, line);
        }
    }
    free(refs);
    if (!found) {
        snprintf(line, sizeof line,
                 "%.80s has no attestation of type %.100s (a signed referrer of that type is "
                 "required: quarantined until one is pushed)",
                 digest, a->artifact_type);
        addf(v->reason, sizeof v->reason, line);
        if (log) log(log_arg, line);
    }
    return ok;
}

/* A signature the policy accepts, and every attestation it requires. */
static int full_check(const config_trust_policy *p, const rpolicy *rp, const trust_source *src,
                      const char *repo, const char *digest, const char *mt, size_t size,
                      trust_verdict *v, trust_log_fn log, void *log_arg)
{
    int rc = check_sigs(&rp->sig, src, repo, digest, mt, size, v, log, log_arg);
    for (size_t k = 0; rc == 1 && k < rp->natt; k++)
        rc = check_attest(&p->attest[k], &rp->att[k], src, repo, digest, v, log, log_arg);
    return rc;
}

/* Remembers the children of an accepted index as accepted (an index's signature covers them). */
static void cache_children(long pol, const char *content, size_t len, const char *signer)
{
    json_t *j = json_loadb(content, len, 0, NULL);
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(j, "manifests"), i, d)
    {
        const char *dg = json_string_value(json_object_get(d, "digest"));
        if (dg && strlen(dg) < DIGEST_STR_MAX) cache_put(pol, dg, signer);
    }
    json_decref(j);
}

int trust_check(const config *cfg, const trust_source *src, const char *repo, const char *digest,
                const char *media_type, const char *content, size_t len, trust_verdict *v,
                trust_log_fn log, void *log_arg)
{
    memset(v, 0, sizeof *v);
    long pi = policy_index(cfg, repo);
    if (pi < 0) {
        v->accepted = true;
        return 0;
    }
    const config_trust_policy *p = &cfg->trust.policies[pi];
    v->policy = p->name;
    v->warn = p->warn;
    int rc = trust_load(cfg);
    if (rc < 0) {
        snprintf(v->reason, sizeof v->reason, "trust material cannot be loaded: %s", berr_msg());
        return 0;
    }
    if (cache_get(pi, digest, v->signer, sizeof v->signer)) {
        v->accepted = true;
        return 0;
    }
    if (about_other(content, len)) {
        v->accepted = true;
        snprintf(v->signer, sizeof v->signer,
                 "(a signature or attestation: travels with its subject)");
        cache_put(pi, digest, v->signer);
        return 0;
    }
    const rpolicy *rp = &rpols[pi];
    /* an attestation the policy requires (a scanner's report) is served when its own signature
     * is accepted: it needs no attestation of itself */
    char at[256];
    if (artifact_type_of(content, len, at, sizeof at))
        for (size_t k = 0; k < rp->natt; k++) {
            if (strcmp(at, p->attest[k].artifact_type) != 0) continue;
            rc = check_sigs(&rp->att[k], src, repo, digest, media_type, len, v, log, log_arg);
            if (rc < 0) return rc;
            if (rc == 1) {
                v->accepted = true;
                cache_put(pi, digest, v->signer);
            }
            return 0;
        }
    rc = full_check(p, rp, src, repo, digest, media_type, len, v, log, log_arg);
    if (rc < 0) return rc;
    /* an index of the repository that lists it, and is accepted, vouches for it */
    char(*par)[72] = NULL;
    size_t npar = 0;
    if (!rc && src->parents && (rc = src->parents(src->arg, repo, digest, &par, &npar)) < 0)
        return rc;
    for (size_t i = 0; !rc && i < npar; i++) {
        char line[300];
        snprintf(line, sizeof line, "held by index %.100s", par[i]);
        if (log) log(log_arg, line);
        char sg[200];
        if (cache_get(pi, par[i], sg, sizeof sg)) {
            snprintf(v->signer, sizeof v->signer, "%.150s, via index %.80s", sg, par[i]);
            rc = 1;
            break;
        }
        char *c = NULL, d[DIGEST_STR_MAX], mt[256];
        size_t cl = 0;
        if (src->get(src->arg, repo, par[i], &c, &cl, d, mt) < 0) continue;
        trust_verdict pv;
        memset(&pv, 0, sizeof pv);
        int prc = full_check(p, rp, src, repo, par[i], mt, cl, &pv, log, log_arg);
        if (prc == 1) {
            cache_put(pi, par[i], pv.signer);
            cache_children(pi, c, cl, pv.signer);
            snprintf(v->signer, sizeof v->signer, "%.150s, via index %.80s", pv.signer, par[i]);
            rc = 1;
        } else {
            snprintf(line, sizeof line, "index %.80s: %.400s", par[i], pv.reason);
            addf(v->reason, sizeof v->reason, line);
        }
        free(c);
    }
    free(par);
    if (rc < 0) return rc;
    if (rc == 1) {
        v->accepted = true;
        v->reason[0] = 0;
        cache_put(pi, digest, v->signer);
        if (content && is_index(media_type)) cache_children(pi, content, len, v->signer);
    }
    return 0;
}

/* ---- the store as a source ---- */

static int ss_get(void *arg, const char *repo, const char *ref, char **content, size_t *len,
                  char *digest, char *media_type)
{
    store_manifest m;
    int rc = store_manifest_get(arg, repo, ref, &m);
    if (rc < 0) return rc;
    *content = m.content;
    *len = m.size;
    m.content = NULL;
    snprintf(digest, DIGEST_STR_MAX, "%s", m.digest);
    snprintf(media_type, 256, "%s", m.media_type ? m.media_type : "");
    store_manifest_free(&m);
    return 0;
}

static int ss_referrers(void *arg, const char *repo, const char *digest, char (**out)[72],
                        size_t *n)
{
    store_referrer_list l;
    *out = NULL;
    *n = 0;
    int rc = store_referrers(arg, repo, digest, NULL, &l);
    if (rc < 0) return rc;
    *out = calloc(l.n + 1, sizeof **out);
    if (!*out) abort();
    for (size_t i = 0; i < l.n; i++)
        snprintf((*out)[(*n)++], 72, "%s", l.items[i].digest);
    store_referrer_list_free(&l);
    return 0;
}

/* Tagged indexes of repo that list digest: the store's references (store_manifest_parents). */
static int ss_parents(void *arg, const char *repo, const char *digest, char (**out)[72], size_t *n)
{
    store_list l;
    *out = NULL;
    *n = 0;
    int rc = store_manifest_parents(arg, repo, digest, &l);
    if (rc < 0) return rc == -BERR_NAME_UNKNOWN ? 0 : rc;
    *out = calloc(l.n + 1, sizeof **out);
    if (!*out) abort();
    for (size_t i = 0; i < l.n; i++)
        snprintf((*out)[(*n)++], 72, "%s", l.items[i]);
    store_list_free(&l);
    return 0;
}

typedef struct {
    char *buf;
    size_t len, max;
} sink_buf;

static int sink_mem(void *arg, const char *data, size_t len)
{
    sink_buf *s = arg;
    if (s->len + len > s->max) return -1;
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    return 0;
}

static int ss_read(void *arg, const char *repo, const char *digest, size_t max, char **out,
                   size_t *outlen)
{
    store_blob b;
    int rc = store_blob_open(arg, repo, digest, &b);
    if (rc < 0) return rc;
    if (b.size > max) {
        store_blob_release(&b);
        return berr_set(BERR_TOO_LARGE, "blob %s is larger than %zu bytes", digest, max);
    }
    sink_buf s = {malloc(b.size + 1), 0, b.size};
    if (!s.buf) abort();
    if (b.mem) {
        memcpy(s.buf, b.mem, b.size);
        s.len = b.size;
    } else if (b.fd >= 0) {
        while (s.len < b.size) {
            ssize_t r = pread(b.fd, s.buf + s.len, b.size - s.len, (off_t)(b.offset + s.len));
            if (r <= 0) break;
            s.len += (size_t)r;
        }
    } else {
        store_blob_read(&b, 0, b.size, sink_mem, &s);
    }
    store_blob_release(&b);
    digest_algo algo;
    char got[DIGEST_STR_MAX];
    if (s.len != b.size || digest_parse(digest, &algo) < 0 ||
        (digest_buf(algo, s.buf, s.len, got), strcmp(got, digest) != 0)) {
        free(s.buf);
        return berr_set(BERR_DIGEST_INVALID, "blob %s cannot be read whole or does not match",
                        digest);
    }
    *out = s.buf;
    *outlen = s.len;
    return 0;
}

void trust_store_source(store *st, trust_source *out)
{
    *out = (trust_source){ss_get, ss_referrers, ss_parents, ss_read, st};
}

/* ---- mirror space: the upstream's signatures come with its content ---- */

static bool sig_artifact_type(const char *at)
{
    return at && (!strncmp(at, AT_SIGSTORE, strlen(AT_SIGSTORE)) || !strcmp(at, AT_NOTARY) ||
                  !strncmp(at, "application/vnd.dev.cosign", 26));
}

/* Fetches one signature manifest (by tag or digest) and its layers into the mirror repository. */
static void mirror_fetch_one(const reg_mirror_ctx *c, const char *ref)
{
    store_manifest m;
    if (reg_mirror_manifest_fetch(c, ref, &m) < 0) return;
    json_t *j = json_loadb(m.content, m.size, 0, NULL);
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(j, "layers"), i, l)
    {
        const char *dg = json_string_value(json_object_get(l, "digest"));
        json_int_t sz = json_integer_value(json_object_get(l, "size"));
        bool fetched;
        if (dg && sz >= 0 && sz <= (json_int_t)SIG_MANIFEST_MAX)
            reg_mirror_blob_ensure(c, dg, &fetched);
    }
    json_decref(j);
    store_manifest_free(&m);
}

/* Whether at is an attestation type policy pi requires. */
static bool attest_type(const config *cfg, long pi, const char *at)
{
    const config_trust_policy *p = &cfg->trust.policies[pi];
    for (size_t k = 0; at && k < p->nattest; k++)
        if (!strcmp(at, p->attest[k].artifact_type)) return true;
    return false;
}

/* The upstream's signatures of digest, and the attestations policy pi requires (with their own
 * signatures: depth 1). */
static void mirror_fetch_sigs(const reg_mirror_ctx *c, long pi, const char *digest, int depth)
{
    if (!strncmp(digest, "sha256:", 7)) {
        char tag[128];
        snprintf(tag, sizeof tag, "sha256-%s.sig", digest + 7);
        mirror_fetch_one(c, tag);
    }
    const config_mirror *mi = c->mirror;
    for (size_t u = 0; u < mi->nurls; u++) {
        char url[2600];
        snprintf(url, sizeof url, "%s/v2/%s/referrers/%s", mi->urls[u], c->upstream_repo, digest);
        upstream_resp resp;
        int rc = upstream_send(mi, "GET", url, NULL, NULL, 0,
                               "application/vnd.oci.image.index.v1+json", NULL, NULL, &resp);
        if (rc < 0) continue;
        json_t *j =
            resp.status == 200 && resp.body ? json_loadb(resp.body, resp.len, 0, NULL) : NULL;
        upstream_resp_free(&resp);
        size_t i;
        json_t *d;
        json_array_foreach(json_object_get(j, "manifests"), i, d)
        {
            const char *dg = json_string_value(json_object_get(d, "digest"));
            const char *at = json_string_value(json_object_get(d, "artifactType"));
            if (dg && sig_artifact_type(at)) mirror_fetch_one(c, dg);
            if (dg && depth == 0 && attest_type(c->cfg, pi, at)) {
                mirror_fetch_sigs(c, pi, dg, 1); /* its signatures first: it is checked too */
                mirror_fetch_one(c, dg);
            }
        }
        json_decref(j);
        break;
    }
}

/* A denial reported: a log line, the metric (where: pull, fill or push) and, when notifications
 * are on, an event "trust.deny.<where>" ("trust.hold" for a push: stored, held until signed). */
static void deny_report(store *st, const trust_verdict *v, const char *where, const char *repo,
                        const char *digest, const char *media_type, size_t len, const char *tag)
{
    bool push = !strcmp(where, "push");
    log_info("msg=\"%s\" policy=\"%s\" where=%s repo=%s%s%s digest=%s reason=\"%s\"",
             push ? "trust: pushed, held until its policy accepts it" : "trust: denied", v->policy,
             where, repo, tag ? " tag=" : "", tag ? tag : "", digest, v->reason);
    metrics_trust_denial(v->policy, where);
    char action[32];
    snprintf(action, sizeof action, push ? "trust.hold" : "trust.deny.%s", where);
    store_event_note(st, action, repo, digest, media_type, len, tag);
}

int trust_serve_check(http_req *r, const char *digest, const char *media_type, const char *content,
                      size_t len)
{
    const config *cfg = r->cfg;
    if (!cfg->trust.npolicies) return 0;
    long pi = policy_index(cfg, r->name);
    if (pi < 0 || cache_get(pi, digest, NULL, 0)) return 0;
    if (!r->on_worker) return HTTP_OFFLOAD;
    if (about_other(content, len)) { /* a signature travels with its subject: nothing to fetch */
        cache_put(pi, digest, "(a signature or attestation)");
        return 0;
    }
    if (r->mirror) {
        reg_mirror_ctx mc = {r->store, r->mirror, r->name, r->upstream_repo, r->cfg};
        mirror_fetch_sigs(&mc, pi, digest, 0);
    }
    trust_source src;
    trust_store_source(r->store, &src);
    trust_verdict v;
    int rc = trust_check(cfg, &src, r->name, digest, media_type, content, len, &v, NULL, NULL);
    if (rc < 0) return rc;
    if (v.accepted) return 0;
    if (v.warn) {
        log_warn("msg=\"trust: serving content its policy does not accept (mode warn)\" "
                 "policy=\"%s\" repo=%s digest=%s reason=\"%s\"",
                 v.policy, r->name, digest, v.reason);
        return 0;
    }
    /* a denial (pull, or fill in mirror space) */
    deny_report(r->store, &v, r->mirror ? "fill" : "pull", r->name, digest, media_type, len, NULL);
    if (r->mirror) store_manifest_delete(r->store, r->name, digest); /* not kept either */
    return berr_set(BERR_DENIED, "trust policy '%s' denies %s@%s: %s", v.policy, r->name, digest,
                    v.reason);
}

/* ---- mirror fills: the ingest policy hook ----
 * A manifest filled from an upstream (INGEST_MIRROR: the server's fills and their checks) in
 * scope of a policy is checked before it is committed: the upstream's signatures (and required
 * attestations) are fetched first, and what fails an enforcing policy is never stored. The
 * serving gate above stays for what was cached before the policy covered it. */
static int trust_ingest_hook(ingest_ctx *c, void *arg)
{
    (void)arg;
    const ingest_req *in = c->in;
    const config *cfg = c->cfg;
    if (in->source != INGEST_MIRROR || !in->blob_arg || !cfg->trust.npolicies) return 0;
    long pi = policy_index(cfg, in->repo);
    if (pi < 0 || cache_get(pi, in->digest, NULL, 0) || about_other(in->content, in->len)) return 0;
    /* mirror.c's fills pass their reg_mirror_ctx as the blob callback's argument */
    const reg_mirror_ctx *mc = in->blob_arg;
    mirror_fetch_sigs(mc, pi, in->digest, 0);
    trust_source src;
    trust_store_source(c->st, &src);
    trust_verdict v;
    const char *mt = c->put->media_type ? c->put->media_type : "";
    int rc = trust_check(cfg, &src, in->repo, in->digest, mt, in->content, in->len, &v, NULL, NULL);
    if (rc < 0) return rc;
    if (v.accepted) return 0;
    if (v.warn) {
        log_warn("msg=\"trust: keeping content its policy does not accept (mode warn)\" "
                 "policy=\"%s\" repo=%s digest=%s reason=\"%s\"",
                 v.policy, in->repo, in->digest, v.reason);
        return 0;
    }
    deny_report(c->st, &v, "fill", in->repo, in->digest, mt, in->len, NULL);
    return berr_set(BERR_DENIED, "trust policy '%s' denies %s@%s: %s", v.policy, in->repo,
                    in->digest, v.reason);
}

/* A tag pushed in scope of an enforcing policy is stored (pushes are never refused) but held
 * until signed: that is counted and logged once, at the push (where "push"). Manifests pushed by
 * digest (an index's children, signatures) are not: they are released with what tags them. */
static int trust_push_hook(ingest_ctx *c, void *arg)
{
    (void)arg;
    const ingest_req *in = c->in;
    const config *cfg = c->cfg;
    if (in->source != INGEST_PUSH || !in->ntags || !cfg->trust.npolicies) return 0;
    long pi = policy_index(cfg, in->repo);
    if (pi < 0 || cfg->trust.policies[pi].warn || cache_get(pi, in->digest, NULL, 0)) return 0;
    trust_source src;
    trust_store_source(c->st, &src);
    trust_verdict v;
    const char *mt = c->put->media_type ? c->put->media_type : "";
    int rc = trust_check(cfg, &src, in->repo, in->digest, mt, in->content, in->len, &v, NULL, NULL);
    if (rc < 0 || v.accepted) return 0;
    deny_report(c->st, &v, "push", in->repo, in->digest, mt, in->len, in->tags[0]); /* held */
    return 0;
}

static pthread_once_t hook_once = PTHREAD_ONCE_INIT;
static void hook_register(void)
{
    ingest_hook_add(INGEST_POLICY, 0, "trust", trust_ingest_hook, NULL);
    ingest_hook_add(INGEST_COMMITTED, 0, "trust-push", trust_push_hook, NULL);
}
