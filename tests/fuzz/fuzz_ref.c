/*
 * Fuzzes the repository-name and tag grammar (src/util/ref.c) against the distribution-spec
 * regular expressions (POSIX ERE, glibc), and checks the safety properties ref.h promises: a valid
 * name or tag uses only its alphabet, has no empty, "." or ".." component and fits its limit.
 */
#include "fuzz.h"
#include "util/ref.h"

#include <regex.h>
#include <stdbool.h>

static regex_t name_re, tag_re;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    if (regcomp(&name_re,
                "^[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*$",
                REG_EXTENDED | REG_NOSUB) ||
        regcomp(&tag_re, "^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$", REG_EXTENDED | REG_NOSUB))
        abort();
    return 0;
}

static void check_name(const char *s)
{
    bool ok = ref_name_valid(s);
    size_t n = strlen(s);
    /* the regex alone has no length limit; glibc's matcher is only asked about short strings */
    if (n <= REF_NAME_MAX + 8) {
        bool re = regexec(&name_re, s, 0, NULL, 0) == 0;
        FUZZ_ASSERT(ok == (re && n <= REF_NAME_MAX));
    }
    if (!ok) return;
    FUZZ_ASSERT(n >= 1 && n <= REF_NAME_MAX);
    FUZZ_ASSERT(strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789._-/") == n);
    FUZZ_ASSERT(s[0] != '/' && s[n - 1] != '/' && !strstr(s, "//"));
    /* no component is "." or ".." or starts with a separator: never escapes a directory */
    for (const char *p = s; p;) {
        const char *slash = strchr(p, '/');
        size_t cl = slash ? (size_t)(slash - p) : strlen(p);
        FUZZ_ASSERT(cl > 0 && p[0] != '.' && p[0] != '-' && p[0] != '_');
        FUZZ_ASSERT(p[cl - 1] != '.' && p[cl - 1] != '-' && p[cl - 1] != '_');
        p = slash ? slash + 1 : NULL;
    }
    FUZZ_ASSERT(!strstr(s, "..") && !strstr(s, "___"));
}

static void check_tag(const char *s)
{
    bool ok = ref_tag_valid(s);
    size_t n = strlen(s);
    if (n <= REF_TAG_MAX + 8) FUZZ_ASSERT(ok == (regexec(&tag_re, s, 0, NULL, 0) == 0));
    if (!ok) return;
    FUZZ_ASSERT(n >= 1 && n <= REF_TAG_MAX);
    FUZZ_ASSERT(s[0] != '.' && s[0] != '-');
    FUZZ_ASSERT(strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") ==
                n);
    /* a tag never looks like a digest or a path */
    FUZZ_ASSERT(!ref_is_digest(s) && !strchr(s, '/'));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstr(data, size);
    check_name(s);
    check_tag(s);
    FUZZ_ASSERT(ref_is_digest(s) == (strchr(s, ':') != NULL));
    /* "name:tag" and "name@digest" as clients write them: each part on its own */
    char *sep = strpbrk(s, ":@");
    if (sep) {
        *sep = '\0';
        check_name(s);
        check_tag(sep + 1);
    }
    free(s);
    return 0;
}
