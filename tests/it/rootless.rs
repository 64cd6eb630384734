//! Rootless keel (issue 15): the root test process makes ordinary users with subordinate
//! id ranges (idempotently: `useradd`, `usermod --add-subuids`) and runs every keel
//! command of these tests as one of them (`setpriv --reuid --regid --init-groups`, with
//! HOME and XDG_* of its own and a copy of the keel binary it can execute). What they
//! show: the README demo with a store the user owns, the same image digest as root for
//! a base with files of uid 0, 100 and 65534, the four port flavours, make glue and
//! `$(KEEL_IN)` writing user-owned files, nothing left after `run --rm`, users kept
//! apart, seccomp and capabilities as for root, and limits refused without delegation.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::{assert_success, have, is_root, run_ok, Keel};
use crate::require;
use crate::run::{free_port, http_get};

/// A test user: its name, ids and its subordinate uid ranges (start, count), in the
/// order keel maps them (container uid 1 is the first range's start).
#[derive(Clone)]
struct User {
    name: &'static str,
    uid: u32,
    gid: u32,
    subuids: Vec<(u32, u32)>,
}

impl User {
    /// True for a host uid this user's namespace maps (itself or a subordinate id).
    fn owns_uid(&self, uid: u32) -> bool {
        uid == self.uid || self.subuids.iter().any(|&(s, n)| (s..s + n).contains(&uid))
    }

    /// The host uid of container uid `n` (> 0) as keel maps it.
    fn host_uid_of(&self, n: u32) -> u32 {
        let mut left = n - 1;
        for &(s, count) in &self.subuids {
            if left < count {
                return s + left;
            }
            left -= count;
        }
        panic!("uid {n} is not mapped for {}", self.name)
    }
}

/// The `(start, count)` ranges of `name` in an /etc/subuid-style file.
fn ranges(file: &str, name: &str) -> Vec<(u32, u32)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            (f.next()? == name).then_some(())?;
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect()
}

/// Tests run in parallel: one useradd/usermod at a time (they lock /etc/subuid).
static USERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Makes (once) the user `name` with a subordinate uid/gid range: useradd gives one
/// where login.defs says so; otherwise the range starting at `start` is added.
fn user(name: &'static str, start: u32) -> User {
    let _once = USERS.lock().unwrap_or_else(|e| e.into_inner());
    let exists = Command::new("id")
        .arg(name)
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        run_ok(Command::new("useradd").args(["-M", "-U", "-s", "/bin/sh", name]));
    }
    let range = format!("{start}-{}", start + 65535);
    for (file, flag) in [
        ("/etc/subuid", "--add-subuids"),
        ("/etc/subgid", "--add-subgids"),
    ] {
        if ranges(file, name).is_empty() {
            run_ok(Command::new("usermod").args([flag, &range, name]));
        }
    }
    let id = |flag: &str| -> u32 {
        run_ok(Command::new("id").args([flag, name]))
            .trim()
            .parse()
            .unwrap()
    };
    User {
        name,
        uid: id("-u"),
        gid: id("-g"),
        subuids: ranges("/etc/subuid", name),
    }
}

// Ranges far above what useradd hands out itself, for hosts where it hands out none.
fn user_a() -> User {
    user("keel-rootless-a", 4_000_000)
}

fn user_b() -> User {
    user("keel-rootless-b", 5_000_000)
}

/// Everything a rootless test needs: a user, a scratch directory the user can reach
/// (its HOME, XDG dirs and a copy of keel), removed on drop with whatever keel left.
struct Rootless {
    user: User,
    dir: tempfile::TempDir,
}

