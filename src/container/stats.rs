//! `keel stats` and `keel top`: what a running container uses. Figures come from its
//! cgroups (`keel/<id>`: memory usage and limit, pids, CPU time, v1 or v2 file names)
//! and, for whatever a cgroup does not say (a container without limits has no memory
//! cgroup on a v1 host), from its processes in /proc. Parsing is pure and table-tested.
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One sample of a container's use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// CPU time used so far.
    pub cpu: Duration,
    pub memory: u64,
    pub memory_limit: Option<u64>,
    pub pids: u64,
}

/// CPU percent of one core between two samples `wall` apart (docker's figure).
pub fn cpu_percent(a: &Sample, b: &Sample, wall: Duration) -> f64 {
    if wall.is_zero() {
        return 0.0;
    }
    b.cpu.saturating_sub(a.cpu).as_secs_f64() / wall.as_secs_f64() * 100.0
}

/// A cgroup file's number (`max` and unreadable files are `None`).
fn number(text: Option<String>) -> Option<u64> {
    text?.trim().parse().ok()
}

/// `usage_usec` of a v2 `cpu.stat`.
fn usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// What the cgroup directories `dirs` say; absent files leave fields `None`.
#[derive(Debug, Default, PartialEq)]
struct CgroupFigures {
    cpu: Option<Duration>,
    memory: Option<u64>,
    limit: Option<u64>,
    pids: Option<u64>,
}

fn from_cgroups(dirs: &[PathBuf], read: impl Fn(&Path) -> Option<String>) -> CgroupFigures {
    let mut f = CgroupFigures::default();
    for d in dirs {
        let r = |name: &str| read(&d.join(name));
        f.memory = f
            .memory
            .or(number(r("memory.current")))
            .or(number(r("memory.usage_in_bytes")));
        // v1's "no limit" is a huge number, not "max".
        f.limit = f
            .limit
            .or(number(r("memory.max")))
            .or(number(r("memory.limit_in_bytes")).filter(|l| *l < (1 << 60)));
        f.pids = f.pids.or(number(r("pids.current")));
        f.cpu = f
            .cpu
            .or(r("cpu.stat")
                .as_deref()
                .and_then(usage_usec)
                .map(Duration::from_micros))
            .or(number(r("cpuacct.usage")).map(Duration::from_nanos));
    }
    f
}

