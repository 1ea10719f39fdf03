//! The verb handlers behind the filter chain: reads and lists, create/update (with admission),
//! patch and server-side apply, delete; `dispatch` picks one by method, name and subresource.

mod delete;
mod list;
mod patch;
mod write;

use axum::body::Bytes;
use axum::http::Method;
use axum::response::Response;
use serde_json::json;

use super::request::{decode_body, render_one, Ctx};
use super::watch;
use crate::error::ApiError;
use crate::respond::json_response;
use crate::scale::to_scale;
use crate::store::DeleteOptions;
use delete::{delete, delete_collection};
use list::list;
use patch::patch_req;
use write::{create, finalize_namespace, update, update_scale};

/// Serves one API request (after the filter chain) with the handler of its verb.
pub(super) async fn dispatch(ctx: &Ctx, method: &Method, body: Bytes) -> Result<Response, ApiError> {
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
