/*
 * tar: checks a gzip-compressed tar archive as it is read (libarchive, loaded with dlopen on first
 * use), never extracting it: one top-level directory, no absolute or ".." paths, no links that
 * leave the directory, no devices, optionally no setuid/setgid/sticky bits, a bound on the
 * unpacked size (checked from the declared sizes before anything is inflated), and optionally the
 * bytes of one file right below the top directory (Chart.yaml, compose.yaml). Used for Helm
 * charts and margo compose archives.
 */
#ifndef BERTH_TAR_H
#define BERTH_TAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *what;         /* "chart archive": the start of every message */
    int64_t max_uncompressed; /* bytes */
    bool symlinks_inside;     /* symbolic links are allowed when they stay inside the directory */
    bool no_special_bits;     /* refuse setuid, setgid and sticky bits */
    const char *capture;      /* a file right below the top directory to keep, or NULL */
    size_t capture_max;
    /* results */
    char top[256];  /* the top-level directory */
    char *captured; /* malloc'd, NUL-terminated; NULL when the file is absent */
    size_t captured_len;
} tar_scan_opts;

/* Reads the archive from fd (from offset 0). 0, or -BERR_BAD_REQUEST with a message naming the
 * rule and the entry; -BERR_UNAVAILABLE when libarchive cannot be loaded. */
int tar_scan(int fd, tar_scan_opts *o);
void tar_scan_free(tar_scan_opts *o);
/* Writes dir as a gzip tar whose one top-level directory is named top (files, directories and
 * symbolic links; permissions without setuid/setgid/sticky bits). */
int tar_create(const char *dir, const char *top, const char *out);
/* Extracts an archive that tar_scan accepted into dest (which exists). */
int tar_extract(int fd, const char *dest);

/* Streaming reader over fd from its current offset: plain, gzip or zstd tar (bundles, chart
 * contents). No path checks: callers decide what an entry name means. */
typedef struct tar_reader tar_reader;
typedef struct {
    const char *name;   /* valid until the next call */
    char type;          /* 'f' file, 'd' directory, 'l' symlink, 'h' hard link, 'o' other */
    uint64_t size;      /* of a file's data */
    int64_t header_pos; /* offset of this entry's header(s) in the uncompressed stream; at the
                           end, the offset of the end-of-archive marker */
    bool compressed;    /* the stream is gzip or zstd: offsets are not file offsets */
} tar_entry;
int tar_reader_open(int fd, const char *what, tar_reader **out);
/* 1 and the next entry, 0 at the end, or -BERR_BAD_REQUEST (truncated, not a tar). */
int tar_reader_next(tar_reader *r, tar_entry *e);
/* Reads the current entry's data: bytes read, 0 at its end, or -BERR_BAD_REQUEST. */
long tar_reader_read(tar_reader *r, void *buf, size_t len);
void tar_reader_close(tar_reader *r);

/* Streaming writer of a pax tar to fd (from its current offset), optionally compressed. */
typedef enum { TAR_PLAIN, TAR_GZIP, TAR_ZSTD } tar_compress;
typedef struct tar_writer tar_writer;
int tar_writer_open(int fd, tar_compress c, tar_writer **out);
int tar_writer_dir(tar_writer *w, const char *name);
/* Starts a regular file of exactly size bytes; its data follows with tar_writer_write. */
int tar_writer_file(tar_writer *w, const char *name, uint64_t size);
int tar_writer_write(tar_writer *w, const void *data, size_t len);
/* Finishes the archive (not the fd) and frees w; also the way to abandon it. */
int tar_writer_close(tar_writer *w);

#endif
