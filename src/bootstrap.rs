//! `keel bootstrap`: base images for users without registry access, made from what the
//! host has: its static busybox (with every applet linked) or debootstrap. The busybox
//! image is reproducible: same busybox binary, same image digest.
//!
//! For another platform (`--platform linux/arm64`) the busybox comes from Debian's
//! `busybox-static` package of that architecture (downloaded with apt, kept in a cache
//! keyed by version), and debootstrap runs in foreign mode with its second stage under
//! the qemu emulator binfmt_misc provides; several platforms make one multi-platform
//! image (an OCI index).
use crate::sys::hostfs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::image::{commit_image, new_config, StoredLayer};
use crate::reference::ImageRef;
use crate::store::{ImageRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{tool} not found; install it with `apt-get install {package}` (or pass its path with --{flag})")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
        flag: &'static str,
    },
    #[error("{path} is not a statically linked busybox ({why}); install busybox-static")]
    NotStatic { path: PathBuf, why: String },
    #[error("running {cmd} failed: {why}")]
    Command { cmd: String, why: String },
    #[error("writing the base layer: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Layer(#[from] crate::layer::LayerError),
    #[error(transparent)]
    Platform(#[from] crate::platform::PlatformError),
    #[error("{path} is a {have} binary, not one for {want}; give a busybox built for {want}")]
    WrongArch {
        path: PathBuf,
        have: String,
        want: String,
    },
    #[error("no busybox-static package for {arch} in apt's index ({why}); add the architecture (`dpkg --add-architecture {arch} && apt-get update`) or pass --busybox PATH of a static {arch} busybox")]
    NoForeignPackage { arch: String, why: String },
}

/// The ELF `e_machine` of each architecture keel can bootstrap.
fn elf_machine(arch: &str) -> Option<u16> {
    Some(match arch {
        "amd64" => 62,
        "arm64" => 183,
        "arm" => 40,
        "386" => 3,
        "s390x" => 22,
        "ppc64le" => 21,
        "riscv64" => 243,
        _ => return None,
    })
}

/// The Debian architecture name of an OCI platform (`arm/v7` → armhf).
pub fn debian_arch(p: &crate::platform::Platform) -> String {
    let p = crate::platform::normalize(p);
    match (p.arch.as_str(), p.variant.as_deref()) {
        ("arm", Some("v7")) => "armhf".into(),
        ("arm", _) => "armel".into(),
        ("386", _) => "i386".into(),
        ("ppc64le", _) => "ppc64el".into(),
        ("mips64le", _) => "mips64el".into(),
        (a, _) => a.to_string(),
    }
}

