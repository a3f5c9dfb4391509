#!/usr/bin/env bash
# margo artifacts in the registry (issue 5, first part): Application Packages and Compose
# Archives pushed over OCI (tests/fixtures/mkmargo.py, as oras push would) are checked against
# margo's rules; valid ones are stored and pull byte for byte, each broken variant is refused
# with MANIFEST_INVALID naming the rule and the field; margo.validation: warn stores them anyway.
. "$(dirname "$0")/../lib.sh"
MK="python3 $T_ROOT/tests/fixtures/mkmargo.py"
berth_start "$T_TMP" || { t_fail "berth starts"; t_finish; }
U=$BERTH_URL

ok() { # ok NAME CMD...: the push answers 201
    local out
    out=$("${@:2}")
    if [ "${out%% *}" = 201 ]; then t_ok "$1"; else t_fail "$1" "$out"; fi
}
refused() { # refused NAME EXPECTED-TEXT CMD...: 400 MANIFEST_INVALID whose message has the text
    local name=$1 want=$2 out msg
    shift 2
    out=$("$@")
    msg=$(jq -r '.errors[0].code + ": " + .errors[0].message' <<<"${out#* }" 2>/dev/null)
    if [ "${out%% *}" = 400 ] && [[ "$msg" == MANIFEST_INVALID:*"$want"* ]]; then
        t_ok "$name: 400 \"${msg#MANIFEST_INVALID: }\""
    else
        t_fail "$name" "got $out"
    fi
}

# ---- Application Packages ----
ok "package: a valid package (helm and compose profiles) is stored" $MK package "$U" apps/hello 1.0.0
ok "package: the older artifactType is accepted" $MK package "$U" apps/hello-old 1.0.0 --variant old-type
ok "package: an older draft (top-level id, kind application, helm.v3, docker-compose)" \
    $MK package "$U" apps/hello-draft 1.0.0 --variant top-level-id
ok "package: a legacy compose component (packageLocation)" $MK package "$U" apps/hello-legacy 1.0.0 --variant legacy-compose
ok "package: a version with build metadata, tagged with '_'" $MK package "$U" apps/hello 1.1.0_b7
refused "package: tag differs from metadata.version" "tag 'latest' must equal the version '1.0.0'" \
    $MK package "$U" apps/bad 1.0.0 --variant wrong-tag
refused "package: no margo.yaml layer" "exactly one application/vnd.margo.app.description.v1+yaml layer" \
    $MK package "$U" apps/bad 1.0.0 --variant no-description
refused "package: two margo.yaml layers" "found 2" $MK package "$U" apps/bad 1.0.0 --variant two-descriptions
refused "package: bad metadata.id" "metadata.id 'Hello_World' must match ^[a-z0-9-]{1,200}\$" \
    $MK package "$U" apps/bad 1.0.0 --variant bad-id
refused "package: no deployment profile" "deploymentProfiles: at least one deployment profile is required" \
    $MK package "$U" apps/bad 1.0.0 --variant no-profiles
refused "package: unknown profile type" "deploymentProfiles[0].type 'kubernetes' must be helm or compose" \
    $MK package "$U" apps/bad 1.0.0 --variant bad-type
refused "package: helm component without repository" "deploymentProfiles[0].components[0].properties.repository is required" \
    $MK package "$U" apps/bad 1.0.0 --variant helm-no-repo
refused "package: compose component without revision" "deploymentProfiles[1].components[0].properties.revision is required (compose: SemVer 2, no leading v)" \
    $MK package "$U" apps/bad 1.0.0 --variant compose-no-revision
refused "package: config is not the empty descriptor" "config must be the OCI empty descriptor" \
    $MK package "$U" apps/bad 1.0.0 --variant config-not-empty
refused "package: a layer without a title" "layers[2] needs an org.opencontainers.image.title" \
    $MK package "$U" apps/bad 1.0.0 --variant no-title
refused "package: a layer that is not a margo type" "is not a margo type" \
    $MK package "$U" apps/bad 1.0.0 --variant bad-layer-type
