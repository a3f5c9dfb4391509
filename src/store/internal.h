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
    /* a named lease shared by every process on the metadata (a mirror fill): taken or renewed
     * (owner) until `until` when free, expired or already owner's; -BERR_CONFLICT when another
     * owner holds it */
    int (*lease_take)(store_meta *m, const char *key, const char *owner, int64_t until,
                      int64_t now);
    int (*lease_drop)(store_meta *m, const char *key, const char *owner);
    /* event notifications (store.h): a pull's event in its own transaction, and delivery */
    int (*event_pull)(store_meta *m, const char *repo, const char *digest, const char *media_type,
                      uint64_t size, const char *tag);
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

/* blobfs: the files (or, with storage.s3, the objects) */
typedef struct s3 s3;
typedef struct {
    char *root;
    const store_blob_source *ext; /* blobs kept elsewhere (bundle serve), or NULL */
    s3 *s3;                       /* storage.s3: blobs in a bucket, or NULL */
} blobfs;

/* the object key of a blob in S3 mode: blobs/<algo>/<2 hex>/<hex> */
void blobfs_key(const char *digest, char *out, size_t outlen);
/* size of a stored blob's file or object; -BERR_BLOB_UNKNOWN when absent */
int blobfs_size(const blobfs *b, const char *digest, uint64_t *size);
/* hashes a stored blob with algo (got, its size); where names the file or object read */
int blobfs_hash(const blobfs *b, const char *digest, digest_algo algo, char *got, uint64_t *size,
                char *where, size_t wlen);
/* S3 mode: every blob object (trash false) or trashed one (true) with its age, ms */
int blobfs_each(const blobfs *b, bool trash,
                int (*cb)(void *arg, const char *digest, int64_t mtime), void *arg);
/* S3 mode: puts a trashed blob back */
int blobfs_restore(const blobfs *b, const char *digest);

/* <root>/blobs/<algo>/<2 hex>/<hex> */
void blobfs_path(const blobfs *b, const char *digest, char *out, size_t outlen);
/* Moves a verified file into place (fsyncs the directory); keeps an existing copy. */
int blobfs_place(const blobfs *b, const char *src, const char *digest);
/* Moves a verified file into place before its commit, outside the metadata lock (the fsyncs
 * then run in parallel with other commits): *placed says whether it did; when the blob already
 * exists, src stays and the commit's place step resolves it. A placed file without a row is an
 * orphan that gc removes only once it is older than the grace period. */
int blobfs_preplace(const blobfs *b, const char *src, const char *digest, bool *placed);
bool blobfs_exists(const blobfs *b, const char *digest);
/* Moves a blob to <root>/trash/ (inside a gc transaction) and removes it (after commit). */
int blobfs_trash(const blobfs *b, const char *digest);
int blobfs_trash_purge(const blobfs *b, const char *digest);
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
    int64_t quota;        /* storage.quota (0: none) */
    _Atomic int64_t used; /* bytes of blobs, refreshed by store_refresh_usage, raised by commits */
    size_t chunk;         /* S3 mode: multipart part size */
    bool redirect;        /* S3 mode: blob GETs may answer with a presigned URL */
    long redirect_expiry; /* seconds */
};

/* S3 mode (store/s3mode.c): the store functions of store.c call these when s->fs.s3 is set. */
int s3m_open(store *s, const config *cfg);
int s3m_recover_trash(store *s);
int s3m_check_writable(store *s);
int s3m_blob_fetch(store *s, const char *digest, uint64_t size, store_blob *out);
int s3m_upload_create(store *s, const char *repo, digest_algo algo, const char *uuid);
int s3m_upload_open(store *s, const char *repo, const char *uuid, store_upload **out);
int s3m_upload_write(store_upload *u, const void *data, size_t len);
int s3m_upload_reader(store_upload *u);
int s3m_upload_spool(store_upload *u);
int s3m_upload_save(store_upload *u);
void s3m_upload_rollback(store_upload *u);
/* verifies and puts the blob object in place (placed: it was absent and is now there) */
int s3m_upload_verify_place(store_upload *u, const char *digest, bool *placed);
/* inside the commit's transaction: the object is there, or is put there again */
int s3m_upload_commit_place(store_upload *u, const char *digest);
/* ends the session: its objects, multipart upload and lease */
void s3m_upload_remove(store_upload *u);
void s3m_upload_close(store_upload *u);
int s3m_upload_purge(store *s, int64_t max_age);
int s3m_blob_place_mem(store *s, const void *data, size_t len, const char *digest);

#endif
