/*
 * tar: see tar.h. libarchive is loaded with dlopen on the first archive, not linked: with the
 * compression and XML libraries it pulls in it adds about 2.5 MiB to every berth's resident size,
 * and most devices never receive an archive to check.
 */
#include "util/tar.h"
#include "util/err.h"
#include "util/log.h"

#include <archive.h>
#include <archive_entry.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ENTRIES_MAX 100000
/* every name (and link target) fits the 4096-byte buffers the checks and extraction use */
#define PATH_MAX_ENTRY 4096

static struct {
    struct archive *(*read_new)(void);
    int (*support_filter_gzip)(struct archive *);
    int (*support_format_tar)(struct archive *);
    int (*open_fd)(struct archive *, int, size_t);
    const char *(*error_string)(struct archive *);
    int (*read_free)(struct archive *);
    int (*next_header)(struct archive *, struct archive_entry **);
    const char *(*entry_pathname)(struct archive_entry *);
    mode_t (*entry_filetype)(struct archive_entry *);
    const char *(*entry_hardlink)(struct archive_entry *);
    const char *(*entry_symlink)(struct archive_entry *);
    mode_t (*entry_mode)(struct archive_entry *);
    la_int64_t (*entry_size)(struct archive_entry *);
    la_ssize_t (*read_data)(struct archive *, void *, size_t);
    int (*data_skip)(struct archive *);
    int (*filter_code)(struct archive *, int);
    /* writing (tar_create) */
    struct archive *(*write_new)(void);
    int (*write_add_filter_gzip)(struct archive *);
    int (*write_set_format_pax_restricted)(struct archive *);
    int (*write_open_filename)(struct archive *, const char *);
    int (*write_header)(struct archive *, struct archive_entry *);
    la_ssize_t (*write_data)(struct archive *, const void *, size_t);
    int (*write_close)(struct archive *);
    int (*write_free)(struct archive *);
    struct archive_entry *(*entry_new)(void);
    void (*entry_free)(struct archive_entry *);
    void (*entry_set_pathname)(struct archive_entry *, const char *);
    void (*entry_set_size)(struct archive_entry *, la_int64_t);
    void (*entry_set_filetype)(struct archive_entry *, unsigned int);
    void (*entry_set_perm)(struct archive_entry *, mode_t);
    void (*entry_set_symlink)(struct archive_entry *, const char *);
    void (*entry_set_mtime)(struct archive_entry *, time_t, long);
    /* streaming (tar_reader, tar_writer: bundles) */
    int (*support_filter_zstd)(struct archive *);
    la_int64_t (*header_position)(struct archive *);
    int (*write_add_filter_zstd)(struct archive *);
    int (*write_open_fd)(struct archive *, int);
} ax;
static pthread_once_t ax_once = PTHREAD_ONCE_INIT;
static bool ax_loaded;

static void ax_load(void)
{
    void *lib = dlopen("libarchive.so.13", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        log_error("msg=\"cannot load libarchive: archives cannot be checked\" err=\"%s\"",
                  dlerror());
        return;
    }
#define SYM(field, name) *(void **)&ax.field = dlsym(lib, name)
    SYM(read_new, "archive_read_new");
    SYM(support_filter_gzip, "archive_read_support_filter_gzip");
    SYM(support_format_tar, "archive_read_support_format_tar");
    SYM(open_fd, "archive_read_open_fd");
    SYM(error_string, "archive_error_string");
    SYM(read_free, "archive_read_free");
    SYM(next_header, "archive_read_next_header");
    SYM(entry_pathname, "archive_entry_pathname");
    SYM(entry_filetype, "archive_entry_filetype");
    SYM(entry_hardlink, "archive_entry_hardlink");
    SYM(entry_symlink, "archive_entry_symlink");
    SYM(entry_mode, "archive_entry_mode");
    SYM(entry_size, "archive_entry_size");
    SYM(read_data, "archive_read_data");
    SYM(data_skip, "archive_read_data_skip");
    SYM(filter_code, "archive_filter_code");
    SYM(write_new, "archive_write_new");
    SYM(write_add_filter_gzip, "archive_write_add_filter_gzip");
    SYM(write_set_format_pax_restricted, "archive_write_set_format_pax_restricted");
    SYM(write_open_filename, "archive_write_open_filename");
    SYM(write_header, "archive_write_header");
    SYM(write_data, "archive_write_data");
    SYM(write_close, "archive_write_close");
    SYM(write_free, "archive_write_free");
    SYM(entry_new, "archive_entry_new");
    SYM(entry_free, "archive_entry_free");
    SYM(entry_set_pathname, "archive_entry_set_pathname");
    SYM(entry_set_size, "archive_entry_set_size");
    SYM(entry_set_filetype, "archive_entry_set_filetype");
    SYM(entry_set_perm, "archive_entry_set_perm");
    SYM(entry_set_symlink, "archive_entry_set_symlink");
    SYM(entry_set_mtime, "archive_entry_set_mtime");
    SYM(support_filter_zstd, "archive_read_support_filter_zstd");
    SYM(header_position, "archive_read_header_position");
    SYM(write_add_filter_zstd, "archive_write_add_filter_zstd");
    SYM(write_open_fd, "archive_write_open_fd");
#undef SYM
    void **fns = (void **)&ax;
    for (size_t i = 0; i < sizeof ax / sizeof(void *); i++)
        if (!fns[i]) {
            log_error("msg=\"libarchive lacks an entry point: archives cannot be checked\"");
            return;
        }
    ax_loaded = true;
}

