//! COPY and ADD: the step's words expanded into a typed copy, its sources resolved (the
//! context, a stage or an image; `--exclude`, `--parents`), the key over exactly the files
//! they select (with the settled-stamp shortcut for no-op rebuilds), and the layer —
//! written straight from the sources when the copy is plain.
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use super::*;
use crate::build::copy_archive;
use crate::context::{FileKind, Selection};
use crate::plan::{Chown, CopyOp, Heredoc};

/// A COPY/ADD after expansion: what the key and the copy are made of.
#[derive(Debug, Clone, Serialize)]
struct Copy {
    add: bool,
    srcs: Vec<String>,
    dest: String,
    chown: Option<Chown>,
    chmod: Option<u32>,
    exclude: Vec<String>,
    parents: bool,
    link: bool,
    /// `ADD --checksum` of a URL, expanded.
    #[serde(skip_serializing_if = "Option::is_none")]
    checksum: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    keep_git_dir: bool,
    /// `--parents`, `--chown=…`, `--chmod=…` as the history shows them (expanded, as
    /// written: `--chmod=0755` and `--chmod=755` are one mode but two texts).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    shown_flags: Vec<String>,
    /// The source is a URL or git repository, fetched into a directory of its own: read
    /// as it is (never extracted, never stamped).
    #[serde(skip)]
    remote: bool,
}

/// What the key computation read of a copy's regular files, by context path: each one's
/// content digest, and the capabilities of those that have one (a file in `digests` but
/// not in `caps` has none), which the layer's writer takes instead of reading them again.
#[derive(Default)]
struct FilesRead {
    digests: step::KnownDigests,
    caps: foldhash::HashMap<String, Vec<u8>>,
}

/// What the last build of a copy offers this one (`commit_plain`).
struct Prior<'a> {
    /// This step's layer from the last build, when only the files changed since.
    base: Option<&'a StoredLayer>,
    /// `base`'s blob and entry index, being read since before the key was computed
    /// (taken once, by `commit_plain`).
    old: std::cell::RefCell<Option<OldBlobJob>>,
    /// This copy's content digests and capabilities by context path.
    read: &'a FilesRead,
    /// Under `--no-cache`: the layer the same inputs made last time.
    same: Option<crate::digest::Digest>,
}

/// One selected source and the destination it is copied to.
struct Placed {
    sel: Selection,
    dest: String,
}

impl Copy {
    fn what(&self) -> &'static str {
        if self.add {
            "ADD"
        } else {
            "COPY"
        }
    }
}

