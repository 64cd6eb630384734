//! `.dockerignore`: reading the file into a pattern list, and matching build-context paths
//! against it with Docker's semantics (moby/patternmatcher): the last matching pattern
//! wins, `!pattern` re-includes, and a pattern that matches a parent directory matches
//! everything below it.
//!
//! Pure: takes the file's bytes and slash-separated paths relative to the context; the
//! context walker does the I/O and asks `Matcher::can_skip_dir` whether to descend.
//! Glob syntax is Go's `filepath.Match` (Unix): `*` and `?` never cross `/`, `**` crosses
//! directories, classes `[a-z]`/`[^…]`, `\` escapes.
//!
//! Fails closed: every pattern is checked and compiled when the matcher is built, so
//! matching cannot fail later. Docker only finds some bad patterns (e.g. the reversed
//! range in `[Local-Only]`) when it first matches a path, and then fails the build; a
//! matcher that skipped such a pattern instead would send the files it was meant to keep
//! out (secrets) into the image.
use regex::Regex;

/// Why a pattern list cannot be used. Each variant names the pattern or the byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    #[error("illegal exclusion pattern: \"!\"; write the path to re-include after the '!'")]
    BareExclusion,
    #[error("syntax error in pattern {pattern:?}: {why}; escape special characters with '\\'")]
    BadPattern { pattern: String, why: String },
    #[error(
        "the byte at offset {offset} (column {column}) is not valid UTF-8; save the file as UTF-8 \
         (docker reads it as UTF-8 text too)"
    )]
    NotUtf8 { offset: usize, column: usize },
}

/// A `.dockerignore` file that cannot be used: the error and its line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct FileError {
    pub line: usize,
    pub error: IgnoreError,
}

/// One pattern as read from the file, with the line it came from (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternLine {
    pub line: usize,
    pub pattern: String,
}

/// Reads a `.dockerignore` file into patterns (moby `ignorefile.ReadAll`): `#` comments at
/// column 0, blank lines skipped, whitespace trimmed, paths cleaned, a leading `/` removed,
/// and `! pattern` normalised to `!pattern`. A UTF-8 BOM on the first line is dropped.
pub fn read_patterns(text: &str) -> Vec<String> {
    read_lines(text).into_iter().map(|p| p.pattern).collect()
}

/// `read_patterns`, keeping each pattern's line number for error messages.
pub fn read_lines(text: &str) -> Vec<PatternLine> {
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line = if i == 0 {
            line.strip_prefix('\u{feff}').unwrap_or(line)
        } else {
            line
        };
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut p = String::new();
        if !pattern.is_empty() {
            p = clean(pattern);
            if p.len() > 1 && p.starts_with('/') {
                p.remove(0);
            }
        }
        let pattern = if invert { format!("!{p}") } else { p };
        out.push(PatternLine {
            line: line_no,
            pattern,
        });
    }
    out
}

/// The file's bytes as text, or where the first byte that is not UTF-8 lies.
pub fn decode(bytes: &[u8]) -> Result<&str, FileError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let offset = e.valid_up_to();
        let before = &bytes[..offset];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        FileError {
            line: before.iter().filter(|&&b| b == b'\n').count() + 1,
            error: IgnoreError::NotUtf8 {
                offset,
                column: offset - line_start + 1,
            },
        }
    })
}

/// Go's `path.Clean` for `/`-separated paths.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Go's `path.Dir`.
fn dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => clean(&path[..=i]),
        None => ".".into(),
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Exact,
    /// `dir/**`: everything starting with the text before `**`.
    Prefix,
    /// `**…` with no other glob: everything ending with the text after `**`.
    Suffix,
    /// A compiled regular expression (built when the matcher is, so matching cannot fail).
    Regex(Regex),
}

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    exclusion: bool,
    kind: Kind,
    /// Per path segment, for `can_skip_dir` (only filled for `!` patterns).
    segments: Vec<Segment>,
}

