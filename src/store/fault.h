/*
 * store/fault: fault injection below the store, as SQLite and curl test themselves. A test arms a
 * kind of system call (write, fsync, rename, allocation) to fail at its nth call from now, with
 * an errno of its choosing; the store's calls of that kind go through store_fault_hit first. So
 * the error branches of the store run for real, and a test can check that every failure leaves
 * nothing committed half-way. Disarmed (always, outside tests) a check is one relaxed atomic load.
 */
#ifndef BERTH_STORE_FAULT_H
#define BERTH_STORE_FAULT_H

#include <stdbool.h>

typedef enum {
    STORE_FAULT_WRITE,  /* write(2) of blob and upload data, upload state */
    STORE_FAULT_FSYNC,  /* fsync/fdatasync of files and directories */
    STORE_FAULT_RENAME, /* rename(2) into blobs/, to the trash, of upload state */
    STORE_FAULT_ALLOC,  /* the upload write buffer */
    STORE_FAULT__COUNT
} store_fault_kind;

/* The nth call of kind from now fails with err (n = 0 disarms the kind). */
void store_fault_arm(store_fault_kind kind, long n, int err);
/* Whether this call of kind is the armed one (errno is then set); counts the call. */
bool store_fault_hit(store_fault_kind kind);
/* Whether the armed fault of kind has fired since it was armed. */
bool store_fault_fired(store_fault_kind kind);

#endif
