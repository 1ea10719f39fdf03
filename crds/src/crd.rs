//! CustomResourceDefinition generation.
//!
//! The schemas are derived from the Rust types with schemars and then made *structural* (the
//! form the API server requires) by [`structural_schema_of`]: `$ref`s are inlined, `format`,
//! `title`, `default` and `$schema` are dropped, `type: [T, "null"]` / `anyOf [T, null]` become
//! plain `T` (an `Option` is "may be absent", not "may be null"), `additionalProperties` next to
//! `properties` is removed. `nullable: true` therefore only appears where a field asks for it
//! explicitly with `#[schemars(extend("nullable" = true))]`, exactly where upstream's CRDs have
//! it. The root object (apiVersion/kind/metadata/spec/status) is assembled here as upstream
//! writes it, including upstream's `metadata.name` constraints.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionNames, CustomResourceDefinitionSpec,
    CustomResourceDefinitionVersion, CustomResourceSubresourceStatus, CustomResourceSubresources,
    CustomResourceValidation, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::crd::v1::CustomResourceExt;
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::{
    KubeDirectorApp, KubeDirectorAppSpec, KubeDirectorCluster, KubeDirectorClusterSpec,
    KubeDirectorClusterStatus, KubeDirectorConfigSpec, KubeDirectorConfigStatus, KubeDirectorStatusBackup,
    KubeDirectorStatusBackupSpec,
};

/// Errors while generating CRDs.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// The generated schema of a kind does not convert into `JSONSchemaProps`.
    #[error("generated openAPIV3Schema of {kind} is not a valid JSONSchemaProps: {source}")]
    Schema {
        /// The kind whose schema failed.
        kind: &'static str,
        /// The conversion error.
        source: serde_json::Error,
    },
    /// A CRD could not be rendered as YAML.
    #[error("cannot render CRD {name} as YAML: {source}")]
    Yaml {
        /// The CRD name.
        name: String,
        /// The YAML error.
        source: serde_yaml::Error,
    },
}

/// Schema keywords dropped from every node (not allowed, or not wanted, in a CRD schema).
const DROPPED_KEYWORDS: &[&str] = &[
    "$schema",
    "$id",
    "title",
    "format",
    "default",
    "examples",
    "example",
    "readOnly",
    "writeOnly",
    "deprecated",
];

/// The structural JSON schema of `T`, as a JSON value (see the module docs).
pub fn structural_schema_of<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
            // No AddNullable: `Option` must not imply `nullable`; see `structuralize`.
            s.transforms = Vec::new();
        })
        .into_generator();
    let mut value = generator.into_root_schema_for::<T>().to_value();
    structuralize(&mut value);
    value
}

/// Rewrites one schema node (recursively) into structural form.
fn structuralize(node: &mut Value) {
    let Value::Object(map) = node else {
        return;
    };
    if let Some(Value::Array(types)) = map.get("type") {
        let non_null: Vec<Value> = types
            .iter()
            .filter(|t| t.as_str() != Some("null"))
            .cloned()
            .collect();
        if non_null.len() == 1 {
            map.insert("type".into(), non_null.into_iter().next().unwrap_or(Value::Null));
        }
    }
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(alternatives)) = map.get(key) else {
            continue;
        };
        let is_null = |v: &Value| v.get("type").and_then(Value::as_str) == Some("null");
        let non_null: Vec<Value> = alternatives.iter().filter(|v| !is_null(v)).cloned().collect();
        if non_null.len() == 1 && alternatives.len() == 2 {
            map.remove(key);
            if let Some(Value::Object(inner)) = non_null.into_iter().next() {
                for (k, v) in inner {
                    map.entry(k).or_insert(v);
                }
            }
        }
    }
    for keyword in DROPPED_KEYWORDS {
        map.remove(*keyword);
    }
    if let Some(Value::Array(required)) = map.get_mut("required") {
        // sorted, as kube's own schema rewriter does, so `crd()` and `crds()` agree
        required.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    }
    if map.contains_key("properties") {
        map.remove("additionalProperties");
    } else if map.get("additionalProperties") == Some(&Value::Bool(true)) {
        map.remove("additionalProperties");
        map.insert("x-kubernetes-preserve-unknown-fields".into(), Value::Bool(true));
    }
    if let Some(Value::Object(props)) = map.get_mut("properties") {
        props.values_mut().for_each(structuralize);
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(child) = map.get_mut(key) {
            structuralize(child);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(children)) = map.get_mut(key) {
            children.iter_mut().for_each(structuralize);
        }
    }
}

