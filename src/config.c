/*
 * config: see config.h.
 *
 * The YAML file is first read into a small generic tree (maps, sequences, scalars); env overrides
 * are then written into that tree by path, and finally a table of known keys pulls values out of
 * it, marking each node it consumed. Whatever is left unmarked is reported as unknown. Keeping the
 * tree generic is what lets REGISTRY_* variables override any key with one mechanism.
 */
#include "config.h"
#include "util/err.h"
#include "util/log.h"
#include "util/ref.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <yaml.h>

extern char **environ;

typedef enum { CN_SCALAR, CN_MAP, CN_SEQ } cn_kind;

typedef struct cnode {
    cn_kind kind;
    char *key;   /* key within the parent map (NULL in sequences / root) */
    char *value; /* scalars */
    struct cnode **kids;
    size_t nkids;
    bool used;
} cnode;

static cnode *cn_new(cn_kind kind, const char *key)
{
    cnode *n = calloc(1, sizeof *n);
    if (!n) abort();
    n->kind = kind;
    n->key = key ? strdup(key) : NULL;
    return n;
}

static void cn_free(cnode *n)
{
    if (!n) return;
    for (size_t i = 0; i < n->nkids; i++)
        cn_free(n->kids[i]);
    free(n->kids);
    free(n->key);
    free(n->value);
    free(n);
}

static void cn_add(cnode *parent, cnode *kid)
{
    parent->kids = realloc(parent->kids, (parent->nkids + 1) * sizeof *parent->kids);
    if (!parent->kids) abort();
    parent->kids[parent->nkids++] = kid;
}

/* Map lookup; registry:2 matches keys case-insensitively. */
static cnode *cn_get(cnode *map, const char *key)
{
    if (!map || map->kind != CN_MAP) return NULL;
    for (size_t i = 0; i < map->nkids; i++)
        if (!strcasecmp(map->kids[i]->key, key)) return map->kids[i];
    return NULL;
}

/* Lookup by dotted path ("storage.filesystem.rootdirectory"). When found, the node and every
 * ancestor on the path are marked used, so report_unused() descends only into known sections. */
static cnode *cn_path(cnode *root, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    cnode *trail[16];
    size_t depth = 0;
    cnode *n = root;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ".", &save); tok && n && depth < 16;
         tok = strtok_r(NULL, ".", &save)) {
        n = cn_get(n, tok);
        trail[depth++] = n;
    }
    if (!n) return NULL;
    for (size_t i = 0; i < depth; i++)
        trail[i]->used = true;
    return n;
}

/* Aliases make a YAML document a graph, not a tree: an alias inside its own anchor would recurse
 * forever and nested aliases expand exponentially ("billion laughs"), so the copy is bounded. */
#define CONFIG_MAX_DEPTH 64
#define CONFIG_MAX_NODES 100000

/* NULL when the document nests deeper than CONFIG_MAX_DEPTH or expands beyond *budget nodes. */
static cnode *yaml_to_tree(yaml_document_t *doc, yaml_node_t *yn, const char *key, int depth,
                           size_t *budget)
{
    if (depth > CONFIG_MAX_DEPTH || *budget == 0) return NULL;
    (*budget)--;
    cnode *n;
    switch (yn->type) {
    case YAML_MAPPING_NODE:
        n = cn_new(CN_MAP, key);
        for (yaml_node_pair_t *p = yn->data.mapping.pairs.start; p < yn->data.mapping.pairs.top;
             p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key);
            yaml_node_t *v = yaml_document_get_node(doc, p->value);
            if (!k || !v || k->type != YAML_SCALAR_NODE) continue;
            cnode *kid =
                yaml_to_tree(doc, v, (const char *)k->data.scalar.value, depth + 1, budget);
            if (!kid) {
                cn_free(n);
                return NULL;
            }
            cn_add(n, kid);
        }
        return n;
    case YAML_SEQUENCE_NODE:
        n = cn_new(CN_SEQ, key);
        for (yaml_node_item_t *it = yn->data.sequence.items.start; it < yn->data.sequence.items.top;
             it++) {
            yaml_node_t *v = yaml_document_get_node(doc, *it);
            if (!v) continue;
            cnode *kid = yaml_to_tree(doc, v, NULL, depth + 1, budget);
            if (!kid) {
                cn_free(n);
                return NULL;
            }
            cn_add(n, kid);
        }
        return n;
    default:
        n = cn_new(CN_SCALAR, key);
        n->value = strdup(yn->type == YAML_SCALAR_NODE ? (const char *)yn->data.scalar.value : "");
        return n;
    }
}

static int load_yaml(const char *path, cnode **out)
{
    FILE *f = fopen(path, "rb");
    if (!f) return berr_set(BERR_CONFIG, "cannot open config %s: %s", path, strerror(errno));
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    int rc = 0;
    if (!yaml_parser_load(&parser, &doc)) {
        rc =
            berr_set(BERR_CONFIG, "config %s: %s at line %zu", path,
                     parser.problem ? parser.problem : "parse error", parser.problem_mark.line + 1);
    } else {
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (root && root->type != YAML_MAPPING_NODE)
            rc = berr_set(BERR_CONFIG, "config %s: top level must be a mapping", path);
        else if (!root)
            *out = cn_new(CN_MAP, NULL);
        else if (!(*out = yaml_to_tree(&doc, root, NULL, 0, &(size_t){CONFIG_MAX_NODES})))
            rc =
                berr_set(BERR_CONFIG, "config %s: nested too deeply or too large (aliases?)", path);
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}

/* REGISTRY_HTTP_ADDR=x -> root.http.addr = x (creating maps on the way). */
static void apply_env(cnode *root)
{
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "REGISTRY_", 9) != 0) continue;
        const char *eq = strchr(*e, '=');
        if (!eq) continue;
        char name[256];
        size_t len = (size_t)(eq - (*e + 9));
        if (len == 0 || len >= sizeof name) continue;
        memcpy(name, *e + 9, len);
        name[len] = '\0';
        for (char *c = name; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        cnode *n = root;
        char *save = NULL;
        char *tok = strtok_r(name, "_", &save);
        while (tok) {
            char *next = strtok_r(NULL, "_", &save);
            cnode *kid = cn_get(n, tok);
            if (!next) {
                if (kid && kid->kind == CN_SCALAR) {
                    free(kid->value);
                } else {
                    if (kid) { /* a scalar replaces a whole subtree, as in registry:2 */
                        for (size_t i = 0; i < n->nkids; i++)
                            if (n->kids[i] == kid) n->kids[i] = cn_new(CN_SCALAR, tok);
                        cn_free(kid);
                        kid = cn_get(n, tok);
                    } else {
                        kid = cn_new(CN_SCALAR, tok);
                        cn_add(n, kid);
                    }
                }
                kid->value = strdup(eq + 1);
                break;
            }
            if (!kid || kid->kind != CN_MAP) {
                if (kid) break; /* path runs through a scalar: ignore, reported as-is */
                kid = cn_new(CN_MAP, tok);
                cn_add(n, kid);
            }
            n = kid;
            tok = next;
        }
    }
}

static void report_unused(cnode *n, const char *prefix)
{
    for (size_t i = 0; i < n->nkids; i++) {
        cnode *k = n->kids[i];
        char path[512];
        snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", k->key ? k->key : "?");
        if (!k->used)
            log_warn("msg=\"unknown configuration key ignored\" key=%s", path);
        else if (k->kind == CN_MAP)
            report_unused(k, path);
    }
}

/* Go-style durations ("90s", "1h30m", "500ms") or bare seconds, in seconds. */
static int parse_duration(const char *s, double *secs)
{
    if (!s || !*s) return berr_set(BERR_CONFIG, "empty duration");
    if (strspn(s, "0123456789") == strlen(s)) {
        *secs = (double)strtoll(s, NULL, 10);
        if (*secs >= 9e15) return berr_set(BERR_CONFIG, "duration '%s' out of range", s);
        return 0;
    }
    char *end;
    double total = 0;
    const char *p = s;
    while (*p) {
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno) return berr_set(BERR_CONFIG, "invalid duration '%s'", s);
        p = end;
        double mul;
        if (!strncmp(p, "ms", 2))
            mul = 0.001, p += 2;
        else if (!strncmp(p, "us", 2) || !strncmp(p, "µs", 3))
            mul = 1e-6, p += (*p == 'u' ? 2 : 3);
        else if (!strncmp(p, "ns", 2))
            mul = 1e-9, p += 2;
        else if (*p == 'h')
            mul = 3600, p++;
        else if (*p == 'm')
            mul = 60, p++;
        else if (*p == 's')
            mul = 1, p++;
        else if (*p == 'd')
            mul = 86400, p++;
        else
            return berr_set(BERR_CONFIG, "invalid duration '%s' (unit)", s);
        total += v * mul;
    }
    /* in range for milliseconds in an int64_t; also refuses nan and inf */
    if (!(total > -9e15 && total < 9e15))
        return berr_set(BERR_CONFIG, "duration '%s' out of range", s);
    *secs = total;
    return 0;
}

int config_parse_duration(const char *s, int64_t *out)
{
    double secs;
    int rc = parse_duration(s, &secs);
    if (rc == 0) *out = (int64_t)secs;
    return rc;
}

int config_parse_duration_ms(const char *s, int64_t *out)
{
    double secs;
    int rc = parse_duration(s, &secs);
    if (rc == 0) *out = (int64_t)(secs * 1000 + 0.5);
    return rc;
}

int config_parse_size(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0) return berr_set(BERR_CONFIG, "invalid size '%s'", s);
    while (*end == ' ')
        end++;
    double mul = 1;
    if (!*end || !strcasecmp(end, "b"))
        mul = 1;
    else if (!strcasecmp(end, "k") || !strcasecmp(end, "kb") || !strcasecmp(end, "kib"))
        mul = 1024.0;
    else if (!strcasecmp(end, "m") || !strcasecmp(end, "mb") || !strcasecmp(end, "mib"))
        mul = 1048576.0;
    else if (!strcasecmp(end, "g") || !strcasecmp(end, "gb") || !strcasecmp(end, "gib"))
        mul = 1073741824.0;
    else if (!strcasecmp(end, "t") || !strcasecmp(end, "tb") || !strcasecmp(end, "tib"))
        mul = 1099511627776.0;
    else
        return berr_set(BERR_CONFIG, "invalid size '%s' (unit)", s);
    if (!(v * mul < 9e18)) return berr_set(BERR_CONFIG, "size '%s' out of range", s); /* nan too */
    *out = (int64_t)(v * mul);
    return 0;
}

static int parse_bool(const char *key, const char *s, bool *out)
{
    if (!strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcasecmp(s, "on") || !strcmp(s, "1"))
        *out = true;
    else if (!strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcasecmp(s, "off") ||
             !strcmp(s, "0"))
        *out = false;
    else
        return berr_set(BERR_CONFIG, "%s: expected true or false, got '%s'", key, s);
    return 0;
}

/* Scalar value at path, or NULL; errors when the path holds a map or sequence. */
static int get_str(cnode *root, const char *path, const char **out)
{
    cnode *n = cn_path(root, path);
    *out = NULL;
    if (!n) return 0;
    if (n->kind != CN_SCALAR) return berr_set(BERR_CONFIG, "%s: expected a single value", path);
    *out = n->value;
    return 0;
}

