//! From Dockerfile bytes to the build plan: the front end parses and types every
//! instruction (`dockerfile::instructions`), and `plan::plan` turns them into stages. The
//! context's `.dockerignore` is read here too.
use std::path::Path;

use crate::dockerfile;

#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    /// Located with file:line:col, the line with a caret, and a hint.
    #[error("{0}")]
    Parse(#[from] dockerfile::ParseError),
    /// The message names the `.dockerignore` file and line itself.
    #[error("{0}")]
    Ignore(String),
}

/// Parses and plans a Dockerfile.
pub fn plan(file: &str, bytes: &[u8]) -> Result<crate::plan::Plan, FrontError> {
    let ast = dockerfile::parse(file, bytes)?;
    Ok(crate::plan::plan(&ast)?)
}

/// The context's `.dockerignore` as a path predicate (moved to `context::dockerignore`).
pub fn dockerignore(context: &Path) -> Result<crate::context::IgnoreFn, FrontError> {
    crate::context::dockerignore(context).map_err(|e| FrontError::Ignore(e.to_string()))
}
