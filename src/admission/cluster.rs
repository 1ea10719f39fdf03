//! KubeDirectorCluster admission (spec 2.3): rules C-1..C-43, mutations C-M1..C-M8 and the
//! C-5 restore label, in upstream's processing order with its early exits.
//!
//! Deviations from upstream, all requested by spec section 7:
//! * R7: the SubjectAccessReviews (C-20, C-38) use plural resource names, C-38 asks about the
//!   projected PVC itself (not the service-account name), and a review is failed when it is not
//!   `allowed` (upstream only failed on `denied`).
//! * R9: the file-injection reachability check (C-29) is delegated to
//!   [`ClusterFacts::url_reachable`](super::ClusterFacts::url_reachable), whose implementations use a short timeout and verify TLS.
//! * R20: C-17 compares quantities exactly (not rounded-up integers) and reads `requests`, else
//!   `limits`; the C-12 message renders the limit properly; the C-31 "unable to find" message
//!   names the namespace rather than the prefix; `namingScheme` is immutable after creation
//!   (`The namingScheme property is read-only.`, also when an update omits it, since C-M6
//!   would otherwise patch in the kdconfig default).
//! * C-36/C-37 have no exact upstream text in the spec; the messages here are ours.
//!
//! Upstream semantics kept on purpose: documents are decoded and compared as upstream's Go
//! types ([`gotypes`](super::gotypes): `equality.Semantic.DeepEqual` for C-6, C-7, C-8 and
//! C-42), the C-5 label patch is a whole-map `add` when the object has no (or an empty) label
//! map and nothing when the label is already there, and per role the label/annotation errors
//! come in upstream's order (pod labels, pod annotations, service labels, service annotations).

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Map, Value};

use super::{
    app::role_cardinality,
    get, get_array, get_str,
    gotypes::{self, go_equal},
    labels::{validate_annotations, validate_labels},
    offline_note, op_add, op_replace,
    quantity::Quantity,
    secretkeys, AdmissionContext, Fact, Operation, SarRequest, TokenKind, Verdict, ALLOW_DELETE_LABEL,
    RESTORING_LABEL, STATUS_BACKUP_ANNOTATION,
};

/// Maximum total members of one kdcluster.
pub const MAX_KD_MEMBERS: i64 = 1000;
/// The cluster state the webhook patches in on a spec change.
pub const SPEC_MODIFIED: &str = "spec modified";
/// Default kdcluster service type.
pub const DEFAULT_SERVICE_TYPE: &str = "LoadBalancer";
/// Default kdcluster naming scheme.
pub const DEFAULT_NAMING_SCHEME: &str = "UID";

const STATUS_READ_ONLY: &str = "KubeDirector-related status properties are read-only";
const MULTIPLE_SPEC_CHANGE: &str =
    "Change to spec not allowed before previous spec change has been processed.";
const PENDING_NOTIFIES: &str =
    "Change to spec not allowed because some members have not processed notifications of previous change.";
const MOUNT_ERROR_TEMPLATE: &str = "Unexpected error while validating for unique volume mount paths for role";

/// Checks a kdcluster document decodes as upstream's Go KubeDirectorCluster does (C-1, C-4);
/// returns the decode error text.
pub fn decode_error(obj: &Value) -> Option<String> {
    gotypes::decode_error(obj, &gotypes::CLUSTER)
}

/// The kdconfig defaults the cluster rules consult (spec 1.5).
#[derive(Debug, Clone, Default)]
pub struct KdSettings {
    spec: Value,
}

