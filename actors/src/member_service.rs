//! MemberServiceActor: the writer of a cluster's Services (the headless cluster service and the
//! per-member services) and of its members' PVC deletions.
//!
//! Who sends: its ClusterActor, one [`MemberWrite`] at a time, in plan order. What it owns: the
//! cluster's namespace. What it emits: the write result.
//!
//! Services are created when the planner saw none (a same-named Service this kdcluster does not
//! control is left alone: AlreadyExists) and repaired by a replace conditional on the version
//! the planner observed (field manager `kubedirector.hpe.com`); a Service deleted behind the
//! operator's back is simply created again (its watch event re-triggers the cluster). Deletes
//! carry the observed uid as a precondition and treat NotFound as done.

use std::sync::Arc;

use actix::prelude::*;
use k8s_openapi::api::core::v1::Service;

use crate::ports::{ApiError, ClusterApi, ObjectKey, OwnedKind};

/// One write.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<Service>, ApiError>")]
pub enum MemberWrite {
    /// Create or repair a Service (returns it as stored).
    ApplyService(Box<Service>),
    /// Delete a Service by name (with a precondition on its uid when known).
    DeleteService(String, Option<String>),
    /// Delete a PersistentVolumeClaim by name (with a precondition on its uid when known).
    DeletePvc(String, Option<String>),
}

/// The member service actor of one cluster.
pub struct MemberServiceActor {
    namespace: String,
    api: Arc<dyn ClusterApi>,
}

impl MemberServiceActor {
    /// The writer for namespace `namespace`.
    pub fn new(namespace: impl Into<String>, api: Arc<dyn ClusterApi>) -> Self {
        Self {
            namespace: namespace.into(),
            api,
        }
    }
}

impl Actor for MemberServiceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
    }
}

impl Handler<MemberWrite> for MemberServiceActor {
    type Result = ResponseFuture<Result<Option<Service>, ApiError>>;

    fn handle(&mut self, msg: MemberWrite, _ctx: &mut Self::Context) -> Self::Result {
        let api = Arc::clone(&self.api);
        let delete = |kind: OwnedKind, name: String, uid: Option<String>| {
            let fut = api.delete(kind, ObjectKey::new(self.namespace.clone(), name), uid);
            Box::pin(async move {
                match fut.await {
                    Ok(()) | Err(ApiError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }) as Self::Result
        };
        match msg {
            MemberWrite::ApplyService(mut svc) => {
                if svc.metadata.namespace.is_none() {
                    svc.metadata.namespace = Some(self.namespace.clone());
                }
                let fut = api.apply_service(*svc);
                Box::pin(async move { fut.await.map(Some) })
            }
            MemberWrite::DeleteService(name, uid) => delete(OwnedKind::Service, name, uid),
            MemberWrite::DeletePvc(name, uid) => delete(OwnedKind::PersistentVolumeClaim, name, uid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::fake::{ApiCall, FakeClusterApi};

    #[actix::test]
    async fn services_are_applied_in_the_cluster_namespace_and_deletes_are_idempotent() {
        let api = FakeClusterApi::new();
        let actor = MemberServiceActor::new("ns", Arc::new(api.clone())).start();
        let mut svc = Service::default();
        svc.metadata.name = Some("s-kdss-abcde-0".into());
        let stored = actor
            .send(MemberWrite::ApplyService(Box::new(svc)))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(stored.metadata.namespace.as_deref(), Some("ns"));
        api.fail_next([ApiError::NotFound {
            kind: "PersistentVolumeClaim".into(),
            key: "ns/p-kdss-abcde-0".into(),
        }]);
        assert_eq!(
            actor
                .send(MemberWrite::DeletePvc("p-kdss-abcde-0".into(), None))
                .await
                .unwrap(),
            Ok(None)
        );
        let calls = api.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            calls[1],
            ApiCall::Delete(
                OwnedKind::PersistentVolumeClaim,
                ObjectKey::new("ns", "p-kdss-abcde-0")
            )
        );
    }
}
