//! keel run as root in a git checkout another user owns (a root CI agent on a user's
//! checkout, `sudo make`): git refuses such a repository ("dubious ownership"), so keel
//! runs it as the tree's owner — the image is the one the owner's own build makes, and
//! the repository's config never makes anything run as root.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{have, is_root, run_ok, Keel};
use crate::execin::{owner_ids, OWNER};
use crate::require;

/// 2023-11-14T22:13:20Z, the commit time of the checkouts below.
const COMMITTED: &str = "1700000000";

/// `git` in `dir` as whoever runs the test (root), trusting `dir` whoever owns it.
fn git(dir: &Path, args: &[&str]) -> String {
    run_ok(
        Command::new("git")
            .args([
                "-c",
                "safe.directory=*",
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
            ])
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_DATE", format!("@{COMMITTED} +0000"))
            .env("GIT_COMMITTER_DATE", format!("@{COMMITTED} +0000")),
    )
}

/// A committed checkout with a Dockerfile, given to the test owner.
fn owned_checkout(k: &Keel) -> PathBuf {
    let dir = k.path("checkout");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY a.txt /a.txt\n").unwrap();
    std::fs::write(dir.join("a.txt"), "a\n").unwrap();
    std::fs::write(
        dir.join("keel.toml"),
        "[[image]]\nname = \"app\"\ncontext = \".\"\n",
    )
    .unwrap();
    git(&dir, &["init", "-q"]);
    git(
        &dir,
        &[
            "remote",
            "add",
            "origin",
            "https://git.example/team/app.git",
        ],
    );
    git(&dir, &["add", "."]);
    git(&dir, &["commit", "-q", "-m", "one"]);
    let (uid, gid) = owner_ids();
    run_ok(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(&dir),
    );
    run_ok(Command::new("chmod").arg("a+x").arg(k.dir.path()));
    dir
}

fn created(k: &Keel, image: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", image])).unwrap();
    v[0]["Config"]["created"].as_str().unwrap().to_string()
}

/// The config's `created` of a clean checkout is its commit time when root builds a
/// checkout the test owner owns (it was the epoch: git refused the repository), the epoch
/// once a tracked file changes, and SOURCE_DATE_EPOCH when set.
#[test]
fn created_is_the_commit_time_of_a_users_checkout_built_by_root() {
    require!(have("git"), "git is not installed");
    require!(is_root(), "needs root (the tree's owner is another user)");
    require!(have("useradd"), "useradd is not installed (passwd)");
    let k = Keel::new();
    let dir = owned_checkout(&k);
    k.ok(&["build", "-q", "-t", "clean", dir.to_str().unwrap()]);
    assert_eq!(created(&k, "clean"), "2023-11-14T22:13:20Z");
    std::fs::write(dir.join("a.txt"), "b\n").unwrap();
    k.ok(&["build", "-q", "-t", "dirty", dir.to_str().unwrap()]);
    assert_eq!(created(&k, "dirty"), "1970-01-01T00:00:00Z");
    let out = k
        .cmd()
        .args(["build", "-q", "-t", "pinned"])
        .arg(&dir)
        .env("SOURCE_DATE_EPOCH", "86400")
        .output()
        .unwrap();
    crate::common::assert_success(&out, "build with SOURCE_DATE_EPOCH");
    assert_eq!(created(&k, "pinned"), "1970-01-02T00:00:00Z");
}

/// `keel integrate jenkins` run by root in the owner's checkout names the checkout's
/// remote as the job's repository.
#[test]
fn ci_glue_made_by_root_names_the_remote_of_a_users_checkout() {
    require!(have("git"), "git is not installed");
    require!(is_root(), "needs root (the tree's owner is another user)");
    require!(have("useradd"), "useradd is not installed (passwd)");
    let k = Keel::new();
    let dir = owned_checkout(&k);
    let out = k
        .cmd()
        .args(["integrate", "jenkins", "-w"])
        .arg(&dir)
        .current_dir(&dir)
        .output()
        .unwrap();
    crate::common::assert_success(&out, "keel integrate jenkins");
    let yaml = std::fs::read_to_string(dir.join("jenkins/keel-jobs.yaml")).unwrap();
    assert!(yaml.contains("https://git.example/team/app.git"), "{yaml}");
}

/// A repository's config can make git run a command (`core.fsmonitor` runs on `git
/// status`): when root builds a user's checkout, that command runs as the user or not
/// at all — never as root.
#[test]
fn a_checkouts_git_config_never_runs_a_command_as_root() {
    require!(have("git"), "git is not installed");
    require!(is_root(), "needs root (the tree's owner is another user)");
    require!(have("useradd"), "useradd is not installed (passwd)");
    let k = Keel::new();
    let dir = owned_checkout(&k);
    let seen = k.path("fsmonitor-ran-as");
    let hook = k.path("fsmonitor.sh");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\nid -u >> {}\nexit 1\n", seen.display()),
    )
    .unwrap();
    run_ok(Command::new("chmod").arg("755").arg(&hook));
    // The owner may write where the hook records who ran it; root-owned otherwise.
    std::fs::write(&seen, "").unwrap();
    run_ok(Command::new("chown").arg(format!("{OWNER}:")).arg(&seen));
    git(&dir, &["config", "core.fsmonitor", hook.to_str().unwrap()]);
    k.ok(&["build", "-q", "-t", "x", dir.to_str().unwrap()]);
    let ran_as = std::fs::read_to_string(&seen).unwrap();
    let (uid, _) = owner_ids();
    assert!(
        ran_as.lines().all(|l| l.trim() == uid.to_string()),
        "the repository's fsmonitor ran as {ran_as:?} (owner {uid})"
    );
}
