/*
 * store: berth's one content store. Every API (OCI, and later Helm, mirror, bundles) is a view
 * over it.
 *
 * Two halves:
 *  - blobs: immutable files named by digest under <root>/blobs/<algo>/<2 hex>/<hex>, written to
 *    a temporary file while hashing, fsync'd, and renamed into place only after the digest is
 *    verified (store/blobfs.c). A blob either exists whole and verified or not at all.
 *  - metadata: repositories, blob links, manifests (their exact bytes), references, tags and
 *    referrers behind the store_meta_ops vtable (store/meta_sqlite.c is the embedded SQLite/WAL
 *    backend; a shared engine can implement the same table).
 *
 * The rule that keeps online GC safe: a blob file only leaves blobs/ while the metadata write
 * lock is held, and a commit checks inside its transaction that its file is there (the
 * place/trash callbacks run inside the metadata transaction), so a blob row and its file never
 * disagree for a committed state, and gc's "is it still unreferenced?" check and its removal are
 * one atomic step against concurrent uploads, mounts and manifest puts. A new file is renamed
 * into blobs/ (and its directory fsync'd) just before its transaction, outside the lock, so
 * concurrent commits do not queue behind each other's fsyncs; until its row commits it is an
 * orphan, which gc removes only when older than the grace period.
 *
 * Handlers call only the store_* functions declared here; the store never knows about HTTP.
 */
#ifndef BERTH_STORE_H
#define BERTH_STORE_H

#include "config.h"
#include "util/digest.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct store store;

/* A manifest as stored: exact bytes, media type, digest. Free with store_manifest_free. */
typedef struct {
    char digest[DIGEST_STR_MAX];
    char *media_type;
    char *content;
    size_t size;
    int64_t checked; /* by tag, mirrored: when the tag was last checked upstream (ms), else 0 */
} store_manifest;

/* A blob whose file is in place but not yet recorded (store_upload_place, store_blob_place_mem):
 * the store_manifest_put that lists it in new_blobs records it and links it to the repository in
 * the manifest's own transaction. */
typedef struct {
    char digest[DIGEST_STR_MAX];
    uint64_t size;
} store_new_blob;

/* What a manifest PUT asks the store to record, after the handler parsed and validated it. */
typedef struct {
    const char *repo;
    const char *digest;
    const char *media_type;
    const char *content;
    size_t size;
    const char *subject;          /* subject.digest or NULL */
    const char *artifact_type;    /* artifactType, else config.mediaType for images, or NULL */
    const char *annotations_json; /* compact JSON object or NULL */
    const char **blobs;           /* config + layers: must be linked in repo */
    size_t nblobs;
    const char **children; /* index entries: must be manifests of repo */
    size_t nchildren;
    const char **tags; /* tags to point at this manifest */
    size_t ntags;
    bool mirrored; /* cached from an upstream: blobs and children arrive later, on demand */
    /* Helm charts (src/helm/): the tag the chart's version maps to and its index.yaml entry
     * (JSON); both NULL for everything else */
    const char *chart_tag;
    const char *chart_entry;
    const char *chart_yaml;          /* the same entry as an index.yaml list item */
    const store_new_blob *new_blobs; /* recorded and linked first, in the same transaction */
    size_t nnew_blobs;
    /* tags that must not exist (absent_repos[i], absent_tags[i]), checked in the transaction:
     * -BERR_CONFLICT when one does (a chart version uploaded twice at once, or a chart whose
     * download name another chart already has) */
    const char *const *absent_repos;
    const char *const *absent_tags;
    size_t nabsent;
    /* set by the store itself: checked inside the transaction */
    int (*check)(void *arg);
    void *check_arg;
} store_manifest_put_req;

/* A list of strings with a "more after the last one" flag (tags, catalog). */
typedef struct {
    char **items;
    size_t n;
    bool more;
} store_list;

typedef struct {
    char digest[DIGEST_STR_MAX];
    char *media_type;
    uint64_t size;
    char *artifact_type;
    char *annotations_json;
} store_referrer;

typedef struct {
    store_referrer *items;
    size_t n;
} store_referrer_list;

/* An open blob: either a file (fd, for sendfile) or bytes held in memory (manifests). */
typedef struct {
    int fd;          /* -1 when mem is used */
    uint64_t offset; /* of the blob's first byte in fd */
    char *mem;       /* malloc'd, when fd == -1 */
    uint64_t size;
    char *media_type;     /* set for manifests served through the blobs endpoint, else NULL */
    struct store *remote; /* S3 mode, store_blob_open_serve: the bytes stay in the bucket */
    char digest[DIGEST_STR_MAX];
} store_blob;

