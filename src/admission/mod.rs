//! Admission rules of the KubeDirector webhook (spec section 2): validation and defaulting of
//! KubeDirectorApp (rules A), KubeDirectorCluster (C), KubeDirectorConfig (K) and
//! PersistentVolumeClaim (P) objects, plus the AdmissionReview envelope (W).
//!
//! Every rule is a pure function of (operation, old object, new object, [`AdmissionContext`]).
//! Live cluster knowledge (catalog, storage classes, secrets, ...) comes through the
//! [`ClusterFacts`] trait; each fact may be [`Fact::Unknown`] (for example in the offline
//! `kubedirector validate` command), in which case the rule that needs it is skipped and a note
//! such as `C-19 not checked offline: service account existence` is added to the [`Verdict`].
//! The same code serves the HTTPS webhook, the CLI and the tests.
//!
//! Objects are handled as `serde_json::Value` so that "key absent" and "explicit null" stay
//! distinguishable (kdapp `configPackage` is tri-state, and most mutations are "add if absent").

pub mod app;
pub mod cluster;
pub mod config;
pub mod gotypes;
pub mod labels;
pub mod pvc;
pub use kubedirector_crds::quantity;
pub mod review;
pub use kubedirector_actors::plan::config::secretkeys;

use std::sync::Mutex;

use json_patch::{jsonptr::PointerBuf, AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use rand::{rngs::StdRng, RngCore, SeedableRng};
use serde_json::Value;

/// Label marking a kdcluster that is being restored from a status backup.
pub const RESTORING_LABEL: &str = "kubedirector.hpe.com/restoring";
/// Label allowing deletion of a kdcluster while it is being restored.
pub const ALLOW_DELETE_LABEL: &str = "kubedirector.hpe.com/allow-delete-while-restoring";
/// Annotation announcing that a status backup exists (restore trigger on create).
pub const STATUS_BACKUP_ANNOTATION: &str = "kubedirector.hpe.com/status-backup-exists";
/// Label on PVCs naming the owning kdcluster.
pub const KDCLUSTER_LABEL: &str = "kubedirector.hpe.com/kdcluster";
/// What upstream reports when the request carries no (old) object to decode: Go's
/// `json.Unmarshal` error for empty input.
pub const MISSING_OBJECT: &str = "unexpected end of JSON input";
/// The only meaningful kdconfig name.
pub const KD_CONFIG_NAME: &str = "kd-global-config";

/// The admission operation of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Object creation.
    Create,
    /// Object update.
    Update,
    /// Object deletion.
    Delete,
    /// `CONNECT` (never registered; always allowed).
    Connect,
}

impl Operation {
    /// Parses the AdmissionRequest `operation` string.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "CREATE" => Some(Self::Create),
            "UPDATE" => Some(Self::Update),
            "DELETE" => Some(Self::Delete),
            "CONNECT" => Some(Self::Connect),
            _ => None,
        }
    }
}

/// A piece of cluster knowledge that may be unavailable (offline validation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact<T> {
    /// The answer.
    Known(T),
    /// Cannot be determined here; the rule needing it is skipped with a note.
    Unknown,
}

/// Which kind's status-token table to consult (rules C-7 and K-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// kdcluster status tokens.
    Cluster,
    /// kdconfig status tokens.
    Config,
}

/// A status anti-tamper token recorded by the operator for one object UID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusToken {
    /// The `status.generationUID` the operator last wrote.
    pub uid: String,
    /// Whether the webhook has already seen a write carrying this token.
    pub validated: bool,
}

/// The requesting user, as given in the AdmissionRequest (used for SubjectAccessReviews).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserInfo {
    /// User name.
    pub username: String,
    /// User UID.
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes.
    pub extra: serde_json::Map<String, Value>,
}

/// A SubjectAccessReview question: may `user` `verb` the `resource` named `name` in `namespace`?
///
/// Deviation from upstream (spec 7 R7): `resource` is the plural resource name
/// (`serviceaccounts`, `persistentvolumeclaims`), and the PVC check asks about the PVC itself.
#[derive(Debug, Clone, PartialEq)]
pub struct SarRequest {
    /// Requesting user.
    pub user: UserInfo,
    /// Verb (`get`).
    pub verb: String,
    /// Plural resource name in the core group.
    pub resource: String,
    /// Object name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
}