#define archive_read_new ax.read_new
#define archive_read_support_filter_gzip ax.support_filter_gzip
#define archive_read_support_format_tar ax.support_format_tar
#define archive_read_open_fd ax.open_fd
#define archive_error_string ax.error_string
#define archive_read_free ax.read_free
#define archive_read_next_header ax.next_header
#define archive_entry_pathname ax.entry_pathname
#define archive_entry_filetype ax.entry_filetype
#define archive_entry_hardlink ax.entry_hardlink
#define archive_entry_symlink ax.entry_symlink
#define archive_entry_mode ax.entry_mode
#define archive_entry_size ax.entry_size
#define archive_read_data ax.read_data
#define archive_read_data_skip ax.data_skip
#define archive_filter_code ax.filter_code
#define archive_write_new ax.write_new
#define archive_write_add_filter_gzip ax.write_add_filter_gzip
#define archive_write_set_format_pax_restricted ax.write_set_format_pax_restricted
#define archive_write_open_filename ax.write_open_filename
#define archive_write_header ax.write_header
#define archive_write_data ax.write_data
#define archive_write_close ax.write_close
#define archive_write_free ax.write_free
#define archive_entry_new ax.entry_new
#define archive_entry_free ax.entry_free
#define archive_entry_set_pathname ax.entry_set_pathname
#define archive_entry_set_size ax.entry_set_size
#define archive_entry_set_filetype ax.entry_set_filetype
#define archive_entry_set_perm ax.entry_set_perm
#define archive_entry_set_symlink ax.entry_set_symlink
#define archive_entry_set_mtime ax.entry_set_mtime
#define archive_read_support_filter_zstd ax.support_filter_zstd
#define archive_read_header_position ax.header_position
#define archive_write_add_filter_zstd ax.write_add_filter_zstd
#define archive_write_open_fd ax.write_open_fd

/* A path inside the archive: relative, no "." / ".." components; returns its first component's
 * length and whether it has more components. */

/* Checks one path: relative, no ".." component. Sets the length of its first component (after
 * any "./") and whether it has more components. */
static int check_path(const char *what, const char *path, size_t *skip, size_t *top_len,
                      bool *deeper)
{
    if (!*path) return berr_set(BERR_BAD_REQUEST, "%s: an entry has an empty name", what);
    if (strlen(path) >= PATH_MAX_ENTRY)
        return berr_set(BERR_BAD_REQUEST, "%s: an entry's name is longer than %d bytes", what,
                        PATH_MAX_ENTRY - 1);
    if (path[0] == '/') return berr_set(BERR_BAD_REQUEST, "%s: absolute path '%.200s'", what, path);
    const char *p = path;
    size_t first = 0, start = 0;
    int comps = 0;
    while (*p) {
        size_t n = strcspn(p, "/");
        if (n == 2 && !memcmp(p, "..", 2))
            return berr_set(BERR_BAD_REQUEST, "%s: path '%.200s' leaves the directory", what, path);
        if (n > 0 && !(n == 1 && p[0] == '.')) {
            if (comps == 0) {
                start = (size_t)(p - path);
                first = n;
            }
            comps++;
        }
        p += n;
        while (*p == '/')
            p++;
    }
    if (comps == 0) return berr_set(BERR_BAD_REQUEST, "%s: entry '%.200s'", what, path);
    *skip = start;
    *top_len = first;
    *deeper = comps > 1;
    return 0;
}