impl Rootless {
    fn new(user: User) -> Rootless {
        let dir = tempfile::Builder::new()
            .prefix("keel-rootless-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let r = Rootless { user, dir };
        for (d, mode) in [("home", 0o755), ("run", 0o700), ("bin", 0o755)] {
            std::fs::create_dir(r.path(d)).unwrap();
            std::fs::set_permissions(r.path(d), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        // cargo's target dir may not be reachable for other users: keel goes along.
        std::fs::copy(env!("CARGO_BIN_EXE_keel"), r.keel()).unwrap();
        std::fs::set_permissions(r.keel(), std::fs::Permissions::from_mode(0o755)).unwrap();
        r.give(&r.path("home"));
        r.give(&r.path("run"));
        r
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn keel(&self) -> PathBuf {
        self.path("bin/keel")
    }

    /// The user's default store (`$XDG_DATA_HOME/keel`).
    fn root(&self) -> PathBuf {
        self.path("home/.local/share/keel")
    }

    /// Hands `p` (recursively) to the user, readable by it.
    fn give(&self, p: &Path) {
        let u = &self.user;
        run_ok(
            Command::new("chown")
                .arg("-R")
                .arg(format!("{}:{}", u.uid, u.gid))
                .arg(p),
        );
        run_ok(Command::new("chmod").arg("-R").arg("u+rwX").arg(p));
    }

    /// `program args…` as the user, with its own HOME and XDG dirs, in HOME.
    fn as_user(&self, program: &Path) -> Command {
        let u = &self.user;
        let mut c = Command::new("setpriv");
        c.args(["--reuid", &u.uid.to_string(), "--regid", &u.gid.to_string()])
            .arg("--init-groups")
            .arg("--")
            .arg(program)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", self.path("home"))
            .env("USER", u.name)
            .env("XDG_DATA_HOME", self.path("home/.local/share"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .current_dir(self.path("home"));
        c
    }

    /// `keel --progress plain args…` as the user.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.as_user(&self.keel());
        c.args(["--progress", "plain"]).args(args);
        c
    }

    fn output(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert_success(&out, (self.user.name, args));
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            !out.status.success(),
            "keel {args:?} as {} succeeded but should fail: {}",
            self.user.name,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    fn with_busybox(user: User) -> Rootless {
        let r = Rootless::new(user);
        r.ok(&["bootstrap", "busybox", "bb"]);
        r
    }
}

impl Drop for Rootless {
    fn drop(&mut self) {
        if let Ok(out) = self.cmd(&["ps", "-a", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.cmd(&["rm", "-f", id]).output();
            }
        }
    }
}

/// Skips (fails under CI) unless the host can run rootless keel: root to make users,
/// the shadow tools, setpriv and unprivileged user namespaces.
macro_rules! require_rootless {
    () => {
        require!(
            is_root(),
            "the tests create users and drop to them, which needs root"
        );
        require!(
            have("useradd") && have("usermod") && have("newuidmap") && have("newgidmap"),
            "useradd, usermod, newuidmap and newgidmap are needed (apt-get install passwd uidmap)"
        );
        require!(have("setpriv"), "setpriv is needed (util-linux)");
    };
}

/// Every path below `dir` (itself included) whose owner `pred` rejects.
fn owners_not(dir: &Path, pred: impl Fn(u32) -> bool) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| !pred(e.metadata().map(|m| m.uid()).unwrap_or(0)))
        .map(|e| e.path().display().to_string())
        .collect()
}

/// The README demo as an ordinary user: bootstrap, build examples/hello, run it; the
/// store is the user's, private (0700), and `keel info` says rootless and overlay.
#[test]
fn rootless_readme_demo_passes_and_the_store_is_the_users() {
    require_rootless!();
    let r = Rootless::new(user_a());
    r.ok(&["bootstrap", "busybox", "busybox"]);
    let ctx = r.path("hello");
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello"))
            .arg(&ctx),
    );
    r.give(&ctx);
    r.ok(&["build", "-t", "hello", ctx.to_str().unwrap()]);
    let out = r.ok(&["run", "--rm", "hello"]);
    assert!(out.contains("Hello from keel!"), "{out}");
    // The container's snapshot goes in a child after `run` returned: walk the store once
    // it is gone (an entry removed during the walk has no owner to read).
    assert!(
        crate::common::wait_removals(&r.root()),
        "a snapshot's removal did not end"
    );
    let u = &r.user;
    let m = std::fs::metadata(r.root()).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (u.uid, 0o700), "store root");
    // Everything keel wrote is the user's; image files owned by other ids are the
    // user's subordinate ids, never root's or another user's.
    assert_eq!(
        owners_not(&r.root().join("images"), |id| id == u.uid),
        Vec::<String>::new()
    );
    assert_eq!(
        owners_not(&r.root(), |id| u.owns_uid(id)),
        Vec::<String>::new()
    );
    let info = r.ok(&["info"]);
    assert!(
        info.contains(&format!("root:          {}", r.root().display())),
        "{info}"
    );
    assert!(
        info.contains(&format!("rootless:      yes: uid 0 is host uid {}", u.uid)),
        "{info}"
    );
    assert!(info.contains("storage:       overlay"), "{info}");
}

/// A one-layer base whose files belong to uid/gid 0, 100 and 65534 (busybox for RUN).
fn many_owner_layer(path: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add =
        |name: &str, kind: tar::EntryType, mode: u32, id: u64, body: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(id);
            h.set_gid(id);
            h.set_mtime(1_700_000_000);
            h.set_size(body.len() as u64);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_path(name).unwrap();
            h.set_cksum();
            b.append(&h, body).unwrap();
        };
    let dir = tar::EntryType::Directory;
    for (d, id) in [
        ("bin", 0),
        ("etc", 0),
        ("tmp", 0),
        ("home", 0),
        ("home/u100", 100),
        ("var", 0),
        ("var/nobody", 65534),
    ] {
        add(
            d,
            dir,
            if d == "tmp" { 0o1777 } else { 0o755 },
            id,
            b"",
            None,
        );
    }
    add(
        "bin/busybox",
        tar::EntryType::Regular,
        0o755,
        0,
        &std::fs::read("/bin/busybox").unwrap(),
        None,
    );
    for a in ["sh", "mkdir", "touch", "chown", "ls"] {
        add(
            &format!("bin/{a}"),
            tar::EntryType::Symlink,
            0o777,
            0,
            b"",
            Some("busybox"),
        );
    }
    add("etc/passwd", tar::EntryType::Regular, 0o644, 0, b"root:x:0:0::/:/bin/sh\nu:x:100:100::/home/u100:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n", None);
    add(
        "home/u100/file",
        tar::EntryType::Regular,
        0o600,
        100,
        b"mine\n",
        None,
    );
    add(
        "var/nobody/file",
        tar::EntryType::Regular,
        0o640,
        65534,
        b"nobody's\n",
        None,
    );
    b.finish().unwrap();
}

const MANY_OWNERS_DOCKERFILE: &str = "FROM base
RUN mkdir /out && touch /out/root /out/u100 /out/nobody && chown 100:100 /out/u100 && chown 65534:65534 /out/nobody && echo more >> /home/u100/file
COPY --chown=100:100 f /home/u100/f
";

/// A build on a base with files of uid 0, 100 and 65534 commits the same layers as
/// root's build of the same Dockerfile and context: the same image digest.
#[test]
fn rootless_build_on_a_many_owner_base_matches_roots_digest() {
    require_rootless!();
    let r = Rootless::new(user_a());
    let work = r.path("work");
    std::fs::create_dir_all(work.join("ctx")).unwrap();
    many_owner_layer(&work.join("base.tar"));
    std::fs::write(work.join("ctx/Dockerfile"), MANY_OWNERS_DOCKERFILE).unwrap();
    std::fs::write(work.join("ctx/f"), "context file\n").unwrap();
    r.give(&work);
    let (tar, ctx) = (work.join("base.tar"), work.join("ctx"));
    let (tar, ctx) = (tar.to_str().unwrap(), ctx.to_str().unwrap());
    // Root's reference, in a root store of its own.
    let k = Keel::new();
    k.ok(&["import", tar, "base"]);
    // `keel import` stamps the time: the user loads root's very base image.
    let archive = work.join("base-image.tar");
    k.ok(&["save", "base", "-o", archive.to_str().unwrap()]);
    r.give(&archive);
    let root_iid = k.path("iid");
    k.ok(&[
        "build",
        "-t",
        "many",
        "--iidfile",
        root_iid.to_str().unwrap(),
        ctx,
    ]);
    r.ok(&["load", "-i", archive.to_str().unwrap()]);
    let iid = r.path("home/iid");
    r.ok(&[
        "build",
        "-t",
        "many",
        "--iidfile",
        iid.to_str().unwrap(),
        ctx,
    ]);
    let (want, got) = (
        std::fs::read_to_string(root_iid).unwrap(),
        std::fs::read_to_string(iid).unwrap(),
    );
    assert_eq!(got, want, "rootless and root builds differ");
    // The owners as the container sees them.
    let out = r.ok(&[
        "run",
        "--rm",
        "many",
        "sh",
        "-c",
        "ls -ln /out /home/u100 /var/nobody | grep -v total",
    ]);
    let owners: Vec<(&str, &str)> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 9)
        .map(|f| (f[2], f[3]))
        .collect();
    for want in [("0", "0"), ("100", "100"), ("65534", "65534")] {
        assert!(owners.contains(&want), "no file of {want:?}: {out}");
    }
    // The host sees the user's subordinate ids for them.
    let u = &r.user;
    let layers = r.root().join("storage/layers");
    let subs: Vec<u32> = walkdir::WalkDir::new(&layers)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.metadata().unwrap().uid())
        .filter(|&id| id != u.uid)
        .collect();
    assert!(
        subs.contains(&u.host_uid_of(100)) && subs.contains(&u.host_uid_of(65534)),
        "{subs:?}"
    );
}

