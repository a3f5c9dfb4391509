#!/usr/bin/env bash
# berth client-config: the hosts.toml files it prints make a real containerd pull docker.io/...
# and ghcr.io/... names through berth (containerd adds ?ns=); the other formats are well formed.
. "$(dirname "$0")/../lib.sh"

registry_start "$T_TMP/up"
python3 "$T_ROOT/tests/fixtures/mkimage.py" image "$T_TMP/alpine" --layers 1 --seed 71 --tag v3 >/dev/null
python3 "$T_ROOT/tests/fixtures/mkimage.py" image "$T_TMP/app" --layers 2 --seed 72 --tag v1 >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$T_TMP/alpine:v3" "docker://127.0.0.1:$REG_PORT/library/alpine:3"
skopeo copy -q --dest-tls-verify=false "oci:$T_TMP/app:v1" "docker://127.0.0.1:$REG_PORT/org/app:v1"
digest_of() {
    curl -s -o /dev/null -D - -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$REG_URL/v2/$1" |
        tr -d '\r' | awk 'tolower($1)=="docker-content-digest:"{print $2}'
}
D_ALPINE=$(digest_of library/alpine/manifests/3)
D_APP=$(digest_of org/app/manifests/v1)

mkdir -p "$T_TMP/b"
cat >"$T_TMP/b/config.yml" <<YML
version: 0.1
mirrors:
  docker.io:
    urls: [$REG_URL]
  ghcr.io:
    urls: [$REG_URL]
YML
berth_start "$T_TMP/b"

# containerd: split the printed files into a hosts directory
C=$T_TMP/ctd
mkdir -p "$C/root" "$C/state"
"$BERTH" client-config --for containerd --endpoint "$BERTH_URL" -c "$T_TMP/b/config.yml" >"$C/out.txt"
t_eq "client-config: exit 0" 0 "$?"
awk -v dir="$C/hosts" '/^# \/etc\/containerd\/certs.d\//{split($2, p, "/"); f=dir "/" p[5] "/hosts.toml";
    system("mkdir -p " dir "/" p[5]); next} /^# /{f=""; next} f{print > f}' "$C/out.txt"
t_check "client-config: a hosts.toml for docker.io" grep -q "http://127.0.0.1:$BERTH_PORT" "$C/hosts/docker.io/hosts.toml"
t_check "client-config: a hosts.toml for ghcr.io" grep -q 'server = "https://ghcr.io"' "$C/hosts/ghcr.io/hosts.toml"
containerd_start "$C"
t_check "containerd pulls docker.io/library/alpine:3 through berth" "${CTR[@]}" images pull \
    --hosts-dir "$C/hosts" --snapshotter native docker.io/library/alpine:3
t_check "containerd pulls ghcr.io/org/app:v1 through berth" "${CTR[@]}" images pull --http-dump \
    --hosts-dir "$C/hosts" --snapshotter native ghcr.io/org/app:v1
cp "$T_TMP/.check.out" "$C/pull.out"
t_check "containerd sent ?ns=ghcr.io" grep -q 'manifests/v1?ns=ghcr.io' "$C/pull.out"
t_eq "docker.io image digest is the upstream's" "$D_ALPINE" \
    "$("${CTR[@]}" images ls 2>&1 | awk '$1=="docker.io/library/alpine:3" {print $3}')"
t_eq "ghcr.io image digest is the upstream's" "$D_APP" \
    "$("${CTR[@]}" images ls 2>&1 | awk '$1=="ghcr.io/org/app:v1" {print $3}')"
t_check "berth cached both under their mirror names" bash -c \
    "curl -s $BERTH_URL/v2/_catalog | jq -e '.repositories | index(\"docker.io/library/alpine\") and index(\"ghcr.io/org/app\")'"

# the other formats
"$BERTH" client-config --for docker --endpoint "$BERTH_URL" >"$T_TMP/daemon.json"
t_eq "docker: daemon.json is JSON with the mirror" "$BERTH_URL" "$(jq -r '."registry-mirrors"[0]' "$T_TMP/daemon.json")"
t_eq "docker: plain http endpoint listed as insecure" "127.0.0.1:$BERTH_PORT" "$(jq -r '."insecure-registries"[0]' "$T_TMP/daemon.json")"
"$BERTH" client-config --for k3s --endpoint "$BERTH_URL" --registries docker.io,ghcr.io >"$T_TMP/reg.yaml"
t_check "k3s: registries.yaml names both registries" bash -c "grep -q '\"docker.io\":' $T_TMP/reg.yaml && grep -q '\"ghcr.io\":' $T_TMP/reg.yaml"
t_check "k3s: registries.yaml is YAML whose mirrors point at berth" python3 -c "import yaml,sys; d=yaml.safe_load(open('$T_TMP/reg.yaml')); sys.exit(d['mirrors']['ghcr.io']['endpoint'] != ['$BERTH_URL'])"
t_check "k3s: offline sites are told --disable-default-registry-endpoint" grep -q '^#.*--disable-default-registry-endpoint' "$T_TMP/reg.yaml"
"$BERTH" client-config --for podman --endpoint "$BERTH_URL" --registries ghcr.io >"$T_TMP/podman.conf"
t_check "podman: mirror location uses the path-prefix form" grep -q "location = \"127.0.0.1:$BERTH_PORT/ghcr.io\"" "$T_TMP/podman.conf"
t_check "podman: the file parses as TOML exactly as printed" python3 -c "import tomllib; d=tomllib.load(open('$T_TMP/podman.conf','rb')); assert d['registry'][0]['mirror'][0]['location']"
"$BERTH" client-config --for containerd --endpoint "$BERTH_URL" --registries ghcr.io >"$T_TMP/hosts.toml"
t_check "containerd: one registry's hosts.toml parses as TOML exactly as printed" python3 -c "import tomllib; d=tomllib.load(open('$T_TMP/hosts.toml','rb')); assert d['server'] == 'https://ghcr.io' and '$BERTH_URL' in d['host']"
"$BERTH" client-config --for nerdctl --endpoint "$BERTH_URL" >/dev/null 2>&1
t_eq "unknown client: exit 2" 2 "$?"
t_check "clean shutdown" berth_stop
t_finish
