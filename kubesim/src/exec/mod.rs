//! `pods/exec` over WebSocket and `pods/log`, backed by the sandbox runtime.
//!
//! Mounting (in the API router):
//! ```text
//! router.merge(kubesim::exec::routes(exec_ctx))
//! // GET+POST /api/v1/namespaces/{namespace}/pods/{name}/exec
//! // GET      /api/v1/namespaces/{namespace}/pods/{name}/log
//! ```
//! or call [`exec`] / [`logs`] from your own handlers.
//!
//! Like the real API server, the pod and container are validated *before* the upgrade (404 for
//! a missing pod, 400 for a bad container name, 500 `container not found ("c")` when the
//! container is not running); then the command runs in the container's sandbox and its exit is
//! reported on the error channel exactly as the kubelet does (see [`protocol`]).

pub mod logs;
pub mod protocol;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    extract::{
        ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade},
        FromRequestParts, Path, RawQuery, State,
    },
    http::{header, request::Parts, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};

use self::protocol::{Incoming, Protocol};
use crate::{
    resources::ResourceKey,
    sandbox::{ContainerId, ExecOptions, Runtime, SandboxError},
    server::{PodRequest, PodSubresourceHandler},
    store::Store,
};
use futures::future::BoxFuture;

/// A fault to apply to one exec, decided by the [`PodSource`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ExecFault {
    /// Run normally.
    #[default]
    None,
    /// Fail to start the process with this error text.
    FailStart(String),
    /// Do not run the command; report this exit code.
    ExitCode(i32),
    /// Do not run the command and never answer: the session stays open, silent, until the
    /// client closes it.
    Hang,
}

/// Where exec and logs look pods up, and which exec faults apply.
pub trait PodSource: Send + Sync + 'static {
    /// The pod object, if it exists.
    fn pod(&self, namespace: &str, name: &str) -> Option<Value>;

    /// The fault to inject into an exec of `command` (default: none).
    fn exec_fault(&self, _namespace: &str, _pod: &str, _command: &[String]) -> ExecFault {
        ExecFault::None
    }
}

/// What the exec and log handlers need.
#[derive(Clone)]
pub struct ExecContext {
    /// Pod lookup and fault hooks.
    pub pods: Arc<dyn PodSource>,
    /// The sandbox runtime running the containers.
    pub runtime: Runtime,
}

impl std::fmt::Debug for ExecContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecContext").finish_non_exhaustive()
    }
}

/// Pods from the kubesim store; exec faults from its [`PodFaults`](crate::faults::PodFaults):
/// `execHangs` makes the next execs hang, `execFailures` (a count) and `execFailureRate` fail
/// the start of an exec, `execExitCodes` forces the exit code of commands containing a
/// substring (without running them).
#[derive(Debug, Clone)]
pub struct StorePods(pub Store);

impl PodSource for StorePods {
    fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.0.get(&ResourceKey::core("pods"), Some(namespace), name)
    }

    fn exec_fault(&self, _namespace: &str, _pod: &str, command: &[String]) -> ExecFault {
        if self.0.faults().take_exec_hang() {
            return ExecFault::Hang;
        }
        if self.0.faults().take_exec_failure() {
            return ExecFault::FailStart(
                "error executing command in container: kubesim: injected exec failure".to_string(),
            );
        }
        let faults = self.0.faults().pod_faults();
        if faults.exec_failure_rate > 0.0 && rand::random::<f64>() < faults.exec_failure_rate {
            return ExecFault::FailStart(
                "error executing command in container: kubesim: injected exec failure".to_string(),
            );
        }
        fault_for_command(&faults.exec_exit_codes, command).map_or(ExecFault::None, ExecFault::ExitCode)
    }
}

/// The node simulation's answer to `pods/exec` and `pods/log` requests of the API server
/// (install as `SimConfig::pod_handler`).
#[derive(Debug, Clone)]
pub struct NodePodHandler {
    runtime: Runtime,
}

impl NodePodHandler {
    /// A handler running execs in `runtime`.
    pub fn new(runtime: Runtime) -> Self {
        Self { runtime }
    }
}

impl PodSubresourceHandler for NodePodHandler {
    fn handle(&self, req: PodRequest) -> BoxFuture<'static, Response> {
        let runtime = self.runtime.clone();
        Box::pin(async move {
            let ctx = ExecContext {
                pods: Arc::new(StorePods(req.store.clone())),
                runtime,
            };
            match req.subresource.as_str() {
                "exec" => {
                    let (mut parts, _body) = req.request.into_parts();
                    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &()).await.ok();
                    exec(&ctx, &req.namespace, &req.pod, &req.query, &parts.headers, ws).await
                }
                "log" => logs::logs(&ctx, &req.namespace, &req.pod, &req.query).await,
                other => bad_request(&format!("kubesim does not support pods/{other}")),
            }
        })
    }
}

