#!/usr/bin/env bash
# Buildpack builds with a cold and a warm CACHE_DIR (docs/performance.md, "Session 4 —
# buildpacks"): the Flask and Express apps of testdata/apps, each built three times in
# one scratch root — the first build fills CACHE_DIR, the next two find the dependencies
# there. There is no daemonless peer to run beside keel on this machine (herokuish and
# pack need a docker daemon), so the comparison is keel cold against keel warm.
# Needs the stack: STACK_TAR=/var/cache/keel-test/stack-*/stack.tar (made by the tests)
# or a root that has keel-stack-build/-run.
# Usage (as root): bench/buildpack-cache.sh [STACK_TAR]   — prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
tar="${1:-$(ls /var/cache/keel-test/stack-*/stack.tar | head -n1)}"
cargo build --release --locked -q
keel="$PWD/target/release/keel"
work=$(mktemp -d /var/tmp/keel-bench-bp.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$keel" --root "$work/root" --progress quiet load -i "$tar" >/dev/null
echo "| app | build 1 (cold CACHE_DIR) | build 2 (warm) | build 3 (warm) |"
echo "| --- | --- | --- | --- |"
for app in flask express; do
  row="| $app |"
  for i in 1 2 3; do
    start=$(date +%s.%N)
    "$keel" --root "$work/root" --progress quiet buildpack build "testdata/apps/$app" -t "$app" >/dev/null
    end=$(date +%s.%N)
    row="$row $(python3 -c "print(f'{$end - $start:.1f} s')") |"
  done
  echo "$row"
done
