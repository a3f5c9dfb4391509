/* Unit tests for src/http/bigsend.c: which sendfile calls are widened, and by how much. Only a
 * call of exactly libmicrohttpd's 128 KiB, on the registered file and socket, inside the body,
 * grows (to 2 MiB at most), and never into the body's last 128 KiB, which stays libmicrohttpd's
 * own final call (the one that uncorks the socket). The end-to-end check (bytes on the wire,
 * the number of calls) is tests/integration/api.sh. */
#include "unit.h"
#include "http/bigsend.h"

#define K128 (128u * 1024)
#define M2 (2u * 1024 * 1024)

int main(void)
{
    /* nothing registered: every call passes unchanged */
    CHECK(bigsend_count(5, 7, 0, K128) == K128);

    /* a whole 10 MiB file answered on socket 5 from descriptor 7 */
    bigsend_allow(7, 5, 0, 10u << 20);
    CHECK(bigsend_count(5, 7, 0, K128) == M2);
    CHECK(bigsend_count(5, 7, 3u << 20, K128) == M2);
    /* 2 MiB left: all but the last 128 KiB */
    CHECK(bigsend_count(5, 7, 8u << 20, K128) == M2 - K128);
    /* 256 KiB or less left: unchanged, so libmicrohttpd sends the tail itself */
    CHECK(bigsend_count(5, 7, (10u << 20) - 2 * K128, K128) == K128);
    CHECK(bigsend_count(5, 7, (10u << 20) - 2 * K128 - 1, K128) == K128 + 1);
    /* other sizes (libmicrohttpd's final call), sockets, descriptors, offsets: unchanged */
    CHECK(bigsend_count(5, 7, 0, 4096) == 4096);
    CHECK(bigsend_count(6, 7, 0, K128) == K128);
    CHECK(bigsend_count(5, 8, 0, K128) == K128);
    CHECK(bigsend_count(5, 7, 10u << 20, K128) == K128);

    /* a range: body at file offsets [1000, 1000 + 5 MiB) */
    bigsend_allow(7, 5, 1000, 1000 + (5u << 20));
    CHECK(bigsend_count(5, 7, 999, K128) == K128);
    CHECK(bigsend_count(5, 7, 1000, K128) == M2);
    CHECK(bigsend_count(5, 7, 1000 + (4u << 20), K128) == (1u << 20) - K128);

    /* forgotten: unchanged again; forgetting with another socket leaves it registered */
    bigsend_forget(7, 6);
    CHECK(bigsend_count(5, 7, 1000, K128) == M2);
    bigsend_forget(7, 5);
    CHECK(bigsend_count(5, 7, 1000, K128) == K128);

    /* descriptors sharing a slot: the later registration wins, the earlier one is not widened */
    bigsend_allow(3, 5, 0, 10u << 20);
    bigsend_allow(3 + 256, 9, 0, 10u << 20);
    CHECK(bigsend_count(5, 3, 0, K128) == K128);
    CHECK(bigsend_count(9, 3 + 256, 0, K128) == M2);
    UNIT_DONE();
}
