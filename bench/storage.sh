#!/usr/bin/env bash
# keel's storage drivers against buildah, each pair on the same filesystem, in one run:
#   ext4  (loop)             keel overlay          buildah overlay
#   btrfs (loop)             keel btrfs            buildah btrfs
#   xfs   (loop, reflink=1)  keel copy (reflinks)  buildah overlay
# Rows: container start (run --rm `true`) of busybox and of a 944 MB image, and the
# 944 MB COPY build (4 files of 225 MiB, as bench/build.sh makes its COPY context).
# Then, on btrfs, the changeset of a container of a 10,000-file image: keel's tree walk
# (a RUN step that touches one file, against the same step on busybox) against
# `btrfs subvolume find-new` (generation-based, BTRFS_IOC_TREE_SEARCH).
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
    btrfs) mkfs.btrfs -q "$work/fs.img" ;;
    xfs) mkfs.xfs -q -m reflink=1 "$work/fs.img" ;;
  esac
  mount -o loop "$work/fs.img" "$mnt"
}

bench_fs() { # FS KEEL_DRIVER BUILDAH_DRIVER
  local fs=$1 kd=$2 bd=$3
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
    -n "buildah from+run+rm big ($fs, $bd)" "$b run --isolation oci --runtime runc \$($b from -q --pull=never big) true; $b rm --all >/dev/null" >/dev/null
  hyperfine --runs "$runs" --export-markdown "$work/$fs-copy.md" \
    --prepare "$fresh" -n "keel COPY 944 MB ($fs, $kd)" "$k build --no-cache --storage-driver $kd -t big $mnt/big" \
    --prepare "sync" -n "buildah COPY 944 MB ($fs, $bd)" "$b bud -q --layers --no-cache --isolation oci --runtime runc -t big $mnt/big" >/dev/null
  cat "$work/$fs-start.md" "$work/$fs-copy.md" | awk 'NR==1 || !/^\| Command|^\|:---/'
  echo
  df -h "$mnt" | tail -1 | awk -v fs="$fs" '{print "used on " fs " after the runs: " $3}'
  echo
}

bench_fs ext4 overlay overlay
bench_fs xfs copy overlay
bench_fs btrfs btrfs btrfs

echo "### btrfs changesets: tree walk (keel) against generation search (find-new)"
python3 - "$mnt/many" <<'PY'
import os, sys
d = sys.argv[1]
for i in range(10000):
    sub = os.path.join(d, "src", "d%03d" % (i % 100))
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, "f%05d.txt" % i), "wb") as f:
        f.write(os.urandom(512))
PY
printf 'FROM bb\nCOPY src/ /app/\n' > "$mnt/many/Dockerfile"
k="$keel --root $mnt/keel"
$k --progress quiet build -t many "$mnt/many" >/dev/null
mkdir -p "$mnt/touch-many" "$mnt/touch-bb"
printf 'FROM many\nRUN touch /app/d000/f00000.txt\n' > "$mnt/touch-many/Dockerfile"
printf 'FROM bb\nRUN touch /bin/busybox\n' > "$mnt/touch-bb/Dockerfile"
for img in bb many; do
  $k --progress plain build --no-cache -t "touched-$img" "$mnt/touch-$img" 2>&1 >/dev/null | grep -oE 'DONE [0-9.]+s' | tr '\n' ' '
  for _ in 1 2 3; do
    $k --progress plain build --no-cache -t "touched-$img" "$mnt/touch-$img" 2>&1 >/dev/null | grep -oE 'DONE [0-9.]+s' | tr '\n' ' '
  done
  echo " (keel RUN touch one file, image $img: the step's time, 4 runs)"
done
# The same change in a snapshot of the 10,000-file chain, listed by generation.
chain=$(ls -d "$mnt"/keel/storage/subvolumes/*/diff/app/d000 | head -1)
chain=${chain%/app/d000}
btrfs subvolume snapshot "$chain" "$mnt/snap" >/dev/null
gen=$(btrfs subvolume find-new "$mnt/snap" 999999999 | awk '{print $NF}')
touch "$mnt/snap/app/d000/f00000.txt"
echo x > "$mnt/snap/app/d000/f00000.txt"
sync
hyperfine --warmup 2 --runs 10 --export-markdown "$work/findnew.md" \
  -n "btrfs subvolume find-new (10,000-file snapshot, one file changed)" "btrfs subvolume find-new $mnt/snap $gen" >/dev/null
cat "$work/findnew.md"
echo "find-new lists: $(btrfs subvolume find-new "$mnt/snap" "$gen" | grep -c inode) changed file extents"
rm -f "$mnt/snap/app/d001/f00001.txt"
chmod 600 "$mnt/snap/app/d002/f00002.txt"
echo "after a delete and a chmod, find-new still lists: $(btrfs subvolume find-new "$mnt/snap" "$gen" | grep -c inode)"
btrfs subvolume delete "$mnt/snap" >/dev/null
