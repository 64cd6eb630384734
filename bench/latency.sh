#!/usr/bin/env bash
# Issue 14's two latency goals, old keel against new in the same run: the no-op rebuild
# of a 10,000-file context (goal ≤ 25 ms median) and `keel run --rm bb /bin/true` against
# `runc run` of the same rootfs (goal ≤ 0.5× runc). hyperfine -N, medians and minimums;
# the load average is printed, since other work on the machine moves every figure, and
# so is each command's CPU time (user + sys, hyperfine's means), which moves less.
# OLD is a keel binary to compare with (say, main's release build); without it only the
# working tree's build is timed.
# Usage (as root): bench/latency.sh [RUNS] [OLD]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
runs="${1:-50}"
old="${2:-}"
cargo build --release --locked -q
new="$PWD/target/release/keel"
work=$(mktemp -d /var/tmp/keel-bench-latency.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
drop_kernel_caches
sides=(new)
[[ -n "$old" ]] && sides=(old new)

make_ctx10k "$work/ctx10k"
sleep 2 # past the stat index's racy window
for side in "${sides[@]}"; do
  bin=${!side}
  $bin --root "$work/r-$side" --progress quiet bootstrap busybox bb >/dev/null
  $bin --root "$work/r-$side" --progress quiet build -t c10k "$work/ctx10k" >/dev/null
done

# The same rootfs for runc, as an OCI bundle (bench/run-latency.sh does the same).
$new --root "$work/r-new" save bb -o "$work/bb.tar"
mkdir -p "$work/layout" && tar -C "$work/layout" -xf "$work/bb.tar"
umoci unpack --image "$work/layout:bb:latest" "$work/bundle" >/dev/null
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
json.dump(c, open(sys.argv[1], "w"))
PY

# TITLE JSON: one markdown row per command (median, min, mean ± σ in ms).
table() {
  python3 - "$@" <<'PY'
import json, sys
title, path = sys.argv[1], sys.argv[2]
print(f"### {title}\n\n| command | median | min | mean ± σ | CPU (user + sys) |\n|---|---:|---:|---:|---:|")
for r in json.load(open(path))["results"]:
    ms = lambda s: s * 1000
    cpu = f"{ms(r['user']):.1f} + {ms(r['system']):.1f} ms"
    print(f"| {r['command']} | {ms(r['median']):.1f} ms | {ms(r['min']):.1f} ms | {ms(r['mean']):.1f} ± {ms(r['stddev']):.1f} ms | {cpu} |")
print()
PY
}
args=()
for side in "${sides[@]}"; do
  args+=(-n "$side: keel build (no-op, 10,000 files)" "${!side} --root $work/r-$side --progress quiet build -t c10k $work/ctx10k")
done
hyperfine -N --warmup 5 --runs "$runs" --export-json "$work/noop.json" "${args[@]}" >/dev/null
table "no-op rebuild, 10,000 files (goal ≤ 25 ms median)" "$work/noop.json"

# Syscalls of one no-op rebuild per side (strace -c -f): what the CPU figures come from.
if command -v strace >/dev/null; then
  echo "### syscalls of one no-op rebuild (strace -c -f)"
  echo
  for side in "${sides[@]}"; do
    strace -c -f -o "$work/strace-$side" "${!side}" --root "$work/r-$side" --progress quiet \
      build -t c10k "$work/ctx10k" >/dev/null
    python3 - "$side" "$work/strace-$side" <<'PY'
import sys
side, path = sys.argv[1], sys.argv[2]
calls = {}
for line in open(path):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        calls[f[-1]] = int(f[3])
total = sum(calls.values())
top = sorted(calls.items(), key=lambda kv: -kv[1])[:8]
writes = sum(calls.get(k, 0) for k in ("rename", "renameat2", "unlink", "unlinkat", "mkdir", "symlink", "utimensat", "write"))
print(f"- {side}: {total} calls; " + ", ".join(f"{k} {v}" for k, v in top) + f"; rename/unlink/mkdir/symlink/utimensat/write {writes}")
PY
  done
  echo
fi

# keel's teardown frees disk blocks (the snapshot's and record's directories), runc's run
# of a bundle none; on ext4 mounted with `discard` each free waits for the disk, and that
# wait moves 50× from one minute to the next here (docs/performance.md, Session 7), so
# the run says what it was.
python3 - "$work" <<'PY'
import os, statistics, sys, time
ts = []
for i in range(10):
    d = os.path.join(sys.argv[1], "discard-probe-%d" % i)
    os.mkdir(d)
    t = time.perf_counter()
    os.rmdir(d)
    ts.append((time.perf_counter() - t) * 1000)
print(f"disk: rmdir of a fresh directory (frees one block), median {statistics.median(ts):.2f} ms, max {max(ts):.2f} ms\n")
PY
# Alternating rounds (old, new, runc; then the other way round), not one command's runs
# after another's: the disk's latency drifts within a minute (above), and hyperfine's
# blocks would each see a different disk. Wall time and CPU (user + sys of the command
# and its children), medians.
start=("runc run (same rootfs)=runc run --bundle $work/bundle bench-latency")
for side in "${sides[@]}"; do
  start=("$side: keel run --rm bb /bin/true=${!side} --root $work/r-$side run --rm bb /bin/true" "${start[@]}")
done
args=()
for c in "${start[@]}"; do args+=(-n "${c%%=*}" "${c#*=}"); done
python3 bench/alternate.py --warmup 5 --runs "$runs" --export-json "$work/start.json" "${args[@]}"
python3 - "$work/start.json" <<'PY'
import json, statistics, sys
res = json.load(open(sys.argv[1]))["results"]
print("### container start (goal ≤ 0.5× runc)\n")
print("| command | median | p25 | min | CPU median |\n|---|---:|---:|---:|---:|")
for r in res:
    w = sorted(t * 1000 for t in r["times"])
    print(f"| {r['command']} | {r['median'] * 1000:.1f} ms | {statistics.quantiles(w, n=4)[0]:.1f} ms | {w[0]:.1f} ms | {r['cpu_median'] * 1000:.1f} ms |")
print()
runc = res[-1]["median"]
for r in res[:-1]:
    print(f"{r['command']}: {r['median'] / runc:.2f}× runc (medians)")
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
