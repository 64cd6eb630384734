//! Platforms keel can build for and run: the host's own (native) and the ones the kernel
//! runs through a qemu user-mode emulator registered in binfmt_misc. Normalises platform
//! names the way BuildKit's `platforms.Normalize` does, picks an index's manifest for a
//! platform, and fails early, naming the package to install, when an emulator is missing.
//! Reads binfmt_misc through `sys::binfmt`; never registers a handler.
use std::path::Path;

pub use crate::plan::Platform;
use crate::sys::binfmt;

/// The Debian packages that provide and register the emulators.
pub const EMULATOR_PACKAGES: &str = "qemu-user-static binfmt-support";

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("platform {platform}: keel runs Linux images only; use linux/ARCH, e.g. linux/arm64")]
    NotLinux { platform: String },
    #[error("platform {platform}: this host ({host}) cannot run it and keel knows no qemu emulator for {arch}")]
    Unknown {
        platform: String,
        host: String,
        arch: String,
    },
    #[error("platform {platform} needs the emulator qemu-{qemu}, but {why}; install and register it with `apt-get install {EMULATOR_PACKAGES}` (Debian registers qemu with the F flag), or use the host's platform ({host})")]
    NoEmulator {
        platform: String,
        qemu: String,
        host: String,
        why: String,
    },
}

/// `platform` in BuildKit's normal form: `aarch64` → `arm64` (variant `v8` dropped),
/// `x86_64` → `amd64`, `arm` → `arm/v7`, lowercase.
pub fn normalize(p: &Platform) -> Platform {
    let os = p.os.to_ascii_lowercase();
    let mut variant = p.variant.clone().map(|v| v.to_ascii_lowercase());
    let arch = match p.arch.to_ascii_lowercase().as_str() {
        "x86_64" | "x86-64" | "amd64" => {
            variant = variant.filter(|v| v != "v1");
            "amd64".to_string()
        }
        "aarch64" | "arm64" => {
            variant = variant.filter(|v| v != "v8");
            "arm64".to_string()
        }
        "armhf" | "armel" | "arm" => {
            variant = Some(match p.arch.as_str() {
                "armel" => "v6".into(),
                _ => variant.unwrap_or_else(|| "v7".into()),
            });
            "arm".to_string()
        }
        "i386" | "i686" | "x86" | "386" => "386".to_string(),
        other => other.to_string(),
    };
    Platform { os, arch, variant }
}

/// Whether an image's (or index entry's) `os/arch/variant` is the wanted platform.
pub fn matches(want: &Platform, os: &str, arch: &str, variant: Option<&str>) -> bool {
    let have = normalize(&Platform {
        os: os.to_string(),
        arch: arch.to_string(),
        variant: variant.filter(|v| !v.is_empty()).map(str::to_string),
    });
    let want = normalize(want);
    have.os == want.os
        && have.arch == want.arch
        && (want.variant.is_none() || have.variant == want.variant)
}

/// The platforms this host runs without emulation.
pub fn native() -> Vec<Platform> {
    let p = |arch: &str, variant: Option<&str>| Platform {
        os: "linux".into(),
        arch: arch.into(),
        variant: variant.map(Into::into),
    };
    match crate::image::host_arch().to_string().as_str() {
        // x86-64 CPUs run 32-bit x86 code themselves (the kernel's IA32 emulation).
        "amd64" => vec![p("amd64", None), p("386", None)],
        other => vec![normalize(&p(other, None))],
    }
}

/// The host's platform (`linux/<arch>`).
pub fn host() -> Platform {
    normalize(&Platform::host())
}

/// qemu's name for an OCI architecture (binfmt handler `qemu-<name>`).
pub fn qemu_arch(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "amd64" => "x86_64",
        "386" => "i386",
        "arm64" => "aarch64",
        "arm" => "arm",
        "ppc64le" => "ppc64le",
        "ppc64" => "ppc64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "mips64le" => "mips64el",
        "mips64" => "mips64",
        "mipsle" => "mipsel",
        "mips" => "mips",
        "loong64" => "loongarch64",
        _ => return None,
    })
}

/// Every architecture [`qemu_arch`] knows (what `keel info` looks for).
const KNOWN: [&str; 13] = [
    "amd64", "386", "arm64", "arm", "ppc64le", "ppc64", "s390x", "riscv64", "mips64le", "mips64",
    "mipsle", "mips", "loong64",
];

/// How this host runs a platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runs {
    Native,
    /// Through the binfmt handler with this interpreter.
    Emulated {
        interpreter: String,
    },
}

