#!/bin/bash
# The st_size a directory shows on each filesystem a RUN step may run over (docs/store.md,
# "Directory sizes"): an empty directory, one with 3 and one with 200 short names, on the
# host's filesystem, tmpfs, btrfs and xfs (loop images) and overlayfs (upper dir on the
# host). As root; needs mkfs.btrfs and mkfs.xfs. Leaves nothing behind.
set -euo pipefail
w=$(mktemp -d /var/tmp/dirsizes.XXXX)
trap 'umount -q "$w"/* 2>/dev/null || true; rm -rf "$w"' EXIT
fill() {
  mkdir -p "$1/d0" "$1/d3" "$1/d200"
  for i in 1 2 3; do echo x > "$1/d3/file$i.txt"; done
  for i in $(seq 1 200); do echo x > "$1/d200/file$i.txt"; done
  echo "$2: $(stat -c %s "$1/d0") $(stat -c %s "$1/d3") $(stat -c %s "$1/d200")"
}
mkdir "$w/host"; fill "$w/host" "host ($(df -T "$w" | awk 'NR==2{print $2}'))"
mkdir "$w/tmpfs"; mount -t tmpfs none "$w/tmpfs"; fill "$w/tmpfs" tmpfs; umount "$w/tmpfs"
for fs in btrfs xfs; do
  truncate -s 400M "$w/$fs.img"; mkfs.$fs -q "$w/$fs.img" >/dev/null
  mkdir "$w/$fs"; mount -o loop "$w/$fs.img" "$w/$fs"; fill "$w/$fs" $fs; umount "$w/$fs"
done
mkdir -p "$w"/ov/{lower,upper,work,merged}
mount -t overlay none -o "lowerdir=$w/ov/lower,upperdir=$w/ov/upper,workdir=$w/ov/work" "$w/ov/merged"
fill "$w/ov/merged" "overlay (upper on the host)"; umount "$w/ov/merged"