/// Routes for `pods/exec` (GET and POST) and `pods/log`, with their state applied.
pub fn routes(ctx: ExecContext) -> Router {
    Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/exec",
            get(exec_route).post(exec_route),
        )
        .route("/api/v1/namespaces/{namespace}/pods/{name}/log", get(logs_route))
        .with_state(ctx)
}

async fn exec_route(
    State(ctx): State<ExecContext>,
    Path((namespace, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: MaybeUpgrade,
) -> Response {
    exec(
        &ctx,
        &namespace,
        &name,
        &parse_query(query.as_deref()),
        &headers,
        ws.0,
    )
    .await
}

async fn logs_route(
    State(ctx): State<ExecContext>,
    Path((namespace, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    logs::logs(&ctx, &namespace, &name, &parse_query(query.as_deref())).await
}

/// A WebSocket upgrade when the request is one (extraction never fails).
#[derive(Debug)]
pub struct MaybeUpgrade(pub Option<WebSocketUpgrade>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeUpgrade {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            WebSocketUpgrade::from_request_parts(parts, state).await.ok(),
        ))
    }
}

/// Decodes an `application/x-www-form-urlencoded` query into ordered pairs.
pub fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Parses a Kubernetes boolean query parameter (`true`/`1`/`false`/`0`).
pub(crate) fn query_bool(pairs: &[(String, String)], key: &str) -> bool {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .is_some_and(|(_, v)| matches!(v.as_str(), "true" | "1" | "True" | ""))
}

pub(crate) fn query_str<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// A `Status` error response as the API server writes it.
pub fn status_response(code: u16, reason: &str, message: &str, details: Option<Value>) -> Response {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    });
    if let (Some(d), Value::Object(m)) = (details, &mut body) {
        m.insert("details".into(), d);
    }
    if let Value::Object(m) = &mut body {
        m.insert("code".into(), json!(code));
    }
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn pod_not_found(name: &str) -> Response {
    status_response(
        404,
        "NotFound",
        &format!("pods \"{name}\" not found"),
        Some(json!({"name": name, "kind": "pods"})),
    )
}

fn bad_request(message: &str) -> Response {
    status_response(400, "BadRequest", message, None)
}

/// Which container of a pod a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) init: bool,
}

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Resolves the `container` parameter like the API server's pod strategy does.
/// `Err` is the message of a 400 answer.
pub(crate) fn resolve_target(pod: &Value, requested: Option<&str>) -> Result<Target, String> {
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("");
    let containers = names(pod, "containers");
    let inits = names(pod, "initContainers");
    let name = match requested {
        Some(c) => c.to_string(),
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !inits.is_empty() {
                msg.push_str(&format!(" or one of the init containers: [{}]", inits.join(" ")));
            }
            return Err(msg);
        }
    };
    if containers.contains(&name) {
        Ok(Target { name, init: false })
    } else if inits.contains(&name) {
        Ok(Target { name, init: true })
    } else {
        Err(format!("container {name} is not valid for pod {pod_name}"))
    }
}

/// The status entry of a container (`containerStatuses` or `initContainerStatuses`).
pub(crate) fn container_status<'a>(pod: &'a Value, target: &Target) -> Option<&'a Value> {
    let field = if target.init {
        "initContainerStatuses"
    } else {
        "containerStatuses"
    };
    pod["status"][field]
        .as_array()?
        .iter()
        .find(|s| s["name"] == target.name.as_str())
}

/// The ID of the running container, when it runs.
pub(crate) fn running_container_id(pod: &Value, target: &Target) -> Option<ContainerId> {
    let status = container_status(pod, target)?;
    status["state"].get("running")?;
    ContainerId::parse(status["containerID"].as_str()?)
}

