//! `keel build --output`: the build's result written outside the store, as BuildKit's
//! exporters do — the target stage's files into a directory (`local`) or a tarball
//! (`tar`), or the image as an archive (`oci`, `docker`). Parsing the flag is pure; the
//! export reads the image's layers from the store. Must not tag anything.
//!
//! Files a `local` export writes belong to the invoking user (the caller decides who that
//! is: under sudo, the context directory's owner), as BuildKit's client writes them.
use crate::sys::hostfs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::store::{ImageRecord, Store};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("--output {spec:?}: {why}")]
    Bad { spec: String, why: String },
    #[error("--output: writing {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--output: {0}")]
    Layer(#[from] crate::layer::LayerError),
    #[error("--output: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("--output: {0}")]
    Archive(#[from] crate::archive::ArchiveError),
}

/// Where an export goes: a file, or standard output for `dest=-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    File(PathBuf),
    Stdout,
}

/// One `--output` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The files of the target stage, in this directory.
    Local(PathBuf),
    /// The files of the target stage, as one tar.
    Tar(Dest),
    /// The image as an OCI layout tarball.
    Oci(Dest),
    /// The image as a docker-archive tarball (`docker load`).
    Docker(Dest),
}

/// Parses `type=local,dest=DIR`, `type=tar|oci|docker,dest=FILE|-`, a bare `DIR`
/// (local), or `-` (tar to standard output), as `docker build -o` takes them.
pub fn parse(spec: &str) -> Result<Output, OutputError> {
    let bad = |why: &str| OutputError::Bad {
        spec: spec.to_string(),
        why: why.to_string(),
    };
    if spec == "-" {
        return Ok(Output::Tar(Dest::Stdout));
    }
    if !spec.contains('=') {
        if spec.is_empty() {
            return Err(bad("give a directory, e.g. -o out/"));
        }
        return Ok(Output::Local(PathBuf::from(spec)));
    }
    let (mut typ, mut dest) = (None, None);
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("type", v)) => typ = Some(v),
            Some(("dest", v)) if !v.is_empty() => dest = Some(v),
            Some((k, _)) => {
                return Err(bad(&format!(
                    "unsupported option {k:?}; keel takes type= and dest="
                )))
            }
            None => return Err(bad(&format!("{part:?} is not KEY=VALUE"))),
        }
    }
    let file = |d: Option<&str>| match d {
        Some("-") => Ok(Dest::Stdout),
        Some(f) => Ok(Dest::File(PathBuf::from(f))),
        None => Err(bad("missing dest=FILE (or dest=- for standard output)")),
    };
    match typ {
        Some("local") => dest
            .map(|d| Output::Local(PathBuf::from(d)))
            .ok_or_else(|| bad("missing dest=DIR")),
        Some("tar") => Ok(Output::Tar(file(dest)?)),
        Some("oci") => Ok(Output::Oci(file(dest)?)),
        Some("docker") => Ok(Output::Docker(file(dest)?)),
        Some(t) => Err(bad(&format!(
            "unknown type {t:?}; use local, tar, oci or docker"
        ))),
        None => Err(bad("missing type=local|tar|oci|docker")),
    }
}

/// Writes `image` as `out` says; `owner` owns what a `local` export creates.
pub fn export(
    store: &Store,
    image: &ImageRecord,
    out: &Output,
    owner: (u32, u32),
) -> Result<(), OutputError> {
    match out {
        Output::Local(dir) => {
            let io = |source| OutputError::Io {
                path: dir.clone(),
                source,
            };
            let made = !dir.exists();
            hostfs::create_dir_all(dir).map_err(io)?;
            unpack_all(store, image, dir, false)?;
            own_written(store, image, dir, made, owner)
        }
        Output::Tar(dest) => {
            let staging = crate::sys::hostfs::scratch_dir_in(&store.tmp_dir(), "output").map_err(
                |source| OutputError::Io {
                    path: store.tmp_dir(),
                    source,
                },
            )?;
            unpack_all(store, image, staging.path(), true)?;
            write_to(dest, |w| tar_tree(staging.path(), w))
        }
        Output::Oci(dest) | Output::Docker(dest) => {
            // keel's archive is an OCI layout and a docker-archive at once.
            let items = [crate::archive::SaveItem {
                image: image.clone(),
                names: Vec::new(),
            }];
            write_to(dest, |w| {
                crate::archive::save(store, &items, w)
                    .map_err(|e| std::io::Error::other(e.to_string()))
            })
        }
    }
}