static void strs_free(char **l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

/* A list of strings: a scalar or a sequence of scalars (noun: what an item is, in errors). */
static int str_list(cnode *n, const char *what, const char *noun, char ***out, size_t *nout)
{
    if (!n) return 0;
    n->used = true;
    if (n->kind == CN_MAP)
        return berr_set(BERR_CONFIG, "%s: expected a list%s%s", what, noun ? " of " : "",
                        noun ? noun : "");
    size_t cnt = n->kind == CN_SEQ ? n->nkids : 1;
    for (size_t i = 0; i < cnt; i++) {
        cnode *v = n->kind == CN_SEQ ? n->kids[i] : n;
        if (v->kind != CN_SCALAR)
            return berr_set(BERR_CONFIG, "%s: expected %s", what, noun ? noun : "names");
        *out = realloc(*out, (*nout + 1) * sizeof **out);
        if (!*out) abort();
        (*out)[(*nout)++] = strdup(v->value);
    }
    return 0;
}

/* ---- the table of known keys ----
 *
 * Every key berth reads is one config_key entry, in the style of nginx's ngx_command_t: its path
 * in the tree, its type, where its value goes (offsetof into the struct the table describes), its
 * default (as text, parsed like a value from the file) and a one-line help. The table drives the
 * defaults (table_defaults), the parsing, which marks each node it reads (table_apply), the free
 * (table_free: strings and lists) and `berth serve --help` (config_print_keys);
 * tests/integration/config_keys.sh checks that the help and docs/configuration.md name the same
 * keys. Entries are applied in table order, so the first bad key in that order is the error.
 *
 * A section that is a list or map of its own (mirrors, helm upstreams, access rules...) is one
 * CK_BLOCK entry whose handler reads it; adding a section (notifications:, trust:) is:
 *   1. the struct member in config.h;
 *   2. a handler `static int load_x(cnode *root, void *base, const config_key *k)`, called
 *      on every load (it returns 0 when the section is absent): base is the config, root the
 *      whole tree after the REGISTRY_* overrides; it looks nodes up with cn_path(root, k->path),
 *      which marks them used (not reported as unknown), reports errors with
 *      berr_set(BERR_CONFIG, "x.key: ...") and leaves what it allocated in *base (freed on error);
 *   3. a release `static void free_x(void *base, const config_key *k)` for what load_x allocated;
 *   4. one entry in config_keys[]: BLOCK("x", load_x, free_x, NULL, "map", "one-line help"),
 *      placed where its errors should come in order (the last entries: after margo.validation).
 *      A loader written as berth's were, `int load_x(cnode *root, config *cfg)` with its frees
 *      in `void free_x(config *cfg)`, drops in as is: SECTION("x", load_x, free_x, "help").
 *      Scalar keys of the section can be plain entries instead, KEY("x.enabled", CK_BOOL,
 *      x.enabled, "false", "help"); a map of named members can describe a member with a
 *      sub-table its handler applies (mirror_keys, load_mirrors), printed under .sub_prefix;
 *   5. a row per key in docs/configuration.md (the test fails otherwise); take the section out
 *      of report_unserved() if it was named there. */

typedef enum {
    CK_STR,      /* char *: a copy of the value */
    CK_BOOL,     /* bool: true/false, yes/no, on/off, 1/0 */
    CK_INT,      /* int, 0 to 1000000; the default "auto" is -1, resolved by config_finish */
    CK_DOUBLE,   /* double, 0 to 1e9 */
    CK_DURATION, /* int64_t seconds: Go-style duration or bare seconds */
    CK_MSEC,     /* int64_t milliseconds: Go-style duration */
    CK_SIZE,     /* int64_t bytes ("4MiB"); the default "auto" is -1 */
    CK_ENUM,     /* int: k->parse(value), or "is not <k->choices>" */
    CK_LIST,     /* char ** at off, its size_t count at noff: a scalar or a sequence of scalars */
    CK_ACCEPT,   /* registry:2's, read and ignored: marked used whatever it holds */
    CK_BLOCK,    /* a section of its own, read by k->block */
} ck_type;

#define CK_NOFIELD ((size_t)-1) /* the value is checked (and passed to k->check), not stored */
#define AT(base, off, T) ((T *)((char *)(base) + (off)))

typedef struct config_key config_key;
struct config_key {
    const char *path; /* dotted, relative to the node the table is applied to */
    ck_type type;
    size_t off;       /* offsetof into the table's struct, or CK_NOFIELD */
    size_t noff;      /* CK_LIST: offsetof its count */
    const char *def;  /* default, as text (NULL: zero) */
    const char *help; /* one line; NULL: an internal check, not a key (not in --help) */
    /* CK_BLOCK: reads the section from node (the table's root) into base */
    int (*block)(cnode *node, void *base, const config_key *k);
    /* after the value is stored (v: the raw value, NULL when the key is absent) */
    int (*check)(void *base, const config_key *k, const char *v);
    /* frees what the entry holds (blocks; strings and lists are freed by table_free) */
    void (*release)(void *base, const config_key *k);
    /* CK_BLOCK in config_keys[] the way berth's loaders were written, load_x(root, cfg) and
     * free_x(cfg) (SECTION below): such a loader drops in unchanged */
    int (*section)(cnode *root, config *cfg);
    void (*section_free)(config *cfg);
    int (*parse)(const char *v);  /* CK_ENUM: the value, or -1 */
    const char *choices;          /* CK_ENUM: "a, b or c"; CK_LIST: what an item is ("names") */
    const char *shows;            /* CK_BLOCK: --help's type column ("map", "list"...) */
    const struct config_key *sub; /* a block's per-member keys, for --help */
    const char *sub_prefix;       /*   printed under this prefix */
};

/* The value v of k into base; path names the key in errors. */
static int key_set(const config_key *k, void *base, const char *path, const char *v)
{
    union {
        bool b;
        int i;
        double d;
        int64_t l;
    } scratch;
    void *p = k->off == CK_NOFIELD ? (void *)&scratch : AT(base, k->off, void);
    char *end;
    switch (k->type) {
    case CK_STR:
        if (k->off != CK_NOFIELD) {
            free(*(char **)p);
            if (!(*(char **)p = strdup(v))) abort();
        }
        return 0;
    case CK_BOOL:
        return parse_bool(path, v, p);
    case CK_INT: {
        long x = strtol(v, &end, 10);
        if (*end || x < 0 || x > 1000000)
            return berr_set(BERR_CONFIG, "%s: invalid number '%s'", path, v);
        *(int *)p = (int)x;
        return 0;
    }
    case CK_DOUBLE: {
        double x = strtod(v, &end);
        if (*end || !(x >= 0 && x <= 1e9))
            return berr_set(BERR_CONFIG, "%s: invalid number '%s'", path, v);
        *(double *)p = x;
        return 0;
    }
    case CK_DURATION:
        if (config_parse_duration(v, p) < 0)
            return berr_set(BERR_CONFIG, "%s: invalid duration '%s'", path, v);
        return 0;
    case CK_MSEC: /* the parser's own error, without the key (as berth has always said it) */
        return config_parse_duration_ms(v, p);
    case CK_SIZE:
        if (config_parse_size(v, p) < 0)
            return berr_set(BERR_CONFIG, "%s: invalid size '%s'", path, v);
        return 0;
    case CK_ENUM: {
        int x = k->parse(v);
        if (x < 0) return berr_set(BERR_CONFIG, "%s: '%s' is not %s", path, v, k->choices);
        *(int *)p = x;
        return 0;
    }
    default:
        return berr_set(BERR_CONFIG, "%s: not a scalar key", path);
    }
}

static void table_defaults(const config_key *t, void *base)
{
    for (const config_key *k = t; k->path; k++) {
        if (!k->def || k->off == CK_NOFIELD || k->type >= CK_LIST) continue;
        if (!strcmp(k->def, "auto") && k->type == CK_INT)
            *AT(base, k->off, int) = -1;
        else if (!strcmp(k->def, "auto") && k->type == CK_SIZE)
            *AT(base, k->off, int64_t) = -1;
        else if (key_set(k, base, k->path, k->def) < 0) {
            fprintf(stderr, "berth: bad default in the configuration table: %s\n", berr_msg());
            abort();
        }
    }
}

static int table_apply(cnode *node, void *base, const config_key *t)
{
    for (const config_key *k = t; k->path; k++) {
        const char *v = NULL;
        int rc = 0;
        switch (k->type) {
        case CK_BLOCK:
            rc = k->section ? k->section(node, base) : k->block(node, base, k);
            break;
        case CK_ACCEPT:
            cn_path(node, k->path);
            break;
        case CK_LIST:
            rc = str_list(cn_path(node, k->path), k->path, k->choices, AT(base, k->off, char **),
                          AT(base, k->noff, size_t));
            break;
        default:
            rc = get_str(node, k->path, &v);
            if (rc == 0 && v) rc = key_set(k, base, k->path, v);
        }
        if (rc == 0 && k->check) rc = k->check(base, k, v);
        if (rc < 0) return rc;
    }
    return 0;
}

static void table_free(const config_key *t, void *base)
{
    for (const config_key *k = t; k->path; k++) {
        if (k->release) {
            k->release(base, k);
        } else if (k->section_free) {
            k->section_free(base);
        } else if (k->type == CK_STR && k->off != CK_NOFIELD) {
            free(*AT(base, k->off, char *));
            *AT(base, k->off, char *) = NULL;
        } else if (k->type == CK_LIST) {
            strs_free(*AT(base, k->off, char **), *AT(base, k->noff, size_t));
            *AT(base, k->off, char **) = NULL;
            *AT(base, k->noff, size_t) = 0;
        }
    }
}

static const char *type_name(const config_key *k)
{
    static const char *const names[] = {"string", "bool", "int",  "number", "duration", "duration",
                                        "size",   "enum", "list", "any",    "section"};
    return k->type == CK_BLOCK && k->shows ? k->shows : names[k->type];
}

static void table_print(const config_key *t, const char *prefix)
{
    for (const config_key *k = t; k->path; k++) {
        if (!k->help) continue;
        char path[128];
        snprintf(path, sizeof path, "%s%s", prefix, k->path);
        printf("  %-42s %-8s %-8s %s%s%s%s\n", path, type_name(k), k->def ? k->def : "-", k->help,
               k->type == CK_ENUM ? " (" : "", k->type == CK_ENUM ? k->choices : "",
               k->type == CK_ENUM ? ")" : "");
        if (k->sub) table_print(k->sub, k->sub_prefix);
    }
}

/* clang-format off */
#define KEY(p, t, field, d, h) \
    {.path = p, .type = t, .off = offsetof(config, field), .def = d, .help = h}
#define KEYC(p, t, field, d, chk, h) \
    {.path = p, .type = t, .off = offsetof(config, field), .def = d, .check = chk, .help = h}
#define LIST(p, field, nfield, noun, h) \
    {.path = p, .type = CK_LIST, .off = offsetof(config, field), \
     .noff = offsetof(config, nfield), .choices = noun, .help = h}
#define ENUM(p, field, d, fn, ch, h) \
    {.path = p, .type = CK_ENUM, .off = offsetof(config, field), .def = d, .parse = fn, \
     .choices = ch, .help = h}
/* a section read by fn into base, freed by rel; shows: its type in --help */
#define BLOCK(p, fn, rel, d, shows_, h) \
    {.path = p, .type = CK_BLOCK, .off = CK_NOFIELD, .block = fn, .release = rel, .def = d, \
     .shows = shows_, .help = h}
/* a section read by load(root, cfg), freed by release(cfg) (release may be NULL) */
#define SECTION(p, load, release, h) \
    {.path = p, .type = CK_BLOCK, .off = CK_NOFIELD, .section = load, .section_free = release, \
     .shows = "map", .help = h}
/* a check of several keys, run at this point of the table (not a key: not in --help) */
#define CHECK(p, fn) {.path = p, .type = CK_BLOCK, .off = CK_NOFIELD, .block = fn}
/* a value checked (and handed to chk), not stored */
#define RAW(p, t, d, chk, h) {.path = p, .type = t, .off = CK_NOFIELD, .def = d, .check = chk, .help = h}
/* a map of named members, each read with the sub-table sub_ (printed under prefix) */
#define MEMBERS(p, fn, rel, sub_, prefix, shows_, h) \
    {.path = p, .type = CK_BLOCK, .off = CK_NOFIELD, .block = fn, .release = rel, .sub = sub_, \
     .sub_prefix = prefix, .shows = shows_, .help = h}
#define REGEXES(p, field, nfield, h) \
    {.path = p, .type = CK_BLOCK, .off = offsetof(config, field), .noff = offsetof(config, nfield), \
     .block = load_regex_list, .release = free_regex_list, .shows = "list", .help = h}
#define ACTIONS(p, field, d, h) \
    {.path = p, .type = CK_BLOCK, .off = offsetof(config, field), .block = load_actions, .def = d, \
     .shows = "list", .help = h}
/* the same over a config_mirror */
#define MKEY(p, t, field, d, h) \
    {.path = p, .type = t, .off = offsetof(config_mirror, field), .def = d, .help = h}
#define MKEYC(p, t, field, d, chk, h) \
    {.path = p, .type = t, .off = offsetof(config_mirror, field), .def = d, .check = chk, .help = h}
/* clang-format on */

/* ---- sections: version, log, storage ---- */

static int check_version(void *base, const config_key *k, const char *v)
{
    (void)base, (void)k;
    if (v && strcmp(v, "0.1") != 0)
        return berr_set(BERR_CONFIG, "version: unsupported configuration version '%s'", v);
    return 0;
}

/* log.level, or registry:2's older top-level `loglevel` when it is absent */
static int load_log_level(cnode *root, void *base, const config_key *k)
{
    config *cfg = base;
    const char *v, *old;
    int rc;
    if ((rc = get_str(root, "log.level", &v)) < 0 || (rc = get_str(root, "loglevel", &old)) < 0)
        return rc;
    const char *which = v ? "log.level" : "loglevel";
    if (!v) v = old ? old : k->def;
    int lvl = log_parse_level(v);
    if (lvl < 0) return berr_set(BERR_CONFIG, "%s: unknown level '%s'", which, v);
    cfg->log_level = lvl;
    return 0;
}

static int load_log_fields(cnode *root, void *base, const config_key *k)
{
    config *cfg = base;
    cnode *fl = cn_path(root, k->path);
    if (fl && fl->kind != CN_MAP) return berr_set(BERR_CONFIG, "log.fields: expected a mapping");
    for (size_t i = 0; fl && i < fl->nkids; i++) {
        cnode *kid = fl->kids[i];
        kid->used = true;
        if (kid->kind != CN_SCALAR)
            return berr_set(BERR_CONFIG, "log.fields.%s: expected a single value", kid->key);
        if (strpbrk(kid->key, " =\"\r\n") || strpbrk(kid->value, "\r\n"))
            return berr_set(BERR_CONFIG, "log.fields.%s: invalid characters", kid->key);
        cfg->log_fields = realloc(cfg->log_fields, (cfg->nlog_fields + 1) * 2 * sizeof(char *));
        if (!cfg->log_fields) abort();
        cfg->log_fields[2 * cfg->nlog_fields] = strdup(kid->key);
        cfg->log_fields[2 * cfg->nlog_fields + 1] = strdup(kid->value);
        cfg->nlog_fields++;
    }
    return 0;
}

static void free_log_fields(void *base, const config_key *k)
{
    config *cfg = base;
    (void)k;
    strs_free(cfg->log_fields, 2 * cfg->nlog_fields);
    cfg->log_fields = NULL;
    cfg->nlog_fields = 0;
}

static int check_drivers(cnode *root, void *base, const config_key *k)
{
    (void)base, (void)k;
    cnode *storage = cn_get(root, "storage");
    for (size_t i = 0; storage && storage->kind == CN_MAP && i < storage->nkids; i++) {
        const char *drv = storage->kids[i]->key;
        static const char *const other[] = {"azure", "gcs", "swift", "oss", "inmemory"};
        for (size_t j = 0; j < sizeof other / sizeof *other; j++)
            if (!strcasecmp(drv, other[j]))
                return berr_set(BERR_CONFIG,
                                "storage.%s: storage driver not supported by this berth "
                                "(supported: filesystem, s3)",
                                drv);
    }
    return 0;
}

/* ---- http ---- */

/* http.headers: {Name: [v1, v2]} as in registry:2 (a scalar value is accepted too). */
static int load_headers(cnode *root, config *cfg)
{
    cnode *h = cn_path(root, "http.headers");
    if (!h) return 0;
    if (h->kind != CN_MAP) return berr_set(BERR_CONFIG, "http.headers: expected a mapping");
    for (size_t i = 0; i < h->nkids; i++) {
        cnode *kid = h->kids[i];
        kid->used = true;
        size_t nv = kid->kind == CN_SEQ ? kid->nkids : 1;
        for (size_t j = 0; j < nv; j++) {
            cnode *v = kid->kind == CN_SEQ ? kid->kids[j] : kid;
            if (v->kind != CN_SCALAR)
                return berr_set(BERR_CONFIG, "http.headers.%s: expected strings", kid->key);
            if (strpbrk(kid->key, "\r\n:") || strpbrk(v->value, "\r\n"))
                return berr_set(BERR_CONFIG, "http.headers.%s: invalid characters", kid->key);
            cfg->headers = realloc(cfg->headers, (cfg->nheaders + 1) * sizeof *cfg->headers);
            if (!cfg->headers) abort();
            cfg->headers[cfg->nheaders].name = strdup(kid->key);
            cfg->headers[cfg->nheaders].value = strdup(v->value);
            cfg->nheaders++;
        }
    }
    return 0;
}

static void free_headers(config *cfg)
{
    for (size_t i = 0; i < cfg->nheaders; i++) {
        free(cfg->headers[i].name);
        free(cfg->headers[i].value);
    }
    free(cfg->headers);
    cfg->headers = NULL;
    cfg->nheaders = 0;
}

/* health.file: registry:2's file checks, [{file, interval, threshold}]: while the file exists the
 * instance reports itself unhealthy (an operator takes it out of a load balancer's rotation). */
static int load_health_files(cnode *root, void *base, const config_key *k)
{
    config *cfg = base;
    cnode *l = cn_path(root, k->path);
    if (!l) return 0;
    if (l->kind != CN_SEQ) return berr_set(BERR_CONFIG, "health.file: expected a list");
    for (size_t i = 0; i < l->nkids; i++) {
        cnode *e = l->kids[i];
        if (e->kind != CN_MAP)
            return berr_set(BERR_CONFIG, "health.file[%zu]: expected a mapping", i);
        e->used = true;
        const char *file = NULL, *iv = NULL;
        int64_t interval = 10;
        int rc = get_str(e, "file", &file);
        if (rc == 0) rc = get_str(e, "interval", &iv);
        if (rc == 0 && iv && config_parse_duration(iv, &interval) < 0)
            rc = berr_set(BERR_CONFIG, "interval: invalid duration '%s'", iv);
        if (rc == 0) cn_path(e, "threshold");
        if (rc == 0 && !file) rc = berr_set(BERR_CONFIG, "health.file[%zu].file is required", i);
        if (rc < 0) return rc;
        cfg->health_files =
            realloc(cfg->health_files, (cfg->nhealth_files + 1) * sizeof *cfg->health_files);
        if (!cfg->health_files) abort();
        cfg->health_files[cfg->nhealth_files].path = strdup(file);
        cfg->health_files[cfg->nhealth_files].interval_s = interval < 1 ? 1 : interval;
        cfg->nhealth_files++;
    }
    return 0;
}

static void free_health_files(void *base, const config_key *k)
{
    config *cfg = base;
    (void)k;
    for (size_t i = 0; i < cfg->nhealth_files; i++)
        free(cfg->health_files[i].path);
    free(cfg->health_files);
    cfg->health_files = NULL;
    cfg->nhealth_files = 0;
}

/* ---- mirrors and the registry:2 proxy ---- */

/* "http://host..." or "https://host...": an upstream URL needs a host. */
static bool http_url(const char *u)
{
    const char *host = !strncmp(u, "http://", 7)    ? u + 7
                       : !strncmp(u, "https://", 8) ? u + 8
                                                    : NULL;
    return host && *host && *host != '/';
}

/* The store prefix of a mirror: its name lowercased, ':' and other characters the repository
 * grammar refuses turned into '-'. */
static char *mirror_local_name(const char *name)
{
    char *l = strdup(name);
    for (char *c = l; *c; c++) {
        *c = (char)tolower((unsigned char)*c);
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '.')) *c = '-';
    }
    return l;
}

