/*
 * bundle/layout: reads an OCI image layout bundle (a tar, plain, gzip or zstd, or a directory)
 * and checks it whole before anything is done with it: every blob is hashed and compared with
 * its name (for a plain tar, its data offset is recorded so it can be served in place), index.json
 * is parsed, and every manifest it names must be in the bundle with everything it references.
 * The result is a plan: the manifests to record, children before the indexes that list them and
 * tagged artifacts before their referrers, each with its repository and tag (from
 * org.opencontainers.image.ref.name, or io.berth.bundle.repository for referrers).
 */
#include "bundle/layout.h"
#include "util/err.h"
#include "util/file.h"
#include "util/ref.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ANN_REF "org.opencontainers.image.ref.name"
#define ANN_REPO "io.berth.bundle.repository"
#define ANN_INDEX "io.berth.bundle.index"
#define KEEP_MAX ((size_t)4 << 20) /* blobs up to this size that look like JSON stay in memory */
#define KEEP_TOTAL ((size_t)512 << 20)

/* "blobs/<algo>/<hex>" (after an optional "./") as a digest; false for anything else. */
bool layout_blob_name(const char *name, char *digest)
{
    if (!strncmp(name, "./", 2)) name += 2;
    if (strncmp(name, "blobs/", 6)) return false;
    const char *algo = name + 6, *slash = strchr(algo, '/');
    if (!slash || strchr(slash + 1, '/')) return false;
    snprintf(digest, DIGEST_STR_MAX, "%.*s:%s", (int)(slash - algo), algo, slash + 1);
    return digest_parse(digest, NULL) == 0;
}

void layout_blob_path(const char *digest, char *out, size_t len)
{
    const char *colon = strchr(digest, ':');
    snprintf(out, len, "blobs/%.*s/%s", (int)(colon - digest), digest, colon + 1);
}

void layout_free(bundle *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->v[i].mem);
    free(b->v);
    json_decref(b->map);
    json_decref(b->index);
    memset(b, 0, sizeof *b);
}

bblob *layout_find(const bundle *b, const char *digest)
{
    json_t *i = json_object_get(b->map, digest);
    return i ? &b->v[json_integer_value(i)] : NULL;
}

static bblob *add_blob(bundle *b, const char *digest, uint64_t size)
{
    if (layout_find(b, digest)) return NULL; /* a second copy: ignored */
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        bblob *n = realloc(b->v, cap * sizeof *n);
        if (!n) return NULL;
        b->v = n;
        b->cap = cap;
    }
    bblob *x = &b->v[b->n];
    memset(x, 0, sizeof *x);
    snprintf(x->digest, sizeof x->digest, "%s", digest);
    x->size = size;
    x->offset = -1;
    json_object_set_new(b->map, digest, json_integer((json_int_t)b->n));
    b->n++;
    return x;
}

/* Hashes len bytes from the reader (or the file fd at off) into x, keeping small JSON. */
int layout_hash_blob(bundle *b, bblob *x, tar_reader *tr, int fd, int64_t off, char *buf)
{
    digest_algo algo;
    digest_parse(x->digest, &algo);
    digest_ctx ctx;
    digest_init(&ctx, algo);
    bool keep = x->size <= KEEP_MAX && b->kept + x->size <= KEEP_TOTAL;
    char *mem = keep ? malloc(x->size + 1) : NULL;
    uint64_t got = 0;
    for (;;) {
        long n;
        if (tr) {
            n = tar_reader_read(tr, buf, COPY_BUF);
        } else {
            size_t want = x->size - got < COPY_BUF ? (size_t)(x->size - got) : COPY_BUF;
            n = want ? (long)pread(fd, buf, want, (off_t)(off + (int64_t)got)) : 0;
            if (n < 0) n = berr_set(BERR_IO, "%s: %s", b->path, strerror(errno));
        }
        if (n < 0) {
            free(mem);
            return (int)n;
        }
        if (n == 0) break;
        if (got + (uint64_t)n > x->size) break;
        digest_update(&ctx, buf, (size_t)n);
        if (mem) memcpy(mem + got, buf, (size_t)n);
        got += (uint64_t)n;
    }
    char have[DIGEST_STR_MAX];
    digest_final(&ctx, have);
    if (got != x->size || strcmp(have, x->digest)) {
        free(mem);
        return berr_set(BERR_DIGEST_INVALID,
                        "%s: blob %s is damaged (%llu of %llu bytes, content hashes to %s): the "
                        "bundle was truncated or tampered with",
                        b->path, x->digest, (unsigned long long)got, (unsigned long long)x->size,
                        have);
    }
    if (mem && (x->size == 0 || mem[0] != '{')) {
        free(mem);
        mem = NULL;
    }
    if (mem) {
        mem[x->size] = '\0';
        x->mem = mem;
        b->kept += x->size;
    }
    b->bytes += x->size;
    return 0;
}

