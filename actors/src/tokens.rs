//! Status anti-tamper tokens (spec 2.3 C-7, 2.4 K-5), shared between the reconciler and the
//! admission webhook.
//!
//! The reconciler records, per object UID, the `status.generationUID` it last wrote; the webhook
//! reads it to decide whether a main-resource write carries a forged status, and marks the token
//! "validated" once it has seen a write carrying it. The map is owned outside the actors (it
//! lives in [`crate::caches::Caches`]) so the webhook never asks an actor for it.
//!
//! Writer side (the cluster actor, once its status write with a new generation UID is sent):
//! `caches.tokens.record(TokenTable::Cluster, &uid, &generation_uid)`; and
//! `caches.tokens.forget(TokenTable::Cluster, &uid)` when the kdcluster is gone.

use std::sync::Arc;

use dashmap::DashMap;

/// Which kind's token table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenTable {
    /// KubeDirectorCluster tokens.
    Cluster,
    /// KubeDirectorConfig tokens.
    Config,
}

/// One recorded token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The `status.generationUID` the operator last wrote.
    pub generation_uid: String,
    /// Whether the webhook has already seen a write carrying this token.
    pub validated: bool,
}

/// The concurrent token map (cheap to clone: every clone shares the same map).
#[derive(Debug, Clone, Default)]
pub struct StatusTokens(Arc<DashMap<(TokenTable, String), Token>>);

impl StatusTokens {
    /// Records the generation UID just written into the status of object `uid`; the token starts
    /// unvalidated.
    pub fn record(&self, table: TokenTable, uid: &str, generation_uid: &str) {
        self.0.insert(
            (table, uid.to_string()),
            Token {
                generation_uid: generation_uid.to_string(),
                validated: false,
            },
        );
    }

    /// The token of object `uid`, if any.
    pub fn get(&self, table: TokenTable, uid: &str) -> Option<Token> {
        self.0.get(&(table, uid.to_string())).map(|t| t.value().clone())
    }

    /// Marks the token of `uid` as seen by the webhook (no effect without a token).
    pub fn mark_validated(&self, table: TokenTable, uid: &str) {
        if let Some(mut t) = self.0.get_mut(&(table, uid.to_string())) {
            t.validated = true;
        }
    }

    /// Drops the token of a deleted object.
    pub fn forget(&self, table: TokenTable, uid: &str) {
        self.0.remove(&(table, uid.to_string()));
    }

    /// Number of recorded tokens.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no token is recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_token_is_shared_by_clones_and_reset_to_unvalidated_on_rewrite() {
        let tokens = StatusTokens::default();
        let webhook_view = tokens.clone();
        tokens.record(TokenTable::Cluster, "u1", "g1");
        webhook_view.mark_validated(TokenTable::Cluster, "u1");
        assert_eq!(
            tokens.get(TokenTable::Cluster, "u1"),
            Some(Token {
                generation_uid: "g1".into(),
                validated: true
            })
        );
        tokens.record(TokenTable::Cluster, "u1", "g2");
        assert_eq!(
            webhook_view.get(TokenTable::Cluster, "u1"),
            Some(Token {
                generation_uid: "g2".into(),
                validated: false
            })
        );
        assert_eq!(webhook_view.get(TokenTable::Config, "u1"), None);
        tokens.forget(TokenTable::Cluster, "u1");
        assert!(webhook_view.is_empty());
    }

    #[test]
    fn marking_without_a_token_records_nothing() {
        let tokens = StatusTokens::default();
        tokens.mark_validated(TokenTable::Config, "x");
        assert_eq!(tokens.len(), 0);
    }
}