static void mirror_add_url(config_mirror *m, const char *url)
{
    m->urls = realloc(m->urls, (m->nurls + 1) * sizeof *m->urls);
    if (!m->urls) abort();
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        n--;
    m->urls[m->nurls++] = strndup(url, n);
}

static int mirror_urls(cnode *mnode, void *base, const config_key *k)
{
    config_mirror *m = base;
    cnode *urls = cn_path(mnode, k->path);
    if (!urls || (urls->kind == CN_SEQ && urls->nkids == 0))
        return berr_set(BERR_CONFIG, "mirrors.%s.urls: at least one URL is required", m->name);
    for (size_t i = 0; i < (urls->kind == CN_SEQ ? urls->nkids : 1); i++) {
        cnode *u = urls->kind == CN_SEQ ? urls->kids[i] : urls;
        if (u->kind != CN_SCALAR || !http_url(u->value))
            return berr_set(BERR_CONFIG, "mirrors.%s.urls: expected http(s) URLs", m->name);
        mirror_add_url(m, u->value);
    }
    return 0;
}

static void free_urls(void *base, const config_key *k)
{
    config_mirror *m = base;
    (void)k;
    strs_free(m->urls, m->nurls);
    m->urls = NULL;
    m->nurls = 0;
}

static int mirror_repos(cnode *mnode, void *base, const config_key *k)
{
    config_mirror *m = base;
    cnode *pats = cn_path(mnode, k->path);
    for (size_t i = 0; pats && i < (pats->kind == CN_SEQ ? pats->nkids : 1); i++) {
        cnode *v = pats->kind == CN_SEQ ? pats->kids[i] : pats;
        if (v->kind != CN_SCALAR)
            return berr_set(BERR_CONFIG, "mirrors.%s.repositories: expected patterns", m->name);
        m->repos = realloc(m->repos, (m->nrepos + 1) * sizeof *m->repos);
        if (!m->repos) abort();
        m->repos[m->nrepos++] = strdup(v->value);
    }
    return 0;
}