static int read_small(tar_reader *tr, const char *what, char **out)
{
    size_t cap = 65536, len = 0;
    char *s = malloc(cap);
    for (;;) {
        if (!s) return berr_set(BERR_INTERNAL, "out of memory");
        if (len + 1 >= cap) {
            if (cap >= ((size_t)16 << 20)) {
                free(s);
                return berr_set(BERR_BAD_REQUEST, "%s is too large", what);
            }
            char *n = realloc(s, cap *= 2);
            if (!n) free(s);
            s = n;
            continue;
        }
        long n = tar_reader_read(tr, s + len, cap - len - 1);
        if (n < 0) {
            free(s);
            return (int)n;
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    s[len] = '\0';
    *out = s;
    return 0;
}

/* First pass over a tar bundle: every blob hashed as it streams by (unless hash is false), for a
 * plain tar its data offset recorded, index.json parsed. */
static int scan_tar(bundle *b, int fd, bool hash)
{
    tar_reader *tr;
    int rc = tar_reader_open(fd, b->path, &tr);
    if (rc < 0) return rc;
    char *buf = malloc(COPY_BUF);
    if (!buf) rc = berr_set(BERR_INTERNAL, "out of memory");
    tar_entry e;
    bblob *prev = NULL;
    bool layout = false;
    while (rc == 0 && (rc = tar_reader_next(tr, &e)) == 1) {
        rc = 0;
        if (prev) { /* the previous entry's data ends where this header starts, 512-aligned */
            prev->offset = e.header_pos - (int64_t)((prev->size + 511) / 512 * 512);
            prev = NULL;
        }
        b->compressed = e.compressed;
        char digest[DIGEST_STR_MAX];
        const char *name = strncmp(e.name, "./", 2) ? e.name : e.name + 2;
        if (e.type == 'f' && layout_blob_name(e.name, digest)) {
            bblob *x = add_blob(b, digest, e.size);
            if (!x) continue;
            x->header_pos = e.header_pos;
            if (hash) rc = layout_hash_blob(b, x, tr, -1, 0, buf);
            prev = x;
        } else if (e.type == 'f' && !strcmp(name, "index.json")) {
            char *s = NULL;
            if ((rc = read_small(tr, "index.json", &s)) == 0) {
                json_decref(b->index);
                b->index = json_loads(s, 0, NULL);
                free(s);
                if (!b->index)
                    rc = berr_set(BERR_BAD_REQUEST, "%s: index.json is not JSON", b->path);
            }
        } else if (e.type == 'f' && !strcmp(name, "oci-layout")) {
            layout = true;
        }
    }
    if (rc == 0 && prev) prev->offset = e.header_pos - (int64_t)((prev->size + 511) / 512 * 512);
    if (rc < 0 && rc != -BERR_DIGEST_INVALID)
        rc = berr_rewrap(BERR_BAD_REQUEST, "the bundle is truncated or not a tar archive: ");
    if (rc == 0 && !layout) rc = berr_set(BERR_BAD_REQUEST, "%s: no oci-layout file", b->path);
    if (rc == 0 && !b->index) rc = berr_set(BERR_BAD_REQUEST, "%s: no index.json", b->path);
    free(buf);
    tar_reader_close(tr);
    return rc;
}

/* The same for an OCI layout directory: the blobs index.json reaches are hashed in place. */
static int scan_dir(bundle *b)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/index.json", b->path);
    size_t len;
    char *s = file_read_all(p, &len);
    if (!s) return berr_set(BERR_BAD_REQUEST, "%s: %s", p, strerror(errno));
    b->index = json_loadb(s, len, 0, NULL);
    free(s);
    if (!b->index) return berr_set(BERR_BAD_REQUEST, "%s is not JSON", p);
    return 0;
}

/* A blob of a directory bundle, hashed on first use. */
static bblob *dir_blob(bundle *b, const char *digest, char *buf, int *rc)
{
    bblob *x = layout_find(b, digest);
    if (x || *rc < 0) return x;
    char rel[DIGEST_STR_MAX + 16], p[4400];
    layout_blob_path(digest, rel, sizeof rel);
    snprintf(p, sizeof p, "%s/%s", b->path, rel);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        if (fd >= 0) close(fd);
        return NULL;
    }
    x = add_blob(b, digest, (uint64_t)st.st_size);
    if (x) {
        x->offset = 0;
        x->ino = st.st_ino;
        x->ctime = st.st_ctim;
        *rc = layout_hash_blob(b, x, NULL, fd, 0, buf);
    }
    close(fd);
    return *rc < 0 ? NULL : x;
}

