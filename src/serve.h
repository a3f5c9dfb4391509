/* serve: the registry's run loop, shared by `berth serve` and `berth bundle serve`. */
#ifndef BERTH_SERVE_H
#define BERTH_SERVE_H

#include "config.h"
#include "store/store.h"

#define BERTH_VERSION "0.1.0"

/* Blocks SIGTERM and SIGINT (taken by serve_run) before any thread starts. */
void serve_block_signals(void);
/* Serves st with cfg until SIGTERM or SIGINT; 0, or -1 when the server cannot start. */
int serve_run(config *cfg, store *st);

#endif
