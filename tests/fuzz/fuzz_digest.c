/*
 * Fuzzes digest parsing (src/util/digest.c): a digest that parses is exactly "<algo>:<hex>" with
 * the algorithm's hex length in lowercase, formats back to itself, and its algorithm agrees with
 * digest_algo_parse/digest_algo_name; digests berth computes itself always parse.
 */
#include "fuzz.h"
#include "util/digest.h"
#include "util/err.h"

static const size_t hexlen[] = {64, 128};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstr(data, size);
    digest_algo algo = (digest_algo)-1;
    int rc = digest_parse(s, &algo);
    FUZZ_ASSERT(rc == 0 || rc == -BERR_DIGEST_INVALID);
    FUZZ_ASSERT(digest_parse(s, NULL) == rc);
    if (rc == 0) {
        FUZZ_ASSERT(algo == DIGEST_SHA256 || algo == DIGEST_SHA512);
        const char *name = digest_algo_name(algo);
        const char *hex = digest_hex(s);
        size_t n = strlen(s);
        FUZZ_ASSERT(n < DIGEST_STR_MAX);
        FUZZ_ASSERT(strlen(hex) == hexlen[algo]);
        FUZZ_ASSERT(strspn(hex, "0123456789abcdef") == hexlen[algo]);
        char again[DIGEST_STR_MAX + 8];
        snprintf(again, sizeof again, "%s:%s", name, hex);
        FUZZ_ASSERT(!strcmp(again, s));
        digest_algo a2;
        FUZZ_ASSERT(digest_algo_parse(name, &a2) == 0 && a2 == algo);
    } else {
        FUZZ_ASSERT(algo == (digest_algo)-1); /* untouched on failure */
    }
    /* the algorithm-name parser on its own */
    digest_algo a3;
    if (digest_algo_parse(s, &a3) == 0) FUZZ_ASSERT(!strcmp(digest_algo_name(a3), s));
    /* what berth computes from these bytes is a digest it accepts */
    for (int i = 0; i < 2; i++) {
        char out[DIGEST_STR_MAX];
        digest_buf((digest_algo)i, data, size, out);
        digest_algo back;
        FUZZ_ASSERT(digest_parse(out, &back) == 0 && back == (digest_algo)i);
    }
    free(s);
    return 0;
}
