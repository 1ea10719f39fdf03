//! DELETE of one object and of a collection: delete options from the query and the body,
//! admission, and the answer (the object, or a `Status` for kinds that do not return it).

use axum::body::Bytes;
use axum::response::Response;
use serde_json::{json, Value};

use super::super::request::{selectors, Ctx};
use crate::error::ApiError;
use crate::resources::ResourceInfo;
use crate::respond::json_response;
use crate::store::{DeleteOptions, Propagation, Store};

pub(super) fn delete_options(ctx: &Ctx, body: &Bytes) -> Result<DeleteOptions, ApiError> {
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

pub(super) fn returns_deleted_object(info: &ResourceInfo) -> bool {
    info.group.is_empty()
        && matches!(
            info.resource.as_str(),
            "pods" | "services" | "namespaces" | "persistentvolumeclaims" | "persistentvolumes"
        )
}

pub(super) async fn delete(ctx: &Ctx, name: &str, body: &Bytes) -> Result<Response, ApiError> {
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

pub(super) async fn delete_collection(ctx: &Ctx, body: &Bytes) -> Result<Response, ApiError> {
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
    Ok(json_response(
        200,
        &json!({"kind": info.list_kind, "apiVersion": info.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": deleted}),
    ))
}
