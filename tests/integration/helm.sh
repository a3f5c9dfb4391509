#!/usr/bin/env bash
# The Helm chart repository (issue 4), driven the way helm and helm-push drive ChartMuseum:
# raw and multipart uploads, index.yaml, chart downloads checked against the index's digest,
# the JSON API, delete, 409 and ?force, provenance files, tenancy (helm.depth), bad charts (each a
# clear 400 that leaves nothing behind), the same charts pulled as OCI artifacts with skopeo and
# a chart pushed over OCI appearing in index.yaml, and an upstream chart repository (nginx serving
# static files) mirrored through berth, including while nginx is down and after a restart.
. "$(dirname "$0")/../lib.sh"
MK="python3 $T_ROOT/tests/fixtures/mkchart.py"
C="$T_TMP/charts"
mkdir -p "$C"

yq() { # yq FILE PYEXPR: evaluates PYEXPR with d = the parsed YAML file
    python3 -c "import sys,yaml; d=yaml.safe_load(open(sys.argv[1])); print($2)" "$1"
}

cat >"$T_TMP/config.yml" <<YML
version: 0.1
storage:
  delete: {enabled: true}
  maintenance:
    uploadpurging: {enabled: false}
helm:
  max_upload_size: 8MiB
YML
berth_start "$T_TMP" || exit 1
U=$BERTH_URL

# ---- uploads ----
$MK good "$C/app-0.1.0.tgz" app 0.1.0 --full
$MK good "$C/app-0.2.0.tgz" app 0.2.0
$MK good "$C/app-0.10.0.tgz" app 0.10.0
$MK good "$C/app-1.0.0-rc.1.tgz" app 1.0.0-rc.1
$MK good "$C/app-1.0.0.tgz" app 1.0.0
$MK good "$C/app-1.0.0+build.7.tgz" app 1.0.0+build.7
$MK good "$C/db-2.3.4.tgz" db 2.3.4
$MK prov "$C/db-2.3.4.tgz.prov" db 2.3.4 "$C/db-2.3.4.tgz"

code=$(curl -s -o "$T_TMP/r" -w '%{http_code}' --data-binary @"$C/app-0.1.0.tgz" "$U/api/charts")
t_eq "raw upload answers 201" 201 "$code"
t_eq "raw upload body is {\"saved\":true}" '{"saved":true}' "$(jq -c . "$T_TMP/r")"
for v in 0.2.0 0.10.0 1.0.0-rc.1 1.0.0; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/octet-stream' \
        --data-binary @"$C/app-$v.tgz" "$U/api/charts")
    t_eq "upload app $v" 201 "$code"
done
code=$(curl -s -o "$T_TMP/r" -w '%{http_code}' -F "chart=@$C/db-2.3.4.tgz" \
    -F "prov=@$C/db-2.3.4.tgz.prov" "$U/api/charts")
t_eq "multipart upload with chart and prov answers 201" 201 "$code"
code=$(curl -s -o /dev/null -w '%{http_code}' -F "chart=@$C/app-1.0.0+build.7.tgz" "$U/api/charts")
t_eq "multipart upload (chart only) of a version with build metadata" 201 "$code"

code=$(curl -s -o "$T_TMP/r" -w '%{http_code}' --data-binary @"$C/app-0.1.0.tgz" "$U/api/charts")
t_eq "uploading an existing version answers 409" 409 "$code"
t_check "409 body is {\"error\":...}" jq -e '.error | test("already exists")' "$T_TMP/r"
code=$(curl -s -o /dev/null -w '%{http_code}' -F "chart=@$C/app-0.1.0.tgz" "$U/api/charts")
t_eq "multipart re-upload also 409" 409 "$code"
code=$(curl -s -o /dev/null -w '%{http_code}' --data-binary @"$C/app-0.1.0.tgz" "$U/api/charts?force")
t_eq "?force overwrites (201)" 201 "$code"

