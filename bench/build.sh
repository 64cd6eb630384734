#!/usr/bin/env bash
# keel build against buildah (`bud --layers`, runc) in the same run, the rows of issue 14:
#   big   3 × 300 MiB files: COPY, RUN SHA-256 (openssl), COPY VERSION — cold; and the
#         same with busybox's sha256sum (the workload of sessions 3–10, no goal)
#   10k   10,000 small files: COPY . /app, RUN — cold, no-op rebuild, one file changed
#   deb   a Debian base (keel bootstrap debian): apt-get install of a few hundred MB,
#         then COPY — cold (apt's downloads come from cache mounts on both sides, so the
#         network is not what is timed)
# then the regression checks (no-op rebuild of 10k files, container start against runc)
# and this machine's limits measured in the same run: a 1 GiB fdatasync'ed write (dd)
# and single-core SHA-256 (openssl), and the floors: each big row's RUN command run on
# the host over the same files, the one-file row's RUN alone (its overlay, `find` in a
# chroot, the unmount) and the no-op row's walk (two finds), with keel's and buildah's
# time above the floors of the build rows.
# Medians of RUNS runs; keel's and buildah's runs alternate (bench/alternate.py), so a
# drift of this VM's speed during a row moves both sides. The load average is printed.
# A line starting with WARNING names each figure that misses its goal.
# Cold keel builds start from a store without the image, its cache entries or its
# unpacked layers (`keel rmi` + `keel gc --cache`, or for the 10k row a copy of a store in
# that state), as buildah's `--no-cache` does.
# Usage (as root): [KEEP_WORK=1] bench/build.sh [RUNS] [--no-debian]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
runs="${1:-5}"
debian=1
[[ "${2:-}" == "--no-debian" ]] && debian=0
cargo build --release --locked -q
keel="$PWD/target/release/keel"
work=$(mktemp -d /var/tmp/keel-bench-build.XXXXXX)
# buildah's images from before the run: every other one (the bases imported, each
# --no-cache build's image and layers, ~3 GB per big-row run) goes at the end, or a few
# runs fill the disk (session 10: 59 GB in /var/lib/containers).
buildah images -a -q --no-trunc 2>/dev/null | sort >"$work/buildah-before"
buildah_cleanup() {
  buildah rm --all >/dev/null 2>&1 || true
  buildah images -a -q --no-trunc 2>/dev/null | sort | comm -13 "$work/buildah-before" - |
    xargs -r buildah rmi -f >/dev/null 2>&1 || true
}
# The one-file row's floor mounts an overlay under $work: never delete through it.
# Under `set -e` a failing command ends the trap too: the unmount of a floor that is not
# mounted (the usual case) must not skip the rest.
# KEEP_WORK=1 leaves the work directory (its keel store, contexts, runc bundle) to look
# into a figure afterwards (buildah's images go either way).
trap 'umount -q "$work/one-floor/m" 2>/dev/null || true; buildah_cleanup
  if [[ "${KEEP_WORK:-}" == 1 ]]; then echo "work directory kept: $work"; else rm -rf "$work"; fi' EXIT
export KEEL_ROOT="$work/root"
bud="buildah bud -q --layers --isolation oci --runtime runc"
alternate="python3 bench/alternate.py"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
drop_kernel_caches

import_base() { # NAME: a keel image into buildah's store under the same name
  $keel save "$1" -o "$work/$1.tar"
  buildah pull -q "oci-archive:$work/$1.tar" >/dev/null
  buildah tag "$(buildah images -q --filter "reference=$1" | head -1)" "localhost/$1" >/dev/null 2>&1 || true
  rm -f "$work/$1.tar"
}
$keel --progress quiet bootstrap busybox bb >/dev/null
import_base bb

fresh() { echo "$keel rmi $1 >/dev/null 2>&1; $keel gc --cache >/dev/null; sync"; }