impl Executor<'_> {
    pub(super) fn dispatch_copy(
        &mut self,
        n: usize,
        s: &Step,
        state: State,
        c: &CopyOp,
        vars: &BTreeMap<String, String>,
    ) -> Result<(State, Outcome), StepFailure> {
        let x = self.expand_copy(c, vars)?;
        if x.remote {
            return self.dispatch_remote_add(n, s, state, &x);
        }
        let from = match &c.from {
            None => None,
            Some(f) => Some(self.state_from(&self.expand(f, vars)?)?),
        };
        if let Some(st) = &from {
            // Looked up before the source is materialised: a hit never needs its layers
            // (which a fresh root with --cache-from may not have).
            let heredocs = expand_heredocs(&c.heredocs, vars)?;
            if let Some(hit) = self.copy_from_hit(n, &state, &x, st, &heredocs)? {
                return Ok((hit, Outcome::Cached));
            }
        }
        let from_snap = match &from {
            Some(st) => Some(self.snapshot(&format!("{n}-from"), &st.layers, Tree::View)?),
            None => None,
        };
        let result = (|| {
            let from_ctx;
            let ctx: &Context = match &from_snap {
                Some(snap) => {
                    from_ctx = Context::new(&snap.rootfs, Box::new(|_: &str| false))?;
                    &from_ctx
                }
                None => self.context,
            };
            let placed = place(ctx, &x)?;
            // Ends the walk's phase in `-v` output (before the stamp, or the key).
            tracing::debug!(
                entries = placed.iter().map(|p| p.sel.entries.len()).sum::<usize>(),
                "sources selected"
            );
            let heredocs = expand_heredocs(&c.heredocs, vars)?;
            self.copy_placed(n, s, state, &x, from.as_ref(), ctx, &placed, &heredocs)
        })();
        if let Some(snap) = &from_snap {
            let _ = self.snapshotter.remove(snap);
        }
        result
    }

    /// The step's words expanded and typed.
    fn expand_copy(
        &self,
        c: &CopyOp,
        vars: &BTreeMap<String, String>,
    ) -> Result<Copy, StepFailure> {
        let expand = self.expander(vars);
        let mut srcs = Vec::new();
        for src in &c.srcs {
            srcs.push(self.expand(src, vars)?);
        }
        let remotes = srcs
            .iter()
            .filter(|s| c.add && crate::build::remote::classify(s).is_some())
            .count();
        if remotes > 0 && (srcs.len() > 1 || c.from.is_some() || !c.heredocs.is_empty()) {
            return Err(StepFailure::Invalid(format!("ADD {}: a URL or git repository must be the only source (no --from, no other sources); split it into one ADD per source", srcs.join(" "))));
        }
        let typed = |e: String| StepFailure::Invalid(e);
        Ok(Copy {
            add: c.add,
            srcs,
            dest: self.expand(&c.dest, vars)?,
            chown: c
                .chown
                .as_ref()
                .map(|w| w.resolve(&expand))
                .transpose()
                .map_err(typed)?,
            chmod: c
                .chmod
                .as_ref()
                .map(|w| w.resolve(&expand).map(|m| m.0))
                .transpose()
                .map_err(typed)?,
            exclude: c
                .exclude
                .iter()
                .map(|e| self.expand(e, vars))
                .collect::<Result<_, _>>()?,
            parents: c.parents,
            link: c.link,
            checksum: c
                .checksum
                .as_ref()
                .map(|w| self.expand(w, vars))
                .transpose()?,
            keep_git_dir: c.keep_git_dir,
            shown_flags: self.shown_flags(c, vars)?,
            remote: remotes > 0,
        })
    }

    /// The flags BuildKit's `dispatchCopy` puts in the history text, in its order:
    /// `--parents`, `--chown=` and `--chmod=` with their expanded values.
    fn shown_flags(
        &self,
        c: &CopyOp,
        vars: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, StepFailure> {
        let mut flags = Vec::new();
        if c.parents {
            flags.push("--parents".to_string());
        }
        if let Some(w) = &c.chown {
            flags.push(format!("--chown={}", self.expand(&w.written, vars)?));
        }
        if let Some(w) = &c.chmod {
            flags.push(format!("--chmod={}", self.expand(&w.written, vars)?));
        }
        Ok(flags)
    }

    /// ADD of a URL or git repository: fetched into a directory of its own (a download
    /// with a cached `--checksum` makes no request), then copied like a context source;
    /// its content digests are part of the key.
    fn dispatch_remote_add(
        &mut self,
        n: usize,
        s: &Step,
        state: State,
        x: &Copy,
    ) -> Result<(State, Outcome), StepFailure> {
        use crate::build::remote::{self, Remote};
        let src = &x.srcs[0];
        let cache = self.store.root().join("cache").join("remote");
        let tmp = self.store.tmp_dir();
        let fetched = match remote::classify(src) {
            Some(Remote::Git { url, reference }) => {
                if x.checksum.is_some() {
                    return Err(StepFailure::Invalid(format!("ADD --checksum {src}: a checksum applies to a downloaded file, not a git repository; pin the commit in the #ref instead")));
                }
                remote::fetch_git(&tmp, &url, reference.as_deref(), x.keep_git_dir)
            }
            _ => remote::fetch_http(&cache, &tmp, src, x.checksum.as_deref()),
        }
        .map_err(|e| StepFailure::Invalid(format!("ADD {e}")))?;
        let ctx = Context::new(fetched.dir.path(), Box::new(|_: &str| false))?;
        let mut local = x.clone();
        local.srcs = vec![fetched.name.clone()];
        let placed = place(&ctx, &local)?;
        self.copy_placed(n, s, state, x, None, &ctx, &placed, &[])
    }

    /// Looks the copy up in the cache (stamp first, then key) and otherwise writes it.
    #[allow(clippy::too_many_arguments)]
    fn copy_placed(
        &mut self,
        n: usize,
        s: &Step,
        state: State,
        x: &Copy,
        from: Option<&State>,
        ctx: &Context,
        placed: &[Placed],
        heredocs: &[Heredoc],
    ) -> Result<(State, Outcome), StepFailure> {
        let owner = self.owner_before(n, &state, x)?;
        let from_key = from.map_or("context", |s| s.key.as_str());
        let link_owner = if x.link {
            owner.map(|o| (o.uid, o.gid))
        } else {
            None
        };
        let instruction = json!({"copy": {"step": x, "from": from_key, "link_owner": link_owner}});
        let workdir = state.config.config.working_dir.clone().unwrap_or_default();
        // The fast path: the same files, unchanged since they settled, give the key the
        // step had last time — no stat index, no key inputs.
        let stamp = (from.is_none() && !x.remote)
            .then(|| self.copy_stamp(&state, &instruction, &workdir, placed, heredocs));
        if let Some(hit) = stamp.as_ref().and_then(|(st, _)| self.stamp_hit(st)) {
            return Ok((hit, Outcome::Cached));
        }
        let position = self.position(None, s);
        if stamp.is_some() {
            // The key needs the context's digests and `previous_layer` the last build's
            // inputs: both ~1 MB files are parsed on threads of their own while this one
            // gathers the key's file entries.
            self.stat.read_ahead();
            self.cache.read_inputs_ahead(&position);
            tracing::debug!("selection stamp missed: computing the key");
        }
        let mut inputs = KeyInputs::new(state.key.clone(), instruction);
        // From a stage (or image), its key pins every file in it, so what the sources
        // select follows from that key and the instruction: the key lists no files, and
        // can be computed without the source's layers (`copy_from_hit`).
        let listed = if from.is_none() { placed } else { &[] };
        let mut read = FilesRead::default();
        inputs.files = self.copy_files(ctx, x, listed, heredocs, from.is_none(), &mut read)?;
        // The layer to patch depends on the parent and instruction only, so its blob's
        // entry index is read on another thread while this one finishes the key and
        // looks it up (a 10,000-file copy's stored index is ~1 MB); a hit drops it.
        let plain = !x.link && is_plain(ctx, x, placed, heredocs);
        let base = self.previous_layer(&state, &inputs, &position);
        let old = base
            .as_ref()
            .filter(|_| plain)
            .map(|b| OldBlobJob::start(self.store, self.snapshotter.storage_root(), b));
        inputs.env = BTreeMap::from([("workdir".into(), workdir)]);
        let created_by = created_by(x, heredocs);
        let stamp = stamp.filter(|(_, newest)| crate::context::is_settled(*newest));
        let inputs = inputs.keyed();
        let key = inputs.key().clone();
        tracing::debug!(
            files = inputs.inputs().files.len(),
            hashed = self.stat.hashed,
            "key computed"
        );
        let prior = Prior {
            base: base.as_ref(),
            old: std::cell::RefCell::new(old),
            read: &read,
            same: self.same_as_last(&state, &inputs, &position),
        };
        let body = |snap: &crate::storage::Snapshot, state: &State| {
            self.write_copy(snap, state, ctx, x, placed, heredocs, owner, &prior)
        };
        let label = format!("{}: ", x.what());
        let done = if x.link {
            self.linked(n, &label, state, &inputs, &position, &created_by, body)?
        } else {
            // Written straight into its layer, the tree below is only looked at.
            let tree = match plain {
                true => Tree::View,
                false => Tree::Writable,
            };
            self.in_tree(
                tree,
                n,
                &label,
                state,
                &inputs,
                &position,
                &created_by,
                body,
            )?
        };
        if let Some((st, _)) = &stamp {
            self.cache.remember_stamp(st, &key);
        }
        drop(prior); // its borrow of `read`
        self.cache.set_aside((inputs, read));
        Ok(done)
    }

    /// The cached result of a `COPY --from`, found from the source's key alone (the same
    /// key `copy_placed` computes, whose file list is empty for a stage source).
    fn copy_from_hit(
        &mut self,
        n: usize,
        state: &State,
        x: &Copy,
        from: &State,
        heredocs: &[Heredoc],
    ) -> Result<Option<State>, StepFailure> {
        if self.stage_no_cache || self.opts.explain {
            return Ok(None);
        }
        let owner = self.owner_before(n, state, x)?;
        let link_owner = if x.link {
            owner.map(|o| (o.uid, o.gid))
        } else {
            None
        };
        let instruction =
            json!({"copy": {"step": x, "from": from.key.as_str(), "link_owner": link_owner}});
        let workdir = state.config.config.working_dir.clone().unwrap_or_default();
        let mut inputs = KeyInputs::new(state.key.clone(), instruction);
        let mut read = FilesRead::default();
        inputs.files = self.copy_files(self.context, x, &[], heredocs, false, &mut read)?;
        inputs.env = BTreeMap::from([("workdir".into(), workdir)]);
        Ok(self.peek(&inputs.key()))
    }

    /// The owner known before the copy runs: numeric ids, or for `--link` a user name
    /// resolved in the parent now (a linked layer cannot look at the layers below it, so
    /// the ids become part of its key). `None`: none given, or resolved when writing.
    fn owner_before(
        &self,
        n: usize,
        state: &State,
        x: &Copy,
    ) -> Result<Option<Owner>, StepFailure> {
        let numeric = x.chown.as_ref().and_then(Chown::numeric);
        Ok(match (numeric, &x.chown) {
            (Some((uid, gid)), _) => Some(Owner { uid, gid }),
            (None, Some(c)) if x.link => Some(self.owner_in(n, state, &c.spec())?),
            _ => None,
        })
    }

    /// The state a settled selection's stamp points at, unless the cache is bypassed.
    fn stamp_hit(&self, stamp: &crate::build::cache::SelectionStamp) -> Option<State> {
        if self.stage_no_cache || self.opts.explain {
            return None;
        }
        let key = self.cache.key_by_stamp(stamp)?;
        // Leased like any hit (`peek`): a concurrent gc must not take its layers, and a
        // layer gc took already makes it a miss.
        let hit = self.cache.get::<State>(&key).filter(|h| self.hold(h))?;
        self.keys.borrow_mut().push(key);
        Some(hit)
    }

    /// The stamp of a context copy: its other inputs and what `lstat` says of its files.
    fn copy_stamp(
        &self,
        state: &State,
        instruction: &serde_json::Value,
        workdir: &str,
        placed: &[Placed],
        heredocs: &[Heredoc],
    ) -> (crate::build::cache::SelectionStamp, i128) {
        let root = self.context.root().to_string_lossy();
        let instruction = instruction.to_string();
        let mut parts = vec![
            root.as_ref(),
            state.key.as_str(),
            instruction.as_str(),
            workdir,
        ];
        for h in heredocs {
            parts.extend([h.name.as_str(), h.content.as_str()]);
        }
        let dests: Vec<String> = placed
            .iter()
            .map(|p| format!("{}>{}", p.sel.name, p.dest))
            .collect();
        parts.extend(dests.iter().map(String::as_str));
        crate::build::cache::SelectionStamp::of(
            &parts,
            placed.iter().flat_map(|p| {
                p.sel
                    .files()
                    .into_iter()
                    .map(move |(f, rel)| (p.sel.name.as_str(), rel, f))
            }),
        )
    }

    /// Key entries: every selected file's path, type, mode and owner as they will land,
    /// and its content digest (files from a stage: that stage's key pins their content),
    /// which also goes into `read` by context path (with the file's capability).
    fn copy_files(
        &mut self,
        ctx: &Context,
        x: &Copy,
        placed: &[Placed],
        heredocs: &[Heredoc],
        hash: bool,
        read: &mut FilesRead,
    ) -> Result<BTreeMap<String, String>, StepFailure> {
        // Gathered in order and made into the map at once (`BTreeMap::from_iter` sorts
        // stably and keeps the last value of a key, as inserting one by one does): the
        // entries come sorted, and 10,000 inserts each searched the tree from its root.
        let selected = placed.iter().map(|p| p.sel.entries.len().max(1)).sum();
        let mut files: Vec<(String, String)> = Vec::with_capacity(selected + heredocs.len());
        read.digests.reserve(selected);
        // Each file's path on disk, built in one buffer (an allocation per file before).
        let mut path = std::path::PathBuf::new();
        for p in placed {
            let links = copy::hard_link_groups(&p.sel);
            // Each entry is named `<name>:<rel>`; the name is the source's (or with
            // `--parents`, the destination's and the source's), the same for all its files.
            let name: std::borrow::Cow<str> = match x.parents {
                true => format!("{}>{}", p.dest, p.sel.name).into(),
                false => p.sel.name.as_str().into(),
            };
            if p.sel.top.kind == FileKind::Dir && p.sel.entries.is_empty() {
                // An empty directory still makes its destination (`missing_dests`); the
                // entry also keeps this key apart from older keel's, which made nothing.
                files.push((format!("{}:", p.sel.name), "Dir (empty)".into()));
            }
            for (f, rel) in p.sel.files() {
                let mode = match (x.chmod, f.kind) {
                    (Some(m), FileKind::File | FileKind::Dir) => m,
                    (_, FileKind::Symlink) => 0o777,
                    _ => f.mode,
                };
                path.as_mut_os_string().clear();
                path.push(ctx.root());
                path.push(&f.rel); // as `ctx.path_of` joins them
                let (content, cap) = self.file_input(ctx, x, f, &path, hash)?;
                if let (FileKind::File, Some(raw)) =
                    (f.kind, crate::digest::raw_sha256_text(&content))
                {
                    read.digests.insert(f.rel.clone(), raw);
                }
                // A context file's capabilities go into the layer (`step::file_capability`),
                // so into the key; a stage's key pins its files' already.
                let content = match cap {
                    Some(cap) => {
                        let hex: String = cap.iter().map(|b| format!("{b:02x}")).collect();
                        read.caps.insert(f.rel.clone(), cap);
                        format!("{content} cap:{hex}")
                    }
                    None => content,
                };
                // ADD extracts an archive: the key says so, so that a file an older keel
                // copied as it is (a `.tar.xz`) is not taken from its cache.
                let content = match x.add
                    && !x.remote
                    && p.sel.top.kind == FileKind::File
                    && copy_archive::is_archive(&ctx.path_of(&f.rel))
                {
                    true => format!("{content} extracted"),
                    false => content,
                };
                // Hard-linked files are written as links (`copy::CopyOp::link_to`).
                let content = match links.get(&(f.stamp.dev, f.stamp.ino)) {
                    Some(first) if f.kind == FileKind::File && f.stamp.ino != 0 => {
                        format!("{content} link:{first}")
                    }
                    _ => content,
                };
                let owner = if x.chown.is_some() { "" } else { "0:0" };
                files.push((
                    key_name(&name, rel),
                    key_entry(f.kind, mode, owner, &content),
                ));
            }
        }
        for h in heredocs {
            files.push((
                format!("<<{}", h.name),
                crate::digest::of_bytes(h.content.as_bytes()).to_string(),
            ));
        }
        read.digests.seal();
        Ok(files.into_iter().collect())
    }

    /// A selected file's content input (`content_input`) and, when hashed, its
    /// capability: a fetched file's read directly (it is new every build), a context
    /// file's through the stat index, which remembers both.
    fn file_input(
        &mut self,
        ctx: &Context,
        x: &Copy,
        f: &crate::context::ContextFile,
        path: &std::path::Path,
        hash: bool,
    ) -> Result<(String, Option<Vec<u8>>), StepFailure> {
        match (x.remote, f.kind, hash) {
            (true, FileKind::File, _) => {
                let io = |source| StepError::Io {
                    path: path.to_path_buf(),
                    source,
                };
                let file = std::fs::File::open(path).map_err(io)?;
                let digest = crate::digest::of_reader(file).map_err(io)?.0.to_string();
                Ok((digest, step::file_capability(f.kind, path).filter(|_| hash)))
            }
            (false, FileKind::File, true) => Ok(self.stat.input_stamped(path, f.stamp)?),
            _ => Ok((self.content_input(ctx, f, hash)?, None)),
        }
    }

    /// Writes the copy into `snap` (or straight into a layer when it is plain).
    #[allow(clippy::too_many_arguments)]
    fn write_copy(
        &self,
        snap: &crate::storage::Snapshot,
        state: &State,
        ctx: &Context,
        x: &Copy,
        placed: &[Placed],
        heredocs: &[Heredoc],
        owner: Option<Owner>,
        prior: &Prior<'_>,
    ) -> Result<Option<StoredLayer>, StepFailure> {
        let owner = match (&x.chown, owner) {
            (Some(c), None) => {
                let u = runtime::spec::Accounts::read(&snap.rootfs)?.resolve(&c.spec())?;
                Some(Owner {
                    uid: u.uid,
                    gid: u.gid,
                })
            }
            (_, known) => known,
        };
        let workdir = state
            .config
            .config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into());
        let abs_dest = copy::clean_abs(&absolute(&x.dest, &workdir));
        let dest_is_dir = step::is_dir_in(&snap.rootfs, &abs_dest);
        let tmp = self.store.tmp_dir();
        let target = Target {
            rootfs: &snap.rootfs,
            tmp: &tmp,
            abs_dest: &abs_dest,
            workdir: &workdir,
            dest_is_dir,
        };
        let (ops, archives) = copy_ops(ctx, x, placed, &target, owner)?;
        if !archives && heredocs.is_empty() {
            if ops.is_empty() {
                // Nothing to copy (an empty directory's contents): no layer, as a
                // snapshot the copy left unchanged gives.
                return Ok(None);
            }
            // A plain copy: the layer is written straight from the sources.
            return self.commit_plain(ctx, snap, &ops, owner, prior);
        }
        step::apply_copy(ctx, &snap.rootfs, &ops, owner)?;
        for h in heredocs {
            self.write_heredoc(snap, h, &x.dest, &abs_dest, dest_is_dir, x.chmod, owner)?;
        }
        self.commit_kept(snap)
    }

    /// Commits a plain copy as a layer written straight from its sources, unpacked into
    /// the driver's layer cache while it is written so the next step mounts that tree
    /// instead of extracting the layer (issue 14). With a base (this step's layer from
    /// the previous build, same parent and instruction) the new tar takes unchanged
    /// files' content from the base's blob, and the base's cached tree is patched into
    /// the new one: only files whose bytes changed are written again. When the layer
    /// will be the one whose tree is cached already (`--no-cache` of unchanged files),
    /// nothing is unpacked.
    fn commit_plain(
        &self,
        ctx: &Context,
        snap: &crate::storage::Snapshot,
        ops: &[copy::CopyOp],
        owner: Option<Owner>,
        prior: &Prior<'_>,
    ) -> Result<Option<StoredLayer>, StepFailure> {
        let base = prior.base;
        // Read before `pending_layer` takes the old tree (and its stored index) away.
        let old = match prior.old.borrow_mut().take() {
            Some(job) => job.finish(),
            None => base.and_then(|b| old_blob(self.store, self.snapshotter.storage_root(), b)),
        };
        let cached = prior.same.as_ref().is_some_and(|d| {
            crate::storage::overlay::has_layer_tree(self.snapshotter.storage_root(), d)
        });
        let pending = match cached {
            true => {
                tracing::debug!("the layer's tree is cached already: not unpacked again");
                None
            }
            false => self.snapshotter.pending_layer(base.map(|b| &b.diff_id))?,
        };
        let mut sinks = step::CopySinks::default();
        let target = pending.as_ref().map(|p| p.target());
        if let (Some(p), Some(t)) = (&pending, &target) {
            let known = old
                .as_ref()
                .filter(|_| p.reused())
                .map(|o| o.index().clone());
            sinks.old_names = known.as_ref().and(p.old_names()).map(str::to_string);
            sinks.unpack_into = Some((p.sink(t), known));
        }
        sinks.derive = old;
        sinks.known = Some(step::KnownFiles {
            digests: &prior.read.digests,
            caps: &prior.read.caps,
        });
        let written = step::commit_copy_into(
            self.store,
            ctx,
            &snap.rootfs,
            ops,
            owner,
            self.opts.epoch,
            sinks,
        )?;
        let Some((layer, whole)) = written else {
            return Ok(None);
        };
        if let (Some(p), Some(stats)) = (pending, whole) {
            let blob = layer.descriptor.digest();
            match p.keep(&layer.diff_id, blob, stats.summary) {
                Err(e) => tracing::debug!("layer {} not kept as a tree: {e}", layer.diff_id),
                Ok(entry) => {
                    if let Some(index) = stats.index {
                        let diff_id = layer.diff_id.clone();
                        let behind = move || store_index(&entry, &diff_id, &index.index());
                        self.cache.behind().submit(behind);
                    }
                }
            }
        }
        Ok(Some(layer))
    }

    /// Under `--no-cache`: the layer this copy made last time when its inputs are the
    /// same now (so, most likely, the layer it makes now).
    fn same_as_last(
        &self,
        state: &State,
        inputs: &Keyed,
        position: &str,
    ) -> Option<crate::digest::Digest> {
        if !self.stage_no_cache {
            return None;
        }
        let last = self.cache.last_inputs(position)?;
        if last.key() != inputs.key() {
            return None;
        }
        let before: State = self.cache.get(last.key())?;
        if before.layers.len() != state.layers.len() + 1 {
            return None;
        }
        before.layers.last().map(|l| l.diff_id.clone())
    }

    /// This COPY's layer from the last build when only its files changed since (same
    /// parent, same instruction): the tree to patch into this build's (`commit_plain`).
    /// None under --no-cache, which rebuilds everything from scratch.
    fn previous_layer(
        &self,
        state: &State,
        now: &KeyInputs,
        position: &str,
    ) -> Option<StoredLayer> {
        if self.stage_no_cache {
            return None;
        }
        let last = self.cache.last_inputs(position)?;
        if last.parent() != now.parent || last.instruction() != &now.instruction {
            return None;
        }
        let before: State = self.cache.get(last.key())?;
        if before.layers.len() != state.layers.len() + 1 {
            return None; // that copy made no layer
        }
        before.layers.last().cloned()
    }

    /// A `COPY <<EOF` body as a file at (or in) the destination.
    #[allow(clippy::too_many_arguments)]
    fn write_heredoc(
        &self,
        snap: &crate::storage::Snapshot,
        h: &Heredoc,
        dest: &str,
        abs_dest: &str,
        dest_is_dir: bool,
        chmod: Option<u32>,
        owner: Option<Owner>,
    ) -> Result<(), StepFailure> {
        let target = if dest.ends_with('/') || dest_is_dir {
            format!("{abs_dest}/{}", h.name)
        } else {
            abs_dest.to_string()
        };
        // Through the tree's handle: a planted symlink at the target (or on the way) is
        // replaced or followed inside the image, never onto the host.
        let tree = crate::sys::rootfs::Rootfs::open(&snap.rootfs).map_err(StepError::from)?;
        let path = std::path::Path::new(&target);
        tree.write_file(path, h.content.as_bytes(), chmod.unwrap_or(0o644))
            .map_err(StepError::from)?;
        if let Some(o) = owner {
            tree.lchown(path, o.uid, o.gid).map_err(StepError::from)?;
        }
        Ok(())
    }
}

