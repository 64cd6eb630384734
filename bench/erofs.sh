#!/usr/bin/env bash
# The erofs layer cache (issue 14, "never unpack") against the tree cache, in one run:
# cold builds of the bench's 10,000-file context (`COPY src/ /app/` + `RUN find …`, as in
# bench/build.sh), alternating KEEL_LAYER_FORMAT unset (the COPY layer unpacked into a
# tree by `layer::tee`) and KEEL_LAYER_FORMAT=erofs (the layer written as one erofs
# image, mounted file-backed under the RUN step's overlay). Each build starts after
# `keel rmi` + `keel gc --cache` + `sync`, as the bench's cold row does; the COPY and
# RUN steps' own times come from `-v --progress plain` (`elapsed_ms`); then one
# `keel run --rm c10k /bin/true` on the image just built. Prints each run with the load,
# then the medians.
# Usage (as root): bench/erofs.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
runs="${1:-5}"
cargo build --release --locked -q
keel="$PWD/target/release/keel"
work=$(mktemp -d /var/tmp/keel-bench-erofs.XXXXXX)
trap 'rm -rf "$work"' EXIT
export KEEL_ROOT="$work/root"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
drop_kernel_caches
$keel --progress quiet bootstrap busybox bb >/dev/null
make_ctx10k "$work/ctx10k"
for i in $(seq "$runs"); do
  for format in tree erofs; do
    $keel rmi c10k >/dev/null 2>&1 || true
    $keel gc --cache >/dev/null
    sync
    load=$(cut -d' ' -f1 /proc/loadavg)
    start=$(date +%s%N)
    out=$(KEEL_LAYER_FORMAT=$format $keel -v --progress plain build --no-cache -t c10k "$work/ctx10k" 2>&1)
    wall=$((($(date +%s%N) - start) / 1000000))
    copy=$(grep 'COPY src.*step finished' <<<"$out" | sed 's/.*elapsed_ms=//')
    run=$(grep 'RUN find.*step finished' <<<"$out" | sed 's/.*elapsed_ms=//')
    # A container start on the image just built (its layers in the cache as this format).
    start=$(date +%s%N)
    KEEL_LAYER_FORMAT=$format $keel --progress quiet run --rm c10k /bin/true
    started=$((($(date +%s%N) - start) / 1000000))
    echo "$format load=$load build_ms=$wall copy_ms=$copy run_ms=$run start_ms=$started" | tee -a "$work/runs"
  done
done
python3 - "$work/runs" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for f in ("tree", "erofs"):
    vals = {k: [] for k in ("build_ms", "copy_ms", "run_ms", "start_ms")}
    for r in rows:
        if r[0] != f:
            continue
        for kv in r[2:]:
            k, v = kv.split("=")
            vals[k].append(int(v))
    print(f"median {f}: " + ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in vals.items()))
PY
