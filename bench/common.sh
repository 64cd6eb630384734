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
