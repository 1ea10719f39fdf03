//! Routing: the router (version, health, OpenAPI, the control API, the API fallback) and the
//! filter chain in front of every `/api` and `/apis` request: authentication, discovery, path
//! parsing, authorization, request accounting, injected latency and faults, scope checks, then the
//! verb handlers (or the node simulation for pod exec/log/attach/portforward).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::response::Response;
use axum::Router;
use serde_json::json;

use super::discovery;
use super::handlers::dispatch;
use super::request::{Ctx, Query, Target};
use super::respond::{error_response, not_found_text, too_many_requests};
use super::state::{AppState, PodRequest};
use crate::error::ApiError;
use crate::faults::Injected;
use crate::resources::ResourceKey;
use crate::store::manager_from_user_agent;

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
}
