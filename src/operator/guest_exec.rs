//! The [`GuestExec`] port over `pods/exec` (kube's WebSocket remote-command client).
//!
//! An exec feeds its stdin, closes it, collects stdout and stderr concurrently (a chatty stderr
//! cannot stall stdout), and reads the exit status from the remote-command status channel
//! (`NonZeroExitCode` carries it in `details.causes[ExitCode]`). The whole call is bounded by the
//! request's timeout; a timeout or a broken stream is a transport error the job retries.

use k8s_openapi::api::core::v1::Pod;
use kube::{
    api::{Api, AttachParams},
    Client,
};
use kubedirector_actors::{
    config_job::{ExecOutput, ExecRequest, GuestExec},
    ports::{ApiError, PortFuture},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::kube_ports::classify;

/// [`GuestExec`] over a kube client.
#[derive(Clone)]
pub struct KubeGuestExec {
    client: Client,
}

impl KubeGuestExec {
    /// Uses `client` for every exec.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// The exit status in a remote-command `Status` (0 on Success).
fn exit_status(status: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>) -> i32 {
    let Some(status) = status else { return -1 };
    if status.status.as_deref() == Some("Success") {
        return 0;
    }
    status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|c| c.message.as_deref())
        .and_then(|m| m.parse().ok())
        .unwrap_or(-1)
}

async fn exec_once(client: Client, req: ExecRequest) -> Result<ExecOutput, ApiError> {
    let api: Api<Pod> = Api::namespaced(client, &req.pod.namespace);
    let params = AttachParams::default()
        .container(req.container.clone())
        .stdin(true)
        .stdout(true)
        .stderr(true);
    let mut proc = api
        .exec(&req.pod.name, req.command.clone(), &params)
        .await
        .map_err(|e| classify(e, "Pod", &req.pod))?;
    let transport = |what: &str, e: &dyn std::fmt::Display| ApiError::Transport {
        message: format!("exec in {}: {what}: {e}", req.pod),
    };
    let status = proc.take_status();
    let mut stdout = proc.stdout();
    let mut stderr = proc.stderr();
    if let Some(mut stdin) = proc.stdin() {
        stdin
            .write_all(&req.stdin)
            .await
            .map_err(|e| transport("stdin", &e))?;
        stdin.shutdown().await.map_err(|e| transport("stdin", &e))?;
    }
    let read_out = async {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            s.read_to_end(&mut buf).await.map(|_| buf)
        } else {
            Ok(buf)
        }
    };
    let read_err = async {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            s.read_to_end(&mut buf).await.map(|_| buf)
        } else {
            Ok(buf)
        }
    };
    let (out, err) = tokio::join!(read_out, read_err);
    let out = out.map_err(|e| transport("stdout", &e))?;
    let err = err.map_err(|e| transport("stderr", &e))?;
    let status = match status {
        Some(s) => s.await,
        None => None,
    };
    proc.join().await.map_err(|e| transport("stream", &e))?;
    Ok(ExecOutput {
        status: exit_status(status.as_ref()),
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    })
}

impl GuestExec for KubeGuestExec {
    fn exec(&self, req: ExecRequest) -> PortFuture<ExecOutput> {
        let client = self.client.clone();
        Box::pin(async move {
            let timeout = req.timeout;
            let key = req.pod.clone();
            match tokio::time::timeout(timeout, exec_once(client, req)).await {
                Ok(r) => r,
                Err(_) => Err(ApiError::Transport {
                    message: format!("exec in {key} timed out after {}s", timeout.as_secs()),
                }),
            }
        })
    }
}
