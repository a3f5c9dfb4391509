#!/usr/bin/env bash
# The configuration table (src/config.c config_keys[]) against docs/configuration.md and against
# the loader. `berth serve --help` prints the table, one key a line (key, type, default, help):
#   docs      every key of the table has a row in docs/configuration.md and every key a row
#             there names is in the table; where a row gives one plain default (`10MiB`), the
#             table's default is the same
#   defaults  a config that sets every plain key of the table to its printed default is read by
#             `berth migrate` with no "unknown configuration key" warning: the keys --help lists
#             are the keys the loader reads, and every printed default parses
# No server is started: a few seconds.
. "$(dirname "$0")/../lib.sh"
t_need_tools python3

DOCS=$T_ROOT/docs/configuration.md
"$BERTH" serve --help >"$T_TMP/help" 2>&1
# the table's lines: after the "key type default meaning" header, "  key type default help..."
awk 'f && /^  [a-z]/ {print $1, $2, $3} /^  key +type +default/ {f=1}' "$T_TMP/help" >"$T_TMP/keys"
t_check "serve --help lists the keys (more than 100)" test "$(wc -l <"$T_TMP/keys")" -gt 100

# docs rows: in tables headed "| key | default | meaning |", each backticked key of the first
# cell, with the row's default cell ("key<TAB>default")
python3 - "$DOCS" >"$T_TMP/docs" <<'PY'
import re, sys
inside = False
for line in open(sys.argv[1]):
    if re.match(r'^\| key \| default \| meaning \|', line):
        inside = True
        continue
    if not line.startswith('|'):
        inside = False
        continue
    if not inside or line.startswith('|---'):
        continue
    cells = [c.strip() for c in line.strip().strip('|').split(' | ')]
    for k in re.findall(r'`([^`]+)`', cells[0]):
        if re.fullmatch(r'[a-z][a-z0-9_]*(\.([a-z0-9_]+(\[\])?|<name>))*', k):
            print(k + '\t' + (cells[1] if len(cells) > 1 else ''))
PY

t_group docs
cut -d' ' -f1 "$T_TMP/keys" | sort -u >"$T_TMP/table.k"
cut -f1 "$T_TMP/docs" | sort -u >"$T_TMP/docs.k"
t_eq "every key of the table is in docs/configuration.md" "" \
    "$(comm -23 "$T_TMP/table.k" "$T_TMP/docs.k" | tr '\n' ' ')"
t_eq "every key docs/configuration.md lists is in the table" "" \
    "$(comm -13 "$T_TMP/table.k" "$T_TMP/docs.k" | tr '\n' ' ')"
bad=
compared=0
while IFS=$'\t' read -r key def; do
    # only rows naming one key with one plain default: `168h`
    [[ $def =~ ^\`([^\`]+)\`$ ]] || continue
    [ "$(awk -F'\t' -v k="$key" '$1 == k' "$T_TMP/docs" | wc -l)" -eq 1 ] || continue
    want=${BASH_REMATCH[1]// /}
    got=$(awk -v k="$key" '$1 == k {print $3}' "$T_TMP/keys")
    [ -n "$got" ] || continue
    compared=$((compared + 1))
    [ "$got" = "$want" ] || bad+="$key: table $got, docs $want; "
done <"$T_TMP/docs"
t_check "the docs compare more than 40 defaults with the table ($compared)" test "$compared" -gt 40
t_eq "the table's defaults are the documented ones" "" "$bad"

t_group defaults
# every plain key (not a section, not a member of a named map, not storage.s3.*, which would
# select the S3 backend) set to its printed default, as a nested mapping (JSON is YAML)
python3 - "$T_TMP/keys" >"$T_TMP/config.yml" <<'PY'
import json, sys
doc = {}
for line in open(sys.argv[1]):
    key, typ, default = line.split()
    if typ in ('section', 'map', 'list', 'any') or default in ('-', 'auto') or '<name>' in key or '[]' in key \
            or key.startswith('storage.s3.'):
        continue
    node = doc
    parts = key.split('.')
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = default
print(json.dumps(doc, indent=1))
PY
t_check "the defaults config sets more than 30 keys" \
    test "$(grep -c '": "' "$T_TMP/config.yml")" -gt 30
REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$T_TMP/data \
    "$BERTH" migrate -c "$T_TMP/config.yml" >"$T_TMP/migrate.log" 2>&1
t_eq "berth reads every key at its printed default" 0 $?
t_eq "no key --help lists is unknown to the loader" "" \
    "$(grep -o 'unknown configuration key ignored.*' "$T_TMP/migrate.log" | tr '\n' ' ')"
# a misspelt key next to a known one is named: the check above can fail
printf 'http:\n  addr: ":5000"\n  adress: ":5000"\n' >"$T_TMP/typo.yml"
REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$T_TMP/data \
    "$BERTH" migrate -c "$T_TMP/typo.yml" >"$T_TMP/typo.log" 2>&1
t_check "a key not in the table is reported unknown" \
    grep -q 'unknown configuration key ignored.*http.adress' "$T_TMP/typo.log"

t_finish