# ROW TITLE JSON GOAL-RATIO: prints "| title | buildah | keel | keel/buildah |" (keel is
# command 0, buildah command 1) and a WARNING when the ratio is above the goal.
row() {
  python3 - "$@" <<'PY' | tee -a "$work/rows.md"
import json, sys
title, path, goal = sys.argv[1], sys.argv[2], float(sys.argv[3])
r = json.load(open(path))["results"]
k, b = r[0]["median"], r[1]["median"]
# Three decimals: a ratio of 0.053 against a goal of 0.05 must not print as "0.05".
print(f"| {title} | {b:.2f} s | {k:.2f} s | {k / b:.3f} (goal ≤ {goal}) |")
PY
  python3 - "$@" <<'PY' >>"$work/warnings"
import json, sys
title, path, goal = sys.argv[1], sys.argv[2], float(sys.argv[3])
r = json.load(open(path))["results"]
k, b = r[0]["median"], r[1]["median"]
if k / b > goal:
    print(f"WARNING: {title}: keel/buildah {k / b:.3f} misses its goal of ≤ {goal}")
PY
}
: >"$work/rows.md"
: >"$work/warnings"
: >"$work/notes"

# --- 3 × 300 MiB ------------------------------------------------------------------------
# The issue's limits assume the RUN's SHA-256 runs at the machine's speed (openssl with the
# CPU's SHA extensions, 1.4–1.8 GB/s), and its ≥ 300 MB/s end to end leaves the RUN under
# 3.1 s. busybox's sha256sum runs at ~165 MB/s here: its own 5.7 s were above 0.2× buildah
# (session 10), so no builder could meet the goal with it. The goal row's RUN therefore
# hashes with openssl, from a base image holding the host's openssl and its libraries
# (both builders use the same base); the busybox workload of sessions 3–10 is still
# measured, as its own row without a goal, so figures stay comparable across sessions.
openssl_bin=$(command -v openssl)
sslctx="$work/bbssl"
make_bbssl "$keel" "$sslctx"
import_base bbssl
rm -rf "$sslctx"
mkdir -p "$work/big/big"
for i in 1 2 3; do head -c $((300 << 20)) /dev/urandom >"$work/big/big/blob$i"; done
echo 1 >"$work/big/VERSION"
bytes=$(du -sb "$work/big/big" | cut -f1)
blobs="$work/big/big/blob1 $work/big/big/blob2 $work/big/big/blob3"

# BIG_ROW NAME BASE RUN-COMMAND HOST-COMMAND RUNS GOAL(0 = none) TITLE: the cold build of
# `FROM BASE / COPY big/ /data/ / RUN RUN-COMMAND /data/* > /sums / COPY VERSION /VERSION`,
# keel against buildah, then the floor that RUN sets (HOST-COMMAND over the same files on
# the host, page cache warm: no build of this Dockerfile can take less) and each
# builder's time above it.
big_row() {
  local name=$1 base=$2 cmd=$3 host_cmd=$4 n=$5 goal=$6 title=$7
  printf 'FROM %s\nCOPY big/ /data/\nRUN %s /data/* > /sums\nCOPY VERSION /VERSION\n' "$base" "$cmd" >"$work/big/Dockerfile"
  $keel --progress quiet build -t big "$work/big" >/dev/null # the context's digests are known
  $alternate --runs "$n" --export-json "$work/$name.json" \
    --prepare "$(fresh big)" -n "keel" "$keel --progress quiet build --no-cache -t big $work/big" \
    --prepare "sync" -n "buildah" "$bud --no-cache -t big $work/big" >/dev/null
  hyperfine --warmup 1 --runs "$n" --export-json "$work/$name-floor.json" \
    -n "floor" "$host_cmd $blobs" >/dev/null
  python3 - "$work/$name.json" "$work/$name-floor.json" "$bytes" "$goal" "$title" "$host_cmd" \
    "$work/notes" "$work/warnings" <<'PY' | tee -a "$work/rows.md"
import json, sys
big, floor, nbytes, goal, title, host_cmd, notes, warnings = sys.argv[1:]
r = json.load(open(big))["results"]
k, b = r[0]["median"], r[1]["median"]
f = json.load(open(floor))["results"][0]["median"]
mb, goal = int(nbytes) / 1e6, float(goal)
shown = f"{k / b:.2f} (goal ≤ {goal})" if goal else f"{k / b:.2f} (no goal)"
print(f"| {title} | {b:.2f} s | {k:.2f} s | {shown} |")
print(f"| keel end to end, {mb:.0f} MB context | | {mb / k:.0f} MB/s | {'(goal ≥ 300 MB/s)' if goal else ''} |")
print(f"| floor: the RUN's command (`{host_cmd.split('/')[-1]}`) on the same files on the host | | {f:.2f} s | |")
if k <= f:
    # The floor is measured after the builds: under a changing load it can come out
    # above keel's whole build, and a difference would mean nothing.
    print(f"| above the floor | | n/a: the floor ({f:.2f} s) took longer than keel's build; the load changed | |")
else:
    print(f"| above the floor (total − floor) | {b - f:.2f} s | {k - f:.2f} s | {(k - f) / (b - f):.2f} |")
if goal:
    w = open(warnings, "a")
    if k / b > goal:
        print(f"WARNING: {title}: keel/buildah {k / b:.2f} misses its goal of ≤ {goal}", file=w)
    if mb / k < 300:
        print(f"WARNING: {title}: {mb / k:.0f} MB/s end to end misses its goal of ≥ 300 MB/s", file=w)
    for what, t in (("≤ 0.2× buildah", 0.2 * b), ("≥ 300 MB/s end to end", mb / 300)):
        where = "below" if t < f else "above"
        print(f"NOTE: {what} means {t:.2f} s, {where} the {f:.2f} s the RUN step's own command takes here", file=open(notes, "a"))
PY
  $keel rmi big >/dev/null
  $keel gc --cache >/dev/null
}
big_row big "bbssl" "openssl dgst -sha256 -r" "$openssl_bin dgst -sha256 -r" "$runs" 0.2 \
  "3 × 300 MiB: COPY, RUN SHA-256 (openssl), COPY VERSION, cold"
