//! make: `keel.mk` to `include` (integrations/make/). Per image an `image-NAME` target
//! backed by an iid file whose prerequisites are the image's context files (generated
//! dependency file), plus `push-NAME`, `run-NAME`, `images` and `KEEL_IN` variables.
//!
//! `KEEL_IN*` are recursive (`=`) variables so `$(KEEL)` set later still applies; see
//! docs/integrations/make.md.
use super::template::{fill, header, shell_join, Comment};
use super::{Adapter, AdapterOptions, GeneratedFile, ResolvedImage, ResolvedProject, Result};
use crate::project::STATE_DIR;

const KEEL_MK: &str = include_str!("../../integrations/make/keel.mk");
const IMAGE_MK: &str = include_str!("../../integrations/make/image.mk");

pub struct Make;

/// Shell words for a make recipe: sh-quoted, then `$` doubled for make. (keel.toml
/// refuses control characters, so no newline can end the recipe line early.)
fn recipe_words(words: &[String]) -> String {
    shell_join(words).replace('$', "$$")
}

/// Text for a make comment: one line, whatever it holds.
fn comment_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A make variable value: `$` doubled, `#` (a comment) escaped, control characters
/// (refused upstream) replaced.
fn make_value(s: &str) -> String {
    make_escaped(s, false)
}

/// A word of a prerequisite list: as a value, plus spaces (word separators) escaped.
fn make_word(s: &str) -> String {
    make_escaped(s, true)
}

fn make_escaped(s: &str, spaces: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '$' => out.push_str("$$"),
            '#' => out.push_str("\\#"),
            ' ' if spaces => out.push_str("\\ "),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

impl Adapter for Make {
    fn name(&self) -> &'static str {
        "make"
    }
    fn describe(&self) -> &'static str {
        "keel.mk to include: image-NAME/push-NAME/run-NAME/images targets, $(KEEL_IN) for [env]s"
    }
    fn render(&self, p: &ResolvedProject, opts: &AdapterOptions) -> Result<Vec<GeneratedFile>> {
        let images = p
            .images
            .iter()
            .map(|img| image_rules(p, img))
            .collect::<Result<String>>()?;
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
                ("project_file", comment_text(&p.file)),
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
                ("keel", make_value(&opts.keel)),
                ("image_targets", image_targets),
                ("envs", envs),
                ("images", images),
            ],
        )?;
        debug_assert_eq!(STATE_DIR, ".keel", "keel.mk's KEEL_DIR default");
        Ok(vec![GeneratedFile::new("keel.mk", text)])
    }
}

/// One image's rules: `image-NAME` (its `.iid` stamp, rebuilt after the images it
/// depends on) and `push-NAME` for each of its tags.
fn image_rules(p: &ResolvedProject, img: &ResolvedImage) -> Result<String> {
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
    fill(
        "make/image.mk",
        IMAGE_MK,
        &[
            ("name", img.name.clone()),
            ("dockerfile", comment_text(&img.dockerfile)),
            ("context", comment_text(&img.context)),
            ("project_file", make_word(&p.file)),
            ("dep_iids", dep_iids),
            ("build_args", recipe_words(&img.build_args)),
            ("push", push.trim_end_matches('\n').to_string()),
        ],
    )
}
