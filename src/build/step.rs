//! Executing the steps that change the filesystem: RUN in a container of the step's
//! snapshot, COPY/ADD into the snapshot; then committing the snapshot's changeset as a
//! reproducible layer. Everything else a build does is metadata.
use crate::sys::hostfs;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::build::copy::{CopyOp, Owner};
use crate::context::{Context, FileKind};
use crate::image::StoredLayer;
use crate::layer;
use crate::runtime::{self, ContainerSpec, Isolation};
use crate::storage::{self, LayerBlob, Snapshot, Snapshotter};
use crate::store::Store;
use crate::sys::rootfs::{Dir, Kind, Rootfs};

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("the command exited with status {code}{}", show_tail(tail))]
    Failed { code: i32, tail: Vec<String> },
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error(transparent)]
    Layer(#[from] layer::LayerError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Rootfs(#[from] crate::sys::rootfs::RootfsError),
    #[error("copying into {dest}: {why}")]
    Copy { dest: String, why: String },
    #[error(transparent)]
    Archive(#[from] crate::build::copy_archive::ArchiveError),
}

fn show_tail(tail: &[String]) -> String {
    if tail.is_empty() {
        return String::new();
    }
    format!("; its last output:\n  {}", tail.join("\n  "))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StepError + '_ {
    move |source| StepError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The layers below a step, as the storage driver wants them.
pub fn layer_blobs(store: &Store, layers: &[StoredLayer]) -> Vec<LayerBlob> {
    layers
        .iter()
        .map(|l| LayerBlob {
            diff_id: l.diff_id.clone(),
            blob: store.blob_path(l.descriptor.digest()),
        })
        .collect()
}

/// Commits what changed in `snap` as one layer; `None` when nothing changed.
pub fn commit(
    store: &Store,
    snapshotter: &dyn Snapshotter,
    snap: &Snapshot,
    epoch: Option<u64>,
) -> Result<Option<StoredLayer>, StepError> {
    let changes = snapshotter.changes(snap)?;
    if changes.is_empty() {
        return Ok(None);
    }
    let mut blob = store.blob_writer()?;
    let opts = layer::pack::PackOptions {
        epoch,
        ..Default::default()
    };
    layer::pack::pack(&changes, &snap.rootfs, &mut blob, &opts)?;
    Ok(Some(stored(blob)?))
}

/// Stores a finished layer tar (uncompressed, so its digest is also its diff_id).
pub fn stored(blob: crate::store::BlobWriter) -> Result<StoredLayer, StepError> {
    let (digest, size) = blob.commit(None)?;
    Ok(StoredLayer::uncompressed(digest, size))
}

/// Runs `spec` in `snap`, streaming its output line by line to `line` (and the log file);
/// a non-zero exit is an error carrying the last lines.
pub fn run(
    backend: &dyn Isolation,
    spec: &ContainerSpec,
    snap: &Snapshot,
    log: &Path,
    line: impl FnMut(&str),
) -> Result<(), StepError> {
    run_ended(backend, spec, snap, log, line).map(|_| ())
}

/// [`run`], saying whether every process of the container is known to have ended
/// (`Container::wait_all`: its PID namespace's init was reaped), so that nothing can
/// still use the snapshot.
pub fn run_ended(
    backend: &dyn Isolation,
    spec: &ContainerSpec,
    snap: &Snapshot,
    log: &Path,
    mut line: impl FnMut(&str),
) -> Result<bool, StepError> {
    tracing::debug!(backend = backend.name(), rootfs = %snap.rootfs.display(), args = ?spec.args, mounts = spec.mounts.len(), "starting the RUN container");
    tracing::trace!(mounts = ?spec.mounts, "RUN mounts");
    let (read_end, write_end) = crate::sys::proc::pipe().map_err(runtime::RuntimeError::from)?;
    let err_end = write_end.try_clone().map_err(io(log))?;
    let stdin = fs::File::open("/dev/null")
        .map(OwnedFd::from)
        .map_err(io(Path::new("/dev/null")))?;
    let mut container = backend.start(
        spec,
        &snap.rootfs,
        runtime::Stdio {
            stdin: Some(stdin),
            stdout: Some(write_end),
            stderr: Some(err_end),
            ..Default::default()
        },
    )?;
    container.forward_signals()?;
    crate::fault::point("build.run-started");
    if let Some(sig) = crate::sys::proc::termination_requested() {
        // Asked to stop while the container was starting: it missed the forwarded signal.
        let _ = container.kill(sig);
    }
    let mut logf = hostfs::open_with(fs::OpenOptions::new().create(true).append(true), log)
        .map_err(io(log))?;
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for l in BufReader::new(fs::File::from(read_end)).split(b'\n') {
        let l = String::from_utf8_lossy(&l.map_err(io(log))?).into_owned();
        use std::io::Write;
        let _ = writeln!(logf, "{l}");
        line(&l);
        tail.push_back(l);
        if tail.len() > 20 {
            tail.pop_front();
        }
    }
    let (exit, all_ended) = container.wait_all()?;
    if let Some(msg) = &exit.exec_error {
        tail.push_back(msg.clone());
    }
    if exit.code != 0 {
        return Err(StepError::Failed {
            code: exit.code,
            tail: tail.into(),
        });
    }
    Ok(all_ended)
}

/// Whether container path `p` is a directory in `rootfs` (symlinks followed inside it).
pub fn is_dir_in(rootfs: &Path, p: &str) -> bool {
    Rootfs::open(rootfs)
        .and_then(|t| t.stat(Path::new(p)))
        .is_ok_and(|s| s.is_some_and(|s| s.kind == Kind::Dir))
}

/// Writes the planned copy into the rootfs: every destination is resolved inside the
/// tree, and the final name is replaced, never followed.
/// Directories the copy has to create get `dirs_owner` (COPY --chown's owner; BuildKit
/// creates the destination and its missing parents with it), else root.
pub fn apply_copy(
    ctx: &Context,
    rootfs: &Path,
    ops: &[CopyOp],
    dirs_owner: Option<Owner>,
) -> Result<(), StepError> {
    let tree = Rootfs::open(rootfs)?;
    let dirs_owner = dirs_owner.map(|o| (o.uid, o.gid));
    // Each destination directory is resolved inside the rootfs once, not once per file.
    let mut dirs: std::collections::HashMap<String, Dir> = std::collections::HashMap::new();
    // Files written so far that hard links may point at (`CopyOp::link_to`).
    let mut linked: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for op in ops {
        let parent = Path::new(&op.dest)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into());
        if !dirs.contains_key(&parent) {
            let d = tree.mkdir_all(Path::new(&parent), 0o755, dirs_owner)?;
            dirs.insert(parent.clone(), d);
        }
        let dir = &dirs[&parent];
        let name = Path::new(&op.dest)
            .file_name()
            .ok_or_else(|| StepError::Copy {
                dest: op.dest.clone(),
                why: "no file name".into(),
            })?
            .to_os_string();
        let existing = dir.stat(&name)?.map(|s| s.kind);
        let src = ctx.path_of(&op.src);
        match op.kind {
            FileKind::Dir => {
                if existing != Some(Kind::Dir) {
                    dir.remove_all(&name)?;
                    dir.mkdir(&name, 0o755)?;
                }
            }
            FileKind::File if linked.contains(op.link_to.as_deref().unwrap_or("")) => {
                dir.remove_all(&name)?;
                let to = op.link_to.as_deref().unwrap_or_default();
                tree.hardlink(Path::new(to), Path::new(&op.dest))?;
                continue; // the link shares the target's owner, mode and xattrs
            }
            FileKind::File => {
                dir.remove_all(&name)?;
                let mut from = fs::File::open(&src).map_err(io(&src))?;
                let mut to = dir.create_file(&name, 0o600)?;
                crate::sys::btrfs::clone_or_copy(&mut from, &mut to, &src).map_err(io(&src))?;
            }
            FileKind::Symlink => {
                dir.remove_all(&name)?;
                dir.symlink(
                    std::ffi::OsStr::new(op.link_target.as_deref().unwrap_or("")),
                    &name,
                )?;
            }
        }
        dir.lchown(&name, op.owner.uid, op.owner.gid)?;
        if op.kind != FileKind::Symlink {
            dir.chmod(&name, op.mode)?;
        }
        // After the chown, which would clear it.
        if let Some(cap) = file_capability(op.kind, &src) {
            dir.set_xattr(&name, CAPABILITY, &cap)?;
        }
        if op.kind == FileKind::Dir {
            let sub = dir.subdir(&name)?;
            dirs.insert(op.dest.clone(), sub);
        }
        if op.kind == FileKind::File && op.link_to.is_none() {
            linked.insert(op.dest.as_str());
        }
    }
    Ok(())
}

/// Prepares a snapshot for a step, naming it so leftovers are recognisable.
pub fn snapshot(
    store: &Store,
    snapshotter: &dyn Snapshotter,
    id: &str,
    layers: &[StoredLayer],
) -> Result<Snapshot, StepError> {
    Ok(snapshotter.prepare_scratch(id, &layer_blobs(store, layers))?)
}

/// A read-only view of `layers` for a step that only looks at the tree below it
/// (`Snapshotter::prepare_view`).
pub fn view(
    store: &Store,
    snapshotter: &dyn Snapshotter,
    id: &str,
    layers: &[StoredLayer],
) -> Result<Snapshot, StepError> {
    Ok(snapshotter.prepare_view(id, &layer_blobs(store, layers))?)
}

/// Where a container directory lands in the image, and the directories a layer has to
/// create on the way: the longest existing prefix is resolved inside the image (so
/// symlinked directories like `/var/run` are followed), the rest is new.
fn canonical_dir(
    tree: &Rootfs,
    dir: &str,
    created: &mut std::collections::BTreeSet<String>,
) -> Result<String, StepError> {
    let parts: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
    for keep in (0..=parts.len()).rev() {
        let prefix = parts[..keep].join("/");
        let Ok(Some(stat)) = tree.stat(Path::new(&prefix)) else {
            continue;
        };
        if stat.kind != Kind::Dir {
            return Err(StepError::Copy {
                dest: dir.to_string(),
                why: format!("/{prefix} is not a directory in the image"),
            });
        }
        // Where the prefix landed, relative to the root of the tree.
        let rel = tree.in_tree_path(Path::new(&prefix))?;
        let mut canon = rel.to_string_lossy().into_owned();
        for c in &parts[keep..] {
            canon = if canon.is_empty() {
                c.to_string()
            } else {
                format!("{canon}/{c}")
            };
            created.insert(canon.clone());
        }
        return Ok(canon);
    }
    Err(StepError::Copy {
        dest: dir.to_string(),
        why: "cannot be resolved in the image".into(),
    })
}

/// The directories above the copied entries that the image already has, with their mode
/// and owner: the layer carries them as they are (as `layer::pack` does), since a layer
/// without them gets them made with default metadata when it is unpacked, and an overlay
/// of that layer would then hide their real owner and mode. Each ancestor is looked at
/// once: siblings share theirs, and an ancestor seen before had its own ancestors seen
/// then (10,000 files in 100 directories: 100 looks, not 30,000).
fn existing_parents(
    tree: &Rootfs,
    entries: &std::collections::BTreeMap<String, &CopyOp>,
    created: &std::collections::BTreeSet<String>,
) -> Result<std::collections::BTreeMap<String, (u32, u32, u32)>, StepError> {
    let mut out = std::collections::BTreeMap::new();
    let mut seen: foldhash::HashSet<&Path> = foldhash::HashSet::default();
    for path in entries.keys().chain(created.iter()) {
        for anc in Path::new(path).ancestors().skip(1) {
            if anc.as_os_str().is_empty() || !seen.insert(anc) {
                break;
            }
            let a = anc.to_string_lossy();
            if entries.contains_key(a.as_ref()) || created.contains(a.as_ref()) {
                continue;
            }
            if let Some(st) = tree.lstat(anc)?.filter(|st| st.kind == Kind::Dir) {
                out.insert(a.into_owned(), (st.mode & 0o7777, st.uid, st.gid));
            }
        }
    }
    Ok(out)
}

/// Sorts a layer's paths into tar order: by path components, as `layer::pack` orders
/// a changeset. When every path is clean (no empty, `.` or `..` component, no leading or
/// trailing `/`, no NUL), that is the order of the bytes with `/` below every other byte (a name
/// holds no NUL), compared without splitting each path into components for each of the
/// ~130,000 comparisons a 10,000-file copy's sort makes; any other path keeps the
/// component comparison for the whole sort.
fn sort_in_tar_order<T>(all: &mut [(String, T)]) {
    let clean = |p: &str| {
        let name = |c: &str| !c.is_empty() && c != "." && c != ".." && !c.contains('\0');
        !p.is_empty() && p.split('/').all(name)
    };
    if all.iter().all(|(p, _)| clean(p)) {
        fn key(p: &str) -> impl Iterator<Item = u8> + '_ {
            p.bytes().map(|b| if b == b'/' { 0 } else { b })
        }
        all.sort_by(|(a, _), (b, _)| key(a).cmp(key(b)));
    } else {
        all.sort_by(|(a, _), (b, _)| Path::new(a).components().cmp(Path::new(b).components()));
    }
}