static void free_repos(void *base, const config_key *k)
{
    config_mirror *m = base;
    (void)k;
    strs_free(m->repos, m->nrepos);
    m->repos = NULL;
    m->nrepos = 0;
}

static int read_credentials(void *base, const config_key *k, const char *path)
{
    config_mirror *m = base;
    (void)k;
    if (!path) return 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return berr_set(BERR_CONFIG, "mirrors.%s.credentials_file: cannot open %s", m->name, path);
    char line[1024] = "";
    bool ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    char *colon = strchr(line, ':');
    if (!ok || !colon)
        return berr_set(BERR_CONFIG, "mirrors.%s.credentials_file: expected user:password",
                        m->name);
    *colon = '\0';
    free(m->username);
    free(m->password);
    m->username = strdup(line);
    m->password = strdup(colon + 1);
    return 0;
}

static int check_revalidate_ms(void *base, const config_key *k, const char *v)
{
    config_mirror *m = base;
    (void)k, (void)v;
    if (m->revalidate_ms <= 0) m->revalidate_ms = 1;
    return 0;
}

static int check_ttl(void *base, const config_key *k, const char *v)
{
    config_mirror *m = base;
    (void)k, (void)v;
    if (m->ttl_s < 0) m->ttl_s = 0; /* registry:3: zero or less never expires */
    return 0;
}

/* what a mirror and a Helm upstream share */
#define UPSTREAM_SIGNIN                                                                            \
    MKEY("username", CK_STR, username, NULL, "upstream sign-in"),                                  \
        MKEY("password", CK_STR, password, NULL, "upstream sign-in"),                              \
        RAW("credentials_file", CK_STR, NULL, read_credentials,                                    \
            "a file holding user:password (instead of the two keys)"),                             \
        MKEY("tls.ca", CK_STR, ca_file, NULL,                                                      \
             "PEM CA file the upstream's certificate is checked with"),                            \
        MKEY("tls.insecure", CK_BOOL, insecure, "false",                                           \
             "do not verify the upstream's TLS certificate")
#define UPSTREAM_TIMEOUTS                                                                          \
    MKEY("timeout.connect", CK_MSEC, connect_ms, "5s", "connecting to the upstream"),              \
        MKEY("timeout.transfer", CK_MSEC, transfer_ms, "10m", "one transfer from the upstream")

/* mirrors.<name>: applied to the mirror's own map (its name holds dots) */
static const config_key mirror_keys[] = {
    BLOCK("urls", mirror_urls, free_urls, NULL, "list",
          "upstream endpoints (http(s) URLs), tried in order"),
    UPSTREAM_SIGNIN,
    MKEY("revalidate", CK_DURATION, revalidate_s, "5m", "least time between checks of a tag"),
    BLOCK("repositories", mirror_repos, free_repos, NULL, "list",
          "upstream repositories served (fnmatch patterns; all when unset)"),
    UPSTREAM_TIMEOUTS,
    MKEYC("timeout.revalidate", CK_MSEC, revalidate_ms, "3s", check_revalidate_ms,
          "a cached tag's check; past it the cached copy is served"),
    {0}};

/* proxy.*: registry:2's proxy mode, applied to the root (proxy.remoteurl made the mirror) */
static const config_key proxy_keys[] = {
    MKEY("proxy.username", CK_STR, username, NULL, "upstream sign-in"),
    MKEY("proxy.password", CK_STR, password, NULL, "upstream sign-in"),
    MKEYC("proxy.ttl", CK_DURATION, ttl_s, NULL, check_ttl,
          "its images unused this long are evicted (0: never)"),
    {0}};

/* name, local store prefix and the defaults of mirror_keys */
static void mirror_init(config_mirror *m, const char *name)
{
    memset(m, 0, sizeof *m);
    m->name = strdup(name);
    m->local = mirror_local_name(name);
    m->library_prefix = !strcasecmp(name, "docker.io");
    table_defaults(mirror_keys, m);
}

static void mirror_free(config_mirror *m)
{
    free(m->name);
    free(m->local);
    table_free(mirror_keys, m); /* a superset of what helm_upstream_keys and proxy_keys hold */
}

static int load_mirrors(cnode *root, void *base, const config_key *k)
{
    config *cfg = base;
    cnode *ms = cn_path(root, k->path);
    if (ms && ms->kind != CN_MAP) return berr_set(BERR_CONFIG, "mirrors: expected a mapping");
    for (size_t i = 0; ms && i < ms->nkids; i++) {
        cnode *mnode = ms->kids[i];
        if (mnode->kind != CN_MAP)
            return berr_set(BERR_CONFIG, "mirrors.%s: expected a mapping", mnode->key);
        cfg->mirrors = realloc(cfg->mirrors, (cfg->nmirrors + 1) * sizeof *cfg->mirrors);
        if (!cfg->mirrors) abort();
        config_mirror *m = &cfg->mirrors[cfg->nmirrors++];
        mirror_init(m, mnode->key);
        mnode->used = true;
        /* the name is the first component of the mirror's repositories in the store */
        if (!m->local[0] || !ref_name_valid(m->local) || strchr(m->local, '/'))
            return berr_set(BERR_CONFIG, "mirrors: '%.100s' is not a registry name (host[:port])",
                            mnode->key);
        int rc = table_apply(mnode, m, mirror_keys);
        if (rc < 0) return rc;
    }
    return 0;
}

static void free_mirrors(void *base, const config_key *k)
{
    config *cfg = base;
    (void)k;
    for (size_t i = 0; i < cfg->nmirrors; i++)
        mirror_free(&cfg->mirrors[i]);
    free(cfg->mirrors);
    cfg->mirrors = NULL;
    cfg->nmirrors = 0;
}

static int load_proxy(cnode *root, void *base, const config_key *k)
{
    config *cfg = base;
    const char *remote;
    int rc = get_str(root, k->path, &remote);
    if (rc < 0 || !remote) return rc;
    if (!http_url(remote)) return berr_set(BERR_CONFIG, "proxy.remoteurl: expected an http(s) URL");
    const char *host = strstr(remote, "://") + 3;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(host, "/"), host);
    /* registry-1.docker.io is Docker Hub: clients call it docker.io */
    if (!strcmp(name, "registry-1.docker.io")) snprintf(name, sizeof name, "docker.io");
    cfg->proxy = calloc(1, sizeof *cfg->proxy);
    if (!cfg->proxy) abort();
    mirror_init(cfg->proxy, name);
    mirror_add_url(cfg->proxy, remote);
    return table_apply(root, cfg->proxy, proxy_keys);
}

static void free_proxy(void *base, const config_key *k)
{
    config *cfg = base;
    (void)k;
    if (cfg->proxy) mirror_free(cfg->proxy);
    free(cfg->proxy);
    cfg->proxy = NULL;
}

/* ---- helm ---- */

static int check_oci_prefix(void *base, const config_key *k, const char *v)
{
    config_helm *h = &((config *)base)->helm;
    (void)k, (void)v;
    size_t pl = strlen(h->oci_prefix);
    while (pl > 0 && h->oci_prefix[pl - 1] == '/')
        h->oci_prefix[--pl] = '\0';
    if (!pl || !ref_name_valid(h->oci_prefix))
        return berr_set(BERR_CONFIG, "helm.oci_prefix: '%s' is not a repository name",
                        h->oci_prefix);
    return 0;
}

static int check_depth(void *base, const config_key *k, const char *v)
{
    (void)k, (void)v;
    if (((config *)base)->helm.depth > 8) return berr_set(BERR_CONFIG, "helm.depth: at most 8");
    return 0;
}

static int helm_url(void *base, const config_key *k, const char *url)
{
    config_mirror *m = base;
    (void)k;
    if (!url || !http_url(url))
        return berr_set(BERR_CONFIG, "helm.upstreams.%s.url: an http(s) URL is required", m->name);
    for (const char *c = m->name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' || *c == '_' ||
              (*c == '.' && c != m->name)))
            return berr_set(BERR_CONFIG,
                            "helm.upstreams.%s: a name is lowercase letters, digits, '.', '-', '_'",
                            m->name);
    mirror_add_url(m, url);
    return 0;
}

/* helm.upstreams.<name>: applied to the upstream's own map */
static const config_key helm_upstream_keys[] = {
    RAW("url", CK_STR, NULL, helm_url, "the upstream HTTP chart repository (required)"),
    UPSTREAM_SIGNIN,
    MKEY("refresh", CK_DURATION, revalidate_s, "10m", "least time between index fetches"),
    UPSTREAM_TIMEOUTS,
    {0}};

static int load_helm_upstreams(cnode *root, void *base, const config_key *k)
{
    config_helm *h = &((config *)base)->helm;
    cnode *ups = cn_path(root, k->path);
    if (ups && ups->kind != CN_MAP)
        return berr_set(BERR_CONFIG, "helm.upstreams: expected a mapping");
    for (size_t i = 0; ups && i < ups->nkids; i++) {
        cnode *n = ups->kids[i];
        if (n->kind != CN_MAP)
            return berr_set(BERR_CONFIG, "helm.upstreams.%s: expected a mapping", n->key);
        h->upstreams = realloc(h->upstreams, (h->nupstreams + 1) * sizeof *h->upstreams);
        if (!h->upstreams) abort();
        config_mirror *m = &h->upstreams[h->nupstreams++];
        mirror_init(m, n->key);
        table_defaults(helm_upstream_keys, m);
        n->used = true;
        int rc = table_apply(n, m, helm_upstream_keys);
        if (rc < 0) return rc;
    }
    return 0;
}

static void free_helm_upstreams(void *base, const config_key *k)
{
    config_helm *h = &((config *)base)->helm;
    (void)k;
    for (size_t i = 0; i < h->nupstreams; i++)
        mirror_free(&h->upstreams[i]);
    free(h->upstreams);
    h->upstreams = NULL;
    h->nupstreams = 0;
}

/* ---- auth and access ---- */

/* "pull", "push", "delete", "none" (a list) into CONFIG_* bits */
static int actions_of(char **l, size_t nl, const char *what, unsigned *out)
{
    unsigned a = 0;
    for (size_t i = 0; i < nl; i++) {
        if (!strcasecmp(l[i], "pull"))
            a |= CONFIG_PULL;
        else if (!strcasecmp(l[i], "push"))
            a |= CONFIG_PUSH;
        else if (!strcasecmp(l[i], "delete"))
            a |= CONFIG_DELETE;
        else if (strcasecmp(l[i], "none"))
            return berr_set(BERR_CONFIG, "%s: unknown action '%s' (pull, push, delete, none)", what,
                            l[i]);
    }
    *out = a;
    return 0;
}

static int actions(cnode *n, const char *what, unsigned *out)
{
    char **l = NULL;
    size_t nl = 0;
    int rc = str_list(n, what, NULL, &l, &nl);
    if (rc == 0 && n) rc = actions_of(l, nl, what, out);
    strs_free(l, nl);
    return rc;
}

