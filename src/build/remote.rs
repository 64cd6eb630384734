//! Remote sources: `ADD https://…` downloads and `ADD <git url>#ref` checkouts, each
//! delivered as a directory the copy then reads like a context, and the same two for
//! buildpacks fetched by URL (`buildpack::source`). Owns `<root>/cache/remote/`:
//! downloaded contents by digest (`blobs/`) and, per URL, the digest with its
//! `ETag`/`Last-Modified` (`urls/`) for revalidation.
//!
//! A download with `--checksum` whose content is cached makes no request at all; without
//! one, a cached URL is revalidated (`If-None-Match`/`If-Modified-Since`) and a 304 reuses
//! the cached content. Git goes through the `git` binary. Must not decide where files
//! land in the image (that is the copy's job).
//!
//! A download is bounded ([`MAX_DOWNLOAD`], set with `KEEL_ADD_MAX_SIZE`): a hostile URL
//! must not fill the disk. A `Content-Length` over the bound fails before the body is
//! read; a body that streams past it is cut off and its temp file removed.
use crate::sys::hostfs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "{url}: checksum mismatch: expected {expected}, got {actual}; fix --checksum or the URL"
    )]
    Checksum {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("--checksum={0}: use sha256:<64 hex digits>")]
    BadChecksum(String),
    #[error("{url}: {why}")]
    Fetch { url: String, why: String },
    #[error("{url}: git {args}: {why}")]
    Git {
        url: String,
        args: String,
        why: String,
    },
    #[error("{url}: the download is larger than the limit of {limit} bytes ({seen}); if the file is expected, raise the limit with {MAX_DOWNLOAD_ENV}=SIZE (bytes, or with a k/m/g suffix)")]
    TooLarge {
        url: String,
        limit: u64,
        seen: String,
    },
    #[error(
        "{MAX_DOWNLOAD_ENV}={0}: not a size; use bytes or a number with a k/m/g suffix, e.g. 16g"
    )]
    BadLimit(String),
    #[error("{url}: {}: {source}", path.display())]
    Io {
        url: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The largest file keel downloads (`ADD <url>`, a buildpack tarball): 4 GiB, far above
/// any sane single download in an image build, far below a disk a hostile endless body
/// would fill.
pub const MAX_DOWNLOAD: u64 = 4 << 30;
/// The environment variable that sets another bound (`KEEL_ADD_MAX_SIZE=16g`).
pub const MAX_DOWNLOAD_ENV: &str = "KEEL_ADD_MAX_SIZE";

/// The download bound in force: [`MAX_DOWNLOAD`] or `KEEL_ADD_MAX_SIZE`.
pub fn max_download() -> Result<u64, RemoteError> {
    match std::env::var(MAX_DOWNLOAD_ENV) {
        Ok(v) => {
            crate::dockerfile::instruction::parse_size(v.trim()).ok_or(RemoteError::BadLimit(v))
        }
        Err(_) => Ok(MAX_DOWNLOAD),
    }
}

/// A remote source word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Http(String),
    Git {
        url: String,
        reference: Option<String>,
    },
}

/// Classifies an ADD source: a git repository (`git@…`, `git://…`, or a URL whose path
/// ends in `.git`, with an optional `#ref`), an http(s) URL, or `None` for a local path.
pub fn classify(src: &str) -> Option<Remote> {
    let (base, fragment) = match src.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (src, None),
    };
    let schemes = ["https://", "http://", "git://", "ssh://", "file://"];
    let is_url = schemes.iter().any(|s| base.starts_with(s));
    let git = base.starts_with("git@")
        || base.starts_with("git://")
        || (is_url && base.trim_end_matches('/').ends_with(".git"));
    if git {
        // `#ref:subdir` selects a subdirectory in BuildKit; keel takes the ref only.
        let reference = fragment.filter(|f| !f.is_empty()).map(str::to_string);
        return Some(Remote::Git {
            url: base.to_string(),
            reference,
        });
    }
    (src.starts_with("https://") || src.starts_with("http://")).then(|| Remote::Http(src.into()))
}

