//! Dockerfile bytes → `Ast`: logical lines, parser directives, comments, continuation
//! lines, exec (JSON) versus shell form, heredocs, ONBUILD nesting, and warnings.
//!
//! This mirrors BuildKit's `frontend/dockerfile/parser` so that `Ast::dump()` matches its
//! `Node.Dump()` byte for byte (the conformance `result` files). The AST keeps quotes and
//! escapes raw; unquoting and variable expansion happen later (`expand.rs`), and whether an
//! instruction or flag exists is checked one layer up (`instruction.rs`). Pure: no I/O.
use super::expand::Lexer;
use super::{ErrorKind, ParseError};

/// The longest line BuildKit's scanner accepts.
pub const MAX_LINE: usize = 65535;

/// A parsed Dockerfile: the instructions in order, plus what the parser noticed.
#[derive(Debug, Clone, PartialEq)]
pub struct Ast {
    /// The file name used in errors and warnings (e.g. `Dockerfile`).
    pub file: String,
    pub children: Vec<Node>,
    /// 1-based, inclusive span of all instructions.
    pub start_line: usize,
    pub end_line: usize,
    pub warnings: Vec<Warning>,
    /// The escape character in force (`\` or `` ` ``).
    pub escape: char,
    /// Parser directives found at the top of the file (`escape`, `syntax`, `check`).
    pub directives: Vec<Directive>,
    /// The physical lines of the file (for error snippets), without line endings.
    pub lines: Vec<String>,
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Node {
    /// The instruction keyword in lower case (`from`, `run`, …), unknown ones included.
    pub keyword: String,
    /// The logical line as written (continuations joined, comments removed).
    pub original: String,
    /// `--flags` before the arguments, as written but unquoted (`--mount=type=cache`).
    pub flags: Vec<String>,
    /// The argument nodes; for ENV/LABEL triples of key, value, separator (`=` or "").
    pub args: Vec<String>,
    /// The wrapped instruction of ONBUILD.
    pub sub: Option<Box<Node>>,
    /// True when the arguments came from a JSON array (exec form).
    pub json: bool,
    pub heredocs: Vec<Heredoc>,
    /// Comment lines immediately before the instruction.
    pub comments: Vec<String>,
    /// 1-based, inclusive line span (heredoc bodies included).
    pub start_line: usize,
    pub end_line: usize,
}

/// A heredoc attached to RUN/COPY/ADD (or ONBUILD of those).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Heredoc {
    pub name: String,
    /// The body as written, each line ending in `\n`; `<<-` tab stripping is not applied
    /// here (see `chomp_heredoc_content`).
    pub content: String,
    /// False when any part of the marker word was quoted (no variable expansion).
    pub expand: bool,
    /// True for `<<-`.
    pub chomp: bool,
    /// `3` for `3<<EOF`, otherwise 0.
    pub file_descriptor: u32,
}

/// A problem that does not stop the parse (BuildKit `parser.Warning`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub short: String,
    pub detail: String,
    pub url: String,
    pub line: usize,
}

/// A parser directive from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lower-case name: `escape`, `syntax` or `check`.
    pub name: String,
    pub value: String,
    /// 1-based line.
    pub line: usize,
}

const KNOWN_DIRECTIVES: &[&str] = &["escape", "syntax", "check"];

/// Reads parser directives line by line until the first line that is not one.
struct DirectiveParser {
    prefix: &'static str,
    line: usize,
    done: bool,
    parsed: Vec<Directive>,
}

impl DirectiveParser {
    fn new(prefix: &'static str, line: usize) -> DirectiveParser {
        DirectiveParser {
            prefix,
            line,
            done: false,
            parsed: Vec::new(),
        }
    }

