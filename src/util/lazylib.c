/*
 * lazylib: see lazylib.h (what the lazily loaded libraries share).
 */
#include "util/lazylib.h"

#include <stdio.h>
#include <stdlib.h>

_Noreturn void lazylib_unloaded(const char *lib, const char *fn)
{
    fprintf(stderr, "berth: internal error: %s called before %s was loaded\n", fn, lib);
    abort();
}
