//! The `created_by` text of the history entry each instruction writes, as BuildKit writes
//! it (moby/buildkit `frontend/dockerfile/dockerfile2llb/convert.go`, the `dispatchX`
//! functions and `commitToHistory`): built from the instruction *after* processing —
//! expanded values, the argv after SHELL, Go's `%v` / `%q` / `%+v` formatting of the
//! values BuildKit prints — never from the text as written. Pure: no I/O.
//!
//! Go's formatting rules reproduced here: `%v` of a `[]string` is `[a b]`, `%q` of one is
//! `["a" "b"]` with `strconv.Quote` escapes, a `time.Duration` prints as `1m30s`/`100ms`.
use crate::image::config::HealthConfig;

/// `RUN` of `argv` with the build args in scope (convert.go `runCommandString`): when
/// any ARG was declared, `|N K=V …` comes first — every declared ARG once, in the order
/// first declared, with the value the step sees (a later ARG of the same name updates
/// the value, not the place; an ENV of that name wins; no value is `K=`), unquoted.
pub fn run(argv: &[String], args: &[(String, String)]) -> String {
    let mut words: Vec<String> = Vec::new();
    if !args.is_empty() {
        words.push(format!("|{}", args.len()));
        words.extend(args.iter().map(|(k, v)| format!("{k}={v}")));
    }
    words.extend(argv.iter().cloned());
    // A step with a layer is marked (`commitToHistory` with a state).
    format!("RUN {} # buildkit", words.join(" "))
}

/// `ENV k=v …` / `LABEL k=v …` with the expanded values (`KeyValuePair.String`).
pub fn pairs(keyword: &str, pairs: &[(String, String)]) -> String {
    let mut s = keyword.to_string();
    for (k, v) in pairs {
        s += &format!(" {k}={v}");
    }
    s
}

/// `ARG k=v k2`: the value the ARG took (a `--build-arg`, else its expanded default, else
/// the global ARG's), and the bare name when it has none (`dispatchArg`).
pub fn arg(decls: &[(String, Option<String>)]) -> String {
    let words: Vec<String> = decls
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        })
        .collect();
    format!("ARG {}", words.join(" "))
}

/// `EXPOSE [80/tcp 53/udp]`: the `port/proto` list (`dispatchExpose`, `%v` of the parsed
/// ports, whose words `parseExpose` sorted as written before expanding them).
pub fn expose(ports: &[String]) -> String {
    format!("EXPOSE {}", go_list(ports))
}

/// `VOLUME [/a /b]`, `SHELL [/bin/sh -c]`: `%v` of the expanded list.
pub fn list(keyword: &str, items: &[String]) -> String {
    format!("{keyword} {}", go_list(items))
}

/// `CMD ["/bin/sh" "-c" "x"]`, `ENTRYPOINT [...]`: `%q` of the argv after SHELL.
pub fn quoted(keyword: &str, argv: &[String]) -> String {
    let items: Vec<String> = argv.iter().map(|a| go_quote(a)).collect();
    format!("{keyword} [{}]", items.join(" "))
}

/// `HEALTHCHECK {Test:[CMD-SHELL x] Interval:30s Timeout:0s StartPeriod:0s
/// StartInterval:0s Retries:0}`: `%+v` of docker's `HealthcheckConfig`, unset values zero.
pub fn healthcheck(h: &HealthConfig) -> String {
    let d = |v: Option<u64>| go_duration(v.unwrap_or(0));
    format!(
        "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        go_list(&h.test),
        d(h.interval),
        d(h.timeout),
        d(h.start_period),
        d(h.start_interval),
        h.retries.unwrap_or(0)
    )
}

