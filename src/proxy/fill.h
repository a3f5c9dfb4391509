/*
 * fill: the one engine that fills the store from an upstream, for registry mirrors (blobs) and
 * Helm upstreams (charts) alike.
 *
 * A fill is keyed (say "blob <mirror> <digest>" or "helm <upstream> <file>"): however many
 * clients miss on the same key at once, one fill runs, on a thread of its own, and every client
 * joins it. The fill writes the upstream's bytes into an upload session (hashing as they
 * arrive); a client asking meanwhile is parked (HTTP_PARKED: no worker held) until the first
 * bytes land, then gets a response that reads the growing file, suspending its connection when
 * it has caught up until the fill writes more. The last byte is held back until the owner of the
 * fill declares the content good (fill_verified: digest matched, content checked) or the fill is
 * done; a fill that fails cuts every reader's connection, so no client ever sees a clean end of
 * wrong bytes. Berths sharing one metadata database take a lease per key (fill_lease), so one of
 * them fetches and the others serve what it commits (or take over if it dies).
 *
 * The owner supplies what differs (fill_ops.run: which upstream request, which checks, how the
 * content is committed); the engine owns threads, coalescing, streaming, parking and leases.
 */
#ifndef BERTH_PROXY_FILL_H
#define BERTH_PROXY_FILL_H

#include "http/http.h"
#include "proxy/upstream.h"
#include "store/store.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct fill fill;

typedef struct {
    /* On the fill's thread: fetch (fill_upload_open, then an upstream request whose sink is
     * fill_sink and whose response is fill_resp), verify and commit. 0 when committed. */
    int (*run)(fill *f, void *arg);
    /* Frees arg (after run, or when the fill was not started). */
    void (*free)(void *arg);
} fill_ops;

typedef struct {
    const char *key;  /* one running fill per key */
    const char *name; /* the upstream's name, for logs and metrics */
    bool metrics;     /* count the bytes as the upstream's (metrics_upstream) */
    uint64_t limit;   /* refuse content larger than this (-BERR_TOO_LARGE); 0: no limit */
    /* clients stay parked until this many bytes have landed (or the fill ends): content smaller
     * than that is answered only once checked, so its failure is a clean error status */
    uint64_t stream_min;
    store *st;
    fill_ops ops;
    void *arg; /* owned by the engine from here on (ops.free) */
} fill_spec;

/* Finds the running fill of s->key or starts one; returns it with a reference held, or NULL
 * (out of memory, no thread). */
fill *fill_join(const fill_spec *s);
void fill_release(fill *f);

/* ---- for ops.run ---- */
/* Opens the upload session the bytes go to (repository repo). */
int fill_upload_open(fill *f, const char *repo, digest_algo algo);
store_upload *fill_upload(fill *f);
/* An upstream_sink writing into the upload and waking readers. */
int fill_sink(void *f, const char *data, size_t len);
/* Where ops.run keeps the upstream's response (its Content-Length sizes the streamed reply). */
upstream_resp *fill_resp(fill *f);
/* The content length as the first bytes arrived (-1 when unknown). */
int64_t fill_size(const fill *f);
/* For a resumed transfer: the next n bytes of a whole-content answer are already written. */
void fill_skip(fill *f, uint64_t n);
/* The content is known good: readers may take the last byte (before the commit's fsync). */
void fill_verified(fill *f);
/* Takes the lease lease_key for this fill across berths sharing the metadata: 0 when held (or
 * the metadata cannot say: fetch anyway), 1 when present(arg) says another berth committed the
 * content meanwhile, -BERR_UNAVAILABLE when the holder did not finish before deadline (ms). The
 * lease is renewed on a thread of its own while the fill runs and dropped when it ends; a dead
 * holder's lease lapses within seconds (FILL_LEASE_MS) and another berth takes it over. */
int fill_lease(fill *f, const char *lease_key, int64_t deadline, int (*present)(void *arg),
               void *arg);

/* ---- for clients ---- */
typedef struct {
    const char *content_type; /* of the streamed reply */
    const char *digest;       /* Docker-Content-Digest of the streamed reply, or NULL */
    int (*done)(http_req *r); /* the fill committed: serve from the store */
} fill_serve_opts;
/* Answers r from f (on a worker): parks r until the first bytes (HTTP_PARKED, f then held in
 * r->ctx: run again, take it back with r->ctx, and call fill_serve again), streams the growing
 * content, or, once done, calls o->done. Takes over the caller's reference to f. */
int fill_serve(http_req *r, fill *f, const fill_serve_opts *o);
/* A parked request's cleanup: releases the fill in r->ctx. */
void fill_serve_cleanup(http_req *r);
/* Waits for the fill to end (off the event loop); its result, with its error detail. Takes over
 * the caller's reference. */
int fill_wait(fill *f);

#endif
