/*
 * ingest: the one way a manifest enters the store. Every writer (the registry PUT, a mirror fill
 * and `berth sync`, a Helm chart upload or Helm upstream fill, `berth bundle import`) hands its
 * manifest to ingest_manifest, which parses it, runs the registered hooks and commits it with
 * store_manifest_put. A check registered here therefore runs on every path.
 *
 * Hooks run in a fixed order, whatever the order of registration:
 *   1. INGEST_VALIDATE   may refuse (an error: nothing is stored, the writer reports it). Built
 *                        in: layer URLs (order 0), margo (order 100), Helm (order 200).
 *   2. INGEST_POLICY     may refuse likewise; runs after every validation hook, so a policy
 *                        (signature trust: is this pushed or filled manifest servable?) sees only
 *                        manifests that are otherwise valid.
 *      -- store_manifest_put: one metadata transaction --
 *   3. INGEST_COMMITTED  after the commit (event notifications). The manifest is stored whatever
 *                        such a hook returns: an error is logged, never reported to the writer.
 * Within a phase, hooks run by ascending order number, then by registration. A pre-commit hook
 * may add to the store request (c->put: the Helm hook sets the chart's index entry there; a hook
 * that must write inside the metadata transaction sets the store's in-transaction callback there
 * when the store offers one); strings it allocates for it are handed to ingest_defer_free.
 *
 * Hooks are registered at start (ingest_hook_add, before serving); the built-in ones register
 * themselves on the first ingest. A hook must be thread-safe: ingests run on workers, mirror
 * check threads and CLI threads at once.
 */
#ifndef BERTH_REGISTRY_INGEST_H
#define BERTH_REGISTRY_INGEST_H

#include "config.h"
#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>

/* Who writes the manifest (hooks may treat sources differently; none of the built-in do). */
typedef enum {
    INGEST_PUSH,        /* PUT /v2/<name>/manifests/<ref> */
    INGEST_MIRROR,      /* a registry mirror fill (server or `berth sync`) */
    INGEST_HELM_UPLOAD, /* a chart uploaded through the ChartMuseum API */
    INGEST_HELM_MIRROR, /* a chart filled from a Helm upstream */
    INGEST_BUNDLE,      /* `berth bundle import` */
} ingest_source;

const char *ingest_source_name(ingest_source s);

typedef struct {
    ingest_source source;
    const char *repo;
    const char *content;
    size_t len;
    const char *content_type; /* NULL: the manifest's own mediaType */
    const char *digest;       /* of content */
    const char **tags;
    size_t ntags;
    bool mirrored;                   /* cached from an upstream (store_manifest_put_req) */
    const store_new_blob *new_blobs; /* placed blobs to record with it */
    size_t nnew_blobs;
    const char *const *absent_repos; /* tags that must not exist (store_manifest_put_req) */
    const char *const *absent_tags;
    size_t nabsent;
    /* a Helm chart stored through the chart API: its index entry, already made */
    const char *chart_tag, *chart_entry, *chart_yaml;
    /* Makes sure a blob the manifest names is in the store, for a hook that must read it (a
     * mirror fill fetches it from the upstream). NULL: the blob must already be there. */
    int (*blob_ensure)(void *arg, const char *digest);
    void *blob_arg;
} ingest_req;

/* What ingest_manifest reports after a commit. */
typedef struct {
    char subject[DIGEST_STR_MAX]; /* the manifest's subject digest, or "" */
    char media_type[128];         /* the manifest's media type */
} ingest_result;

/* What a hook sees. */
typedef struct ingest_ctx {
    store *st;
    const config *cfg;
    const ingest_req *in;
    store_manifest_put_req *put; /* pre-commit phases may add to it */
    struct ingest_defer *defer;
} ingest_ctx;

typedef enum { INGEST_VALIDATE, INGEST_POLICY, INGEST_COMMITTED, INGEST_NPHASES } ingest_phase;

/* 0 to go on; a negative berr (with the error set) refuses, in the pre-commit phases. */
typedef int (*ingest_hook_fn)(ingest_ctx *c, void *arg);

/* Registers a hook; name is kept (a string literal). 0, or -BERR_INTERNAL when the table is full.
 */
int ingest_hook_add(ingest_phase phase, int order, const char *name, ingest_hook_fn fn, void *arg);

/* Frees p (malloc'd) when the ingest ends. */
void ingest_defer_free(ingest_ctx *c, void *p);
/* In a hook: makes sure a blob the manifest names is in the store (see ingest_req.blob_ensure). */
int ingest_blob_ensure(ingest_ctx *c, const char *digest);

/* Parses, checks (hooks), stores. res may be NULL. */
int ingest_manifest(store *st, const config *cfg, const ingest_req *q, ingest_result *res);

#endif
