//! The crate's error type: which step of an experiment failed, and why.

/// Why an experiment stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// A step failed; `step` names it (and the file, tensor or model involved).
    #[error("{step}: {source}")]
    Step {
        /// What was being done, e.g. `loading /models/gpt2`.
        step: String,
        /// The library error underneath.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An option is invalid or options contradict each other.
    #[error("{option}: {reason}")]
    Invalid {
        /// The option, as the user spells it (e.g. `--texts`).
        option: String,
        /// Why.
        reason: String,
    },
}

impl ExperimentError {
    /// An invalid option.
    pub fn invalid(option: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            option: option.into(),
            reason: reason.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, ExperimentError>;

/// Names the step a library error happened in.
pub trait StepContext<T> {
    /// Wraps the error with the step's name.
    fn step(self, step: impl Into<String>) -> Result<T>;
    /// Wraps the error with a lazily built step name.
    fn with_step(self, step: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> StepContext<T> for std::result::Result<T, E> {
    fn step(self, step: impl Into<String>) -> Result<T> {
        self.map_err(|e| ExperimentError::Step {
            step: step.into(),
            source: Box::new(e),
        })
    }

    fn with_step(self, step: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| ExperimentError::Step {
            step: step(),
            source: Box::new(e),
        })
    }
}
