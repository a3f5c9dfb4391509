/*
 * store/internal.h: the seams inside the store. store_meta_ops is the metadata vtable, implemented
 * once in SQL by store/meta_sql.c over a driver (store/sqldrv.h: SQLite or PostgreSQL); blobfs is
 * the file half. Only the store files include this.
 */
#ifndef BERTH_STORE_INTERNAL_H
#define BERTH_STORE_INTERNAL_H

#include "store/s3.h"
#include "store/store.h"

#include <pthread.h>

/* Appends a copy of v to l (the metadata backends' lists). */
int store_list_add(store_list *l, const char *v);

/* Runs inside a metadata write transaction; returns 0 or a negative berr (rolls back). */
typedef int (*store_place_fn)(void *arg);

typedef struct store_meta store_meta;

typedef struct {
    void (*close)(store_meta *m);
    /* size of a blob linked to repo (repo NULL: the blob row itself). -BERR_BLOB_UNKNOWN */
    int (*blob_lookup)(store_meta *m, const char *repo, const char *digest, uint64_t *size);
    /* Records the blob and links it to repo, calling place() inside the transaction. */
    int (*blob_commit)(store_meta *m, const char *repo, const char *digest, uint64_t size,
                       store_place_fn place, void *arg);
    int (*blob_link)(store_meta *m, const char *repo, const char *from, const char *digest);
    /* links a stored blob into repo when a manifest of repo lists it (else BLOB_UNKNOWN) */
    int (*blob_link_listed)(store_meta *m, const char *repo, const char *digest);
    int (*blob_unlink)(store_meta *m, const char *repo, const char *digest);
    int (*manifest_get)(store_meta *m, const char *repo, const char *ref, store_manifest *out);
    int (*manifest_put)(store_meta *m, const store_manifest_put_req *req);
    int (*manifest_delete)(store_meta *m, const char *repo, const char *digest);
    int (*tag_delete)(store_meta *m, const char *repo, const char *tag);
    /* Records that a mirrored tag was just checked upstream. */
    int (*tag_checked)(store_meta *m, const char *repo, const char *tag);
    /* 0 when the repository exists, -BERR_NAME_UNKNOWN when not. */
    int (*repo_exists)(store_meta *m, const char *repo);
    int (*tags_list)(store_meta *m, const char *repo, const char *last, long n, store_list *out);
    int (*catalog)(store_meta *m, const char *last, long n, store_list *out);
    int (*referrers)(store_meta *m, const char *repo, const char *digest, const char *atype,
                     store_referrer_list *out);
    /* gc: removes untagged, unreferenced manifests older than cutoff (repeatedly, so an index's
     * children follow it); then lists blob candidates. dry_run rolls everything back. */
    int (*gc_manifests)(store_meta *m, int64_t cutoff, bool dry_run, size_t *removed,
                        store_list *blob_candidates);
    /* Re-checks one candidate and removes its rows, calling trash() inside the transaction. */
    int (*gc_blob_remove)(store_meta *m, const char *digest, int64_t cutoff, store_place_fn trash,
                          void *arg, bool *removed);
    /* Runs fn while holding the metadata write lock (fn may read through other calls). */
    int (*locked)(store_meta *m, store_place_fn fn, void *arg);
    /* mirror space (store/evict.c) */
    int (*repo_mark_mirror)(store_meta *m, const char *repo);
    int (*touch)(store_meta *m, const store_access *a, size_t n);
    int (*mirror_usage)(store_meta *m, uint64_t *bytes);
    int (*usage)(store_meta *m, uint64_t *bytes); /* all blobs */
    /* how many blobs */
    int (*blob_count)(store_meta *m, uint64_t *n);
    /* "repo@digest", least recently used first; before > 0: only those last used (or stored,
     * when never used) before it, ms */
    int (*mirror_lru)(store_meta *m, size_t max, int64_t before, store_list *out);
    int (*mirror_evict)(store_meta *m, const char *repo, const char *digest, store_list *freed);
    int (*mirror_blob_remove)(store_meta *m, const char *digest, store_place_fn trash, void *arg,
                              bool *removed);
    /* fsck walkers: cb returns 0 to go on. */
    int (*each_blob)(store_meta *m, int (*cb)(void *arg, const char *digest, uint64_t size),
                     void *arg);
    int (*each_manifest)(store_meta *m,
                         int (*cb)(void *arg, const char *repo, const char *digest,
                                   const char *content, size_t size),
                         void *arg);
    /* Reports references whose target is missing (refs, tags, links); cb per problem. */
    int (*check_refs)(store_meta *m, void (*cb)(void *arg, const char *problem), void *arg);
    /* Helm charts: tagged chart manifests of repositories starting with prefix (exact: of the
     * repository prefix) */
    int (*charts)(store_meta *m, const char *prefix, bool exact, store_chart_list *out);
    /* the chart change log's newest and oldest sequence numbers (0 when empty) */
    int (*charts_gen)(store_meta *m, int64_t *latest, int64_t *oldest);
    /* repositories starting with prefix whose charts changed after sequence number since */
    int (*charts_changes)(store_meta *m, int64_t since, const char *prefix, store_list *out);
    int (*manifest_parents)(store_meta *m, const char *repo, const char *digest, store_list *out);
    /* a named lease shared by every process on the metadata (a mirror fill): taken or renewed
     * (owner) until `until` when free, expired or already owner's; -BERR_CONFLICT when another
     * owner holds it */
    int (*lease_take)(store_meta *m, const char *key, const char *owner, int64_t until,
                      int64_t now);
    int (*lease_drop)(store_meta *m, const char *key, const char *owner);
    /* event notifications (store.h): an event that reports no change (a pull, a trust denial)
     * in its own transaction, and delivery */
    int (*event_note)(store_meta *m, const char *action, const char *repo, const char *digest,
                      const char *media_type, uint64_t size, const char *tag);
    int (*events_read)(store_meta *m, int64_t after, int limit, store_event_list *out);
    int (*event_cursor)(store_meta *m, const char *endpoint, int64_t *seq);
    int (*event_cursor_set)(store_meta *m, const char *endpoint, int64_t seq);
    int (*events_backlog)(store_meta *m, int64_t after, int64_t keep, int64_t *count,
                          int64_t *drop_to);
    int (*events_prune)(store_meta *m, int64_t upto);
} store_meta_ops;