impl KdSettings {
    /// Settings from the kdconfig fact (absent or unknown kdconfig: all defaults).
    pub fn from_fact(f: &Fact<Option<Value>>) -> Self {
        match f {
            Fact::Known(Some(cfg)) => Self {
                spec: cfg.get("spec").cloned().unwrap_or(Value::Null),
            },
            _ => Self::default(),
        }
    }
    fn str(&self, key: &str) -> Option<&str> {
        self.spec.get(key).and_then(Value::as_str)
    }
    /// `defaultServiceType` or `LoadBalancer`.
    pub fn service_type(&self) -> &str {
        self.str("defaultServiceType").unwrap_or(DEFAULT_SERVICE_TYPE)
    }
    /// `defaultNamingScheme` or `UID`.
    pub fn naming_scheme(&self) -> &str {
        self.str("defaultNamingScheme").unwrap_or(DEFAULT_NAMING_SCHEME)
    }
    /// `defaultStorageClassName` ("" when unset).
    pub fn default_storage_class(&self) -> &str {
        self.str("defaultStorageClassName").unwrap_or_default()
    }
    /// `requiredSecretPrefix` ("" when unset).
    pub fn required_secret_prefix(&self) -> &str {
        self.str("requiredSecretPrefix").unwrap_or_default()
    }
    /// `masterEncryptionKey` when set.
    pub fn master_key(&self) -> Option<&str> {
        self.str("masterEncryptionKey").filter(|k| !k.is_empty())
    }
    /// `forceSharedMemorySizeSupport` (tri-state).
    pub fn force_shared_memory(&self) -> Option<bool> {
        self.spec
            .get("forceSharedMemorySizeSupport")
            .and_then(Value::as_bool)
    }
    /// `nativeSystemdSupport` (default false).
    pub fn native_systemd(&self) -> bool {
        self.spec
            .get("nativeSystemdSupport")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// Finds the kdapp of a kdcluster (spec 3.14): `local` → cluster namespace only, `system` → KD
/// namespace only, unset → cluster namespace then KD namespace.
pub fn resolve_app(
    cluster_ns: &str,
    app: &str,
    catalog: Option<&str>,
    ctx: &AdmissionContext<'_>,
) -> Fact<Option<Value>> {
    let kd_ns = ctx.kd_namespace.as_deref();
    let lookup = |ns: Option<&str>| match ns {
        Some(ns) => ctx.facts.app(ns, app),
        None => Fact::Known(None),
    };
    match catalog {
        Some("local") => lookup(Some(cluster_ns)),
        Some("system") => lookup(kd_ns),
        Some(_) => Fact::Known(None),
        None => match lookup(Some(cluster_ns)) {
            Fact::Known(None) => lookup(kd_ns),
            other => other,
        },
    }
}

fn labels_of(obj: Option<&Value>) -> Option<&Map<String, Value>> {
    obj.and_then(|o| get(o, &["metadata", "labels"]))
        .and_then(Value::as_object)
}

fn has_label(obj: Option<&Value>, label: &str) -> bool {
    labels_of(obj).is_some_and(|l| l.contains_key(label))
}

fn i64_at(v: &Value, keys: &[&str]) -> Option<i64> {
    get(v, keys).and_then(Value::as_i64)
}

fn app_role<'a>(app: &'a Value, id: &str) -> Option<&'a Value> {
    get_array(app, &["spec", "roles"])
        .iter()
        .find(|r| get_str(r, &["id"]) == Some(id))
}

/// Mutable state of one admission pass.
struct Pass<'c, 'a> {
    ctx: &'c AdmissionContext<'a>,
    errors: Vec<String>,
    patch: Vec<json_patch::PatchOperation>,
    notes: Vec<String>,
}

impl Pass<'_, '_> {
    fn note(&mut self, rule: &str, what: &str) {
        let n = offline_note(rule, what);
        if !self.notes.contains(&n) {
            self.notes.push(n);
        }
    }
    fn verdict(self) -> Verdict {
        Verdict::from_parts(self.errors, self.patch, self.notes)
    }
}

