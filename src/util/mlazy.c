/*
 * mlazy: libm loaded on first use, not at start.
 *
 * SQLite, linked statically (see the Makefile), registers SQL math functions (acos ... trunc)
 * and FTS5's bm25 ranking calls log(); berth's SQL uses neither, and berth itself needs no libm.
 * Linking libm would still map it and run its start-up work (about 300 KiB of a 4 MiB idle
 * server). So these are the functions SQLite references: each resolves the real one from libm
 * on its first call (dlopen, once) and forwards to it. A function missing here fails the link.
 * Only built with BERTH_LAZYLIBS (x86-64, AArch64); elsewhere the Makefile links libm.
 */
#if defined(BERTH_LAZYLIBS) && BERTH_LAZYLIBS

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

static void *libm;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void load(void)
{
    libm = dlopen("libm.so.6", RTLD_NOW | RTLD_LOCAL);
    if (!libm) {
        fprintf(stderr, "berth: cannot load libm: %s\n", dlerror());
        abort();
    }
}

static void *resolve(const char *name)
{
    pthread_once(&once, load);
    void *p = dlsym(libm, name);
    if (!p) {
        fprintf(stderr, "berth: libm lacks %s\n", name);
        abort();
    }
    return p;
}

typedef double (*fn1)(double);
typedef double (*fn2)(double, double);

#define FORWARD(n, fn, params, args)                                                               \
    double n params                                                                                \
    {                                                                                              \
        static _Atomic(fn) f;                                                                      \
        fn g = atomic_load_explicit(&f, memory_order_acquire);                                     \
        if (!g) {                                                                                  \
            *(void **)&g = resolve(#n);                                                            \
            atomic_store_explicit(&f, g, memory_order_release);                                    \
        }                                                                                          \
        return g args;                                                                             \
    }
#define F1(n) FORWARD(n, fn1, (double x), (x))
#define F2(n) FORWARD(n, fn2, (double x, double y), (x, y))

/* clang-format off */
F1(acos) F1(acosh) F1(asin) F1(asinh) F1(atan) F2(atan2) F1(atanh) F1(cos) F1(cosh) F1(exp)
F2(fmod) F1(log) F2(pow) F1(sin) F1(sinh) F1(sqrt) F1(tan) F1(tanh) F1(trunc)
/* clang-format on */

#else
typedef int mlazy_unused; /* ISO C wants a translation unit to declare something */
#endif
