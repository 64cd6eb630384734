#!/usr/bin/env bash
# keel pull against `skopeo copy docker://… oci:…` and `podman pull` of the same image
# from a local docker-registry (127.0.0.1, plain HTTP) in the same run: a 500 MB image of
# 5 random-content 100 MB layers (pushed gzip-compressed by keel, as docker would), each
# tool starting from an empty store every run. Then a cache-from build on a fresh root
# against the same build cold. Prints markdown tables (hyperfine does the timing).
# Usage (as root): [KEEL=BINARY] [KEEL_BEFORE=BINARY] bench/pull.sh [RUNS] [MB_PER_LAYER]
# KEEL_BEFORE adds rows for an older keel binary (a before/after in the same run).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
mb="${2:-100}"
# KEEL=path/to/keel measures that binary (e.g. a copy of an older build) instead.
if [ -z "${KEEL:-}" ]; then cargo build --release --locked -q; fi
keel="${KEEL:-$PWD/target/release/keel}"
work=$(mktemp -d /var/tmp/keel-bench-pull.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
podman_flags="--root $work/podman/root --runroot $work/podman/run --storage-driver vfs --events-backend file"
trap 'kill $reg_pid 2>/dev/null; podman $podman_flags rmi -a -f >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
reg="127.0.0.1:$port"

# The image: busybox + 5 layers of random bytes.
export KEEL_ROOT="$work/src"
$keel --progress quiet bootstrap busybox bb >/dev/null
$keel --progress quiet push bb "$reg/bench/bb:1" >/dev/null
mkdir -p "$work/ctx"
{
  echo "FROM $reg/bench/bb:1"
  for i in 1 2 3 4 5; do echo "RUN dd if=/dev/urandom of=/layer$i bs=1M count=$mb 2>/dev/null"; done
} > "$work/ctx/Dockerfile"
$keel --progress quiet build -t big "$work/ctx" >/dev/null
$keel --progress quiet push big "$reg/bench/big:1" >/dev/null
size=$($keel inspect big | python3 -c 'import json,sys; v=json.load(sys.stdin)[0]; print(sum(l["size"] for l in v["Manifest"]["layers"]))')
echo "### Pull of a $((size / 1000000)) MB, 6-layer image (5 × $mb MB random + busybox) from a local registry"
echo
before=()
if [ -n "${KEEL_BEFORE:-}" ]; then
  before=(-n "keel pull (before)" "$KEEL_BEFORE --root $work/k --progress quiet pull $reg/bench/big:1"
    -n "keel pull --no-fsync (before)" "$KEEL_BEFORE --root $work/k --no-fsync --progress quiet pull $reg/bench/big:1")
fi
hyperfine --runs "$runs" --export-markdown "$work/pull.md" --export-json "$work/pull.json" \
  --prepare "rm -rf $work/k $work/sk; podman $podman_flags rmi -a -f >/dev/null 2>&1 || true; sync" \
  "${before[@]}" \
  -n "keel pull" "$keel --root $work/k --progress quiet pull $reg/bench/big:1" \
  -n "keel pull --no-fsync" "$keel --root $work/k --no-fsync --progress quiet pull $reg/bench/big:1" \
  -n "skopeo copy docker:// oci:" "skopeo copy -q --src-tls-verify=false docker://$reg/bench/big:1 oci:$work/sk:big" \
  -n "podman pull" "podman $podman_flags pull -q --tls-verify=false $reg/bench/big:1" >/dev/null
cat "$work/pull.md"
echo
# The goal is stated against skopeo; medians, since one slow writeback skews a mean.
python3 - "$work/pull.json" <<'PY'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
sk = r["skopeo copy docker:// oci:"]
for name in ("keel pull", "keel pull --no-fsync"):
    ratio = r[name] / sk
    print(f"median: {name} {r[name]:.3f} s, skopeo {sk:.3f} s: {ratio:.2f}× (goal ≤ 0.5)")
    if ratio > 0.5:
        print(f"WARNING: {name} is {ratio:.2f}× skopeo's median, above the goal of 0.5")
PY
echo

# A pull of the image the store already has (only the manifest is fetched).
echo "### Pull of the same image when the store has it"
echo
$keel --root "$work/kp" --progress quiet pull "$reg/bench/big:1" >/dev/null
present=()
if [ -n "${KEEL_BEFORE:-}" ]; then
  present=(-n "keel pull, present (before)" "$KEEL_BEFORE --root $work/kp --progress quiet pull $reg/bench/big:1")
fi
hyperfine --runs "$runs" --warmup 1 --export-markdown "$work/present.md" "${present[@]}" \
  -n "keel pull, present" "$keel --root $work/kp --progress quiet pull $reg/bench/big:1" >/dev/null
cat "$work/present.md"
echo

# The shared cache, on a build shaped like a CI job's: a CPU-bound step (a shell loop
# standing in for a compile) with a small output, then a 20 MB artifact layer. A exports;
# a fresh root B builds with --cache-from (it pulls the base itself). The cold build is
# the same build with --no-cache.
echo "### Build with --cache-from on a fresh root vs the same build cold"
echo
mkdir -p "$work/ctx2"
cat > "$work/ctx2/Dockerfile" <<EOF
FROM $reg/bench/bb:1
RUN i=0; while [ \$i -lt 3000000 ]; do i=\$((i+1)); done; echo \$i > /compiled
RUN dd if=/dev/urandom of=/artifact bs=1M count=20 2>/dev/null
EOF
$keel --progress quiet build --cache-to "registry:$reg/bench/cache:1" -t ci "$work/ctx2" >/dev/null
hyperfine --runs "$runs" --export-markdown "$work/cache.md" \
  --prepare "rm -rf $work/b; sync" \
  -n "cold build (--no-cache)" "$keel --progress quiet build --no-cache -t ci $work/ctx2" \
  -n "fresh root, --cache-from" "$keel --root $work/b --progress quiet build --cache-from registry:$reg/bench/cache:1 -t ci $work/ctx2" >/dev/null
cat "$work/cache.md"
