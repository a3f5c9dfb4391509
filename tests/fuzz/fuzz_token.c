/*
 * Fuzzes bearer-token verification (src/auth/token.c): JWT splitting, base64url, JSON headers and
 * claims, signature checks against a one-certificate bundle (its private key is not in the
 * repository: the seeds were signed with it once), iss/aud/exp/nbf. A token that verifies has a
 * non-empty subject and an access array; nothing leaks or crashes, whatever the input.
 */
#include "auth/auth.h"
#include "fuzz.h"

#include <stdio.h>
#include <unistd.h>

static const char bundle_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIDDTCCAfWgAwIBAgIUHMZrHSsDnd0/WmCl3JG9tzb2oR8wDQYJKoZIhvcNAQEL\n"
    "BQAwFTETMBEGA1UEAwwKZnV6ei10b2tlbjAgFw0yNjExMjkyMTI3MjNaGA8yMTI2\n"
    "MTEwNTIxMjcyM1owFTETMBEGA1UEAwwKZnV6ei10b2tlbjCCASIwDQYJKoZIhvcN\n"
    "AQEBBQADggEPADCCAQoCggEBAK3A36CXP+K+bT6pOsF2LdgbHzhVuJ8bqm1nhzKg\n"
    "paLr81fU2xObI/8IzETE4enJFyMlcnBT1V0SlLyFs5dA4gV7JCR4WgQbiGa+7Ca6\n"
    "p9p+deM2sYUNGgfOOkpYQb86c1OCjTzdlJvuc1hNg/av9UPLDWW+afnyDmxj1AFK\n"
    "SwRtfVzkaZcvbaUCZNHrjl0+ac0FssI9MjL964R4aKmUicTu266m/BP6Ldss9T2G\n"
    "21Q0YxSugcxl8boRDXjjkfmQDtnUwA1pYQ5/l3djddFnqomJYD8R75EDZVGXbULO\n"
    "GUAmwWQTim3qcH5BNnqXW+X96EBCpj3raqhpNuQA5QcqhXUCAwEAAaNTMFEwHQYD\n"
    "VR0OBBYEFJUZbne1jtZusBvS7NSug2OCPc1MMB8GA1UdIwQYMBaAFJUZbne1jtZu\n"
    "sBvS7NSug2OCPc1MMA8GA1UdEwEB/wQFMAMBAf8wDQYJKoZIhvcNAQELBQADggEB\n"
    "AEXYP2O7YEZG3WfGIkZtbg2G2BEsAOaDals1PM1+UTHFzgZZg0j35Kjxz64cTFTX\n"
    "VhB5twTE8dVhYpvuzHqer8PaNZ3xb1+EPWETUc9LuCepo84yYQADBXdA13S7jiu8\n"
    "t827YEFVHI/zOSHLD1Ew6kVk+hNGYtZh13ynFzBSdZJgHrcT6umxa76pgmfP1Mxh\n"
    "IjB6NyZP/3lIWOp5zRRvaD7BW2ND7sJvwLsv0KiOmqpamv9Rtc0oL/C5wjZwCTv2\n"
    "dbrt9LiOHoCV/NkFtSPTs5lPo7tJAL7bay3ISRIpfTZx8lxCupJAE+sh4nuwwtzb\n"
    "sguSp6KtZJdOkwD4Yf7psno=\n"
    "-----END CERTIFICATE-----\n";

static config cfg;
static char path[64];

static void cleanup(void)
{
    unlink(path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(path, sizeof path, "/tmp/berth-fuzz-token-%d.pem", (int)getpid());
    FILE *f = fopen(path, "w");
    if (!f) abort();
    fputs(bundle_pem, f);
    fclose(f);
    atexit(cleanup);
    cfg.auth.enabled = cfg.auth.token = true;
    cfg.auth.token_issuer = "fuzz-issuer";
    cfg.auth.token_service = "fuzz-service";
    cfg.auth.token_realm = "http://127.0.0.1/token";
    cfg.auth.token_bundle = path;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstr(data, size);
    char sub[128];
    json_t *access = NULL;
    int rc = auth_token_verify(&cfg, s, sub, sizeof sub, &access);
    if (rc == 0) {
        FUZZ_ASSERT(sub[0] != '\0');
        FUZZ_ASSERT(json_is_array(access));
        (void)auth_token_actions(access, "team/app");
    } else {
        FUZZ_ASSERT(access == NULL);
    }
    json_decref(access);
    free(s);
    return 0;
}
