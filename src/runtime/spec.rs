//! Container planning: image config + `keel run` flags → [`ContainerSpec`], a plain data
//! description of the process, namespaces, mounts, capabilities and limits.
//!
//! Everything here is pure (no I/O) except [`Accounts::read`], which only reads the two
//! account files of a rootfs. The backends in `runtime::{namespaces,chroot,oci}` apply a
//! spec; they never decide policy. The spec is golden-tested (`testdata/spec/`).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::image::Config;
use serde::Serialize;

/// PATH used when neither the image nor the flags set one (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set; everything else is dropped (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths Docker hides from containers (moby `oci/defaults.go`).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker makes read-only inside containers.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Device nodes bind-mounted from the host into the container's `/dev` tmpfs.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Capabilities the `chroot` backend drops from [`DEFAULT_CAPS`]: without a PID or network
/// namespace they reach the host (chroot(2) again to leave the root, signals to host
/// processes, raw sockets and privileged ports on the host's network, device nodes,
/// the host's audit log).
pub const CHROOT_DROPPED_CAPS: &[&str] = &[
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_NET_BIND_SERVICE",
    "CAP_AUDIT_WRITE",
];

/// Syscalls the `chroot` backend refuses on top of the seccomp profile: with no PID
/// namespace, signalling, tracing or inspecting another process can reach the host's
/// processes (a uid 0 sender needs no capability to signal a uid 0 target).
pub const CHROOT_DENIED_SYSCALLS: &[&str] = &[
    "kill",
    "tkill",
    "tgkill",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "pidfd_open",
    "pidfd_send_signal",
    "pidfd_getfd",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
];

/// Container paths a volume or tmpfs may not cover: keel (or the runtime) mounts these,
/// and a host directory there would replace the kernel's view (runc refuses `/proc` too).
const RESERVED_DESTINATIONS: &[&str] = &["/proc", "/sys", "/dev", "/dev/pts", "/dev/mqueue"];

/// Files below `/proc` that may be bind-mounted over (runc's list; lxcfs uses them).
const PROC_ALLOWED: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// One device cgroup rule (`devices.allow`/`devices.deny` on cgroup v1, and
/// `linux.resources.devices` in an OCI config). `None` for a number means any (`*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRule {
    pub allow: bool,
    /// `a` (all), `b` (block) or `c` (character).
    pub kind: char,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    /// Any of `r` (open for reading), `w` (writing), `m` (mknod).
    pub access: String,
}

impl DeviceRule {
    /// The v1 cgroup text: `c 1:3 rwm`, `b *:* m`, `a *:* rwm`.
    pub fn cgroup_v1(&self) -> String {
        let n = |v: Option<i64>| v.map_or("*".to_string(), |v| v.to_string());
        if self.kind == 'a' {
            return format!("a *:* {}", self.access);
        }
        format!(
            "{} {}:{} {}",
            self.kind,
            n(self.major),
            n(self.minor),
            self.access
        )
    }
}

/// Docker's device policy: deny everything, allow mknod of any node (it is harmless when
/// the node cannot be opened), and allow opening only the default devices: null, zero,
/// full, random, urandom, tty, console, ptmx, the pts terminals and fuse.
pub fn default_device_rules() -> Vec<DeviceRule> {
    let rule = |allow, kind, major, minor, access: &str| DeviceRule {
        allow,
        kind,
        major,
        minor,
        access: access.to_string(),
    };
    let mut rules = vec![
        rule(false, 'a', None, None, "rwm"),
        rule(true, 'c', None, None, "m"),
        rule(true, 'b', None, None, "m"),
    ];
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
    ] {
        rules.push(rule(true, 'c', Some(major), Some(minor), "rwm"));
    }
    rules.push(rule(true, 'c', Some(136), None, "rwm"));
    rules.push(rule(true, 'c', Some(10), Some(229), "rwm"));
    rules
}

/// The seccomp filter a container gets (`--security-opt seccomp=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Seccomp {
    /// Docker's default profile (`runtime/seccomp/default.json`).
    #[default]
    Default,
    /// No filter (`seccomp=unconfined`).
    Unconfined,
}

