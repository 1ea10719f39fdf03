//! The HTTP API server: path routing, verbs, status codes, content negotiation, request
//! accounting and fault injection in front of the [`Store`].

pub mod discovery;
pub mod table;
pub mod watch;

use crate::admission::Admission;
use crate::error::ApiError;
use crate::faults::Injected;
use crate::managed;
use crate::patch::{self, PatchType};
use crate::resources::{ResourceInfo, ResourceKey};
use crate::scale::to_scale;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{
    manager_from_user_agent, now_rfc3339, object_rv, DeleteOptions, Propagation, Store, WriteOptions,
};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A request for a pod subresource served by the node simulation (`exec`, `log`, `attach`,
/// `portforward`).
pub struct PodRequest {
    /// The store.
    pub store: Store,
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// `exec`, `log`, `attach` or `portforward`.
    pub subresource: String,
    /// Decoded query parameters, in order (repeated `command=` entries for exec).
    pub query: Vec<(String, String)>,
    /// The raw request (for WebSocket upgrades: `WebSocketUpgrade::from_request(req, &())`).
    pub request: Request,
}

/// Implemented by the node simulation to serve `pods/exec`, `pods/log`, `pods/attach`,
/// `pods/portforward`. The API server checks that the pod exists before calling it.
pub trait PodSubresourceHandler: Send + Sync + 'static {
    /// Handle one request and produce the full HTTP response (or WebSocket upgrade).
    fn handle(&self, req: PodRequest) -> BoxFuture<'static, Response>;
}

/// Shared server state.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Pod subresource handler (exec/log), if the node simulation is running.
    pub pods: Option<Arc<dyn PodSubresourceHandler>>,
    /// Admission webhooks dispatcher.
    pub admission: Arc<Admission>,
    /// Bookmark interval for watches.
    pub bookmark_interval: Duration,
    /// The server's own address (for discovery's serverAddressByClientCIDRs).
    pub address: String,
    /// Extra control hooks (restart).
    pub control: Arc<crate::control::ControlHooks>,
    /// Serialized-object cache shared by watch streams.
    pub render_cache: Arc<watch::RenderCache>,
    /// Fires when the simulator shuts down (ends watch streams).
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Authentication and authorization (the request-path hook).
    pub auth: Arc<crate::auth::Auth>,
}

/// Build the router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/version", axum::routing::get(discovery::version))
        .route("/version/", axum::routing::get(discovery::version))
        .route("/healthz", axum::routing::get(health))
        .route("/livez", axum::routing::get(health))
        .route("/readyz", axum::routing::get(health))
        .route("/openapi/v2", axum::routing::get(discovery::openapi_v2))
        .route("/openapi/v3", axum::routing::get(discovery::openapi_v3))
        .route(
            "/openapi/v3/{*rest}",
            axum::routing::get(discovery::openapi_v3_gv),
        )
        .nest(
            "/kubesim/v1",
            crate::control::router(crate::control::ControlState {
                store: state.store.clone(),
                admission: state.admission.clone(),
                hooks: (*state.control).clone(),
            }),
        )
        .fallback(api)
        .with_state(state)
}

async fn health() -> &'static str {
    "ok"
}

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

pub use crate::respond::json_response;

/// The Status response of an error.
pub fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(&self)
    }
}

