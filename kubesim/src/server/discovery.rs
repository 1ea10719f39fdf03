//! Discovery (`/api`, `/apis`, group and group/version resource lists), `/version`, and a
//! minimal OpenAPI surface.
//!
//! Aggregated discovery (`apidiscovery.k8s.io/v2`, `as=APIGroupDiscoveryList`) is served on
//! `/api` and `/apis` when the client asks for it (kubectl 1.32 and kube-rs `run_aggregated`
//! do); otherwise the legacy documents are answered.

use super::state::AppState;
use crate::respond::json_response;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

pub use crate::cluster::GIT_VERSION;

/// `/version`.
pub async fn version() -> Response {
    json_response(
        200,
        &json!({
            "major": "1",
            "minor": "33",
            "emulationMajor": "1",
            "emulationMinor": "33",
            "minCompatibilityMajor": "1",
            "minCompatibilityMinor": "32",
            "gitVersion": GIT_VERSION,
            "gitCommit": "kubesim",
            "gitTreeState": "clean",
            "buildDate": "2025-04-23T00:00:00Z",
            "goVersion": "go1.24.2",
            "compiler": "gc",
            "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
        }),
    )
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    let pref = vs.first().cloned().unwrap_or(Value::Null);
    json!({"name": name, "versions": vs, "preferredVersion": pref})
}

/// Serve discovery paths; `None` if the path is not a discovery document.
pub fn handle(app: &AppState, path: &str, headers: &HeaderMap) -> Option<Response> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let reg = app.store.registry();
    if wants_aggregated(headers) {
        match segs.as_slice() {
            ["api"] => return Some(aggregated(app, true)),
            ["apis"] => return Some(aggregated(app, false)),
            _ => {}
        }
    }
    match segs.as_slice() {
        ["api"] => Some(json_response(
            200,
            &json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": app.address}],
            }),
        )),
        ["api", "v1"] => Some(resource_list(app, "", "v1")),
        ["apis"] => {
            let groups = reg.groups();
            let list: Vec<Value> = reg
                .group_order()
                .iter()
                .filter(|g| !g.is_empty())
                .filter_map(|g| groups.get(g).map(|vs| group_json(g, vs)))
                .collect();
            Some(json_response(
                200,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list}),
            ))
        }
        ["apis", g] => {
            let groups = reg.groups();
            match groups.get(*g).filter(|_| !g.is_empty()) {
                Some(vs) => {
                    let mut gj = group_json(g, vs);
                    gj["kind"] = json!("APIGroup");
                    gj["apiVersion"] = json!("v1");
                    Some(json_response(200, &gj))
                }
                None => Some(json_response(
                    404,
                    &crate::error::ApiError::no_route().to_status(),
                )),
            }
        }
        ["apis", g, v] => Some(resource_list(app, g, v)),
        _ => None,
    }
}

fn wants_aggregated(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    accept.split(',').any(|p| {
        let p = p.replace(' ', "");
        p.contains("as=APIGroupDiscoveryList")
            && p.contains("g=apidiscovery.k8s.io")
            && p.contains("v=v2;") | p.ends_with("v=v2")
    })
}

/// Aggregated discovery (`apidiscovery.k8s.io/v2` APIGroupDiscoveryList).
fn aggregated(app: &AppState, core: bool) -> Response {
    let reg = app.store.registry();
    let groups = reg.groups();
    let all = reg.all();
    let mut items = Vec::new();
    for g in reg.group_order() {
        if g.is_empty() != core {
            continue;
        }
        let Some(vs) = groups.get(&g) else { continue };
        let versions: Vec<Value> = vs
            .iter()
            .map(|v| {
                let resources: Vec<Value> = all
                    .iter()
                    .filter(|i| i.group == g && &i.version == v)
                    .map(|i| {
                        let mut r = json!({
                            "resource": i.resource,
                            "responseKind": {"group": i.group, "version": i.version, "kind": i.kind},
                            "scope": if i.namespaced { "Namespaced" } else { "Cluster" },
                            "singularResource": i.singular,
                            "verbs": i.verbs,
                        });
                        if !i.short_names.is_empty() {
                            r["shortNames"] = json!(i.short_names);
                        }
                        if !i.categories.is_empty() {
                            r["categories"] = json!(i.categories);
                        }
                        let subs: Vec<Value> = i
                            .subresources
                            .iter()
                            .map(|s| {
                                json!({
                                    "subresource": s.name,
                                    "responseKind": {
                                        "group": s.group.clone().unwrap_or_else(|| i.group.clone()),
                                        "version": s.version.clone().unwrap_or_else(|| i.version.clone()),
                                        "kind": s.kind,
                                    },
                                    "verbs": s.verbs,
                                })
                            })
                            .collect();
                        if !subs.is_empty() {
                            r["subresources"] = json!(subs);
                        }
                        r
                    })
                    .collect();
                json!({"version": v, "resources": resources, "freshness": "Current"})
            })
            .collect();
        items.push(json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions}));
    }
    let body = json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items});
    let mut r = json_response(200, &body);
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        ),
    );
    r
}

