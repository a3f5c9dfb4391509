/*
 * config: berth's configuration model and its loader.
 *
 * The file is registry:2's YAML format (version 0.1): the keys berth understands keep their
 * registry:2 meaning, so an existing config works unchanged. Every key can be overridden by an
 * environment variable REGISTRY_<PATH> (REGISTRY_HTTP_ADDR overrides http.addr), as in registry:2.
 * Keys berth does not understand are reported by name at start, never silently ignored.
 * config.c's table (config_keys[]: path, type, offset, default, help) is the one list of the
 * keys: it drives the defaults, the parsing, config_free and config_print_keys; it says how a new
 * section is added. docs/configuration.md documents every key (tests/integration/config_keys.sh).
 */
#ifndef BERTH_CONFIG_H
#define BERTH_CONFIG_H

#include <regex.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

typedef struct {
    char *name;
    char *value;
} config_header;

/* One upstream registry mirrored through berth (`mirrors.<name>`, or `proxy.remoteurl`). */
typedef struct {
    char *name;  /* as clients name it: "docker.io", "ghcr.io", "host:5000" */
    char *local; /* prefix of cached repositories in the store ("docker.io", "host-5000") */
    char **urls; /* endpoints, tried in order */
    size_t nurls;
    char *username, *password;
    char *ca_file;
    bool insecure;
    int64_t connect_ms, transfer_ms;
    int64_t revalidate_ms; /* timeout.revalidate: how long a cached tag's check may take */
    int64_t revalidate_s;
    bool library_prefix; /* docker.io: one-component names live under library/ */
    char **repos;        /* repositories: fnmatch patterns of upstream names served (all if none) */
    size_t nrepos;
    int64_t ttl_s; /* proxy.ttl: its images unused this long are evicted (0: never) */
} config_mirror;

/* Access control (`auth:` as registry:2, `access:` berth's policies; src/auth/). */
#define CONFIG_PULL 1u
#define CONFIG_PUSH 2u
#define CONFIG_DELETE 4u
typedef struct {
    char *name;
    char **members;
    size_t nmembers;
} config_group;

typedef struct {
    char **repos; /* fnmatch patterns ('*' also matches '/') */
    size_t nrepos;
    char **users; /* names, "*" (any signed-in user), "anonymous" */
    size_t nusers;
    char **groups;
    size_t ngroups;
    unsigned actions; /* CONFIG_PULL | CONFIG_PUSH | CONFIG_DELETE */
} config_rule;

typedef struct {
    bool enabled; /* auth.htpasswd or auth.token configured */
    bool token;   /* auth.token: bearer tokens from a token service (src/auth/token.c) */
    char *token_realm, *token_service, *token_issuer, *token_bundle;
    char *realm;            /* auth.htpasswd.realm */
    char *htpasswd;         /* auth.htpasswd.path (bcrypt entries; re-read when it changes) */
    unsigned anonymous;     /* access.anonymous: what anyone may do unsigned (none) */
    unsigned authenticated; /* access.default: a signed-in user when no rule matches (all) */
    unsigned mirror;        /* access.mirror: the most a non-admin may do in mirror space (pull) */
    char **admins;          /* access.admins: may do everything */
    size_t nadmins;
    config_group *groups; /* access.groups.<name>: [users] */
    size_t ngroups;
    config_rule *rules; /* access.rules: first match decides */
    size_t nrules;
} config_auth;

/* The Helm chart repository (`helm:`, src/helm/). */
typedef struct {
    bool enabled;             /* helm.enabled (true) */
    char *oci_prefix;         /* helm.oci_prefix: charts live at oci://<berth>/<prefix>/<name> */
    bool allow_overwrite;     /* helm.allow_overwrite: re-upload of a version replaces it */
    int depth;                /* helm.depth: tenancy depth (ChartMuseum's --depth) */
    int64_t max_upload;       /* helm.max_upload_size: largest .tgz accepted */
    int64_t max_uncompressed; /* helm.max_uncompressed: largest unpacked chart accepted */
    config_mirror *upstreams; /* helm.upstreams.<name>: url in urls[0], refresh in revalidate_s */
    size_t nupstreams;
} config_helm;

enum { MARGO_REJECT, MARGO_WARN, MARGO_OFF };

/* The shared metadata database (`database:`, GitLab registry's names; src/store/meta_pg.c):
 * PostgreSQL instead of the embedded SQLite file when enabled. */