/// Admits a KubeDirectorCluster request.
pub fn admit_cluster(
    op: Operation,
    old: Option<&Value>,
    new: Option<&Value>,
    ctx: &AdmissionContext<'_>,
) -> Verdict {
    if op == Operation::Connect {
        return Verdict::allow();
    }
    // C-1
    if matches!(op, Operation::Update | Operation::Delete) {
        let Some(old_obj) = old else {
            return Verdict::reject(super::MISSING_OBJECT);
        };
        if let Some(err) = decode_error(old_obj) {
            return Verdict::reject(err);
        }
    }
    let is_restoring = has_label(old, RESTORING_LABEL);
    // C-2, C-3
    if op == Operation::Delete {
        if is_restoring && !has_label(old, ALLOW_DELETE_LABEL) {
            return Verdict::reject(format!(
                "delete not allowed while {RESTORING_LABEL} label exists, unless {ALLOW_DELETE_LABEL} label also exists"
            ));
        }
        return Verdict::allow();
    }
    // C-4
    let Some(cr) = new else {
        return Verdict::reject(super::MISSING_OBJECT);
    };
    if let Some(err) = decode_error(cr) {
        return Verdict::reject(err);
    }
    // C-5: restore from a status backup.
    if op == Operation::Create
        && get(cr, &["metadata", "annotations"])
            .and_then(Value::as_object)
            .is_some_and(|a| a.contains_key(STATUS_BACKUP_ANNOTATION))
    {
        // Upstream (addRestoreLabel): no or empty labels → add the whole map; otherwise add the
        // single key, unless the label is already there (then no patch at all).
        let mut v = Verdict::allow();
        match labels_of(Some(cr)) {
            Some(l) if !l.is_empty() => {
                if !l.contains_key(RESTORING_LABEL) {
                    v.patch
                        .push(op_add(["metadata", "labels", RESTORING_LABEL], json!("")));
                }
            }
            _ => v
                .patch
                .push(op_add(["metadata", "labels"], json!({ RESTORING_LABEL: "" }))),
        }
        return v;
    }
    let old_spec = old.and_then(|o| o.get("spec"));
    let spec_changed = !go_equal(cr.get("spec"), old_spec, &gotypes::CLUSTER_SPEC);
    // C-6
    if op == Operation::Update && is_restoring && spec_changed {
        return Verdict::reject(format!(
            "spec changes not allowed while {RESTORING_LABEL} label exists"
        ));
    }
    let mut pass = Pass {
        ctx,
        errors: Vec::new(),
        patch: Vec::new(),
        notes: Vec::new(),
    };
    // C-7
    if let Some(reject) = check_status(cr, old, TokenKind::Cluster, ctx) {
        return reject;
    }
    // C-8
    if op == Operation::Update {
        let leaving_restore = is_restoring && !has_label(Some(cr), RESTORING_LABEL);
        if !leaving_restore && !spec_changed {
            return Verdict::allow();
        }
    }
    let cluster_ns = get_str(cr, &["metadata", "namespace"])
        .unwrap_or(&ctx.namespace)
        .to_string();
    let app_name = get_str(cr, &["spec", "app"]).unwrap_or_default().to_string();
    let catalog = get_str(cr, &["spec", "appCatalog"]);
    // C-9 / C-M1
    let app = match resolve_app(&cluster_ns, &app_name, catalog, ctx) {
        Fact::Known(Some(app)) => app,
        Fact::Known(None) => {
            return Verdict::reject(format!(
                "Invalid app({app_name}). This app resource ID has not been registered."
            ))
        }
        Fact::Unknown => {
            pass.note("C-9", "kdapp lookup (and every rule that needs the kdapp)");
            return pass.verdict();
        }
    };
    if catalog.is_none() {
        let local = get_str(&app, &["metadata", "namespace"]).unwrap_or(&cluster_ns) == cluster_ns;
        pass.patch.push(op_add(
            ["spec", "appCatalog"],
            json!(if local { "local" } else { "system" }),
        ));
    }
    let settings = KdSettings::from_fact(&ctx.facts.kd_config());
    if ctx.facts.kd_config() == Fact::Unknown {
        pass.note("C-24..C-32", "kdconfig defaults (built-in defaults used)");
    }
    // C-10
    if op == Operation::Update {
        spec_change(cr, &mut pass);
    }
    let mut roles: Vec<Value> = get_array(cr, &["spec", "roles"]).to_vec();
    // C-11..C-13
    cardinality(&mut roles, &app, &mut pass);
    // C-14..C-16
    cluster_roles(&roles, &app, &mut pass);
    // C-17, C-18
    min_resources(&roles, &app, &mut pass);
    min_storage(&roles, &app, &mut pass);
    // C-19, C-20
    service_accounts(&roles, &cluster_ns, &mut pass);
    // C-21..C-24
    storage_classes(&mut roles, &settings, &mut pass);
    // C-25, C-26
    shared_memory(&roles, &settings, &mut pass);
    // C-27, C-28
    if get(cr, &["spec", "serviceType"]).is_none_or(Value::is_null) {
        pass.patch
            .push(op_add(["spec", "serviceType"], json!(settings.service_type())));
    }
    if get(cr, &["spec", "namingScheme"]).is_none_or(Value::is_null) {
        pass.patch
            .push(op_add(["spec", "namingScheme"], json!(settings.naming_scheme())));
    }
    // C-29
    file_injections(&roles, &mut pass);
    // C-30, C-31
    secrets(cr, &roles, &cluster_ns, &settings, &mut pass);
    // C-32
    secret_keys(&roles, old, &settings, &mut pass);
    // C-33..C-39
    volume_projections(cr, &roles, &app, &cluster_ns, &settings, &mut pass);
    // C-40..C-43
    if op == Operation::Update {
        if let Some(old_obj) = old {
            let change_errors = immutable_changes(cr, &roles, old_obj);
            if !change_errors.is_empty() {
                pass.errors = change_errors;
            }
        }
    }
    pass.verdict()
}

/// C-7 / K-5 status anti-tamper. Returns a rejection, or `None` to continue. An unknown token
/// table is treated as "no token recorded" (so a CREATE carrying a status is rejected).
pub fn check_status(
    obj: &Value,
    old: Option<&Value>,
    kind: TokenKind,
    ctx: &AdmissionContext<'_>,
) -> Option<Verdict> {
    let uid = get_str(obj, &["metadata", "uid"]).unwrap_or_default();
    let status = obj.get("status").filter(|s| !s.is_null());
    if let Some(status) = status {
        let old_status = old.and_then(|o| o.get("status"));
        let token = match ctx.facts.status_token(kind, uid) {
            Fact::Known(t) => t,
            Fact::Unknown => None,
        };
        let status_type = match kind {
            TokenKind::Cluster => &gotypes::CLUSTER_STATUS,
            TokenKind::Config => &gotypes::CONFIG_STATUS,
        };
        let unchanged = go_equal(Some(status), old_status, status_type);
        match &token {
            Some(t) if get_str(status, &["generationUID"]).unwrap_or_default() != t.uid => {
                return Some(Verdict::reject(STATUS_READ_ONLY));
            }
            None if !unchanged => return Some(Verdict::reject(STATUS_READ_ONLY)),
            _ => {}
        }
        if token.is_some_and(|t| t.validated) && !unchanged {
            return Some(Verdict::reject(STATUS_READ_ONLY));
        }
    }
    if !uid.is_empty() {
        ctx.facts.mark_status_token_validated(kind, uid);
    }
    None
}

