//! Parsing `keel run` flag values that have a syntax of their own: `-v`, `-e`/`--env-file`.
//! Pure; each error names the flag and value and shows the accepted form.
use std::path::PathBuf;

/// One `-v` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSpec {
    /// `-v /host/path:/ctr[:ro]`: a host file or directory.
    Bind { src: PathBuf, dst: String, ro: bool },
    /// `-v NAME:/ctr[:ro]`: a named volume kept in the keel root.
    Named { name: String, dst: String, ro: bool },
    /// `-v /ctr`: a fresh anonymous volume.
    Anonymous { dst: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {flag} value {value:?}: {why}")]
pub struct FlagError {
    pub flag: &'static str,
    pub value: String,
    pub why: String,
}

fn bad(flag: &'static str, value: &str, why: impl Into<String>) -> FlagError {
    FlagError {
        flag,
        value: value.to_string(),
        why: why.into(),
    }
}

impl VolumeSpec {
    pub fn parse(v: &str) -> Result<VolumeSpec, FlagError> {
        let parts: Vec<&str> = v.split(':').collect();
        let (src, dst, mode) = match parts.as_slice() {
            [dst] => {
                return if dst.starts_with('/') {
                    Ok(VolumeSpec::Anonymous {
                        dst: dst.to_string(),
                    })
                } else {
                    Err(bad(
                        "-v",
                        v,
                        "expected SRC:DST[:ro], /host/path:/container/path or NAME:/container/path",
                    ))
                }
            }
            [src, dst] => (*src, *dst, None),
            [src, dst, mode] => (*src, *dst, Some(*mode)),
            _ => return Err(bad("-v", v, "expected SRC:DST[:ro] (at most two ':')")),
        };
        if !dst.starts_with('/') {
            return Err(bad(
                "-v",
                v,
                format!("the container path {dst:?} must be absolute"),
            ));
        }
        let ro = match mode {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(other) => {
                return Err(bad(
                    "-v",
                    v,
                    format!("unknown mode {other:?}; use ro or rw"),
                ))
            }
        };
        if src.is_empty() {
            return Err(bad("-v", v, "the source is empty"));
        }
        if src.starts_with('/') || src.starts_with('.') {
            Ok(VolumeSpec::Bind {
                src: PathBuf::from(src),
                dst: dst.to_string(),
                ro,
            })
        } else if crate::container::valid_name(src) {
            Ok(VolumeSpec::Named {
                name: src.to_string(),
                dst: dst.to_string(),
                ro,
            })
        } else {
            Err(bad("-v", v, "a volume name uses letters, digits, '_', '.' and '-'; a host path must start with / or ."))
        }
    }
}

/// One `-e` value: `KEY=VALUE`, or `KEY` to pass the host's value (skipped when unset).
pub fn parse_env(
    v: &str,
    host: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, FlagError> {
    let key = v.split('=').next().unwrap_or("");
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(bad("-e", v, "expected KEY=VALUE or KEY"));
    }
    if v.contains('=') {
        return Ok(Some(v.to_string()));
    }
    Ok(host(key).map(|val| format!("{key}={val}")))
}

/// The lines of an `--env-file`: `KEY=VALUE` or `KEY`; `#` comments and blank lines skipped.
pub fn parse_env_file(
    text: &str,
    file: &str,
    host: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>, FlagError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        match parse_env(t, &host) {
            Ok(Some(e)) => out.push(e),
            Ok(None) => {}
            Err(_) => {
                return Err(bad(
                    "--env-file",
                    &format!("{file}:{}", i + 1),
                    format!("line {:?} is not KEY=VALUE", line),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_values_parse_like_docker() {
        let cases: &[(&str, VolumeSpec)] = &[
            (
                "/data:/srv",
                VolumeSpec::Bind {
                    src: "/data".into(),
                    dst: "/srv".into(),
                    ro: false,
                },
            ),
            (
                "/data:/srv:ro",
                VolumeSpec::Bind {
                    src: "/data".into(),
                    dst: "/srv".into(),
                    ro: true,
                },
            ),
            (
                "./rel:/srv:rw",
                VolumeSpec::Bind {
                    src: "./rel".into(),
                    dst: "/srv".into(),
                    ro: false,
                },
            ),
            (
                "cache:/root/.m2",
                VolumeSpec::Named {
                    name: "cache".into(),
                    dst: "/root/.m2".into(),
                    ro: false,
                },
            ),
            (
                "/scratch",
                VolumeSpec::Anonymous {
                    dst: "/scratch".into(),
                },
            ),
        ];
        for (v, want) in cases {
            assert_eq!(&VolumeSpec::parse(v).unwrap(), want, "{v}");
        }
        for v in [
            "relative",
            "/a:rel",
            "/a:/b:xx",
            "/a:/b:ro:extra",
            ":/b",
            "bad name:/x",
        ] {
            let e = VolumeSpec::parse(v).unwrap_err();
            assert!(e.to_string().starts_with("invalid -v value"), "{v}: {e}");
        }
    }

    #[test]
    fn env_values_and_files() {
        let host = |k: &str| (k == "HOME").then(|| "/root".to_string());
        assert_eq!(parse_env("A=1", host).unwrap(), Some("A=1".into()));
        assert_eq!(parse_env("A=", host).unwrap(), Some("A=".into()));
        assert_eq!(parse_env("HOME", host).unwrap(), Some("HOME=/root".into()));
        assert_eq!(parse_env("UNSET", host).unwrap(), None);
        assert!(parse_env("=x", host).is_err());
        let f = parse_env_file("# c\n\nA=1\nHOME\n  B=two words\n", "env.list", host).unwrap();
        assert_eq!(f, ["A=1", "HOME=/root", "B=two words"]);
        let e = parse_env_file("A=1\nbad key=1\n", "env.list", host).unwrap_err();
        assert!(e.to_string().contains("env.list:2"), "{e}");
    }
}
