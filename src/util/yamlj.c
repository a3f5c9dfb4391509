/*
 * yamlj: YAML as JSON, both ways. Reading (yamlj_parse) loads a document with libyaml and turns
 * it into jansson values: every scalar stays text (as Helm and margo read them), except Helm's
 * boolean fields; mapping keys must be scalars and unique. Its cost is bounded by bytes produced,
 * not nodes: aliases cannot turn a few hundred bytes into gigabytes. Writing (yamlj_value) renders
 * JSON as block YAML the way Go's yaml package writes it (index.yaml), quoting every string YAML
 * would read back differently.
 */
#include "util/yamlj.h"
#include "util/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

/* What a YAML document may expand to, in bytes of produced JSON (counted per node below): a
 * fixed allowance plus a multiple of the input, so aliases cannot turn a few hundred bytes into
 * gigabytes (a "billion laughs" document). */
#define YAML_EXPAND_BASE (4u << 20)
#define YAML_EXPAND_PER_BYTE 8
#define YAML_DEPTH_MAX 64

typedef struct {
    yaml_document_t *doc;
    size_t budget; /* bytes the produced JSON may still take (approximate: see node_cost) */
    const char *what;
    int rc;
} conv;

static bool is_null_word(const char *s)
{
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* What one node costs once it is JSON: jansson's value, a hash table for a mapping, the text. */
static size_t node_cost(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return 64 + n->data.scalar.length;
    case YAML_MAPPING_NODE:
        return 256 + 64 * (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    default:
        return 64 + 16 * (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    }
}

static json_t *node_json(conv *c, yaml_node_t *n, const char *key, int depth)
{
    if (!n || c->rc) return NULL;
    size_t cost = node_cost(n);
    if (depth > YAML_DEPTH_MAX) {
        c->rc =
            berr_set(BERR_BAD_REQUEST, "%s: nested more than %d levels", c->what, YAML_DEPTH_MAX);
        return NULL;
    }
    if (cost > c->budget) {
        c->rc = berr_set(BERR_BAD_REQUEST,
                         "%s: expands to too much data (aliases repeating content?)", c->what);
        return NULL;
    }
    c->budget -= cost;
    switch (n->type) {
    case YAML_SCALAR_NODE: {
        const char *v = (const char *)n->data.scalar.value;
        bool plain = n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        if (plain && is_null_word(v)) return json_null();
        /* Helm's typed fields: booleans stay booleans, everything else is read as text */
        if (plain && key && (!strcmp(key, "deprecated") || !strcmp(key, "enabled"))) {
            if (!strcasecmp(v, "true")) return json_true();
            if (!strcasecmp(v, "false")) return json_false();
        }
        return json_stringn(v, n->data.scalar.length);
    }
    case YAML_SEQUENCE_NODE: {
        json_t *a = json_array();
        for (yaml_node_item_t *it = n->data.sequence.items.start;
             it < n->data.sequence.items.top && !c->rc; it++) {
            json_t *v = node_json(c, yaml_document_get_node(c->doc, *it), NULL, depth + 1);
            if (v) json_array_append_new(a, v);
        }
        return a;
    }
    case YAML_MAPPING_NODE: {
        json_t *o = json_object();
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
             p < n->data.mapping.pairs.top && !c->rc; p++) {
            yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
            if (!k || k->type != YAML_SCALAR_NODE) {
                c->rc = berr_set(BERR_BAD_REQUEST, "%s: mapping keys must be scalars", c->what);
                break;
            }
            const char *ks = (const char *)k->data.scalar.value;
            if (json_object_get(o, ks)) {
                c->rc = berr_set(BERR_BAD_REQUEST, "%s: key '%.100s' appears twice", c->what, ks);
                break;
            }
            json_t *v = node_json(c, yaml_document_get_node(c->doc, p->value), ks, depth + 1);
            if (v) json_object_set_new(o, ks, v);
        }
        return o;
    }
    default:
        return json_null();
    }
}

int yamlj_parse(const char *text, size_t len, const char *what, json_t **out)
{
    *out = NULL;
    yaml_parser_t p;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&p)) return berr_set(BERR_INTERNAL, "out of memory");
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    if (!yaml_parser_load(&p, &doc)) {
        int rc = berr_set(BERR_BAD_REQUEST, "%s: invalid YAML: %s at line %zu", what,
                          p.problem ? p.problem : "error", p.problem_mark.line + 1);
        yaml_parser_delete(&p);
        return rc;
    }
    conv c = {&doc, YAML_EXPAND_BASE + YAML_EXPAND_PER_BYTE * len, what, 0};
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    json_t *j = root ? node_json(&c, root, NULL, 0) : NULL;
    yaml_document_delete(&doc);
    yaml_parser_delete(&p);
    if (c.rc) {
        json_decref(j);
        return c.rc;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        return berr_set(BERR_BAD_REQUEST, "%s: expected a mapping", what);
    }
    *out = j;
    return 0;
}

