/*
 * lazylib: the machinery behind a library loaded with dlopen when first needed (tlslazy for
 * GnuTLS, cborlazy for libcbor). Each function of the library that berth calls is a
 * one-instruction trampoline (`jmp *ptr`) written in assembly under the function's own name, so
 * callers include the library's real header, need no wrapper and pass any arguments untouched.
 * The pointer starts on a handler that names the function and aborts (a call before the load is
 * a bug, never a silent crash); the loader fills every pointer from dlsym or fails as a whole.
 * A function missing from a library's list fails the link (undefined reference), never the run.
 * Only with BERTH_LAZYLIBS (x86-64, AArch64); elsewhere the Makefile links the libraries.
 *
 * A library lists its functions as an X-macro LIST(X) and writes, at file scope:
 *   LIST(LAZYLIB_POINTER_<tag>) and LIST(LAZYLIB_TRAMPOLINE_<tag>) through two one-line macros
 *   binding its prefix (see tlslazy.c), then resolves with LAZYLIB_RESOLVE in its loader.
 */
#ifndef BERTH_LAZYLIB_H
#define BERTH_LAZYLIB_H

#include <stddef.h>

/* Prints "berth: internal error: <fn> called before <lib> was loaded" and aborts. */
_Noreturn void lazylib_unloaded(const char *lib, const char *fn);

/* The pointer of function n under prefix p (hidden: the trampoline reaches it PC-relative),
 * first on a handler that aborts naming it. */
#define LAZYLIB_POINTER(p, what, n)                                                                \
    static void p##_miss_##n(void)                                                                 \
    {                                                                                              \
        lazylib_unloaded(what, #n);                                                                \
    }                                                                                              \
    __attribute__((visibility("hidden"))) void (*p##_p_##n)(void) = p##_miss_##n;

#if defined(BERTH_LAZYLIBS) && BERTH_LAZYLIBS
#if defined(__x86_64__)
#define LAZYLIB_TRAMPOLINE(p, n)                                                                   \
    __asm__(".text\n.globl " #n "\n.type " #n ",@function\n.p2align 4\n" #n ":\n\tjmp *" #p        \
            "_p_" #n "(%rip)\n.size " #n ",.-" #n "\n");
#elif defined(__aarch64__)
#define LAZYLIB_TRAMPOLINE(p, n)                                                                   \
    __asm__(".text\n.globl " #n "\n.type " #n ",%function\n.p2align 4\n" #n ":\n\tadrp x16, " #p   \
            "_p_" #n "\n\tldr x16, [x16, :lo12:" #p "_p_" #n "]\n\tbr x16\n.size " #n ",.-" #n     \
            "\n");
#else
#error                                                                                             \
    "BERTH_LAZYLIBS needs a trampoline for this architecture (the Makefile links libraries instead)"
#endif
#endif /* BERTH_LAZYLIBS */

/* In a loader: points p's pointer for n at the library's n (handle lib), or writes why not to
 * err (size errlen) and returns from the loader. */
#define LAZYLIB_RESOLVE(p, lib, n, err, errlen, what)                                              \
    {                                                                                              \
        void *sym_ = dlsym(lib, #n);                                                               \
        if (!sym_) {                                                                               \
            snprintf(err, errlen, "%s lacks %s", what, #n);                                        \
            return;                                                                                \
        }                                                                                          \
        *(void **)&p##_p_##n = sym_;                                                               \
    }

#endif
