/*
 * Fuzzes margo.yaml checking (src/margo/margo.c): YAML to JSON (the same converter as Chart.yaml)
 * and the ApplicationDescription rules. An accepted description has a version and an id that
 * matches ^[a-z0-9-]{1,200}$; nothing leaks or crashes.
 */
#include "fuzz.h"
#include "helm/helm.h"
#include "margo/margo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *d = NULL;
    if (helm_yaml_to_json((const char *)data, size, "margo.yaml", &d) == 0) {
        const char *version = NULL;
        if (margo_check_description(d, &version) == 0) {
            FUZZ_ASSERT(version && *version);
            json_t *md = json_object_get(d, "metadata");
            const char *id = json_string_value(json_object_get(md, "id"));
            if (!id) id = json_string_value(json_object_get(d, "id"));
            FUZZ_ASSERT(id && strlen(id) >= 1 && strlen(id) <= 200);
            for (const char *p = id; *p; p++)
                FUZZ_ASSERT((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-');
        }
        json_decref(d);
    }
    return 0;
}
