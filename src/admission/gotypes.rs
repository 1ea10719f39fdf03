//! Upstream's Go types, as far as admission can observe them: how `encoding/json` decodes a
//! document into them (rules A-3, C-1, C-4, K-2, K-4) and when two documents decode to values
//! that apimachinery's `equality.Semantic.DeepEqual` calls equal (C-6, C-7, C-8, C-42, K-5,
//! A-15).
//!
//! Decoding, as Go does it: `null` is accepted everywhere (it leaves the zero value), a missing
//! key is the zero value, keys the type does not declare are ignored, and a JSON value of the
//! wrong kind is an error `json: cannot unmarshal <kind> into Go struct field
//! <Struct>.<json.path> of type <type>` (the first such error is reported, but a malformed
//! quantity aborts decoding at once with its own message).
//!
//! Equality, as `equality.Semantic.DeepEqual` sees the decoded values:
//! * a missing key and an explicit `null` are always the same (nil / zero value);
//! * a non-pointer scalar (`string`, `bool`, integer) cannot tell `""`/`false`/`0` from absent;
//! * a non-pointer struct cannot tell `{}` from absent;
//! * an empty slice or map equals a nil one (`[]`/`{}` equal absence);
//! * a pointer *can* tell: `{}` of a pointer-to-struct, `[]` of a pointer-to-slice, `0`/`""` of
//!   a pointer scalar all differ from absent;
//! * quantities compare by value (`1Gi` equals `1024Mi`);
//! * keys the Go type does not declare are ignored.
//!
//! [`canon`] maps a JSON document to a canonical form under a [`GoType`] so that two documents
//! are canonically equal exactly when their Go values are semantically equal. Embedded
//! Kubernetes types (affinity, env sources, ...) are [`GoType::Obj`]: only `null` members and
//! empty lists are identified with absence there, which is exact for documents written by one
//! serializer.

use serde_json::{Map, Value};

use super::quantity::Quantity;

/// A Go scalar type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    /// `string`.
    Str,
    /// A named type of kind string (`types.UID`, `v1.Capability`).
    Named(&'static str),
    /// `bool`.
    Bool,
    /// `int`.
    Int,
    /// `int32`.
    Int32,
    /// `int64`.
    Int64,
}

/// A Go struct type: its name, package and JSON fields.
#[derive(Debug, Clone, Copy)]
pub struct GoStruct {
    /// Type name (`Role`).
    pub name: &'static str,
    /// Package name (`v1beta1`).
    pub pkg: &'static str,
    /// JSON field names and their types.
    pub fields: &'static [(&'static str, GoType)],
}

