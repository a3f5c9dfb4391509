/* Unit tests for src/util/tlslazy.c, cborlazy.c and mlazy.c: GnuTLS (libcbor) is not mapped
 * until tlslazy_load() (cborlazy_load()), then its functions answer through the trampolines;
 * SQLite's SQL math functions answer through mlazy's forwarders. (That libm stays unmapped until then is checked on the
 * release binary by tests/integration/server.sh: this ASan build maps libm for ASan itself.) */
#include "unit.h"
#include "util/err.h"
#include "util/cborlazy.h"
#include "util/tlslazy.h"

#include <cbor.h>

#include <gnutls/gnutls.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

static bool mapped(const char *lib)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096];
    bool found = false;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, lib)) found = true;
    if (f) fclose(f);
    return found;
}

static double sql_number(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s = NULL;
    double v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_double(s, 0);
    else
        printf("  %s: %s\n", sql, sqlite3_errmsg(db));
    sqlite3_finalize(s);
    return v;
}

int main(void)
{
#if defined(BERTH_LAZYLIBS) && BERTH_LAZYLIBS
    CHECK(!mapped("libgnutls"));
    CHECK(!mapped("libcbor"));
#endif
    /* libcbor (Notary COSE envelopes) the same way */
    CHECK(cborlazy_load() == 0);
    CHECK(mapped("libcbor"));
    {
        unsigned char enc[] = {0x82, 0x01, 0x42, 'h', 'i'}; /* [1, h'6869'] */
        struct cbor_load_result lr;
        cbor_item_t *it = cbor_load(enc, sizeof enc, &lr);
        CHECK(it && lr.error.code == CBOR_ERR_NONE && cbor_isa_array(it) &&
              cbor_array_size(it) == 2);
        if (it) cbor_decref(&it);
    }
    CHECK(tlslazy_load() == 0);
    CHECK(tlslazy_load() == 0); /* once */
    CHECK(mapped("libgnutls"));
    CHECK_STR(gnutls_strerror(GNUTLS_E_SUCCESS), "Success.");
    CHECK(gnutls_strerror(GNUTLS_E_MEMORY_ERROR) != NULL);
    gnutls_certificate_credentials_t cred = NULL;
    CHECK(gnutls_certificate_allocate_credentials(&cred) == 0 && cred);
    gnutls_certificate_free_credentials(cred);
    gnutls_datum_t d = {0};
    CHECK(gnutls_load_file("/proc/self/cmdline", &d) == 0 && d.size > 0);
    gnutls_free(d.data);

    sqlite3 *db = NULL;
    CHECK(sqlite3_open(":memory:", &db) == SQLITE_OK);
    CHECK(sql_number(db, "SELECT sqrt(16.0)") == 4.0);
    CHECK(sql_number(db, "SELECT pow(2, 10)") == 1024.0);
    CHECK(sql_number(db, "SELECT trunc(-2.5)") == -2.0);
    CHECK(sql_number(db, "SELECT atan2(0, 1)") == 0.0);
    double e = sql_number(db, "SELECT ln(exp(1.0))");
    CHECK(e > 0.999999 && e < 1.000001);
    sqlite3_close(db);
    UNIT_DONE();
}
