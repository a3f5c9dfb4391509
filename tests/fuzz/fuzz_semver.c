/*
 * Fuzzes the SemVer 2.0.0 and chart-name grammar of src/helm/chart.c (semver_valid,
 * semver_cmp, helm_name_valid) against small reference implementations written here from
 * the specifications (semver.org 2.0.0 items 2, 9-11; Helm's chart name rule as berth narrows it
 * to an OCI repository component).
 *
 * The input is up to three strings separated by '\n' (a, b and an optional c; each ends at its
 * first NUL as C strings do). Invariants:
 *  - semver_valid and helm_name_valid agree with the references (lengths at most 128);
 *  - semver_cmp, for any strings, returns -1, 0 or 1, cmp(a,a) == 0, cmp(a,b) == -cmp(b,a)
 *    and cmp(a,b) == 0 only for the same text (build metadata breaks precedence ties);
 *  - for valid versions it orders by SemVer precedence (numeric identifiers numerically, numeric
 *    before alphanumeric, a pre-release before its release, a shorter pre-release before a longer
 *    one it prefixes, build metadata ignored) and by text on equal precedence, and is transitive
 *    over a, b, c (index.yaml sorts versions with it).
 */
#include "fuzz.h"
#include "helm/helm.h"

#include <regex.h>
#include <stdbool.h>

static regex_t name_re;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    if (regcomp(&name_re, "^[a-z0-9]+([._-][a-z0-9]+)*$", REG_EXTENDED | REG_NOSUB)) abort();
    return 0;
}

/* ---- reference SemVer ---- */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}
static bool is_ident_char(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
}

/* A numeric identifier at s: "0" or no leading zero; returns its length, 0 if none. */
static size_t numeric(const char *s)
{
    size_t n = 0;
    while (is_digit(s[n]))
        n++;
    if (n == 0 || (n > 1 && s[0] == '0')) return 0;
    return n;
}

/* Dot-separated non-empty identifiers up to the end or stop; pre: numeric ones have no leading
 * zero. Returns the length consumed, 0 when malformed. */
static size_t idents(const char *s, char stop, bool pre)
{
    size_t i = 0;
    for (;;) {
        size_t start = i;
        bool digits = true;
        while (is_ident_char(s[i])) {
            digits = digits && is_digit(s[i]);
            i++;
        }
        size_t n = i - start;
        if (n == 0) return 0;
        if (pre && digits && n > 1 && s[start] == '0') return 0;
        if (s[i] == '.') {
            i++;
            continue;
        }
        if (s[i] == '\0' || s[i] == stop) return i;
        return 0;
    }
}

typedef struct {
    const char *core[3];
    size_t core_len[3];
    const char *pre; /* NULL when it has none */
    size_t pre_len;
} ref_version;

static bool ref_parse(const char *s, ref_version *v)
{
    if (strlen(s) > 128) return false;
    const char *p = s;
    for (int i = 0; i < 3; i++) {
        size_t n = numeric(p);
        if (!n) return false;
        v->core[i] = p;
        v->core_len[i] = n;
        p += n;
        if (i < 2 && *p++ != '.') return false;
    }
    v->pre = NULL;
    v->pre_len = 0;
    if (*p == '-') {
        size_t n = idents(p + 1, '+', true);
        if (!n) return false;
        v->pre = p + 1;
        v->pre_len = n;
        p += 1 + n;
    }
    if (*p == '+') {
        size_t n = idents(p + 1, '\0', false);
        if (!n) return false;
        p += 1 + n;
    }
    return *p == '\0';
}

static int sign(int c)
{
    return c < 0 ? -1 : c > 0;
}

static int num_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    if (al != bl) return al < bl ? -1 : 1; /* no leading zeros: longer is larger */
    return sign(memcmp(a, b, al));
}

static int ident_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    bool na = true, nb = true;
    for (size_t i = 0; i < al; i++)
        na = na && is_digit(a[i]);
    for (size_t i = 0; i < bl; i++)
        nb = nb && is_digit(b[i]);
    if (na && nb) return num_cmp(a, al, b, bl);
    if (na != nb) return na ? -1 : 1;        /* numeric identifiers have lower precedence */
    int c = memcmp(a, b, al < bl ? al : bl); /* ASCII order */
    return c ? sign(c) : al == bl ? 0 : al < bl ? -1 : 1;
}

