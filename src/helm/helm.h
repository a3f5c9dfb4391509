/*
 * helm: the Helm chart repository, a view over the one content store.
 *
 * A chart is stored the way `helm push` stores it: an OCI manifest in repository
 * <helm.oci_prefix>/[<tenant>/]<name>, tagged with its version ('+' written '_'), whose config
 * blob is Chart.yaml as JSON and whose layers are the .tgz (and the .prov when there is one).
 * Charts uploaded through the ChartMuseum API (api.c) are written in that form, and charts
 * pushed over OCI are indexed the same way, so both protocols see one set of charts.
 *
 * Each chart manifest carries its index.yaml entry (JSON) in the metadata store, written in the
 * manifest's own transaction; index.c renders index.yaml from those entries, caching the result
 * until the store's chart generation moves. chart.c reads and checks chart archives (libarchive,
 * never extracted) and Chart.yaml (libyaml). mirror.c serves upstream HTTP chart repositories.
 */
#ifndef BERTH_HELM_H
#define BERTH_HELM_H

#include "http/http.h"
#include "util/semver.h"
#include "util/strbuf.h"
#include "util/yamlj.h"

#include <jansson.h>
#include <stdbool.h>

#define HELM_MT_CONFIG "application/vnd.cncf.helm.config.v1+json"
#define HELM_MT_CHART "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
#define HELM_MT_PROV "application/vnd.cncf.helm.chart.provenance.v1.prov"

/* ---- chart.c ---- */
#define HELM_NAME_MAX 128
#define HELM_VERSION_MAX SEMVER_MAX

typedef struct {
    json_t *meta; /* Chart.yaml as JSON (owned) */
    char name[HELM_NAME_MAX + 1];
    char version[HELM_VERSION_MAX + 1];
    char tag[HELM_VERSION_MAX + 1]; /* the version as an OCI tag ('+' -> '_') */
} helm_chart_info;

/* Chart names become OCI repository components: [a-z0-9]+([._-][a-z0-9]+)*. */
bool helm_name_valid(const char *name);

/* Reads a chart archive from fd (offset 0): gzip, tar, one top-level directory holding
 * Chart.yaml, no absolute or ".." paths, no links or devices, at most max_uncompressed bytes
 * unpacked. Fills info from a valid Chart.yaml. -BERR_BAD_REQUEST with a message naming what is
 * wrong. */
int helm_chart_inspect(int fd, int64_t max_uncompressed, helm_chart_info *info);
/* Checks Chart.yaml metadata (apiVersion, name, SemVer version) and fills info's strings. */
int helm_chart_check_meta(json_t *meta, helm_chart_info *info);
void helm_chart_info_free(helm_chart_info *info);

/* Stores a chart whose .tgz is the blob chart_digest (linked to the chart's repository) as an
 * OCI chart manifest tagged with its version, with prov (may be NULL) as a provenance layer.
 * -BERR_CONFLICT when the version exists and overwrite is false. */
typedef struct {
    const char *repo;
    const helm_chart_info *info;
    const char *chart_digest;
    uint64_t chart_size;
    bool chart_new; /* the .tgz was placed (store_upload_place) and is recorded with the chart */
    const char *prov;
    size_t prov_len;
    bool overwrite;
    bool mirrored;       /* cached from an upstream chart repository */
    const char *created; /* RFC 3339 time for the entry, or NULL for now */
    const config *cfg;   /* for the ingest hooks (registry/ingest.h) */
} helm_store_req;
int helm_chart_store(store *s, const helm_store_req *q);
/* The OCI manifest `helm push` would make for a chart (malloc'd JSON): config = Chart.yaml as
 * JSON (cfg_digest, cfg_len), the .tgz layer, and the provenance layer when prov_digest is set. */
char *helm_chart_manifest(const helm_chart_info *ci, const char *chart_digest, uint64_t chart_size,
                          const char *cfg_digest, size_t cfg_len, const char *prov_digest,
                          size_t prov_len, const char *created);

/* A chart's index entry: JSON (the API's form) and an index.yaml list item. */
typedef struct {
    char *json, *yaml;
    char tag[HELM_VERSION_MAX + 1];
} helm_entry;
void helm_entry_free(helm_entry *e);
/* For a manifest PUT over OCI: when repo is a chart repository under the prefix and the manifest
 * is a Helm chart whose config is in the store, fills e so the chart is indexed. Returns 0 (with
 * e->json NULL when it is not an indexable chart). */
int helm_oci_entry(store *s, const config *cfg, const char *repo, const char *content, size_t len,
                   helm_entry *e);

/* Registers helm_oci_entry as an ingest validation hook (registry/ingest.h, order 200). */
void helm_ingest_register(void);

