//! COPY and ADD: resolving the sources (context, stage or image), the key over exactly
//! the files they select (with the settled-stamp shortcut for no-op rebuilds), and the
//! layer — written straight from the sources when the copy is plain.
use std::collections::BTreeMap;

use serde_json::json;

use super::*;

impl Executor<'_> {
    pub(super) fn copy_step(
        &mut self,
        n: usize,
        s: &Step,
        state: State,
        vars: &BTreeMap<String, String>,
    ) -> Result<(State, Outcome), StepFailure> {
        let StepKind::Copy {
            add,
            srcs,
            dest,
            from,
            chown,
            chmod,
            link,
            exclude,
            heredocs,
        } = &s.kind
        else {
            unreachable!()
        };
        let what = if *add { "ADD" } else { "COPY" };
        let dest = self.expand(dest, vars)?;
        let chmod = chmod
            .as_deref()
            .map(|c| self.expand(c, vars))
            .transpose()?
            .map(|c| copy::parse_chmod(&c))
            .transpose()?;
        let chown = chown.as_deref().map(|c| self.expand(c, vars)).transpose()?;
        let mut srcs_expanded = Vec::new();
        for src in srcs {
            let v = self.expand(src, vars)?;
            if *add
                && (v.starts_with("http://") || v.starts_with("https://") || v.starts_with("git@"))
            {
                return Err(StepFailure::Invalid(format!("ADD {v}: remote sources are not supported (keel builds offline); download it in a RUN step or put it in the context")));
            }
            srcs_expanded.push(v);
        }
        // Where the sources come from: the context, another stage, or an image.
        let from_state = match from {
            None => None,
            Some(f) => Some(self.state_from(&self.expand(f, vars)?)?),
        };
        let from_snap = match &from_state {
            Some(st) => Some(step::snapshot(
                self.store,
                self.snapshotter.as_ref(),
                &format!("build-{}-{n}-from", self.build_id),
                &st.layers,
            )?),
            None => None,
        };
        let result = (|| -> Result<(State, Outcome), StepFailure> {
            let from_ctx;
            let ctx: &Context = match &from_snap {
                Some(snap) => {
                    from_ctx = Context::new(&snap.rootfs, Box::new(|_: &str| false))?;
                    &from_ctx
                }
                None => self.context,
            };
            let mut selections: Vec<Selection> = Vec::new();
            for src in &srcs_expanded {
                selections.extend(ctx.select(src)?);
            }
            let excludes = exclude
                .iter()
                .map(|e| globset::Glob::new(e).map(|g| g.compile_matcher()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StepFailure::Invalid(format!("--exclude: {e}")))?;
            for sel in &mut selections {
                sel.entries
                    .retain(|e| !excludes.iter().any(|m| m.is_match(&e.rel)));
            }
            let mut numeric_owner = chown.as_deref().and_then(parse_numeric_owner);
            if let (true, None, Some(c)) = (*link, numeric_owner, &chown) {
                // A linked layer cannot look at the layers below it, so a user name is
                // resolved in the parent now, and the ids become part of its key.
                numeric_owner = Some(self.owner_in(n, &state, c)?);
            }
            let instruction = format!(
                "{what} {} -> {dest} chown={chown:?} chmod={chmod:?} exclude={exclude:?} from={}{}",
                json!(srcs_expanded),
                from_state
                    .as_ref()
                    .map(|s| s.key.as_str())
                    .unwrap_or("context"),
                if *link {
                    format!(" link owner={numeric_owner:?}")
                } else {
                    String::new()
                }
            );
            let workdir_now = config_str(&state.config, "WorkingDir").unwrap_or_default();
            // The fast path: the same files, unchanged since they settled, give the key
            // the step had last time — no stat index, no key inputs.
            let heredoc_text: Vec<&str> = heredocs
                .iter()
                .flat_map(|h| [h.name.as_str(), h.content.as_str()])
                .collect();
            let stamp = from_state.is_none().then(|| {
                let root = self.context.root().to_string_lossy();
                let mut parts = vec![
                    root.as_ref(),
                    state.key.as_str(),
                    instruction.as_str(),
                    workdir_now.as_str(),
                ];
                parts.extend(&heredoc_text);
                crate::build::cache::SelectionStamp::of(
                    &parts,
                    selections.iter().flat_map(|sel| {
                        sel.files()
                            .into_iter()
                            .map(move |(f, rel)| (sel.name.as_str(), rel, f))
                    }),
                )
            });
            if let Some((st, _)) = &stamp {
                if !self.opts.no_cache && !self.opts.explain {
                    if let Some(hit) = self
                        .cache
                        .key_by_stamp(st)
                        .and_then(|k| self.cache.get::<State>(&k))
                    {
                        return Ok((hit, Outcome::Cached));
                    }
                }
            }
            // Key: every selected file's path, type, mode and owner as they will land, and
            // its content digest; the destination and flags are in the instruction text.
            let mut files = BTreeMap::new();
            for sel in &selections {
                for (f, rel) in sel.files() {
                    let mode = match (chmod, f.kind) {
                        (
                            Some(m),
                            crate::context::FileKind::File | crate::context::FileKind::Dir,
                        ) => m,
                        (_, crate::context::FileKind::Symlink) => 0o777,
                        _ => f.mode,
                    };
                    // Files from another stage: that stage's key pins their content.
                    let content = self.content_input(ctx, f, from_state.is_none())?;
                    let owner = if chown.is_some() {
                        String::new()
                    } else {
                        "0:0".into()
                    };
                    files.insert(
                        format!("{}:{rel}", sel.name),
                        format!("{:?} {mode:o} {owner} {content}", f.kind),
                    );
                }
            }
            for h in heredocs {
                files.insert(
                    format!("<<{}", h.name),
                    crate::digest::of_bytes(h.content.as_bytes()).to_string(),
                );
            }
            let inputs = KeyInputs {
                parent: state.key.clone(),
                instruction,
                files,
                env: BTreeMap::from([("workdir".into(), workdir_now)]),
                ..Default::default()
            };
            let position = format!(
                "{}|{}|{}",
                self.context.root().display(),
                self.opts.file_name,
                s.line
            );
            let shown: Vec<String> = srcs_expanded
                .iter()
                .cloned()
                .chain(heredocs.iter().map(|h| format!("<<{}", h.name)))
                .collect();
            let created_by = format!("{what} {} {dest}", shown.join(" "));
            let stamp = stamp.filter(|(_, newest)| crate::context::is_settled(*newest));
            let key = inputs.key();
            let body = |snap: &crate::storage::Snapshot,
                        state: &State|
             -> Result<Option<StoredLayer>, StepFailure> {
                let owner = match (&chown, numeric_owner) {
                    (None, _) => None,
                    (Some(_), Some(o)) => Some(o),
                    (Some(c), None) => {
                        let acc = runtime::spec::Accounts::read(&snap.rootfs)?;
                        let u = acc.resolve(c)?;
                        Some(Owner {
                            uid: u.uid,
                            gid: u.gid,
                        })
                    }
                };
                let workdir = config_str(&state.config, "WorkingDir").unwrap_or_else(|| "/".into());
                let abs_dest = if dest.starts_with('/') {
                    dest.clone()
                } else {
                    format!("{}/{dest}", workdir.trim_end_matches('/'))
                };
                let dest_is_dir = step::is_dir_in(&snap.rootfs, &copy::clean_abs(&abs_dest));
                let mut plain = Vec::new();
                for sel in selections.iter() {
                    let archive = *add
                        && sel.top.kind == crate::context::FileKind::File
                        && step::is_archive(&ctx.path_of(&sel.top.rel));
                    if archive {
                        step::apply_add_archive(
                            &ctx.path_of(&sel.top.rel),
                            &snap.rootfs,
                            &copy::clean_abs(&abs_dest),
                        )?;
                    } else {
                        plain.push(sel.clone());
                    }
                }
                if !plain.is_empty() {
                    let ops = copy::plan(
                        what_static(*add),
                        &plain,
                        &dest,
                        &workdir,
                        chmod,
                        owner,
                        dest_is_dir,
                    )?;
                    if plain.len() == selections.len() && heredocs.is_empty() {
                        // A plain copy: the layer is written straight from the sources.
                        return Ok(step::commit_copy(
                            self.store,
                            ctx,
                            &snap.rootfs,
                            &ops,
                            self.opts.epoch,
                        )?);
                    }
                    step::apply_copy(ctx, &snap.rootfs, &ops)?;
                }
                if !heredocs.is_empty() {
                    // Through the tree's handle: a planted symlink at the target (or on
                    // the way) is replaced or followed inside the image, never the host.
                    let tree =
                        crate::sys::rootfs::Rootfs::open(&snap.rootfs).map_err(StepError::from)?;
                    for h in heredocs {
                        let target = if dest.ends_with('/') || dest_is_dir {
                            format!("{}/{}", copy::clean_abs(&abs_dest), h.name)
                        } else {
                            copy::clean_abs(&abs_dest)
                        };
                        let path = std::path::Path::new(&target);
                        tree.write_file(path, h.content.as_bytes(), chmod.unwrap_or(0o644))
                            .map_err(StepError::from)?;
                        if let Some(o) = owner {
                            tree.lchown(path, o.uid, o.gid).map_err(StepError::from)?;
                        }
                    }
                }
                Ok(step::commit(
                    self.store,
                    self.snapshotter.as_ref(),
                    snap,
                    self.opts.epoch,
                )?)
            };
            let label = format!("{what}: ");
            let done = if *link {
                self.linked(n, &label, state, &inputs, &position, &created_by, body)?
            } else {
                self.in_snapshot(n, &label, state, &inputs, &position, &created_by, body)?
            };
            if let Some((st, _)) = &stamp {
                self.cache.remember_stamp(st, &key);
            }
            Ok(done)
        })();
        if let Some(snap) = &from_snap {
            let _ = self.snapshotter.remove(snap);
        }
        result
    }
}

fn what_static(add: bool) -> &'static str {
    if add {
        "ADD"
    } else {
        "COPY"
    }
}
