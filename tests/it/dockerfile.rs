//! Integration tests: dockerfile. Conformance against BuildKit's parser and shell-lexer
//! vectors and moby/patternmatcher's `.dockerignore` vectors in `testdata/conformance/`.
//! Each test walks one data file or folder and names the failing case(s).
use keel::dockerfile::{self, expand, parse};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/conformance")
        .join(rel)
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(data(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn json(rel: &str) -> Value {
    serde_json::from_slice(&read(rel)).unwrap_or_else(|e| panic!("parsing {rel}: {e}"))
}

fn cases(rel: &str) -> Vec<(String, PathBuf)> {
    let mut out: Vec<_> = std::fs::read_dir(data(rel))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    out.sort();
    out
}

/// Collects failures so one run reports every failing case, then fails once.
struct Failures(Vec<String>);

impl Failures {
    fn check(self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{} {what} case(s) failed:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

#[test]
fn parser_positive_dumps_match_result() {
    let mut f = Failures(Vec::new());
    let all = cases("dockerfile-parser/positive");
    assert!(
        all.len() >= 33,
        "expected at least 33 positive cases, found {}",
        all.len()
    );
    for (name, dir) in all {
        let input = std::fs::read(dir.join("Dockerfile")).unwrap();
        let want = String::from_utf8(std::fs::read(dir.join("result")).unwrap()).unwrap();
        match parse("Dockerfile", &input) {
            Err(e) => f.0.push(format!("{name}: parse failed: {e}")),
            Ok(ast) => {
                let got = ast.dump() + "\n";
                if got != want {
                    f.0.push(format!("{name}:\n--- expected\n{want}--- got\n{got}"));
                }
            }
        }
    }
    f.check("positive");
}

#[test]
fn parser_negative_cases_are_rejected() {
    let mut f = Failures(Vec::new());
    let all = cases("dockerfile-parser/negative");
    assert_eq!(all.len(), 4);
    for (name, dir) in all {
        let input = std::fs::read(dir.join("Dockerfile")).unwrap();
        match parse("Dockerfile", &input) {
            Ok(ast) => {
                f.0.push(format!("{name}: parsed but must fail: {}", ast.dump()))
            }
            Err(e) => {
                let msg = e.to_string();
                if !msg.starts_with("Dockerfile:") {
                    f.0.push(format!(
                        "{name}: error does not name the file and line: {msg}"
                    ));
                }
            }
        }
    }
    f.check("negative");
}

#[test]
fn parser_line_numbers() {
    let want = json("dockerfile-parser/line-numbers/expected.json");
    let ast = parse(
        "Dockerfile",
        &read("dockerfile-parser/line-numbers/Dockerfile"),
    )
    .unwrap();
    assert_eq!(
        ast.start_line as u64,
        want["root"]["start_line"].as_u64().unwrap(),
        "root start"
    );
    assert_eq!(
        ast.end_line as u64,
        want["root"]["end_line"].as_u64().unwrap(),
        "root end"
    );
    let children = want["children"].as_array().unwrap();
    assert_eq!(ast.children.len(), children.len());
    for (node, w) in ast.children.iter().zip(children) {
        let span = (node.start_line as u64, node.end_line as u64);
        let expected = (
            w["start_line"].as_u64().unwrap(),
            w["end_line"].as_u64().unwrap(),
        );
        assert_eq!(span, expected, "span of {}", w["instruction"]);
        assert_eq!(
            node.keyword,
            w["instruction"].as_str().unwrap().to_lowercase()
        );
    }
}

fn check_heredocs(rel: &str) {
    let want = json(&format!("dockerfile-parser/heredoc/{rel}/expected.json"));
    let ast = parse(
        "Dockerfile",
        &read(&format!("dockerfile-parser/heredoc/{rel}/Dockerfile")),
    )
    .unwrap();
    let mut f = Failures(Vec::new());
    for c in want["children"].as_array().unwrap() {
        let idx = c["child_index"].as_u64().unwrap() as usize;
        let Some(node) = ast.children.get(idx) else {
            f.0.push(format!("child {idx} missing"));
            continue;
        };
        let got: Vec<Value> = node
            .heredocs
            .iter()
            .map(|h| {
                serde_json::json!({"name": h.name, "content": h.content, "expand": h.expand,
                    "chomp": h.chomp, "file_descriptor": h.file_descriptor})
            })
            .collect();
        let expected = match &c["heredocs"] {
            Value::Null => vec![],
            v => v.as_array().unwrap().clone(),
        };
        if got != expected {
            f.0.push(format!(
                "child {idx} ({}): expected {expected:?}, got {got:?}",
                node.original
            ));
        }
    }
    f.check(rel);
}

#[test]
fn parser_heredoc_extract() {
    check_heredocs("extract");
}

#[test]
fn parser_heredoc_json_form() {
    check_heredocs("json-form");
}

#[test]
fn parser_heredoc_helpers() {
    use dockerfile::parse::{chomp_heredoc_content, heredocs_from_line, parse_heredoc};
    let h = json("dockerfile-parser/heredoc/helpers.json");
    for c in h["chomp"].as_array().unwrap() {
        assert_eq!(
            chomp_heredoc_content(c["input"].as_str().unwrap()),
            c["expected"].as_str().unwrap()
        );
    }
    let sw = &h["single_word"];
    for w in sw["valid_name_EOF"].as_array().unwrap() {
        let w = w.as_str().unwrap();
        let doc = parse_heredoc(w).unwrap_or_else(|e| panic!("{w:?}: {e}"));
        assert_eq!(doc.map(|d| d.name).as_deref(), Some("EOF"), "word {w:?}");
    }
    for w in sw["invalid"].as_array().unwrap() {
        let w = w.as_str().unwrap();
        assert!(parse_heredoc(w).is_err(), "word {w:?} must be an error");
    }
    for w in sw["not_heredoc"].as_array().unwrap() {
        let w = w.as_str().unwrap();
        assert_eq!(parse_heredoc(w), Ok(None), "word {w:?} is not a heredoc");
    }
    for c in h["heredocs_from_line"]["cases"].as_array().unwrap() {
        let line = c["line"].as_str().unwrap();
        let names: Vec<String> = heredocs_from_line(line)
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        let want: Vec<String> = match &c["heredoc_names"] {
            Value::Null => vec![],
            v => v
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect(),
        };
        assert_eq!(names, want, "line {line:?}");
    }
}

#[test]
fn parser_directives() {
    use dockerfile::parse::detect_directive;
    let d = json("dockerfile-parser/directives.json");
    for c in d["escape_directive"]["cases"].as_array().unwrap() {
        let input = c["input"].as_str().unwrap();
        // The escape directive must take effect; append an instruction so the parse succeeds.
        let ast = parse("Dockerfile", format!("{input}FROM x\n").as_bytes()).unwrap();
        let got: Vec<(String, String)> = ast
            .directives
            .iter()
            .map(|d| (d.name.clone(), d.value.clone()))
            .collect();
        let want: Vec<(String, String)> = c["expected_directives"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["name"].as_str().unwrap().into(),
                    d["value"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(got, want, "input {input:?}");
    }
    for (section, key, field) in [
        ("detect_syntax", "syntax", "ref"),
        ("parse_directive_check", "check", "value"),
    ] {
        for c in d[section]["cases"].as_array().unwrap() {
            let input = c["input"].as_str().unwrap();
            let got = detect_directive(key, input.as_bytes());
            assert_eq!(
                got.is_some(),
                c["found"].as_bool().unwrap(),
                "{section} {input:?}: {got:?}"
            );
            let got_value = got.as_ref().map(|g| g.value.as_str()).unwrap_or("");
            if let Some(v) = c[field].as_str() {
                assert_eq!(got_value, v, "{section} {input:?}");
            }
            if let Some(v) = c["cmdline"].as_str() {
                assert_eq!(
                    got.as_ref().map(|g| g.cmdline.as_str()).unwrap_or(""),
                    v,
                    "{section} {input:?}"
                );
            }
            if let Some(v) = c["line"].as_u64() {
                assert_eq!(
                    got.as_ref().map(|g| g.line as u64),
                    Some(v),
                    "{section} {input:?}"
                );
            }
        }
    }
}

#[test]
fn parser_exec_form_json() {
    use dockerfile::parse::parse_json_array;
    let d = json("dockerfile-parser/exec-form-json.json");
    for c in d["valid"].as_array().unwrap() {
        let input = c["input"].as_str().unwrap();
        let want: Vec<String> = serde_json::from_value(c["expected"].clone()).unwrap();
        assert_eq!(
            parse_json_array(input).unwrap(),
            Some(want.clone()),
            "input {input:?}"
        );
        // And through the parser, as CMD in exec form.
        let ast = parse("Dockerfile", format!("CMD {input}\n").as_bytes()).unwrap();
        assert!(ast.children[0].json, "input {input:?} must be exec form");
        assert_eq!(ast.children[0].args, want, "input {input:?}");
    }
    for input in d["invalid_not_string_array"].as_array().unwrap() {
        let input = input.as_str().unwrap();
        assert!(
            parse_json_array(input).is_err(),
            "input {input:?} must be an error"
        );
        for kw in ["RUN", "CMD", "ENTRYPOINT", "SHELL", "ADD", "COPY", "VOLUME"] {
            assert!(
                parse("Dockerfile", format!("{kw} {input}\n").as_bytes()).is_err(),
                "{kw} {input:?}"
            );
        }
    }
}

#[test]
fn parser_warns_on_empty_continuation() {
    let want = json("dockerfile-parser/warnings/empty-continuation/expected.json");
    let ast = parse(
        "Dockerfile",
        &read("dockerfile-parser/warnings/empty-continuation/Dockerfile"),
    )
    .unwrap();
    assert_eq!(
        ast.warnings.len() as u64,
        want["warning_count"].as_u64().unwrap(),
        "{:?}",
        ast.warnings
    );
    for (w, exp) in ast
        .warnings
        .iter()
        .zip(want["warnings"].as_array().unwrap())
    {
        for s in exp["short_contains"].as_array().unwrap() {
            assert!(
                w.short.contains(s.as_str().unwrap()),
                "{:?} lacks {s}",
                w.short
            );
        }
        if let Some(d) = exp["detail_contains"].as_str() {
            assert!(w.detail.contains(d), "{:?} lacks {d}", w.detail);
        }
    }
}

#[test]
fn parser_line_too_long() {
    let d = json("dockerfile-parser/line-too-long.json");
    let t = &d["template"];
    let mut input = t["prefix"].as_str().unwrap().to_string();
    input.push_str(
        &t["repeat_char"]
            .as_str()
            .unwrap()
            .repeat(t["repeat_count"].as_u64().unwrap() as usize),
    );
    input.push_str(t["suffix"].as_str().unwrap());
    let e = parse("Dockerfile", input.as_bytes()).unwrap_err();
    assert!(
        e.to_string()
            .contains(d["expected_error_text"].as_str().unwrap()),
        "{e}"
    );
    assert_eq!(e.line, 3);
}

// ---- dockerfile-shell ----

fn shell_env(name: &str) -> Option<String> {
    match name {
        "PWD" => Some("/home".into()),
        "SHELL" => Some("bash".into()),
        "KOREAN" => Some("한국어".into()),
        "NULL" => Some(String::new()),
        _ => None,
    }
}

#[test]
fn shell_env_var_test() {
    let text = String::from_utf8(read("dockerfile-shell/envVarTest")).unwrap();
    let mut f = Failures(Vec::new());
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts.len(), 3, "line {}: {line:?}", i + 1);
        let (platform, input, expected) = (parts[0].trim(), parts[1].trim(), parts[2].trim());
        if platform == "W" {
            continue;
        }
        n += 1;
        let got = expand::process_word(input, &shell_env);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(g), e) => g == e,
            _ => false,
        };
        if !ok {
            f.0.push(format!(
                "line {}: {input:?} expected {expected:?}, got {got:?}",
                i + 1
            ));
        }
    }
    assert!(n > 200, "only {n} cases");
    f.check("envVarTest");
}

#[test]
fn shell_words_test() {
    let text = String::from_utf8(read("dockerfile-shell/wordsTest")).unwrap();
    let mut env: Vec<(String, String)> = Vec::new();
    let mut f = Failures(Vec::new());
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let (k, v) = rest.trim_start().split_once('=').unwrap();
            env.push((k.into(), v.into()));
            continue;
        }
        let Some((input, expected)) = line.split_once('|') else {
            continue;
        };
        let input = input.trim();
        let want: Vec<&str> = expected.trim_start().split(',').collect();
        let lookup = |n: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        let got = expand::process_words(input, &lookup);
        let ok = match &got {
            Err(_) => want == ["error"],
            Ok(g) => *g == want,
        };
        if !ok {
            f.0.push(format!(
                "line {}: {input:?} expected {want:?}, got {got:?}",
                i + 1
            ));
        }
    }
    f.check("wordsTest");
}

