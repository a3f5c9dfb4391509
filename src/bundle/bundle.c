/*
 * bundle/bundle: `berth bundle create|import|serve`. A bundle is a plain OCI image layout, as a
 * tar (optionally gzip or zstd) or a directory: oci-layout, index.json, blobs/<algo>/<hex>.
 * index.json lists each artifact with org.opencontainers.image.ref.name = its original reference
 * (docker.io/library/nginx:1.27; repo:tag for an artifact given by URL), and each referrer
 * (signature, SBOM) with io.berth.bundle.repository naming where its subject lives.
 *
 * create streams every blob from the source registry into the archive, verifying each digest,
 * and renames the archive into place only when it is whole. import reads the bundle twice: the
 * first pass hashes every blob and checks that every manifest's references are in the bundle,
 * so nothing is written unless the whole bundle is good; the second pass writes the blobs (into
 * the store, or uploads them to a registry) and then the manifests, children before the indexes
 * that list them. serve verifies an uncompressed tar (or a directory) in place and serves it
 * read-only: its metadata goes to a temporary store whose blobs are byte ranges of the tar.
 */
#include "bundle/bundle.h"
#include "bundle/layout.h"
#include "helm/helm.h"
#include "margo/margo.h"
#include "registry/ingest.h"
#include "registry/registry.h"
#include "serve.h"
#include "store/store.h"
#include "trust/trust.h"
#include "util/err.h"
#include "util/file.h"
#include "util/log.h"
#include "util/ref.h"
#include "util/tar.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define ANN_REF "org.opencontainers.image.ref.name"
#define ANN_REPO "io.berth.bundle.repository"
#define ANN_INDEX "io.berth.bundle.index"

static bool is_index(const char *mt)
{
    return mt && (!strcmp(mt, MT_OCI_INDEX) || !strcmp(mt, MT_DOCKER_LIST));
}

/* ======================= create ======================= */

typedef struct {
    tar_writer *w;
    json_t *seen;    /* digests written */
    json_t *entries; /* index.json manifests */
    uint64_t bytes;
    size_t nblobs;
} creator;

static int put_mem(creator *c, const char *digest, const void *data, size_t len)
{
    if (json_object_get(c->seen, digest)) return 0;
    char name[DIGEST_STR_MAX + 16];
    layout_blob_path(digest, name, sizeof name);
    int rc = tar_writer_file(c->w, name, len);
    if (rc == 0) rc = tar_writer_write(c->w, data, len);
    if (rc == 0) {
        json_object_set_new(c->seen, digest, json_true());
        c->bytes += len;
        c->nblobs++;
    }
    return rc;
}

/* size bytes of fd (a fetched file whose digest is dg) as a blob of the bundle, once. */
static int put_file(creator *c, const char *dg, int fd, off_t size, const char *what)
{
    if (json_object_get(c->seen, dg)) return 0;
    char name[DIGEST_STR_MAX + 16];
    layout_blob_path(dg, name, sizeof name);
    int rc = tar_writer_file(c->w, name, (uint64_t)size);
    char buf[65536];
    for (off_t pos = 0; rc == 0 && pos < size;) {
        ssize_t n = pread(fd, buf, sizeof buf, pos);
        if (n <= 0) rc = berr_set(BERR_IO, "read %s", what);
        if (rc == 0) rc = tar_writer_write(c->w, buf, (size_t)n);
        pos += n > 0 ? n : 0;
    }
    if (rc == 0) {
        json_object_set_new(c->seen, dg, json_true());
        c->bytes += (uint64_t)size;
        c->nblobs++;
    }
    return rc;
}

static int to_tar(void *arg, const char *data, size_t len)
{
    return tar_writer_write(arg, data, len) < 0 ? -1 : 0;
}

static int put_remote(creator *c, rc_ref *r, json_t *desc)
{
    const char *digest = json_string_value(json_object_get(desc, "digest"));
    json_t *size = json_object_get(desc, "size");
    if (!digest || !json_is_integer(size) || json_integer_value(size) < 0)
        return berr_set(BERR_IO, "%s: a descriptor without digest or size", r->name);
    if (json_object_get(c->seen, digest)) return 0;
    if (json_array_size(json_object_get(desc, "urls"))) return 0; /* foreign: not distributable */
    uint64_t n = (uint64_t)json_integer_value(size);
    char name[DIGEST_STR_MAX + 16];
    layout_blob_path(digest, name, sizeof name);
    int rc = tar_writer_file(c->w, name, n);
    if (rc == 0) rc = rc_get_blob(r, digest, n, to_tar, c->w);
    if (rc == 0) {
        json_object_set_new(c->seen, digest, json_true());
        c->bytes += n;
        c->nblobs++;
    }
    return rc;
}

static void add_entry(creator *c, const char *mt, const char *digest, size_t size,
                      const char *artifact_type, json_t *ann)
{
    json_t *e =
        json_pack("{s:s,s:s,s:I}", "mediaType", mt, "digest", digest, "size", (json_int_t)size);
    if (artifact_type) json_object_set_new(e, "artifactType", json_string(artifact_type));
    if (ann) json_object_set_new(e, "annotations", ann);
    json_array_append_new(c->entries, e);
}

static int copy_manifest(creator *c, rc_ref *r, const char *digest, const char *body, size_t len,
                         int depth);
static int copy_cosign_sig(creator *c, rc_ref *r, const char *digest);

