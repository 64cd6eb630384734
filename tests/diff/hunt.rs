//! Session 9's cases: where keel's image was found to differ from `docker build`'s, or
//! was checked and found the same (empty directory sources, archives ADD extracts, long
//! names, odd owners and values). Each divergence from buildah 1.28 cites BuildKit.
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::Case;

fn mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// Runs `sh -c script` in the context directory (compressors, setcap, touch).
fn sh(dir: &Path, script: &str) {
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success(), "{script}");
}

// ---- empty directory sources -------------------------------------------------------

/// `COPY empty/ /app/` creates `/app` even though there is nothing to copy into it:
/// BuildKit makes the destination of a directory's contents first (tonistiigi/fsutil
/// `copy/copy.go` `prepareTargetDir`: `MkdirAll(dest, 0755, chown)`), 0755, owned by
/// `--chown`'s owner or root; an existing destination is left as it is.
#[test]
fn copy_empty_dir_creates_dest() {
    Case::new(
        "copy_empty_dir_creates_dest",
        "FROM bb\nCOPY empty/ /app/\nCOPY --chown=1:1 empty /owned/deep\nCOPY empty /etc/\nWORKDIR /w\nCOPY empty rel\n",
    )
    .file("empty/", "")
    .setup(|d| mode(&d.join("empty"), 0o700))
    .check();
}

/// The same from a stage, with ADD, and through a wildcard that matches only empty
/// directories (each match is a directory source: fsutil `Copy` runs `prepareTargetDir`
/// per match).
#[test]
fn copy_empty_dir_from_stage_add_and_wildcard() {
    Case::new(
        "copy_empty_dir_from_stage_add_and_wildcard",
        "FROM bb AS s\nRUN mkdir -p /e /full && echo f > /full/f\nFROM bb\nCOPY --from=s /e/ /x/\nADD empty /added/\nCOPY e? /wild/\n",
    )
    .file("empty/", "")
    .file("e1/", "")
    .file("e2/", "")
    .check();
}

// ---- the hunt ----------------------------------------------------------------------

/// Two hard-linked context files: one file and a hard link to it, as docker's copy keeps
/// links within a copy (tonistiigi/fsutil `copy/copy.go`: `getLinkSource` → `os.Link`),
/// and the layer keeps them (a hard link entry); two sources stay two files (each is
/// its own fsutil `Copy`). keel used to write `/h/b` as a second file. The ADD extracts
/// an archive too, so its copy goes through a writable tree (`step::apply_copy`).
#[test]
fn copy_hardlinks() {
    Case::new(
        "copy_hardlinks",
        "FROM bb\nCOPY h/ /h/\nCOPY h/a h/b /two/\nADD t.tar h /added/\n",
    )
    .file("h/a", "same inode\n")
    .file("h/sub/c", "deeper\n")
    .setup(|d| {
        std::fs::hard_link(d.join("h/a"), d.join("h/b")).unwrap();
        std::fs::hard_link(d.join("h/sub/c"), d.join("h/0c")).unwrap();
        tar_of(d, "t.tar", &[("t/one", b"1")]);
    })
    .check();
}

