//! Resource limits through cgroups (v1, v2 and hybrid hosts). Each container gets
//! `keel/<id>` in the controllers it needs; the child moves itself in before exec, and
//! [`Cgroup::destroy`] kills leftovers and removes the directories.
//!
//! Only plain file operations below a mount root taken from [`CgroupLayout`], so a
//! tempdir can stand in for cgroupfs in tests (youki `v2/pids.rs` does the same).
use crate::sys::hostfs;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::spec::{DeviceRule, Limits};

/// Errors from cgroup setup and teardown; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("creating cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("removing cgroup {path}: {source}; processes may still be in it")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--{flag} needs the {controller} cgroup controller, which this host does not mount; drop the flag")]
    Missing {
        flag: &'static str,
        controller: &'static str,
    },
    #[error("this host mounts neither the cgroup v1 devices controller nor cgroup2, so keel cannot stop a container from opening host devices; mount one (or use --isolation oci with a runtime that manages cgroups)")]
    NoDeviceController,
    #[error("--{flag} needs a cgroup v2 subtree delegated to this user, and there is none: {why}; rootless keel never ignores a limit, so run as root, or drop the flag, or run keel in a delegated systemd user scope on a unified (v2) host (`systemd-run --user --scope -p Delegate=yes keel run …`; docs/rootless.md)")]
    NotDelegated { flag: &'static str, why: String },
    #[error("setting up the device allow-list on cgroup v2: {0}; use --isolation oci, where runc loads its own device program")]
    DeviceProgram(crate::sys::SysError),
}

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CgroupLayout {
    /// v1 controller name → mount point (`memory` → `/sys/fs/cgroup/memory`).
    pub v1: BTreeMap<String, PathBuf>,
    /// The cgroup2 mount point, if any.
    pub v2: Option<PathBuf>,
    /// Controllers enabled in the v2 root (`cgroup.controllers`).
    pub v2_controllers: Vec<String>,
}

impl CgroupLayout {
    /// `v1`, `v2`, `hybrid` (v1 controllers and a v2 mount), or `none`.
    pub fn kind(&self) -> &'static str {
        match (self.v1.is_empty(), self.v2.is_some()) {
            (false, true) => "hybrid",
            (false, false) => "v1",
            (true, true) => "v2",
            (true, false) => "none",
        }
    }

    /// Pure part of [`cgroup_layout`]: the cgroup mounts in a mountinfo text.
    pub fn from_mountinfo(text: &str) -> CgroupLayout {
        let mut l = CgroupLayout::default();
        for line in text.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mp) = pre.split(' ').nth(4) else {
                continue;
            };
            let mut post = post.split(' ');
            let (fstype, _src, opts) = (
                post.next().unwrap_or(""),
                post.next(),
                post.next().unwrap_or(""),
            );
            match fstype {
                "cgroup2" => l.v2 = Some(PathBuf::from(mp)),
                "cgroup" => {
                    for o in opts.split(',') {
                        if matches!(
                            o,
                            "cpu"
                                | "cpuacct"
                                | "cpuset"
                                | "memory"
                                | "pids"
                                | "devices"
                                | "freezer"
                                | "blkio"
                        ) {
                            l.v1.entry(o.to_string())
                                .or_insert_with(|| PathBuf::from(mp));
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }

    /// True when limits go through v2 (a v2 mount with the controller and no v1 one).
    fn use_v2(&self, controller: &str) -> bool {
        !self.v1.contains_key(controller)
            && self.v2.is_some()
            && self.v2_controllers.iter().any(|c| c == controller)
    }
}

/// The host's cgroup layout, from `/proc/self/mountinfo` (for `keel info` and limits).
pub fn cgroup_layout() -> CgroupLayout {
    let text = crate::sys::mount::mount_table().unwrap_or_default();
    let mut l = CgroupLayout::from_mountinfo(&text);
    if let Some(v2) = &l.v2 {
        let c = std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
        l.v2_controllers = c.split_whitespace().map(str::to_string).collect();
    }
    l
}

/// The cgroup2 mount of a unified (v2-only) host: the only kind where an ordinary user
/// can be given a cgroup subtree. The error names what the host has instead (a hybrid
/// host as such, with the controllers its cgroup2 mount offers).
pub fn unified_mount(layout: &CgroupLayout) -> Result<&Path, String> {
    let Some(v2) = &layout.v2 else {
        return Err(format!(
            "this host has no cgroup2 mount (cgroup layout: {})",
            layout.kind()
        ));
    };
    if !layout.v1.is_empty() {
        return Err(format!(
            "this host is hybrid: the controllers are on cgroup v1 and the cgroup2 mount at {} has {}",
            v2.display(),
            if layout.v2_controllers.is_empty() { "none".to_string() } else { layout.v2_controllers.join(" ") }
        ));
    }
    Ok(v2)
}

/// The cgroup v2 directory delegated to this (rootless) process, from its
/// `/proc/self/cgroup` text `own`: a unified hierarchy whose `0::PATH` directory the
/// caller owns and which offers the memory, pids and cpu controllers. The error says
/// what is missing, naming a hybrid host as such.
pub fn delegated_subtree(layout: &CgroupLayout, own: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let v2 = unified_mount(layout)?;
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process has no cgroup v2 path in /proc/self/cgroup")?;
    let dir = v2.join(rel.trim_start_matches('/'));
    let me = crate::sys::proc::effective_ids().0;
    match std::fs::metadata(&dir) {
        Ok(m) if m.uid() == me => {}
        _ => {
            return Err(format!(
                "{} is not owned by this user (not delegated)",
                dir.display()
            ))
        }
    }
    let have = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let missing: Vec<&str> = ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| !have.split_whitespace().any(|h| h == *c))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} lacks the {} controllers",
            dir.display(),
            missing.join(", ")
        ));
    }
    Ok(dir)
}

