//! Small pieces shared by the four resource modules: wire-string enums that never fail to
//! deserialize, upstream's validation patterns, and `schema_with` helpers for fields whose
//! upstream schema cannot be expressed with derive attributes alone.

use schemars::{json_schema, Schema, SchemaGenerator};

/// Upstream's pattern for quantity strings (memory, cpu, storage sizes, ...).
pub const QUANTITY_PATTERN: &str = r"^([0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";
/// Upstream's DNS-label pattern (service ids, url schemes).
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Upstream's role-id pattern (kdapp roles, `roleServices[].roleID`).
pub const ROLE_ID_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
/// Upstream's setup-package URL pattern.
pub const PACKAGE_URL_PATTERN: &str = r"^(file|https?)://.+\.tgz$";
/// Upstream's pattern for persisted directories: absolute, no trailing slash.
pub const PERSIST_DIR_PATTERN: &str = r"^/.*[^/]$";
/// Upstream's pattern for lifecycle event names.
pub const EVENT_PATTERN: &str = r"^configure$|^addnodes$|^delnodes$";
/// Upstream's pattern for the kdapp logo URL (sic: `http?`).
pub const LOGO_URL_PATTERN: &str = r"^(file|https|http?)://.+\.(jpeg|png)$";
/// Upstream's pattern for mount paths (secrets, volume projections; sic: unanchored at the end).
pub const MOUNT_PATH_PATTERN: &str = r"^/[a-zA-Z0-9\/-_]*";
/// Upstream's pattern for `serviceType` / `defaultServiceType`.
pub const SERVICE_TYPE_PATTERN: &str = r"^ClusterIP$|^NodePort$|^LoadBalancer$";
/// Upstream's pattern for `namingScheme` / `defaultNamingScheme`.
pub const NAMING_SCHEME_PATTERN: &str = r"^UID$|^CrNameRole$";
/// Upstream's pattern for `appCatalog`.
pub const APP_CATALOG_PATTERN: &str = r"^local$|^system$";

/// Defines a string enum whose serde form is the exact upstream wire string. Unknown strings are
/// kept in an `Other(String)` variant, so deserialization never fails and values round-trip.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $wire:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this implementation does not know; kept verbatim so it round-trips.
            Other(String),
        }

        impl $name {
            /// Every known (non-`Other`) value, in declaration order.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),+];

            /// The exact wire string.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $wire, )+
                    $name::Other(s) => s.as_str(),
                }
            }

            /// Parses a wire string; never fails (unknown strings become `Other`).
            pub fn from_wire(s: &str) -> Self {
                match s {
                    $( $wire => $name::$variant, )+
                    other => $name::Other(other.to_owned()),
                }
            }

            /// `true` unless this is an `Other` value.
            pub fn is_known(&self) -> bool {
                !matches!(self, $name::Other(_))
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = ::std::convert::Infallible;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(Self::from_wire(s))
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::from_wire(s)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self::from_wire(&s)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                ser.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(de)?;
                Ok(Self::from_wire(&s))
            }
        }

        impl ::schemars::JsonSchema for $name {
            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut ::schemars::SchemaGenerator) -> ::schemars::Schema {
                ::schemars::json_schema!({ "type": "string" })
            }
        }
    };
}
pub(crate) use wire_enum;

/// Schema of a (required or optional) quantity string with upstream's pattern.
pub fn quantity_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": QUANTITY_PATTERN })
}

/// Schema of a nullable map of resource name to quantity, with upstream's known keys
/// (`memory`, `cpu`, `ephemeral-storage`, `nvidia.com/gpu`, `amd.com/gpu`) and unknown keys
/// preserved (extended resources). Used for kdapp role `minResources`.
pub fn min_resources_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Minimum resources (resource name -> quantity) a kdcluster role must request.",
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {
            "memory": { "type": "string", "pattern": QUANTITY_PATTERN },
            "cpu": { "type": "string", "pattern": QUANTITY_PATTERN },
            "ephemeral-storage": { "type": "string", "pattern": QUANTITY_PATTERN },
            "nvidia.com/gpu": { "type": "string", "pattern": QUANTITY_PATTERN },
            "amd.com/gpu": { "type": "string", "pattern": QUANTITY_PATTERN }
        }
    })
}

/// Schema of kdcluster role `resources` (a core `ResourceRequirements` restricted as upstream:
/// `limits` required with `memory` and `cpu`; extended resources preserved).
pub fn role_resources_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Compute resources of each member's app container (copied verbatim to the app and init containers).",
        "type": "object",
        "required": ["limits"],
        "properties": {
            "limits": {
                "description": "Resource limits; memory and cpu are required.",
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "required": ["memory", "cpu"],
                "properties": {
                    "memory": { "type": "string", "pattern": QUANTITY_PATTERN },
                    "cpu": { "type": "string", "pattern": QUANTITY_PATTERN },
                    "nvidia.com/gpu": { "type": "string", "pattern": QUANTITY_PATTERN },
                    "amd.com/gpu": { "type": "string", "pattern": QUANTITY_PATTERN },
                    "ephemeral-storage": { "type": "string", "pattern": QUANTITY_PATTERN }
                }
            },
            "requests": {
                "description": "Resource requests.",
                "type": "object",
                "nullable": true,
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {
                    "memory": { "type": "string", "pattern": QUANTITY_PATTERN },
                    "cpu": { "type": "string", "pattern": QUANTITY_PATTERN },
                    "ephemeral-storage": { "type": "string", "pattern": QUANTITY_PATTERN }
                }
            }
        }
    })
}

/// Schema of kdcluster role `env` items as upstream declares them (`name` and `value` required).
pub fn env_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Environment variables of the app container.",
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name", "value"],
            "properties": {
                "name": { "type": "string", "minLength": 1 },
                "value": { "type": "string" }
            }
        }
    })
}