/// A SubjectAccessReview answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SarAnswer {
    /// `status.allowed`.
    pub allowed: bool,
    /// `status.denied`.
    pub denied: bool,
    /// `status.reason`.
    pub reason: String,
}

/// Live cluster knowledge consulted by the rules. Implemented over the kube API by the webhook,
/// over files by the offline validator, and by fakes in tests.
pub trait ClusterFacts {
    /// The kdapp `namespace/name`, as JSON (`Known(None)` if it does not exist).
    fn app(&self, namespace: &str, name: &str) -> Fact<Option<Value>>;
    /// `ns/name` of every kdcluster using the kdapp `app_namespace/app_name` (derived from the API
    /// by listing kdclusters, spec 7 R6; upstream used an in-memory registry).
    fn clusters_referencing_app(&self, app_namespace: &str, app_name: &str) -> Fact<Vec<String>>;
    /// Whether any kdcluster exists at all (K-1, K-7).
    fn any_cluster_exists(&self) -> Fact<bool>;
    /// The kdcluster `namespace/name`, as JSON (P-2).
    fn cluster(&self, namespace: &str, name: &str) -> Fact<Option<Value>>;
    /// Whether a StorageClass of that name exists.
    fn storage_class_exists(&self, name: &str) -> Fact<bool>;
    /// Name of the cluster's default StorageClass (by the is-default-class annotations).
    fn default_storage_class(&self) -> Fact<Option<String>>;
    /// Whether the ServiceAccount exists.
    fn service_account_exists(&self, namespace: &str, name: &str) -> Fact<bool>;
    /// Whether the Secret exists.
    fn secret_exists(&self, namespace: &str, name: &str) -> Fact<bool>;
    /// The PersistentVolumeClaim, as JSON.
    fn pvc(&self, namespace: &str, name: &str) -> Fact<Option<Value>>;
    /// The kdconfig `kd-global-config` in the KD namespace, as JSON.
    fn kd_config(&self) -> Fact<Option<Value>>;
    /// Kubernetes server version (major, minor).
    fn server_version(&self) -> Fact<(u32, u32)>;
    /// Runs a SubjectAccessReview.
    fn subject_access_review(&self, request: &SarRequest) -> Fact<SarAnswer>;
    /// HEADs a file-injection URL: `Err(reason)` on transport failure. Implementations should use
    /// a short timeout and verify TLS (spec 7 R9); HTTP error statuses count as reachable.
    fn url_reachable(&self, url: &str) -> Fact<Result<(), String>>;
    /// The operator's status token for an object UID (C-7, K-5).
    fn status_token(&self, kind: TokenKind, uid: &str) -> Fact<Option<StatusToken>>;
    /// Marks the token of `uid` as validated (seen by the webhook). Default: nothing.
    fn mark_status_token_validated(&self, _kind: TokenKind, _uid: &str) {}
}

/// Source of random bytes (nonces, generated master keys), injected for determinism.
pub trait Entropy {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]);
}

/// Operating-system randomness.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, buf: &mut [u8]) {
        rand::rng().fill_bytes(buf);
    }
}

/// A seeded, deterministic random source (tests, reproducible offline runs).
#[derive(Debug)]
pub struct SeededEntropy(Mutex<StdRng>);

impl SeededEntropy {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(StdRng::seed_from_u64(seed)))
    }
}

impl Entropy for SeededEntropy {
    fn fill(&self, buf: &mut [u8]) {
        let mut rng = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        rng.fill_bytes(buf);
    }
}

/// Everything a rule may consult besides the objects themselves.
pub struct AdmissionContext<'a> {
    /// Live cluster knowledge.
    pub facts: &'a dyn ClusterFacts,
    /// The KD namespace (`MY_NAMESPACE`); `None` if it could not be read.
    pub kd_namespace: Option<String>,
    /// Namespace of the request.
    pub namespace: String,
    /// Name of the object in the request.
    pub name: String,
    /// Requesting user.
    pub user: UserInfo,
    /// Randomness for nonces and generated keys.
    pub entropy: &'a dyn Entropy,
}

