//! Create and update (whole object, status, scale, namespace finalize): the shared admit-then-
//! commit paths and server-side field validation of custom resources.

use axum::response::Response;
use serde_json::{json, Value};

use super::super::request::{render_one, Ctx};
use super::super::respond::with_warnings;
use crate::error::ApiError;
use crate::respond::json_response;
use crate::scale::to_scale;
use crate::store::object_rv;

/// Server-side field validation (`fieldValidation`, default `Warn`) for custom resources:
/// `Strict` fails with 400, `Warn` returns the warnings to send as `Warning` headers.
pub(super) fn field_validation(ctx: &Ctx, obj: &Value) -> Result<Vec<String>, ApiError> {
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

pub(super) async fn create(ctx: &Ctx, obj: Value) -> Result<Response, ApiError> {
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
pub(super) async fn admit_create(ctx: &Ctx, candidate: Value) -> Result<Value, ApiError> {
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
pub(super) async fn admit_and_commit_update(
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

pub(super) async fn update(
    ctx: &Ctx,
    name: &str,
    obj: Value,
    sub: Option<&str>,
) -> Result<Response, ApiError> {
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

pub(super) async fn update_scale(ctx: &Ctx, name: &str, scale: Value) -> Result<Response, ApiError> {
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

pub(super) fn finalize_namespace(ctx: &Ctx, name: &str, obj: Value) -> Result<Response, ApiError> {
    let info = &ctx.info;
    let mut cur = ctx.store().get_current(info, None, name)?;
    cur["spec"]["finalizers"] = obj["spec"]["finalizers"].clone();
    let out = ctx
        .store()
        .commit_update(info, cur, None, &ctx.write_opts(), Some("finalize"), "Update")?;
    Ok(json_response(200, &out))
}