fn tar_of(d: &Path, name: &str, entries: &[(&str, &[u8])]) {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        // Written raw: the tar crate refuses absolute and `..` names through set_path.
        let raw = &mut h.as_old_mut().name;
        raw[..p.len()].copy_from_slice(p.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    std::fs::write(d.join(name), b.into_inner().unwrap()).unwrap();
}

/// ADD extracts a local tar in any compression docker's `archive.DecompressStream`
/// knows: gzip, bzip2, xz and zstd (Dockerfile reference, ADD: "identity, gzip, bzip2
/// or xz"). keel used to copy `.tar.xz` and `.tar.bz2` as files.
#[test]
fn add_tar_xz_bz2_zst() {
    Case::new(
        "add_tar_xz_bz2_zst",
        "FROM bb\nADD a.tar.xz /xz/\nADD a.tar.bz2 /bz2/\nADD a.tar.zst /zst/\n",
    )
    .setup(|d| {
        tar_of(d, "a.tar", &[("t/one", b"1"), ("t/two", b"22")]);
        sh(
            d,
            "xz -k a.tar && bzip2 -k a.tar && zstd -q a.tar && rm a.tar",
        );
    })
    .check();
}

/// A tar whose entries have absolute names extracts them under the destination
/// (docker's `archive.Untar` joins every cleaned name to the destination; so do hard
/// link targets). keel used to refuse the archive ("absolute paths are not allowed in
/// a layer").
#[test]
fn add_tar_absolute_names() {
    Case::new("add_tar_absolute_names", "FROM bb\nADD abs.tar /abs/\n")
        .setup(|d| {
            tar_of(d, "abs.tar", &[("/etc/f", b"f"), ("./g", b"g")]);
            // And a hard link whose target is absolute: appended before the end blocks.
            let mut raw = std::fs::read(d.join("abs.tar")).unwrap();
            raw.truncate(raw.len() - 1024);
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Link);
            h.set_mode(0o644);
            h.set_size(0);
            h.as_old_mut().name[..9].copy_from_slice(b"/etc/link");
            h.as_old_mut().linkname[..6].copy_from_slice(b"/etc/f");
            h.set_cksum();
            raw.extend_from_slice(h.as_bytes());
            raw.extend_from_slice(&[0; 1024]);
            std::fs::write(d.join("abs.tar"), raw).unwrap();
        })
        .check();
}

/// A file named `.tar` that is not an archive is copied as it is.
#[test]
fn add_not_archive_named_tar() {
    Case::new("add_not_archive_named_tar", "FROM bb\nADD fake.tar /d/\n")
        .file("fake.tar", "not an archive at all\n")
        .check();
}

/// `--chmod` applies to every file and directory a directory source copies (fsutil
/// `copyFileInfo` sets the mode on each created entry), not to the destination made
/// for it.
#[test]
fn copy_chmod_dir_source() {
    Case::new("copy_chmod_dir_source", "FROM bb\nCOPY --chmod=710 d /x/\n")
        .file("d/f", "f")
        .file("d/sub/g", "g")
        .check();
}

/// WORKDIR on an existing symlink to a directory: the link stays, RUN works through it.
#[test]
fn workdir_on_symlink() {
    Case::new(
        "workdir_on_symlink",
        "FROM bb\nRUN mkdir /real && ln -s /real /lnk\nWORKDIR /lnk\nRUN touch here && pwd > /pwd\nCOPY a .\n",
    )
    .file("a", "a")
    .check();
}

/// `USER name`: the primary group from /etc/passwd, supplementary groups from
/// /etc/group (runc `GetExecUser`, implicit form only), the primary group among them
/// (moby/buildkit#3651); `USER name:group` has just that group. keel's RUN had left the
/// primary group out, and `name:group` had no groups at all.
#[test]
fn user_groups_from_etc_group() {
    Case::new(
        "user_groups_from_etc_group",
        "FROM bb\nRUN echo 'app:x:1234:4321::/home/app:/bin/sh' >> /etc/passwd && echo 'appg:x:4321:' >> /etc/group && echo 'extra:x:999:app' >> /etc/group && mkdir /o && chmod 777 /o\nUSER app\nRUN id > /o/id && touch /o/made\nUSER app:extra\nRUN id > /o/id2\n",
    )
    .check();
}

/// `ENV A=` and `ENV B=""` set empty values; RUN sees them.
#[test]
fn env_empty_values() {
    Case::new(
        "env_empty_values",
        "FROM bb\nENV A= B=\"\" C=x\nENV D \"\"\nRUN env | grep -E '^(A|B|C|D)=' | sort > /env\n",
    )
    .check();
}

/// LABEL values continued over lines, and with an escaped newline.
#[test]
fn label_multiline() {
    Case::new(
        "label_multiline",
        "FROM bb\nLABEL a=\"one \\\n  two\" b=\"x\\ny\" c=one\\ two\n",
    )
    .check();
}

