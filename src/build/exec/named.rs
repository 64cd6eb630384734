//! Named build contexts (`keel build --build-context NAME=VALUE`, BuildKit's semantics):
//! `FROM NAME`, `COPY --from=NAME` and `RUN --mount=from=NAME` get, instead of a store
//! image called NAME, a local directory (its files as a one-layer image with an empty
//! config), `docker-image://REF` (an image in the local store; keel never pulls) or
//! `oci-layout://PATH[:TAG|@DIGEST]` (an image read from an OCI layout directory, its
//! blobs verified into the store). A stage of the Dockerfile with that name still wins.
use std::path::{Path, PathBuf};

use super::*;

/// One `--build-context` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    Dir(PathBuf),
    Image(String),
    OciLayout { dir: PathBuf, pick: Option<String> },
}

impl NamedContext {
    /// Parses `NAME=DIR|docker-image://REF|oci-layout://PATH[:TAG|@DIGEST]`.
    pub fn parse(spec: &str) -> Result<(String, NamedContext), String> {
        let bad = |why: &str| format!("--build-context {spec:?}: {why}");
        let (name, value) = spec
            .split_once('=')
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
            .ok_or_else(|| {
                bad("expected NAME=DIR, NAME=docker-image://REF or NAME=oci-layout://PATH")
            })?;
        let ctx = if let Some(r) = value.strip_prefix("docker-image://") {
            NamedContext::Image(r.to_string())
        } else if let Some(p) = value.strip_prefix("oci-layout://") {
            // The last `@` or a `:` after the last `/` picks the image in the layout.
            let (dir, pick) = match (p.rfind('@'), p.rfind(':')) {
                (Some(i), _) => (&p[..i], Some(p[i..].to_string())),
                (None, Some(i)) if !p[i..].contains('/') => (&p[..i], Some(p[i + 1..].to_string())),
                _ => (p, None),
            };
            NamedContext::OciLayout {
                dir: dir.into(),
                pick,
            }
        } else if value.contains("://") {
            return Err(bad(
                "keel takes a directory, docker-image:// or oci-layout://",
            ));
        } else {
            NamedContext::Dir(value.into())
        };
        Ok((name.to_string(), ctx))
    }
}

