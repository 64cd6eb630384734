//! The project file `keel.toml`: its model, its parser and what is derived from it without
//! running anything (dependency order, context file lists, `exec-in` plans, port renderings).
//!
//! This module owns the *meaning* of keel.toml. It never builds or runs images: the
//! engine (`keel build`, `keel run`) consumes what is planned here. Every error names the
//! file, the key and the line, because a project file is edited by hand.
//!
//! ```toml
//! [[image]]
//! name = "app"            # local image name (also a make/scons target suffix)
//! context = "."           # build context, relative to keel.toml's directory
//! file = "Dockerfile"     # relative to the context (docker convention)
//! tags = ["registry.example/app:1.0"]
//! args = { VERSION = "1.0" }
//! target = "runtime"
//! depends_on = ["base"]   # images of this project used as bases; built first
//!
//! [env.dev]
//! image = "debian:bookworm"   # or: build = "app" (an [[image]] of this project)
//! mount = "/src"              # where the project directory is mounted (default /src)
//! workdir = "/src"            # default: mount point (+ the caller's subdirectory)
//! cache = { m2 = "~/.m2" }    # named volume NAME mounted at PATH (~ is the env's home)
//! env = { CI = "1" }
//! user = true                 # run as the owner of the project tree (default true)
//! home = "/home/keel"         # HOME for the mapped user (default /home/keel)
//! ```
mod context;
mod exec;
mod order;
mod port;
mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use context::{context_files, make_escape, render_make_deps, write_if_changed, STATE_DIR};
pub use exec::{name_for_id, plan_exec, ExecPlan, Owner, GROUP_VAR, PASSWD_VAR};
pub use order::build_order;
pub use port::{render_ports, PortFormat, PortMapping};

/// The file name keel looks for in a project directory.
pub const PROJECT_FILE: &str = "keel.toml";

/// Errors about a project file or what is derived from it.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Syntax {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}:{line}: {key}: {message}")]
    Invalid {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
    #[error("{file}: image dependency cycle {cycle}; remove one of these depends_on entries")]
    Cycle { file: String, cycle: String },
    #[error("{file}: no image named `{name}`; images are: {known}")]
    NoSuchImage {
        file: String,
        name: String,
        known: String,
    },
    #[error("{file}: no environment named `{name}`; add [env.{name}] or use one of: {known}")]
    NoSuchEnv {
        file: String,
        name: String,
        known: String,
    },
    #[error("walking the context of image `{image}` at {path}: {source}")]
    Walk {
        image: String,
        path: PathBuf,
        source: walkdir::Error,
    },
}

pub type Result<T, E = ProjectError> = std::result::Result<T, E>;

/// A parsed keel.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    /// How the file is named in messages and generated headers (usually "keel.toml").
    pub file: String,
    /// The project directory (keel.toml's directory); paths in the file are relative to it.
    pub dir: PathBuf,
    /// `[[image]]` entries in file order.
    pub images: Vec<ImageSpec>,
    /// `[env.NAME]` entries by name.
    pub envs: BTreeMap<String, EnvSpec>,
    /// `[[app]]` entries in file order: buildpack apps (`keel buildpack build`).
    pub apps: Vec<AppSpec>,
}

/// One `[[app]]` entry: an app directory built with buildpacks, no Dockerfile
/// (docs/buildpacks.md).
#[derive(Debug, Clone, PartialEq)]
pub struct AppSpec {
    /// The image name the build tags.
    pub name: String,
    /// The app directory relative to the project directory ("." for itself).
    pub path: String,
    /// Buildpacks in order (empty: the app's .buildpacks, else detection).
    pub buildpacks: Vec<String>,
    /// The stack (default `keel-stack`).
    pub stack: Option<String>,
    /// Config vars.
    pub env: BTreeMap<String, String>,
}

/// One `[[image]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSpec {
    pub name: String,
    /// Context directory relative to the project directory, '/'-separated, "." for itself.
    pub context: String,
    /// Dockerfile relative to the context (docker's `-f` is relative to the cwd; keel
    /// resolves it against the context so keel.toml reads naturally).
    pub file: String,
    pub tags: Vec<String>,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub depends_on: Vec<String>,
    /// A registry build cache used and refreshed by this image's builds
    /// (`cache = "registry:REF"`: `--cache-from` and `--cache-to`).
    pub cache: Option<String>,
    /// Line of the `[[image]]` header's `name` key, for messages.
    pub line: usize,
}

