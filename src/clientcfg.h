/* clientcfg: client configuration snippets for `berth client-config` (see clientcfg.c). */
#ifndef BERTH_CLIENTCFG_H
#define BERTH_CLIENTCFG_H

#include <stddef.h>
#include <stdio.h>

/* client: containerd, k3s, docker or podman. Returns 0, or -1 for an unknown client. */
int clientcfg_print(FILE *out, const char *client, const char *endpoint, const char **regs,
                    size_t nregs);

#endif
