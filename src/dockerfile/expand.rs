//! Docker's shell-word lexer: variable expansion, quote removal and word splitting, as
//! BuildKit's `frontend/dockerfile/shell` package does it for ENV, ARG, COPY, WORKDIR, ….
//!
//! Pure: the environment comes in through a lookup closure (BuildKit `EnvGetter`); this
//! module never reads the process environment. Supported: `$V`, `${V}`, `${V:-w}`,
//! `${V-w}`, `${V:+w}`, `${V+w}`, `${V:?msg}`, `${V?msg}`, `${V#p}`, `${V##p}`, `${V%p}`,
//! `${V%%p}`, `${V/p/r}`, `${V//p/r}`, single and double quotes, and the
//! escape character (`\` or `` ` ``). Positional and special parameters (`$1`, `$@`, `$#`…)
//! are never set in a Dockerfile, so they expand to nothing.
//! The conformance vectors are `testdata/conformance/dockerfile-shell/{envVarTest,wordsTest}`.

/// A variable lookup: `Some(value)` when set (possibly empty), `None` when unset.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Why a word could not be processed. Every variant names the word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("failed to process {word:?}: unexpected end of statement while looking for matching {what}; close the quote or escape it")]
    Unterminated { word: String, what: String },
    #[error(
        "failed to process {word:?}: syntax error: missing '}}'; close the ${{...}} expression"
    )]
    MissingBrace { word: String },
    #[error("failed to process {word:?}: syntax error: bad substitution; a ${{...}} needs a variable name")]
    BadSubstitution { word: String },
    #[error("failed to process {word:?}: unsupported modifier ({modifier}) in substitution; use one of :- - :+ + :? ?")]
    UnsupportedModifier { word: String, modifier: String },
    #[error("failed to process {word:?}: {name}: {message}")]
    Required {
        word: String,
        name: String,
        message: String,
    },
}

/// Lexer settings (BuildKit `shell.Lex`). `Lexer::new('\\')` is the default behaviour.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    /// The escape character: `\` or `` ` `` (from the `# escape=` directive).
    pub escape: char,
    /// Keep quote characters in the output (used to find heredoc markers).
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Leave references to unset variables as written instead of expanding to "".
    pub skip_unset_env: bool,
    /// Treat quotes as ordinary characters (for heredoc bodies, where only `$` matters).
    pub skip_process_quotes: bool,
}

impl Lexer {
    pub fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
            skip_process_quotes: false,
        }
    }

    /// Expands and unquotes `word` into one string (no word splitting).
    pub fn process_word(&self, word: &str, env: Env) -> Result<String, ExpandError> {
        self.run(word, env).map(|(s, _)| s)
    }

    /// Expands and unquotes `word`, splitting it into words at unquoted whitespace,
    /// including whitespace that came out of an unquoted variable.
    pub fn process_words(&self, word: &str, env: Env) -> Result<Vec<String>, ExpandError> {
        self.run(word, env).map(|(_, w)| w)
    }

    fn run(&self, word: &str, env: Env) -> Result<(String, Vec<String>), ExpandError> {
        let mut sw = ShellWord {
            chars: word.chars().collect(),
            pos: 0,
            env,
            lexer: *self,
            raw_escapes: self.raw_escapes,
        };
        sw.process_stop_on(None, self.raw_escapes)
            .map_err(|e| e.into_error(word))
    }
}

/// `process_word` with the default escape character `\`.
pub fn process_word(word: &str, env: Env) -> Result<String, ExpandError> {
    Lexer::new('\\').process_word(word, env)
}

/// `process_words` with the default escape character `\`.
pub fn process_words(word: &str, env: Env) -> Result<Vec<String>, ExpandError> {
    Lexer::new('\\').process_words(word, env)
}

/// An error before the word it happened in is attached.
enum Fail {
    Unterminated(String),
    MissingBrace,
    BadSubstitution,
    Modifier(String),
    Required(String, String),
}