/* The referrers of digest in r's repository, each with everything it references. */
static int copy_referrers(creator *c, rc_ref *r, const char *digest, int depth)
{
    json_t *list;
    int rc = rc_referrers(r, digest, &list);
    if (rc < 0) return rc;
    size_t i;
    json_t *d;
    char repo[600];
    ref_store_name(r->name, repo, sizeof repo);
    json_array_foreach(list, i, d)
    {
        const char *rd = json_string_value(json_object_get(d, "digest"));
        if (!rd || json_object_get(c->seen, rd)) continue;
        rc_manifest mf;
        if ((rc = rc_get_manifest(r, rd, &mf)) < 0) break;
        rc = copy_manifest(c, r, rd, mf.body, mf.len, depth + 1);
        if (rc == 0)
            add_entry(c, mf.media_type, rd, mf.len,
                      json_string_value(json_object_get(d, "artifactType")),
                      json_pack("{s:s}", ANN_REPO, repo));
        rc_manifest_free(&mf);
        if (rc < 0) break;
    }
    json_decref(list);
    return rc;
}

/* A manifest's bytes, then what it references (blobs, child manifests) and its referrers. */
static int copy_manifest(creator *c, rc_ref *r, const char *digest, const char *body, size_t len,
                         int depth)
{
    if (depth > 8) return berr_set(BERR_IO, "%s: manifests nest too deep", r->name);
    if (json_object_get(c->seen, digest)) return 0;
    json_t *m = json_loadb(body, len, 0, NULL);
    if (!m) return berr_set(BERR_IO, "%s: manifest %s is not JSON", r->name, digest);
    int rc = 0;
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(m, "manifests"), i, d)
    {
        const char *cd = json_string_value(json_object_get(d, "digest"));
        if (!cd) continue;
        rc_manifest mf;
        if ((rc = rc_get_manifest(r, cd, &mf)) < 0) break;
        rc = copy_manifest(c, r, cd, mf.body, mf.len, depth + 1);
        rc_manifest_free(&mf);
        /* trust: a platform's own signature (cosign sign --recursive) travels with it too */
        if (rc == 0) rc = copy_cosign_sig(c, r, cd);
        if (rc < 0) break;
    }
    json_t *cfg = json_object_get(m, "config");
    if (rc == 0 && cfg) rc = put_remote(c, r, cfg);
    json_array_foreach(json_object_get(m, "layers"), i, d)
    {
        if (rc < 0) break;
        rc = put_remote(c, r, d);
    }
    json_decref(m);
    if (rc == 0) rc = put_mem(c, digest, body, len);
    if (rc == 0) rc = copy_referrers(c, r, digest, depth);
    return rc;
}

/* trust: whether digest (in r's repository) has a signature of its own: cosign's tag
 * sha256-<hex>.sig, or a signature referrer (cosign's OCI 1.1 mode, a Sigstore bundle, a Notary
 * Project signature). What cannot be read counts as unsigned. */
static bool has_signature(rc_ref *r, const char *digest)
{
    bool found = false;
    if (!strncmp(digest, "sha256:", 7)) {
        char tag[128];
        snprintf(tag, sizeof tag, "sha256-%s.sig", digest + 7);
        rc_manifest mf;
        if (rc_get_manifest(r, tag, &mf) == 0) {
            found = true;
            rc_manifest_free(&mf);
        }
    }
    json_t *list = NULL;
    if (!found && rc_referrers(r, digest, &list) == 0) {
        size_t i;
        json_t *d;
        json_array_foreach(list, i, d)
        {
            const char *at = json_string_value(json_object_get(d, "artifactType"));
            if (at && (!strncmp(at, "application/vnd.dev.sigstore.bundle", 35) ||
                       !strcmp(at, "application/vnd.cncf.notary.signature") ||
                       !strncmp(at, "application/vnd.dev.cosign", 26)))
                found = true;
        }
    }
    json_decref(list);
    berr_clear();
    return found;
}

/* An index reduced to the manifests of the platforms asked for: the one manifest when only one
 * matches, else a new index of the same media type listing the matches.
 * trust: a narrowed index is content nobody signed, so a signature of the original index cannot
 * vouch for it (the signature is over the index's digest; a store keeps no index whose children
 * are missing). So an index that is signed itself stays whole unless exactly one platform is
 * kept and that platform's manifest carries its own signature (cosign sign --recursive): what
 * the bundle carries is then always verifiable with the signatures it carries. */