/* ---- the plan: what goes where, in which order ---- */

void layout_plan_free(plan *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].mt);
        free(p->v[i].blobs);
    }
    free(p->v);
    json_decref(p->walked);
    p->walked = NULL;
}

/* Plans manifest m (its blobs: the nblobs of blobs, taken over) for repo and tag. */
static int plan_add(plan *p, const char *repo, const char *tag, bblob *m, const char *mt,
                    bblob **blobs, size_t nblobs)
{
    for (size_t i = 0; i < p->n; i++) /* once per repository, tag and manifest */
        if (p->v[i].m == m && !strcmp(p->v[i].repo, repo) && !strcmp(p->v[i].tag, tag)) {
            free(blobs);
            return 0;
        }
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        step *n = realloc(p->v, cap * sizeof *n);
        if (!n) {
            free(blobs);
            return berr_set(BERR_INTERNAL, "out of memory");
        }
        p->v = n;
        p->cap = cap;
    }
    step *s = &p->v[p->n++];
    snprintf(s->repo, sizeof s->repo, "%s", repo);
    snprintf(s->tag, sizeof s->tag, "%s", tag);
    s->m = m;
    s->mt = strdup(mt ? mt : "");
    s->keep[0] = '\0';
    s->blobs = blobs;
    s->nblobs = nblobs;
    return 0;
}

/* Checks that manifest digest and everything below it is in the bundle, and plans it (children
 * first). */
