/*
 * cborlazy: libcbor loaded with dlopen when a COSE signature envelope is first read (Notary
 * Project signatures, src/trust/notary.c), not at start: a site without Notary COSE signatures
 * never maps it, and the binary starts where libcbor is not installed (the .deb recommends it;
 * the image carries it). Its functions are trampolines (util/lazylib.h), as GnuTLS's are.
 * On architectures without a trampoline the Makefile links libcbor and this only reports success.
 */
#ifndef BERTH_CBORLAZY_H
#define BERTH_CBORLAZY_H

/* Loads libcbor once (thread-safe). 0, or -BERR_INTERNAL with the loader's message. */
int cborlazy_load(void);

#endif