# ---- index.yaml ----
code=$(curl -s -o "$T_TMP/index.yaml" -w '%{http_code}' "$U/index.yaml")
t_eq "GET /index.yaml" 200 "$code"
t_eq "index apiVersion v1" v1 "$(yq "$T_TMP/index.yaml" "d['apiVersion']")"
t_check "index has generated" test -n "$(yq "$T_TMP/index.yaml" "d['generated']")"
t_eq "app versions newest first by SemVer precedence" \
    "1.0.0+build.7 1.0.0 1.0.0-rc.1 0.10.0 0.2.0 0.1.0" \
    "$(yq "$T_TMP/index.yaml" "' '.join(e['version'] for e in d['entries']['app'])")"
t_eq "chart names" "app db" "$(yq "$T_TMP/index.yaml" "' '.join(sorted(d['entries']))")"
ok=1
for v in 0.1.0 0.2.0 0.10.0 1.0.0-rc.1 1.0.0 1.0.0+build.7; do
    want=$(t_sha256 "$C/app-$v.tgz")
    got=$(yq "$T_TMP/index.yaml" "[e['digest'] for e in d['entries']['app'] if e['version']=='$v'][0]")
    url=$(yq "$T_TMP/index.yaml" "[e['urls'][0] for e in d['entries']['app'] if e['version']=='$v'][0]")
    [ "$got" = "$want" ] || { ok=0; echo "digest $v: $got != $want"; }
    curl -s -o "$T_TMP/dl.tgz" "$U/$url"
    [ "$(t_sha256 "$T_TMP/dl.tgz")" = "$got" ] || { ok=0; echo "download $url does not match digest"; }
done
t_eq "every entry's digest is the sha256 of the .tgz, and its URL serves those bytes" 1 "$ok"
full="[e for e in d['entries']['app'] if e['version']=='0.1.0'][0]"
t_eq "entry carries Chart.yaml fields" \
    "1.0|>=1.20.0-0|A chart with every field|application|web,1.0|https://example.com/home|https://example.com/src|https://example.com/icon.png|False|Jo Doe jo@example.com|redis ~17.0.0 cache True|web: server|v2" \
    "$(yq "$T_TMP/index.yaml" "'|'.join([$full['appVersion'], $full['kubeVersion'], $full['description'], $full['type'], ','.join($full['keywords']), $full['home'], $full['sources'][0], $full['icon'], str($full['deprecated']), $full['maintainers'][0]['name']+' '+$full['maintainers'][0]['email'], ' '.join([$full['dependencies'][0]['name'], $full['dependencies'][0]['version'], $full['dependencies'][0]['alias'], str($full['dependencies'][0]['enabled'])]), $full['annotations']['category'], $full['apiVersion']])")"
t_check "entry has created" test -n "$(yq "$T_TMP/index.yaml" "$full['created']")"
t_eq "HEAD /index.yaml" 200 "$(curl -s -o /dev/null -I -w '%{http_code}' "$U/index.yaml")"
t_eq "index.yaml is YAML" application/x-yaml \
    "$(curl -s -o /dev/null -w '%{content_type}' "$U/index.yaml")"

# ---- files ----
curl -s -o "$T_TMP/dl.prov" "$U/charts/db-2.3.4.tgz.prov"
t_check "provenance file served byte for byte" cmp "$T_TMP/dl.prov" "$C/db-2.3.4.tgz.prov"
t_eq "a missing chart file is 404" 404 "$(curl -s -o "$T_TMP/r" -w '%{http_code}' "$U/charts/app-9.9.9.tgz")"
t_check "404 body is {\"error\":...}" jq -e .error "$T_TMP/r"
t_eq "no .prov for a chart without one: 404" 404 \
    "$(curl -s -o /dev/null -w '%{http_code}' "$U/charts/app-0.2.0.tgz.prov")"

# ---- JSON API ----
curl -s "$U/api/charts" >"$T_TMP/all.json"
t_eq "GET /api/charts lists every chart" "app:6 db:1" \
    "$(jq -r 'to_entries | map("\(.key):\(.value | length)") | join(" ")' "$T_TMP/all.json")"
t_eq "GET /api/charts?offset=1&limit=1" '["db"]' \
    "$(curl -s "$U/api/charts?offset=1&limit=1" | jq -c keys)"
t_eq "GET /api/charts?limit=1" '["app"]' "$(curl -s "$U/api/charts?limit=1" | jq -c keys)"
t_eq "GET /api/charts/app: versions newest first" "1.0.0+build.7" \
    "$(curl -s "$U/api/charts/app" | jq -r '.[0].version')"