fn not_found_text() -> Response {
    let mut r = Response::new(Body::from("404 page not found\n"));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Parsed query.
#[derive(Debug, Default, Clone)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    fn parse(uri: &axum::http::Uri) -> Self {
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

fn parse_target(path: &str) -> Option<Result<Target, ()>> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.first().copied() {
        Some("api") => {
            if segs.len() < 3 {
                return None;
            }
            (String::new(), segs[1].to_string(), &segs[2..])
        }
        Some("apis") => {
            if segs.len() < 4 {
                return None;
            }
            (segs[1].to_string(), segs[2].to_string(), &segs[3..])
        }
        _ => return Some(Err(())),
    };
    let core = group.is_empty();
    let (namespace, rest) = if rest.len() >= 3
        && rest[0] == "namespaces"
        && !(core && rest.len() == 3 && (rest[2] == "status" || rest[2] == "finalize"))
    {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.is_empty() || rest.len() > 3 {
        return Some(Err(()));
    }
    Some(Ok(Target {
        group,
        version,
        namespace,
        resource: rest[0].to_string(),
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    }))
}

fn user_agent(h: &HeaderMap) -> String {
    h.get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_string()
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

fn wants(h: &HeaderMap) -> Wants {
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

/// The fallback handler serving `/api/...` and `/apis/...`.
pub async fn api(State(app): State<AppState>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    // Authentication first (401), then discovery (every authenticated user may read it).
    let user = match app.auth.authenticate(&app.store, req.headers()) {
        Ok(u) => u,
        Err(e) => return error_response(&e),
    };
    if let Some(r) = discovery::handle(&app, &path, req.headers()) {
        return r;
    }
    let target = match parse_target(&path) {
        Some(Ok(t)) => t,
        Some(Err(())) | None => return not_found_text(),
    };
    let query = Query::parse(req.uri());
    // Authorization, before the resource is looked up (as the API server's filter chain).
    let attrs = crate::auth::resource_attributes(
        &verb_of(&method, &target, &query),
        &target.group,
        &target.version,
        &target.resource,
        target.sub.as_deref(),
        target.name.as_deref(),
        target.namespace.as_deref(),
    );
    if let Err(e) = app.auth.check(&app.store, &user, &attrs) {
        return error_response(&e);
    }
    let ua = user_agent(req.headers());
    let client = manager_from_user_agent(&ua);
    let key = ResourceKey::new(&target.group, &target.version, &target.resource);
    let Some(info) = app.store.registry().get(&key) else {
        return error_response(&ApiError::no_route());
    };
    let verb = verb_of(&method, &target, &query);
    let res_label = match &target.sub {
        Some(s) => format!("{}/{}", target.resource, s),
        None => target.resource.clone(),
    };
    app.store
        .metrics()
        .record(&verb, &res_label, &client, query.get("fieldManager"));
    app.store.metrics().record_user_agent(&ua, &verb, &res_label);
    if let Some(d) = app.store.faults().latency(&verb, &res_label) {
        tokio::time::sleep(d).await;
    }
    let injected = app.store.faults().injected(&verb, &res_label);
    if injected.is_some() {
        app.store.faults().record_refused(&client, &verb, &res_label);
    }
    match injected {
        Some(Injected::Throttled(seconds)) => {
            let request = match req.uri().query() {
                Some(q) => format!("{method} {path}?{q}"),
                None => format!("{method} {path}"),
            };
            app.store.faults().record_throttled(&client, request, seconds);
            return too_many_requests(seconds);
        }
        Some(Injected::Error(code)) => {
            return error_response(&ApiError::from_code(
                code,
                format!("kubesim: injected fault for {verb} {res_label}"),
            ))
        }
        None => {}
    }
    // Scope checks.
    if info.namespaced && target.name.is_some() && target.namespace.is_none() {
        return not_found_text();
    }
    if !info.namespaced && target.namespace.is_some() {
        return not_found_text();
    }
    if let Some(s) = &target.sub {
        if !info.has_sub(s) {
            return not_found_text();
        }
    }
    let headers = req.headers().clone();
    let ctx = Ctx {
        user,
        app: app.clone(),
        info,
        target,
        query,
        headers,
        client,
        verb,
    };
    if ctx.target.group.is_empty() && ctx.target.resource == "pods" {
        if let Some(sub) = ctx.target.sub.clone() {
            if ["exec", "log", "attach", "portforward"].contains(&sub.as_str()) {
                return pod_subresource(ctx, sub, req).await;
            }
        }
    }
    let body = match axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return error_response(&ApiError::bad_request(format!("reading body: {e}"))),
    };
    let verb = ctx.verb.clone();
    match dispatch(&ctx, &method, body).await {
        Ok(r) if r.status().is_success() && WRITE_VERBS.contains(&verb.as_str()) => {
            match app.store.faults().error_after_commit(&verb, &res_label) {
                Some(code) => error_response(&after_commit_error(code, &verb, &res_label)),
                None => r,
            }
        }
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

/// Verbs whose success a commit-then-fail rule can hide.
const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// The error answered for a write that was committed anyway: for 504 the API server's own
/// request-timeout Status (what a client sees when etcd committed but the answer came too late).
fn after_commit_error(code: u16, verb: &str, res: &str) -> ApiError {
    if code == 504 {
        ApiError {
            code: 504,
            reason: "Timeout",
            message: "Timeout: request did not complete within requested timeout - context deadline exceeded"
                .into(),
            details: Some(Box::new(json!({}))),
        }
    } else {
        ApiError::from_code(
            code,
            format!("kubesim: injected fault after commit for {verb} {res}"),
        )
    }
}

/// kube-apiserver's overload answer (max-in-flight and priority-and-fairness filters): 429 with
/// a `Retry-After` header and a plain-text body (`http.Error`), not a `Status`.
fn too_many_requests(retry_after_seconds: u64) -> Response {
    let mut r = Response::new(Body::from("Too many requests, please try again later.\n"));
    *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
    r
}

fn verb_of(method: &Method, t: &Target, q: &Query) -> String {
    match *method {
        Method::GET if t.name.is_none() && q.flag("watch") => "watch",
        Method::GET if t.name.is_none() => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if t.name.is_none() => "deletecollection",
        Method::DELETE => "delete",
        _ => "unknown",
    }
    .to_string()
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
    fn ns(&self) -> Option<&str> {
        self.target.namespace.as_deref()
    }
    fn dry_run(&self) -> bool {
        self.query.0.iter().any(|(k, v)| k == "dryRun" && v == "All")
    }
    fn manager(&self) -> String {
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
    fn write_opts(&self) -> WriteOptions {
        WriteOptions {
            field_manager: Some(self.manager()),
            dry_run: self.dry_run(),
        }
    }
    fn store(&self) -> &Store {
        &self.app.store
    }
}

async fn pod_subresource(ctx: Ctx, sub: String, req: Request) -> Response {
    let Some(name) = ctx.target.name.clone() else {
        return not_found_text();
    };
    let ns = ctx.target.namespace.clone().unwrap_or_default();
    let pod = match ctx.store().get_or_404(&ctx.info.key(), Some(&ns), &name) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let Some(handler) = ctx.app.pods.clone() else {
        if pod["spec"]["nodeName"].as_str().unwrap_or_default().is_empty() {
            return error_response(&ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            )));
        }
        return error_response(&ApiError::internal(format!(
            "kubesim: no node simulation is serving pods/{sub}"
        )));
    };
    handler
        .handle(PodRequest {
            store: ctx.app.store.clone(),
            namespace: ns,
            pod: name,
            subresource: sub,
            query: ctx.query.0.clone(),
            request: req,
        })
        .await
}

fn decode_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
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

async fn dispatch(ctx: &Ctx, method: &Method, body: Bytes) -> Result<Response, ApiError> {
    let t = &ctx.target;
    let sub = t.sub.as_deref();
    match (method.clone(), t.name.as_deref(), sub) {
        (Method::GET, None, _) => {
            if !ctx.info.allows("list") {
                return Err(ApiError::method_not_allowed());
            }
            if ctx.query.flag("watch") {
                return watch::serve(ctx).await;
            }
            list(ctx)
        }
        (Method::GET, Some(name), None) => {
            if !ctx.info.allows("get") {
                return Err(ApiError::method_not_allowed());
            }
            let obj = ctx.store().get_current(&ctx.info, ctx.ns(), name)?;
            Ok(render_one(ctx, obj, 200))
        }
        (Method::GET, Some(name), Some("status")) => {
            let obj = ctx.store().get_current(&ctx.info, ctx.ns(), name)?;
            Ok(json_response(200, &obj))
        }
        (Method::GET, Some(name), Some("scale")) => {
            let obj = ctx.store().get_current(&ctx.info, ctx.ns(), name)?;
            Ok(json_response(200, &to_scale(&ctx.info, &obj)))
        }
        (Method::POST, None, None) => {
            if !ctx.info.allows("create") {
                return Err(ApiError::method_not_allowed());
            }
            let obj = decode_body(&ctx.headers, &body)?;
            create(ctx, obj).await
        }
        (Method::POST, Some(name), Some("binding")) => {
            let obj = decode_body(&ctx.headers, &body)?;
            let node = obj["target"]["name"].as_str().unwrap_or_default().to_string();
            ctx.store().bind_pod(ctx.ns().unwrap_or_default(), name, &node)?;
            Ok(json_response(
                201,
                &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","code":201}),
            ))
        }
        (Method::POST, Some(name), Some("eviction")) => {
            let _ = decode_body(&ctx.headers, &body)?;
            ctx.store()
                .delete_info(&ctx.info, ctx.ns(), name, &DeleteOptions::default())?;
            Ok(json_response(
                201,
                &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","code":201}),
            ))
        }
        (Method::POST, Some(_), None) => Err(ApiError::method_not_allowed()),
        (Method::PUT, Some(name), None) => {
            if !ctx.info.allows("update") {
                return Err(ApiError::method_not_allowed());
            }
            let obj = decode_body(&ctx.headers, &body)?;
            update(ctx, name, obj, None).await
        }
        (Method::PUT, Some(name), Some("status")) => {
            let obj = decode_body(&ctx.headers, &body)?;
            update(ctx, name, obj, Some("status")).await
        }
        (Method::PUT, Some(name), Some("scale")) => {
            let obj = decode_body(&ctx.headers, &body)?;
            update_scale(ctx, name, obj).await
        }
        (Method::PUT, Some(name), Some("finalize")) => {
            let obj = decode_body(&ctx.headers, &body)?;
            finalize_namespace(ctx, name, obj)
        }
        (Method::PATCH, Some(name), sub) => {
            if sub.is_none() && !ctx.info.allows("patch") {
                return Err(ApiError::method_not_allowed());
            }
            patch_req(ctx, name, sub, &body).await
        }
        (Method::DELETE, Some(name), None) => {
            if !ctx.info.allows("delete") {
                return Err(ApiError::method_not_allowed());
            }
            delete(ctx, name, &body).await
        }
        (Method::DELETE, None, None) => {
            if !ctx.info.allows("deletecollection") {
                return Err(ApiError::method_not_allowed());
            }
            delete_collection(ctx, &body).await
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

fn render_one(ctx: &Ctx, obj: Value, code: u16) -> Response {
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

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: u64,
    start: String,
}

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    let tok = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: format!("{ns}/{name}\u{0}"),
    };
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&tok).unwrap_or_default())
}

fn decode_continue(s: &str) -> Result<(u64, String, String), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
        .map_err(|_| bad())?;
    let tok: ContinueToken = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let start = tok.start.trim_end_matches('\u{0}');
    let (ns, name) = start.split_once('/').ok_or_else(bad)?;
    Ok((tok.rv, ns.to_string(), name.to_string()))
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

fn list(ctx: &Ctx) -> Result<Response, ApiError> {
    let (ls, fs) = selectors(ctx)?;
    let gr = ctx.info.group_resource();
    let limit: usize = ctx.query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let rv_param = ctx.query.get("resourceVersion").unwrap_or_default();
    let rvm = ctx.query.get("resourceVersionMatch").unwrap_or_default();
    let ns_filter = if ctx.info.namespaced {
        ctx.ns().map(String::from)
    } else {
        None
    };
    type Listed = (Vec<(String, String, Arc<Value>)>, u64, Option<(String, String)>);
    let (objs, list_rv, start): Listed = if let Some(c) = ctx.query.get("continue").filter(|c| !c.is_empty())
    {
        let (rv, ns, name) = decode_continue(c)?;
        let forced = ctx.store().faults().take_expired_continue();
        let snap = ctx.store().snapshot_at(&gr, rv).ok().filter(|_| !forced).ok_or_else(|| {
                ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
            })?;
        (
            snap.into_iter().map(|((a, b), o)| (a, b, o)).collect(),
            rv,
            Some((ns, name)),
        )
    } else if rvm == "Exact" {
        let rv: u64 = rv_param
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv_param}")))?;
        let current = ctx.store().current_rv();
        if rv > current {
            return Err(ApiError::timeout(format!(
                "Too large resource version: {rv}, current: {current}"
            )));
        }
        let snap = ctx.store().snapshot_at(&gr, rv)?;
        (snap.into_iter().map(|((a, b), o)| (a, b, o)).collect(), rv, None)
    } else {
        if !rvm.is_empty() && rvm != "NotOlderThan" {
            return Err(ApiError::bad_request(format!(
                "resourceVersionMatch: Unsupported value: {rvm:?}"
            )));
        }
        if rvm == "NotOlderThan" || (!rv_param.is_empty() && rv_param != "0") {
            if let Ok(rv) = rv_param.parse::<u64>() {
                let current = ctx.store().current_rv();
                if rv > current {
                    return Err(ApiError::timeout(format!(
                        "Too large resource version: {rv}, current: {current}"
                    )));
                }
            }
        }
        // `resourceVersion=0` may be served from a lagging watch cache (a fault).
        let stale = ctx
            .store()
            .faults()
            .stale_lists_at()
            .filter(|_| rv_param == "0" && (rvm.is_empty() || rvm == "NotOlderThan"))
            .and_then(|rv| ctx.store().snapshot_at(&gr, rv).ok().map(|s| (s, rv)));
        let (items, rv) = match stale {
            Some((snap, rv)) => {
                ctx.store().faults().record_stale_list();
                (snap.into_values().collect(), rv)
            }
            None => ctx.store().list_arcs(&gr, None),
        };
        let items = items
            .into_iter()
            .map(|o| {
                let ns = if ctx.info.namespaced {
                    o["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                } else {
                    String::new()
                };
                let name = o["metadata"]["name"].as_str().unwrap_or_default().to_string();
                (ns, name, o)
            })
            .collect();
        (items, rv, None)
    };
    let api_version = ctx.info.api_version();
    let mut out: Vec<std::borrow::Cow<'_, Value>> = Vec::new();
    let mut next: Option<(String, String)> = None;
    let mut remaining = 0usize;
    for (ns, name, o) in objs.iter() {
        if let Some(f) = &ns_filter {
            if ns != f {
                continue;
            }
        }
        if let Some((sns, sname)) = &start {
            if (ns.as_str(), name.as_str()) <= (sns.as_str(), sname.as_str()) {
                continue;
            }
        }
        let o: std::borrow::Cow<'_, Value> = if o["apiVersion"].as_str() == Some(api_version.as_str()) {
            std::borrow::Cow::Borrowed(o.as_ref())
        } else {
            std::borrow::Cow::Owned(Store::to_version(&ctx.info, o))
        };
        if !ls.matches(&o["metadata"]["labels"]) || !fs.matches(&o) {
            continue;
        }
        if limit > 0 && out.len() >= limit {
            remaining += 1;
            continue;
        }
        if limit > 0 && out.len() + 1 == limit {
            next = Some((ns.clone(), name.clone()));
        }
        out.push(o);
    }
    let mut meta = serde_json::Map::new();
    meta.insert("resourceVersion".into(), json!(list_rv.to_string()));
    if remaining > 0 {
        if let Some((ns, name)) = next {
            meta.insert("continue".into(), json!(encode_continue(list_rv, &ns, &name)));
            if ls.is_empty() && fs.is_empty() {
                meta.insert("remainingItemCount".into(), json!(remaining));
            }
        }
    }
    let body = match wants(&ctx.headers) {
        Wants::Table => {
            let owned: Vec<Value> = out.iter().map(|c| c.as_ref().clone()).collect();
            table::table(
                &ctx.info,
                &owned,
                Some(Value::Object(meta)),
                ctx.query.get("includeObject"),
            )
        }
        Wants::Metadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "items": out.iter().map(|c| partial_metadata(c)).collect::<Vec<_>>(),
        }),
        Wants::Object => {
            // Serialize items in place (no deep copies of large lists).
            let mut buf: Vec<u8> = Vec::with_capacity(out.len() * 1024 + 256);
            buf.extend_from_slice(b"{\"kind\":");
            let _ = serde_json::to_writer(&mut buf, &ctx.info.list_kind);
            buf.extend_from_slice(b",\"apiVersion\":");
            let _ = serde_json::to_writer(&mut buf, &api_version);
            buf.extend_from_slice(b",\"metadata\":");
            let _ = serde_json::to_writer(&mut buf, &meta);
            buf.extend_from_slice(b",\"items\":[");
            for (i, o) in out.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                let _ = serde_json::to_writer(&mut buf, o.as_ref());
            }
            buf.extend_from_slice(b"]}");
            let mut r = Response::new(Body::from(buf));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return Ok(r);
        }
    };
    Ok(json_response(200, &body))
}

