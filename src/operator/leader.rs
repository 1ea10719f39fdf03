//! Leader election with a `coordination.k8s.io/v1` Lease (spec 3.1: lock `kubedirector-lock` in
//! the KubeDirector namespace), so two operator replicas are safe: only the holder watches and
//! reconciles. The algorithm follows client-go's leaderelection: acquire when the lease is free,
//! ours, or expired (`renewTime + leaseDurationSeconds` in the past); renew periodically with
//! resourceVersion preconditions; give the lease up on shutdown (holder cleared, duration 1 s)
//! so a successor takes over at once. Losing the lease ends the operator with an error; the
//! Deployment restarts it as a candidate.

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
    retry_period: Duration,
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
            retry_period: Duration::from_secs(2),
        }
    }

    /// Our identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn lease_spec(&self, transitions: i32, acquire: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.lease_duration.as_secs()).unwrap_or(15)),
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

    /// Waits until this candidate holds the lease.
    pub async fn acquire(&self) {
        let mut last_holder = String::new();
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Acquired) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(Attempt::HeldByOther(holder)) => {
                    if holder != last_holder {
                        tracing::info!(lease = %self.name, %holder, "waiting for the leader lease");
                        last_holder = holder;
                    }
                }
                Err(error) => tracing::debug!(lease = %self.name, %error, "lease acquisition attempt failed"),
            }
            tokio::time::sleep(self.retry_period).await;
        }
    }

    /// Renews the lease until it cannot be renewed within its duration; returns why.
    pub async fn hold(&self) -> LeaderError {
        let mut last_renew = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Acquired) => last_renew = tokio::time::Instant::now(),
                Ok(Attempt::HeldByOther(holder)) => {
                    tracing::error!(lease = %self.name, %holder, "leader lease taken over");
                    return LeaderError::Lost {
                        name: self.name.clone(),
                        since: last_renew.elapsed(),
                    };
                }
                Err(error) => {
                    tracing::warn!(lease = %self.name, %error, "lease renewal failed");
                    if last_renew.elapsed() >= self.lease_duration {
                        return LeaderError::Lost {
                            name: self.name.clone(),
                            since: last_renew.elapsed(),
                        };
                    }
                }
            }
        }
    }

    /// Gives the lease up (best effort) so that a successor does not wait for it to expire.
    pub async fn release(&self) {
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
