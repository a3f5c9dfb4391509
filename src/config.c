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

static int set_str(cnode *root, const char *path, char **dst)
{
    const char *v;
    int rc = get_str(root, path, &v);
    if (rc == 0 && v) {
        free(*dst);
        *dst = strdup(v);
    }
    return rc;
}

static int set_bool(cnode *root, const char *path, bool *dst)
{
    const char *v;
    int rc = get_str(root, path, &v);
    return (rc == 0 && v) ? parse_bool(path, v, dst) : rc;
}

static int set_duration(cnode *root, const char *path, int64_t *dst)
{
    const char *v;
    int rc = get_str(root, path, &v);
    if (rc == 0 && v && config_parse_duration(v, dst) < 0)
        return berr_set(BERR_CONFIG, "%s: invalid duration '%s'", path, v);
    return rc;
}

static int set_size(cnode *root, const char *path, int64_t *dst)
{
    const char *v;
    int rc = get_str(root, path, &v);
    if (rc == 0 && v && config_parse_size(v, dst) < 0)
        return berr_set(BERR_CONFIG, "%s: invalid size '%s'", path, v);
    return rc;
}

static int set_double(cnode *root, const char *path, double *dst)
{
    const char *v;
    int rc = get_str(root, path, &v);
    if (rc == 0 && v) {
        char *end;
        double x = strtod(v, &end);
        if (*end || !(x >= 0 && x <= 1e9))
            return berr_set(BERR_CONFIG, "%s: invalid number '%s'", path, v);
        *dst = x;
    }
    return rc;
}

static int set_int(cnode *root, const char *path, int *dst)
{
    const char *v;
    int rc = get_str(root, path, &v);
    if (rc == 0 && v) {
        char *end;
        long x = strtol(v, &end, 10);
        if (*end || x < 0 || x > 1000000)
            return berr_set(BERR_CONFIG, "%s: invalid number '%s'", path, v);
        *dst = (int)x;
    }
    return rc;
}

/* http.headers: {Name: [v1, v2]} as in registry:2 (a scalar value is accepted too). */
static int load_headers(cnode *root, config *cfg)
{
    cnode *h = cn_path(root, "http.headers");
    if (!h) return 0;
    if (h->kind != CN_MAP) return berr_set(BERR_CONFIG, "http.headers: expected a mapping");
    for (size_t i = 0; i < h->nkids; i++) {
        cnode *k = h->kids[i];
        k->used = true;
        size_t nv = k->kind == CN_SEQ ? k->nkids : 1;
        for (size_t j = 0; j < nv; j++) {
            cnode *v = k->kind == CN_SEQ ? k->kids[j] : k;
            if (v->kind != CN_SCALAR)
                return berr_set(BERR_CONFIG, "http.headers.%s: expected strings", k->key);
            if (strpbrk(k->key, "\r\n:") || strpbrk(v->value, "\r\n"))
                return berr_set(BERR_CONFIG, "http.headers.%s: invalid characters", k->key);
            cfg->headers = realloc(cfg->headers, (cfg->nheaders + 1) * sizeof *cfg->headers);
            if (!cfg->headers) abort();
            cfg->headers[cfg->nheaders].name = strdup(k->key);
            cfg->headers[cfg->nheaders].value = strdup(v->value);
            cfg->nheaders++;
        }
    }
    return 0;
}

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

static void mirror_defaults(config_mirror *m, const char *name)
{
    memset(m, 0, sizeof *m);
    m->name = strdup(name);
    m->local = mirror_local_name(name);
    m->connect_ms = 5000;
    m->transfer_ms = 600000;
    m->revalidate_ms = 3000;
    m->revalidate_s = 300;
    m->library_prefix = !strcasecmp(name, "docker.io");
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

static int read_credentials_file(config_mirror *m, const char *path)
{
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
    m->username = strdup(line);
    m->password = strdup(colon + 1);
    return 0;
}

/* mnode is the mirror's own map (its name holds dots, so paths are taken from it). */
static int load_mirror(cnode *mnode, const char *name, config_mirror *m)
{
    int rc = 0;
    mirror_defaults(m, name);
    mnode->used = true;
    /* the name is the first component of the mirror's repositories in the store */
    if (!m->local[0] || !ref_name_valid(m->local) || strchr(m->local, '/'))
        return berr_set(BERR_CONFIG, "mirrors: '%.100s' is not a registry name (host[:port])",
                        name);
    cnode *root = mnode;
    cnode *urls = cn_path(root, "urls");
    if (!urls || (urls->kind == CN_SEQ && urls->nkids == 0))
        return berr_set(BERR_CONFIG, "mirrors.%s.urls: at least one URL is required", name);
    for (size_t i = 0; i < (urls->kind == CN_SEQ ? urls->nkids : 1); i++) {
        cnode *u = urls->kind == CN_SEQ ? urls->kids[i] : urls;
        if (u->kind != CN_SCALAR || !http_url(u->value))
            return berr_set(BERR_CONFIG, "mirrors.%s.urls: expected http(s) URLs", name);
        mirror_add_url(m, u->value);
    }
    const char *cred = NULL;
    int64_t ms;
    if ((rc = set_str(root, "username", &m->username)) < 0 ||
        (rc = set_str(root, "password", &m->password)) < 0 ||
        (rc = get_str(root, "credentials_file", &cred)) < 0 ||
        (rc = set_str(root, "tls.ca", &m->ca_file)) < 0 ||
        (rc = set_bool(root, "tls.insecure", &m->insecure)) < 0 ||
        (rc = set_duration(root, "revalidate", &m->revalidate_s)) < 0)
        return rc;
    if (cred && (rc = read_credentials_file(m, cred)) < 0) return rc;
    cnode *pats = cn_path(root, "repositories");
    for (size_t i = 0; pats && i < (pats->kind == CN_SEQ ? pats->nkids : 1); i++) {
        cnode *v = pats->kind == CN_SEQ ? pats->kids[i] : pats;
        if (v->kind != CN_SCALAR)
            return berr_set(BERR_CONFIG, "mirrors.%s.repositories: expected patterns", name);
        m->repos = realloc(m->repos, (m->nrepos + 1) * sizeof *m->repos);
        if (!m->repos) abort();
        m->repos[m->nrepos++] = strdup(v->value);
    }
    const char *v;
    if ((rc = get_str(root, "timeout.connect", &v)) < 0) return rc;
    if (v && (rc = config_parse_duration_ms(v, &ms)) < 0) return rc;
    if (v) m->connect_ms = ms;
    if ((rc = get_str(root, "timeout.transfer", &v)) < 0) return rc;
    if (v && (rc = config_parse_duration_ms(v, &ms)) < 0) return rc;
    if (v) m->transfer_ms = ms;
    if ((rc = get_str(root, "timeout.revalidate", &v)) < 0) return rc;
    if (v && (rc = config_parse_duration_ms(v, &ms)) < 0) return rc;
    if (v) m->revalidate_ms = ms > 0 ? ms : 1;
    return 0;
}

static int load_mirrors(cnode *root, config *cfg)
{
    cnode *ms = cn_path(root, "mirrors");
    if (ms && ms->kind != CN_MAP) return berr_set(BERR_CONFIG, "mirrors: expected a mapping");
    for (size_t i = 0; ms && i < ms->nkids; i++) {
        cfg->mirrors = realloc(cfg->mirrors, (cfg->nmirrors + 1) * sizeof *cfg->mirrors);
        if (!cfg->mirrors) abort();
        if (ms->kids[i]->kind != CN_MAP)
            return berr_set(BERR_CONFIG, "mirrors.%s: expected a mapping", ms->kids[i]->key);
        int rc = load_mirror(ms->kids[i], ms->kids[i]->key, &cfg->mirrors[cfg->nmirrors]);
        cfg->nmirrors++;
        if (rc < 0) return rc;
    }
    const char *remote;
    int rc = get_str(root, "proxy.remoteurl", &remote);
    if (rc < 0 || !remote) return rc;
    if (!http_url(remote)) return berr_set(BERR_CONFIG, "proxy.remoteurl: expected an http(s) URL");
    const char *host = strstr(remote, "://") + 3;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(host, "/"), host);
    /* registry-1.docker.io is Docker Hub: clients call it docker.io */
    if (!strcmp(name, "registry-1.docker.io")) snprintf(name, sizeof name, "docker.io");
    cfg->proxy = calloc(1, sizeof *cfg->proxy);
    if (!cfg->proxy) abort();
    mirror_defaults(cfg->proxy, name);
    mirror_add_url(cfg->proxy, remote);
    if ((rc = set_str(root, "proxy.username", &cfg->proxy->username)) < 0 ||
        (rc = set_str(root, "proxy.password", &cfg->proxy->password)) < 0 ||
        (rc = set_duration(root, "proxy.ttl", &cfg->proxy->ttl_s)) < 0)
        return rc;
    if (cfg->proxy->ttl_s < 0) cfg->proxy->ttl_s = 0; /* registry:3: zero or less never expires */
    return 0;
}