/// Server-side field validation (`fieldValidation`, default `Warn`) for custom resources:
/// `Strict` fails with 400, `Warn` returns the warnings to send as `Warning` headers.
fn field_validation(ctx: &Ctx, obj: &Value) -> Result<Vec<String>, ApiError> {
    if ctx.info.crd.is_none() {
        return Ok(Vec::new());
    }
    let unknown = crate::crd::unknown_fields(&ctx.info, obj);
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    match ctx.query.get("fieldValidation").unwrap_or("Warn") {
        "Strict" => Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            unknown
                .iter()
                .map(|u| format!("unknown field \"{u}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        "Ignore" => Ok(Vec::new()),
        _ => Ok(unknown.iter().map(|u| format!("unknown field \"{u}\"")).collect()),
    }
}

fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let v = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(h) = HeaderValue::from_str(&v) {
            r.headers_mut().append(header::WARNING, h);
        }
    }
    r
}

async fn create(ctx: &Ctx, obj: Value) -> Result<Response, ApiError> {
    let info = &ctx.info;
    if info.verbs == ["create"] {
        return Ok(json_response(
            201,
            &crate::reviews::answer(info, obj, &ctx.app.auth, ctx.store(), &ctx.user, ctx.ns())?,
        ));
    }
    let warnings = field_validation(ctx, &obj)?;
    let obj = admit_create(ctx, obj).await?;
    let out = ctx
        .store()
        .commit_create(info, obj, &ctx.write_opts(), "Update")?;
    Ok(with_warnings(render_one(ctx, out, 201), &warnings))
}

