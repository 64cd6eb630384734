//! Seccomp policy: Docker's default profile, kept as data in `seccomp/default.json`
//! (moby's file, Apache-2.0; see `seccomp/NOTICE`), resolved for this host's architecture
//! and kernel and a container's capabilities into a [`Policy`]. The policy is written into
//! the OCI config for runc ([`oci_json`]) or compiled to BPF programs ([`compile`]) for the
//! namespaces and chroot backends; `sys::seccomp` installs them just before exec.
//!
//! Pure: no syscalls here. Resolution follows moby's `setupSeccomp`: an entry applies when
//! its `includes` all hold (arches, caps, minKernel) and none of its `excludes` do.
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Docker's default profile (moby v20.10.24).
pub const DEFAULT_PROFILE: &str = include_str!("seccomp/default.json");

/// Errors reading the profile or compiling it for this host.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp profile: {0}")]
    Parse(String),
    #[error("compiling the seccomp profile for {arch}: {why}; run with --security-opt seccomp=unconfined on this architecture")]
    Compile { arch: String, why: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    syscalls: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    names: Vec<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<Arg>>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// One argument comparison (libseccomp's `SCMP_CMP_*`; `MASKED_EQ` is
/// `(arg & value) == value_two`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    pub index: u8,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

/// What happens to a matching syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Allow,
    Errno(u32),
}

/// One syscall rule after resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    /// All must hold; empty matches every call.
    pub args: Vec<Arg>,
}

/// A resolved policy: the default for unlisted syscalls and the rules, in profile order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub default: Action,
    /// `SCMP_ARCH_*` names for the OCI config (native first).
    pub architectures: Vec<String>,
    pub rules: Vec<Rule>,
}

/// The host facts resolution depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    /// Go's name for the architecture, as the profile uses it (`amd64`, `arm64`).
    pub arch: &'static str,
    /// Kernel (major, minor).
    pub kernel: (u32, u32),
}

impl Host {
    /// This machine: the compile-time architecture and the running kernel's release.
    pub fn this() -> Host {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Host {
            arch: go_arch(std::env::consts::ARCH),
            kernel: parse_kernel(&release).unwrap_or((0, 0)),
        }
    }
}

fn go_arch(rust: &str) -> &'static str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        _ => "unknown",
    }
}

/// The profile's SCMP architecture for a Go architecture name.
fn scmp_arch(go: &str) -> &'static str {
    match go {
        "amd64" => "SCMP_ARCH_X86_64",
        "arm64" => "SCMP_ARCH_AARCH64",
        "386" => "SCMP_ARCH_X86",
        "arm" => "SCMP_ARCH_ARM",
        "riscv64" => "SCMP_ARCH_RISCV64",
        "s390x" => "SCMP_ARCH_S390X",
        "ppc64le" => "SCMP_ARCH_PPC64LE",
        _ => "",
    }
}

/// `6.1.0-13-amd64` → (6, 1).
pub fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut it = release.trim().split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn action(name: &str, errno: Option<u32>) -> Result<Action, SeccompError> {
    match name {
        "SCMP_ACT_ALLOW" => Ok(Action::Allow),
        "SCMP_ACT_ERRNO" => Ok(Action::Errno(errno.unwrap_or(libc::EPERM as u32))),
        other => Err(SeccompError::Parse(format!(
            "action {other} is not supported; use SCMP_ACT_ALLOW or SCMP_ACT_ERRNO"
        ))),
    }
}

/// Whether `entry` applies on `host` to a container with `caps`.
fn applies(entry: &Entry, host: Host, caps: &[String]) -> bool {
    let has = |c: &String| caps.contains(c);
    let at_least = |k: &Option<String>| {
        k.as_deref()
            .and_then(parse_kernel)
            .map(|min| host.kernel >= min)
    };
    let ex = &entry.excludes;
    let inc = &entry.includes;
    if ex.arches.iter().any(|a| a == host.arch)
        || ex.caps.iter().any(has)
        || at_least(&ex.min_kernel) == Some(true)
    {
        return false;
    }
    (inc.arches.is_empty() || inc.arches.iter().any(|a| a == host.arch))
        && inc.caps.iter().all(has)
        && at_least(&inc.min_kernel) != Some(false)
}