/// Commits a COPY as a layer written straight from its sources: each copied entry with the
/// path, mode and owner the plan gave it, plus the directories the copy creates. Nothing
/// is copied into a snapshot first, so large copies cost one read and one write. The
/// directories it creates are owned by `dirs_owner` (as in `apply_copy`), else root.
pub fn commit_copy(
    store: &Store,
    ctx: &Context,
    rootfs: &Path,
    ops: &[CopyOp],
    dirs_owner: Option<Owner>,
    epoch: Option<u64>,
) -> Result<Option<StoredLayer>, StepError> {
    let sinks = CopySinks::default();
    let layer = commit_copy_into(store, ctx, rootfs, ops, dirs_owner, epoch, sinks)?;
    Ok(layer.map(|(l, _)| l))
}

/// Where a copy's layer goes besides the store: the directory it is unpacked into while
/// written (`layer::tee`) — an empty one, or (with the old layer's entry index) one
/// holding an earlier version of the layer to patch (`reuse`: entries the index has
/// exactly so are left alone) — and the old layer's blob to take unchanged content from.
#[derive(Default)]
pub struct CopySinks<'a> {
    pub unpack_into: Option<(
        layer::tee::SideSink<'a>,
        Option<std::sync::Arc<layer::index::EntryIndex>>,
    )>,
    /// With an index in `unpack_into`: the names of the tree's entries as its stream gave
    /// them, hashed (`layer::unpack::UnpackOptions::old_names`).
    pub old_names: Option<String>,
    /// The previous version of a layer as a source of content (`layer::derive`): a file
    /// whose sha256 the key computation read (`known`) and the old blob holds is copied
    /// from there — every byte hashed again on the way — instead of read from the context.
    pub derive: Option<layer::derive::OldBlob>,
    /// What the key computation read of the copy's files (none: each file's capability
    /// is read here, and no content is taken from `derive`).
    pub known: Option<KnownFiles<'a>>,
}