/// A fetched source: `dir` holds it under `name` (a file, or a checkout directory).
pub struct Fetched {
    pub dir: tempfile::TempDir,
    pub name: String,
    /// The commit a git checkout is at.
    pub commit: Option<String>,
}

/// The file name a URL's content gets: the last path segment (BuildKit's rule).
pub fn file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_host = path.splitn(4, '/').nth(3).unwrap_or("");
    after_host
        .rsplit('/')
        .find(|s| !s.is_empty() && *s != "." && *s != "..")
        .unwrap_or("download")
        .to_string()
}

/// `sha256:<hex>` → the hex part, checked.
pub fn checksum_hex(c: &str) -> Result<String, RemoteError> {
    match c.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(h.to_ascii_lowercase())
        }
        _ => Err(RemoteError::BadChecksum(c.to_string())),
    }
}

/// What is remembered of a URL for revalidation.
#[derive(Debug, Default, Serialize, Deserialize)]
struct UrlRecord {
    url: String,
    digest: String,
    etag: Option<String>,
    last_modified: Option<String>,
}

struct Cache {
    dir: PathBuf,
}

impl Cache {
    fn blob(&self, hex: &str) -> PathBuf {
        self.dir.join("blobs").join(hex)
    }
    fn record_path(&self, url: &str) -> PathBuf {
        self.dir.join("urls").join(format!(
            "{}.json",
            hex::encode(Sha256::digest(url.as_bytes()))
        ))
    }
    fn record(&self, url: &str) -> Option<UrlRecord> {
        let r: UrlRecord =
            serde_json::from_slice(&std::fs::read(self.record_path(url)).ok()?).ok()?;
        (r.url == url && self.blob(&r.digest).is_file()).then_some(r)
    }
}

/// Downloads `url` (or finds it in the cache) and checks `checksum`; the content lands in
/// a fresh directory under `tmp` with mode 0600, as docker gives remote files.
pub fn fetch_http(
    cache_root: &Path,
    tmp: &Path,
    url: &str,
    checksum: Option<&str>,
) -> Result<Fetched, RemoteError> {
    let io = |path: &Path| {
        let (url, path) = (url.to_string(), path.to_path_buf());
        move |source| RemoteError::Io { url, path, source }
    };
    let blob = fetch_cached(cache_root, url, checksum)?;
    let dir = crate::sys::hostfs::scratch_dir_in(tmp, "add").map_err(io(tmp))?;
    let name = file_name(url);
    let dest = dir.path().join(&name);
    hostfs::copy(&blob, &dest).map_err(io(&dest))?;
    use std::os::unix::fs::PermissionsExt;
    hostfs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).map_err(io(&dest))?;
    Ok(Fetched {
        dir,
        name,
        commit: None,
    })
}

/// The path of `url`'s content in the cache: downloaded within the bound, revalidated
/// when cached, not fetched at all when `checksum` names content already cached. The
/// file is the cache's own; read it, do not change it.
pub fn fetch_cached(
    cache_root: &Path,
    url: &str,
    checksum: Option<&str>,
) -> Result<PathBuf, RemoteError> {
    let cache = Cache {
        dir: cache_root.to_path_buf(),
    };
    let want = checksum.map(checksum_hex).transpose()?;
    let hex = match want.as_deref().filter(|h| cache.blob(h).is_file()) {
        Some(h) => h.to_string(),
        None => download(&cache, url)?,
    };
    // Marks the content (and the URL's record) used, for `keel gc`'s age rule.
    touch(&cache.blob(&hex));
    touch(&cache.record_path(url));
    if let Some(w) = want {
        if w != hex {
            return Err(RemoteError::Checksum {
                url: url.into(),
                expected: format!("sha256:{w}"),
                actual: format!("sha256:{hex}"),
            });
        }
    }
    Ok(cache.blob(&hex))
}

fn touch(p: &Path) {
    let _ = hostfs::open_with(std::fs::File::options().write(true), p)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
}

/// What [`prune`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub files: usize,
    pub bytes: u64,
}

/// The remote-ADD cache of a keel root.
pub fn cache_dir(root: &Path) -> PathBuf {
    root.join("cache").join("remote")
}