/* A link target, resolved against the directory of the link, must stay inside top/. */
static bool link_inside(const char *path, const char *target, const char *top)
{
    if (target[0] == '/') return false;
    char buf[4096];
    const char *slash = strrchr(path, '/');
    snprintf(buf, sizeof buf, "%.*s/%s", slash ? (int)(slash - path) : 0, path, target);
    /* walk the components, tracking the depth below the archive root */
    int depth = 0;
    const char *p = buf;
    bool first = true, in_top = false;
    while (*p) {
        size_t n = strcspn(p, "/");
        if (n == 2 && !memcmp(p, "..", 2)) {
            if (--depth < 1) return false; /* left the top directory */
        } else if (n > 0 && !(n == 1 && p[0] == '.')) {
            if (first) in_top = strlen(top) == n && !memcmp(p, top, n);
            first = false;
            depth++;
        }
        p += n;
        while (*p == '/')
            p++;
    }
    return in_top && depth >= 1;
}

/* ---- links inside the archive ----
 * A link whose target stays inside the directory when read as text can still lead out once other
 * links are followed ("l1 -> .", "esc -> l1/l1/l1/../../.."), and a file stored below a link
 * ("esc/PWNED") is written wherever the link leads. So an archive is refused when any entry's
 * path, or any link's target, passes through a symbolic link of the archive: then reading the
 * paths as text is what the file system does. Paths are kept normalised (no "." components, single
 * slashes) and the links sorted, checked once all entries are read (order does not matter). */
typedef struct {
    char **v;
    size_t n, cap;
} pathset;

static void pathset_free(pathset *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->v[i]);
    free(p->v);
    memset(p, 0, sizeof *p);
}

/* path without "." components, repeated or trailing slashes, into out (strlen(path) + 1 bytes);
 * a leading slash is kept. */
static void normalize(const char *path, char *out)
{
    char *o = out;
    if (*path == '/') *o++ = '/';
    for (const char *c = path; *c;) {
        size_t n = strcspn(c, "/");
        if (n > 0 && !(n == 1 && c[0] == '.')) {
            if (o != out && o[-1] != '/') *o++ = '/';
            memcpy(o, c, n);
            o += n;
        }
        c += n;
        while (*c == '/')
            c++;
    }
    *o = '\0';
}

/* Adds path normalised; 0 or -1 (out of memory). */
static int pathset_add(pathset *p, const char *path)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        char **v = realloc(p->v, cap * sizeof *v);
        if (!v) return -1;
        p->v = v;
        p->cap = cap;
    }
    char *out = malloc(strlen(path) + 1);
    if (!out) return -1;
    normalize(path, out);
    p->v[p->n++] = out;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_link(const pathset *links, const char *path, size_t len)
{
    char buf[4096];
    if (len >= sizeof buf) return false;
    memcpy(buf, path, len);
    buf[len] = '\0';
    const char *key = buf;
    return bsearch(&key, links->v, links->n, sizeof *links->v, cmp_str) != NULL;
}

/* The first proper prefix of path (normalised) that is a link, as its length; 0 when none. */
static size_t through_link(const pathset *links, const char *path)
{
    for (const char *c = path; (c = strchr(c, '/')); c++)
        if (is_link(links, path, (size_t)(c - path))) return (size_t)(c - path);
    return 0;
}

/* Whether target, read from link's directory, passes through a link before its last component. */
static bool target_through_link(const pathset *links, const char *link, const char *target)
{
    char cur[4096];
    const char *slash = strrchr(link, '/');
    size_t len = slash ? (size_t)(slash - link) : 0;
    memcpy(cur, link, len);
    for (const char *c = target; *c;) {
        size_t n = strcspn(c, "/");
        const char *next = c + n;
        while (*next == '/')
            next++;
        if (n == 2 && !memcmp(c, "..", 2)) {
            char *up = memrchr(cur, '/', len);
            len = up ? (size_t)(up - cur) : 0;
        } else if (n > 0 && !(n == 1 && c[0] == '.')) {
            if (len + n + 2 >= sizeof cur) return true;
            if (len) cur[len++] = '/';
            memcpy(cur + len, c, n);
            len += n;
            if (*next && is_link(links, cur, len)) return true;
        }
        c = next;
    }
    return false;
}