/// Fails unless `bin` is an ELF file for `p`'s architecture.
fn check_machine(bin: &Path, p: &crate::platform::Platform) -> Result<(), BootstrapError> {
    let mut head = [0u8; 20];
    std::io::Read::read_exact(&mut std::fs::File::open(bin)?, &mut head)?;
    let machine = u16::from_le_bytes([head[18], head[19]]);
    let want = crate::platform::normalize(p);
    match elf_machine(&want.arch) {
        Some(m) if m != machine => Err(BootstrapError::WrongArch {
            path: bin.into(),
            have: format!("ELF machine {machine}"),
            want: want.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Runs `cmd`, mapping a failure to [`BootstrapError::Command`] with its stderr.
fn run(cmd: &mut Command) -> Result<Vec<u8>, BootstrapError> {
    let text = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| BootstrapError::Command {
        cmd: text.clone(),
        why: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(BootstrapError::Command {
            cmd: text,
            why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// Debian's static busybox for `arch` (a Debian architecture name): downloaded with
/// `apt-get download` (apt checks the archive's signature) and unpacked with dpkg-deb
/// into `cache/busybox-static_<version>_<arch>/`, reused while apt's version stays.
pub fn foreign_busybox(arch: &str, cache: &Path) -> Result<PathBuf, BootstrapError> {
    let pkg = format!("busybox-static:{arch}");
    let show =
        run(Command::new("apt-cache").args(["show", "--no-all-versions", &pkg])).map_err(|e| {
            BootstrapError::NoForeignPackage {
                arch: arch.into(),
                why: e.to_string(),
            }
        })?;
    let show = String::from_utf8_lossy(&show);
    let version = show
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .ok_or_else(|| BootstrapError::NoForeignPackage {
            arch: arch.into(),
            why: "apt-cache shows no Version".into(),
        })?;
    let safe = version.replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "_");
    let dir = std::path::absolute(cache)?.join(format!("busybox-static_{safe}_{arch}"));
    let bin = dir.join("bin/busybox");
    open_cache(cache)?;
    if bin.is_file() {
        return Ok(bin);
    }
    // Named for this keel: a bootstrap killed mid-download leaves it, the next one
    // removes it (the cache may be outside the root, where `keel gc` never looks).
    let scratch = hostfs::temp_dir_in(cache, "download")?;
    run(Command::new("apt-get")
        .args(["download", "-q", &format!("{pkg}={version}")])
        .current_dir(scratch.path()))?;
    crate::fault::delay("bootstrap.downloaded");
    let deb = std::fs::read_dir(scratch.path())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| BootstrapError::NoForeignPackage {
            arch: arch.into(),
            why: "apt-get download left no .deb".into(),
        })?;
    let tree = scratch.path().join("tree");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    // Renamed into place whole: a concurrent bootstrap sees the tree or nothing.
    match hostfs::rename(&tree, &dir) {
        Err(e) if !bin.is_file() => Err(e.into()),
        _ => Ok(bin),
    }
}

/// Creates download cache `dir` (which may be outside the root: `--cache-dir`) if needed,
/// and removes what bootstraps killed while writing to it left there: their temp names
/// carry their owner tag, so a live bootstrap's are kept. Everything keel writes there
/// goes through such a name and a rename (a download unpacked, a `.deb` copied), and
/// debootstrap checks the `.deb`s it finds against their checksums itself.
fn open_cache(dir: &Path) -> Result<(), BootstrapError> {
    hostfs::create_dir_all(dir)?;
    let removed = crate::reclaim::sweep_tagged_temps(dir);
    if removed > 0 {
        tracing::debug!(dir = %dir.display(), removed, "removed killed bootstraps' temp names");
    }
    Ok(())
}

/// Where Debian's busybox-static puts its binary, and the usual fallbacks.
pub fn find_busybox(explicit: Option<&Path>) -> Result<PathBuf, BootstrapError> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => ["/bin/busybox", "/usr/bin/busybox", "/sbin/busybox"]
            .iter()
            .map(PathBuf::from)
            .collect(),
    };
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or(BootstrapError::ToolMissing {
            tool: "busybox",
            package: "busybox-static",
            flag: "busybox",
        })
}

/// The applet paths (`bin/sh`, `usr/bin/wc`, …) a busybox binary provides.
fn applets(busybox: &Path) -> Result<Vec<String>, BootstrapError> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| BootstrapError::Command {
            cmd: format!("{} --list-full", busybox.display()),
            why: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(BootstrapError::NotStatic {
            path: busybox.into(),
            why: "`--list-full` failed".into(),
        });
    }
    let mut list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        .filter(|l| !l.is_empty())
        .collect();
    list.sort();
    list.dedup();
    Ok(list)
}

fn is_static(busybox: &Path) -> Result<(), BootstrapError> {
    let bytes = std::fs::read(busybox)?;
    let not_static = |why: &str| {
        Err(BootstrapError::NotStatic {
            path: busybox.into(),
            why: why.into(),
        })
    };
    if !bytes.starts_with(b"\x7fELF") || bytes.len() < 64 || bytes[4] != 2 || bytes[5] != 1 {
        return not_static("not a 64-bit little-endian ELF file");
    }
    // A PT_INTERP program header names a dynamic loader the image would not have.
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().expect("2 bytes"));
    let (phoff, phentsize, phnum) = (
        u64_at(0x20) as usize,
        u16_at(0x36) as usize,
        u16_at(0x38) as usize,
    );
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        if at + 4 > bytes.len() {
            return not_static("truncated program headers");
        }
        if u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) == 3 {
            return not_static("it is dynamically linked");
        }
    }
    Ok(())
}

