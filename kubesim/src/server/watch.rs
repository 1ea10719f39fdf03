//! Watch streams: newline-delimited JSON `WatchEvent`s over a chunked response.
//!
//! Semantics follow the real server: `resourceVersion` unset or `0` starts with synthetic
//! ADDED events for the current state; a specific rv resumes after it (an ERROR event carrying
//! a 410 `Expired` Status when the history no longer reaches back); label/field selectors turn
//! transitions into ADDED/DELETED; `allowWatchBookmarks` sends periodic BOOKMARKs;
//! `sendInitialEvents=true` ends the initial state with a bookmark annotated
//! `k8s.io/initial-events-end`; `timeoutSeconds` closes the stream.

pub use super::render_cache::RenderCache;
use super::request::{selectors, wants, Ctx, Wants};
use super::table;
use crate::error::ApiError;
use crate::resources::ResourceInfo;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{EventKind, Store, WatchEvent};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

type Start = (Vec<Bytes>, u64, tokio::sync::broadcast::Receiver<Arc<WatchEvent>>);

struct Filter {
    info: Arc<ResourceInfo>,
    ns: Option<String>,
    ls: LabelSelector,
    fs: FieldSelector,
    wants: Wants,
    include_object: Option<String>,
    cache: Arc<RenderCache>,
}

impl Filter {
    fn matches(&self, o: &Value) -> bool {
        if let Some(ns) = &self.ns {
            if o["metadata"]["namespace"].as_str() != Some(ns.as_str()) {
                return false;
            }
        }
        self.ls.matches(&o["metadata"]["labels"]) && self.fs.matches(o)
    }

    fn render(&self, kind: &str, obj: &Value) -> Bytes {
        if self.wants == Wants::Object {
            if let Some(rv) = crate::store::object_rv(obj) {
                let key = format!("{}/{}", self.info.api_version(), self.info.resource);
                let body = self.cache.get_or_render(rv, &key, || {
                    Bytes::from(serde_json::to_vec(&Store::to_version(&self.info, obj)).unwrap_or_default())
                });
                let mut b = Vec::with_capacity(body.len() + 32);
                b.extend_from_slice(b"{\"type\":\"");
                b.extend_from_slice(kind.as_bytes());
                b.extend_from_slice(b"\",\"object\":");
                b.extend_from_slice(&body);
                b.extend_from_slice(b"}\n");
                return Bytes::from(b);
            }
        }
        let o = Store::to_version(&self.info, obj);
        let o = match self.wants {
            Wants::Table => table::table(
                &self.info,
                std::slice::from_ref(&o),
                None,
                self.include_object.as_deref(),
            ),
            Wants::Metadata => {
                json!({"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata": o["metadata"]})
            }
            Wants::Object => o,
        };
        line(&json!({"type": kind, "object": o}))
    }

    /// Translate a store event into what this watcher sees.
    fn translate(&self, ev: &WatchEvent) -> Option<Bytes> {
        if ev.gr != self.info.group_resource() {
            return None;
        }
        if self.info.converted() {
            let conv = WatchEvent {
                object: Arc::new(Store::to_version(&self.info, &ev.object)),
                old: ev
                    .old
                    .as_ref()
                    .map(|o| Arc::new(Store::to_version(&self.info, o))),
                ..ev.clone()
            };
            return self.translate_plain(&conv);
        }
        self.translate_plain(ev)
    }