/// utime + stime (clock ticks) of a `/proc/PID/stat` line.
fn proc_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Resident pages of a `/proc/PID/statm` line.
fn resident_pages(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// Where the cgroup figures of container `id` come from: root's `keel/<id>` in every
/// hierarchy; rootless, the cgroup v2 directory keel made for it in a delegated subtree
/// (`keel-<id>`, found from its processes `pids`), or why there is none.
pub fn cgroup_dirs(id: &str, pids: &[i32]) -> Result<Vec<PathBuf>, String> {
    if !crate::sys::userns::rootless() {
        return Ok(crate::runtime::reclaim::cgroups_of(id));
    }
    let layout = crate::runtime::cgroup_layout();
    let texts: Vec<String> = pids
        .iter()
        .filter_map(|p| read(Path::new(&format!("/proc/{p}/cgroup"))))
        .collect();
    rootless_cgroup(&layout, &texts, id).map(|d| vec![d])
}

/// Pure part of [`cgroup_dirs`] rootless: the first of the container's processes (their
/// `/proc/PID/cgroup` texts) in a cgroup v2 directory named `keel-<id>` on a unified host.
/// Rootless keel makes that directory only for `--memory`, `--pids-limit` or `--cpus`, in
/// a delegated subtree; the error says why there is none.
pub fn rootless_cgroup(
    layout: &crate::runtime::cgroup::CgroupLayout,
    proc_cgroups: &[String],
    id: &str,
) -> Result<PathBuf, String> {
    let v2 = crate::runtime::cgroup::unified_mount(layout)
        .map_err(|why| format!("no delegated cgroup v2 subtree can exist: {why}"))?;
    let leaf = format!("keel-{id}");
    proc_cgroups
        .iter()
        .filter_map(|t| t.lines().find_map(|l| l.strip_prefix("0::")))
        .map(|rel| v2.join(rel.trim().trim_start_matches('/')))
        .find(|d| d.file_name().is_some_and(|n| n == leaf.as_str()))
        .ok_or_else(|| {
            "rootless keel makes a cgroup only for --memory, --pids-limit or --cpus, in a delegated cgroup v2 subtree, and this container was started without them".to_string()
        })
}

/// A sample of container `id`, whose processes are `pids` (its rootfs's, see
/// [`crate::runtime::reclaim::rooted_in`]), from its cgroup directories `dirs`
/// ([`cgroup_dirs`]) and, for what they do not say, its processes.
pub fn sample(dirs: &[PathBuf], pids: &[i32]) -> Sample {
    let cg = from_cgroups(dirs, read);
    let (mut ticks, mut pages) = (0u64, 0u64);
    for p in pids {
        ticks += read(Path::new(&format!("/proc/{p}/stat")))
            .as_deref()
            .and_then(proc_ticks)
            .unwrap_or(0);
        pages += read(Path::new(&format!("/proc/{p}/statm")))
            .as_deref()
            .and_then(resident_pages)
            .unwrap_or(0);
    }
    let hz = crate::sys::proc::clock_ticks_per_second().max(1);
    Sample {
        cpu: cg.cpu.unwrap_or(Duration::from_millis(ticks * 1000 / hz)),
        memory: cg.memory.unwrap_or(pages * crate::sys::proc::page_size()),
        memory_limit: cg.limit,
        pids: cg.pids.unwrap_or(pids.len() as u64),
    }
}

/// One `keel top` row of process `pid`: PID, PPID, time and command line.
pub fn process_row(pid: i32) -> Option<[String; 4]> {
    let stat = read(Path::new(&format!("/proc/{pid}/stat")))?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let ppid = rest.split_whitespace().nth(1)?.to_string();
    let hz = crate::sys::proc::clock_ticks_per_second().max(1);
    let secs = proc_ticks(&stat)? / hz;
    let time = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    let cmd = read(Path::new(&format!("/proc/{pid}/cmdline")))?
        .split('\0')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    Some([pid.to_string(), ppid, time, cmd])
}

/// `12.5MiB`-style sizes, as docker prints them.
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.2}{}", units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn cgroup_files_v1_and_v2() {
        let files: HashMap<&str, &str> = [
            ("/v2/memory.current", "4096\n"),
            ("/v2/memory.max", "max\n"),
            ("/v2/pids.current", "3\n"),
            ("/v2/cpu.stat", "usage_usec 1500\nuser_usec 1000\n"),
            ("/v1m/memory.usage_in_bytes", "8192\n"),
            ("/v1m/memory.limit_in_bytes", "9223372036854771712\n"),
            ("/v1c/cpuacct.usage", "2000000\n"),
        ]
        .into();
        let read = |p: &Path| files.get(p.to_str().unwrap()).map(|s| s.to_string());
        let v2 = from_cgroups(&["/v2".into()], read);
        assert_eq!(
            v2,
            CgroupFigures {
                cpu: Some(Duration::from_micros(1500)),
                memory: Some(4096),
                limit: None,
                pids: Some(3)
            }
        );
        let v1 = from_cgroups(&["/v1m".into(), "/v1c".into()], read);
        assert_eq!(v1.memory, Some(8192));
        assert_eq!(v1.limit, None);
        assert_eq!(v1.cpu, Some(Duration::from_millis(2)));
        assert_eq!(from_cgroups(&[], read), CgroupFigures::default());
    }

    #[test]
    fn rootless_figures_come_from_the_containers_keel_cgroup() {
        use crate::runtime::cgroup::CgroupLayout;
        let unified = CgroupLayout {
            v2: Some("/sys/fs/cgroup".into()),
            v2_controllers: vec!["cpu".into(), "memory".into(), "pids".into()],
            ..Default::default()
        };
        let scope = "/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope";
        let texts = [format!("0::{scope}\n"), format!("0::{scope}/keel-abc\n")];
        assert_eq!(
            rootless_cgroup(&unified, &texts, "abc").unwrap(),
            Path::new("/sys/fs/cgroup")
                .join(&scope[1..])
                .join("keel-abc")
        );
        // Another container's cgroup, or none of keel's: started without limits.
        let err = rootless_cgroup(&unified, &texts, "other").unwrap_err();
        assert!(err.contains("without them"), "{err}");
        assert!(rootless_cgroup(&unified, &[], "abc").is_err());
        let mut hybrid = unified.clone();
        hybrid
            .v1
            .insert("memory".into(), "/sys/fs/cgroup/memory".into());
        let err = rootless_cgroup(&hybrid, &texts, "abc").unwrap_err();
        assert!(err.contains("this host is hybrid"), "{err}");
        let none = CgroupLayout::default();
        assert!(rootless_cgroup(&none, &texts, "abc")
            .unwrap_err()
            .contains("no cgroup2 mount"));
    }

    #[test]
    fn proc_lines_and_figures() {
        let stat = "42 (sh (x)) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 99";
        assert_eq!(proc_ticks(stat), Some(12));
        assert_eq!(resident_pages("100 25 10 1 0 20 0"), Some(25));
        let a = Sample::default();
        let b = Sample {
            cpu: Duration::from_millis(500),
            ..Sample::default()
        };
        assert_eq!(cpu_percent(&a, &b, Duration::from_secs(1)), 50.0);
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(3 << 20), "3.00MiB");
    }
}
