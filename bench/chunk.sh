#!/usr/bin/env bash
# The chunked erofs layer cache (issue 14, "each COPY'd byte written at most once")
# against the tree cache, in one run, cold builds alternating KEEL_LAYER_FORMAT=tree (the
# COPY layer written as its blob and unpacked into a tree by `layer::tee`) and
# KEEL_LAYER_FORMAT=chunk (the blob, plus a metadata-only erofs image whose files point
# into it, mounted under the RUN step's overlay):
#   big   FROM bbssl / COPY big/ /data/ (3 × 300 MiB) / RUN openssl dgst -sha256 -r
#         /data/* > /sums / COPY VERSION /VERSION   (bench/build.sh's goal row)
#   10k   bench/build.sh's 10,000 × 512-byte context: COPY src/ /app/ / RUN find | wc -l
#         cold, then (c10k-one) one file changed and built again from the cache, then
#         (c10k-start) `keel run --rm c10k /bin/true` of that image (hyperfine -N)
# Each build starts after `keel rmi` + `keel gc --cache` + `sync`; its time is the build
# and a `sync` after it (what it wrote reaches the disk). Bytes written: the keel process
# tree's write_bytes − cancelled_write_bytes (/proc/PID/io of a shell that waited for it:
# a reaped child's I/O is added to its parent's), and the sectors the store's disk wrote
# (/sys/block/DEV/stat, field 7; the whole machine's, so noisy when others write).
# Prints each run with the load, then the medians.
# Usage (as root): bench/chunk.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
runs="${1:-3}"
cargo build --release --locked -q
keel="$PWD/target/release/keel"
work=$(mktemp -d /var/tmp/keel-bench-chunk.XXXXXX)
trap 'rm -rf "$work"' EXIT
export KEEL_ROOT="$work/root"
dev=$(lsblk -no pkname "$(findmnt -no source -T "$work")" 2>/dev/null || true)
[[ -n "$dev" ]] || dev=$(basename "$(findmnt -no source -T "$work")")
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; disk $dev"
drop_kernel_caches
$keel --progress quiet bootstrap busybox bb >/dev/null
make_bbssl "$keel" "$work/bbssl"
mkdir -p "$work/big/big"
for i in 1 2 3; do head -c $((300 << 20)) /dev/urandom >"$work/big/big/blob$i"; done
echo 1 >"$work/big/VERSION"
printf 'FROM bbssl\nCOPY big/ /data/\nRUN openssl dgst -sha256 -r /data/* > /sums\nCOPY VERSION /VERSION\n' >"$work/big/Dockerfile"
make_ctx10k "$work/ctx10k"
sectors() { awk '{print $7}' "/sys/block/$dev/stat"; }

# ROW FORMAT CTX: one cold build, printed as a line of key=value.
cold() {
  local row=$1 format=$2 ctx=$3
  $keel rmi "$row" >/dev/null 2>&1 || true
  $keel gc --cache >/dev/null
  sync
  local load s0 start wall s1 io
  load=$(cut -d' ' -f1 /proc/loadavg)
  s0=$(sectors)
  start=$(date +%s%N)
  io=$(KEEL_LAYER_FORMAT=$format bash -c '"$@" >/dev/null; sync; cat /proc/$$/io' _ \
    $keel --progress quiet build --no-cache -t "$row" "$ctx")
  wall=$((($(date +%s%N) - start) / 1000000))
  s1=$(sectors)
  local wb cwb
  wb=$(awk '/^write_bytes/ {print $2}' <<<"$io")
  cwb=$(awk '/^cancelled_write_bytes/ {print $2}' <<<"$io")
  echo "$row $format load=$load build_sync_ms=$wall written_mib=$(((wb - cwb) >> 20)) disk_mib=$((((s1 - s0) * 512) >> 20))" | tee -a "$work/runs"
}

# FORMAT: after a cold build of c10k, one file changed and the image built again (the
# COPY's new layer from the old one's blob and cache entry; the RUN step again).
one_file() {
  local format=$1 load start wall io wb cwb
  head -c 512 /dev/urandom >"$work/ctx10k/src/d042/f00042.txt"
  sync
  load=$(cut -d' ' -f1 /proc/loadavg)
  start=$(date +%s%N)
  io=$(KEEL_LAYER_FORMAT=$format bash -c '"$@" >/dev/null; cat /proc/$$/io' _ \
    $keel --progress quiet build -t c10k "$work/ctx10k")
  wall=$((($(date +%s%N) - start) / 1000000))
  wb=$(awk '/^write_bytes/ {print $2}' <<<"$io")
  cwb=$(awk '/^cancelled_write_bytes/ {print $2}' <<<"$io")
  echo "c10k-one $format load=$load build_ms=$wall written_kib=$(((wb - cwb) >> 10))" | tee -a "$work/runs"
}

# FORMAT: container start of the c10k image just built (its COPY layer's entry of that
# format, the base and RUN layers trees): `keel run --rm c10k /bin/true`, hyperfine -N,
# the median and the mean CPU (user + sys) in ms.
start() {
  local format=$1 load
  load=$(cut -d' ' -f1 /proc/loadavg)
  hyperfine -N --warmup 3 --runs 30 --export-json "$work/start.json" \
    "$keel --progress quiet run --rm c10k /bin/true" >/dev/null 2>&1
  echo "c10k-start $format load=$load median_us=$(jq -r '.results[0].median * 1e6 | floor' "$work/start.json") cpu_us=$(jq -r '(.results[0].user + .results[0].system) * 1e6 | floor' "$work/start.json")" | tee -a "$work/runs"
}

for i in $(seq "$runs"); do
  for format in tree chunk; do
    cold big "$format" "$work/big"
    cold c10k "$format" "$work/ctx10k"
    one_file "$format"
    start "$format"
  done
done
# The image each format builds from scratch is the same.
for format in tree chunk; do
  KEEL_LAYER_FORMAT=$format $keel --progress quiet build --no-cache -q -t big "$work/big" | sed "s/^/big image ($format): /"
done
python3 - "$work/runs" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for row in ("big", "c10k", "c10k-one", "c10k-start"):
    for f in ("tree", "chunk"):
        vals = {}
        for r in rows:
            if r[0] != row or r[1] != f:
                continue
            for kv in r[3:]:
                k, v = kv.split("=")
                vals.setdefault(k, []).append(int(v))
        print(f"median {row} {f}: " + ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in vals.items()))
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