/// Serves `pods/exec`: validates the request, upgrades to WebSocket and runs the command.
pub async fn exec(
    ctx: &ExecContext,
    namespace: &str,
    name: &str,
    pairs: &[(String, String)],
    headers: &HeaderMap,
    ws: Option<WebSocketUpgrade>,
) -> Response {
    let pairs = pairs.to_vec();
    let Some(pod) = ctx.pods.pod(namespace, name) else {
        return pod_not_found(name);
    };
    let target = match resolve_target(&pod, query_str(&pairs, "container")) {
        Ok(t) => t,
        Err(msg) => return bad_request(&msg),
    };
    let command: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if command.is_empty() {
        return bad_request("you must specify at least 1 command");
    }
    let stdin = query_bool(&pairs, "stdin");
    let stdout = query_bool(&pairs, "stdout");
    let stderr = query_bool(&pairs, "stderr");
    let tty = query_bool(&pairs, "tty");
    if !stdin && !stdout && !stderr {
        return bad_request("you must specify at least 1 of stdin, stdout, stderr");
    }
    if tty && stderr {
        return bad_request("stdout and stderr must not be requested with tty");
    }
    if pod["spec"]["nodeName"].as_str().unwrap_or("").is_empty() {
        return bad_request(&format!("pod {name} does not have a host assigned"));
    }
    let Some(id) = running_container_id(&pod, &target) else {
        return status_response(
            500,
            "InternalError",
            &format!("container not found (\"{}\")", target.name),
            None,
        );
    };
    let Some(ws) = ws else {
        return bad_request("Upgrade request required");
    };
    let requested: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .collect();
    let protocol = match protocol::negotiate(requested) {
        Ok(p) => p,
        Err(req) => {
            return bad_request(&format!(
                "requested protocol(s) are not supported: {req:?}; supports {:?}",
                protocol::SUPPORTED.iter().map(|(n, _)| *n).collect::<Vec<_>>()
            ))
        }
    };
    let ws = match protocol {
        Some(p) => ws.protocols([p.name()]),
        None => ws,
    };
    let fault = ctx.pods.exec_fault(namespace, name, &command);
    let session = Session {
        runtime: ctx.runtime.clone(),
        id,
        protocol: protocol.unwrap_or(Protocol::V1),
        opts: ExecOptions { command, stdin, tty },
        stdout,
        stderr,
        fault,
    };
    ws.on_upgrade(move |socket| session.run(socket))
}

struct Session {
    runtime: Runtime,
    id: ContainerId,
    protocol: Protocol,
    opts: ExecOptions,
    stdout: bool,
    stderr: bool,
    fault: ExecFault,
}

/// How long output is still forwarded after the process exited while a background job keeps
/// the output pipe open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

impl Session {
    async fn run(self, socket: WebSocket) {
        let (mut sink, mut incoming) = socket.split();
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
        let writer = tokio::spawn(async move {
            while let Some(frame) = out_rx.recv().await {
                if sink.send(Message::Binary(frame.into())).await.is_err() {
                    // Client gone: keep consuming so producers never block.
                    while out_rx.recv().await.is_some() {}
                    return;
                }
            }
            // A normal closure (1000): Go clients treat anything else as an error.
            let close = CloseFrame {
                code: close_code::NORMAL,
                reason: "".into(),
            };
            let _ = sink.send(Message::Close(Some(close))).await;
        });
        // The server announces the connection with an empty frame on the lowest writable channel.
        let first = if self.stdout {
            protocol::STDOUT
        } else if self.stderr {
            protocol::STDERR
        } else {
            protocol::ERROR
        };
        let _ = out_tx.send(vec![first]).await;
        let status = self.execute(&out_tx, &mut incoming).await;
        if let Some(msg) = protocol::final_error_message(self.protocol, &status) {
            let _ = out_tx.send(protocol::frame(protocol::ERROR, &msg)).await;
        }
        drop(out_tx);
        let _ = writer.await;
    }

    async fn execute(
        &self,
        out_tx: &mpsc::Sender<Vec<u8>>,
        incoming: &mut futures::stream::SplitStream<WebSocket>,
    ) -> Value {
        match &self.fault {
            ExecFault::None => {}
            ExecFault::FailStart(msg) => return protocol::internal_error_status(msg),
            ExecFault::ExitCode(0) => return protocol::success_status(),
            ExecFault::ExitCode(code) => return protocol::exit_status(&self.opts.command, *code),
            ExecFault::Hang => {
                // Swallow whatever the client sends until it gives up.
                while let Some(Ok(msg)) = incoming.next().await {
                    if matches!(msg, Message::Close(_)) {
                        break;
                    }
                }
                return protocol::internal_error_status("kubesim: injected exec hang; client went away");
            }
        }
        let mut proc = match self.runtime.exec(&self.id, &self.opts).await {
            Ok(p) => p,
            Err(e) => return protocol::internal_error_status(&start_error_text(&self.id, &e)),
        };
        let out_task = pump(proc.stdout.take(), out_tx.clone(), protocol::STDOUT, self.stdout);
        let err_task = pump(proc.stderr.take(), out_tx.clone(), protocol::STDERR, self.stderr);
        let mut stdin = proc.stdin.take();
        let protocol = self.protocol;
        let mut client_open = true;
        let exit = loop {
            tokio::select! {
                status = proc.wait() => break status,
                msg = incoming.next(), if client_open => match msg {
                    Some(Ok(Message::Binary(data))) => match protocol::parse_incoming(protocol, &data) {
                        Incoming::Stdin(bytes) => {
                            if let Some(w) = stdin.as_mut() {
                                if w.write_all(&bytes).await.is_err() {
                                    stdin = None;
                                }
                            }
                        }
                        Incoming::CloseStdin => stdin = None,
                        Incoming::Resize { .. } | Incoming::Ignored => {}
                    },
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        client_open = false;
                        stdin = None;
                    }
                    Some(Ok(_)) => {}
                },
            }
        };
        drop(stdin);
        let drained = async {
            let _ = out_task.await;
            let _ = err_task.await;
        };
        if tokio::time::timeout(DRAIN_AFTER_EXIT, drained).await.is_err() {
            tracing::debug!(container.id = %self.id, "exec output still open after exit (background job)");
        }
        match exit {
            Ok(0) => protocol::success_status(),
            Ok(code) => protocol::exit_status(&self.opts.command, code),
            Err(e) => protocol::internal_error_status(&e.to_string()),
        }
    }
}