/// The busybox image's directories and their modes.
const BUSYBOX_DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("home", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("sbin", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("var", 0o755),
    ("var/tmp", 0o1777),
    ("var/www", 0o755),
];

/// The busybox image's /etc files.
const BUSYBOX_FILES: &[(&str, &str)] = &[
    ("etc/group", "root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n"),
    ("etc/hostname", "keel\n"),
    ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
    ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
    ("etc/shadow", "root:*:19000:0:99999:7:::\n"),
];

/// One entry of the busybox rootfs.
enum BusyboxItem {
    Dir(u32),
    File(&'static str),
    Busybox,
    Link,
}

/// Writes a busybox rootfs as a tar stream: directories, /etc files, the binary and one
/// symlink per applet. Entries are sorted with fixed times so the layer is reproducible.
pub fn write_busybox_rootfs(busybox: &Path, out: impl Write) -> Result<(), BootstrapError> {
    is_static(busybox)?;
    let applets = applets(busybox)?;
    let mtime = crate::image::reproducible_time()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h
    };
    let mut tar = tar::Builder::new(out);
    for (path, item) in busybox_items(&applets) {
        match item {
            BusyboxItem::Dir(mode) => tar.append_data(
                &mut header(tar::EntryType::Directory, mode, 0),
                &path,
                io::empty(),
            )?,
            BusyboxItem::File(content) => {
                let mode = if path == "etc/shadow" { 0o640 } else { 0o644 };
                tar.append_data(
                    &mut header(tar::EntryType::Regular, mode, content.len() as u64),
                    &path,
                    content.as_bytes(),
                )?
            }
            BusyboxItem::Busybox => {
                let f = std::fs::File::open(busybox)?;
                let len = f.metadata()?.len();
                tar.append_data(&mut header(tar::EntryType::Regular, 0o755, len), &path, f)?
            }
            BusyboxItem::Link => tar.append_link(
                &mut header(tar::EntryType::Symlink, 0o777, 0),
                &path,
                "/bin/busybox",
            )?,
        }
    }
    tar.into_inner()?.flush()?;
    Ok(())
}

/// Every path of the busybox rootfs in byte order (parents sort before children), each
/// once: the directories, the /etc files, the binary, and a link per applet that is
/// none of those.
fn busybox_items(applets: &[String]) -> Vec<(String, BusyboxItem)> {
    let mut items: Vec<(String, BusyboxItem)> = Vec::new();
    for (d, mode) in BUSYBOX_DIRS {
        items.push((format!("{d}/"), BusyboxItem::Dir(*mode)));
    }
    for (p, content) in BUSYBOX_FILES {
        items.push((p.to_string(), BusyboxItem::File(content)));
    }
    items.push(("bin/busybox".into(), BusyboxItem::Busybox));
    for a in applets {
        if a != "bin/busybox" && !BUSYBOX_FILES.iter().any(|(p, _)| p == a) {
            items.push((a.clone(), BusyboxItem::Link));
        }
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    items.dedup_by(|a, b| a.0 == b.0);
    items
}

/// `keel bootstrap busybox NAME` (for the host).
pub fn busybox(
    store: &Store,
    busybox: &Path,
    name: &ImageRef,
) -> Result<ImageRecord, BootstrapError> {
    let rec = busybox_for(store, busybox, &crate::platform::host())?;
    store.tag(name, &rec.manifest_descriptor)?;
    Ok(rec)
}

/// `keel bootstrap busybox NAME --platform P`: the untagged image of `busybox` (an ELF
/// binary for `platform`, run under emulation to list its applets) for `platform`.
pub fn busybox_for(
    store: &Store,
    busybox: &Path,
    platform: &crate::platform::Platform,
) -> Result<ImageRecord, BootstrapError> {
    crate::platform::check(platform)?;
    check_machine(busybox, platform)?;
    let _writing = store.writer_guard()?;
    let mut blob = store.blob_writer()?;
    write_busybox_rootfs(busybox, &mut blob)?;
    let (digest, size) = blob.commit(None)?;
    let layer = StoredLayer::uncompressed(digest, size);
    let env = vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
    let mut config = new_config(
        std::slice::from_ref(&layer),
        crate::image::reproducible_time(),
        "keel bootstrap busybox",
        env,
        Some(vec!["sh".into()]),
    );
    set_platform(&mut config, platform);
    Ok(commit_image(store, &config, &[layer], &[])?)
}

/// Makes `config` describe an image for `p`.
fn set_platform(config: &mut crate::image::ImageConfig, p: &crate::platform::Platform) {
    let p = crate::platform::normalize(p);
    config.os = p.os;
    config.architecture = p.arch;
    config.variant = p.variant;
}

/// What `keel bootstrap debian` installs from where.
#[derive(Debug, Clone)]
pub struct DebianOptions {
    pub suite: String,
    pub variant: String,
    /// The main archive (`--mirror`); security updates come from [`security_mirror`].
    pub mirror: String,
    /// Where downloaded packages are kept between bootstraps (`--cache-dir`); a
    /// subdirectory per suite, variant, mirror and architecture ([`cache_key`]).
    pub cache: PathBuf,
    /// Another platform than the host's: debootstrap's foreign mode, second stage
    /// under emulation.
    pub platform: Option<crate::platform::Platform>,
}

/// Suites that have no `-updates` and `-security` companions.
const ROLLING: [&str; 4] = ["sid", "unstable", "experimental", "rc-buggy"];

/// The security archive next to `mirror`: `…/debian` → `…/debian-security` (as on
/// deb.debian.org and most mirrors), anything else → deb.debian.org's.
pub fn security_mirror(mirror: &str) -> String {
    let m = mirror.trim_end_matches('/');
    match m.strip_suffix("/debian") {
        Some(base) => format!("{base}/debian-security"),
        None => "http://deb.debian.org/debian-security".to_string(),
    }
}

/// The image's `/etc/apt/sources.list.d/debian.sources` (deb822, as the official image
/// has since bookworm): the suite and its `-updates` from `mirror`, `-security` from the
/// security archive; a rolling suite (sid) has only itself.
pub fn debian_sources(suite: &str, mirror: &str) -> String {
    let key = "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
    let mirror = mirror.trim_end_matches('/');
    if ROLLING.contains(&suite) {
        return format!("Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\n{key}");
    }
    format!(
        "Types: deb\nURIs: {mirror}\nSuites: {suite} {suite}-updates\nComponents: main\n{key}\n\
         Types: deb\nURIs: {}\nSuites: {suite}-security\nComponents: main\n{key}",
        security_mirror(mirror)
    )
}

/// The cache subdirectory for one set of inputs: `suite-variant-arch-<hash of mirror>`.
pub fn cache_key(suite: &str, variant: &str, mirror: &str, arch: &str) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(mirror.trim_end_matches('/').as_bytes());
    let safe = |s: &str| s.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_");
    format!(
        "{}-{}-{}-{}",
        safe(suite),
        safe(variant),
        safe(arch),
        &hex::encode(h)[..12]
    )
}

/// The host's Debian architecture name (debootstrap's default target).
fn host_arch() -> String {
    Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| match std::env::consts::ARCH {
            "x86_64" => "amd64".into(),
            "aarch64" => "arm64".into(),
            other => other.into(),
        })
}

