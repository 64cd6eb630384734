//! Attacker-side tests: the build context and `.dockerignore`. The attacker (or a careless
//! Dockerfile) tries to get a file that `.dockerignore` keeps out into the image: through a
//! pattern keel cannot use, a file it cannot read, or a symlink that leads to the file
//! under another name. Each test saves the built image and looks for the secret's bytes
//! in every layer, so a leak is found whatever path it took.
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{assert_success, Keel};

/// The secret's content; no other file of any test context contains it.
const SECRET: &str = "s3cr3t-token-do-not-ship";

/// Writes `files` (path → content) under a fresh context directory.
fn context(k: &Keel, files: &[(&str, &str)]) -> PathBuf {
    let dir = k.path("ctx");
    for (p, body) in files {
        let f = dir.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, body).unwrap();
    }
    dir
}

fn build(k: &Keel, ctx: &Path, tag: &str) -> Output {
    k.cmd()
        .args(["build", "-t", tag])
        .arg(ctx)
        .output()
        .unwrap()
}

/// Every file of every layer of `image` (path → content), read from `keel save`.
fn image_files(k: &Keel, image: &str) -> BTreeMap<String, Vec<u8>> {
    let tar_path = k.path("saved.tar");
    k.ok(&["save", image, "-o", tar_path.to_str().unwrap()]);
    let mut outer = tar::Archive::new(fs::File::open(&tar_path).unwrap());
    let mut files = BTreeMap::new();
    for e in outer.entries().unwrap() {
        let mut e = e.unwrap();
        let mut blob = Vec::new();
        e.read_to_end(&mut blob).unwrap();
        let raw = if blob.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&blob[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        } else {
            blob
        };
        // JSON blobs are not tars: reading them fails, and they hold no file content.
        let mut layer = tar::Archive::new(&raw[..]);
        let Ok(entries) = layer.entries() else {
            continue;
        };
        for le in entries {
            let Ok(mut le) = le else { break };
            let path = le.path().unwrap().to_string_lossy().into_owned();
            let mut body = Vec::new();
            if le.read_to_end(&mut body).is_err() {
                break;
            }
            files.insert(path, body);
        }
    }
    files
}

/// The secret is in no file of `image`, nor in what keel printed.
fn assert_no_secret(k: &Keel, image: &str, out: &Output) {
    for (path, body) in image_files(k, image) {
        assert!(
            !String::from_utf8_lossy(&body).contains(SECRET),
            "{path} in image {image} carries the ignored secret"
        );
    }
    assert_not_printed(out);
}

fn assert_not_printed(out: &Output) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(SECRET), "keel printed the secret: {text}");
}

/// Builds a context with a secret that `.dockerignore` keeps out; returns the outcome.
/// Either the build fails (what docker does when COPY names a file it never received) or
/// it succeeds without the secret; both are checked here.
fn build_without_secret(k: &Keel, ctx: &Path) -> Output {
    let out = build(k, ctx, "probe");
    if out.status.success() {
        assert_no_secret(k, "probe", &out);
    } else {
        assert_not_printed(&out);
    }
    out
}

/// A symlink to an ignored file, named as a COPY source, must not copy the file (`COPY
/// link` dereferenced `link -> secret.txt` and shipped the secret).
#[test]
fn symlink_to_ignored_file_is_not_dereferenced() {
    let k = Keel::new();
    let ctx = context(
        &k,
        &[
            ("Dockerfile", "FROM scratch\nCOPY link /x\n"),
            (".dockerignore", "secret.txt\n"),
            ("secret.txt", SECRET),
        ],
    );
    symlink("secret.txt", ctx.join("link")).unwrap();
    let out = build_without_secret(&k, &ctx);
    assert!(!out.status.success(), "COPY of a link to an ignored file");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"link\"") && err.contains(".dockerignore"),
        "{err}"
    );
}

/// A path through a symlinked directory reaches an ignored file under a name the
/// patterns do not mention (`alias/secret.key` with `alias -> data`).
#[test]
fn symlinked_directory_does_not_reach_ignored_file() {
    let k = Keel::new();
    let ctx = context(
        &k,
        &[
            ("Dockerfile", "FROM scratch\nCOPY alias/secret.key /x\n"),
            (".dockerignore", "data/secret.key\n"),
            ("data/secret.key", SECRET),
            ("data/ok.txt", "ok"),
        ],
    );
    symlink("data", ctx.join("alias")).unwrap();
    let out = build_without_secret(&k, &ctx);
    assert!(!out.status.success());
}

/// `self -> .` gives every file a second name (`self/.env`) that no pattern matches.
#[test]
fn self_link_does_not_reach_ignored_file() {
    let k = Keel::new();
    let ctx = context(
        &k,
        &[
            ("Dockerfile", "FROM scratch\nCOPY self/.env /x\n"),
            (".dockerignore", ".env\n"),
            (".env", SECRET),
        ],
    );
    symlink(".", ctx.join("self")).unwrap();
    let out = build_without_secret(&k, &ctx);
    assert!(!out.status.success());
}

/// A glob that matches a symlink to an ignored file, and ADD, take the same path.
#[test]
fn glob_and_add_do_not_follow_links_to_ignored_files() {
    for dockerfile in [
        "FROM scratch\nCOPY lin* /x/\n",
        "FROM scratch\nADD link /x\n",
        "FROM scratch\nCOPY alias/* /x/\n",
    ] {
        let k = Keel::new();
        let ctx = context(
            &k,
            &[
                ("Dockerfile", dockerfile),
                (".dockerignore", "secret.txt\nsecret/\n"),
                ("secret.txt", SECRET),
                ("secret/key", SECRET),
            ],
        );
        symlink("secret.txt", ctx.join("link")).unwrap();
        symlink("secret", ctx.join("alias")).unwrap();
        build_without_secret(&k, &ctx);
    }
}

