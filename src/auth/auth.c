/*
 * auth: see auth.h.
 *
 * The htpasswd file is read at start and again whenever its inode, size or mtime change (checked
 * at most once a second), so adding a user or changing a password needs no restart. Only bcrypt
 * entries ($2a$, $2b$, $2y$) are accepted, as in registry:2; they are checked with libcrypt's
 * crypt_r. A bcrypt check costs milliseconds by design, so a successful sign-in is remembered
 * (keyed by a SHA-256 of user and password, compared in constant time) until the file changes.
 * Passwords are never logged; failed sign-ins log only the user name.
 */
#include "auth/auth.h"
#include "util/err.h"
#include "util/log.h"
#include "util/metrics.h"

#include <crypt.h>
#include <jansson.h>
#include <fnmatch.h>
#include <nettle/base64.h>
#include <nettle/sha2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

typedef struct {
    char *user, *hash;
} ht_entry;

#define CACHE_SLOTS 64

static struct {
    pthread_mutex_t mu;
    ht_entry *e;
    size_t n;
    struct stat st;
    bool loaded;
    time_t checked;
    uint64_t version;
    char dummy[32]; /* a bcrypt setting of the file's highest cost, for unknown users */
    struct {
        uint8_t key[SHA256_DIGEST_SIZE];
        uint64_t version;
        bool used;
    } cache[CACHE_SLOTS];
    size_t next_slot;
} ht = {.mu = PTHREAD_MUTEX_INITIALIZER};

static bool ct_equal(const void *a, const void *b, size_t n)
{
    const volatile uint8_t *x = a, *y = b;
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (uint8_t)(x[i] ^ y[i]);
    return d == 0;
}

static void ht_clear(void)
{
    for (size_t i = 0; i < ht.n; i++) {
        free(ht.e[i].user);
        free(ht.e[i].hash);
    }
    free(ht.e);
    ht.e = NULL;
    ht.n = 0;
}

/* Re-reads the file when it changed; called with ht.mu held. */
static void ht_refresh(const char *path)
{
    time_t now = time(NULL);
    if (ht.loaded && now == ht.checked) return;
    ht.checked = now;
    struct stat st;
    if (stat(path, &st) < 0) {
        if (ht.loaded) log_warn("msg=\"htpasswd file unreadable: keeping the users read before\"");
        return;
    }
    if (ht.loaded && st.st_ino == ht.st.st_ino && st.st_size == ht.st.st_size &&
        st.st_mtim.tv_sec == ht.st.st_mtim.tv_sec && st.st_mtim.tv_nsec == ht.st.st_mtim.tv_nsec)
        return;
    FILE *f = fopen(path, "r");
    if (!f) return;
    ht_clear();
    char line[1024];
    size_t lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#') continue;
        char *colon = strchr(line, ':');
        if (!colon || strncmp(colon + 1, "$2", 2) != 0) {
            log_warn("msg=\"htpasswd: line skipped (only user:bcrypt entries)\" line=%zu", lineno);
            continue;
        }
        *colon = '\0';
        ht_entry *ne = realloc(ht.e, (ht.n + 1) * sizeof *ht.e);
        if (!ne) break;
        ht.e = ne;
        ht.e[ht.n].user = strdup(line);
        ht.e[ht.n].hash = strdup(colon + 1);
        ht.n++;
    }
    fclose(f);
    /* an unknown user costs the same check as a known one: a hash of the highest cost in the
     * file, so the time of a refusal does not tell whether the name exists */
    int cost = 5;
    for (size_t i = 0; i < ht.n; i++) {
        const char *h = ht.e[i].hash;
        if (strlen(h) > 7 && h[3] == '$' && h[6] == '$') {
            int c = (h[4] - '0') * 10 + (h[5] - '0');
            if (c > cost && c <= 31) cost = c;
        }
    }
    snprintf(ht.dummy, sizeof ht.dummy, "$2y$%02d$berthberthberthberthbe", cost);
    ht.st = st;
    ht.loaded = true;
    ht.version++;
    log_info("msg=\"htpasswd loaded\" users=%zu", ht.n);
}

static void cache_key(const char *user, const char *pass, uint8_t *key)
{
    struct sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, strlen(user) + 1, (const uint8_t *)user); /* with its NUL: a separator */
    sha256_update(&c, strlen(pass), (const uint8_t *)pass);
    sha256_digest(&c, SHA256_DIGEST_SIZE, key);
}