    /// Returns the directive on this line, if the directive block is still open.
    fn parse_line(&mut self, line: &str) -> Result<Option<Directive>, ErrorKind> {
        self.line += 1;
        if self.done {
            return Ok(None);
        }
        let Some((name, value)) = split_directive(self.prefix, line) else {
            self.done = true;
            return Ok(None);
        };
        let name = name.to_ascii_lowercase();
        if !KNOWN_DIRECTIVES.contains(&name.as_str()) {
            self.done = true;
            return Ok(None);
        }
        if self.parsed.iter().any(|d| d.name == name) {
            return Err(ErrorKind::DuplicateDirective { name });
        }
        let d = Directive {
            name,
            value: value.to_string(),
            line: self.line,
        };
        self.parsed.push(d.clone());
        Ok(Some(d))
    }
}

/// `#[ \t]*name[ \t]*=[ \t]*value[ \t]*` → (name, value).
fn split_directive<'a>(prefix: &str, line: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = line.strip_prefix(prefix)?.trim_start_matches([' ', '\t']);
    let end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    let name = &rest[..end];
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let rest = rest[end..]
        .trim_start_matches([' ', '\t'])
        .strip_prefix('=')?;
    let value = rest.trim_matches([' ', '\t']);
    (!value.is_empty()).then_some((name, value))
}

/// The value of directive `key` (`syntax`, `check`, …) if the file declares it, as
/// BuildKit's `ParseDirective`: `# key=` lines at the top (after an optional `#!` line),
/// `//key=` lines (only for `syntax`), or a whole-file JSON object with that key.
pub fn detect_directive(key: &str, bytes: &[u8]) -> Option<DirectiveValue> {
    let text = String::from_utf8_lossy(bytes);
    let mut text: &str = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut line = 0;
    if text.starts_with("#!") {
        text = text.split_once('\n').map(|(_, r)| r).unwrap_or("");
        line = 1;
    }
    let mut prefixes = vec!["#"];
    if key == "syntax" {
        prefixes.push("//");
    }
    for prefix in prefixes {
        let mut p = DirectiveParser::new(prefix, line);
        for l in split_lines(text.as_bytes()) {
            match p.parse_line(&String::from_utf8_lossy(l)) {
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if let Some(d) = p.parsed.into_iter().find(|d| d.name == key) {
            let reference = d.value.split(' ').next().unwrap_or("").to_string();
            return Some(DirectiveValue {
                value: reference,
                cmdline: d.value,
                line: d.line,
            });
        }
    }
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) {
        if let Some(serde_json::Value::String(v)) = map.get(key) {
            return Some(DirectiveValue {
                value: v.clone(),
                cmdline: v.clone(),
                line,
            });
        }
    }
    None
}

/// A directive found by `detect_directive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectiveValue {
    /// The value up to the first space (the frontend reference for `syntax`).
    pub value: String,
    /// The whole value.
    pub cmdline: String,
    /// 1-based line (0 for the JSON form without a shebang).
    pub line: usize,
}

/// Splits like Go's `bufio.ScanLines`: at `\n`, dropping one trailing `\r`; a final line
/// without newline counts, an empty final segment does not.
fn split_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        out.push(line.strip_suffix(b"\r").unwrap_or(line));
        rest = next;
    }
    out
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Parser state that changes while reading: the escape character and the directives.
struct State {
    escape: char,
    directives: DirectiveParser,
}

impl State {
    /// BuildKit `processLine`: strip, drop comments, and look for a directive.
    fn process_line(&mut self, line: &str, strip_left: bool) -> Result<String, ErrorKind> {
        let token = if strip_left { line.trim_start() } else { line };
        if let Some(d) = self.directives.parse_line(token)? {
            if d.name == "escape" {
                self.escape = match d.value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => return Err(ErrorKind::BadEscape { value: d.value }),
                };
            }
        }
        Ok(if is_comment(token) {
            String::new()
        } else {
            token.to_string()
        })
    }

    /// Removes a trailing continuation escape; returns (line, is_end_of_line). An escape
    /// character that is itself escaped (`\\` at the end) does not continue the line.
    fn trim_continuation(&self, line: &str) -> (String, bool) {
        let body = line.trim_end_matches([' ', '\t']);
        let run = body.chars().rev().take_while(|&c| c == self.escape).count();
        if run % 2 == 1 {
            (
                body[..body.len() - self.escape.len_utf8()].to_string(),
                false,
            )
        } else {
            (line.to_string(), true)
        }
    }
}