/// `--chown=UID` without a group: the group is the uid's own number (BuildKit
/// `readUser`: `UserOpt_ByID` sets both ids), also for a uid /etc/passwd lacks.
#[test]
fn copy_chown_uid_only() {
    Case::new(
        "copy_chown_uid_only",
        "FROM bb\nCOPY --chown=7 a /a\nCOPY --chown=4242 a /b\nCOPY --chown=daemon a /c\n",
    )
    .file("a", "a")
    .check();
}

/// Names over tar's 100 bytes (PAX or GNU long names) round-trip, also for links.
#[test]
fn long_names() {
    let long = "n".repeat(150);
    let deep = format!("{}/{}/{}", "d".repeat(90), "e".repeat(90), "f".repeat(90));
    Case::new("long_names", "FROM bb\nCOPY l/ /l/\n")
        .file(&format!("l/{long}"), "long")
        .file(&format!("l/{deep}/x"), "deep")
        .setup(|d| {
            let long = "n".repeat(150);
            std::os::unix::fs::symlink(&long, d.join(format!("l/{}", "s".repeat(120)))).unwrap();
        })
        .check();
}

/// A context file's `security.capability` (setcap) survives COPY: BuildKit copies
/// xattrs (fsutil `copyXAttrs`) and its layer keeps the capability (containerd
/// `archive/tar.go` writes `SCHILY.xattr.security.capability`).
#[test]
fn copy_keeps_file_capabilities() {
    // The ADD also extracts an archive, so it copies through a writable tree
    // (`step::apply_copy`), not straight into the layer.
    Case::new(
        "copy_keeps_file_capabilities",
        "FROM bb\nCOPY ping /bin2/\nADD t.tar ping /add/\n",
    )
    .file("ping", "#!/bin/sh\n")
    .setup(|d| {
        tar_of(d, "t.tar", &[("t/one", b"1")]);
        sh(d, "setcap cap_net_raw+ep ping");
    })
    .check();
}

/// The history a Dockerfile build writes, as BuildKit writes it (moby/buildkit
/// `frontend/dockerfile/dockerfile2llb/convert.go` `commitToHistory`): the instruction
/// as `created_by` (no `/bin/sh -c #(nop)`, which is the legacy builder's and buildah's
/// form, so buildah is no reference here), ` # buildkit` after a step with a layer (RUN,
/// COPY, ADD; not WORKDIR), the comment `buildkit.dockerfile.v0` on each, `empty_layer`
/// on each without a layer. keel checked alone: the entries after the base's.
#[test]
fn history_as_buildkit_writes_it() {
    if !crate::ready() {
        return;
    }
    let k = crate::common::Keel::new();
    k.ok(&["bootstrap", "busybox", "bb"]);
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM bb\nENV A=x\nRUN echo hi > /f\nCOPY a /a\nWORKDIR /w\nLABEL l=1\nCMD [\"x\"]\nADD a /b\n",
    )
    .unwrap();
    std::fs::write(ctx.join("a"), "a").unwrap();
    k.ok(&["build", "-q", "-t", "h", ctx.to_str().unwrap()]);
    let out = k.ok(&["inspect", "h"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let history = v[0]["Config"]["history"].as_array().unwrap();
    let got: Vec<(String, String, bool)> = history[history.len() - 7..]
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap_or("").to_string(),
                h["comment"].as_str().unwrap_or("").to_string(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    let c = "buildkit.dockerfile.v0";
    let want = [
        ("ENV A=x", true),
        ("RUN /bin/sh -c echo hi > /f # buildkit", false),
        ("COPY a /a # buildkit", false),
        ("WORKDIR /w", false),
        ("LABEL l=1", true),
        ("CMD [\"x\"]", true),
        ("ADD a /b # buildkit", false),
    ];
    let want: Vec<(String, String, bool)> = want
        .iter()
        .map(|(b, e)| (b.to_string(), c.to_string(), *e))
        .collect();
    assert_eq!(got, want);
}