/// Forwards a process output stream as frames on `channel` (or discards it).
fn pump<R>(
    reader: Option<R>,
    tx: mpsc::Sender<Vec<u8>>,
    channel: u8,
    forward: bool,
) -> tokio::task::JoinHandle<()>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let Some(mut r) = reader else { return };
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) if forward => {
                    if tx.send(protocol::frame(channel, &buf[..n])).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
            }
        }
    })
}

/// containerd's wording for an exec that could not start.
fn start_error_text(id: &ContainerId, err: &SandboxError) -> String {
    let hex = id.as_str().trim_start_matches("containerd://");
    match err {
        SandboxError::ExecutableNotFound(_) => format!(
            "error executing command in container: failed to exec in container: failed to start exec \"{hex}\": \
             OCI runtime exec failed: exec failed: unable to start container process: {err}: unknown"
        ),
        other => format!("error executing command in container: failed to exec in container: {other}"),
    }
}

/// Exec fault rules from a command line: the first substring rule that matches wins.
pub fn fault_for_command(rules: &BTreeMap<String, i32>, command: &[String]) -> Option<i32> {
    let line = command.join(" ");
    rules
        .iter()
        .find(|(needle, _)| line.contains(needle.as_str()))
        .map(|(_, code)| *code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web-0", "namespace": "default"},
            "spec": {"nodeName": "sim-node-0",
                     "initContainers": [{"name": "init"}],
                     "containers": [{"name": "app"}, {"name": "side"}]},
            "status": {"containerStatuses": [
                {"name": "app", "containerID": format!("containerd://{}", "a".repeat(64)), "state": {"running": {}}},
                {"name": "side", "containerID": format!("containerd://{}", "b".repeat(64)), "state": {"waiting": {}}}
            ]}
        })
    }

    #[test]
    fn query_parsing_keeps_repeated_commands() {
        let pairs = parse_query(Some(
            "command=sh&command=-c&command=echo%20a%2Bb+c&stdout=true&stdin=1&tty=false",
        ));
        let cmd: Vec<&str> = pairs
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(cmd, vec!["sh", "-c", "echo a+b c"]);
        assert!(query_bool(&pairs, "stdout"));
        assert!(query_bool(&pairs, "stdin"));
        assert!(!query_bool(&pairs, "tty"));
        assert!(!query_bool(&pairs, "stderr"));
        assert_eq!(
            parse_query(Some("a=%zz&b=%4")),
            vec![("a".into(), "%zz".into()), ("b".into(), "%4".into())]
        );
    }

    #[test]
    fn container_resolution_follows_the_api_server() {
        let p = pod();
        assert_eq!(
            resolve_target(&p, Some("app")).unwrap(),
            Target {
                name: "app".into(),
                init: false
            }
        );
        assert_eq!(
            resolve_target(&p, Some("init")).unwrap(),
            Target {
                name: "init".into(),
                init: true
            }
        );
        assert_eq!(
            resolve_target(&p, Some("nope")).unwrap_err(),
            "container nope is not valid for pod web-0"
        );
        assert_eq!(
            resolve_target(&p, None).unwrap_err(),
            "a container name must be specified for pod web-0, choose one of: [app side] \
             or one of the init containers: [init]"
        );
        let single = json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "only"}]}});
        assert_eq!(resolve_target(&single, None).unwrap().name, "only");
    }

    #[test]
    fn only_running_containers_have_an_exec_target() {
        let p = pod();
        let app = Target {
            name: "app".into(),
            init: false,
        };
        let side = Target {
            name: "side".into(),
            init: false,
        };
        assert!(running_container_id(&p, &app).is_some());
        assert!(running_container_id(&p, &side).is_none());
    }

    #[test]
    fn fault_rules_match_substrings() {
        let rules: BTreeMap<String, i32> = [("startscript".to_string(), 9)].into_iter().collect();
        assert_eq!(
            fault_for_command(
                &rules,
                &["bash".into(), "-c".into(), "x/startscript --configure".into()]
            ),
            Some(9)
        );
        assert_eq!(fault_for_command(&rules, &["cat".into()]), None);
    }
}