struct store_meta {
    const store_meta_ops *ops;
};

/* Event notifications (store/meta_sql.c): turns event writing on or off for this process from
 * cfg->notify (store_open calls it); store_events_pulls: whether an endpoint wants pulls. */
void store_events_configure(const config *cfg);
bool store_events_pulls(void);

/* SQLite (store/meta_sqlite.c): opens or creates the file and migrates the schema. */
int store_meta_sqlite_open(store_meta **out, const char *path);
/* PostgreSQL (store/meta_pg.c): loads libpq, connects and migrates the schema. */
int store_meta_pg_open(store_meta **out, const config_database *db);

/* ---- blob backends ----
 * Where blob bytes live is decided once, at store_open, by choosing a blob_backend_ops table:
 *   files   <root>/blobs/ on the local filesystem (store/blobfs.c)
 *   s3      objects in a bucket, upload sessions in the bucket too (store/s3mode.c)
 *   layout  read-only: blobs read in place from an OCI layout or a bundle archive (`bundle
 *           serve`), anything else (blobs the plan wrote) from files (store/blobfs.c)
 * store.c, gc.c, evict.c and fsck.c call only these operations (directly or through the
 * blobfs_* helpers below), never a backend by name. Every backend keeps the store's invariants:
 * a blob key or file holds verified bytes whole or is absent; it only appears by place/commit
 * and only leaves by trash (inside a metadata transaction) then trash_purge (after it). */