typedef struct {
    bool enabled;   /* database.enabled (false) */
    char *host;     /* database.host (libpq's default when unset) */
    int port;       /* database.port (5432) */
    char *user;     /* database.user */
    char *password; /* database.password */
    char *dbname;   /* database.dbname */
    char *sslmode;  /* database.sslmode: disable|allow|prefer|require|verify-ca|verify-full */
    int maxopen;    /* database.pool.maxopen: connections per process (8) */
} config_database;

/* storage.s3 (registry:2's keys): blobs in S3-compatible object storage (store/blobs3.c) */
typedef struct {
    bool enabled;
    char *accesskey, *secretkey;
    char *region;         /* signing region (default us-east-1) */
    char *regionendpoint; /* http(s)://host:port; empty: AWS's s3.<region>.amazonaws.com */
    char *bucket;
    char *rootdirectory; /* key prefix inside the bucket */
    bool secure;         /* https when regionendpoint has no scheme (true) */
    bool skipverify;     /* do not verify the endpoint's TLS certificate (false) */
    int64_t chunksize;   /* multipart part size, bytes (10 MiB; at least 5 MiB) */
    bool redirect;       /* !storage.redirect.disable: blob GETs answer 307 to presigned URLs */
    int64_t redirect_expiry_s; /* berth: storage.redirect.expiry (20m) */
} config_s3;

/* validation: (registry:2's) what a pushed manifest may hold. */
typedef struct {
    bool disabled;  /* validation.disabled: no checks of layer URLs */
    regex_t *allow; /* validation.manifests.urls.allow: a layer URL must match one (none: */
    size_t nallow;  /*   a manifest whose layers carry URLs is refused, registry:2's default) */
    regex_t *deny;  /* validation.manifests.urls.deny: a layer URL must match none */
    size_t ndeny;
} config_validation;

/* Trust at the site boundary (`trust:`, berth's own; src/trust/, docs/trust.md): public keys
 * and Notary trust stores by name, and policies by repository pattern. */
typedef struct {
    char *name, *path; /* trust.keys.<name>: a PEM public key as cosign writes it */
} config_trust_key;
typedef struct {
    char *name;   /* trust.stores.<name> */
    char *type;   /* ca | signingAuthority | tsa */
    char **paths; /* PEM certificate files */
    size_t npaths;
} config_trust_store;
typedef struct {
    char *artifact_type; /* trust.policies[].attestations[].artifactType: a referrer of this type */
    char **keys;         /* ... signed (cosign, Sigstore bundle) by one of these trust.keys */
    size_t nkeys;
    char **stores; /* ... or (Notary) chaining to these trustStores */
    size_t nstores;
    char **identities; /* with these trustedIdentities */
    size_t nidentities;
} config_trust_attestation;
typedef struct {
    char *name;   /* trust.policies[].name */
    char **repos; /* repositories: fnmatch patterns ('*' also matches '/'), mirror space too */
    size_t nrepos;
    bool warn;   /* mode: warn (serve and log) instead of enforce (deny) */
    char **keys; /* names of trust.keys accepted (cosign, Sigstore bundles) */
    size_t nkeys;
    char **stores; /* trustStores: "<type>:<name>" (Notary Project) */
    size_t nstores;
    char **identities; /* trustedIdentities */
    size_t nidentities;
    int level; /* signatureVerification: trust_level (0 strict .. 3 skip) */
    /* signatureVerification.override: authenticity, authenticTimestamp, expiry: 0 the level's
     * default, 1 log, 2 enforce (trust_material.override) */
    int override[3];
    config_trust_attestation *attest; /* attestations: all are required besides a signature */
    size_t nattest;
} config_trust_policy;
typedef struct {
    config_trust_key *keys;
    size_t nkeys;
    config_trust_store *stores;
    size_t nstores;
    config_trust_policy *policies; /* first match decides */
    size_t npolicies;
} config_trust;
/* notifications: registry:2's webhook endpoints (src/notify/, docs/notifications.md). */
typedef struct {
    char *name;
    char *url;
    config_header *headers; /* headers: {Name: [values]} sent with every POST */
    size_t nheaders;
    int64_t timeout_ms; /* timeout: one POST (default 1s) */
    int threshold;      /* threshold: failures in a row before the endpoint is logged as down */
    int64_t backoff_ms; /* backoff: wait after a failure (doubling up to 32x while down) */
    char **ignore_mediatypes; /* ignoredmediatypes and ignore.mediatypes */
    size_t nignore_mediatypes;
    char **ignore_actions; /* ignore.actions */
    size_t nignore_actions;
    bool disabled;
    int64_t queue_limit; /* berth: queuelimit, undelivered events kept (oldest dropped past it) */
    int batch;           /* berth: batch, events per POST at most (default 50) */
} config_notify_endpoint;