fn spec_change(cr: &Value, pass: &mut Pass<'_, '_>) {
    let Some(status) = cr.get("status").filter(|s| !s.is_null()) else {
        pass.errors.push(MULTIPLE_SPEC_CHANGE.to_string());
        return;
    };
    let pending = get_array(status, &["roles"]).iter().any(|r| {
        get_array(r, &["members"])
            .iter()
            .any(|m| !get_array(m, &["stateDetail", "pendingNotifyCmds"]).is_empty())
    });
    if pending {
        pass.errors.push(PENDING_NOTIFIES.to_string());
        return;
    }
    if get_str(status, &["state"]) == Some(SPEC_MODIFIED) {
        pass.errors.push(MULTIPLE_SPEC_CHANGE.to_string());
        return;
    }
    pass.patch
        .push(op_replace(["status", "state"], json!(SPEC_MODIFIED)));
}

fn cardinality(roles: &mut [Value], app: &Value, pass: &mut Pass<'_, '_>) {
    let mut any_error = false;
    let mut total: i64 = 0;
    let mut patches = Vec::new();
    for (i, role) in roles.iter_mut().enumerate() {
        let id = get_str(role, &["id"]).unwrap_or_default().to_string();
        let Some(app_role) = app_role(app, &id) else {
            continue;
        };
        let card_str = get_str(app_role, &["cardinality"]).unwrap_or_default();
        let (card, scale_out) = role_cardinality(card_str);
        let members = match i64_at(role, &["members"]) {
            Some(m) => {
                let bad = if scale_out { m < card } else { m != card };
                if bad {
                    any_error = true;
                    pass.errors.push(format!(
                        "Invalid member count for role({id}). Specified member count:{m} Role cardinality:{card_str}"
                    ));
                }
                m
            }
            None => {
                if let Some(o) = role.as_object_mut() {
                    o.insert("members".into(), json!(card));
                }
                patches.push(op_add(["spec", "roles", &i.to_string(), "members"], json!(card)));
                card
            }
        };
        total += members;
        if total > MAX_KD_MEMBERS {
            any_error = true;
            pass.errors.push(format!(
                "Maximum number of total members per KD cluster supported is {MAX_KD_MEMBERS}."
            ));
            break;
        }
        let base = format!("spec.roles[{i}]");
        let mut label_errors = Vec::new();
        // upstream's validateLabelsAndAnnotations order
        label_errors.extend(validate_labels(
            role.get("podLabels"),
            &format!("{base}.podLabels"),
        ));
        label_errors.extend(validate_annotations(
            role.get("podAnnotations"),
            &format!("{base}.podAnnotations"),
        ));
        label_errors.extend(validate_labels(
            role.get("serviceLabels"),
            &format!("{base}.serviceLabels"),
        ));
        label_errors.extend(validate_annotations(
            role.get("serviceAnnotations"),
            &format!("{base}.serviceAnnotations"),
        ));
        if !label_errors.is_empty() {
            any_error = true;
            pass.errors.extend(label_errors);
        }
    }
    if any_error {
        pass.patch.clear();
    } else {
        pass.patch.extend(patches);
    }
}

fn cluster_roles(roles: &[Value], app: &Value, pass: &mut Pass<'_, '_>) {
    let app_name = get_str(app, &["metadata", "name"]).unwrap_or_default();
    let all: Vec<&str> = get_array(app, &["spec", "roles"])
        .iter()
        .filter_map(|r| get_str(r, &["id"]))
        .collect();
    let mut configured = Vec::new();
    let mut seen = HashSet::new();
    let mut unique = true;
    for role in roles {
        let id = get_str(role, &["id"]).unwrap_or_default();
        if all.contains(&id) {
            configured.push(id);
        } else {
            pass.errors.push(format!(
                "Invalid role({id}) in app({app_name}) specified. Valid roles: \"{}\"",
                all.join(",")
            ));
        }
        if !seen.insert(id) {
            unique = false;
        }
    }
    if !unique {
        pass.errors
            .push("Each id in the roles array must be unique.".to_string());
    }
    for active in get_array(app, &["spec", "config", "selectedRoles"])
        .iter()
        .filter_map(Value::as_str)
    {
        if configured.contains(&active) {
            continue;
        }
        if let Some(r) = app_role(app, active) {
            let (min, _) = role_cardinality(get_str(r, &["cardinality"]).unwrap_or_default());
            if min != 0 {
                pass.errors.push(format!(
                    "Active role({active}) in app({app_name}) must have its configuration included in the roles array."
                ));
            }
        }
    }
}