static int check_links(const char *what, pathset *links, const pathset *targets,
                       const pathset *entries)
{
    /* links and targets are parallel: sort a copy of the link names for lookups */
    pathset sorted = {.v = malloc((links->n ? links->n : 1) * sizeof(char *)), .n = links->n};
    if (!sorted.v) return berr_set(BERR_INTERNAL, "out of memory");
    memcpy(sorted.v, links->v, links->n * sizeof(char *));
    qsort(sorted.v, sorted.n, sizeof *sorted.v, cmp_str);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < entries->n; i++) {
        size_t at = through_link(&sorted, entries->v[i]);
        if (at)
            rc = berr_set(BERR_BAD_REQUEST,
                          "%s: '%.200s' is stored below the symbolic link '%.*s' (it would be "
                          "written wherever the link leads)",
                          what, entries->v[i], (int)at, entries->v[i]);
    }
    for (size_t i = 0; rc == 0 && i < links->n; i++)
        if (target_through_link(&sorted, links->v[i], targets->v[i]))
            rc = berr_set(BERR_BAD_REQUEST,
                          "%s: the symbolic link '%.200s' leads through another link of the "
                          "archive ('%.200s')",
                          what, links->v[i], targets->v[i]);
    free(sorted.v);
    return rc;
}

/* A gzip tar reader over fd (from offset 0). */
static int open_reader(int fd, const char *what, struct archive **out)
{
    pthread_once(&ax_once, ax_load);
    if (!ax_loaded) return berr_set(BERR_UNAVAILABLE, "libarchive could not be loaded");
    struct archive *a = archive_read_new();
    if (!a) return berr_set(BERR_INTERNAL, "out of memory");
    archive_read_support_filter_gzip(a);
    archive_read_support_format_tar(a);
    if (lseek(fd, 0, SEEK_SET) < 0 || archive_read_open_fd(a, fd, 65536) != ARCHIVE_OK) {
        int rc = berr_set(BERR_BAD_REQUEST, "%s: %s", what, archive_error_string(a));
        archive_read_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

int tar_scan(int fd, tar_scan_opts *o)
{
    const char *what = o->what;
    o->top[0] = '\0';
    o->captured = NULL;
    o->captured_len = 0;
    unsigned char magic[2];
    if (pread(fd, magic, 2, 0) != 2 || magic[0] != 0x1f || magic[1] != 0x8b)
        return berr_set(BERR_BAD_REQUEST, "%s: not gzip-compressed (a .tar.gz / .tgz is expected)",
                        what);
    struct archive *a;
    int rc = open_reader(fd, what, &a);
    if (rc < 0) return rc;
    int64_t total = 0;
    size_t entries = 0;
    pathset paths = {0}, links = {0}, targets = {0};
    struct archive_entry *e;
    int r = ARCHIVE_EOF;
    while (rc == 0 && (r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        if (++entries > ENTRIES_MAX) {
            rc = berr_set(BERR_BAD_REQUEST, "%s: more than %d entries", what, ENTRIES_MAX);
            break;
        }
        const char *path = archive_entry_pathname(e);
        if (!path) {
            rc = berr_set(BERR_BAD_REQUEST, "%s: an entry has no name", what);
            break;
        }
        size_t skip = 0, tl = 0;
        bool deeper = false;
        if ((rc = check_path(what, path, &skip, &tl, &deeper)) < 0) break;
        const char *start = path + skip;
        if (!o->top[0]) {
            if (tl >= sizeof o->top) {
                rc = berr_set(BERR_BAD_REQUEST, "%s: top-level name too long", what);
                break;
            }
            memcpy(o->top, start, tl);
            o->top[tl] = '\0';
        } else if (strlen(o->top) != tl || memcmp(o->top, start, tl) != 0) {
            rc = berr_set(BERR_BAD_REQUEST,
                          "%s: '%.200s' is outside the directory '%s' (one top-level directory "
                          "holds everything)",
                          what, path, o->top);
            break;
        }
        if (pathset_add(&paths, path) < 0) {
            rc = berr_set(BERR_INTERNAL, "out of memory");
            break;
        }
        mode_t type = archive_entry_filetype(e);
        mode_t mode = archive_entry_mode(e);
        if (o->no_special_bits && (mode & (S_ISUID | S_ISGID | S_ISVTX))) {
            rc = berr_set(BERR_BAD_REQUEST, "%s: '%.200s' has a setuid, setgid or sticky bit", what,
                          path);
            break;
        }
        const char *hard = archive_entry_hardlink(e);
        if (hard) {
            size_t hs, ht;
            bool hd;
            if (!o->symlinks_inside || check_path(what, hard, &hs, &ht, &hd) < 0 ||
                strlen(o->top) != ht || memcmp(o->top, hard + hs, ht) != 0) {
                berr_clear();
                rc = berr_set(BERR_BAD_REQUEST, "%s: '%.200s' is a hard link%s", what, path,
                              o->symlinks_inside ? " leaving the directory" : "");
                break;
            }
            if (pathset_add(&paths, hard) < 0) rc = berr_set(BERR_INTERNAL, "out of memory");
            continue;
        }
        if (type == AE_IFLNK) {
            const char *target = archive_entry_symlink(e);
            if (!o->symlinks_inside || !target || strlen(target) >= PATH_MAX_ENTRY ||
                !link_inside(start, target, o->top)) {
                rc = berr_set(BERR_BAD_REQUEST, "%s: '%.200s' is a symbolic link%s", what, path,
                              o->symlinks_inside ? " leaving the directory"
                                                 : " (links are refused)");
                break;
            }
            if (pathset_add(&links, path) < 0 || pathset_add(&targets, target) < 0)
                rc = berr_set(BERR_INTERNAL, "out of memory");
            continue;
        }
        if (type != AE_IFREG && type != AE_IFDIR) {
            rc = berr_set(BERR_BAD_REQUEST,
                          "%s: '%.200s' is not a regular file or directory (devices, fifos and "
                          "sockets are refused)",
                          what, path);
            break;
        }
        if (type == AE_IFDIR) continue;
        if (!deeper) {
            rc = berr_set(BERR_BAD_REQUEST,
                          "%s: file '%.200s' at the top level (everything is in one directory)",
                          what, path);
            break;
        }
        int64_t size = archive_entry_size(e);
        if (size < 0 || total + size > o->max_uncompressed) {
            rc = berr_set(BERR_BAD_REQUEST, "%s: unpacks to more than %lld bytes", what,
                          (long long)o->max_uncompressed);
            break;
        }
        total += size;
        const char *rest = start + tl;
        while (*rest == '/')
            rest++;
        if (o->capture && !strcmp(rest, o->capture)) {
            if (size > (int64_t)o->capture_max) {
                rc = berr_set(BERR_BAD_REQUEST, "%s: %s larger than %zu bytes", what, o->capture,
                              o->capture_max);
                break;
            }
            free(o->captured);
            o->captured = malloc((size_t)size + 1);
            if (!o->captured) {
                rc = berr_set(BERR_INTERNAL, "out of memory");
                break;
            }
            la_ssize_t got = 0, n;
            while (got < size &&
                   (n = archive_read_data(a, o->captured + got, (size_t)(size - got))) > 0)
                got += n;
            if (got != size) {
                rc = berr_set(BERR_BAD_REQUEST, "%s: %s is truncated", what, o->capture);
                break;
            }
            o->captured[size] = '\0';
            o->captured_len = (size_t)size;
        } else if (archive_read_data_skip(a) != ARCHIVE_OK) {
            rc = berr_set(BERR_BAD_REQUEST, "%s: %s", what, archive_error_string(a));
            break;
        }
    }
    if (rc == 0 && r != ARCHIVE_EOF)
        rc = berr_set(BERR_BAD_REQUEST, "%s: %s", what,
                      archive_error_string(a) ? archive_error_string(a) : "unreadable");
    if (rc == 0 && archive_filter_code(a, 0) != ARCHIVE_FILTER_GZIP)
        rc = berr_set(BERR_BAD_REQUEST, "%s: not gzip-compressed", what);
    if (rc == 0 && entries == 0) rc = berr_set(BERR_BAD_REQUEST, "%s: empty", what);
    if (rc == 0 && links.n) rc = check_links(what, &links, &targets, &paths);
    pathset_free(&paths);
    pathset_free(&links);
    pathset_free(&targets);
    archive_read_free(a);
    if (rc < 0) tar_scan_free(o);
    return rc;
}

void tar_scan_free(tar_scan_opts *o)
{
    free(o->captured);
    o->captured = NULL;
    o->captured_len = 0;
}

/* ---- writing and extracting (berth compose push / pull) ---- */

typedef struct {
    struct archive *a;
    const char *root;
    size_t rootlen;
    const char *top;
    int rc;
} walk_ctx;

static walk_ctx *walk_cur; /* nftw has no user argument; tar_create is not re-entrant */

static int add_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)ftw;
    walk_ctx *w = walk_cur;
    char name[4096];
    const char *rel = path + w->rootlen;
    while (*rel == '/')
        rel++;
    snprintf(name, sizeof name, "%s%s%s", w->top, *rel ? "/" : "", rel);
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, name);
    archive_entry_set_mtime(e, st->st_mtime, 0);
    /* no setuid, setgid or sticky bit survives */
    archive_entry_set_perm(e, st->st_mode & 0777);
    char target[4096] = "";
    if (flag == FTW_D) {
        archive_entry_set_filetype(e, AE_IFDIR);
    } else if (flag == FTW_SL) {
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n < 0) n = 0;
        target[n] = '\0';
        archive_entry_set_filetype(e, AE_IFLNK);
        archive_entry_set_symlink(e, target);
    } else if (flag == FTW_F && S_ISREG(st->st_mode)) {
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_size(e, st->st_size);
    } else {
        archive_entry_free(e);
        w->rc = berr_set(BERR_BAD_REQUEST, "%s: not a regular file, directory or link", path);
        return 1;
    }
    if (archive_write_header(w->a, e) != ARCHIVE_OK) {
        w->rc = berr_set(BERR_IO, "archive %s: %s", path, archive_error_string(w->a));
        archive_entry_free(e);
        return 1;
    }
    archive_entry_free(e);
    if (flag == FTW_F) {
        FILE *f = fopen(path, "rb");
        if (!f) {
            w->rc = berr_set(BERR_IO, "%s: %s", path, strerror(errno));
            return 1;
        }
        char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0)
            if (archive_write_data(w->a, buf, n) != (la_ssize_t)n) {
                w->rc = berr_set(BERR_IO, "archive %s: %s", path, archive_error_string(w->a));
                break;
            }
        fclose(f);
        if (w->rc) return 1;
    }
    return 0;
}