/// A copy's regular files as the key computation read them (through the stat index):
/// their content digests, and the capability of those in `digests` that have one (the
/// others have none). The layer then carries what its key says, with no `lgetxattr` per
/// file, and one lookup per file serves both.
pub struct KnownFiles<'a> {
    pub digests: &'a KnownDigests,
    pub caps: &'a foldhash::HashMap<String, Vec<u8>>,
}

/// Content digests of a copy's regular files by context path: recorded as the key
/// computation reads them, then sorted ([`KnownDigests::seal`]); looked up by the layer's
/// writer in about that order, through a cursor (`context::find_from`). A copy's 10,000 lookups then read the list in sequence instead
/// of hashing into a map whose buckets and keys each missed the cache (~2.6 ms of the
/// one-file edit's stream: docs/performance.md, session 21).
#[derive(Default)]
pub struct KnownDigests {
    entries: Vec<(String, layer::index::ContentDigest)>,
    next: std::cell::Cell<usize>,
}

impl KnownDigests {
    pub fn reserve(&mut self, n: usize) {
        self.entries.reserve(n);
    }

    /// Records `rel`'s digest; of a path recorded twice the last one counts.
    pub fn insert(&mut self, rel: String, digest: layer::index::ContentDigest) {
        self.entries.push((rel, digest));
    }

