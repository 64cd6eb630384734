//! make: `keel.mk` to `include` (integrations/make/). Per image an `image-NAME` target
//! backed by an iid file whose prerequisites are the image's context files (generated
//! dependency file), plus `push-NAME`, `run-NAME`, `images` and `KEEL_IN` variables.
//!
//! `KEEL_IN*` are recursive (`=`) variables so `$(KEEL)` set later still applies; see
//! docs/integrations/make.md.
use super::template::{fill, header, shell_join, Comment};
use super::{Adapter, AdapterOptions, GeneratedFile, ResolvedProject, Result};
use crate::project::STATE_DIR;

const KEEL_MK: &str = include_str!("../../integrations/make/keel.mk");
const IMAGE_MK: &str = include_str!("../../integrations/make/image.mk");

pub struct Make;

/// Shell words for a make recipe: sh-quoted, then `$` doubled for make.
fn recipe_words(words: &[String]) -> String {
    shell_join(words).replace('$', "$$")
}

impl Adapter for Make {
    fn name(&self) -> &'static str {
        "make"
    }
    fn describe(&self) -> &'static str {
        "keel.mk to include: image-NAME/push-NAME/run-NAME/images targets, $(KEEL_IN) for [env]s"
    }
    fn render(&self, p: &ResolvedProject, opts: &AdapterOptions) -> Result<Vec<GeneratedFile>> {
        let mut images = String::new();
        for img in &p.images {
            let dep_iids: String = img
                .depends_on
                .iter()
                .map(|d| format!(" $(KEEL_DIR)/{d}.iid"))
                .collect();
            let refs: Vec<&String> = if img.tags.is_empty() {
                vec![&img.name]
            } else {
                img.tags.iter().collect()
            };
            let push: String = refs
                .iter()
                .map(|r| format!("\t$(KEEL) push {}\n", recipe_words(&[r.to_string()])))
                .collect();
            images += &fill(
                "make/image.mk",
                IMAGE_MK,
                &[
                    ("name", img.name.clone()),
                    ("dockerfile", img.dockerfile.clone()),
                    ("context", img.context.clone()),
                    ("project_file", p.file.clone()),
                    ("dep_iids", dep_iids),
                    ("build_args", recipe_words(&img.build_args)),
                    ("push", push.trim_end_matches('\n').to_string()),
                ],
            )?;
        }
        let mut envs = String::new();
        if !p.envs.is_empty() {
            envs.push_str("\n# Prefixes that run the rest of a recipe line inside an [env].\n");
            for e in &p.envs {
                envs += &format!("KEEL_IN_{0} = $(KEEL) exec-in {0} --\n", e.name);
            }
        }
        let default_env = opts.test_env(p).map(|e| e.name.clone());
        if let Some(d) = &default_env {
            envs += &format!("KEEL_IN = $(KEEL_IN_{d})\n");
        }
        let image_targets: String = p
            .images
            .iter()
            .map(|i| format!(" image-{}", i.name))
            .collect();
        let names: Vec<&str> = p.images.iter().map(|i| i.name.as_str()).collect();
        let text = fill(
            "make/keel.mk",
            KEEL_MK,
            &[
                (
                    "header",
                    header(Comment::Hash, &p.file, &opts.regen_command("make")),
                ),
                ("project_file", p.file.clone()),
                (
                    "image_names",
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    },
                ),
                (
                    "default_env",
                    default_env.unwrap_or_else(|| "none defined".into()),
                ),
                ("keel", opts.keel.clone()),
                ("image_targets", image_targets),
                ("envs", envs),
                ("images", images),
            ],
        )?;
        debug_assert_eq!(STATE_DIR, ".keel", "keel.mk's KEEL_DIR default");
        Ok(vec![GeneratedFile::new("keel.mk", text)])
    }
}
