//! A tower layer on the kube client that reports every API request to the MetricsActor
//! (`rest_client_requests_total{code,method}`, `rest_client_request_duration_seconds{verb}`,
//! client-go names). The duration is the time until the response headers, so a watch counts
//! its set-up, not its lifetime.

use std::{
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Instant,
};

use futures::future::BoxFuture;
use kubedirector_actors::{handle::MetricsHandle, metrics::MetricEvent};

/// Where the layer sends its events. Set once the MetricsActor runs; requests made before
/// (the start-up checks) are not counted.
#[derive(Clone, Default)]
pub struct MetricsSink(Arc<OnceLock<MetricsHandle>>);

impl MetricsSink {
    /// Connects the sink (later calls are ignored).
    pub fn connect(&self, handle: MetricsHandle) {
        let _ = self.0.set(handle);
    }

    /// Sends `ev` when connected.
    pub fn send(&self, ev: MetricEvent) {
        if let Some(r) = self.0.get() {
            r.send(ev);
        }
    }
}

/// The layer.
#[derive(Clone)]
pub struct RestMetricsLayer {
    sink: MetricsSink,
}

impl RestMetricsLayer {
    /// A layer reporting to `sink`.
    pub fn new(sink: MetricsSink) -> Self {
        Self { sink }
    }
}

impl<S> tower::Layer<S> for RestMetricsLayer {
    type Service = RestMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RestMetrics {
            inner,
            sink: self.sink.clone(),
        }
    }
}

/// The service of [`RestMetricsLayer`].
#[derive(Clone)]
pub struct RestMetrics<S> {
    inner: S,
    sink: MetricsSink,
}

/// The bounded `method`/`verb` label of an HTTP method.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for RestMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method_label(req.method());
        let started = Instant::now();
        let fut = self.inner.call(req);
        let sink = self.sink.clone();
        Box::pin(async move {
            let res = fut.await;
            sink.send(MetricEvent::RestRequest {
                method,
                code: res.as_ref().ok().map(|r| r.status().as_u16()),
                duration: started.elapsed(),
            });
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, sync::Mutex};

    use tower::{Layer, Service};

    use super::*;

    #[tokio::test]
    async fn every_request_is_counted_by_method_and_status_code() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = MetricsSink::default();
        let inner = tower::service_fn(|req: http::Request<()>| async move {
            let code = if req.method() == http::Method::DELETE {
                404
            } else {
                200
            };
            Ok::<_, Infallible>(http::Response::builder().status(code).body(()).unwrap())
        });
        let mut svc = RestMetricsLayer::new(sink.clone()).layer(inner);
        // Not connected yet: not counted, still served.
        svc.call(http::Request::get("/api").body(()).unwrap())
            .await
            .unwrap();
        let s = Arc::clone(&seen);
        sink.connect(MetricsHandle::from_fn(move |ev| {
            if let MetricEvent::RestRequest { method, code, .. } = ev {
                s.lock().unwrap().push((method, code));
            }
        }));
        for m in [http::Method::GET, http::Method::GET, http::Method::DELETE] {
            let req = http::Request::builder()
                .method(m)
                .uri("/api/v1/pods")
                .body(())
                .unwrap();
            svc.call(req).await.unwrap();
        }
        assert_eq!(
            *seen.lock().unwrap(),
            [("GET", Some(200)), ("GET", Some(200)), ("DELETE", Some(404))]
        );
    }
}
