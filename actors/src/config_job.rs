//! ConfigJobActor: one per member job (spec section 4): runs one [`GuestJob`] in a member's `app`
//! container through the [`GuestExec`] port and reports the result.
//!
//! Who sends: the ClusterActor starts it (one actor per job, never two for the same member at
//! once) with everything the job needs; nothing else talks to it. What it owns: the retries of
//! its job. What it emits: exactly one [`JobFinished`] to the recipient it was given, then it
//! stops. Stopping it early (the cluster went away) cancels the exec.
//!
//! Before every exec it re-reads the pod through the `container` probe and refuses to act when
//! the `app` container is no longer the one the job was planned for, or the pod has ended (spec
//! 4.1: `container ID changed during configuration`). Every exec has a bounded timeout (upstream
//! has none); transport errors and unparseable output are retried with jittered exponential
//! backoff up to [`JobSettings::max_attempts`]; a setup whose `--configure` is still running is
//! polled again (the setup script is idempotent, see [`crate::plan::config::script`]).
//! Nothing here blocks the ClusterActor: its passes go on while jobs run.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use actix::prelude::*;

use crate::{
    plan::{
        config::script::{self, GuestJob, GuestReport},
        objects::APP_CONTAINER,
    },
    ports::{ApiError, ObjectKey},
};

pub use crate::ports::{ExecOutput, ExecRequest, GuestExec};

/// Port: the current `app` container of a pod, from the watch cache. `Err` when the pod is gone
/// or has ended (phase Succeeded/Failed); `Ok(None)` when it has no container id yet.
pub type ContainerProbe = Arc<dyn Fn(&ObjectKey) -> Result<Option<String>, String> + Send + Sync>;

/// Tunables of the jobs.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// How long one setup exec waits in the guest for `--configure` to finish.
    pub configure_wait: Duration,
    /// Extra time on top of the in-guest wait before an exec is abandoned.
    pub exec_timeout: Duration,
    /// Attempts for transport failures before the job reports a failure.
    pub max_attempts: u32,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay (also the poll interval cap of a long `--configure`).
    pub retry_max: Duration,
    /// The operator's configcli tarball, when it has one (spec 4.4 step 8).
    pub configcli: Option<Arc<Vec<u8>>>,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            configure_wait: Duration::from_secs(30),
            exec_timeout: Duration::from_secs(60),
            max_attempts: 5,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            configcli: None,
        }
    }
}

/// The result of a job, sent to the ClusterActor.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct JobFinished {
    /// The job id the ClusterActor gave.
    pub id: u64,
    /// The member's pod.
    pub pod: String,
    /// The container the job was for.
    pub container_id: String,
    /// What the job was.
    pub operation: &'static str,
    /// The guest's report, or why the job could not run.
    pub result: Result<GuestReport, JobError>,
    /// Number of execs it took.
    pub execs: u32,
    /// Wall time.
    pub duration: Duration,
}

/// Why a job ended without a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The container changed or the pod ended (spec 4.1).
    #[error("container ID changed during configuration")]
    ContainerChanged,
    /// Exec kept failing.
    #[error("exec failed: {0}")]
    Exec(String),
    /// The job could not be turned into a script.
    #[error("{0}")]
    Invalid(String),
}

impl JobError {
    /// Bounded label.
    pub fn category(&self) -> &'static str {
        match self {
            JobError::ContainerChanged => "container_changed",
            JobError::Exec(_) => "exec",
            JobError::Invalid(_) => "invalid",
        }
    }
}

/// Everything a job needs.
#[derive(Clone)]
pub struct JobSpec {
    /// Id echoed in [`JobFinished`].
    pub id: u64,
    /// The pod.
    pub pod: ObjectKey,
    /// The `app` container id the job is for.
    pub container_id: String,
    /// The work.
    pub job: GuestJob,
}

/// The actor.
pub struct ConfigJobActor {
    spec: Option<JobSpec>,
    exec: Arc<dyn GuestExec>,
    probe: ContainerProbe,
    settings: JobSettings,
    reply: Recipient<JobFinished>,
    span: tracing::Span,
}

impl ConfigJobActor {
    /// A job; it starts running when the actor starts.
    pub fn new(
        spec: JobSpec,
        exec: Arc<dyn GuestExec>,
        probe: ContainerProbe,
        settings: JobSettings,
        reply: Recipient<JobFinished>,
    ) -> Self {
        let span = tracing::info_span!("config_job", k8s.namespace = %spec.pod.namespace,
            pod = %spec.pod.name, operation = spec.job.operation(), job = spec.id);
        Self {
            spec: Some(spec),
            exec,
            probe,
            settings,
            reply,
            span,
        }
    }
}

