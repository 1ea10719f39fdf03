//! Admission of objects created by the in-process controllers.
//!
//! In a real cluster kube-controller-manager writes through the API server, so its writes (for
//! instance the PersistentVolumeClaims the StatefulSet controller creates from
//! `volumeClaimTemplates`) pass the admission webhooks like any client's. kubesim's controllers
//! write to the [`Store`] directly; [`Store::spawn_create_admitted`] gives them the same path:
//! defaulting, mutating and validating webhooks (installed by `Sim::start`), validation, commit.
//! It runs in the background so that the synchronous reconcilers never block on a webhook.

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
};

use serde_json::Value;

use super::{Store, WriteOptions};
use crate::{
    error::ApiError,
    resources::{ResourceInfo, ResourceKey},
};

/// A boxed admission future.
pub type AdmitFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, ApiError>> + Send + 'a>>;

/// Runs the admission webhooks on a CREATE by `user`.
pub trait ControllerAdmission: Send + Sync {
    /// Returns the admitted (possibly mutated) object.
    fn admit_create<'a>(
        &'a self,
        store: &'a Store,
        info: &'a ResourceInfo,
        obj: Value,
        user: &'a str,
    ) -> AdmitFuture<'a>;
}

/// The installed admission and the creates in flight.
#[derive(Default)]
pub(crate) struct Slot {
    admission: OnceLock<Arc<dyn ControllerAdmission>>,
    pending: Mutex<HashSet<String>>,
}

impl Store {
    /// Installs the admission used by [`Store::spawn_create_admitted`] (once; later calls are
    /// ignored).
    pub fn set_controller_admission(&self, admission: Arc<dyn ControllerAdmission>) {
        let _ = self.inner.controller_admission.admission.set(admission);
    }

    /// Whether controller creates go through admission.
    pub fn has_controller_admission(&self) -> bool {
        self.inner.controller_admission.admission.get().is_some()
    }

    /// Creates `obj` through admission in a background task (at most one in flight per
    /// resource/namespace/name) and hands the result to `done`. Returns `false` when the same
    /// create is already in flight. Must be called inside a tokio runtime.
    pub fn spawn_create_admitted<F>(
        &self,
        res: &ResourceKey,
        ns: &str,
        obj: Value,
        user: &'static str,
        done: F,
    ) -> bool
    where
        F: FnOnce(&Store, Result<Value, ApiError>) + Send + 'static,
    {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let key = format!("{}/{}/{ns}/{name}", res.group, res.resource);
        if !self
            .inner
            .controller_admission
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone())
        {
            return false;
        }
        let store = self.clone();
        let res = res.clone();
        let ns = ns.to_string();
        tokio::spawn(async move {
            let result = store.create_admitted(&res, &ns, obj, user).await;
            store
                .inner
                .controller_admission
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            done(&store, result);
        });
        true
    }

    async fn create_admitted(
        &self,
        res: &ResourceKey,
        ns: &str,
        obj: Value,
        user: &str,
    ) -> Result<Value, ApiError> {
        let info = self.info(res)?;
        let obj = self.prepare_create(&info, Some(ns), obj)?;
        let admission = self.inner.controller_admission.admission.get().cloned();
        let obj = match admission {
            Some(a) => a.admit_create(self, &info, obj, user).await?,
            None => obj,
        };
        self.validate_object(&info, &obj, None)?;
        self.commit_create(&info, obj, &WriteOptions::default(), "Update")
    }
}
