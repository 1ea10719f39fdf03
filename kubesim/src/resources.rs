//! The resource registry: which group/version/resources the server serves, with their kinds,
//! scope, verbs, short names, categories and subresources. Built-in kinds are fixed; custom
//! resources are added and removed as CustomResourceDefinitions come and go.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Identifies a served resource: API group (empty for core), version and plural resource name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    /// API group, `""` for the core group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Plural resource name, e.g. `pods`.
    pub resource: String,
}

impl ResourceKey {
    /// Build a key.
    pub fn new(group: &str, version: &str, resource: &str) -> Self {
        ResourceKey {
            group: group.into(),
            version: version.into(),
            resource: resource.into(),
        }
    }

    /// A core/v1 resource, e.g. `ResourceKey::core("pods")`.
    pub fn core(resource: &str) -> Self {
        Self::new("", "v1", resource)
    }

    /// An apps/v1 resource, e.g. `ResourceKey::apps("statefulsets")`.
    pub fn apps(resource: &str) -> Self {
        Self::new("apps", "v1", resource)
    }

    /// `group/version` (or `v1` for core).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The version-independent storage key.
    pub fn group_resource(&self) -> GroupResource {
        storage_of(&self.group, &self.resource)
    }
}

/// The storage of a group/resource: events.k8s.io events share core/v1 events' storage.
pub fn storage_of(group: &str, resource: &str) -> GroupResource {
    if group == "events.k8s.io" && resource == "events" {
        GroupResource::new("", "events")
    } else {
        GroupResource::new(group, resource)
    }
}

/// Version-independent identity of a stored resource (objects are stored once per group/resource).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    /// API group (`""` for core).
    pub group: String,
    /// Plural resource name.
    pub resource: String,
}

impl GroupResource {
    /// Build one.
    pub fn new(group: &str, resource: &str) -> Self {
        GroupResource {
            group: group.into(),
            resource: resource.into(),
        }
    }
}

/// A subresource (`pods/status`, `statefulsets/scale`, `pods/exec`...).
#[derive(Debug, Clone)]
pub struct SubresourceInfo {
    /// The subresource name (`status`).
    pub name: String,
    /// The kind it takes/returns.
    pub kind: String,
    /// Group of that kind when it differs from the parent (e.g. `autoscaling` for Scale).
    pub group: Option<String>,
    /// Version of that kind when it differs.
    pub version: Option<String>,
    /// Verbs.
    pub verbs: Vec<String>,
}

/// Scale subresource paths of a custom resource.
#[derive(Debug, Clone)]
pub struct ScalePaths {
    /// `.spec.replicas`.
    pub spec_replicas: String,
    /// `.status.replicas`.
    pub status_replicas: String,
    /// Optional `.status.labelSelector`.
    pub label_selector: Option<String>,
}

/// A printer column (CRD `additionalPrinterColumns`).
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// OpenAPI type (`string`, `integer`, `date`...).
    pub type_: String,
    /// Optional format.
    pub format: String,
    /// Description.
    pub description: String,
    /// Priority (0 shown by default).
    pub priority: i64,
    /// JSONPath.
    pub json_path: String,
}

/// Everything the server knows about one served group/version/resource.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    /// API group.
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural name.
    pub resource: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// List kind.
    pub list_kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Verbs on the main resource.
    pub verbs: Vec<String>,
    /// Short names.
    pub short_names: Vec<String>,
    /// Categories (`all`...).
    pub categories: Vec<String>,
    /// Subresources.
    pub subresources: Vec<SubresourceInfo>,
    /// Whether metadata.generation is maintained.
    pub has_generation: bool,
    /// Custom resource: the owning CRD's name.
    pub crd: Option<String>,
    /// Custom resource: the version's openAPIV3Schema.
    pub schema: Option<Value>,
    /// Custom resource: printer columns.
    pub printer_columns: Vec<PrinterColumn>,
    /// Custom resource: scale paths.
    pub scale: Option<ScalePaths>,
    /// Whether this version is the storage/preferred version.
    pub preferred: bool,
}

