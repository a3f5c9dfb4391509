/*
 * Fuzzes manifest and index validation for PUT (reg_manifest_parse, src/registry/manifest.c).
 * Input: a manifest body, optionally preceded by one "Content-Type: <value>\n" line (the request
 * header; without it none is sent). An accepted manifest has one of the four supported media
 * types, points at the caller's bytes, lists only valid digests (config first for an image, the
 * children for an index) and, when it has annotations, a JSON object for them; nothing leaks.
 */
#include "fuzz.h"
#include "registry/registry.h"
#include "util/digest.h"
#include "util/err.h"

#include <jansson.h>

static bool supported(const char *mt)
{
    return !strcmp(mt, "application/vnd.oci.image.manifest.v1+json") ||
           !strcmp(mt, "application/vnd.oci.image.index.v1+json") ||
           !strcmp(mt, "application/vnd.docker.distribution.manifest.v2+json") ||
           !strcmp(mt, "application/vnd.docker.distribution.manifest.list.v2+json");
}

static bool is_index(const char *mt)
{
    return strstr(mt, "index") || strstr(mt, "list");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *ct = NULL;
    static const char hdr[] = "Content-Type: ";
    if (size >= sizeof hdr - 1 && !memcmp(data, hdr, sizeof hdr - 1)) {
        const uint8_t *nl = memchr(data, '\n', size);
        if (nl) {
            ct = fuzz_cstr(data + sizeof hdr - 1, (size_t)(nl - data) - (sizeof hdr - 1));
            size -= (size_t)(nl + 1 - data);
            data = nl + 1;
        }
    }
    /* an exact-size copy, so a read past the body is caught */
    char *body = malloc(size ? size : 1);
    if (!body) abort();
    memcpy(body, data, size);

    store_manifest_put_req req;
    memset(&req, 0xa5, sizeof req);
    reg_manifest_parsed *p = (reg_manifest_parsed *)&req; /* must be reset to NULL on failure */
    int rc = reg_manifest_parse(body, size, ct, &req, &p);
    if (rc < 0) {
        FUZZ_ASSERT(p == NULL);
        FUZZ_ASSERT(rc == -BERR_MANIFEST_INVALID || rc == -BERR_INTERNAL);
    } else {
        FUZZ_ASSERT(rc == 0 && p != NULL);
        FUZZ_ASSERT(req.media_type && supported(req.media_type));
        FUZZ_ASSERT(req.content == body && req.size == size);
        if (is_index(req.media_type)) {
            FUZZ_ASSERT(req.nblobs == 0);
            for (size_t i = 0; i < req.nchildren; i++)
                FUZZ_ASSERT(digest_parse(req.children[i], NULL) == 0);
        } else {
            FUZZ_ASSERT(req.nchildren == 0 && req.nblobs >= 1); /* the config comes first */
            for (size_t i = 0; i < req.nblobs; i++)
                FUZZ_ASSERT(digest_parse(req.blobs[i], NULL) == 0);
        }
        if (req.subject) FUZZ_ASSERT(digest_parse(req.subject, NULL) == 0);
        if (req.annotations_json) {
            json_t *a = json_loads(req.annotations_json, 0, NULL);
            FUZZ_ASSERT(json_is_object(a) && json_object_size(a) > 0);
            json_decref(a);
        }
        /* the body alone is judged the same when its own mediaType is sent as Content-Type */
        store_manifest_put_req req2;
        reg_manifest_parsed *p2;
        FUZZ_ASSERT(reg_manifest_parse(body, size, req.media_type, &req2, &p2) == 0);
        FUZZ_ASSERT(!strcmp(req2.media_type, req.media_type) && req2.nblobs == req.nblobs &&
                    req2.nchildren == req.nchildren);
        reg_manifest_parsed_free(p2);
        reg_manifest_parsed_free(p);
    }
    free(body);
    free(ct);
    return 0;
}
