/*
 * cborlazy: see cborlazy.h. Each libcbor function berth calls (src/trust/notary.c's COSE
 * envelopes) is a trampoline (util/lazylib.h); one missing from CBORLAZY_FUNCS fails the link.
 */
#include "util/cborlazy.h"
#include "util/err.h"

#if defined(BERTH_LAZYLIBS) && BERTH_LAZYLIBS

#include "util/lazylib.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#define CBORLAZY_FUNCS(X)                                                                          \
    X(cbor_array_handle)                                                                           \
    X(cbor_array_push)                                                                             \
    X(cbor_array_size)                                                                             \
    X(cbor_build_bytestring)                                                                       \
    X(cbor_build_string)                                                                           \
    X(cbor_bytestring_handle)                                                                      \
    X(cbor_bytestring_is_definite)                                                                 \
    X(cbor_bytestring_length)                                                                      \
    X(cbor_decref)                                                                                 \
    X(cbor_get_int)                                                                                \
    X(cbor_incref)                                                                                 \
    X(cbor_isa_array)                                                                              \
    X(cbor_isa_bytestring)                                                                         \
    X(cbor_isa_map)                                                                                \
    X(cbor_isa_negint)                                                                             \
    X(cbor_isa_string)                                                                             \
    X(cbor_isa_tag)                                                                                \
    X(cbor_isa_uint)                                                                               \
    X(cbor_load)                                                                                   \
    X(cbor_map_handle)                                                                             \
    X(cbor_map_size)                                                                               \
    X(cbor_move)                                                                                   \
    X(cbor_new_definite_array)                                                                     \
    X(cbor_serialize_alloc)                                                                        \
    X(cbor_string_handle)                                                                          \
    X(cbor_string_is_definite)                                                                     \
    X(cbor_string_length)                                                                          \
    X(cbor_tag_item)                                                                               \
    X(cbor_tag_value)

#define POINTER(n) LAZYLIB_POINTER(cborlazy, "libcbor", n)
CBORLAZY_FUNCS(POINTER)
#define TRAMPOLINE(n) LAZYLIB_TRAMPOLINE(cborlazy, n)
CBORLAZY_FUNCS(TRAMPOLINE)

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char load_error[512];

static void load(void)
{
    void *lib = dlopen("libcbor.so.0.8", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(load_error, sizeof load_error, "cannot load libcbor: %s", dlerror());
        return;
    }
#define RESOLVE(n) LAZYLIB_RESOLVE(cborlazy, lib, n, load_error, sizeof load_error, "libcbor")
    CBORLAZY_FUNCS(RESOLVE)
}

int cborlazy_load(void)
{
    pthread_once(&once, load);
    return load_error[0] ? berr_set(BERR_INTERNAL, "%s", load_error) : 0;
}

#else

int cborlazy_load(void)
{
    return 0;
}

#endif