/// Removes URL records and downloads nobody used for `keep` (everything with
/// `Duration::ZERO`), and temp files a killed keel left. A download still named by a kept
/// record stays, whatever its age, and so does a temp file whose writer lives (a build
/// downloading now), whatever `keep`.
pub fn prune(cache_root: &Path, keep: std::time::Duration) -> Pruned {
    let mut out = Pruned::default();
    let old = |e: &std::fs::DirEntry, m: &std::fs::Metadata| match crate::reclaim::stray_temp(e) {
        Some(stray) => stray,
        None => m
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= keep),
    };
    let mut named = std::collections::HashSet::new();
    for e in std::fs::read_dir(cache_root.join("urls"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(m) = e.metadata() else { continue };
        if old(&e, &m) && hostfs::remove_file(e.path()).is_ok() {
            out.files += 1;
            out.bytes += m.len();
        } else if let Ok(r) =
            serde_json::from_slice::<UrlRecord>(&std::fs::read(e.path()).unwrap_or_default())
        {
            named.insert(r.digest);
        }
    }
    for e in std::fs::read_dir(cache_root.join("blobs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(m) = e.metadata() else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if old(&e, &m) && !named.contains(&name) && hostfs::remove_file(e.path()).is_ok() {
            out.files += 1;
            out.bytes += m.len();
        }
    }
    out
}

/// GETs `url`, revalidating a cached copy; returns the content's sha256 hex.
fn download(cache: &Cache, url: &str) -> Result<String, RemoteError> {
    let fail = |why: String| RemoteError::Fetch {
        url: url.into(),
        why,
    };
    let known = cache.record(url);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(r) = &known {
        if let Some(e) = &r.etag {
            req = req.header("If-None-Match", e);
        }
        if let Some(m) = &r.last_modified {
            req = req.header("If-Modified-Since", m);
        }
    }
    let resp = req.call().map_err(|e| fail(e.to_string()))?;
    let status = resp.status().as_u16();
    if let (304, Some(r)) = (status, &known) {
        return Ok(r.digest.clone());
    }
    if status != 200 {
        return Err(fail(format!("the server answered {status}; check the URL")));
    }
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (etag, last_modified) = (header("etag"), header("last-modified"));
    let limit = max_download()?;
    let too_large = |seen: String| RemoteError::TooLarge {
        url: url.into(),
        limit,
        seen,
    };
    // Refused before a byte of the body is read when the server says how much it sends.
    if let Some(len) = header("content-length").and_then(|l| l.trim().parse::<u64>().ok()) {
        if len > limit {
            return Err(too_large(format!("the server announces {len} bytes")));
        }
    }
    let body = resp.into_body().into_reader().take(limit + 1);
    let hex = store_body(cache, url, body, limit)?;
    let record = UrlRecord {
        url: url.into(),
        digest: hex.clone(),
        etag,
        last_modified,
    };
    // A hint for revalidation only (an unreadable one costs a download): not fsynced.
    let path = cache.record_path(url);
    let _ = hostfs::write_atomic(&path, &serde_json::to_vec(&record).unwrap_or_default());
    Ok(hex)
}

/// Streams a body into `blobs/`, hashing it on the way; returns its sha256 hex.
/// More than `limit` bytes fail with [`RemoteError::TooLarge`]; the temp file goes with it.
fn store_body(
    cache: &Cache,
    url: &str,
    mut body: impl Read,
    limit: u64,
) -> Result<String, RemoteError> {
    let blobs = cache.dir.join("blobs");
    let io = |path: &Path| {
        let (url, path) = (url.to_string(), path.to_path_buf());
        move |source| RemoteError::Io { url, path, source }
    };
    hostfs::create_dir_all(&blobs).map_err(io(&blobs))?;
    // Named for this keel: a killed build's partial download goes once it is gone.
    let mut tmp = hostfs::temp_file_in(&blobs, "download").map_err(io(&blobs))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = body.read(&mut buf).map_err(io(tmp.path()))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > limit {
            // Dropping `tmp` removes the partial download.
            return Err(RemoteError::TooLarge {
                url: url.into(),
                limit,
                seen: "the body went on past it and was cut off".into(),
            });
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(io(tmp.path()))?;
    }
    let hex = hex::encode(hasher.finalize());
    let dest = cache.blob(&hex);
    hostfs::persist(tmp, &dest).map_err(io(&dest))?;
    Ok(hex)
}