/* Whether user:pass signed in before (since the file last changed); called with ht.mu held. */
static bool cache_hit(const uint8_t *key)
{
    bool hit = false;
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        if (ht.cache[i].used && ht.cache[i].version == ht.version &&
            ct_equal(ht.cache[i].key, key, SHA256_DIGEST_SIZE))
            hit = true;
    return hit;
}

/* Checks user:pass against the file with bcrypt (key: their cache_key, already looked up and
 * missed); true when they match, and then remembered. */
static bool verify(const config *cfg, const char *user, const char *pass, const uint8_t *key)
{
    pthread_mutex_lock(&ht.mu);
    ht_refresh(cfg->auth.htpasswd);
    uint64_t version = ht.version;
    char *hash = NULL;
    bool known = false;
    for (size_t i = 0; !hash && i < ht.n; i++)
        if (!strcmp(ht.e[i].user, user)) {
            hash = strdup(ht.e[i].hash);
            known = true;
        }
    if (!hash) hash = strdup(ht.dummy[0] ? ht.dummy : "$2y$05$berthberthberthberthbe");
    pthread_mutex_unlock(&ht.mu);
    if (!hash) return false;
    struct crypt_data *cd = calloc(1, sizeof *cd);
    bool ok = false;
    if (cd) {
        const char *out = crypt_r(pass, hash, cd);
        size_t hl = strlen(hash);
        ok = known && out && out[0] == '$' && strlen(out) == hl && ct_equal(out, hash, hl);
        free(cd);
    }
    free(hash);
    if (ok) {
        pthread_mutex_lock(&ht.mu);
        if (ht.version == version) {
            size_t s = ht.next_slot++ % CACHE_SLOTS;
            memcpy(ht.cache[s].key, key, SHA256_DIGEST_SIZE);
            ht.cache[s].version = version;
            ht.cache[s].used = true;
        }
        pthread_mutex_unlock(&ht.mu);
    }
    return ok;
}

void auth_free_cache(void)
{
    pthread_mutex_lock(&ht.mu);
    ht_clear();
    ht.loaded = false;
    memset(ht.cache, 0, sizeof ht.cache);
    pthread_mutex_unlock(&ht.mu);
}

/* Who a request is, decided once per request by identify (and identify_slow): r->auth, allocated
 * only when auth is on and the request carries credentials. A Basic sign-in whose password must
 * be checked keeps the parsed password here, from identify to identify_slow, wiped right after. */
typedef struct {
    bool signed_in;  /* the caller proved who it is */
    char user[256];  /* its name (a token's subject) */
    json_t *access;  /* a bearer token's access claim, when signed in by one */
    char pass[1024]; /* a Basic password waiting for its bcrypt check */
    uint8_t key[SHA256_DIGEST_SIZE];
} auth_req;

bool auth_signed_in(const http_req *r)
{
    const auth_req *s = r->auth;
    return s && s->signed_in;
}

const char *auth_user(const http_req *r)
{
    const auth_req *s = r->auth;
    return s && s->signed_in ? s->user : NULL;
}

static void auth_challenge(const http_req *r, char *out, size_t len)
{
    const config_auth *a = &r->cfg->auth;
    if (!a->token) {
        snprintf(out, len, "Basic realm=\"%s\"", a->realm ? a->realm : "berth");
        return;
    }
    bool repo = r->name[0] && !r->plain_errors && !strncmp(r->path, "/v2/", 4);
    const char *acts = r->method == M_GET || r->method == M_HEAD ? "pull"
                       : r->method == M_DELETE                   ? "delete"
                                                                 : "pull,push";
    if (repo)
        snprintf(out, len, "Bearer realm=\"%s\",service=\"%s\",scope=\"repository:%s:%s\"",
                 a->token_realm, a->token_service, r->name, acts);
    else if (!strcmp(r->path, "/v2/_catalog"))
        snprintf(out, len, "Bearer realm=\"%s\",service=\"%s\",scope=\"registry:catalog:*\"",
                 a->token_realm, a->token_service);
    else
        snprintf(out, len, "Bearer realm=\"%s\",service=\"%s\"", a->token_realm, a->token_service);
}

static void auth_done(http_req *r)
{
    auth_req *s = r->auth;
    if (!s) return;
    if (s->access) json_decref(s->access);
    explicit_bzero(s->pass, sizeof s->pass);
    free(s);
    r->auth = NULL;
}

/* ---- policies ---- */

static bool listed(char *const *l, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(l[i], s)) return true;
    return false;
}

static bool in_group(const config_auth *a, const char *group, const char *user)
{
    for (size_t i = 0; i < a->ngroups; i++)
        if (!strcmp(a->groups[i].name, group))
            return listed(a->groups[i].members, a->groups[i].nmembers, user);
    return false;
}

