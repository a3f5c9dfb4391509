/*
 * err: the per-thread error detail and the table mapping each berth error code to its OCI code
 * string and HTTP status (distribution-spec, "Error Codes").
 */
#include "util/err.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char err_detail[512];

static const struct {
    const char *name;
    int status;
} err_table[BERR__COUNT] = {
    [BERR_OK] = {"OK", 200},
    [BERR_BLOB_UNKNOWN] = {"BLOB_UNKNOWN", 404},
    [BERR_BLOB_UPLOAD_INVALID] = {"BLOB_UPLOAD_INVALID", 400},
    [BERR_BLOB_UPLOAD_UNKNOWN] = {"BLOB_UPLOAD_UNKNOWN", 404},
    [BERR_DIGEST_INVALID] = {"DIGEST_INVALID", 400},
    [BERR_MANIFEST_BLOB_UNKNOWN] = {"MANIFEST_BLOB_UNKNOWN", 400},
    [BERR_MANIFEST_INVALID] = {"MANIFEST_INVALID", 400},
    [BERR_MANIFEST_UNKNOWN] = {"MANIFEST_UNKNOWN", 404},
    [BERR_NAME_INVALID] = {"NAME_INVALID", 400},
    [BERR_NAME_UNKNOWN] = {"NAME_UNKNOWN", 404},
    [BERR_SIZE_INVALID] = {"SIZE_INVALID", 400},
    [BERR_UNAUTHORIZED] = {"UNAUTHORIZED", 401},
    [BERR_DENIED] = {"DENIED", 403},
    [BERR_UNSUPPORTED] = {"UNSUPPORTED", 405},
    [BERR_TOOMANYREQUESTS] = {"TOOMANYREQUESTS", 429},
    [BERR_PAGINATION_NUMBER_INVALID] = {"PAGINATION_NUMBER_INVALID", 400},
    [BERR_RANGE_INVALID] = {"BLOB_UPLOAD_INVALID", 416},
    [BERR_TOO_LARGE] = {"SIZE_INVALID", 413},
    [BERR_NOT_FOUND] = {"NOT_FOUND", 404},
    [BERR_METHOD] = {"UNSUPPORTED", 405},
    [BERR_BAD_REQUEST] = {"UNSUPPORTED", 400},
    [BERR_CONFLICT] = {"DENIED", 409},
    [BERR_CONFIG] = {"UNKNOWN", 500},
    [BERR_IO] = {"UNKNOWN", 500},
    [BERR_STORAGE_FULL] = {"DENIED", 507},
    [BERR_INTERNAL] = {"UNKNOWN", 500},
    [BERR_UNAVAILABLE] = {"UNAVAILABLE", 503},
};

int berr_set(berr code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_detail, sizeof err_detail, fmt, ap);
    va_end(ap);
    return -(int)code;
}

int berr_rewrap(berr code, const char *prefix)
{
    char keep[sizeof err_detail];
    snprintf(keep, sizeof keep, "%s", err_detail);
    return berr_set(code, "%s%s", prefix ? prefix : "", keep);
}

const char *berr_msg(void)
{
    return err_detail;
}

void berr_clear(void)
{
    err_detail[0] = '\0';
}

const char *berr_code_name(berr code)
{
    return (code > 0 && code < BERR__COUNT) ? err_table[code].name : "UNKNOWN";
}

int berr_http_status(berr code)
{
    return (code > 0 && code < BERR__COUNT) ? err_table[code].status : 500;
}