/// The blob of `layer` with its entry index, for taking unchanged content from it
/// and patching its tree with only the entries that changed; None when the blob is
/// compressed or unreadable (every file is then read from the context, and every
/// entry compared with the tree, as before).
fn old_blob(
    store: &crate::store::Store,
    storage_root: &std::path::Path,
    layer: &StoredLayer,
) -> Option<crate::layer::derive::OldBlob> {
    use crate::layer::{index::EntryIndex, Compression};
    let open = || store.open_blob(layer.descriptor.digest()).ok();
    let mut f = open()?;
    let mut head = [0u8; 4];
    std::io::Read::read_exact(&mut f, &mut head).ok()?;
    if Compression::sniff(&head) != Compression::None {
        return None;
    }
    let entry = crate::storage::overlay::layer_entry(storage_root, &layer.diff_id);
    let raw = crate::digest::raw_sha256(layer.descriptor.digest())?;
    let (index, stored) = match EntryIndex::stored(&entry, &raw) {
        Some(index) => (index, true),
        None => {
            std::io::Seek::rewind(&mut f).ok()?;
            // Fingerprints serve only a tree patch, and an image entry is never patched
            // (`take_tree`): its blob's contents are all the derived layer needs.
            let image = entry.join(crate::layer::erofs::IMAGE).exists();
            let index = match image {
                true => EntryIndex::contents_of_tar(f),
                false => EntryIndex::of_tar(f),
            };
            (index.ok()?, false)
        }
    };
    tracing::debug!(
        entries = index.len(),
        stored,
        "indexed the previous layer's entries"
    );
    crate::layer::derive::OldBlob::new(&open()?, std::sync::Arc::new(index))
}