    /// Sorts what was recorded, for [`KnownDigests::get`] (the walk's order already, for
    /// a single source).
    pub fn seal(&mut self) {
        self.entries.reverse();
        self.entries.sort_by(|a, b| a.0.cmp(&b.0)); // stable: the last recorded first
        self.entries.dedup_by(|later, first| later.0 == first.0);
        self.next.set(0);
    }

    /// `rel`'s digest, if recorded (after [`KnownDigests::seal`]).
    pub fn get(&self, rel: &str) -> Option<&layer::index::ContentDigest> {
        let at =
            crate::context::find_from(&self.entries, self.next.get(), |e| e.0.as_str().cmp(rel))?;
        self.next.set(at + 1);
        Some(&self.entries[at].1)
    }
}

impl KnownFiles<'_> {
    /// `op`'s content digest, if the key read it.
    fn digest(&self, op: &CopyOp) -> Option<&layer::index::ContentDigest> {
        match op.kind {
            FileKind::File => self.digests.get(&op.src),
            _ => None,
        }
    }
}

/// [`commit_copy`] into `sinks`; when the unpack directory now holds the whole layer,
/// what the unpacker made of it.
pub fn commit_copy_into(
    store: &Store,
    ctx: &Context,
    rootfs: &Path,
    ops: &[CopyOp],
    dirs_owner: Option<Owner>,
    epoch: Option<u64>,
    sinks: CopySinks<'_>,
) -> Result<Option<(StoredLayer, Option<layer::unpack::UnpackStats>)>, StepError> {
    let dirs_owner = dirs_owner.unwrap_or(Owner { uid: 0, gid: 0 });
    let tree = Rootfs::open(rootfs)?;
    let Some(plan) = plan_entries(&tree, ops)? else {
        return Ok(None);
    };
    let CopySinks {
        unpack_into,
        old_names,
        mut derive,
        known,
    } = sinks;
    let unpack_opts = layer::unpack::UnpackOptions {
        whiteouts: layer::unpack::Whiteouts::Overlay,
        allow_devices: true,
        reuse: unpack_into.as_ref().is_some_and(|(_, old)| old.is_some()),
        known: unpack_into.as_ref().and_then(|(_, old)| old.clone()),
        old_names,
        ..Default::default()
    };
    let into = unpack_into.map(|(tree, _)| tree);
    let mut blob = layer::tee::Tee::new(store.blob_writer()?, into, &unpack_opts);
    let mut headers = Headers::default();
    {
        let mut tar = tar::Builder::new(&mut blob);
        for (path, op) in &plan.all {
            let Some(op) = op else {
                append_parent(&mut tar, path, &plan, dirs_owner, epoch)?;
                continue;
            };
            let mtime = epoch.unwrap_or(op.mtime.max(0) as u64);
            if let Some(to) = plan.link_target(op) {
                let mut h = header(
                    tar::EntryType::Link,
                    op.mode,
                    op.owner.uid,
                    op.owner.gid,
                    mtime,
                );
                tar.append_link(&mut h, path, to)
                    .map_err(io(Path::new(path)))?;
                continue;
            }
            // Before 1970 (kept mtimes only): a PAX `mtime` record, as Go's archive/tar
            // writes it in BuildKit's and buildah's layers.
            let negative = (epoch.is_none() && op.mtime < 0).then_some(op.mtime);
            let digest = known.as_ref().and_then(|k| Some((k, k.digest(op)?)));
            let cap = match digest {
                Some((k, _)) => k.caps.get(&op.src).cloned(),
                None => file_capability(op.kind, &ctx.path_of(&op.src)),
            };
            let meta = (mtime, negative, cap);
            let old = derive.as_mut().zip(digest.map(|(_, d)| d));
            append_op(&mut tar, ctx, path, op, meta, old, &mut headers)?;
        }
        tar.finish().map_err(io(Path::new("layer")))?;
    }
    if let Some(old) = &derive {
        tracing::debug!(
            from_old_blob = old.used,
            refused = old.refused,
            "wrote the layer from the previous layer's blob and the changed files"
        );
    }
    // The blob's last bytes and its fsync overlap the image writer's last work (its
    // layout of inodes and directories, which starts only at the stream's end); the
    // blob is named after that, as before (`stored`).
    let (blob, unpacked) = blob.finish_ending(|b| b.end())?;
    let whole = match unpacked {
        Some(Err(e)) => {
            tracing::debug!("the layer was not unpacked while written: {e}");
            None
        }
        Some(Ok(stats)) => {
            // Where the tee's second sink ends: the `-v` phases of a commit tell the
            // wait for it from the blob's own commit (docs/performance.md, session 14).
            tracing::debug!(
                entries = stats.entries,
                "the layer's second copy is complete"
            );
            Some(stats)
        }
        None => None,
    };
    Ok(Some((stored(blob)?, whole)))
}

