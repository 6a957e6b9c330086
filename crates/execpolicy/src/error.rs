//! Why a rules file could not be loaded. Every variant names the file; positions are 1-based.

use std::path::PathBuf;

/// An error loading or parsing rules files.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be opened or read.
    #[error("cannot read rules file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_RULES_FILE_BYTES`](crate::MAX_RULES_FILE_BYTES).
    #[error("{file}: rules file is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The file.
        file: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The text is not in the rules syntax (including text that is not UTF-8).
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, counted in characters.
        column: usize,
        /// What was expected or is wrong, e.g. `expected ',' or ']'`.
        message: String,
    },
    /// The syntax is right but a call is not a valid rule: another function than
    /// `prefix_rule`, an unknown, duplicate or missing keyword argument, or a value of the
    /// wrong type.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line of the offending call, argument or value.
        line: usize,
        /// 1-based column, counted in characters.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A `match` example does not match its rule, or a `not_match` example does.
    #[error(
        "{file}:{line}: rule {rule}: {} example {example} {}",
        if *.expected_match { "match" } else { "not_match" },
        if *.expected_match { "does not match it" } else { "matches it" }
    )]
    Example {
        /// The file.
        file: String,
        /// 1-based line of the `prefix_rule` call.
        line: usize,
        /// The rule's pattern, e.g. `["git", "push"]`.
        rule: String,
        /// The example's words, e.g. `["git", "pull"]`.
        example: String,
        /// Whether the example was a `match` example (it should have matched).
        expected_match: bool,
    },
}