/* access.anonymous / default / mirror: the entry's default is a list of actions ("pull,push") */
static int load_actions(cnode *root, void *base, const config_key *k)
{
    unsigned *out = AT(base, k->off, unsigned);
    cnode *n = cn_path(root, k->path);
    if (n) return actions(n, k->path, out);
    char *words[4], buf[64];
    size_t nw = 0;
    snprintf(buf, sizeof buf, "%s", k->def);
    char *save = NULL;
    for (char *w = strtok_r(buf, ",", &save); w && nw < 4; w = strtok_r(NULL, ",", &save))
        words[nw++] = w;
    return actions_of(words, nw, k->path, out);
}

static int check_auth(cnode *root, void *base, const config_key *k)
{
    config_auth *a = &((config *)base)->auth;
    (void)k;
    a->token = a->token_realm || a->token_bundle;
    if (a->token && (!a->token_realm || !a->token_service || !a->token_issuer || !a->token_bundle))
        return berr_set(BERR_CONFIG,
                        "auth.token: realm, service, issuer and rootcertbundle are all required");
    if (a->token && a->htpasswd)
        return berr_set(BERR_CONFIG, "auth: htpasswd and token cannot be used together");
    for (const char *other = "silly\0"; *other; other += strlen(other) + 1) {
        char key[64];
        snprintf(key, sizeof key, "auth.%s", other);
        if (cn_path(root, key))
            return berr_set(BERR_CONFIG, "%s: not supported by this berth (supported: htpasswd)",
                            key);
    }
    a->enabled = a->htpasswd != NULL || a->token;
    return 0;
}

static int load_groups(cnode *root, void *base, const config_key *k)
{
    config_auth *a = &((config *)base)->auth;
    cnode *g = cn_path(root, k->path);
    if (g && g->kind != CN_MAP) return berr_set(BERR_CONFIG, "access.groups: expected a mapping");
    for (size_t i = 0; g && i < g->nkids; i++) {
        a->groups = realloc(a->groups, (a->ngroups + 1) * sizeof *a->groups);
        if (!a->groups) abort();
        config_group *cg = &a->groups[a->ngroups++];
        memset(cg, 0, sizeof *cg);
        cg->name = strdup(g->kids[i]->key);
        int rc = str_list(g->kids[i], "access.groups", NULL, &cg->members, &cg->nmembers);
        if (rc < 0) return rc;
    }
    return 0;
}

static void free_groups(void *base, const config_key *k)
{
    config_auth *a = &((config *)base)->auth;
    (void)k;
    for (size_t i = 0; i < a->ngroups; i++) {
        free(a->groups[i].name);
        strs_free(a->groups[i].members, a->groups[i].nmembers);
    }
    free(a->groups);
    a->groups = NULL;
    a->ngroups = 0;
}

static int load_rules(cnode *root, void *base, const config_key *k)
{
    config_auth *a = &((config *)base)->auth;
    cnode *rl = cn_path(root, k->path);
    if (rl && rl->kind != CN_SEQ) return berr_set(BERR_CONFIG, "access.rules: expected a list");
    for (size_t i = 0; rl && i < rl->nkids; i++) {
        cnode *r = rl->kids[i];
        if (r->kind != CN_MAP)
            return berr_set(BERR_CONFIG, "access.rules[%zu]: expected a mapping", i);
        a->rules = realloc(a->rules, (a->nrules + 1) * sizeof *a->rules);
        if (!a->rules) abort();
        config_rule *cr = &a->rules[a->nrules++];
        memset(cr, 0, sizeof *cr);
        for (size_t j = 0; j < r->nkids; j++) {
            const char *key = r->kids[j]->key;
            if (strcasecmp(key, "repositories") && strcasecmp(key, "users") &&
                strcasecmp(key, "groups") && strcasecmp(key, "actions"))
                return berr_set(BERR_CONFIG,
                                "access.rules[%zu]: unknown key '%s' (repositories, users, groups, "
                                "actions)",
                                i, key);
        }
        char what[64];
        snprintf(what, sizeof what, "access.rules[%zu]", i);
        int rc;
        if ((rc = str_list(cn_get(r, "repositories"), what, NULL, &cr->repos, &cr->nrepos)) < 0 ||
            (rc = str_list(cn_get(r, "users"), what, NULL, &cr->users, &cr->nusers)) < 0 ||
            (rc = str_list(cn_get(r, "groups"), what, NULL, &cr->groups, &cr->ngroups)) < 0 ||
            (rc = actions(cn_get(r, "actions"), what, &cr->actions)) < 0)
            return rc;
        if (!cr->nrepos)
            return berr_set(BERR_CONFIG, "access.rules[%zu]: repositories is required", i);
        if (!cr->nusers && !cr->ngroups)
            return berr_set(BERR_CONFIG, "access.rules[%zu]: users or groups is required", i);
    }
    return 0;
}

static void free_rules(void *base, const config_key *k)
{
    config_auth *a = &((config *)base)->auth;
    (void)k;
    for (size_t i = 0; i < a->nrules; i++) {
        strs_free(a->rules[i].repos, a->rules[i].nrepos);
        strs_free(a->rules[i].users, a->rules[i].nusers);
        strs_free(a->rules[i].groups, a->rules[i].ngroups);
    }
    free(a->rules);
    a->rules = NULL;
    a->nrules = 0;
}

static int check_access(cnode *root, void *base, const config_key *k)
{
    (void)k;
    if (!((config *)base)->auth.enabled && cn_path(root, "access") != NULL)
        return berr_set(BERR_CONFIG, "access: needs auth.htpasswd or auth.token (who is asking)");
    return 0;
}

/* ---- database, storage.s3, validation, margo ---- */

static int check_port(void *base, const config_key *k, const char *v)
{
    (void)k, (void)v;
    int port = ((config *)base)->database.port;
    if (port < 1 || port > 65535)
        return berr_set(BERR_CONFIG, "database.port: %d is not a port", port);
    return 0;
}

static int check_maxopen(void *base, const config_key *k, const char *v)
{
    (void)k, (void)v;
    if (((config *)base)->database.maxopen < 1)
        return berr_set(BERR_CONFIG, "database.pool.maxopen: must be at least 1");
    return 0;
}

static int check_sslmode(void *base, const config_key *k, const char *v)
{
    (void)base, (void)k;
    static const char *const sslmodes[] = {"disable", "allow",     "prefer",
                                           "require", "verify-ca", "verify-full"};
    bool ok = !v;
    for (size_t i = 0; !ok && i < sizeof sslmodes / sizeof *sslmodes; i++)
        ok = !strcmp(v, sslmodes[i]);
    if (!ok)
        return berr_set(BERR_CONFIG,
                        "database.sslmode: '%s' is not disable, allow, prefer, require, "
                        "verify-ca or verify-full",
                        v);
    return 0;
}

/* storage.redirect.disable is the inverse of s3.redirect (registry:2 accepts it with any driver;
 * the filesystem one never redirects) */
static int check_redirect(void *base, const config_key *k, const char *v)
{
    bool disable = false;
    if (v && parse_bool(k->path, v, &disable) < 0) return -BERR_CONFIG;
    ((config *)base)->s3.redirect = !disable;
    return 0;
}

static int check_v4auth(void *base, const config_key *k, const char *v)
{
    (void)base, (void)k;
    if (v && strcasecmp(v, "true") != 0)
        return berr_set(BERR_CONFIG, "storage.s3.v4auth: berth signs with SigV4 only (set true)");
    return 0;
}

/* storage.s3: the section being there selects the backend; its keys are entries of their own */
static int load_s3(cnode *root, config *cfg)
{
    config_s3 *c = &cfg->s3;
    cnode *n = cn_path(root, "storage.s3");
    if (!n) return 0;
    c->enabled = true;
    if (!c->bucket || !*c->bucket) return berr_set(BERR_CONFIG, "storage.s3.bucket: required");
    if (!c->accesskey || !c->secretkey)
        return berr_set(BERR_CONFIG, "storage.s3.accesskey and secretkey: required (berth does "
                                     "not read instance credentials)");
    if (c->chunksize < 5 * 1024 * 1024)
        return berr_set(BERR_CONFIG, "storage.s3.chunksize: %lld is below S3's 5 MiB part minimum",
                        (long long)c->chunksize);
    if (c->chunksize > 1024LL * 1024 * 1024)
        return berr_set(BERR_CONFIG, "storage.s3.chunksize: at most 1 GiB (parts are buffered in "
                                     "memory)");
    if (c->redirect_expiry_s < 1 || c->redirect_expiry_s > 7 * 24 * 3600)
        return berr_set(BERR_CONFIG, "storage.redirect.expiry: between 1s and 7 days");
    return 0;
}

/* validation: registry:2's rules for layer URLs in pushed manifests (POSIX extended regular
 * expressions; registry:2's RE2 syntax agrees for the anchors, classes and escapes such lists
 * use). off: the regex_t array, noff: its count. */
static int load_regex_list(cnode *root, void *base, const config_key *k)
{
    regex_t **out = AT(base, k->off, regex_t *);
    size_t *nout = AT(base, k->noff, size_t);
    char **l = NULL;
    size_t nl = 0;
    int rc = str_list(cn_path(root, k->path), k->path, NULL, &l, &nl);
    if (rc == 0 && nl) {
        *out = calloc(nl, sizeof **out);
        if (!*out) abort();
    }
    for (size_t i = 0; rc == 0 && i < nl; i++) {
        int e = regcomp(&(*out)[i], l[i], REG_EXTENDED | REG_NOSUB);
        if (e) {
            char msg[128];
            regerror(e, &(*out)[i], msg, sizeof msg);
            rc = berr_set(BERR_CONFIG, "%s: '%s' is not a regular expression: %s", k->path, l[i],
                          msg);
        } else {
            (*nout)++;
        }
    }
    strs_free(l, nl);
    return rc;
}

static void free_regex_list(void *base, const config_key *k)
{
    regex_t **l = AT(base, k->off, regex_t *);
    size_t *n = AT(base, k->noff, size_t);
    for (size_t i = 0; i < *n; i++)
        regfree(&(*l)[i]);
    free(*l);
    *l = NULL;
    *n = 0;
}

static int margo_parse(const char *v)
{
    return !strcasecmp(v, "reject") ? MARGO_REJECT
           : !strcasecmp(v, "warn") ? MARGO_WARN
           : !strcasecmp(v, "off")  ? MARGO_OFF
                                    : -1;
}

/* ---- notifications (src/notify/): a list of endpoints, each read with notify_endpoint_keys ----
 */

/* headers: {Name: [v1, v2]} (a scalar value is accepted too), one config_header per value. */
static int notify_headers(cnode *node, void *base, const config_key *k)
{
    config_notify_endpoint *e = base;
    cnode *h = cn_path(node, k->path);
    if (!h) return 0;
    if (h->kind != CN_MAP)
        return berr_set(BERR_CONFIG, "notifications.endpoints[].headers: expected a mapping");
    for (size_t i = 0; i < h->nkids; i++) {
        cnode *kn = h->kids[i];
        kn->used = true;
        size_t nv = kn->kind == CN_SEQ ? kn->nkids : 1;
        for (size_t j = 0; j < nv; j++) {
            cnode *v = kn->kind == CN_SEQ ? kn->kids[j] : kn;
            if (v->kind != CN_SCALAR || strpbrk(kn->key, "\r\n:") || strpbrk(v->value, "\r\n"))
                return berr_set(BERR_CONFIG,
                                "notifications.endpoints[].headers.%s: expected strings without "
                                "newlines",
                                kn->key);
            e->headers = realloc(e->headers, (e->nheaders + 1) * sizeof *e->headers);
            if (!e->headers) abort();
            e->headers[e->nheaders].name = strdup(kn->key);
            e->headers[e->nheaders++].value = strdup(v->value);
        }
    }
    return 0;
}

