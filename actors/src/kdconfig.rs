//! KubeDirectorConfig reconcile (spec 3.16, feature F75): the pure planner [`plan_config`] and
//! the [`ConfigActor`] that runs it for the global config `kd-global-config` in the operator's
//! namespace.
//!
//! A pass: deletion greenlit by removing the finalizer; otherwise the finalizer is added, a
//! missing `spec.masterEncryptionKey` is filled with a fresh random 32-byte key (64 hex chars,
//! the webhook's K-M default), and the status goes `""` → `creating` (event `new`) → `ready`
//! (event `stable`), each status write carrying a fresh `generationUID` recorded for the
//! webhook's K-5 check.
//!
//! Differences from upstream: only `kd-global-config` in the operator's namespace is reconciled
//! (R26, the watch is scoped); kdclusters use the config from the watch cache on first sight
//! rather than after its second pass (R26); failures are retried with a doubling timer instead of
//! sleeping in a worker (R2). The defaults it carries (service type, naming scheme, storage class,
//! labels, annotations, systemd) are read by the webhook when a kdcluster is admitted and by the
//! kdcluster planner when it builds objects, so a change reaches every kdcluster created after
//! it; existing members keep what they were created with, as upstream.

use std::time::Duration;

use actix::prelude::*;
use kube::Resource as _;
use kubedirector_crds::config::{ConfigState, KubeDirectorConfigStatus};
use kubedirector_crds::wire::FINALIZER;
use kubedirector_crds::KubeDirectorConfig;
use serde_json::{json, Value};

use crate::caches::Caches;
use crate::ports::{EventRecord, EventType, InvolvedObject, ObjectKey, Ports};
use crate::tokens::TokenTable;

/// What one kdconfig pass changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigPlan {
    /// Merge patch of the main resource (finalizers, generated master key), if any.
    pub patch: Option<Value>,
    /// The new status (with a fresh `generationUID`), if it changes.
    pub status: Option<KubeDirectorConfigStatus>,
    /// Normal events on the kdconfig, in order.
    pub events: Vec<&'static str>,
}

/// Plans a kdconfig pass. `new_uid` is the `generationUID` to write if the status changes,
/// `new_key` the master key to fill in if none is set.
pub fn plan_config(cfg: &KubeDirectorConfig, new_uid: &str, new_key: &str) -> ConfigPlan {
    let mut plan = ConfigPlan::default();
    let finalizers = cfg.metadata.finalizers.clone().unwrap_or_default();
    let has_finalizer = finalizers.iter().any(|f| f == FINALIZER);
    if cfg.metadata.deletion_timestamp.is_some() {
        if has_finalizer {
            let rest: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
            plan.patch = Some(json!({"metadata": {"finalizers": rest}}));
            plan.events.push("greenlighting for deletion");
        }
        return plan;
    }
    let mut patch = serde_json::Map::new();
    if !has_finalizer {
        let mut all = finalizers.clone();
        all.push(FINALIZER.to_owned());
        patch.insert("metadata".into(), json!({ "finalizers": all }));
    }
    if cfg
        .spec
        .as_ref()
        .and_then(|s| s.master_encryption_key.as_ref())
        .is_none()
    {
        patch.insert("spec".into(), json!({ "masterEncryptionKey": new_key }));
    }
    if !patch.is_empty() {
        plan.patch = Some(Value::Object(patch));
    }
    let status = cfg.status.clone().unwrap_or_default();
    let state = if status.generation_uid.is_empty() {
        plan.events.push("new");
        Some(ConfigState::Creating)
    } else if status.state != ConfigState::Ready {
        plan.events.push("stable");
        Some(ConfigState::Ready)
    } else {
        None
    };
    plan.status = state.map(|state| KubeDirectorConfigStatus {
        generation_uid: new_uid.to_owned(),
        state,
    });
    plan
}

/// A fresh master encryption key: 32 random bytes, hex.
pub fn random_master_key() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Asks the [`ConfigActor`] to reconcile the global config soon.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct ReconcileConfig;

/// Runs [`plan_config`] on the cached global config and executes the plan, one pass at a time.
pub struct ConfigActor {
    ports: Ports,
    caches: Caches,
    key: ObjectKey,
    running: bool,
    again: bool,
    failures: u32,
}

impl ConfigActor {
    /// An actor for `kd-global-config` in `kd_namespace`.
    pub fn new(ports: Ports, caches: Caches, kd_namespace: &str) -> Self {
        Self {
            ports,
            caches,
            key: ObjectKey::new(kd_namespace, kubedirector_crds::GLOBAL_CONFIG_NAME),
            running: false,
            again: false,
            failures: 0,
        }
    }

