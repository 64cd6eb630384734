//! The build shortcuts of issue 14 are exact: a RUN step's overlay upper dir kept as its
//! layer's unpacked tree, a COPY layer unpacked while it is written, and a rebuild after
//! one file changed all give what a cold build from the layer tarballs gives — the same
//! files as the next RUN step sees them, and the same image digest.
//!
//! As root a plain COPY's layer is kept as a chunked erofs image over its blob by default
//! (session 13), else as a tree: the tests hold for both kinds and assert what both do
//! (the new blob derived from the old one); the tree's patch is asserted where a test
//! forces `KEEL_LAYER_FORMAT=tree`.
use std::path::Path;
use std::process::Stdio;

use crate::build::{context, with_base};
use crate::common::{is_root, Keel};
use crate::require;

/// A RUN step that lists every file a step sees (type and mode, owner, size, link count,
/// mtime, content digest), leaving out what the container's own mounts put there (and
/// the mtime of `/etc`, where the listing step itself makes their mount points).
const LISTING: &str = r#"RUN find / -xdev -mindepth 1 \( -path /proc -o -path /sys -o -path /dev -o -path /list -o -path /etc/hosts -o -path /etc/resolv.conf -o -path /etc/hostname \) -prune -o -print | sort | while read -r f; do [ "$f" = /etc ] && continue; stat -c '%n %f %u:%g %s %h %Y' "$f"; if [ -f "$f" ] && [ ! -L "$f" ]; then md5sum < "$f"; fi; done > /list"#;

/// Steps whose layers exercise what an upper dir holds beyond its layer: copied-up but
/// unchanged files, deletions (whiteouts), a directory deleted and made again (opaque),
/// hardlinks, a fifo, a chmod of a lower directory, a COPY of a tree with a symlink.
const STEPS: &str = "FROM bb
COPY app/ /app/
RUN mkdir -p /d/e /x && echo 1 > /d/one && echo 2 > /d/e/two && echo hi > /x/f && echo keep > /x/k
RUN rm -rf /d && mkdir /d && echo new > /d/new && touch /bin/sh && cat /x/k > /dev/null && ln /x/f /x/link && mkfifo /x/fifo && rm /x/f && chmod 700 /x && rm /app/b.txt && echo more >> /app/sub/c.txt
COPY app/a.txt /x/a.txt
";

fn build_id(k: &Keel, ctx: &Path, extra: &[&str]) -> String {
    let out = k
        .cmd()
        .arg("build")
        .args(extra)
        .args(["-t", "out"])
        .arg(ctx)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    crate::common::assert_success(&out, ("keel build", extra));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The two listings agree; otherwise the lines that differ are shown.
/// `keel -v build -t out CTX`, which must succeed: its output and its `-v` log.
fn verbose_build(k: &Keel, ctx: &Path, what: &str) -> (std::process::Output, String) {
    let out = k
        .cmd()
        .args(["-v", "build", "-t", "out"])
        .arg(ctx)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    crate::common::assert_success(&out, what);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, log)
}

fn same_listing(want: &str, have: &str, what: &str) {
    let w: std::collections::BTreeSet<&str> = want.lines().collect();
    let h: std::collections::BTreeSet<&str> = have.lines().collect();
    let missing: Vec<_> = w.difference(&h).collect();
    let extra: Vec<_> = h.difference(&w).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && want.len() == have.len(),
        "a RUN step saw other files {what}: missing {missing:?}, extra {extra:?}"
    );
}

/// [`LISTING`] with every directory's size left out. A chunked COPY layer's image (the
/// default as root) holds directories in 512-byte blocks, so a RUN step sees them as
/// 512 × n bytes where a tree on ext4 shows 4096 × n: a layer kept as a chunked image
/// and the same layer extracted as a tree differ there and nowhere else
/// (docs/store.md, "Directory sizes"), so a step that records them makes another layer.
fn listing_without_dir_sizes() -> String {
    LISTING.replace(
        r#"stat -c '%n %f %u:%g %s %h %Y' "$f";"#,
        r#"if [ -d "$f" ] && [ ! -L "$f" ]; then stat -c '%n %f %u:%g - %h %Y' "$f"; else stat -c '%n %f %u:%g %s %h %Y' "$f"; fi;"#,
    )
}