// ---- dockerignore ----

#[test]
fn dockerignore_readall() {
    use dockerfile::ignore::read_patterns;
    let input = String::from_utf8(read("dockerignore/readall/input.dockerignore")).unwrap();
    let want = json("dockerignore/readall/expected.json");
    let want: Vec<String> = serde_json::from_value(want["expected"].clone()).unwrap();
    assert_eq!(read_patterns(&input), want);
    let txt = String::from_utf8(read("dockerignore/readall/expected.txt")).unwrap();
    assert_eq!(read_patterns(&input), txt.lines().collect::<Vec<_>>());
    assert!(read_patterns("").is_empty());
}

/// Builds a matcher and matches one path. Docker finds some bad patterns only when it
/// matches; keel rejects all of them when building the matcher, so both count as errors.
fn ignore_match(patterns: &[String], path: &str) -> Result<bool, String> {
    let m = dockerfile::ignore::Matcher::new(patterns).map_err(|e| e.to_string())?;
    Ok(m.matches(path))
}

#[test]
fn dockerignore_patterns_tsv() {
    let text = String::from_utf8(read("dockerignore/patterns.tsv")).unwrap();
    let mut f = Failures(Vec::new());
    let mut n = 0;
    for (i, line) in text.lines().enumerate().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 7, "line {}: {line:?}", i + 1);
        let (pattern, path, want, want_err) =
            (cols[0], cols[1], cols[2] == "true", !cols[4].is_empty());
        n += 1;
        let got = ignore_match(&[pattern.to_string()], path);
        let ok = match &got {
            Err(_) => want_err,
            Ok(m) => !want_err && *m == want,
        };
        if !ok {
            f.0.push(format!(
                "line {}: pattern {pattern:?} path {path:?}: expected {} got {got:?} ({})",
                i + 1,
                if want_err {
                    "error".to_string()
                } else {
                    want.to_string()
                },
                cols[5]
            ));
        }
    }
    assert_eq!(n, 122);
    f.check("patterns.tsv");
}

