//! Fencing of the leader's writes (issue 12): a [`LeaseGuard`] shared by the leader elector and
//! a tower layer on the kube client the actors use ([`FenceLayer`]). Every write request (any
//! method but GET/HEAD/OPTIONS, and every `exec`/`attach`/`portforward`, which act in pods) is
//! refused before it leaves the process unless this replica can prove it holds the lease: a
//! renewal *sent* less than the renew deadline ago, judged on the local monotonic clock, and
//! leadership not given up. So after a lost lease, a paused process (SIGSTOP, a long GC-like
//! stall, a suspended VM) or a partition, writes queued in the actors or issued by tasks that
//! wake up before the elector notices are refused instead of drained.
//!
//! What it cannot fence: a request that passed the check and is then delayed on its way (the
//! check-to-send window is a few microseconds of this process's time, as in client-go). The
//! Kubernetes API has no fencing tokens; resourceVersion preconditions on status writes narrow it
//! further.

use std::{
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;

/// Whether leadership is provable at `now`: not revoked, and the last successful renewal was sent
/// less than `deadline` before `now` (pure clock logic of [`LeaseGuard`]).
pub fn provable(last_renew_sent: Option<Instant>, revoked: bool, now: Instant, deadline: Duration) -> bool {
    !revoked && last_renew_sent.is_some_and(|t| now.saturating_duration_since(t) < deadline)
}

#[derive(Debug)]
struct State {
    last_renew_sent: Option<Instant>,
    revoked: bool,
}

/// Shared proof of leadership (clones share it).
#[derive(Debug, Clone)]
pub struct LeaseGuard {
    state: Option<Arc<Mutex<State>>>,
    deadline: Duration,
}

impl LeaseGuard {
    /// A guard for a leader that must renew within `deadline` (the elector's renew deadline);
    /// it proves nothing until the first [`LeaseGuard::renewed`].
    pub fn new(deadline: Duration) -> Self {
        Self {
            state: Some(Arc::new(Mutex::new(State {
                last_renew_sent: None,
                revoked: false,
            }))),
            deadline,
        }
    }

    /// A guard that always holds (no leader election: the only replica is the leader).
    pub fn unfenced() -> Self {
        Self {
            state: None,
            deadline: Duration::ZERO,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> Option<T> {
        self.state
            .as_ref()
            .map(|s| f(&mut s.lock().unwrap_or_else(|e| e.into_inner())))
    }

    /// A renewal (or the acquisition) sent at `sent` succeeded. Never moves the proof backwards.
    pub fn renewed(&self, sent: Instant) {
        self.with(|s| {
            if s.last_renew_sent.is_none_or(|t| t < sent) {
                s.last_renew_sent = Some(sent);
            }
        });
    }

    /// When the last successful renewal (or the acquisition) was sent.
    pub fn last_renewal(&self) -> Option<Instant> {
        self.with(|s| s.last_renew_sent).flatten()
    }

    /// Leadership is lost or given up: every later write is refused, whatever the clock says.
    pub fn revoke(&self) {
        self.with(|s| s.revoked = true);
    }

    /// Whether writes may go out now.
    pub fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }

    /// Whether writes may go out at `now`.
    pub fn holds_at(&self, now: Instant) -> bool {
        self.with(|s| provable(s.last_renew_sent, s.revoked, now, self.deadline))
            .unwrap_or(true)
    }
}

/// Whether a request changes anything (and so needs the lease).
pub fn is_write(method: &http::Method, path: &str) -> bool {
    let read = matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    let acts_in_pod = ["/exec", "/attach", "/portforward"]
        .iter()
        .any(|s| path.ends_with(s));
    !read || acts_in_pod
}

/// The error of a refused request.
#[derive(Debug, thiserror::Error)]
#[error("write refused: this replica can no longer prove it holds the leader lease")]
pub struct Fenced;

/// Tower layer refusing writes while the [`LeaseGuard`] does not hold.
#[derive(Clone)]
pub struct FenceLayer {
    guard: LeaseGuard,
}

impl FenceLayer {
    /// A layer checking `guard`.
    pub fn new(guard: LeaseGuard) -> Self {
        Self { guard }
    }
}

impl<S> tower::Layer<S> for FenceLayer {
    type Service = Fence<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Fence {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// The service of [`FenceLayer`].
#[derive(Clone)]
pub struct Fence<S> {
    inner: S,
    guard: LeaseGuard,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B, RB> tower::Service<http::Request<B>> for Fence<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if is_write(req.method(), req.uri().path()) && !self.guard.holds() {
            tracing::warn!(method = %req.method(), path = %req.uri().path(), "write refused: leadership not provable");
            return Box::pin(async { Err(Box::new(Fenced) as BoxError) });
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer, Service};

    use super::*;

    const D: Duration = Duration::from_secs(10);

    #[test]
    fn leadership_is_provable_only_within_the_deadline_of_the_last_renewal_sent() {
        let t0 = Instant::now();
        assert!(!provable(None, false, t0, D), "never renewed: nothing to prove");
        assert!(provable(Some(t0), false, t0, D));
        assert!(provable(Some(t0), false, t0 + D - Duration::from_millis(1), D));
        assert!(
            !provable(Some(t0), false, t0 + D, D),
            "the deadline itself is too late"
        );
        assert!(
            !provable(Some(t0), false, t0 + D * 100, D),
            "a paused process wakes up fenced"
        );
        assert!(
            !provable(Some(t0), true, t0, D),
            "revoked wins over a fresh renewal"
        );
        // A clock reading before the renewal (another thread's older Instant) still holds.
        assert!(provable(Some(t0 + D), false, t0, D));
    }

    #[test]
    fn the_guard_keeps_the_latest_renewal_and_stays_revoked() {
        let g = LeaseGuard::new(D);
        let t0 = Instant::now();
        assert!(!g.holds_at(t0));
        g.renewed(t0 + Duration::from_secs(5));
        g.renewed(t0); // a late answer to an older renewal does not move the proof back
        assert!(g.holds_at(t0 + Duration::from_secs(14)));
        assert!(!g.holds_at(t0 + Duration::from_secs(15)));
        let clone = g.clone();
        clone.revoke();
        g.renewed(t0 + Duration::from_secs(20));
        assert!(!g.holds_at(t0 + Duration::from_secs(20)), "revocation is final");
        assert!(LeaseGuard::unfenced().holds_at(t0 + D * 1000));
    }

    #[test]
    fn writes_and_pod_actions_need_the_lease_reads_do_not() {
        use http::Method;
        assert!(!is_write(&Method::GET, "/api/v1/namespaces/a/pods"));
        assert!(!is_write(&Method::GET, "/api/v1/pods?watch=true"));
        assert!(is_write(&Method::GET, "/api/v1/namespaces/a/pods/p/exec"));
        assert!(is_write(&Method::POST, "/api/v1/namespaces/a/pods/p/exec"));
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(is_write(&m, "/apis/apps/v1/namespaces/a/statefulsets/s"));
        }
    }

    #[tokio::test]
    async fn the_layer_refuses_writes_without_proof_and_lets_reads_through() {
        let g = LeaseGuard::new(D);
        let inner = tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(()))
        });
        let mut svc = FenceLayer::new(g.clone()).layer(inner);
        let req = |m: http::Method| {
            http::Request::builder()
                .method(m)
                .uri("/api/v1/namespaces/a/services")
                .body(())
                .unwrap()
        };
        assert!(svc.call(req(http::Method::GET)).await.is_ok());
        let err = svc.call(req(http::Method::POST)).await.unwrap_err();
        assert!(err.is::<Fenced>(), "{err}");
        g.renewed(Instant::now());
        assert!(svc.call(req(http::Method::POST)).await.is_ok());
        g.revoke();
        assert!(svc.call(req(http::Method::DELETE)).await.is_err());
    }
}