fn app(k: &Keel, dockerfile: &str) -> std::path::PathBuf {
    let ctx = context(
        k,
        "ctx",
        &[
            ("Dockerfile", dockerfile),
            ("app/a.txt", "a\n"),
            ("app/b.txt", "b\n"),
            ("app/sub/c.txt", "c\n"),
        ],
    );
    std::os::unix::fs::symlink("a.txt", ctx.join("app/link")).unwrap();
    ctx
}

/// The overlay driver's layer cache as it is now, then emptied.
fn drop_layer_cache(k: &Keel) {
    let layers = k.root().join("storage/layers");
    for e in std::fs::read_dir(&layers).unwrap() {
        std::fs::remove_dir_all(e.unwrap().path()).unwrap();
    }
}

/// Break (issue 14): the trees kept from a RUN step's upper dir and unpacked while a COPY
/// layer is written must be exactly what extracting the layer tarballs gives. The next
/// RUN step lists what it sees once over trees extracted from the tarballs (the cache
/// emptied, earlier steps cached) and once over kept trees (--no-cache): the listings
/// and the image digests match, and `keel fsck --full` compares every kept tree with a
/// fresh unpack of its blob.
#[test]
fn kept_layer_trees_are_exactly_the_unpacked_layers() {
    require!(is_root(), "overlay snapshots need root");
    let k = with_base();
    let ctx = app(&k, STEPS);
    build_id(&k, &ctx, &[]);
    let fsck = k.ok(&["fsck", "--full"]);
    assert!(fsck.starts_with("ok"), "{fsck}");
    drop_layer_cache(&k);
    // Without directories' sizes: the COPY layers are kept as chunked images (the
    // default as root) and, above, extracted as trees.
    let listing = listing_without_dir_sizes();
    assert_ne!(listing, LISTING, "the listing's stat command changed");
    std::fs::write(ctx.join("Dockerfile"), format!("{STEPS}{listing}\n")).unwrap();
    let from_tars = build_id(&k, &ctx, &[]);
    let seen_from_tars = k.ok(&["run", "--rm", "out", "cat", "/list"]);
    // Emptied again, so every layer of this build is a tree kept from its step (a
    // complete cache entry is never replaced).
    drop_layer_cache(&k);
    let kept = build_id(&k, &ctx, &["--no-cache"]);
    let seen_kept = k.ok(&["run", "--rm", "out", "cat", "/list"]);
    assert!(seen_kept.contains("/x/link"), "{seen_kept}");
    same_listing(&seen_from_tars, &seen_kept, "over kept trees");
    assert_eq!(from_tars, kept, "kept trees changed the image");
    let fsck = k.ok(&["fsck", "--full"]);
    assert!(fsck.starts_with("ok"), "{fsck}");
}

/// `out` (an incremental build of `ctx` tagged `out`, whose last step writes /list) gave
/// the image a `--no-cache` build of the same context gives, its RUN step saw what a
/// cold build's sees, and the patched trees equal fresh unpacks of their layers.
fn same_as_a_cold_build(k: &Keel, ctx: &Path, out: &std::process::Output, what: &str) {
    let rebuilt = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let seen = k.ok(&["run", "--rm", "out", "cat", "/list"]);
    // The patched tree against a fresh unpack of its blob, file by file.
    let fsck = k.ok(&["fsck", "--full"]);
    assert!(fsck.starts_with("ok"), "{fsck}");
    drop_layer_cache(k);
    let cold = build_id(k, ctx, &["--no-cache"]);
    let seen_cold = k.ok(&["run", "--rm", "out", "cat", "/list"]);
    same_listing(&seen_cold, &seen, &format!("after {what}"));
    assert_eq!(rebuilt, cold, "{what} differs from a --no-cache build");
}