/// What a copy's layer holds: layer path → the op that writes it (later ops win, as with
/// a real copy), the directories it creates, the existing parents it carries, and all of
/// those paths in tar order. None when there is nothing to write.
struct EntryPlan<'o> {
    entries: std::collections::BTreeMap<String, &'o CopyOp>,
    /// Each op's destination → its path in the layer (for hard links' targets; empty
    /// when the copy has none).
    paths: foldhash::HashMap<&'o str, String>,
    existing: std::collections::BTreeMap<String, (u32, u32, u32)>,
    /// Every path in tar order, with the op that writes it (None: a directory the copy
    /// creates or carries, `append_parent`).
    all: Vec<(String, Option<&'o CopyOp>)>,
}

fn plan_entries<'o>(tree: &Rootfs, ops: &'o [CopyOp]) -> Result<Option<EntryPlan<'o>>, StepError> {
    use std::collections::{BTreeMap, BTreeSet};
    // foldhash, not SipHash: a lookup per copied file (docs/performance.md, session 15).
    use foldhash::HashMap;
    let mut created: BTreeSet<String> = BTreeSet::new();
    let mut canon_dirs: HashMap<String, String> = HashMap::default();
    let mut entries: BTreeMap<String, &CopyOp> = BTreeMap::new();
    let mut paths: HashMap<&str, String> = HashMap::default();
    // Only hard links look their target's path up (`link_target`).
    let links = ops.iter().any(|op| op.link_to.is_some());
    for op in ops {
        let (parent, name) = op.dest.rsplit_once('/').unwrap_or(("", &op.dest));
        if !canon_dirs.contains_key(parent) {
            let c = canonical_dir(tree, parent, &mut created)?;
            canon_dirs.insert(parent.to_string(), c);
        }
        let canon = &canon_dirs[parent];
        let path = if canon.is_empty() {
            name.to_string()
        } else {
            [canon, "/", name].concat()
        };
        if op.kind == FileKind::Dir {
            canon_dirs.insert(op.dest.clone(), path.clone());
        }
        if links {
            paths.insert(op.dest.as_str(), path.clone());
        }
        entries.insert(path, op);
    }
    if entries.is_empty() && created.is_empty() {
        return Ok(None);
    }
    let existing = existing_parents(tree, &entries, &created)?;
    let mut all: Vec<(String, Option<&CopyOp>)> = entries
        .iter()
        .map(|(p, op)| (p.clone(), Some(*op)))
        .chain(
            created
                .iter()
                .chain(existing.keys())
                .filter(|p| !entries.contains_key(*p))
                .map(|p| (p.clone(), None)),
        )
        .collect();
    sort_in_tar_order(&mut all);
    all.dedup_by(|a, b| a.0 == b.0);
    Ok(Some(EntryPlan {
        entries,
        paths,
        existing,
        all,
    }))
}