/// STATIC1->STATIC2, STATIC->STATIC, RANDOM->STATIC and RANDOM->RANDOM answer HTTP from
/// the host through the userland proxy; a port below ip_unprivileged_port_start is
/// refused with a message naming the sysctl.
#[test]
fn rootless_four_port_flavours_answer_http_from_the_host() {
    require_rootless!();
    let r = Rootless::with_busybox(user_a());
    let (p1, p2) = (free_port(), free_port());
    let script = format!(
        "mkdir -p /w && echo rootless-ok > /w/index.html && httpd -p 8080 -h /w && httpd -p {p2} -h /w && httpd -p 8081 -h /w && exec httpd -f -p $PORT -h /w"
    );
    let (s1, s2) = (format!("{p1}:8080"), format!("{p2}:{p2}"));
    r.ok(&[
        "run", "-d", "--name", "web", "-p", &s1, "-p", &s2, "-p", "8081", "-p", "0:0", "bb", "sh",
        "-c", &script,
    ]);
    let ports: serde_json::Value =
        serde_json::from_str(&r.ok(&["port", "web", "--format", "json"])).unwrap();
    let ports = ports.as_array().unwrap();
    assert_eq!(ports.len(), 4, "{ports:?}");
    for p in ports {
        let host = p["host_port"].as_u64().unwrap() as u16;
        let body = http_get(host);
        assert!(body.contains("rootless-ok"), "{p}: {body}");
    }
    let host_of = |c: &str| {
        ports
            .iter()
            .find(|p| p["container"] == c)
            .map(|p| p["host_port"].as_u64().unwrap() as u16)
    };
    assert_eq!(host_of("8080/tcp"), Some(p1));
    assert_eq!(host_of(&format!("{p2}/tcp")), Some(p2));
    r.ok(&["rm", "-f", "web"]);
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .map(|s| s.trim().parse().unwrap_or(1024))
        .unwrap_or(1024);
    if start > 80 {
        let err = r.fails(&["run", "--rm", "-p", "80:80", "bb", "true"]);
        assert!(
            err.contains("ip_unprivileged_port_start") && err.contains("-p 8080:80"),
            "{err}"
        );
    }
}

/// `keel integrate make` glue and `$(KEEL_IN)` work as the user, and files written in
/// containers — by `$(KEEL_IN)`, through a `-v` bind and by `keel exec` — are the
/// user's on the host.
#[test]
fn rootless_make_glue_keel_in_binds_and_exec_write_user_owned_files() {
    require_rootless!();
    require!(have("make"), "make is needed");
    let r = Rootless::with_busybox(user_a());
    let u = &r.user;
    let dir = r.path("proj");
    std::fs::create_dir(&dir).unwrap();
    for (f, body) in [
        ("keel.toml", "[[image]]\nname = \"app\"\ncontext = \".\"\n\n[env.dev]\nimage = \"bb\"\n"),
        ("Dockerfile", "FROM bb\nCOPY hello /hello\n"),
        ("hello", "hi\n"),
        ("Makefile", "include keel.mk\ncheck: images\n\t$(KEEL_IN) sh -c 'echo from-keel-in > out.txt; id -u >> out.txt'\n"),
    ] {
        std::fs::write(dir.join(f), body).unwrap();
    }
    r.give(&dir);
    let d = dir.to_str().unwrap();
    r.ok(&[
        "integrate",
        "make",
        "-f",
        &format!("{d}/keel.toml"),
        "--write",
        d,
    ]);
    let mut make = r.as_user(Path::new("/usr/bin/make"));
    make.current_dir(&dir)
        .arg(format!("KEEL={} --progress plain", r.keel().display()))
        .arg("check");
    let out = make.output().unwrap();
    assert_success(&out, "make check (as the user)");
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt")).unwrap(),
        "from-keel-in\n0\n"
    );
    assert_eq!(
        owners_not(&dir, |id| id == u.uid),
        Vec::<String>::new(),
        "not the user's"
    );
    let bind = format!("{d}:/w");
    r.ok(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "bb",
        "sh",
        "-c",
        "echo run > /w/from-run && mkdir /w/sub && touch /w/sub/f",
    ]);
    r.ok(&[
        "run", "-d", "--name", "box", "-v", &bind, "bb", "sleep", "600",
    ]);
    r.ok(&["exec", "box", "sh", "-c", "echo exec > /w/from-exec"]);
    r.ok(&["rm", "-f", "box"]);
    for f in ["from-run", "sub", "sub/f", "from-exec"] {
        let m = std::fs::metadata(dir.join(f)).unwrap();
        assert_eq!((m.uid(), m.gid()), (u.uid, u.gid), "{f}");
    }
}

/// Processes whose real uid is one of `user`'s (itself or its subordinate ids).
fn processes_of(user: &User) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let uid: u32 = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            user.owns_uid(uid).then(|| {
                format!(
                    "{} {}",
                    e.file_name().to_string_lossy(),
                    status.lines().next().unwrap_or("")
                )
            })
        })
        .collect()
}