/// The log line of a COPY whose tar was written from the previous layer's blob (either
/// cache kind).
const DERIVED: &str = "wrote the layer from the previous layer's blob";
/// The log line of the tree cache's patch of the previous layer's tree.
const PATCHED: &str = "patching the cached tree of the previous layer";

/// The number after `what` in `log` (`from_old_blob=201` → 201).
fn count_in(log: &str, what: &str) -> Option<u64> {
    log.split_once(what)
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok())
}

/// How many of the layer cache's entries are chunked images (hold a `device`) and how
/// many are not.
fn entry_kinds(k: &Keel) -> (usize, usize) {
    let entries: Vec<_> = std::fs::read_dir(k.root().join("storage/layers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let chunked = entries
        .iter()
        .filter(|e| e.join("device").is_file())
        .count();
    (chunked, entries.len() - chunked)
}

/// The context changes of the one-file rebuild: one file rewritten in place, one grown,
/// one deleted, one added, one chmod-ed, a symlink pointed elsewhere, one added in a new
/// directory.
fn change_many(ctx: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    // Same size, other bytes: only the content comparison can tell.
    std::fs::write(ctx.join("app/many/f007.txt"), "70\n").unwrap();
    std::fs::write(ctx.join("app/many/f009.txt"), "changed\n").unwrap();
    std::fs::remove_file(ctx.join("app/many/f008.txt")).unwrap();
    std::fs::write(ctx.join("app/many/new.txt"), "new\n").unwrap();
    mode(&ctx.join("app/many/new.txt"), 0o644);
    mode(&ctx.join("app/many/f010.txt"), 0o600);
    std::fs::remove_file(ctx.join("app/link")).unwrap();
    std::os::unix::fs::symlink("sub/c.txt", ctx.join("app/link")).unwrap();
    std::fs::create_dir_all(ctx.join("app/newdir/deep")).unwrap();
    std::fs::write(ctx.join("app/newdir/deep/x.txt"), "in a new directory\n").unwrap();
    for d in ["app/newdir", "app/newdir/deep"] {
        mode(&ctx.join(d), 0o755);
    }
    mode(&ctx.join("app/newdir/deep/x.txt"), 0o644);
}

/// Issue 14: a rebuild after context files changed ([`change_many`]) writes the COPY's
/// tar taking every unchanged content from the previous layer's blob and gives the image
/// a `--no-cache` build of the same context gives; the RUN step after the COPY sees the
/// same files, and the new entry equals a fresh unpack of its layer (`fsck --full`). With
/// the tree cache (`tree`) the COPY's previous tree is patched, touching only the entries
/// the previous layer did not have exactly so; with the chunked cache (the default as
/// root) the new layer's image is written over the derived blob, and no tree is made.
fn one_file_changed_rebuild(tree: bool) {
    let k = match tree {
        true => with_base().with_env("KEEL_LAYER_FORMAT", "tree"),
        false => with_base(),
    };
    let ctx = app(&k, &format!("FROM bb\nCOPY app/ /app/\n{LISTING}\n"));
    for i in 0..200 {
        let f = ctx.join(format!("app/many/f{i:03}.txt"));
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, format!("{i:02}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(f.parent().unwrap(), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    build_id(&k, &ctx, &[]);
    change_many(&ctx);
    let (out, log) = verbose_build(&k, &ctx, "the one-file rebuild");
    assert!(
        log.contains(DERIVED),
        "the rebuild did not derive its blob:\n{log}"
    );
    assert_eq!(log.contains(PATCHED), tree, "patched a tree or not:\n{log}");
    // A chunked entry's index is stored with its image (a tree's only once patched), so
    // this rebuild takes the old contents through the cold build's stored index.
    assert_eq!(
        log.contains("stored=true"),
        !tree,
        "the stored index read or not:\n{log}"
    );
    // Every file whose content the old layer had is taken from its blob: the 3 of app/
    // and 198 of the 199 left in many/ (f007 now has what f070 had; f009 is new bytes).
    assert_eq!(
        count_in(&log, "from_old_blob="),
        Some(3 + 198),
        "contents taken from the previous blob:\n{log}"
    );
    assert_eq!(count_in(&log, "refused="), Some(0), "{log}");
    if tree {
        // Of the 200 files and the 4 of app/ (a symlink among them), the deleted one is
        // gone, the three rewritten or chmod-ed, the re-pointed symlink and the two new
        // files are written; all the others are left alone.
        assert_eq!(
            count_in(&log, "unchanged="),
            Some(200 + 4 - 1 - 3 - 1),
            "entries left alone by the patch:\n{log}"
        );
        // The directories the old tree has with their owner and mode (/app, many/,
        // sub/) are neither chowned nor chmodded again; newdir/ and newdir/deep/ are made.
        assert_eq!(
            count_in(&log, "dirs_kept="),
            Some(3),
            "directories left as they were:\n{log}"
        );
    }
    // Both COPY layers' entries (the first build's and this one's) are of the kind asked.
    let (chunked, trees) = entry_kinds(&k);
    match tree {
        true => assert_eq!(chunked, 0, "chunked entries in a tree cache"),
        false => assert!(chunked >= 2, "{chunked} chunked entries, {trees} trees"),
    }
    same_as_a_cold_build(&k, &ctx, &out, "the one-file rebuild");
}

/// [`one_file_changed_rebuild`] with the default cache (chunked COPY layers as root).
#[test]
fn one_file_changed_rebuild_equals_a_no_cache_build() {
    require!(is_root(), "overlay snapshots need root");
    require!(
        crate::erofs::chunk_mounts(),
        "this kernel mounts no chunked erofs image"
    );
    one_file_changed_rebuild(false);
}

/// [`one_file_changed_rebuild`] with the tree cache forced: the previous tree patched.
#[test]
fn one_file_changed_rebuild_with_the_tree_cache_patches_the_tree_exactly() {
    require!(is_root(), "overlay snapshots need root");
    one_file_changed_rebuild(true);
}

/// A RUN step that lists every entry a step sees (type and mode, owner, link count,
/// mtime; a symlink with its target) and the content digest of every file under /app,
/// in two `xargs` calls: [`LISTING`]'s two commands per file take too long for a
/// thousand files. Directory sizes are left out ([`listing_without_dir_sizes`]).
const LISTING_MANY: &str = r#"RUN find / -xdev -mindepth 1 \( -path /proc -o -path /sys -o -path /dev -o -path /list -o -path /etc \) -prune -o -print | sort | xargs stat -c '%N %f %u:%g %h %Y' > /list && find /app -type f | sort | xargs md5sum >> /list"#;

/// The log line of a COPY layer kept as a tree because it was edited (`EditedLayer`).
const EDITED_AS_TREE: &str = "an edited layer of many small files: kept as a tree";

/// Issue 14, the edit loop: under the default format a COPY layer of many small files is
/// a chunked image when built cold; its next version (a file of it edited) is a tree,
/// unpacked whole from the derived stream; the version after that patches that tree.
/// Each gives the image a `--no-cache` build gives, the RUN step after it sees the same
/// files, and `fsck --full` finds the trees sound; a patch that keeps every name skips
/// its sweep, one that drops a file sweeps. Asked for by name
/// (`KEEL_LAYER_FORMAT=chunk`), the layer stays chunked.
#[test]
fn an_edited_layer_of_many_small_files_becomes_a_patched_tree() {
    require!(is_root(), "overlay snapshots need root");
    require!(
        crate::erofs::chunk_mounts(),
        "this kernel mounts no chunked erofs image"
    );
    for format in [None, Some("chunk")] {
        let k = match format {
            Some(f) => with_base().with_env("KEEL_LAYER_FORMAT", f),
            None => with_base(),
        };
        let ctx = app(&k, &format!("FROM bb\nCOPY app/ /app/\n{LISTING_MANY}\n"));
        for i in 0..1100 {
            let f = ctx.join(format!("app/many/f{i:04}.txt"));
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, format!("{i}\n")).unwrap();
        }
        build_id(&k, &ctx, &[]);
        let (chunked_cold, _) = entry_kinds(&k);
        assert!(chunked_cold >= 1, "the cold COPY layer is not chunked");
        std::fs::write(ctx.join("app/many/f0005.txt"), "five\n").unwrap();
        let (first, log) = verbose_build(&k, &ctx, "the first rebuild");
        assert!(log.contains(DERIVED), "not derived:\n{log}");
        assert!(!log.contains(PATCHED), "nothing to patch yet:\n{log}");
        let (chunked, _) = entry_kinds(&k);
        if format.is_some() {
            assert!(!log.contains(EDITED_AS_TREE), "{log}");
            assert_eq!(
                chunked,
                chunked_cold + 1,
                "the asked-for format was not kept"
            );
            same_as_a_cold_build(&k, &ctx, &first, "a rebuild with chunks asked for");
            continue;
        }
        assert!(log.contains(EDITED_AS_TREE), "{log}");
        assert_eq!(
            chunked, chunked_cold,
            "the edited layer was chunked:\n{log}"
        );
        // The converted layer against a build that writes every step again.
        let first_id = String::from_utf8_lossy(&first.stdout).trim().to_string();
        assert_eq!(first_id, build_id(&k, &ctx, &["--no-cache"]));
        let fsck = k.ok(&["fsck", "--full"]);
        assert!(fsck.starts_with("ok"), "{fsck}");
        std::fs::write(ctx.join("app/many/f0006.txt"), "six\n").unwrap();
        let (second, log) = verbose_build(&k, &ctx, "the second rebuild");
        assert!(log.contains(PATCHED), "the tree was not patched:\n{log}");
        // The edit kept every name: the tree's marker named the same entries, so the
        // patch had nothing to sweep (`UnpackOptions::old_names`), and its tree is still
        // exactly a fresh unpack of its layer.
        assert!(log.contains("swept=false"), "the patch swept:\n{log}");
        let fsck = k.ok(&["fsck", "--full"]);
        assert!(fsck.starts_with("ok"), "{fsck}");
        let second_id = String::from_utf8_lossy(&second.stdout).trim().to_string();
        // A file removed: the names differ, and the patch of that tree sweeps.
        std::fs::remove_file(ctx.join("app/many/f0007.txt")).unwrap();
        let (third, log) = verbose_build(&k, &ctx, "the rebuild without a file");
        assert!(
            log.contains("swept=true"),
            "the patch did not sweep:\n{log}"
        );
        same_as_a_cold_build(&k, &ctx, &third, "a patch that removes a file");
        // The unswept tree's image, against a build that writes every step again.
        std::fs::write(ctx.join("app/many/f0007.txt"), "7\n").unwrap();
        assert_eq!(second_id, build_id(&k, &ctx, &["--no-cache"]));
    }
}

/// Issue 14: the previous layer's blob is read, never trusted. Its bytes changed behind
/// keel's back (one unchanged file's content, so the blob no longer hashes to its
/// digest): the rebuild after another file changed still writes that file from the
/// context, and the image is the one a `--no-cache` build gives.
#[test]
fn a_corrupted_previous_blob_never_reaches_the_new_layer() {
    require!(is_root(), "overlay snapshots need root");
    let k = with_base();
    let ctx = app(
        &k,
        "FROM bb\nCOPY app/ /app/\nRUN cat /app/a.txt /app/b.txt > /both\n",
    );
    build_id(&k, &ctx, &[]);
    // The COPY layer's blob: the one tar in the store holding app/b.txt.
    let blobs = k.root().join("images/blobs/sha256");
    let mut hit = 0;
    for e in std::fs::read_dir(&blobs).unwrap() {
        let path = e.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let mut ar = tar::Archive::new(std::io::Cursor::new(bytes.clone()));
        let Ok(entries) = ar.entries() else { continue };
        let at = entries.flatten().find_map(|en| {
            let p = en.path().ok()?.to_string_lossy().into_owned();
            (p == "app/b.txt").then(|| en.raw_file_position() as usize)
        });
        if let Some(at) = at {
            let mut bad = bytes;
            bad[at] = b'X'; // "b\n" becomes "X\n"
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::fs::write(&path, bad).unwrap();
            hit += 1;
        }
    }
    assert_eq!(hit, 1, "the COPY layer's blob was not found");
    std::fs::write(ctx.join("app/a.txt"), "A\n").unwrap();
    let (out, log) = verbose_build(&k, &ctx, "the rebuild over a corrupted blob");
    assert!(log.contains("from_old_blob="), "not derived:\n{log}");
    let rebuilt = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(k.ok(&["run", "--rm", "out", "cat", "/both"]), "A\nb\n");
    drop_layer_cache(&k);
    let cold = build_id(&k, &ctx, &["--no-cache"]);
    assert_eq!(rebuilt, cold, "the corrupted blob reached the new layer");
}

/// Issue 14: a patched COPY tree keeps the index of its layer beside it, and the next
/// rebuild reads that instead of indexing the blob again; a stored index whose bytes
/// changed is not read (the blob is indexed again). Each rebuild still gives the image
/// a `--no-cache` build gives, and `fsck --full` finds the trees sound.
#[test]
fn the_stored_entry_index_is_used_only_when_whole() {
    require!(is_root(), "overlay snapshots need root");
    stored_index_is_used_only_when_whole(true);
    // The default: a chunked entry's index is written as its image is, from the very
    // stream that is the blob, so a cold build's is read by the first rebuild.
    stored_index_is_used_only_when_whole(false);
}

/// The index is stored beside a patched tree (`tree`: a cold build stores none), or
/// beside every chunked image; the next rebuild reads it unless it changed, and each
/// rebuild gives what a cold build gives.
fn stored_index_is_used_only_when_whole(tree: bool) {
    let k = match tree {
        true => with_base().with_env("KEEL_LAYER_FORMAT", "tree"),
        false => with_base(),
    };
    let ctx = app(&k, &format!("FROM bb\nCOPY app/ /app/\n{LISTING}\n"));
    build_id(&k, &ctx, &[]);
    // Rewrites app/a.txt, rebuilds, and checks whether the stored index was read.
    let rebuild = |content: &str, want: bool, why: &str| {
        std::fs::write(ctx.join("app/a.txt"), content).unwrap();
        let (out, log) = verbose_build(&k, &ctx, why);
        let stored = log
            .split_once("stored=")
            .map(|(_, r)| r.starts_with("true"));
        assert_eq!(stored, Some(want), "{why} (tree: {tree}):\n{log}");
        out
    };
    rebuild("A\n", !tree, "the index stored with the cold build");
    rebuild("B\n", true, "the index stored with the first rebuild");
    let idx: Vec<_> = walkdir::WalkDir::new(k.root().join("storage/layers"))
        .max_depth(2)
        .into_iter()
        .flatten()
        .filter(|e| e.file_name() == "entries.idx")
        .map(|e| e.into_path())
        .collect();
    // The COPY layer's current entry; with chunks the ones before it are kept too.
    assert!(!idx.is_empty() && (!tree || idx.len() == 1), "{idx:?}");
    for path in &idx {
        let mut bytes = std::fs::read(path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 1;
        std::fs::write(path, bytes).unwrap();
    }
    let out = rebuild("C\n", false, "a changed index was read");
    same_as_a_cold_build(&k, &ctx, &out, "the rebuild over a changed index");
}

/// Issue 14: `--no-cache` of a COPY whose files did not change writes its layer again
/// but does not unpack it into a temp tree only to throw that away (the layer cache
/// holds its tree already); the next step still sees the layer, and the store is sound.
#[test]
fn a_no_cache_copy_of_a_cached_layer_is_not_unpacked_again() {
    require!(is_root(), "overlay snapshots need root");
    let k = with_base();
    let ctx = app(
        &k,
        "FROM bb\nCOPY app/ /app/\nRUN cat /app/a.txt /app/sub/c.txt > /both\n",
    );
    let first = build_id(&k, &ctx, &[]);
    let out = k
        .cmd()
        .args(["-v", "build", "--no-cache", "-t", "out"])
        .arg(&ctx)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    crate::common::assert_success(&out, "the --no-cache build");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("not unpacked again"),
        "the layer was unpacked again:\n{log}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), first);
    assert_eq!(k.ok(&["run", "--rm", "out", "cat", "/both"]), "a\nc\n");
    let fsck = k.ok(&["fsck", "--full"]);
    assert!(fsck.starts_with("ok"), "{fsck}");
}

/// Issue 14 (session 8): a file the unpacker cannot create (a name longer than the
/// filesystem allows, among hundreds of files on the fast path of an empty tree) fails
/// the layer's extraction with that entry's name, and the layer cache keeps no temp tree
/// and no entry for the layer.
#[test]
fn a_failing_unpack_names_its_entry_and_leaves_no_temp_tree() {
    require!(is_root(), "overlay snapshots need root");
    let k = Keel::new();
    let long = format!("d/{}", "n".repeat(300));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "d/", std::io::empty()).unwrap();
    let names: Vec<String> = (0..600).map(|i| format!("d/f{i:03}")).collect();
    for name in names[..300].iter().chain([&long]).chain(&names[300..]) {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(2);
        b.append_data(&mut h, name, &b"x\n"[..]).unwrap();
    }
    let tar = k.path("long.tar");
    std::fs::write(&tar, b.into_inner().unwrap()).unwrap();
    k.ok(&["import", tar.to_str().unwrap(), "long"]);
    let err = k.fails(&["run", "--rm", "long", "/bin/true"]);
    assert!(err.contains(&format!("{long:?}")), "{err}");
    assert!(err.contains("File name too long"), "{err}");
    let left: Vec<_> = std::fs::read_dir(k.root().join("storage/tmp"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "temp trees left: {left:?}");
    let layers: Vec<_> = std::fs::read_dir(k.root().join("storage/layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(layers.is_empty(), "a layer tree was kept: {layers:?}");
    let fsck = k.ok(&["fsck"]);
    assert!(fsck.starts_with("ok"), "{fsck}");
}

/// The previous build of a step is found by where the step is — the context and the
/// Dockerfile — whatever path spelled them: built as `keel build /abs/ctx`, rebuilt
/// after a change as `keel build .` (and `-f ./Dockerfile`) from inside the context, the
/// COPY still takes the incremental path. It did not: the Dockerfile's path as typed
/// was part of the step's place, so the rebuild was "not built before" and wrote every
/// file again.
#[test]
fn a_rebuild_through_another_path_to_the_context_is_still_incremental() {
    require!(is_root(), "overlay snapshots need root");
    let k = with_base();
    let ctx = app(&k, "FROM bb\nCOPY app/ /app/\n");
    build_id(&k, &ctx, &[]);
    for (n, file) in [(1, None), (2, Some("./Dockerfile"))] {
        std::fs::write(ctx.join("app/a.txt"), format!("changed {n}\n")).unwrap();
        let mut c = k.cmd();
        c.args(["-v", "build", "-t", "out"]);
        if let Some(f) = file {
            c.args(["-f", f]);
        }
        let out = c.arg(".").current_dir(&ctx).stdin(Stdio::null()).output();
        let out = out.unwrap();
        crate::common::assert_success(&out, "the rebuild from inside the context");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            log.contains(DERIVED),
            "rebuild {n} did not take the incremental path:\n{log}"
        );
    }
}

/// The capability (`SCHILY.xattr.security.capability`) of `file` in the last layer of
/// image `image` that has it (from `keel save`); None when that layer's entry has none.
fn layer_capability(k: &Keel, image: &str, file: &str) -> Option<Option<Vec<u8>>> {
    let saved = k.root().with_file_name(format!("saved-{image}.tar"));
    k.ok(&["save", image, "-o", saved.to_str().unwrap()]);
    let mut outer = tar::Archive::new(std::fs::File::open(&saved).unwrap());
    let mut found = None;
    for blob in outer.entries().unwrap() {
        let blob = blob.unwrap();
        // The base's layers may be compressed: anything that is not a plain tar is skipped.
        let mut layer = tar::Archive::new(blob);
        let Ok(entries) = layer.entries() else {
            continue;
        };
        for e in entries {
            let Ok(mut e) = e else { break };
            if e.path().ok().as_deref() != Some(Path::new(file)) {
                continue;
            }
            let cap = e.pax_extensions().ok().flatten().and_then(|pax| {
                pax.filter_map(Result::ok)
                    .find(|x| x.key() == Ok("SCHILY.xattr.security.capability"))
                    .map(|x| x.value_bytes().to_vec())
            });
            found = Some(cap);
        }
    }
    std::fs::remove_file(&saved).unwrap();
    found
}

/// Issue 14: the stat index remembers each context file's capability with its digest,
/// and the COPY's tar writer takes the one the key read, so an unchanged file costs no
/// `lgetxattr`. Exact because `setcap` (or removing a capability) gives the file a new
/// ctime: a capability set between builds changes the key and reaches the layer; kept in
/// the index (the file settled), a later incremental rebuild still writes it; removed, it
/// is gone from key and layer. Each image equals a build of the same context in a store
/// that has no stat index, and the capability is checked in the saved layer itself.
#[test]
fn a_capability_set_or_removed_between_builds_reaches_the_key_and_the_layer() {
    require!(is_root(), "setting file capabilities needs root");
    require!(
        std::process::Command::new("setcap")
            .arg("-v")
            .output()
            .is_ok(),
        "setcap (libcap2-bin) is not installed"
    );
    let k = with_base();
    let fresh = with_base();
    let ctx = app(&k, "FROM bb\nCOPY app/ /app/\n");
    let settle = || std::thread::sleep(std::time::Duration::from_millis(2100));
    let setcap = |args: &[&str]| {
        let st = std::process::Command::new("setcap")
            .args(args)
            .arg(ctx.join("app/a.txt"))
            .status()
            .unwrap();
        assert!(st.success(), "setcap {args:?}");
    };
    // Built once the files settled, so the index is written and trusted from then on.
    settle();
    let plain = build_id(&k, &ctx, &[]);
    let cold = |what: &str| {
        let id = build_id(&fresh, &ctx, &["--no-cache"]);
        let saw = layer_capability(&fresh, "out", "app/a.txt");
        assert!(
            saw.is_some(),
            "app/a.txt is in no layer of the {what} cold build"
        );
        (id, saw.unwrap())
    };
    setcap(&["cap_net_raw+ep"]);
    settle();
    let with_cap = build_id(&k, &ctx, &[]);
    assert_ne!(
        with_cap, plain,
        "a capability set since the last build left the key as it was"
    );
    let (want, cap) = cold("capability");
    assert!(
        cap.is_some(),
        "the cold build's layer has no capability for app/a.txt"
    );
    assert_eq!(
        with_cap, want,
        "the rebuild after setcap differs from a cold build"
    );
    // Another file changes: the capability of a.txt now comes from the index (its entry
    // settled and was written) and the writer takes it from the key's reading.
    std::fs::write(ctx.join("app/b.txt"), "b changed\n").unwrap();
    let (out, log) = verbose_build(&k, &ctx, "the rebuild after another file changed");
    assert!(log.contains(DERIVED), "not incremental:\n{log}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(layer_capability(&k, "out", "app/a.txt"), Some(cap.clone()));
    assert_eq!(
        id,
        cold("indexed capability").0,
        "the index's capability differs"
    );
    setcap(&["-r"]);
    let removed = build_id(&k, &ctx, &[]);
    assert_eq!(layer_capability(&k, "out", "app/a.txt"), Some(None));
    assert_eq!(
        removed,
        cold("removed capability").0,
        "a removed capability stayed"
    );
}