/// Parses a Dockerfile. `file` names it in errors.
pub fn parse(file: &str, bytes: &[u8]) -> Result<Ast, ParseError> {
    let raw_lines = split_lines(bytes);
    let lines: Vec<String> = raw_lines
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let err = |kind, line, column| located(file, &lines, kind, line, column);
    // Go's scanner refuses longer lines anywhere in the file.
    if let Some(i) = raw_lines.iter().position(|l| l.len() > MAX_LINE) {
        return Err(err(ErrorKind::LineTooLong, i + 1, MAX_LINE + 1));
    }
    let mut st = State {
        escape: '\\',
        directives: DirectiveParser::new("#", 0),
    };
    let mut children = Vec::new();
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let mut first: &str = &lines[i];
        if i == 0 {
            first = first.strip_prefix('\u{feff}').unwrap_or(first);
        }
        i += 1;
        let start_line = i;
        if is_comment(first) {
            add_comment(&mut comments, first);
        }
        let processed = st
            .process_line(first, true)
            .map_err(|k| err(k, start_line, 1))?;
        let (line, eol) = st.trim_continuation(&processed);
        if eol && line.is_empty() {
            continue;
        }
        let mut buf = line.clone();
        let empty_continuation = join_continuations(&mut st, &lines, &mut i, &mut buf, eol)
            .map_err(|(k, at)| err(k, at, 1))?;
        if empty_continuation {
            warnings.push(empty_continuation_warning(&buf, i));
        }
        let column = first.len() - first.trim_start().len() + 1;
        let mut node = node_from_line(&buf, st.escape).map_err(|k| err(k, start_line, column))?;
        node.comments = std::mem::take(&mut comments);
        if node.can_contain_heredoc() && line.contains("<<") {
            node.heredocs = heredocs_from_line(&line)
                .and_then(|docs| read_heredocs(&lines, &mut i, docs))
                .map_err(|k| err(k, start_line, column))?;
        }
        node.start_line = start_line;
        node.end_line = i;
        children.push(node);
    }
    if children.is_empty() {
        return Err(err(ErrorKind::NoInstructions, lines.len().max(1), 1));
    }
    Ok(ast_of(file, children, warnings, st, lines))
}

/// The tree of a file with at least one instruction.
fn ast_of(
    file: &str,
    children: Vec<Node>,
    warnings: Vec<Warning>,
    st: State,
    lines: Vec<String>,
) -> Ast {
    Ast {
        file: file.to_string(),
        start_line: children[0].start_line,
        end_line: children.last().map(|c| c.end_line).unwrap_or(0),
        children,
        warnings,
        escape: st.escape,
        directives: st.directives.parsed,
        lines,
    }
}

/// An error at `line`:`column` of `file`, quoting the line.
fn located(
    file: &str,
    lines: &[String],
    kind: ErrorKind,
    line: usize,
    column: usize,
) -> ParseError {
    let text = line
        .checked_sub(1)
        .and_then(|i| lines.get(i))
        .cloned()
        .unwrap_or_default();
    ParseError::new(file, line, column, text, kind)
}

/// A `#` comment line's text joins the comments of the next instruction; an empty
/// comment clears them.
fn add_comment(comments: &mut Vec<String>, line: &str) {
    let c = line.trim_start()[1..].trim();
    if c.is_empty() {
        comments.clear();
    } else {
        comments.push(c.to_string());
    }
}

/// Appends the continuation lines from `lines[*i]` on to `buf` until a line ends without
/// the escape (`eol`: the first line already did); comment lines in between are skipped.
/// True when an empty continuation line was skipped; an error names its line.
fn join_continuations(
    st: &mut State,
    lines: &[String],
    i: &mut usize,
    buf: &mut String,
    mut eol: bool,
) -> Result<bool, (ErrorKind, usize)> {
    let mut empty_continuation = false;
    while !eol && *i < lines.len() {
        let raw = &lines[*i];
        *i += 1;
        let processed = st.process_line(raw, false).map_err(|k| (k, *i))?;
        if is_comment(raw) {
            continue;
        }
        if processed.trim_start().is_empty() {
            empty_continuation = true;
            continue;
        }
        let (l, e) = st.trim_continuation(&processed);
        eol = e;
        buf.push_str(&l);
    }
    Ok(empty_continuation)
}

