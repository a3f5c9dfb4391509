/*
 * tlslazy: GnuTLS loaded with dlopen when TLS is first needed, not at start.
 *
 * libmicrohttpd is linked statically, and its calls into GnuTLS (and berth's own, in the token
 * check and the client-certificate check) land on small trampolines (tlslazy.c) that jump
 * through a pointer filled by tlslazy_load(). A registry served over plain HTTP, the usual setup
 * behind a site proxy or on a device's loopback, then never maps GnuTLS and its eight
 * dependencies (p11-kit, gmp, hogweed, tasn1, idn2, unistring, ffi): about 2 MiB of RSS.
 *
 * tlslazy_load() is called before any TLS use: at start when http.tls or auth.token is set
 * (serve.c), and by the token check itself. A GnuTLS function reached before that aborts with a
 * message naming it (a bug, never a silent crash). gnutls_global_init/deinit, called by
 * libmicrohttpd's constructor before main, are no-ops: GnuTLS initialises itself when loaded.
 *
 * On architectures without a trampoline (not x86-64 or AArch64) the Makefile links GnuTLS and
 * libmicrohttpd dynamically as before and tlslazy_load() only reports success.
 */
#ifndef BERTH_TLSLAZY_H
#define BERTH_TLSLAZY_H

/* Loads GnuTLS once (thread-safe). 0, or -BERR_INTERNAL with the loader's message. */
int tlslazy_load(void);

#endif
