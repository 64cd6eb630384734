//! Process managers: `keel integrate systemd|supervisord|runit --name N IMAGE [-- CMD]`
//! (integrations/{systemd,supervisord,runit}/). Each keeps `keel run --rm --name N` in the
//! foreground, removes a stale container of that name first, stops it cleanly (`keel
//! stop N`, or SIGTERM to `keel run`, which stops the container) and restarts it when it
//! fails. No keel.toml is needed.
//!
//! With `--app APP` they keep a deployed app up instead (integrations/systemd/keel-app.service,
//! supervisord/keel-app.conf, runit/app-run): the service runs `keel apps up APP` in the
//! foreground, which serves the app's router and starts the current release's containers
//! again whenever they are gone; SIGTERM stops them.
use super::template::{fill, header, shell_join, shell_quote, Comment};
use super::{Adapter, AdapterOptions, GeneratedFile, IntegrateError, ResolvedProject, Result};

const UNIT: &str = include_str!("../../integrations/systemd/keel.service");
const SUPERVISORD: &str = include_str!("../../integrations/supervisord/keel.conf");
const RUNIT_RUN: &str = include_str!("../../integrations/runit/run");
const RUNIT_FINISH: &str = include_str!("../../integrations/runit/finish");
const RUNIT_CONTROL_T: &str = include_str!("../../integrations/runit/control-t");
const APP_UNIT: &str = include_str!("../../integrations/systemd/keel-app.service");
const APP_SUPERVISORD: &str = include_str!("../../integrations/supervisord/keel-app.conf");
const APP_RUNIT_RUN: &str = include_str!("../../integrations/runit/app-run");

pub struct Systemd;
pub struct Supervisord;
pub struct Runit;

/// The validated service name and image.
fn name_image<'a>(tool: &'static str, opts: &'a AdapterOptions) -> Result<(&'a str, &'a str)> {
    let usage = || IntegrateError::Options {
        adapter: tool,
        message: format!("usage: keel integrate {tool} --name NAME IMAGE [-- CMD...]"),
    };
    let name = opts.name.as_deref().ok_or_else(usage)?;
    let image = opts.image.as_deref().ok_or_else(usage)?;
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !name.starts_with(['.', '-']);
    if !ok {
        return Err(IntegrateError::Options {
            adapter: tool,
            message: format!(
                "--name `{name}` must use letters, digits, '.', '_' and '-' (it names the container, the unit and the service directory)"
            ),
        });
    }
    Ok((name, image))
}

/// The app (`--app`) and the service name (`--name`, default the app's).
fn app_name<'a>(
    tool: &'static str,
    opts: &'a AdapterOptions,
) -> Result<Option<(&'a str, &'a str)>> {
    let Some(app) = opts.app.as_deref() else {
        return Ok(None);
    };
    if crate::deploy::check_name(app).is_err() {
        return Err(IntegrateError::Options {
            adapter: tool,
            message: format!(
                "--app `{app}` is not an app name (lowercase letters, digits and '-', as `keel deploy` takes)"
            ),
        });
    }
    if opts.image.is_some() || !opts.command.is_empty() || !opts.publish.is_empty() {
        return Err(IntegrateError::Options {
            adapter: tool,
            message: "--app takes no IMAGE, -p or command: the app's release says what runs".into(),
        });
    }
    let name = opts.name.as_deref().unwrap_or(app);
    Ok(Some((app, name)))
}

fn absolute_keel(tool: &'static str, opts: &AdapterOptions) -> Result<()> {
    if opts.keel.starts_with('/') {
        return Ok(());
    }
    Err(IntegrateError::Options {
        adapter: tool,
        message: format!(
            "{tool} needs an absolute path for keel, not `{}`; pass --keel /usr/local/bin/keel",
            opts.keel
        ),
    })
}

fn app_header(tool: &str, opts: &AdapterOptions) -> String {
    header(Comment::Hash, "the command line", &opts.regen_command(tool))
}

/// `keel-NAME.service` running `keel apps up APP`.
fn systemd_app(opts: &AdapterOptions, app: &str, name: &str) -> Result<Vec<GeneratedFile>> {
    absolute_keel("systemd", opts)?;
    let text = fill(
        "systemd/keel-app.service",
        APP_UNIT,
        &[
            ("header", app_header("systemd", opts)),
            ("app", app.to_string()),
            ("name", name.to_string()),
            ("keel", systemd_quote(&opts.keel)),
            ("app_arg", systemd_quote(app)),
            ("root", systemd_quote(&root(opts))),
        ]
        .into_iter()
        .chain(unit_kind(opts.user_service))
        .collect::<Vec<_>>(),
    )?;
    Ok(vec![GeneratedFile::new(
        format!("keel-{name}.service"),
        text,
    )])
}