big_row big-busybox "bb" "sha256sum" "$(command -v busybox) sha256sum" "$((runs < 3 ? runs : 3))" 0 \
  "3 × 300 MiB, the sessions 3–10 workload: RUN busybox sha256sum, cold"
rm -rf "$work/big"

# --- 10,000 small files -----------------------------------------------------------------
make_ctx10k "$work/ctx10k"
sleep 2 # let timestamps age past the stat index's racy window
c="$work/ctx10k"
# Each cold keel build gets its own copy of a store holding the base image and the
# context's stat index (what `keel rmi` + `keel gc --cache` leave), and no store is
# deleted until the script ends. Deleting the last build's 10,000 files right before
# the next one (the gc) makes every creation on this VM's ext4 (no journal) scan past
# the recently freed inodes: 0.3 s became 1.0–2.5 s (docs/performance.md, sessions 8
# and 10). buildah's --no-cache builds delete nothing before they start either. The
# cost of building right after such a gc is measured on its own below.
cp -a "$KEEL_ROOT" "$work/cold-template"
$keel --progress quiet build -t c10k "$c" >/dev/null
cp -a "$KEEL_ROOT/cache/stat/." "$work/cold-template/cache/stat/"
mkdir -p "$work/used-roots"
cold="$work/cold-root"
fresh_copy="mv $cold $work/used-roots/\$(date +%s%N) 2>/dev/null; cp -a $work/cold-template $cold; sync"
$alternate --runs "$runs" --export-json "$work/cold.json" \
  --prepare "$fresh_copy" -n "keel" "$keel --root $cold --progress quiet build --no-cache -t c10k $c" \
  --prepare "sync" -n "buildah" "$bud --no-cache -t c10k $c" >/dev/null
