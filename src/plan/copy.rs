//! COPY and ADD in the plan: the typed step (`CopyOp`), its conversion from the front
//! end's `CopyArgs`, and how `--dry-run` shows it. A new COPY flag is parsed in
//! `dockerfile/instruction.rs`, typed here, and applied in `build/exec/copy_step.rs`.
use serde::Serialize;

use super::build::{heredocs, Refusal};
use super::word::{Chmod, Chown, Word};
use super::Heredoc;
use crate::dockerfile::{self, instruction::CopyArgs};

/// COPY and ADD. Paths and `--from` are as written (expanded when the step runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyOp {
    pub add: bool,
    pub srcs: Vec<String>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<Word<Chown>>,
    pub chmod: Option<Word<Chmod>>,
    pub link: bool,
    pub exclude: Vec<String>,
    /// `COPY --parents`: keep each source's parent directories (after a `/./` pivot).
    pub parents: bool,
    pub heredocs: Vec<Heredoc>,
    /// `ADD --checksum=sha256:…` of a URL (may hold variables).
    pub checksum: Option<String>,
    /// `ADD --keep-git-dir` of a git repository.
    pub keep_git_dir: bool,
}

/// Whether a source word names a heredoc (`<<EOF`, `<<-EOF`, `3<<"EOF"`).
fn is_heredoc_word(word: &str, docs: &[dockerfile::Heredoc]) -> bool {
    let w = word.trim_start_matches(|c: char| c.is_ascii_digit());
    w.starts_with("<<") && docs.iter().any(|h| w.contains(&h.name))
}

/// The typed step of a COPY (`add` false) or ADD.
pub(super) fn copy(c: &CopyArgs, add: bool) -> Result<CopyOp, Refusal> {
    let chown = c.chown.as_deref().map(Word::new).transpose();
    let chmod = c.chmod.as_deref().map(Word::new).transpose();
    Ok(CopyOp {
        add,
        srcs: c
            .srcs
            .iter()
            .filter(|s| !is_heredoc_word(s, &c.heredocs))
            .cloned()
            .collect(),
        dest: c.dest.clone(),
        from: c.from.clone(),
        chown: chown.map_err(|e| (e, "write --chown=USER[:GROUP] or UID[:GID]"))?,
        chmod: chmod.map_err(|e| (e, "write --chmod=0644"))?,
        link: c.link,
        exclude: c.exclude.clone(),
        parents: c.parents,
        heredocs: heredocs(&c.heredocs),
        checksum: c.checksum.clone(),
        keep_git_dir: c.keep_git_dir,
    })
}

/// The copy's lines in a dry run.
pub(super) fn describe_copy(c: &CopyOp) -> Vec<String> {
    let from = c.from.as_deref().unwrap_or("the context");
    let mut srcs: Vec<String> = c.srcs.clone();
    srcs.extend(c.heredocs.iter().map(|h| format!("<<{}", h.name)));
    let mut out = vec![format!(
        "{} from {from}: {} -> {}",
        if c.add { "add" } else { "copy" },
        srcs.join(" "),
        c.dest
    )];
    let mut flags = Vec::new();
    if let Some(o) = &c.chown {
        flags.push(format!("owner {o}"));
    }
    if let Some(m) = &c.chmod {
        flags.push(format!("mode {m}"));
    }
    if c.link {
        flags.push("linked layer".into());
    }
    if c.parents {
        flags.push("keeping parent directories".into());
    }
    for e in &c.exclude {
        flags.push(format!("excluding {e}"));
    }
    if let Some(sum) = &c.checksum {
        flags.push(format!("checksum {sum}"));
    }
    if c.keep_git_dir {
        flags.push("keeping .git".into());
    }
    if !flags.is_empty() {
        out.push(flags.join(", "));
    }
    out
}