/// The create path every write verb shares: server-side defaulting and name generation,
/// admission webhooks, then validation. The caller commits (apply adjusts managed fields first).
async fn admit_create(ctx: &Ctx, candidate: Value) -> Result<Value, ApiError> {
    let info = &ctx.info;
    let obj = ctx.store().prepare_create(info, ctx.ns(), candidate)?;
    let obj = ctx
        .app
        .admission
        .admit(
            ctx.store(),
            info,
            "CREATE",
            None,
            obj,
            None,
            ctx.dry_run(),
            &ctx.client,
        )
        .await?;
    ctx.store().validate_object(info, &obj, None)?;
    Ok(obj)
}

/// The update path every write verb shares: server-side defaulting and immutability checks,
/// admission webhooks, validation, then the optimistic commit against `expected` (a
/// resourceVersion precondition). `operation` is the managedFields operation (`Update`/`Apply`).
async fn admit_and_commit_update(
    ctx: &Ctx,
    name: &str,
    old: &Value,
    candidate: Value,
    expected: Option<u64>,
    sub: Option<&str>,
    operation: &str,
) -> Result<Value, ApiError> {
    let info = &ctx.info;
    let new = ctx
        .store()
        .prepare_update(info, old, candidate, sub, ctx.ns(), name)?;
    let new = ctx
        .app
        .admission
        .admit(
            ctx.store(),
            info,
            "UPDATE",
            sub,
            new,
            Some(old),
            ctx.dry_run(),
            &ctx.client,
        )
        .await?;
    ctx.store().validate_object(info, &new, Some(old))?;
    ctx.store()
        .commit_update(info, new, expected, &ctx.write_opts(), sub, operation)
}