static void notify_headers_free(void *base, const config_key *k)
{
    (void)k;
    config_notify_endpoint *e = base;
    for (size_t j = 0; j < e->nheaders; j++) {
        free(e->headers[j].name);
        free(e->headers[j].value);
    }
    free(e->headers);
    e->headers = NULL;
    e->nheaders = 0;
}

/* clang-format off */
#define NKEY(p, t, field, d, h) \
    {.path = p, .type = t, .off = offsetof(config_notify_endpoint, field), .def = d, .help = h}
#define NLIST(p, field, nfield, h) \
    {.path = p, .type = CK_LIST, .off = offsetof(config_notify_endpoint, field), \
     .noff = offsetof(config_notify_endpoint, nfield), .choices = "strings", .help = h}
/* clang-format on */
/* registry:2's endpoint keys, plus berth's queuelimit and batch */
static const config_key notify_endpoint_keys[] = {
    NKEY("name", CK_STR, name, NULL, "the endpoint's name (unique: its delivery position)"),
    NKEY("url", CK_STR, url, NULL, "where events are POSTed (http:// or https://)"),
    NKEY("disabled", CK_BOOL, disabled, "false", "send it nothing"),
    BLOCK("headers", notify_headers, notify_headers_free, NULL, "map",
          "headers sent with every POST {Name: [value]}"),
    NKEY("timeout", CK_MSEC, timeout_ms, "1s", "one POST"),
    NKEY("threshold", CK_INT, threshold, "10", "failures in a row before it is logged as down"),
    NKEY("backoff", CK_MSEC, backoff_ms, "1s", "wait after a failure (doubling, up to 32x)"),
    NLIST("ignoredmediatypes", ignore_mediatypes, nignore_mediatypes,
          "target media types not sent"),
    NLIST("ignore.mediatypes", ignore_mediatypes, nignore_mediatypes,
          "target media types not sent (registry:2's newer spelling)"),
    NLIST("ignore.actions", ignore_actions, nignore_actions, "actions not sent"),
    NKEY("queuelimit", CK_SIZE, queue_limit, "100000",
         "undelivered events kept; past it the oldest are dropped (berth key)"),
    NKEY("batch", CK_INT, batch, "50", "events per POST at most (berth key)"),
    {0}};

void config_notify_free(config_notify *n)
{
    for (size_t i = 0; i < n->nendpoints; i++)
        table_free(notify_endpoint_keys, &n->endpoints[i]);
    free(n->endpoints);
    n->endpoints = NULL;
    n->nendpoints = 0;
}

static int notify_endpoint(cnode *e, size_t i, config_notify_endpoint *ep)
{
    char what[64];
    snprintf(what, sizeof what, "notifications.endpoints[%zu]", i);
    if (e->kind != CN_MAP) return berr_set(BERR_CONFIG, "%s: expected a mapping", what);
    e->used = true;
    table_defaults(notify_endpoint_keys, ep);
    int rc = table_apply(e, ep, notify_endpoint_keys);
    if (rc < 0) return rc;
    if (!ep->name) return berr_set(BERR_CONFIG, "%s.name is required", what);
    if (!ep->url || (strncmp(ep->url, "http://", 7) && strncmp(ep->url, "https://", 8)))
        return berr_set(BERR_CONFIG, "%s.url: an http:// or https:// URL is required", what);
    if (ep->queue_limit < 1)
        return berr_set(BERR_CONFIG, "%s.queuelimit: expected a count above 0", what);
    if (ep->timeout_ms < 1) ep->timeout_ms = 1000;
    if (ep->backoff_ms < 1) ep->backoff_ms = 1000;
    if (ep->threshold < 1) ep->threshold = 1;
    if (ep->batch < 1) ep->batch = 1;
    return 0;
}

/* notifications.endpoints: registry:2's list of webhook endpoints. Endpoint names must be
 * unique: an endpoint's delivery position is kept under its name. */
static int load_notify_endpoints(cnode *root, void *base, const config_key *k)
{
    config_notify *n = &((config *)base)->notify;
    cnode *l = cn_path(root, k->path);
    if (!l) return 0;
    if (l->kind != CN_SEQ) return berr_set(BERR_CONFIG, "notifications.endpoints: expected a list");
    for (size_t i = 0; i < l->nkids; i++) {
        n->endpoints = realloc(n->endpoints, (n->nendpoints + 1) * sizeof *n->endpoints);
        if (!n->endpoints) abort();
        config_notify_endpoint *ep = &n->endpoints[n->nendpoints++];
        memset(ep, 0, sizeof *ep);
        int rc = notify_endpoint(l->kids[i], i, ep);
        if (rc < 0) return rc;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(n->endpoints[j].name, ep->name))
                return berr_set(BERR_CONFIG, "notifications.endpoints: the name '%s' is used twice",
                                ep->name);
    }
    return 0;
}

static void free_notify_endpoints(void *base, const config_key *k)
{
    (void)k;
    config_notify_free(&((config *)base)->notify);
}

static int load_trust(cnode *root, config *cfg); /* below, with the trust section */

static void free_trust(config *cfg);

/* Every key of the file, in the order they are read (and their errors reported). */
static const config_key config_keys[] = {
    RAW("version", CK_STR, "0.1", check_version, "the format's version, 0.1 when present"),
    BLOCK("log.level", load_log_level, NULL, "info", "enum",
          "error|warn|info|debug (registry:2's top-level loglevel when absent)"),
    ENUM("log.formatter", log_format, "text", log_parse_format, "text, json or logstash",
         "text: logfmt lines; json (logstash): one JSON object a line"),
    BLOCK("log.fields", load_log_fields, free_log_fields, NULL, "map",
          "{key: value} added to every line"),
    CHECK("storage", check_drivers),
    KEY("storage.filesystem.rootdirectory", CK_STR, root, "./data", "the storage directory"),
    KEY("storage.delete.enabled", CK_BOOL, delete_enabled, "false",
        "allow DELETE of blobs, manifests and tags"),
    KEY("storage.maintenance.readonly.enabled", CK_BOOL, read_only, "false",
        "reads only: writes answer 405"),
    KEY("storage.maintenance.uploadpurging.enabled", CK_BOOL, purge_enabled, "true",
        "remove abandoned uploads"),
    KEY("storage.maintenance.uploadpurging.age", CK_DURATION, purge_age_s, "168h",
        "an upload untouched this long is abandoned"),
    KEY("storage.maintenance.uploadpurging.interval", CK_DURATION, purge_interval_s, "24h",
        "how often to look for them"),
    KEY("http.addr", CK_STR, addr, ":5000", "listen address, host:port or :port"),
    KEY("http.host", CK_STR, host, NULL,
        "external base URL for Location headers (ignored unless http(s)://host)"),
    KEY("http.tls.certificate", CK_STR, tls_cert, NULL, "PEM certificate: serve HTTPS"),
    KEY("http.tls.key", CK_STR, tls_key, NULL, "PEM private key of the certificate"),
    LIST("http.tls.clientcas", tls_clientcas, ntls_clientcas, NULL,
         "CA files: every client must show a certificate"),
    KEY("http.connections", CK_INT, connection_limit, "1024", "most concurrent connections"),
    KEY("http.connections_per_ip", CK_INT, connections_per_ip, "auto",
        "most from one address (auto: 7/8 of http.connections; 0: no limit)"),
    KEY("http.headertimeout", CK_MSEC, header_timeout_ms, "30s",
        "a request head must arrive within this (0: no limit)"),
    KEY("http.threads", CK_INT, threads, "1", "event-loop threads"),
    SECTION("http.headers", load_headers, free_headers, "extra response headers {Name: [value]}"),
    KEY("health.storagedriver.enabled", CK_BOOL, health_enabled, "true", "periodic storage check"),
    KEY("health.storagedriver.interval", CK_DURATION, health_interval_s, "10s", "how often"),
    KEY("health.storagedriver.threshold", CK_INT, health_threshold, "1",
        "failures in a row before unhealthy"),
    BLOCK("health.file", load_health_files, free_health_files, NULL, "list",
          "[{file, interval}]: unhealthy while one of the files exists"),
    KEY("gc.grace", CK_DURATION, gc_grace_s, "1h", "gc keeps content younger than this"),
    KEY("limits.manifest", CK_SIZE, max_manifest, "4MiB", "largest manifest accepted"),
    KEY("limits.rate", CK_DOUBLE, rate_limit, NULL,
        "requests per second per address (0: no limit)"),
    KEY("limits.burst", CK_DOUBLE, rate_burst, NULL, "requests at once per address (the rate)"),
    KEY("limits.uploads", CK_INT, max_bodies, "128",
        "concurrent requests with a body (0: no limit)"),
    KEY("storage.quota", CK_SIZE, quota, NULL, "most bytes of blobs stored (0: no limit)"),
    MEMBERS("mirrors", load_mirrors, free_mirrors, mirror_keys, "mirrors.<name>.", "map",
            "upstream registries mirrored, by the name clients use (host[:port])"),
    MEMBERS("proxy.remoteurl", load_proxy, free_proxy, proxy_keys, "", "string",
            "the default upstream (registry:2's proxy mode)"),
    KEY("proxy.localpush", CK_BOOL, proxy_localpush, "false",
        "with proxy.remoteurl, also take pushes to local repositories"),
    KEY("http.debug.addr", CK_STR, debug_addr, NULL, "a second listener: /debug/health, metrics"),
    KEY("http.debug.prometheus.enabled", CK_BOOL, debug_prometheus, "false",
        "Prometheus metrics on the debug listener"),
    KEY("http.debug.prometheus.path", CK_STR, debug_prometheus_path, "/metrics",
        "where the metrics are served"),
    KEY("cache.maxsize", CK_SIZE, cache_max, "auto",
        "space for mirrored content (auto: half the file system; 0: no limit)"),
    LIST("cache.pin", pins, npins, "names", "mirrored repositories never evicted (patterns)"),
    KEY("helm.enabled", CK_BOOL, helm.enabled, "true", "serve the Helm chart repository"),
    KEYC("helm.oci_prefix", CK_STR, helm.oci_prefix, "charts", check_oci_prefix,
         "charts also at oci://<berth>/<prefix>/<name>"),
    KEY("helm.allow_overwrite", CK_BOOL, helm.allow_overwrite, "false",
        "re-uploading a version replaces it"),
    KEYC("helm.depth", CK_INT, helm.depth, "0", check_depth,
         "tenancy depth, as ChartMuseum's (at most 8)"),
    KEY("helm.max_upload_size", CK_SIZE, helm.max_upload, "64MiB", "largest chart .tgz accepted"),
    KEY("helm.max_uncompressed", CK_SIZE, helm.max_uncompressed, "256MiB",
        "largest unpacked chart accepted"),
    MEMBERS("helm.upstreams", load_helm_upstreams, free_helm_upstreams, helm_upstream_keys,
            "helm.upstreams.<name>.", "map", "upstream HTTP chart repositories, by name"),
    KEY("auth.htpasswd.path", CK_STR, auth.htpasswd, NULL, "bcrypt htpasswd file: Basic sign-in"),
    KEY("auth.htpasswd.realm", CK_STR, auth.realm, "berth", "the Basic realm"),
    KEY("auth.token.realm", CK_STR, auth.token_realm, NULL, "the token service's URL"),
    KEY("auth.token.service", CK_STR, auth.token_service, NULL, "the service tokens are for"),
    KEY("auth.token.issuer", CK_STR, auth.token_issuer, NULL, "the issuer tokens must name"),
    KEY("auth.token.rootcertbundle", CK_STR, auth.token_bundle, NULL,
        "PEM certificates that sign tokens"),
    {.path = "auth.token.autoredirect",
     .type = CK_ACCEPT,
     .off = CK_NOFIELD,
     .help = "accepted; berth's challenge is always absolute"},
    CHECK("auth", check_auth),
    ACTIONS("access.anonymous", auth.anonymous, "none", "what anyone may do unsigned"),
    ACTIONS("access.default", auth.authenticated, "pull,push,delete",
            "what a signed-in user may do when no rule matches"),
    ACTIONS("access.mirror", auth.mirror, "pull", "the most a non-admin may do in mirror space"),
    LIST("access.admins", auth.admins, auth.nadmins, NULL, "users who may do everything"),
    BLOCK("access.groups", load_groups, free_groups, NULL, "map", "{group: [users]}"),
    BLOCK("access.rules", load_rules, free_rules, NULL, "list",
          "[{repositories, users, groups, actions}]: the first match decides"),
    CHECK("access", check_access),
    KEY("database.enabled", CK_BOOL, database.enabled, "false",
        "metadata in PostgreSQL, not SQLite"),
    KEY("database.host", CK_STR, database.host, NULL, "PostgreSQL host (libpq's default)"),
    KEYC("database.port", CK_INT, database.port, "5432", check_port, "PostgreSQL port"),
    KEY("database.user", CK_STR, database.user, NULL, "PostgreSQL user"),
    KEY("database.password", CK_STR, database.password, NULL, "PostgreSQL password"),
    KEY("database.dbname", CK_STR, database.dbname, NULL, "the database"),
    KEYC("database.sslmode", CK_STR, database.sslmode, NULL, check_sslmode,
         "disable|allow|prefer|require|verify-ca|verify-full"),
    KEYC("database.pool.maxopen", CK_INT, database.maxopen, "8", check_maxopen,
         "connections per berth process"),
    RAW("storage.redirect.disable", CK_BOOL, "false", check_redirect,
        "s3: stream blob GETs instead of a 307 to S3"),
    KEY("storage.redirect.expiry", CK_DURATION, s3.redirect_expiry_s, "20m",
        "s3: how long a presigned URL is valid"),
    KEY("storage.s3.accesskey", CK_STR, s3.accesskey, NULL, "S3 credentials (required)"),
    KEY("storage.s3.secretkey", CK_STR, s3.secretkey, NULL, "S3 credentials (required)"),
    KEY("storage.s3.region", CK_STR, s3.region, "us-east-1", "the signing region"),
    KEY("storage.s3.regionendpoint", CK_STR, s3.regionendpoint, NULL,
        "scheme://host[:port] of the service (AWS)"),
    KEY("storage.s3.bucket", CK_STR, s3.bucket, NULL, "the bucket (required)"),
    KEY("storage.s3.rootdirectory", CK_STR, s3.rootdirectory, NULL, "key prefix in the bucket"),
    KEY("storage.s3.secure", CK_BOOL, s3.secure, "true", "https when the endpoint has no scheme"),
    KEY("storage.s3.skipverify", CK_BOOL, s3.skipverify, "false",
        "do not verify the endpoint's certificate"),
    RAW("storage.s3.forcepathstyle", CK_BOOL, "true", NULL,
        "accepted; berth always uses path-style URLs"),
    RAW("storage.s3.v4auth", CK_STR, "true", check_v4auth, "SigV4 only: false is refused"),
    KEY("storage.s3.chunksize", CK_SIZE, s3.chunksize, "10MiB", "multipart part size"),
    SECTION("storage.s3", load_s3, NULL, "blobs in S3-compatible storage (when present)"),
    KEY("validation.disabled", CK_BOOL, validation.disabled, "false", "skip the layer URL checks"),
    RAW("validation.enabled", CK_BOOL, NULL, NULL, "registry:2's older spelling, accepted"),
    REGEXES("validation.manifests.urls.allow", validation.allow, validation.nallow,
            "regexps a layer URL must match one of (none: URLs refused)"),
    REGEXES("validation.manifests.urls.deny", validation.deny, validation.ndeny,
            "regexps a layer URL must match none of"),
    ENUM("margo.validation", margo_validation, "reject", margo_parse, "reject, warn or off",
         "margo packages and compose archives"),
    KEY("notifications.events.includereferences", CK_BOOL, notify.include_references, "false",
        "manifest events carry the references (layers, children) of the manifest"),
    {.path = "notifications.endpoints",
     .type = CK_BLOCK,
     .off = CK_NOFIELD,
     .block = load_notify_endpoints,
     .release = free_notify_endpoints,
     .sub = notify_endpoint_keys,
     .sub_prefix = "notifications.endpoints[].",
     .shows = "list",
     .help = "webhook endpoints events are POSTed to (docs/notifications.md)"},
    SECTION("trust", load_trust, free_trust,
            "signature keys, Notary trust stores and policies (docs/trust.md)"),
    {0}};