    fn pass(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            self.again = true;
            return;
        }
        let Some(cfg) = self.caches.global_config() else {
            return;
        };
        let uid = cfg.meta().uid.clone().unwrap_or_default();
        let plan = plan_config(&cfg, &uuid::Uuid::new_v4().to_string(), &random_master_key());
        if plan.patch.is_none() && plan.status.is_none() && plan.events.is_empty() {
            return;
        }
        self.running = true;
        let api = std::sync::Arc::clone(&self.ports.api);
        let events = std::sync::Arc::clone(&self.ports.events);
        let tokens = self.caches.tokens.clone();
        let key = self.key.clone();
        let rv = cfg.meta().resource_version.clone().unwrap_or_default();
        // Status first (resourceVersion precondition from the cache), then the main-resource
        // patch, which the webhook's K-5 check accepts because it carries our recorded token.
        let involved = InvolvedObject {
            api_version: kubedirector_crds::API_VERSION.to_owned(),
            kind: "KubeDirectorConfig".to_owned(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            uid: Some(uid.clone()),
        };
        let work = async move {
            if let Some(status) = &plan.status {
                let value = serde_json::to_value(status).map_err(|e| e.to_string())?;
                api.write_config_status(key.clone(), rv, value)
                    .await
                    .map_err(|e| e.to_string())?;
                tokens.record(TokenTable::Config, &uid, &status.generation_uid);
            }
            if let Some(patch) = plan.patch {
                api.patch_config(key.clone(), patch)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            for message in plan.events {
                let _ = events
                    .record(EventRecord {
                        involved: involved.clone(),
                        event_type: EventType::Normal,
                        reason: "Config".to_owned(),
                        message: message.to_owned(),
                    })
                    .await;
            }
            Ok::<(), String>(())
        };
        ctx.spawn(work.into_actor(self).map(|res, act, ctx| {
            act.running = false;
            match res {
                Ok(()) => {
                    act.failures = 0;
                    if std::mem::take(&mut act.again) {
                        act.pass(ctx);
                    }
                }
                Err(error) => {
                    act.failures = act.failures.saturating_add(1);
                    let delay = Duration::from_millis(200)
                        .saturating_mul(2u32.saturating_pow(act.failures.min(8)))
                        .min(Duration::from_secs(60));
                    tracing::warn!(%error, ?delay, "kdconfig reconcile failed; retrying");
                    ctx.notify_later(ReconcileConfig, delay);
                }
            }
        }));
    }
}

impl Actor for ConfigActor {
    type Context = Context<Self>;
}

impl Handler<ReconcileConfig> for ConfigActor {
    type Result = ();

    fn handle(&mut self, _msg: ReconcileConfig, ctx: &mut Self::Context) {
        self.pass(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubedirector_crds::config::KubeDirectorConfigSpec;

    fn cfg() -> KubeDirectorConfig {
        KubeDirectorConfig::new("kd-global-config", None)
    }

    #[test]
    fn a_new_config_gets_finalizer_master_key_and_creating_state() {
        let plan = plan_config(&cfg(), "u1", "ab".repeat(32).as_str());
        assert_eq!(
            plan.patch,
            Some(
                json!({"metadata": {"finalizers": [FINALIZER]}, "spec": {"masterEncryptionKey": "ab".repeat(32)}})
            )
        );
        assert_eq!(
            plan.status,
            Some(KubeDirectorConfigStatus {
                generation_uid: "u1".into(),
                state: ConfigState::Creating
            })
        );
        assert_eq!(plan.events, vec!["new"]);
    }

    #[test]
    fn creating_becomes_ready_then_nothing_changes() {
        let mut c = cfg();
        c.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
        c.spec = Some(KubeDirectorConfigSpec {
            master_encryption_key: Some("k".into()),
            ..Default::default()
        });
        c.status = Some(KubeDirectorConfigStatus {
            generation_uid: "u1".into(),
            state: ConfigState::Creating,
        });
        let plan = plan_config(&c, "u2", "x");
        assert_eq!(plan.patch, None, "an existing key is never replaced");
        assert_eq!(plan.status.as_ref().map(|s| &s.state), Some(&ConfigState::Ready));
        assert_eq!(plan.events, vec!["stable"]);
        c.status = plan.status;
        assert_eq!(plan_config(&c, "u3", "x"), ConfigPlan::default());
    }

    #[test]
    fn deletion_removes_only_our_finalizer() {
        let mut c = cfg();
        c.metadata.finalizers = Some(vec!["other".into(), FINALIZER.to_owned()]);
        c.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        let plan = plan_config(&c, "u", "k");
        assert_eq!(plan.patch, Some(json!({"metadata": {"finalizers": ["other"]}})));
        assert_eq!(plan.status, None);
        c.metadata.finalizers = Some(vec!["other".into()]);
        assert_eq!(plan_config(&c, "u", "k"), ConfigPlan::default());
    }

    #[test]
    fn random_keys_are_64_hex_chars_and_valid_master_keys() {
        let a = random_master_key();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_master_key());
        assert!(hex::decode(&a).is_ok_and(|b| b.len() == 32));
    }
}