/// `[program:NAME]` running `keel apps up APP`.
fn supervisord_app(opts: &AdapterOptions, app: &str, name: &str) -> Result<Vec<GeneratedFile>> {
    let esc = |s: String| in_single_quotes(&s).replace('%', "%%");
    let text = fill(
        "supervisord/keel-app.conf",
        APP_SUPERVISORD,
        &[
            ("header", app_header("supervisord", opts)),
            ("app", app.to_string()),
            ("name", name.to_string()),
            ("keel_sh", esc(shell_quote(&opts.keel))),
            ("app_sh", esc(shell_quote(app))),
            (
                "root",
                root(opts)
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('%', "%%"),
            ),
        ],
    )?;
    Ok(vec![GeneratedFile::new(format!("keel-{name}.conf"), text)])
}

/// Service directory NAME/ whose run script execs `keel apps up APP` (runsv's TERM on
/// `sv down` reaches keel directly: no control/t or finish script is needed).
fn runit_app(opts: &AdapterOptions, app: &str, name: &str) -> Result<Vec<GeneratedFile>> {
    let text = fill(
        "runit/app-run",
        APP_RUNIT_RUN,
        &[
            ("header", app_header("runit", opts)),
            ("app", app.to_string()),
            ("name", name.to_string()),
            ("keel_sh", shell_quote(&opts.keel)),
            ("root_sh", shell_quote(&root(opts))),
            ("app_sh", shell_quote(app)),
        ],
    )?;
    Ok(vec![
        GeneratedFile::new(format!("{name}/run"), text).executable()
    ])
}

/// `keel run` arguments after `--name N`: publish flags, image, command.
fn run_words(opts: &AdapterOptions, image: &str) -> Vec<String> {
    let mut w = Vec::new();
    for p in &opts.publish {
        w.push("-p".to_string());
        w.push(p.clone());
    }
    w.push(image.to_string());
    w.extend(opts.command.iter().cloned());
    w
}

/// The root the service's keel uses (`--root`/KEEL_ROOT when the glue was generated).
fn root(opts: &AdapterOptions) -> String {
    opts.root.clone().unwrap_or_else(|| "/var/lib/keel".into())
}

fn prefixed(s: String) -> String {
    format!(" {s}")
}

/// Quotes a word for a systemd command line (systemd.service(5) "Command lines").
fn systemd_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,".contains(c));
    if plain {
        s.to_string()
    } else {
        // Double quotes; `\` and `"` escaped; `$` doubled and `%` doubled so systemd
        // neither expands variables nor specifiers.
        let e = s
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('$', "$$")
            .replace('%', "%%");
        format!("\"{e}\"")
    }
}

/// For text inside a single-quoted `sh -c '…'` in an ini value: the inner command is
/// quoted for sh, then its single quotes are closed and reopened.
fn in_single_quotes(s: &str) -> String {
    s.replace('\'', r"'\''")
}

/// What differs between a system unit (root's keel) and a user unit (rootless keel,
/// started by the user's own `systemd --user`): where it is installed, how systemctl is
/// called, what it is wanted by, and the system's network-online target, which a user
/// manager cannot order against. A user unit outlives the login only with lingering.
fn unit_kind(user: bool) -> [(&'static str, String); 5] {
    let (dir, ctl, wanted, network, linger) = if user {
        (
            "~/.config/systemd/user/",
            "systemctl --user",
            "default.target",
            "",
            "\n#          (rootless keel: a user unit; `loginctl enable-linger` keeps it running\n#          while you are logged out)",
        )
    } else {
        (
            "/etc/systemd/system/",
            "systemctl",
            "multi-user.target",
            "\nWants=network-online.target\nAfter=network-online.target",
            "",
        )
    };
    [
        ("unit_dir", dir.to_string()),
        ("systemctl", ctl.to_string()),
        ("wanted_by", wanted.to_string()),
        ("network", network.to_string()),
        ("linger", linger.to_string()),
    ]
}

impl Adapter for Systemd {
    fn name(&self) -> &'static str {
        "systemd"
    }
    fn describe(&self) -> &'static str {
        "keel-NAME.service running `keel run --rm --name NAME IMAGE` (Restart=on-failure)"
    }
    fn render(&self, _p: &ResolvedProject, opts: &AdapterOptions) -> Result<Vec<GeneratedFile>> {
        if let Some((app, name)) = app_name("systemd", opts)? {
            return systemd_app(opts, app, name);
        }
        let (name, image) = name_image("systemd", opts)?;
        if !opts.keel.starts_with('/') {
            return Err(IntegrateError::Options {
                adapter: "systemd",
                message: format!(
                    "systemd needs an absolute path for keel, not `{}`; pass --keel /usr/local/bin/keel",
                    opts.keel
                ),
            });
        }
        let run_args: Vec<String> = run_words(opts, image)
            .iter()
            .map(|w| systemd_quote(w))
            .collect();
        let text = fill(
            "systemd/keel.service",
            UNIT,
            &[
                (
                    "header",
                    header(
                        Comment::Hash,
                        "the command line",
                        &opts.regen_command("systemd"),
                    ),
                ),
                ("name", name.to_string()),
                ("image", image.replace('%', "%%")),
                ("keel", systemd_quote(&opts.keel)),
                ("image_arg", systemd_quote(image)),
                ("root", systemd_quote(&root(opts))),
                ("run_args", prefixed(run_args.join(" "))),
            ]
            .into_iter()
            .chain(unit_kind(opts.user_service))
            .collect::<Vec<_>>(),
        )?;
        Ok(vec![GeneratedFile::new(
            format!("keel-{name}.service"),
            text,
        )])
    }
}