/// BuildKit's warning for an instruction continued over an empty line.
fn empty_continuation_warning(buf: &str, line: usize) -> Warning {
    Warning {
        short: format!("Empty continuation line found in: {buf}"),
        detail: "Empty continuation lines will become errors in a future release".into(),
        url: "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/".into(),
        line,
    }
}

/// The bodies of `docs`, read from `lines[*i]` on: each runs to a line that is its name
/// (after leading tabs, for `<<-`).
fn read_heredocs(
    lines: &[String],
    i: &mut usize,
    docs: Vec<Heredoc>,
) -> Result<Vec<Heredoc>, ErrorKind> {
    let mut out = Vec::new();
    for mut doc in docs {
        let mut terminated = false;
        while *i < lines.len() {
            let body = &lines[*i];
            *i += 1;
            let candidate = match doc.chomp {
                true => body.trim_start_matches('\t'),
                false => body.as_str(),
            };
            if candidate == doc.name {
                terminated = true;
                break;
            }
            doc.content.push_str(body);
            doc.content.push('\n');
        }
        if !terminated {
            return Err(ErrorKind::UnterminatedHeredoc { name: doc.name });
        }
        out.push(doc);
    }
    Ok(out)
}

/// BuildKit `splitCommand` + the per-instruction argument parser.
fn node_from_line(line: &str, escape: char) -> Result<Node, ErrorKind> {
    let trimmed = line.trim();
    let (cmd, rest) = match trimmed.find(is_split_space) {
        Some(p) => (
            &trimmed[..p],
            trimmed[p..].trim_start_matches(is_split_space),
        ),
        None => (trimmed, ""),
    };
    let (args_text, flags) = extract_flags(rest);
    let args_text = args_text.trim();
    let keyword = cmd.to_lowercase();
    let mut node = Node {
        keyword: keyword.clone(),
        original: line.to_string(),
        flags,
        ..Node::default()
    };
    let (args, json) = match keyword.as_str() {
        "add" | "copy" | "volume" => maybe_json_to_list(args_text)?,
        "cmd" | "entrypoint" | "run" | "shell" => maybe_json(args_text)?,
        "arg" => (parse_words(args_text, escape), false),
        "env" | "label" => (name_vals(args_text, &keyword, escape)?, false),
        "expose" | "from" => (whitespace_words(args_text), false),
        "healthcheck" => health(args_text)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => (string(args_text), false),
        "onbuild" => {
            if !args_text.is_empty() {
                node.sub = Some(Box::new(node_from_line(args_text, escape)?));
            }
            (Vec::new(), false)
        }
        // Unknown instructions keep an empty argument, as BuildKit's `parseIgnore` does;
        // `instruction.rs` reports them with a suggestion.
        _ => (vec![String::new()], false),
    };
    node.args = args;
    node.json = json;
    Ok(node)
}

/// Go's `reWhitespace`: `[\t\v\f\r ]`.
fn is_split_space(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

fn string(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        Vec::new()
    } else {
        vec![rest.to_string()]
    }
}

fn whitespace_words(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(is_split_space)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The outcome of reading the arguments as a JSON array.
enum Json {
    Array(Vec<String>),
    /// Well-formed JSON array with a non-string element: an error, not a fallback.
    NotStrings,
    Invalid,
}

/// Exec-form argument parsing (BuildKit `parseJSON`).
pub fn parse_json_array(rest: &str) -> Result<Option<Vec<String>>, ErrorKind> {
    match json_array(rest) {
        Json::Array(v) => Ok(Some(v)),
        Json::NotStrings => Err(ErrorKind::NotStringArray),
        Json::Invalid => Ok(None),
    }
}

fn json_array(rest: &str) -> Json {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Json::Invalid;
    }
    match serde_json::from_str::<serde_json::Value>(rest) {
        Ok(serde_json::Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return Json::NotStrings,
                }
            }
            Json::Array(out)
        }
        _ => Json::Invalid,
    }
}