/* A string that YAML reads back as the same string when written plain: starts with a letter,
 * holds only unremarkable characters, and is not a word YAML 1.1 resolves to a bool or null. */
static bool plain_safe(const char *s)
{
    static const char *const words[] = {"y",  "yes", "n",    "no",  "true", "false",
                                        "on", "off", "null", "nan", "inf"};
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z'))) return false;
    size_t n = strlen(s);
    if (n > 200) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' || c == '_' || c == '/' || c == '+' || c == '@' ||
                  (c == ':' && s[i + 1] && s[i + 1] != ' ') ||
                  (c == ' ' && s[i + 1] != '#' && s[i + 1]);
        if (!ok) return false;
    }
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (!strcasecmp(s, words[i])) return false;
    return true;
}

/* A string as a YAML double-quoted scalar, escaped as jansson escapes JSON ('"', '\\', C0
 * controls) and also where jansson writes raw what YAML may not hold raw or reads as a line break:
 * DEL, C1 controls (U+0085 is a YAML line break), U+2028/U+2029, the BOM and U+FFFE/U+FFFF. One
 * such character written raw makes the whole index.yaml unreadable ("control characters are not
 * allowed") or changes the string. Works on the byte length, so a NUL is escaped too. */
static void yaml_quoted(strbuf *b, const char *s, size_t n)
{
    strbuf_add(b, "\"", 1);
    size_t run = 0; /* start of the bytes not yet written */
    for (size_t i = 0; i < n;) {
        const unsigned char *u = (const unsigned char *)s + i;
        unsigned cp = 0x110000; /* none */
        size_t len = 1;
        const char *esc = NULL;
        if (u[0] == '"')
            esc = "\\\"";
        else if (u[0] == '\\')
            esc = "\\\\";
        else if (u[0] == '\b')
            esc = "\\b";
        else if (u[0] == '\f')
            esc = "\\f";
        else if (u[0] == '\n')
            esc = "\\n";
        else if (u[0] == '\r')
            esc = "\\r";
        else if (u[0] == '\t')
            esc = "\\t";
        else if (u[0] < 0x20 || u[0] == 0x7f)
            cp = u[0];
        else if (u[0] == 0xc2 && i + 1 < n && u[1] >= 0x80 && u[1] <= 0x9f)
            cp = u[1], len = 2;
        else if (i + 2 < n && ((u[0] == 0xe2 && u[1] == 0x80 && (u[2] == 0xa8 || u[2] == 0xa9)) ||
                               (u[0] == 0xef && u[1] == 0xbb && u[2] == 0xbf) ||
                               (u[0] == 0xef && u[1] == 0xbf && (u[2] == 0xbe || u[2] == 0xbf))))
            cp = (unsigned)(u[0] & 0x0f) << 12 | (unsigned)(u[1] & 0x3f) << 6 | (u[2] & 0x3f),
            len = 3;
        if (!esc && cp == 0x110000) {
            i += len;
            continue;
        }
        strbuf_add(b, s + run, i - run);
        if (esc) {
            strbuf_add(b, esc, strlen(esc));
        } else {
            char seq[8];
            snprintf(seq, sizeof seq, "\\u%04X", cp);
            strbuf_add(b, seq, 6);
        }
        i += len;
        run = i;
    }
    strbuf_add(b, s + run, n - run);
    strbuf_add(b, "\"", 1);
}

void yamlj_scalar(strbuf *b, json_t *v)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if (strlen(s) == n && plain_safe(s))
            strbuf_add(b, s, n);
        else
            yaml_quoted(b, s, n);
        return;
    }
    /* numbers, booleans and null are the same in JSON and YAML */
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!s) {
        b->oom = true;
        return;
    }
    strbuf_add(b, s, strlen(s));
    free(s);
}