static int walk(bundle *b, plan *p, const char *repo, const char *tag, const char *digest,
                const char *mt, char *buf, int depth)
{
    int rc = 0;
    bblob *m = b->dir ? dir_blob(b, digest, buf, &rc) : layout_find(b, digest);
    if (rc < 0) return rc;
    if (!m)
        return berr_set(BERR_BAD_REQUEST, "the bundle is incomplete: manifest %s (%s) is missing",
                        digest, repo);
    if (!m->mem)
        return berr_set(BERR_BAD_REQUEST, "%s: manifest %s is not a JSON manifest", repo, digest);
    if (depth > 8) return berr_set(BERR_BAD_REQUEST, "%s: manifests nest too deep", repo);
    /* a manifest listed again (an index naming one child many times, at many levels) was
     * checked and planned the first time: walking it again would make the work exponential */
    char key[700];
    snprintf(key, sizeof key, "%s\n%s", repo, digest);
    if (!tag[0] && json_object_get(p->walked, key)) return 0;
    if (!tag[0] && (!p->walked && !(p->walked = json_object())))
        return berr_set(BERR_INTERNAL, "out of memory");
    if (!tag[0]) json_object_set_new(p->walked, key, json_true());
    m->used = m->manifest = true;
    json_t *j = json_loads(m->mem, 0, NULL);
    if (!j) return berr_set(BERR_BAD_REQUEST, "%s: manifest %s is not JSON", repo, digest);
    const char *own = json_string_value(json_object_get(j, "mediaType"));
    if (own) mt = own;
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(j, "manifests"), i, d)
    {
        const char *cd = json_string_value(json_object_get(d, "digest"));
        const char *cmt = json_string_value(json_object_get(d, "mediaType"));
        rc = cd ? walk(b, p, repo, "", cd, cmt, buf, depth + 1)
                : berr_set(BERR_BAD_REQUEST, "%s: an index entry without digest", digest);
        if (rc < 0) break;
    }
    json_t *descs[2] = {json_object_get(j, "config"), json_object_get(j, "layers")};
    size_t cap =
        json_array_size(descs[1]) + (json_is_array(descs[0]) ? json_array_size(descs[0]) : 1);
    bblob **found = calloc(cap + 1, sizeof *found);
    size_t nfound = 0;
    if (!found) rc = berr_set(BERR_INTERNAL, "out of memory");
    for (int k = 0; rc == 0 && k < 2; k++) {
        json_t *list = json_is_array(descs[k]) ? descs[k] : json_pack("[O]", descs[k]);
        if (!descs[k]) list = json_array();
        json_array_foreach(list, i, d)
        {
            const char *bd = json_string_value(json_object_get(d, "digest"));
            if (json_array_size(json_object_get(d, "urls"))) continue; /* foreign layer */
            bblob *x = bd ? (b->dir ? dir_blob(b, bd, buf, &rc) : layout_find(b, bd)) : NULL;
            if (rc < 0) break;
            if (!x) {
                rc = berr_set(BERR_BAD_REQUEST,
                              "the bundle is incomplete: blob %s of %s (%s) is missing",
                              bd ? bd : "?", digest, repo);
                break;
            }
            x->used = true;
            found[nfound++] = x;
        }
        if (list != descs[k]) json_decref(list);
    }
    if (rc == 0)
        rc = plan_add(p, repo, tag, m, mt, found, nfound); /* takes found over */
    else
        free(found);
    json_decref(j);
    return rc;
}

/* index.json -> plan. Entries name their repository with ref.name (host/repo:tag, or repo:tag)
 * or, for referrers, io.berth.bundle.repository; a bare tag needs default_repo. */