fn maybe_json(rest: &str) -> Result<(Vec<String>, bool), ErrorKind> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    Ok(match parse_json_array(rest)? {
        Some(v) => (v, true),
        None => (vec![rest.to_string()], false),
    })
}

fn maybe_json_to_list(rest: &str) -> Result<(Vec<String>, bool), ErrorKind> {
    Ok(match parse_json_array(rest)? {
        Some(v) => (v, true),
        None => (whitespace_words(rest), false),
    })
}

fn health(rest: &str) -> Result<(Vec<String>, bool), ErrorKind> {
    let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if sep == 0 {
        return Ok((Vec::new(), false));
    }
    let (mut args, json) = maybe_json(rest[sep..].trim_start())?;
    args.insert(0, rest[..sep].to_string());
    Ok((args, json))
}

/// ENV and LABEL: `k v` (old form, separator "") or `k=v k2=v2` (separator "=").
fn name_vals(rest: &str, keyword: &str, escape: char) -> Result<Vec<String>, ErrorKind> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    let instruction = keyword.to_uppercase();
    if !first.contains('=') {
        let Some(p) = rest.find(is_split_space) else {
            return Err(ErrorKind::MissingValue {
                instruction,
                key: rest.to_string(),
            });
        };
        let value = rest[p..].trim_start_matches(is_split_space);
        return Ok(vec![
            rest[..p].to_string(),
            value.to_string(),
            String::new(),
        ]);
    }
    let mut out = Vec::new();
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(ErrorKind::MissingEquals { instruction, word });
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(out)
}

/// Splits at unquoted whitespace, keeping quotes and escapes in the words (BuildKit
/// `parseWords`).
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0;
    loop {
        let ch = chars.get(pos).copied();
        if phase == Phase::Spaces {
            match ch {
                None => break,
                Some(c) if c.is_whitespace() => {
                    pos += 1;
                    continue;
                }
                _ => phase = Phase::Word,
            }
        }
        let Some(mut ch) = ch else {
            if blank_ok || !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            break;
        };
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                word.push(ch);
                pos += 1;
                ch = chars[pos];
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            word.push(ch);
            pos += 1;
            ch = chars[pos];
        }
        word.push(ch);
        pos += 1;
    }
    words
}

