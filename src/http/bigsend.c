/*
 * bigsend: blob bodies leave in sendfile calls of up to 2 MiB, not libmicrohttpd's 128 KiB.
 *
 * In its event-loop modes libmicrohttpd 0.9.75 caps each sendfile at 128 KiB (a constant,
 * MHD_SENFILE_CHUNK_; 2 MiB only in thread-per-connection mode), so a 256 MiB blob costs 2049
 * sendfile calls and as many epoll_waits where nginx makes 131. Measured on one core (berth and
 * nginx pinned to CPU 0, curl to CPU 1, 32 GETs of 256 MiB each, 4 runs): 1.14-1.23x nginx's
 * CPU per GiB as it was, 0.86-1.08x with 2 MiB calls.
 *
 * The link passes `-Wl,--wrap=sendfile64`, so libmicrohttpd's calls (linked from its static
 * archive) come here. http_reply_fd registers each file response: its file descriptor, the
 * connection's socket and the file offsets where the body starts and ends. A call that asks
 * for exactly 128 KiB (libmicrohttpd's cap, so more of the body is left) on a registered pair,
 * at an offset inside the registered body, is widened to 2 MiB, never past the body's end.
 * libmicrohttpd adds whatever sendfile returns to its position, and the end bound keeps that
 * inside the response, so ranges and keep-alive stay exact; the last 128 KiB are left to
 * libmicrohttpd's own final call, which pushes the tail out of the corked socket. Anything else
 * passes unchanged: a response not registered (or whose slot another took) just sends 128 KiB at a
 * time. Registrations are dropped when the response is replaced or its request completes. Where
 * libmicrohttpd is a shared library (other architectures) the wrap does not reach it and nothing
 * changes.
 */
#include "http/bigsend.h"

#include <pthread.h>
#include <sys/sendfile.h>

#define SLOTS 256
#define MHD_CHUNK (128 * 1024)
#define BIG_CHUNK (2 * 1024 * 1024)

typedef struct {
    bool live;
    int file_fd, sock_fd;
    uint64_t start, end; /* file offsets of the body: [start, end) */
} slot;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static slot slots[SLOTS];

void bigsend_allow(int file_fd, int sock_fd, uint64_t start, uint64_t end)
{
    if (file_fd < 0 || sock_fd < 0 || end <= start) return;
    pthread_mutex_lock(&mu);
    slots[(unsigned)file_fd % SLOTS] = (slot){true, file_fd, sock_fd, start, end};
    pthread_mutex_unlock(&mu);
}

void bigsend_forget(int file_fd, int sock_fd)
{
    if (file_fd < 0) return;
    pthread_mutex_lock(&mu);
    slot *s = &slots[(unsigned)file_fd % SLOTS];
    if (s->live && s->file_fd == file_fd && s->sock_fd == sock_fd) s->live = false;
    pthread_mutex_unlock(&mu);
}

size_t bigsend_count(int sock_fd, int file_fd, uint64_t off, size_t count)
{
    if (count != MHD_CHUNK || file_fd < 0) return count;
    size_t want = count;
    pthread_mutex_lock(&mu);
    const slot *s = &slots[(unsigned)file_fd % SLOTS];
    if (s->live && s->file_fd == file_fd && s->sock_fd == sock_fd && off >= s->start &&
        off < s->end) {
        /* the last 128 KiB stay libmicrohttpd's own call: on it, and only on it, libmicrohttpd
         * uncorks the socket to push the tail out (a widened call that reached the end would
         * leave the tail corked, for up to 200 ms) */
        uint64_t left = s->end - off;
        uint64_t mine = left > 2 * (uint64_t)MHD_CHUNK ? left - MHD_CHUNK : count;
        want = mine < BIG_CHUNK ? (size_t)mine : BIG_CHUNK;
    }
    pthread_mutex_unlock(&mu);
    return want;
}

ssize_t __real_sendfile64(int out_fd, int in_fd, off64_t *offset, size_t count);
ssize_t __wrap_sendfile64(int out_fd, int in_fd, off64_t *offset, size_t count);

ssize_t __wrap_sendfile64(int out_fd, int in_fd, off64_t *offset, size_t count)
{
    if (offset && *offset >= 0) count = bigsend_count(out_fd, in_fd, (uint64_t)*offset, count);
    return __real_sendfile64(out_fd, in_fd, offset, count);
}