static void pad(strbuf *b, int n)
{
    static const char sp[] = "                                                                ";
    while (n > 0) {
        int k = n < 64 ? n : 64;
        strbuf_add(b, sp, (size_t)k);
        n -= k;
    }
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A mapping key and its ':'. YAML limits an implicit key to 1024 characters, so a long one is
 * written as an explicit key ("? key", then ':' on the next line at the key's indent), as Go's
 * yaml does for keys over 128. */
static void yaml_key(strbuf *b, const char *k, int indent)
{
    strbuf kb = {0};
    json_t *ks = json_string(k);
    yamlj_scalar(&kb, ks);
    json_decref(ks);
    if (kb.oom || !kb.buf) {
        b->oom = true;
    } else if (kb.len <= 128) {
        strbuf_add(b, kb.buf, kb.len);
    } else {
        strbuf_add(b, "? ", 2);
        strbuf_add(b, kb.buf, kb.len);
        strbuf_add(b, "\n", 1);
        pad(b, indent);
    }
    free(kb.buf);
    strbuf_add(b, ":", 1);
}

static void yaml_map(strbuf *b, json_t *o, int indent, bool first_inline);

/* A value after "key:" (on the same line for scalars and empty collections). */
static void yaml_after_key(strbuf *b, json_t *v, int indent)
{
    if (json_is_object(v) && json_object_size(v) > 0) {
        strbuf_add(b, "\n", 1);
        yaml_map(b, v, indent + 2, false);
    } else if (json_is_array(v) && json_array_size(v) > 0) {
        strbuf_add(b, "\n", 1);
        yamlj_value(b, v, indent); /* sequences in a mapping are not indented, as Go writes */
    } else if (json_is_object(v)) {
        strbuf_add(b, " {}\n", 4);
    } else if (json_is_array(v)) {
        strbuf_add(b, " []\n", 4);
    } else {
        strbuf_add(b, " ", 1);
        yamlj_scalar(b, v);
        strbuf_add(b, "\n", 1);
    }
}

static void yaml_map(strbuf *b, json_t *o, int indent, bool first_inline)
{
    size_t n = json_object_size(o), i = 0;
    const char **keys = malloc((n ? n : 1) * sizeof *keys);
    if (!keys) {
        b->oom = true;
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) keys[i++] = k;
    qsort(keys, n, sizeof *keys, key_cmp);
    for (i = 0; i < n; i++) {
        if (!(first_inline && i == 0)) pad(b, indent);
        yaml_key(b, keys[i], indent);
        yaml_after_key(b, json_object_get(o, keys[i]), indent);
    }
    free(keys);
}

void yamlj_value(strbuf *b, json_t *v, int indent)
{
    if (json_is_object(v)) {
        if (json_object_size(v) == 0) {
            pad(b, indent);
            strbuf_add(b, "{}\n", 3);
        } else {
            yaml_map(b, v, indent, false);
        }
        return;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *it;
        json_array_foreach(v, i, it)
        {
            pad(b, indent);
            strbuf_add(b, "- ", 2);
            if (json_is_object(it) && json_object_size(it) > 0) {
                yaml_map(b, it, indent + 2, true);
            } else if (json_is_array(it) && json_array_size(it) > 0) {
                strbuf_add(b, "\n", 1);
                yamlj_value(b, it, indent + 2);
            } else if (json_is_object(it)) {
                strbuf_add(b, "{}\n", 3);
            } else if (json_is_array(it)) {
                strbuf_add(b, "[]\n", 3);
            } else {
                yamlj_scalar(b, it);
                strbuf_add(b, "\n", 1);
            }
        }
        return;
    }
    pad(b, indent);
    yamlj_scalar(b, v);
    strbuf_add(b, "\n", 1);
}

void yamlj_list_item(strbuf *b, json_t *o, int indent)
{
    pad(b, indent);
    strbuf_add(b, "- ", 2);
    yaml_map(b, o, indent + 2, true);
}

void yamlj_key(strbuf *b, const char *k, int indent)
{
    pad(b, indent);
    yaml_key(b, k, indent);
}
