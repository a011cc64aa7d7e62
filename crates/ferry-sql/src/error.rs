//! Errors that name where in the job file they come from.

use std::fmt;

/// A place in a job file: line and column, both from 1 (0 when unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl Pos {
    pub fn new(line: u64, column: u64) -> Self {
        Pos { line, column }
    }
}

impl From<sqlparser::tokenizer::Location> for Pos {
    fn from(l: sqlparser::tokenizer::Location) -> Self {
        Pos { line: l.line, column: l.column }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A job that cannot be run as written: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct SqlError {
    pub pos: Pos,
    pub message: String,
}

impl SqlError {
    pub fn new(pos: Pos, message: impl Into<String>) -> Self {
        SqlError { pos, message: message.into() }
    }

    /// sqlparser's errors end with "at Line: L, Column: C"; that place becomes the error's.
    pub fn from_parser(e: &sqlparser::parser::ParserError, fallback: Pos) -> Self {
        let text = match e {
            sqlparser::parser::ParserError::TokenizerError(s) | sqlparser::parser::ParserError::ParserError(s) => s.clone(),
            sqlparser::parser::ParserError::RecursionLimitExceeded => "the statement nests too deeply".to_string(),
        };
        match text.rfind(" at Line: ") {
            Some(i) => {
                let place = &text[i + " at Line: ".len()..];
                let mut parts = place.split(", Column: ");
                let line = parts.next().and_then(|l| l.trim().parse().ok());
                let column = parts.next().and_then(|c| c.trim().parse().ok());
                match (line, column) {
                    (Some(line), Some(column)) => SqlError::new(Pos { line, column }, text[..i].to_string()),
                    _ => SqlError::new(fallback, text),
                }
            }
            None => SqlError::new(fallback, text),
        }
    }
}

pub type Result<T, E = SqlError> = std::result::Result<T, E>;

/// `Err(SqlError)` at `pos`.
pub(crate) fn fail<T>(pos: Pos, message: impl Into<String>) -> Result<T> {
    Err(SqlError::new(pos, message))
}
