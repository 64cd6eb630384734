#!/usr/bin/env bash
# Rootless keel against rootless podman and buildah, in the same run, all as one ordinary
# user (made here if missing, with a subordinate id range): `run --rm /bin/true` and a
# no-op rebuild of a 200-file context. podman and buildah use the overlay driver (native
# rootless overlay) with their state beside keel's; podman's default network needs
# slirp4netns, so the podman run is measured with --network none, and keel both ways.
# Usage (as root): bench/rootless.sh [RUNS]   — prints markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10}"
user=keel-bench
id "$user" >/dev/null 2>&1 || useradd -M -U -s /bin/sh "$user"
grep -q "^$user:" /etc/subuid || usermod --add-subuids 6000000-6065535 "$user"
grep -q "^$user:" /etc/subgid || usermod --add-subgids 6000000-6065535 "$user"
cargo build --release --locked -q
work=$(mktemp -d /var/tmp/keel-bench-rootless.XXXXXX)
# Root can remove what the user's subordinate ids own.
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
install -m 755 target/release/keel "$work/keel"
mkdir -p "$work/home/.config/containers" "$work/run"
cat > "$work/home/.config/containers/storage.conf" <<EOF
[storage]
driver = "overlay"
runroot = "$work/run/containers"
graphroot = "$work/home/.local/share/containers/storage"
EOF
chown -R "$user:$user" "$work/home" "$work/run"
chmod 700 "$work/run"

as_user() {
  setpriv --reuid "$user" --regid "$user" --init-groups -- env -i \
    PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME="$work/home" USER="$user" \
    XDG_DATA_HOME="$work/home/.local/share" XDG_RUNTIME_DIR="$work/run" \
    XDG_CONFIG_HOME="$work/home/.config" "$@"
}

K="$work/keel --progress quiet"
as_user $K bootstrap busybox bb >/dev/null
as_user $K save bb -o "$work/home/bb.tar"
as_user podman load -q -i "$work/home/bb.tar" >/dev/null
as_user python3 - "$work/home/ctx200" <<'PY'
import os, sys
d = sys.argv[1]
for i in range(200):
    sub = os.path.join(d, "src", "d%03d" % (i % 100))
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, "f%05d.txt" % i), "wb") as f:
        f.write(os.urandom(4096))
for name, base in (("Dockerfile.keel", "bb"), ("Dockerfile.buildah", "localhost/bb")):
    with open(os.path.join(d, name), "w") as f:
        f.write(f"FROM {base}\nCOPY src/ /app/\nRUN find /app -type f | wc -l > /count\n")
PY
ctx="$work/home/ctx200"
as_user $K build -t ctx200 -f "$ctx/Dockerfile.keel" "$ctx" >/dev/null
as_user buildah bud -q --layers -t ctx200 -f "$ctx/Dockerfile.buildah" "$ctx" >/dev/null
sleep 2 # let timestamps age past the stat index's racy window

table() { # TITLE then NAME COMMAND pairs
  local title=$1; shift
  echo "### $title"
  local args=()
  while [ $# -gt 0 ]; do args+=(-n "$1" "$2"); shift 2; done
  as_user hyperfine -N --warmup 2 --runs "$runs" --export-markdown "$work/run/t.md" "${args[@]}" >/dev/null
  awk 'NR<=2 || !/^\| Command|^\|:---/' "$work/run/t.md"
  echo
}

table "rootless run --rm /bin/true" \
  "keel run --rm bb /bin/true" "$K run --rm bb /bin/true" \
  "keel run --rm --network none bb /bin/true" "$K run --rm --network none bb /bin/true" \
  "podman run --rm --network none localhost/bb /bin/true" "podman run --rm --network none localhost/bb /bin/true"
table "rootless 200-file no-op rebuild" \
  "keel build (no-op)" "$K build -t ctx200 -f $ctx/Dockerfile.keel $ctx" \
  "buildah bud --layers (no-op)" "buildah bud -q --layers -t ctx200 -f $ctx/Dockerfile.buildah $ctx"