/// Assembles upstream's root object schema around the spec (and status) schemas.
fn root_schema(metadata: Value, spec: Value, status: Option<Value>, spec_required: bool) -> Value {
    let mut properties = Map::new();
    properties.insert("apiVersion".into(), json!({ "type": "string" }));
    properties.insert("kind".into(), json!({ "type": "string" }));
    properties.insert("metadata".into(), metadata);
    properties.insert("spec".into(), spec);
    if let Some(mut status) = status {
        if let Value::Object(m) = &mut status {
            m.insert("nullable".into(), Value::Bool(true));
        }
        properties.insert("status".into(), status);
    }
    let required: Vec<&str> = if spec_required {
        vec!["apiVersion", "kind", "metadata", "spec"]
    } else {
        vec!["apiVersion", "kind", "metadata"]
    };
    json!({ "type": "object", "required": required, "properties": properties })
}

fn with_schema(
    mut crd: CustomResourceDefinition,
    kind: &'static str,
    schema: Value,
) -> Result<CustomResourceDefinition, CrdError> {
    let props: JSONSchemaProps =
        serde_json::from_value(schema).map_err(|source| CrdError::Schema { kind, source })?;
    crd.spec.names.list_kind = Some(format!("{}List", crd.spec.names.kind));
    for version in &mut crd.spec.versions {
        version.schema = Some(CustomResourceValidation {
            open_api_v3_schema: Some(props.clone()),
        });
    }
    Ok(crd)
}

/// The openAPIV3Schema of the kubedirectorapps CRD, as JSON.
pub fn app_schema() -> Value {
    root_schema(
        json!({ "type": "object", "properties": { "name": { "type": "string", "maxLength": 63 } } }),
        structural_schema_of::<KubeDirectorAppSpec>(),
        None,
        true,
    )
}

/// The openAPIV3Schema of the kubedirectorclusters CRD, as JSON.
pub fn cluster_schema() -> Value {
    root_schema(
        json!({ "type": "object" }),
        structural_schema_of::<KubeDirectorClusterSpec>(),
        Some(structural_schema_of::<KubeDirectorClusterStatus>()),
        true,
    )
}

/// The openAPIV3Schema of the kubedirectorconfigs CRD, as JSON.
pub fn config_schema() -> Value {
    let mut spec = structural_schema_of::<KubeDirectorConfigSpec>();
    if let Value::Object(m) = &mut spec {
        m.insert("nullable".into(), Value::Bool(true));
    }
    root_schema(
        json!({ "type": "object", "properties": { "name": { "type": "string", "pattern": "^kd-global-config$" } } }),
        spec,
        Some(structural_schema_of::<KubeDirectorConfigStatus>()),
        false,
    )
}

/// The openAPIV3Schema of the kubedirectorstatusbackups CRD, as JSON.
pub fn status_backup_schema() -> Value {
    root_schema(
        json!({ "type": "object" }),
        structural_schema_of::<KubeDirectorStatusBackupSpec>(),
        None,
        true,
    )
}

/// `JsonSchema` of the root types (`schema = "manual"` in their `CustomResource` derive), so
/// that the derived `CustomResourceExt::crd()` carries the same schema as [`crds`] (kube adds a
/// root `title`; [`crds`] does not).
macro_rules! root_json_schema {
    ($ty:ty, $name:literal, $schema:expr) => {
        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                match $schema {
                    Value::Object(map) => schemars::Schema::from(map),
                    _ => schemars::Schema::default(),
                }
            }
        }
    };
}

