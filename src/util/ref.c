/*
 * ref: hand-checked grammar (no regex engine on the hot path); see ref.h.
 */
#include "util/ref.h"

#include <stdio.h>
#include <string.h>

static bool is_alnum_lower(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* One path component: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* over s[0..n). */
static bool component_valid(const char *s, size_t n)
{
    if (n == 0 || !is_alnum_lower(s[0]) || !is_alnum_lower(s[n - 1])) return false;
    size_t i = 0;
    while (i < n) {
        if (is_alnum_lower(s[i])) {
            i++;
            continue;
        }
        size_t j = i;
        if (s[i] == '.') {
            j = i + 1;
        } else if (s[i] == '_') {
            j = i + 1;
            if (j < n && s[j] == '_') j++;
        } else if (s[i] == '-') {
            while (j < n && s[j] == '-')
                j++;
        } else {
            return false;
        }
        if (j >= n || !is_alnum_lower(s[j])) return false;
        i = j;
    }
    return true;
}

bool ref_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > REF_NAME_MAX) return false;
    const char *p = name;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (!component_valid(p, n)) return false;
        if (!slash) return true;
        p = slash + 1;
    }
}

bool ref_tag_valid(const char *tag)
{
    size_t n = strlen(tag);
    if (n == 0 || n > REF_TAG_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = tag[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || (i > 0 && (c == '.' || c == '-'));
        if (!ok) return false;
    }
    return true;
}

bool ref_is_digest(const char *ref)
{
    return strchr(ref, ':') != NULL;
}

void ref_store_name(const char *name, char *out, size_t len)
{
    const char *slash = strchr(name, '/');
    size_t hl = slash ? (size_t)(slash - name) : 0;
    bool host = slash && (memchr(name, '.', hl) || memchr(name, ':', hl) ||
                          (hl == 9 && !strncmp(name, "localhost", 9)));
    snprintf(out, len, "%s", name);
    if (host)
        for (char *c = out; *c && c < out + hl; c++)
            if (*c == ':') *c = '-';
}
