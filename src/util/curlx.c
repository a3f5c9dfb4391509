/*
 * curlx: see curlx.h.
 */
#include "util/curlx.h"
#include "util/err.h"
#include "util/log.h"

#include <dlfcn.h>
#include <stdbool.h>
#include <stddef.h>

curlx_api cx;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static bool curl_loaded;

static void load_curl(void)
{
    static const char *const names[] = {"libcurl-gnutls.so.4", "libcurl.so.4"};
    void *lib = NULL;
    for (size_t i = 0; !lib && i < 2; i++)
        lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        log_error("msg=\"cannot load libcurl: mirrors and S3 storage unavailable\" err=\"%s\"",
                  dlerror());
        return;
    }
#define SYM(field, name) *(void **)&cx.field = dlsym(lib, name)
    SYM(global_init, "curl_global_init");
    SYM(easy_init, "curl_easy_init");
    SYM(easy_cleanup, "curl_easy_cleanup");
    SYM(easy_reset, "curl_easy_reset");
    SYM(easy_setopt, "curl_easy_setopt");
    SYM(easy_perform, "curl_easy_perform");
    SYM(easy_getinfo, "curl_easy_getinfo");
    SYM(easy_strerror, "curl_easy_strerror");
    SYM(slist_append, "curl_slist_append");
    SYM(slist_free_all, "curl_slist_free_all");
    SYM(easy_escape, "curl_easy_escape");
    SYM(free, "curl_free");
#undef SYM
    void **fns = (void **)&cx;
    for (size_t i = 0; i < sizeof cx / sizeof(void *); i++)
        if (!fns[i]) {
            log_error("msg=\"libcurl lacks an entry point: mirrors and S3 storage unavailable\"");
            return;
        }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    curl_loaded = true;
}

int curlx_init(void)
{
    pthread_once(&curl_once, load_curl);
    return curl_loaded ? 0 : berr_set(BERR_CONFIG, "libcurl could not be loaded");
}

static void free_handle(void *h)
{
    curl_easy_cleanup(h);
}

void curlx_key_create(pthread_key_t *key)
{
    pthread_key_create(key, free_handle);
}

CURL *curlx_thread_handle(pthread_key_t key)
{
    if (curlx_init() < 0) return NULL;
    CURL *c = pthread_getspecific(key);
    if (!c) {
        c = curl_easy_init();
        pthread_setspecific(key, c);
    } else {
        curl_easy_reset(c);
    }
    return c;
}