/// The image's layers applied in order (whiteouts included) into `dir`.
fn unpack_all(
    store: &Store,
    image: &ImageRecord,
    dir: &Path,
    owners: bool,
) -> Result<(), OutputError> {
    let mut opts = crate::layer::unpack::UnpackOptions::default();
    opts.preserve_owners &= owners;
    for layer in image.manifest.layers() {
        let blob = store.open_blob(layer.digest())?;
        crate::layer::unpack::unpack(blob, dir, &opts)?;
    }
    Ok(())
}

/// Gives what the export wrote to `owner`: every path the image's layers name (resolved
/// inside `dir`, so a symlink the image planted cannot send a chown outside), and `dir`
/// itself when the export created it. Files that were in `dir` before are left alone.
fn own_written(
    store: &Store,
    image: &ImageRecord,
    dir: &Path,
    made: bool,
    (uid, gid): (u32, u32),
) -> Result<(), OutputError> {
    let mut paths = std::collections::BTreeSet::new();
    for layer in image.manifest.layers() {
        let plain = crate::layer::decompressed(store.open_blob(layer.digest())?)?;
        let mut tar = tar::Archive::new(plain);
        let entries = tar.entries().map_err(crate::layer::LayerError::Io)?;
        for e in entries {
            let e = e.map_err(crate::layer::LayerError::Io)?;
            let p = crate::layer::clean_entry_path(&e.path_bytes())?;
            let whiteout = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".wh."));
            if !whiteout && !p.as_os_str().is_empty() {
                paths.insert(p);
            }
        }
    }
    let tree = crate::sys::rootfs::Rootfs::open(dir).map_err(|e| OutputError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    for p in paths {
        match tree.lchown(&p, uid, gid) {
            Err(e) if !e.is_not_found() => {
                return Err(OutputError::Io {
                    path: dir.join(&p),
                    source: std::io::Error::other(e.to_string()),
                })
            }
            _ => {}
        }
    }
    if made {
        hostfs::lchown(dir, Some(uid), Some(gid)).map_err(|source| OutputError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

fn tar_tree(dir: &Path, w: &mut dyn Write) -> std::io::Result<()> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    let mut entries: Vec<_> = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter()
        .collect::<Result<_, _>>()?;
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    for e in entries {
        let rel = e.path().strip_prefix(dir).expect("walked under dir");
        b.append_path_with_name(e.path(), rel)?;
    }
    b.finish()
}

fn write_to(
    dest: &Dest,
    f: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), OutputError> {
    match dest {
        Dest::Stdout => {
            let out = crate::report::stdout();
            let mut lock = out.lock();
            f(&mut lock).map_err(|source| OutputError::Io {
                path: "-".into(),
                source,
            })
        }
        Dest::File(p) => {
            let io = |source| OutputError::Io {
                path: p.clone(),
                source,
            };
            let mut file = std::io::BufWriter::new(hostfs::create(p).map_err(io)?);
            f(&mut file).map_err(io)?;
            file.flush().map_err(io)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_specs_parse_as_docker_takes_them() {
        let file = |p: &str| Dest::File(PathBuf::from(p));
        let ok = [
            ("out/", Output::Local("out/".into())),
            ("type=local,dest=d", Output::Local("d".into())),
            ("dest=d,type=local", Output::Local("d".into())),
            ("type=tar,dest=f.tar", Output::Tar(file("f.tar"))),
            ("-", Output::Tar(Dest::Stdout)),
            ("type=tar,dest=-", Output::Tar(Dest::Stdout)),
            ("type=oci,dest=i.tar", Output::Oci(file("i.tar"))),
            ("type=docker,dest=i.tar", Output::Docker(file("i.tar"))),
        ];
        for (spec, want) in ok {
            assert_eq!(parse(spec).unwrap(), want, "{spec}");
        }
        for bad in [
            "",
            "type=local",
            "type=tar",
            "type=image,dest=x",
            "type=tar,dest=x,push=true",
            "dest=x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