/// `keel run --rm` as the user leaves no process, no mount and no container state or
/// snapshot behind (the mounts lived in keel's own mount namespace).
#[test]
fn rootless_run_rm_leaves_no_processes_mounts_or_state() {
    require_rootless!();
    // A user of its own: the other tests run keel as users a and b in parallel.
    let r = Rootless::with_busybox(user("keel-rootless-c", 8_000_000));
    for args in [
        &["run", "--rm", "bb", "true"][..],
        &[
            "run",
            "--rm",
            "-p",
            "0:0",
            "bb",
            "sh",
            "-c",
            "echo $PORT; sleep 1 & sleep 0.5",
        ],
    ] {
        r.ok(args);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_of(&r.user).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        processes_of(&r.user),
        Vec::<String>::new(),
        "processes left"
    );
    let root = r.root().display().to_string();
    let mounts: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("mountinfo")).ok())
        .flat_map(|t| {
            t.lines()
                .filter(|l| l.contains(&root))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(mounts, Vec::<String>::new(), "mounts left");
    let entries = |p: PathBuf| -> Vec<String> {
        std::fs::read_dir(&p)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    // `.lock` guards the directory itself, as in root's store; `.spare`
                    // is the empty directory the next record takes (checked below).
                    .filter(|n| n != ".lock" && n != ".spare")
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        entries(r.root().join("containers")),
        Vec::<String>::new(),
        "container records left"
    );
    assert_eq!(
        entries(r.root().join("containers/.spare")),
        Vec::<String>::new(),
        "the spare record directory is not empty"
    );
    assert!(
        crate::common::wait_removals(&r.root()),
        "a snapshot's removal did not end"
    );
    assert_eq!(
        entries(r.root().join("storage/snapshots")),
        Vec::<String>::new(),
        "snapshots left"
    );
    let runtime: Vec<String> = entries(r.path("run/keel"))
        .into_iter()
        .filter(|e| e != "runc")
        .collect();
    assert_eq!(runtime, Vec::<String>::new(), "runtime state left");
}

/// Two users on one host never see each other's images or containers, and neither can
/// read the other's store.
#[test]
fn rootless_users_never_see_each_others_images() {
    require_rootless!();
    let a = Rootless::new(user_a());
    let b = Rootless::new(user_b());
    a.ok(&["bootstrap", "busybox", "secret-a"]);
    a.ok(&["run", "-d", "--name", "a-box", "secret-a", "sleep", "600"]);
    b.ok(&["bootstrap", "busybox", "mine-b"]);
    let images = b.ok(&["images"]);
    assert!(
        images.contains("mine-b") && !images.contains("secret-a"),
        "{images}"
    );
    assert!(!b.ok(&["ps", "-a"]).contains("a-box"));
    let err = b.fails(&["run", "--rm", "--pull", "never", "secret-a", "true"]);
    assert!(err.contains("secret-a"), "{err}");
    // Pointing at the other's store does not help: it is private to its owner.
    let a_root = a.root().display().to_string();
    let err = b.fails(&["--root", &a_root, "images"]);
    assert!(err.to_lowercase().contains("permission denied"), "{err}");
    assert!(!a.ok(&["images"]).contains("mine-b"));
}

/// seccomp, no_new_privs and the capability bounding set hold rootless exactly as for
/// root: `unshare -U` is refused, and CapBnd equals root's.
#[test]
fn rootless_seccomp_and_capabilities_match_root() {
    require_rootless!();
    let r = Rootless::with_busybox(user_a());
    let script = "unshare -U true && echo userns-$((6*7)); grep -E '^(CapBnd|CapInh|Seccomp|NoNewPrivs):' /proc/self/status";
    let out = r.ok(&["run", "--rm", "bb", "sh", "-c", script]);
    assert!(
        !out.contains("userns-42"),
        "unshare -U worked rootless: {out}"
    );
    for want in ["CapInh:\t0000000000000000", "Seccomp:\t2", "NoNewPrivs:\t1"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let root_out = k.ok(&["run", "--rm", "bb", "sh", "-c", script]);
    let bnd = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("CapBnd:"))
            .map(str::to_string)
    };
    assert_eq!(bnd(&out), bnd(&root_out), "bounding sets differ");
    assert!(bnd(&out).is_some());
}

/// `--memory` as the user: applied in a delegated cgroup v2 subtree, or refused with the
/// reason — on a hybrid host (v1 controllers) it names that — never silently ignored.
#[test]
fn rootless_limits_fail_clearly_without_a_delegated_cgroup() {
    require_rootless!();
    let r = Rootless::with_busybox(user_a());
    let out = r.output(&[
        "run",
        "--rm",
        "-m",
        "64m",
        "bb",
        "cat",
        "/sys/fs/cgroup/memory.max",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "67108864",
            "{err}"
        );
        return;
    }
    assert!(
        err.contains("--memory needs a cgroup v2 subtree delegated to this user"),
        "{err}"
    );
    let hybrid = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(" - cgroup "));
    if hybrid {
        assert!(err.contains("hybrid"), "{err}");
    }
}