row "10,000 small files: COPY . /app, RUN, cold" "$work/cold.json" 0.1
$keel --progress quiet build -t c10k "$c" >/dev/null
$bud -t c10k "$c" >/dev/null
edit="head -c 512 /dev/urandom > $c/src/d000/f00000.txt"
# The row's floor, in the same rounds: its RUN step alone, as this kernel runs it for any
# builder — an overlay of the 10,000 files over a busybox tree, the RUN's command
# chrooted into it, then the unmount (which drops the ~10,000 overlay inodes the
# command's lstat's made). The overlay is `volatile`, as keel's RUN steps' are: without
# it the unmount syncs the whole upper filesystem and waits for whatever the other
# builder's run left dirty (0.15–0.35 s in one run, against 0.11–0.2 s). No build of this
# Dockerfile's edit can take less than that plus the walk of its context (the no-op
# row's floor, below).
one_floor="$work/one-floor"
mkdir -p "$one_floor/app" "$one_floor/bb/bin" "$one_floor/m"
cp -a "$c/src" "$one_floor/app/app"
cp "$(command -v busybox)" "$one_floor/bb/bin/busybox"
for applet in sh find wc; do ln -s busybox "$one_floor/bb/bin/$applet"; done
cat >"$one_floor/run.sh" <<'SH'
set -e
d=$(dirname "$0")
mount -t overlay overlay -o "lowerdir=$d/app:$d/bb,upperdir=$d/upper,workdir=$d/work,volatile" "$d/m"
status=0
chroot "$d/m" /bin/sh -c 'find /app -type f | wc -l > /count' || status=$?
umount "$d/m"
exit $status
SH
# The first round is the first edit after the cold build, untimed for all three: under the
# default format keel's cold build keeps the layer as a chunked image, and its first edit
# unpacks the edited layer's tree once (storage::overlay::EditedLayer); every later edit
# patches that tree. The row is the edit loop's; the first edit is reported on its own.
$alternate --runs "$runs" --warmup 1 --export-json "$work/one.json" \
  --prepare "$edit" -n "keel" "$keel --progress quiet build -t c10k $c" \
  --prepare "$edit" -n "buildah" "$bud -t c10k $c" \
  --prepare "rm -rf $one_floor/upper $one_floor/work; mkdir $one_floor/upper $one_floor/work" \
  -n "floor" "sh $one_floor/run.sh"
row "10,000 small files, one file changed (the edit loop: each edit after the first)" "$work/one.json" 0.05
python3 - "$work/one.json" <<'PY' | tee -a "$work/rows.md"
import json, sys
r = json.load(open(sys.argv[1]))["results"]
k, b, f = (x["median"] for x in r)
print(f"| floor: its RUN alone (overlay mount, `find` in a chroot, unmount), in the same rounds | | {f:.2f} s | |")
print(f"| above that floor (total − floor) | {b - f:.2f} s | {k - f:.2f} s | {(k - f) / (b - f):.3f} |")
PY
python3 - "$work/one.json" <<'PY' | tee -a "$work/rows.md"
import json, sys
r = json.load(open(sys.argv[1]))["results"]
k, b = (x["warmup_times"][0] for x in r[:2])
print(f"| the first edit after the cold build (the round before the row's; one run) | {b:.2f} s | {k:.2f} s | {k / b:.3f} |")
PY
python3 - "$work/one.json" >>"$work/notes" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["results"][0]["times"]
print(f"NOTE: one file changed: keel's edits took {', '.join(f'{x:.2f}' for x in t)} s")
PY
# The no-op rebuild lstat's every file of the context: its floor on this machine, in the
# same rounds, is two GNU finds stat'ing one half of the files each (`-printf %T@` needs
# each file's lstat), in parallel as keel's two walk threads are, and through a shell.
floor_walk="find $c/src/d0[0-4]? -printf %T@ >/dev/null & find $c/src/d0[5-9]? -printf %T@ >/dev/null; wait"
# The one-file row's last edit may be its last command (the rounds alternate their order):
# a file changed within the stat index's racy window is hashed again, and the selection
# stamp is not taken, until it has aged (the same wait as before the row's cold builds).
sleep 2
$alternate --warmup 3 --runs $((runs * 4)) --export-json "$work/noop.json" \
  -n "keel" "$keel --progress quiet build -t c10k $c" \
  -n "floor" "sh -c '$floor_walk'"
python3 - "$work/noop.json" "$work/warnings" <<'PY' | tee -a "$work/rows.md"
import json, sys
r = json.load(open(sys.argv[1]))["results"]
m, f = r[0]["median"] * 1000, r[1]["median"] * 1000
print(f"| 10,000 small files, no-op rebuild | | {m:.1f} ms | (goal ≤ 25 ms) |")
print(f"| floor: two `find -printf %T@` over the same files, in parallel | | {f:.1f} ms | |")
if m > 25:
    print(f"WARNING: no-op rebuild of 10,000 files takes {m:.1f} ms, more than 25 ms (the floor: {f:.1f} ms)", file=open(sys.argv[2], "a"))