fn min_resources(roles: &[Value], app: &Value, pass: &mut Pass<'_, '_>) {
    for role in roles {
        let id = get_str(role, &["id"]).unwrap_or_default();
        let Some(app_role) = app_role(app, id) else {
            continue;
        };
        let Some(Value::Object(mins)) = app_role.get("minResources") else {
            continue;
        };
        let mut entries: Vec<_> = mins.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        for (res, min_v) in entries {
            let Ok(min) = Quantity::parse_json(min_v) else {
                continue;
            };
            if min.is_zero() {
                continue;
            }
            let given =
                get(role, &["resources", "requests", res]).or(get(role, &["resources", "limits", res]));
            // Quantities are rendered canonically, as Go's Quantity.String() does.
            let fail = |v: &str| {
                format!(
                    "Specified resource(\"{res}\") value(\"{v}\") for role(\"{id}\") is invalid. Minimum value must be \"{min}\"."
                )
            };
            match given {
                None => pass.errors.push(fail("0")),
                Some(v) => {
                    if let Ok(q) = Quantity::parse_json(v) {
                        if q < min {
                            pass.errors.push(fail(&q.to_string()));
                        }
                    }
                }
            }
        }
    }
}

fn min_storage(roles: &[Value], app: &Value, pass: &mut Pass<'_, '_>) {
    for role in roles {
        let id = get_str(role, &["id"]).unwrap_or_default();
        let Some(app_role) = app_role(app, id) else {
            continue;
        };
        let Some(min_storage) = app_role.get("minStorage").filter(|m| !m.is_null()) else {
            continue;
        };
        let min_s = get_str(min_storage, &["size"]).unwrap_or_default();
        let Ok(min) = Quantity::parse(min_s) else { continue };
        let msg = |size: &str| {
            format!(
                "Specified persistent storage size(\"{size}\") for role(\"{id}\") is invalid. Minimum size must be \"{min_s}\"."
            )
        };
        match role.get("storage").filter(|s| !s.is_null()) {
            None => {
                let ephemeral = get(min_storage, &["ephemeralModeSupported"])
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if !ephemeral {
                    pass.errors.push(msg("0"));
                }
            }
            Some(storage) => {
                let size = get_str(storage, &["size"]).unwrap_or_default();
                if let Ok(q) = Quantity::parse(size) {
                    if q.value() < min.value() {
                        pass.errors.push(msg(size));
                    }
                }
            }
        }
    }
}

fn sar(pass: &mut Pass<'_, '_>, rule: &str, resource: &str, name: &str, ns: &str) {
    let req = SarRequest {
        user: pass.ctx.user.clone(),
        verb: "get".into(),
        resource: resource.into(),
        name: name.into(),
        namespace: ns.into(),
    };
    match pass.ctx.facts.subject_access_review(&req) {
        Fact::Unknown => pass.note(rule, "SubjectAccessReview"),
        Fact::Known(ans) if !ans.allowed || ans.denied => {
            pass.errors.push(if ans.reason.is_empty() {
                format!(
                    "user({}) is not allowed to get {resource}({name}) in namespace({ns})",
                    pass.ctx.user.username
                )
            } else {
                ans.reason
            });
        }
        Fact::Known(_) => {}
    }
}

fn service_accounts(roles: &[Value], ns: &str, pass: &mut Pass<'_, '_>) {
    for role in roles {
        let id = get_str(role, &["id"]).unwrap_or_default();
        let Some(sa) = get_str(role, &["serviceAccountName"]).filter(|s| !s.is_empty()) else {
            continue;
        };
        match pass.ctx.facts.service_account_exists(ns, sa) {
            Fact::Unknown => pass.note("C-19", "service account existence"),
            Fact::Known(false) => {
                pass.errors.push(format!(
                    "service account {sa} requested by role {id} does not exist"
                ));
                continue;
            }
            Fact::Known(true) => {}
        }
        sar(pass, "C-20", "serviceaccounts", sa, ns);
    }
}

