//! The error every backend operation returns.

/// A failure of a backend (queue, manifest, artifact store, job board).
///
/// Callers decide what to do from the variant: [`BackendError::Unavailable`] is worth
/// retrying with backoff, [`BackendError::StaleReceipt`] means this worker no longer
/// owns the message, [`BackendError::Lost`] means the backend's storage went away under
/// this process (nothing written now would be kept: stop), everything else is reported
/// to the user.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The receipt handle no longer identifies an in-flight message held by the caller:
    /// the visibility timeout ran out and another receive took the message, or it was
    /// already acknowledged.
    #[error(
        "the message's receipt is no longer valid (its visibility timeout ran out or it was already acknowledged)"
    )]
    StaleReceipt,
    /// A transient failure (busy database, throttling, connection refused): retry later.
    #[error("backend temporarily unavailable: {0}")]
    Unavailable(String),
    /// The request was invalid (for example an artifact key that escapes the root).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The storage this process opened was removed or replaced while it ran (the
    /// embedded home deleted with `rm -rf`): whatever is written now is not kept.
    #[error("{0}")]
    Lost(String),
    /// Any other failure, with a message that says what to do next.
    #[error("{0}")]
    Other(String),
}

/// Result type of backend operations.
pub type BackendResult<T> = Result<T, BackendError>;