typedef struct {
    config_notify_endpoint *endpoints;
    size_t nendpoints;
    bool include_references; /* events.includereferences */
} config_notify;

typedef struct {
    char *path; /* the file loaded, or NULL for defaults only */
    int log_level;
    int log_format;      /* log.formatter: LOG_TEXT | LOG_JSON (util/log.h) */
    char **log_fields;   /* log.fields: key, value, key, value... added to every line */
    size_t nlog_fields;  /* pairs */
    char *root;          /* storage.filesystem.rootdirectory */
    bool delete_enabled; /* storage.delete.enabled */
    bool read_only;      /* storage.maintenance.readonly.enabled: writes answer 405 */
    bool purge_enabled;  /* storage.maintenance.uploadpurging.enabled */
    int64_t purge_age_s; /* storage.maintenance.uploadpurging.age */
    int64_t purge_interval_s;
    char *addr;            /* http.addr, "host:port" or ":port" */
    char *debug_addr;      /* http.debug.addr: the debug listener (health, metrics), or NULL */
    bool debug_prometheus; /* http.debug.prometheus.enabled */
    char *debug_prometheus_path; /* http.debug.prometheus.path ("/metrics") */
    char *host; /* http.host: external base URL for absolute Locations (optional) */
    char *tls_cert, *tls_key;
    char **tls_clientcas; /* http.tls.clientcas: CA files; a client must show a certificate */
    size_t ntls_clientcas;
    config_header *headers; /* http.headers */
    size_t nheaders;
    bool health_enabled; /* health.storagedriver.enabled */
    int64_t health_interval_s;
    int health_threshold;
    struct {
        char *path;
        int64_t interval_s;
    } * health_files; /* health.file: unhealthy while one of these exists */
    size_t nhealth_files;
    int64_t gc_grace_s;     /* gc.grace: age below which gc keeps unreferenced content */
    int64_t max_manifest;   /* berth: limits.manifest (bytes) */
    double rate_limit;      /* berth: limits.rate, requests per second per address (0: none) */
    double rate_burst;      /* berth: limits.burst (default: the rate) */
    int max_bodies;         /* berth: limits.uploads, concurrent requests with a body (0: none) */
    int64_t quota;          /* berth: storage.quota, bytes of blobs (0: none) */
    int connection_limit;   /* berth: http.connections */
    int connections_per_ip; /* berth: http.connections_per_ip (0: no limit) */
    int64_t header_timeout_ms; /* berth: http.headertimeout (0: none) */
    int threads;               /* berth: http.threads (event-loop threads) */
    config_mirror *mirrors;    /* berth: mirrors.<name> */
    size_t nmirrors;
    config_mirror *proxy; /* registry:2 proxy.remoteurl: the default upstream, or NULL */
    bool proxy_localpush; /* proxy.localpush (berth's): pushes to local repositories allowed */
    int64_t cache_max;    /* berth: cache.maxsize, bytes of mirrored content (0: no limit; -1:
                           * unset, serve sets the default share of the file system) */
    char **pins;          /* berth: cache.pin, repository names or patterns kept from eviction */
    size_t npins;
    config_helm helm;
    config_auth auth;
    int margo_validation; /* berth: margo.validation: reject | warn | off */
    config_database database;
    config_s3 s3;
    config_validation validation;
    config_trust trust; /* berth: trust */
    config_notify notify; /* notifications */
} config;

/* Loads defaults, then the file (when path is non-NULL), then REGISTRY_* env overrides.
 * Unknown keys are logged as warnings. Returns 0 or -BERR_CONFIG (detail in berr_msg()); on
 * failure cfg holds nothing to free. */
int config_load(config *cfg, const char *path);
void config_free(config *cfg);
/* Frees notifications.endpoints (config_free does; for a config_notify built elsewhere). */
void config_notify_free(config_notify *n);
/* Parses a Go-style duration ("90s", "10m", "1h30m", "168h", bare seconds) into seconds. */
int config_parse_duration(const char *s, int64_t *out);
/* The same in milliseconds ("500ms", "1.5s"). */
int config_parse_duration_ms(const char *s, int64_t *out);
/* Parses a size ("4MiB", "20GiB", "512k", bare bytes). */
int config_parse_size(const char *s, int64_t *out);
/* Prints every key with its meaning (for --help). */
void config_print_keys(void);

#endif