impl EntryPlan<'_> {
    /// The layer path a hard-linked file (`CopyOp::link_to`) links to: its target's,
    /// when the layer writes the target as a regular file of its own; else None (the
    /// file is written whole).
    fn link_target(&self, op: &CopyOp) -> Option<&str> {
        let path = self.paths.get(op.link_to.as_deref()?)?;
        let target = self.entries.get(path)?;
        let whole = target.kind == FileKind::File && target.link_to.is_none();
        (whole && Some(target.dest.as_str()) == op.link_to.as_deref()).then_some(path.as_str())
    }
}

/// Appends a directory the copy creates (`dirs_owner`'s) or carries (as it is).
fn append_parent(
    tar: &mut tar::Builder<impl std::io::Write>,
    path: &str,
    plan: &EntryPlan<'_>,
    dirs_owner: Owner,
    epoch: Option<u64>,
) -> Result<(), StepError> {
    let (mode, uid, gid) =
        plan.existing
            .get(path)
            .copied()
            .unwrap_or((0o755, dirs_owner.uid, dirs_owner.gid));
    let mut h = header(
        tar::EntryType::Directory,
        mode,
        uid,
        gid,
        epoch.unwrap_or(0),
    );
    tar.append_data(&mut h, format!("{path}/"), std::io::empty())
        .map_err(io(Path::new(path)))
}

/// What [`header`] is made from: kind, mode, uid, gid, mtime.
type HeaderFields = (tar::EntryType, u32, u32, u32, u64);

/// [`header`], remembering the last one made: a copy's files mostly share mode, owner
/// and mtime, and `tar` spells each numeric field out through `format!` (an allocation
/// per field, 5 per header). A copy of the header made from the same fields is that
/// header, byte for byte.
#[derive(Default)]
struct Headers {
    last: Option<(HeaderFields, tar::Header)>,
    /// A derived file's header is spelled out here first, to know where its content
    /// will start (`Tee::knows`).
    scratch: Vec<u8>,
}

impl Headers {
    fn header(&mut self, fields: HeaderFields) -> tar::Header {
        match &self.last {
            Some((made_of, h)) if *made_of == fields => h.clone(),
            _ => {
                let (kind, mode, uid, gid, mtime) = fields;
                let h = header(kind, mode, uid, gid, mtime);
                self.last = Some((fields, h.clone()));
                h
            }
        }
    }
}

/// `h.set_size(size)` without `tar`'s `format!` per call (its `octal_into`): a size
/// below 8^11 is 11 octal digits, zero-padded, and a NUL, as `tar` writes it; a larger
/// one goes through `tar` (its binary form).
fn set_size(h: &mut tar::Header, size: u64) {
    if size >= 1 << 33 {
        return h.set_size(size);
    }
    let field = &mut h.as_old_mut().size;
    field[11] = 0;
    let mut rest = size;
    for digit in field[..11].iter_mut().rev() {
        *digit = b'0' + (rest & 7) as u8;
        rest >>= 3;
    }
}