static int narrow(rc_ref *r, const char *platforms, rc_manifest *mf)
{
    json_t *m = json_loadb(mf->body, mf->len, 0, NULL), *keep = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(m, "manifests"), i,
                       d) if (closure_platform_match(json_object_get(d, "platform"), platforms))
        json_array_append(keep, d);
    int rc = 0;
    if (json_array_size(keep) == 0) {
        rc = berr_set(BERR_IO, "%s: no manifest for platform %s", r->name, platforms);
    } else if (json_array_size(keep) == json_array_size(json_object_get(m, "manifests"))) {
        /* all of them: the index as it is */
    } else if (has_signature(r, mf->digest) &&
               !(json_array_size(keep) == 1 &&
                 has_signature(
                     r, json_string_value(json_object_get(json_array_get(keep, 0), "digest"))))) {
        fprintf(stderr,
                "note: %s: index %s is signed as a whole and %s: carried with all its "
                "platforms, so that its signature verifies\n",
                r->name, mf->digest,
                json_array_size(keep) == 1 ? "the platform's manifest asked for is not signed"
                                           : "a new index of several platforms would not be");
    } else if (json_array_size(keep) == 1) {
        const char *cd = json_string_value(json_object_get(json_array_get(keep, 0), "digest"));
        rc_manifest child;
        rc = cd ? rc_get_manifest(r, cd, &child) : berr_set(BERR_IO, "descriptor without digest");
        if (rc == 0) {
            rc_manifest_free(mf);
            *mf = child;
        }
    } else {
        json_object_set(m, "manifests", keep);
        char *s = json_dumps(m, JSON_COMPACT);
        if (!s) rc = berr_set(BERR_INTERNAL, "out of memory");
        if (rc == 0) {
            free(mf->body);
            mf->body = s;
            mf->len = strlen(s);
            digest_buf(DIGEST_SHA256, s, mf->len, mf->digest);
        }
    }
    json_decref(keep);
    json_decref(m);
    return rc;
}

/* trust: cosign's classic signature of digest (the tag sha256-<hex>.sig), carried as a tagged
 * entry so that the import recreates the tag beside its subject. A source without one (or that
 * cannot be read) leaves it out: an enforcing import then refuses the subject, naming why. */
static int copy_cosign_sig(creator *c, rc_ref *r, const char *digest)
{
    if (strncmp(digest, "sha256:", 7) != 0) return 0;
    char tag[128];
    snprintf(tag, sizeof tag, "sha256-%s.sig", digest + 7);
    char name[800];
    snprintf(name, sizeof name, "%s:%s", r->name, tag);
    size_t i;
    json_t *e;
    json_array_foreach(c->entries, i, e)
    {
        const char *n =
            json_string_value(json_object_get(json_object_get(e, "annotations"), ANN_REF));
        if (n && !strcmp(n, name)) return 0; /* carried already, with its entry */
    }
    rc_manifest mf;
    if (rc_get_manifest(r, tag, &mf) < 0) {
        berr_clear();
        return 0;
    }
    int rc = copy_manifest(c, r, mf.digest, mf.body, mf.len, 1);
    if (rc == 0) {
        add_entry(c, mf.media_type, mf.digest, mf.len, NULL, json_pack("{s:s}", ANN_REF, name));
    }
    rc_manifest_free(&mf);
    return rc;
}

/* One reference: its manifest, everything below it, its referrers and its index.json entry. */
static int create_ref(creator *c, const char *ref, const rc_opts *o, const char *platforms)
{
    rc_ref r;
    rc_manifest mf;
    int rc = rc_parse(ref, o, &r);
    if (rc == 0) rc = rc_get_manifest(&r, NULL, &mf);
    if (rc < 0) return rc;
    char orig[DIGEST_STR_MAX];
    snprintf(orig, sizeof orig, "%s", mf.digest);
    if (platforms && is_index(mf.media_type)) rc = narrow(&r, platforms, &mf);
    if (rc == 0) rc = copy_manifest(c, &r, mf.digest, mf.body, mf.len, 0);
    /* trust: the signature of what is carried travels along (a narrowed index's signature,
     * whose subject is not carried, does not: see narrow) */
    if (rc == 0) rc = copy_cosign_sig(c, &r, mf.digest);
    if (rc == 0) {
        char name[800];
        const char *tag = r.ref[0] ? r.ref : "latest";
        snprintf(name, sizeof name, "%s%s%s", r.name, ref_is_digest(tag) ? "@" : ":", tag);
        json_t *ann = json_pack("{s:s,s:s}", ANN_REF, name, "io.containerd.image.name", name);
        if (strcmp(orig, mf.digest)) json_object_set_new(ann, ANN_INDEX, json_string(orig));
        json_t *j = json_loadb(mf.body, mf.len, 0, NULL);
        add_entry(c, mf.media_type, mf.digest, mf.len,
                  json_string_value(json_object_get(j, "artifactType")), ann);
        json_decref(j);
        printf("added %s %s\n", name, mf.digest);
    }
    rc_manifest_free(&mf);
    return rc;
}

/* A chart from a classic HTTP repository, carried as the OCI artifact `helm push` makes, named
 * charts/<name>:<version> (berth's default helm.oci_prefix, so the importing berth lists it in its
 * index.yaml), with the URL it came from in io.berth.bundle.source. */
