//! RoleActor: the writer of one role's StatefulSet.
//!
//! Who sends: its ClusterActor, one [`RoleWrite`] at a time, in plan order (awaited with a
//! timeout). What it owns: the StatefulSet name and namespace. What it emits: the write result.
//!
//! Writes are idempotent: creation adopts an existing object of the same (deterministic) name
//! instead of failing or duplicating it; metadata drift (labels, prettyName annotation, the
//! single controller owner reference) is repaired with a metadata merge patch; deletes treat
//! NotFound as done. An object edited or deleted behind the operator's back produces a watch
//! event, which re-triggers the cluster, whose planner asks for the repair.

use std::sync::Arc;

use actix::prelude::*;
use k8s_openapi::{api::apps::v1::StatefulSet, apimachinery::pkg::apis::meta::v1::ObjectMeta};

use crate::ports::{ApiError, ClusterApi, ObjectKey, OwnedKind};

/// One write to the role's StatefulSet.
#[derive(Debug, Message)]
#[rtype(result = "Result<RoleWritten, ApiError>")]
pub enum RoleWrite {
    /// Create with 0 replicas; adopt when it already exists.
    Create(Box<StatefulSet>),
    /// Repair labels, annotations and owner references.
    PatchMetadata(Box<ObjectMeta>),
    /// Set `spec.replicas`.
    SetReplicas(i32),
    /// Delete (NotFound is success), with a precondition on this uid when known.
    Delete(Option<String>),
}

/// Result of a [`RoleWrite`].
#[derive(Debug, Clone, PartialEq)]
pub enum RoleWritten {
    /// The StatefulSet as stored (created or adopted).
    Stored(Box<StatefulSet>),
    /// Done.
    Done,
}

/// The role actor.
pub struct RoleActor {
    key: ObjectKey,
    api: Arc<dyn ClusterApi>,
}

impl RoleActor {
    /// The writer of StatefulSet `key`.
    pub fn new(key: ObjectKey, api: Arc<dyn ClusterApi>) -> Self {
        Self { key, api }
    }
}

impl Actor for RoleActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(64);
        tracing::debug!(statefulset = %self.key, "role actor started");
    }
}

impl Handler<RoleWrite> for RoleActor {
    type Result = ResponseFuture<Result<RoleWritten, ApiError>>;

    fn handle(&mut self, msg: RoleWrite, _ctx: &mut Self::Context) -> Self::Result {
        let api = Arc::clone(&self.api);
        let key = self.key.clone();
        match msg {
            RoleWrite::Create(mut sts) => {
                if sts.metadata.namespace.is_none() {
                    sts.metadata.namespace = Some(key.namespace.clone());
                }
                if sts.metadata.name.is_none() {
                    sts.metadata.name = Some(key.name.clone());
                }
                let fut = api.create_stateful_set(*sts);
                Box::pin(async move { fut.await.map(|s| RoleWritten::Stored(Box::new(s))) })
            }
            RoleWrite::PatchMetadata(meta) => {
                let fut = api.patch_stateful_set_metadata(key, *meta);
                Box::pin(async move { fut.await.map(|()| RoleWritten::Done) })
            }
            RoleWrite::SetReplicas(n) => {
                let fut = api.set_replicas(key, n);
                Box::pin(async move { fut.await.map(|()| RoleWritten::Done) })
            }
            RoleWrite::Delete(uid) => {
                let fut = api.delete(OwnedKind::StatefulSet, key, uid);
                Box::pin(async move {
                    match fut.await {
                        Ok(()) | Err(ApiError::NotFound { .. }) => Ok(RoleWritten::Done),
                        Err(e) => Err(e),
                    }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::fake::{ApiCall, FakeClusterApi};

    #[actix::test]
    async fn writes_go_to_the_roles_statefulset_and_not_found_deletes_succeed() {
        let api = FakeClusterApi::new();
        let key = ObjectKey::new("ns", "kdss-abcde");
        let role = RoleActor::new(key.clone(), Arc::new(api.clone())).start();
        assert_eq!(
            role.send(RoleWrite::SetReplicas(3)).await.unwrap(),
            Ok(RoleWritten::Done)
        );
        api.fail_next([ApiError::NotFound {
            kind: "StatefulSet".into(),
            key: key.to_string(),
        }]);
        assert_eq!(
            role.send(RoleWrite::Delete(Some("uid-1".into()))).await.unwrap(),
            Ok(RoleWritten::Done)
        );
        api.fail_next([ApiError::Server {
            code: 500,
            message: "boom".into(),
        }]);
        assert!(role.send(RoleWrite::SetReplicas(1)).await.unwrap().is_err());
        let created = role
            .send(RoleWrite::Create(Box::default()))
            .await
            .unwrap()
            .unwrap();
        let RoleWritten::Stored(created) = created else {
            panic!("expected the stored StatefulSet");
        };
        assert_eq!(created.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(created.metadata.name.as_deref(), Some("kdss-abcde"));
        assert_eq!(
            api.calls()[..3],
            vec![
                ApiCall::SetReplicas(key.clone(), 3),
                ApiCall::Delete(OwnedKind::StatefulSet, key.clone()),
                ApiCall::SetReplicas(key, 1),
            ]
        );
    }
}