/* Milliseconds since the epoch: the clock of every metadata timestamp. */
int64_t store_now(void);

/* ---- lifecycle ---- */
/* Opens (creating when absent) the store under cfg->root and recovers from a crash: removes
 * half-written temporary files and finishes or undoes interrupted gc removals. */
int store_open(store **out, const config *cfg);
void store_close(store *s);
const char *store_root(const store *s);
/* Re-counts the bytes of stored blobs (for storage.quota); cheap enough to run every few
 * seconds. */
int store_refresh_usage(store *s);
/* Bytes of stored blobs, all and those only mirrored content uses (one metadata query each). */
int store_usage(store *s, uint64_t *all, uint64_t *mirrored);
/* How many blobs the store holds (the metrics' berth_store_blobs). */
int store_blob_count(store *s, uint64_t *n);
/* Writes, syncs and removes a probe file: 0 when storage is writable. */
int store_check_writable(store *s);
/* A lease shared by every process on this metadata (SQLite file or PostgreSQL database): 0 when
 * owner now holds key for ttl_ms (taken, renewed, or taken over after it expired),
 * -BERR_CONFLICT when another owner holds it. */
int store_lease_take(store *s, const char *key, const char *owner, int64_t ttl_ms);
int store_lease_drop(store *s, const char *key, const char *owner);
/* One query to the metadata engine: 0 when it answers (PostgreSQL may be down). */
int store_check_metadata(store *s);

/* What the store's engines can do, for the server to consult (store_caps):
 *  BLOCKING  reading or writing a blob, a manifest or an upload session may wait on the network
 *            (blobs in S3, metadata in PostgreSQL): handlers run that work on the worker pool,
 *            never on the event loop, so one slow bucket or database does not stall every client
 *  SENDFILE  an opened blob is a local descriptor (store_blob.fd), sent with sendfile
 *  REDIRECT  blob GETs may send the client to a presigned URL (store_blob_url) */
#define STORE_CAP_BLOCKING 0x1u
#define STORE_CAP_SENDFILE 0x2u
#define STORE_CAP_REDIRECT 0x4u
unsigned store_caps(const store *s);

/* Blobs kept outside blobs/ (a bundle served in place): open gives a new descriptor (when fd is
 * not NULL) and the offset of the blob's bytes in it; 0, or negative when the source lacks it. */
typedef struct {
    int (*open)(void *arg, const char *digest, int *fd, uint64_t *offset);
    void *arg;
} store_blob_source;
/* Consults src before blobs/ for every blob (set before serving; src must outlive the store). */
void store_set_blob_source(store *s, const store_blob_source *src);

/* ---- blobs ---- */
/* Opens a blob linked to repo (or a manifest of repo by digest). -BERR_BLOB_UNKNOWN if absent. */
int store_blob_open(store *s, const char *repo, const char *digest, store_blob *out);
void store_blob_release(store_blob *b);
/* The same for serving it: with storage.s3 the blob is not fetched (remote is set); read its
 * bytes with store_blob_read, or send the client to store_blob_url. */
int store_blob_open_serve(store *s, const char *repo, const char *digest, store_blob *out);
/* Bytes [off, off+len) of a remote blob into sink (a negative return stops). */
int store_blob_read(store_blob *b, uint64_t off, uint64_t len,
                    int (*sink)(void *arg, const char *data, size_t len), void *arg);
/* A presigned URL to the blob (storage.s3 with redirects on), else -BERR_UNSUPPORTED. */
int store_blob_url(store *s, const char *digest, char *url, size_t len);
/* Records a blob whose file is in place (store_upload_place, a blob source) and links it to
 * repo, checking inside the transaction that the file is there. */
int store_blob_adopt(store *s, const char *repo, const char *digest, uint64_t size);
/* True when the blob's file is stored (in any repository, or not yet recorded). */
bool store_blob_present(store *s, const char *digest);
/* Links an existing blob into repo (cross-repository mount). from may be NULL (any repo). */
int store_blob_mount(store *s, const char *repo, const char *from, const char *digest);
/* Links a stored blob into repo only when a manifest of repo lists it (a mirror repository's
 * manifest, fetched from its upstream, vouches for its layers); else -BERR_BLOB_UNKNOWN. */
int store_blob_link_listed(store *s, const char *repo, const char *digest);
/* Removes repo's link to a blob; the file goes when gc finds it unreferenced. */
int store_blob_unlink(store *s, const char *repo, const char *digest);

/* ---- uploads ---- */
typedef struct store_upload store_upload;
#define STORE_UUID_LEN 36
int store_upload_create(store *s, const char *repo, digest_algo algo, char *uuid_out);
/* Opens a session of repo for exclusive use; -BERR_BLOB_UPLOAD_INVALID when another request
 * holds it. */