typedef struct s3 s3;
typedef struct blobfs blobfs;
/* Receives blob bytes; a negative return stops the read. */
typedef int (*blob_sink)(void *arg, const char *data, size_t len);
typedef struct {
    const char *name;
    unsigned caps; /* STORE_CAP_* the backend brings (store_caps adds the metadata's) */
    /* ---- lifecycle ---- */
    int (*init)(store *s, const config *cfg); /* connects (s->fs set up but for the backend's) */
    void (*close)(blobfs *b);
    /* under the metadata write lock at open: finishes or undoes gc removals cut by a crash */
    int (*recover)(store *s);
    int (*check_writable)(store *s); /* a probe write: 0 when writable */
    /* ---- open, read, serve ---- */
    /* A recorded blob of size bytes: a descriptor (fd, offset), or with serve and a remote
     * backend only its identity (out->remote set; read it with read or send the client to url). */
    int (*open)(store *s, const char *digest, uint64_t size, bool serve, store_blob *out);
    int (*read)(const blobfs *b, const char *digest, uint64_t off, uint64_t len, blob_sink sink,
                void *arg);
    int (*url)(store *s, const char *digest, char *url, size_t len); /* NULL: no redirects */
    /* ---- stat, hash, list ---- */
    /* size of a stored blob (size may be NULL); -BERR_BLOB_UNKNOWN when absent */
    int (*stat)(const blobfs *b, const char *digest, uint64_t *size);
    /* hashes a stored blob with algo (got, its size); where names the file or object read */
    int (*hash)(const blobfs *b, const char *digest, digest_algo algo, char *got, uint64_t *size,
                char *where, size_t wlen);
    /* the file or key a blob is stored at (for messages) */
    void (*where)(const blobfs *b, const char *digest, char *out, size_t len);
    /* every stored blob (trash false) or trashed one (true) with its age, ms; cb returns 0 to
     * go on */
    int (*each)(const blobfs *b, bool trash,
                int (*cb)(void *arg, const char *digest, int64_t mtime), void *arg);
    /* ---- place, trash ---- */
    /* a small verified blob from memory, outside the metadata lock (an orphan until its row) */
    int (*place_mem)(store *s, const void *data, size_t len, const char *digest);
    /* inside a metadata transaction: out of sight (kept in trash until trash_purge) */
    int (*trash)(const blobfs *b, const char *digest);
    int (*trash_purge)(const blobfs *b, const char *digest);
    /* ---- upload sessions (uuid checked by store.c) ---- */
    int (*upload_create)(store *s, const char *repo, digest_algo algo, const char *uuid);
    int (*upload_open)(store *s, const char *repo, const char *uuid, store_upload **out);
    int (*upload_write)(store_upload *u, const void *data, size_t len);
    int (*upload_reader)(store_upload *u);
    int (*upload_spool)(store_upload *u);
    bool (*upload_growing)(const store_upload *u);
    int (*upload_save)(store_upload *u);
    void (*upload_rollback)(store_upload *u);
    /* verifies the bytes against digest and puts the blob in place before its commit, outside
     * the metadata lock (placed: it was absent and is now there); a mismatch ends the session
     * with -BERR_DIGEST_INVALID */
    int (*upload_verify_place)(store_upload *u, const char *digest, bool *placed);
    /* inside the commit's transaction: the blob is there, or is put there again */
    int (*upload_commit_place)(store_upload *u, const char *digest, bool placed);
    void (*upload_remove)(store_upload *u); /* ends the session: its data goes */
    void (*upload_close)(store_upload *u);
    int (*upload_purge)(store *s, int64_t max_age);
} blob_backend_ops;

extern const blob_backend_ops blob_files_ops;  /* store/blobfs.c */
extern const blob_backend_ops blob_layout_ops; /* store/blobfs.c */
extern const blob_backend_ops blob_s3_ops;     /* store/s3mode.c */

struct blobfs {
    const blob_backend_ops *ops;
    char *root;
    const store_blob_source *ext; /* the layout backend's source (bundle serve), or NULL */
    s3 *s3;                       /* the s3 backend's bucket, or NULL */
};

