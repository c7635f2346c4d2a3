//! The error a job file that fails validation gives.

use crate::text::{capped, quoted};

/// A job file that failed validation: which file, where in it, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: at `{path}`: {message}")]
pub struct JobError {
    /// The file (or message) the job came from.
    pub file: String,
    /// The JSON path of the offending value (`(top level)` for the document itself).
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl JobError {
    pub(crate) fn new(file: &str, path: impl Into<String>, message: impl Into<String>) -> JobError {
        let path = path.into();
        JobError {
            file: file.to_string(),
            path: if path.is_empty() {
                "(top level)".to_string()
            } else {
                quoted(&path)
            },
            message: capped(&message.into()),
        }
    }
}