    fn translate_plain(&self, ev: &WatchEvent) -> Option<Bytes> {
        match ev.kind {
            EventKind::Added => self.matches(&ev.object).then(|| self.render("ADDED", &ev.object)),
            EventKind::Deleted => {
                let m = ev.old.as_ref().map(|o| self.matches(o)).unwrap_or(false) || self.matches(&ev.object);
                m.then(|| self.render("DELETED", &ev.object))
            }
            EventKind::Modified => {
                let now = self.matches(&ev.object);
                let before = ev.old.as_ref().map(|o| self.matches(o)).unwrap_or(false);
                match (before, now) {
                    (true, true) => Some(self.render("MODIFIED", &ev.object)),
                    (false, true) => Some(self.render("ADDED", &ev.object)),
                    (true, false) => Some(self.render("DELETED", &ev.object)),
                    (false, false) => None,
                }
            }
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let o = json!({"kind": self.info.kind, "apiVersion": self.info.api_version(), "metadata": meta});
        line(&json!({"type": "BOOKMARK", "object": o}))
    }
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

fn error_event(e: &ApiError) -> Bytes {
    line(&json!({"type": "ERROR", "object": e.to_status()}))
}

/// Serve a watch request.
pub async fn serve(ctx: &Ctx) -> Result<Response, ApiError> {
    let (ls, fs) = selectors(ctx)?;
    let store = ctx.app.store.clone();
    let filter = Filter {
        info: ctx.info.clone(),
        ns: if ctx.info.namespaced {
            ctx.target.namespace.clone()
        } else {
            None
        },
        ls,
        fs,
        wants: wants(&ctx.headers),
        include_object: ctx.query.get("includeObject").map(String::from),
        cache: ctx.app.render_cache.clone(),
    };
    let rv_param = ctx.query.get("resourceVersion").unwrap_or_default().to_string();
    let bookmarks = ctx.query.flag("allowWatchBookmarks");
    let send_initial = ctx.query.flag("sendInitialEvents");
    let timeout = ctx
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let bookmark_every = ctx.app.bookmark_interval;
    let gr = ctx.info.group_resource();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(256);

    // The disturbances in force when the watch starts (read first: a restart that wipes the
    // store between here and the start below still closes this watch).
    let mut control = store.faults().watch_control();
    let started_under = *control.borrow_and_update();
    let forced_gone = store.faults().take_force_gone();
    let start: Result<Start, ApiError> = if forced_gone {
        Err(ApiError::gone(format!(
            "too old resource version: {} ({})",
            rv_param,
            store.current_rv()
        )))
    } else if rv_param.is_empty() || rv_param == "0" || send_initial {
        let (items, rv, rx) = store.snapshot_and_subscribe(&gr);
        let mut init: Vec<Bytes> = items
            .iter()
            .map(|o| {
                if filter.info.converted() {
                    Arc::new(Store::to_version(&filter.info, o))
                } else {
                    o.clone()
                }
            })
            .filter(|o| filter.matches(o))
            .map(|o| filter.render("ADDED", &o))
            .collect();
        if send_initial && bookmarks {
            init.push(filter.bookmark(rv, true));
        }
        Ok((init, rv, rx))
    } else {
        match rv_param.parse::<u64>() {
            Err(_) => {
                return Err(ApiError::bad_request(format!(
                    "invalid resource version: {rv_param}"
                )))
            }
            Ok(from) => match store.watch_from(Some(&gr), from) {
                Ok((backlog, rx)) => {
                    let last = backlog.last().map(|e| e.rv).unwrap_or(from);
                    let init = backlog.iter().filter_map(|e| filter.translate(e)).collect();
                    Ok((init, last.max(from), rx))
                }
                Err(e) => Err(e),
            },
        }
    };
    let shutdown = ctx.app.shutdown.clone();
    tokio::spawn(async move {
        let (init, mut progress, mut live) = match start {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Ok(error_event(&e))).await;
                return;
            }
        };
        for b in init {
            if tx.send(Ok(b)).await.is_err() {
                return;
            }
        }
        // A resourceVersion the store has not reached yet: like the API server's watch cache,
        // wait up to 3 s for it, then answer 504 "Too large resource version" (never skip the
        // events in between by starting from a version that does not exist yet).
        let current = store.current_rv();
        if progress > current {
            let fresh_by = tokio::time::Instant::now() + FRESHNESS_WAIT;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(fresh_by) => {
                        let e = too_large_resource_version(progress, store.current_rv());
                        let _ = tx.send(Ok(error_event(&e))).await;
                        return;
                    }
                    _ = tx.closed() => return,
                    _ = shutdown.cancelled() => return,
                    r = live.recv() => match r {
                        Ok(ev) if ev.rv < progress => continue,
                        Ok(ev) => {
                            let from = progress;
                            progress = ev.rv;
                            if ev.rv > from {
                                if let Some(b) = filter.translate(&ev) {
                                    if tx.send(Ok(b)).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            break;
                        }
                        Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
                    }
                }
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(bookmark_every.max(Duration::from_millis(50)));
        tick.tick().await;
        loop {
            tokio::select! {
                // Disturbances first: after a restart no event of the new store may reach a
                // watch of the old one.
                biased;
                changed = control.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let mut now = *control.borrow_and_update();
                    if now.stalls(&started_under) {
                        if !stay_stalled(&mut control, &started_under, &tx, &shutdown).await {
                            return;
                        }
                        now = *control.borrow();
                    }
                    if now.drop_gen != started_under.drop_gen {
                        return;
                    }
                    if now.expire_gen != started_under.expire_gen {
                        let e = ApiError::gone("The resourceVersion for the provided watch is too old.");
                        let _ = tx.send(Ok(error_event(&e))).await;
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => return,
                _ = tick.tick(), if bookmarks => {
                    // All events up to the store's rv have been queued to us if our queue is empty.
                    let rv = {
                        let st = store.lock();
                        if live.is_empty() { st.rv } else { progress }
                    };
                    progress = progress.max(rv);
                    if tx.send(Ok(filter.bookmark(progress, false))).await.is_err() {
                        return;
                    }
                }
                r = live.recv() => match r {
                    Ok(ev) => {
                        if ev.rv <= progress {
                            continue;
                        }
                        progress = ev.rv;
                        if let Some(b) = filter.translate(&ev) {
                            if tx.send(Ok(b)).await.is_err() {
                                return;
                            }
                        }
                    }
                    // Too slow: close the stream; the client resumes from its last rv.
                    Err(RecvError::Lagged(_)) => {
                        store.note_lag();
                        return;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = StatusCode::OK;
    let ct = match filter_wants(ctx) {
        Wants::Table => "application/json;as=Table;v=v1;g=meta.k8s.io",
        _ => "application/json",
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}

/// Holds a stalled watch silent until the stall ends or another disturbance (drop, expiry)
/// arrives: true then (the events held back are still queued), false when the watch must end
/// at once (client gone, shutdown).
async fn stay_stalled(
    control: &mut tokio::sync::watch::Receiver<crate::faults::WatchControl>,
    started_under: &crate::faults::WatchControl,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    loop {
        let now = *control.borrow_and_update();
        if now.drop_gen != started_under.drop_gen
            || now.expire_gen != started_under.expire_gen
            || !now.stalls(started_under)
        {
            return true;
        }
        let until = match now.stall {
            crate::faults::Stall::Until(t) => Some(t),
            _ => None,
        };
        tokio::select! {
            _ = async { match until { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {}
            changed = control.changed() => if changed.is_err() { return false; },
            _ = tx.closed() => return false,
            _ = shutdown.cancelled() => return false,
        }
    }
}

/// How long a watch from a future resourceVersion waits for the store to reach it (the API
/// server's `blockTimeout`).
const FRESHNESS_WAIT: Duration = Duration::from_secs(3);

/// The API server's `TooLargeResourceVersionError`: 504 Timeout with a
/// `ResourceVersionTooLarge` cause and a retry hint.
fn too_large_resource_version(rv: u64, current: u64) -> ApiError {
    ApiError {
        code: 504,
        reason: "Timeout",
        message: format!("Timeout: Too large resource version: {rv}, current: {current}"),
        details: Some(Box::new(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1
        }))),
    }
}

fn filter_wants(ctx: &Ctx) -> Wants {
    wants(&ctx.headers)
}