/// A detached container's whole lifecycle as the user: logs, exec, top, stop, start (its
/// rootfs mounted again by the starting keel), restart, wait, rm; `keel cp` into it
/// running and stopped.
#[test]
fn rootless_detached_lifecycle_works_as_for_root() {
    require_rootless!();
    let r = Rootless::with_busybox(user_a());
    r.ok(&[
        "run",
        "-d",
        "--name",
        "lc",
        "bb",
        "sh",
        "-c",
        "echo started; exec sleep 600",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !r.ok(&["logs", "lc"]).contains("started") {
        assert!(Instant::now() < deadline, "no log line");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        r.ok(&["exec", "lc", "sh", "-c", "echo kept > /kept; id -u"]),
        "0\n"
    );
    let top = r.ok(&["top", "lc"]);
    assert!(top.contains("sleep 600"), "{top}");
    let file = r.path("home/in.txt");
    std::fs::write(&file, "copied\n").unwrap();
    r.give(&file);
    r.ok(&["cp", file.to_str().unwrap(), "lc:/in.txt"]);
    r.ok(&["stop", "lc"]);
    r.ok(&["cp", file.to_str().unwrap(), "lc:/in2.txt"]);
    r.ok(&["start", "lc"]);
    assert_eq!(
        r.ok(&["exec", "lc", "cat", "/kept", "/in.txt", "/in2.txt"]),
        "kept\ncopied\ncopied\n"
    );
    r.ok(&["restart", "lc"]);
    assert_eq!(r.ok(&["exec", "lc", "cat", "/kept"]), "kept\n");
    r.ok(&["kill", "lc"]);
    r.ok(&["wait", "lc"]);
    r.ok(&["rm", "lc"]);
    assert!(!r.ok(&["ps", "-a"]).contains("lc"));
}

/// A user without a subordinate range still gets keel, with a single-id map and a
/// warning that names the files to edit; an image of root-owned files runs.
#[test]
fn rootless_without_a_subordinate_range_maps_only_the_user_and_says_so() {
    require_rootless!();
    let name = "keel-rootless-nosub";
    let mut u = user(name, 7_000_000);
    let _edit = USERS.lock().unwrap_or_else(|e| e.into_inner());
    for (file, flag) in [
        ("/etc/subuid", "--del-subuids"),
        ("/etc/subgid", "--del-subgids"),
    ] {
        for (s, n) in ranges(file, name) {
            run_ok(Command::new("usermod").args([flag, &format!("{s}-{}", s + n - 1), name]));
        }
    }
    drop(_edit);
    u.subuids.clear();
    let r = Rootless::new(u);
    let out = r.output(&["bootstrap", "busybox", "bb"]);
    assert_success(&out, "bootstrap without a range");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "no subordinate id range for user {name} in /etc/subuid and /etc/subgid"
        )),
        "{err}"
    );
    let out = r.ok(&["run", "--rm", "bb", "sh", "-c", "cat /proc/self/uid_map"]);
    let map: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(map, ["0", &r.user.uid.to_string(), "1"], "{out}");
    assert!(r.ok(&["info"]).contains("no subordinate ids"));
}

/// The other backends as the user: chroot (host /proc and /sys bound) and runc inside
/// keel's user namespace; files written through a bind are the user's either way, and
/// runc is never handed a limit it would drop.
#[test]
fn rootless_chroot_and_oci_backends_run() {
    require_rootless!();
    require!(have("runc"), "runc is not installed (apt-get install runc)");
    let r = Rootless::with_busybox(user_a());
    let dir = r.path("home/out");
    std::fs::create_dir(&dir).unwrap();
    r.give(&dir);
    let bind = format!("{}:/w", dir.display());
    for b in ["chroot", "oci"] {
        let out = r.ok(&[
            "run",
            "--rm",
            "--isolation",
            b,
            "-v",
            &bind,
            "bb",
            "sh",
            "-c",
            &format!("touch /w/{b}; id -u"),
        ]);
        assert_eq!(out, "0\n", "{b}");
        let m = std::fs::metadata(dir.join(b)).unwrap();
        assert_eq!(m.uid(), r.user.uid, "{b}");
    }
    let err = r.fails(&[
        "run",
        "--rm",
        "--isolation",
        "oci",
        "--pids-limit",
        "20",
        "bb",
        "true",
    ]);
    assert!(
        err.contains("--pids-limit needs a cgroup v2 subtree"),
        "{err}"
    );
}