static int carry_http_chart(creator *c, const closure_item *it, const rc_opts *o)
{
    int fd = -1;
    char dg[DIGEST_STR_MAX];
    int rc = closure_fetch_url(o, it->ref, &fd, dg);
    if (rc == 0 && strcmp(dg, it->digest))
        rc = berr_set(BERR_IO, "%s changed since it was resolved (%s, now %s)", it->ref, it->digest,
                      dg);
    helm_chart_info ci = {0};
    if (rc == 0) rc = helm_chart_inspect(fd, (int64_t)256 << 20, &ci);
    char *cfg = rc == 0 ? json_dumps(ci.meta, JSON_COMPACT) : NULL;
    if (rc == 0 && !cfg) rc = berr_set(BERR_INTERNAL, "out of memory");
    off_t size = fd >= 0 ? lseek(fd, 0, SEEK_END) : 0;
    char cfgd[DIGEST_STR_MAX];
    char *man = NULL;
    if (rc == 0) {
        digest_buf(DIGEST_SHA256, cfg, strlen(cfg), cfgd);
        man = helm_chart_manifest(&ci, dg, (uint64_t)size, cfgd, strlen(cfg), NULL, 0,
                                  it->created[0] ? it->created : "1970-01-01T00:00:00Z");
        if (!man) rc = berr_set(BERR_INTERNAL, "out of memory");
    }
    if (rc == 0) rc = put_file(c, dg, fd, size, it->ref); /* the .tgz, from the anonymous file */
    if (rc == 0) rc = put_mem(c, cfgd, cfg, strlen(cfg));
    char md[DIGEST_STR_MAX];
    if (rc == 0) {
        digest_buf(DIGEST_SHA256, man, strlen(man), md);
        rc = put_mem(c, md, man, strlen(man));
    }
    if (rc == 0) {
        char ref[HELM_NAME_MAX + HELM_VERSION_MAX + 16];
        snprintf(ref, sizeof ref, "charts/%s:%s", ci.name, ci.tag);
        add_entry(c, "application/vnd.oci.image.manifest.v1+json", md, strlen(man), HELM_MT_CONFIG,
                  json_pack("{s:s,s:s}", ANN_REF, ref, "io.berth.bundle.source", it->ref));
        printf("added %s %s (from %s)\n", ref, md, it->ref);
    }
    free(man);
    free(cfg);
    helm_chart_info_free(&ci);
    if (fd >= 0) close(fd);
    return rc;
}

/* A legacy compose packageLocation (an archive or a plain compose.yaml at a URL), carried as
 * an OCI artifact named after the URL (bundle.h: closure_url_name, CLOSURE_URL_TAG), its one
 * layer the file byte for byte. When the closure read it from such an artifact already (an
 * imported bundle), that artifact is copied as it is. */
static int carry_url(creator *c, const closure_item *it, const rc_opts *o)
{
    if (it->carried[0]) return create_ref(c, it->carried, o, NULL);
    char name[600];
    int rc = closure_url_name(it->ref, name, sizeof name);
    int fd = -1;
    char dg[DIGEST_STR_MAX];
    if (rc == 0) rc = closure_fetch_url(o, it->ref, &fd, dg);
    if (rc == 0 && strcmp(dg, it->digest))
        rc = berr_set(BERR_IO, "%s changed since it was resolved (%s, now %s)", it->ref, it->digest,
                      dg);
    off_t size = fd >= 0 ? lseek(fd, 0, SEEK_END) : 0;
    unsigned char magic[2] = {0};
    bool gz = fd >= 0 && pread(fd, magic, 2, 0) == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    if (rc == 0) rc = put_file(c, dg, fd, size, it->ref);
    if (fd >= 0) close(fd);
    static const char empty[] = "{}";
    char ed[DIGEST_STR_MAX];
    digest_buf(DIGEST_SHA256, empty, 2, ed);
    if (rc == 0) rc = put_mem(c, ed, empty, 2);
    const char *path = strstr(it->ref, "://") ? strstr(it->ref, "://") + 3 : it->ref;
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    char title[256];
    snprintf(title, sizeof title, "%.*s", (int)strcspn(base, "?#"), base);
    char *man = NULL;
    if (rc == 0) {
        json_t *m = json_pack(
            "{s:i,s:s,s:s,s:{s:s,s:s,s:i,s:s},s:[{s:s,s:s,s:I,s:{s:s}}],s:{s:s}}", "schemaVersion",
            2, "mediaType", "application/vnd.oci.image.manifest.v1+json", "artifactType",
            CLOSURE_MT_URL, "config", "mediaType", "application/vnd.oci.empty.v1+json", "digest",
            ed, "size", 2, "data", "e30=", "layers", "mediaType",
            gz ? "application/vnd.org.margo.component.compose.tar+gzip" : "application/yaml",
            "digest", dg, "size", (json_int_t)size, "annotations", "org.opencontainers.image.title",
            title, "annotations", "io.berth.bundle.source", it->ref);
        man = m ? json_dumps(m, JSON_COMPACT) : NULL;
        json_decref(m);
        if (!man) rc = berr_set(BERR_INTERNAL, "out of memory");
    }
    char md[DIGEST_STR_MAX];
    if (rc == 0) {
        digest_buf(DIGEST_SHA256, man, strlen(man), md);
        rc = put_mem(c, md, man, strlen(man));
    }
    if (rc == 0) {
        char ref[700];
        snprintf(ref, sizeof ref, "%s:%s", name, CLOSURE_URL_TAG);
        add_entry(c, "application/vnd.oci.image.manifest.v1+json", md, strlen(man), CLOSURE_MT_URL,
                  json_pack("{s:s,s:s}", ANN_REF, ref, "io.berth.bundle.source", it->ref));
        printf("added %s %s (from %s)\n", ref, md, it->ref);
    }
    free(man);
    return rc;
}

