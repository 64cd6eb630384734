//! Where buildpacks come from: a shipped NAME (`python`, embedded from `builders/`), a
//! directory, a git URL (`URL[#REF]`) or a tarball URL. Parsing a `--buildpack` value
//! is pure; fetching writes into `<root>/buildpacks/` only: a URL is fetched once and
//! reused by later builds, every buildpack is pinned by the digest of its tree (and a git
//! one by its commit too), which the build's record keeps.
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::shipped;
use super::BuildpackError;
use crate::build::remote;
use crate::sys::hostfs;

/// A `--buildpack` value (or a `.buildpacks` line), parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Shipped(String),
    Dir(PathBuf),
    Git {
        url: String,
        reference: Option<String>,
    },
    Tarball(String),
}

/// A buildpack ready to use: its pristine tree in the root and what pins it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Fetched {
    /// Short name for the build output: the shipped name or the tree's last component.
    pub name: String,
    /// What the user named (`python`, a path, a URL).
    pub source: String,
    /// `sha256:…` of the tree (paths, executable bits, contents, link targets).
    pub digest: String,
    /// The git commit a git buildpack was fetched at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(skip)]
    pub dir: PathBuf,
}

fn is_url(s: &str) -> bool {
    [
        "http://", "https://", "git://", "ssh://", "file://", "git@", "git+",
    ]
    .iter()
    .any(|p| s.starts_with(p))
}

/// Parses one buildpack reference; `base` resolves relative directories.
pub fn parse(s: &str, base: &Path) -> Result<Source, BuildpackError> {
    let s = s.trim();
    if shipped::names().contains(&s) {
        return Ok(Source::Shipped(s.to_string()));
    }
    if is_url(s) {
        let (url, reference) = match s.split_once('#') {
            Some((u, r)) if !r.is_empty() => (u, Some(r.to_string())),
            _ => (s.trim_end_matches('#'), None),
        };
        let path = url.split('?').next().unwrap_or(url);
        let tarball = [".tgz", ".tar.gz", ".tar"]
            .iter()
            .any(|e| path.ends_with(e));
        if tarball && (url.starts_with("http://") || url.starts_with("https://")) {
            return Ok(Source::Tarball(url.to_string()));
        }
        let url = url.strip_prefix("git+").unwrap_or(url).to_string();
        return Ok(Source::Git { url, reference });
    }
    let dir = base.join(s);
    if s.contains('/') || s.starts_with('.') || dir.is_dir() {
        return Ok(Source::Dir(dir));
    }
    Err(BuildpackError::UnknownBuildpack {
        name: s.to_string(),
        shipped: shipped::names().join(", "),
    })
}