root_json_schema!(KubeDirectorApp, "KubeDirectorApp", app_schema());
root_json_schema!(KubeDirectorCluster, "KubeDirectorCluster", cluster_schema());
root_json_schema!(
    KubeDirectorStatusBackup,
    "KubeDirectorStatusBackup",
    status_backup_schema()
);

/// The kubedirectorapps CRD.
pub fn app_crd() -> Result<CustomResourceDefinition, CrdError> {
    with_schema(KubeDirectorApp::crd(), "KubeDirectorApp", app_schema())
}

/// The kubedirectorclusters CRD.
pub fn cluster_crd() -> Result<CustomResourceDefinition, CrdError> {
    with_schema(
        KubeDirectorCluster::crd(),
        "KubeDirectorCluster",
        cluster_schema(),
    )
}

/// The kubedirectorstatusbackups CRD.
pub fn status_backup_crd() -> Result<CustomResourceDefinition, CrdError> {
    with_schema(
        KubeDirectorStatusBackup::crd(),
        "KubeDirectorStatusBackup",
        status_backup_schema(),
    )
}

/// The kubedirectorconfigs CRD without its schema (names, scope, version, status subresource).
fn config_crd_skeleton() -> CustomResourceDefinition {
    CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some("kubedirectorconfigs.kubedirector.hpe.com".into()),
            ..ObjectMeta::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: crate::GROUP.into(),
            names: CustomResourceDefinitionNames {
                kind: "KubeDirectorConfig".into(),
                plural: "kubedirectorconfigs".into(),
                singular: Some("kubedirectorconfig".into()),
                short_names: Some(vec!["kdconfig".into()]),
                ..CustomResourceDefinitionNames::default()
            },
            scope: "Namespaced".into(),
            versions: vec![CustomResourceDefinitionVersion {
                name: crate::VERSION.into(),
                served: true,
                storage: true,
                subresources: Some(CustomResourceSubresources {
                    status: Some(CustomResourceSubresourceStatus(json!({}))),
                    scale: None,
                }),
                ..CustomResourceDefinitionVersion::default()
            }],
            ..CustomResourceDefinitionSpec::default()
        },
        status: None,
    }
}

/// The kubedirectorconfigs CRD.
pub fn try_config_crd() -> Result<CustomResourceDefinition, CrdError> {
    with_schema(config_crd_skeleton(), "KubeDirectorConfig", config_schema())
}

/// The kubedirectorconfigs CRD for `CustomResourceExt::crd()`; falls back to the CRD without a
/// schema should the schema ever fail to convert (the crate's tests prove it does not).
pub(crate) fn config_crd() -> CustomResourceDefinition {
    try_config_crd().unwrap_or_else(|_| config_crd_skeleton())
}

/// All four CRDs in a stable order: apps, clusters, configs, statusbackups.
pub fn crds() -> Result<Vec<CustomResourceDefinition>, CrdError> {
    Ok(vec![
        app_crd()?,
        cluster_crd()?,
        try_config_crd()?,
        status_backup_crd()?,
    ])
}

/// One CRD as a YAML document (no leading `---`).
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, CrdError> {
    serde_yaml::to_string(crd).map_err(|source| CrdError::Yaml {
        name: crd.metadata.name.clone().unwrap_or_default(),
        source,
    })
}

/// All four CRDs as one multi-document YAML stream (same order as [`crds`]).
pub fn crds_yaml() -> Result<String, CrdError> {
    let mut out = String::new();
    for crd in crds()? {
        out.push_str("---\n");
        out.push_str(&crd_yaml(&crd)?);
    }
    Ok(out)
}

/// File name of a CRD under `deploy/crds/` (e.g. `kubedirector.hpe.com_kubedirectorclusters.yaml`).
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}
