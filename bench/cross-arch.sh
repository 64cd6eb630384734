#!/usr/bin/env bash
# What emulation costs: a RUN step (and `keel run`) of the same busybox image natively and
# for the foreign platform under qemu (binfmt_misc), keel against buildah building the
# same Dockerfile for the same platforms in the same run. Two workloads: `RUN true`
# (start-up: qemu loading the binary) and a shell loop (CPU-bound, the translated code).
# Prints markdown tables (hyperfine does the timing).
# Usage (as root, after scripts/setup-debian): bench/cross-arch.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
cargo build --release --locked -q
keel="$PWD/target/release/keel"
work=$(mktemp -d /var/tmp/keel-bench-xa.XXXXXX)
trap 'rm -rf "$work"' EXIT
case "$(uname -m)" in
  x86_64) native=linux/amd64 foreign=linux/arm64 ;;
  aarch64) native=linux/arm64 foreign=linux/amd64 ;;
  *) echo "cross-arch.sh: run it on x86_64 or aarch64" >&2; exit 1 ;;
esac
export KEEL_ROOT="$work/root"
$keel --progress quiet bootstrap busybox bb --platform "$native,$foreign" \
  --cache-dir /var/cache/keel-test/busybox-static >/dev/null
# buildah reads the same multi-platform base from keel's archive (an OCI index).
$keel save bb -o "$work/bb.tar"
buildah=(buildah --root "$work/buildah/root" --runroot "$work/buildah/run" --storage-driver vfs)
loop='i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done'
for w in true loop; do
  mkdir -p "$work/$w"
  cmd=true; [ $w = loop ] && cmd=$loop
  printf 'FROM bb\nRUN %s\n' "$cmd" >"$work/$w/Dockerfile"
  printf 'FROM oci-archive:%s\nRUN %s\n' "$work/bb.tar" "$cmd" >"$work/$w/Containerfile"
done
table() { # TITLE HYPERFINE-ARGS...
  echo "### $1"; shift
  hyperfine -N --warmup 1 --runs "$runs" --export-markdown "$work/t.md" "$@" >/dev/null
  cat "$work/t.md"; echo
}
for w in true loop; do
  table "RUN $w: keel vs buildah, native vs emulated (--no-cache builds)" \
    -n "keel build --platform $native" "$keel --progress quiet build --no-cache --platform $native $work/$w" \
    -n "keel build --platform $foreign" "$keel --progress quiet build --no-cache --platform $foreign $work/$w" \
    -n "buildah build --platform $native" "${buildah[*]} build -q --layers=false --platform $native -f $work/$w/Containerfile $work/$w" \
    -n "buildah build --platform $foreign" "${buildah[*]} build -q --layers=false --platform $foreign -f $work/$w/Containerfile $work/$w"
done
table "keel run --rm of the loop, native vs emulated" \
  -n "keel run --platform $native" "$keel run --rm --platform $native bb sh -c '$loop'" \
  -n "keel run --platform $foreign" "$keel run --rm --platform $foreign bb sh -c '$loop'"