int tar_create(const char *dir, const char *top, const char *out)
{
    pthread_once(&ax_once, ax_load);
    if (!ax_loaded) return berr_set(BERR_UNAVAILABLE, "libarchive could not be loaded");
    struct archive *a = archive_write_new();
    if (!a) return berr_set(BERR_INTERNAL, "out of memory");
    archive_write_add_filter_gzip(a);
    archive_write_set_format_pax_restricted(a);
    if (archive_write_open_filename(a, out) != ARCHIVE_OK) {
        int rc = berr_set(BERR_IO, "%s: %s", out, archive_error_string(a));
        archive_write_free(a);
        return rc;
    }
    walk_ctx w = {a, dir, strlen(dir), top, 0};
    while (w.rootlen > 1 && dir[w.rootlen - 1] == '/')
        w.rootlen--;
    walk_cur = &w;
    if (nftw(dir, add_entry, 32, FTW_PHYS) != 0 && w.rc == 0)
        w.rc = berr_set(BERR_IO, "%s: %s", dir, strerror(errno));
    walk_cur = NULL;
    if (archive_write_close(a) != ARCHIVE_OK && w.rc == 0)
        w.rc = berr_set(BERR_IO, "%s: %s", out, archive_error_string(a));
    archive_write_free(a);
    return w.rc;
}