/// The attacker's side: container root is only the user. A root-owned host directory
/// bound read-write stays unwritable, its file cannot be re-owned, and host root's
/// files show as `nobody` (unmapped), never as the container's root.
#[test]
fn rootless_container_root_cannot_touch_host_roots_files() {
    require_rootless!();
    let r = Rootless::with_busybox(user_a());
    let host = r.path("root-owned");
    std::fs::create_dir(&host).unwrap();
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(host.join("canary"), "host\n").unwrap();
    std::fs::set_permissions(host.join("canary"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let bind = format!("{}:/h", host.display());
    let script = "echo x >> /h/canary; touch /h/new; chown 0:0 /h/canary; rm -f /h/canary; stat -c '%u %U' /h/canary";
    let out = r.output(&["run", "--rm", "-v", &bind, "bb", "sh", "-c", script]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "65534 nobody",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(host.join("canary")).unwrap(),
        "host\n"
    );
    assert!(!host.join("new").exists());
    assert_eq!(std::fs::metadata(host.join("canary")).unwrap().uid(), 0);
}

/// A detached container's lifecycle driven through `ok` (root's keel or the user's):
/// waits for its first log line, then what each exec, stop, start, top and rm printed,
/// and the status `ps -a` gave it after the stop. Container ids are left out.
fn detached_lifecycle(
    ok: &dyn Fn(&[&str]) -> String,
    isolation: &str,
    restart: bool,
) -> Vec<String> {
    ok(&[
        "run",
        "-d",
        "--isolation",
        isolation,
        "--name",
        "d1",
        "bb",
        "sh",
        "-c",
        "echo up; exec sleep 600",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok(&["logs", "d1"]).contains("up") {
        assert!(Instant::now() < deadline, "no log line from d1");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut seen = vec![
        // The container's own tree, never the host's (`/linuxrc` is busybox's).
        ok(&["exec", "d1", "sh", "-c", "test -e /linuxrc && ls /"]),
        ok(&["exec", "d1", "sh", "-c", "echo hi > /f; id -u"]),
        ok(&["exec", "d1", "cat", "/f"]),
        ok(&["exec", "-u", "100", "d1", "id"]),
        ok(&[
            "exec",
            "-e",
            "A=b",
            "-w",
            "/tmp",
            "d1",
            "sh",
            "-c",
            "echo $A; pwd",
        ]),
        ok(&["stop", "-t", "1", "d1"]),
    ];
    let ps = ok(&["ps", "-a"]);
    let line = ps.lines().find(|l| l.ends_with(" d1")).unwrap_or("");
    seen.push(format!("exited 137: {}", line.contains("Exited (137)")));
    if restart {
        // Started again at once (its supervisor may still be winding down), then top.
        seen.push(ok(&["start", "d1"]));
        seen.push(ok(&["exec", "d1", "echo", "again"]));
        // Until its shell has run `exec sleep 600`, the restarted container's process is
        // still `sh -c …` (once missed under load: top ran before that exec).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut top = ok(&["top", "d1"]);
        while !top.contains("sleep 600") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            top = ok(&["top", "d1"]);
        }
        seen.push(format!("top shows sleep: {}", top.contains("sleep 600")));
    }
    seen.push(ok(&["rm", "-f", "d1"]));
    seen.push(format!("listed: {}", ok(&["ps", "-a"]).contains(" d1")));
    seen
}

/// `run -d --isolation oci` + `exec` + `stop` + `start` + `top` + `rm` as the user print
/// what root's do: `keel exec` stays on the host, finds runc's state under the user's
/// runtime directory and runs `runc exec` in the container's user namespace; `top`
/// finds the container below the multi-threaded `runc run`; `start` right after `stop`
/// waits for the old supervisor. Nothing is left in runc's state directory.
#[test]
fn rootless_detached_oci_exec_stop_rm_as_for_root() {
    require_rootless!();
    require!(have("runc"), "runc is not installed (apt-get install runc)");
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let want = detached_lifecycle(&|a: &[&str]| k.ok(a), "oci", true);
    assert_eq!(want[1], "0\n", "root's exec: {want:?}");
    let r = Rootless::with_busybox(user_a());
    let got = detached_lifecycle(&|a: &[&str]| r.ok(a), "oci", true);
    assert_eq!(got, want, "rootless differs from root");
    let left: Vec<_> = std::fs::read_dir(r.path("run/keel/runc"))
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(left, Vec::<std::ffi::OsString>::new(), "runc state left");
}

/// `keel cp` both ways with a running container (`isolation`) through `ok`, with host
/// files under `host`: what the container then sees (names, owners, modes, contents).
fn cp_running(ok: &dyn Fn(&[&str]) -> String, isolation: &str, host: &Path) -> String {
    ok(&[
        "run",
        "-d",
        "--isolation",
        isolation,
        "--name",
        "c1",
        "bb",
        "sleep",
        "600",
    ]);
    // A directory only container uid 100 may enter, with a file only it may read.
    ok(&[
        "exec",
        "c1",
        "sh",
        "-c",
        "mkdir /u && echo s > /u/secret && chown -R 100:100 /u && chmod 700 /u && chmod 600 /u/secret",
    ]);
    let h = |rel: &str| host.join(rel).display().to_string();
    ok(&["cp", &h("in.txt"), "c1:/in.txt"]);
    ok(&["cp", &h("in.txt"), "c1:/u/"]);
    ok(&["cp", &h("dir"), "c1:/d"]);
    ok(&["cp", "c1:/u", &h("out")]);
    let seen = ok(&[
        "exec",
        "c1",
        "sh",
        "-c",
        "stat -c '%n %u %g %a' /in.txt /u /u/* /d /d/*; cat /in.txt /u/in.txt /d/f",
    ]);
    ok(&["rm", "-f", "c1"]);
    seen
}

/// `keel cp` to and from a *running* container as the user, for both the namespaces and
/// the oci backend, gives what root's gives: copied-in files belong to the container's
/// root (the user on the host), files of other container users are read and written
/// through, and copied-out files belong to the caller.
#[test]
fn rootless_cp_with_a_running_container_as_for_root() {
    require_rootless!();
    require!(have("runc"), "runc is not installed (apt-get install runc)");
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let r = Rootless::with_busybox(user_a());
    let fill = |host: &Path| {
        std::fs::create_dir_all(host.join("dir")).unwrap();
        std::fs::write(host.join("in.txt"), "copied\n").unwrap();
        std::fs::write(host.join("dir/f"), "in a dir\n").unwrap();
        std::fs::set_permissions(host.join("dir/f"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
    };
    for isolation in ["namespaces", "oci"] {
        let (root_host, user_host) = (k.path(isolation), r.path(isolation));
        fill(&root_host);
        fill(&user_host);
        r.give(&user_host);
        let want = cp_running(&|a: &[&str]| k.ok(a), isolation, &root_host);
        assert!(want.contains("/u/secret 100 100 600"), "root: {want}");
        let got = cp_running(&|a: &[&str]| r.ok(a), isolation, &user_host);
        assert_eq!(got, want, "{isolation}: rootless differs from root");
        for f in ["out", "out/secret", "out/in.txt"] {
            let m = std::fs::metadata(user_host.join(f)).unwrap();
            assert_eq!(m.uid(), r.user.uid, "{isolation}: {f}");
        }
        assert_eq!(
            std::fs::read_to_string(user_host.join("out/secret")).unwrap(),
            "s\n"
        );
    }
}

/// `keel stats` as the user: with a delegated cgroup v2 subtree a container run with
/// `--memory` shows its cgroup's figures and limit; without one (this hybrid host) the
/// table still has the figures its processes give, and one line says why no cgroup
/// figures exist — never an unexplained gap.
#[test]
fn rootless_stats_shows_cgroup_figures_or_says_why_not() {
    require_rootless!();
    let r = Rootless::with_busybox(user_a());
    let limited = r
        .output(&[
            "run", "-d", "--name", "st", "-m", "64m", "bb", "sleep", "600",
        ])
        .status
        .success();
    if !limited {
        r.ok(&["run", "-d", "--name", "st", "bb", "sleep", "600"]);
    }
    let out = r.output(&["stats", "--no-stream", "st"]);
    assert_success(&out, "keel stats as the user");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let row = stdout.lines().find(|l| l.contains(" st ")).unwrap_or("");
    assert!(!row.is_empty() && !row.ends_with(" 0"), "{stdout}");
    if limited {
        assert!(row.contains("/ 64.00MiB"), "{stdout}");
        assert_eq!(stderr, "", "figures from the delegated cgroup");
        return;
    }
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line saying why: {stderr}");
    assert!(
        lines[0].contains("no cgroup figures for container st: ")
            && lines[0].contains("summed over its processes"),
        "{stderr}"
    );
    let hybrid = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(" - cgroup "));
    if hybrid {
        assert!(lines[0].contains("this host is hybrid"), "{stderr}");
    }
}

/// A copy of the integration sample project (tests/it/integrate.rs) handed to the user,
/// with the `busybox` base image it builds on.
fn user_sample(r: &Rootless) -> PathBuf {
    r.ok(&["bootstrap", "busybox", "busybox"]);
    let dst = r.path("sample");
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/testdata/integrations/sample"
            ))
            .arg(&dst),
    );
    r.give(&dst);
    dst
}

/// Waits for `GET /index.html` on 127.0.0.1:port to answer with the sample's page.
fn wait_sample(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n");
            let mut body = String::new();
            if s.read_to_string(&mut body).is_ok() && body.contains("sample") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "nothing served on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every builtin `keel integrate` glue as the user: each generates; the project glue
/// (make, maven, scons, jenkins, buildbot) pins nothing of root's, and the process
/// managers' (systemd, supervisord, runit) pin the user's store — systemd's as a *user*
/// unit (`systemctl --user`, default.target), since a system unit would run root's keel
/// on the user's store. scons builds once and is then up to date, as for root.
#[test]
fn rootless_every_integrate_glue_generates_and_scons_builds() {
    require_rootless!();
    let r = Rootless::with_busybox(user_a());
    let dir = user_sample(&r);
    let (d, toml) = (
        dir.display().to_string(),
        dir.join("keel.toml").display().to_string(),
    );
    for tool in ["make", "maven", "scons", "jenkins", "buildbot"] {
        let out = r.ok(&["integrate", tool, "-f", &toml, "--write", &d]);
        assert!(!out.trim().is_empty(), "{tool} wrote nothing");
    }
    assert_eq!(
        owners_not(&dir, |id| id == r.user.uid),
        Vec::<String>::new()
    );
    let store = r.root().display().to_string();
    let keel = r.keel().display().to_string();
    for tool in ["systemd", "supervisord", "runit"] {
        let out = r.ok(&["integrate", tool, "--keel", &keel, "--name", "web", "bb"]);
        assert!(out.contains(&store), "{tool} does not pin {store}: {out}");
    }
    let unit = r.ok(&[
        "integrate",
        "systemd",
        "--keel",
        &keel,
        "--name",
        "web",
        "bb",
    ]);
    for want in [
        "cp keel-web.service ~/.config/systemd/user/ && systemctl --user daemon-reload",
        "WantedBy=default.target",
    ] {
        assert!(unit.contains(want), "{want}: {unit}");
    }
    assert!(!unit.contains("multi-user.target") && !unit.contains("network-online"));
    if have("systemd-analyze") {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("keel-web.service"), &unit).unwrap();
        let o = Command::new("systemd-analyze")
            .current_dir(t.path())
            .args(["verify", "--man=no", "./keel-web.service"])
            .output()
            .unwrap();
        assert_success(&o, "systemd-analyze verify (the user unit)");
    }
    if !have("scons") {
        require!(false, "scons is needed (apt-get install scons)");
    }
    let scons = |args: &[&str]| {
        let mut c = r.as_user(Path::new("/usr/bin/scons"));
        c.current_dir(&dir)
            .env("KEEL", format!("{keel} --progress plain"))
            .args(args);
        c.output().unwrap()
    };
    assert_success(&scons(&["-Q"]), "scons as the user");
    assert_eq!(scons(&["-q"]).status.code(), Some(0), "up to date");
    assert!(r.ok(&["images"]).contains("registry.example/app"));
}

/// runit keeps a container serving as the user: runsv (as the user) runs the generated
/// service, a killed container comes back, `sv down` stops it and nothing is left. (A
/// user of its own: `rootless_run_rm_…` counts user c's processes.)
#[test]
fn rootless_runit_glue_keeps_a_container_serving() {
    require_rootless!();
    require!(
        have("runsv") && have("sv"),
        "runit is needed (apt-get install runit)"
    );
    let r = Rootless::with_busybox(user("keel-rootless-d", 9_000_000));
    let dir = user_sample(&r);
    r.ok(&["build", "-t", "base", dir.join("base").to_str().unwrap()]);
    r.ok(&["build", "-t", "sample-web", dir.to_str().unwrap()]);
    let port = free_port();
    let name = format!("runit-{port}");
    let svc = r.path("home/svc");
    let keel = r.keel().display().to_string();
    r.ok(&[
        "integrate",
        "runit",
        "--keel",
        &keel,
        "--name",
        &name,
        "--write",
        svc.to_str().unwrap(),
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "sample-web",
    ]);
    let sdir = svc.join(&name);
    let mut runsv = r.as_user(Path::new("/usr/bin/runsv"));
    let mut runsv = runsv.arg(&sdir).spawn().unwrap();
    wait_sample(port);
    let sv = |args: &[&str]| {
        let mut c = r.as_user(Path::new("/usr/bin/sv"));
        run_ok(c.args(args).arg(&sdir));
    };
    run_ok(Command::new("pkill").args(["-KILL", "-f", "--", &format!("--name {name} ")]));
    wait_sample(port);
    sv(&["-w", "30", "down"]);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still serving after sv down"
    );
    sv(&["-w", "30", "exit"]);
    runsv.wait().unwrap();
    assert!(!r.ok(&["ps", "-a"]).contains(&name), "container left");
}

/// `keel exec` into a detached `--isolation chroot` container as the user runs in the
/// container's tree, as root's does (it joins the mount namespace of the keel that runs
/// the container, then chroots into the container's root), and stop, start (root's
/// cleanup no longer unmounts the snapshot's overlay, so both find the tree again), top
/// and rm print what root's do.
#[test]
fn rootless_detached_chroot_exec_stays_in_the_container() {
    require_rootless!();
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let want = detached_lifecycle(&|a: &[&str]| k.ok(a), "chroot", true);
    let r = Rootless::with_busybox(user_a());
    let got = detached_lifecycle(&|a: &[&str]| r.ok(a), "chroot", true);
    assert_eq!(got, want, "rootless differs from root");
}

/// The rest of the glue the suite drives as root, as the user: `mvn -o package` runs the
/// generated exec-maven-plugin executions (the image gets the pom's coordinates), the
/// Jenkinsfile's Build and Test `sh` steps run with `$KEEL` (files `exec-in` writes are
/// the user's), and supervisord — the user's own — keeps the generated program serving
/// until it is shut down, leaving no container behind.
#[test]
fn rootless_maven_jenkins_and_supervisord_glue_run_as_the_user() {
    require_rootless!();
    require!(
        have("mvn") && have("supervisord") && have("supervisorctl"),
        "maven and supervisor are needed (apt-get install maven supervisor)"
    );
    let r = Rootless::with_busybox(user_a());
    let dir = user_sample(&r);
    let (d, toml) = (
        dir.display().to_string(),
        dir.join("keel.toml").display().to_string(),
    );
    let keel = r.keel().display().to_string();
    r.ok(&["integrate", "maven", "-f", &toml, "--write", &d]);
    std::fs::write(dir.join("pom.xml"), crate::integrate::sample_pom(&dir)).unwrap();
    let wrapper = r.path("bin/keel-plain");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec {keel} --progress plain \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    r.give(&dir);
    let mut mvn = r.as_user(Path::new("/usr/bin/mvn"));
    mvn.current_dir(&dir)
        .args(["-o", "-B", "-q", "-Dmaven.repo.local=/usr/share/maven-repo"])
        .arg(format!("-Dkeel.executable={}", wrapper.display()))
        .arg("package");
    assert_success(&mvn.output().unwrap(), "mvn package as the user");
    assert!(r.ok(&["images"]).contains("0.3.1"));
    // Jenkins: every `sh` step of the Build and Test stages, as the agent would.
    r.ok(&[
        "integrate",
        "jenkins",
        "-f",
        &toml,
        "--test",
        "id -u > check.uid",
        "--write",
        &d,
    ]);
    let jf = std::fs::read_to_string(dir.join("Jenkinsfile")).unwrap();
    let steps = crate::integrate::jenkinsfile_sh_steps(&jf);
    let mut ran = 0;
    for (_, cmd) in steps.iter().filter(|(stage, _)| stage != "Push") {
        let mut sh = r.as_user(Path::new("/bin/sh"));
        sh.current_dir(&dir).env("KEEL", &wrapper).args(["-c", cmd]);
        assert_success(&sh.output().unwrap(), cmd);
        ran += 1;
    }
    assert_eq!(ran, 3, "{steps:?}");
    let m = std::fs::metadata(dir.join("check.uid")).unwrap();
    assert_eq!((m.uid(), m.gid()), (r.user.uid, r.user.gid));
    supervise_as_user(&r, &keel, &dir);
}

/// supervisord run by the user keeps `keel integrate supervisord`'s program serving
/// (again after its container is killed) and stops it cleanly on shutdown.
fn supervise_as_user(r: &Rootless, keel: &str, dir: &Path) {
    r.ok(&["build", "-t", "base", dir.join("base").to_str().unwrap()]);
    r.ok(&["build", "-t", "sample-web", dir.to_str().unwrap()]);
    let port = free_port();
    let name = format!("sup-{port}");
    let publish = format!("127.0.0.1:{port}:8080");
    let prog = r.ok(&[
        "integrate",
        "supervisord",
        "--keel",
        keel,
        "--name",
        &name,
        "-p",
        &publish,
        "sample-web",
    ]);
    let s = r.path("home/sup");
    std::fs::create_dir(&s).unwrap();
    std::fs::write(s.join("prog.conf"), prog).unwrap();
    std::fs::write(
        s.join("supervisord.conf"),
        format!(
            "[supervisord]\nnodaemon=true\ndirectory={d}\nlogfile={d}/supervisord.log\n\
             pidfile={d}/supervisord.pid\nchildlogdir={d}\n\
             [unix_http_server]\nfile={d}/supervisor.sock\n\
             [rpcinterface:supervisor]\n\
             supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\
             [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\
             [include]\nfiles = {d}/prog.conf\n",
            d = s.display()
        ),
    )
    .unwrap();
    r.give(&s);
    let conf = s.join("supervisord.conf");
    let mut sup = r.as_user(Path::new("/usr/bin/supervisord"));
    let mut sup = sup.arg("-c").arg(&conf).spawn().unwrap();
    wait_sample(port);
    run_ok(Command::new("pkill").args(["-KILL", "-f", "--", &format!("--name {name} ")]));
    wait_sample(port);
    let mut ctl = r.as_user(Path::new("/usr/bin/supervisorctl"));
    run_ok(ctl.arg("-c").arg(&conf).arg("shutdown"));
    sup.wait().unwrap();
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still serving after shutdown"
    );
    assert!(!r.ok(&["ps", "-a"]).contains(&name), "container left");
}