static int bundle_create(const char *out, char **refs, int nrefs, bool with_closure,
                         const char *platforms, const rc_opts *o, bool allow_missing)
{
    size_t ol = strlen(out);
    tar_compress comp = TAR_PLAIN;
    if (ol > 4 && !strcmp(out + ol - 4, ".zst")) comp = TAR_ZSTD;
    if ((ol > 3 && !strcmp(out + ol - 3, ".gz")) || (ol > 4 && !strcmp(out + ol - 4, ".tgz")))
        comp = TAR_GZIP;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.partial", out);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return berr_set(BERR_IO, "%s: %s", tmp, strerror(errno));
    creator c = {.seen = json_object(), .entries = json_array()};
    int rc = tar_writer_open(fd, comp, &c.w);
    static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
    if (rc == 0) rc = tar_writer_file(c.w, "oci-layout", sizeof layout - 1);
    if (rc == 0) rc = tar_writer_write(c.w, layout, sizeof layout - 1);
    if (rc == 0) rc = tar_writer_dir(c.w, "blobs");
    if (rc == 0) rc = tar_writer_dir(c.w, "blobs/sha256");
    for (int i = 0; rc == 0 && i < nrefs; i++) {
        if (!with_closure) {
            rc = create_ref(&c, refs[i], o, platforms);
            continue;
        }
        closure cl;
        rc = closure_resolve(refs[i], o, platforms, &cl);
        for (size_t k = 0; rc == 0 && k < cl.n; k++) {
            closure_item *it = &cl.items[k];
            if (it->error) {
                fprintf(stderr, "%s: %s %s: %s\n", allow_missing ? "warning" : "error", it->kind,
                        it->ref, it->error);
                if (!allow_missing)
                    rc = berr_set(BERR_IO,
                                  "%s cannot be resolved: the bundle would be incomplete "
                                  "(--allow-missing to write it anyway)",
                                  it->ref);
                continue;
            }
            if (strstr(it->ref, "://") && !strcmp(it->kind, "chart")) {
                rc = carry_http_chart(&c, it, o); /* from a classic HTTP chart repository */
                continue;
            }
            if (strstr(it->ref, "://")) { /* a legacy compose packageLocation URL */
                rc = carry_url(&c, it, o);
                continue;
            }

            /* the package is the REF as given (a URL keeps its registry and repository);
             * the closure's own name for it is only the repository part */
            rc = create_ref(&c, k == 0 ? refs[i] : it->ref, o, platforms);
        }
        closure_free(&cl);
    }
    if (rc == 0) {
        json_t *idx = json_pack("{s:i,s:s,s:O}", "schemaVersion", 2, "mediaType", MT_OCI_INDEX,
                                "manifests", c.entries);
        char *s = json_dumps(idx, JSON_INDENT(1));
        json_decref(idx);
        rc = tar_writer_file(c.w, "index.json", strlen(s));
        if (rc == 0) rc = tar_writer_write(c.w, s, strlen(s));
        free(s);
    }
    if (c.w) {
        int crc = tar_writer_close(c.w);
        if (rc == 0) rc = crc;
    }
    if (rc == 0 && fsync(fd) < 0) rc = berr_set(BERR_IO, "%s: %s", tmp, strerror(errno));
    close(fd);
    if (rc == 0 && rename(tmp, out) < 0) rc = berr_set(BERR_IO, "%s: %s", out, strerror(errno));
    if (rc < 0)
        unlink(tmp);
    else
        printf("wrote %s: %zu artifacts, %zu blobs, %llu bytes\n", out, json_array_size(c.entries),
               c.nblobs, (unsigned long long)c.bytes);
    json_decref(c.seen);
    json_decref(c.entries);
    return rc;
}

/* ======================= import ======================= */

/* Second pass over a tar: calls fn for each blob the plan uses, with the reader at its data. */
typedef int (*blob_fn)(void *arg, bblob *x, tar_reader *tr, int fd);

static int each_blob(bundle *b, int fd, blob_fn fn, void *arg)
{
    if (b->dir) {
        int rc = 0;
        for (size_t i = 0; rc == 0 && i < b->n; i++) {
            if (!b->v[i].used || b->v[i].manifest) continue;
            char rel[DIGEST_STR_MAX + 16], path[4400];
            layout_blob_path(b->v[i].digest, rel, sizeof rel);
            snprintf(path, sizeof path, "%s/%s", b->path, rel);
            int bfd = open(path, O_RDONLY | O_CLOEXEC);
            if (bfd < 0) return berr_set(BERR_IO, "%s: %s", path, strerror(errno));
            rc = fn(arg, &b->v[i], NULL, bfd);
            close(bfd);
        }
        return rc;
    }
    if (lseek(fd, 0, SEEK_SET) < 0) return berr_set(BERR_IO, "%s: %s", b->path, strerror(errno));
    tar_reader *tr = NULL;
    int rc = tar_reader_open(fd, b->path, &tr);
    tar_entry e;
    while (rc == 0 && (rc = tar_reader_next(tr, &e)) == 1) {
        rc = 0;
        char digest[DIGEST_STR_MAX];
        if (e.type != 'f' || !layout_blob_name(e.name, digest)) continue;
        bblob *x = layout_find(b, digest);
        if (!x || !x->used || x->manifest || x->header_pos != e.header_pos) continue;
        rc = fn(arg, x, tr, -1);
    }
    tar_reader_close(tr);
    return rc;
}

/* Reads a blob's bytes from wherever the pass has them. */
static long read_blob(tar_reader *tr, int fd, char *buf, size_t len)
{
    if (tr) return tar_reader_read(tr, buf, len);
    ssize_t n = read(fd, buf, len);
    return n < 0 ? berr_set(BERR_IO, "read: %s", strerror(errno)) : (long)n;
}

typedef struct {
    store *st;
    char *buf;
    size_t written, present;
} store_import;