PY
# The cold build again, each right after `keel gc --cache` removed the last one's tree
# (the protocol before session 10): what this machine's filesystem adds; no goal.
hyperfine --runs "$runs" --export-json "$work/cold-gc.json" \
  --prepare "$(fresh c10k)" -n "keel" "$keel --progress quiet build --no-cache -t c10k $c" >/dev/null
python3 - "$work/cold-gc.json" "$work/cold.json" <<'PY' | tee -a "$work/rows.md"
import json, sys
k = json.load(open(sys.argv[1]))["results"][0]["median"]
b = json.load(open(sys.argv[2]))["results"][1]["median"]
print(f"| 10,000 small files, cold right after `keel gc --cache` deleted the last tree (no goal) | {b:.2f} s | {k:.2f} s | {k / b:.2f} |")
PY

# --- Debian: apt-get install, then COPY ---------------------------------------------------
if [[ $debian == 1 ]]; then
  cache=/var/cache/keel-test/debootstrap # shared with tests/it/run.rs r012
  $keel --progress quiet bootstrap debian --cache-dir "$cache" deb >/dev/null
  import_base deb
  mkdir -p "$work/deb/app"
  for i in $(seq 50); do head -c 4096 /dev/urandom >"$work/deb/app/f$i"; done
  cat >"$work/deb/Dockerfile" <<'EOF'
FROM deb
RUN --mount=type=cache,target=/var/cache/apt/archives,sharing=locked --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \
    rm -f /etc/apt/apt.conf.d/keel-clean && apt-get update -qq && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 gcc g++ make >/dev/null
COPY app/ /app/
EOF
  # `gc --cache` would drop the apt cache mount too: keel's cold runs keep their cache
  # (a RUN makes a new layer every time anyway: apt's logs and dpkg's state differ).
  $alternate --warmup 1 --runs "$runs" --export-json "$work/deb.json" \
    --prepare "sync" -n "keel" "$keel --progress quiet build --no-cache -t debapp $work/deb" \
    --prepare "sync" -n "buildah" "$bud --network host --no-cache -t debapp $work/deb"
  row "Debian: apt-get install python3 gcc g++ make, then COPY, cold" "$work/deb.json" 0.7
fi

# --- container start against runc -------------------------------------------------------
$keel save bb -o "$work/bb.tar"
mkdir -p "$work/layout" && tar -C "$work/layout" -xf "$work/bb.tar"
umoci unpack --image "$work/layout:bb:latest" "$work/bundle" >/dev/null
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
json.dump(c, open(sys.argv[1], "w"))
PY
$alternate --warmup 3 --runs $((runs * 4)) --export-json "$work/start.json" \
  -n "keel" "$keel run --rm bb /bin/true" \
  -n "runc" "runc run --bundle $work/bundle bench-start"
python3 - "$work/start.json" "$work/warnings" <<'PY' | tee -a "$work/rows.md"
import json, sys
r = json.load(open(sys.argv[1]))["results"]
k, b = r[0]["median"], r[1]["median"]
print(f"| container start (`run --rm bb /bin/true` vs `runc run`) | {b*1000:.0f} ms (runc) | {k*1000:.0f} ms | {k / b:.3f} (goal ≤ 0.5) |")
if k / b > 0.5:
    print(f"WARNING: container start is {k / b:.2f}× runc's, above the goal of 0.5", file=open(sys.argv[2], "a"))
PY

# --- this machine's limits, in the same run ---------------------------------------------
echo
rm -f "$work/dd"; sync
dd if=/dev/zero of="$work/dd" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1 | sed 's/^/disk, 1 GiB written and fdatasync-ed (dd): /'
rm -f "$work/dd"
openssl speed -evp sha256 -bytes 16384 -seconds 3 2>/dev/null | tail -1 | awk '{printf "single-core SHA-256 (openssl speed -evp sha256, 16 KiB blocks): %s\n", $2}'
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| workload | buildah | keel | keel/buildah |"
echo "|---|---|---|---|"
cat "$work/rows.md"
cat "$work/notes" "$work/warnings"