/* Where openat2 is missing (kernels before 5.6, as on older edge boards, and qemu-user before
 * 9.0): dir opened one component at a time, none of them ".." and none a symbolic link
 * (O_NOFOLLOW), so the walk cannot leave root either. */
static int open_beneath_walk(int root, const char *dir)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", dir);
    int fd = dup(root);
    for (char *save = NULL, *c = strtok_r(buf, "/", &save); fd >= 0 && c;
         c = strtok_r(NULL, "/", &save)) {
        if (!strcmp(c, ".")) continue;
        int next = -1;
        if (strcmp(c, "..") != 0)
            next = openat(fd, c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        else
            errno = EXDEV; /* what RESOLVE_BENEATH answers */
        int err = errno;
        close(fd);
        errno = err;
        fd = next;
    }
    return fd;
}

/* The directory that will hold path (below root), opened with openat2's RESOLVE_BENEATH: the
 * kernel refuses any resolution that leaves root, through ".." or a symbolic link alike. *base
 * points at path's last component. */
static int open_parent(int root, const char *path, const char **base)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    *base = slash ? slash + 1 : path;
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
                           .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
    int fd = (int)syscall(SYS_openat2, root, dir, &how, sizeof how);
    if (fd < 0 && errno == ENOSYS) fd = open_beneath_walk(root, dir);
    return fd;
}