/// Resolves the profile `text` for `host` and a container with capability set `caps`.
pub fn resolve(text: &str, host: Host, caps: &[String]) -> Result<Policy, SeccompError> {
    let p: Profile = serde_json::from_str(text).map_err(|e| SeccompError::Parse(e.to_string()))?;
    let native = scmp_arch(host.arch);
    let mut architectures = Vec::new();
    for m in p.arch_map.iter().filter(|m| m.architecture == native) {
        architectures.push(m.architecture.clone());
        architectures.extend(m.sub_architectures.iter().cloned());
    }
    let mut rules = Vec::new();
    for e in p.syscalls.iter().filter(|e| applies(e, host, caps)) {
        let act = action(&e.action, e.errno_ret)?;
        for n in &e.names {
            rules.push(Rule {
                name: n.clone(),
                action: act,
                args: e.args.clone().unwrap_or_default(),
            });
        }
    }
    Ok(Policy {
        default: action(&p.default_action, p.default_errno_ret)?,
        architectures,
        rules,
    })
}

impl Policy {
    /// A policy that allows everything except `denied` (EPERM): `seccomp=unconfined` under
    /// chroot still refuses what chroot cannot contain.
    pub fn allow_all() -> Policy {
        Policy {
            default: Action::Allow,
            architectures: Vec::new(),
            rules: Vec::new(),
        }
    }

    /// Adds EPERM rules for `names` (they win over any allow rule for the same call).
    pub fn deny(mut self, names: &[String]) -> Policy {
        for n in names {
            self.rules.push(Rule {
                name: n.clone(),
                action: Action::Errno(libc::EPERM as u32),
                args: Vec::new(),
            });
        }
        self
    }
}

/// The policy a container gets: Docker's profile for its capabilities (or nothing with
/// `seccomp=unconfined`), plus the spec's denied syscalls (chroot's) either way.
pub fn for_spec(
    spec: &crate::runtime::ContainerSpec,
    host: Host,
) -> Result<Option<Policy>, SeccompError> {
    use crate::runtime::spec::Seccomp;
    let base = match spec.seccomp {
        Seccomp::Default => resolve(DEFAULT_PROFILE, host, &spec.capabilities)?,
        Seccomp::Unconfined if spec.denied_syscalls.is_empty() => return Ok(None),
        Seccomp::Unconfined => Policy::allow_all(),
    };
    Ok(Some(base.deny(&spec.denied_syscalls)))
}

fn scmp_action(a: Action) -> (&'static str, Option<u32>) {
    match a {
        Action::Allow => ("SCMP_ACT_ALLOW", None),
        Action::Errno(n) => ("SCMP_ACT_ERRNO", Some(n)),
    }
}

/// The OCI `linux.seccomp` object for `policy` (runc hands it to libseccomp). Rules with
/// the same action and arguments are grouped into one entry, in first-seen order.
pub fn oci_json(policy: &Policy) -> serde_json::Value {
    let mut groups: Vec<(Action, Vec<Arg>, Vec<String>)> = Vec::new();
    for r in &policy.rules {
        match groups
            .iter_mut()
            .find(|(a, args, _)| *a == r.action && *args == r.args)
        {
            Some(g) => g.2.push(r.name.clone()),
            None => groups.push((r.action, r.args.clone(), vec![r.name.clone()])),
        }
    }
    let syscalls: Vec<serde_json::Value> = groups
        .into_iter()
        .map(|(a, args, names)| {
            let (action, errno) = scmp_action(a);
            let mut v = serde_json::json!({"names": names, "action": action});
            if let Some(e) = errno {
                v["errnoRet"] = e.into();
            }
            if !args.is_empty() {
                v["args"] = serde_json::to_value(&args).unwrap_or_default();
            }
            v
        })
        .collect();
    let (default, errno) = scmp_action(policy.default);
    let mut v = serde_json::json!({
        "defaultAction": default,
        "architectures": policy.architectures,
        "syscalls": syscalls,
    });
    if let Some(e) = errno {
        v["defaultErrnoRet"] = e.into();
    }
    v
}

