//! keel's Dockerfile front end: bytes → `Ast` (`parse.rs`) → typed instructions
//! (`instruction.rs`), the shell-word lexer for variables (`expand.rs`) and the
//! `.dockerignore` matcher (`ignore.rs`).
//!
//! Everything here is pure: no file, process or network I/O. The stage graph and build
//! planning live in `plan/`, not here. Errors carry the file, line and column, show the
//! offending line with a caret, and say how to fix it.
pub mod expand;
pub mod ignore;
pub mod instruction;
pub mod parse;

pub use instruction::{instructions, Instruction, Spanned};
pub use parse::{parse, Ast, Heredoc, Node, Warning};

use std::fmt;

/// A Dockerfile that cannot be parsed or understood, located in its file. Boxed so that
/// `Result<_, ParseError>` stays small; fields are reached through `Deref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub Box<ErrorDetail>);

impl ParseError {
    pub fn new(
        file: impl Into<String>,
        line: usize,
        column: usize,
        text: impl Into<String>,
        kind: ErrorKind,
    ) -> ParseError {
        ParseError(Box::new(ErrorDetail {
            file: file.into(),
            line,
            column,
            text: text.into(),
            kind,
        }))
    }
}

impl std::ops::Deref for ParseError {
    type Target = ErrorDetail;
    fn deref(&self) -> &ErrorDetail {
        &self.0
    }
}

/// Where and what: the fields of a `ParseError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetail {
    pub file: String,
    /// 1-based line of the instruction (or the offending line).
    pub line: usize,
    /// 1-based column of the offending text on that line.
    pub column: usize,
    /// The physical line, shown with a caret.
    pub text: String,
    pub kind: ErrorKind,
}

impl std::error::Error for ParseError {}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.kind
        )?;
        if !self.text.is_empty() {
            let shown: String = self.text.chars().take(200).collect();
            let num = self.line.to_string();
            // The caret counts characters, so it lines up for non-ASCII text too.
            let pad = shown.chars().take(self.column.saturating_sub(1)).map(|c| {
                if c == '\t' {
                    '\t'
                } else {
                    ' '
                }
            });
            write!(
                f,
                "\n {num} | {shown}\n {} | {}^",
                " ".repeat(num.len()),
                pad.collect::<String>()
            )?;
        }
        if let Some(hint) = self.kind.hint() {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

/// What went wrong. Messages are lowercase and name the object; `hint()` says what fixes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("dockerfile line greater than max allowed size of 65535")]
    LineTooLong,
    #[error("file with no instructions")]
    NoInstructions,
    #[error("only one {name} parser directive can be used")]
    DuplicateDirective { name: String },
    #[error("invalid escape token '{value}' does not match ` or \\")]
    BadEscape { value: String },
    #[error("unterminated heredoc {name}")]
    UnterminatedHeredoc { name: String },
    #[error("invalid heredoc marker {word:?}")]
    BadHeredoc { word: String },
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    NotStringArray,
    #[error("{instruction} must have two arguments ({key:?} has no value)")]
    MissingValue { instruction: String, key: String },
    #[error(
        "{instruction}: syntax error - can't find = in {word:?}; must be of the form: name=value"
    )]
    MissingEquals { instruction: String, word: String },
    #[error("unknown instruction: {name}")]
    UnknownInstruction {
        name: String,
        suggestion: Option<String>,
    },
    #[error("unknown flag {flag} on {instruction}")]
    UnknownFlag {
        instruction: String,
        flag: String,
        /// The flags the instruction does accept (without `--`).
        accepted: Vec<String>,
    },
    #[error("{instruction}: {message}")]
    Invalid {
        instruction: String,
        message: String,
        hint: Option<String>,
    },
}

impl ErrorKind {
    /// A suggested fix, when there is an obvious one.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            ErrorKind::LineTooLong => "split the line with a trailing backslash".into(),
            ErrorKind::NoInstructions => "a Dockerfile needs at least a FROM instruction".into(),
            ErrorKind::DuplicateDirective { name } => format!("keep one `# {name}=` line"),
            ErrorKind::BadEscape { .. } => "use `# escape=\\` or `# escape=``".into(),
            ErrorKind::UnterminatedHeredoc { name } => {
                format!("end the heredoc with a line holding only {name}")
            }
            ErrorKind::BadHeredoc { .. } => {
                "balance the quotes around the heredoc delimiter".into()
            }
            ErrorKind::NotStringArray => {
                "put every element in double quotes, e.g. [\"echo\", \"hi\"]".into()
            }
            ErrorKind::MissingValue { .. } => "give a value: KEY=value or KEY value".into(),
            ErrorKind::MissingEquals { .. } => {
                "write every pair as name=value, quoting values with spaces".into()
            }
            ErrorKind::UnknownInstruction {
                suggestion: Some(s),
                ..
            } => format!("did you mean {s}?"),
            ErrorKind::UnknownInstruction { .. } => {
                "see the Dockerfile reference for the instructions keel knows".into()
            }
            ErrorKind::UnknownFlag {
                instruction,
                accepted,
                ..
            } if accepted.is_empty() => {
                format!("remove the flag; {instruction} accepts no flags")
            }
            ErrorKind::UnknownFlag {
                instruction,
                accepted,
                ..
            } => {
                let list: Vec<String> = accepted.iter().map(|f| format!("--{f}")).collect();
                format!(
                    "remove or fix the flag; {instruction} accepts {}",
                    list.join(", ")
                )
            }
            ErrorKind::Invalid { hint, .. } => return hint.clone(),
        })
    }
}