/// One `/`-separated piece of a pattern, for the skip-directory test.
#[derive(Debug, Clone)]
enum Segment {
    /// Contains `**`: may span any number of directories.
    Any,
    Literal(String),
    /// A glob; `None` when it does not compile (treated as "may match").
    Glob(Option<Regex>),
}

impl Segment {
    fn new(seg: &str) -> Segment {
        if seg.contains("**") {
            Segment::Any
        } else if !seg.contains(['*', '?', '[', '\\']) {
            Segment::Literal(seg.to_string())
        } else {
            let body = go_regex_to_rust(&compile_regex_string(seg).0);
            Segment::Glob(Regex::new(&format!("^{body}$")).ok())
        }
    }
}

impl Pattern {
    /// Checks and compiles one pattern (whitespace around it is trimmed); `None` when empty.
    fn new(p: &str) -> Result<Option<Pattern>, IgnoreError> {
        let p = p.trim();
        if p.is_empty() {
            return Ok(None);
        }
        let mut p = clean(p);
        let exclusion = p.starts_with('!');
        if exclusion {
            if p.len() == 1 {
                return Err(IgnoreError::BareExclusion);
            }
            p.remove(0);
        }
        let bad = |why: String| IgnoreError::BadPattern {
            pattern: p.clone(),
            why,
        };
        check_syntax(&p).map_err(|why| bad(why.into()))?;
        // Docker compiles the regex on first use and fails the build there; compiling it
        // here turns the same patterns into an error before any file is looked at.
        let kind = compile(&p).map_err(bad)?;
        let segments = if exclusion {
            p.split('/').map(Segment::new).collect()
        } else {
            Vec::new()
        };
        Ok(Some(Pattern {
            segments,
            text: p,
            exclusion,
            kind,
        }))
    }

    fn is_match(&self, path: &str) -> bool {
        let t = &self.text;
        match &self.kind {
            Kind::Exact => path == t,
            Kind::Prefix => path.starts_with(&t[..t.len() - 2]),
            Kind::Suffix => {
                let suffix = &t[2..];
                path.ends_with(suffix) || suffix.strip_prefix('/').is_some_and(|s| s == path)
            }
            Kind::Regex(re) => re.is_match(path),
        }
    }
}

/// An ordered list of patterns; the last one that matches a path decides.
#[derive(Debug, Clone)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

impl Matcher {
    /// Builds a matcher. Empty entries are dropped and whitespace trimmed; `!` alone and
    /// malformed patterns (including those Docker only rejects when matching) are errors.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Matcher, IgnoreError> {
        let mut out = Vec::new();
        for p in patterns {
            out.extend(Pattern::new(p.as_ref())?);
        }
        Ok(Matcher { patterns: out })
    }

    /// Builds the matcher of a whole `.dockerignore` file; an error names its line.
    pub fn from_file(bytes: &[u8]) -> Result<Matcher, FileError> {
        let text = decode(bytes)?;
        let mut out = Vec::new();
        for p in read_lines(text) {
            let pattern = Pattern::new(&p.pattern).map_err(|error| FileError {
                line: p.line,
                error,
            })?;
            out.extend(pattern);
        }
        Ok(Matcher { patterns: out })
    }

    /// Number of patterns kept.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// True when any pattern is a `!` exception.
    pub fn has_exclusions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// True when `path` (relative to the context, `/`-separated) is ignored: the last
    /// pattern matching it or one of its parent directories decides
    /// (patternmatcher `MatchesOrParentMatches`).
    pub fn matches(&self, path: &str) -> bool {
        let mut matched = false;
        let parent = dir(path);
        // Ends of the parent's prefixes: "a", "a/b", … as slices of `parent`.
        let ends: Vec<usize> = parent
            .match_indices('/')
            .map(|(i, _)| i)
            .chain([parent.len()])
            .collect();
        for p in &self.patterns {
            // An include pattern cannot change an already-ignored path, nor an exception
            // a path that is not ignored.
            if p.exclusion != matched {
                continue;
            }
            let m = p.is_match(path)
                || (parent != "." && ends.iter().any(|&end| p.is_match(&parent[..end])));
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// True when the directory `dir` is ignored and no `!` pattern could re-include
    /// anything below it, so a context walker need not descend into it.
    pub fn can_skip_dir(&self, dir: &str) -> bool {
        if !self.matches(dir) {
            return false;
        }
        let dir_parts: Vec<&str> = dir.split('/').collect();
        !self
            .patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| could_match_under(&p.segments, &dir_parts))
    }
}