/// Checks `url` out at `reference` (a branch, a tag or a full commit id; default: the
/// remote's HEAD) with the `git` binary, into a fresh directory under `tmp`, fetching that
/// commit alone; `.git` is removed unless `keep_git_dir`.
pub fn fetch_git(
    tmp: &Path,
    url: &str,
    reference: Option<&str>,
    keep_git_dir: bool,
) -> Result<Fetched, RemoteError> {
    let dir =
        crate::sys::hostfs::scratch_dir_in(tmp, "add-git").map_err(|source| RemoteError::Io {
            url: url.into(),
            path: tmp.to_path_buf(),
            source,
        })?;
    let repo = dir.path().join("checkout");
    let repo_s = repo.to_string_lossy().into_owned();
    let limits = git_limits(max_download()?);
    let git = |args: &[&str]| -> Result<String, RemoteError> {
        // `-C <scratch dir>` says nothing to the user.
        let shown = match args {
            ["-C", _, rest @ ..] => rest,
            all => all,
        };
        let fail = |why: String| RemoteError::Git {
            url: url.into(),
            args: shown.join(" "),
            why,
        };
        let mut cmd = std::process::Command::new("git");
        cmd.args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::null());
        crate::sys::proc::limit_child(&mut cmd, &limits).map_err(|e| fail(e.to_string()))?;
        let out = cmd
            .output()
            .map_err(|e| fail(format!("{e}; install git")))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        Err(fail(git_failure(&out, &limits)))
    };
    git(&["init", "-q", &repo_s])?;
    let fetch_ref = reference.unwrap_or("HEAD");
    git(&["-C", &repo_s, "fetch", "-q", "--depth", "1", url, fetch_ref])
        .map_err(|e| abbreviation_hint(e, fetch_ref))?;
    git(&["-C", &repo_s, "checkout", "-q", "FETCH_HEAD"])?;
    let commit = git(&["-C", &repo_s, "rev-parse", "HEAD"])?;
    if !keep_git_dir {
        let dotgit = repo.join(".git");
        hostfs::remove_dir_all(&dotgit).map_err(|source| RemoteError::Io {
            url: url.into(),
            path: dotgit,
            source,
        })?;
    }
    Ok(Fetched {
        dir,
        name: "checkout".into(),
        commit: Some(commit),
    })
}

/// A failed fetch of what looks like an abbreviated commit id says what to write: a
/// server hands out branches, tags and full commit ids only (as BuildKit, which resolves
/// the ref on the remote, keel cannot expand an abbreviation without the whole history).
fn abbreviation_hint(e: RemoteError, reference: &str) -> RemoteError {
    let abbreviated =
        (4..40).contains(&reference.len()) && reference.bytes().all(|b| b.is_ascii_hexdigit());
    match e {
        RemoteError::Git { url, args, why } if abbreviated => RemoteError::Git {
            url,
            args,
            why: format!("{why}; `{reference}` looks like an abbreviated commit id: name the commit by its full 40-character id, or by a branch or tag"),
        },
        e => e,
    }
}

/// Memory `git` may take beyond the download bound: its own working set (libcurl, the
/// pack index, delta bases) for any repository a build would sanely fetch.
const GIT_MEMORY: u64 = 1 << 30;