/// The outcome of one admission decision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Rejection messages (empty when allowed).
    pub messages: Vec<String>,
    /// JSON patch to apply (only when allowed).
    pub patch: Vec<PatchOperation>,
    /// Checks that were skipped because a fact was unknown.
    pub notes: Vec<String>,
    /// The messages go on the wire as they are, without the leading newline upstream puts
    /// before its joined messages (upstream built a few rejections, K-3, that way).
    pub verbatim: bool,
}

impl Verdict {
    /// Allowed with no patch.
    pub fn allow() -> Self {
        Self {
            allowed: true,
            ..Self::default()
        }
    }

    /// Rejected with a single message.
    pub fn reject(message: impl Into<String>) -> Self {
        Self {
            allowed: false,
            messages: vec![message.into()],
            ..Self::default()
        }
    }

    /// Rejected with a single message that goes on the wire as is (see [`Verdict::verbatim`]).
    pub fn reject_verbatim(message: impl Into<String>) -> Self {
        Self {
            verbatim: true,
            ..Self::reject(message)
        }
    }

    /// Builds the final verdict: allowed iff there are no messages; patches only when allowed.
    pub fn from_parts(messages: Vec<String>, patch: Vec<PatchOperation>, notes: Vec<String>) -> Self {
        if messages.is_empty() {
            Self {
                allowed: true,
                messages,
                patch,
                notes,
                verbatim: false,
            }
        } else {
            Self {
                allowed: false,
                messages,
                patch: Vec::new(),
                notes,
                verbatim: false,
            }
        }
    }

    /// The patch as JSON (what goes base64-encoded into the AdmissionResponse).
    pub fn patch_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&self.patch)
    }
}

/// A JSON pointer from path tokens (escaping `~` and `/`).
pub fn pointer<I, S>(tokens: I) -> PointerBuf
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    PointerBuf::from_tokens(tokens.into_iter().map(|t| t.into()))
}

/// `add` operation.
pub fn op_add<I, S>(tokens: I, value: Value) -> PatchOperation
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    PatchOperation::Add(AddOperation {
        path: pointer(tokens),
        value,
    })
}

/// `replace` operation.
pub fn op_replace<I, S>(tokens: I, value: Value) -> PatchOperation
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    PatchOperation::Replace(ReplaceOperation {
        path: pointer(tokens),
        value,
    })
}

/// `remove` operation.
pub fn op_remove<I, S>(tokens: I) -> PatchOperation
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    PatchOperation::Remove(RemoveOperation {
        path: pointer(tokens),
    })
}

/// Walks `keys` into `v` (object keys only).
pub fn get<'v>(v: &'v Value, keys: &[&str]) -> Option<&'v Value> {
    keys.iter().try_fold(v, |cur, k| cur.get(k))
}

/// A string at `keys`, if present and a string.
pub fn get_str<'v>(v: &'v Value, keys: &[&str]) -> Option<&'v str> {
    get(v, keys).and_then(Value::as_str)
}

/// The array at `keys`, or an empty slice.
pub fn get_array<'v>(v: &'v Value, keys: &[&str]) -> &'v [Value] {
    get(v, keys)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Whether the object at `keys[..n-1]` has the key `keys[n-1]` (even if null).
pub fn has_key(v: &Value, keys: &[&str]) -> bool {
    match keys.split_last() {
        Some((last, parent)) => get(v, parent)
            .and_then(Value::as_object)
            .is_some_and(|o| o.contains_key(*last)),
        None => true,
    }
}

/// Note text for a skipped rule.
pub(crate) fn offline_note(rule: &str, what: &str) -> String {
    format!("{rule} not checked offline: {what}")
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_escapes_tokens() {
        assert_eq!(
            pointer(["metadata", "labels", "kubedirector.hpe.com/restoring"]).as_str(),
            "/metadata/labels/kubedirector.hpe.com~1restoring"
        );
    }

    #[test]
    fn verdict_drops_patch_when_rejected() {
        let v = Verdict::from_parts(vec!["x".into()], vec![op_remove(["spec"])], vec![]);
        assert!(!v.allowed);
        assert!(v.patch.is_empty());
    }
}