/* helm.upstreams.<name>: {url, username, password, credentials_file, tls, timeout, refresh} */
static int load_helm_upstream(cnode *n, const char *name, config_mirror *m)
{
    int rc;
    mirror_defaults(m, name);
    m->revalidate_s = 600;
    n->used = true;
    const char *url, *cred = NULL, *v;
    int64_t ms;
    if ((rc = get_str(n, "url", &url)) < 0) return rc;
    if (!url || !http_url(url))
        return berr_set(BERR_CONFIG, "helm.upstreams.%s.url: an http(s) URL is required", name);
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' || *c == '_' ||
              (*c == '.' && c != name)))
            return berr_set(BERR_CONFIG,
                            "helm.upstreams.%s: a name is lowercase letters, digits, '.', '-', '_'",
                            name);
    mirror_add_url(m, url);
    if ((rc = set_str(n, "username", &m->username)) < 0 ||
        (rc = set_str(n, "password", &m->password)) < 0 ||
        (rc = get_str(n, "credentials_file", &cred)) < 0 ||
        (rc = set_str(n, "tls.ca", &m->ca_file)) < 0 ||
        (rc = set_bool(n, "tls.insecure", &m->insecure)) < 0 ||
        (rc = set_duration(n, "refresh", &m->revalidate_s)) < 0)
        return rc;
    if (cred && (rc = read_credentials_file(m, cred)) < 0) return rc;
    if ((rc = get_str(n, "timeout.connect", &v)) < 0) return rc;
    if (v && (rc = config_parse_duration_ms(v, &ms)) < 0) return rc;
    if (v) m->connect_ms = ms;
    if ((rc = get_str(n, "timeout.transfer", &v)) < 0) return rc;
    if (v && (rc = config_parse_duration_ms(v, &ms)) < 0) return rc;
    if (v) m->transfer_ms = ms;
    return 0;
}

static int load_helm(cnode *root, config *cfg)
{
    config_helm *h = &cfg->helm;
    int rc;
    if ((rc = set_bool(root, "helm.enabled", &h->enabled)) < 0 ||
        (rc = set_str(root, "helm.oci_prefix", &h->oci_prefix)) < 0 ||
        (rc = set_bool(root, "helm.allow_overwrite", &h->allow_overwrite)) < 0 ||
        (rc = set_int(root, "helm.depth", &h->depth)) < 0 ||
        (rc = set_size(root, "helm.max_upload_size", &h->max_upload)) < 0 ||
        (rc = set_size(root, "helm.max_uncompressed", &h->max_uncompressed)) < 0)
        return rc;
    size_t pl = strlen(h->oci_prefix);
    while (pl > 0 && h->oci_prefix[pl - 1] == '/')
        h->oci_prefix[--pl] = '\0';
    if (!pl || !ref_name_valid(h->oci_prefix))
        return berr_set(BERR_CONFIG, "helm.oci_prefix: '%s' is not a repository name",
                        h->oci_prefix);
    if (h->depth > 8) return berr_set(BERR_CONFIG, "helm.depth: at most 8");
    cnode *ups = cn_path(root, "helm.upstreams");
    if (ups && ups->kind != CN_MAP)
        return berr_set(BERR_CONFIG, "helm.upstreams: expected a mapping");
    for (size_t i = 0; ups && i < ups->nkids; i++) {
        h->upstreams = realloc(h->upstreams, (h->nupstreams + 1) * sizeof *h->upstreams);
        if (!h->upstreams) abort();
        if (ups->kids[i]->kind != CN_MAP)
            return berr_set(BERR_CONFIG, "helm.upstreams.%s: expected a mapping",
                            ups->kids[i]->key);
        rc = load_helm_upstream(ups->kids[i], ups->kids[i]->key, &h->upstreams[h->nupstreams]);
        h->nupstreams++;
        if (rc < 0) return rc;
    }
    return 0;
}

