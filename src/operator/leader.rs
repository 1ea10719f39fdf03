//! Leader election with a `coordination.k8s.io/v1` Lease (spec 3.1: lock `kubedirector-lock` in
//! the KubeDirector namespace), so two operator replicas are safe: only the holder watches and
//! reconciles. The algorithm follows client-go's leaderelection: acquire when the lease is free,
//! ours, or expired (`renewTime + leaseDurationSeconds` in the past); renew periodically with
//! resourceVersion preconditions; give the lease up on shutdown (holder cleared, duration 1 s)
//! so a successor takes over at once. Losing the lease ends the operator with an error; the
//! Deployment restarts it as a candidate.
//!
//! Fencing: leadership is judged on this process's monotonic clock from the instant the last
//! successful renewal was *sent* (never later than the renewTime others see). Renewals are
//! retried every `retry_period`, each attempt bounded by a timeout, and the leader gives up once
//! `renew_deadline` (shorter than the lease duration) has passed without one, so it stops before
//! any other candidate may consider the lease expired.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    api::{Api, PostParams},
    Client,
};

use super::fence::LeaseGuard;

/// Why a candidate is not leading (shown by `/readyz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// Another replica holds the lease (this one is a healthy standby).
    Standby(String),
    /// The lease cannot be read or written (namespace missing, API server unreachable...).
    Blocked(String),
}

/// Shared between the elector and the health server.
#[derive(Debug, Clone, Default)]
pub struct WaitReason(std::sync::Arc<std::sync::Mutex<Option<Waiting>>>);

impl WaitReason {
    /// The current reason, if waiting.
    pub fn get(&self) -> Option<Waiting> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, w: Option<Waiting>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = w;
    }
}

/// The longest a wait for the lease goes without a log line.
pub const WAIT_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The lease could not be renewed within its duration.
    #[error("lost the leader lease {name} (last renewed {since:?} ago)")]
    Lost {
        /// Lease name.
        name: String,
        /// Time since the last successful renewal.
        since: Duration,
    },
}

impl LeaderError {
    /// Bounded label.
    pub fn category(&self) -> &'static str {
        match self {
            LeaderError::Lost { .. } => "lost",
        }
    }
}

/// A candidate for the leader lease.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
    waiting: WaitReason,
    guard: LeaseGuard,
    wait_log_interval: Duration,
}