async fn update(ctx: &Ctx, name: &str, obj: Value, sub: Option<&str>) -> Result<Response, ApiError> {
    let info = &ctx.info;
    let old = ctx.store().get_current(info, ctx.ns(), name)?;
    let expected = object_rv(&obj);
    if obj["metadata"]["resourceVersion"].is_string() && expected.is_none() {
        return Err(ApiError::bad_request("invalid resourceVersion"));
    }
    // Custom resources and CRDs do not allow unconditional updates (their strategies'
    // AllowUnconditionalUpdate is false): a PUT without resourceVersion is 422, as from the
    // API server's generic registry (qualified by resource, value printed as Go's %#v).
    if expected.is_none() && (info.crd.is_some() || info.group == "apiextensions.k8s.io") {
        return Err(ApiError::invalid(
            &info.group,
            &info.resource,
            name,
            vec![crate::error::Cause::new(
                "FieldValueInvalid",
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
            )],
        ));
    }
    if ctx.store().faults().force_conflict() {
        return Err(ApiError::conflict_modified(&info.group, &info.resource, name));
    }
    let warnings = field_validation(ctx, &obj)?;
    let out = admit_and_commit_update(ctx, name, &old, obj, expected, sub, "Update").await?;
    Ok(with_warnings(render_one(ctx, out, 200), &warnings))
}

