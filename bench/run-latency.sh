#!/usr/bin/env bash
# Start-to-exit latency of `keel run --rm IMAGE /bin/true` against `runc run` of the same
# rootfs, with and without a network namespace, on this machine in the same run; then
# the cost of 100 containers in a row. Prints a markdown table (hyperfine does the timing).
# Usage (as root): bench/run-latency.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-30}"
cargo build --release --locked -q
keel="$PWD/target/release/keel"
work=$(mktemp -d /tmp/keel-bench-run.XXXXXX)
trap 'rm -rf "$work"' EXIT
export KEEL_ROOT="$work/root"
$keel --progress quiet bootstrap busybox bb >/dev/null
# The same rootfs for runc, as an OCI bundle made by runc itself.
$keel save bb -o "$work/bb.tar"
mkdir -p "$work/layout" && tar -C "$work/layout" -xf "$work/bb.tar"
umoci unpack --image "$work/layout:bb:latest" "$work/bundle" >/dev/null
cd "$work/bundle"
python3 - <<'PY'
import json
c = json.load(open("config.json"))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
json.dump(c, open("config.json", "w"))
c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
json.dump(c, open("config-hostnet.json", "w"))
PY
# runc refuses a symlinked rootfs; point the second config at the first bundle's rootfs.
mkdir -p ../bundle-hostnet
python3 -c 'import json,sys; c=json.load(open("config-hostnet.json")); c["root"]["path"]=sys.argv[1]; json.dump(c,open("../bundle-hostnet/config.json","w"))' "$work/bundle/rootfs"
cd "$work"
# hyperfine subtracts its shell's start-up time from every command alike.
hyperfine --warmup 3 --runs "$runs" --export-markdown "$work/table.md" \
  -n "keel run --rm (own netns)" "$keel run --rm bb /bin/true" \
  -n "runc run (own netns)" "runc run --bundle $work/bundle bench-\$\$" \
  -n "keel run --rm --network host" "$keel run --rm --network host bb /bin/true" \
  -n "runc run (host netns)" "runc run --bundle $work/bundle-hostnet bench-\$\$" >/dev/null
cat "$work/table.md"
start=$(date +%s%N)
for _ in $(seq 100); do $keel run --rm bb /bin/true; done
end=$(date +%s%N)
echo
echo "100 containers in a row (keel run --rm bb /bin/true): $(( (end - start) / 1000000 )) ms total, $(( (end - start) / 100000000 )) ms each"
start=$(date +%s%N)
for i in $(seq 100); do runc run --bundle "$work/bundle" "bench-seq-$i" ; done
end=$(date +%s%N)
echo "100 containers in a row (runc run, same rootfs): $(( (end - start) / 1000000 )) ms total, $(( (end - start) / 100000000 )) ms each"