impl ResourceInfo {
    /// The key of this info.
    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(&self.group, &self.version, &self.resource)
    }

    /// The storage key.
    pub fn group_resource(&self) -> GroupResource {
        storage_of(&self.group, &self.resource)
    }

    /// Whether objects are stored in another resource's form and converted on the way
    /// (events.k8s.io/v1 Events live in the core/v1 Event storage, like in kube-apiserver).
    pub fn converted(&self) -> bool {
        self.group == "events.k8s.io" && self.resource == "events"
    }

    /// `group/version`.
    pub fn api_version(&self) -> String {
        self.key().api_version()
    }

    /// Whether a subresource exists.
    pub fn has_sub(&self, name: &str) -> bool {
        self.subresources.iter().any(|s| s.name == name)
    }

    /// Whether there is a status subresource.
    pub fn has_status(&self) -> bool {
        self.has_sub("status")
    }

    /// Whether a verb is allowed on the main resource.
    pub fn allows(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// Discovery `APIResource` entries (main resource + subresources).
    pub fn discovery_entries(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut main = json!({
            "name": self.resource,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": self.verbs,
        });
        if !self.short_names.is_empty() {
            main["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            main["categories"] = json!(self.categories);
        }
        main["storageVersionHash"] = json!(storage_hash(&self.group, &self.resource));
        out.push(main);
        for s in &self.subresources {
            let mut e = json!({
                "name": format!("{}/{}", self.resource, s.name),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": s.kind,
                "verbs": s.verbs,
            });
            if let Some(g) = &s.group {
                e["group"] = json!(g);
            }
            if let Some(v) = &s.version {
                e["version"] = json!(v);
            }
            out.push(e);
        }
        out
    }
}

fn storage_hash(group: &str, resource: &str) -> String {
    // A stable, opaque 11-character base64-ish hash like the real server's.
    let mut h: u64 = 1469598103934665603;
    for b in group.bytes().chain([b'/']).chain(resource.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(1099511628211);
    }
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..11)
        .map(|i| alphabet[((h >> (i * 5)) & 63) as usize] as char)
        .collect()
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn verbs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn status_sub(kind: &str) -> SubresourceInfo {
    SubresourceInfo {
        name: "status".into(),
        kind: kind.into(),
        group: None,
        version: None,
        verbs: verbs(&["get", "patch", "update"]),
    }
}

fn scale_sub() -> SubresourceInfo {
    SubresourceInfo {
        name: "scale".into(),
        kind: "Scale".into(),
        group: Some("autoscaling".into()),
        version: Some("v1".into()),
        verbs: verbs(&["get", "patch", "update"]),
    }
}

fn sub(name: &str, kind: &str, v: &[&str]) -> SubresourceInfo {
    SubresourceInfo {
        name: name.into(),
        kind: kind.into(),
        group: None,
        version: None,
        verbs: verbs(v),
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    resource: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    cats: &[&str],
    subs: Vec<SubresourceInfo>,
    gen: bool,
) -> ResourceInfo {
    ResourceInfo {
        group: group.into(),
        version: version.into(),
        resource: resource.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        namespaced,
        verbs: verbs(ALL_VERBS),
        short_names: verbs(short),
        categories: verbs(cats),
        subresources: subs,
        has_generation: gen,
        crd: None,
        schema: None,
        printer_columns: Vec::new(),
        scale: None,
        preferred: true,
    }
}

/// The built-in resources.
pub fn builtins() -> Vec<ResourceInfo> {
    let all = &["all"];
    let mut v = vec![
        builtin(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            &[],
            vec![status_sub("Namespace"), sub("finalize", "Namespace", &["update"])],
            false,
        ),
        builtin(
            "",
            "v1",
            "pods",
            "Pod",
            true,
            &["po"],
            all,
            vec![
                sub("attach", "PodAttachOptions", &["create", "get"]),
                sub("binding", "Binding", &["create"]),
                sub("eviction", "Eviction", &["create"]),
                sub("exec", "PodExecOptions", &["create", "get"]),
                sub("log", "Pod", &["get"]),
                sub("portforward", "PodPortForwardOptions", &["create", "get"]),
                status_sub("Pod"),
            ],
            false,
        ),
        builtin(
            "",
            "v1",
            "services",
            "Service",
            true,
            &["svc"],
            all,
            vec![status_sub("Service")],
            false,
        ),
        builtin(
            "",
            "v1",
            "endpoints",
            "Endpoints",
            true,
            &["ep"],
            &[],
            vec![],
            false,
        ),
        builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            &[],
            vec![],
            false,
        ),
        builtin("", "v1", "secrets", "Secret", true, &[], &[], vec![], false),
        builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            &[],
            vec![sub("token", "TokenRequest", &["create"])],
            false,
        ),
        builtin(
            "",
            "v1",
            "persistentvolumeclaims",
            "PersistentVolumeClaim",
            true,
            &["pvc"],
            &[],
            vec![status_sub("PersistentVolumeClaim")],
            false,
        ),
        builtin(
            "",
            "v1",
            "persistentvolumes",
            "PersistentVolume",
            false,
            &["pv"],
            &[],
            vec![status_sub("PersistentVolume")],
            false,
        ),
        builtin(
            "",
            "v1",
            "nodes",
            "Node",
            false,
            &["no"],
            &[],
            vec![status_sub("Node")],
            false,
        ),
        builtin("", "v1", "events", "Event", true, &["ev"], &[], vec![], false),
        builtin(
            "",
            "v1",
            "limitranges",
            "LimitRange",
            true,
            &["limits"],
            &[],
            vec![],
            false,
        ),
        builtin(
            "",
            "v1",
            "resourcequotas",
            "ResourceQuota",
            true,
            &["quota"],
            &[],
            vec![status_sub("ResourceQuota")],
            false,
        ),
        builtin(
            "apps",
            "v1",
            "statefulsets",
            "StatefulSet",
            true,
            &["sts"],
            all,
            vec![scale_sub(), status_sub("StatefulSet")],
            true,
        ),
        builtin(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            all,
            vec![scale_sub(), status_sub("Deployment")],
            true,
        ),
        builtin(
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            true,
            &["rs"],
            all,
            vec![scale_sub(), status_sub("ReplicaSet")],
            true,
        ),
        builtin(
            "apps",
            "v1",
            "daemonsets",
            "DaemonSet",
            true,
            &["ds"],
            all,
            vec![status_sub("DaemonSet")],
            true,
        ),
        builtin(
            "apps",
            "v1",
            "controllerrevisions",
            "ControllerRevision",
            true,
            &[],
            &[],
            vec![],
            false,
        ),
        builtin(
            "batch",
            "v1",
            "jobs",
            "Job",
            true,
            &[],
            all,
            vec![status_sub("Job")],
            true,
        ),
        builtin(
            "batch",
            "v1",
            "cronjobs",
            "CronJob",
            true,
            &["cj"],
            all,
            vec![status_sub("CronJob")],
            true,
        ),
        builtin(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            &["pdb"],
            &[],
            vec![status_sub("PodDisruptionBudget")],
            true,
        ),
        builtin(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "EndpointSlice",
            true,
            &[],
            &[],
            vec![],
            false,
        ),
        builtin(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            &[],
            vec![],
            false,
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            &[],
            vec![],
            false,
        ),
        builtin(
            "storage.k8s.io",
            "v1",
            "storageclasses",
            "StorageClass",
            false,
            &["sc"],
            &[],
            vec![],
            false,
        ),
        builtin(
            "networking.k8s.io",
            "v1",
            "ingresses",
            "Ingress",
            true,
            &["ing"],
            &[],
            vec![status_sub("Ingress")],
            true,
        ),
        builtin(
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "NetworkPolicy",
            true,
            &["netpol"],
            &[],
            vec![],
            true,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            "Role",
            true,
            &[],
            &[],
            vec![],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
            &[],
            &[],
            vec![],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
            &[],
            &[],
            vec![],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            &[],
            vec![],
            false,
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            &["api-extensions"],
            vec![status_sub("CustomResourceDefinition")],
            true,
        ),
        builtin(
            "admissionregistration.k8s.io",
            "v1",
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            false,
            &[],
            &["api-extensions"],
            vec![],
            true,
        ),
        builtin(
            "admissionregistration.k8s.io",
            "v1",
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
            false,
            &[],
            &["api-extensions"],
            vec![],
            true,
        ),
    ];
    for (g, r, k, ns) in [
        (
            "authorization.k8s.io",
            "subjectaccessreviews",
            "SubjectAccessReview",
            false,
        ),
        (
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            false,
        ),
        (
            "authorization.k8s.io",
            "localsubjectaccessreviews",
            "LocalSubjectAccessReview",
            true,
        ),
        (
            "authorization.k8s.io",
            "selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
            false,
        ),
        ("authentication.k8s.io", "tokenreviews", "TokenReview", false),
        (
            "authentication.k8s.io",
            "selfsubjectreviews",
            "SelfSubjectReview",
            false,
        ),
    ] {
        let mut i = builtin(g, "v1", r, k, ns, &[], &[], vec![], false);
        i.verbs = verbs(&["create"]);
        v.push(i);
    }
    v
}

