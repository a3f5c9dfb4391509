/*
 * curlx: libcurl loaded with dlopen on first use, not linked. With its TLS, LDAP, Kerberos and
 * SSH dependencies libcurl maps about 5 MiB, which a registry without mirrors or S3 storage (the
 * common case on a device) should not carry. The few entry points used are resolved once into
 * `cx`; the usual curl_* names are macros over it, so callers read like plain libcurl code.
 * Each user keeps one easy handle per thread (curlx_thread_handle), so connections are reused.
 */
#ifndef BERTH_CURLX_H
#define BERTH_CURLX_H

#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>
#include <pthread.h>

typedef struct {
    CURLcode (*global_init)(long);
    CURL *(*easy_init)(void);
    void (*easy_cleanup)(CURL *);
    void (*easy_reset)(CURL *);
    CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
    CURLcode (*easy_perform)(CURL *);
    CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
    const char *(*easy_strerror)(CURLcode);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
    char *(*easy_escape)(CURL *, const char *, int);
    void (*free)(void *);
} curlx_api;

extern curlx_api cx;

#undef curl_easy_setopt
#undef curl_easy_getinfo
#define curl_global_init cx.global_init
#define curl_easy_init cx.easy_init
#define curl_easy_cleanup cx.easy_cleanup
#define curl_easy_reset cx.easy_reset
#define curl_easy_setopt cx.easy_setopt
#define curl_easy_perform cx.easy_perform
#define curl_easy_getinfo cx.easy_getinfo
#define curl_easy_strerror cx.easy_strerror
#define curl_slist_append cx.slist_append
#define curl_slist_free_all cx.slist_free_all
#define curl_easy_escape cx.easy_escape
#define curl_free cx.free

/* Loads libcurl (once): 0, or -BERR_CONFIG when it cannot be loaded (logged once, naming what). */
int curlx_init(void);
/* This thread's easy handle for one user (key made with curlx_key_create), reset for a new
 * request; NULL when libcurl cannot be loaded. */
CURL *curlx_thread_handle(pthread_key_t key);
/* A thread key whose handles are cleaned up when their thread ends. */
void curlx_key_create(pthread_key_t *key);

#endif