/// The script and the stdin of a job.
fn script_of(spec: &JobSpec, settings: &JobSettings) -> Result<String, JobError> {
    match &spec.job {
        GuestJob::Setup(setup) => Ok(script::setup_script(
            setup,
            &spec.container_id,
            settings.configcli.as_deref().map(Vec::as_slice),
            settings.configure_wait.as_secs(),
        )),
        GuestJob::WriteConfigmeta { configmeta, .. } => Ok(script::configmeta_script(configmeta)),
        GuestJob::Notify { cmds, max_log_size } => script::notify_script(cmds, *max_log_size)
            .ok_or_else(|| JobError::Invalid("notification arguments carry unsafe characters".into())),
        GuestJob::Reconnect { max_log_size, .. } => {
            script::notify_script(&[crate::plan::config::member::reconnect_cmd()], *max_log_size)
                .ok_or_else(|| JobError::Invalid("reconnect arguments carry unsafe characters".into()))
        }
    }
}

fn backoff(attempt: u32, settings: &JobSettings) -> Duration {
    let exp = settings
        .retry_initial
        .saturating_mul(2u32.saturating_pow(attempt.min(16)));
    let capped = exp.min(settings.retry_max);
    // Full jitter on the upper half keeps many jobs from retrying in lockstep.
    let half = capped / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// Runs the job to its end: the report, or why there is none, and the number of execs.
async fn run(
    spec: JobSpec,
    exec: Arc<dyn GuestExec>,
    probe: ContainerProbe,
    settings: JobSettings,
) -> (Result<GuestReport, JobError>, u32) {
    let script = match script_of(&spec, &settings) {
        Ok(s) => s,
        Err(e) => return (Err(e), 0),
    };
    let mut execs = 0;
    let mut failures = 0;
    let mut polls = 0;
    loop {
        match probe(&spec.pod) {
            Ok(Some(id)) if id == spec.container_id => {}
            _ => return (Err(JobError::ContainerChanged), execs),
        }
        execs += 1;
        let req = ExecRequest {
            pod: spec.pod.clone(),
            container: APP_CONTAINER.into(),
            command: vec!["bash".into()],
            stdin: script.clone().into_bytes(),
            timeout: settings.configure_wait + settings.exec_timeout,
        };
        let outcome: Result<GuestReport, String> = match exec.exec(req).await {
            Ok(out) => script::parse_report(&out.stdout)
                .map_err(|e| format!("{e}; exit status {}, stderr: {}", out.status, out.stderr.trim())),
            Err(e) => Err(describe(&e)),
        };
        match outcome {
            Ok(GuestReport::Running) => {
                polls += 1;
                tracing::debug!(polls, "configure still running");
                tokio::time::sleep(backoff(polls, &settings)).await;
            }
            Ok(report) => return (Ok(report), execs),
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, attempt = failures, "guest exec failed");
                if failures >= settings.max_attempts {
                    return (Err(JobError::Exec(e)), execs);
                }
                tokio::time::sleep(backoff(failures, &settings)).await;
            }
        }
    }
}

fn describe(e: &ApiError) -> String {
    e.to_string()
}

/// Stop the job (its cluster is going away); no [`JobFinished`] is sent.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct CancelJob;

/// The container probe over the pod watch cache: the `app` container id, or `Err` when the pod is
/// gone or has ended (spec 4.1).
pub fn cache_probe(pods: kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Pod>) -> ContainerProbe {
    Arc::new(move |key: &ObjectKey| {
        let pod = pods
            .get(&kube::runtime::reflector::ObjectRef::new(&key.name).within(&key.namespace))
            .ok_or_else(|| format!("pod {key} not found"))?;
        let status = pod.status.as_ref();
        if matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            return Err(format!("pod {key} has ended"));
        }
        Ok(status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == APP_CONTAINER))
            .and_then(|c| c.container_id.clone())
            .filter(|id| !id.is_empty()))
    })
}

impl Actor for ConfigJobActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(spec) = self.spec.take() else {
            ctx.stop();
            return;
        };
        let started = Instant::now();
        let (id, pod, container_id, operation) = (
            spec.id,
            spec.pod.name.clone(),
            spec.container_id.clone(),
            spec.job.operation(),
        );
        let fut = run(
            spec,
            Arc::clone(&self.exec),
            Arc::clone(&self.probe),
            self.settings.clone(),
        );
        let span = self.span.clone();
        ctx.spawn(tracing::Instrument::instrument(fut, span).into_actor(self).map(
            move |(result, execs), act, ctx| {
                act.reply.do_send(JobFinished {
                    id,
                    pod,
                    container_id,
                    operation,
                    result,
                    execs,
                    duration: started.elapsed(),
                });
                ctx.stop();
            },
        ));
    }
}

impl Handler<CancelJob> for ConfigJobActor {
    type Result = ();