/// [`old_blob`] of the layer a copy will patch, read on a thread of its own from
/// before the copy's key is computed until `commit_plain` needs it (or the step hits
/// the cache and drops it). Where no thread can be started it is read at once.
enum OldBlobJob {
    Reading(std::thread::JoinHandle<Option<crate::layer::derive::OldBlob>>),
    Read(Option<crate::layer::derive::OldBlob>),
}

impl OldBlobJob {
    fn start(
        store: &crate::store::Store,
        storage_root: &std::path::Path,
        layer: &StoredLayer,
    ) -> OldBlobJob {
        let (s, root, l) = (store.clone(), storage_root.to_path_buf(), layer.clone());
        let spawned = std::thread::Builder::new()
            .name("keel-old-index".into())
            .spawn(move || old_blob(&s, &root, &l));
        match spawned {
            Ok(reading) => OldBlobJob::Reading(reading),
            Err(_) => OldBlobJob::Read(old_blob(store, storage_root, layer)),
        }
    }

    /// The blob and index (None as `old_blob` gives it, or if the thread panicked).
    fn finish(self) -> Option<crate::layer::derive::OldBlob> {
        match self {
            OldBlobJob::Reading(reading) => reading.join().ok().flatten(),
            OldBlobJob::Read(read) => read,
        }
    }
}