t_eq "GET /api/charts/app/0.2.0" "0.2.0 $(t_sha256 "$C/app-0.2.0.tgz")" \
    "$(curl -s "$U/api/charts/app/0.2.0" | jq -r '"\(.version) \(.digest)"')"
t_eq "GET /api/charts/app/latest" "1.0.0+build.7" \
    "$(curl -s "$U/api/charts/app/latest" | jq -r .version)"
t_eq "HEAD /api/charts/app" 200 "$(curl -s -o /dev/null -I -w '%{http_code}' "$U/api/charts/app")"
t_eq "HEAD /api/charts/app/0.2.0" 200 \
    "$(curl -s -o /dev/null -I -w '%{http_code}' "$U/api/charts/app/0.2.0")"
t_eq "HEAD /api/charts/nope" 404 "$(curl -s -o /dev/null -I -w '%{http_code}' "$U/api/charts/nope")"
code=$(curl -s -o "$T_TMP/r" -w '%{http_code}' "$U/api/charts/nope")
t_eq "GET /api/charts/nope: 404" 404 "$code"
t_eq "... with {\"error\":\"chart not found\"}" "chart not found" "$(jq -r .error "$T_TMP/r")"
t_eq "GET /api/charts/app/9.9.9: 404" 404 \
    "$(curl -s -o /dev/null -w '%{http_code}' "$U/api/charts/app/9.9.9")"
t_eq "GET /health" '{"healthy":true}' "$(curl -s "$U/health" | jq -c .)"

# ---- delete ----
code=$(curl -s -o "$T_TMP/r" -w '%{http_code}' -X DELETE "$U/api/charts/app/0.2.0")
t_eq "DELETE /api/charts/app/0.2.0" "200 {\"deleted\":true}" "$code $(jq -c . "$T_TMP/r")"
curl -s -o "$T_TMP/index.yaml" "$U/index.yaml"
t_eq "deleted version gone from index.yaml" "1.0.0+build.7 1.0.0 1.0.0-rc.1 0.10.0 0.1.0" \
    "$(yq "$T_TMP/index.yaml" "' '.join(e['version'] for e in d['entries']['app'])")"
t_eq "deleted version's file is 404" 404 \
    "$(curl -s -o /dev/null -w '%{http_code}' "$U/charts/app-0.2.0.tgz")"
t_eq "deleting it again: 404" 404 \
    "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$U/api/charts/app/0.2.0")"
t_eq "the deleted version can be uploaded again" 201 \
    "$(curl -s -o /dev/null -w '%{http_code}' --data-binary @"$C/app-0.2.0.tgz" "$U/api/charts")"

# ---- provenance upload ----
$MK prov "$C/app-0.10.0.tgz.prov" app 0.10.0 "$C/app-0.10.0.tgz"
t_eq "POST /api/prov for a stored chart: 201" 201 \
    "$(curl -s -o /dev/null -w '%{http_code}' --data-binary @"$C/app-0.10.0.tgz.prov" "$U/api/prov")"
curl -s -o "$T_TMP/dl.prov" "$U/charts/app-0.10.0.tgz.prov"
t_check "... and served as app-0.10.0.tgz.prov" cmp "$T_TMP/dl.prov" "$C/app-0.10.0.tgz.prov"
curl -s -o "$T_TMP/dl.tgz" "$U/charts/app-0.10.0.tgz"
t_check "... the chart itself unchanged" cmp "$T_TMP/dl.tgz" "$C/app-0.10.0.tgz"
t_eq "a second prov for it: 409" 409 \
    "$(curl -s -o /dev/null -w '%{http_code}' -F "prov=@$C/app-0.10.0.tgz.prov" "$U/api/prov")"
$MK prov "$C/ghost-1.0.0.tgz.prov" ghost 1.0.0 "$C/app-0.10.0.tgz"
code=$(curl -s -o "$T_TMP/r" -w '%{http_code}' --data-binary @"$C/ghost-1.0.0.tgz.prov" "$U/api/prov")
t_eq "prov for a chart that is not stored: 404 with a message" "404 true" \
    "$code $(jq '.error | test("upload the chart first")' "$T_TMP/r")"
t_eq "a prov that is not a signed message: 400" 400 \
    "$(curl -s -o /dev/null -w '%{http_code}' --data-binary 'hello' "$U/api/prov")"