/* A list of strings: a scalar or a sequence of scalars. */
static int str_list(cnode *n, const char *what, char ***out, size_t *nout)
{
    if (!n) return 0;
    n->used = true;
    if (n->kind == CN_MAP) return berr_set(BERR_CONFIG, "%s: expected a list", what);
    size_t cnt = n->kind == CN_SEQ ? n->nkids : 1;
    for (size_t i = 0; i < cnt; i++) {
        cnode *v = n->kind == CN_SEQ ? n->kids[i] : n;
        if (v->kind != CN_SCALAR) return berr_set(BERR_CONFIG, "%s: expected names", what);
        *out = realloc(*out, (*nout + 1) * sizeof **out);
        if (!*out) abort();
        (*out)[(*nout)++] = strdup(v->value);
    }
    return 0;
}

static int actions(cnode *n, const char *what, unsigned *out)
{
    char **l = NULL;
    size_t nl = 0;
    int rc = str_list(n, what, &l, &nl);
    unsigned a = 0;
    for (size_t i = 0; rc == 0 && i < nl; i++) {
        if (!strcasecmp(l[i], "pull"))
            a |= CONFIG_PULL;
        else if (!strcasecmp(l[i], "push"))
            a |= CONFIG_PUSH;
        else if (!strcasecmp(l[i], "delete"))
            a |= CONFIG_DELETE;
        else if (!strcasecmp(l[i], "none"))
            ;
        else
            rc = berr_set(BERR_CONFIG, "%s: unknown action '%s' (pull, push, delete, none)", what,
                          l[i]);
    }
    for (size_t i = 0; i < nl; i++)
        free(l[i]);
    free(l);
    if (rc == 0 && n) *out = a;
    return rc;
}