impl Fail {
    fn into_error(self, word: &str) -> ExpandError {
        let word = word.to_string();
        match self {
            Fail::Unterminated(what) => ExpandError::Unterminated { word, what },
            Fail::MissingBrace => ExpandError::MissingBrace { word },
            Fail::BadSubstitution => ExpandError::BadSubstitution { word },
            Fail::Modifier(modifier) => ExpandError::UnsupportedModifier { word, modifier },
            Fail::Required(name, message) => ExpandError::Required {
                word,
                name,
                message,
            },
        }
    }
}

/// Accumulates split words: whitespace from variables splits, quoted text never does.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }
    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

struct ShellWord<'a> {
    chars: Vec<char>,
    pos: usize,
    env: Env<'a>,
    lexer: Lexer,
    raw_escapes: bool,
}

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Processes until `stop` (consumed) or the end of input.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), Fail> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn process_stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), Fail> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let tmp = self.process_dollar()?;
                    result.push_str(&tmp);
                    words.add_string(&tmp);
                }
                '\'' if !self.lexer.skip_process_quotes => {
                    let tmp = self.process_single_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '"' if !self.lexer.skip_process_quotes => {
                    let tmp = self.process_double_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                _ => {
                    self.next();
                    if ch == self.lexer.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // The escape character at the very end is dropped.
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(Fail::Unterminated(format!("'{stop}'")));
        }
        Ok((result, words.finish()))
    }

    /// Everything up to the next `'` is literal; nothing can be escaped.
    fn process_single_quote(&mut self) -> Result<String, Fail> {
        let mut result = String::new();
        let open = self.next().unwrap_or('\'');
        if self.lexer.raw_quotes {
            result.push(open);
        }
        loop {
            match self.next() {
                None => return Err(Fail::Unterminated("single-quote".into())),
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    /// Literal up to the next `"`, except `$` expansions and escapes of `"`, `$` and the
    /// escape character itself (any other escape stays as written).
    fn process_double_quote(&mut self) -> Result<String, Fail> {
        let mut result = String::new();
        let open = self.next().unwrap_or('"');
        if self.lexer.raw_quotes {
            result.push(open);
        }
        loop {
            match self.peek() {
                None => return Err(Fail::Unterminated("double-quote".into())),
                Some('"') => {
                    self.next();
                    if self.lexer.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => result.push_str(&self.process_dollar()?),
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.lexer.escape {
                        match self.peek() {
                            // An escape right before the end is dropped; the missing
                            // quote is reported on the next turn.
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lexer.escape => {
                                if self.raw_escapes {
                                    result.push(ch);
                                }
                                ch = self.next().unwrap_or_default();
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    fn process_dollar(&mut self) -> Result<String, Fail> {
        self.next(); // the '$'
        if self.peek() == Some('{') {
            self.next();
            return self.process_braced();
        }
        let name = self.process_name();
        if name.is_empty() {
            return Ok("$".into());
        }
        Ok(self.value_or_kept(&name, || format!("${name}")))
    }

    /// The variable's value; when it is unset, the reference as written (`kept`) if
    /// unset variables are to be left for a later expansion, else nothing.
    fn value_or_kept(&self, name: &str, kept: impl FnOnce() -> String) -> String {
        match self.lookup(name) {
            Some(v) => v,
            None if self.lexer.skip_unset_env => kept(),
            None => String::new(),
        }
    }

    /// `${NAME}` and `${NAME<modifier>WORD}`, from after the opening brace.
    fn process_braced(&mut self) -> Result<String, Fail> {
        match self.peek() {
            None => return Err(Fail::MissingBrace),
            Some('{' | '}' | ':') => return Err(Fail::BadSubstitution),
            _ => {}
        }
        let name = self.process_name();
        let mut ch = self.next().ok_or(Fail::MissingBrace)?;
        let mut modifier = ch.to_string();
        let mut null_is_unset = false;
        match ch {
            '}' => return Ok(self.value_or_kept(&name, || format!("${{{name}}}"))),
            ':' => {
                null_is_unset = true;
                ch = self.next().ok_or(Fail::MissingBrace)?;
                modifier.push(ch);
            }
            _ => {}
        }
        if ch == '/' && !null_is_unset {
            return self.process_replace(&name);
        }
        if !matches!(ch, '+' | '-' | '?' | '#' | '%') {
            return Err(Fail::Modifier(modifier));
        }
        // Patterns keep their escapes so that `\*` stays a literal star.
        let pattern_op = ch == '#' || ch == '%';
        if null_is_unset && pattern_op {
            return Err(Fail::Modifier(modifier));
        }
        let word = match self.process_stop_on(Some('}'), pattern_op) {
            Ok((word, _)) => word,
            Err(_) if self.peek().is_none() => return Err(Fail::MissingBrace),
            Err(e) => return Err(e),
        };
        let value = self.lookup(&name);
        if self.lexer.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{modifier}{word}}}"));
        }
        if pattern_op {
            let value = value.unwrap_or_default();
            let (greedy, pattern) = match word.strip_prefix(ch) {
                Some(p) => (true, p.to_string()),
                None => (false, word),
            };
            return trim_pattern(&value, &pattern, ch == '#', greedy);
        }
        apply_default(name, ch, null_is_unset, value, word)
    }

    /// `${V/pattern/replacement}` (first match) and `${V//pattern/replacement}` (all).
    fn process_replace(&mut self, name: &str) -> Result<String, Fail> {
        let all = self.peek() == Some('/');
        if all {
            self.next();
        }
        let (pattern, _) = self
            .process_stop_on(Some('/'), true)
            .map_err(|_| Fail::MissingBrace)?;
        let (replacement, _) = self
            .process_stop_on(Some('}'), true)
            .map_err(|_| Fail::MissingBrace)?;
        let value = self.lookup(name);
        if self.lexer.skip_unset_env && value.is_none() {
            let slash = if all { "//" } else { "/" };
            return Ok(format!("${{{name}{slash}{pattern}/{replacement}}}"));
        }
        let value = value.unwrap_or_default();
        let re = shell_pattern_regex(&pattern, true)
            .ok_or_else(|| Fail::Modifier(format!("/{pattern}")))?;
        let re = regex::Regex::new(&re).map_err(|_| Fail::Modifier(format!("/{pattern}")))?;
        let replacement = regex::NoExpand(&replacement);
        Ok(if all {
            re.replace_all(&value, replacement).into_owned()
        } else {
            re.replace(&value, replacement).into_owned()
        })
    }

    /// A variable name: letters, digits and `_`; or all-digit positional parameters; or a
    /// single special parameter character.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(|c| c.is_ascii_digit()) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.next();
        }
        name
    }
}

/// A shell glob (`*`, `?`, `[...]`, `\x`) as a regex body; `*` is greedy when asked.
fn shell_pattern_regex(pattern: &str, greedy: bool) -> Option<String> {
    let mut out = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str(if greedy { ".*" } else { ".*?" }),
            '?' => out.push('.'),
            '\\' => out.push_str(&regex::escape(&chars.next()?.to_string())),
            '[' => {
                out.push('[');
                if chars.peek() == Some(&'!') {
                    chars.next();
                    out.push('^');
                }
                loop {
                    let c = chars.next()?;
                    if c == ']' {
                        break;
                    }
                    if matches!(c, '[' | '&' | '~' | '\\') {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push(']');
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    Some(out)
}

/// `${NAME-WORD}`, `${NAME+WORD}` and `${NAME?WORD}`, and with a colon
/// (`null_is_unset`) their forms that treat an empty value as unset.
fn apply_default(
    name: String,
    op: char,
    null_is_unset: bool,
    value: Option<String>,
    word: String,
) -> Result<String, Fail> {
    let empty_or_unset = match &value {
        None => true,
        Some(v) => null_is_unset && v.is_empty(),
    };
    match op {
        '-' => Ok(if empty_or_unset {
            word
        } else {
            value.unwrap_or_default()
        }),
        '+' => Ok(if empty_or_unset { String::new() } else { word }),
        _ => match value {
            None => Err(Fail::Required(name, or(word, "is not allowed to be unset"))),
            Some(v) if null_is_unset && v.is_empty() => {
                Err(Fail::Required(name, or(word, "is not allowed to be empty")))
            }
            Some(v) => Ok(v),
        },
    }
}

/// `${V#p}`/`${V##p}` remove the shortest/longest matching prefix, `${V%p}`/`${V%%p}`
/// the shortest/longest matching suffix.
fn trim_pattern(value: &str, pattern: &str, prefix: bool, greedy: bool) -> Result<String, Fail> {
    let body =
        shell_pattern_regex(pattern, true).ok_or_else(|| Fail::Modifier(pattern.to_string()))?;
    let re = regex::Regex::new(&format!("^(?s:{body})$"))
        .map_err(|_| Fail::Modifier(pattern.to_string()))?;
    let mut cuts: Vec<usize> = value
        .char_indices()
        .map(|(i, _)| i)
        .chain([value.len()])
        .collect();
    // Shortest first for prefixes means increasing cut; for suffixes decreasing.
    if prefix == greedy {
        cuts.reverse();
    }
    for cut in cuts {
        let (part, rest) = if prefix {
            (&value[..cut], &value[cut..])
        } else {
            (&value[cut..], &value[..cut])
        };
        if re.is_match(part) {
            return Ok(rest.to_string());
        }
    }
    Ok(value.to_string())
}

fn or(word: String, default: &str) -> String {
    if word.is_empty() {
        default.to_string()
    } else {
        word
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("a b".into()),
            "E" => Some(String::new()),
            "F" => Some("a/b/c.tar.gz".into()),
            _ => None,
        }
    }

    #[test]
    fn table() {
        let cases: &[(&str, Result<&str, ()>)] = &[
            ("$A", Ok("a b")),
            ("${A:-x}", Ok("a b")),
            ("${E:-x}", Ok("x")),
            ("${E-x}", Ok("")),
            ("${U-x}", Ok("x")),
            ("${E:+x}", Ok("")),
            ("${E+x}", Ok("x")),
            ("${U:?}", Err(())),
            ("${E?}", Ok("")),
            ("${E:?boom}", Err(())),
            ("${A%%x}", Ok("a b")),
            ("${A:%x}", Err(())),
            ("${F#*/}", Ok("b/c.tar.gz")),
            ("${F##*/}", Ok("c.tar.gz")),
            ("${F%.*}", Ok("a/b/c.tar")),
            ("${F%%.*}", Ok("a/b/c")),
            ("${F/b/x}", Ok("a/x/c.tar.gz")),
            ("${F//[ab]/_}", Ok("_/_/c.t_r.gz")),
            ("${F#\\*}", Ok("a/b/c.tar.gz")),
            ("${A^x}", Err(())),
            ("'$A'", Ok("$A")),
            ("\"$A\"", Ok("a b")),
            ("\\$A", Ok("$A")),
        ];
        for (input, want) in cases {
            let got = process_word(input, &env).map_err(|_| ());
            assert_eq!(got.as_deref(), want.as_deref(), "input {input:?}");
        }
    }

    #[test]
    fn backtick_escape() {
        let lx = Lexer::new('`');
        assert_eq!(lx.process_word("a`$A\\b", &env).unwrap(), "a$A\\b");
    }

    #[test]
    fn required_message_names_variable() {
        let e = process_word("${U?set U}", &env).unwrap_err();
        assert!(e.to_string().contains("U: set U"), "{e}");
    }

    #[test]
    fn heredoc_body_mode() {
        let mut lx = Lexer::new('\\');
        lx.skip_process_quotes = true;
        lx.raw_escapes = true;
        assert_eq!(
            lx.process_word("echo '$A' \"x\"\n", &env).unwrap(),
            "echo 'a b' \"x\"\n"
        );
    }

    #[test]
    fn splitting() {
        assert_eq!(
            process_words("x$A \"q r\"", &env).unwrap(),
            vec!["xa", "b", "q r"]
        );
    }
}
