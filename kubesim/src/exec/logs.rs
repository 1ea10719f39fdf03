//! `pods/log`: serves what the simulated kubelet recorded for a container (CRI log files
//! written with [`Runtime::append_log`](crate::sandbox::Runtime::append_log)), with the
//! `container`, `follow`, `previous`, `timestamps`, `tailLines` and `limitBytes` parameters.

use std::time::Duration;

use axum::{
    body::{Body, Bytes},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{
    container_status, pod_not_found, query_bool, query_str, resolve_target, status_response, ExecContext,
    Target,
};
use crate::sandbox::Runtime;

/// How often a followed log checks for new lines and for the container's end.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Path of the log of the previous instance of a container.
pub fn previous_log_path(runtime: &Runtime, pod_uid: &str, container: &str) -> std::path::PathBuf {
    let mut p = runtime.log_path(pod_uid, container);
    p.set_extension("previous.log");
    p
}

/// Moves a container's current log to "previous" (called by the kubelet on a restart).
pub async fn rotate(runtime: &Runtime, pod_uid: &str, container: &str) {
    let current = runtime.log_path(pod_uid, container);
    // A container without a log yet has nothing to rotate.
    let _ = tokio::fs::rename(&current, previous_log_path(runtime, pod_uid, container)).await;
}

/// Renders CRI log lines (`<time> <stream> <tag> <content>`) as `kubectl logs` shows them.
pub fn render(raw: &str, timestamps: bool) -> Vec<String> {
    raw.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let ts = parts.next().unwrap_or("");
            let _stream = parts.next();
            let _tag = parts.next();
            let content = parts.next().unwrap_or("");
            if timestamps {
                format!("{ts} {content}\n")
            } else {
                format!("{content}\n")
            }
        })
        .collect()
}

fn select(lines: Vec<String>, tail: Option<usize>, limit: Option<usize>) -> String {
    let start = tail.map_or(0, |n| lines.len().saturating_sub(n));
    let mut text: String = lines[start..].concat();
    if let Some(limit) = limit {
        if text.len() > limit {
            let mut cut = limit;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
    }
    text
}

fn bad_request(message: &str) -> Response {
    status_response(400, "BadRequest", message, None)
}

fn text_response(body: Body) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// Serves `GET /api/v1/namespaces/{ns}/pods/{name}/log`.
pub async fn logs(ctx: &ExecContext, namespace: &str, name: &str, pairs: &[(String, String)]) -> Response {
    let pairs = pairs.to_vec();
    let Some(pod) = ctx.pods.pod(namespace, name) else {
        return pod_not_found(name);
    };
    let target = match resolve_target(&pod, query_str(&pairs, "container")) {
        Ok(t) => t,
        Err(msg) => return bad_request(&msg),
    };
    if pod["spec"]["nodeName"].as_str().unwrap_or("").is_empty() {
        // The API server answers an empty body for a pod that has no node yet.
        return text_response(Body::empty());
    }
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let previous = query_bool(&pairs, "previous");
    let follow = query_bool(&pairs, "follow");
    let timestamps = query_bool(&pairs, "timestamps");
    let tail = query_str(&pairs, "tailLines")
        .and_then(|v| v.parse::<i64>().ok())
        .map(|n| n.max(0) as usize);
    let limit = query_str(&pairs, "limitBytes").and_then(|v| v.parse::<usize>().ok());
    let status = container_status(&pod, &target).cloned().unwrap_or(Value::Null);
    let path = if previous {
        let p = previous_log_path(&ctx.runtime, &uid, &target.name);
        if !p.exists() {
            return bad_request(&format!(
                "previous terminated container \"{}\" in pod \"{}\" not found",
                target.name, name
            ));
        }
        p
    } else {
        if let Some(waiting) = status["state"].get("waiting") {
            if status["lastState"].get("terminated").is_none() {
                let reason = waiting["reason"].as_str().unwrap_or("ContainerCreating");
                return bad_request(&format!(
                    "container \"{}\" in pod \"{}\" is waiting to start: {}",
                    target.name, name, reason
                ));
            }
        }
        if status.is_null() {
            return bad_request(&format!(
                "container \"{}\" in pod \"{}\" is waiting to start: ContainerCreating",
                target.name, name
            ));
        }
        ctx.runtime.log_path(&uid, &target.name)
    };
    let raw = tokio::fs::read_to_string(&path).await.unwrap_or_default();
    let consumed = raw.len() as u64;
    let text = select(render(&raw, timestamps), tail, limit);
    if !follow || previous {
        return text_response(Body::from(text));
    }
    let container_id = status["containerID"].as_str().unwrap_or("").to_string();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let ctx = ctx.clone();
    let (namespace, name) = (namespace.to_string(), name.to_string());
    tokio::spawn(follow_log(
        ctx,
        namespace,
        name,
        target,
        container_id,
        path,
        consumed,
        timestamps,
        text,
        tx,
    ));
    text_response(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

#[allow(clippy::too_many_arguments)]
async fn follow_log(
    ctx: ExecContext,
    namespace: String,
    name: String,
    target: Target,
    container_id: String,
    path: std::path::PathBuf,
    mut offset: u64,
    timestamps: bool,
    initial: String,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    if !initial.is_empty() && tx.send(Ok(Bytes::from(initial))).await.is_err() {
        return;
    }
    let mut pending = String::new();
    loop {
        tokio::time::sleep(FOLLOW_POLL).await;
        if tx.is_closed() {
            return;
        }
        if let Ok(mut f) = tokio::fs::File::open(&path).await {
            if f.seek(std::io::SeekFrom::Start(offset)).await.is_ok() {
                let mut buf = String::new();
                if let Ok(n) = f.read_to_string(&mut buf).await {
                    offset += n as u64;
                    pending.push_str(&buf);
                }
            }
        }
        if let Some(end) = pending.rfind('\n') {
            let complete: String = pending.drain(..=end).collect();
            let text = render(&complete, timestamps).concat();
            if tx.send(Ok(Bytes::from(text))).await.is_err() {
                return;
            }
        }
        let still_running = ctx.pods.pod(&namespace, &name).is_some_and(|pod| {
            container_status(&pod, &target).is_some_and(|s| {
                s["containerID"].as_str() == Some(container_id.as_str())
                    && s["state"].get("running").is_some()
            })
        });
        if !still_running {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines_render_with_and_without_timestamps() {
        let raw =
            "2024-01-01T00:00:00.000000001Z stdout F hello world\n2024-01-01T00:00:01.5Z stderr F oops\n";
        assert_eq!(render(raw, false), vec!["hello world\n", "oops\n"]);
        assert_eq!(
            render(raw, true)[0],
            "2024-01-01T00:00:00.000000001Z hello world\n"
        );
    }

    #[test]
    fn tail_and_limit_select_the_end_and_the_start() {
        let lines = vec!["a\n".to_string(), "b\n".to_string(), "c\n".to_string()];
        assert_eq!(select(lines.clone(), Some(2), None), "b\nc\n");
        assert_eq!(select(lines.clone(), Some(0), None), "");
        assert_eq!(select(lines.clone(), None, Some(3)), "a\nb");
        assert_eq!(select(lines, Some(10), None), "a\nb\nc\n");
    }
}
