//! An image reduced to what a Dockerfile decides: the file tree after applying every layer
//! (type, mode, owner, size, content digest, link target; no timestamps) and the config
//! fields instructions set. Both builders' images are read into this, so comparing them is
//! comparing two `Image` values.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// One path of the flattened tree, as a line of text (easy to diff and to write by hand).
pub type Tree = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub tree: Tree,
    /// `Env`, `Cmd`, `Entrypoint`, … as JSON; absent and empty are the same (docker
    /// treats them alike).
    pub config: BTreeMap<String, Value>,
    /// The history entries as `created_by`, ` [empty_layer]` after one without a layer,
    /// and the layer count: compared only by the cases that ask (`Case::history`), after
    /// the base image's entries are dropped (`skip_history`).
    pub history: Vec<String>,
    pub layers: usize,
}

/// The config fields a Dockerfile can set.
const FIELDS: &[&str] = &[
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "Healthcheck",
    "Shell",
    "OnBuild",
];

impl Image {
    /// Reads an image given its manifest and a function from digest to blob path.
    pub fn read(manifest: &Value, blob: &dyn Fn(&str) -> std::path::PathBuf) -> Image {
        let cfg_digest = manifest["config"]["digest"].as_str().unwrap();
        let cfg: Value = serde_json::from_slice(&std::fs::read(blob(cfg_digest)).unwrap()).unwrap();
        let mut tree = Tree::new();
        for layer in manifest["layers"].as_array().unwrap() {
            let path = blob(layer["digest"].as_str().unwrap());
            apply_layer(&mut tree, &std::fs::read(path).unwrap());
        }
        let history = cfg["history"]
            .as_array()
            .map(|h| h.iter().map(history_line).collect())
            .unwrap_or_default();
        Image {
            tree,
            config: reduce_config(&cfg["config"]),
            history,
            layers: manifest["layers"].as_array().unwrap().len(),
        }
    }

    /// Drops the base image's `entries` history entries and `layers` layers, or, with
    /// `None`, the history altogether (a case that does not compare it).
    pub fn skip_history(&mut self, base: Option<(usize, usize)>) {
        match base {
            Some((entries, layers)) => {
                self.history.drain(..entries.min(self.history.len()));
                self.layers -= layers;
            }
            None => {
                self.history.clear();
                self.layers = 0;
            }
        }
    }

    /// States BuildKit's history for the steps after the base (one line per entry, see
    /// `history_line`); the layer count follows from the entries with a layer.
    pub fn set_history(&mut self, lines: &[&str]) {
        self.history = lines.iter().map(|l| l.to_string()).collect();
        self.layers = lines
            .iter()
            .filter(|l| !l.ends_with(" [empty_layer]"))
            .count();
    }

    /// The image tagged `name` in an OCI layout (keel's `<root>/images`).
    pub fn from_oci_layout(dir: &Path, name: &str) -> Image {
        let index: Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        let want = format!("{name}:latest");
        let desc = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == want.as_str())
            .unwrap_or_else(|| panic!("no {want} in {}", dir.display()));
        let blob = |d: &str| {
            dir.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:"))
        };
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(blob(desc["digest"].as_str().unwrap())).unwrap())
                .unwrap();
        Image::read(&manifest, &blob)
    }

    /// An image pushed to containers/image's `dir:` transport (buildah's output).
    pub fn from_dir_transport(dir: &Path) -> Image {
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        let blob = |d: &str| dir.join(d.trim_start_matches("sha256:"));
        Image::read(&manifest, &blob)
    }

    /// Drops what buildah leaves behind from a RUN step's mounts: the empty `/etc/hosts`,
    /// `/etc/resolv.conf`, `/etc/hostname` files and the empty `/run` directory it created
    /// as mount points. BuildKit removes the mount points it had to create before it
    /// commits (moby/buildkit `executor/stubs.go`, `MountStubsCleaner`), and so does keel.
    pub fn drop_mount_stubs(&mut self) {
        for f in ["etc/hosts", "etc/resolv.conf", "etc/hostname"] {
            if self
                .tree
                .get(f)
                .is_some_and(|l| l.starts_with("file ") && l.contains(" 0 sha256:"))
            {
                self.tree.remove(f);
            }
        }
        let secrets_empty = !self.tree.keys().any(|k| k.starts_with("run/secrets/"));
        if secrets_empty
            && self
                .tree
                .get("run/secrets")
                .is_some_and(|l| l.starts_with("dir "))
        {
            self.tree.remove("run/secrets");
        }
        let run_empty = !self.tree.keys().any(|k| k.starts_with("run/"));
        if run_empty && self.tree.get("run").is_some_and(|l| l.starts_with("dir ")) {
            self.tree.remove("run");
        }
    }

    /// Sets (or with `None` removes) a config field: how a case states BuildKit's expectation
    /// where buildah differs.
    pub fn set(&mut self, field: &str, v: Option<Value>) {
        match v {
            Some(v) if !is_empty(&v) => self.config.insert(field.into(), v),
            _ => self.config.remove(field),
        };
    }

    /// Sets a path's entry line (see `entry_line`), or removes it.
    pub fn file(&mut self, path: &str, line: Option<&str>) {
        match line {
            Some(l) => self.tree.insert(path.into(), l.into()),
            None => self.tree.remove(path),
        };
    }
}