/// The limits `git` runs under: no file it writes (the fetched pack) larger than the
/// download bound, and its address space that bound plus [`GIT_MEMORY`]. A hostile URL
/// otherwise has git hold an endless answer in memory (dumb-HTTP ref lists are read
/// whole) or write an endless pack.
fn git_limits(download: u64) -> [(&'static str, u64); 2] {
    [
        ("fsize", download),
        ("as", download.saturating_add(GIT_MEMORY)),
    ]
}

/// Why `git` failed: its stderr, and the limits when they may be the reason (killed by
/// a signal, as SIGXFSZ kills a writer past its file size, or out of memory).
fn git_failure(out: &std::process::Output, limits: &[(&str, u64)]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let killed = out.status.code().is_none();
    let limited = killed
        || ["out of memory", "index-pack", "file size"]
            .iter()
            .any(|w| stderr.to_ascii_lowercase().contains(w));
    if !limited {
        return stderr;
    }
    let bound = |n: &str| limits.iter().find(|(k, _)| *k == n).map_or(0, |(_, v)| *v);
    format!(
        "{stderr}{}git ran with at most {} bytes of memory and {} bytes per file written, from the download bound; if the repository is expected, raise it with {MAX_DOWNLOAD_ENV}=SIZE",
        if stderr.is_empty() { "" } else { "; " },
        bound("as"),
        bound("fsize"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fetch_of_an_abbreviated_commit_says_to_name_it_in_full() {
        let failed = || RemoteError::Git {
            url: "https://h/r.git".into(),
            args: "fetch".into(),
            why: "fatal: couldn't find remote ref".into(),
        };
        let cases = [
            ("1a2b3c4", true),
            ("deadbeef", true),
            ("main", false),
            ("v1.2.3", false),
            ("abc", false), // too short to be taken for an id
            ("0123456789abcdef0123456789abcdef01234567", false), // full: fetched as it is
        ];
        for (reference, hinted) in cases {
            let shown = abbreviation_hint(failed(), reference).to_string();
            assert_eq!(
                shown.contains("full 40-character id"),
                hinted,
                "{reference}: {shown}"
            );
            assert!(
                shown.starts_with("https://h/r.git: git fetch: fatal"),
                "{shown}"
            );
        }
    }

    #[test]
    fn sources_are_classified() {
        let git = |u: &str, r: Option<&str>| {
            Some(Remote::Git {
                url: u.into(),
                reference: r.map(str::to_string),
            })
        };
        let cases = [
            (
                "https://x.org/a/b.tar.gz",
                Some(Remote::Http("https://x.org/a/b.tar.gz".into())),
            ),
            (
                "http://127.0.0.1:8/f?x=1",
                Some(Remote::Http("http://127.0.0.1:8/f?x=1".into())),
            ),
            (
                "https://github.com/o/r.git#v1",
                git("https://github.com/o/r.git", Some("v1")),
            ),
            (
                "git@github.com:o/r.git",
                git("git@github.com:o/r.git", None),
            ),
            ("git://h/r#main", git("git://h/r", Some("main"))),
            (
                "file:///srv/r.git#main",
                git("file:///srv/r.git", Some("main")),
            ),
            ("local/file.txt", None),
            ("file:///etc/passwd", None),
        ];
        for (src, want) in cases {
            assert_eq!(classify(src), want, "{src}");
        }
    }

    #[test]
    fn names_and_checksums() {
        assert_eq!(file_name("https://h/a/b/tool.tgz?sig=1"), "tool.tgz");
        assert_eq!(file_name("https://h/dir/"), "dir");
        assert_eq!(file_name("https://h"), "download");
        let h = "ab".repeat(32);
        assert_eq!(checksum_hex(&format!("sha256:{h}")).unwrap(), h);
        for bad in ["sha256:ab", "md5:00", &h] {
            assert!(checksum_hex(bad).is_err(), "{bad}");
        }
    }

    /// Session 9 item 4: pruning everything (`keel gc` with a zero age) while a build
    /// downloads must not take that build's temp file; a killed build's goes at once.
    #[test]
    fn prune_takes_a_dead_downloads_temp_file_and_keeps_a_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        let live = hostfs::temp_file_in(&blobs, "download").unwrap();
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        dead.wait().unwrap();
        let dead = blobs.join(format!(".download.p{}s1-AbC123.tmp", dead.id()));
        std::fs::write(&dead, "partial").unwrap();
        let done = blobs.join("ab".repeat(32));
        std::fs::write(&done, "whole").unwrap();
        let pruned = prune(dir.path(), std::time::Duration::ZERO);
        assert!(live.path().exists(), "the live download's temp file went");
        assert!(!dead.exists() && !done.exists());
        assert_eq!(pruned.files, 2);
        let week = std::time::Duration::from_secs(7 * 24 * 3600);
        std::fs::write(&dead, "partial").unwrap();
        assert_eq!(
            prune(dir.path(), week).files,
            1,
            "a dead writer's file at once"
        );
    }
}