int tar_extract(int fd, const char *dest)
{
    struct archive *a;
    int rc = open_reader(fd, "extract", &a);
    if (rc < 0) return rc;
    int root = open(dest, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) {
        archive_read_free(a);
        return berr_set(BERR_IO, "%s: %s", dest, strerror(errno));
    }
    /* symbolic links are made last, so no entry is ever written through one */
    pathset links = {0}, targets = {0};
    struct archive_entry *e;
    while (rc == 0 && archive_read_next_header(a, &e) == ARCHIVE_OK) {
        const char *raw = archive_entry_pathname(e), *base;
        char path[4096];
        if (!raw || strlen(raw) >= sizeof path) continue;
        normalize(raw, path);
        mode_t type = archive_entry_filetype(e);
        mode_t perm = archive_entry_mode(e) & 0777;
        if (type == AE_IFLNK) {
            if (pathset_add(&links, path) < 0 ||
                pathset_add(&targets, archive_entry_symlink(e)) < 0)
                rc = berr_set(BERR_INTERNAL, "out of memory");
            continue;
        }
        if (type != AE_IFDIR && type != AE_IFREG) continue;
        int dir = open_parent(root, path, &base);
        if (dir < 0) {
            rc = berr_set(BERR_IO, "%s/%s: %s", dest, path, strerror(errno));
            break;
        }
        if (!*base || !strcmp(base, "..")) { /* tar_scan refuses these; never made */
            close(dir);
            continue;
        }
        if (type == AE_IFDIR) {
            if (mkdirat(dir, base, perm | 0700) < 0 && errno != EEXIST)
                rc = berr_set(BERR_IO, "%s/%s: %s", dest, path, strerror(errno));
        } else {
            int out = openat(dir, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, perm);
            if (out < 0) {
                rc = berr_set(BERR_IO, "%s/%s: %s", dest, path, strerror(errno));
            } else {
                char buf[65536];
                la_ssize_t n;
                while (rc == 0 && (n = archive_read_data(a, buf, sizeof buf)) > 0)
                    if (write(out, buf, (size_t)n) != n) rc = berr_set(BERR_IO, "%s: write", path);
                close(out);
            }
        }
        close(dir);
    }
    for (size_t i = 0; rc == 0 && i < links.n; i++) {
        const char *base;
        int dir = open_parent(root, links.v[i], &base);
        if (dir < 0 || symlinkat(targets.v[i], dir, base) < 0)
            rc = berr_set(BERR_IO, "%s/%s: %s", dest, links.v[i], strerror(errno));
        if (dir >= 0) close(dir);
    }
    pathset_free(&links);
    pathset_free(&targets);
    close(root);
    archive_read_free(a);
    return rc;
}

/* ---- streaming reader and writer (bundles, chart contents) ---- */

struct tar_reader {
    struct archive *a;
    const char *what;
};

int tar_reader_open(int fd, const char *what, tar_reader **out)
{
    pthread_once(&ax_once, ax_load);
    if (!ax_loaded) return berr_set(BERR_UNAVAILABLE, "libarchive could not be loaded");
    tar_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->a = archive_read_new())) {
        free(r);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    r->what = what;
    archive_read_support_filter_gzip(r->a);
    archive_read_support_filter_zstd(r->a);
    archive_read_support_format_tar(r->a);
    if (archive_read_open_fd(r->a, fd, 1 << 20) != ARCHIVE_OK) {
        int rc = berr_set(BERR_BAD_REQUEST, "%s: %s", what, archive_error_string(r->a));
        tar_reader_close(r);
        return rc;
    }
    *out = r;
    return 0;
}

