//! PATCH: JSON, merge and strategic-merge patches (retried on conflicts like the real server),
//! patches of the scale subresource, and server-side apply.

use axum::body::Bytes;
use axum::http::header;
use axum::response::Response;
use serde_json::Value;

use super::super::request::{render_one, Ctx};
use super::super::respond::with_warnings;
use super::write::{admit_and_commit_update, admit_create, field_validation, update_scale};
use crate::error::ApiError;
use crate::managed;
use crate::patch::{self, PatchType};
use crate::scale::to_scale;
use crate::store::{now_rfc3339, object_rv};

pub(super) async fn patch_req(
    ctx: &Ctx,
    name: &str,
    sub: Option<&str>,
    body: &Bytes,
) -> Result<Response, ApiError> {
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

pub(super) fn apply_patch(pt: PatchType, target: &Value, patch_doc: &Value) -> Result<Value, ApiError> {
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

pub(super) async fn apply(
    ctx: &Ctx,
    name: &str,
    sub: Option<&str>,
    applied: Value,
) -> Result<Response, ApiError> {
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
