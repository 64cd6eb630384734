#!/usr/bin/env bash
# keel build against buildah (runc runtime, --layers) on this machine in the same run:
# cold build, no-op rebuild and one-file-changed rebuild for a 200-file and a 10,000-file
# context, and COPY of 1 GB of large files (compared with single-core SHA-256 speed).
# Usage (as root): bench/build.sh [RUNS]   — prints markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10}"
cargo build --release --locked -q
keel="$PWD/target/release/keel"
work=$(mktemp -d /var/tmp/keel-bench-build.XXXXXX)
trap 'rm -rf "$work"; buildah rm --all >/dev/null 2>&1 || true' EXIT
export KEEL_ROOT="$work/root"
$keel --progress quiet bootstrap busybox bb >/dev/null
$keel save bb -o "$work/bb.tar"
buildah pull -q "oci-archive:$work/bb.tar" >/dev/null
buildah tag "$(buildah images -q --filter reference=bb | head -1)" localhost/bb >/dev/null 2>&1 || true

make_ctx() { # DIR COUNT BYTES
  mkdir -p "$1"
  python3 - "$1" "$2" "$3" <<'PY'
import os, sys
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    sub = os.path.join(d, "src", "d%03d" % (i % 100))
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, "f%05d.txt" % i), "wb") as f:
        f.write(os.urandom(size))
PY
  printf 'FROM bb\nCOPY src/ /app/\nRUN find /app -type f | wc -l > /count\n' > "$1/Dockerfile"
  sleep 2 # let timestamps age past the stat index's racy window
}

bench_ctx() { # NAME DIR
  local name=$1 dir=$2
  echo "### $name"
  hyperfine --warmup 1 --runs "$runs" --export-markdown "$work/$name-cold.md" \
    -n "keel cold (--no-cache)" "$keel --progress quiet build --no-cache -t b-$name $dir" \
    -n "buildah cold (--no-cache)" "buildah bud -q --layers --no-cache --isolation oci --runtime runc -t b-$name $dir" >/dev/null
  $keel --progress quiet build -t b-$name "$dir" >/dev/null
  buildah bud -q --layers --isolation oci --runtime runc -t b-$name "$dir" >/dev/null
  hyperfine --warmup 2 --runs "$runs" --export-markdown "$work/$name-noop.md" \
    -n "keel no-op rebuild" "$keel --progress quiet build -t b-$name $dir" \
    -n "buildah no-op rebuild" "buildah bud -q --layers --isolation oci --runtime runc -t b-$name $dir" >/dev/null
  hyperfine --runs "$runs" --export-markdown "$work/$name-one.md" \
    --prepare "head -c 64 /dev/urandom > $dir/src/d000/f00000.txt" \
    -n "keel one file changed" "$keel --progress quiet build -t b-$name $dir" \
    -n "buildah one file changed" "buildah bud -q --layers --isolation oci --runtime runc -t b-$name $dir" >/dev/null
  cat "$work/$name-cold.md" "$work/$name-noop.md" "$work/$name-one.md" | awk 'NR==1 || !/^\| Command|^\|:---/'
  echo
}

make_ctx "$work/ctx200" 200 4096
make_ctx "$work/ctx10k" 10000 512
bench_ctx ctx200 "$work/ctx200"
bench_ctx ctx10k "$work/ctx10k"

echo "### COPY of 1 GB (4 files of 256 MiB)"
mkdir -p "$work/big/src"
for i in 1 2 3 4; do head -c $((256 << 20)) /dev/urandom > "$work/big/src/blob$i"; done
printf 'FROM bb\nCOPY src/ /data/\n' > "$work/big/Dockerfile"
$keel --progress quiet build -t big "$work/big" >/dev/null # the context's digests are now known
# Each run commits a layer the store does not have yet: the image, its cache entries and
# its blobs are dropped first (the context's file digests stay remembered, so what is
# timed is walking, writing the tar, hashing it and storing the blob).
fresh="$keel rmi big >/dev/null 2>&1; $keel gc --cache >/dev/null; sync"
hyperfine --runs "$runs" --export-markdown "$work/big.md" \
  --prepare "$fresh" -n "keel COPY 1 GB (fsync)" "$keel --progress quiet build --no-cache -t big $work/big" \
  --prepare "$fresh" -n "keel --no-fsync COPY 1 GB" "$keel --no-fsync --progress quiet build --no-cache -t big $work/big" \
  --prepare "sync" -n "buildah COPY 1 GB (--no-cache)" "buildah bud -q --layers --no-cache --isolation oci --runtime runc -t big $work/big" >/dev/null
cat "$work/big.md"
echo
echo "COPY step as keel reports it (plain progress), three fresh runs each:"
for flags in "" "--no-fsync"; do
  for _ in 1 2 3; do
    eval "$fresh"
    $keel $flags --progress plain build --no-cache -t big "$work/big" 2>&1 | grep -oE 'DONE [0-9.]+s' | tr '\n' ' '
  done
  echo " (keel $flags)"
done
rm -f "$work/dd"; sync
dd if=/dev/zero of="$work/dd" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1 | sed 's/^/disk, 1 GiB written and fdatasync-ed (dd): /'
rm -f "$work/dd"
openssl speed -evp sha256 -bytes 16384 -seconds 3 2>/dev/null | tail -1 | awk '{printf "single-core SHA-256 (openssl speed -evp sha256, 16 KiB blocks): %s\n", $2}'
