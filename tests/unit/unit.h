/* unit.h: a minimal assertion harness for berth's C unit tests; prints "N passed, N failed". */
#ifndef BERTH_UNIT_H
#define BERTH_UNIT_H
#include <stdio.h>
#include <string.h>

static int unit_pass, unit_fail;
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            unit_pass++;                                                                           \
        } else {                                                                                   \
            unit_fail++;                                                                           \
            printf("FAIL - %s:%d: %s\n", __FILE__, __LINE__, #cond);                               \
        }                                                                                          \
    } while (0)
#define CHECK_STR(a, b) CHECK(strcmp((a), (b)) == 0)
#define UNIT_DONE()                                                                                \
    do {                                                                                           \
        printf("%d passed, %d failed\n", unit_pass, unit_fail);                                    \
        return unit_fail ? 1 : 0;                                                                  \
    } while (0)
#endif
