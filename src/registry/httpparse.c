/*
 * httpparse: see httpparse.h.
 */
#include "registry/httpparse.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

reg_range_result reg_parse_range(const char *h, uint64_t size, uint64_t *off, uint64_t *len)
{
    if (!h) return REG_RANGE_NONE;
    while (*h == ' ')
        h++;
    if (strncasecmp(h, "bytes=", 6) != 0) return REG_RANGE_NONE;
    const char *p = h + 6;
    while (*p == ' ')
        p++;
    if (strchr(p, ',')) return REG_RANGE_NONE;
    char *end;
    if (*p == '-') {
        if (!isdigit((unsigned char)p[1])) return REG_RANGE_NONE;
        unsigned long long n = strtoull(p + 1, &end, 10);
        while (*end == ' ')
            end++;
        if (*end) return REG_RANGE_NONE;
        if (n == 0 || size == 0) return REG_RANGE_UNSATISFIABLE;
        if (n > size) n = size;
        *off = size - n;
        *len = n;
        return REG_RANGE_OK;
    }
    if (!isdigit((unsigned char)*p)) return REG_RANGE_NONE;
    unsigned long long a = strtoull(p, &end, 10);
    if (*end != '-') return REG_RANGE_NONE;
    p = end + 1;
    unsigned long long b;
    if (!*p) {
        b = size ? size - 1 : 0;
    } else {
        if (!isdigit((unsigned char)*p)) return REG_RANGE_NONE;
        b = strtoull(p, &end, 10);
        while (*end == ' ')
            end++;
        if (*end) return REG_RANGE_NONE;
        if (b < a) return REG_RANGE_UNSATISFIABLE; /* "500-0": RFC 9110 lets a server answer 416 */
        if (b >= size) b = size ? size - 1 : 0;
    }
    if (a >= size) return REG_RANGE_UNSATISFIABLE;
    *off = a;
    *len = b - a + 1;
    return REG_RANGE_OK;
}

bool reg_parse_content_range(const char *h, uint64_t *first, uint64_t *last)
{
    while (*h == ' ')
        h++;
    if (!strncasecmp(h, "bytes", 5)) {
        h += 5;
        while (*h == ' ' || *h == '=')
            h++;
    }
    char *end;
    if (!isdigit((unsigned char)*h)) return false;
    unsigned long long a = strtoull(h, &end, 10);
    if (*end != '-' || !isdigit((unsigned char)end[1])) return false;
    unsigned long long b = strtoull(end + 1, &end, 10);
    if (*end && *end != '/') return false;
    *first = a;
    *last = b;
    return true;
}
