//! The kinds the store serves, as seen by the store ([`KindHooks`]): built-in kinds' defaulting
//! and validation (`builtin`) and custom resources' (`crd`), plus CRD registration after a CRD
//! is written.

use serde_json::Value;

use crate::{
    builtin, crd,
    error::Cause,
    resources::ResourceInfo,
    store::{KindHooks, Store},
};

/// The built-in kinds and custom resources of a kubesim API server.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiKinds;

impl KindHooks for ApiKinds {
    fn default_object(&self, info: &ResourceInfo, obj: &mut Value) {
        builtin::default_object(info, obj);
        if info.crd.is_some() {
            crd::default_custom(info, obj);
        }
    }

    fn preserve_on_update(&self, info: &ResourceInfo, old: &Value, new: &mut Value) {
        builtin::preserve_on_update(info, old, new);
    }

    fn validate(&self, info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = builtin::validate(info, obj, old);
        if info.crd.is_some() {
            causes.extend(crd::validate_custom(info, obj));
        }
        causes
    }

    fn after_write(&self, store: &Store, info: &ResourceInfo, new: Option<&Value>, old: Option<&Value>) {
        if info.group == "apiextensions.k8s.io" && info.resource == "customresourcedefinitions" {
            crd::sync_registration(store, new, old);
        }
    }
}
