#!/usr/bin/env bash
# keel's storage drivers against buildah, each pair on the same filesystem, in one run:
#   ext4  (loop)             keel overlay          buildah overlay
#   btrfs (loop)             keel btrfs            buildah btrfs
#   xfs   (loop, reflink=1)  keel copy (reflinks)  buildah overlay
# Rows: container start (run --rm `true`) of busybox and of a 944 MB image, and the
# 944 MB COPY build (4 files of 225 MiB, as bench/build.sh makes its COPY context).
# Then, on btrfs, the changeset of a 10,000-file snapshot: keel's tree walk against
# `btrfs subvolume find-new` (generation-based, BTRFS_IOC_TREE_SEARCH), through the
# ignored test `btrfs_changeset_walk_vs_find_new_bench` in tests/it/btrfs.rs.
# All three filesystems are loop-mounted sparse images on the same disk, so the disk and
# the loop device cost the same everywhere.
# Usage (as root): bench/storage.sh [RUNS]   — prints markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
cargo build --release --locked -q
keel="$PWD/target/release/keel"
work=$(mktemp -d /var/tmp/keel-bench-storage.XXXXXX)
mnt="$work/mnt"
cleanup() {
  mountpoint -q "$mnt" && umount "$mnt" || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$mnt" "$work/src"
for i in 1 2 3 4; do head -c $((225 << 20)) /dev/urandom > "$work/src/blob$i"; done

# Formats and mounts a fresh 12 GiB sparse filesystem of type $1 at $mnt.
fresh_fs() {
  mountpoint -q "$mnt" && umount "$mnt"
  rm -f "$work/fs.img"
  truncate -s 12G "$work/fs.img"
  case $1 in
    ext4) mkfs.ext4 -q -F "$work/fs.img" ;;
    btrfs) mkfs.btrfs -q "$work/fs.img" >/dev/null ;; # -q still prints a NOTE
    xfs) mkfs.xfs -q -m reflink=1 "$work/fs.img" ;;
  esac
  mount -o loop "$work/fs.img" "$mnt"
}

bench_fs() { # FS KEEL_DRIVER BUILDAH_DRIVER
  local fs=$1 kd=$2 bd=$3 control=${control:-}
  fresh_fs "$fs"
  local k="$keel --root $mnt/keel --progress quiet"
  local b="buildah --root $mnt/buildah --runroot $mnt/buildah-run --storage-driver $bd"
  $k bootstrap busybox bb >/dev/null
  $k save bb -o "$mnt/bb.tar"
  $b pull -q "oci-archive:$mnt/bb.tar" >/dev/null
  $b tag "$($b images -q | head -1)" localhost/bb >/dev/null
  mkdir -p "$mnt/big"
  cp -r "$work/src" "$mnt/big/src"
  printf 'FROM bb\nCOPY src/ /data/\n' > "$mnt/big/Dockerfile"
  sync
  echo "### $fs: keel --storage-driver $kd, buildah --storage-driver $bd"
  $k build --storage-driver "$kd" -t big "$mnt/big" >/dev/null
  $b bud -q --layers --isolation oci --runtime runc -t big "$mnt/big" >/dev/null
  # Each keel build commits a layer the store does not have yet (as in bench/build.sh).
  local fresh="$k rmi big >/dev/null 2>&1; $k gc --cache >/dev/null; sync"
  hyperfine --warmup 1 --runs "$runs" --export-markdown "$work/$fs-start.md" \
    -n "keel run --rm bb true ($fs, $kd)" "$k run --rm --storage-driver $kd bb true" \
    -n "buildah from+run+rm bb ($fs, $bd)" "$b run --isolation oci --runtime runc \$($b from -q --pull=never bb) true; $b rm --all >/dev/null" \
    -n "keel run --rm big true ($fs, $kd)" "$k run --rm --storage-driver $kd big true" \
    -n "buildah from+run+rm big ($fs, $bd)" "$b run --isolation oci --runtime runc \$($b from -q --pull=never big) true; $b rm --all >/dev/null" \
    ${control:+-n "keel run --rm big true ($fs, copy without reflinks: control)" "$k run --rm --storage-driver copy big true"} >/dev/null
  hyperfine --runs "$runs" --export-markdown "$work/$fs-copy.md" \
    --prepare "$fresh" -n "keel COPY 944 MB ($fs, $kd)" "$k build --no-cache --storage-driver $kd -t big $mnt/big" \
    --prepare "sync" -n "buildah COPY 944 MB ($fs, $bd)" "$b bud -q --layers --no-cache --isolation oci --runtime runc -t big $mnt/big" >/dev/null
  cat "$work/$fs-start.md" "$work/$fs-copy.md" | awk 'NR==1 || !/^\| Command|^\|:---/'
  echo
  df -h "$mnt" | tail -1 | awk -v fs="$fs" '{print "used on " fs " after the runs: " $3}'
  echo
}

# On ext4 the copy driver also starts the 944 MB image: what a copy without reflinks costs.
control=1 bench_fs ext4 overlay overlay
bench_fs xfs copy overlay
bench_fs btrfs btrfs btrfs

echo "### btrfs changesets: tree walk (keel) against generation search (find-new)"
# 10,000 files, one rewritten, one deleted, one chmod'ed; debug build of the test binary.
cargo test -q --test it btrfs_changeset_walk_vs_find_new_bench -- --ignored --nocapture 2>/dev/null \
  | grep -E '^(tree walk|find-new)'