/// r-exectty-2: rootless, `keel exec -t` into a detached container also gets a terminal of
/// the container's own devpts with keel's window size (namespaces, chroot, oci). script(1)
/// runs as the user and gives keel a terminal of 33 × 101.
#[test]
fn rootless_exec_tty_is_a_terminal_of_the_containers_own_devpts() {
    require_rootless!();
    require!(have("script"), "script(1) is not installed (bsdutils)");
    let r = Rootless::with_busybox(user_a());
    let mut backends = vec!["namespaces", "chroot"];
    if have("runc") {
        backends.push("oci");
    } else {
        require!(false, "runc is not installed (apt-get install runc)");
    }
    for b in backends {
        let name = format!("et-{b}");
        r.ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--isolation",
            b,
            "bb",
            "sleep",
            "60",
        ]);
        let inner = "tty; stty size; : </dev/tty && echo has-ctty; exit 3";
        let line = format!(
            "stty rows 33 cols 101; {} exec -t {name} sh -c '{inner}'",
            r.keel().display()
        );
        let out = r
            .as_user(Path::new("/usr/bin/script"))
            .args(["-qec", &line, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
        assert_eq!(out.status.code(), Some(3), "{b}: {text}");
        assert!(text.contains("/dev/pts/"), "{b}: tty: {text}");
        assert!(!text.contains("not a tty"), "{b}: {text}");
        assert!(text.contains("33 101\n"), "{b}: stty size: {text}");
        assert!(text.contains("has-ctty"), "{b}: {text}");
        r.ok(&["rm", "-f", &name]);
    }
}