/// One history entry as a line: `created_by`, then ` [empty_layer]` when it has no layer.
fn history_line(h: &Value) -> String {
    let by = h["created_by"].as_str().unwrap_or("");
    match h["empty_layer"].as_bool().unwrap_or(false) {
        true => format!("{by} [empty_layer]"),
        false => by.to_string(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn reduce_config(c: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for f in FIELDS {
        let mut v = c.get(*f).cloned().unwrap_or(Value::Null);
        if *f == "Labels" {
            // buildah stamps its own version; not something the Dockerfile set.
            if let Some(o) = v.as_object_mut() {
                o.remove("io.buildah.version");
            }
        }
        if !is_empty(&v) && v != Value::String(String::new()) {
            out.insert(f.to_string(), v);
        }
    }
    out
}

fn normalise(p: &Path) -> String {
    let s = p.to_string_lossy();
    let s = s.trim_start_matches("./").trim_start_matches('/');
    s.trim_end_matches('/').to_string()
}

/// Applies one layer (gzip or plain tar) on top of `tree`: whiteouts and opaque markers
/// first (they hide lower layers only), then the entries.
fn apply_layer(tree: &mut Tree, bytes: &[u8]) {
    let mut raw = Vec::new();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .unwrap();
    } else {
        raw = bytes.to_vec();
    }
    let mut entries = Vec::new();
    let mut ar = tar::Archive::new(&raw[..]);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = normalise(&e.path().unwrap());
        let name = path.rsplit('/').next().unwrap_or("").to_string();
        let parent = path
            .rsplit_once('/')
            .map(|(p, _)| p.to_string())
            .unwrap_or_default();
        if name == ".wh..wh..opq" {
            remove_under(tree, &parent, false);
            continue;
        }
        if let Some(gone) = name.strip_prefix(".wh.") {
            let gone = if parent.is_empty() {
                gone.to_string()
            } else {
                format!("{parent}/{gone}")
            };
            remove_under(tree, &gone, true);
            continue;
        }
        if path.is_empty() {
            continue;
        }
        let line = entry_line(&mut e);
        entries.push((path, line));
    }
    for (path, line) in entries {
        let line = match line.strip_prefix("hardlink ") {
            // A hard link is a second name for the same file: compare what it holds, and
            // that it is a link (docker keeps a context's hard links as links).
            Some(target) => tree
                .get(&normalise(Path::new(target)))
                .map(|t| format!("{t} (hard link)"))
                .unwrap_or(line.clone()),
            None => line,
        };
        tree.insert(path, line);
    }
}

fn remove_under(tree: &mut Tree, dir: &str, itself: bool) {
    let prefix = format!("{dir}/");
    tree.retain(|p, _| !(p.starts_with(&prefix) || (itself && p == dir)));
}

/// `file 0644 0:0 12 sha256:…`, `dir 1777 0:0`, `symlink 0:0 -> target`.
fn entry_line<R: Read>(e: &mut tar::Entry<R>) -> String {
    let xattrs = xattrs(e);
    let h = e.header();
    let mode = h.mode().unwrap() & 0o7777;
    let owner = format!("{}:{}", h.uid().unwrap(), h.gid().unwrap());
    let link = e
        .link_name()
        .unwrap()
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default();
    let line = match h.entry_type() {
        tar::EntryType::Directory => format!("dir {mode:04o} {owner}"),
        tar::EntryType::Symlink => format!("symlink {owner} -> {link}"),
        tar::EntryType::Link => format!("hardlink {link}"),
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            let sum = hex::encode(Sha256::digest(&data));
            format!(
                "file {mode:04o} {owner} {} sha256:{}",
                data.len(),
                &sum[..16]
            )
        }
        other => format!("{other:?} {mode:04o} {owner}"),
    };
    line + &xattrs
}

/// The entry's extended attributes (PAX `SCHILY.xattr.*`), as ` xattr:NAME=HEX` each in
/// name order; empty for none (so trees without any read as before).
fn xattrs<R: Read>(e: &mut tar::Entry<R>) -> String {
    let Ok(Some(exts)) = e.pax_extensions() else {
        return String::new();
    };
    let mut found: Vec<(String, String)> = exts
        .flatten()
        .filter_map(|x| {
            let name = x.key().ok()?.strip_prefix("SCHILY.xattr.")?.to_string();
            Some((name, hex::encode(x.value_bytes())))
        })
        .collect();
    found.sort();
    found
        .iter()
        .map(|(n, v)| format!(" xattr:{n}={v}"))
        .collect()
}