/// The live registry (built-ins plus CRD-defined resources).
#[derive(Debug, Default)]
pub struct Registry {
    inner: RwLock<Vec<Arc<ResourceInfo>>>,
}

impl Registry {
    /// Registry of built-in resources.
    pub fn with_builtins() -> Self {
        Registry {
            inner: RwLock::new(builtins().into_iter().map(Arc::new).collect()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<ResourceInfo>>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Look up a served group/version/resource.
    pub fn get(&self, key: &ResourceKey) -> Option<Arc<ResourceInfo>> {
        self.read()
            .iter()
            .find(|i| i.group == key.group && i.version == key.version && i.resource == key.resource)
            .cloned()
    }

    /// The preferred version's info of a group/resource.
    pub fn get_gr(&self, gr: &GroupResource) -> Option<Arc<ResourceInfo>> {
        let all = self.read();
        all.iter()
            .find(|i| i.group == gr.group && i.resource == gr.resource && i.preferred)
            .or_else(|| {
                all.iter()
                    .find(|i| i.group == gr.group && i.resource == gr.resource)
            })
            .cloned()
    }

    /// Find by apiVersion + kind.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        self.read()
            .iter()
            .find(|i| i.api_version() == api_version && i.kind == kind)
            .cloned()
    }

    /// All entries.
    pub fn all(&self) -> Vec<Arc<ResourceInfo>> {
        self.read().clone()
    }

    /// Replace all entries owned by a CRD with `infos` (empty to remove).
    pub fn set_crd(&self, crd_name: &str, infos: Vec<ResourceInfo>) {
        let mut w = self.inner.write().unwrap_or_else(|e| e.into_inner());
        w.retain(|i| i.crd.as_deref() != Some(crd_name));
        w.extend(infos.into_iter().map(Arc::new));
    }

    /// Groups with their versions, in registration order (preferred version first).
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for i in self.read().iter() {
            let e = out.entry(i.group.clone()).or_default();
            if !e.contains(&i.version) {
                if i.preferred {
                    e.insert(0, i.version.clone());
                } else {
                    e.push(i.version.clone());
                }
            }
        }
        out
    }

    /// Ordered list of group names as first registered (built-ins first).
    pub fn group_order(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for i in self.read().iter() {
            if !out.contains(&i.group) {
                out.push(i.group.clone());
            }
        }
        out
    }
}