/// Copying a symlinked directory or the whole context keeps the ignored files out, and
/// the allowed files in (so the check above is not vacuous).
#[test]
fn directory_copies_through_links_keep_ignored_files_out() {
    let k = Keel::new();
    let ctx = context(
        &k,
        &[
            (
                "Dockerfile",
                "FROM scratch\nCOPY alias/ /a/\nCOPY . /all/\nCOPY self/data/ /s/\n",
            ),
            (".dockerignore", "data/secret.key\n"),
            ("data/secret.key", SECRET),
            ("data/ok.txt", "ok"),
        ],
    );
    symlink("data", ctx.join("alias")).unwrap();
    symlink(".", ctx.join("self")).unwrap();
    let out = build_without_secret(&k, &ctx);
    assert_success(&out, "keel build");
    let files = image_files(&k, "probe");
    for want in ["a/ok.txt", "all/data/ok.txt", "s/ok.txt"] {
        assert!(
            files.contains_key(want),
            "{want} missing: {:?}",
            files.keys()
        );
    }
}

/// Builds with `ignore` as the `.dockerignore` bytes; the build must fail, naming the
/// file and `line`, and send nothing.
fn assert_ignore_file_rejected(ignore: &[u8], line: usize, mentions: &[&str]) {
    let k = Keel::new();
    let ctx = context(
        &k,
        &[
            ("Dockerfile", "FROM scratch\nCOPY . /x/\n"),
            ("Local-Only/secret.txt", SECRET),
            ("secret.txt", SECRET),
        ],
    );
    fs::write(ctx.join(".dockerignore"), ignore).unwrap();
    let out = build(&k, &ctx, "probe");
    assert_not_printed(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a .dockerignore keel cannot use must fail the build, not ignore nothing: {err}"
    );
    let place = format!(".dockerignore:{line}:");
    assert!(err.contains(&place), "error does not name {place}: {err}");
    for m in mentions {
        assert!(err.contains(m), "error does not mention {m:?}: {err}");
    }
}

/// `[Local-Only]/` has a reversed range (`l-O`): Docker rejects it when it first matches
/// and fails the build; keel dropped the whole file and sent the secrets.
#[test]
fn dockerignore_with_bad_range_fails_the_build() {
    assert_ignore_file_rejected(
        b"# local files\nsecret.txt\n[Local-Only]/\n",
        3,
        &["[Local-Only]"],
    );
}

/// Patterns that fail Go's `filepath.Match` syntax check name the pattern too.
#[test]
fn dockerignore_with_malformed_patterns_fails_the_build() {
    assert_ignore_file_rejected(b"secret.txt\n\n*.log\n[abc\n", 4, &["[abc"]);
    assert_ignore_file_rejected(b"secret.txt\n!\n", 2, &["\"!\""]);
}

/// A byte that is not UTF-8 made the whole file unreadable, so nothing was ignored.
#[test]
fn dockerignore_that_is_not_utf8_fails_the_build() {
    assert_ignore_file_rejected(
        b"secret.txt\nLocal-Only\ncaf\xe9/\n",
        3,
        &["offset 25 (column 4)", "UTF-8"],
    );
}

/// A `.dockerignore` that exists but cannot be read (here: a directory) is an error too.
#[test]
fn unreadable_dockerignore_fails_the_build() {
    let k = Keel::new();
    let ctx = context(
        &k,
        &[
            ("Dockerfile", "FROM scratch\nCOPY . /x/\n"),
            (".dockerignore/x", "secret.txt\n"),
            ("secret.txt", SECRET),
        ],
    );
    let out = build(&k, &ctx, "probe");
    assert_not_printed(&out);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(".dockerignore"), "{err}");
}

/// `RUN --mount=type=bind` from the context mounted the host's context directory, so a
/// step could read (and with `rw`, a later layer could keep) every ignored file. BuildKit
/// mounts the context it received, which never holds them.
#[test]
fn run_bind_mount_of_context_hides_ignored_files() {
    crate::require!(crate::common::is_root(), "RUN steps need root");
    for mount in ["target=/ctx", "target=/ctx,rw", "source=sub,target=/ctx"] {
        let k = Keel::new();
        k.ok(&["bootstrap", "busybox", "bb"]);
        let run = format!(
            "FROM bb\nRUN --mount=type=bind,{mount} \
             cat /ctx/secret.txt /ctx/sub/secret.txt /ctx/link /ctx/sub/link \
             > /found 2>/dev/null; ls -a /ctx > /listing\n"
        );
        let ctx = context(
            &k,
            &[
                ("Dockerfile", &run),
                (".dockerignore", "secret.txt\n**/secret.txt\n"),
                ("secret.txt", SECRET),
                ("sub/secret.txt", SECRET),
                ("sub/ok.txt", "ok"),
                ("ok.txt", "ok"),
            ],
        );
        symlink("secret.txt", ctx.join("link")).unwrap();
        symlink("../secret.txt", ctx.join("sub/link")).unwrap();
        let out = build_without_secret(&k, &ctx);
        assert_success(&out, ("keel build", mount));
        let files = image_files(&k, "probe");
        let listing = String::from_utf8_lossy(&files["listing"]);
        assert!(listing.contains("ok.txt"), "{mount}: {listing}");
        assert!(!listing.contains("secret.txt"), "{mount}: {listing}");
        assert_eq!(fs::read(ctx.join("secret.txt")).unwrap(), SECRET.as_bytes());
    }
}