static int to_store(void *arg, bblob *x, tar_reader *tr, int fd)
{
    store_import *si = arg;
    if (store_blob_present(si->st, x->digest)) {
        si->present++;
        return 0;
    }
    digest_algo algo;
    digest_parse(x->digest, &algo);
    char uuid[STORE_UUID_LEN + 1];
    store_upload *u;
    int rc = store_upload_create(si->st, "bundle-import", algo, uuid);
    if (rc == 0) rc = store_upload_open(si->st, "bundle-import", uuid, &u);
    if (rc < 0) return rc;
    long n;
    while ((n = read_blob(tr, fd, si->buf, COPY_BUF)) > 0)
        if ((rc = store_upload_write(u, si->buf, (size_t)n)) < 0) break;
    if (rc == 0 && n < 0) rc = (int)n;
    store_new_blob nb;
    if (rc == 0) {
        rc = store_upload_place(u, x->digest, &nb); /* verifies the digest once more */
    } else {
        store_upload_cancel(u);
    }
    store_upload_close(u);
    if (rc == 0) si->written++;
    return rc;
}

/* Records the planned manifests in the store (after their blobs are there). */
static int commit_plan(store *st, const config *cfg, const plan *p)
{
    int rc = 0;
    /* notifications: what this import stores is reported as action "bundle.import" */
    store_event_context(&(store_event_ctx){.action = "bundle.import", .actor = "bundle import"});
    for (size_t i = 0; rc == 0 && i < p->n; i++) {
        const step *s = &p->v[i];
        /* linked first: the push-time checks (margo, Helm) read the layers through the repo */
        for (size_t k = 0; rc == 0 && k < s->nblobs; k++)
            rc = store_blob_adopt(st, s->repo, s->blobs[k]->digest, s->blobs[k]->size);
        const char *tags[1] = {s->tag};
        size_t ntags = s->tag[0] ? 1 : 0;
        store_manifest cur;
        if (rc == 0 && ntags && s->keep[0] && store_manifest_get(st, s->repo, s->tag, &cur) == 0) {
            if (!strcmp(cur.digest, s->keep)) ntags = 0; /* the whole image is already here */
            store_manifest_free(&cur);
        }
        ingest_req q = {.source = INGEST_BUNDLE,
                        .repo = s->repo,
                        .content = s->m->mem,
                        .len = s->m->size,
                        .content_type = s->mt[0] ? s->mt : NULL,
                        .digest = s->m->digest,
                        .tags = tags,
                        .ntags = ntags};
        if (rc == 0) rc = ingest_manifest(st, cfg, &q, NULL);
        char prefix[700];
        snprintf(prefix, sizeof prefix, "%s: ", s->repo);
        if (rc < 0) rc = berr_rewrap((berr)-rc, prefix);
    }
    store_event_context(NULL);
    return rc;
}

typedef struct {
    const bundle *b;
    const plan *p;
    const rc_opts *o;
    const char *url;
    char *buf;
    size_t pushed, present;
    /* the blob being streamed */
    tar_reader *tr;
    int fd;
} push_import;

static long push_source(void *arg, char *buf, size_t len)
{
    push_import *pi = arg;
    return read_blob(pi->tr, pi->fd, buf, len);
}

static int ref_at(const push_import *pi, const char *repo, rc_ref *r)
{
    char s[1200];
    snprintf(s, sizeof s, "%s/%s", pi->url, repo);
    return rc_parse(s, pi->o, r);
}

static int to_registry(void *arg, bblob *x, tar_reader *tr, int fd)
{
    push_import *pi = arg;
    /* the first repository whose manifest uses it gets the upload, the others a mount */
    const char *first = NULL;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < pi->p->n; i++) {
        const step *s = &pi->p->v[i];
        bool uses = false;
        for (size_t k = 0; k < s->nblobs && !uses; k++)
            uses = s->blobs[k] == x;
        if (!uses) continue;
        rc_ref r;
        if ((rc = ref_at(pi, s->repo, &r)) < 0) break;
        int have = rc_blob_exists(&r, x->digest);
        if (have < 0) return have;
        if (have) {
            if (!first) pi->present++;
            first = first ? first : s->repo;
            continue;
        }
        if (first) {
            char url[2600];
            snprintf(url, sizeof url, "mount=%s&from=%s", x->digest, first);
            char full[3000];
            rc_url(&r, "blobs", "uploads/", full, sizeof full);
            snprintf(full + strlen(full), sizeof full - strlen(full), "%s%s",
                     strchr(full, '?') ? "&" : "?", url);
            upstream_resp resp;
            rc = upstream_send(&r.m, "POST", full, NULL, "", 0, NULL, NULL, NULL, &resp);
            if (rc == 0 && resp.status != 201)
                rc = berr_set(BERR_IO, "%s: mounting %s from %s: HTTP %ld", s->repo, x->digest,
                              first, resp.status);
            upstream_resp_free(&resp);
            continue;
        }
        pi->tr = tr;
        pi->fd = fd;
        rc = rc_push_blob_stream(&r, x->digest, x->size, push_source, pi);
        if (rc == 0) pi->pushed++;
        first = s->repo;
    }
    return rc;
}

static int push_manifests(push_import *pi)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < pi->p->n; i++) {
        const step *s = &pi->p->v[i];
        rc_ref r;
        if ((rc = ref_at(pi, s->repo, &r)) < 0) break;
        rc = rc_put_manifest(&r, s->tag[0] ? s->tag : s->m->digest, s->mt, s->m->mem, s->m->size);
        if (rc == 0 && s->tag[0]) printf("imported %s:%s %s\n", s->repo, s->tag, s->m->digest);
    }
    return rc;
}

