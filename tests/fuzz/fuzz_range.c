/*
 * Fuzzes the byte-range parsers of the blob API (src/registry/httpparse.c): the GET Range header
 * and the upload chunk's Content-Range. Input: an optional first line holding a blob size in
 * decimal, then the header value; each header is tried against that size and a few edge sizes.
 * A satisfiable range lies within the blob, is non-empty, and re-parses to itself when written
 * back as "bytes=first-last"; an accepted Content-Range re-parses to the same bounds.
 */
#include "fuzz.h"
#include "registry/httpparse.h"

#include <inttypes.h>

static void check_range(const char *h, uint64_t size)
{
    uint64_t off = 12345, len = 67890;
    reg_range_result r = reg_parse_range(h, size, &off, &len);
    FUZZ_ASSERT(r == REG_RANGE_NONE || r == REG_RANGE_OK || r == REG_RANGE_UNSATISFIABLE);
    if (r != REG_RANGE_OK) {
        FUZZ_ASSERT(off == 12345 && len == 67890); /* outputs untouched */
        if (r == REG_RANGE_UNSATISFIABLE) FUZZ_ASSERT(strchr(h, '-') != NULL);
        return;
    }
    FUZZ_ASSERT(size > 0);
    FUZZ_ASSERT(len >= 1 && off < size && len <= size - off);
    /* the Content-Range berth answers with re-parses to the same window */
    char again[64];
    snprintf(again, sizeof again, "bytes=%" PRIu64 "-%" PRIu64, off, off + len - 1);
    uint64_t o2, l2;
    FUZZ_ASSERT(reg_parse_range(again, size, &o2, &l2) == REG_RANGE_OK && o2 == off && l2 == len);
    /* a suffix range of the same length selects the same bytes when it ends the blob */
    if (off + len == size) {
        snprintf(again, sizeof again, "bytes=-%" PRIu64, len);
        FUZZ_ASSERT(reg_parse_range(again, size, &o2, &l2) == REG_RANGE_OK && o2 == off &&
                    l2 == len);
    }
}

static void check_content_range(const char *h)
{
    uint64_t a = 1, b = 2;
    if (!reg_parse_content_range(h, &a, &b)) {
        FUZZ_ASSERT(a == 1 && b == 2);
        return;
    }
    FUZZ_ASSERT(strchr(h, '-') != NULL);
    char again[64];
    snprintf(again, sizeof again, "%" PRIu64 "-%" PRIu64, a, b);
    uint64_t a2, b2;
    FUZZ_ASSERT(reg_parse_content_range(again, &a2, &b2) && a2 == a && b2 == b);
    snprintf(again, sizeof again, "bytes %" PRIu64 "-%" PRIu64 "/*", a, b);
    FUZZ_ASSERT(reg_parse_content_range(again, &a2, &b2) && a2 == a && b2 == b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstr(data, size);
    const char *h = s;
    uint64_t sizes[] = {0, 1, 2, 1000, UINT64_MAX - 1, UINT64_MAX, 0};
    size_t nsizes = 6;
    char *nl = strchr(s, '\n');
    if (nl) {
        *nl = '\0';
        sizes[nsizes++] = strtoull(s, NULL, 10);
        h = nl + 1;
    }
    for (size_t i = 0; i < nsizes; i++)
        check_range(h, sizes[i]);
    FUZZ_ASSERT(reg_parse_range(NULL, 10, NULL, NULL) == REG_RANGE_NONE);
    check_content_range(h);
    free(s);
    return 0;
}