/// How a JSON value decodes in upstream's Go types (see the module docs).
#[derive(Debug, Clone, Copy)]
pub enum GoType {
    /// A non-pointer scalar: `null`, `""`, `false` and `0` equal absence.
    Val(Scalar),
    /// A pointer to a scalar: only `null` equals absence.
    Ptr(Scalar),
    /// `resource.Quantity` (custom decoding: any JSON value is parsed as a quantity).
    Quantity,
    /// An embedded value whose content is not checked (timestamps): only `null` equals
    /// absence; the content is compared as is.
    Any,
    /// An embedded Kubernetes struct (by pointer or in a slice) whose fields are not checked,
    /// with its Go type name: it must be an object; otherwise like [`GoType::Any`].
    Obj(&'static str),
    /// kdapp `SetupPackage` (custom decoding): absent, `null` and an object are three different
    /// values.
    Tri(&'static GoStruct),
    /// A slice with its Go type name: `null` and `[]` equal absence.
    Slice(&'static GoType, &'static str),
    /// A pointer to a slice: `null` equals absence, `[]` does not.
    PtrSlice(&'static GoType, &'static str),
    /// A map with its Go type name: `null` and `{}` equal absence.
    Map(&'static GoType, &'static str),
    /// A pointer to a map: `null` equals absence, `{}` does not.
    PtrMap(&'static GoType, &'static str),
    /// A non-pointer struct: `null` and `{}` (and all-zero contents) equal absence.
    Struct(&'static GoStruct),
    /// A pointer to a struct: `null` equals absence, `{}` does not.
    PtrStruct(&'static GoStruct),
}

use GoType::{Any, Map as M, Ptr as P, PtrStruct as PS, Quantity as Q, Slice as Sl, Struct as St, Val as V};
use Scalar::{Bool, Int, Int32, Int64, Named, Str};

const STRINGS: GoType = Sl(&V(Str), "[]string");
const PTR_STRINGS: GoType = GoType::PtrSlice(&V(Str), "[]string");
const STRING_MAP: GoType = M(&V(Str), "map[string]string");
const RESOURCE_LIST: GoType = M(&Q, "v1.ResourceList");

const fn st(name: &'static str, pkg: &'static str, fields: &'static [(&'static str, GoType)]) -> GoStruct {
    GoStruct { name, pkg, fields }
}

/// `metav1.ObjectMeta`.
pub const OBJECT_META: GoType = St(&st(
    "ObjectMeta",
    "v1",
    &[
        ("name", V(Str)),
        ("generateName", V(Str)),
        ("namespace", V(Str)),
        ("selfLink", V(Str)),
        ("uid", V(Named("types.UID"))),
        ("resourceVersion", V(Str)),
        ("generation", V(Int64)),
        ("creationTimestamp", Any),
        ("deletionTimestamp", Any),
        ("deletionGracePeriodSeconds", P(Int64)),
        ("labels", STRING_MAP),
        ("annotations", STRING_MAP),
        (
            "ownerReferences",
            Sl(&GoType::Obj("v1.OwnerReference"), "[]v1.OwnerReference"),
        ),
        ("finalizers", STRINGS),
        (
            "managedFields",
            Sl(&GoType::Obj("v1.ManagedFieldsEntry"), "[]v1.ManagedFieldsEntry"),
        ),
    ],
));

const KD_SECRET: GoType = PS(&st(
    "KDSecret",
    "v1beta1",
    &[
        ("name", V(Str)),
        ("mountPath", V(Str)),
        ("defaultMode", P(Int32)),
        ("readOnly", V(Bool)),
    ],
));

/// kdcluster role (`spec.roles[]`).
pub const CLUSTER_ROLE: GoType = St(&st(
    "Role",
    "v1beta1",
    &[
        ("id", V(Str)),
        ("members", P(Int32)),
        (
            "resources",
            St(&st(
                "ResourceRequirements",
                "v1",
                &[
                    ("limits", RESOURCE_LIST),
                    ("requests", RESOURCE_LIST),
                    (
                        "claims",
                        Sl(&GoType::Obj("v1.ResourceClaim"), "[]v1.ResourceClaim"),
                    ),
                ],
            )),
        ),
        ("podLabels", STRING_MAP),
        ("podAnnotations", STRING_MAP),
        ("serviceLabels", STRING_MAP),
        ("serviceAnnotations", STRING_MAP),
        ("affinity", GoType::Obj("v1.Affinity")),
        (
            "storage",
            PS(&st(
                "ClusterStorage",
                "v1beta1",
                &[("size", V(Str)), ("storageClassName", P(Str))],
            )),
        ),
        (
            "blockStorage",
            PS(&st(
                "BlockStorage",
                "v1beta1",
                &[
                    ("storageClassName", P(Str)),
                    ("pathPrefix", P(Str)),
                    ("numDevices", P(Int32)),
                    ("size", P(Str)),
                ],
            )),
        ),
        (
            "env",
            Sl(
                &St(&st(
                    "EnvVar",
                    "v1",
                    &[
                        ("name", V(Str)),
                        ("value", V(Str)),
                        ("valueFrom", GoType::Obj("v1.EnvVarSource")),
                    ],
                )),
                "[]v1.EnvVar",
            ),
        ),
        ("sharedMemory", P(Str)),
        (
            "fileInjections",
            Sl(
                &St(&st(
                    "FileInjections",
                    "v1beta1",
                    &[
                        ("srcURL", V(Str)),
                        ("destDir", V(Str)),
                        (
                            "permissions",
                            PS(&st(
                                "FilePermissions",
                                "v1beta1",
                                &[
                                    ("fileMode", P(Int32)),
                                    ("fileOwner", P(Str)),
                                    ("fileGroup", P(Str)),
                                ],
                            )),
                        ),
                    ],
                )),
                "[]v1beta1.FileInjections",
            ),
        ),
        ("secret", KD_SECRET),
        ("serviceAccountName", V(Str)),
        (
            "secretKeys",
            Sl(
                &St(&st(
                    "SecretKey",
                    "v1beta1",
                    &[("name", V(Str)), ("value", V(Str)), ("encryptedValue", V(Str))],
                )),
                "[]v1beta1.SecretKey",
            ),
        ),
        (
            "volumeProjections",
            Sl(
                &St(&st(
                    "VolumeProjections",
                    "v1beta1",
                    &[("pvcName", V(Str)), ("mountPath", V(Str)), ("readOnly", V(Bool))],
                )),
                "[]v1beta1.VolumeProjections",
            ),
        ),
    ],
));

/// kdcluster `spec`.
pub const CLUSTER_SPEC: GoType = St(&st(
    "KubeDirectorClusterSpec",
    "v1beta1",
    &[
        ("app", V(Str)),
        ("appCatalog", P(Str)),
        ("serviceType", P(Str)),
        ("namingScheme", P(Str)),
        ("defaultSecret", KD_SECRET),
        (
            "connections",
            St(&st(
                "Connections",
                "v1beta1",
                &[
                    ("clusters", STRINGS),
                    ("configmaps", STRINGS),
                    ("secrets", STRINGS),
                ],
            )),
        ),
        ("roles", Sl(&CLUSTER_ROLE, "[]v1beta1.Role")),
    ],
));

const MEMBER_STATUS: GoType = St(&st(
    "MemberStatus",
    "v1beta1",
    &[
        ("pod", V(Str)),
        ("service", V(Str)),
        ("authToken", V(Str)),
        ("pvc", V(Str)),
        ("state", V(Str)),
        (
            "stateDetail",
            St(&st(
                "MemberStateDetail",
                "v1beta1",
                &[
                    ("configErrorDetail", P(Str)),
                    ("lastConfigDataGeneration", P(Int64)),
                    ("lastSetupGeneration", P(Int64)),
                    ("configuringContainer", V(Str)),
                    ("lastConfiguredContainer", V(Str)),
                    ("lastKnownContainerState", V(Str)),
                    (
                        "pendingNotifyCmds",
                        Sl(
                            &PS(&st("NotificationDesc", "v1beta1", &[("arguments", STRINGS)])),
                            "[]*v1beta1.NotificationDesc",
                        ),
                    ),
                    ("lastConnectionVersion", P(Int64)),
                    ("startScriptStdoutMessage", V(Str)),
                    ("startScriptStderrMessage", V(Str)),
                    ("schedulingErrorMessage", P(Str)),
                    ("storageInitProgress", P(Str)),
                ],
            )),
        ),
        ("nodeID", V(Int64)),
        ("blockDevicePaths", STRINGS),
    ],
));

/// kdcluster `status` (a pointer in the Go type: `status: {}` differs from no status).
pub const CLUSTER_STATUS: GoType = PS(&st(
    "KubeDirectorClusterStatus",
    "v1beta1",
    &[
        ("state", V(Str)),
        (
            "restoreProgress",
            PS(&st(
                "RestoreProgress",
                "v1beta1",
                &[
                    ("awaitingApp", V(Bool)),
                    ("awaitingStatus", V(Bool)),
                    ("awaitingResources", V(Bool)),
                    ("error", V(Str)),
                ],
            )),
        ),
        (
            "memberStateRollup",
            St(&st(
                "StateRollup",
                "v1beta1",
                &[
                    ("membershipChanging", V(Bool)),
                    ("membersDown", V(Bool)),
                    ("membersInitializing", V(Bool)),
                    ("membersWaiting", V(Bool)),
                    ("membersRestarting", V(Bool)),
                    ("configErrors", V(Bool)),
                    ("membersNotScheduled", V(Bool)),
                ],
            )),
        ),
        ("generationUID", V(Str)),
        ("specGenerationToProcess", P(Int64)),
        ("clusterService", V(Str)),
        ("lastNodeID", V(Int64)),
        (
            "roles",
            Sl(
                &St(&st(
                    "RoleStatus",
                    "v1beta1",
                    &[
                        ("id", V(Str)),
                        ("statefulSet", V(Str)),
                        ("members", Sl(&MEMBER_STATUS, "[]v1beta1.MemberStatus")),
                        ("encryptedSecretKeys", STRING_MAP),
                    ],
                )),
                "[]v1beta1.RoleStatus",
            ),
        ),
        ("lastConnectionHash", V(Str)),
    ],
));

/// A whole KubeDirectorCluster.
pub const CLUSTER: GoType = St(&st(
    "KubeDirectorCluster",
    "v1beta1",
    &[
        ("apiVersion", V(Str)),
        ("kind", V(Str)),
        ("metadata", OBJECT_META),
        ("spec", CLUSTER_SPEC),
        ("status", CLUSTER_STATUS),
    ],
));

/// kdconfig `status`.
pub const CONFIG_STATUS: GoType = PS(&st(
    "KubeDirectorConfigStatus",
    "v1beta1",
    &[("generationUID", V(Str)), ("state", V(Str))],
));

/// A whole KubeDirectorConfig.
pub const CONFIG: GoType = St(&st(
    "KubeDirectorConfig",
    "v1beta1",
    &[
        ("apiVersion", V(Str)),
        ("kind", V(Str)),
        ("metadata", OBJECT_META),
        (
            "spec",
            PS(&st(
                "KubeDirectorConfigSpec",
                "v1beta1",
                &[
                    ("defaultStorageClassName", P(Str)),
                    ("defaultServiceType", P(Str)),
                    ("nativeSystemdSupport", P(Bool)),
                    ("requiredSecretPrefix", P(Str)),
                    ("clusterSvcDomainBase", P(Str)),
                    ("defaultNamingScheme", P(Str)),
                    ("masterEncryptionKey", P(Str)),
                    ("podLabels", STRING_MAP),
                    ("podAnnotations", STRING_MAP),
                    ("serviceLabels", STRING_MAP),
                    ("serviceAnnotations", STRING_MAP),
                    ("backupClusterStatus", P(Bool)),
                    ("allowRestoreWithoutConnections", P(Bool)),
                    ("forceSharedMemorySizeSupport", P(Bool)),
                ],
            )),
        ),
        ("status", CONFIG_STATUS),
    ],
));

const SETUP_PACKAGE: GoType = GoType::Tri(&st(
    "SetupPackageURL",
    "v1beta1",
    &[("packageURL", V(Str)), ("useNewSetupLayout", V(Bool))],
));

const LABEL: GoType = St(&st(
    "Label",
    "v1beta1",
    &[("name", V(Str)), ("description", V(Str))],
));

/// kdapp `spec`. (A-15 ignores `defaultConfigPackage`; callers drop it after [`canon`].)
pub const APP_SPEC: GoType = St(&st(
    "KubeDirectorAppSpec",
    "v1beta1",
    &[
        ("label", LABEL),
        ("distroID", V(Str)),
        ("version", V(Str)),
        ("configSchemaVersion", V(Int)),
        ("defaultImageRepoTag", P(Str)),
        ("defaultConfigPackage", SETUP_PACKAGE),
        ("defaultPersistDirs", PTR_STRINGS),
        ("defaultEventList", PTR_STRINGS),
        ("defaultMaxLogSizeDump", P(Int32)),
        (
            "services",
            Sl(
                &St(&st(
                    "Service",
                    "v1beta1",
                    &[
                        ("id", V(Str)),
                        ("label", LABEL),
                        (
                            "endpoint",
                            St(&st(
                                "ServiceEndpoint",
                                "v1beta1",
                                &[
                                    ("port", P(Int32)),
                                    ("urlScheme", V(Str)),
                                    ("path", V(Str)),
                                    ("isDashboard", V(Bool)),
                                    ("hasAuthToken", V(Bool)),
                                ],
                            )),
                        ),
                        ("exported_service", V(Str)),
                    ],
                )),
                "[]v1beta1.Service",
            ),
        ),
        (
            "roles",
            Sl(
                &St(&st(
                    "NodeRole",
                    "v1beta1",
                    &[
                        ("id", V(Str)),
                        ("cardinality", V(Str)),
                        ("imageRepoTag", P(Str)),
                        ("configPackage", SETUP_PACKAGE),
                        ("persistDirs", PTR_STRINGS),
                        ("eventList", PTR_STRINGS),
                        ("minResources", GoType::PtrMap(&Q, "v1.ResourceList")),
                        (
                            "minStorage",
                            PS(&st(
                                "MinStorage",
                                "v1beta1",
                                &[("size", V(Str)), ("ephemeralModeSupported", V(Bool))],
                            )),
                        ),
                        (
                            "containerSpec",
                            PS(&st(
                                "ContainerSpec",
                                "v1beta1",
                                &[("stdin", V(Bool)), ("tty", V(Bool))],
                            )),
                        ),
                        ("maxLogSizeDump", P(Int32)),
                    ],
                )),
                "[]v1beta1.NodeRole",
            ),
        ),
        (
            "config",
            St(&st(
                "NodeGroupConfig",
                "v1beta1",
                &[
                    (
                        "roleServices",
                        Sl(
                            &St(&st(
                                "RoleService",
                                "v1beta1",
                                &[("roleID", V(Str)), ("serviceIDs", STRINGS)],
                            )),
                            "[]v1beta1.RoleService",
                        ),
                    ),
                    ("selectedRoles", STRINGS),
                    ("configMeta", STRING_MAP),
                ],
            )),
        ),
        ("capabilities", Sl(&V(Named("v1.Capability")), "[]v1.Capability")),
        ("systemdRequired", V(Bool)),
        ("logoURL", V(Str)),
    ],
));

/// A whole KubeDirectorApp.
pub const APP: GoType = St(&st(
    "KubeDirectorApp",
    "v1beta1",
    &[
        ("apiVersion", V(Str)),
        ("kind", V(Str)),
        ("metadata", OBJECT_META),
        ("spec", APP_SPEC),
    ],
));

// ---------------------------------------------------------------------------------------------
// decoding

fn scalar_name(s: Scalar) -> &'static str {
    match s {
        Str => "string",
        Named(n) => n,
        Bool => "bool",
        Int => "int",
        Int32 => "int32",
        Int64 => "int64",
    }
}

/// The Go type name as `reflect.Type.String()` renders it (pointers already dereferenced, as
/// `encoding/json` reports them).
fn type_name(t: &GoType) -> String {
    match t {
        GoType::Val(s) | GoType::Ptr(s) => scalar_name(*s).to_string(),
        GoType::Quantity => "resource.Quantity".to_string(),
        GoType::Any => "interface {}".to_string(),
        GoType::Obj(n) => (*n).to_string(),
        GoType::Tri(s) | GoType::Struct(s) | GoType::PtrStruct(s) => format!("{}.{}", s.pkg, s.name),
        GoType::Slice(_, n) | GoType::PtrSlice(_, n) | GoType::Map(_, n) | GoType::PtrMap(_, n) => {
            (*n).to_string()
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn fits(s: Scalar, n: &serde_json::Number) -> bool {
    if n.is_f64() {
        return false; // strconv.ParseInt refuses "1.5", "2.0", "1e3"
    }
    match (s, n.as_i64()) {
        (Int32, Some(i)) => i32::try_from(i).is_ok(),
        (Int | Int64, Some(_)) => true,
        _ => false,
    }
}

/// An `encoding/json` `UnmarshalTypeError` (before its context is rendered).
#[derive(Debug, Clone)]
struct TypeError {
    value: String,
    ty: String,
}

#[derive(Default)]
struct Decoder {
    /// Innermost struct whose field is being decoded.
    structs: Vec<&'static str>,
    /// JSON field names from the root (no indexes, no map keys).
    fields: Vec<&'static str>,
    /// The first type error, raw and rendered (Go keeps decoding after it).
    saved: Option<(TypeError, String)>,
}

impl Decoder {
    fn render(&self, e: &TypeError) -> String {
        match self.structs.last() {
            Some(s) => format!(
                "json: cannot unmarshal {} into Go struct field {s}.{} of type {}",
                e.value,
                self.fields.join("."),
                e.ty
            ),
            None => format!(
                "json: cannot unmarshal {} into Go value of type {}",
                e.value, e.ty
            ),
        }
    }

    fn save(&mut self, value: String, t: &GoType) {
        if self.saved.is_none() {
            let e = TypeError {
                value,
                ty: type_name(t),
            };
            let msg = self.render(&e);
            self.saved = Some((e, msg));
        }
    }

    /// Decodes `v` as `t`; `Err` aborts decoding (errors of custom unmarshalers).
    fn walk(&mut self, v: &Value, t: &GoType) -> Result<(), String> {
        if v.is_null() {
            return Ok(());
        }
        match (t, v) {
            (GoType::Val(s) | GoType::Ptr(s), _) => {
                match (s, v) {
                    (Str | Named(_), Value::String(_)) | (Bool, Value::Bool(_)) => {}
                    (Int | Int32 | Int64, Value::Number(n)) => {
                        if !fits(*s, n) {
                            self.save(format!("number {n}"), t);
                        }
                    }
                    _ => self.save(json_kind(v).to_string(), t),
                }
                Ok(())
            }
            (GoType::Quantity, _) => Quantity::parse_json(v).map(|_| ()).map_err(|e| e.to_string()),
            (GoType::Any, _) | (GoType::Obj(_), Value::Object(_)) => Ok(()),
            (GoType::Tri(s), Value::Object(o)) => {
                // SetupPackage.UnmarshalJSON runs a separate json.Unmarshal; its error is
                // returned (aborting decoding) and re-labelled with the outer field.
                let mut inner = Decoder::default();
                inner.fields_of(o, s)?;
                match inner.saved {
                    Some((e, _)) => Err(self.render(&e)),
                    None => Ok(()),
                }
            }
            (GoType::Tri(_), _) => Err(self.render(&TypeError {
                value: json_kind(v).to_string(),
                ty: type_name(t),
            })),
            (GoType::Struct(s) | GoType::PtrStruct(s), Value::Object(o)) => self.fields_of(o, s),
            (GoType::Slice(elem, _) | GoType::PtrSlice(elem, _), Value::Array(a)) => {
                for x in a {
                    self.walk(x, elem)?;
                }
                Ok(())
            }
            (GoType::Map(elem, _) | GoType::PtrMap(elem, _), Value::Object(o)) => {
                for x in o.values() {
                    self.walk(x, elem)?;
                }
                Ok(())
            }
            _ => {
                self.save(json_kind(v).to_string(), t);
                Ok(())
            }
        }
    }

    fn fields_of(&mut self, o: &Map<String, Value>, s: &GoStruct) -> Result<(), String> {
        // document order, as encoding/json reads it
        for (k, x) in o {
            let Some((name, ft)) = s.fields.iter().find(|(n, _)| n == k) else {
                continue;
            };
            self.structs.push(s.name);
            self.fields.push(name);
            let r = self.walk(x, ft);
            self.structs.pop();
            self.fields.pop();
            r?;
        }
        Ok(())
    }
}

/// Checks that `doc` decodes into the Go type `t` as `encoding/json` would; returns the Go
/// error text otherwise.
pub fn decode_error(doc: &Value, t: &GoType) -> Option<String> {
    let mut d = Decoder::default();
    match d.walk(doc, t) {
        Err(e) => Some(e),
        Ok(()) => d.saved.map(|(_, msg)| msg),
    }
}

// ---------------------------------------------------------------------------------------------
// equality

/// Drops `null` and `[]` members, recursively (opaque content: a member that is a list is a
/// slice, and an empty slice equals a nil one).
fn generic(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(_, x)| !x.is_null() && x.as_array().is_none_or(|a| !a.is_empty()))
                .map(|(k, x)| (k.clone(), generic(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(generic).collect()),
        other => other.clone(),
    }
}

fn is_zero_scalar(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

fn struct_fields(o: &Map<String, Value>, s: &GoStruct) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, ty) in s.fields {
        let raw = o.get(*name);
        let c = match (ty, raw) {
            // an explicit null setup package is "no package", not "inherit"
            (GoType::Tri(_), Some(Value::Null)) => Some(Value::Null),
            _ => canon(raw, ty),
        };
        if let Some(c) = c {
            out.insert((*name).to_string(), c);
        }
    }
    out
}

/// A slice element or map value: present even when zero.
fn canon_elem(x: &Value, elem: &GoType) -> Value {
    match (elem, x) {
        // a null quantity decodes to zero
        (GoType::Quantity, Value::Null) => Value::String("0n".into()),
        _ => canon(Some(x), elem).unwrap_or(Value::Null),
    }
}

fn canon_items(a: &[Value], elem: &GoType) -> Value {
    Value::Array(a.iter().map(|x| canon_elem(x, elem)).collect())
}

fn canon_entries(o: &Map<String, Value>, elem: &GoType) -> Value {
    Value::Object(o.iter().map(|(k, x)| (k.clone(), canon_elem(x, elem))).collect())
}

/// The canonical form of `v` (absent: `None`) under the Go type `ty`: equal canonical forms
/// mean deeply equal Go values.
pub fn canon(v: Option<&Value>, ty: &GoType) -> Option<Value> {
    let v = v.filter(|x| !x.is_null())?;
    match (ty, v) {
        (GoType::Val(_), x) => (!is_zero_scalar(x)).then(|| generic(x)),
        (GoType::Quantity, x) => Some(match Quantity::parse_json(x) {
            // Semantic.DeepEqual compares quantities with Cmp
            Ok(q) => Value::String(format!("{}n", q.nanos())),
            Err(_) => generic(x),
        }),
        (GoType::Ptr(_) | GoType::Any | GoType::Obj(_), x) => Some(generic(x)),
        (GoType::Tri(s), Value::Object(o)) => Some(Value::Object(struct_fields(o, s))),
        (GoType::Slice(elem, _), Value::Array(a)) => (!a.is_empty()).then(|| canon_items(a, elem)),
        (GoType::PtrSlice(elem, _), Value::Array(a)) => Some(canon_items(a, elem)),
        (GoType::Map(elem, _), Value::Object(o)) => (!o.is_empty()).then(|| canon_entries(o, elem)),
        (GoType::PtrMap(elem, _), Value::Object(o)) => Some(canon_entries(o, elem)),
        (GoType::Struct(s), Value::Object(o)) => {
            let c = struct_fields(o, s);
            (!c.is_empty()).then_some(Value::Object(c))
        }
        (GoType::PtrStruct(s), Value::Object(o)) => Some(Value::Object(struct_fields(o, s))),
        // a shape the Go type cannot hold (decoding would have failed): compare verbatim
        (_, x) => Some(generic(x)),
    }
}

/// Whether `a` and `b` decode to deeply equal Go values of type `ty`.
pub fn go_equal(a: Option<&Value>, b: Option<&Value>, ty: &GoType) -> bool {
    canon(a, ty) == canon(b, ty)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn eq(a: Value, b: Value, ty: &GoType) -> bool {
        go_equal(Some(&a), Some(&b), ty)
    }

    fn with(base: &Value, extra: Value) -> Value {
        let mut r = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    }

    #[test]
    fn null_and_missing_fields_decode_like_go() {
        for doc in [
            json!({"kind": "KubeDirectorCluster", "spec": null}),
            json!({"spec": {"roles": null}}),
            json!({"spec": {"roles": [{"id": "a", "env": null, "members": null, "resources": null}]}}),
            json!({}),
            // keys Go does not know are ignored
            json!({"spec": {"bogus": [1], "roles": [{"bogus": true}]}}),
        ] {
            assert_eq!(decode_error(&doc, &CLUSTER), None, "{doc}");
        }
    }

    #[test]
    fn type_errors_are_reported_in_go_words_first_one_wins() {
        let doc = json!({"spec": {"roles": [{"id": "a", "members": "three", "podLabels": {"k": 1}}]}});
        assert_eq!(
            decode_error(&doc, &CLUSTER).as_deref(),
            Some("json: cannot unmarshal string into Go struct field Role.spec.roles.members of type int32")
        );
        let doc = json!({"spec": {"roles": [{"members": 1.5}]}});
        assert_eq!(
            decode_error(&doc, &CLUSTER).as_deref(),
            Some("json: cannot unmarshal number 1.5 into Go struct field Role.spec.roles.members of type int32")
        );
        let doc = json!({"spec": {"roles": [{"members": 3_000_000_000_i64}]}});
        assert!(decode_error(&doc, &CLUSTER)
            .unwrap()
            .starts_with("json: cannot unmarshal number 3000000000 "));
        let doc = json!({"spec": {"roles": 5}});
        assert_eq!(
            decode_error(&doc, &CLUSTER).as_deref(),
            Some("json: cannot unmarshal number into Go struct field KubeDirectorClusterSpec.spec.roles of type []v1beta1.Role")
        );
        let doc = json!({"spec": {"roles": [{"affinity": "anywhere"}]}});
        assert_eq!(
            decode_error(&doc, &CLUSTER).as_deref(),
            Some("json: cannot unmarshal string into Go struct field Role.spec.roles.affinity of type v1.Affinity")
        );
        let doc = json!({"spec": "x"});
        assert_eq!(
            decode_error(&doc, &CONFIG).as_deref(),
            Some("json: cannot unmarshal string into Go struct field KubeDirectorConfig.spec of type v1beta1.KubeDirectorConfigSpec")
        );
        assert_eq!(
            decode_error(&json!([1]), &APP).as_deref(),
            Some("json: cannot unmarshal array into Go value of type v1beta1.KubeDirectorApp")
        );
    }

    #[test]
    fn a_malformed_quantity_aborts_with_its_own_message() {
        // the earlier type error is saved, but the quantity error aborts and wins
        let doc = json!({"spec": {"roles": [{"members": "x", "resources": {"limits": {"cpu": "lots"}}}]}});
        assert_eq!(
            decode_error(&doc, &CLUSTER).as_deref(),
            Some(
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
            )
        );
        let doc = json!({"spec": {"roles": [{"minResources": {"cpu": 2, "memory": "1Gi", "x/y": null}}]}});
        assert_eq!(decode_error(&doc, &APP), None);
    }

    #[test]
    fn setup_package_errors_are_relabelled_with_the_outer_field() {
        let doc = json!({"spec": {"roles": [{"configPackage": {"packageURL": 5}}]}});
        assert_eq!(
            decode_error(&doc, &APP).as_deref(),
            Some("json: cannot unmarshal number into Go struct field NodeRole.spec.roles.configPackage of type string")
        );
        let doc = json!({"spec": {"defaultConfigPackage": "file:///x.tgz"}});
        assert_eq!(
            decode_error(&doc, &APP).as_deref(),
            Some("json: cannot unmarshal string into Go struct field KubeDirectorAppSpec.spec.defaultConfigPackage of type v1beta1.SetupPackageURL")
        );
        assert_eq!(
            decode_error(&json!({"spec": {"roles": [{"configPackage": null}]}}), &APP),
            None
        );
    }

    #[test]
    fn non_pointer_scalars_cannot_tell_zero_from_absent() {
        let role = json!({"id": "a", "resources": {"limits": {"cpu": "1"}}});
        assert!(eq(
            with(&role, json!({"serviceAccountName": ""})),
            role.clone(),
            &CLUSTER_ROLE
        ));
        assert!(!eq(
            with(&role, json!({"serviceAccountName": "x"})),
            role.clone(),
            &CLUSTER_ROLE
        ));
        // pointers can: members 0 is not "no members"
        assert!(!eq(
            with(&role, json!({"members": 0})),
            role.clone(),
            &CLUSTER_ROLE
        ));
        assert!(eq(with(&role, json!({"members": null})), role, &CLUSTER_ROLE));
    }

    #[test]
    fn empty_slices_and_maps_equal_absent_but_pointers_do_not() {
        let base = json!({"id": "a"});
        for extra in [
            json!({"env": []}),
            json!({"podLabels": {}}),
            json!({"resources": {"requests": {}}}),
            json!({"resources": {}}),
            json!({"resources": null}),
        ] {
            let r = with(&base, extra);
            assert!(eq(r.clone(), base.clone(), &CLUSTER_ROLE), "{r}");
        }
        for extra in [
            json!({"storage": {}}),
            json!({"blockStorage": {}}),
            json!({"secret": {}}),
            json!({"sharedMemory": ""}),
        ] {
            let r = with(&base, extra);
            assert!(!eq(r.clone(), base.clone(), &CLUSTER_ROLE), "{r}");
        }
        // kdapp persistDirs is a pointer to a slice
        let role = |dirs: Value| json!({"roles": [{"id": "r", "persistDirs": dirs}]});
        assert!(!eq(role(json!([])), role(Value::Null), &APP_SPEC));
        assert!(eq(
            json!({"capabilities": []}),
            json!({"capabilities": null}),
            &APP_SPEC
        ));
    }

    #[test]
    fn quantities_compare_by_value() {
        let role = |mem: Value| json!({"id": "a", "resources": {"limits": {"memory": mem}}});
        assert!(eq(role(json!("1Gi")), role(json!("1024Mi")), &CLUSTER_ROLE));
        assert!(eq(role(json!("1")), role(json!(1)), &CLUSTER_ROLE));
        assert!(eq(role(json!("0")), role(Value::Null), &CLUSTER_ROLE));
        assert!(!eq(role(json!("1G")), role(json!("1Gi")), &CLUSTER_ROLE));
    }

    #[test]
    fn unknown_keys_are_ignored_and_the_status_pointer_matters() {
        assert!(eq(
            json!({"app": "x", "roles": [{"id": "r"}], "bogus": 1}),
            json!({"app": "x", "roles": [{"id": "r"}]}),
            &CLUSTER_SPEC
        ));
        assert!(!go_equal(Some(&json!({})), None, &CLUSTER_STATUS));
        assert!(go_equal(Some(&json!(null)), None, &CLUSTER_STATUS));
        assert!(go_equal(
            Some(&json!({"state": "", "roles": [], "memberStateRollup": {"membersDown": false}})),
            Some(&json!({})),
            &CLUSTER_STATUS
        ));
        assert!(!go_equal(
            Some(&json!({"restoreProgress": {}})),
            Some(&json!({})),
            &CLUSTER_STATUS
        ));
    }

    #[test]
    fn setup_package_is_tri_state() {
        let spec = |pkg: Option<Value>| {
            let mut r = json!({"id": "r", "cardinality": "1"});
            if let Some(p) = pkg {
                r["configPackage"] = p;
            }
            json!({"roles": [r]})
        };
        assert!(!eq(spec(Some(Value::Null)), spec(None), &APP_SPEC));
        assert!(!eq(spec(Some(json!({}))), spec(Some(Value::Null)), &APP_SPEC));
        assert!(eq(
            spec(Some(
                json!({"packageURL": "file:///a.tgz", "useNewSetupLayout": false})
            )),
            spec(Some(json!({"packageURL": "file:///a.tgz"}))),
            &APP_SPEC
        ));
    }
}