/// Conservative: could a pattern with these segments match `dir` itself, a parent, or
/// anything below it?
fn could_match_under(segments: &[Segment], dir_parts: &[&str]) -> bool {
    for (seg, part) in segments.iter().zip(dir_parts) {
        match seg {
            Segment::Any => return true,
            Segment::Literal(l) if l != part => return false,
            Segment::Glob(Some(re)) if !re.is_match(part) => return false,
            _ => {}
        }
    }
    true
}

/// Validates `pattern` the way Go's `filepath.Match` does (Unix).
fn check_syntax(pattern: &str) -> Result<(), &'static str> {
    let c: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    // One class element: an optionally escaped character that must not end the pattern.
    let esc = |i: &mut usize| -> Result<(), &'static str> {
        match c.get(*i) {
            None | Some('-') | Some(']') => return Err("malformed character class"),
            Some('\\') => {
                *i += 1;
                if *i >= c.len() {
                    return Err("trailing escape in character class");
                }
            }
            _ => {}
        }
        *i += 1;
        if *i >= c.len() {
            return Err("unterminated character class");
        }
        Ok(())
    };
    while i < c.len() {
        match c[i] {
            '\\' => {
                i += 1;
                if i >= c.len() {
                    return Err("trailing backslash");
                }
                i += 1;
            }
            '[' => {
                i += 1;
                if c.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut n = 0;
                loop {
                    if c.get(i) == Some(&']') && n > 0 {
                        i += 1;
                        break;
                    }
                    esc(&mut i)?;
                    if c[i] == '-' {
                        i += 1;
                        esc(&mut i)?;
                    }
                    n += 1;
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Chooses the match strategy and builds the Go-syntax regex, as patternmatcher does.
/// The regex's error is why the pattern is malformed (e.g. a reversed range `[z-a]`).
fn compile(pattern: &str) -> Result<Kind, String> {
    let (re, kind) = compile_regex_string(pattern);
    Ok(match kind {
        0 => Kind::Exact,
        1 => Kind::Prefix,
        2 => Kind::Suffix,
        _ => Kind::Regex(
            Regex::new(&format!("^{}$", go_regex_to_rust(&re))).map_err(|e| {
                // Keep only the last line of regex's multi-line message.
                let text = e.to_string();
                let last = text.lines().last().unwrap_or("bad pattern").trim();
                last.strip_prefix("error: ").unwrap_or(last).to_string()
            })?,
        ),
    })
}

/// Returns (regex body in Go syntax, kind: 0 exact, 1 prefix, 2 suffix, 3 regex).
fn compile_regex_string(pattern: &str) -> (String, u8) {
    const EXACT: u8 = 0;
    const PREFIX: u8 = 1;
    const SUFFIX: u8 = 2;
    const REGEX: u8 = 3;
    let c: Vec<char> = pattern.chars().collect();
    let mut re = String::new();
    let mut kind = EXACT;
    let mut i = 0;
    let mut token = 0;
    while i < c.len() {
        let ch = c[i];
        i += 1;
        match ch {
            '*' if c.get(i) == Some(&'*') => {
                i += 1;
                if c.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= c.len() {
                    // `**` at the end accepts everything, like .gitignore.
                    if kind == EXACT {
                        kind = PREFIX;
                    } else {
                        kind = REGEX;
                    }
                    re.push_str(".*");
                } else {
                    re.push_str("(.*/)?");
                    kind = REGEX;
                }
                if token == 0 {
                    kind = SUFFIX;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                kind = REGEX;
            }
            '?' => {
                re.push_str("[^/]");
                kind = REGEX;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                re.push('\\');
                re.push(ch);
            }
            '\\' => {
                if let Some(&n) = c.get(i) {
                    i += 1;
                    re.push('\\');
                    re.push(n);
                    kind = REGEX;
                } else {
                    re.push('\\');
                }
            }
            '[' | ']' => {
                re.push(ch);
                kind = REGEX;
            }
            _ => re.push(ch),
        }
        token += 1;
    }
    (re, kind)
}

/// Rewrites a Go (RE2) regex so the `regex` crate reads it the same way: inside a
/// character class, `[`, `&` and `~` are literals in Go but nesting or set operators
/// in Rust, so they are escaped.
fn go_regex_to_rust(go: &str) -> String {
    let c: Vec<char> = go.chars().collect();
    let mut out = String::new();
    let mut in_class = false;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        match ch {
            '\\' if i + 1 < c.len() => {
                // Escapes mean the same in both syntaxes, except `\<` and `\>`: literal
                // characters in Go, word boundaries in Rust.
                if !matches!(c[i + 1], '<' | '>') {
                    out.push('\\');
                }
                out.push(c[i + 1]);
                i += 2;
                continue;
            }
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                i += 1;
                if c.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                if c.get(i) == Some(&']') {
                    out.push_str("\\]");
                    i += 1;
                }
                continue;
            }
            '[' if c.get(i + 1) == Some(&':') => {
                // POSIX class `[:alpha:]`: same in both.
                let end =
                    (i + 2..c.len().saturating_sub(1)).find(|&j| c[j] == ':' && c[j + 1] == ']');
                if let Some(end) = end {
                    out.extend(&c[i..end + 2]);
                    i = end + 2;
                    continue;
                }
                out.push_str("\\[");
            }
            '[' | '&' | '~' if in_class => {
                out.push('\\');
                out.push(ch);
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            _ => out.push(ch),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_table() {
        for (input, want) in [
            ("a/./b/../c", "a/c"),
            ("/", "/"),
            ("", "."),
            ("../a", "../a"),
            ("a/", "a"),
            ("/../x", "/x"),
        ] {
            assert_eq!(clean(input), want, "input {input:?}");
        }
    }

    #[test]
    fn reader_bom_and_clean() {
        assert_eq!(read_patterns("\u{feff}a/./b/../c\n"), vec!["a/c"]);
    }

    #[test]
    fn skip_dir_table() {
        let m = Matcher::new(&["vendor", "build", "!build/keep.txt", "*.log"]).unwrap();
        assert!(m.can_skip_dir("vendor"));
        assert!(
            !m.can_skip_dir("build"),
            "build/keep.txt can be re-included"
        );
        assert!(!m.can_skip_dir("src"), "src is not ignored");
        let m = Matcher::new(&["*", "!**/*.rs"]).unwrap();
        assert!(!m.can_skip_dir("anything"));
        let m = Matcher::new(&["*", "!src"]).unwrap();
        assert!(m.can_skip_dir("docs"));
        assert!(!m.can_skip_dir("src"));
    }

    #[test]
    fn rust_regex_translation() {
        assert_eq!(go_regex_to_rust("[a[b]"), "[a\\[b]");
        assert_eq!(go_regex_to_rust("[]a]"), "[\\]a]");
        assert_eq!(go_regex_to_rust("a\\.b"), "a\\.b");
        assert_eq!(go_regex_to_rust("[[:alpha:]]"), "[[:alpha:]]");
        assert_eq!(go_regex_to_rust("a\\<b\\>"), "a<b>");
    }

    #[test]
    fn escaped_angle_brackets_are_literal() {
        let m = Matcher::new(&["a\\<b"]).unwrap();
        assert!(m.matches("a<b"));
        assert!(!m.matches("a"));
    }
}