# ---- bad charts ----
before_repos=$(curl -s "$U/v2/_catalog" | jq -c .repositories)
before_index=$(curl -s "$U/index.yaml" | grep -v '^generated')
declare -A want=([notgzip]="not gzip" [nochart]="no Chart.yaml" [noversion]="version is required"
    [badsemver]="not a SemVer 2" [traversal]="leaves the directory" [absolute]="absolute path"
    [symlink]="symbolic link" [twotop]="outside the directory" [bomb]="unpacks to more than"
    [garbage]="not gzip")
for k in notgzip nochart noversion badsemver traversal absolute symlink twotop bomb garbage; do
    $MK bad "$C/bad-$k.tgz" "$k"
    code=$(curl -s -o "$T_TMP/r" -w '%{http_code}' --data-binary @"$C/bad-$k.tgz" "$U/api/charts")
    msg=$(jq -r .error "$T_TMP/r" 2>/dev/null)
    if [ "$code" = 400 ] && [[ "$msg" == *"${want[$k]}"* ]]; then
        t_ok "bad chart ($k): 400 \"$msg\""
    else
        t_fail "bad chart ($k)" "got $code $msg"
    fi
done
code=$(curl -s -o "$T_TMP/r" -w '%{http_code}' -F "chart=@$C/bad-traversal.tgz" "$U/api/charts")
t_eq "bad chart through multipart: 400" 400 "$code"
t_eq "bad charts left no repository behind" "$before_repos" \
    "$(curl -s "$U/v2/_catalog" | jq -c .repositories)"
t_eq "bad charts left index.yaml unchanged" "$before_index" \
    "$(curl -s "$U/index.yaml" | grep -v '^generated')"
t_eq "bad charts left no upload session behind" 0 "$(ls "$T_TMP/data/uploads" | wc -l)"
head -c $((9 * 1024 * 1024)) /dev/urandom >"$T_TMP/big.tgz"
t_eq "a chart over helm.max_upload_size: 413" 413 \
    "$(curl -s -o /dev/null -w '%{http_code}' --data-binary @"$T_TMP/big.tgz" "$U/api/charts")"
t_eq "an empty upload: 400" 400 \
    "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$U/api/charts")"
t_eq "a multipart upload without a chart field: 400" 400 \
    "$(curl -s -o /dev/null -w '%{http_code}' -F "other=@$C/app-0.1.0.tgz" "$U/api/charts")"
t_eq "PUT /api/charts: 405" 405 \
    "$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary @"$C/app-0.1.0.tgz" "$U/api/charts")"

# ---- the same charts over OCI ----
mkdir -p "$T_TMP/oci"
t_check "skopeo pulls the uploaded chart as OCI (charts/app:0.10.0)" \
    skopeo copy --src-tls-verify=false "docker://127.0.0.1:$BERTH_PORT/charts/app:0.10.0" "oci:$T_TMP/oci:app"
man=$(jq -r '.manifests[0].digest' "$T_TMP/oci/index.json" | cut -d: -f2)
t_eq "OCI config is Helm's config media type" application/vnd.cncf.helm.config.v1+json \
    "$(jq -r .config.mediaType "$T_TMP/oci/blobs/sha256/$man")"
layer=$(jq -r '.layers[] | select(.mediaType=="application/vnd.cncf.helm.chart.content.v1.tar+gzip") | .digest' \
    "$T_TMP/oci/blobs/sha256/$man" | cut -d: -f2)
t_check "OCI chart layer's bytes equal the uploaded .tgz" cmp "$T_TMP/oci/blobs/sha256/$layer" "$C/app-0.10.0.tgz"
t_eq "OCI manifest carries the .prov layer too" 1 \
    "$(jq '[.layers[] | select(.mediaType=="application/vnd.cncf.helm.chart.provenance.v1.prov")] | length' "$T_TMP/oci/blobs/sha256/$man")"
cfgd=$(jq -r .config.digest "$T_TMP/oci/blobs/sha256/$man" | cut -d: -f2)
t_eq "OCI config holds Chart.yaml as JSON" "app 0.10.0" \
    "$(jq -r '"\(.name) \(.version)"' "$T_TMP/oci/blobs/sha256/$cfgd")"