fn condition(a: &Arg) -> Result<seccompiler::SeccompCondition, String> {
    use seccompiler::SeccompCmpOp as Op;
    let op = match a.op.as_str() {
        "SCMP_CMP_EQ" => Op::Eq,
        "SCMP_CMP_NE" => Op::Ne,
        "SCMP_CMP_LT" => Op::Lt,
        "SCMP_CMP_LE" => Op::Le,
        "SCMP_CMP_GT" => Op::Gt,
        "SCMP_CMP_GE" => Op::Ge,
        "SCMP_CMP_MASKED_EQ" => Op::MaskedEq(a.value),
        other => return Err(format!("argument operator {other} is not supported")),
    };
    let value = if a.op == "SCMP_CMP_MASKED_EQ" {
        a.value_two
    } else {
        a.value
    };
    seccompiler::SeccompCondition::new(a.index, seccompiler::SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| e.to_string())
}

/// Syscall rules keyed by number, for one action. A call with an unconditional rule
/// matches always (an empty rule list, in seccompiler's terms).
type Chains = BTreeMap<i64, Vec<seccompiler::SeccompRule>>;

/// Compiles `policy` into BPF programs for this architecture, to be installed in order:
/// first the allow-list (unlisted calls get the default errno), then one program per
/// errno action. The kernel runs every installed program and keeps the strictest answer,
/// and among equal actions the last installed one's errno, so a specific errno (clone3's
/// ENOSYS) wins over the default EPERM. Names this architecture lacks are skipped, as
/// libseccomp does.
pub fn compile(policy: &Policy) -> Result<Vec<seccompiler::BpfProgram>, SeccompError> {
    let arch_name = std::env::consts::ARCH;
    let err = |why: String| SeccompError::Compile {
        arch: arch_name.to_string(),
        why,
    };
    let arch: seccompiler::TargetArch = arch_name.try_into().map_err(|e| err(format!("{e:?}")))?;
    let mut by_action: BTreeMap<Action, (Chains, BTreeSet<i64>)> = BTreeMap::new();
    for r in &policy.rules {
        let Ok(nr) = syscalls::Sysno::from_str(&r.name) else {
            continue;
        };
        let nr = nr.id() as i64;
        let (chains, always) = by_action.entry(r.action).or_default();
        if r.args.is_empty() {
            always.insert(nr);
            continue;
        }
        let conds = r.args.iter().map(condition).collect::<Result<Vec<_>, _>>();
        let rule =
            seccompiler::SeccompRule::new(conds.map_err(err)?).map_err(|e| err(e.to_string()))?;
        chains.entry(nr).or_default().push(rule);
    }
    let mut programs = Vec::new();
    let to_seccompiler = |a: Action| match a {
        Action::Allow => seccompiler::SeccompAction::Allow,
        Action::Errno(n) => seccompiler::SeccompAction::Errno(n),
    };
    // Allow-list first (only when the default refuses), then the errno programs.
    let mut order: Vec<Action> = by_action.keys().copied().collect();
    order.sort_by_key(|a| *a != Action::Allow);
    for a in order {
        // An allow-list under an allow default says nothing; an errno program always
        // counts (even with the default's errno, it overrides the allow-list's answer).
        if a == Action::Allow && policy.default == Action::Allow {
            continue;
        }
        let (chains, always) = by_action.remove(&a).unwrap_or_default();
        let (miss, hit) = (to_seccompiler(policy.default_for(a)), to_seccompiler(a));
        programs.push(program(chains, &always, miss, hit, arch, true).map_err(err)?);
    }
    Ok(programs)
}