static int bundle_import(const char *path, const char *cfg_path, const char *to, const rc_opts *o,
                         const char *default_repo)
{
    bundle b;
    plan p;
    int fd;
    int rc = layout_open(path, &b, &p, default_repo, false, &fd);
    char *buf = malloc(COPY_BUF);
    if (rc == 0 && !buf) rc = berr_set(BERR_INTERNAL, "out of memory");
    if (rc == 0 && to) {
        if (upstream_global_init() < 0) rc = -BERR_UNAVAILABLE;
        push_import pi = {.b = &b, .p = &p, .o = o, .url = to, .buf = buf};
        if (rc == 0) rc = each_blob(&b, fd, to_registry, &pi);
        if (rc == 0) rc = push_manifests(&pi);
        if (rc == 0)
            printf("imported %s into %s: %zu manifests, %zu blobs uploaded, %zu already there\n",
                   path, to, p.n, pi.pushed, pi.present);
    } else if (rc == 0) {
        config cfg;
        store *st = NULL;
        rc = config_load(&cfg, cfg_path);
        if (rc == 0) {
            rc = trust_bundle_check(&cfg, &b, &p, NULL); /* trust: refused whole, nothing written */
            if (rc == 0) rc = store_open(&st, &cfg);
            store_import si = {.st = st, .buf = buf};
            if (rc == 0) rc = each_blob(&b, fd, to_store, &si);
            if (rc == 0) rc = commit_plan(st, &cfg, &p);
            if (rc == 0)
                printf("imported %s into %s: %zu manifests, %zu blobs written, %zu already "
                       "there\n",
                       path, cfg.root, p.n, si.written, si.present);
            if (st) store_close(st);
            config_free(&cfg);
        }
    }
    free(buf);
    if (fd >= 0) close(fd);
    layout_plan_free(&p);
    layout_free(&b);
    return rc;
}

/* ======================= serve ======================= */

typedef struct {
    bundle *b;
    int fd; /* the tar, or -1 for a directory */
} serve_src;