/* the object key of a blob in S3 mode: blobs/<algo>/<2 hex>/<hex> */
void blobfs_key(const char *digest, char *out, size_t outlen);
/* <root>/blobs/<algo>/<2 hex>/<hex> */
void blobfs_path(const blobfs *b, const char *digest, char *out, size_t outlen);
/* The backend's operations for the store's maintenance (gc.c, evict.c, fsck.c). */
int blobfs_size(const blobfs *b, const char *digest, uint64_t *size);
int blobfs_hash(const blobfs *b, const char *digest, digest_algo algo, char *got, uint64_t *size,
                char *where, size_t wlen);
int blobfs_each(const blobfs *b, bool trash,
                int (*cb)(void *arg, const char *digest, int64_t mtime), void *arg);
bool blobfs_exists(const blobfs *b, const char *digest);
int blobfs_trash(const blobfs *b, const char *digest);
int blobfs_trash_purge(const blobfs *b, const char *digest);
/* files: moves a verified file into place (fsyncs the directory); keeps an existing copy. */
int blobfs_place(const blobfs *b, const char *src, const char *digest);
/* files: moves a verified file into place before its commit, outside the metadata lock (the
 * fsyncs then run in parallel with other commits): *placed says whether it did; when the blob
 * already exists, src stays and the commit's place step resolves it. A placed file without a
 * row is an orphan that gc removes only once it is older than the grace period. */
int blobfs_preplace(const blobfs *b, const char *src, const char *digest, bool *placed);
/* An I/O failure: -BERR_STORAGE_FULL when the disk (or quota) is full, else -BERR_IO. */
int blobfs_storage_err(const char *what, int e);
/* storage.quota: refuses bytes that would take the store past it. */
int store_quota_check(store *s, uint64_t more);
int fsync_dir(const char *dir);
int mkdir_p(const char *path);

struct store_upload {
    store *s;
    char dir[4096];
    char repo[256];
    digest_algo algo;
    int fd;
    uint64_t size;
    digest_ctx ctx;
    bool ctx_valid;   /* ctx covers exactly [0, size) */
    uint64_t flushed; /* writeback started up to here (sync_file_range) */
    char *stage;      /* bytes received after `size`, not yet written (store_upload_write) */
    size_t staged;
    uint64_t opened; /* size when opened: where a rollback returns */
    /* S3 mode (store/s3mode.c): the session lives in the bucket under uploads/<uuid>/ */
    char uuid[STORE_UUID_LEN + 1];
    char owner[48];      /* this open's hold on the session's lease ("upload <uuid>") */
    char mpu[S3_ID_MAX]; /* multipart upload of uploads/<uuid>/data; "" until the first part */
    char (*etags)[S3_ETAG_MAX];
    int nparts, cap_parts, saved_parts;
    char *buf; /* the tail: bytes after the last part (less than a part) */
    size_t blen, bcap;
    bool tail_loaded, dead;
    bool completed; /* the multipart upload was completed (read back): no more bytes */
    uint64_t tail_gen, tail_size; /* the saved tail object: uploads/<uuid>/tail-<gen> */
    uint64_t saved_size;
    int64_t renewed; /* when the lease was last renewed (ms) */
    int spool;       /* S3 mode: a local copy for readers of a growing upload, or -1 */
    void *inflight;  /* the part being uploaded in the background (s3mode.c) */
    pthread_t inflight_th;
    char *spare; /* a part-sized buffer to reuse */
    size_t spare_cap;
};

struct store {
    char *root;
    blobfs fs;
    store_meta *meta;
    bool meta_remote;     /* PostgreSQL: every metadata call is a network round trip */
    int64_t quota;        /* storage.quota (0: none) */
    _Atomic int64_t used; /* bytes of blobs, refreshed by store_refresh_usage, raised by commits */
    size_t chunk;         /* S3 mode: multipart part size */
    bool redirect;        /* S3 mode: blob GETs may answer with a presigned URL */
    long redirect_expiry; /* seconds */
};

#endif