/// One program: calls in `always` answer `hit` whatever their arguments, calls in
/// `chains` when a rule's conditions hold, everything else `miss`. With `search`, the
/// `always` calls are found by a binary search ([`with_search`]) in front of
/// seccompiler's program for the conditional calls alone; without it, seccompiler's
/// linear program lists every call (the reference the tests check the search against).
fn program(
    mut chains: Chains,
    always: &BTreeSet<i64>,
    miss: seccompiler::SeccompAction,
    hit: seccompiler::SeccompAction,
    arch: seccompiler::TargetArch,
    search: bool,
) -> Result<seccompiler::BpfProgram, String> {
    let searched = search && always.len() >= SEARCH_FROM;
    if !searched {
        for nr in always {
            chains.insert(*nr, Vec::new());
        }
    }
    let hit_code = u32::from(hit.clone());
    let filter =
        seccompiler::SeccompFilter::new(chains, miss, hit, arch).map_err(|e| e.to_string())?;
    let tail: seccompiler::BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())?;
    Ok(if searched {
        with_search(always, tail, hit_code)
    } else {
        tail
    })
}

/// Below this many unconditional calls a linear list is as short as the search.
const SEARCH_FROM: usize = 16;
/// Calls compared one by one at the bottom of the search.
const LEAF: usize = 8;

// Classic BPF opcodes (linux/bpf_common.h) and `struct seccomp_data` offsets.
const LD_W_ABS: u16 = 0x20;
const JA: u16 = 0x05;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;
const NR_AT: u32 = 0;
const ARCH_AT: u32 = 4;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> seccompiler::sock_filter {
    seccompiler::sock_filter { code, jt, jf, k }
}

/// `tail` (a seccompiler program) behind a binary search for the calls in `always`,
/// which answer `hit` at once; every other call, and every call of another
/// architecture, goes on to `tail`, which answers as it did alone. seccompiler lists
/// calls one after another (5 instructions each: 1,503 for Docker's profile), so the
/// kernel checked and JIT-compiled them all at every container start (0.7 ms here) and a
/// call near the end of the list ran through ~600 comparisons; with the search the program
/// is 601 instructions, ~20 comparisons deep (docs/performance.md, Session 11). `tail` must
/// open with seccompiler's architecture check (`LD arch; JEQ arch,1,0; RET kill`), which
/// the search repeats; otherwise `tail` is returned as it is.
fn with_search(
    always: &BTreeSet<i64>,
    tail: seccompiler::BpfProgram,
    hit: u32,
) -> seccompiler::BpfProgram {
    let opens_with_arch_check = tail.len() > 3
        && tail[0] == insn(LD_W_ABS, 0, 0, ARCH_AT)
        && tail[1].code == JEQ_K
        && (tail[1].jt, tail[1].jf) == (1, 0)
        && tail[2].code == RET_K;
    let keys: Option<Vec<u32>> = always.iter().map(|n| u32::try_from(*n).ok()).collect();
    let (true, Some(keys)) = (opens_with_arch_check, keys) else {
        return tail;
    };
    // `JA` with k = u32::MAX stands for "on to the tail" until the tail's place is known.
    let mut out = vec![
        insn(LD_W_ABS, 0, 0, ARCH_AT),
        insn(JEQ_K, 1, 0, tail[1].k),
        insn(JA, 0, 0, u32::MAX),
        insn(LD_W_ABS, 0, 0, NR_AT),
    ];
    search(&keys, hit, &mut out);
    let start = out.len();
    for (i, ins) in out.iter_mut().enumerate() {
        if ins.code == JA && ins.k == u32::MAX {
            ins.k = (start - i - 1) as u32;
        }
    }
    out.extend(tail);
    out
}

