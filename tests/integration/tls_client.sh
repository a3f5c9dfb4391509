#!/usr/bin/env bash
# TLS client certificates (http.tls.clientcas, registry:2's key), issue 6: a client with a
# certificate from a configured CA is served; one without a certificate, or with a certificate
# from another CA (or a self-signed one), is refused; the server's own certificate is verified by
# the clients as usual. curl and skopeo (cert dir with client.cert/client.key) sign in with it.
. "$(dirname "$0")/../lib.sh"
td=$T_TMP/pki
mkdir -p "$td/certs" "$td/badcerts"
cd "$td" || exit 1
# a site CA, the server's certificate, a client's; and a stranger CA with its own client
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=site-ca -keyout ca.key -out ca.pem 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=other-ca -keyout other.key -out other.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile server.ext -out server.pem 2>/dev/null
for who in device:ca stranger:other; do
    n=${who%:*} ca=${who#*:}
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$n" -keyout "$n.key" -out "$n.csr" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in "$n.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial -days 1 -extfile client.ext -out "$n.pem" 2>/dev/null
done
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=selfie -keyout selfie.key -out selfie.pem 2>/dev/null
cd - >/dev/null || exit 1
cat >"$T_TMP/config.yml" <<YML
version: 0.1
http:
  tls:
    certificate: $td/server.pem
    key: $td/server.key
    clientcas:
      - $td/ca.pem
YML
berth_start "$T_TMP" 2>/dev/null # plain-http probe of berth_start fails on a TLS port: wait below
t_wait_http "https://127.0.0.1:$BERTH_PORT/v2/"
U=https://localhost:$BERTH_PORT
t_check "TLS configured: GnuTLS loaded at start" grep -q libgnutls "/proc/$BERTH_PID/maps"
t_eq "a client certificate from the site CA: 200" 200 \
    "$(curl -s --cacert "$td/ca.pem" --cert "$td/device.pem" --key "$td/device.key" -o /dev/null -w '%{http_code}' "$U/v2/")"
code=$(curl -s --cacert "$td/ca.pem" -o "$T_TMP/body" -w '%{http_code}' "$U/v2/")
t_check "no client certificate: refused (got $code)" bash -c "[ '$code' = 403 ] || [ '$code' = 000 ]"
code=$(curl -s --cacert "$td/ca.pem" --cert "$td/stranger.pem" --key "$td/stranger.key" -o /dev/null -w '%{http_code}' "$U/v2/")
t_check "a certificate from another CA: refused (got $code)" bash -c "[ '$code' = 403 ] || [ '$code' = 000 ]"
code=$(curl -s --cacert "$td/ca.pem" --cert "$td/selfie.pem" --key "$td/selfie.key" -o /dev/null -w '%{http_code}' "$U/v2/")
t_check "a self-signed client certificate: refused (got $code)" bash -c "[ '$code' = 403 ] || [ '$code' = 000 ]"
t_check "without the site CA the client refuses berth's certificate" bash -c \
    "! curl -s --cert $td/device.pem --key $td/device.key -o /dev/null $U/v2/"
# skopeo: a cert dir holds ca.crt and client.cert/client.key
cp "$td/ca.pem" "$td/certs/ca.crt"
cp "$td/device.pem" "$td/certs/client.cert"
cp "$td/device.key" "$td/certs/client.key"
cp "$td/ca.pem" "$td/badcerts/ca.crt"
python3 "$T_ROOT/tests/fixtures/mkimage.py" image "$T_TMP/layout" --layers 1 --seed 3 --tag v1 >/dev/null 2>&1
t_check "skopeo pushes with a client certificate" skopeo copy -q --dest-cert-dir "$td/certs" \
    "oci:$T_TMP/layout:v1" "docker://localhost:$BERTH_PORT/mtls/img:v1"
t_check "skopeo inspects with a client certificate" skopeo inspect --cert-dir "$td/certs" \
    "docker://localhost:$BERTH_PORT/mtls/img:v1"
t_check "skopeo without a client certificate is refused" bash -c \
    "! skopeo inspect --cert-dir $td/badcerts docker://localhost:$BERTH_PORT/mtls/img:v1"
berth_stop
t_eq "berth exits cleanly" 0 $?
t_finish