async fn update_scale(ctx: &Ctx, name: &str, scale: Value) -> Result<Response, ApiError> {
    let info = &ctx.info;
    let old = ctx.store().get_current(info, ctx.ns(), name)?;
    let expected = object_rv(&scale);
    let Some(replicas) = scale["spec"]["replicas"].as_i64() else {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            vec![crate::error::Cause::required("spec.replicas", "")],
        ));
    };
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            vec![crate::error::Cause::invalid(
                "spec.replicas",
                &json!(replicas),
                "must be greater than or equal to 0",
            )],
        ));
    }
    let mut new = old.clone();
    let path = info
        .scale
        .as_ref()
        .map(|s| s.spec_replicas.clone())
        .unwrap_or_else(|| ".spec.replicas".into());
    let segs: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    crate::util::set_path(&mut new, &segs, json!(replicas));
    let new = ctx
        .app
        .admission
        .admit(
            ctx.store(),
            info,
            "UPDATE",
            Some("scale"),
            new,
            Some(&old),
            ctx.dry_run(),
            &ctx.client,
        )
        .await?;
    ctx.store().validate_object(info, &new, Some(&old))?;
    let out = ctx
        .store()
        .commit_update(info, new, expected, &ctx.write_opts(), Some("scale"), "Update")?;
    Ok(json_response(200, &to_scale(info, &out)))
}

fn finalize_namespace(ctx: &Ctx, name: &str, obj: Value) -> Result<Response, ApiError> {
    let info = &ctx.info;
    let mut cur = ctx.store().get_current(info, None, name)?;
    cur["spec"]["finalizers"] = obj["spec"]["finalizers"].clone();
    let out = ctx
        .store()
        .commit_update(info, cur, None, &ctx.write_opts(), Some("finalize"), "Update")?;
    Ok(json_response(200, &out))
}

async fn patch_req(ctx: &Ctx, name: &str, sub: Option<&str>, body: &Bytes) -> Result<Response, ApiError> {
    let info = &ctx.info;
    let ct = ctx
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let accepted: &[&str] = if info.crd.is_some() {
        &[
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ]
    } else {
        &[
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml",
        ]
    };
    let Some(pt) = PatchType::from_content_type(ct) else {
        return Err(ApiError::unsupported_media_type(ct, accepted));
    };
    if pt == PatchType::Strategic && info.crd.is_some() {
        return Err(ApiError::unsupported_media_type(ct, accepted));
    }
    let patch_doc: Value = if pt == PatchType::Apply {
        serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
    };
    if pt == PatchType::Apply {
        return apply(ctx, name, sub, patch_doc).await;
    }
    if sub == Some("scale") {
        let old = ctx.store().get_current(info, ctx.ns(), name)?;
        let scale = to_scale(info, &old);
        let patched = apply_patch(pt, &scale, &patch_doc)?;
        return update_scale(ctx, name, patched).await;
    }
    if ctx.store().faults().force_conflict() {
        return Err(ApiError::conflict_modified(&info.group, &info.resource, name));
    }
    // Patches retry on conflicts internally, like the real server.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let old = ctx.store().get_current(info, ctx.ns(), name)?;
        let patched = apply_patch(pt, &old, &patch_doc)?;
        // A patch that sets metadata.resourceVersion is a precondition.
        let expected = match object_rv(&patched) {
            Some(rv) if patched["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] => {
                Some(rv)
            }
            _ => object_rv(&old),
        };
        let user_rv = patch_doc["metadata"]["resourceVersion"].is_string();
        let warnings = field_validation(ctx, &patched)?;
        match admit_and_commit_update(ctx, name, &old, patched, expected, sub, "Update").await {
            Err(e) if e.code == 409 && e.reason == "Conflict" && !user_rv && attempts < 5 => continue,
            Err(e) => return Err(e),
            Ok(out) => return Ok(with_warnings(render_one(ctx, out, 200), &warnings)),
        }
    }
}