/// Apt settings of the image: keep no package files or caches after installs, fetch no
/// translations, keep indexes compressed (the official image's minimising choices).
const APT_CONF: [(&str, &str); 3] = [
    (
        "keel-clean",
        "// Installed packages' .deb files and apt's binary caches do not belong in layers.\n\
         DPkg::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true\"; };\n\
         APT::Update::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true\"; };\n\
         Dir::Cache::pkgcache \"\";\nDir::Cache::srcpkgcache \"\";\n",
    ),
    ("keel-no-languages", "Acquire::Languages \"none\";\n"),
    ("keel-gzip-indexes", "Acquire::GzipIndexes \"true\";\n"),
];

/// Turns debootstrap's tree into a base image's: the host's resolv.conf and hostname
/// out (the runtime provides both), deb822 sources with updates and security, apt lists,
/// caches and downloaded packages removed, apt's minimising settings in.
fn finish_debian_rootfs(target: &Path, suite: &str, mirror: &str) -> Result<(), BootstrapError> {
    for f in ["etc/resolv.conf", "etc/hostname", "etc/apt/sources.list"] {
        match hostfs::remove_file(target.join(f)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    let apt = target.join("etc/apt");
    hostfs::create_dir_all(apt.join("sources.list.d"))?;
    hostfs::write(
        apt.join("sources.list.d/debian.sources"),
        debian_sources(suite, mirror),
    )?;
    hostfs::create_dir_all(apt.join("apt.conf.d"))?;
    for (name, text) in APT_CONF {
        hostfs::write(apt.join("apt.conf.d").join(name), text)?;
    }
    for dir in [
        "var/lib/apt/lists",
        "var/cache/apt/archives",
        "var/cache/apt",
    ] {
        let Ok(entries) = std::fs::read_dir(target.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let (p, t) = (e.path(), e.file_type()?);
            if t.is_file() || t.is_symlink() {
                if e.file_name() != "lock" {
                    hostfs::remove_file(&p)?;
                }
            } else if dir == "var/lib/apt/lists" && e.file_name() != "partial" {
                hostfs::remove_dir_all(&p)?;
            }
        }
    }
    Ok(())
}

/// `keel bootstrap debian NAME`: debootstrap into a scratch directory (its downloads kept
/// in the cache for the next time), make it a base image's tree, pack it as one layer.
/// The image is untagged: the caller names it (or an index over several platforms).
pub fn debian(store: &Store, opts: &DebianOptions) -> Result<ImageRecord, BootstrapError> {
    let DebianOptions {
        suite,
        variant,
        mirror,
        ..
    } = opts;
    let foreign = opts
        .platform
        .as_ref()
        .filter(|p| crate::platform::normalize(p).arch != crate::platform::host().arch);
    let emulated = match foreign {
        Some(p) => crate::platform::check(p)? != crate::platform::Runs::Native,
        None => false,
    };
    let arch = foreign.map_or_else(host_arch, debian_arch);
    let cache = std::path::absolute(&opts.cache)?.join(cache_key(suite, variant, mirror, &arch));
    open_cache(&cache)?;
    let scratch = hostfs::scratch_dir_in(&store.tmp_dir(), "debootstrap")?;
    let target = scratch.path().join("rootfs");
    run_debootstrap(opts, &arch, emulated, &cache, &target)?;
    finish_debian_rootfs(&target, suite, mirror)?;
    let _writing = store.writer_guard()?;
    let mut blob = store.blob_writer()?;
    {
        let mut tar = tar::Builder::new(&mut blob);
        tar.follow_symlinks(false);
        tar.mode(tar::HeaderMode::Complete);
        tar.append_dir_all(".", &target)?;
        tar.finish()?;
    }
    let (digest, size) = blob.commit(None)?;
    let layer = StoredLayer::uncompressed(digest, size);
    let env = vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
    let mut config = new_config(
        std::slice::from_ref(&layer),
        crate::image::created_time(),
        &format!("keel bootstrap debian --suite {suite} --variant {variant}"),
        env,
        Some(vec!["bash".into()]),
    );
    set_platform(
        &mut config,
        opts.platform.as_ref().unwrap_or(&crate::platform::host()),
    );
    Ok(commit_image(store, &config, &[layer], &[])?)
}

/// Runs debootstrap into `target`; for a foreign `arch`, its first stage (`--foreign`:
/// download and unpack) then its second stage (configure) inside the tree, where the
/// kernel runs the tree's binaries through qemu (binfmt_misc's F flag).
fn run_debootstrap(
    opts: &DebianOptions,
    arch: &str,
    foreign: bool,
    cache: &Path,
    target: &Path,
) -> Result<(), BootstrapError> {
    let debootstrap = ["/usr/sbin/debootstrap", "/usr/bin/debootstrap"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or(BootstrapError::ToolMissing {
            tool: "debootstrap",
            package: "debootstrap",
            flag: "mirror",
        })?;
    let mut cmd = Command::new(&debootstrap);
    cmd.arg(format!("--variant={}", opts.variant))
        .arg(format!("--cache-dir={}", cache.display()))
        .arg(format!("--arch={arch}"));
    if foreign {
        cmd.arg("--foreign");
    }
    cmd.arg(&opts.suite).arg(target).arg(&opts.mirror);
    let shown = format!("{cmd:?}");
    let status = cmd.status().map_err(|e| BootstrapError::Command {
        cmd: debootstrap.display().to_string(),
        why: e.to_string(),
    })?;
    if !status.success() {
        return Err(BootstrapError::Command {
            cmd: shown,
            why: format!("it exited with {status}; its log is in the output above"),
        });
    }
    if foreign {
        // chroot(8) runs the tree's own debootstrap; its shell is the target's, emulated.
        let status = Command::new("chroot")
            .arg(target)
            .args(["/debootstrap/debootstrap", "--second-stage"])
            .status()?;
        if !status.success() {
            return Err(BootstrapError::Command {
                cmd: format!(
                    "chroot {} /debootstrap/debootstrap --second-stage",
                    target.display()
                ),
                why: format!(
                    "it exited with {status}; its log is in {}/debootstrap/debootstrap.log",
                    target.display()
                ),
            });
        }
    }
    Ok(())
}

/// The stack for buildpack apps (`keel bootstrap stack NAME`, docs/buildpacks.md): one
/// debootstrap, then apt-get in a chroot installs the run packages (→ `NAME-run`, one
/// layer) and on top the build packages (→ `NAME-build`: that layer plus the difference).
/// debootstrap's own dependency resolution fails on npm's virtual packages, so apt
/// resolves. `.deb`s are shared with debootstrap's download cache in both directions.
pub struct StackImages {
    pub build: ImageRecord,
    pub run: ImageRecord,
}

/// Runs `chroot TARGET apt-get ARGS` non-interactively.
fn chroot_apt(target: &Path, args: &[&str]) -> Result<(), BootstrapError> {
    let status = Command::new("chroot")
        .arg(target)
        .arg("apt-get")
        .args(["-q", "-y", "-o", "APT::Sandbox::User=root"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .status()
        .map_err(|e| BootstrapError::Command {
            cmd: "chroot".into(),
            why: e.to_string(),
        })?;
    if !status.success() {
        return Err(BootstrapError::Command {
            cmd: format!("chroot {} apt-get {}", target.display(), args.join(" ")),
            why: format!("it exited with {status}; its output is above"),
        });
    }
    Ok(())
}

/// Copies every `.deb` of `from` missing in `to`, each through a temp name: a copy into
/// the cache killed half-way left a short `.deb` under its name, which every later stack
/// bootstrap then took for the package (apt fetched it again each time, and the cache
/// never got the whole one, since the name was taken).
fn share_debs(from: &Path, to: &Path) -> Result<(), BootstrapError> {
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if name.to_string_lossy().ends_with(".deb") && !to.join(&name).exists() {
            hostfs::copy_atomic(&e.path(), &to.join(&name))?;
        }
    }
    Ok(())
}

/// apt-get install `packages` into `target`, with `cache` as the download cache.
fn apt_install(target: &Path, packages: &[&str], cache: &Path) -> Result<(), BootstrapError> {
    let archives = target.join("var/cache/apt/archives");
    hostfs::create_dir_all(&archives)?;
    share_debs(cache, &archives)?;
    // Name resolution for apt inside the chroot; finish_debian_rootfs removes it again.
    hostfs::copy("/etc/resolv.conf", target.join("etc/resolv.conf"))?;
    chroot_apt(target, &["update"])?;
    let mut args = vec!["install", "--no-install-recommends"];
    args.extend_from_slice(packages);
    chroot_apt(target, &args)?;
    share_debs(&archives, cache)
}

/// Runs debootstrap (minbase) for `opts` into `target`, downloads cached in `cache`.
fn debootstrap_minbase(
    opts: &DebianOptions,
    target: &Path,
    cache: &Path,
) -> Result<(), BootstrapError> {
    let status = Command::new("debootstrap")
        .arg(format!("--variant={}", opts.variant))
        .arg(format!("--cache-dir={}", cache.display()))
        .arg(&opts.suite)
        .arg(target)
        .arg(&opts.mirror)
        .status()
        .map_err(|_| BootstrapError::ToolMissing {
            tool: "debootstrap",
            package: "debootstrap",
            flag: "mirror",
        })?;
    if !status.success() {
        return Err(BootstrapError::Command {
            cmd: format!("debootstrap {} {}", opts.suite, target.display()),
            why: format!("it exited with {status}; its log is in the output above"),
        });
    }
    Ok(())
}

/// A layer of the whole tree `dir` (as `debian` makes its layer).
fn tree_layer(store: &Store, dir: &Path) -> Result<StoredLayer, BootstrapError> {
    let mut blob = store.blob_writer()?;
    {
        let mut tar = tar::Builder::new(&mut blob);
        tar.follow_symlinks(false);
        tar.mode(tar::HeaderMode::Complete);
        tar.append_dir_all(".", dir)?;
        tar.finish()?;
    }
    let (digest, size) = blob.commit(None)?;
    Ok(StoredLayer::uncompressed(digest, size))
}

/// A layer of what changed from `lower` to `upper`.
fn diff_layer(store: &Store, lower: &Path, upper: &Path) -> Result<StoredLayer, BootstrapError> {
    let changes = crate::layer::diff::diff_trees(lower, upper)?;
    let mut blob = store.blob_writer()?;
    crate::layer::pack::pack(&changes, upper, &mut blob, &Default::default())?;
    let (digest, size) = blob.commit(None)?;
    Ok(StoredLayer::uncompressed(digest, size))
}

/// `NAME-run` and `NAME-build` (names from `buildpack::stack_images`).
pub fn stack(
    store: &Store,
    opts: &DebianOptions,
    run_name: &ImageRef,
    build_name: &ImageRef,
) -> Result<StackImages, BootstrapError> {
    use crate::buildpack::shipped;
    let cache = std::path::absolute(&opts.cache)?.join(cache_key(
        &opts.suite,
        &opts.variant,
        &opts.mirror,
        &host_arch(),
    ));
    open_cache(&cache)?;
    let scratch = hostfs::scratch_dir_in(&store.tmp_dir(), "stack")?;
    let target = scratch.path().join("rootfs");
    debootstrap_minbase(opts, &target, &cache)?;
    apt_install(&target, &shipped::packages(shipped::RUN_PACKAGES), &cache)?;
    let run_tree = scratch.path().join("run");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&target)
        .arg(&run_tree)
        .status()?;
    if !cp.success() {
        return Err(BootstrapError::Command {
            cmd: "cp -a".into(),
            why: format!("copying the run tree: {cp}"),
        });
    }
    finish_debian_rootfs(&run_tree, &opts.suite, &opts.mirror)?;
    apt_install(&target, &shipped::packages(shipped::BUILD_PACKAGES), &cache)?;
    finish_debian_rootfs(&target, &opts.suite, &opts.mirror)?;
    let _writing = store.writer_guard()?;
    let run_layer = tree_layer(store, &run_tree)?;
    let build_layer = diff_layer(store, &run_tree, &target)?;
    let env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "LANG=C.UTF-8".to_string(),
    ];
    let commit = |layers: &[StoredLayer], name: &ImageRef, what: &str| {
        let mut config = new_config(
            layers,
            crate::image::created_time(),
            &format!("keel bootstrap stack ({what}) --suite {}", opts.suite),
            env.clone(),
            Some(vec!["bash".into()]),
        );
        let labels = config.config.labels.get_or_insert_with(Default::default);
        labels.insert("io.keel.stack".into(), what.into());
        commit_image(store, &config, layers, std::slice::from_ref(name))
    };
    let run = commit(std::slice::from_ref(&run_layer), run_name, "run")?;
    let build = commit(&[run_layer, build_layer], build_name, "build")?;
    Ok(StackImages { build, run })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_name_updates_and_security_next_to_the_mirror() {
        let cases = [
            (
                "http://deb.debian.org/debian",
                "http://deb.debian.org/debian-security",
            ),
            (
                "http://mirror.example/debian/",
                "http://mirror.example/debian-security",
            ),
            (
                "http://apt.internal:3142/deb",
                "http://deb.debian.org/debian-security",
            ),
        ];
        for (mirror, security) in cases {
            assert_eq!(security_mirror(mirror), security, "{mirror}");
        }
        let s = debian_sources("bookworm", "http://mirror.example/debian/");
        assert!(s.starts_with("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"), "{s}");
        assert!(s.contains("\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"), "{s}");
        assert_eq!(
            s.matches("Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
                .count(),
            2
        );
        let sid = debian_sources("sid", "http://deb.debian.org/debian");
        assert!(
            !sid.contains("security") && !sid.contains("updates"),
            "{sid}"
        );
    }

    #[test]
    fn cache_keys_follow_every_input() {
        let k = cache_key(
            "bookworm",
            "minbase",
            "http://deb.debian.org/debian",
            "amd64",
        );
        assert!(k.starts_with("bookworm-minbase-amd64-"), "{k}");
        assert_eq!(
            k,
            cache_key(
                "bookworm",
                "minbase",
                "http://deb.debian.org/debian/",
                "amd64"
            )
        );
        for other in [
            cache_key("trixie", "minbase", "http://deb.debian.org/debian", "amd64"),
            cache_key(
                "bookworm",
                "buildd",
                "http://deb.debian.org/debian",
                "amd64",
            ),
            cache_key(
                "bookworm",
                "minbase",
                "http://mirror.example/debian",
                "amd64",
            ),
            cache_key(
                "bookworm",
                "minbase",
                "http://deb.debian.org/debian",
                "arm64",
            ),
        ] {
            assert_ne!(k, other);
        }
        assert_eq!(cache_key("../x", "a/b", "m", "amd64").split('/').count(), 1);
    }
}