/// Errors while planning a container; each names the flag or image field at fault.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command to run: the image has no Entrypoint or Cmd; give a command after the image name")]
    NoCommand,
    #[error("environment entry {0:?} has no '='; write it as KEY=VALUE")]
    BadEnv(String),
    #[error("unable to find user {0}: no matching entries in the image's /etc/passwd; use a numeric uid or add the user")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in the image's /etc/group; use a numeric gid or add the group")]
    UnknownGroup(String),
    #[error("invalid user {0:?}: expected NAME, UID, NAME:GROUP or UID:GID")]
    BadUser(String),
    #[error("{path}:{line}: malformed entry {text:?}; expected colon-separated fields")]
    BadAccountLine {
        path: &'static str,
        line: usize,
        text: String,
    },
    #[error("mount destination {0:?} must be an absolute path inside the container")]
    RelativeDestination(String),
    #[error("invalid --cpus value {0}: must be a positive number")]
    BadCpus(f64),
    #[error("invalid mount destination {0:?}: keel mounts {1} itself; mount somewhere else")]
    ReservedDestination(String, &'static str),
    #[error("the working directory '{0}' is invalid, it needs to be an absolute path")]
    RelativeWorkdir(String),
    #[error("invalid memory size {0:?}: expected a number with an optional b, k, m or g suffix (e.g. 32m)")]
    BadMemory(String),
    #[error(transparent)]
    Image(#[from] crate::sys::rootfs::RootfsError),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Which network namespace the container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Share the host's network namespace.
    Host,
    /// A new namespace with only loopback.
    None,
    /// A new namespace with loopback, reachable through published ports (the default).
    #[default]
    Private,
}

/// A host path (already resolved by the caller) mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindMount {
    pub src: PathBuf,
    pub dst: String,
    pub ro: bool,
}

/// Resource limits; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    pub cpus: Option<f64>,
}

impl Limits {
    /// CFS period in microseconds used for `--cpus` (Docker's value).
    pub const CPU_PERIOD: u64 = 100_000;

    /// CFS quota in microseconds per [`Limits::CPU_PERIOD`] for `--cpus`.
    pub fn cpu_quota(&self) -> Option<i64> {
        self.cpus
            .map(|c| (c * Self::CPU_PERIOD as f64).round() as i64)
    }

    pub fn is_empty(&self) -> bool {
        self.memory_bytes.is_none() && self.pids.is_none() && self.cpus.is_none()
    }
}