impl ImageSpec {
    /// The Dockerfile's path relative to the project directory.
    pub fn dockerfile(&self) -> String {
        join_rel(&self.context, &self.file)
    }

    /// `keel build` arguments (without the program name) that build this image from the
    /// project directory: `-f FILE -t NAME -t TAG… --build-arg K=V… [--target S] CONTEXT`.
    pub fn build_args(&self) -> Vec<String> {
        let mut a = vec!["build".to_string(), "-f".into(), self.dockerfile()];
        for t in std::iter::once(&self.name).chain(&self.tags) {
            a.push("-t".into());
            a.push(t.clone());
        }
        for (k, v) in &self.args {
            a.push("--build-arg".into());
            a.push(format!("{k}={v}"));
        }
        if let Some(t) = &self.target {
            a.push("--target".into());
            a.push(t.clone());
        }
        if let Some(c) = &self.cache {
            a.extend([
                "--cache-from".into(),
                c.clone(),
                "--cache-to".into(),
                c.clone(),
            ]);
        }
        a.push(self.context.clone());
        a
    }
}

/// Where an environment's image comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum EnvImage {
    /// An image reference used as is (`image = "debian:bookworm"`).
    Ref(String),
    /// An `[[image]]` of this project, by name (`build = "app"`).
    Project(String),
}

/// One `[env.NAME]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvSpec {
    pub name: String,
    pub image: EnvImage,
    /// Mount point of the project directory inside the container.
    pub mount: String,
    /// Working directory; None means the mount point plus the caller's subdirectory.
    pub workdir: Option<String>,
    /// Named cache volumes: volume name → path in the container (`~/` = home).
    pub cache: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    /// Run as the owner of the mounted tree (true by default).
    pub user: bool,
    /// HOME of the mapped user.
    pub home: String,
    pub line: usize,
}

impl EnvSpec {
    /// The image reference `keel run` gets.
    pub fn image_ref(&self) -> &str {
        match &self.image {
            EnvImage::Ref(r) | EnvImage::Project(r) => r,
        }
    }
}

impl Project {
    /// Reads and parses `path` (a keel.toml); the project directory is its parent.
    pub fn load(path: &Path) -> Result<Project> {
        let text = std::fs::read_to_string(path).map_err(|source| ProjectError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| PROJECT_FILE.into());
        Project::parse(&text, &file, &dir)
    }

    /// Finds keel.toml in `start` or the nearest parent directory that has one.
    pub fn find(start: &Path) -> Option<PathBuf> {
        start
            .ancestors()
            .map(|d| d.join(PROJECT_FILE))
            .find(|p| p.is_file())
    }

    /// Parses keel.toml text. `file` names it in messages; `dir` is the project directory.
    pub fn parse(text: &str, file: &str, dir: &Path) -> Result<Project> {
        let raw: raw::File = toml::from_str(text).map_err(|e| de_error(text, file, &e))?;
        if let Some((key, span)) = values::first_control_character(text) {
            return Err(ProjectError::Invalid {
                file: file.to_string(),
                line: line_at(text, span.start),
                key: key.escape_debug().to_string(),
                message: "contains a control character (a newline, tab or escape); values reach generated build files, where one would start a new rule or command: remove it".into(),
            });
        }
        let at = Located { text, file };
        let images = parse_images(raw.image, &at)?;
        let envs = parse_envs(raw.env, &images, &at)?;
        let apps = parse_apps(raw.app, &images, &at)?;
        Ok(Project {
            apps,
            file: file.to_string(),
            dir: dir.to_path_buf(),
            images,
            envs,
        })
    }

    /// The image called `name`.
    pub fn image(&self, name: &str) -> Result<&ImageSpec> {
        self.images
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| ProjectError::NoSuchImage {
                file: self.file.clone(),
                name: name.to_string(),
                known: known(self.images.iter().map(|i| i.name.as_str())),
            })
    }

    /// The environment called `name`.
    pub fn env(&self, name: &str) -> Result<&EnvSpec> {
        self.envs.get(name).ok_or_else(|| ProjectError::NoSuchEnv {
            file: self.file.clone(),
            name: name.to_string(),
            known: known(self.envs.keys().map(|s| s.as_str())),
        })
    }
}

