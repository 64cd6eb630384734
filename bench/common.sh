# Sourced by the bench scripts: what every one of them does the same way.

# The kernel's dentry and inode caches hold whatever earlier work on the machine left
# there: a test suite run leaves about a million entries. On the project VM every path
# lookup is then slower (perf: `__d_lookup_rcu` and `find_inode` take 2–3× their share),
# both builders' alike: a one-file rebuild took 12–15 % more CPU with the 1.3M entries
# a walk of the disk leaves (docs/performance.md, Session 9).
# Emptying them once at the start makes a run's figures independent of what ran before;
# the counts before are printed so a reader can tell what state the machine was in.
drop_kernel_caches() {
  echo "dentries / inodes cached before: $(cut -f1 /proc/sys/fs/dentry-state) / $(cut -f1 /proc/sys/fs/inode-state); emptied"
  sync
  echo 2 >/proc/sys/vm/drop_caches
}

# KEEL CTX: the image bbssl (bench/build.sh's big goal row's base), built by KEEL from CTX
# (made here): busybox's bb plus the host's openssl and the libraries it loads.
make_bbssl() {
  local keel="$1" ctx="$2" f bin
  bin=$(command -v openssl)
  mkdir -p "$ctx/root"
  for f in "$bin" $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$ctx/root$(dirname "$f")"
    cp -L "$f" "$ctx/root$f"
  done
  printf 'FROM bb\nCOPY root/ /\n' >"$ctx/Dockerfile"
  $keel --progress quiet build -t bbssl "$ctx" >/dev/null
}

# The 10,000-small-files context of issue 14's rows in DIR: 10,000 × 512 random bytes in
# 100 directories under src/, and a Dockerfile copying them and walking them in a RUN.
make_ctx10k() {
  python3 - "$1" <<'PY'
import os, sys
d = sys.argv[1]
for i in range(10000):
    sub = os.path.join(d, "src", "d%03d" % (i % 100))
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, "f%05d.txt" % i), "wb") as f:
        f.write(os.urandom(512))
PY
  printf 'FROM bb\nCOPY src/ /app/\nRUN find /app -type f | wc -l > /count\n' >"$1/Dockerfile"
}