t_eq "a '+' version is tagged with '_'" 200 \
    "$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$U/v2/charts/app/manifests/1.0.0_build.7")"

# helm push: config + chart layer + manifest over the OCI API
$MK good "$C/pushed-0.3.0.tgz" pushed 0.3.0
printf '{"apiVersion":"v2","name":"pushed","version":"0.3.0","description":"pushed over OCI"}' >"$T_TMP/pcfg.json"
. "$T_ROOT/tests/fixtures/pushlib.sh"
PL_CURL=(curl -s)
pl_push_blob "$U" charts/pushed "$T_TMP/pcfg.json" && pl_push_blob "$U" charts/pushed "$C/pushed-0.3.0.tgz"
cat >"$T_TMP/pman.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"sha256:$(t_sha256 "$T_TMP/pcfg.json")","size":$(stat -c %s "$T_TMP/pcfg.json")},"layers":[{"mediaType":"application/vnd.cncf.helm.chart.content.v1.tar+gzip","digest":"sha256:$(t_sha256 "$C/pushed-0.3.0.tgz")","size":$(stat -c %s "$C/pushed-0.3.0.tgz")}],"annotations":{"org.opencontainers.image.created":"2026-05-06T07:08:09Z"}}
JSON
t_check "a chart pushed over OCI (as helm push does) is accepted" \
    pl_push_manifest "$U" charts/pushed 0.3.0 "$T_TMP/pman.json"
curl -s -o "$T_TMP/index.yaml" "$U/index.yaml"
t_eq "... and appears in index.yaml with the layer's digest" \
    "0.3.0 $(t_sha256 "$C/pushed-0.3.0.tgz") 2026-05-06T07:08:09Z pushed over OCI" \
    "$(yq "$T_TMP/index.yaml" "' '.join([d['entries']['pushed'][0]['version'], d['entries']['pushed'][0]['digest'], d['entries']['pushed'][0]['created'], d['entries']['pushed'][0]['description']])")"
curl -s -o "$T_TMP/dl.tgz" "$U/charts/pushed-0.3.0.tgz"
t_check "... and downloads through the ChartMuseum path" cmp "$T_TMP/dl.tgz" "$C/pushed-0.3.0.tgz"
t_eq "an OCI manifest DELETE of the chart removes it from the index" 404 "$(
    curl -s -o /dev/null -X DELETE "$U/v2/charts/pushed/manifests/sha256:$(t_sha256 "$T_TMP/pman.json")"
    curl -s -o /dev/null -w '%{http_code}' "$U/api/charts/pushed")"

# ---- persistence ----
berth_stop
t_eq "berth exits cleanly (status 0, no sanitizer report)" 0 $?
berth_start "$T_TMP" || exit 1
U=$BERTH_URL
t_eq "charts survive a restart" "1.0.0+build.7 1.0.0 1.0.0-rc.1 0.10.0 0.2.0 0.1.0" \
    "$(curl -s "$U/api/charts/app" | jq -r 'map(.version) | join(" ")')"
t_check "berth fsck is clean" "$BERTH" fsck -c "$T_TMP/config.yml"
berth_stop
t_eq "berth exits cleanly (status 0, no sanitizer report)" 0 $?

# ---- tenancy (depth 1) ----
mkdir -p "$T_TMP/t1"
cat >"$T_TMP/t1/config.yml" <<YML
version: 0.1
storage: {delete: {enabled: true}}
helm: {depth: 1, oci_prefix: helm/repo}
YML
berth_start "$T_TMP/t1" || exit 1
U=$BERTH_URL
t_eq "upload to /api/team-a/charts" 201 \
    "$(curl -s -o /dev/null -w '%{http_code}' --data-binary @"$C/app-0.1.0.tgz" "$U/api/team-a/charts")"
t_eq "upload to /api/team-b/charts (same chart, other tenant)" 201 \
    "$(curl -s -o /dev/null -w '%{http_code}' -F "chart=@$C/db-2.3.4.tgz" "$U/api/team-b/charts")"
t_eq "/team-a/index.yaml lists team-a's charts only" app \
    "$(curl -s "$U/team-a/index.yaml" | python3 -c 'import sys,yaml; print(" ".join(yaml.safe_load(sys.stdin)["entries"]))')"