/// The leaf a rootless keel moves the processes of its delegated cgroup into before it
/// enables controllers there. cgroup v2's "no internal processes" rule makes writing
/// `cgroup.subtree_control` of a cgroup with member processes fail with EBUSY
/// (Documentation/admin-guide/cgroup-v2.rst, "No Internal Process Constraint"); podman
/// moves its processes to a `runtime` (split cgroups mode) or `init` (when in the root
/// cgroup) child first (`MoveUnderCgroupSubtree` in containers/common
/// `pkg/cgroups/utils_linux.go`), and keel does the same under a name of its own.
pub const INIT_LEAF: &str = "keel-init";

/// One file operation of preparing a delegated cgroup v2 subtree for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DelegateStep {
    /// Make the leaf for the processes already in the delegated cgroup.
    MakeLeaf(PathBuf),
    /// Move process `pid` into cgroup `to` (write it to `to/cgroup.procs`).
    Move { pid: i32, to: PathBuf },
    /// Write `value` to `path`; a failure is an error.
    Write { path: PathBuf, value: String },
    /// Write `value` to `path` where the kernel offers it (`memory.swap.max`).
    TryWrite { path: PathBuf, value: String },
    /// Make the container's cgroup (removed again by [`Cgroup::destroy`]).
    MakeContainer(PathBuf),
}

/// Pure: the steps that give container `id` a cgroup with `limits` in the delegated
/// subtree `own` (this process's cgroup), from what `read` says the cgroup files hold.
/// The base is `own`, or its parent when `own` is already the [`INIT_LEAF`] an earlier
/// keel moved this process into (a detached container's supervisor inherits it). When
/// the base lists processes they move to its leaf first, controllers not yet enabled
/// in its `cgroup.subtree_control` are enabled, and the container's cgroup goes beside
/// the leaf as `keel-<id>`.
pub fn plan_delegation(
    own: &Path,
    read: &dyn Fn(&Path) -> String,
    id: &str,
    limits: &Limits,
) -> Vec<DelegateStep> {
    let base = match own.parent() {
        Some(parent) if own.file_name() == Some(INIT_LEAF.as_ref()) => parent,
        _ => own,
    };
    let mut steps = Vec::new();
    let pids: Vec<i32> = read(&base.join("cgroup.procs"))
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    if !pids.is_empty() {
        let leaf = base.join(INIT_LEAF);
        steps.push(DelegateStep::MakeLeaf(leaf.clone()));
        steps.extend(pids.into_iter().map(|pid| DelegateStep::Move {
            pid,
            to: leaf.clone(),
        }));
    }
    let enabled = read(&base.join("cgroup.subtree_control"));
    let enable: Vec<String> = ["pids", "memory", "cpu"]
        .into_iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .map(|c| format!("+{c}"))
        .collect();
    if !enable.is_empty() {
        steps.push(DelegateStep::Write {
            path: base.join("cgroup.subtree_control"),
            value: enable.join(" "),
        });
    }
    let dir = base.join(format!("keel-{id}"));
    steps.push(DelegateStep::MakeContainer(dir.clone()));
    steps.extend(limit_steps(&dir, limits));
    steps
}