int tar_reader_next(tar_reader *r, tar_entry *e)
{
    struct archive_entry *ae;
    int st = archive_read_next_header(r->a, &ae);
    if (st == ARCHIVE_EOF) {
        e->header_pos = archive_read_header_position(r->a);
        return 0;
    }
    if (st != ARCHIVE_OK && st != ARCHIVE_WARN)
        return berr_set(BERR_BAD_REQUEST, "%s: %s", r->what, archive_error_string(r->a));
    e->name = archive_entry_pathname(ae);
    if (!e->name) e->name = "";
    mode_t t = archive_entry_filetype(ae);
    e->type = t == AE_IFREG ? 'f' : t == AE_IFDIR ? 'd' : t == AE_IFLNK ? 'l' : 'o';
    if (e->type == 'f' && archive_entry_hardlink(ae)) e->type = 'h';
    la_int64_t sz = archive_entry_size(ae);
    e->size = sz > 0 ? (uint64_t)sz : 0;
    e->header_pos = archive_read_header_position(r->a);
    e->compressed = archive_filter_code(r->a, 0) != ARCHIVE_FILTER_NONE;
    return 1;
}

long tar_reader_read(tar_reader *r, void *buf, size_t len)
{
    la_ssize_t n = archive_read_data(r->a, buf, len);
    if (n < 0) return berr_set(BERR_BAD_REQUEST, "%s: %s", r->what, archive_error_string(r->a));
    return (long)n;
}

void tar_reader_close(tar_reader *r)
{
    if (!r) return;
    if (r->a) archive_read_free(r->a);
    free(r);
}

struct tar_writer {
    struct archive *a;
    char path[4096];
};

int tar_writer_open(int fd, tar_compress c, tar_writer **out)
{
    pthread_once(&ax_once, ax_load);
    if (!ax_loaded) return berr_set(BERR_UNAVAILABLE, "libarchive could not be loaded");
    tar_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->a = archive_write_new())) {
        free(w);
        return berr_set(BERR_INTERNAL, "out of memory");
    }
    int st = ARCHIVE_OK;
    if (c == TAR_GZIP) st = archive_write_add_filter_gzip(w->a);
    if (c == TAR_ZSTD) st = archive_write_add_filter_zstd(w->a);
    if (st != ARCHIVE_OK || archive_write_set_format_pax_restricted(w->a) != ARCHIVE_OK ||
        archive_write_open_fd(w->a, fd) != ARCHIVE_OK) {
        int rc = berr_set(BERR_IO, "archive: %s", archive_error_string(w->a));
        archive_write_free(w->a);
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

static int writer_header(tar_writer *w, const char *name, unsigned int type, mode_t perm,
                         uint64_t size)
{
    struct archive_entry *e = archive_entry_new();
    if (!e) return berr_set(BERR_INTERNAL, "out of memory");
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, perm);
    archive_entry_set_size(e, (la_int64_t)size);
    archive_entry_set_mtime(e, 0, 0);
    int rc = archive_write_header(w->a, e) != ARCHIVE_OK
                 ? berr_set(BERR_IO, "archive %s: %s", name, archive_error_string(w->a))
                 : 0;
    archive_entry_free(e);
    return rc;
}

int tar_writer_file(tar_writer *w, const char *name, uint64_t size)
{
    return writer_header(w, name, AE_IFREG, 0644, size);
}

int tar_writer_dir(tar_writer *w, const char *name)
{
    return writer_header(w, name, AE_IFDIR, 0755, 0);
}

int tar_writer_write(tar_writer *w, const void *data, size_t len)
{
    while (len) {
        la_ssize_t n = archive_write_data(w->a, data, len);
        if (n <= 0) return berr_set(BERR_IO, "archive write: %s", archive_error_string(w->a));
        data = (const char *)data + n;
        len -= (size_t)n;
    }
    return 0;
}

int tar_writer_close(tar_writer *w)
{
    int rc = archive_write_close(w->a) != ARCHIVE_OK
                 ? berr_set(BERR_IO, "archive: %s", archive_error_string(w->a))
                 : 0;
    archive_write_free(w->a);
    free(w);
    return rc;
}
