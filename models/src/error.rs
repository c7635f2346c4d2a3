use std::path::Path;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A file is not in the expected format, or lacks something the model needs.
    #[error("{0}")]
    Format(String),
    /// The model is of a kind labelfleet cannot run.
    #[error("{0}")]
    Unsupported(String),
    /// The model was asked for something it cannot do (too long a prompt, …).
    #[error("{0}")]
    Invalid(String),
    /// The model could not be found where it was looked for.
    #[error("{0}")]
    NotFound(String),
    /// candle failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

impl ModelError {
    pub(crate) fn io(path: &Path, e: std::io::Error) -> ModelError {
        ModelError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }

    pub(crate) fn tokenizer(e: impl std::fmt::Display) -> ModelError {
        ModelError::Tokenizer(e.to_string())
    }
}