/// `COPY <<EOF` bodies with their variables expanded, unless the delimiter was quoted.
/// Quotes and backslashes in a body stay as written; only `$VAR` forms are replaced
/// (BuildKit expands heredocs with a lexer in raw-quotes, raw-escapes mode).
fn expand_heredocs(
    docs: &[Heredoc],
    vars: &BTreeMap<String, String>,
) -> Result<Vec<Heredoc>, StepFailure> {
    let mut lexer = crate::dockerfile::expand::Lexer::new('\\');
    lexer.raw_quotes = true;
    lexer.raw_escapes = true;
    let lookup = |k: &str| vars.get(k).cloned();
    docs.iter()
        .map(|h| {
            let content = match h.expand {
                true => lexer
                    .process_word(&h.content, &lookup)
                    .map_err(|e| StepFailure::Invalid(format!("<<{}: {e}", h.name)))?,
                false => h.content.clone(),
            };
            Ok(Heredoc {
                content,
                ..h.clone()
            })
        })
        .collect()
}

/// Where a copy goes, as the step's snapshot shows it.
struct Target<'a> {
    rootfs: &'a std::path::Path,
    /// Where an ADD archive is decompressed or renamed on the way (`copy_archive`).
    tmp: &'a std::path::Path,
    abs_dest: &'a str,
    workdir: &'a str,
    dest_is_dir: bool,
}