    fn handle(&mut self, _msg: CancelJob, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::plan::config::script::SetupJob;
    use crate::ports::PortFuture;

    /// A fake exec answering from a script of canned outputs and recording the requests.
    struct FakeExec {
        answers: Mutex<Vec<Result<ExecOutput, ApiError>>>,
        calls: Mutex<Vec<ExecRequest>>,
    }

    impl GuestExec for FakeExec {
        fn exec(&self, req: ExecRequest) -> PortFuture<ExecOutput> {
            self.calls.lock().unwrap().push(req);
            let answer = self.answers.lock().unwrap().remove(0);
            Box::pin(async move { answer })
        }
    }

    struct Collect(Arc<Mutex<Vec<JobFinished>>>);
    impl Actor for Collect {
        type Context = Context<Self>;
    }
    impl Handler<JobFinished> for Collect {
        type Result = ();
        fn handle(&mut self, msg: JobFinished, _: &mut Self::Context) {
            self.0.lock().unwrap().push(msg);
        }
    }

    fn out(stdout: &str) -> Result<ExecOutput, ApiError> {
        Ok(ExecOutput {
            status: 0,
            stdout: stdout.into(),
            stderr: String::new(),
        })
    }

    fn setup() -> GuestJob {
        GuestJob::Setup(Box::new(SetupJob {
            configmeta: "{}".into(),
            generation: 1,
            package_url: Some("file:///pkg.tgz".into()),
            new_layout: true,
            run_configure: true,
            systemd: false,
            restart: false,
            file_injections: vec![],
            max_log_size: 0,
        }))
    }

    async fn run_job(
        answers: Vec<Result<ExecOutput, ApiError>>,
        container: &'static str,
    ) -> (JobFinished, Vec<ExecRequest>) {
        let exec = Arc::new(FakeExec {
            answers: Mutex::new(answers),
            calls: Mutex::new(Vec::new()),
        });
        let got = Arc::new(Mutex::new(Vec::new()));
        let collector = Collect(Arc::clone(&got)).start();
        let settings = JobSettings {
            retry_initial: Duration::from_millis(1),
            retry_max: Duration::from_millis(2),
            max_attempts: 3,
            ..JobSettings::default()
        };
        let probe: ContainerProbe = Arc::new(move |_| Ok(Some(container.to_string())));
        let spec = JobSpec {
            id: 7,
            pod: ObjectKey::new("ns", "kdss-abcde-0"),
            container_id: "c1".into(),
            job: setup(),
        };
        let exec_port: Arc<dyn GuestExec> = exec.clone();
        ConfigJobActor::new(spec, exec_port, probe, settings, collector.recipient()).start();
        for _ in 0..200 {
            if !got.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let finished = got.lock().unwrap().pop().expect("job reported");
        let calls = exec.calls.lock().unwrap().clone();
        (finished, calls)
    }

    #[actix::test]
    async fn a_setup_that_finishes_within_the_wait_costs_one_exec_of_bash_on_the_app_container() {
        let (done, calls) = run_job(
            vec![out("KD-OUT 0 \nKD-ERR 0 \nKD-RESULT configured 0 same\n")],
            "c1",
        )
        .await;
        assert_eq!(done.id, 7);
        assert_eq!(done.execs, 1);
        assert!(matches!(done.result, Ok(GuestReport::Configured { exit: 0, .. })));
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].container, "app");
        assert_eq!(calls[0].command, ["bash"]);
        assert!(String::from_utf8_lossy(&calls[0].stdin).contains("kd_cid='c1'"));
    }

    #[actix::test]
    async fn a_running_configure_is_polled_and_transport_errors_are_retried() {
        let (done, _) = run_job(
            vec![
                out("KD-RESULT running\n"),
                Err(ApiError::Transport {
                    message: "connection reset".into(),
                }),
                out("KD-RESULT configured 2 same\n"),
            ],
            "c1",
        )
        .await;
        assert_eq!(done.execs, 3);
        assert!(matches!(done.result, Ok(GuestReport::Configured { exit: 2, .. })));
    }

    #[actix::test]
    async fn exec_failures_end_the_job_after_the_last_attempt() {
        let err = || {
            Err(ApiError::Transport {
                message: "boom".into(),
            })
        };
        let (done, calls) = run_job(vec![err(), out("garbage"), err()], "c1").await;
        assert_eq!(calls.len(), 3);
        assert!(matches!(done.result, Err(JobError::Exec(_))), "{:?}", done.result);
    }

    #[actix::test]
    async fn a_changed_container_is_refused_without_any_exec() {
        let (done, calls) = run_job(vec![], "c2").await;
        assert!(calls.is_empty());
        assert_eq!(done.result, Err(JobError::ContainerChanged));
        assert_eq!(done.execs, 0);
    }
}
