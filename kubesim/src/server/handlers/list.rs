//! `list`: one consistent snapshot (current, exact, or the one a continue token points at),
//! namespace and selector filtering, paging with continue tokens, and the three representations
//! (objects streamed without copies, Table, PartialObjectMetadataList).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use base64::Engine;
use serde_json::{json, Value};

use super::super::request::{partial_metadata, selectors, wants, Ctx, Wants};
use super::super::table;
use crate::error::ApiError;
use crate::respond::json_response;
use crate::store::Store;

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

pub(super) fn list(ctx: &Ctx) -> Result<Response, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_roundtrip() {
        let t = encode_continue(42, "ns", "a");
        assert_eq!(decode_continue(&t).unwrap(), (42, "ns".into(), "a".into()));
        assert!(decode_continue("!!").is_err());
    }
}