refused "package: wrong kind" "kind 'Deployment' must be ApplicationDescription" \
    $MK package "$U" apps/bad 1.0.0 --variant bad-kind
refused "package: margo.yaml is not YAML" "margo description: margo.yaml line 2 column 1: did not find expected ',' or ']' (while parsing a flow sequence at line 1: 'apiVersion: [unclosed')" \
    $MK package "$U" apps/bad 1.0.0 --variant bad-yaml
t_eq "package: nothing of the refused pushes is tagged" '[]' \
    "$(curl -s "$U/v2/apps/bad/tags/list" | jq -c '.tags // []')"
t_eq "package: tags of a valid package list its versions" '["1.0.0","1.1.0_b7"]' \
    "$(curl -s "$U/v2/apps/hello/tags/list" | jq -c .tags)"

# ---- Compose Archives ----
ok "compose: a valid archive is stored" $MK compose "$U" comp/hello 1.2.3
ok "compose: a symbolic link that stays inside the directory is fine" $MK compose "$U" comp/hello-in 1.2.3 --variant symlink-in
refused "compose: '../' in the archive" "leaves the directory" $MK compose "$U" comp/bad 1.2.3 --variant traversal
refused "compose: an absolute path" "absolute path '/etc/evil'" $MK compose "$U" comp/bad 1.2.3 --variant absolute
refused "compose: a setuid file" "'hello/bin/tool' has a setuid, setgid or sticky bit" \
    $MK compose "$U" comp/bad 1.2.3 --variant setuid
refused "compose: a symbolic link leaving the directory" "'hello/config/passwd' is a symbolic link leaving the directory" \
    $MK compose "$U" comp/bad 1.2.3 --variant symlink-out
refused "compose: compose.yml instead of compose.yaml" "no compose.yaml in 'hello/'" \
    $MK compose "$U" comp/bad 1.2.3 --variant no-compose-yaml
refused "compose: two layers" "exactly one layer of application/vnd.org.margo.component.compose.tar+gzip" \
    $MK compose "$U" comp/bad 1.2.3 --variant two-layers
refused "compose: no org.margo.component.type" "org.margo.component.type must be 'compose'" \
    $MK compose "$U" comp/bad 1.2.3 --variant no-type
refused "compose: a revision with a leading v" "'v1.2.3' must be a SemVer 2 revision" \
    $MK compose "$U" comp/bad 1.2.3 --variant leading-v
refused "compose: tag differs from the revision" "tag '9.9.9' must equal the version '1.2.3'" \
    $MK compose "$U" comp/bad 1.2.3 --variant wrong-tag
refused "compose: not gzip" "not gzip-compressed" $MK compose "$U" comp/bad 1.2.3 --variant not-gzip

