//! What a request to `/api` or `/apis` carries once parsed: its target, query, the representation
//! the client accepts, the request context the handlers work with, body decoding and the rendering
//! of one object in the accepted representation.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use serde_json::{json, Value};

use super::state::AppState;
use super::table;
use crate::error::ApiError;
use crate::resources::ResourceInfo;
use crate::respond::json_response;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{manager_from_user_agent, Store, WriteOptions};

/// The parsed target of an API request.
#[derive(Debug, Clone)]
pub struct Target {
    /// group
    pub group: String,
    /// version
    pub version: String,
    /// namespace from the path
    pub namespace: Option<String>,
    /// resource
    pub resource: String,
    /// name
    pub name: Option<String>,
    /// subresource
    pub sub: Option<String>,
}

/// Parsed query.
#[derive(Debug, Default, Clone)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub(super) fn parse(uri: &axum::http::Uri) -> Self {
        let q = uri.query().unwrap_or_default();
        Query(serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default())
    }
    /// First value of a key.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
    }
    /// Boolean flag (`true`/`1`).
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true") | Some("1") | Some("True"))
    }
}

/// What the client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wants {
    /// Plain object.
    Object,
    /// meta.k8s.io Table.
    Table,
    /// PartialObjectMetadata(List).
    Metadata,
}

/// The representation the `Accept` header asks for.
pub(crate) fn wants(h: &HeaderMap) -> Wants {
    let accept = h
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if p.contains("as=Table") && p.contains("g=meta.k8s.io") {
            return Wants::Table;
        }
        if p.contains("as=PartialObjectMetadata") && p.contains("g=meta.k8s.io") {
            return Wants::Metadata;
        }
        if p.starts_with("application/json") || p.starts_with("*/*") || p.is_empty() {
            return Wants::Object;
        }
    }
    Wants::Object
}

/// Request context.
pub struct Ctx {
    /// The authenticated user.
    pub user: crate::auth::UserInfo,
    /// App.
    pub app: AppState,
    /// Resource.
    pub info: Arc<ResourceInfo>,
    /// Target.
    pub target: Target,
    /// Query.
    pub query: Query,
    /// Headers.
    pub headers: HeaderMap,
    /// Client name (user agent prefix).
    pub client: String,
    /// Verb.
    pub verb: String,
}

impl Ctx {
    pub(crate) fn ns(&self) -> Option<&str> {
        self.target.namespace.as_deref()
    }
    pub(crate) fn dry_run(&self) -> bool {
        self.query.0.iter().any(|(k, v)| k == "dryRun" && v == "All")
    }
    pub(crate) fn manager(&self) -> String {
        // Like kube-apiserver: the user agent up to the first '/' (empty without a user agent).
        self.query
            .get("fieldManager")
            .map(String::from)
            .unwrap_or_else(|| {
                let ua = self
                    .headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                manager_from_user_agent(ua)
            })
    }
    pub(crate) fn write_opts(&self) -> WriteOptions {
        WriteOptions {
            field_manager: Some(self.manager()),
            dry_run: self.dry_run(),
        }
    }
    pub(crate) fn store(&self) -> &Store {
        &self.app.store
    }
}

/// Parse selectors of a list/watch request.
pub fn selectors(ctx: &Ctx) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let ls = LabelSelector::parse(ctx.query.get("labelSelector").unwrap_or_default())?;
    let fs = FieldSelector::parse(
        ctx.query.get("fieldSelector").unwrap_or_default(),
        &ctx.info.group,
        &ctx.info.resource,
        &ctx.info.kind,
    )?;
    Ok((ls, fs))
}

pub(super) fn decode_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if body.is_empty() {
        return Err(ApiError::bad_request("the body of the request was empty"));
    }
    if ct.contains("yaml") {
        let v: Value = serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?;
        return Ok(v);
    }
    if ct.contains("protobuf") {
        return crate::protobuf::decode(body);
    }
    if ct.contains("cbor") {
        return Err(ApiError::unsupported_media_type(
            ct,
            &["application/json", "application/yaml"],
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized: couldn't get version/kind; json parse error: {e}"
        ))
    })
}

pub(super) fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

pub(super) fn render_one(ctx: &Ctx, obj: Value, code: u16) -> Response {
    match wants(&ctx.headers) {
        Wants::Table => json_response(
            code,
            &table::table(
                &ctx.info,
                std::slice::from_ref(&obj),
                None,
                ctx.query.get("includeObject"),
            ),
        ),
        Wants::Metadata => json_response(code, &partial_metadata(&obj)),
        Wants::Object => json_response(code, &obj),
    }
}
