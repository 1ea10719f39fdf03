//! The errors of a cluster pass and their retry class (STYLE R9).

use actix::MailboxError;

use crate::{ports::ApiError, retry::FailureClass};

/// Errors of a cluster pass.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A command's API call failed.
    #[error("{command} failed")]
    Command {
        /// Which command (kind and object name).
        command: String,
        /// Cause.
        #[source]
        source: ApiError,
    },
    /// A child actor did not answer.
    #[error("{actor} did not answer")]
    Mailbox {
        /// Child actor type.
        actor: &'static str,
        /// Cause.
        #[source]
        source: MailboxError,
    },
    /// The metadata patch (finalizer, annotations) failed.
    #[error("metadata patch failed")]
    Metadata {
        /// Cause.
        #[source]
        source: ApiError,
    },
    /// The status write was rejected or the object changed under it.
    #[error("status write failed")]
    Status {
        /// Cause.
        #[source]
        source: ApiError,
    },
    /// The planner aborted the pass (spec 3.2 `failed to sync …`).
    #[error("pass aborted: {0}")]
    Aborted(String),
    /// The cache is older than our last status write (spec R25).
    #[error("cache is stale")]
    Stale,
}

impl ClusterError {
    /// Bounded label.
    pub fn category(&self) -> &'static str {
        match self {
            ClusterError::Command { source, .. }
            | ClusterError::Metadata { source }
            | ClusterError::Status { source } => source.category(),
            ClusterError::Mailbox { .. } => "mailbox",
            ClusterError::Aborted(_) => "aborted",
            ClusterError::Stale => "stale",
        }
    }

    pub(super) fn class(&self, app_missing: bool) -> FailureClass {
        match self {
            ClusterError::Command { source, .. }
            | ClusterError::Metadata { source }
            | ClusterError::Status { source } => {
                // AlreadyExists: someone else's object took the name; the overlay now shows it
                // taken, so a prompt pass picks another name or reports the conflict.
                if source.is_transient() || matches!(source, ApiError::AlreadyExists { .. }) {
                    FailureClass::Transient
                } else if matches!(source, ApiError::Rejected { .. }) {
                    FailureClass::NeedsChange
                } else {
                    FailureClass::Other
                }
            }
            ClusterError::Aborted(_) if app_missing => FailureClass::NeedsChange,
            ClusterError::Aborted(_) | ClusterError::Stale => FailureClass::Transient,
            ClusterError::Mailbox { .. } => FailureClass::Other,
        }
    }
}