/// The digest of a buildpack tree: every path (sorted), its kind, its executable bit and
/// its content or link target; `.git` is left out.
pub fn tree_digest(dir: &Path) -> Result<String, BuildpackError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path, source| BuildpackError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut h = Sha256::new();
    let walk = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git");
    for e in walk {
        let e = e.map_err(|e| io(dir, e.into()))?;
        let rel = e.path().strip_prefix(dir).unwrap_or(e.path());
        let meta = e.path().symlink_metadata().map_err(|s| io(e.path(), s))?;
        h.update(rel.as_os_str().as_encoded_bytes());
        if meta.is_symlink() {
            let t = std::fs::read_link(e.path()).map_err(|s| io(e.path(), s))?;
            h.update(b"\0l\0");
            h.update(t.as_os_str().as_encoded_bytes());
        } else if meta.is_file() {
            let exec = meta.permissions().mode() & 0o111 != 0;
            h.update(if exec { b"\0x\0" } else { b"\0f\0" });
            let bytes = std::fs::read(e.path()).map_err(|s| io(e.path(), s))?;
            h.update(Sha256::digest(&bytes));
        } else {
            h.update(b"\0d\0");
        }
        h.update(b"\n");
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// Where a URL's buildpack is kept in the root (one directory per URL and ref).
fn fetched_dir(root: &Path, key: &str) -> PathBuf {
    let h = hex::encode(Sha256::digest(key.as_bytes()));
    root.join("buildpacks/fetched").join(&h[..24])
}

fn last_component(s: &str) -> String {
    let s = s.trim_end_matches('/').trim_end_matches(".git");
    let s = s.rsplit(['/', ':']).next().unwrap_or(s);
    [".tar.gz", ".tgz", ".tar"]
        .iter()
        .fold(s.to_string(), |n, e| n.trim_end_matches(e).to_string())
}

/// Makes `src` usable: shipped buildpacks are written out, URLs fetched (once), and the
/// tree's digest computed.
pub fn fetch(src: &Source, text: &str, root: &Path) -> Result<Fetched, BuildpackError> {
    let (name, dir, commit) = match src {
        Source::Shipped(n) => (n.clone(), shipped::write_out(root, n)?, None),
        Source::Dir(d) => {
            if !has_program(d, "bin/detect") || !has_program(d, "bin/compile") {
                return Err(BuildpackError::NotABuildpack(d.clone()));
            }
            (last_component(&d.display().to_string()), d.clone(), None)
        }
        Source::Git { url, reference } => {
            let dir = fetched_dir(root, text);
            if !dir.is_dir() {
                fetch_git(url, reference.as_deref(), &dir, root)?;
            }
            let commit = std::fs::read_to_string(dir.join(".keel-commit")).ok();
            (
                last_component(url),
                dir,
                commit.map(|c| c.trim().to_string()),
            )
        }
        Source::Tarball(url) => {
            let dir = fetched_dir(root, text);
            if !dir.is_dir() {
                fetch_tarball(url, &dir, root)?;
            }
            (last_component(url), dir, None)
        }
    };
    if !has_program(&dir, "bin/compile") {
        return Err(BuildpackError::NotABuildpack(dir));
    }
    Ok(Fetched {
        name,
        source: text.to_string(),
        digest: tree_digest(&dir)?,
        commit,
        dir,
    })
}

/// Whether the buildpack in `dir` has the regular file `rel`, its links resolved inside
/// `dir` as they are when it runs in the build's container: a fetched buildpack whose
/// `bin/compile` links to a host path must not have keel look at that path.
fn has_program(dir: &Path, rel: &str) -> bool {
    crate::sys::rootfs::Rootfs::open(dir)
        .and_then(|tree| tree.stat(Path::new(rel)))
        .is_ok_and(|st| st.is_some_and(|st| st.kind == crate::sys::rootfs::Kind::File))
}

/// The directory fetches happen in: inside the root, next to where they land, so the
/// finished tree is renamed into place and a failed fetch leaves only a temp dir.
fn scratch(root: &Path) -> Result<tempfile::TempDir, BuildpackError> {
    let parent = root.join("buildpacks/fetched");
    hostfs::create_dir_all(&parent).map_err(|source| BuildpackError::Io {
        path: parent.clone(),
        source,
    })?;
    hostfs::temp_dir_in(&parent, "fetch").map_err(|source| BuildpackError::Io {
        path: parent,
        source,
    })
}

/// Checks `url` out at `reference` into `dest` (as `ADD <git url>` does), recording the
/// commit in `.keel-commit`.
fn fetch_git(
    url: &str,
    reference: Option<&str>,
    dest: &Path,
    root: &Path,
) -> Result<(), BuildpackError> {
    let tmp = scratch(root)?;
    let checkout = remote::fetch_git(tmp.path(), url, reference, false)?;
    let tree = checkout.dir.path().join(&checkout.name);
    let io = |path: &Path, source| BuildpackError::Io {
        path: path.to_path_buf(),
        source,
    };
    let commit = checkout.commit.unwrap_or_default();
    hostfs::write(tree.join(".keel-commit"), format!("{commit}\n")).map_err(|s| io(&tree, s))?;
    hostfs::rename(&tree, dest).map_err(|s| io(dest, s))
}

/// Downloads a (gzipped) tarball and unpacks it into `dest`; a single top directory is
/// stripped, as tarballs of a repository carry one. The tarball comes from anyone: it is
/// downloaded as `ADD <url>` downloads (within `KEEL_ADD_MAX_SIZE`, into the remote
/// cache) and unpacked by the layer unpacker (its header guard, every path resolved
/// inside the new tree, no devices), with owners and xattrs dropped.
fn fetch_tarball(url: &str, dest: &Path, root: &Path) -> Result<(), BuildpackError> {
    let fail = |why: String| BuildpackError::Fetch {
        source_text: url.to_string(),
        why,
    };
    let blob = remote::fetch_cached(&remote::cache_dir(root), url, None)?;
    let tarball = std::fs::File::open(&blob).map_err(|source| BuildpackError::Io {
        path: blob.clone(),
        source,
    })?;
    let tmp = scratch(root)?;
    let out = tmp.path().join("tree");
    hostfs::create_dir_all(&out).map_err(|source| BuildpackError::Io {
        path: out.clone(),
        source,
    })?;
    let tree = crate::sys::rootfs::Rootfs::open(&out).map_err(|e| fail(e.to_string()))?;
    let opts = crate::layer::unpack::UnpackOptions {
        preserve_owners: false,
        xattrs: false,
        ..Default::default()
    };
    crate::layer::decompressed(tarball)
        .and_then(|plain| crate::layer::unpack::unpack_tree(plain, &tree, &opts))
        .map_err(|e| fail(format!("unpacking: {e}")))?;
    let entries: Vec<_> = std::fs::read_dir(&out)
        .map_err(|e| fail(e.to_string()))?
        .flatten()
        .collect();
    // Looked at without following links: a top entry that is a link to a host
    // directory must not become the buildpack.
    let is_dir = |p: &Path| p.symlink_metadata().is_ok_and(|m| m.is_dir());
    let top = match entries.as_slice() {
        [one] if is_dir(&one.path()) && !is_dir(&out.join("bin")) => one.path(),
        _ => out,
    };
    hostfs::rename(&top, dest).map_err(|source| BuildpackError::Io {
        path: dest.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buildpack's programs are looked up inside its tree: a link to a host file that
    /// exists does not make one (the host is not looked at), a link inside the tree does.
    #[test]
    fn programs_are_found_inside_the_buildpack_only() {
        use std::os::unix::fs::symlink;
        let host = tempfile::NamedTempFile::new().unwrap();
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir_all(bin.join("dir")).unwrap();
        std::fs::write(bin.join("real"), "#!/bin/sh\n").unwrap();
        symlink(host.path(), bin.join("to-host")).unwrap();
        symlink("real", bin.join("to-real")).unwrap();
        symlink("../../../../../../..", bin.join("up")).unwrap();
        let cases = [
            ("bin/real", true),
            ("bin/to-real", true),
            ("bin/to-host", false),
            ("bin/dir", false),
            ("bin/missing", false),
            // `..` stops at the buildpack's top: up/<host path> is looked for inside it.
            ("bin/up/etc/passwd", false),
        ];
        for (rel, found) in cases {
            assert_eq!(has_program(d.path(), rel), found, "{rel}");
        }
        let up = format!("bin/up{}", host.path().display());
        assert!(!has_program(d.path(), &up), "{up}");
    }

    #[test]
    fn buildpack_references() {
        let base = Path::new("/srv/app");
        let cases = [
            ("python", Source::Shipped("python".into())),
            ("./bp", Source::Dir("/srv/app/./bp".into())),
            ("/opt/bp", Source::Dir("/opt/bp".into())),
            (
                "https://github.com/heroku/heroku-buildpack-python.git#v250",
                Source::Git {
                    url: "https://github.com/heroku/heroku-buildpack-python.git".into(),
                    reference: Some("v250".into()),
                },
            ),
            (
                "file:///srv/bp.git",
                Source::Git {
                    url: "file:///srv/bp.git".into(),
                    reference: None,
                },
            ),
            (
                "git+https://example.com/bp",
                Source::Git {
                    url: "https://example.com/bp".into(),
                    reference: None,
                },
            ),
            (
                "https://example.com/bp/v1.tar.gz",
                Source::Tarball("https://example.com/bp/v1.tar.gz".into()),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text, base).unwrap(), want, "{text}");
        }
        let e = parse("pythn", base).unwrap_err().to_string();
        assert!(e.contains("pythn") && e.contains("nodejs, python"), "{e}");
        assert_eq!(
            last_component("https://x/heroku-buildpack-python.git"),
            "heroku-buildpack-python"
        );
        assert_eq!(last_component("https://x/bp/v1.tar.gz"), "v1");
    }
}
