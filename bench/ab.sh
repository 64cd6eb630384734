#!/usr/bin/env bash
# A/B of two keel revisions on the same machine in the same run (hyperfine alternates
# nothing, but both commands see the same load): did a change make keel slower?
# Builds REV's release binary in a temporary worktree, then times cold, no-op and
# one-file-changed builds of a 200-file and a 10,000-file context, a 256 MiB COPY, and
# `keel run --rm`, for REV and for the working tree.
# Usage (as root): bench/ab.sh REV [RUNS]   — prints markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
rev="$1"
runs="${2:-10}"
cargo build --release --locked -q
new="$PWD/target/release/keel"
work=$(mktemp -d /var/tmp/keel-bench-ab.XXXXXX)
trap 'git worktree remove --force "$work/old-tree" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add -q --detach "$work/old-tree" "$rev"
# The dependencies are the same crates: start from this tree's release artifacts.
mkdir -p "$work/old-tree/target"
cp -a --reflink=auto target/release "$work/old-tree/target/"
(cd "$work/old-tree" && cargo build --release --locked -q)
old="$work/old-tree/target/release/keel"
drop_kernel_caches

for side in old new; do
  bin=${!side}
  $bin --root "$work/r-$side" --progress quiet bootstrap busybox bb >/dev/null
done

python3 - "$work" <<'PY'
import os, sys
w = sys.argv[1]
for name, n, size in (("ctx200", 200, 4096), ("ctx10k", 10000, 512), ("big", 1, 256 << 20)):
    for i in range(n):
        sub = os.path.join(w, name, "src", "d%03d" % (i % 100))
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, "f%05d.txt" % i), "wb") as f:
            f.write(os.urandom(size))
    with open(os.path.join(w, name, "Dockerfile"), "w") as f:
        f.write("FROM bb\nCOPY src/ /app/\nRUN find /app -type f | wc -l > /count\n")
PY
sleep 2 # let timestamps age past the stat index's racy window

ab() { # TITLE HYPERFINE-ARGS... (commands use $B for the binary and $R for the root)
  local title=$1; shift
  echo "### $title"
  local args=() cmd
  for side in old new; do
    for cmd in "$@"; do
      args+=(-n "$side ($rev vs working tree): ${cmd//\$B /keel }"
        "${cmd//\$B/${!side} --root $work/r-$side --progress quiet}")
    done
  done
  hyperfine -N --warmup 2 --runs "$runs" --export-markdown "$work/t.md" "${args[@]}" >/dev/null
  awk 'NR<=2 || !/^\| Command|^\|:---/' "$work/t.md"
  echo
}

for c in ctx200 ctx10k; do
  for side in old new; do ${!side} --root "$work/r-$side" --progress quiet build -t $c "$work/$c" >/dev/null; done
  ab "$c: no-op rebuild" "\$B build -t $c $work/$c"
  ab "$c: cold build (--no-cache)" "\$B build --no-cache -t $c $work/$c"
done
ab "256 MiB COPY + RUN, cold (--no-cache)" "\$B build --no-cache -t big $work/big"
ab "keel run --rm bb /bin/true" "\$B run --rm bb /bin/true" "\$B run --rm --network host bb /bin/true"