int store_upload_open(store *s, const char *repo, const char *uuid, store_upload **out);
/* Bytes received, including those still gathered for a larger write (store_upload_write). */
uint64_t store_upload_size(const store_upload *u);
/* Appends bytes. On files they are gathered into larger writes: they reach the session's file
 * at store_upload_flush, or when the session is saved, verified, read or closed. */
int store_upload_write(store_upload *u, const void *data, size_t len);
/* Writes the gathered bytes; store_upload_written then equals store_upload_size. */
int store_upload_flush(store_upload *u);
/* Bytes in the session's file (what a reader of the growing file may read). */
uint64_t store_upload_written(const store_upload *u);
/* A new read-only descriptor of the session's data, valid after the session ends (a reader
 * streaming the upload while it is written). It reads the store_upload_written bytes: the
 * writer flushes first when it wants all of them. With storage.s3 it reads the spool
 * (store_upload_spool), or else is a copy of what was written so far, and a session of several
 * parts is then completed by it and takes no more bytes. */
int store_upload_reader(store_upload *u);
/* Keeps what a session is written readable while it is written, for readers of a growing file
 * (a mirror fill's clients): the filesystem mode always does; with storage.s3 the bytes are also
 * spooled to an unlinked local file. */
int store_upload_spool(store_upload *u);
/* True when store_upload_reader may be called while bytes are still written. */
bool store_upload_growing(const store_upload *u);
/* Persists the hash state so a later request resumes without re-reading (end of a PATCH). */
int store_upload_save(store_upload *u);
/* Undoes what this open wrote (a refused request): the session is back at its size when opened. */
void store_upload_rollback(store_upload *u);
/* Verifies the content against digest, commits the blob, links it to the repo and ends the
 * session. On digest mismatch the session is ended too and -BERR_DIGEST_INVALID returned. */
int store_upload_finish(store_upload *u, const char *digest);
/* The digest of what the session holds so far (sha256), without ending it. */
int store_upload_digest(store_upload *u, char *out);
/* Verifies the content against digest and places it as a blob file without recording it (see
 * store_new_blob); ends the session. */
int store_upload_place(store_upload *u, const char *digest, store_new_blob *out);
/* The same for a small in-memory blob (sha256). */
int store_blob_place_mem(store *s, const void *data, size_t len, store_new_blob *out);
/* Ends the session and deletes its data. */
int store_upload_cancel(store_upload *u);
void store_upload_close(store_upload *u);
/* Removes sessions not touched for max_age seconds; returns how many. */
int store_upload_purge(store *s, int64_t max_age);

/* ---- manifests, tags, referrers, catalog ---- */
/* ref is a tag or a digest. -BERR_MANIFEST_UNKNOWN when absent. */
int store_manifest_get(store *s, const char *repo, const char *ref, store_manifest *out);
void store_manifest_free(store_manifest *m);
int store_manifest_put(store *s, const store_manifest_put_req *req);
int store_manifest_delete(store *s, const char *repo, const char *digest);
int store_tag_delete(store *s, const char *repo, const char *tag);
int store_tag_checked(store *s, const char *repo, const char *tag);
int store_repo_exists(store *s, const char *repo);
/* -BERR_NAME_UNKNOWN when the repository does not exist. */
int store_tags_list(store *s, const char *repo, const char *last, long n, store_list *out);
int store_catalog(store *s, const char *last, long n, store_list *out);
void store_list_free(store_list *l);
int store_referrers(store *s, const char *repo, const char *digest, const char *artifact_type,
                    store_referrer_list *out);
void store_referrer_list_free(store_referrer_list *l);

/* ---- Helm charts: a view over chart manifests (src/helm/) ---- */
typedef struct {
    char *repo, *tag, *entry; /* entry: the index.yaml entry as JSON */
    char *yaml;               /* and as an index.yaml list item */
    char digest[DIGEST_STR_MAX];
} store_chart;
typedef struct {
    store_chart *items;
    size_t n;
} store_chart_list;
/* Tagged chart manifests of repositories whose names start with prefix (unordered). */
int store_charts(store *s, const char *prefix, store_chart_list *out);
/* The same for one repository. */
int store_charts_repo(store *s, const char *repo, store_chart_list *out);
void store_chart_list_free(store_chart_list *l);
/* The chart change log (any process's changes): its newest sequence number, and the oldest it
 * still holds (a reader that saw less than oldest - 1 has missed changes). */
int store_charts_gen(store *s, int64_t *latest, int64_t *oldest);
/* Repositories starting with prefix whose charts changed after sequence number since. */
int store_charts_changes(store *s, int64_t since, const char *prefix, store_list *out);
/* The tagged manifests (indexes) of repo that list digest among their manifests, from the
 * metadata's references (one indexed query, whatever the number of tags). */
