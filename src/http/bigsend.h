/*
 * bigsend: lets libmicrohttpd's sendfile of a registered file response go out in 2 MiB calls
 * instead of 128 KiB (see bigsend.c for why and how it stays inside the response).
 */
#ifndef BERTH_BIGSEND_H
#define BERTH_BIGSEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The body of the response sent from file_fd on socket sock_fd spans file offsets
 * [start, end). */
void bigsend_allow(int file_fd, int sock_fd, uint64_t start, uint64_t end);
/* The response from file_fd on sock_fd is done or replaced (no-op when not registered). */
void bigsend_forget(int file_fd, int sock_fd);
/* How many bytes a sendfile of `count` at `off` may send (count itself unless widened). */
size_t bigsend_count(int sock_fd, int file_fd, uint64_t off, size_t count);

#endif