fn apply_patch(pt: PatchType, target: &Value, patch_doc: &Value) -> Result<Value, ApiError> {
    match pt {
        PatchType::Json => patch::json_patch(target, patch_doc),
        PatchType::Merge => {
            if !patch_doc.is_object() {
                return Err(ApiError::bad_request("merge patch must be a JSON object"));
            }
            Ok(patch::merge_patch(target, patch_doc))
        }
        PatchType::Strategic => patch::strategic_merge(target, patch_doc),
        PatchType::Apply => Ok(patch_doc.clone()),
    }
}

async fn apply(ctx: &Ctx, name: &str, sub: Option<&str>, applied: Value) -> Result<Response, ApiError> {
    let info = &ctx.info;
    let Some(manager) = ctx.query.get("fieldManager").filter(|m| !m.is_empty()) else {
        // The API server's answer: 422 Invalid on the PatchOptions, one FieldValueRequired cause.
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "PatchOptions",
            "",
            vec![crate::error::Cause::required(
                "fieldManager",
                "is required for apply patch",
            )],
        ));
    };
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "error decoding YAML: the apply configuration must be an object",
        ));
    }
    let av = applied["apiVersion"].as_str().unwrap_or_default();
    let kind = applied["kind"].as_str().unwrap_or_default();
    if av.is_empty() || kind.is_empty() {
        return Err(ApiError::bad_request(
            "invalid object type: /, Kind= : apiVersion and kind must be set in an apply configuration",
        ));
    }
    let body_name = applied["metadata"]["name"].as_str().unwrap_or_default();
    let exists = ctx.store().get_current(info, ctx.ns(), name).is_ok();
    if (!body_name.is_empty() || !exists) && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let force = ctx.query.flag("force");
    let warnings = field_validation(ctx, &applied)?;
    let now = now_rfc3339();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let live = ctx.store().get_current(info, ctx.ns(), name).ok();
        match live {
            None => {
                if sub.is_some() {
                    return Err(ApiError::not_found(&info.group, &info.resource, name));
                }
                let merged = managed::apply(info, None, &applied, manager, force, None, &now)?;
                let mut obj = admit_create(ctx, merged).await?;
                // Managed fields of the applier refer to the applied configuration.
                let es = managed::entries(&obj);
                managed::set_entries(&mut obj, &es);
                match ctx.store().commit_create(info, obj, &ctx.write_opts(), "Apply") {
                    Err(e) if e.reason == "AlreadyExists" && attempts < 5 => continue,
                    Err(e) => return Err(e),
                    Ok(out) => return Ok(with_warnings(render_one(ctx, out, 201), &warnings)),
                }
            }
            Some(old) => {
                let merged = managed::apply(info, Some(&old), &applied, manager, force, sub, &now)?;
                let expected = object_rv(&old);
                match admit_and_commit_update(ctx, name, &old, merged, expected, sub, "Apply").await {
                    Err(e)
                        if e.code == 409
                            && e.reason == "Conflict"
                            && attempts < 5
                            && e.message.contains("has been modified") =>
                    {
                        continue
                    }
                    Err(e) => return Err(e),
                    Ok(out) => return Ok(with_warnings(render_one(ctx, out, 200), &warnings)),
                }
            }
        }
    }
}