impl Adapter for Supervisord {
    fn name(&self) -> &'static str {
        "supervisord"
    }
    fn describe(&self) -> &'static str {
        "[program:NAME] section running `keel run --rm --name NAME IMAGE` (autorestart)"
    }
    fn render(&self, _p: &ResolvedProject, opts: &AdapterOptions) -> Result<Vec<GeneratedFile>> {
        if let Some((app, name)) = app_name("supervisord", opts)? {
            return supervisord_app(opts, app, name);
        }
        let (name, image) = name_image("supervisord", opts)?;
        // supervisord expands %(name)s in values: a literal % is written %%.
        let esc = |s: String| in_single_quotes(&s).replace('%', "%%");
        let text = fill(
            "supervisord/keel.conf",
            SUPERVISORD,
            &[
                (
                    "header",
                    header(
                        Comment::Hash,
                        "the command line",
                        &opts.regen_command("supervisord"),
                    ),
                ),
                ("name", name.to_string()),
                ("image", image.replace('%', "%%")),
                ("keel_sh", esc(shell_quote(&opts.keel))),
                ("image_sh", esc(shell_quote(image))),
                // An ini value in double quotes: `"` and `\` escaped, `%` doubled.
                (
                    "root",
                    root(opts)
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('%', "%%"),
                ),
                (
                    "run_args_sh",
                    esc(prefixed(shell_join(&run_words(opts, image)))),
                ),
            ],
        )?;
        Ok(vec![GeneratedFile::new(format!("keel-{name}.conf"), text)])
    }
}

impl Adapter for Runit {
    fn name(&self) -> &'static str {
        "runit"
    }
    fn describe(&self) -> &'static str {
        "service directory NAME/ (run, finish, control/t) running `keel run --rm --name NAME IMAGE`"
    }
    fn render(&self, _p: &ResolvedProject, opts: &AdapterOptions) -> Result<Vec<GeneratedFile>> {
        if let Some((app, name)) = app_name("runit", opts)? {
            return runit_app(opts, app, name);
        }
        let (name, image) = name_image("runit", opts)?;
        let hdr = header(
            Comment::Hash,
            "the command line",
            &opts.regen_command("runit"),
        );
        let base = [
            ("header", hdr),
            ("name", name.to_string()),
            ("keel_sh", shell_quote(&opts.keel)),
            ("root_sh", shell_quote(&root(opts))),
        ];
        let mut run_vals = base.to_vec();
        run_vals.push(("image", image.to_string()));
        run_vals.push(("image_sh", shell_quote(image)));
        run_vals.push(("run_args_sh", prefixed(shell_join(&run_words(opts, image)))));
        Ok(vec![
            GeneratedFile::new(
                format!("{name}/run"),
                fill("runit/run", RUNIT_RUN, &run_vals)?,
            )
            .executable(),
            GeneratedFile::new(
                format!("{name}/finish"),
                fill("runit/finish", RUNIT_FINISH, &base)?,
            )
            .executable(),
            GeneratedFile::new(
                format!("{name}/control/t"),
                fill("runit/control-t", RUNIT_CONTROL_T, &base)?,
            )
            .executable(),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_quoting() {
        let cases = [
            ("a", "a"),
            ("a b", "\"a b\""),
            ("$HOME", "\"$$HOME\""),
            ("100%", "\"100%%\""),
            ("say \"hi\"", "\"say \\\"hi\\\"\""),
        ];
        for (i, o) in cases {
            assert_eq!(systemd_quote(i), o);
        }
    }

    #[test]
    fn needs_name_and_image() {
        let p = ResolvedProject::empty(std::path::Path::new("/x"));
        let opts = AdapterOptions {
            image: Some("busybox".into()),
            ..Default::default()
        };
        let e = Runit.render(&p, &opts).unwrap_err().to_string();
        assert_eq!(
            e,
            "runit: usage: keel integrate runit --name NAME IMAGE [-- CMD...]"
        );
        let opts = AdapterOptions {
            name: Some("../x".into()),
            image: Some("busybox".into()),
            ..Default::default()
        };
        assert!(Supervisord
            .render(&p, &opts)
            .unwrap_err()
            .to_string()
            .contains("--name `../x`"));
        let opts = AdapterOptions {
            name: Some("web".into()),
            image: Some("busybox".into()),
            ..Default::default()
        };
        assert!(Systemd
            .render(&p, &opts)
            .unwrap_err()
            .to_string()
            .contains("absolute path"));
    }
}
