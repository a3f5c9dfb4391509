/*
 * trust: the policy engine of trust at the site boundary (docs/trust.md). A policy of the
 * `trust:` config covers repositories by pattern (mirror space included: docker.io/library/...)
 * and names the keys and Notary trust stores it accepts; a manifest in scope may be served,
 * imported or kept only when it, or an index that lists it, carries a signature one of the
 * verifiers (verify.h) accepts under that material. Signatures are found as the cosign tag
 * sha256-<hex>.sig and as referrers of the subject, through a source: the store (serving,
 * `berth verify`) or a bundle (import, `berth bundle verify`).
 */
#ifndef BERTH_TRUST_H
#define BERTH_TRUST_H

#include "config.h"
#include "trust/verify.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct store store;
typedef struct http_req http_req;

/* Where signatures come from. get: a manifest of repo by tag or digest (malloc'd content, its
 * digest and media type into DIGEST_STR_MAX / 256 buffers), -BERR_MANIFEST_UNKNOWN when absent.
 * referrers: digests of repo's manifests whose subject is digest (malloc'd array of
 * DIGEST_STR_MAX strings). parents: digests of repo's indexes that list digest. */
typedef struct {
    int (*get)(void *arg, const char *repo, const char *ref, char **content, size_t *len,
               char *digest, char *media_type);
    int (*referrers)(void *arg, const char *repo, const char *digest, char (**out)[72], size_t *n);
    int (*parents)(void *arg, const char *repo, const char *digest, char (**out)[72], size_t *n);
    /* one blob of repo, checked against its digest, at most max bytes (malloc'd) */
    int (*read)(void *arg, const char *repo, const char *digest, size_t max, char **out,
                size_t *outlen);
    void *arg;
} trust_source;

/* The outcome of checking one manifest against its policy. */
typedef struct {
    const char *policy; /* NULL: no policy covers the repository */
    bool warn;          /* the policy's mode is warn */
    bool accepted;
    char signer[256];  /* accepted: who signed, and where ("key 'release' via tag sha256-..") */
    char reason[1024]; /* not accepted: what is missing or why each signature was refused */
} trust_verdict;

/* Optional line-by-line account of every signature examined (berth verify). */
typedef void (*trust_log_fn)(void *arg, const char *line);

/* Loads the keys and trust stores of cfg's policies (once per cfg; thread-safe): 0 or a negative
 * berr naming the key or store that failed. */
int trust_load(const config *cfg);
/* The policy covering repo, or NULL. */
const config_trust_policy *trust_policy_for(const config *cfg, const char *repo);
/* Checks manifest digest of repo against its policy through src; fills v. Accepted verdicts are
 * remembered per (policy, digest). 0, or a negative berr when something could not be read. */
int trust_check(const config *cfg, const trust_source *src, const char *repo, const char *digest,
                const char *media_type, const char *content, size_t len, trust_verdict *v,
                trust_log_fn log, void *log_arg);

/* The serving gate (manifest GETs, local and mirrored): 0 to serve m, HTTP_OFFLOAD (1) when the
 * check needs a worker, or -BERR_DENIED naming the policy and what is missing. In a mirror
 * repository the upstream's signatures (.sig tag, referrers) are fetched first, and a manifest
 * that fails is removed again. `warn` policies log and serve. */
int trust_serve_check(http_req *r, const char *digest, const char *media_type, const char *content,
                      size_t len);

/* A store as a source (the store's own repositories and referrers). */
void trust_store_source(store *st, trust_source *out);

/* `berth verify REF [-c config.yml]`. */
int trust_verify_cli(int argc, char **argv);

/* Bundles (trust/bundle.c): every manifest of the plan that a policy covers, and that is not a
 * signature or a child of an index in the plan, must be accepted; -BERR_DENIED names the first
 * that is not (nothing is written by the caller then). With out, each verdict is printed. */
int trust_bundle_check(const config *cfg, const void *bundle, const void *plan, FILE *out);
/* `berth bundle verify FILE [-c config.yml] [--repository NAME]`: with -c, the layout check and
 * then every policy; without, `berth bundle verify` as before. */
int trust_bundle_cli(int argc, char **argv);

#endif