/// Appends the search over sorted `keys` for the number in the accumulator: a node
/// splits at its middle key (`JGE`, then a long jump over the lower half, since a
/// conditional jump reaches only 255 instructions); a leaf compares up to [`LEAF`] keys,
/// answers `hit` on a match and jumps on to the tail otherwise.
fn search(keys: &[u32], hit: u32, out: &mut Vec<seccompiler::sock_filter>) {
    if keys.len() <= LEAF {
        let n = keys.len();
        for (i, k) in keys.iter().enumerate() {
            // Past the remaining comparisons and the jump to the tail, onto `RET hit`.
            out.push(insn(JEQ_K, (n - i) as u8, 0, *k));
        }
        out.push(insn(JA, 0, 0, u32::MAX));
        out.push(insn(RET_K, 0, 0, hit));
        return;
    }
    let (low, high) = keys.split_at(keys.len() / 2);
    out.push(insn(JGE_K, 0, 1, high[0]));
    let over = out.len();
    out.push(insn(JA, 0, 0, 0));
    search(low, hit, out);
    out[over].k = (out.len() - over - 1) as u32;
    search(high, hit, out);
}

impl Policy {
    /// What a program for action `a` answers for calls it does not list: the policy's
    /// default for the allow-list, allow for an errno program (the allow-list decides).
    fn default_for(&self, a: Action) -> Action {
        match a {
            Action::Allow => self.default,
            Action::Errno(_) => Action::Allow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AMD64: Host = Host {
        arch: "amd64",
        kernel: (6, 1),
    };

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn actions_for(p: &Policy, name: &str) -> Vec<(Action, usize)> {
        p.rules
            .iter()
            .filter(|r| r.name == name)
            .map(|r| (r.action, r.args.len()))
            .collect()
    }

    /// Table: how the default profile resolves for Docker's default capabilities.
    #[test]
    fn default_profile_resolves_like_docker() {
        let docker = caps(crate::runtime::spec::DEFAULT_CAPS);
        let p = resolve(DEFAULT_PROFILE, AMD64, &docker).unwrap();
        assert_eq!(p.default, Action::Errno(libc::EPERM as u32));
        assert_eq!(
            p.architectures,
            ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        );
        let cases: &[(&str, Vec<(Action, usize)>)] = &[
            ("read", vec![(Action::Allow, 0)]),
            ("arch_prctl", vec![(Action::Allow, 0)]),
            // New namespaces (CLONE_NEW* flags) need CAP_SYS_ADMIN: clone is allowed only
            // with those bits clear, unshare and setns not at all.
            ("clone", vec![(Action::Allow, 1)]),
            ("unshare", vec![]),
            ("setns", vec![]),
            ("mount", vec![]),
            ("clone3", vec![(Action::Errno(libc::ENOSYS as u32), 0)]),
            ("ptrace", vec![(Action::Allow, 0)]),
            ("chroot", vec![(Action::Allow, 0)]),
            ("reboot", vec![]),
            ("s390_runtime_instr", vec![]),
        ];
        for (name, want) in cases {
            assert_eq!(&actions_for(&p, name), want, "{name}");
        }
        let old = resolve(
            DEFAULT_PROFILE,
            Host {
                kernel: (4, 4),
                ..AMD64
            },
            &docker,
        )
        .unwrap();
        assert_eq!(actions_for(&old, "ptrace"), vec![], "ptrace needs 4.8");
        let admin = resolve(DEFAULT_PROFILE, AMD64, &caps(&["CAP_SYS_ADMIN"])).unwrap();
        assert_eq!(actions_for(&admin, "unshare"), vec![(Action::Allow, 0)]);
        assert_eq!(actions_for(&admin, "clone3"), vec![(Action::Allow, 0)]);
        let no_chroot = resolve(DEFAULT_PROFILE, AMD64, &caps(&[])).unwrap();
        assert_eq!(actions_for(&no_chroot, "chroot"), vec![]);
    }

    #[test]
    fn oci_json_groups_rules_and_keeps_errnos() {
        let p = resolve(
            DEFAULT_PROFILE,
            AMD64,
            &caps(crate::runtime::spec::DEFAULT_CAPS),
        )
        .unwrap()
        .deny(&["kill".to_string()]);
        let v = oci_json(&p);
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(v["defaultErrnoRet"], 1);
        let entries = v["syscalls"].as_array().unwrap();
        let first = &entries[0];
        assert_eq!(first["action"], "SCMP_ACT_ALLOW");
        assert!(first["names"].as_array().unwrap().len() > 300);
        let clone = entries
            .iter()
            .find(|e| e["names"] == serde_json::json!(["clone"]))
            .unwrap();
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone["args"][0]["valueTwo"], 0);
        let last = entries.last().unwrap();
        assert_eq!(last["names"], serde_json::json!(["kill"]));
        assert_eq!(last["errnoRet"], 1);
    }

    #[test]
    fn compiles_to_ordered_programs() {
        let docker = caps(crate::runtime::spec::DEFAULT_CAPS);
        let p = resolve(DEFAULT_PROFILE, Host::this(), &docker).unwrap();
        let progs = compile(&p).unwrap();
        // The allow-list and the ENOSYS program for clone3.
        assert_eq!(progs.len(), 2);
        assert!(progs[0].len() > progs[1].len());
        let unconfined = compile(&Policy::allow_all().deny(&["kill".into()])).unwrap();
        assert_eq!(unconfined.len(), 1);
        // chroot's denials get their own program even with the default's errno (EPERM).
        assert_eq!(compile(&p.clone().deny(&["kill".into()])).unwrap().len(), 3);
        assert!(compile(&Policy::allow_all()).unwrap().is_empty());
    }

    /// A classic-BPF interpreter for the instructions seccompiler and [`with_search`]
    /// emit, over a `struct seccomp_data` (nr, arch, ip, six args); any other opcode fails
    /// the test. Returns the program's answer.
    fn run_bpf(prog: &[seccompiler::sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend(nr.to_le_bytes());
        data.extend(arch.to_le_bytes());
        data.extend(0u64.to_le_bytes());
        for a in args {
            data.extend(a.to_le_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = &prog[pc];
            pc += 1;
            let jump = |taken: bool| if taken { i.jt as usize } else { i.jf as usize };
            match i.code {
                0x20 => {
                    let at = i.k as usize;
                    acc = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
                }
                0x54 => acc &= i.k,
                0x05 => pc += i.k as usize,
                0x15 => pc += jump(acc == i.k),
                0x25 => pc += jump(acc > i.k),
                0x35 => pc += jump(acc >= i.k),
                0x45 => pc += jump(acc & i.k != 0),
                0x06 => return i.k,
                other => panic!("opcode {other:#x} at {}", pc - 1),
            }
        }
    }

    /// The searched programs answer exactly as seccompiler's linear ones for every call
    /// number (native, x32's and other architectures') and argument patterns that the
    /// profile's conditions tell apart (clone's namespace flags, personality's values,
    /// socket's family, 64-bit halves), for Docker's profile with and without
    /// CAP_SYS_ADMIN, chroot's denials and an allow-all policy with denials.
    #[test]
    fn the_searched_filter_answers_as_the_linear_one() {
        let docker = caps(crate::runtime::spec::DEFAULT_CAPS);
        let base = resolve(DEFAULT_PROFILE, Host::this(), &docker).unwrap();
        let policies = [
            base.clone(),
            base.clone().deny(&["kill".into(), "chroot".into()]),
            resolve(DEFAULT_PROFILE, Host::this(), &caps(&["CAP_SYS_ADMIN"])).unwrap(),
            Policy::allow_all().deny(&["kill".into()]),
        ];
        let values: [u64; 12] = [
            0,
            1,
            8,
            40,
            0x20000,
            0x20008,
            0xffff_ffff,
            0x7e02_0000,
            0x1000_0000,
            1 << 32,
            (1 << 32) | 0x20000,
            u64::MAX,
        ];
        let arch: seccompiler::TargetArch = std::env::consts::ARCH.try_into().unwrap();
        let native = run_bpf(
            &program(
                Chains::new(),
                &BTreeSet::from([0]),
                seccompiler::SeccompAction::Errno(1),
                seccompiler::SeccompAction::Allow,
                arch,
                false,
            )
            .unwrap(),
            0,
            0,
            [0; 6],
        );
        assert_eq!(
            native,
            libc::SECCOMP_RET_KILL_PROCESS,
            "an unknown arch is killed"
        );
        let audit = program(
            Chains::new(),
            &BTreeSet::from([0]),
            seccompiler::SeccompAction::Errno(1),
            seccompiler::SeccompAction::Allow,
            arch,
            false,
        )
        .unwrap()[1]
            .k;
        let mut checked = 0;
        for p in &policies {
            let (linear, searched) = (compile_with(p, false), compile(p).unwrap());
            assert_eq!(linear.len(), searched.len());
            for (l, s) in linear.iter().zip(&searched) {
                for nr in (0..1024u32)
                    .chain((0..600).map(|n| n | 0x4000_0000))
                    .chain([u32::MAX])
                {
                    for a in [audit, 0x4000_0003, 0] {
                        for v in values {
                            let args = [v, v ^ 1, v, v, v, v];
                            assert_eq!(
                                run_bpf(l, nr, a, args),
                                run_bpf(s, nr, a, args),
                                "nr {nr} arch {a:#x} arg {v:#x}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 100_000);
        // And it is what makes the allow-list short.
        let (linear, searched) = (compile_with(&base, false), compile(&base).unwrap());
        assert!(
            searched[0].len() * 2 < linear[0].len(),
            "{} vs {}",
            searched[0].len(),
            linear[0].len()
        );
    }

    /// [`compile`] with or without the search (the test's reference).
    fn compile_with(policy: &Policy, search: bool) -> Vec<seccompiler::BpfProgram> {
        let arch: seccompiler::TargetArch = std::env::consts::ARCH.try_into().unwrap();
        let mut by_action: BTreeMap<Action, (Chains, BTreeSet<i64>)> = BTreeMap::new();
        for r in &policy.rules {
            let Ok(nr) = syscalls::Sysno::from_str(&r.name) else {
                continue;
            };
            let (chains, always) = by_action.entry(r.action).or_default();
            if r.args.is_empty() {
                always.insert(nr.id() as i64);
            } else {
                let conds = r.args.iter().map(|a| condition(a).unwrap()).collect();
                chains
                    .entry(nr.id() as i64)
                    .or_default()
                    .push(seccompiler::SeccompRule::new(conds).unwrap());
            }
        }
        let mut order: Vec<Action> = by_action.keys().copied().collect();
        order.sort_by_key(|a| *a != Action::Allow);
        let to = |a: Action| match a {
            Action::Allow => seccompiler::SeccompAction::Allow,
            Action::Errno(n) => seccompiler::SeccompAction::Errno(n),
        };
        order
            .into_iter()
            .filter(|a| !(*a == Action::Allow && policy.default == Action::Allow))
            .map(|a| {
                let (chains, always) = by_action.remove(&a).unwrap();
                program(
                    chains,
                    &always,
                    to(policy.default_for(a)),
                    to(a),
                    arch,
                    search,
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(parse_kernel("6.18.44-fc-v669\n"), Some((6, 18)));
        assert_eq!(parse_kernel("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel("x"), None);
    }
}