t_eq "/team-b/index.yaml lists team-b's charts only" db \
    "$(curl -s "$U/team-b/index.yaml" | python3 -c 'import sys,yaml; print(" ".join(yaml.safe_load(sys.stdin)["entries"]))')"
t_eq "an unused tenant's index is empty" "{}" \
    "$(curl -s "$U/team-c/index.yaml" | python3 -c 'import sys,yaml,json; print(json.dumps(yaml.safe_load(sys.stdin)["entries"]))')"
curl -s -o "$T_TMP/dl.tgz" "$U/team-a/charts/app-0.1.0.tgz"
t_check "tenant chart download" cmp "$T_TMP/dl.tgz" "$C/app-0.1.0.tgz"
t_eq "tenant API: GET /api/team-b/charts/db/2.3.4" 2.3.4 \
    "$(curl -s "$U/api/team-b/charts/db/2.3.4" | jq -r .version)"
t_eq "team-a has no db" 404 "$(curl -s -o /dev/null -w '%{http_code}' "$U/api/team-a/charts/db")"
t_eq "depth 1: /index.yaml without a tenant is not a chart repository" 404 \
    "$(curl -s -o /dev/null -w '%{http_code}' "$U/index.yaml")"
t_eq "tenant charts live at oci://<berth>/helm/repo/team-a/app" 200 \
    "$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$U/v2/helm/repo/team-a/app/manifests/0.1.0")"
t_eq "tenant delete" 200 "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$U/api/team-a/charts/app/0.1.0")"
t_eq "... leaves the other tenant alone" 2.3.4 \
    "$(curl -s "$U/api/team-b/charts/db" | jq -r '.[0].version')"
berth_stop
t_eq "berth exits cleanly (status 0, no sanitizer report)" 0 $?

# ---- upstream chart repository mirror ----
W="$T_TMP/www"
mkdir -p "$W/stable" "$T_TMP/ngx"
NPORT=$(t_port)
$MK good "$W/stable/web-1.0.0.tgz" web 1.0.0
$MK good "$W/stable/web-1.1.0.tgz" web 1.1.0
$MK good "$W/stable/cache-3.0.0.tgz" cache 3.0.0
$MK good "$W/stable/evil-1.0.0.tgz" evil 1.0.0
$MK index "$W/stable/index.yaml" "http://127.0.0.1:$NPORT/stable" \
    "$W/stable/web-1.0.0.tgz" "$W/stable/web-1.1.0.tgz" "$W/stable/cache-3.0.0.tgz" \
    "$W/stable/evil-1.0.0.tgz" --bad-digest evil
cat >"$T_TMP/ngx/nginx.conf" <<NGX
worker_processes 1;
daemon off;
user root;
pid $T_TMP/ngx/nginx.pid;
error_log $T_TMP/ngx/error.log warn;
events { worker_connections 64; }
http {
    access_log $T_TMP/ngx/access.log;
    client_body_temp_path $T_TMP/ngx/body;
    proxy_temp_path $T_TMP/ngx/proxy;
    fastcgi_temp_path $T_TMP/ngx/fastcgi;
    uwsgi_temp_path $T_TMP/ngx/uwsgi;
    scgi_temp_path $T_TMP/ngx/scgi;
    server { listen 127.0.0.1:$NPORT; root $W; }
}
NGX
nginx -p "$T_TMP/ngx" -c "$T_TMP/ngx/nginx.conf" >"$T_TMP/ngx/out.log" 2>&1 &
NGX_PID=$!
T_PIDS+=("$NGX_PID")
t_wait_http "http://127.0.0.1:$NPORT/stable/index.yaml"
mkdir -p "$T_TMP/m"
cat >"$T_TMP/m/config.yml" <<YML
version: 0.1
helm:
  upstreams:
    stable: {url: "http://127.0.0.1:$NPORT/stable", refresh: 1s, timeout: {connect: 1s, transfer: 5s}}