/// The tree operations of a copy; local archives an ADD names are extracted into the
/// rootfs right away (the `bool` says whether there were any). Sources going to one
/// destination are planned together (a file to a file path, several into a directory);
/// with `--parents` each has its own destination.
fn copy_ops(
    ctx: &Context,
    x: &Copy,
    placed: &[Placed],
    t: &Target,
    owner: Option<Owner>,
) -> Result<(Vec<copy::CopyOp>, bool), StepFailure> {
    let mut groups: Vec<(&str, Vec<&Selection>)> = Vec::new();
    let mut archives = false;
    for p in placed {
        let path = ctx.path_of(&p.sel.top.rel);
        if x.add && !x.remote && p.sel.top.kind == FileKind::File && copy_archive::is_archive(&path)
        {
            copy_archive::extract(&path, t.tmp, t.rootfs, t.abs_dest).map_err(StepError::from)?;
            archives = true;
            continue;
        }
        match groups.last_mut() {
            Some((d, sels)) if *d == p.dest && !x.parents => sels.push(&p.sel),
            _ => groups.push((&p.dest, vec![&p.sel])),
        }
    }
    let mut ops = Vec::new();
    for (d, sels) in &groups {
        let what = x.what();
        ops.extend(missing_dests(sels, d, t, owner)?);
        ops.extend(copy::plan(
            what,
            sels,
            d,
            t.workdir,
            x.chmod,
            owner,
            t.dest_is_dir,
        )?);
    }
    Ok((ops, archives))
}

