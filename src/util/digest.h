/*
 * digest: content digests ("sha256:<64 hex>", "sha512:<128 hex>") computed incrementally with
 * nettle, parsed and validated against the OCI image-spec digest grammar. The hashing context is a
 * plain struct, so an upload can save it between PATCH requests and resume without re-reading.
 */
#ifndef BERTH_DIGEST_H
#define BERTH_DIGEST_H

#include <nettle/sha2.h>
#include <stddef.h>
#include <stdint.h>

#define DIGEST_STR_MAX (7 + 128 + 1)

typedef enum { DIGEST_SHA256 = 0, DIGEST_SHA512 = 1 } digest_algo;

typedef struct {
    digest_algo algo;
    union {
        struct sha256_ctx s256;
        struct sha512_ctx s512;
    } u;
} digest_ctx;

void digest_init(digest_ctx *c, digest_algo algo);
void digest_update(digest_ctx *c, const void *data, size_t len);
/* Writes "algo:hex" into out (DIGEST_STR_MAX bytes). The context is reset afterwards. */
void digest_final(digest_ctx *c, char *out);
/* One-shot digest of a buffer. */
void digest_buf(digest_algo algo, const void *data, size_t len, char *out);
/* Hashes a whole file; returns 0 or -BERR_IO. size may be NULL. */
int digest_file(const char *path, digest_algo algo, char *out, uint64_t *size);

/* Validates a digest string; on success stores its algorithm. Returns 0 or -BERR_DIGEST_INVALID
 * (malformed, or an algorithm berth does not support). */
int digest_parse(const char *s, digest_algo *algo);
/* "sha256" / "sha512" -> algo; returns 0 or -BERR_DIGEST_INVALID. */
int digest_algo_parse(const char *name, digest_algo *algo);
const char *digest_algo_name(digest_algo algo);
/* The hex part of a valid digest string. */
const char *digest_hex(const char *digest);

#endif
