/*
 * trust/verify: the interface between the policy engine (trust.c) and the signature formats
 * (cosign.c: cosign's classic simple-signing layout; sigstore.c: Sigstore bundles v0.3 found as
 * referrers; notary.c: Notary Project JWS and COSE envelopes). A verifier is given one signature
 * artifact found for a subject manifest and the trust material of the policy being checked, and
 * says whether that signature is valid for that subject under that material and, if not, why, in
 * words fit for an error message. Verifiers are pure and offline: no network, no store writes, no
 * global state; they read the artifact's blobs only through the callback they are given.
 */
#ifndef BERTH_TRUST_VERIFY_H
#define BERTH_TRUST_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Reads one blob of the signature artifact (by digest, at most max bytes, checked against the
 * digest by the caller's store) into a malloc'd buffer: 0 or a negative berr. */
typedef int (*trust_blob_read_fn)(void *arg, const char *digest, size_t max, char **out,
                                  size_t *outlen);

typedef struct {
    const char *subject_digest;     /* "sha256:<hex>" of the manifest being verified */
    const char *subject_media_type; /* its media type */
    int64_t subject_size;           /* its size in bytes */
    const char *sig_digest;         /* the signature artifact's manifest digest */
    const char *sig_manifest;       /* the signature artifact's manifest JSON */
    size_t sig_manifest_len;
    trust_blob_read_fn read_blob;
    void *read_arg;
    int64_t now; /* unix seconds: validity periods are checked against this */
} trust_sig;

/* A public key as cosign writes it (PEM "PUBLIC KEY": ECDSA P-256, RSA, Ed25519). */
typedef struct {
    char *name;
    char *path;
    void *pub; /* gnutls_pubkey_t, owned */
} trust_key;

/* A Notary Project trust store: a named set of certificates of one type ("ca",
 * "signingAuthority" or "tsa"), loaded from PEM files. */
typedef struct {
    char *name;
    char *type;
    char **paths;
    size_t npaths;
    void *list; /* gnutls_x509_trust_list_t, owned */
} trust_store;

/* The Notary Project's signatureVerification levels. */
typedef enum {
    TRUST_LEVEL_STRICT,
    TRUST_LEVEL_PERMISSIVE,
    TRUST_LEVEL_AUDIT,
    TRUST_LEVEL_SKIP
} trust_level;

/* What one policy accepts. */
typedef struct {
    trust_key *const *keys; /* cosign and Sigstore-bundle keys */
    size_t nkeys;
    trust_store *const *stores; /* Notary trust stores ("ca:name" as the policy names them) */
    size_t nstores;
    const char *const *identities; /* Notary trustedIdentities: "x509.subject: C=..,O=..,CN=.."
                                      or "*" */
    size_t nidentities;
    trust_level level;
    /* signatureVerification.override of authenticity, authentic timestamp and expiry: 0 as the
     * level says, 1 logged, 2 enforced */
    unsigned char override[3];
} trust_material;

typedef struct {
    char signer[256]; /* on success: the key name, or the signing certificate's subject */
    char reason[512]; /* on failure: why (wrong key, other digest, expired, untrusted CA,
                         tampered payload, untrusted identity, unsupported envelope) */
} trust_result;

/* Each returns 1 when the signature is valid for the subject under the material, 0 when it is
 * not (res->reason says why), or a negative berr when the artifact cannot be read at all. */
int trust_verify_cosign(const trust_sig *sig, const trust_material *m, trust_result *res);
int trust_verify_sigstore(const trust_sig *sig, const trust_material *m, trust_result *res);
int trust_verify_notary(const trust_sig *sig, const trust_material *m, trust_result *res);

/* Key and trust-store loading (name and path(s) set by the caller): 0 or a negative berr with a
 * logged reason. The free functions release what load set and the strings. */
int trust_key_load(trust_key *k);
void trust_key_free(trust_key *k);
int trust_store_load(trust_store *s);
void trust_store_free(trust_store *s);

#endif