/* Precedence only: 0 for versions that differ only in build metadata. */
static int ref_precedence(const ref_version *a, const ref_version *b)
{
    for (int i = 0; i < 3; i++) {
        int c = num_cmp(a->core[i], a->core_len[i], b->core[i], b->core_len[i]);
        if (c) return c;
    }
    if (!a->pre || !b->pre) return a->pre ? -1 : b->pre ? 1 : 0;
    const char *pa = a->pre, *ea = a->pre + a->pre_len, *pb = b->pre, *eb = b->pre + b->pre_len;
    while (pa < ea && pb < eb) {
        const char *da = memchr(pa, '.', (size_t)(ea - pa)),
                   *db = memchr(pb, '.', (size_t)(eb - pb));
        size_t la = (size_t)((da ? da : ea) - pa), lb = (size_t)((db ? db : eb) - pb);
        int c = ident_cmp(pa, la, pb, lb);
        if (c) return c;
        pa += la + (da != NULL);
        pb += lb + (db != NULL);
    }
    return pa < ea ? 1 : pb < eb ? -1 : 0; /* a larger set of fields has higher precedence */
}

/* ---- reference chart name ---- */

static bool ref_name(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= HELM_NAME_MAX && regexec(&name_re, s, 0, NULL, 0) == 0;
}

/* ---- checks ---- */

static void check_one(const char *s)
{
    ref_version v;
    bool valid = ref_parse(s, &v);
    if (semver_valid(s) != valid) {
        fprintf(stderr, "semver_valid(\"%s\") = %d, reference %d\n", s, !valid, valid);
        FUZZ_ASSERT(semver_valid(s) == valid);
    }
    if (strlen(s) <= HELM_NAME_MAX + 8)
        FUZZ_ASSERT(helm_name_valid(s) == ref_name(s));
    else
        FUZZ_ASSERT(!helm_name_valid(s));
    FUZZ_ASSERT(semver_cmp(s, s) == 0);
}

static void check_pair(const char *a, const char *b)
{
    int ab = semver_cmp(a, b), ba = semver_cmp(b, a);
    if (ab != -ba || ab < -1 || ab > 1)
        fprintf(stderr, "cmp(\"%s\", \"%s\") = %d, reversed %d\n", a, b, ab, ba);
    FUZZ_ASSERT(ab >= -1 && ab <= 1);
    FUZZ_ASSERT(ab == -ba);
    FUZZ_ASSERT((ab == 0) == (strcmp(a, b) == 0));
    ref_version va, vb;
    if (ref_parse(a, &va) && ref_parse(b, &vb)) {
        int want = ref_precedence(&va, &vb);
        if (!want) want = sign(strcmp(a, b));
        if (ab != want) fprintf(stderr, "cmp(\"%s\", \"%s\") = %d, reference %d\n", a, b, ab, want);
        FUZZ_ASSERT(ab == want);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096) return 0; /* versions and names are short; keep the regexes cheap */
    char *buf = fuzz_cstr(data, size);
    char *a = buf, *b = "", *c = NULL;
    char *nl = memchr(buf, '\n', size);
    if (nl) {
        *nl = '\0';
        b = nl + 1;
        size_t rest = size - (size_t)(b - buf);
        char *nl2 = memchr(b, '\n', rest);
        if (nl2) {
            *nl2 = '\0';
            c = nl2 + 1;
        }
    }
    check_one(a);
    check_one(b);
    check_pair(a, b);
    if (c) {
        check_one(c);
        check_pair(a, c);
        check_pair(b, c);
        ref_version va, vb, vc;
        if (ref_parse(a, &va) && ref_parse(b, &vb) && ref_parse(c, &vc)) {
            int ab = semver_cmp(a, b), bc = semver_cmp(b, c), ac = semver_cmp(a, c);
            if (ab <= 0 && bc <= 0) FUZZ_ASSERT(ac <= 0);
            if (ab >= 0 && bc >= 0) FUZZ_ASSERT(ac >= 0);
        }
    }
    free(buf);
    return 0;
}
