//! `SysError`: a failed kernel operation, naming the operation and the path.
use std::path::{Path, PathBuf};

/// A failed kernel operation: which one, on which path (if any), and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("{op}{}: {source}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
pub struct SysError {
    pub op: &'static str,
    pub path: Option<PathBuf>,
    #[source]
    pub source: std::io::Error,
}

impl SysError {
    /// An error for `op` with no path.
    pub fn new(op: &'static str, source: impl Into<std::io::Error>) -> SysError {
        SysError {
            op,
            path: None,
            source: source.into(),
        }
    }
    /// An error for `op` on `path`.
    pub fn at(op: &'static str, path: &Path, source: impl Into<std::io::Error>) -> SysError {
        SysError {
            op,
            path: Some(path.to_path_buf()),
            source: source.into(),
        }
    }
    /// The raw OS error number, when there is one.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// Converts a nix result into a `SysError` for `op`.
pub(crate) fn check<T>(op: &'static str, r: nix::Result<T>) -> Result<T, SysError> {
    r.map_err(|e| SysError::new(op, std::io::Error::from(e)))
}

/// Converts a nix result into a `SysError` for `op` on `path`.
pub(crate) fn check_at<T>(op: &'static str, path: &Path, r: nix::Result<T>) -> Result<T, SysError> {
    r.map_err(|e| SysError::at(op, path, std::io::Error::from(e)))
}