/// keel.toml's text and name, to say where a value is wrong.
struct Located<'a> {
    text: &'a str,
    file: &'a str,
}

impl Located<'_> {
    fn line(&self, span: std::ops::Range<usize>) -> usize {
        line_at(self.text, span.start)
    }

    fn bad(&self, span: std::ops::Range<usize>, key: &str, message: String) -> ProjectError {
        ProjectError::Invalid {
            file: self.file.to_string(),
            line: self.line(span),
            key: key.to_string(),
            message,
        }
    }
}

/// `[[image]]` tables, checked: names unique and well formed, paths relative and inside
/// the project, `cache` a registry reference, `depends_on` naming images of the project.
fn parse_images(raw: Vec<raw::Image>, at: &Located) -> Result<Vec<ImageSpec>> {
    let mut images: Vec<ImageSpec> = Vec::new();
    // depends_on names are checked once every image is known, so keep their spans.
    let mut deps: Vec<toml::Spanned<String>> = Vec::new();
    for ri in raw {
        let span = ri.name.span();
        let name = ri.name.into_inner();
        if let Err(why) = check_name(&name) {
            return Err(at.bad(span, "name", why));
        }
        if images.iter().any(|i| i.name == name) {
            return Err(at.bad(
                span,
                "name",
                format!("image `{name}` is defined twice; give each [[image]] its own name"),
            ));
        }
        let context = relative_or(ri.context, "context", ".", at)?;
        let file_rel = relative_or(ri.file, "file", "Dockerfile", at)?;
        if let Some(d) = ri.depends_on.iter().find(|d| *d.get_ref() == name) {
            return Err(at.bad(
                d.span(),
                "depends_on",
                format!("image `{name}` depends on itself; remove it"),
            ));
        }
        let cache = match ri.cache {
            Some(c) => {
                let s = c.span();
                c.get_ref()
                    .parse::<crate::registry::cache::CacheRef>()
                    .map_err(|m| at.bad(s, "cache", m))?;
                Some(c.into_inner())
            }
            None => None,
        };
        images.push(ImageSpec {
            name,
            cache,
            context,
            file: file_rel,
            tags: ri.tags,
            args: ri.args,
            target: ri.target,
            depends_on: ri.depends_on.iter().map(|d| d.get_ref().clone()).collect(),
            line: at.line(span),
        });
        deps.extend(ri.depends_on);
    }
    if let Some(d) = deps.iter().find(|d| !has_image(&images, d.get_ref())) {
        return Err(at.bad(d.span(), "depends_on", no_such_image(&images, d.get_ref())));
    }
    Ok(images)
}

fn has_image(images: &[ImageSpec], name: &str) -> bool {
    images.iter().any(|i| i.name == name)
}

fn no_such_image(images: &[ImageSpec], name: &str) -> String {
    format!(
        "no image named `{name}` in this project; known images: {}",
        known(images.iter().map(|i| i.name.as_str()))
    )
}

/// A path key (`context`, `file`, `path`): relative and inside the project, else `default`.
fn relative_or(
    value: Option<toml::Spanned<String>>,
    key: &str,
    default: &str,
    at: &Located,
) -> Result<String> {
    match value {
        Some(v) => {
            let s = v.span();
            check_rel(v.get_ref(), key).map_err(|m| at.bad(s, key, m))
        }
        None => Ok(default.to_string()),
    }
}