/// The limit files of a delegated container cgroup `dir`.
fn limit_steps(dir: &Path, limits: &Limits) -> Vec<DelegateStep> {
    let set = |file: &str, value: String| DelegateStep::Write {
        path: dir.join(file),
        value,
    };
    let mut steps = Vec::new();
    if let Some(m) = limits.memory_bytes {
        steps.push(set("memory.max", m.to_string()));
        steps.push(DelegateStep::TryWrite {
            path: dir.join("memory.swap.max"),
            value: "0".into(),
        });
    }
    if let Some(p) = limits.pids {
        steps.push(set("pids.max", p.to_string()));
    }
    if let Some(q) = limits.cpu_quota() {
        steps.push(set("cpu.max", format!("{q} {}", Limits::CPU_PERIOD)));
    }
    steps
}

/// Rootless `--isolation oci`: the runtime gets no cgroup, so any limit is refused with
/// the reason (no delegated subtree here, or the namespaces backend to use where there is).
pub fn refuse_rootless_runtime_limits(limits: &Limits) -> Result<(), CgroupError> {
    let flag = match limits {
        Limits {
            memory_bytes: Some(_),
            ..
        } => "memory",
        Limits { pids: Some(_), .. } => "pids-limit",
        Limits { cpus: Some(_), .. } => "cpus",
        _ => return Ok(()),
    };
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let why = match delegated_subtree(&super::cgroup_layout(), &own) {
        Err(why) => why,
        Ok(_) => "rootless --isolation oci does not pass limits to the runtime yet; the default --isolation namespaces applies them here".into(),
    };
    Err(CgroupError::NotDelegated { flag, why })
}