int store_manifest_parents(store *s, const char *repo, const char *digest, store_list *out);

/* ---- mirror space (store/evict.c) ---- */
typedef struct {
    const char *repo;
    const char *digest;
    int64_t when; /* ms */
} store_access;
/* Marks a repository as mirrored content (read-only, evictable). */
int store_repo_mark_mirror(store *s, const char *repo);
/* Records last-access times of manifests, in one batch (never per request). */
int store_touch(store *s, const store_access *a, size_t n);
/* Evicts least recently used mirrored images until mirrored content uses at most max_bytes,
 * after every mirrored image of a repository under idle_prefix ("<prefix>/...", NULL: any) not
 * used for idle_ms (0: none expire; proxy.ttl). Manifests of repositories matching a pin pattern
 * (fnmatch) stay, with everything they reference; content pushed to local repositories is never
 * touched. */
typedef struct {
    uint64_t max_bytes;
    int64_t idle_ms;
    const char *idle_prefix;
    const char *const *pins;
    size_t npins;
    size_t manifests_evicted, manifests_expired, blobs_evicted;
    uint64_t bytes_before, bytes_after;
} store_evict_opts;
int store_evict(store *s, store_evict_opts *o);

/* ---- maintenance (store/gc.c, store/fsck.c) ---- */
typedef struct {
    int64_t grace_s; /* keep content younger than this */
    bool dry_run;
    size_t manifests_removed, blobs_removed, files_removed;
    uint64_t bytes_removed;
} store_gc_opts;
int store_gc(store *s, store_gc_opts *opts);
/* Re-hashes every blob and checks every reference; prints each problem; returns the count. */
int store_fsck(store *s, long *problems);

/* ---- event notifications (src/notify/, docs/notifications.md) ----
 * When notifications endpoints are configured, every change below writes its event row in the
 * transaction of the change itself (a push, mount, delete, mirror fill, chart upload or delete,
 * margo package push, bundle import, eviction), so an event exists exactly when its change
 * committed; a pull writes its own row (store_event_pull). src/notify/ delivers the rows. */

/* Whom and what this thread's store calls act for, copied into every event they write: set by the
 * HTTP server before each handler step, by a command for its own work; NULL clears it. action,
 * when set, names the whole process instead of the API call ("bundle.import"). */
typedef struct {
    const char *actor, *request_id, *addr, *host, *method, *useragent, *action;
} store_event_ctx;
void store_event_context(const store_event_ctx *ctx);

/* Turns event writing on for this process: changes write events; pulls too when `pulls`;
 * pushed manifests carry their references when `refs`. source_addr and instance fill every
 * event's source. Set once, before the store is used. */
void store_events_enable(bool on, bool pulls, bool refs, const char *source_addr,
                         const char *instance);
bool store_events_on(void);
/* A pull answered (a manifest or blob GET): one event row, when pulls are wanted; failures are
 * logged, never returned (the pull itself succeeded). tag may be NULL. */
void store_event_pull(store *s, const char *repo, const char *digest, const char *media_type,
                      uint64_t size, const char *tag);
/* An event that reports no change of the store (a trust denial: "trust.deny.pull"...), in its
 * own transaction, when events are on; failures are logged. tag and media_type may be NULL. */
void store_event_note(store *s, const char *action, const char *repo, const char *digest,
                      const char *media_type, uint64_t size, const char *tag);

/* One stored event, for delivery. */
typedef struct {
    int64_t seq, created, size;
    char *uuid, *action, *repo, *digest, *media_type, *tag;
    char *context; /* JSON: {"request":{...},"actor":{...},"source":{...}[,"fromRepository"]} */
    char *refs;    /* JSON array of descriptors, or NULL */
} store_event;
typedef struct {
    store_event *items;
    size_t n;
} store_event_list;
void store_event_list_free(store_event_list *l);
/* At most limit events after seq `after`, oldest first. */
int store_events_read(store *s, int64_t after, int limit, store_event_list *out);
/* An endpoint's cursor: the last seq it acknowledged (a new endpoint starts at 0). */
int store_event_cursor(store *s, const char *endpoint, int64_t *seq);
int store_event_cursor_set(store *s, const char *endpoint, int64_t seq);
/* Events after `after`: how many (*count), and when more than keep, the seq up to which the
 * oldest must go for keep to remain (*drop_to; else `after`). */
int store_events_backlog(store *s, int64_t after, int64_t keep, int64_t *count, int64_t *drop_to);
/* Removes the events up to seq (every endpoint has them). */
int store_events_prune(store *s, int64_t upto);

#endif
