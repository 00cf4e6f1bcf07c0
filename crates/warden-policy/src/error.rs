//! Errors raised while loading policies and building the schema.

use std::fmt;
use std::path::PathBuf;

/// A failure to build a [`crate::PolicyEngine`]. Loading fails as a whole,
/// so a caller that reloads keeps its previous engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyLoadError {
    /// The policy directory or one of its files could not be read.
    #[error(
        "failed to read policy path {}: {source}; check that it exists and is readable",
        path.display()
    )]
    Read {
        /// The directory or file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// One or more policies failed to parse or to validate. Each problem
    /// is displayed on its own line.
    #[error("{}", ProblemList(.0))]
    Policies(Vec<PolicyProblem>),
    /// A tool definition cannot be turned into Cedar schema types.
    #[error("invalid tool definition {tool}: {message}")]
    Tool {
        /// Qualified name of the tool.
        tool: String,
        /// Description of the problem and its fix.
        message: String,
    },
    /// The schema generated from the tool definitions was rejected by Cedar.
    #[error(
        "the Cedar schema generated from the tool definitions is invalid: {message}; \
         check the tools' inputSchema property names"
    )]
    Schema {
        /// Cedar's error message.
        message: String,
    },
}

/// One problem in a policy file, located by line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyProblem {
    /// Policy file name as passed to the loader.
    pub file: String,
    /// Line of the problem, counted from 1.
    pub line: usize,
    /// Column of the problem in characters, counted from 1.
    pub column: usize,
    /// Description of the problem and, where Cedar gives one, its fix.
    pub message: String,
    /// Id of the policy the problem is in: its `@id` annotation, or
    /// `FILE:INDEX` with the 0-based position of the policy in its file.
    pub policy_id: String,
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {} (policy {})",
            self.file, self.line, self.column, self.message, self.policy_id
        )
    }
}

impl PolicyLoadError {
    /// Returns the located policy problems, empty for the other variants.
    pub fn problems(&self) -> &[PolicyProblem] {
        match self {
            PolicyLoadError::Policies(problems) => problems,
            _ => &[],
        }
    }
}

struct ProblemList<'a>(&'a [PolicyProblem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Returns the 1-based line and character column of byte `offset` in `text`.
pub(crate) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |index| index + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_counts_from_one() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 4), (2, 2));
        assert_eq!(line_and_column(text, 8), (3, 1));
        assert_eq!(line_and_column(text, 100), (3, 2));
    }

    #[test]
    fn policies_error_lists_one_problem_per_line() {
        let problem = |line| PolicyProblem {
            file: "main.cedar".to_owned(),
            line,
            column: 3,
            message: "unexpected token".to_owned(),
            policy_id: "main.cedar:0".to_owned(),
        };
        let error = PolicyLoadError::Policies(vec![problem(1), problem(4)]);
        assert_eq!(
            error.to_string(),
            "main.cedar:1:3: unexpected token (policy main.cedar:0)\n\
             main.cedar:4:3: unexpected token (policy main.cedar:0)"
        );
    }
}