/// `[env.NAME]` tables, checked: one image source (`image` or a project `build`), an
/// absolute mount, cache volumes with valid names and paths.
fn parse_envs(
    raw: BTreeMap<String, raw::SpannedEnv>,
    images: &[ImageSpec],
    at: &Located,
) -> Result<BTreeMap<String, EnvSpec>> {
    let mut envs = BTreeMap::new();
    for (name, raw::SpannedEnv { span, inner: re }) in raw {
        let line = at.line(span.clone());
        if let Err(why) = check_name(&name) {
            return Err(at.bad(span, &format!("env.{name}"), why));
        }
        let image = env_image(&name, re.image, re.build, span.clone(), images, at)?;
        let mount = match re.mount {
            Some(m) if !m.get_ref().starts_with('/') => {
                return Err(at.bad(
                    m.span(),
                    &format!("env.{name}.mount"),
                    "must be an absolute path such as /src".into(),
                ))
            }
            Some(m) => m.into_inner(),
            None => "/src".into(),
        };
        check_env_caches(&name, &re.cache, span, at)?;
        let env = EnvSpec {
            name: name.clone(),
            image,
            mount,
            workdir: re.workdir,
            cache: re.cache,
            env: re.env,
            user: re.user.unwrap_or(true),
            home: re.home.unwrap_or_else(|| "/home/keel".into()),
            line,
        };
        envs.insert(name, env);
    }
    Ok(envs)
}

/// Where an env's image comes from: a reference (`image`) or one of this project's
/// `[[image]]`s (`build`), exactly one of the two.
fn env_image(
    name: &str,
    image: Option<toml::Spanned<String>>,
    build: Option<toml::Spanned<String>>,
    span: std::ops::Range<usize>,
    images: &[ImageSpec],
    at: &Located,
) -> Result<EnvImage> {
    match (image, build) {
        (Some(i), None) => Ok(EnvImage::Ref(i.into_inner())),
        (None, Some(b)) if !has_image(images, b.get_ref()) => {
            let why = no_such_image(images, b.get_ref());
            Err(at.bad(b.span(), &format!("env.{name}.build"), why))
        }
        (None, Some(b)) => Ok(EnvImage::Project(b.into_inner())),
        (Some(i), Some(_)) => Err(at.bad(
            i.span(),
            &format!("env.{name}"),
            "set either `image` (a reference) or `build` (an [[image]] of this project), not both"
                .into(),
        )),
        (None, None) => Err(at.bad(
            span,
            &format!("env.{name}"),
            "needs `image = \"REF\"` or `build = \"IMAGE\"`".into(),
        )),
    }
}

/// An env's cache volumes: valid names, absolute or home-relative paths.
fn check_env_caches(
    name: &str,
    cache: &BTreeMap<String, String>,
    span: std::ops::Range<usize>,
    at: &Located,
) -> Result<()> {
    for (vol, path) in cache {
        if check_name(vol).is_err() || !(path.starts_with('/') || path.starts_with("~/")) {
            return Err(at.bad(
                span,
                &format!("env.{name}.cache.{vol}"),
                "needs a volume name of [a-z0-9._-] and an absolute or ~/ path".into(),
            ));
        }
    }
    Ok(())
}

/// `[[app]]` tables (buildpack builds): names unique among apps and images, `path`
/// relative and inside the project.
fn parse_apps(raw: Vec<raw::App>, images: &[ImageSpec], at: &Located) -> Result<Vec<AppSpec>> {
    let mut apps: Vec<AppSpec> = Vec::new();
    for ra in raw {
        let span = ra.name.span();
        let name = ra.name.into_inner();
        if let Err(why) = check_name(&name) {
            return Err(at.bad(span, "name", why));
        }
        if apps.iter().any(|a| a.name == name) || has_image(images, &name) {
            return Err(at.bad(
                span,
                "name",
                format!("`{name}` is defined twice; give each [[app]] and [[image]] its own name"),
            ));
        }
        let path = relative_or(ra.path, "path", ".", at)?;
        apps.push(AppSpec {
            name,
            path,
            buildpacks: ra.buildpacks,
            stack: ra.stack,
            env: ra.env,
        });
    }
    Ok(apps)
}

fn known<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.collect();
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

/// Image and env names become make targets, file names and volume names, so they are
/// kept to a portable alphabet.
fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid name; use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit"
        ))
    }
}

/// A relative, '/'-separated path that stays inside the project.
fn check_rel(p: &str, what: &str) -> std::result::Result<String, String> {
    if p.starts_with('/') || p.split('/').any(|c| c == "..") || p.is_empty() {
        return Err(format!(
            "{what} `{p}` must be a relative path inside the project directory (no leading / or ..)"
        ));
    }
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    Ok(if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    })
}

/// Joins two normalised relative paths ("." is the empty path).
pub(crate) fn join_rel(a: &str, b: &str) -> String {
    match (a, b) {
        (".", b) => b.to_string(),
        (a, ".") => a.to_string(),
        (a, b) => format!("{a}/{b}"),
    }
}