YML
berth_start "$T_TMP/m" || exit 1
U=$BERTH_URL
code=$(curl -s -o "$T_TMP/up.yaml" -w '%{http_code}' "$U/stable/index.yaml")
t_eq "GET /stable/index.yaml through berth" 200 "$code"
t_eq "upstream index: chart URLs rewritten to berth" \
    "charts/cache-3.0.0.tgz charts/evil-1.0.0.tgz charts/web-1.0.0.tgz charts/web-1.1.0.tgz" \
    "$(yq "$T_TMP/up.yaml" "' '.join(sorted(e['urls'][0] for v in d['entries'].values() for e in v))")"
t_eq "upstream index: digests kept" "$(t_sha256 "$W/stable/web-1.1.0.tgz")" \
    "$(yq "$T_TMP/up.yaml" "[e['digest'] for e in d['entries']['web'] if e['version']=='1.1.0'][0]")"
curl -s -o "$T_TMP/dl.tgz" "$U/stable/charts/web-1.0.0.tgz"
t_check "first pull of a mirrored chart (relative upstream URL)" cmp "$T_TMP/dl.tgz" "$W/stable/web-1.0.0.tgz"
curl -s -o "$T_TMP/dl.tgz" "$U/stable/charts/web-1.1.0.tgz"
t_check "first pull of a mirrored chart (absolute upstream URL)" cmp "$T_TMP/dl.tgz" "$W/stable/web-1.1.0.tgz"
n1=$(grep -c 'web-1.0.0.tgz' "$T_TMP/ngx/access.log")
curl -s -o "$T_TMP/dl.tgz" "$U/stable/charts/web-1.0.0.tgz"
t_eq "second pull is served from the store (no upstream request)" "$n1" \
    "$(grep -c 'web-1.0.0.tgz' "$T_TMP/ngx/access.log")"
code=$(curl -s -o "$T_TMP/r" -w '%{http_code}' "$U/stable/charts/evil-1.0.0.tgz")
t_eq "a chart whose bytes do not match the upstream digest is refused" "503 true" \
    "$code $(jq '.error | test("does not match")' "$T_TMP/r")"
t_eq "... and not stored" 404 \
    "$(curl -s -o /dev/null -w '%{http_code}' "$U/v2/charts/stable/evil/manifests/1.0.0")"
t_eq "a chart not in the upstream index: 404" 404 \
    "$(curl -s -o /dev/null -w '%{http_code}' "$U/stable/charts/nothere-1.0.0.tgz")"
t_eq "mirrored charts are pullable as OCI too" 200 \
    "$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$U/v2/charts/stable/web/manifests/1.0.0")"
kill "$NGX_PID"
wait "$NGX_PID" 2>/dev/null
sleep 1.2 # past the refresh interval
code=$(curl -s -o "$T_TMP/up2.yaml" -w '%{http_code}' "$U/stable/index.yaml")
t_eq "upstream down: index.yaml still served (stale)" "200 4" \
    "$code $(yq "$T_TMP/up2.yaml" "sum(len(v) for v in d['entries'].values())")"
curl -s -o "$T_TMP/dl.tgz" "$U/stable/charts/web-1.1.0.tgz"
t_check "upstream down: cached chart still served" cmp "$T_TMP/dl.tgz" "$W/stable/web-1.1.0.tgz"
t_eq "upstream down: an uncached chart is a clear 503" 503 \
    "$(curl -s -o /dev/null -w '%{http_code}' "$U/stable/charts/cache-3.0.0.tgz")"
berth_stop
t_eq "berth exits cleanly (status 0, no sanitizer report)" 0 $?
berth_start "$T_TMP/m" || exit 1
U=$BERTH_URL
code=$(curl -s -o "$T_TMP/up3.yaml" -w '%{http_code}' "$U/stable/index.yaml")
t_eq "restart with the upstream down: the kept index is served" "200 4" \
    "$code $(yq "$T_TMP/up3.yaml" "sum(len(v) for v in d['entries'].values())")"
curl -s -o "$T_TMP/dl.tgz" "$U/stable/charts/web-1.0.0.tgz"
t_check "restart with the upstream down: cached chart served" cmp "$T_TMP/dl.tgz" "$W/stable/web-1.0.0.tgz"
t_eq "an unknown upstream name is not a route" 404 \
    "$(curl -s -o /dev/null -w '%{http_code}' "$U/nosuch/index.yaml")"
berth_stop
t_eq "berth exits cleanly (status 0, no sanitizer report)" 0 $?
t_finish
