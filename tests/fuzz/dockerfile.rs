//! Dockerfile: `dockerfile::parse` → `Ast::dump` → `instructions` → `expand`.
//!
//! Invariants: parsing never panics and is deterministic; spans lie inside the file; a
//! file rebuilt from each instruction's logical line (`Node::original`) parses to the
//! same AST dump, where that holds (no heredocs, no `<<` at all: BuildKit only looks for
//! heredoc markers on an instruction's first line, and no line ending in the escape).
use keel::dockerfile::{self, expand::Lexer, Ast};

use crate::harness;

const TARGET: &str = "dockerfile";
const MAX_LEN: usize = 4096;
const DICT: &[&[u8]] = &[
    b"FROM ",
    b"RUN ",
    b"COPY ",
    b"ADD ",
    b"ENV ",
    b"ARG ",
    b"ONBUILD ",
    b"HEALTHCHECK ",
    b"CMD ",
    b"SHELL ",
    b"LABEL ",
    b"EXPOSE ",
    b"WORKDIR ",
    b"USER ",
    b"VOLUME ",
    b"ENTRYPOINT ",
    b"STOPSIGNAL ",
    b"MAINTAINER ",
    b" AS ",
    b"--mount=type=cache,target=",
    b"--from=",
    b"--chown=",
    b"--chmod=",
    b"--parents",
    b"--link",
    b"--network=none",
    b"<<EOF\n",
    b"<<-EOF\n",
    b"\nEOF\n",
    b"<<'EOF'",
    b"<<\"EOF\"",
    b"# escape=`\n",
    b"# syntax=x\n",
    b"# check=skip=all\n",
    b"\\\n",
    b"`\n",
    b"[\"",
    b"\"]",
    b"\", \"",
    b"${",
    b"}",
    b"${a:-b}",
    b"${a:+b}",
    b"${a#*}",
    b"${a%%b}",
    b"${a/b/c}",
    b"$a",
    b"=",
    b"'",
    b"\"",
    b"\t",
    b"\r\n",
    b"#",
    b"\xef\xbb\xbf",
    b"\xff",
];

fn seeds() -> Vec<Vec<u8>> {
    harness::seeds(
        TARGET,
        &[
            "testdata/conformance/dockerfile-parser/positive",
            "testdata/conformance/dockerfile-parser/negative",
            "testdata/conformance/dockerfile-parser/heredoc",
            "testdata/conformance/dockerfile-parser/line-numbers",
        ],
    )
}

fn property(input: &[u8]) {
    let Ok(ast) = dockerfile::parse("Dockerfile", input) else {
        return;
    };
    assert_eq!(
        dockerfile::parse("Dockerfile", input).ok().as_ref(),
        Some(&ast),
        "parsing is deterministic"
    );
    let dump = ast.dump();
    spans_inside_file(&ast);
    reparses_from_originals(&ast, &dump);
    let lexer = Lexer::new(ast.escape);
    let env = |name: &str| (!name.len().is_multiple_of(3)).then(|| format!("v {name} *"));
    for node in &ast.children {
        for a in &node.args {
            let _ = lexer.process_words(a, &env);
        }
    }
    if let Ok(list) = dockerfile::instructions(&ast) {
        for i in list {
            let _ = i.value.expand(&lexer, &env);
        }
    }
}

fn spans_inside_file(ast: &Ast) {
    let lines = ast.lines.len().max(1);
    let mut last = 0;
    for n in &ast.children {
        assert!(
            1 <= n.start_line && n.start_line <= n.end_line && n.end_line <= lines,
            "{}: lines {}..{} outside 1..{lines}",
            n.original,
            n.start_line,
            n.end_line
        );
        assert!(
            n.start_line > last,
            "instructions overlap at {}",
            n.start_line
        );
        last = n.end_line;
    }
}

fn reparses_from_originals(ast: &Ast, dump: &str) {
    let escape = ast.escape;
    let holds = ast.children.iter().all(|n| {
        n.heredocs.is_empty()
            && n.sub.as_ref().is_none_or(|s| s.heredocs.is_empty())
            && !n.original.trim_end().ends_with(escape)
            && !n.original.contains(['\n', '\r'])
            && !n.original.contains("<<")
            && !n.keyword.is_empty()
    });
    if !holds {
        return;
    }
    let mut text = String::new();
    if escape != '\\' {
        text.push_str(&format!("# escape={escape}\n"));
    }
    // A BOM is only dropped at the very start of a file: keep one that was not.
    if ast
        .children
        .first()
        .is_some_and(|n| n.original.starts_with('\u{feff}'))
    {
        text.push('\n');
    }
    for n in &ast.children {
        text.push_str(&n.original);
        text.push('\n');
    }
    let again = dockerfile::parse("Dockerfile", text.as_bytes())
        .unwrap_or_else(|e| panic!("rebuilt file {text:?} does not parse: {e}"));
    assert_eq!(again.dump(), dump, "rebuilt file {text:?}");
}

#[test]
fn dockerfile_corpus() {
    harness::run_corpus(TARGET, &seeds(), &property);
}

#[test]
fn dockerfile_fuzz() {
    harness::fuzz(TARGET, &seeds(), DICT, MAX_LEN, &property);
}

// ---- the shell-word lexer on its own (variables, quotes, escapes) ----

const SHELL: &str = "shell";
const SHELL_DICT: &[&[u8]] = &[
    b"$",
    b"${",
    b"}",
    b":-",
    b":+",
    b"-",
    b"+",
    b"#",
    b"##",
    b"%",
    b"%%",
    b"/",
    b"//",
    b"?",
    b":?",
    b"'",
    b"\"",
    b"\\",
    b"`",
    b"*",
    b"[",
    b"]",
    b"$$",
    b" ",
    b"\t",
    b"\n",
    b"\xc3\xa9",
];

/// The conformance tables' inputs (the first column of each line), one seed each.
fn shell_seeds() -> Vec<Vec<u8>> {
    let mut seeds = harness::seeds(SHELL, &[]);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/conformance/dockerfile-shell");
    for table in ["envVarTest", "wordsTest"] {
        let text = std::fs::read_to_string(dir.join(table)).unwrap();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let mut cols = line.split('|');
            let input = match (cols.next(), cols.next()) {
                (Some(_platform), Some(input)) if table == "envVarTest" => input,
                (Some(input), _) => input,
                _ => continue,
            };
            seeds.push(input.trim().as_bytes().to_vec());
        }
    }
    seeds
}

fn shell_property(input: &[u8]) {
    let Ok(word) = std::str::from_utf8(input) else {
        return;
    };
    let env = |name: &str| match name.len() % 4 {
        0 => None,
        1 => Some(String::new()),
        2 => Some(format!("a b {name}")),
        _ => Some("*$x'\"\\".to_string()),
    };
    for escape in ['\\', '`'] {
        let lexer = Lexer::new(escape);
        let one = lexer.process_word(word, &env);
        assert_eq!(
            one.as_ref().ok(),
            lexer.process_word(word, &env).as_ref().ok(),
            "deterministic"
        );
        let words = lexer.process_words(word, &env);
        if let (Ok(_), Err(e)) = (&one, &words) {
            panic!("{word:?} expands as one word but not as words: {e}");
        }
    }
}

#[test]
fn shell_corpus() {
    harness::run_corpus(SHELL, &shell_seeds(), &shell_property);
}

#[test]
fn shell_fuzz() {
    harness::fuzz(SHELL, &shell_seeds(), SHELL_DICT, 1024, &shell_property);
}