/// 1-based line number of byte offset `at` in `text`.
pub(crate) fn line_at(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Turns a toml/serde error into one naming the file, the line and, when the error is
/// about a value, the key that holds it.
fn de_error(text: &str, file: &str, e: &toml::de::Error) -> ProjectError {
    let Some(span) = e.span() else {
        return ProjectError::Syntax {
            file: file.into(),
            line: 1,
            message: e.message().to_string(),
        };
    };
    let line = line_at(text, span.start);
    let line_start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let before = &text[line_start..span.start.min(text.len())];
    // The table the error is in: the last header up to and including this line.
    let line_end = text[span.start.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |i| span.start + i);
    let msg = e.message().to_string();
    // An unknown key on a header line belongs to the table above it.
    let upto = if msg.starts_with("unknown field") {
        line_start
    } else {
        line_end
    };
    let table = enclosing_table(&text[..upto]);
    if msg.is_empty() {
        return ProjectError::Syntax {
            file: file.into(),
            line,
            message: "invalid TOML; check quoting and brackets on this line".into(),
        };
    }
    let hint = if msg.starts_with("unknown field") {
        "; remove it or fix its spelling"
    } else if msg.starts_with("missing field") {
        "; add it"
    } else if msg.starts_with("invalid type") {
        "; use the type shown in docs/keel-toml.md"
    } else {
        ""
    };
    // `key = value` on this line: the value is what was wrong; name its key.
    let key = match before.find('=') {
        Some(eq) if !msg.starts_with("unknown field") => before[..eq].trim().to_string(),
        _ => String::new(),
    };
    let what = match (table.as_str(), key.as_str()) {
        ("", "") => String::new(),
        ("", k) => k.to_string(),
        (t, "") => format!("in {t}"),
        (t, k) => format!("{k} in {t}"),
    };
    if what.is_empty() {
        ProjectError::Syntax {
            file: file.into(),
            line,
            message: format!("{msg}{hint}"),
        }
    } else {
        ProjectError::Invalid {
            file: file.into(),
            line,
            key: what,
            message: format!("{msg}{hint}"),
        }
    }
}

/// The last `[table]` / `[[array]]` header in `text`, verbatim (e.g. "[env.dev]"): up to
/// its closing `]]` or `]` (ASCII, so always a character boundary), or the whole line when
/// it has none.
fn enclosing_table(text: &str) -> String {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| {
            let array_end = l.starts_with("[[").then(|| l.find("]]")).flatten();
            let end = array_end
                .map(|i| i + 2)
                .or_else(|| l.find(']').map(|i| i + 1));
            l[..end.unwrap_or(l.len())].to_string()
        })
        .unwrap_or_default()
}