static bool rule_matches(const config_auth *a, const config_rule *rl, const char *user,
                         const char *repo)
{
    bool repo_ok = false;
    for (size_t i = 0; i < rl->nrepos && !repo_ok; i++)
        repo_ok = fnmatch(rl->repos[i], repo, 0) == 0;
    if (!repo_ok) return false;
    if (!user) return listed(rl->users, rl->nusers, "anonymous");
    if (listed(rl->users, rl->nusers, user) || listed(rl->users, rl->nusers, "*")) return true;
    for (size_t i = 0; i < rl->ngroups; i++)
        if (in_group(a, rl->groups[i], user)) return true;
    return false;
}

static unsigned allowed_actions(const config_auth *a, const char *user, const char *repo,
                                bool mirror_space)
{
    if (user && listed(a->admins, a->nadmins, user))
        return CONFIG_PULL | CONFIG_PUSH | CONFIG_DELETE;
    unsigned allowed = user ? a->authenticated : a->anonymous;
    for (size_t i = 0; i < a->nrules; i++) {
        if (rule_matches(a, &a->rules[i], user, repo)) {
            allowed = a->rules[i].actions;
            break;
        }
    }
    if (mirror_space) allowed &= a->mirror;
    return allowed;
}

bool auth_allowed(const http_req *r, const char *repo, unsigned action)
{
    const config_auth *a = &r->cfg->auth;
    if (!a->enabled) return true;
    const auth_req *s = r->auth;
    unsigned got;
    if (s && s->access) { /* a token's access claim decides (capped in mirror space) */
        got = auth_token_actions(s->access, repo);
        if (r->mirror) got &= a->mirror;
    } else {
        got = allowed_actions(a, auth_user(r), repo, r->mirror != NULL);
    }
    return (got & action) == action;
}

int auth_require(http_req *r, const char *repo, unsigned action)
{
    if (auth_allowed(r, repo, action)) return 0;
    const char *what = action == CONFIG_PULL ? "pull" : action == CONFIG_PUSH ? "push" : "delete";
    /* with tokens, a missing scope is a 401 whose challenge names it, so the client fetches a
     * token for it (the token spec's insufficient_scope) */
    const auth_req *s = r->auth;
    if (!auth_signed_in(r) || s->access)
        return berr_set(BERR_UNAUTHORIZED, "authentication required to %s %s", what, repo);
    return berr_set(BERR_DENIED, "%s may not %s %s", s->user, what, repo);
}

/* ---- requests ---- */

/* Parses "Basic base64(user:pass)"; 0, or -1 when malformed. */
static int parse_basic(const char *h, char *user, size_t ul, char *pass, size_t pl)
{
    if (strncasecmp(h, "Basic ", 6) != 0) return -1;
    const char *b64 = h + 6;
    while (*b64 == ' ')
        b64++;
    size_t n = strlen(b64);
    if (n > 2048) return -1;
    uint8_t dec[1600];
    size_t dl = sizeof dec;
    struct base64_decode_ctx ctx;
    base64_decode_init(&ctx);
    if (!base64_decode_update(&ctx, &dl, dec, n, b64) || !base64_decode_final(&ctx)) return -1;
    uint8_t *colon = memchr(dec, ':', dl);
    if (!colon) return -1;
    size_t ulen = (size_t)(colon - dec), plen = dl - ulen - 1;
    if (ulen == 0 || ulen >= ul || plen >= pl || memchr(dec, '\0', dl)) return -1;
    memcpy(user, dec, ulen);
    user[ulen] = '\0';
    memcpy(pass, colon + 1, plen);
    pass[plen] = '\0';
    return 0;
}

/* Who is asking, from the Authorization header, parsed once: a bearer token is verified here; a
 * Basic sign-in remembered from before is known at once, else its password is kept for
 * identify_slow (HTTP_AUTH_SLOW). No credentials: anonymous. */