/// The cgroup directories of one container.
#[derive(Debug, Default)]
pub struct Cgroup {
    /// Created directories; the first one lists every process (used to kill leftovers).
    pub dirs: Vec<PathBuf>,
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    hostfs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match hostfs::create_dir_all(path) {
        Ok(()) => Ok(()),
        Err(source) => Err(CgroupError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

impl Cgroup {
    /// Creates `keel/<id>` where needed, writes the device rules (v1 devices controller)
    /// and the limits. The pids controller is always used when present, so teardown can
    /// find every process of the container. Transactional: on any error the directories
    /// made so far are removed again.
    pub fn create(
        layout: &CgroupLayout,
        id: &str,
        limits: &Limits,
        devices: &[DeviceRule],
    ) -> Result<Cgroup, CgroupError> {
        if crate::sys::userns::rootless() {
            return Cgroup::create_rootless(layout, id, limits);
        }
        let mut cg = Cgroup::default();
        match cg.fill(layout, id, limits, devices) {
            Ok(()) => {
                tracing::debug!(id, layout = layout.kind(), limits = ?limits, "cgroups created");
                Ok(cg)
            }
            Err(e) => {
                let _ = cg.destroy();
                Err(e)
            }
        }
    }

    /// Rootless: no device rules (in a user namespace no device node can be created, and
    /// only the bind-mounted defaults exist in the container's `/dev`), and limits only in
    /// a cgroup v2 subtree delegated to the user ([`delegated_subtree`]); with none,
    /// a limit is an error, never dropped silently.
    fn create_rootless(
        layout: &CgroupLayout,
        id: &str,
        limits: &Limits,
    ) -> Result<Cgroup, CgroupError> {
        let flag = match limits {
            Limits {
                memory_bytes: Some(_),
                ..
            } => "memory",
            Limits { pids: Some(_), .. } => "pids-limit",
            Limits { cpus: Some(_), .. } => "cpus",
            _ => return Ok(Cgroup::default()),
        };
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let own = delegated_subtree(layout, &own)
            .map_err(|why| CgroupError::NotDelegated { flag, why })?;
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let plan = plan_delegation(&own, &read, id, limits);
        let mut cg = Cgroup::default();
        match cg.apply(&plan) {
            Ok(()) => Ok(cg),
            Err(e) => {
                let _ = cg.destroy();
                Err(e)
            }
        }
    }

    /// Runs a [`plan_delegation`] plan. A process that exits between the read of
    /// `cgroup.procs` and its move (ESRCH) needs no moving.
    fn apply(&mut self, plan: &[DelegateStep]) -> Result<(), CgroupError> {
        for step in plan {
            match step {
                DelegateStep::MakeLeaf(dir) => mkdir(dir)?,
                DelegateStep::Move { pid, to } => {
                    match write(&to.join("cgroup.procs"), &pid.to_string()) {
                        Err(CgroupError::Write { source, .. })
                            if source.raw_os_error() == Some(libc::ESRCH) => {}
                        r => r?,
                    }
                }
                DelegateStep::Write { path, value } => write(path, value)?,
                DelegateStep::TryWrite { path, value } => {
                    let _ = write(path, value);
                }
                DelegateStep::MakeContainer(dir) => {
                    mkdir(dir)?;
                    self.dirs.push(dir.clone());
                }
            }
        }
        Ok(())
    }

    /// Writes the device rules into `devices/keel/<id>` (deny-all first, then the allow
    /// list). Without a v1 devices controller there is no way to enforce them here.
    fn devices(
        &mut self,
        layout: &CgroupLayout,
        rel: &Path,
        rules: &[DeviceRule],
    ) -> Result<(), CgroupError> {
        if rules.is_empty() {
            return Ok(());
        }
        let Some(mount) = layout.v1.get("devices") else {
            return match &layout.v2 {
                Some(v2) => self.device_program(&v2.join(rel), rules),
                None => Err(CgroupError::NoDeviceController),
            };
        };
        let dir = mount.join(rel);
        mkdir(&dir)?;
        self.dirs.push(dir.clone());
        for r in rules {
            let file = if r.allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            write(&dir.join(file), &r.cgroup_v1())?;
        }
        Ok(())
    }

    /// cgroup v2: the rules as a BPF device program attached to `dir` (made if needed).
    fn device_program(&mut self, dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
        mkdir(dir)?;
        if !self.dirs.iter().any(|d| d == dir) {
            self.dirs.push(dir.to_path_buf());
        }
        let prog = crate::sys::bpf::load_device_program(&super::devices::program(rules))
            .map_err(CgroupError::DeviceProgram)?;
        crate::sys::bpf::attach_device_program(dir, &prog).map_err(CgroupError::DeviceProgram)
    }

    fn fill(
        &mut self,
        layout: &CgroupLayout,
        id: &str,
        limits: &Limits,
        devices: &[DeviceRule],
    ) -> Result<(), CgroupError> {
        let rel = Path::new("keel").join(id);
        let v2_needed = ["pids", "memory", "cpu"].iter().any(|c| layout.use_v2(c));
        match (v2_needed, &layout.v2) {
            (true, Some(v2)) => self.fill_v2(layout, v2, &rel, limits)?,
            _ => self.fill_v1(layout, &rel, limits)?,
        }
        self.devices(layout, &rel, devices)
    }

    /// v2: one directory, with the controllers enabled for keel's subtree.
    fn fill_v2(
        &mut self,
        layout: &CgroupLayout,
        v2: &Path,
        rel: &Path,
        limits: &Limits,
    ) -> Result<(), CgroupError> {
        let enable: Vec<String> = ["pids", "memory", "cpu"]
            .iter()
            .filter(|c| layout.use_v2(c))
            .map(|c| format!("+{c}"))
            .collect();
        mkdir(&v2.join("keel"))?;
        write(&v2.join("cgroup.subtree_control"), &enable.join(" "))?;
        write(&v2.join("keel/cgroup.subtree_control"), &enable.join(" "))?;
        let dir = v2.join(rel);
        mkdir(&dir)?;
        self.dirs.push(dir.clone());
        if let Some(m) = limits.memory_bytes {
            write(&dir.join("memory.max"), &m.to_string())?;
            // Absent without swap accounting; the memory limit alone still holds.
            let _ = write(&dir.join("memory.swap.max"), "0");
        }
        if let Some(p) = limits.pids {
            write(&dir.join("pids.max"), &p.to_string())?;
        }
        if let Some(q) = limits.cpu_quota() {
            write(&dir.join("cpu.max"), &format!("{q} {}", Limits::CPU_PERIOD))?;
        }
        Ok(())
    }

    /// v1: a directory per controller a limit needs (and pids always, when mounted).
    fn fill_v1(
        &mut self,
        layout: &CgroupLayout,
        rel: &Path,
        limits: &Limits,
    ) -> Result<(), CgroupError> {
        let ctl = |name: &'static str, flag: &'static str| {
            layout
                .v1
                .get(name)
                .map(|m| m.join(rel))
                .ok_or(CgroupError::Missing {
                    flag,
                    controller: name,
                })
        };
        if layout.v1.contains_key("pids") || limits.pids.is_some() {
            let dir = ctl("pids", "pids-limit")?;
            mkdir(&dir)?;
            self.dirs.push(dir.clone());
            if let Some(p) = limits.pids {
                write(&dir.join("pids.max"), &p.to_string())?;
            }
        }
        if let Some(m) = limits.memory_bytes {
            let dir = ctl("memory", "memory")?;
            mkdir(&dir)?;
            self.dirs.push(dir.clone());
            write(&dir.join("memory.limit_in_bytes"), &m.to_string())?;
            // No swap on top of the limit (Docker's default --memory-swap is 2x; keel
            // keeps the hog from swapping so the limit is the limit).
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &m.to_string())?;
            }
        }
        if let Some(q) = limits.cpu_quota() {
            let dir = ctl("cpu", "cpus")?;
            mkdir(&dir)?;
            self.dirs.push(dir.clone());
            write(
                &dir.join("cpu.cfs_period_us"),
                &Limits::CPU_PERIOD.to_string(),
            )?;
            write(&dir.join("cpu.cfs_quota_us"), &q.to_string())?;
        }
        Ok(())
    }

    /// The directories `keel/<id>` that already exist (to join a running container).
    /// Returned without ownership of teardown: the container's own handle removes them.
    pub fn existing(layout: &CgroupLayout, id: &str) -> Vec<PathBuf> {
        let rel = Path::new("keel").join(id);
        layout
            .v1
            .values()
            .chain(layout.v2.iter())
            .map(|m| m.join(&rel))
            .filter(|d| d.is_dir())
            .collect()
    }

    /// Moves `pid` into every directory of this cgroup.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        self.dirs
            .iter()
            .try_for_each(|d| write(&d.join("cgroup.procs"), &pid.to_string()))
    }