fn storage_classes(roles: &mut [Value], settings: &KdSettings, pass: &mut Pass<'_, '_>) {
    let global = settings.default_storage_class().to_string();
    let mut validate_default = false;
    let mut missing_default = false;
    for (i, role) in roles.iter_mut().enumerate() {
        let id = get_str(role, &["id"]).unwrap_or_default().to_string();
        let Some(storage) = role.get_mut("storage").filter(|s| !s.is_null()) else {
            continue;
        };
        let size = get_str(storage, &["size"]).unwrap_or_default();
        let Ok(q) = Quantity::parse(size) else {
            pass.errors
                .push(format!("Storage size for role ({id}) is incorrectly defined."));
            break;
        };
        if q.sign() != 1 {
            pass.errors.push(format!(
                "Storage size for role ({id}) should be greater than zero."
            ));
            break;
        }
        if let Some(sc) = get_str(storage, &["storageClassName"]) {
            match pass.ctx.facts.storage_class_exists(sc) {
                Fact::Unknown => pass.note("C-23", "storage class existence"),
                Fact::Known(false) => pass
                    .errors
                    .push(format!("Unable to fetch storageClassName({sc}) for role({id}).")),
                Fact::Known(true) => {}
            }
            continue;
        }
        let chosen = if !global.is_empty() {
            validate_default = true;
            global.clone()
        } else {
            match pass.ctx.facts.default_storage_class() {
                Fact::Unknown => {
                    pass.note("C-24", "default storage class (storageClassName left unset)");
                    continue;
                }
                Fact::Known(None) => {
                    missing_default = true;
                    continue;
                }
                Fact::Known(Some(sc)) => sc,
            }
        };
        if let Some(o) = storage.as_object_mut() {
            o.insert("storageClassName".into(), json!(chosen));
        }
        if !missing_default {
            pass.patch.push(op_add(
                ["spec", "roles", &i.to_string(), "storage", "storageClassName"],
                json!(chosen),
            ));
        }
    }
    if missing_default {
        pass.errors.push(
            "storageClassName is not specified for one or more roles, and no default storage class is available."
                .to_string(),
        );
    } else if validate_default {
        match pass.ctx.facts.storage_class_exists(&global) {
            Fact::Unknown => pass.note("C-24", "storage class existence"),
            Fact::Known(false) => pass.errors.push(format!(
                "storageClassName is not specified for one or more roles, and default storage class ({global}) is not available on the system."
            )),
            Fact::Known(true) => {}
        }
    }
}

fn shared_memory(roles: &[Value], settings: &KdSettings, pass: &mut Pass<'_, '_>) {
    for role in roles {
        let id = get_str(role, &["id"]).unwrap_or_default();
        let Some(shm) = get_str(role, &["sharedMemory"]) else {
            continue;
        };
        match settings.force_shared_memory() {
            Some(false) => {
                pass.errors.push(format!(
                    "Specifying shared memory size for role ({id}) not allowed; feature disabled by global KubeDirector config."
                ));
                continue;
            }
            Some(true) => {}
            None => match pass.ctx.facts.server_version() {
                Fact::Unknown => pass.note("C-25", "Kubernetes server version"),
                Fact::Known(v) if v < (1, 22) => {
                    pass.errors.push(format!(
                        "Specifying shared memory size for role ({id}) requires K8s version >= 1.22."
                    ));
                    continue;
                }
                Fact::Known(_) => {}
            },
        }
        match Quantity::parse(shm) {
            Err(_) => pass.errors.push(format!(
                "Shared memory size for role ({id}) is incorrectly defined."
            )),
            Ok(q) if q.sign() != 1 => pass.errors.push(format!(
                "Shared memory size for role ({id}) should be greater than zero."
            )),
            Ok(_) => {}
        }
    }
}

fn file_injections(roles: &[Value], pass: &mut Pass<'_, '_>) {
    for role in roles {
        let id = get_str(role, &["id"]).unwrap_or_default();
        for fi in get_array(role, &["fileInjections"]) {
            let url = get_str(fi, &["srcURL"]).unwrap_or_default();
            match pass.ctx.facts.url_reachable(url) {
                Fact::Unknown => pass.note("C-29", "file injection URL reachability"),
                Fact::Known(Err(e)) => pass.errors.push(format!(
                    "Unable to access the specified URL(\"{url}\") in file injection spec for the role ({id}). error: {e}."
                )),
                Fact::Known(Ok(())) => {}
            }
        }
    }
}

enum SecretCheck {
    Valid,
    Prefix,
    Missing,
}

fn secrets(cr: &Value, roles: &[Value], ns: &str, settings: &KdSettings, pass: &mut Pass<'_, '_>) {
    let prefix = settings.required_secret_prefix().to_string();
    let check = |pass: &mut Pass<'_, '_>, name: &str| {
        if !name.starts_with(prefix.as_str()) {
            return SecretCheck::Prefix;
        }
        match pass.ctx.facts.secret_exists(ns, name) {
            Fact::Unknown => {
                pass.note("C-30/C-31", "secret existence");
                SecretCheck::Valid
            }
            Fact::Known(false) => SecretCheck::Missing,
            Fact::Known(true) => SecretCheck::Valid,
        }
    };
    let default_secret = get(cr, &["spec", "defaultSecret"]).filter(|s| !s.is_null());
    if let Some(ds) = default_secret {
        let name = get_str(ds, &["name"]).unwrap_or_default();
        match check(pass, name) {
            SecretCheck::Prefix => {
                pass.errors.push(format!(
                    "defaultSecret({name}) does not have the required name prefix({prefix})."
                ));
                return;
            }
            SecretCheck::Missing => {
                pass.errors.push(format!(
                    "Unable to find defaultSecret({name}) in namespace({ns})."
                ));
                return;
            }
            SecretCheck::Valid => {}
        }
    }
    for (i, role) in roles.iter().enumerate() {
        let id = get_str(role, &["id"]).unwrap_or_default();
        match role.get("secret").filter(|s| !s.is_null()) {
            Some(secret) => {
                let name = get_str(secret, &["name"]).unwrap_or_default();
                match check(pass, name) {
                    SecretCheck::Prefix => pass.errors.push(format!(
                        "Secret({name}) for role({id}) does not have the required name prefix({prefix})."
                    )),
                    SecretCheck::Missing => pass.errors.push(format!(
                        "Unable to find secret({name}) for role({id}) in namespace({ns})."
                    )),
                    SecretCheck::Valid => {}
                }
            }
            None => {
                if let Some(ds) = default_secret {
                    pass.patch.push(op_add(
                        ["spec", "roles", &i.to_string(), "secret"],
                        go_kd_secret(ds),
                    ));
                }
            }
        }
    }
}