/* registry:2 sections berth reads but does not serve or act on: named at start, with what that
 * means, instead of the generic "unknown key" warning. */
static void report_unserved(cnode *root)
{
    static const struct {
        const char *path, *what;
    } unserved[] = {
        {"redis", "not used: berth keeps its caches in its own metadata"},
        {"reporting", "no error reports are sent"},
        {"http.secret", "not needed: upload state lives in berth's metadata"},
        {"http.draintimeout", "berth drains requests for 30s at shutdown"},
        {"http.http2", "HTTP/2 is not served (HTTP/1.1 only)"},
        {"http.letsencrypt", "no ACME certificates: use http.tls.certificate and key"},
        {"http.net", "berth listens on TCP only"},
        {"http.prefix", "not supported: berth serves /v2/ at the root"},
        {"http.relativeurls", "Locations are relative unless http.host is a URL"},
        {"log.accesslog", "requests are logged one line each at level info (log.level: warn "
                          "leaves them out)"},
        {"log.hooks", "no log hooks (mail) are run"},
        {"middleware", "no middleware (CloudFront, redirect) is applied"},
    };
    for (size_t i = 0; i < sizeof unserved / sizeof *unserved; i++) {
        cnode *n = cn_path(root, unserved[i].path);
        if (!n) continue;
        for (size_t j = 0; j < n->nkids; j++) /* the whole section is accounted for here */
            n->kids[j]->used = true;
        log_warn("msg=\"configuration key not acted on\" key=%s detail=\"%s\"", unserved[i].path,
                 unserved[i].what);
    }
}

/* ---- trust: keys, Notary trust stores and policies (src/trust/, docs/trust.md) ---- */
static void trust_config_free(config_trust *t)
{
    for (size_t i = 0; i < t->nkeys; i++) {
        free(t->keys[i].name);
        free(t->keys[i].path);
    }
    free(t->keys);
    for (size_t i = 0; i < t->nstores; i++) {
        free(t->stores[i].name);
        free(t->stores[i].type);
        strs_free(t->stores[i].paths, t->stores[i].npaths);
    }
    free(t->stores);
    for (size_t i = 0; i < t->npolicies; i++) {
        config_trust_policy *p = &t->policies[i];
        free(p->name);
        strs_free(p->repos, p->nrepos);
        strs_free(p->keys, p->nkeys);
        strs_free(p->stores, p->nstores);
        strs_free(p->identities, p->nidentities);
        for (size_t k = 0; k < p->nattest; k++) {
            config_trust_attestation *a = &p->attest[k];
            free(a->artifact_type);
            strs_free(a->keys, a->nkeys);
            strs_free(a->stores, a->nstores);
            strs_free(a->identities, a->nidentities);
        }
        free(p->attest);
    }
    free(t->policies);
    memset(t, 0, sizeof *t);
}

/* keys and "<type>:<name>" trust stores that a policy (or one of its attestations) names must
 * be configured */
static int trust_names_check(const char *what, const config_trust *t, char **keys, size_t nkeys,
                             char **stores, size_t nstores)
{
    for (size_t i = 0; i < nkeys; i++) {
        bool found = false;
        for (size_t j = 0; j < t->nkeys && !found; j++)
            found = !strcmp(t->keys[j].name, keys[i]);
        if (!found)
            return berr_set(BERR_CONFIG, "%s.keys: '%s' is not in trust.keys", what, keys[i]);
    }
    for (size_t i = 0; i < nstores; i++) {
        const char *colon = strchr(stores[i], ':');
        bool found = false;
        for (size_t j = 0; colon && j < t->nstores && !found; j++)
            found = !strcmp(t->stores[j].name, colon + 1) &&
                    strlen(t->stores[j].type) == (size_t)(colon - stores[i]) &&
                    !strncmp(t->stores[j].type, stores[i], (size_t)(colon - stores[i]));
        if (!found)
            return berr_set(BERR_CONFIG,
                            "%s.trustStores: '%s' is not a <type>:<name> of trust.stores", what,
                            stores[i]);
    }
    return 0;
}

/* signatureVerification: a level, or the Notary Project's {level, override: {authenticity,
 * authenticTimestamp, expiry: enforce|log, revocation: enforce|log|skip}} */
static int trust_level_load(cnode *k, const char *kw, config_trust_policy *p)
{
    static const char *const lv[] = {"strict", "permissive", "audit", "skip"};
    cnode *l = k->kind == CN_SCALAR ? k : cn_get(k, "level");
    if (!l || l->kind != CN_SCALAR)
        return berr_set(BERR_CONFIG, "%s: expected a level or {level, override}", kw);
    l->used = true;
    p->level = -1;
    for (int i = 0; i < 4; i++)
        if (!strcasecmp(l->value, lv[i])) p->level = i;
    if (p->level < 0)
        return berr_set(BERR_CONFIG, "%s: '%s' is not strict, permissive, audit or skip", kw,
                        l->value);
    if (k->kind != CN_MAP) return 0;
    for (size_t i = 0; i < k->nkids; i++) {
        cnode *c = k->kids[i];
        c->used = true;
        if (!strcasecmp(c->key, "level")) continue;
        if (strcasecmp(c->key, "override") || c->kind != CN_MAP)
            return berr_set(BERR_CONFIG, "%s.%s: unknown or malformed key", kw, c->key);
        if (p->level == 3)
            return berr_set(BERR_CONFIG, "%s: a skip level cannot be overridden", kw);
        static const char *const ov[] = {"authenticity", "authenticTimestamp", "expiry"};
        for (size_t j = 0; j < c->nkids; j++) {
            cnode *o = c->kids[j];
            o->used = true;
            int which = -1;
            for (int w = 0; w < 3; w++)
                if (!strcasecmp(o->key, ov[w])) which = w;
            bool rev = !strcasecmp(o->key, "revocation"); /* not checked offline: accepted */
            const char *v = o->kind == CN_SCALAR ? o->value : "";
            if ((which < 0 && !rev) || (strcasecmp(v, "log") && strcasecmp(v, "enforce") &&
                                        !(rev && !strcasecmp(v, "skip"))))
                return berr_set(BERR_CONFIG,
                                "%s.override.%s: '%s' is not a known check set to "
                                "enforce or log",
                                kw, o->key, v);
            if (which >= 0) p->override[which] = !strcasecmp(v, "log") ? 1 : 2;
        }
    }
    return 0;
}