fn delete_options(ctx: &Ctx, body: &Bytes) -> Result<DeleteOptions, ApiError> {
    let mut o = DeleteOptions {
        dry_run: ctx.dry_run(),
        ..Default::default()
    };
    let parse_prop = |s: &str| match s {
        "Background" => Ok(Some(Propagation::Background)),
        "Foreground" => Ok(Some(Propagation::Foreground)),
        "Orphan" => Ok(Some(Propagation::Orphan)),
        other => Err(ApiError::invalid(
            "",
            "DeleteOptions",
            "",
            vec![crate::error::Cause::not_supported(
                "propagationPolicy",
                &json!(other),
                &[
                    json!("Foreground"),
                    json!("Background"),
                    json!("Orphan"),
                    json!("nil"),
                ],
            )],
        )),
    };
    if let Some(p) = ctx.query.get("propagationPolicy") {
        o.propagation = parse_prop(p)?;
    }
    if let Some(g) = ctx.query.get("gracePeriodSeconds").and_then(|g| g.parse().ok()) {
        o.grace_period_seconds = Some(g);
    }
    if let Some(orphan) = ctx.query.get("orphanDependents") {
        if o.propagation.is_none() {
            o.propagation = Some(if orphan == "true" {
                Propagation::Orphan
            } else {
                Propagation::Background
            });
        }
    }
    if !body.is_empty() {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?;
        if let Some(p) = v["propagationPolicy"].as_str() {
            o.propagation = parse_prop(p)?;
        }
        if let Some(g) = v["gracePeriodSeconds"].as_i64() {
            o.grace_period_seconds = Some(g);
        }
        if let Some(u) = v["preconditions"]["uid"].as_str() {
            o.precondition_uid = Some(u.to_string());
        }
        if let Some(r) = v["preconditions"]["resourceVersion"].as_str() {
            o.precondition_rv = Some(r.to_string());
        }
        if v["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "All"))
        {
            o.dry_run = true;
        }
        if o.propagation.is_none() {
            if let Some(b) = v["orphanDependents"].as_bool() {
                o.propagation = Some(if b {
                    Propagation::Orphan
                } else {
                    Propagation::Background
                });
            }
        }
    }
    Ok(o)
}

fn returns_deleted_object(info: &ResourceInfo) -> bool {
    info.group.is_empty()
        && matches!(
            info.resource.as_str(),
            "pods" | "services" | "namespaces" | "persistentvolumeclaims" | "persistentvolumes"
        )
}

async fn delete(ctx: &Ctx, name: &str, body: &Bytes) -> Result<Response, ApiError> {
    let info = &ctx.info;
    let opts = delete_options(ctx, body)?;
    let old = ctx.store().get_current(info, ctx.ns(), name)?;
    ctx.app
        .admission
        .admit_delete(ctx.store(), info, &old, ctx.dry_run(), &ctx.client)
        .await?;
    let (obj, gone) = ctx.store().delete_info(info, ctx.ns(), name, &opts)?;
    if gone && !returns_deleted_object(info) {
        let mut details = serde_json::Map::new();
        details.insert("name".into(), json!(name));
        if !info.group.is_empty() {
            details.insert("group".into(), json!(info.group));
        }
        details.insert("kind".into(), json!(info.resource));
        details.insert("uid".into(), obj["metadata"]["uid"].clone());
        return Ok(json_response(
            200,
            &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","details": details}),
        ));
    }
    let code = if !gone && opts.propagation == Some(Propagation::Foreground) {
        202
    } else {
        200
    };
    Ok(json_response(code, &obj))
}

async fn delete_collection(ctx: &Ctx, body: &Bytes) -> Result<Response, ApiError> {
    let info = &ctx.info;
    let opts = delete_options(ctx, body)?;
    let (ls, fs) = selectors(ctx)?;
    let (items, rv) = ctx.store().list_arcs(
        &info.group_resource(),
        if info.namespaced { ctx.ns() } else { None },
    );
    let mut deleted = Vec::new();
    for o in items {
        if !ls.matches(&o["metadata"]["labels"]) || !fs.matches(&o) {
            continue;
        }
        let name = o["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let ns = o["metadata"]["namespace"].as_str().map(String::from);
        ctx.app
            .admission
            .admit_delete(ctx.store(), info, &o, ctx.dry_run(), &ctx.client)
            .await?;
        match ctx.store().delete_info(info, ns.as_deref(), &name, &opts) {
            Ok((obj, _)) => deleted.push(Store::to_version(info, &obj)),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let _ = HashMap::<(), ()>::new();
    Ok(json_response(
        200,
        &json!({"kind": info.list_kind, "apiVersion": info.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": deleted}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("/api/v1/namespaces/ns1/pods/p/status")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                t.namespace.as_deref(),
                t.resource.as_str(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            (Some("ns1"), "pods", Some("p"), Some("status"))
        );
        let t = parse_target("/api/v1/namespaces/ns1/status").unwrap().unwrap();
        assert_eq!(
            (
                t.namespace.as_deref(),
                t.resource.as_str(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            (None, "namespaces", Some("ns1"), Some("status"))
        );
        let t = parse_target("/apis/apps/v1/statefulsets").unwrap().unwrap();
        assert_eq!((t.group.as_str(), t.resource.as_str()), ("apps", "statefulsets"));
        assert!(parse_target("/api/v1").is_none());
        assert!(parse_target("/foo").unwrap().is_err());
    }

    #[test]
    fn continue_roundtrip() {
        let t = encode_continue(42, "ns", "a");
        assert_eq!(decode_continue(&t).unwrap(), (42, "ns".into(), "a".into()));
        assert!(decode_continue("!!").is_err());
    }
}
