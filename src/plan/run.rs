//! RUN in the plan: the typed step (`RunOp`), its conversion from the front end's
//! instruction, and how `--dry-run` shows it. Mount types live in `mount.rs`.
use serde::Serialize;

use super::build::{heredocs, Refusal};
use super::{cmd_text, Cmdline, Heredoc, Mount, Network};
use crate::dockerfile::instruction::{RunMount, ShellOrExec};

/// RUN: the command (run through the stage's SHELL when in shell form), its heredocs,
/// network and mounts, as written; expanded when the step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunOp {
    pub cmd: Cmdline,
    pub heredocs: Vec<Heredoc>,
    pub network: Network,
    pub mounts: Vec<Mount>,
}

/// The typed step of a RUN; `--security=insecure` is refused.
pub(super) fn run(
    command: &ShellOrExec,
    docs: &[crate::dockerfile::Heredoc],
    mounts: &[RunMount],
    network: Option<Network>,
    security: Option<&str>,
) -> Result<RunOp, Refusal> {
    if security == Some("insecure") {
        return Err((
            "RUN --security=insecure is not supported".into(),
            "keel runs every step with the default capabilities; drop the flag",
        ));
    }
    Ok(RunOp {
        cmd: super::build::cmdline(command),
        heredocs: heredocs(docs),
        network: network.unwrap_or(Network::Default),
        mounts: mounts.iter().map(Mount::new).collect(),
    })
}

/// The RUN's lines in a dry run.
pub(super) fn describe_run(r: &RunOp) -> Vec<String> {
    let mut out = vec![format!("run: {}", cmd_text(&r.cmd))];
    for h in &r.heredocs {
        let exp = if h.expand { "" } else { ", not expanded" };
        out.push(format!(
            "heredoc {} ({} bytes{exp})",
            h.name,
            h.content.len()
        ));
    }
    out.push(
        match r.network {
            Network::Default => "network: default (the host's)",
            Network::None => "network: none",
            Network::Host => "network: host",
        }
        .to_string(),
    );
    for m in &r.mounts {
        out.push(format!("mount: {}", m.spec));
    }
    out
}