/// A KDSecret as upstream's `json.Marshal` writes it into the C-M7 patch: `name`, `mountPath`,
/// `defaultMode` only when set, `readOnly` only when true (`omitempty`), nothing else.
fn go_kd_secret(secret: &Value) -> Value {
    let mut out = Map::new();
    out.insert(
        "name".into(),
        json!(get_str(secret, &["name"]).unwrap_or_default()),
    );
    if let Some(mode) = secret.get("defaultMode").filter(|m| !m.is_null()) {
        out.insert("defaultMode".into(), mode.clone());
    }
    out.insert(
        "mountPath".into(),
        json!(get_str(secret, &["mountPath"]).unwrap_or_default()),
    );
    if secret.get("readOnly").and_then(Value::as_bool) == Some(true) {
        out.insert("readOnly".into(), json!(true));
    }
    Value::Object(out)
}

fn secret_keys(roles: &[Value], old: Option<&Value>, settings: &KdSettings, pass: &mut Pass<'_, '_>) {
    let old_roles = old.map(|o| get_array(o, &["spec", "roles"])).unwrap_or(&[]);
    for (ri, role) in roles.iter().enumerate() {
        let id = get_str(role, &["id"]).unwrap_or_default();
        let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
        for old_role in old_roles.iter().filter(|r| get_str(r, &["id"]) == Some(id)) {
            for sk in get_array(old_role, &["secretKeys"]) {
                prev.insert(
                    get_str(sk, &["name"]).unwrap_or_default(),
                    get_str(sk, &["encryptedValue"]).unwrap_or_default(),
                );
            }
        }
        for (ki, sk) in get_array(role, &["secretKeys"]).iter().enumerate() {
            let name = get_str(sk, &["name"]).unwrap_or_default();
            let value = get_str(sk, &["value"]).unwrap_or_default();
            let encrypted = get_str(sk, &["encryptedValue"]).unwrap_or_default();
            if value.is_empty() && !encrypted.is_empty() {
                if prev.get(name).copied().unwrap_or_default() != encrypted {
                    pass.errors.push(format!(
                        "manually setting secret key ({name}) encrypted value is forbidden"
                    ));
                }
                continue;
            }
            let mut nonce = [0u8; secretkeys::NONCE_LEN];
            pass.ctx.entropy.fill(&mut nonce);
            match secretkeys::encrypt(settings.master_key(), value, nonce) {
                Ok(enc) => pass.patch.push(op_replace(
                    ["spec", "roles", &ri.to_string(), "secretKeys", &ki.to_string()],
                    json!({"name": name, "encryptedValue": enc}),
                )),
                Err(_) => pass.errors.push(format!("cannot encrypt secret key {name}")),
            }
        }
    }
}

/// Mount paths the operator itself puts into the app container of a role (spec 3.7), except the
/// persisted directories.
pub fn system_mount_paths(cr: &Value, role: &Value, app: &Value, settings: &KdSettings) -> Vec<String> {
    let mut paths = vec!["/tmp".to_string(), "/run".to_string(), "/run/lock".to_string()];
    let secret = role
        .get("secret")
        .filter(|s| !s.is_null())
        .or_else(|| get(cr, &["spec", "defaultSecret"]).filter(|s| !s.is_null()));
    if let Some(p) = secret.and_then(|s| get_str(s, &["mountPath"])) {
        paths.push(p.to_string());
    }
    if role.get("sharedMemory").is_some_and(|s| !s.is_null()) {
        paths.push("/dev/shm".to_string());
    }
    let systemd = get(app, &["spec", "systemdRequired"])
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if systemd && !settings.native_systemd() {
        paths.push("/sys/fs/cgroup".to_string());
        paths.push("/sys/fs/cgroup/systemd".to_string());
    }
    paths
}