static int make_plan(bundle *b, plan *p, const char *default_repo)
{
    char *buf = malloc(COPY_BUF);
    if (!buf) return berr_set(BERR_INTERNAL, "out of memory");
    int rc = 0;
    size_t i;
    json_t *e;
    /* tagged entries first, referrers after (their subjects are then in place) */
    for (int pass = 0; pass < 2 && rc == 0; pass++)
        json_array_foreach(json_object_get(b->index, "manifests"), i, e)
        {
            json_t *ann = json_object_get(e, "annotations");
            const char *name = json_string_value(json_object_get(ann, ANN_REF));
            const char *repo_ann = json_string_value(json_object_get(ann, ANN_REPO));
            const char *digest = json_string_value(json_object_get(e, "digest"));
            const char *mt = json_string_value(json_object_get(e, "mediaType"));
            if ((pass == 0) != (name != NULL)) continue;
            if (!digest) {
                rc = berr_set(BERR_BAD_REQUEST, "index.json entry %zu has no digest", i);
                break;
            }
            char repo[600] = "", tag[REF_TAG_MAX + 1] = "";
            if (name) {
                const char *at = strchr(name, '@'), *colon = strrchr(name, ':');
                if (colon && strchr(colon, '/')) colon = NULL;
                if (at) colon = NULL;
                size_t nl = at ? (size_t)(at - name) : colon ? (size_t)(colon - name) : 0;
                if (!at && !colon) { /* a bare tag, as other tools write it */
                    snprintf(tag, sizeof tag, "%s", name);
                    snprintf(repo, sizeof repo, "%s", default_repo ? default_repo : "");
                } else {
                    char full[600];
                    snprintf(full, sizeof full, "%.*s", (int)nl, name);
                    ref_store_name(full, repo, sizeof repo);
                    if (colon) snprintf(tag, sizeof tag, "%s", colon + 1);
                }
                if (!repo[0]) {
                    rc = berr_set(BERR_BAD_REQUEST,
                                  "index.json entry %zu names only a tag (%s): give --repository",
                                  i, name);
                    break;
                }
            } else if (repo_ann) {
                snprintf(repo, sizeof repo, "%s", repo_ann);
            } else {
                continue; /* an untagged manifest nothing names: nothing to import it as */
            }
            if (!ref_name_valid(repo) || (tag[0] && !ref_tag_valid(tag))) {
                rc = berr_set(BERR_BAD_REQUEST, "index.json entry %zu: invalid name %s%s%s", i,
                              repo, tag[0] ? ":" : "", tag);
                break;
            }
            if ((rc = walk(b, p, repo, tag, digest, mt, buf, 0)) < 0) break;
            const char *orig = json_string_value(json_object_get(ann, ANN_INDEX));
            if (orig && p->n && p->v[p->n - 1].m == layout_find(b, digest))
                snprintf(p->v[p->n - 1].keep, DIGEST_STR_MAX, "%s", orig);
        }
    free(buf);
    if (rc == 0 && p->n == 0) rc = berr_set(BERR_BAD_REQUEST, "the bundle names no artifact");
    return rc;
}

/* A plain tar served in place: each blob hashed at its data offset. */
static int hash_in_place(bundle *b, int fd)
{
    if (b->compressed)
        return berr_set(BERR_BAD_REQUEST,
                        "%s is compressed: serving in place needs a plain .tar or a directory "
                        "(decompress it, or use bundle import)",
                        b->path);
    char *buf = malloc(COPY_BUF);
    int rc = buf ? 0 : berr_set(BERR_INTERNAL, "out of memory");
    for (size_t i = 0; rc == 0 && i < b->n; i++)
        rc = layout_hash_blob(b, &b->v[i], NULL, fd, b->v[i].offset, buf);
    free(buf);
    return rc;
}

int layout_open(const char *path, bundle *b, plan *p, const char *default_repo, bool in_place,
                int *fdp)
{
    memset(b, 0, sizeof *b);
    memset(p, 0, sizeof *p);
    b->path = path;
    b->map = json_object();
    *fdp = -1;
    struct stat st;
    if (stat(path, &st) < 0) return berr_set(BERR_BAD_REQUEST, "%s: %s", path, strerror(errno));
    int rc;
    if (S_ISDIR(st.st_mode)) {
        b->dir = true;
        rc = scan_dir(b);
    } else {
        *fdp = open(path, O_RDONLY | O_CLOEXEC);
        if (*fdp < 0 || fstat(*fdp, &b->st) < 0)
            return berr_set(BERR_BAD_REQUEST, "%s: %s", path, strerror(errno));
        rc = scan_tar(b, *fdp, !in_place);
        if (rc == 0 && in_place) rc = hash_in_place(b, *fdp);
    }
    if (rc == 0) rc = make_plan(b, p, default_repo);
    return rc;
}