/* The charts a download file name "<base>.tgz" can stand for: each split of base at a '-' into a
 * valid chart name and SemVer version (its tag: '+' written '_'); returns how many (at most max).
 */
#define HELM_FILE_CHARTS 8
typedef struct {
    char name[HELM_NAME_MAX + 1];
    char tag[HELM_VERSION_MAX + 1];
} helm_file_chart;
size_t helm_file_charts(const char *base, helm_file_chart *out, size_t max);
/* The stored chart "<name>-<version>" (names may hold '-': every split is tried) of a tenant
 * ("" for none): its repository and manifest. -BERR_NOT_FOUND when absent. */
int helm_chart_find(store *s, const config *cfg, const char *tenant, const char *base, char *repo,
                    size_t repolen, store_manifest *m);
/* The digest (and size) of a manifest's layer of media type mt; -BERR_NOT_FOUND when none. */
int helm_manifest_layer(const store_manifest *m, const char *mt, char *digest, uint64_t *size);
/* The repository of a chart: "<prefix>/<tenant>/<name>" (tenant may be ""). */
void helm_repo_name(const config *cfg, const char *tenant, const char *name, char *out,
                    size_t outlen);
/* Now as RFC 3339 with nanoseconds, UTC. */
void helm_now_rfc3339(char *out, size_t len);

/* ---- index.c ---- */
typedef struct {
    const char *name;    /* chart name */
    const char *version; /* its version */
    const char *json;    /* the entry as compact JSON */
    const char *repo;
    const char *tag;
    const char *digest; /* manifest digest */
    const char *yaml;   /* (while building) */
} helm_version;

/* All versions of one chart: shared between views, immutable. */
typedef struct {
    const char *name;
    helm_version *versions; /* newest first */
    size_t n;
    char *yaml; /* its block of index.yaml */
    size_t yaml_len;
    int refs;
} helm_chart;

/* The charts of one tenant as of a point in the store's chart change log: shared, read-only. */
typedef struct helm_view {
    int64_t gen;
    char *tenant;
    helm_chart **charts; /* sorted by name */
    size_t ncharts;
    /* index.yaml: a header, each chart's block, a footer (sent as they are, with writev) */
    char head[64], foot[128];
    http_iovec *iov;
    unsigned int niov;
    size_t yaml_len;
    int refs;
    struct helm_view *next;
} helm_view;

int helm_view_get(store *s, const config *cfg, const char *tenant, helm_view **out);
void helm_view_put(helm_view *v);
const helm_chart *helm_view_chart(const helm_view *v, const char *name);
/* A version of a chart ("latest": the newest), or NULL. */
const helm_version *helm_view_version(const helm_view *v, const char *name, const char *version);
/* An index entry as a list item under a chart name ("  - key: ...", keys sorted). */
void helm_yaml_entry(strbuf *b, json_t *entry);
void helm_views_free(void);
/* Brings the cached views up to date (and builds the default tenant's at start), so a GET
 * rarely pays for a build: called each second by the maintenance thread. */
void helm_views_warm(store *s, const config *cfg);

/* ---- api.c ---- */
/* The ChartMuseum-style paths (helm.depth components name the area, "" at depth 0); the route
 * table (serve.c) maps each endpoint and method to its handler and access. */
enum {
    HELM_PROV,     /* /api/<area>/prov */
    HELM_CHARTS,   /* /api/<area>/charts */
    HELM_CHART,    /* /api/<area>/charts/<name> */
    HELM_VERSION,  /* /api/<area>/charts/<name>/<version> */
    HELM_UP_INDEX, /* /<upstream>/index.yaml */
    HELM_UP_FILE,  /* /<upstream>/charts/<file> */
    HELM_INDEX,    /* /<area>/index.yaml */
    HELM_FILE,     /* /<area>/charts/<file> */
};
extern const http_router helm_router;
extern const http_handler helm_index_h, helm_file_h, helm_list_h, helm_chart_h, helm_version_h,
    helm_delete_h, helm_upload_h, helm_prov_h, helm_up_index_h, helm_up_file_h;
/* Answers with a blob of repo (sendfile) as content type ct. */
int helm_serve_layer(http_req *r, const char *repo, const char *digest, const char *ct);

/* ---- mirror.c: upstream HTTP chart repositories ---- */
const config_mirror *helm_upstream_find(const config *cfg, const char *name);
int helm_mirror_index(http_req *r, const config_mirror *up);
int helm_mirror_chart(http_req *r, const config_mirror *up, const char *file);
/* The mirror handlers' cleanup: releases the fill a parked request still holds (r->ctx). */
void helm_mirror_cleanup(http_req *r);
void helm_mirror_free(void);

#endif
