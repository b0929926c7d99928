//! Diagnostics: errors and warnings with a file, line and column.
//!
//! Parsers in this crate never stop at the first problem; they collect
//! every diagnostic they can find so that `omirrd check` can report them
//! all at once.

use std::fmt;
use std::path::{Path, PathBuf};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The configuration is usable; something in it has no effect or is
    /// suspicious.
    Warning,
    /// The configuration cannot be used.
    Error,
}

/// A position in a source file. Lines and columns count from 1; columns
/// count characters, not bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// The line, from 1; 0 stands for the whole file (see [`Diagnostic`]).
    pub line: u32,
    /// The column, from 1, in characters.
    pub column: u32,
}

impl Pos {
    /// The position at `line` and `column`, both counted from 1.
    pub const fn new(line: u32, column: u32) -> Self {
        Pos { line, column }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One error or warning, printed as `file:line:column: severity: message`,
/// or `file: severity: message` for a problem with the whole file (line 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Whether the file is still usable.
    pub severity: Severity,
    /// The file the problem is in, as it was named to the parser.
    pub file: PathBuf,
    /// Where in the file; line 0 for a problem with the whole file.
    pub pos: Pos,
    /// What is wrong, in one line, without the position or severity.
    pub message: String,
}

impl Diagnostic {
    /// An error: the file cannot be used.
    pub fn error(file: &Path, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.to_path_buf(),
            pos,
            message: message.into(),
        }
    }

    /// A warning: the file is usable but something in it is suspicious.
    pub fn warning(file: &Path, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            file: file.to_path_buf(),
            pos,
            message: message.into(),
        }
    }

    /// Whether this diagnostic makes the file unusable.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        if self.pos.line == 0 {
            write!(f, "{}: {}: {}", self.file.display(), kind, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.file.display(),
                self.pos,
                kind,
                self.message
            )
        }
    }
}

/// The errors of a file that could not be used, with the warnings found
/// alongside them. Displayed one diagnostic per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.0))]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// The errors, without the warnings.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
}

fn render(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