/// The directories that directory sources' contents go into and the image lacks, as ops
/// creating them (0755, the copy's owner or root, mtime 0 as every directory a copy
/// creates): made even when a source is empty (`copy::contents_dest`). An existing
/// destination is left as it is, and one that is not a directory is left for the copy
/// to refuse.
fn missing_dests(
    sels: &[&Selection],
    dest: &str,
    t: &Target,
    owner: Option<Owner>,
) -> Result<Vec<copy::CopyOp>, StepFailure> {
    let tree = crate::sys::rootfs::Rootfs::open(t.rootfs).map_err(StepError::from)?;
    let mut out: Vec<copy::CopyOp> = Vec::new();
    for sel in sels {
        let Some(dir) = copy::contents_dest(sel, dest, t.workdir) else {
            continue;
        };
        let exists = !matches!(tree.stat(std::path::Path::new(&dir)), Ok(None));
        if exists || out.iter().any(|o| o.dest == dir) {
            continue;
        }
        out.push(copy::CopyOp {
            src: sel.top.rel.clone(),
            dest: dir,
            kind: FileKind::Dir,
            mode: 0o755,
            owner: owner.unwrap_or(Owner { uid: 0, gid: 0 }),
            link_target: None,
            size: 0,
            mtime: 0,
            link_to: None,
        });
    }
    Ok(out)
}

/// Whether a copy is written straight into its layer (`commit_plain`), so its step only
/// reads the tree below it: files to copy, no heredoc, no archive for ADD to extract (the
/// test `copy_ops` applies).
fn is_plain(ctx: &Context, x: &Copy, placed: &[Placed], heredocs: &[Heredoc]) -> bool {
    let archive = |p: &Placed| {
        x.add
            && !x.remote
            && p.sel.top.kind == FileKind::File
            && copy_archive::is_archive(&ctx.path_of(&p.sel.top.rel))
    };
    !placed.is_empty() && heredocs.is_empty() && !placed.iter().any(archive)
}

/// Where a copy's last key inputs are remembered (to explain a later miss).
/// The history entry of a copy.
fn created_by(x: &Copy, heredocs: &[Heredoc]) -> String {
    let shown: Vec<String> = x
        .shown_flags
        .iter()
        .chain(&x.srcs)
        .cloned()
        .chain(heredocs.iter().map(|h| format!("<<{}", h.name)))
        .collect();
    // BuildKit's form (convert_copy.go `dispatchCopy`: `--parents`, `--chown`, `--chmod`,
    // the sources, heredocs and destination expanded, `# buildkit` for a step with a
    // layer).
    format!("{} {} {} # buildkit", x.what(), shown.join(" "), x.dest)
}

fn absolute(dest: &str, workdir: &str) -> String {
    if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{}/{dest}", workdir.trim_end_matches('/'))
    }
}

/// Selects every source in `ctx` (less `--exclude`d files) and places it: at the
/// destination, or with `--parents` at the destination plus its parent directories —
/// those after a `/./` pivot in the source when it has one (BuildKit's rule).
fn place(ctx: &Context, x: &Copy) -> Result<Vec<Placed>, StepFailure> {
    let excludes = x
        .exclude
        .iter()
        .map(|e| globset::Glob::new(e).map(|g| g.compile_matcher()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StepFailure::Invalid(format!("--exclude: {e}")))?;
    let mut out = Vec::new();
    for src in &x.srcs {
        for mut sel in ctx.select(src)? {
            let top = sel.top.rel.clone();
            if !excludes.is_empty() {
                // Each entry's every ancestor is tried: not worth it for nothing to match.
                sel.entries.retain(|e| !excluded(&excludes, &top, &e.rel));
            }
            let dest = if x.parents {
                parents_dest(&x.dest, src, &sel)
            } else {
                x.dest.clone()
            };
            out.push(Placed { sel, dest });
        }
    }
    Ok(out)
}

/// Whether `--exclude` drops `rel` (a context path under the selected `top`): a pattern
/// matches the path relative to the source directory (BuildKit matches the copied
/// paths below the source) or to the context, or any of its parent directories (so an
/// excluded directory takes its contents with it).
fn excluded(matchers: &[globset::GlobMatcher], top: &str, rel: &str) -> bool {
    let below = rel
        .strip_prefix(top)
        .and_then(|r| r.strip_prefix('/'))
        .filter(|r| !r.is_empty());
    let forms = [Some(rel), below];
    forms.into_iter().flatten().any(|p| {
        std::path::Path::new(p)
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .any(|a| matchers.iter().any(|m| m.is_match(a)))
    })
}

/// `--parents`: the directory a selection lands in, keeping the source's parents.
fn parents_dest(dest: &str, src: &str, sel: &Selection) -> String {
    let src = src.trim_start_matches("./");
    // What comes before a `/./` pivot is dropped from the kept path.
    let dropped = src
        .find("/./")
        .map(|i| crate::context::clean_source(&src[..i]).unwrap_or_default());
    let rel = sel.top.rel.as_str();
    let kept = match &dropped {
        Some(d) if !d.is_empty() => rel
            .strip_prefix(d.as_str())
            .unwrap_or(rel)
            .trim_start_matches('/'),
        _ => rel,
    };
    let dir = if sel.top.kind == FileKind::Dir {
        kept
    } else {
        kept.rsplit_once('/').map_or("", |(d, _)| d)
    };
    let base = dest.trim_end_matches('/');
    match dir {
        "" => format!("{base}/"),
        d => format!("{base}/{d}/"),
    }
}

/// A file's entry in a COPY's key: `<kind as Debug spells it> <mode octal> <owner>
/// <content>`, written without `format!`'s machinery (10,000s of entries per COPY).
fn key_entry(kind: FileKind, mode: u32, owner: &str, content: &str) -> String {
    let kind = match kind {
        FileKind::File => "File",
        FileKind::Dir => "Dir",
        FileKind::Symlink => "Symlink",
    };
    let mut out = String::with_capacity(kind.len() + owner.len() + content.len() + 16);
    out.push_str(kind);
    out.push(' ');
    push_octal(&mut out, mode);
    out.push(' ');
    out.push_str(owner);
    out.push(' ');
    out.push_str(content);
    out
}

/// A file's name in a COPY's key, `<name>:<rel>` (as `format!` spelled it).
fn key_name(name: &str, rel: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1 + rel.len());
    out.push_str(name);
    out.push(':');
    out.push_str(rel);
    out
}

