/*
 * err: berth's one error convention.
 *
 * Every fallible function returns an int: 0 on success, or a negative `berr` code. The code is
 * what the HTTP layer turns into a status and an OCI error body, so the same enum travels from the
 * store up to the handlers; the human-readable detail is kept per thread (like libgit2's
 * git_error_last) and read with berr_msg(). `return berr_set(BERR_X, "fmt", ...)` sets both.
 */
#ifndef BERTH_ERR_H
#define BERTH_ERR_H

typedef enum {
    BERR_OK = 0,
    /* OCI distribution-spec error codes */
    BERR_BLOB_UNKNOWN,
    BERR_BLOB_UPLOAD_INVALID,
    BERR_BLOB_UPLOAD_UNKNOWN,
    BERR_DIGEST_INVALID,
    BERR_MANIFEST_BLOB_UNKNOWN,
    BERR_MANIFEST_INVALID,
    BERR_MANIFEST_UNKNOWN,
    BERR_NAME_INVALID,
    BERR_NAME_UNKNOWN,
    BERR_SIZE_INVALID,
    BERR_UNAUTHORIZED,
    BERR_DENIED,
    BERR_UNSUPPORTED,
    BERR_TOOMANYREQUESTS,
    BERR_PAGINATION_NUMBER_INVALID, /* registry:2's code for a bad n */
    /* berth-internal conditions with their own statuses */
    BERR_RANGE_INVALID, /* 416: chunk out of order / range not satisfiable */
    BERR_TOO_LARGE,     /* 413: body over a limit */
    BERR_NOT_FOUND,     /* 404 for non-OCI paths */
    BERR_METHOD,        /* 405 method not allowed on this route */
    BERR_BAD_REQUEST,   /* 400 for non-OCI APIs (Helm): the request is malformed */
    BERR_CONFLICT,      /* 409: exists already (a chart version without overwrite) */
    BERR_CONFIG,        /* configuration problem (start-up only) */
    BERR_IO,            /* storage failure: 500 */
    BERR_STORAGE_FULL,  /* 507: the disk (or quota) is full; nothing stored was harmed */
    BERR_INTERNAL,      /* bug or resource exhaustion: 500 */
    BERR_UNAVAILABLE,   /* 503: storage not writable, shutting down */
    BERR__COUNT
} berr;

/* Sets the thread's error detail and returns -code, for `return berr_set(...)`. */
int berr_set(berr code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Re-files the thread's error under another code with a prefix ("margo: <detail>"): safe where
 * berr_set(code, "%s", berr_msg()) would read the buffer it writes. */
int berr_rewrap(berr code, const char *prefix);
/* Detail of the last error set on this thread ("" when none). */
const char *berr_msg(void);
/* Clears the thread's detail. */
void berr_clear(void);
/* The OCI code string ("BLOB_UNKNOWN"...) and the HTTP status of a code (positive enum value). */
const char *berr_code_name(berr code);
int berr_http_status(berr code);

#endif