/// Go's `%v` of a `[]string`: `[a b c]`.
fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `strconv.Quote`: `"` and `\` escaped, control characters as `\n`, `\t`, `\x01`,
/// other unprintable characters as `\u00a0`; printable Unicode as it is.
pub fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            '\u{7}' => out += "\\a",
            '\u{8}' => out += "\\b",
            '\u{c}' => out += "\\f",
            '\n' => out += "\\n",
            '\r' => out += "\\r",
            '\t' => out += "\\t",
            '\u{b}' => out += "\\v",
            c if (c as u32) < 0x20 || c == '\u{7f}' => out += &format!("\\x{:02x}", c as u32),
            c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                out += &match c as u32 {
                    n if n < 0x10000 => format!("\\u{n:04x}"),
                    n => format!("\\U{n:08x}"),
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `time.Duration.String` of `ns` nanoseconds: `0s`, `250ns`, `1.5µs`, `100ms`,
/// `30s`, `1m30s`, `2h0m0s`.
pub fn go_duration(ns: u64) -> String {
    const SEC: u64 = 1_000_000_000;
    if ns == 0 {
        return "0s".into();
    }
    if ns < SEC {
        let (unit, prec) = match ns {
            n if n < 1_000 => ("ns", 0),
            n if n < 1_000_000 => ("µs", 3),
            _ => ("ms", 6),
        };
        let p = 10u64.pow(prec);
        return format!("{}{}{unit}", ns / p, fraction(ns % p, prec as usize));
    }
    let frac = fraction(ns % SEC, 9);
    let secs = ns / SEC;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, secs / 60) {
        (0, 0) => format!("{s}{frac}s"),
        (0, _) => format!("{m}m{s}{frac}s"),
        _ => format!("{h}h{m}m{s}{frac}s"),
    }
}

/// `.123` for the fraction `v` of `prec` digits, trailing zeros dropped; empty for zero.
fn fraction(v: u64, prec: usize) -> String {
    if prec == 0 || v == 0 {
        return String::new();
    }
    let digits = format!("{v:0prec$}");
    format!(".{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Instruction (after processing) → history text, each as BuildKit's dispatch
    /// function prints it (convert.go; `TestDispatchHealthcheckHistory`,
    /// dockerfile_history_test.go `testExportedHistory`, `testExportedHistoryFlattenArgs`).
    #[test]
    fn history_text_as_buildkit_prints_it() {
        let sh = strs(&["/bin/sh", "-c", "echo \"hi\" > /f"]);
        let args = vec![("foo".into(), "bar2".into()), ("bar".into(), "123".into())];
        let hc = HealthConfig {
            test: strs(&["bin", "-c", "exit 0"]),
            interval: Some(1_000_000_000),
            timeout: Some(10_000_000_000),
            start_period: Some(3_000_000_000),
            start_interval: Some(100_000_000),
            retries: Some(5),
        };
        let none = HealthConfig {
            test: strs(&["NONE"]),
            ..Default::default()
        };
        let cases: Vec<(String, &str)> = vec![
            (run(&strs(&["/bin/sh", "-c", "ls"]), &[]), "RUN /bin/sh -c ls # buildkit"),
            (run(&strs(&["ls", "/etc/"]), &args), "RUN |2 foo=bar2 bar=123 ls /etc/ # buildkit"),
            (run(&strs(&["x"]), &[("E".into(), String::new())]), "RUN |1 E= x # buildkit"),
            (pairs("ENV", &[("a".into(), "b c".into()), ("d".into(), "".into())]), "ENV a=b c d="),
            (pairs("LABEL", &[("lbl".into(), "val".into())]), "LABEL lbl=val"),
            (arg(&[("foo".into(), Some("bar".into())), ("x".into(), None)]), "ARG foo=bar x"),
            (expose(&strs(&["1234/udp", "2375/tcp", "5000/tcp"])), "EXPOSE [1234/udp 2375/tcp 5000/tcp]"),
            (list("VOLUME", &strs(&["/a", "/b c"])), "VOLUME [/a /b c]"),
            (list("SHELL", &strs(&["/bin/bash", "-c"])), "SHELL [/bin/bash -c]"),
            (quoted("CMD", &sh), r#"CMD ["/bin/sh" "-c" "echo \"hi\" > /f"]"#),
            (quoted("ENTRYPOINT", &strs(&["a\tb", "ü\\"])), r#"ENTRYPOINT ["a\tb" "ü\\"]"#),
            (healthcheck(&hc), "HEALTHCHECK {Test:[bin -c exit 0] Interval:1s Timeout:10s StartPeriod:3s StartInterval:100ms Retries:5}"),
            (healthcheck(&none), "HEALTHCHECK {Test:[NONE] Interval:0s Timeout:0s StartPeriod:0s StartInterval:0s Retries:0}"),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn go_durations_and_quotes() {
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (250, "250ns"),
            (1_500, "1.5µs"),
            (100_000_000, "100ms"),
            (1_250_000, "1.25ms"),
            (30_000_000_000, "30s"),
            (90_000_000_000, "1m30s"),
            (7_200_000_000_000, "2h0m0s"),
            (3_661_500_000_000, "1h1m1.5s"),
        ];
        for (ns, want) in cases {
            assert_eq!(go_duration(*ns), *want, "{ns}");
        }
        assert_eq!(go_quote("a\u{1}\u{7f}\u{a0}b"), r#""a\x01\x7f\u00a0b""#);
    }
}