static int identify(http_req *r)
{
    const config_auth *a = &r->cfg->auth;
    if (!a->enabled) return 0;
    const char *h = http_header(r, "Authorization");
    if (!h) return 0;
    auth_req *s = calloc(1, sizeof *s);
    if (!s) return berr_set(BERR_INTERNAL, "out of memory");
    r->auth = s;
    if (a->token) {
        if (strncasecmp(h, "Bearer ", 7) != 0)
            return berr_set(BERR_UNAUTHORIZED, "a bearer token from %s is required",
                            a->token_realm);
        int rc = auth_token_verify(r->cfg, h + 7, s->user, sizeof s->user, &s->access);
        if (rc < 0) {
            s->access = NULL;
            metrics_inc(METRIC_SIGNIN_FAILURES);
            log_warn("msg=\"token refused\" reason=\"%s\"", berr_msg());
            return rc;
        }
        s->signed_in = true;
        return 0;
    }
    if (parse_basic(h, s->user, sizeof s->user, s->pass, sizeof s->pass) < 0)
        return berr_set(BERR_UNAUTHORIZED, "unsupported or malformed Authorization header");
    long wait = limits_signin_wait(r);
    if (wait > 0) {
        metrics_inc(METRIC_SIGNIN_THROTTLED);
        explicit_bzero(s->pass, sizeof s->pass);
        r->retry_after = wait;
        return berr_set(BERR_TOOMANYREQUESTS,
                        "too many failed sign-ins from this address: retry in %ld s", wait);
    }
    cache_key(s->user, s->pass, s->key);
    pthread_mutex_lock(&ht.mu);
    ht_refresh(a->htpasswd);
    bool hit = cache_hit(s->key);
    pthread_mutex_unlock(&ht.mu);
    if (!hit) return HTTP_AUTH_SLOW;
    explicit_bzero(s->pass, sizeof s->pass);
    s->signed_in = true;
    return 0;
}

/* The password check identify left (bcrypt: milliseconds by design), on a worker thread. */
static int identify_slow(http_req *r)
{
    auth_req *s = r->auth;
    bool ok = verify(r->cfg, s->user, s->pass, s->key);
    explicit_bzero(s->pass, sizeof s->pass);
    if (!ok) {
        limits_signin_failed(r);
        char logged[220];
        log_warn("msg=\"sign-in refused\" user=\"%s\"", log_value(s->user, logged, sizeof logged));
        return berr_set(BERR_UNAUTHORIZED, "invalid username or password");
    }
    s->signed_in = true;
    return 0;
}

/* Whether anonymous callers have some access (the default or a rule naming them). */
static bool anonymous_somewhere(const config_auth *a)
{
    bool anon = a->anonymous != 0;
    for (size_t i = 0; !anon && i < a->nrules; i++)
        anon = listed(a->rules[i].users, a->rules[i].nusers, "anonymous");
    return anon;
}

/* A route's access rule (http.h), for the caller identify found. */
static int check(http_req *r, http_access access, unsigned action)
{
    const config_auth *a = &r->cfg->auth;
    if (!a->enabled) return 0;
    switch (access) {
    case HTTP_PUBLIC:
        return 0;
    case HTTP_SIGNED_IN:
        /* always a challenge for an unsigned caller: clients learn here how to sign in (and a
         * client without credentials goes on anonymously) */
        return auth_signed_in(r) ? 0 : berr_set(BERR_UNAUTHORIZED, "authentication required");
    case HTTP_KNOWN:
        if (!auth_signed_in(r) && !anonymous_somewhere(a))
            return berr_set(BERR_UNAUTHORIZED, "authentication required");
        return 0;
    case HTTP_REPO:
        return auth_require(r, r->name, action);
    }
    return berr_set(BERR_INTERNAL, "unknown access rule");
}

const http_auth_hooks auth_hooks = {
    .identify = identify,
    .identify_slow = identify_slow,
    .check = check,
    .challenge = auth_challenge,
    .done = auth_done,
};

bool auth_may_push_somewhere(const http_req *r)
{
    const config_auth *a = &r->cfg->auth;
    if (!a->enabled) return true;
    const auth_req *s = r->auth;
    if (s && s->access) {
        json_t *e;
        size_t i;
        json_array_foreach(s->access, i, e)
        {
            json_t *acts = json_object_get(e, "actions"), *v;
            size_t j;
            json_array_foreach(acts, j, v)
            {
                const char *s = json_string_value(v);
                if (s && (!strcmp(s, "push") || !strcmp(s, "*"))) return true;
            }
        }
        return false;
    }
    const char *user = auth_user(r);
    if (user && listed(a->admins, a->nadmins, user)) return true;
    if ((user ? a->authenticated : a->anonymous) & CONFIG_PUSH) return true;
    for (size_t i = 0; i < a->nrules; i++) {
        const config_rule *rl = &a->rules[i];
        if (!(rl->actions & CONFIG_PUSH)) continue;
        bool who = user ? listed(rl->users, rl->nusers, user) || listed(rl->users, rl->nusers, "*")
                        : listed(rl->users, rl->nusers, "anonymous");
        for (size_t g = 0; user && !who && g < rl->ngroups; g++)
            who = in_group(a, rl->groups[g], user);
        if (who) return true;
    }
    return false;
}