/// Appends `n` in octal digits, as `{n:o}` writes it (no leading zeros; `0` for zero).
fn push_octal(out: &mut String, mut n: u32) {
    let mut digits = [0u8; 11]; // 32 bits are at most 11 octal digits
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n & 7) as u8;
        n >>= 3;
        if n == 0 {
            break;
        }
    }
    digits[at..].iter().for_each(|&d| out.push(d as char));
}

/// Stores `index` (of the layer `diff_id`) in its cache entry `entry`, for the layer's
/// next version to read instead of indexing the blob again. Best effort (a missing index
/// only costs that), and written behind the build: the entry is in place already, so
/// this never makes a directory (an entry gc took meanwhile stays gone), and a torn file
/// fails the index's checksum.
fn store_index(
    entry: &std::path::Path,
    diff_id: &crate::digest::Digest,
    index: &crate::layer::index::EntryIndex,
) {
    let Some(raw) = crate::digest::raw_sha256(diff_id) else {
        return;
    };
    if let Err(e) = crate::storage::overlay::store_beside(
        entry,
        crate::layer::index::STORED,
        &index.encode(&raw),
    ) {
        tracing::debug!("the layer's entry index was not stored: {e}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_entry_is_spelled_as_format_spells_it() {
        use crate::context::FileKind;
        for kind in [FileKind::File, FileKind::Dir, FileKind::Symlink] {
            let every_width = (0..32)
                .map(|b| 1u32 << b)
                .chain((0..32).map(|b| (1u32 << b) - 1));
            let modes = [0, 0o7, 0o10, 0o644, 0o755, 0o4755, 0o777, u32::MAX];
            for mode in modes.into_iter().chain(every_width) {
                for (owner, content) in [("0:0", "sha256:ab"), ("", ""), ("0:0", "../t")] {
                    assert_eq!(
                        super::key_entry(kind, mode, owner, content),
                        format!("{kind:?} {mode:o} {owner} {content}")
                    );
                }
            }
        }
    }

    #[test]
    fn a_key_name_is_spelled_as_format_spells_it() {
        for (name, rel) in [("src", "a/b"), ("", ""), ("d>src", "é x"), ("s:t", ":")] {
            assert_eq!(super::key_name(name, rel), format!("{name}:{rel}"));
        }
    }

    use super::*;

    #[test]
    fn excludes_match_below_the_source_and_take_directories_whole() {
        let m = |p: &str| globset::Glob::new(p).unwrap().compile_matcher();
        let cases = [
            ("tmp", "src", "src/tmp", true),
            ("tmp", "src", "src/tmp/x", true),
            ("*.log", "src", "src/a/b.log", true),
            ("src/keep", "src", "src/keep", true),
            ("tmp", "src", "src/keep", false),
            ("tmp", "src", "src/tmpfile", false),
        ];
        for (pat, top, rel, want) in cases {
            assert_eq!(excluded(&[m(pat)], top, rel), want, "{pat} {rel}");
        }
    }

    /// A COPY's key entries are collected and made into the map at once: for keys given
    /// more than once, out of order, the map holds what inserting them one by one gave.
    #[test]
    fn key_entries_collected_at_once_equal_the_ones_inserted() {
        let pairs = [
            ("b", "1"),
            ("a", "2"),
            ("b", "3"),
            ("c", "4"),
            ("a", "5"),
            ("a", "6"),
        ];
        let mut inserted = BTreeMap::new();
        for (k, v) in pairs {
            inserted.insert(k.to_string(), v.to_string());
        }
        let collected: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(collected, inserted);
    }

    fn sel(rel: &str, kind: FileKind) -> Selection {
        let f = crate::context::ContextFile {
            rel: rel.into(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            link_target: None,
            stamp: Default::default(),
        };
        Selection {
            name: rel.rsplit('/').next().unwrap().into(),
            top: f,
            entries: vec![],
        }
    }

    #[test]
    fn parents_keep_the_path_after_the_pivot() {
        let cases = [
            ("./x/a.txt", "x/a.txt", FileKind::File, "/dst/", "/dst/x/"),
            ("y/b.txt", "y/b.txt", FileKind::File, "/dst", "/dst/y/"),
            (
                "./x/./s/a.txt",
                "x/s/a.txt",
                FileKind::File,
                "/dst/",
                "/dst/s/",
            ),
            ("./x/./a.txt", "x/a.txt", FileKind::File, "/dst/", "/dst/"),
            ("top.txt", "top.txt", FileKind::File, "/dst/", "/dst/"),
            ("./x/dir", "x/dir", FileKind::Dir, "/dst/", "/dst/x/dir/"),
            (
                "./x/*/c.txt",
                "x/q/c.txt",
                FileKind::File,
                "rel/",
                "rel/x/q/",
            ),
        ];
        for (src, rel, kind, dest, want) in cases {
            assert_eq!(parents_dest(dest, src, &sel(rel, kind)), want, "{src}");
        }
    }
}