fn resource_list(app: &AppState, group: &str, version: &str) -> Response {
    let infos: Vec<_> = app
        .store
        .registry()
        .all()
        .into_iter()
        .filter(|i| i.group == group && i.version == version)
        .collect();
    if infos.is_empty() {
        return json_response(404, &crate::error::ApiError::no_route().to_status());
    }
    let mut resources: Vec<Value> = Vec::new();
    for i in &infos {
        resources.extend(i.discovery_entries());
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json_response(
        200,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// `/openapi/v2`: not served (404); clients use OpenAPI v3.
pub async fn openapi_v2() -> Response {
    not_found()
}

fn not_found() -> Response {
    let mut r = Response::new(axum::body::Body::from("404 page not found\n"));
    *r.status_mut() = axum::http::StatusCode::NOT_FOUND;
    r
}

fn gv_doc(app: &AppState, group: &str, version: &str) -> Option<Value> {
    let infos: Vec<_> = app
        .store
        .registry()
        .all()
        .into_iter()
        .filter(|i| i.group == group && i.version == version)
        .collect();
    if infos.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    for i in &infos {
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let item = if i.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", i.resource)
        } else {
            format!("{prefix}/{}/{{name}}", i.resource)
        };
        let gvk = json!({"group": group, "version": version, "kind": i.kind});
        let params: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation", "force"]
            .iter()
            .map(|p| json!({"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
            .collect();
        let op = |action: &str| {
            json!({
                "operationId": format!("{action}{}", i.kind),
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        if i.verbs.iter().any(|v| v == "patch") {
            paths.insert(
                item,
                json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
            );
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": paths,
        "components": {"schemas": crd_schemas(&infos)},
    }))
}

/// The schemas of custom resources (what `kubectl explain` reads); built-in kinds have none.
fn crd_schemas(infos: &[std::sync::Arc<crate::resources::ResourceInfo>]) -> Value {
    let mut out = serde_json::Map::new();
    for i in infos.iter().filter(|i| i.crd.is_some()) {
        let Some(schema) = i.schema.as_ref().filter(|s| s.is_object()) else {
            continue;
        };
        let mut sc = schema.clone();
        let reversed: Vec<&str> = i.group.split('.').rev().collect();
        let key = format!("{}.{}.{}", reversed.join("."), i.version, i.kind);
        sc["x-kubernetes-group-version-kind"] =
            json!([{"group": i.group, "version": i.version, "kind": i.kind}]);
        if sc["properties"].is_object() {
            for (f, d) in [
                (
                    "apiVersion",
                    "APIVersion defines the versioned schema of this representation of an object.",
                ),
                (
                    "kind",
                    "Kind is a string value representing the REST resource this object represents.",
                ),
            ] {
                if sc["properties"].get(f).is_none() {
                    sc["properties"][f] = json!({"type": "string", "description": d});
                }
            }
            if sc["properties"].get("metadata").is_none() {
                sc["properties"]["metadata"] =
                    json!({"type": "object", "description": "Standard object's metadata."});
            }
        }
        out.insert(key, sc);
    }
    Value::Object(out)
}

fn hash_of(v: &Value) -> String {
    let mut h: u64 = 1469598103934665603;
    for b in v.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(1099511628211);
    }
    format!("{h:016X}")
}

/// `/openapi/v3`: the root listing of group-version documents. The documents carry every
/// resource's operations (with `x-kubernetes-group-version-kind` and the `fieldValidation`
/// parameter, which makes kubectl use server-side field validation) but no schemas.
pub async fn openapi_v3(axum::extract::State(app): axum::extract::State<AppState>) -> Response {
    let reg = app.store.registry();
    let mut paths = serde_json::Map::new();
    for (g, vs) in reg.groups() {
        for v in vs {
            let key = if g.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{g}/{v}")
            };
            let hash = gv_doc(&app, &g, &v).map(|d| hash_of(&d)).unwrap_or_default();
            paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
            );
        }
    }
    json_response(200, &json!({"paths": paths}))
}

/// `/openapi/v3/<api|apis/group>/<version>`.
pub async fn openapi_v3_gv(
    axum::extract::State(app): axum::extract::State<AppState>,
    axum::extract::Path(rest): axum::extract::Path<String>,
) -> Response {
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let doc = match segs.as_slice() {
        ["api", v] => gv_doc(&app, "", v),
        ["apis", g, v] => gv_doc(&app, g, v),
        _ => None,
    };
    match doc {
        Some(d) => json_response(200, &d),
        None => not_found(),
    }
}