    /// Opens, for each directory, the file through which a forked child moves itself in
    /// ([`join_self`]): v1's `tasks`, or `cgroup.procs` where there is none (cgroup2).
    /// Opened here, before the fork, so the child only writes.
    pub fn self_join_files(&self) -> Result<Vec<std::os::fd::OwnedFd>, CgroupError> {
        let open = |p: PathBuf| {
            hostfs::open_with(std::fs::File::options().write(true), &p)
                .map(std::os::fd::OwnedFd::from)
                .map_err(|source| CgroupError::Write {
                    path: p,
                    value: "0".into(),
                    source,
                })
        };
        self.dirs
            .iter()
            .map(|d| match open(d.join("tasks")) {
                Err(CgroupError::Write { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    open(d.join("cgroup.procs"))
                }
                r => r,
            })
            .collect()
    }

    /// The pids listed in the first directory.
    pub fn pids(&self) -> Vec<i32> {
        let Some(d) = self.dirs.first() else {
            return vec![];
        };
        let text = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        text.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Kills any process still inside, then removes the directories. Removal retries while
    /// the kernel still counts exiting tasks (EBUSY), for a bounded time.
    pub fn destroy(self) -> Result<(), CgroupError> {
        for _ in 0..500 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                let _ = crate::sys::proc::kill(p, libc::SIGKILL);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        for d in self.dirs.iter().rev() {
            let mut last = None;
            for _ in 0..500 {
                match hostfs::remove_dir(d) {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        last = None;
                        break;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        last = Some(e);
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    Err(e) => {
                        last = Some(e);
                        break;
                    }
                }
            }
            if let Some(source) = last {
                return Err(CgroupError::Remove {
                    path: d.clone(),
                    source,
                });
            }
        }
        Ok(())
    }
}

/// In a freshly forked (so single-threaded) child: moves the calling process into the
/// cgroup through the files of [`Cgroup::self_join_files`] by writing "0" (the writer
/// itself), then closes them. Same effect as the parent writing the child's pid into
/// `cgroup.procs`, at a fraction of the cost: for a pid, or for a whole thread group, the
/// kernel write-locks `cgroup_threadgroup_rwsem`, which waits out an RCU grace period
/// (5–10 ms per container start on the project VM, measured); a thread moving itself
/// through v1's `tasks` skips that lock (`cgroup_procs_write_start` in recent kernels;
/// older ones take it either way, so this is never slower), 0.1 ms.
pub fn join_self(files: Vec<std::os::fd::OwnedFd>) -> Result<(), String> {
    for f in files {
        crate::sys::proc::write_all(&f, b"0")
            .map_err(|e| format!("joining the container's cgroup: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn layouts_from_mountinfo() {
        let l = CgroupLayout::from_mountinfo(HYBRID);
        assert_eq!(l.kind(), "hybrid");
        assert_eq!(l.v1["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(l.v1["cpu"], PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(l.v1["cpuacct"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert!(!l.v1.contains_key("name=systemd"));
        assert_eq!(l.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let v2 = CgroupLayout::from_mountinfo(
            "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert_eq!(v2.kind(), "v2");
        assert_eq!(CgroupLayout::from_mountinfo("").kind(), "none");
    }

    #[test]
    fn a_delegated_subtree_is_found_or_the_reason_given() {
        let hybrid = CgroupLayout::from_mountinfo(HYBRID);
        let e = delegated_subtree(&hybrid, "0::/user.slice\n").unwrap_err();
        assert!(
            e.contains("hybrid") && e.contains("/sys/fs/cgroup/unified"),
            "{e}"
        );
        let none = delegated_subtree(&CgroupLayout::default(), "").unwrap_err();
        assert!(none.contains("no cgroup2 mount"), "{none}");
        let d = tempfile::tempdir().unwrap();
        let v2 = CgroupLayout {
            v2: Some(d.path().to_path_buf()),
            ..CgroupLayout::default()
        };
        let mine = d.path().join("user.slice/app");
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::write(mine.join("cgroup.controllers"), "cpu memory\n").unwrap();
        let e = delegated_subtree(&v2, "0::/user.slice/app\n").unwrap_err();
        assert!(e.contains("lacks the pids controllers"), "{e}");
        std::fs::write(mine.join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
        assert_eq!(
            delegated_subtree(&v2, "0::/user.slice/app\n").unwrap(),
            mine
        );
        let e = delegated_subtree(&v2, "1:name=systemd:/\n").unwrap_err();
        assert!(e.contains("no cgroup v2 path"), "{e}");
    }

    /// The delegation plan for the cases a rootless keel meets in a delegated subtree.
    #[test]
    fn delegation_moves_own_processes_to_a_leaf_first() {
        use DelegateStep::*;
        let scope = Path::new("/cg/user.slice/run-u7.scope");
        let leaf = scope.join(INIT_LEAF);
        let ctr = scope.join("keel-c1");
        let procs = scope.join("cgroup.procs");
        let control = scope.join("cgroup.subtree_control");
        let enable = |v: &str| Write {
            path: control.clone(),
            value: v.into(),
        };
        let pids_only = Limits {
            pids: Some(20),
            ..Limits::default()
        };
        let pids_max = Write {
            path: ctr.join("pids.max"),
            value: "20".into(),
        };
        let mv = |pid| Move {
            pid,
            to: leaf.clone(),
        };
        // (what, this process's cgroup, the cgroup files' contents, the plan)
        type Case<'a> = (
            &'a str,
            &'a Path,
            Vec<(&'a Path, &'a str)>,
            Vec<DelegateStep>,
        );
        let cases: Vec<Case> = vec![
            (
                "systemd-run --scope: keel (and its shell) are in the scope itself",
                scope,
                vec![(&procs, "41\n42\n"), (&control, "")],
                vec![
                    MakeLeaf(leaf.clone()),
                    mv(41),
                    mv(42),
                    enable("+pids +memory +cpu"),
                    MakeContainer(ctr.clone()),
                    pids_max.clone(),
                ],
            ),
            (
                "an empty delegated cgroup with the controllers on: nothing moves",
                scope,
                vec![(&procs, ""), (&control, "cpu memory pids")],
                vec![MakeContainer(ctr.clone()), pids_max.clone()],
            ),
            (
                "a later keel (or a supervisor) already in the leaf: the container goes beside it",
                &leaf,
                vec![(&procs, ""), (&control, "memory pids cpu")],
                vec![MakeContainer(ctr.clone()), pids_max.clone()],
            ),
            (
                "in the leaf, with a new process in the scope since: it joins the leaf",
                &leaf,
                vec![(&procs, "77\n"), (&control, "memory")],
                vec![
                    MakeLeaf(leaf.clone()),
                    mv(77),
                    enable("+pids +cpu"),
                    MakeContainer(ctr.clone()),
                    pids_max.clone(),
                ],
            ),
        ];
        for (what, own, files, want) in cases {
            let files: BTreeMap<PathBuf, String> = files
                .into_iter()
                .map(|(p, v)| (p.to_path_buf(), v.to_string()))
                .collect();
            let read = |p: &Path| files.get(p).cloned().unwrap_or_default();
            assert_eq!(
                plan_delegation(own, &read, "c1", &pids_only),
                want,
                "{what}"
            );
        }
        // Every limit, in the container's cgroup only.
        let read = |_: &Path| String::new();
        let all = plan_delegation(scope, &read, "c1", &limits());
        let files: Vec<_> = all
            .iter()
            .filter_map(|s| match s {
                Write { path, value } | TryWrite { path, value } => Some(format!(
                    "{}={value}",
                    path.strip_prefix(scope).unwrap().display()
                )),
                _ => None,
            })
            .collect();
        assert_eq!(
            files,
            [
                "cgroup.subtree_control=+pids +memory +cpu",
                "keel-c1/memory.max=33554432",
                "keel-c1/memory.swap.max=0",
                "keel-c1/pids.max=20",
                "keel-c1/cpu.max=50000 100000",
            ]
        );
    }

    /// The plan applied to a tempdir standing in for the delegated cgroup: the leaf
    /// holds the moved pid, the container's cgroup its limits.
    #[test]
    fn a_delegation_plan_applies_to_the_files() {
        let d = tempfile::tempdir().unwrap();
        let own = d.path().join("scope");
        std::fs::create_dir(&own).unwrap();
        std::fs::write(own.join("cgroup.procs"), "41\n").unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let plan = plan_delegation(&own, &read, "c1", &limits());
        let mut cg = Cgroup::default();
        cg.apply(&plan).unwrap();
        let get = |p: &str| std::fs::read_to_string(own.join(p)).unwrap();
        assert_eq!(get("keel-init/cgroup.procs"), "41");
        assert_eq!(get("cgroup.subtree_control"), "+pids +memory +cpu");
        assert_eq!(get("keel-c1/pids.max"), "20");
        assert_eq!(cg.dirs, [own.join("keel-c1")]);
    }

    fn limits() -> Limits {
        Limits {
            memory_bytes: Some(32 << 20),
            pids: Some(20),
            cpus: Some(0.5),
        }
    }

    #[test]
    fn v1_writes_limit_files() {
        let d = tempfile::tempdir().unwrap();
        let mut l = CgroupLayout::default();
        for c in ["memory", "pids", "cpu"] {
            l.v1.insert(c.into(), d.path().join(c));
        }
        let cg = Cgroup::create(&l, "c1", &limits(), &[]).unwrap();
        let read = |p: &str| std::fs::read_to_string(d.path().join(p)).unwrap();
        assert_eq!(read("memory/keel/c1/memory.limit_in_bytes"), "33554432");
        assert_eq!(read("pids/keel/c1/pids.max"), "20");
        assert_eq!(read("cpu/keel/c1/cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu/keel/c1/cpu.cfs_period_us"), "100000");
        cg.add(42).unwrap();
        assert_eq!(read("pids/keel/c1/cgroup.procs"), "42");
        assert_eq!(cg.pids(), vec![42]);
    }

    #[test]
    fn v2_writes_limit_files_and_enables_controllers() {
        let d = tempfile::tempdir().unwrap();
        let l = CgroupLayout {
            v1: BTreeMap::new(),
            v2: Some(d.path().into()),
            v2_controllers: vec!["cpu".into(), "memory".into(), "pids".into()],
        };
        Cgroup::create(&l, "c2", &limits(), &[]).unwrap();
        let read = |p: &str| std::fs::read_to_string(d.path().join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+pids +memory +cpu");
        assert_eq!(read("keel/c2/memory.max"), "33554432");
        assert_eq!(read("keel/c2/pids.max"), "20");
        assert_eq!(read("keel/c2/cpu.max"), "50000 100000");
    }

    #[test]
    fn v1_writes_device_rules_deny_first() {
        let d = tempfile::tempdir().unwrap();
        let mut l = CgroupLayout::default();
        l.v1.insert("devices".into(), d.path().join("devices"));
        let rules = crate::runtime::spec::default_device_rules();
        Cgroup::create(&l, "c4", &Limits::default(), &rules).unwrap();
        let dir = d.path().join("devices/keel/c4");
        // A tempdir keeps only the last write; cgroupfs appends each rule.
        assert_eq!(
            std::fs::read_to_string(dir.join("devices.deny")).unwrap(),
            "a *:* rwm"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("devices.allow")).unwrap(),
            "c 10:229 rwm"
        );
        let e = Cgroup::create(&CgroupLayout::default(), "c5", &Limits::default(), &rules)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("neither the cgroup v1 devices controller nor cgroup2"),
            "{e}"
        );
    }

    /// A failure half-way (here: the memory hierarchy cannot be entered) removes the
    /// directories already made (the pids one; cgroupfs would also drop its files).
    #[test]
    fn a_failed_create_leaves_no_directories() {
        let d = tempfile::tempdir().unwrap();
        let mut l = CgroupLayout::default();
        for c in ["memory", "pids"] {
            l.v1.insert(c.into(), d.path().join(c));
        }
        std::fs::write(d.path().join("memory"), "not a hierarchy").unwrap();
        let only_memory = Limits {
            memory_bytes: Some(32 << 20),
            ..Default::default()
        };
        assert!(Cgroup::create(&l, "c6", &only_memory, &[]).is_err());
        assert!(d.path().join("pids/keel").is_dir());
        assert!(!d.path().join("pids/keel/c6").exists(), "leaked cgroup");
    }

    #[test]
    fn missing_controller_is_a_clear_error() {
        let e = Cgroup::create(&CgroupLayout::default(), "c3", &limits(), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--pids-limit needs the pids cgroup controller"),
            "{e}"
        );
    }
}
