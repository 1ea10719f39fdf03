//! Test helpers: a configurable fake [`ClusterFacts`] and patch application.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
};

use serde_json::Value;

use super::{
    AdmissionContext, ClusterFacts, Entropy, Fact, SarAnswer, SarRequest, StatusToken, TokenKind, UserInfo,
    Verdict,
};

/// A fake cluster: every fact is known unless listed in `unknown`.
#[derive(Default)]
pub struct FakeFacts {
    pub apps: BTreeMap<(String, String), Value>,
    pub clusters: BTreeMap<(String, String), Value>,
    pub references: BTreeMap<(String, String), Vec<String>>,
    pub storage_classes: BTreeSet<String>,
    pub default_sc: Option<String>,
    pub service_accounts: BTreeSet<(String, String)>,
    pub secrets: BTreeSet<(String, String)>,
    pub pvcs: BTreeMap<(String, String), Value>,
    pub kd_config: Option<Value>,
    pub version: (u32, u32),
    pub sar: Option<SarAnswer>,
    pub bad_urls: BTreeMap<String, String>,
    pub tokens: BTreeMap<String, StatusToken>,
    pub unknown: BTreeSet<&'static str>,
    pub sar_seen: RefCell<Vec<SarRequest>>,
    pub validated: RefCell<Vec<String>>,
}

fn k(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

impl FakeFacts {
    pub fn new() -> Self {
        Self {
            version: (1, 30),
            ..Self::default()
        }
    }
    fn fact<T>(&self, name: &str, v: impl FnOnce() -> T) -> Fact<T> {
        if self.unknown.contains(name) {
            Fact::Unknown
        } else {
            Fact::Known(v())
        }
    }
    pub fn with_app(mut self, ns: &str, app: Value) -> Self {
        let name = app["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let mut app = app;
        app["metadata"]["namespace"] = Value::String(ns.to_string());
        self.apps.insert(k(ns, &name), app);
        self
    }
}

impl ClusterFacts for FakeFacts {
    fn app(&self, namespace: &str, name: &str) -> Fact<Option<Value>> {
        self.fact("app", || self.apps.get(&k(namespace, name)).cloned())
    }
    fn clusters_referencing_app(&self, ns: &str, name: &str) -> Fact<Vec<String>> {
        self.fact("references", || {
            self.references.get(&k(ns, name)).cloned().unwrap_or_default()
        })
    }
    fn any_cluster_exists(&self) -> Fact<bool> {
        self.fact("any_cluster", || {
            !self.clusters.is_empty() || !self.references.is_empty()
        })
    }
    fn cluster(&self, ns: &str, name: &str) -> Fact<Option<Value>> {
        self.fact("cluster", || self.clusters.get(&k(ns, name)).cloned())
    }
    fn storage_class_exists(&self, name: &str) -> Fact<bool> {
        self.fact("storage_class", || self.storage_classes.contains(name))
    }
    fn default_storage_class(&self) -> Fact<Option<String>> {
        self.fact("default_sc", || self.default_sc.clone())
    }
    fn service_account_exists(&self, ns: &str, name: &str) -> Fact<bool> {
        self.fact("sa", || self.service_accounts.contains(&k(ns, name)))
    }
    fn secret_exists(&self, ns: &str, name: &str) -> Fact<bool> {
        self.fact("secret", || self.secrets.contains(&k(ns, name)))
    }
    fn pvc(&self, ns: &str, name: &str) -> Fact<Option<Value>> {
        self.fact("pvc", || self.pvcs.get(&k(ns, name)).cloned())
    }
    fn kd_config(&self) -> Fact<Option<Value>> {
        self.fact("kd_config", || self.kd_config.clone())
    }
    fn server_version(&self) -> Fact<(u32, u32)> {
        self.fact("version", || self.version)
    }
    fn subject_access_review(&self, request: &SarRequest) -> Fact<SarAnswer> {
        self.sar_seen.borrow_mut().push(request.clone());
        self.fact("sar", || {
            self.sar.clone().unwrap_or(SarAnswer {
                allowed: true,
                denied: false,
                reason: String::new(),
            })
        })
    }
    fn url_reachable(&self, url: &str) -> Fact<Result<(), String>> {
        self.fact("url", || match self.bad_urls.get(url) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        })
    }
    fn status_token(&self, _kind: TokenKind, uid: &str) -> Fact<Option<StatusToken>> {
        self.fact("token", || self.tokens.get(uid).cloned())
    }
    fn mark_status_token_validated(&self, _kind: TokenKind, uid: &str) {
        self.validated.borrow_mut().push(uid.to_string());
    }
}

/// A deterministic counter-based entropy source.
pub struct CountingEntropy(pub RefCell<u8>);

impl Entropy for CountingEntropy {
    fn fill(&self, buf: &mut [u8]) {
        for b in buf.iter_mut() {
            let mut c = self.0.borrow_mut();
            *b = *c;
            *c = c.wrapping_add(1);
        }
    }
}

pub fn ctx<'a>(facts: &'a FakeFacts, entropy: &'a dyn Entropy, ns: &str, name: &str) -> AdmissionContext<'a> {
    AdmissionContext {
        facts,
        kd_namespace: Some("kd-system".to_string()),
        namespace: ns.to_string(),
        name: name.to_string(),
        user: UserInfo {
            username: "alice".into(),
            ..UserInfo::default()
        },
        entropy,
    }
}

/// Applies an allowed verdict's patch to `doc`.
pub fn apply(doc: &Value, verdict: &Verdict) -> Value {
    assert!(verdict.allowed, "expected allowed, got {:?}", verdict.messages);
    let mut out = doc.clone();
    json_patch::patch(&mut out, &verdict.patch).expect("patch applies");
    out
}
