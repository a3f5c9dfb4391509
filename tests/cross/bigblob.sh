#!/usr/bin/env bash
# Large files on a 32-bit build (issue 22): the armhf lane of tests/run.sh runs this against
# build/armhf/berth under qemu-user. Without 64-bit file offsets (-D_FILE_OFFSET_BITS=64) a blob
# over 2 GiB cannot be written or sent, and a directory on a file system with 64-bit inode numbers
# cannot be listed (EOVERFLOW), so cancelled uploads were never deleted. Here: a 2.06 GiB blob is
# pushed in one PUT, its size and a range past 2 GiB are read back, and a cancelled upload's
# directory is gone. Not in tests/integration/: on a 64-bit build it would only cost minutes.
. "$(dirname "$0")/../lib.sh"
berth_start "$T_TMP/b" || {
    t_fail "berth starts"
    t_finish
}
U=$BERTH_URL
big=$T_TMP/big.bin
size=$((2 * 1024 * 1024 * 1024 + 64 * 1024 * 1024))
# sparse but for a marker at the end, so the file costs almost no disk and little time
truncate -s $((size - 16)) "$big"
printf 'end-of-the-blob!' >>"$big"
d=sha256:$(t_sha256 "$big")
loc=$(curl -s -D - -o /dev/null -X POST "$U/v2/big/blob/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
case $loc in /*) loc=$U$loc ;; esac
sep='?'
case $loc in *\?*) sep='&' ;; esac
t_eq "a 2.06 GiB blob in one PUT -> 201" 201 "$(curl -s -o "$T_TMP/put.out" -w '%{http_code}' -X PUT \
    -H 'Content-Type: application/octet-stream' -T "$big" "$loc${sep}digest=$d")"
t_eq "HEAD says its size" "$size" "$(curl -s -I "$U/v2/big/blob/blobs/$d" | tr -d '\r' |
    sed -n 's/^[Cc]ontent-[Ll]ength: //p')"
t_eq "a range past 2 GiB reads the end" "end-of-the-blob!" \
    "$(curl -s -r $((size - 16))-$((size - 1)) "$U/v2/big/blob/blobs/$d")"
rm -f "$big"
# a cancelled upload: its directory under uploads/ goes (the listing that failed with EOVERFLOW)
loc=$(curl -s -D - -o /dev/null -X POST "$U/v2/big/blob/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
case $loc in /*) loc=$U$loc ;; esac
curl -s -o /dev/null -X PATCH -H 'Content-Type: application/octet-stream' --data-binary 'some bytes' "$loc"
t_eq "DELETE of the upload -> 204" 204 "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$loc")"
t_eq "no upload directory is left" "" "$(find "$T_TMP/b/data/uploads" -mindepth 1 -maxdepth 1 2>/dev/null)"
t_check "berth exits 0 on SIGTERM" berth_stop
t_finish