/* storage.s3: registry:2's S3 driver keys. The section being there selects the backend. */
static int load_s3(cnode *root, config *cfg)
{
    config_s3 *c = &cfg->s3;
    bool disable = false;
    int rc;
    /* registry:2 accepts these with any driver (the filesystem one never redirects) */
    if ((rc = set_bool(root, "storage.redirect.disable", &disable)) < 0 ||
        (rc = set_duration(root, "storage.redirect.expiry", &c->redirect_expiry_s)) < 0)
        return rc;
    c->redirect = !disable;
    cnode *n = cn_path(root, "storage.s3");
    if (!n) return 0;
    n->used = true;
    c->enabled = true;
    const char *v4 = NULL;
    bool pathstyle = true; /* accepted; berth always uses path-style URLs */
    if ((rc = set_str(root, "storage.s3.accesskey", &c->accesskey)) < 0 ||
        (rc = set_str(root, "storage.s3.secretkey", &c->secretkey)) < 0 ||
        (rc = set_str(root, "storage.s3.region", &c->region)) < 0 ||
        (rc = set_str(root, "storage.s3.regionendpoint", &c->regionendpoint)) < 0 ||
        (rc = set_str(root, "storage.s3.bucket", &c->bucket)) < 0 ||
        (rc = set_str(root, "storage.s3.rootdirectory", &c->rootdirectory)) < 0 ||
        (rc = set_bool(root, "storage.s3.secure", &c->secure)) < 0 ||
        (rc = set_bool(root, "storage.s3.skipverify", &c->skipverify)) < 0 ||
        (rc = set_bool(root, "storage.s3.forcepathstyle", &pathstyle)) < 0 ||
        (rc = get_str(root, "storage.s3.v4auth", &v4)) < 0 ||
        (rc = set_size(root, "storage.s3.chunksize", &c->chunksize)) < 0)
        return rc;
    if (v4 && strcasecmp(v4, "true") != 0)
        return berr_set(BERR_CONFIG, "storage.s3.v4auth: berth signs with SigV4 only (set true)");
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

static int load_auth(cnode *root, config *cfg)
{
    config_auth *a = &cfg->auth;
    int rc;
    a->authenticated = CONFIG_PULL | CONFIG_PUSH | CONFIG_DELETE;
    a->mirror = CONFIG_PULL;
    if ((rc = set_str(root, "auth.htpasswd.path", &a->htpasswd)) < 0 ||
        (rc = set_str(root, "auth.htpasswd.realm", &a->realm)) < 0)
        return rc;
    if ((rc = set_str(root, "auth.token.realm", &a->token_realm)) < 0 ||
        (rc = set_str(root, "auth.token.service", &a->token_service)) < 0 ||
        (rc = set_str(root, "auth.token.issuer", &a->token_issuer)) < 0 ||
        (rc = set_str(root, "auth.token.rootcertbundle", &a->token_bundle)) < 0)
        return rc;
    cn_path(root, "auth.token.autoredirect"); /* registry:2's; berth's challenge is absolute */
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
    if (!a->realm) a->realm = strdup("berth");
    if ((rc = actions(cn_path(root, "access.anonymous"), "access.anonymous", &a->anonymous)) < 0 ||
        (rc = actions(cn_path(root, "access.default"), "access.default", &a->authenticated)) < 0 ||
        (rc = actions(cn_path(root, "access.mirror"), "access.mirror", &a->mirror)) < 0 ||
        (rc = str_list(cn_path(root, "access.admins"), "access.admins", &a->admins, &a->nadmins)) <
            0)
        return rc;
    cnode *g = cn_path(root, "access.groups");
    if (g && g->kind != CN_MAP) return berr_set(BERR_CONFIG, "access.groups: expected a mapping");
    for (size_t i = 0; g && i < g->nkids; i++) {
        a->groups = realloc(a->groups, (a->ngroups + 1) * sizeof *a->groups);
        if (!a->groups) abort();
        config_group *cg = &a->groups[a->ngroups++];
        memset(cg, 0, sizeof *cg);
        cg->name = strdup(g->kids[i]->key);
        if ((rc = str_list(g->kids[i], "access.groups", &cg->members, &cg->nmembers)) < 0)
            return rc;
    }
    cnode *rl = cn_path(root, "access.rules");
    if (rl && rl->kind != CN_SEQ) return berr_set(BERR_CONFIG, "access.rules: expected a list");
    for (size_t i = 0; rl && i < rl->nkids; i++) {
        cnode *r = rl->kids[i];
        if (r->kind != CN_MAP)
            return berr_set(BERR_CONFIG, "access.rules[%zu]: expected a mapping", i);
        a->rules = realloc(a->rules, (a->nrules + 1) * sizeof *a->rules);
        if (!a->rules) abort();
        config_rule *cr = &a->rules[a->nrules++];
        memset(cr, 0, sizeof *cr);
        for (size_t k = 0; k < r->nkids; k++) {
            const char *key = r->kids[k]->key;
            if (strcasecmp(key, "repositories") && strcasecmp(key, "users") &&
                strcasecmp(key, "groups") && strcasecmp(key, "actions"))
                return berr_set(BERR_CONFIG,
                                "access.rules[%zu]: unknown key '%s' (repositories, users, groups, "
                                "actions)",
                                i, key);
        }
        char what[64];
        snprintf(what, sizeof what, "access.rules[%zu]", i);
        if ((rc = str_list(cn_get(r, "repositories"), what, &cr->repos, &cr->nrepos)) < 0 ||
            (rc = str_list(cn_get(r, "users"), what, &cr->users, &cr->nusers)) < 0 ||
            (rc = str_list(cn_get(r, "groups"), what, &cr->groups, &cr->ngroups)) < 0 ||
            (rc = actions(cn_get(r, "actions"), what, &cr->actions)) < 0)
            return rc;
        if (!cr->nrepos)
            return berr_set(BERR_CONFIG, "access.rules[%zu]: repositories is required", i);
        if (!cr->nusers && !cr->ngroups)
            return berr_set(BERR_CONFIG, "access.rules[%zu]: users or groups is required", i);
    }
    if (!a->enabled && (cn_path(root, "access") != NULL))
        return berr_set(BERR_CONFIG, "access: needs auth.htpasswd or auth.token (who is asking)");
    return 0;
}

static void strs_free(char **l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

static void auth_free(config_auth *a)
{
    free(a->token_realm);
    free(a->token_service);
    free(a->token_issuer);
    free(a->token_bundle);
    free(a->realm);
    free(a->htpasswd);
    strs_free(a->admins, a->nadmins);
    for (size_t i = 0; i < a->ngroups; i++) {
        free(a->groups[i].name);
        strs_free(a->groups[i].members, a->groups[i].nmembers);
    }
    free(a->groups);
    for (size_t i = 0; i < a->nrules; i++) {
        strs_free(a->rules[i].repos, a->rules[i].nrepos);
        strs_free(a->rules[i].users, a->rules[i].nusers);
        strs_free(a->rules[i].groups, a->rules[i].ngroups);
    }
    free(a->rules);
}

/* cache.pin: names as clients write them ("docker.io/library/nginx"), with a mirror name that
 * holds a port written as stored ("host-5000/..."); fnmatch patterns allowed. */
static int load_pins(cnode *root, config *cfg)
{
    cnode *p = cn_path(root, "cache.pin");
    if (!p) return 0;
    if (p->kind == CN_MAP) return berr_set(BERR_CONFIG, "cache.pin: expected a list of names");
    size_t n = p->kind == CN_SEQ ? p->nkids : 1;
    for (size_t i = 0; i < n; i++) {
        cnode *v = p->kind == CN_SEQ ? p->kids[i] : p;
        if (v->kind != CN_SCALAR) return berr_set(BERR_CONFIG, "cache.pin: expected names");
        cfg->pins = realloc(cfg->pins, (cfg->npins + 1) * sizeof *cfg->pins);
        if (!cfg->pins) abort();
        cfg->pins[cfg->npins++] = strdup(v->value);
    }
    return 0;
}

/* health.file: registry:2's file checks, [{file, interval, threshold}]: while the file exists the
 * instance reports itself unhealthy (an operator takes it out of a load balancer's rotation). */
static int load_health_files(cnode *root, config *cfg)
{
    cnode *l = cn_path(root, "health.file");
    if (!l) return 0;
    if (l->kind != CN_SEQ) return berr_set(BERR_CONFIG, "health.file: expected a list");
    for (size_t i = 0; i < l->nkids; i++) {
        cnode *e = l->kids[i];
        if (e->kind != CN_MAP)
            return berr_set(BERR_CONFIG, "health.file[%zu]: expected a mapping", i);
        e->used = true;
        char *file = NULL;
        int64_t interval = 10;
        int rc = set_str(e, "file", &file);
        if (rc == 0) rc = set_duration(e, "interval", &interval);
        if (rc == 0 && cn_path(e, "threshold")) cn_path(e, "threshold")->used = true;
        if (rc == 0 && !file) rc = berr_set(BERR_CONFIG, "health.file[%zu].file is required", i);
        if (rc < 0) {
            free(file);
            return rc;
        }
        cfg->health_files =
            realloc(cfg->health_files, (cfg->nhealth_files + 1) * sizeof *cfg->health_files);
        if (!cfg->health_files) abort();
        cfg->health_files[cfg->nhealth_files].path = file;
        cfg->health_files[cfg->nhealth_files].interval_s = interval < 1 ? 1 : interval;
        cfg->nhealth_files++;
    }
    return 0;
}

/* log.level (or registry:2's older top-level `loglevel`), log.formatter, log.fields. */
static int load_log(cnode *root, config *cfg)
{
    const char *v, *old;
    int rc;
    if ((rc = get_str(root, "log.level", &v)) < 0 || (rc = get_str(root, "loglevel", &old)) < 0)
        return rc;
    const char *which = v ? "log.level" : "loglevel";
    if (!v) v = old;
    if (v) {
        int lvl = log_parse_level(v);
        if (lvl < 0) return berr_set(BERR_CONFIG, "%s: unknown level '%s'", which, v);
        cfg->log_level = lvl;
    }
    if ((rc = get_str(root, "log.formatter", &v)) < 0) return rc;
    if (v) {
        int f = log_parse_format(v);
        if (f < 0)
            return berr_set(BERR_CONFIG, "log.formatter: '%s' is not text, json or logstash", v);
        cfg->log_format = f;
    }
    cnode *fl = cn_path(root, "log.fields");
    if (fl && fl->kind != CN_MAP) return berr_set(BERR_CONFIG, "log.fields: expected a mapping");
    for (size_t i = 0; fl && i < fl->nkids; i++) {
        cnode *k = fl->kids[i];
        k->used = true;
        if (k->kind != CN_SCALAR)
            return berr_set(BERR_CONFIG, "log.fields.%s: expected a single value", k->key);
        if (strpbrk(k->key, " =\"\r\n") || strpbrk(k->value, "\r\n"))
            return berr_set(BERR_CONFIG, "log.fields.%s: invalid characters", k->key);
        cfg->log_fields = realloc(cfg->log_fields, (cfg->nlog_fields + 1) * 2 * sizeof(char *));
        if (!cfg->log_fields) abort();
        cfg->log_fields[2 * cfg->nlog_fields] = strdup(k->key);
        cfg->log_fields[2 * cfg->nlog_fields + 1] = strdup(k->value);
        cfg->nlog_fields++;
    }
    return 0;
}

/* validation: registry:2's rules for layer URLs in pushed manifests (POSIX extended regular
 * expressions; registry:2's RE2 syntax agrees for the anchors, classes and escapes such lists
 * use). */
static int regex_list(cnode *n, const char *what, regex_t **out, size_t *nout)
{
    char **l = NULL;
    size_t nl = 0;
    int rc = str_list(n, what, &l, &nl);
    if (rc == 0 && nl) {
        *out = calloc(nl, sizeof **out);
        if (!*out) abort();
    }
    for (size_t i = 0; rc == 0 && i < nl; i++) {
        int e = regcomp(&(*out)[i], l[i], REG_EXTENDED | REG_NOSUB);
        if (e) {
            char msg[128];
            regerror(e, &(*out)[i], msg, sizeof msg);
            rc = berr_set(BERR_CONFIG, "%s: '%s' is not a regular expression: %s", what, l[i], msg);
        } else {
            (*nout)++;
        }
    }
    strs_free(l, nl);
    return rc;
}

static int load_validation(cnode *root, config *cfg)
{
    config_validation *val = &cfg->validation;
    bool enabled = false;
    int rc;
    /* validation.enabled is registry:2's deprecated spelling: false there only meant "unset" */
    if ((rc = set_bool(root, "validation.disabled", &val->disabled)) < 0 ||
        (rc = set_bool(root, "validation.enabled", &enabled)) < 0 ||
        (rc = regex_list(cn_path(root, "validation.manifests.urls.allow"),
                         "validation.manifests.urls.allow", &val->allow, &val->nallow)) < 0 ||
        (rc = regex_list(cn_path(root, "validation.manifests.urls.deny"),
                         "validation.manifests.urls.deny", &val->deny, &val->ndeny)) < 0)
        return rc;
    return 0;
}

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

static int config_extract(cnode *root, config *cfg)
{
    int rc = 0;
    const char *v;
    if ((rc = get_str(root, "version", &v)) < 0) return rc;
    if (v && strcmp(v, "0.1") != 0)
        return berr_set(BERR_CONFIG, "version: unsupported configuration version '%s'", v);
    if ((rc = load_log(root, cfg)) < 0) return rc;
    cnode *storage = cn_get(root, "storage");
    if (storage && storage->kind == CN_MAP) {
        for (size_t i = 0; i < storage->nkids; i++) {
            const char *drv = storage->kids[i]->key;
            static const char *const other[] = {"azure", "gcs", "swift", "oss", "inmemory"};
            for (size_t j = 0; j < sizeof other / sizeof *other; j++)
                if (!strcasecmp(drv, other[j]))
                    return berr_set(BERR_CONFIG,
                                    "storage.%s: storage driver not supported by this berth "
                                    "(supported: filesystem, s3)",
                                    drv);
        }
    }
    if ((rc = set_str(root, "storage.filesystem.rootdirectory", &cfg->root)) < 0 ||
        (rc = set_bool(root, "storage.delete.enabled", &cfg->delete_enabled)) < 0 ||
        (rc = set_bool(root, "storage.maintenance.readonly.enabled", &cfg->read_only)) < 0 ||
        (rc = set_bool(root, "storage.maintenance.uploadpurging.enabled", &cfg->purge_enabled)) <
            0 ||
        (rc = set_duration(root, "storage.maintenance.uploadpurging.age", &cfg->purge_age_s)) < 0 ||
        (rc = set_duration(root, "storage.maintenance.uploadpurging.interval",
                           &cfg->purge_interval_s)) < 0 ||
        (rc = set_str(root, "http.addr", &cfg->addr)) < 0 ||
        (rc = set_str(root, "http.host", &cfg->host)) < 0 ||
        (rc = set_str(root, "http.tls.certificate", &cfg->tls_cert)) < 0 ||
        (rc = set_str(root, "http.tls.key", &cfg->tls_key)) < 0 ||
        (rc = str_list(cn_path(root, "http.tls.clientcas"), "http.tls.clientcas",
                       &cfg->tls_clientcas, &cfg->ntls_clientcas)) < 0 ||
        (rc = set_int(root, "http.connections", &cfg->connection_limit)) < 0 ||
        (rc = set_int(root, "http.connections_per_ip", &cfg->connections_per_ip)) < 0 ||
        (rc = get_str(root, "http.headertimeout", &v)) < 0 ||
        (v && (rc = config_parse_duration_ms(v, &cfg->header_timeout_ms)) < 0) ||
        (rc = set_int(root, "http.threads", &cfg->threads)) < 0 ||
        (rc = load_headers(root, cfg)) < 0 ||
        (rc = set_bool(root, "health.storagedriver.enabled", &cfg->health_enabled)) < 0 ||
        (rc = set_duration(root, "health.storagedriver.interval", &cfg->health_interval_s)) < 0 ||
        (rc = set_int(root, "health.storagedriver.threshold", &cfg->health_threshold)) < 0 ||
        (rc = load_health_files(root, cfg)) < 0 ||
        (rc = set_duration(root, "gc.grace", &cfg->gc_grace_s)) < 0 ||
        (rc = set_size(root, "limits.manifest", &cfg->max_manifest)) < 0 ||
        (rc = set_double(root, "limits.rate", &cfg->rate_limit)) < 0 ||
        (rc = set_double(root, "limits.burst", &cfg->rate_burst)) < 0 ||
        (rc = set_int(root, "limits.uploads", &cfg->max_bodies)) < 0 ||
        (rc = set_size(root, "storage.quota", &cfg->quota)) < 0 ||
        (rc = load_mirrors(root, cfg)) < 0 ||
        (rc = set_bool(root, "proxy.localpush", &cfg->proxy_localpush)) < 0 ||
        (rc = set_str(root, "http.debug.addr", &cfg->debug_addr)) < 0 ||
        (rc = set_bool(root, "http.debug.prometheus.enabled", &cfg->debug_prometheus)) < 0 ||
        (rc = set_str(root, "http.debug.prometheus.path", &cfg->debug_prometheus_path)) < 0 ||
        (rc = set_size(root, "cache.maxsize", &cfg->cache_max)) < 0 ||
        (rc = load_pins(root, cfg)) < 0 || (rc = load_helm(root, cfg)) < 0 ||
        (rc = load_auth(root, cfg)) < 0 ||
        (rc = set_bool(root, "database.enabled", &cfg->database.enabled)) < 0 ||
        (rc = set_str(root, "database.host", &cfg->database.host)) < 0 ||
        (rc = set_int(root, "database.port", &cfg->database.port)) < 0 ||
        (rc = set_str(root, "database.user", &cfg->database.user)) < 0 ||
        (rc = set_str(root, "database.password", &cfg->database.password)) < 0 ||
        (rc = set_str(root, "database.dbname", &cfg->database.dbname)) < 0 ||
        (rc = set_str(root, "database.sslmode", &cfg->database.sslmode)) < 0 ||
        (rc = set_int(root, "database.pool.maxopen", &cfg->database.maxopen)) < 0 ||
        (rc = load_s3(root, cfg)) < 0 || (rc = load_validation(root, cfg)) < 0 ||
        (rc = config_load_notify(root, cfg)) < 0)
        return rc;
    if (cfg->database.port < 1 || cfg->database.port > 65535)
        return berr_set(BERR_CONFIG, "database.port: %d is not a port", cfg->database.port);
    if (cfg->database.maxopen < 1)
        return berr_set(BERR_CONFIG, "database.pool.maxopen: must be at least 1");
    static const char *const sslmodes[] = {"disable", "allow",     "prefer",
                                           "require", "verify-ca", "verify-full"};
    bool sslmode_ok = !cfg->database.sslmode;
    for (size_t i = 0; !sslmode_ok && i < sizeof sslmodes / sizeof *sslmodes; i++)
        sslmode_ok = !strcmp(cfg->database.sslmode, sslmodes[i]);
    if (!sslmode_ok)
        return berr_set(BERR_CONFIG,
                        "database.sslmode: '%s' is not disable, allow, prefer, require, "
                        "verify-ca or verify-full",
                        cfg->database.sslmode);
    if ((rc = get_str(root, "margo.validation", &v)) < 0) return rc;
    if (v && !strcasecmp(v, "reject"))
        cfg->margo_validation = MARGO_REJECT;
    else if (v && !strcasecmp(v, "warn"))
        cfg->margo_validation = MARGO_WARN;
    else if (v && !strcasecmp(v, "off"))
        cfg->margo_validation = MARGO_OFF;
    else if (v)
        return berr_set(BERR_CONFIG, "margo.validation: '%s' is not reject, warn or off", v);
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
    cfg->log_level = LOG_INFO;
    cfg->root = strdup("./data");
    cfg->addr = strdup(":5000");
    cfg->purge_enabled = true;
    cfg->purge_age_s = 7 * 86400;
    cfg->purge_interval_s = 86400;
    cfg->health_enabled = true;
    cfg->health_interval_s = 10;
    cfg->health_threshold = 1;
    cfg->gc_grace_s = 3600;
    cfg->max_manifest = 4 * 1024 * 1024;
    cfg->connection_limit = 1024;
    cfg->connections_per_ip = -1;
    cfg->max_bodies = 128; /* each holds up to a 1 MiB write buffer while it streams */
    cfg->debug_prometheus_path = strdup("/metrics");
    cfg->header_timeout_ms = 30000;
    cfg->threads = 1;
    cfg->helm.enabled = true;
    cfg->helm.oci_prefix = strdup("charts");
    cfg->helm.max_upload = 64 * 1024 * 1024;
    cfg->helm.max_uncompressed = 256 * 1024 * 1024;
    cfg->database.port = 5432;
    cfg->database.maxopen = 8;
    cfg->s3.secure = true;
    cfg->s3.chunksize = 10 * 1024 * 1024;
    cfg->s3.redirect_expiry_s = 20 * 60;
    cfg->cache_max = -1;
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
    int rc = config_extract(root, cfg);
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

static void mirror_free(config_mirror *m)
{
    free(m->name);
    free(m->local);
    for (size_t i = 0; i < m->nurls; i++)
        free(m->urls[i]);
    free(m->urls);
    free(m->username);
    free(m->password);
    free(m->ca_file);
    for (size_t i = 0; i < m->nrepos; i++)
        free(m->repos[i]);
    free(m->repos);
}

void config_free(config *cfg)
{
    for (size_t i = 0; i < cfg->nmirrors; i++)
        mirror_free(&cfg->mirrors[i]);
    free(cfg->mirrors);
    if (cfg->proxy) mirror_free(cfg->proxy);
    for (size_t i = 0; i < cfg->npins; i++)
        free(cfg->pins[i]);
    free(cfg->pins);
    free(cfg->proxy);
    for (size_t i = 0; i < cfg->helm.nupstreams; i++)
        mirror_free(&cfg->helm.upstreams[i]);
    free(cfg->helm.upstreams);
    free(cfg->helm.oci_prefix);
    auth_free(&cfg->auth);
    free(cfg->path);
    free(cfg->root);
    free(cfg->addr);
    free(cfg->debug_addr);
    for (size_t i = 0; i < cfg->nhealth_files; i++)
        free(cfg->health_files[i].path);
    free(cfg->health_files);
    free(cfg->debug_prometheus_path);
    free(cfg->host);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    strs_free(cfg->tls_clientcas, cfg->ntls_clientcas);
    for (size_t i = 0; i < cfg->nheaders; i++) {
        free(cfg->headers[i].name);
        free(cfg->headers[i].value);
    }
    free(cfg->headers);
    free(cfg->database.host);
    free(cfg->database.user);
    free(cfg->database.password);
    free(cfg->database.dbname);
    free(cfg->database.sslmode);
    free(cfg->s3.accesskey);
    free(cfg->s3.secretkey);
    free(cfg->s3.region);
    free(cfg->s3.regionendpoint);
    free(cfg->s3.bucket);
    free(cfg->s3.rootdirectory);
    strs_free(cfg->log_fields, 2 * cfg->nlog_fields);
    for (size_t i = 0; i < cfg->validation.nallow; i++)
        regfree(&cfg->validation.allow[i]);
    free(cfg->validation.allow);
    for (size_t i = 0; i < cfg->validation.ndeny; i++)
        regfree(&cfg->validation.deny[i]);
    free(cfg->validation.deny);
    config_notify_free(&cfg->notify);
    memset(cfg, 0, sizeof *cfg);
}

void config_print_keys(void)
{
    fputs(
        "Configuration keys (registry:2 format; override any with REGISTRY_<PATH>):\n"
        "  version                                  must be 0.1\n"
        "  log.level                                error|warn|info|debug (info; or loglevel)\n"
        "  log.formatter                            text|json (text: logfmt lines)\n"
        "  log.fields                               {key: value} added to every line\n"
        "  storage.filesystem.rootdirectory         storage directory (./data)\n"
        "  storage.delete.enabled                   allow DELETE of blobs/manifests (false)\n"
        "  storage.maintenance.readonly.enabled  reads only; writes answer 405 (false)\n"
        "  storage.maintenance.uploadpurging.enabled  purge stale uploads (true)\n"
        "  storage.maintenance.uploadpurging.age    age of a stale upload (168h)\n"
        "  storage.maintenance.uploadpurging.interval  how often to purge (24h)\n"
        "  http.addr                                listen address host:port (:5000)\n"
        "  http.host                                external base URL for Location headers\n"
        "                                           (ignored unless http(s)://host)\n"
        "  http.headers                             extra response headers {Name: [value]}\n"
        "  http.tls.certificate / http.tls.key      PEM files: serve HTTPS\n"
        "  http.tls.clientcas                       CA files: require client certificates\n"
        "  http.connections                         max concurrent connections (1024)\n"
        "  http.connections_per_ip                  max from one address (7/8 of them; 0: none)\n"
        "  http.threads                             event-loop threads (1)\n"
        "  health.storagedriver.enabled             periodic storage check (true)\n"
        "  health.storagedriver.interval            check interval (10s)\n"
        "  health.file: [{file, interval}]          unhealthy while a file exists (none)\n"
        "  health.storagedriver.threshold           failures before unhealthy (1)\n"
        "  gc.grace                                 gc keeps content younger than this (1h)\n"
        "  limits.manifest                          largest manifest accepted (4MiB)\n"
        "  limits.rate / limits.burst               requests/s per address, burst (no limit)\n"
        "  limits.uploads      128                  concurrent requests with a body (0: no limit)\n"
        "  storage.quota                            most bytes of blobs stored (no limit)\n"
        "  validation.manifests.urls.allow / deny   regexps for layer URLs (none: URLs refused)\n"
        "  validation.disabled                      skip the layer URL checks (false)\n"
        "  storage.s3.bucket / regionendpoint / region / accesskey / secretkey / rootdirectory\n"
        "                                           blobs in S3-compatible storage (filesystem)\n"
        "  storage.s3.secure / skipverify / chunksize / forcepathstyle / v4auth\n"
        "                                           https (true), TLS check (false), part size\n"
        "                                           (10MiB), path-style URLs (always), SigV4\n"
        "  storage.redirect.disable / expiry        s3: stream blob GETs instead of answering\n"
        "                                           307 to a presigned URL (false / 20m)\n"
        "  http.debug.addr                          a second listener: /debug/health (none)\n"
        "  http.debug.prometheus.enabled / path     Prometheus metrics there (false, /metrics)\n"
        "  proxy.remoteurl, proxy.username, proxy.password, proxy.ttl\n"
        "                                           default upstream (registry:2 proxy mode);\n"
        "                                           ttl: its images unused this long expire\n"
        "  proxy.localpush     false                with proxy.remoteurl, also take pushes to\n"
        "                                           local repositories (registry:2 takes none)\n"
        "  mirrors.<name>.urls                      upstream endpoints, tried in order\n"
        "  mirrors.<name>.username / password / credentials_file\n"
        "  mirrors.<name>.tls.ca / tls.insecure     upstream TLS trust\n"
        "  mirrors.<name>.timeout.connect / transfer (5s / 10m)\n"
        "  mirrors.<name>.timeout.revalidate        a cached tag's check, then stale (3s)\n"
        "  mirrors.<name>.revalidate                min interval between tag checks (5m)\n"
        "  mirrors.<name>.repositories              upstream names served (patterns; all)\n"
        "  cache.maxsize                            space for mirrored content (half the file\n"
        "                                           system; 0: no limit)\n"
        "  cache.pin                                mirrored repositories never evicted\n"
        "  auth.htpasswd.path / realm               bcrypt htpasswd file: Basic sign-in\n"
        "  auth.token.realm / service / issuer / rootcertbundle   bearer tokens (JWT)\n"
        "  access.anonymous / default / mirror      actions without sign-in (none), for a\n"
        "                                           signed-in user (all), in mirror space (pull)\n"
        "  access.admins / groups / rules           per-repository policies (docs/auth.md)\n"
        "  margo.validation                         margo packages/compose archives: "
        "reject|warn|off\n"
        "  helm.enabled                             serve the Helm chart repository (true)\n"
        "  helm.oci_prefix                          charts at oci://<berth>/<prefix>/ (charts)\n"
        "  helm.allow_overwrite                     re-uploading a version replaces it (false)\n"
        "  helm.depth                               tenancy depth, as ChartMuseum's (0)\n"
        "  helm.max_upload_size                     largest chart .tgz accepted (64MiB)\n"
        "  helm.max_uncompressed                    largest unpacked chart accepted (256MiB)\n"
        "  helm.upstreams.<name>.url                upstream HTTP chart repository\n"
        "  helm.upstreams.<name>.username / password / credentials_file / tls / timeout\n"
        "  helm.upstreams.<name>.refresh            min interval between index fetches (10m)\n"
        "  database.enabled                         metadata in PostgreSQL, not SQLite (false)\n"
        "  database.host / port / user / password / dbname / sslmode\n"
        "                                           the PostgreSQL connection (port 5432)\n"
        "  database.pool.maxopen                    connections per berth process (8)\n",
        stdout);
}

/* ---- notifications (src/notify/): one self-contained block of the loader ---- */

void config_notify_free(config_notify *n)
{
    for (size_t i = 0; i < n->nendpoints; i++) {
        config_notify_endpoint *e = &n->endpoints[i];
        free(e->name);
        free(e->url);
        for (size_t j = 0; j < e->nheaders; j++) {
            free(e->headers[j].name);
            free(e->headers[j].value);
        }
        free(e->headers);
        strs_free(e->ignore_mediatypes, e->nignore_mediatypes);
        strs_free(e->ignore_actions, e->nignore_actions);
    }
    free(n->endpoints);
    memset(n, 0, sizeof *n);
}

/* headers: {Name: [v1, v2]} (a scalar value is accepted too), one config_header per value. */
static int notify_headers(cnode *h, const char *what, config_notify_endpoint *e)
{
    if (!h) return 0;
    if (h->kind != CN_MAP) return berr_set(BERR_CONFIG, "%s.headers: expected a mapping", what);
    for (size_t i = 0; i < h->nkids; i++) {
        cnode *k = h->kids[i];
        k->used = true;
        size_t nv = k->kind == CN_SEQ ? k->nkids : 1;
        for (size_t j = 0; j < nv; j++) {
            cnode *v = k->kind == CN_SEQ ? k->kids[j] : k;
            if (v->kind != CN_SCALAR || strpbrk(k->key, "\r\n:") || strpbrk(v->value, "\r\n"))
                return berr_set(BERR_CONFIG, "%s.headers.%s: expected strings without newlines",
                                what, k->key);
            e->headers = realloc(e->headers, (e->nheaders + 1) * sizeof *e->headers);
            if (!e->headers) abort();
            e->headers[e->nheaders].name = strdup(k->key);
            e->headers[e->nheaders++].value = strdup(v->value);
        }
    }
    return 0;
}

/* One endpoint of notifications.endpoints (e: its mapping). */
static int notify_endpoint(cnode *e, size_t i, config_notify_endpoint *ep)
{
    char what[64];
    snprintf(what, sizeof what, "notifications.endpoints[%zu]", i);
    if (e->kind != CN_MAP) return berr_set(BERR_CONFIG, "%s: expected a mapping", what);
    e->used = true;
    ep->timeout_ms = 1000;
    ep->threshold = 10;
    ep->backoff_ms = 1000;
    ep->queue_limit = 100000;
    ep->batch = 50;
    const char *v;
    int rc;
    if ((rc = set_str(e, "name", &ep->name)) < 0 || (rc = set_str(e, "url", &ep->url)) < 0 ||
        (rc = set_bool(e, "disabled", &ep->disabled)) < 0 ||
        (rc = set_int(e, "threshold", &ep->threshold)) < 0 ||
        (rc = set_int(e, "batch", &ep->batch)) < 0 ||
        (rc = notify_headers(cn_path(e, "headers"), what, ep)) < 0 ||
        (rc = str_list(cn_path(e, "ignoredmediatypes"), "ignoredmediatypes", &ep->ignore_mediatypes,
                       &ep->nignore_mediatypes)) < 0 ||
        (rc = str_list(cn_path(e, "ignore.mediatypes"), "ignore.mediatypes", &ep->ignore_mediatypes,
                       &ep->nignore_mediatypes)) < 0 ||
        (rc = str_list(cn_path(e, "ignore.actions"), "ignore.actions", &ep->ignore_actions,
                       &ep->nignore_actions)) < 0)
        return rc;
    if ((rc = get_str(e, "timeout", &v)) < 0 ||
        (v && (rc = config_parse_duration_ms(v, &ep->timeout_ms)) < 0))
        return berr_set(BERR_CONFIG, "%s.timeout: invalid duration", what);
    if ((rc = get_str(e, "backoff", &v)) < 0 ||
        (v && (rc = config_parse_duration_ms(v, &ep->backoff_ms)) < 0))
        return berr_set(BERR_CONFIG, "%s.backoff: invalid duration", what);
    if ((rc = get_str(e, "queuelimit", &v)) < 0) return rc;
    if (v) {
        char *end;
        long long x = strtoll(v, &end, 10);
        if (*end || x < 1)
            return berr_set(BERR_CONFIG, "%s.queuelimit: expected a count above 0", what);
        ep->queue_limit = x;
    }
    if (!ep->name) return berr_set(BERR_CONFIG, "%s.name is required", what);
    if (!ep->url || (strncmp(ep->url, "http://", 7) && strncmp(ep->url, "https://", 8)))
        return berr_set(BERR_CONFIG, "%s.url: an http:// or https:// URL is required", what);
    if (ep->timeout_ms < 1) ep->timeout_ms = 1000;
    if (ep->backoff_ms < 1) ep->backoff_ms = 1000;
    if (ep->threshold < 1) ep->threshold = 1;
    if (ep->batch < 1) ep->batch = 1;
    return 0;
}

/* notifications: registry:2's endpoints (name, url, headers, timeout, threshold, backoff,
 * ignoredmediatypes, ignore.mediatypes, ignore.actions, disabled) and events.includereferences,
 * plus berth's queuelimit and batch per endpoint. Endpoint names must be unique: an endpoint's
 * delivery cursor is kept under its name. */
int config_load_notify(cnode *root, config *cfg)
{
    config_notify *n = &cfg->notify;
    int rc = set_bool(root, "notifications.events.includereferences", &n->include_references);
    cnode *l = cn_path(root, "notifications.endpoints");
    if (rc < 0 || !l) return rc;
    if (l->kind != CN_SEQ) return berr_set(BERR_CONFIG, "notifications.endpoints: expected a list");
    for (size_t i = 0; i < l->nkids; i++) {
        n->endpoints = realloc(n->endpoints, (n->nendpoints + 1) * sizeof *n->endpoints);
        if (!n->endpoints) abort();
        config_notify_endpoint *ep = &n->endpoints[n->nendpoints++];
        memset(ep, 0, sizeof *ep);
        if ((rc = notify_endpoint(l->kids[i], i, ep)) < 0) return rc;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(n->endpoints[j].name, ep->name))
                return berr_set(BERR_CONFIG, "notifications.endpoints: the name '%s' is used twice",
                                ep->name);
    }
    return 0;
}