# ---- the specification's own examples (tests/fixtures/margo/README.md: repo, commit, path) ----
# Each valid example is accepted and each invalid one refused, through a raw manifest PUT and
# through `berth app push` (a package folder with margo.yaml and the resources it names).
FX=$T_ROOT/tests/fixtures/margo
# one python process pushes every example (one answer line each, in file order), another makes
# a package folder for each (margo.yaml and the resources it names) for berth app push
$MK desc-files "$U" spec "$FX"/valid/*.yaml >"$T_TMP/valid.answers"
$MK folders "$T_TMP/pkgs/valid" "$FX"/valid/*.yaml >/dev/null
$MK folders "$T_TMP/pkgs/invalid" "$FX"/invalid/*.yaml >/dev/null
for f in "$FX"/valid/*.yaml; do echo "$(basename "$f" .yaml)"; done >"$T_TMP/valid.names"
while IFS= read -r n && IFS= read -r answer <&3; do
    ok "spec example valid/$n: manifest PUT" echo "$answer"
    out=$("$BERTH" app push "$T_TMP/pkgs/valid/${n//_/-}" "$U/spec-cli/${n//_/-}" 2>&1)
    t_check "spec example valid/$n: berth app push ($out)" grep -q "^pushed .*spec-cli/${n//_/-}:" <<<"$out"
done <"$T_TMP/valid.names" 3<"$T_TMP/valid.answers"
cat >"$T_TMP/invalid" <<'LIST'
src-applications-001|margo description: id 'an-incorrect-id-with-special-chars**&%' must match ^[a-z0-9-]{1,200}$
src-applications-002|margo description: id 'an-incorrect-id-with-special-chars**&%' must match ^[a-z0-9-]{1,200}$
data-model-001|margo description: kind 'SomethingErroneous' must be ApplicationDescription
data-model-002|margo description: id 'too-lengthy-an-identifier-abcdefghijklmnopqrstuvwxyz
data-model-003|margo description: deploymentProfiles[0].type 'helmchart' must be helm or compose
model-001|margo description: kind 'ApplicationSpecification' must be ApplicationDescription
spec-001|margo description: kind 'SomethingErroneous' must be ApplicationDescription
LIST
cut -d'|' -f1 "$T_TMP/invalid" | sed "s|^|$FX/invalid/|; s|\$|.yaml|" | xargs $MK desc-files "$U" spec-bad >"$T_TMP/invalid.answers"
while IFS='|' read -r n want && IFS= read -r answer <&3; do
    refused "spec example invalid/$n: manifest PUT" "$want" echo "$answer"
    out=$("$BERTH" app push "$T_TMP/pkgs/invalid/$n" "$U/spec-cli/bad" 2>&1)
    t_check "spec example invalid/$n: berth app push refuses ($out)" grep -qF "$want" <<<"$out"
done <"$T_TMP/invalid" 3<"$T_TMP/invalid.answers"
ok "a package whose resource layers have ordinary media types and org.margo.app.resource (the earlier registry page)" \
    $MK desc "$U" spec/plain 1.0 "$FX/valid/src-applications-001.yaml" --plain-resources

# ---- one rule broken at a time, on the newest valid example ----
NEW=$FX/valid/data-model-helm_and_compose.yaml
RULES=$T_TMP/rules
cat >"$RULES" <<'LIST'
apiVersion!|apiVersion is required
kind!|kind is required
id=Digitron_Orchestrator|margo description: id 'Digitron_Orchestrator' must match ^[a-z0-9-]{1,200}$
metadata.name!|metadata.name is required
metadata.catalog!|metadata.catalog is required
metadata.catalog.organization!|metadata.catalog.organization is required
metadata.catalog.organization[0].name!|metadata.catalog.organization[0].name is required
deploymentProfiles[0].id!|deploymentProfiles[0].id is required (type helm)
deploymentProfiles[0].components[1].name=Digitron_Orchestrator|deploymentProfiles[0].components[1].name 'Digitron_Orchestrator' must be lower case letters, digits and dashes
deploymentProfiles[0].components[0].name=database.services|deploymentProfiles[0].components[0].name 'database.services' must be lower case
deploymentProfiles[0].components[0].properties.revision!|deploymentProfiles[0].components[0].properties.revision is required (helm)
deploymentProfiles[0].components[0].properties.repository!|deploymentProfiles[0].components[0].properties.repository is required (helm)
deploymentProfiles[0].components[0].properties.wait=sometimes|deploymentProfiles[0].components[0].properties.wait 'sometimes' must be true or false
deploymentProfiles[0].components[0].properties.timeout=8min|deploymentProfiles[0].components[0].properties.timeout '8min' must be of the form ##m##s
deploymentProfiles[0].requiredResources.memory=1024MB|deploymentProfiles[0].requiredResources.memory '1024MB' must match ^[0-9]+(Ki|Mi|Gi)$
deploymentProfiles[0].requiredResources.storage=10GB|deploymentProfiles[0].requiredResources.storage '10GB' must match ^[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei)$
deploymentProfiles[0].requiredResources.cpu.cores!|deploymentProfiles[0].requiredResources.cpu.cores is required
deploymentProfiles[1].components[0].properties={repository: 'https://registry.example.com/compose/digitron', revision: 1.0.9}|deploymentProfiles[1].components[0].properties.repository 'https://registry.example.com/compose/digitron' must be an oci:// reference
deploymentProfiles[1].components[0].properties={repository: 'oci://registry.example.com/compose/digitron', revision: v1.0.9}|deploymentProfiles[1].components[0].properties.revision 'v1.0.9' must be SemVer 2 without a leading v
deploymentProfiles[1].components[0].properties={repository: 'oci://registry.example.com/compose/digitron'}|deploymentProfiles[1].components[0].properties.revision is required (compose
deploymentProfiles[1].components[0].properties={keyLocation: 'https://example.com/key.asc'}|deploymentProfiles[1].components[0].properties.repository is required (compose
parameters.idpName.targets!|parameters.idpName.targets is required
parameters.idpName.targets[0].pointer!|parameters.idpName.targets[0].pointer is required
parameters.idpName.targets[0].components!|parameters.idpName.targets[0].components is required
parameters.idpName.targets[0].components=digitron-orchestrator|parameters.idpName.targets[0].components must be a list of component names
parameters.idpName.targets[1].components=[digitron-orchestrator-compose]|parameters.idpName.targets[1].components[0] 'digitron-orchestrator-compose' is no component of the deployment profiles
configuration.sections!|configuration.sections is required
configuration.schema!|configuration.schema is required
configuration.sections[1].settings[0].parameter=idpNames|configuration.sections[1].settings[0].parameter 'idpNames' is no parameter
configuration.sections[0].settings[1].schema=optionalTxt|configuration.sections[0].settings[1].schema 'optionalTxt' is no entry of configuration.schema
configuration.schema[2].name!|configuration.schema[2].name is required
configuration.schema[3].dataType!|configuration.schema[3].dataType is required (schema 'pollRange')
LIST
# one python process pushes every variant (one answer line each, in order)
cut -d'|' -f1 "$RULES" | $MK desc-each "$U" spec/broken 1.2.1 "$NEW" >"$T_TMP/answers"
while IFS='|' read -r edit want && IFS= read -r answer <&3; do
    refused "rule: $edit" "$want" echo "$answer"
done <"$RULES" 3<"$T_TMP/answers"
$MK mutate "$NEW" 'x-vendor={a: 1}' 'metadata.x-tracking=yes' 'deploymentProfiles[0].components[0].properties.x-extra=1' \
    'deploymentProfiles[0].requiredResources.cpu.architectures=[x86_64, riscv64]' >"$T_TMP/ext.yaml"
ok "unknown and x- keys, and an open architecture list, are allowed" $MK desc "$U" spec/ext 1.2.1 "$T_TMP/ext.yaml"
$MK mutate "$NEW" 'kind!' 'id=Bad_Id' 'metadata.catalog!' >"$T_TMP/three.yaml"
refused "several findings are reported in one message" \
    "kind is required (ApplicationDescription); id 'Bad_Id' must match ^[a-z0-9-]{1,200}\$; metadata.catalog is required" \
    $MK desc "$U" spec/broken 1.2.1 "$T_TMP/three.yaml"
printf 'apiVersion: margo.org/v1-alpha1\nkind: ApplicationDescription\nmetadata:\n  name: [Hello\n  version: 1.0.0\n' >"$T_TMP/syntax.yaml"
refused "a YAML error names the line it is about" "margo.yaml line 5 column 10 ('  version: 1.0.0'): did not find expected ',' or ']' (while parsing a flow sequence at line 4: '  name: [Hello')" \
    $MK desc "$U" spec/broken 1.0.0 "$T_TMP/syntax.yaml"
refused "compose: the registry page's oras example (annotations on the manifest) is told where they belong" \
    "org.margo.component.type and org.margo.component.version belong on the layer (layers[0].annotations), not on the manifest's annotations" \
    $MK compose "$U" comp/bad 1.2.3 --variant manifest-annotations
refused "compose: org.opencontainers.image.version must equal the component version" \
    "org.opencontainers.image.version '9.9.9' must equal org.margo.component.version '1.2.3'" \
    $MK compose "$U" comp/bad 1.2.3 --variant image-version-differs

# ---- the valid ones pull byte for byte (skopeo to an OCI layout) ----
t_check "skopeo pulls the package" skopeo copy -q --src-tls-verify=false \
    "docker://127.0.0.1:$BERTH_PORT/apps/hello:1.0.0" "oci:$T_TMP/pkg:1.0.0"
m=$(jq -r '.manifests[0].digest' "$T_TMP/pkg/index.json" | cut -d: -f2)
t_eq "the pulled package keeps its artifactType and layers" "application/vnd.margo.app.v1+json 3" \
    "$(jq -r '"\(.artifactType) \(.layers | length)"' "$T_TMP/pkg/blobs/sha256/$m")"
# ---- berth app push | inspect | pull: a package folder to the registry and back ----
P=$T_TMP/apkg
mkdir -p "$P/resources"
cat >"$P/margo.yaml" <<'YML'
apiVersion: margo.org/v1-alpha1
kind: ApplicationDescription
metadata:
  id: cli-app
  name: CLI App
  version: 2.0.0+b1
  catalog:
    application:
      icon: ./resources/icon.png
      descriptionFile: resources//description.md
      licenseFile: resources/license.txt
    organization:
      - name: Example
deploymentProfiles:
  - type: compose
    id: cli-compose
    components:
      - name: web
        properties: {repository: oci://reg.example.com/compose/web, revision: 1.0.0}
YML
head -c 3000 /dev/urandom >"$P/resources/icon.png"
echo "# CLI App" >"$P/resources/description.md"
echo "MIT" >"$P/resources/license.txt"
head -c 2000 /dev/urandom >"$P/resources/screenshot.png" # named nowhere in margo.yaml
out=$("$BERTH" app push "$P" "$U/apps/cli" 2>&1)
t_check "berth app push (tag = metadata.version, '+' as '_'): $out" grep -q "apps/cli:2.0.0_b1 sha256:" <<<"$out"
curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$U/v2/apps/cli/manifests/2.0.0_b1" >"$T_TMP/cli.json"
t_eq "... the manifest has the margo artifactType, the empty config and 5 layers" \
    "application/vnd.margo.app.v1+json application/vnd.oci.empty.v1+json 5 application/vnd.margo.app.icon.v1+png,application/vnd.margo.app.descriptionFile.v1+markdown,application/vnd.margo.app.licenseFile.v1+plain,image/png" \
    "$(jq -r '"\(.artifactType) \(.config.mediaType) \(.layers | length) \([.layers[1:][].mediaType] | join(","))"' "$T_TMP/cli.json")"
t_eq "... every file of the folder, titles normalised (no ./ or //), each resource annotated" \
    "margo.yaml=null resources/icon.png=metadata.catalog.application.icon resources/description.md=metadata.catalog.application.descriptionFile resources/license.txt=metadata.catalog.application.licenseFile resources/screenshot.png=resources/screenshot.png" \
    "$(jq -r '[.layers[].annotations | "\(.["org.opencontainers.image.title"])=\(.["org.margo.app.resource"])"] | join(" ")' "$T_TMP/cli.json")"
t_eq "berth app inspect prints the summary" "id: cli-app|name: CLI App|version: 2.0.0+b1|profile: compose cli-compose|  component: web oci://reg.example.com/compose/web@1.0.0" \
    "$("$BERTH" app inspect "$U/apps/cli:2.0.0_b1" | paste -sd'|')"
"$BERTH" app pull "$U/apps/cli:2.0.0_b1" "$T_TMP/pulled" >/dev/null
t_check "berth app pull writes the folder back byte for byte" diff -r "$P" "$T_TMP/pulled"
sed -i 's/id: cli-app/id: CLI_App/' "$P/margo.yaml"
out=$("$BERTH" app push "$P" "$U/apps/cli" 2>&1)
t_check "berth app push refuses an invalid margo.yaml before sending it ($out)" \
    grep -q "metadata.id 'CLI_App' must match" <<<"$out"
t_eq "berth app pull of something that is not a package fails clearly" 1 \
    "$("$BERTH" app pull "$U/comp/hello:1.2.3" "$T_TMP/x" >/dev/null 2>&1; echo $?)"
# ---- berth compose push | pull ----
C=$T_TMP/web
mkdir -p "$C/config"
printf 'services:\n  web:\n    image: docker.io/library/nginx:1.25\n' >"$C/compose.yaml"
echo "x=1" >"$C/config/app.conf"
ln -s app.conf "$C/config/current.conf"
cp "$C/config/app.conf" "$C/tool" && chmod 4755 "$C/tool"
out=$("$BERTH" compose push "$C" "$U/comp/web:1.0.0_b2" 2>&1)
t_check "berth compose push (the server's archive rules pass): $out" grep -q "comp/web:1.0.0_b2 sha256:" <<<"$out"
t_eq "... the layer is annotated with the revision" "compose 1.0.0+b2" \
    "$(curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$U/v2/comp/web/manifests/1.0.0_b2" | jq -r '.layers[0].annotations | "\(.["org.margo.component.type"]) \(.["org.margo.component.version"])"')"
"$BERTH" compose pull "$U/comp/web:1.0.0_b2" "$T_TMP/webout" >/dev/null
t_check "berth compose pull extracts the same files" diff -r "$C" "$T_TMP/webout/web"
t_eq "... the link inside the directory is kept" app.conf "$(readlink "$T_TMP/webout/web/config/current.conf")"
t_eq "... and no setuid bit survived" 755 "$(stat -c %a "$T_TMP/webout/web/tool")"
# temporary files go to $TMPDIR: one that does not exist makes the pull fail, saying so
out=$(TMPDIR=$T_TMP/no-such-dir "$BERTH" compose pull "$U/comp/web:1.0.0_b2" "$T_TMP/webout2" 2>&1)
t_check "compose pull writes its temporary file in \$TMPDIR ($out)" grep -q "temporary file" <<<"$out"
mkdir -p "$T_TMP/tmpd"
t_check "... and works with a \$TMPDIR that exists" \
    env TMPDIR="$T_TMP/tmpd" "$BERTH" compose pull "$U/comp/web:1.0.0_b2" "$T_TMP/webout3"
ln -s ../../etc/passwd "$C/config/evil"
out=$("$BERTH" compose push "$C" "$U/comp/web:1.0.1" 2>&1)
t_check "berth compose push refuses a link leaving the directory ($out)" grep -q "symbolic link leaving the directory" <<<"$out"
t_check "berth compose push needs a SemVer revision as the tag" bash -c \
    "! '$BERTH' compose push '$C' '$U/comp/web:latest' 2>/dev/null"
berth_stop

# ---- margo.validation: warn ----
mkdir -p "$T_TMP/w"
printf 'version: 0.1\nmargo:\n  validation: warn\n' >"$T_TMP/w/config.yml"
berth_start "$T_TMP/w" || { t_fail "berth starts (warn)"; t_finish; }
ok "validation warn: a broken package is stored" $MK package "$BERTH_URL" apps/bad 1.0.0 --variant bad-id
t_check "validation warn: ... and the violation is logged" grep -q "margo artifact stored despite a violation" "$T_TMP/w/berth.log"
ok "validation warn: a description with several findings is stored" \
    $MK desc "$BERTH_URL" apps/warn 1.2.1 "$NEW" --edit 'kind!' --edit 'configuration.schema[0].dataType!'
t_check "validation warn: ... and each finding is logged" bash -c \
    "grep -q 'finding=\"kind is required' '$T_TMP/w/berth.log' && grep -q 'finding=\"configuration.schema\[0\].dataType is required' '$T_TMP/w/berth.log'"
berth_stop
t_eq "berth exits cleanly" 0 $?
t_finish