impl Executor<'_> {
    /// The state a named context gives, when `name` is one (computed once per build).
    pub(super) fn named_state(&mut self, name: &str) -> Option<Result<State, StepFailure>> {
        if let Some(st) = self.named.get(name) {
            return Some(Ok(st.clone()));
        }
        let ctx = self.opts.contexts.get(name)?.clone();
        let state = match &ctx {
            NamedContext::Image(r) => self.image_state(r),
            NamedContext::Dir(d) => self.dir_state(name, d),
            NamedContext::OciLayout { dir, pick } => self.layout_state(dir, pick.as_deref()),
        };
        if let Ok(st) = &state {
            self.named.insert(name.to_string(), st.clone());
        }
        Some(state)
    }

    fn image_state(&self, r: &str) -> Result<State, StepFailure> {
        let image = |source: ImageStateError| StepFailure::Image {
            image: r.to_string(),
            source: Box::new(source),
        };
        let rec = self.store.resolve(r).map_err(|e| image(e.into()))?;
        state_of_image(self.store, &rec).map_err(image)
    }

    /// A directory's files as one layer on scratch (owned by root, as a context copy),
    /// less what the directory's own `.dockerignore` excludes. BuildKit does the same: for
    /// a `local` named context, frontend/dockerui/namedcontext.go (`NamedContext.load`,
    /// case "local") reads `.dockerignore` at the root of that directory and passes its
    /// patterns as the context's exclude patterns; the main context's `.dockerignore` and
    /// `<Dockerfile>.dockerignore` do not apply to it.
    fn dir_state(&self, name: &str, dir: &Path) -> Result<State, StepFailure> {
        let ctx = Context::new(dir, crate::context::dockerignore(dir)?)?;
        let sels = ctx.select(".")?;
        let ops = copy::plan("--build-context", &sels, "/", "/", None, None, true)?;
        let empty = crate::sys::hostfs::scratch_dir_in(&self.store.tmp_dir(), "named").map_err(
            |source| StepError::Io {
                path: self.store.tmp_dir(),
                source,
            },
        )?;
        let layer = step::commit_copy(self.store, &ctx, empty.path(), &ops, None, self.opts.epoch)?;
        let mut state = State {
            config: ImageConfig::scratch(),
            layers: Vec::new(),
            key: String::new(),
        };
        let diff = layer
            .as_ref()
            .map(|l| l.diff_id.to_string())
            .unwrap_or_default();
        add_layer(&mut state, layer, &format!("--build-context {name}"));
        state.key = format!("context:{diff}");
        Ok(state)
    }

    /// An image of an OCI layout directory: its blobs verified into the store.
    fn layout_state(&self, dir: &Path, pick: Option<&str>) -> Result<State, StepFailure> {
        let shown = dir.display().to_string();
        let bad = |why: String| StepFailure::Invalid(format!("oci-layout://{shown}: {why}"));
        let index: serde_json::Value = std::fs::read(dir.join("index.json"))
            .map_err(|e| bad(format!("reading index.json: {e}")))
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| bad(format!("index.json: {e}")))
            })?;
        let all = index["manifests"].as_array().cloned().unwrap_or_default();
        let name_of = |m: &serde_json::Value| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        let chosen: Vec<&serde_json::Value> = all
            .iter()
            .filter(|m| match pick {
                Some(p) if p.starts_with('@') => m["digest"].as_str() == Some(&p[1..]),
                Some(t) => name_of(m) == t || name_of(m).ends_with(&format!(":{t}")),
                None => true,
            })
            .collect();
        let [desc] = chosen[..] else {
            return Err(bad(format!(
                "{} images match; pick one with :TAG or @DIGEST",
                chosen.len()
            )));
        };
        let desc: oci_spec::image::Descriptor =
            serde_json::from_value(desc.clone()).map_err(|e| bad(e.to_string()))?;
        let put = |d: &crate::digest::Digest| -> Result<(), StepFailure> {
            let path = dir
                .join("blobs")
                .join(d.algorithm().to_string())
                .join(d.digest());
            let f =
                std::fs::File::open(&path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
            self.store.put_blob(f, Some(d))?;
            Ok(())
        };
        put(desc.digest())?;
        let manifest: oci_spec::image::ImageManifest =
            self.store.read_json("manifest", desc.digest())?;
        put(manifest.config().digest())?;
        for l in manifest.layers() {
            put(l.digest())?;
        }
        let rec = self.store.load_record(desc, Vec::new())?;
        state_of_image(self.store, &rec).map_err(|e| bad(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_context_values() {
        let layout = |d: &str, p: Option<&str>| NamedContext::OciLayout {
            dir: d.into(),
            pick: p.map(str::to_string),
        };
        let ok = [
            ("src=../lib", "src", NamedContext::Dir("../lib".into())),
            (
                "base=docker-image://bb:1",
                "base",
                NamedContext::Image("bb:1".into()),
            ),
            ("l=oci-layout:///srv/lay", "l", layout("/srv/lay", None)),
            (
                "l=oci-layout:///srv/lay:v2",
                "l",
                layout("/srv/lay", Some("v2")),
            ),
            (
                "l=oci-layout://./a:b/lay@sha256:ab",
                "l",
                layout("./a:b/lay", Some("@sha256:ab")),
            ),
        ];
        for (spec, name, want) in ok {
            assert_eq!(
                NamedContext::parse(spec).unwrap(),
                (name.to_string(), want),
                "{spec}"
            );
        }
        for bad in ["", "=x", "n=", "n=git://x", "n=https://h/x"] {
            assert!(NamedContext::parse(bad).is_err(), "{bad}");
        }
    }
}
