/*
 * Fuzzes margo.yaml checking (src/margo/margo.c): YAML to JSON (margo_yaml, the Chart.yaml
 * converter with line-naming syntax errors) and the ApplicationDescription rules. The verdict and
 * the findings agree (accepted exactly when there is no finding); an accepted description has a
 * version, every id it gives matches ^[a-z0-9-]{1,200}$, a catalog with named organizations and
 * component names of [a-z0-9-]; nothing leaks or crashes.
 */
#include "fuzz.h"
#include "helm/helm.h"
#include "margo/margo.h"

static bool id_ok(const char *id)
{
    if (!id || strlen(id) < 1 || strlen(id) > 200) return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-')) return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *d = NULL;
    if (margo_yaml((const char *)data, size, &d) != 0) return 0;
    const char *version = NULL;
    json_t *f = margo_description_findings(d);
    int rc = margo_check_description(d, &version);
    FUZZ_ASSERT((rc == 0) == (json_array_size(f) == 0));
    json_decref(f);
    if (rc == 0) {
        FUZZ_ASSERT(version && *version);
        json_t *md = json_object_get(d, "metadata");
        json_t *top = json_object_get(d, "id"), *mid = json_object_get(md, "id");
        FUZZ_ASSERT(top || mid);
        if (top && !json_is_null(top)) FUZZ_ASSERT(id_ok(json_string_value(top)));
        if (mid && !json_is_null(mid)) FUZZ_ASSERT(id_ok(json_string_value(mid)));
        json_t *orgs = json_object_get(json_object_get(md, "catalog"), "organization"), *o, *p, *c;
        FUZZ_ASSERT(json_array_size(orgs) > 0);
        size_t i, j;
        json_array_foreach(orgs, i, o) FUZZ_ASSERT(json_string_length(json_object_get(o, "name")));
        json_array_foreach(json_object_get(d, "deploymentProfiles"), i, p)
            json_array_foreach(json_object_get(p, "components"), j, c)
        {
            const char *n = json_string_value(json_object_get(c, "name"));
            FUZZ_ASSERT(n && *n);
            for (const char *q = n; *q; q++)
                FUZZ_ASSERT((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '-');
        }
    }
    json_decref(d);
    return 0;
}