/// Splits leading `--flag` words off the arguments (BuildKit `extractBuilderFlags`);
/// `--` ends the flags and is dropped. Returns (rest, flags).
fn extract_flags(line: &str) -> (&str, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let b = line.as_bytes();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word: Vec<u8> = Vec::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut pos = 0;
    let finish = |w: Vec<u8>| String::from_utf8_lossy(&w).into_owned();
    while pos <= b.len() {
        let ch = b.get(pos).copied().unwrap_or(0);
        if phase == Phase::Spaces {
            if pos == b.len() {
                break;
            }
            if ch.is_ascii_whitespace() || ch == 0x0b {
                pos += 1;
                continue;
            }
            if ch != b'-' || b.get(pos + 1) != Some(&b'-') {
                return (&line[pos..], words);
            }
            phase = Phase::Word;
        }
        if pos == b.len() {
            if word != b"--" && (blank_ok || !word.is_empty()) {
                words.push(finish(word));
            }
            break;
        }
        let mut ch = ch;
        if phase == Phase::Word {
            if ch.is_ascii_whitespace() || ch == 0x0b {
                phase = Phase::Spaces;
                if word == b"--" {
                    return (&line[pos..], words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(finish(std::mem::take(&mut word)));
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            if ch == b'\\' {
                if pos + 1 == b.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                ch = b[pos];
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        if ch == b'\\' {
            if pos + 1 == b.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            ch = b[pos];
        }
        word.push(ch);
        pos += 1;
    }
    ("", words)
}

/// Reads one heredoc marker word (`<<EOF`, `<<-'EOF'`, `3<<EOF`); `Ok(None)` when the word
/// is not a heredoc marker, an error for unbalanced quotes (BuildKit `ParseHeredoc`).
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, ErrorKind> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let Some(rest) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.contains('<') {
        return Ok(None);
    }
    let fd = if digits == 0 {
        0
    } else {
        word[..digits]
            .parse::<u32>()
            .map_err(|_| ErrorKind::BadHeredoc {
                word: word.to_string(),
            })?
    };
    let no_env = |_: &str| None;
    let mut lx = Lexer::new('\\');
    lx.skip_unset_env = true;
    let bad = |_| ErrorKind::BadHeredoc {
        word: word.to_string(),
    };
    let words = lx.process_words(rest, &no_env).map_err(bad)?;
    if words.len() != 1 {
        return Ok(None);
    }
    lx.raw_quotes = true;
    let raw = lx.process_words(rest, &no_env).map_err(bad)?;
    if raw.len() != 1 {
        return Err(ErrorKind::BadHeredoc {
            word: word.to_string(),
        });
    }
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    Ok(Some(Heredoc {
        name: words[0].clone(),
        content: String::new(),
        expand: quotes(&words[0]) == quotes(&raw[0]),
        chomp,
        file_descriptor: fd,
    }))
}

/// The heredoc markers on an instruction's first line, in order. A bare `<<` or `<<-`
/// takes the next word as its delimiter (`RUN <<- EOF`).
pub fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, ErrorKind> {
    let mut lx = Lexer::new('\\');
    lx.raw_quotes = true;
    lx.raw_escapes = true;
    lx.skip_unset_env = true;
    let words = lx.process_words(line, &|_: &str| None).unwrap_or_default();
    let mut docs = Vec::new();
    let mut k = 0;
    while k < words.len() {
        let mut word = words[k].clone();
        let bare = word.trim_start_matches(|c: char| c.is_ascii_digit());
        if (bare == "<<" || bare == "<<-") && k + 1 < words.len() {
            k += 1;
            word = format!("{word} {}", words[k]);
        }
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
        k += 1;
    }
    Ok(docs)
}

/// `<<-` semantics: strips leading tabs from every line of the body.
pub fn chomp_heredoc_content(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

impl Heredoc {
    /// The body as the command or file sees it: `<<-` strips leading tabs.
    pub fn body(&self) -> String {
        if self.chomp {
            chomp_heredoc_content(&self.content)
        } else {
            self.content.clone()
        }
    }
}

impl Node {
    /// True for RUN/COPY/ADD in shell form, directly or under ONBUILD.
    pub fn can_contain_heredoc(&self) -> bool {
        let node = match (&self.keyword[..], &self.sub) {
            ("onbuild", Some(sub)) => sub,
            _ => self,
        };
        matches!(node.keyword.as_str(), "run" | "copy" | "add") && !node.json
    }

    /// The node in BuildKit's s-expression form, without the outer parentheses.
    pub fn dump(&self) -> String {
        let mut s = self.keyword.clone();
        if !self.flags.is_empty() {
            let flags: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            s.push_str(&format!(" [{}]", flags.join(" ")));
        }
        if let Some(sub) = &self.sub {
            s.push_str(&format!(" ({})", sub.dump()));
        }
        for a in &self.args {
            s.push(' ');
            s.push_str(&go_quote(a));
        }
        s.trim().to_string()
    }

    /// ENV/LABEL arguments as (key, value, separator) triples.
    pub fn key_values(&self) -> Vec<(&str, &str, &str)> {
        self.args
            .chunks(3)
            .filter(|c| c.len() == 3)
            .map(|c| (&c[0][..], &c[1][..], &c[2][..]))
            .collect()
    }
}

impl Ast {
    /// BuildKit's `Node.Dump()` of the root: one `(instruction …)` per line, no trailing
    /// newline (the conformance `result` files are this plus `\n`).
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for c in &self.children {
            s.push('(');
            s.push_str(&c.dump());
            s.push_str(")\n");
        }
        s.trim().to_string()
    }

    /// The physical line `n` (1-based), for error snippets.
    pub fn line(&self, n: usize) -> &str {
        n.checked_sub(1)
            .and_then(|i| self.lines.get(i))
            .map(|s| s.as_str())
            .unwrap_or("")
    }
}

/// Quotes like Go's `strconv.Quote`: printable characters as-is, `\a \b \f \n \r \t \v`,
/// `\xHH` for other ASCII controls, `\uHHHH`/`\UHHHHHHHH` for other non-printables.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint` without Unicode tables: everything except
/// controls, spaces other than U+0020, common format characters, private use and
/// non-characters.
fn go_printable(c: char) -> bool {
    let u = c as u32;
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(u,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f
        | 0x202a..=0x202e | 0x2060..=0x2064 | 0x2066..=0x206f | 0xfeff | 0xfff9..=0xfffb
        | 0xe000..=0xf8ff | 0xf0000..=0x10ffff | 0xfdd0..=0xfdef)
        && (u & 0xfffe) != 0xfffe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_table() {
        let cases = [
            ("a", "\"a\""),
            ("\0", "\"\\x00\""),
            ("♥", "\"♥\""),
            ("\u{feff}", "\"\\ufeff\""),
            ("\u{a0}", "\"\\u00a0\""),
            ("\"\\", "\"\\\"\\\\\""),
            ("\u{1b}", "\"\\x1b\""),
        ];
        for (input, want) in cases {
            assert_eq!(go_quote(input), want, "input {input:?}");
        }
    }

    #[test]
    fn flags_table() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("--a=b c", "c", &["--a=b"]),
            ("--a -- c", " c", &["--a"]),
            ("-- c", " c", &[]),
            ("--a=\"x y\" c", "c", &["--a=x y"]),
            ("--a", "", &["--a"]),
            ("c --a", "c --a", &[]),
        ];
        for (input, rest, flags) in cases {
            let (r, f) = extract_flags(input);
            assert_eq!(
                (r, f.as_slice()),
                (
                    *rest,
                    &flags.iter().map(|s| s.to_string()).collect::<Vec<_>>()[..]
                ),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn continuation_escaped_escape() {
        let st = State {
            escape: '\\',
            directives: DirectiveParser::new("#", 0),
        };
        assert_eq!(st.trim_continuation("a \\"), ("a ".to_string(), false));
        assert_eq!(st.trim_continuation("a \\  "), ("a ".to_string(), false));
        assert_eq!(st.trim_continuation("a \\\\"), ("a \\\\".to_string(), true));
        assert_eq!(st.trim_continuation("\\"), ("".to_string(), false));
    }

    #[test]
    fn onbuild_nests_and_heredoc() {
        let ast = parse("Dockerfile", b"FROM x\nONBUILD RUN <<EOF\necho hi\nEOF\n").unwrap();
        assert_eq!(ast.dump(), "(from \"x\")\n(onbuild (run \"<<EOF\"))");
        assert_eq!(ast.children[1].heredocs[0].content, "echo hi\n");
        assert_eq!(
            (ast.children[1].start_line, ast.children[1].end_line),
            (2, 4)
        );
    }

    #[test]
    fn unterminated_heredoc_names_line() {
        let e = parse("Dockerfile", b"FROM x\nRUN <<EOF\necho\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains("EOF"), "{e}");
    }

    #[test]
    fn bad_escape_directive() {
        let e = parse("Dockerfile", b"# escape=x\nFROM x\n").unwrap_err();
        assert!(matches!(e.kind, ErrorKind::BadEscape { .. }), "{e}");
    }

    #[test]
    fn exec_flag_kept() {
        let ast = parse("Dockerfile", b"FROM x\nCMD [\"a b\"]\nCMD a b\n").unwrap();
        assert!(ast.children[1].json);
        assert!(!ast.children[2].json);
        assert_eq!(ast.children[1].dump(), ast.children[2].dump());
    }
}