/// A GNU header with everything but the name and size (0) set.
fn header(kind: tar::EntryType, mode: u32, uid: u32, gid: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid as u64);
    h.set_gid(gid as u64);
    h.set_mtime(mtime);
    h.set_size(0);
    h
}

const CAPABILITY: &str = "security.capability";
const PAX_CAPABILITY: &str = "SCHILY.xattr.security.capability";

/// A copied file's file capabilities (`setcap`), which a copy keeps: BuildKit copies
/// xattrs (tonistiigi/fsutil `copy/copy.go` `copyXAttrs`) and its layers carry
/// `security.capability` (containerd `archive/tar.go`), as keel's RUN layers do.
pub fn file_capability(kind: FileKind, src: &Path) -> Option<Vec<u8>> {
    if kind != FileKind::File {
        return None;
    }
    crate::sys::fs::get_xattr(src, CAPABILITY).ok().flatten()
}

/// Appends the entry `op` writes at `path`, with its mtime, a PAX mtime when negative and
/// its capability (`meta`). A regular file's content comes from the old blob
/// when `derive` (with the digest the key read) has it (checked there), else straight
/// from the source into the blob's buffers (hashed there), not through tar's small copies.
fn append_op<W: std::io::Write + layer::tee::ReadInto>(
    tar: &mut tar::Builder<&mut layer::tee::Tee<W>>,
    ctx: &Context,
    path: &str,
    op: &CopyOp,
    (mtime, negative, cap): (u64, Option<i64>, Option<Vec<u8>>),
    derive: Option<(&mut layer::derive::OldBlob, &layer::index::ContentDigest)>,
    headers: &mut Headers,
) -> Result<(), StepError> {
    let (uid, gid) = (op.owner.uid, op.owner.gid);
    // The source's host path only when it is opened or named in an error: joining it
    // for each of a derived layer's 10,000 files cost ~1 ms (docs/performance.md, s15).
    let err = |source| StepError::Io {
        path: ctx.path_of(&op.src),
        source,
    };
    let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
    if let Some(t) = negative {
        pax.push(("mtime", t.to_string().into_bytes()));
    }
    if let Some(cap) = cap {
        pax.push((PAX_CAPABILITY, cap));
    }
    if !pax.is_empty() {
        tar.append_pax_extensions(pax.iter().map(|(k, v)| (*k, v.as_slice())))
            .map_err(err)?;
    }
    match op.kind {
        FileKind::Dir => {
            let mut h = header(tar::EntryType::Directory, op.mode, uid, gid, mtime);
            tar.append_data(&mut h, format!("{path}/"), std::io::empty())
                .map_err(err)
        }
        FileKind::Symlink => {
            let mut h = header(tar::EntryType::Symlink, 0o777, uid, gid, mtime);
            let target = op.link_target.as_deref().unwrap_or("");
            tar.append_link(&mut h, path, target).map_err(err)
        }
        FileKind::File => {
            let mut h = headers.header((tar::EntryType::Regular, op.mode, uid, gid, mtime));
            set_size(&mut h, op.size);
            let old = derive.and_then(|(old, digest)| {
                crate::fault::point("build.copy-derived");
                Some((old.content(digest, op.size)?, digest))
            });
            let out = tar.get_mut();
            match old {
                Some((bytes, digest)) => {
                    // The content checked against `digest` (`OldBlob::content`): said to
                    // the image writer before its header, so it is not hashed again.
                    let head = &mut headers.scratch;
                    head.clear();
                    crate::layer::pack::write_header(head, &mut h, path).map_err(err)?;
                    out.knows(out.position() + head.len() as u64, op.size, digest);
                    std::io::Write::write_all(out, head)
                        .and_then(|()| std::io::Write::write_all(out, bytes))
                }
                None => crate::layer::pack::write_header(out, &mut h, path).and_then(|()| {
                    fs::File::open(ctx.path_of(&op.src))
                        .and_then(|mut f| out.write_from(&mut f, op.size))
                }),
            }
            .and_then(|()| crate::layer::pack::write_padding(out, op.size))
            .map_err(err)
        }
    }
}

