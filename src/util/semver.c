/*
 * semver: SemVer 2.0.0 (semver.org) for chart versions, margo component revisions and the
 * sorting of index.yaml: validity by the specification's own regular expression (POSIX regex,
 * compiled once), precedence by its rules (numeric identifiers by value at any length, a
 * pre-release below its release, build metadata ignored but used last for a stable order).
 */
#include "util/semver.h"

#include <ctype.h>
#include <pthread.h>
#include <regex.h>
#include <string.h>

static const char semver_re[] = "^(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)"
                                "(-((0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\\.(0|[1-9][0-9]*|"
                                "[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
                                "(\\+([0-9a-zA-Z-]+(\\.[0-9a-zA-Z-]+)*))?$";

static regex_t semver_compiled;
static bool semver_ready;
static pthread_once_t semver_once = PTHREAD_ONCE_INIT;

static void semver_init(void)
{
    semver_ready = regcomp(&semver_compiled, semver_re, REG_EXTENDED | REG_NOSUB) == 0;
}

bool semver_valid(const char *v)
{
    if (strlen(v) > SEMVER_MAX) return false;
    pthread_once(&semver_once, semver_init);
    return semver_ready && regexec(&semver_compiled, v, 0, NULL, 0) == 0;
}

/* Compares numeric identifiers of any length. */
static int num_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    if (al != bl) return al < bl ? -1 : 1;
    int c = memcmp(a, b, al);
    return c < 0 ? -1 : c > 0;
}

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i])) return false;
    return n > 0;
}

int semver_cmp(const char *a, const char *b)
{
    const char *pa = a, *pb = b;
    /* major.minor.patch */
    for (int i = 0; i < 3; i++) {
        size_t la = strspn(pa, "0123456789"), lb = strspn(pb, "0123456789");
        int c = num_cmp(pa, la, pb, lb);
        if (c) return c;
        pa += la;
        pb += lb;
        if (i < 2) {
            if (*pa == '.') pa++;
            if (*pb == '.') pb++;
        }
    }
    size_t ra = strcspn(pa, "+"), rb = strcspn(pb, "+");
    bool prea = *pa == '-', preb = *pb == '-';
    if (!prea && preb) return 1;
    if (prea && !preb) return -1;
    if (prea && preb) {
        const char *xa = pa + 1, *xb = pb + 1, *ea = pa + ra, *eb = pb + rb;
        while (xa < ea && xb < eb) {
            size_t la = strcspn(xa, ".+"), lb = strcspn(xb, ".+");
            if (xa + la > ea) la = (size_t)(ea - xa);
            if (xb + lb > eb) lb = (size_t)(eb - xb);
            bool na = all_digits(xa, la), nb = all_digits(xb, lb);
            int c;
            if (na && nb)
                c = num_cmp(xa, la, xb, lb);
            else if (na != nb)
                c = na ? -1 : 1;
            else {
                size_t m = la < lb ? la : lb;
                c = memcmp(xa, xb, m);
                c = c ? (c < 0 ? -1 : 1) : (la == lb ? 0 : (la < lb ? -1 : 1));
            }
            if (c) return c;
            xa += la;
            xb += lb;
            if (xa < ea && *xa == '.') xa++;
            if (xb < eb && *xb == '.') xb++;
        }
        if (xa < ea) return 1;
        if (xb < eb) return -1;
    }
    int c = strcmp(a, b); /* same precedence: a stable order by build metadata */
    return c < 0 ? -1 : c > 0;
}
