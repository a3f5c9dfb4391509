/*
 * tlslazy: see tlslazy.h. Each GnuTLS function berth or libmicrohttpd calls is a trampoline
 * (util/lazylib.h); a function missing from TLSLAZY_FUNCS fails the link, never the run.
 */
#include "util/tlslazy.h"
#include "util/err.h"
#include "util/lazylib.h"

#if defined(BERTH_LAZYLIBS) && BERTH_LAZYLIBS

#include <dlfcn.h>
#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define TLSLAZY_FUNCS(X)                                                                           \
    /* libmicrohttpd */                                                                            \
    X(gnutls_alpn_set_protocols)                                                                   \
    X(gnutls_bye)                                                                                  \
    X(gnutls_certificate_allocate_credentials)                                                     \
    X(gnutls_certificate_free_credentials)                                                         \
    X(gnutls_certificate_server_set_request)                                                       \
    X(gnutls_certificate_set_dh_params)                                                            \
    X(gnutls_certificate_set_retrieve_function2)                                                   \
    X(gnutls_certificate_set_retrieve_function3)                                                   \
    X(gnutls_certificate_set_x509_key_mem)                                                         \
    X(gnutls_certificate_set_x509_key_mem2)                                                        \
    X(gnutls_certificate_set_x509_trust_mem)                                                       \
    X(gnutls_cipher_get)                                                                           \
    X(gnutls_credentials_set)                                                                      \
    X(gnutls_deinit)                                                                               \
    X(gnutls_dh_params_deinit)                                                                     \
    X(gnutls_dh_params_import_pkcs3)                                                               \
    X(gnutls_dh_params_init)                                                                       \
    X(gnutls_handshake)                                                                            \
    X(gnutls_init)                                                                                 \
    X(gnutls_priority_deinit)                                                                      \
    X(gnutls_priority_init)                                                                        \
    X(gnutls_priority_set)                                                                         \
    X(gnutls_protocol_get_version)                                                                 \
    X(gnutls_psk_allocate_server_credentials)                                                      \
    X(gnutls_psk_free_server_credentials)                                                          \
    X(gnutls_psk_set_server_credentials_function)                                                  \
    X(gnutls_record_check_pending)                                                                 \
    X(gnutls_record_get_direction)                                                                 \
    X(gnutls_record_recv)                                                                          \
    X(gnutls_record_send)                                                                          \
    X(gnutls_session_get_ptr)                                                                      \
    X(gnutls_session_set_ptr)                                                                      \
    X(gnutls_strerror)                                                                             \
    X(gnutls_transport_set_int2)                                                                   \
    /* http.tls.clientcas (http/server.c) */                                                       \
    X(gnutls_certificate_get_peers)                                                                \
    X(gnutls_certificate_verify_peers2)                                                            \
    /* auth.token (auth/token.c) */                                                                \
    X(gnutls_encode_rs_value)                                                                      \
    X(gnutls_load_file)                                                                            \
    X(gnutls_pubkey_deinit)                                                                        \
    X(gnutls_pubkey_import_x509)                                                                   \
    X(gnutls_pubkey_init)                                                                          \
    X(gnutls_pubkey_verify_data2)                                                                  \
    X(gnutls_x509_crt_deinit)                                                                      \
    X(gnutls_x509_crt_list_import2)                                                                \
    /* trust: Notary Project and Sigstore-bundle signatures (trust/notary.c, trust/sigstore.c) */  \
    X(gnutls_certificate_verification_status_print)                                                \
    X(gnutls_pk_to_sign)                                                                           \
    X(gnutls_pubkey_get_pk_algorithm)                                                              \
    X(gnutls_pubkey_verify_hash2)                                                                  \
    X(gnutls_x509_crt_check_issuer)                                                                \
    X(gnutls_x509_crt_get_activation_time)                                                         \
    X(gnutls_x509_crt_get_basic_constraints)                                                       \
    X(gnutls_x509_crt_get_dn3)                                                                     \
    X(gnutls_x509_crt_get_dn_by_oid)                                                               \
    X(gnutls_x509_crt_get_expiration_time)                                                         \
    X(gnutls_x509_crt_get_key_purpose_oid)                                                         \
    X(gnutls_x509_crt_get_key_usage)                                                               \
    X(gnutls_x509_crt_get_pk_algorithm)                                                            \
    X(gnutls_x509_crt_get_signature_algorithm)                                                     \
    X(gnutls_x509_crt_import)                                                                      \
    X(gnutls_x509_crt_init)                                                                        \
    X(gnutls_x509_crt_verify)                                                                      \
    X(gnutls_x509_trust_list_add_trust_dir)                                                        \
    X(gnutls_x509_trust_list_add_trust_file)                                                       \
    X(gnutls_x509_trust_list_deinit)                                                               \
    X(gnutls_x509_trust_list_init)                                                                 \
    X(gnutls_x509_trust_list_verify_crt2)                                                          \
    /* trust keys (trust/cosign.c) */                                                              \
    X(gnutls_pubkey_import)

#define POINTER(n) LAZYLIB_POINTER(tlslazy, "GnuTLS", n)
TLSLAZY_FUNCS(POINTER)
#define TRAMPOLINE(n) LAZYLIB_TRAMPOLINE(tlslazy, n)
TLSLAZY_FUNCS(TRAMPOLINE)

/* GnuTLS's allocators are variables; these are its defaults (malloc, free) */
gnutls_alloc_function gnutls_malloc = malloc;
gnutls_free_function gnutls_free = free;

/* libmicrohttpd's constructor calls these before main; a loaded GnuTLS initialised itself */
int gnutls_global_init(void)
{
    return 0;
}

void gnutls_global_deinit(void) {}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char load_error[512];

static void load(void)
{
    void *lib = dlopen("libgnutls.so.30", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(load_error, sizeof load_error, "cannot load GnuTLS: %s", dlerror());
        return;
    }
#define RESOLVE(n) LAZYLIB_RESOLVE(tlslazy, lib, n, load_error, sizeof load_error, "GnuTLS")
    TLSLAZY_FUNCS(RESOLVE)
}

int tlslazy_load(void)
{
    pthread_once(&once, load);
    return load_error[0] ? berr_set(BERR_INTERNAL, "%s", load_error) : 0;
}

#else

int tlslazy_load(void)
{
    return 0;
}

#endif