enum Attempt {
    Acquired,
    HeldByOther(String),
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl LeaderElector {
    /// A candidate for lease `name` in `namespace`, identified as `identity`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            waiting: WaitReason::default(),
            guard: LeaseGuard::new(Duration::from_secs(10)),
            wait_log_interval: WAIT_LOG_INTERVAL,
        }
    }

    /// The guard this elector keeps up to date (renewals prove leadership, loss revokes it);
    /// share it with [`super::fence::FenceLayer`] on the client the actors write with.
    pub fn guard(&self) -> LeaseGuard {
        self.guard.clone()
    }

    /// How often a wait for the lease repeats its log line (at most [`WAIT_LOG_INTERVAL`]).
    pub fn with_wait_log_interval(mut self, every: Duration) -> Self {
        self.wait_log_interval = every.min(WAIT_LOG_INTERVAL);
        self
    }

    /// Report waits into `waiting` (shared with `/readyz`).
    pub fn with_wait_reason(mut self, waiting: WaitReason) -> Self {
        self.waiting = waiting;
        self
    }

    /// Other timings (client-go's LeaseDuration, RenewDeadline, RetryPeriod); the renew deadline
    /// is clamped below the lease duration and the retry period below the renew deadline.
    /// Call before [`LeaderElector::guard`]: the guard is made for the renew deadline.
    pub fn with_timing(
        mut self,
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Self {
        let lease_duration = lease_duration.max(Duration::from_secs(1));
        self.lease_duration = lease_duration;
        self.renew_deadline = renew_deadline.min(lease_duration.mul_f64(0.8));
        self.retry_period = retry_period
            .min(self.renew_deadline / 2)
            .max(Duration::from_millis(10));
        self.guard = LeaseGuard::new(self.renew_deadline);
        self
    }

    /// Our identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn lease_spec(&self, transitions: i32, acquire: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(15)),
            acquire_time: acquire.or_else(|| Some(now())),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    async fn try_acquire_or_renew(&self) -> Result<Attempt, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.lease_spec(0, None)),
            };
            self.api.create(&PostParams::default(), &lease).await?;
            return Ok(Attempt::Acquired);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(MicroTime(t)), Some(d)) => {
                Timestamp::now()
                    > t.saturating_add(SignedDuration::from_secs(i64::from(d)))
                        .unwrap_or(*t)
            }
            _ => true,
        };
        if !ours && !holder.is_empty() && !expired {
            return Ok(Attempt::HeldByOther(holder));
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquire = if ours { spec.acquire_time.clone() } else { None };
        lease.spec = Some(self.lease_spec(transitions, acquire));
        // resourceVersion from the read: a concurrent candidate makes this a 409.
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        Ok(Attempt::Acquired)
    }

    /// Waits until this candidate holds the lease; says why it waits at least every 30 s.
    pub async fn acquire(&self) {
        let mut last_holder = String::new();
        let mut last_log: Option<tokio::time::Instant> = None;
        let every = self.wait_log_interval;
        let due = |last: Option<tokio::time::Instant>| last.is_none_or(|t| t.elapsed() >= every);
        loop {
            let sent = std::time::Instant::now();
            match tokio::time::timeout(self.renew_deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Acquired)) => {
                    self.guard.renewed(sent);
                    tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                    self.waiting.set(None);
                    return;
                }
                Ok(Ok(Attempt::HeldByOther(holder))) => {
                    self.waiting.set(Some(Waiting::Standby(holder.clone())));
                    if holder != last_holder || due(last_log) {
                        tracing::info!(lease = %self.name, %holder, "waiting for the leader lease held by another replica");
                        last_holder = holder;
                        last_log = Some(tokio::time::Instant::now());
                    }
                }
                Ok(Err(error)) => {
                    let reason = format!("cannot take the leader lease {}: {error}", self.name);
                    self.waiting.set(Some(Waiting::Blocked(reason)));
                    if due(last_log) {
                        tracing::warn!(lease = %self.name, %error, "cannot take the leader lease yet");
                        last_log = Some(tokio::time::Instant::now());
                    }
                }
                Err(_) => {
                    let reason = format!("leader lease {}: the API server does not answer", self.name);
                    self.waiting.set(Some(Waiting::Blocked(reason)));
                    if due(last_log) {
                        tracing::warn!(lease = %self.name, "leader lease request timed out: API server unreachable?");
                        last_log = Some(tokio::time::Instant::now());
                    }
                }
            }
            tokio::time::sleep(self.retry_period).await;
        }
    }

    /// Renews the lease until leadership can no longer be proven; returns why. Returns at the
    /// latest `renew_deadline` after the last successful renewal was sent, even when the API
    /// server does not answer (each attempt has a timeout).
    pub async fn hold(&self) -> LeaderError {
        // The acquisition counts as the first renewal (the guard has its send instant).
        let mut last_renew = self.guard.last_renewal().unwrap_or_else(std::time::Instant::now);
        loop {
            tokio::time::sleep(self.retry_period).await;
            let Some(budget) = self.renew_deadline.checked_sub(last_renew.elapsed()) else {
                return self.lost(last_renew);
            };
            let sent = std::time::Instant::now();
            match tokio::time::timeout(budget, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Acquired)) => {
                    // Answered after the deadline (the process was paused): too late to count.
                    if sent.elapsed() >= self.renew_deadline {
                        return self.lost(last_renew);
                    }
                    self.guard.renewed(sent);
                    last_renew = sent;
                }
                Ok(Ok(Attempt::HeldByOther(holder))) => {
                    tracing::error!(lease = %self.name, %holder, "leader lease taken over");
                    return self.lost(last_renew);
                }
                Ok(Err(error)) => tracing::warn!(lease = %self.name, %error, "lease renewal failed"),
                Err(_) => tracing::warn!(lease = %self.name, timeout = ?budget, "lease renewal timed out"),
            }
            if last_renew.elapsed() >= self.renew_deadline {
                return self.lost(last_renew);
            }
        }
    }

    fn lost(&self, last_renew: std::time::Instant) -> LeaderError {
        self.guard.revoke();
        let since = last_renew.elapsed();
        tracing::error!(lease = %self.name, ?since, "leadership can no longer be proven: stopping");
        LeaderError::Lost {
            name: self.name.clone(),
            since,
        }
    }

    /// Gives the lease up (best effort) so that a successor does not wait for it to expire.
    pub async fn release(&self) {
        // Leadership ends here: nothing may be written on its behalf any more.
        self.guard.revoke();
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        if let Err(error) = self.api.replace(&self.name, &PostParams::default(), &lease).await {
            tracing::warn!(lease = %self.name, %error, "could not release the leader lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sim_and_client() -> (kubesim::Sim, Client) {
        let sim = kubesim::Sim::start(kubesim::SimConfig::default()).await.unwrap();
        let kc = kube::config::Kubeconfig::from_yaml(&sim.kubeconfig_yaml()).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
        (sim, Client::try_from(cfg).unwrap())
    }

    #[test]
    fn renew_deadline_stays_below_the_lease_duration() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (sim, client) = rt.block_on(sim_and_client());
        let e = LeaderElector::new(client, "default", "l", "a").with_timing(
            Duration::from_secs(10),
            Duration::from_secs(30),
            Duration::from_secs(60),
        );
        assert!(e.renew_deadline < e.lease_duration);
        assert!(e.retry_period < e.renew_deadline);
        rt.block_on(sim.shutdown());
    }

    /// The API server stops answering lease updates: the leader must give up on its own clock
    /// before the lease could expire for the others, not hang on the request.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leader_stops_before_the_lease_expires_when_the_api_server_hangs() {
        let (sim, client) = sim_and_client().await;
        let lease_duration = Duration::from_secs(10);
        let e = LeaderElector::new(client.clone(), "default", "lock", "a").with_timing(
            lease_duration,
            Duration::from_secs(2),
            Duration::from_millis(200),
        );
        let guard = e.guard();
        assert!(!guard.holds(), "no proof before the lease is taken");
        e.acquire().await;
        assert!(guard.holds(), "the acquisition proves leadership");
        sim.faults().add_latency(kubesim::faults::LatencyRule {
            verb: "update".into(),
            resource: "leases".into(),
            millis: 3_600_000,
        });
        let LeaderError::Lost { since, .. } = e.hold().await;
        assert!(since < lease_duration, "gave up {since:?} after the last renewal");
        assert!(!guard.holds(), "writes are fenced once leadership is lost");
        // Another candidate may only take over once the lease expired for it.
        sim.faults().clear();
        let b = LeaderElector::new(client, "default", "lock", "b");
        assert!(matches!(b.try_acquire_or_renew().await.unwrap(), Attempt::HeldByOther(h) if h == "a"));
        sim.shutdown().await;
    }
}