/// The file as serde sees it: strict (unknown keys are errors), with spans where later
/// checks need a line.
mod raw {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use toml::Spanned;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        #[serde(default)]
        pub image: Vec<Image>,
        #[serde(default)]
        pub env: BTreeMap<String, SpannedEnv>,
        #[serde(default)]
        pub app: Vec<App>,
    }

    /// `[[app]]`: a buildpack app.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct App {
        pub name: Spanned<String>,
        pub path: Option<Spanned<String>>,
        #[serde(default)]
        pub buildpacks: Vec<String>,
        pub stack: Option<String>,
        #[serde(default)]
        pub env: BTreeMap<String, String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Image {
        pub name: Spanned<String>,
        pub context: Option<Spanned<String>>,
        pub file: Option<Spanned<String>>,
        #[serde(default)]
        pub tags: Vec<String>,
        #[serde(default)]
        pub args: BTreeMap<String, String>,
        pub target: Option<String>,
        #[serde(default)]
        pub depends_on: Vec<Spanned<String>>,
        pub cache: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Env {
        pub image: Option<Spanned<String>>,
        pub build: Option<Spanned<String>>,
        pub mount: Option<Spanned<String>>,
        pub workdir: Option<String>,
        #[serde(default)]
        pub cache: BTreeMap<String, String>,
        #[serde(default)]
        pub env: BTreeMap<String, String>,
        pub user: Option<bool>,
        pub home: Option<String>,
    }

    /// An env table plus the span of the whole table (for its line).
    pub struct SpannedEnv {
        pub span: std::ops::Range<usize>,
        pub inner: Env,
    }

    impl<'de> Deserialize<'de> for SpannedEnv {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let s = Spanned::<Env>::deserialize(d)?;
            Ok(SpannedEnv {
                span: s.span(),
                inner: s.into_inner(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The enclosing header of an error, read off the text before it: whole headers,
    /// a header whose closing bracket a multi-byte character follows (a fuzz find: it
    /// sliced inside the character), unclosed ones, none.
    #[test]
    fn the_enclosing_header_ends_at_its_brackets() {
        let cases = [
            ("[[image]]\nname = 1", "[[image]]"),
            ("[env.dev]\nx = 1", "[env.dev]"),
            ("[[image]\u{740}name = 1", "[[image]"),
            ("[[image]]\n[env.a] # note ]", "[env.a]"),
            ("[[image", "[[image"),
            ("name = 1", ""),
        ];
        for (text, want) in cases {
            assert_eq!(enclosing_table(text), want, "{text:?}");
        }
    }

    #[test]
    fn app_entries_are_buildpack_apps() {
        let p = Project::parse(
            "[[image]]\nname = \"base\"\n\n[[app]]\nname = \"shop\"\npath = \"apps/shop\"\nbuildpacks = [\"nodejs\", \"python\"]\nstack = \"heroku\"\nenv = { A = \"1\" }\n\n[[app]]\nname = \"site\"\n",
            "keel.toml",
            Path::new("/p"),
        )
        .unwrap();
        assert_eq!(p.apps.len(), 2);
        assert_eq!(p.apps[0].path, "apps/shop");
        assert_eq!(p.apps[0].buildpacks, ["nodejs", "python"]);
        assert_eq!(p.apps[0].stack.as_deref(), Some("heroku"));
        assert_eq!(p.apps[0].env["A"], "1");
        assert_eq!(p.apps[1].path, ".");
        let e = err("[[image]]\nname = \"x\"\n[[app]]\nname = \"x\"\n");
        assert!(e.contains("defined twice"), "{e}");
        let e = err("[[app]]\nname = \"x\"\npath = \"../up\"\n");
        assert!(e.contains("path"), "{e}");
        let e = err("[[app]]\nname = \"x\"\nbuildpack = \"python\"\n");
        assert!(e.contains("buildpack"), "{e}");
    }

    fn err(text: &str) -> String {
        Project::parse(text, "keel.toml", Path::new("/p"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn parses_full_file() {
        let p = Project::parse(
            "[[image]]\nname = 'base'\n\n[[image]]\nname = 'app'\ncontext = './web/'\nfile = 'Dockerfile.prod'\ntags = ['r/app:1']\nargs = { V = '1' }\ntarget = 'rt'\ndepends_on = ['base']\n\n[env.dev]\nbuild = 'app'\n",
            "keel.toml",
            Path::new("/p"),
        )
        .unwrap();
        assert_eq!(p.images.len(), 2);
        let app = &p.images[1];
        assert_eq!(app.context, "web");
        assert_eq!(app.dockerfile(), "web/Dockerfile.prod");
        assert_eq!(app.line, 5);
        assert_eq!(
            app.build_args().join(" "),
            "build -f web/Dockerfile.prod -t app -t r/app:1 --build-arg V=1 --target rt web"
        );
        let dev = p.env("dev").unwrap();
        assert_eq!(dev.image, EnvImage::Project("app".into()));
        assert_eq!(dev.mount, "/src");
        assert!(dev.user);
        assert_eq!(dev.line, 13);
        assert_eq!(
            p.images[0].build_args().join(" "),
            "build -f Dockerfile -t base ."
        );
    }

    #[test]
    fn errors_name_file_key_and_line() {
        let cases = [
            (
                "[[image]]\nname='a'\n\n[[image]]\nname='b'\nbogus=1\n",
                "keel.toml:6: in [[image]]: unknown field `bogus`, expected one of `name`, `context`, `file`, `tags`, `args`, `target`, `depends_on`, `cache`; remove it or fix its spelling",
            ),
            (
                "[[image]]\nname='a'\ntags='x'\n",
                "keel.toml:3: tags in [[image]]: invalid type: string \"x\", expected a sequence; use the type shown in docs/keel-toml.md",
            ),
            (
                "# c\n[env.dev]\nimage='x'\nuser='yes'\n",
                "keel.toml:4: user in [env.dev]: invalid type: string \"yes\", expected a boolean; use the type shown in docs/keel-toml.md",
            ),
            (
                "[[image]]\ntags=[]\n",
                "keel.toml:1: in [[image]]: missing field `name`; add it",
            ),
            ("x = ", "keel.toml:1: invalid TOML; check quoting and brackets on this line"),
            (
                "[imag]\n",
                "keel.toml:1: unknown field `imag`, expected one of `image`, `env`, `app`; remove it or fix its spelling",
            ),
            (
                "[[image]]\nname='A b'\n",
                "keel.toml:2: name: `A b` is not a valid name; use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit",
            ),
            (
                "[[image]]\nname='a'\n[[image]]\nname='a'\n",
                "keel.toml:4: name: image `a` is defined twice; give each [[image]] its own name",
            ),
            (
                "[[image]]\nname='a'\ndepends_on=['zz']\n",
                "keel.toml:3: depends_on: no image named `zz` in this project; known images: a",
            ),
            (
                "[[image]]\nname='a'\ndepends_on=['a']\n",
                "keel.toml:3: depends_on: image `a` depends on itself; remove it",
            ),
            (
                "[[image]]\nname='a'\ncontext='../x'\n",
                "keel.toml:3: context: context `../x` must be a relative path inside the project directory (no leading / or ..)",
            ),
            (
                "\n[env.dev]\nmount='/s'\n",
                "keel.toml:2: env.dev: needs `image = \"REF\"` or `build = \"IMAGE\"`",
            ),
            (
                "[env.dev]\nimage='x'\nbuild='y'\n",
                "keel.toml:2: env.dev: set either `image` (a reference) or `build` (an [[image]] of this project), not both",
            ),
            (
                "[env.dev]\nbuild='y'\n",
                "keel.toml:2: env.dev.build: no image named `y` in this project; known images: (none)",
            ),
            (
                "[env.dev]\nimage='x'\nmount='src'\n",
                "keel.toml:3: env.dev.mount: must be an absolute path such as /src",
            ),
            (
                "[[image]]\nname='a'\ncache='localhost:5000/c'\n",
                "keel.toml:3: cache: cache \"localhost:5000/c\": give registry:HOST/REPO[:TAG][,mode=min|max]",
            ),
            (
                "[env.dev]\nimage='x'\ncache={ m2 = 'rel' }\n",
                "keel.toml:1: env.dev.cache.m2: needs a volume name of [a-z0-9._-] and an absolute or ~/ path",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(err(text), want, "{text}");
        }
    }

    /// Golden files: each `testdata/project/<case>/keel.toml` parses to `result` (a dump
    /// of the project and its build order, or the error). KEEL_BLESS=1 rewrites them.
    #[test]
    fn golden() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/project");
        let mut n = 0;
        for entry in std::fs::read_dir(&root).unwrap() {
            let dir = entry.unwrap().path();
            let text = std::fs::read_to_string(dir.join("keel.toml")).unwrap();
            let got = match Project::parse(&text, "keel.toml", Path::new(".")) {
                Ok(p) => {
                    let order = match build_order(&p, None) {
                        Ok(o) => o
                            .iter()
                            .map(|i| i.name.as_str())
                            .collect::<Vec<_>>()
                            .join(" "),
                        Err(e) => format!("error: {e}"),
                    };
                    format!("{p:#?}\nbuild order: {order}\n")
                }
                Err(e) => format!("error: {e}\n"),
            };
            let want_path = dir.join("result");
            if std::env::var_os("KEEL_BLESS").is_some() {
                std::fs::write(&want_path, &got).unwrap();
            }
            let want = std::fs::read_to_string(&want_path).unwrap_or_default();
            assert!(
                got == want,
                "{}: golden mismatch (KEEL_BLESS=1 re-blesses)\n--- expected\n{want}\n--- actual\n{got}",
                dir.display()
            );
            n += 1;
        }
        assert!(n >= 3, "no golden cases under {}", root.display());
    }
}
