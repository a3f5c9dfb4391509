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

#endif
