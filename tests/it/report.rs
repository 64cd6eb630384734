//! Output: a reader that goes away (`keel images | head -1`) ends keel with exit 0 and
//! nothing on stderr, never a "failed printing to stdout: Broken pipe" panic.
use std::io::Read;
use std::process::{Command, Stdio};

use crate::common::Keel;

/// Runs keel with stdout a pipe whose read end is already closed, so its first write
/// fails with EPIPE; returns (exit code, stderr).
fn with_closed_stdout(mut cmd: Command) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = cmd
        .stdout(writer)
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn closed_stdout_exits_zero_quietly() {
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    for args in [
        &["inspect", "bb"][..],
        &["images"],
        &["images", "-q"],
        &["--help"],
        &["build", "--help"],
        &["ps", "-a"],
        &["save", "bb"],
    ] {
        let mut cmd = k.cmd();
        cmd.args(args);
        let (code, stderr) = with_closed_stdout(cmd);
        assert_eq!(code, Some(0), "keel {args:?} on a closed pipe: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "keel {args:?} complained about the closed pipe: {stderr}"
        );
    }
}

/// `keel inspect x | head -1`: the reader takes one line and goes; keel still exits 0.
#[test]
fn reader_that_leaves_after_one_line_is_fine() {
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let mut child = k
        .cmd()
        .args(["inspect", "bb", "bb", "bb", "bb"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}