fn volume_projections(
    cr: &Value,
    roles: &[Value],
    app: &Value,
    ns: &str,
    settings: &KdSettings,
    pass: &mut Pass<'_, '_>,
) {
    // members using each PVC, and whether that PVC allows sharing
    let mut usage: BTreeMap<String, i64> = BTreeMap::new();
    let mut shareable: BTreeMap<String, bool> = BTreeMap::new();
    for role in roles {
        let id = get_str(role, &["id"]).unwrap_or_default();
        let projections = get_array(role, &["volumeProjections"]);
        if projections.is_empty() {
            continue;
        }
        let system = system_mount_paths(cr, role, app, settings);
        if system.is_empty() {
            // C-39 cannot happen here: computing the mounts is infallible. Kept for completeness.
            pass.errors.push(format!("{MOUNT_ERROR_TEMPLATE}({id})."));
            continue;
        }
        let mut seen = HashSet::new();
        for vp in projections {
            let path = get_str(vp, &["mountPath"]).unwrap_or_default();
            let pvc_name = get_str(vp, &["pvcName"]).unwrap_or_default();
            // C-33
            if !seen.insert(path) {
                pass.errors.push(format!(
                    "Specified mountPath({path}) for role({id}) is invalid. It must be unique within the role."
                ));
            }
            // C-34
            if system.iter().any(|p| p == path) {
                pass.errors.push(format!(
                    "Specified mountPath({path}) for role({id}) is invalid. It clashes with system generated mountPath."
                ));
            }
            // C-35..C-37
            match pass.ctx.facts.pvc(ns, pvc_name) {
                Fact::Unknown => pass.note("C-35..C-37", "persistent volume claim checks"),
                Fact::Known(None) => pass.errors.push(format!(
                    "Unable to find persistentvolumeclaim({pvc_name}) in namespace({ns}) as specified for role({id})."
                )),
                Fact::Known(Some(pvc)) => {
                    let mode = get_str(&pvc, &["spec", "volumeMode"]).unwrap_or("Filesystem");
                    if mode != "Filesystem" {
                        pass.errors.push(format!(
                            "Specified persistentvolumeclaim({pvc_name}) for role({id}) is invalid. Its volumeMode must be Filesystem."
                        ));
                    }
                    let shared = get_array(&pvc, &["spec", "accessModes"])
                        .iter()
                        .any(|m| matches!(m.as_str(), Some("ReadWriteMany" | "ReadOnlyMany")));
                    shareable.insert(pvc_name.to_string(), shared);
                    *usage.entry(pvc_name.to_string()).or_default() += i64_at(role, &["members"]).unwrap_or(0);
                }
            }
            // C-38
            sar(pass, "C-38", "persistentvolumeclaims", pvc_name, ns);
        }
    }
    for (pvc, members) in usage {
        if members > 1 && !shareable.get(&pvc).copied().unwrap_or(false) {
            pass.errors.push(format!(
                "Specified persistentvolumeclaim({pvc}) is used by {members} members. A persistentvolumeclaim used by more than one member must have the ReadWriteMany or ReadOnlyMany access mode."
            ));
        }
    }
}

fn immutable_changes(cr: &Value, roles: &[Value], old: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    // C-40
    // a Go string: absent and "" are the same
    if get_str(cr, &["spec", "app"]).unwrap_or_default() != get_str(old, &["spec", "app"]).unwrap_or_default()
    {
        errs.push("The app property is read-only.".to_string());
    }
    // C-41
    if get_str(cr, &["spec", "appCatalog"]) != get_str(old, &["spec", "appCatalog"]) {
        errs.push("The appCatalog property is read-only.".to_string());
    }
    // R20: namingScheme is immutable once set. Omitting it on an update would let C-M6 patch in
    // the kdconfig default, so that counts as a change too (as omitting appCatalog does).
    if let Some(prev) = get_str(old, &["spec", "namingScheme"]) {
        if get_str(cr, &["spec", "namingScheme"]) != Some(prev) {
            errs.push("The namingScheme property is read-only.".to_string());
        }
    }
    // C-42
    let with_status: HashSet<&str> = get_array(old, &["status", "roles"])
        .iter()
        .filter_map(|r| get_str(r, &["id"]))
        .collect();
    let old_roles = get_array(old, &["spec", "roles"]);
    for role in roles {
        let id = get_str(role, &["id"]).unwrap_or_default();
        if !with_status.contains(id) {
            continue;
        }
        let msg = format!(
            "Role({id}) properties other than the members count cannot be modified while role members exist."
        );
        let Some(prev) = old_roles.iter().find(|r| get_str(r, &["id"]) == Some(id)) else {
            errs.push(msg);
            continue;
        };
        // upstream copies the old `members` into the new role before comparing
        let strip = |r: &Value| {
            let mut r = gotypes::canon(Some(r), &gotypes::CLUSTER_ROLE).unwrap_or_else(|| json!({}));
            if let Some(o) = r.as_object_mut() {
                o.remove("members");
            }
            r
        };
        if strip(role) != strip(prev) {
            errs.push(msg);
        }
    }
    errs
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