/* attestations: [{artifactType, keys, trustStores, trustedIdentities}] */
static int trust_attest_load(cnode *k, const char *kw, const config_trust *t,
                             config_trust_policy *p)
{
    if (k->kind != CN_SEQ) return berr_set(BERR_CONFIG, "%s: expected a list", kw);
    p->attest = calloc(k->nkids + 1, sizeof *p->attest);
    if (!p->attest) abort();
    for (size_t i = 0; i < k->nkids; i++) {
        cnode *an = k->kids[i];
        config_trust_attestation *a = &p->attest[p->nattest++];
        char what[200];
        snprintf(what, sizeof what, "%s[%zu]", kw, i);
        if (an->kind != CN_MAP) return berr_set(BERR_CONFIG, "%s: expected a map", what);
        for (size_t j = 0; j < an->nkids; j++) {
            cnode *c = an->kids[j];
            c->used = true;
            char cw[300];
            snprintf(cw, sizeof cw, "%s.%s", what, c->key);
            int rc = 0;
            if (!strcasecmp(c->key, "artifactType") && c->kind == CN_SCALAR && !a->artifact_type)
                a->artifact_type = strdup(c->value);
            else if (!strcasecmp(c->key, "keys"))
                rc = str_list(c, cw, NULL, &a->keys, &a->nkeys);
            else if (!strcasecmp(c->key, "trustStores"))
                rc = str_list(c, cw, NULL, &a->stores, &a->nstores);
            else if (!strcasecmp(c->key, "trustedIdentities"))
                rc = str_list(c, cw, NULL, &a->identities, &a->nidentities);
            else
                rc = berr_set(BERR_CONFIG, "%s: unknown or malformed key", cw);
            if (rc < 0) return rc;
        }
        if (!a->artifact_type) return berr_set(BERR_CONFIG, "%s: names no artifactType", what);
        if (!a->nkeys && !a->nstores)
            return berr_set(BERR_CONFIG, "%s: names no keys and no trustStores", what);
        int rc = trust_names_check(what, t, a->keys, a->nkeys, a->stores, a->nstores);
        if (rc < 0) return rc;
    }
    return 0;
}

static int trust_policy_load(cnode *pn, size_t idx, const config_trust *t, config_trust_policy *p)
{
    char what[96];
    snprintf(what, sizeof what, "trust.policies[%zu]", idx);
    if (pn->kind != CN_MAP) return berr_set(BERR_CONFIG, "%s: expected a map", what);
    p->name = strdup(what);
    for (size_t i = 0; i < pn->nkids; i++) {
        cnode *k = pn->kids[i];
        k->used = true;
        char kw[160];
        snprintf(kw, sizeof kw, "%s.%s", what, k->key);
        bool scalar = k->kind == CN_SCALAR;
        int rc = 0;
        if (!strcasecmp(k->key, "name") && scalar) {
            free(p->name);
            p->name = strdup(k->value);
        } else if (!strcasecmp(k->key, "repositories") || !strcasecmp(k->key, "registryScopes")) {
            rc = str_list(k, kw, NULL, &p->repos, &p->nrepos);
        } else if (!strcasecmp(k->key, "mode") && scalar) {
            if (!strcasecmp(k->value, "warn"))
                p->warn = true;
            else if (strcasecmp(k->value, "enforce") != 0)
                rc = berr_set(BERR_CONFIG, "%s: '%s' is not enforce or warn", kw, k->value);
        } else if (!strcasecmp(k->key, "keys")) {
            rc = str_list(k, kw, NULL, &p->keys, &p->nkeys);
        } else if (!strcasecmp(k->key, "trustStores")) {
            rc = str_list(k, kw, NULL, &p->stores, &p->nstores);
        } else if (!strcasecmp(k->key, "trustedIdentities")) {
            rc = str_list(k, kw, NULL, &p->identities, &p->nidentities);
        } else if (!strcasecmp(k->key, "signatureVerification")) {
            rc = trust_level_load(k, kw, p);
        } else if (!strcasecmp(k->key, "attestations")) {
            rc = trust_attest_load(k, kw, t, p);
        } else {
            rc = berr_set(BERR_CONFIG, "%s: unknown or malformed key", kw);
        }
        if (rc < 0) return rc;
    }
    if (!p->nrepos) return berr_set(BERR_CONFIG, "%s: repositories: at least one pattern", what);
    if (!p->nkeys && !p->nstores)
        return berr_set(BERR_CONFIG, "%s: names no keys and no trustStores", what);
    return trust_names_check(what, t, p->keys, p->nkeys, p->stores, p->nstores);
}

/* trust: its own block (keys: {name: path}, stores: {name: {type, paths}}, policies: [...]). */
static int load_trust(cnode *root, config *cfg)
{
    config_trust *t = &cfg->trust;
    cnode *keys = cn_path(root, "trust.keys"), *stores = cn_path(root, "trust.stores"),
          *pols = cn_path(root, "trust.policies");
    if (keys && keys->kind != CN_MAP)
        return berr_set(BERR_CONFIG, "trust.keys: expected a map of name: path");
    for (size_t i = 0; keys && i < keys->nkids; i++) {
        cnode *k = keys->kids[i];
        k->used = true;
        if (k->kind != CN_SCALAR)
            return berr_set(BERR_CONFIG, "trust.keys.%s: expected a file path", k->key);
        t->keys = realloc(t->keys, (t->nkeys + 1) * sizeof *t->keys);
        if (!t->keys) abort();
        t->keys[t->nkeys++] = (config_trust_key){strdup(k->key), strdup(k->value)};
        if (access(k->value, R_OK) != 0)
            return berr_set(BERR_CONFIG, "trust.keys.%s: cannot read %s", k->key, k->value);
    }
    if (stores && stores->kind != CN_MAP)
        return berr_set(BERR_CONFIG, "trust.stores: expected a map of name: {type, paths}");
    for (size_t i = 0; stores && i < stores->nkids; i++) {
        cnode *s = stores->kids[i];
        s->used = true;
        char what[300];
        snprintf(what, sizeof what, "trust.stores.%s", s->key);
        if (s->kind != CN_MAP) return berr_set(BERR_CONFIG, "%s: expected {type, paths}", what);
        t->stores = realloc(t->stores, (t->nstores + 1) * sizeof *t->stores);
        if (!t->stores) abort();
        config_trust_store *cs = &t->stores[t->nstores++];
        memset(cs, 0, sizeof *cs);
        cs->name = strdup(s->key);
        cnode *ty = cn_get(s, "type"), *ps = cn_get(s, "paths");
        if (ty) ty->used = true;
        cs->type = strdup(ty && ty->kind == CN_SCALAR ? ty->value : "ca");
        if (strcmp(cs->type, "ca") && strcmp(cs->type, "signingAuthority") &&
            strcmp(cs->type, "tsa"))
            return berr_set(BERR_CONFIG, "%s.type: '%s' is not ca, signingAuthority or tsa", what,
                            cs->type);
        int rc = str_list(ps, what, NULL, &cs->paths, &cs->npaths);
        if (rc < 0) return rc;
        if (!cs->npaths)
            return berr_set(BERR_CONFIG, "%s.paths: at least one certificate file", what);
    }
    if (pols && pols->kind != CN_SEQ)
        return berr_set(BERR_CONFIG, "trust.policies: expected a list");
    for (size_t i = 0; pols && i < pols->nkids; i++) {
        t->policies = realloc(t->policies, (t->npolicies + 1) * sizeof *t->policies);
        if (!t->policies) abort();
        config_trust_policy *p = &t->policies[t->npolicies++];
        memset(p, 0, sizeof *p);
        int rc = trust_policy_load(pols->kids[i], i, t, p);
        if (rc < 0) return rc;
    }
    return 0;
}

static void free_trust(config *cfg)
{
    trust_config_free(&cfg->trust);
}

/* What depends on several keys, once all are read. */
static int config_finish(config *cfg)
{
    if (cfg->connections_per_ip < 0) /* all but an eighth (a fleet behind one NAT address) */
        cfg->connections_per_ip = cfg->connection_limit - cfg->connection_limit / 8;
    if (cfg->ntls_clientcas && !cfg->tls_cert)
        return berr_set(BERR_CONFIG, "http.tls.clientcas: needs http.tls.certificate and key");
    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL))
        return berr_set(BERR_CONFIG, "http.tls: certificate and key must be given together");
    if (cfg->health_interval_s < 1) cfg->health_interval_s = 1;
    if (cfg->health_threshold < 1) cfg->health_threshold = 1;
    return 0;
}

static void apply_log_fields(const config *cfg)
{
    const char *keys[64], *values[64];
    size_t n = 0;
    for (size_t i = 0; i < cfg->nlog_fields && n < 64; i++, n++) {
        keys[n] = cfg->log_fields[2 * i];
        values[n] = cfg->log_fields[2 * i + 1];
    }
    log_set_fields(keys, values, n);
}

/* http.host is used only when it is a URL with a scheme and a host, as registry:2 does: a bare
 * "myhost:5000" is said and ignored (Locations stay relative), never copied into them. */
static void check_host(config *cfg)
{
    if (!cfg->host || http_url(cfg->host)) return;
    log_warn("msg=\"http.host is not a URL (http:// or https://): ignored as registry:2 does; "
             "Locations are relative\" host=\"%s\"",
             cfg->host);
    free(cfg->host);
    cfg->host = NULL;
}

int config_load(config *cfg, const char *path)
{
    memset(cfg, 0, sizeof *cfg);
    table_defaults(config_keys, cfg);
    cnode *root = NULL;
    if (path) {
        cfg->path = strdup(path);
        int rc = load_yaml(path, &root);
        if (rc < 0) {
            config_free(cfg); /* nothing half-loaded stays behind */
            return rc;
        }
    } else {
        root = cn_new(CN_MAP, NULL);
    }
    apply_env(root);
    int rc = table_apply(root, cfg, config_keys);
    if (rc == 0) rc = config_finish(cfg);
    if (rc == 0) {
        /* the start-up warnings below already follow log.formatter and log.fields */
        log_set_format((log_format)cfg->log_format);
        apply_log_fields(cfg);
        report_unserved(root);
        report_unused(root, "");
        check_host(cfg);
    }
    cn_free(root);
    if (rc < 0) config_free(cfg);
    return rc;
}

void config_free(config *cfg)
{
    table_free(config_keys, cfg);
    free(cfg->path);
    memset(cfg, 0, sizeof *cfg);
}

void config_print_keys(void)
{
    printf("Configuration keys (registry:2 format; override any with REGISTRY_<PATH>;\n"
           "durations: 90s, 1h30m; sizes: 512k, 4MiB; docs/configuration.md):\n"
           "  %-42s %-8s %-8s %s\n",
           "key", "type", "default", "meaning");
    table_print(config_keys, "");
}