impl layer::tee::ReadInto for crate::store::BlobWriter {
    fn write_from(&mut self, r: &mut impl std::io::Read, len: u64) -> std::io::Result<()> {
        crate::store::BlobWriter::write_from(self, r, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digests recorded out of order and twice are found in order, out of order (by the
    /// cursor's fallback) and after a miss; a path recorded twice gives its last digest,
    /// and a path never recorded none.
    #[test]
    fn known_digests_are_found_in_any_order() {
        let d = |n: u8| [n; 32];
        let mut k = KnownDigests::default();
        for (rel, n) in [
            ("b", 2),
            ("a", 1),
            ("c/x", 3),
            ("b", 4),
            ("c-y", 5),
            ("c/z", 6),
        ] {
            k.insert(rel.into(), d(n));
        }
        k.seal();
        let wanted = [("a", 1), ("b", 4), ("c-y", 5), ("c/x", 3), ("c/z", 6)];
        for (rel, n) in wanted.iter().chain(wanted.iter().rev()) {
            assert_eq!(k.get(rel), Some(&d(*n)), "{rel}");
        }
        assert_eq!(k.get("nope"), None);
        assert_eq!(k.get("c/x"), Some(&d(3)), "after a miss");
        assert_eq!(k.get("c/z"), Some(&d(6)), "the cursor's next");
    }

    /// A header given again from the last one made is the header made afresh, over
    /// runs of the same fields and each field changing alone.
    #[test]
    fn a_remembered_header_is_the_one_made_afresh() {
        use tar::EntryType::{Directory, Regular};
        let mut headers = Headers::default();
        let fields = [
            (Regular, 0o644, 0, 0, 1_700_000_000),
            (Regular, 0o644, 0, 0, 1_700_000_000),
            (Regular, 0o600, 0, 0, 1_700_000_000),
            (Regular, 0o600, 1000, 0, 1_700_000_000),
            (Regular, 0o600, 1000, 1000, 1_700_000_000),
            (Regular, 0o600, 1000, 1000, 0),
            (Directory, 0o600, 1000, 1000, 0),
            (Regular, 0o600, 1000, 1000, 0),
            (Regular, 0o600, 1000, 1000, 0),
        ];
        for f in fields {
            let (kind, mode, uid, gid, mtime) = f;
            let fresh = header(kind, mode, uid, gid, mtime);
            assert_eq!(headers.header(f).as_bytes(), fresh.as_bytes(), "{f:?}");
        }
    }

    /// The size field spelled by hand is `tar`'s, byte for byte, whatever size the
    /// header held before: around each octal digit count, and the binary form.
    #[test]
    fn a_size_set_by_hand_is_the_one_tar_sets() {
        let mut sizes = vec![0, 1, 7, 8, 511, 512, 513, 4096, 1 << 20, u64::MAX];
        for bits in [21, 30, 33, 34, 40, 63] {
            sizes.extend([(1u64 << bits) - 1, 1 << bits, (1 << bits) + 1]);
        }
        for before in [0, 12345, (1 << 33) + 5] {
            for &size in &sizes {
                let mut ours = header(tar::EntryType::Regular, 0o644, 0, 0, 1);
                ours.set_size(before);
                let mut theirs = ours.clone();
                set_size(&mut ours, size);
                theirs.set_size(size);
                assert_eq!(ours.as_bytes(), theirs.as_bytes(), "{before} -> {size}");
                assert_eq!(ours.size().unwrap(), size);
            }
        }
    }

    /// The byte order used for clean paths is the component order `layer::pack` uses,
    /// over names that sort around `/` (`-`, `.`, `0`), prefixes, and depths; a set with
    /// one unclean path keeps the component order.
    #[test]
    fn tar_order_is_the_component_order() {
        let names = [
            "a", "a-b", "a.b", "a0", "a/b", "a/b/c", "a-b/c", "a/b-c", "ab", "b", "a/.c",
        ];
        let by_components = |mut v: Vec<String>| {
            v.sort_by(|a, b| Path::new(a).components().cmp(Path::new(b).components()));
            v
        };
        let mut all: Vec<(String, ())> = names.iter().rev().map(|n| (n.to_string(), ())).collect();
        sort_in_tar_order(&mut all);
        let got: Vec<String> = all.into_iter().map(|(p, _)| p).collect();
        let want = by_components(names.iter().map(|n| n.to_string()).collect());
        assert_eq!(got, want);
        // `..` is a component of its own kind (it sorts before every name), `a//b` and
        // `a/./b` are `a/b`: with one of them the whole sort is by components.
        for odd in ["a/../b", "a//b", "a/./b", "/a", "a/"] {
            let mut v: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            v.push(odd.to_string());
            let mut all: Vec<(String, ())> = v.iter().rev().map(|n| (n.clone(), ())).collect();
            sort_in_tar_order(&mut all);
            let got: Vec<String> = all.into_iter().map(|(p, _)| p).collect();
            let mut want: Vec<String> = v.iter().rev().cloned().collect();
            want.sort_by(|a, b| Path::new(a).components().cmp(Path::new(b).components()));
            assert_eq!(got, want, "with {odd}");
        }
    }
}
