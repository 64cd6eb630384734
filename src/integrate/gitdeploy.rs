//! `keel integrate git-deploy APP` (integrations/git-deploy/): a git `post-receive` hook
//! for a bare repository, so `git push HOST main` builds the pushed tree with its
//! buildpacks and deploys it (`keel deploy APP --path CHECKOUT`). No keel.toml is needed.
use super::template::{fill, header, shell_quote, Comment};
use super::{Adapter, AdapterOptions, GeneratedFile, IntegrateError, ResolvedProject, Result};

const HOOK: &str = include_str!("../../integrations/git-deploy/post-receive");

pub struct GitDeploy;

impl Adapter for GitDeploy {
    fn name(&self) -> &'static str {
        "git-deploy"
    }
    fn describe(&self) -> &'static str {
        "hooks/post-receive for a bare repo: `git push` deploys app APP (keel deploy)"
    }
    fn render(&self, _p: &ResolvedProject, opts: &AdapterOptions) -> Result<Vec<GeneratedFile>> {
        let app = opts
            .image
            .as_deref()
            .or(opts.name.as_deref())
            .ok_or_else(|| IntegrateError::Options {
                adapter: "git-deploy",
                message: "usage: keel integrate git-deploy APP [-w REPO.git]".into(),
            })?;
        crate::deploy::check_name(app).map_err(|e| IntegrateError::Options {
            adapter: "git-deploy",
            message: e.to_string(),
        })?;
        let vals = [
            (
                "header",
                header(
                    Comment::Hash,
                    "the command line",
                    &opts.regen_command("git-deploy"),
                ),
            ),
            ("app", app.to_string()),
            ("app_sh", shell_quote(app)),
            ("keel_sh", shell_quote(&opts.keel)),
            (
                "root_sh",
                shell_quote(opts.root.as_deref().unwrap_or("/var/lib/keel")),
            ),
        ];
        Ok(vec![GeneratedFile::new(
            "hooks/post-receive",
            fill("git-deploy/post-receive", HOOK, &vals)?,
        )
        .executable()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_deploys_the_named_app_from_the_root_it_was_made_for() {
        let opts = AdapterOptions {
            keel: "/usr/bin/keel".into(),
            image: Some("shop".into()),
            root: Some("/srv/keel root".into()),
            ..Default::default()
        };
        let files = GitDeploy
            .render(&ResolvedProject::empty(std::path::Path::new("/")), &opts)
            .unwrap();
        assert_eq!(files[0].path, "hooks/post-receive");
        assert_eq!(files[0].mode, 0o755);
        let text = &files[0].contents;
        assert!(text.contains("deploy shop --path \"$work\""), "{text}");
        assert!(
            text.contains("KEEL_ROOT=${KEEL_ROOT:-'/srv/keel root'}"),
            "{text}"
        );
        let bad = AdapterOptions {
            image: Some("Bad_Name".into()),
            ..Default::default()
        };
        assert!(GitDeploy
            .render(&ResolvedProject::empty(std::path::Path::new("/")), &bad)
            .is_err());
    }
}
