//! The refusal of a configuration, naming the key it is about.

use std::fmt;

/// A refused configuration: which key, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The offending key; `None` when the document as a whole is wrong.
    pub key: Option<String>,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "invalid configuration: key \"{key}\": {}", self.problem),
            None => write!(f, "invalid configuration: {}", self.problem),
        }
    }
}

impl std::error::Error for ConfigError {}

pub(super) fn err(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: Some(key.to_string()),
        problem: problem.into(),
    }
}

pub(super) fn document_err(problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: None,
        problem: problem.into(),
    }
}