static bool same_time(struct timespec a, struct timespec b)
{
    return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

/* Only bytes that were verified are served: the tar is the file that was opened and hashed (a
 * descriptor kept open since, so a file renamed over it changes nothing), and any write to it
 * since, or to a directory bundle's blob file, changes its ctime: such a blob is refused. */
static int serve_open(void *arg, const char *digest, int *fd, uint64_t *offset)
{
    serve_src *s = arg;
    bblob *x = layout_find(s->b, digest);
    if (!x || x->offset < 0) return -1;
    if (!fd) return 0;
    struct stat st;
    bool same;
    if (s->fd >= 0) {
        *fd = dup(s->fd);
        *offset = (uint64_t)x->offset;
        same = *fd >= 0 && fstat(*fd, &st) == 0 && st.st_size == s->b->st.st_size &&
               same_time(st.st_ctim, s->b->st.st_ctim) && same_time(st.st_mtim, s->b->st.st_mtim);
    } else {
        char rel[DIGEST_STR_MAX + 16], p[4400];
        layout_blob_path(digest, rel, sizeof rel);
        snprintf(p, sizeof p, "%s/%s", s->b->path, rel);
        *fd = open(p, O_RDONLY | O_CLOEXEC);
        *offset = 0;
        same = *fd >= 0 && fstat(*fd, &st) == 0 && (uint64_t)st.st_size == x->size &&
               st.st_ino == x->ino && same_time(st.st_ctim, x->ctime);
    }
    if (*fd >= 0 && !same) {
        log_error("msg=\"bundle changed since it was verified: blob refused (restart bundle "
                  "serve to verify it again)\" bundle=\"%s\" digest=%s",
                  s->b->path, digest);
        close(*fd);
        *fd = -1;
    }
    return *fd >= 0 ? 0 : -1;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static int bundle_serve(const char *path, const char *addr, const char *cfg_path,
                        const char *default_repo)
{
    bundle b;
    plan p;
    int fd;
    int rc = layout_open(path, &b, &p, default_repo, true, &fd); /* hashed where it lies */
    config cfg;
    bool cfg_loaded = false;
    char root[4096];
    file_tmp_template(root, sizeof root, "berth-bundle");
    bool tmp = false;
    if (rc == 0) rc = config_load(&cfg, cfg_path);
    if (rc == 0) {
        cfg_loaded = true;
        if (!mkdtemp(root)) rc = berr_set(BERR_IO, "temporary directory: %s", strerror(errno));
        tmp = rc == 0;
    }
    store *st = NULL;
    serve_src src = {&b, fd};
    store_blob_source bs = {serve_open, &src};
    if (rc == 0) {
        free(cfg.root);
        cfg.root = strdup(root);
        if (addr) {
            free(cfg.addr);
            cfg.addr = strdup(addr);
        }
        cfg.read_only = true;
        cfg.delete_enabled = false;
        cfg.database.enabled = false; /* the bundle's metadata: a temporary SQLite file */
        cfg.s3.enabled = false; /* its blobs: the layout backend (the bundle, then the files) */
        cfg.margo_validation = MARGO_OFF; /* verified content, kept as it is; checks that read
                                             an archive cannot read it inside the tar */
        log_set_level((log_level)cfg.log_level);
        serve_block_signals();
        rc = store_open(&st, &cfg);
    }
    if (rc == 0) {
        store_set_blob_source(st, &bs);
        rc = commit_plan(st, &cfg, &p);
    }
    if (rc == 0) {
        fprintf(stderr, "serving %s read-only on %s: %zu manifests, %llu bytes\n", path, cfg.addr,
                p.n, (unsigned long long)b.bytes);
        rc = serve_run(&cfg, st) < 0 ? berr_set(BERR_IO, "the server stopped") : 0;
    }
    if (st) store_close(st);
    if (tmp) nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (cfg_loaded) config_free(&cfg);
    if (fd >= 0) close(fd);
    layout_plan_free(&p);
    layout_free(&b);
    return rc;
}

/* ======================= verify ======================= */

/* Checks a bundle as import would, writes nothing, and lists what it would import. */
static int bundle_verify(const char *path, const char *default_repo)
{
    bundle b;
    plan p;
    int fd;
    int rc = layout_open(path, &b, &p, default_repo, false, &fd);
    size_t tagged = 0;
    for (size_t i = 0; rc == 0 && i < p.n; i++) {
        const step *s = &p.v[i];
        if (!s->tag[0]) continue;
        tagged++;
        printf("%s:%s %s %s\n", s->repo, s->tag, s->m->digest, s->mt);
    }
    if (rc == 0)
        printf("%s: good: %zu tagged artifacts, %zu manifests, %zu blobs, %llu bytes%s\n", path,
               tagged, p.n, b.n, (unsigned long long)b.bytes,
               b.compressed ? " (compressed: import it; serve needs a plain tar)" : "");
    if (fd >= 0) close(fd);
    layout_plan_free(&p);
    layout_free(&b);
    return rc;
}

/* ======================= CLI ======================= */

static int usage(void)
{
    fputs(
        "usage: berth bundle create -o FILE[.tar|.tar.zst|.tar.gz] [--closure] [--platform "
        "OS/ARCH,...]\n"
        "                           [--registry URL | -c config.yml] [--user U:P]\n"
        "                           [--allow-missing] REF...\n"
        "       berth bundle import FILE|DIR (-c config.yml | --to URL) [--user U:P]\n"
        "                           [--repository NAME]\n"
        "       berth bundle serve FILE|DIR [--addr HOST:PORT] [-c config.yml]\n"
        "       berth bundle verify FILE|DIR [--repository NAME]\n"
        "  REF: [host/]repository[:tag|@digest] (an original name, fetched from its registry\n"
        "       or through --registry with ?ns=host), or http[s]://host[:port]/repository[:tag]\n",
        stderr);
    return 2;
}

int bundle_cli(int argc, char **argv)
{
    if (argc < 1) return usage();
    const char *sub = argv[0];
    rc_opts o = {0};
    const char *out = NULL, *platforms = NULL, *cfg_path = NULL, *to = NULL, *addr = NULL,
               *repo = NULL;
    bool with_closure = false, allow_missing = false;
    char **pos = calloc((size_t)argc + 1, sizeof *pos);
    int np = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && has)
            out = argv[++i];
        else if (!strcmp(a, "--registry") && has)
            o.via = argv[++i];
        else if (!strcmp(a, "--user") && has)
            o.user = argv[++i];
        else if (!strcmp(a, "--platform") && has)
            platforms = argv[++i];
        else if ((!strcmp(a, "-c") || !strcmp(a, "--config")) && has)
            cfg_path = argv[++i];
        else if (!strcmp(a, "--to") && has)
            to = argv[++i];
        else if (!strcmp(a, "--addr") && has)
            addr = argv[++i];
        else if (!strcmp(a, "--repository") && has)
            repo = argv[++i];
        else if (!strcmp(a, "--closure"))
            with_closure = true;
        else if (!strcmp(a, "--allow-missing"))
            allow_missing = true;
        else if (!strcmp(a, "--plain-http"))
            o.plain_http = true;
        else if (a[0] == '-') {
            free(pos);
            return usage();
        } else
            pos[np++] = argv[i];
    }
    int rc;
    if (!strcmp(sub, "create") && out && np > 0) {
        config cfg;
        bool own = false; /* -c: berth's own store is the source, no server needed */
        /* libcurl: for a registry, and for HTTP chart repositories even when reading the store */
        int crc = upstream_global_init();
        rc = cfg_path ? config_load(&cfg, cfg_path) : crc;
        if (rc == 0 && cfg_path) {
            own = true;
            rc = store_open(&o.st, &cfg);
        }
        if (rc == 0) rc = bundle_create(out, pos, np, with_closure, platforms, &o, allow_missing);
        if (o.st) store_close(o.st);
        if (own) config_free(&cfg);
    } else if (!strcmp(sub, "import") && np == 1 && (!cfg_path != !to)) {
        rc = bundle_import(pos[0], cfg_path, to, &o, repo);
    } else if (!strcmp(sub, "verify") && np == 1) {
        rc = bundle_verify(pos[0], repo);
    } else if (!strcmp(sub, "serve") && np == 1) {
        rc = bundle_serve(pos[0], addr, cfg_path, repo);
    } else {
        free(pos);
        return usage();
    }
    free(pos);
    if (rc < 0) {
        fprintf(stderr, "berth bundle %s: %s\n", sub, berr_msg());
        return 1;
    }
    return 0;
}