#[test]
fn dockerignore_multi_patterns_tsv() {
    let text = String::from_utf8(read("dockerignore/multi-patterns.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let mut f = Failures(Vec::new());
    for line in lines {
        let cols: Vec<&str> = line.split('\t').collect();
        let patterns: Vec<String> = serde_json::from_str(cols[col("patterns_json")]).unwrap();
        let path = cols[col("path")];
        let want = cols[col("expected_match")] == "true";
        let want_err = !cols[col("expected_error")].is_empty();
        let got = ignore_match(&patterns, path);
        let ok = match &got {
            Err(_) => want_err,
            Ok(m) => !want_err && *m == want,
        };
        if !ok {
            f.0.push(format!(
                "{patterns:?} path {path:?}: expected {want} (error: {want_err}), got {got:?}"
            ));
        }
    }
    f.check("multi-patterns.tsv");
}

#[test]
fn dockerignore_pattern_list() {
    use dockerfile::ignore::Matcher;
    let d = json("dockerignore/pattern-list.json");
    for c in d["cases"].as_array().unwrap() {
        let patterns: Vec<String> = serde_json::from_value(c["patterns"].clone()).unwrap();
        let m = Matcher::new(&patterns);
        // A pattern docker only rejects on its first match (`then` expects an error) is
        // rejected up front by keel: matching never fails, so it cannot fail open.
        let fails_later = c["then"]
            .as_array()
            .is_some_and(|calls| calls.iter().any(|c| c.get("expect_error").is_some()));
        assert_eq!(
            m.is_err(),
            c["expect_error"].as_bool().unwrap() || fails_later,
            "{patterns:?}: {m:?}"
        );
        let Ok(m) = m else { continue };
        if let Some(n) = c["expect_pattern_count"].as_u64() {
            assert_eq!(m.len() as u64, n, "{patterns:?}");
        }
        if let Some(x) = c["expect_has_exclusions"].as_bool() {
            assert_eq!(m.has_exclusions(), x, "{patterns:?}");
        }
    }
}

#[test]
fn dockerignore_file_errors_name_the_line() {
    use dockerfile::ignore::{IgnoreError, Matcher};
    // (file bytes, line of the error, what the message names)
    let cases: &[(&[u8], usize, &str)] = &[
        (b"a\n[Local-Only]/\n", 2, "\"[Local-Only]\""),
        (b"# c\n\n  \n[z-a]\n", 4, "\"[z-a]\""),
        (b"ok\r\n!\r\n", 2, "\"!\""),
        (b"x\n\n\\\n", 3, "trailing backslash"),
        (b"\xef\xbb\xbfok\n[^\n", 2, "\"[^\""),
        (b"ok\nalso-ok\nbad\xff", 3, "offset 14 (column 4)"),
        (b"\xc3", 1, "offset 0 (column 1)"),
    ];
    for (bytes, line, names) in cases {
        let e = Matcher::from_file(bytes).unwrap_err();
        assert_eq!(e.line, *line, "{bytes:?}: {e}");
        assert!(e.to_string().contains(names), "{bytes:?}: {e}");
    }
    let e = Matcher::from_file(b"caf\xe9").unwrap_err();
    assert_eq!(
        e.error,
        IgnoreError::NotUtf8 {
            offset: 3,
            column: 4
        }
    );
    // A file that reads fine gives the same matcher as its pattern list.
    let text = "\u{feff}# top\n*.log\n!keep.log\n/build/\n";
    let m = Matcher::from_file(text.as_bytes()).unwrap();
    assert_eq!(m.len(), 3);
    assert!(m.matches("x.log") && !m.matches("keep.log") && m.matches("build/a"));
}

// ---- typed instructions over the conformance corpus ----

#[test]
fn instructions_from_positive_cases() {
    // Real-world Dockerfiles must convert to typed instructions; the few that BuildKit
    // itself would also reject at this layer are listed with the reason.
    let rejected: &[(&str, &str)] = &[
        ("flags", "unknown flag user on COPY"),
        ("health", "HEALTHCHECK requires at least one argument"),
    ];
    let mut f = Failures(Vec::new());
    for (name, dir) in cases("dockerfile-parser/positive") {
        let ast = parse(
            "Dockerfile",
            &std::fs::read(dir.join("Dockerfile")).unwrap(),
        )
        .unwrap();
        let got = dockerfile::instructions(&ast);
        let expect_err = rejected.iter().find(|(n, _)| *n == name);
        match (&got, expect_err) {
            (Ok(v), None) => assert_eq!(v.len(), ast.children.len(), "{name}"),
            (Err(e), Some((_, why))) => assert!(e.to_string().contains(why), "{name}: {e}"),
            (Ok(_), Some(_)) => {
                f.0.push(format!("{name}: converted but should be rejected"))
            }
            (Err(e), None) => f.0.push(format!("{name}: {e}")),
        }
    }
    f.check("instructions");
}

#[test]
fn truncated_inputs_never_panic() {
    // Every prefix of every conformance Dockerfile (cut at any byte, even inside a UTF-8
    // sequence, a quote or a heredoc) must give a result or an error, never a panic.
    let lexer = expand::Lexer::new('\\');
    let env = |_: &str| Some("v a l".to_string());
    let mut inputs: Vec<Vec<u8>> = cases("dockerfile-parser/positive")
        .into_iter()
        .chain(cases("dockerfile-parser/negative"))
        .map(|(_, d)| std::fs::read(d.join("Dockerfile")).unwrap())
        .collect();
    inputs.push(read("dockerfile-parser/heredoc/extract/Dockerfile"));
    let mut parsed = 0;
    for input in inputs {
        for cut in 0..=input.len().min(600) {
            let Ok(ast) = parse("Dockerfile", &input[..cut]) else {
                continue;
            };
            parsed += 1;
            let _ = ast.dump();
            for node in &ast.children {
                for a in &node.args {
                    let _ = expand::process_words(a, &env);
                }
            }
            if let Ok(list) = dockerfile::instructions(&ast) {
                for i in list {
                    let _ = i.value.expand(&lexer, &env);
                }
            }
        }
    }
    assert!(parsed > 500, "only {parsed} prefixes parsed");
}

#[test]
fn odd_ignore_patterns_never_panic() {
    // Every 3-character pattern over glob metacharacters builds or fails cleanly, and
    // matching gives a result or an error, never a panic.
    let alphabet = ['*', '?', '[', ']', '\\', '-', '^', '!', '/', 'a'];
    let paths = ["a", "a/b", "-", "]"];
    let mut built = 0;
    for x in alphabet {
        for y in alphabet {
            for z in alphabet {
                let p = format!("{x}{y}{z}");
                if let Ok(m) = dockerfile::ignore::Matcher::new(&[p.clone(), format!("!{p}/x")]) {
                    built += 1;
                    for path in paths {
                        if m.can_skip_dir(path) {
                            assert!(m.matches(path), "{p:?} skips {path:?} it does not ignore");
                        }
                    }
                }
            }
        }
    }
    assert!(built > 100, "only {built} matchers built");
}

#[test]
fn keel_debug_dump_ast_prints_buildkits_dump() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/conformance/dockerfile-parser/positive/env");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["debug", "dump-ast"])
        .arg(dir.join("Dockerfile"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(dir.join("result")).unwrap()
    );
}

// ---- the build plan of every positive case (`keel build --dry-run`) ----

/// What `keel build --dry-run` prints for `bytes` (on amd64, so the golden files do not
/// depend on the host), or the error it reports.
fn dry_run(bytes: &[u8]) -> String {
    let opts = keel::plan::DryRun {
        arch: "amd64".into(),
        ..Default::default()
    };
    let planned = keel::build::front::plan("Dockerfile", bytes)
        .map_err(|e| e.to_string())
        .and_then(|p| keel::plan::dry_run(&p, &opts).map_err(|e| e.to_string()));
    match planned {
        Ok(text) => text,
        Err(e) => format!("error: {e}\n"),
    }
}

#[test]
fn plans_of_positive_cases_match_golden_files() {
    // testdata/plan/<case>.plan; `KEEL_BLESS=1 cargo test --test it plans_of` rewrites them.
    let bless = std::env::var_os("KEEL_BLESS").is_some();
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/plan");
    let mut f = Failures(Vec::new());
    for (name, dir) in cases("dockerfile-parser/positive") {
        let got = dry_run(&std::fs::read(dir.join("Dockerfile")).unwrap());
        let golden = golden_dir.join(format!("{name}.plan"));
        if bless {
            std::fs::create_dir_all(&golden_dir).unwrap();
            std::fs::write(&golden, &got).unwrap();
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(want) if want == got => {}
            Ok(want) => {
                f.0.push(format!("{name}:\n--- expected\n{want}--- actual\n{got}"))
            }
            Err(e) => f.0.push(format!(
                "{name}: {}: {e}; bless with KEEL_BLESS=1",
                golden.display()
            )),
        }
    }
    f.check("plan");
}
