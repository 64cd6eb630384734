//! Attacker-side tests: archives ADD extracts. The archive itself carries symlinks to a
//! host canary (absolute, and a `..` chain long enough to climb out of any snapshot),
//! entries written through them, and names climbing out with `..`. As BuildKit's
//! chrooted extraction does, every link and name resolves with the destination as the
//! root: the build writes inside the image, and the canary stays intact and unread.
use std::fs;

use crate::canary::CanaryDir;
use crate::common::{self, is_root, Keel};
use crate::hostile::text;
use crate::require;

/// A plain tar of (name, link target or "", data), names and targets written raw.
fn raw_tar(entries: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        let kind = match link.is_empty() {
            true => tar::EntryType::Regular,
            false => tar::EntryType::Symlink,
        };
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

/// Break: an archive whose own symlink points at a host directory, then a file written
/// through it (`d -> /host/canary`, `d/file`), or through a `..` chain, or a name that
/// climbs (`../../…/canary/file`), makes ADD write on the host.
#[test]
fn add_archive_writing_through_its_own_symlinks_stays_inside() {
    require!(is_root(), "building needs root");
    let k = Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let c = CanaryDir::new();
    let host = c.path().display().to_string();
    let climb = format!("{}{host}", "../".repeat(24).trim_end_matches('/'));
    let names = [format!("{climb}/file"), format!("{climb}/named")];
    let tar = raw_tar(&[
        ("d", &host, b""),
        ("d/file", "", b"overwritten"),
        ("d/planted", "", b"planted"),
        ("up", &climb, b""),
        ("up/sub/planted", "", b"planted"),
        (&names[0], "", b"overwritten"),
        (&names[1], "", b"named"),
    ]);
    let ctx = k.path("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("a.tar"), tar).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM bb\nADD a.tar /x/\n").unwrap();
    let out = k
        .cmd()
        .args(["build", "-t", "hostile-add"])
        .arg(&ctx)
        .output()
        .unwrap();
    c.assert_intact();
    c.assert_not_leaked(&text(&out));
    common::assert_success(&out, "ADD of an archive with links out of its destination");
    // Everything landed inside the image, under the destination taken as the root.
    let script = format!("cat /x{host}/file /x{host}/planted /x{host}/sub/planted /x{host}/named");
    let run = k
        .cmd()
        .args(["run", "--rm", "hostile-add", "sh", "-c", &script])
        .output()
        .unwrap();
    common::assert_success(&run, "reading what ADD wrote");
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "overwrittenplantedplantednamed"
    );
    c.assert_intact();
}