/// Whether the host can run `p`, natively or through an emulator registered in the
/// binfmt_misc directory `dir` (enabled, with the F flag so it works in any root).
pub fn check_in(dir: &Path, p: &Platform) -> Result<Runs, PlatformError> {
    let p = normalize(p);
    if p.os != "linux" {
        return Err(PlatformError::NotLinux {
            platform: p.to_string(),
        });
    }
    if native().iter().any(|n| n.arch == p.arch) {
        return Ok(Runs::Native);
    }
    let host = host().to_string();
    let Some(qemu) = qemu_arch(&p.arch) else {
        return Err(PlatformError::Unknown {
            platform: p.to_string(),
            host,
            arch: p.arch.clone(),
        });
    };
    let missing = |why: String| PlatformError::NoEmulator {
        platform: p.to_string(),
        qemu: qemu.to_string(),
        host: host.clone(),
        why,
    };
    let name = format!("qemu-{qemu}");
    let Some(h) = binfmt::handler(dir, &name) else {
        return Err(missing(if binfmt::mounted(dir) {
            format!("{} has no {name} handler", dir.display())
        } else {
            format!(
                "binfmt_misc is not mounted at {} (`mount -t binfmt_misc binfmt_misc {}`)",
                dir.display(),
                dir.display()
            )
        }));
    };
    if !h.enabled {
        return Err(missing(format!(
            "its handler {}/{name} is disabled (`update-binfmts --enable {name}`)",
            dir.display()
        )));
    }
    if !h.flags.contains('F') {
        return Err(missing(format!("its handler {}/{name} lacks the F (fix-binary) flag, so it cannot run inside a container's root", dir.display())));
    }
    Ok(Runs::Emulated {
        interpreter: h.interpreter,
    })
}

/// [`check_in`] against the kernel's binfmt_misc.
pub fn check(p: &Platform) -> Result<Runs, PlatformError> {
    check_in(&binfmt::dir(), p)
}

/// Every platform this host can run, with how (for `keel info`).
pub fn runnable() -> Vec<(Platform, Runs)> {
    let mut out: Vec<(Platform, Runs)> = native().into_iter().map(|p| (p, Runs::Native)).collect();
    for arch in KNOWN {
        let p = normalize(&Platform {
            os: "linux".into(),
            arch: arch.into(),
            variant: None,
        });
        if out.iter().any(|(n, _)| n.arch == p.arch) {
            continue;
        }
        if let Ok(r) = check(&p) {
            out.push((p, r));
        }
    }
    out
}

/// Parses `--platform a,b,…` (each normalised, duplicates dropped, order kept).
pub fn parse_list(s: &str) -> Result<Vec<Platform>, String> {
    let mut out: Vec<Platform> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let p = normalize(&part.parse::<Platform>()?);
        if !out.contains(&p) {
            out.push(p);
        }
    }
    if out.is_empty() {
        return Err(format!(
            "--platform {s:?}: name at least one platform, e.g. linux/arm64"
        ));
    }
    Ok(out)
}

/// An OCI index entry's `platform` field for `p`.
pub fn to_oci(p: &Platform) -> oci_spec::image::Platform {
    let mut o = oci_spec::image::Platform::default();
    o.set_os(oci_spec::image::Os::from(p.os.as_str()));
    o.set_architecture(oci_spec::image::Arch::from(p.arch.as_str()));
    o.set_variant(p.variant.clone());
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn names_normalise_like_buildkit() {
        let cases = [
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/x86_64", "linux/amd64"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/v6", "linux/arm/v6"),
            ("linux/i386", "linux/386"),
            ("Linux/S390X", "linux/s390x"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(&p(input)).to_string(), want, "{input}");
        }
        assert!(matches(&p("linux/arm64"), "linux", "arm64", Some("v8")));
        assert!(matches(&p("linux/arm"), "linux", "arm", Some("v7")));
        assert!(!matches(&p("linux/arm/v6"), "linux", "arm", Some("v7")));
        assert!(!matches(&p("linux/amd64"), "linux", "arm64", None));
    }

    #[test]
    fn platform_lists_parse() {
        let l = parse_list("linux/amd64, linux/arm64,linux/aarch64").unwrap();
        let s: Vec<String> = l.iter().map(ToString::to_string).collect();
        assert_eq!(s, ["linux/amd64", "linux/arm64"]);
        assert!(parse_list(",").is_err());
        assert!(parse_list("linux").is_err());
    }

    #[test]
    fn emulators_are_found_or_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let foreign = if host().arch == "arm64" {
            "linux/s390x"
        } else {
            "linux/arm64"
        };
        let qemu = qemu_arch(&p(foreign).arch).unwrap();
        let e = check_in(d, &p(foreign)).unwrap_err().to_string();
        assert!(
            e.contains("binfmt_misc is not mounted") && e.contains(EMULATOR_PACKAGES),
            "{e}"
        );
        std::fs::write(d.join("register"), "").unwrap();
        let e = check_in(d, &p(foreign)).unwrap_err().to_string();
        assert!(e.contains(&format!("no qemu-{qemu} handler")), "{e}");
        let file = d.join(format!("qemu-{qemu}"));
        std::fs::write(&file, "enabled\ninterpreter /q\nflags: P\n").unwrap();
        let e = check_in(d, &p(foreign)).unwrap_err().to_string();
        assert!(e.contains("lacks the F"), "{e}");
        std::fs::write(&file, "enabled\ninterpreter /q\nflags: PF\n").unwrap();
        assert_eq!(
            check_in(d, &p(foreign)).unwrap(),
            Runs::Emulated {
                interpreter: "/q".into()
            }
        );
        assert_eq!(check_in(d, &host()).unwrap(), Runs::Native);
        assert!(check_in(d, &p("windows/amd64")).is_err());
    }
}
