/*
 * store/fault: see fault.h.
 */
#include "store/fault.h"

#include <errno.h>
#include <stdatomic.h>

static struct {
    atomic_long left; /* calls until the fault; 0: disarmed */
    int err;
    atomic_bool fired;
} faults[STORE_FAULT__COUNT];

void store_fault_arm(store_fault_kind kind, long n, int err)
{
    faults[kind].err = err;
    atomic_store(&faults[kind].fired, false);
    atomic_store(&faults[kind].left, n);
}

bool store_fault_hit(store_fault_kind kind)
{
    if (atomic_load_explicit(&faults[kind].left, memory_order_relaxed) <= 0) return false;
    if (atomic_fetch_sub(&faults[kind].left, 1) != 1) return false;
    atomic_store(&faults[kind].fired, true);
    errno = faults[kind].err;
    return true;
}

bool store_fault_fired(store_fault_kind kind)
{
    return atomic_load(&faults[kind].fired);
}
