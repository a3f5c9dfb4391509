/*
 * Fuzzes the upstream WWW-Authenticate parser (src/proxy/upstream.c). A parsed challenge has a
 * non-empty scheme without spaces and NUL-terminated fields within their buffers; written back as
 * `scheme realm="...",service="...",scope="..."` (quotes and backslashes escaped) it parses to the
 * same fields.
 */
#include "fuzz.h"
#include "proxy/upstream.h"

static size_t quote(char *out, size_t cap, const char *key, const char *v)
{
    size_t n = 0;
    n += (size_t)snprintf(out + n, cap - n, ",%s=\"", key);
    for (; *v && n + 3 < cap; v++) {
        if (*v == '"' || *v == '\\') out[n++] = '\\';
        out[n++] = *v;
    }
    out[n++] = '"';
    out[n] = '\0';
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstr(data, size);
    upstream_challenge c;
    bool ok = upstream_parse_challenge(s, &c);
    if (ok) {
        size_t sl = strnlen(c.scheme, sizeof c.scheme);
        FUZZ_ASSERT(sl > 0 && sl < sizeof c.scheme && !strchr(c.scheme, ' '));
        FUZZ_ASSERT(strnlen(c.realm, sizeof c.realm) < sizeof c.realm);
        FUZZ_ASSERT(strnlen(c.service, sizeof c.service) < sizeof c.service);
        FUZZ_ASSERT(strnlen(c.scope, sizeof c.scope) < sizeof c.scope);
        /* round trip */
        static char again[4 * 1300];
        size_t n = (size_t)snprintf(again, sizeof again, "%s ", c.scheme);
        n += quote(again + n, sizeof again - n, "realm", c.realm);
        n += quote(again + n, sizeof again - n, "service", c.service);
        quote(again + n, sizeof again - n, "scope", c.scope);
        upstream_challenge d;
        FUZZ_ASSERT(upstream_parse_challenge(again, &d));
        FUZZ_ASSERT(!strcmp(c.scheme, d.scheme));
        FUZZ_ASSERT(!strcmp(c.realm, d.realm));
        FUZZ_ASSERT(!strcmp(c.service, d.service));
        FUZZ_ASSERT(!strcmp(c.scope, d.scope));
    }
    free(s);
    return 0;
}