/// The `keel run` / RUN-step flags that shape a container. Defaults mean "as the image says".
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Replaces the image's Cmd when set.
    pub cmd: Option<Vec<String>>,
    /// Replaces the image's Entrypoint when set (and then drops the image's Cmd, as Docker does).
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE` entries added after the image's Env (a later key wins).
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// Defaults to the container id.
    pub hostname: Option<String>,
    pub network: NetworkMode,
    pub read_only: bool,
    pub binds: Vec<BindMount>,
    /// Container paths that get a fresh tmpfs: `PATH`, or `PATH:size=BYTES` for a
    /// bounded one (`RUN --mount=type=tmpfs,size=…`).
    pub tmpfs: Vec<String>,
    pub limits: Limits,
    pub tty: bool,
    /// `/dev/shm`'s size in bytes (default 64 MiB, docker's).
    pub shm_size: Option<u64>,
    /// Resource limits set on the process (`--ulimit`).
    pub ulimits: Vec<Ulimit>,
    pub seccomp: Seccomp,
    /// `--no-init`: the command itself is PID 1 (namespaces backend), with no init to
    /// forward signals and reap zombies.
    pub no_init: bool,
}

/// One `--ulimit NAME=SOFT[:HARD]` (docker's names: `nofile`, `nproc`, `core`, …);
/// `u64::MAX` is unlimited (`-1` on the command line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// The resource names `--ulimit` takes (docker's, each an `RLIMIT_*`).
pub const ULIMIT_NAMES: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
    "as",
];

impl Ulimit {
    /// Parses `NAME=SOFT[:HARD]` (HARD defaults to SOFT; `-1` is unlimited).
    pub fn parse(spec: &str) -> Result<Ulimit, String> {
        let bad = |why: &str| format!("--ulimit {spec:?}: {why}");
        let (name, values) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=SOFT[:HARD], e.g. nofile=1024:2048"))?;
        if !ULIMIT_NAMES.contains(&name) {
            return Err(bad(&format!(
                "unknown limit; use one of {}",
                ULIMIT_NAMES.join(", ")
            )));
        }
        let num = |v: &str| match v {
            "-1" => Ok(u64::MAX),
            v => v
                .parse::<u64>()
                .map_err(|_| bad("limits are numbers (or -1)")),
        };
        let (soft, hard) = match values.split_once(':') {
            Some((s, h)) => (num(s)?, num(h)?),
            None => (num(values)?, num(values)?),
        };
        if soft > hard {
            return Err(bad("the soft limit is above the hard one"));
        }
        Ok(Ulimit {
            name: name.to_string(),
            soft,
            hard,
        })
    }
}

/// The user the process runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

/// A namespace the container gets its own copy of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Namespace {
    Mount,
    Pid,
    Uts,
    Ipc,
    Network,
}

/// One step of building the container's filesystem view. Targets are container paths.
/// Options are OCI/`mount(8)` option words (`ro`, `nosuid`, `mode=755`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MountOp {
    /// Mount a kernel filesystem (`proc`, `tmpfs`, `devpts`, `sysfs`, `mqueue`).
    Fs {
        fstype: String,
        source: String,
        target: String,
        options: Vec<String>,
    },
    /// Bind a host path (file or directory); the target is created to match.
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
    },
    /// Create a symlink inside the container (`/dev/fd` → `/proc/self/fd`).
    Symlink { target: String, link: String },
    /// Hide a path: `/dev/null` over a file, an empty read-only tmpfs over a directory.
    Mask { path: String },
    /// Make an existing path read-only (bind onto itself, remount ro).
    ReadOnly { path: String },
    /// Remount the root filesystem read-only (`--read-only`); always last.
    RootReadOnly,
}

/// Everything a backend needs to start the container process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerSpec {
    pub id: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: ProcessUser,
    pub hostname: String,
    pub network: NetworkMode,
    pub namespaces: Vec<Namespace>,
    pub mounts: Vec<MountOp>,
    /// The bounding set (Docker's default list).
    pub capabilities: Vec<String>,
    /// The effective and permitted sets: the bounding set for uid 0, empty for any other
    /// user (Docker's behaviour). Inheritable and ambient are always empty.
    pub effective_capabilities: Vec<String>,
    pub no_new_privileges: bool,
    pub limits: Limits,
    pub tty: bool,
    /// Device cgroup rules, in order (deny all first).
    pub devices: Vec<DeviceRule>,
    pub seccomp: Seccomp,
    /// Syscalls refused with EPERM on top of the seccomp profile (the chroot backend's).
    pub denied_syscalls: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// The command is PID 1 itself (`--no-init`); only the namespaces backend has an
    /// init to leave out. Not in golden files unless set.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_init: bool,
}

impl ContainerSpec {
    /// The spec as the `chroot` backend runs it: without PID or network namespaces it
    /// drops [`CHROOT_DROPPED_CAPS`] and refuses [`CHROOT_DENIED_SYSCALLS`].
    pub fn for_chroot(&self) -> ContainerSpec {
        let keep = |c: &String| !CHROOT_DROPPED_CAPS.contains(&c.as_str());
        let mut s = self.clone();
        s.capabilities.retain(keep);
        s.effective_capabilities.retain(keep);
        s.denied_syscalls = CHROOT_DENIED_SYSCALLS
            .iter()
            .map(|c| c.to_string())
            .collect();
        s
    }

    /// The value of `key` in the planned environment.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find_map(|e| e.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }
}

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The parsed account files of a rootfs (empty when the image has none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    pub users: Vec<PasswdEntry>,
    pub groups: Vec<GroupEntry>,
}

impl Accounts {
    /// Parses the text of `/etc/passwd` and `/etc/group`. Comment and blank lines are skipped;
    /// lines with too few fields or non-numeric ids are errors.
    pub fn parse(passwd: &str, group: &str) -> Result<Accounts, SpecError> {
        let mut acc = Accounts::default();
        for (i, line) in lines(passwd) {
            let f: Vec<&str> = line.split(':').collect();
            let bad = || SpecError::BadAccountLine {
                path: "/etc/passwd",
                line: i,
                text: line.to_string(),
            };
            if f.len() < 4 {
                return Err(bad());
            }
            acc.users.push(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().map_err(|_| bad())?,
                gid: f[3].parse().map_err(|_| bad())?,
                home: f.get(5).unwrap_or(&"").to_string(),
            });
        }
        for (i, line) in lines(group) {
            let f: Vec<&str> = line.split(':').collect();
            let bad = || SpecError::BadAccountLine {
                path: "/etc/group",
                line: i,
                text: line.to_string(),
            };
            if f.len() < 3 {
                return Err(bad());
            }
            let members = f.get(3).map(|m| {
                m.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            });
            acc.groups.push(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().map_err(|_| bad())?,
                members: members.unwrap_or_default(),
            });
        }
        Ok(acc)
    }

    /// Reads `/etc/passwd` and `/etc/group` of the image tree at `rootfs`; a missing file
    /// counts as empty. Both are resolved inside the tree (a symlink cannot reach a host
    /// file), must be regular files (a fifo or device is refused unopened) and at most
    /// [`crate::sys::rootfs::READ_CAP`] bytes.
    pub fn read(rootfs: &Path) -> Result<Accounts, SpecError> {
        let tree = crate::sys::rootfs::Rootfs::open(rootfs)?;
        let read = |p: &str| -> Result<String, SpecError> {
            let bytes = tree
                .read_opt(Path::new(p), crate::sys::rootfs::READ_CAP)?
                .unwrap_or_default();
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        Accounts::parse(&read("/etc/passwd")?, &read("/etc/group")?)
    }

    /// Resolves a Docker `--user` value (`name`, `uid`, `name:group`, `uid:gid`, …).
    /// Unknown names are errors; unknown numeric ids are allowed (gid 0, home `/`), as runc does.
    pub fn resolve(&self, user: &str) -> Result<ProcessUser, SpecError> {
        let (u, g) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user, None),
        };
        if u.is_empty() || g == Some("") {
            return Err(SpecError::BadUser(user.to_string()));
        }
        let entry = match u.parse::<u32>() {
            Ok(uid) => self
                .users
                .iter()
                .find(|e| e.uid == uid)
                .cloned()
                .unwrap_or(PasswdEntry {
                    name: String::new(),
                    uid,
                    gid: 0,
                    home: "/".into(),
                }),
            Err(_) => self
                .users
                .iter()
                .find(|e| e.name == u)
                .cloned()
                .ok_or_else(|| SpecError::UnknownUser(u.to_string()))?,
        };
        let gid = match g {
            None => entry.gid,
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => self
                    .groups
                    .iter()
                    .find(|e| e.name == g)
                    .map(|e| e.gid)
                    .ok_or_else(|| SpecError::UnknownGroup(g.to_string()))?,
            },
        };
        // Supplementary groups: the primary group first (BuildKit since v0.11 and moby
        // since CVE-2022-36109 put it there: moby/buildkit#3651), then, only when no
        // group was given, every group listing the user by name (runc `GetExecUser`:
        // "supplementary group ids only make sense if in the implicit form").
        let mut additional_gids: Vec<u32> = vec![gid];
        if !entry.name.is_empty() && g.is_none() {
            for grp in &self.groups {
                if grp.members.contains(&entry.name)
                    && grp.gid != gid
                    && !additional_gids.contains(&grp.gid)
                {
                    additional_gids.push(grp.gid);
                }
            }
        }
        let home = if entry.home.is_empty() {
            "/".to_string()
        } else {
            entry.home
        };
        Ok(ProcessUser {
            uid: entry.uid,
            gid,
            additional_gids,
            home,
        })
    }
}

fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// Parses a Docker memory size (`32m`, `1g`, `512k`, `1048576`, `100b`) into bytes.
pub fn parse_memory(text: &str) -> Result<u64, SpecError> {
    let bad = || SpecError::BadMemory(text.to_string());
    let t = text.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix('b')
        .filter(|s| !s.is_empty() && s.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(t.as_str());
    let (num, mult) = match t.chars().last().ok_or_else(bad)? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        'b' => (&t[..t.len() - 1], 1),
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(mult).filter(|&b| b > 0).ok_or_else(bad)
}

/// Linux signal names and numbers (x86-64/arm64 numbering), for StopSignal and `keel kill`.
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// Parses a signal as Docker accepts it (`SIGTERM`, `TERM`, `term`, `15`); `None` if unknown.
pub fn parse_signal(text: &str) -> Option<i32> {
    let t = text.trim().to_ascii_uppercase();
    if let Ok(n) = t.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = t.strip_prefix("SIG").unwrap_or(&t);
    SIGNALS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// Plans a container: the image config (may be empty) plus flags, with accounts from the
/// rootfs for user resolution. `id` names the container and is the default hostname.
pub fn plan(
    id: &str,
    config: &Config,
    opts: &RunOptions,
    accounts: &Accounts,
) -> Result<ContainerSpec, SpecError> {
    let args = plan_args(config, opts)?;
    let user = match opts
        .user
        .as_deref()
        .or(config.user().as_deref())
        .filter(|u| !u.is_empty())
    {
        Some(u) => accounts.resolve(u)?,
        None => accounts.resolve("0")?,
    };
    let hostname = opts
        .hostname
        .clone()
        .unwrap_or_else(|| id.chars().take(12).collect());
    let env = plan_env(config, opts, &hostname, &user.home)?;
    let image_wd = config
        .working_dir()
        .as_deref()
        .filter(|w| !w.is_empty())
        .unwrap_or("/");
    let cwd = match opts.workdir.as_deref().filter(|w| !w.is_empty()) {
        Some(w) if w.starts_with('/') => clean(w),
        Some(w) => return Err(SpecError::RelativeWorkdir(w.to_string())),
        None => clean(image_wd),
    };
    let mut namespaces = vec![
        Namespace::Mount,
        Namespace::Pid,
        Namespace::Uts,
        Namespace::Ipc,
    ];
    if opts.network != NetworkMode::Host {
        namespaces.push(Namespace::Network);
    }
    if let Some(c) = opts.limits.cpus {
        if !(c > 0.0 && c.is_finite()) {
            return Err(SpecError::BadCpus(c));
        }
    }
    Ok(ContainerSpec {
        id: id.to_string(),
        args,
        env,
        cwd,
        hostname,
        network: opts.network,
        namespaces,
        mounts: plan_mounts(opts)?,
        effective_capabilities: if user.uid == 0 {
            DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
        } else {
            Vec::new()
        },
        user,
        capabilities: DEFAULT_CAPS.iter().map(|s| s.to_string()).collect(),
        no_new_privileges: true,
        limits: opts.limits.clone(),
        tty: opts.tty,
        devices: default_device_rules(),
        seccomp: opts.seccomp,
        denied_syscalls: Vec::new(),
        ulimits: opts.ulimits.clone(),
        no_init: opts.no_init,
    })
}

/// [`plan`] with the accounts read from `rootfs`.
pub fn plan_for_rootfs(
    id: &str,
    config: &Config,
    opts: &RunOptions,
    rootfs: &Path,
) -> Result<ContainerSpec, SpecError> {
    plan(id, config, opts, &Accounts::read(rootfs)?)
}

/// Entrypoint + Cmd, Docker's rules: `--entrypoint` replaces the image's Entrypoint and
/// drops its Cmd; a command after the image replaces Cmd.
fn plan_args(config: &Config, opts: &RunOptions) -> Result<Vec<String>, SpecError> {
    let (entrypoint, image_cmd) = match &opts.entrypoint {
        Some(ep) => (ep.clone(), Vec::new()),
        None => (
            config.entrypoint().clone().unwrap_or_default(),
            config.cmd().clone().unwrap_or_default(),
        ),
    };
    let cmd = opts.cmd.clone().unwrap_or(image_cmd);
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// Image Env, then flag env (a later key replaces an earlier one in place), then the
/// defaults Docker adds when missing: PATH, HOSTNAME, HOME, and TERM with a tty.
fn plan_env(
    config: &Config,
    opts: &RunOptions,
    hostname: &str,
    home: &str,
) -> Result<Vec<String>, SpecError> {
    let mut order: Vec<String> = Vec::new();
    let mut vals: BTreeMap<String, String> = BTreeMap::new();
    let image = config.env().clone().unwrap_or_default();
    for e in image.iter().chain(opts.env.iter()) {
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| SpecError::BadEnv(e.clone()))?;
        if k.is_empty() {
            return Err(SpecError::BadEnv(e.clone()));
        }
        if vals.insert(k.to_string(), v.to_string()).is_none() {
            order.push(k.to_string());
        }
    }
    let mut defaults = vec![
        ("PATH", DEFAULT_PATH),
        ("HOSTNAME", hostname),
        ("HOME", home),
    ];
    if opts.tty {
        defaults.push(("TERM", "xterm"));
    }
    for (k, v) in defaults {
        if !vals.contains_key(k) {
            vals.insert(k.to_string(), v.to_string());
            order.push(k.to_string());
        }
    }
    Ok(order
        .into_iter()
        .map(|k| format!("{k}={}", vals[&k]))
        .collect())
}

fn opts(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

fn fs(fstype: &str, source: &str, target: &str, options: &[&str]) -> MountOp {
    MountOp::Fs {
        fstype: fstype.into(),
        source: source.into(),
        target: target.into(),
        options: opts(options),
    }
}

/// The mount list, in the order a backend applies it: kernel filesystems and `/dev`,
/// then user binds and tmpfs sorted by depth (parents first, as Docker does), then masks,
/// read-only paths and the root remount.
fn plan_mounts(o: &RunOptions) -> Result<Vec<MountOp>, SpecError> {
    let mut m = kernel_mounts(o.shm_size);
    m.extend(DEVICES.iter().map(|d| MountOp::Bind {
        source: PathBuf::from(format!("/dev/{d}")),
        target: format!("/dev/{d}"),
        readonly: false,
    }));
    for (target, link) in [
        ("pts/ptmx", "/dev/ptmx"),
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ] {
        m.push(MountOp::Symlink {
            target: target.into(),
            link: link.into(),
        });
    }
    m.extend(user_mounts(o)?);
    m.extend(MASKED_PATHS.iter().map(|p| MountOp::Mask {
        path: p.to_string(),
    }));
    m.extend(READONLY_PATHS.iter().map(|p| MountOp::ReadOnly {
        path: p.to_string(),
    }));
    if o.read_only {
        m.push(MountOp::RootReadOnly);
    }
    Ok(m)
}

/// /proc, /dev (a tmpfs), its pts, shm and mqueue, and a read-only /sys, with Docker's
/// options; `/dev/shm` is `shm_size` bytes (64 MiB when not given).
fn kernel_mounts(shm_size: Option<u64>) -> Vec<MountOp> {
    let shm_size = format!("size={}k", shm_size.map_or(65536, |b| b.div_ceil(1024)));
    let devpts = [
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
        "gid=5",
    ];
    let dev = ["nosuid", "strictatime", "mode=755", "size=65536k"];
    vec![
        fs("proc", "proc", "/proc", &["nosuid", "noexec", "nodev"]),
        fs("tmpfs", "tmpfs", "/dev", &dev),
        fs("devpts", "devpts", "/dev/pts", &devpts),
        fs(
            "tmpfs",
            "shm",
            "/dev/shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm_size],
        ),
        fs(
            "mqueue",
            "mqueue",
            "/dev/mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        fs(
            "sysfs",
            "sysfs",
            "/sys",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
    ]
}

/// `-v` binds and `--tmpfs` mounts, parents before what they contain.
fn user_mounts(o: &RunOptions) -> Result<Vec<MountOp>, SpecError> {
    let mut user: Vec<MountOp> = Vec::new();
    for b in &o.binds {
        user.push(MountOp::Bind {
            source: b.src.clone(),
            target: dest(&b.dst)?,
            readonly: b.ro,
        });
    }
    for t in &o.tmpfs {
        let (path, size) = match t.split_once(":size=") {
            Some((p, n)) if n.parse::<u64>().is_ok() => (p, Some(format!("size={n}"))),
            _ => (t.as_str(), None),
        };
        let mut opts = vec!["nosuid", "nodev", "noexec", "mode=1777"];
        opts.extend(size.as_deref());
        user.push(fs("tmpfs", "tmpfs", &dest(path)?, &opts));
    }
    // Stable sort by depth keeps the flag order among siblings.
    user.sort_by_key(|op| match op {
        MountOp::Bind { target, .. } | MountOp::Fs { target, .. } => target.matches('/').count(),
        _ => 0,
    });
    Ok(user)
}

/// A mount destination, cleaned; refuses relative paths, `/` and the paths keel mounts
/// itself (`/proc`, `/sys`, `/dev`, …; see `RESERVED_DESTINATIONS`).
pub fn dest(d: &str) -> Result<String, SpecError> {
    if !d.starts_with('/') {
        return Err(SpecError::RelativeDestination(d.to_string()));
    }
    let c = clean(d);
    if c == "/" {
        return Err(SpecError::RelativeDestination(d.to_string()));
    }
    let under = |r: &str| c == r || c.starts_with(&format!("{r}/"));
    for r in RESERVED_DESTINATIONS {
        // Below /dev only the kernel's own mounts are reserved; a file there is fine.
        let covers = if *r == "/dev" { c == *r } else { under(r) };
        if covers && !PROC_ALLOWED.contains(&c.as_str()) {
            return Err(SpecError::ReservedDestination(c, r));
        }
    }
    Ok(c)
}

/// Lexically cleans an absolute container path (`/a/./b/../c/` → `/a/c`); `..` stops at `/`.
pub fn clean(p: &str) -> String {
    // Most paths are clean already (a COPY joins 10,000 clean context names onto its
    // destination): copied, not split and joined again.
    let clean_already = |rest: &str| rest.split('/').all(|c| !matches!(c, "" | "." | ".."));
    if p == "/" || p.strip_prefix('/').is_some_and(clean_already) {
        return p.to_string();
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::ConfigBuilder;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:1001:Bob:/home/bob:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\nalice:x:1000:\nbob:x:1001:\nwheel:x:10:alice,bob\naudio:x:29:alice\n";

    fn accounts() -> Accounts {
        Accounts::parse(PASSWD, GROUP).unwrap()
    }

    fn image() -> Config {
        ConfigBuilder::default()
            .entrypoint(vec!["/entry".to_string()])
            .cmd(vec!["serve".to_string(), "--port=80".to_string()])
            .env(vec!["PATH=/custom/bin".to_string(), "A=1".to_string()])
            .working_dir("/app")
            .user("alice")
            .build()
            .unwrap()
    }

    fn sv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn args_follow_docker_rules() {
        let empty = Config::default();
        let cases: Vec<(
            Config,
            Option<Vec<String>>,
            Option<Vec<String>>,
            Option<Vec<&str>>,
        )> = vec![
            (
                image(),
                None,
                None,
                Some(vec!["/entry", "serve", "--port=80"]),
            ),
            (image(), Some(sv(&["x"])), None, Some(vec!["/entry", "x"])),
            (image(), None, Some(sv(&["/sh"])), Some(vec!["/sh"])),
            (
                image(),
                Some(sv(&["-c", "id"])),
                Some(sv(&["/sh"])),
                Some(vec!["/sh", "-c", "id"]),
            ),
            (image(), None, Some(vec![]), None),
            (empty.clone(), Some(sv(&["true"])), None, Some(vec!["true"])),
            (empty, None, None, None),
        ];
        for (cfg, cmd, ep, want) in cases {
            let o = RunOptions {
                cmd: cmd.clone(),
                entrypoint: ep.clone(),
                ..Default::default()
            };
            let got = plan_args(&cfg, &o).ok();
            assert_eq!(got, want.map(|w| sv(&w)), "cmd={cmd:?} entrypoint={ep:?}");
        }
    }

    #[test]
    fn env_merges_and_adds_defaults() {
        let o = RunOptions {
            env: sv(&["A=2", "B=x=y"]),
            tty: true,
            ..Default::default()
        };
        let env = plan_env(&image(), &o, "h1", "/home/alice").unwrap();
        assert_eq!(
            env,
            sv(&[
                "PATH=/custom/bin",
                "A=2",
                "B=x=y",
                "HOSTNAME=h1",
                "HOME=/home/alice",
                "TERM=xterm"
            ])
        );
        let env = plan_env(&Config::default(), &RunOptions::default(), "h", "/").unwrap();
        assert_eq!(
            env,
            sv(&[&format!("PATH={DEFAULT_PATH}"), "HOSTNAME=h", "HOME=/"])
        );
        let o = RunOptions {
            env: sv(&["NOEQUALS"]),
            ..Default::default()
        };
        assert!(matches!(
            plan_env(&image(), &o, "h", "/"),
            Err(SpecError::BadEnv(_))
        ));
    }

    #[test]
    fn users_resolve_like_runc() {
        let a = accounts();
        let u = |uid, gid, extra: &[u32], home: &str| {
            Some(ProcessUser {
                uid,
                gid,
                additional_gids: extra.to_vec(),
                home: home.into(),
            })
        };
        let cases = [
            ("alice", u(1000, 1000, &[1000, 10, 29], "/home/alice")),
            ("1000", u(1000, 1000, &[1000, 10, 29], "/home/alice")),
            ("1000:1000", u(1000, 1000, &[1000], "/home/alice")),
            ("bob:wheel", u(1001, 10, &[10], "/home/bob")),
            ("alice:29", u(1000, 29, &[29], "/home/alice")),
            ("4242", u(4242, 0, &[0], "/")),
            ("4242:77", u(4242, 77, &[77], "/")),
            ("root", u(0, 0, &[0], "/root")),
            ("nobody", None),
            ("alice:nogroup", None),
            (":1", None),
            ("1:", None),
        ];
        for (input, want) in cases {
            assert_eq!(a.resolve(input).ok(), want, "user {input:?}");
        }
        let e = a.resolve("nobody").unwrap_err().to_string();
        assert!(e.contains("unable to find user nobody"), "{e}");
        assert!(Accounts::parse("root:x:zero:0::/:/bin/sh\n", "").is_err());
        assert_eq!(
            Accounts::parse("", "").unwrap().resolve("0").unwrap().home,
            "/"
        );
    }

    #[test]
    fn signals_parse() {
        let cases = [
            ("SIGTERM", Some(15)),
            ("term", Some(15)),
            ("9", Some(9)),
            ("SIGWINCH", Some(28)),
            ("0", None),
            ("SIGNOPE", None),
            ("", None),
        ];
        for (t, want) in cases {
            assert_eq!(parse_signal(t), want, "{t:?}");
        }
        assert_eq!(parse_signal("USR1"), Some(libc::SIGUSR1));
        assert_eq!(parse_signal("CHLD"), Some(libc::SIGCHLD));
    }

    #[test]
    fn memory_sizes() {
        let cases = [
            ("32m", Some(32 << 20)),
            ("32M", Some(32 << 20)),
            ("32mb", Some(32 << 20)),
            ("1g", Some(1 << 30)),
            ("512k", Some(512 << 10)),
            ("100b", Some(100)),
            ("4096", Some(4096)),
            ("", None),
            ("m", None),
            ("-1m", None),
            ("0", None),
            ("12x", None),
        ];
        for (t, want) in cases {
            assert_eq!(parse_memory(t).ok(), want, "{t:?}");
        }
    }

    #[test]
    fn workdir_and_paths() {
        let a = accounts();
        let wd = |w: Option<&str>| {
            plan(
                "c",
                &image(),
                &RunOptions {
                    workdir: w.map(Into::into),
                    ..Default::default()
                },
                &a,
            )
            .unwrap()
            .cwd
        };
        assert_eq!(wd(None), "/app");
        assert_eq!(wd(Some("/srv/")), "/srv");
        let rel = RunOptions {
            workdir: Some("rel".into()),
            ..Default::default()
        };
        let e = plan("c", &image(), &rel, &a).unwrap_err().to_string();
        assert_eq!(
            e,
            "the working directory 'rel' is invalid, it needs to be an absolute path"
        );
        assert_eq!(clean("/a/./b/../../.."), "/");
        for (path, cleaned) in [
            ("/", "/"),
            ("/a", "/a"),
            ("/a/b.c/.d", "/a/b.c/.d"),
            ("/a/", "/a"),
            ("//a", "/a"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a/b/..", "/a"),
            ("/..", "/"),
            ("a/b", "/a/b"),
            ("", "/"),
        ] {
            assert_eq!(clean(path), cleaned, "{path:?}");
        }
        let o = RunOptions {
            tmpfs: sv(&["relative"]),
            ..Default::default()
        };
        assert!(matches!(
            plan("c", &image(), &o, &a),
            Err(SpecError::RelativeDestination(_))
        ));
        let o = RunOptions {
            limits: Limits {
                cpus: Some(0.0),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(matches!(
            plan("c", &image(), &o, &a),
            Err(SpecError::BadCpus(_))
        ));
    }

    #[test]
    fn reserved_destinations_are_refused() {
        let cases = [
            ("/proc", false),
            ("/proc/sys", false),
            ("/proc/../proc/1", false),
            ("/sys", false),
            ("/sys/kernel", false),
            ("/dev", false),
            ("/dev/pts/0", false),
            ("/proc/cpuinfo", true),
            ("/dev/shm/x", true),
            ("/dev/fuse", true),
            ("/procfs", true),
            ("/data", true),
        ];
        for (d, ok) in cases {
            assert_eq!(dest(d).is_ok(), ok, "{d}");
        }
    }

    #[test]
    fn chroot_drops_what_it_cannot_contain() {
        let s = plan("c", &image(), &RunOptions::default(), &accounts()).unwrap();
        assert!(
            s.effective_capabilities.is_empty(),
            "image user alice is not root"
        );
        let root = RunOptions {
            user: Some("0".into()),
            ..Default::default()
        };
        let s = plan("c", &image(), &root, &accounts()).unwrap();
        assert_eq!(s.effective_capabilities, s.capabilities);
        let c = s.for_chroot();
        for cap in CHROOT_DROPPED_CAPS {
            assert!(!c.capabilities.iter().any(|x| x == cap), "{cap}");
            assert!(!c.effective_capabilities.iter().any(|x| x == cap), "{cap}");
        }
        assert!(c.denied_syscalls.iter().any(|x| x == "kill"));
        assert_eq!(
            c.capabilities.len(),
            DEFAULT_CAPS.len() - CHROOT_DROPPED_CAPS.len()
        );
    }

    #[test]
    fn device_rules_in_cgroup_v1_text() {
        let r: Vec<String> = default_device_rules()
            .iter()
            .map(|r| r.cgroup_v1())
            .collect();
        assert_eq!(r[0], "a *:* rwm");
        assert!(!default_device_rules()[0].allow);
        assert!(r.contains(&"b *:* m".to_string()));
        assert!(r.contains(&"c 1:3 rwm".to_string()));
        assert!(r.contains(&"c 136:* rwm".to_string()));
        assert!(!r.iter().any(|x| x.starts_with("b ") && x.contains("rw")));
    }

    /// Serializes specs for a few inputs and compares them with `testdata/spec/<name>.json`.
    /// `KEEL_BLESS=1` rewrites the files.
    #[test]
    fn ulimits_parse_as_docker_writes_them() {
        let u = |n: &str, s: u64, h: u64| Ulimit {
            name: n.into(),
            soft: s,
            hard: h,
        };
        assert_eq!(
            Ulimit::parse("nofile=1024:2048").unwrap(),
            u("nofile", 1024, 2048)
        );
        assert_eq!(Ulimit::parse("nproc=64").unwrap(), u("nproc", 64, 64));
        assert_eq!(
            Ulimit::parse("core=-1").unwrap(),
            u("core", u64::MAX, u64::MAX)
        );
        for bad in ["nofile", "files=1", "nofile=x", "nofile=9:8", "=1"] {
            assert!(Ulimit::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn golden_specs() {
        let a = accounts();
        let full = RunOptions {
            cmd: Some(sv(&["sh", "-c", "echo hi"])),
            entrypoint: Some(vec![]),
            env: sv(&["FOO=bar", "A=override"]),
            workdir: Some("/work".into()),
            user: Some("1000:1000".into()),
            hostname: Some("box".into()),
            network: NetworkMode::Host,
            read_only: true,
            binds: vec![
                BindMount {
                    src: "/srv/data/cache".into(),
                    dst: "/data/cache".into(),
                    ro: false,
                },
                BindMount {
                    src: "/srv/data".into(),
                    dst: "/data/".into(),
                    ro: true,
                },
            ],
            tmpfs: sv(&["/run"]),
            limits: Limits {
                memory_bytes: Some(32 << 20),
                pids: Some(20),
                cpus: Some(1.5),
            },
            tty: true,
            shm_size: None,
            ulimits: Vec::new(),
            seccomp: Seccomp::Unconfined,
            no_init: false,
        };
        let cases = [
            (
                "default",
                plan("0123456789abcdef", &image(), &RunOptions::default(), &a).unwrap(),
            ),
            (
                "empty-image",
                plan(
                    "c1",
                    &Config::default(),
                    &RunOptions {
                        cmd: Some(sv(&["/bin/true"])),
                        ..Default::default()
                    },
                    &a,
                )
                .unwrap(),
            ),
            ("all-flags", plan("c2", &image(), &full, &a).unwrap()),
        ];
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/spec");
        let bless = std::env::var_os("KEEL_BLESS").is_some();
        let mut failures = Vec::new();
        for (name, spec) in cases {
            let got = serde_json::to_string_pretty(&spec).unwrap() + "\n";
            let path = dir.join(format!("{name}.json"));
            if bless {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &got).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run with KEEL_BLESS=1", path.display()));
            if want != got {
                failures.push(format!(
                    "{}\n--- expected\n{want}\n--- actual\n{got}",
                    path.display()
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "golden mismatch (KEEL_BLESS=1 re-blesses):\n{}",
            failures.join("\n")
        );
    }
}
