//! Reads the kernel's binfmt_misc registrations (`/proc/sys/fs/binfmt_misc/<name>`): which
//! emulators the kernel runs foreign binaries with. Read-only: keel never registers a
//! handler (that is the host's setup, Debian's qemu-user-static + binfmt-support).
use std::path::{Path, PathBuf};

/// Where the kernel lists its handlers; `KEEL_BINFMT_DIR` points keel at another
/// directory (tests use it to stand for a host without emulators).
pub fn dir() -> PathBuf {
    std::env::var_os("KEEL_BINFMT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/proc/sys/fs/binfmt_misc"))
}

/// One registered handler, as its file in binfmt_misc describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    pub name: String,
    pub enabled: bool,
    pub interpreter: String,
    /// The flag letters (`F` = the kernel opened the interpreter at registration, so it
    /// works inside a container whose root does not have it).
    pub flags: String,
}

/// Parses a handler file's text (`enabled`, `interpreter …`, `flags: …`, …).
pub fn parse(name: &str, text: &str) -> Handler {
    let mut h = Handler {
        name: name.to_string(),
        enabled: false,
        interpreter: String::new(),
        flags: String::new(),
    };
    for line in text.lines() {
        if line == "enabled" {
            h.enabled = true;
        } else if let Some(i) = line.strip_prefix("interpreter ") {
            h.interpreter = i.trim().to_string();
        } else if let Some(f) = line.strip_prefix("flags:") {
            h.flags = f.trim().to_string();
        }
    }
    h
}

/// The handler registered as `name` in `dir`, if any (a missing or unreadable file is
/// "not registered": binfmt_misc may not even be mounted).
pub fn handler(dir: &Path, name: &str) -> Option<Handler> {
    let text = std::fs::read_to_string(dir.join(name)).ok()?;
    Some(parse(name, &text))
}

/// Whether binfmt_misc is mounted at `dir` (its `register` file exists).
pub fn mounted(dir: &Path) -> bool {
    dir.join("register").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_files_parse() {
        let text = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\nmagic 7f454c46\nmask ffffffff\n";
        let h = parse("qemu-aarch64", text);
        assert!(h.enabled);
        assert_eq!(h.interpreter, "/usr/libexec/qemu-binfmt/aarch64-binfmt-P");
        assert_eq!(h.flags, "PF");
        let off = parse("qemu-arm", "disabled\ninterpreter /x\nflags: \n");
        assert!(!off.enabled);
        assert_eq!(off.flags, "");
    }
}
