//! The HTTPS server: `POST /validate` (AdmissionReview, W-1..W-5) and `GET /healthz`, over TLS
//! with a hot-swappable certificate ([`HotCert`]): a renewed certificate is used by the next
//! handshake, connections already open keep theirs, so a rotation never fails a request.

use std::{
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use hyper_util::rt::TokioIo;
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use kubedirector_actors::{
    handle::MetricsHandle,
    metrics::{MetricEvent, WebhookResult},
};

use super::{facts, resolve::LiveSource};
use crate::admission::{review::ReviewOutcome, OsEntropy};

/// Largest AdmissionReview accepted (the API server's own request limit is 3 MiB; a review
/// carries the object twice).
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors loading a certificate.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Bad PEM.
    #[error("invalid serving certificate or key: {0}")]
    Pem(String),
    /// rustls refused the key.
    #[error("unusable serving key: {0}")]
    Key(#[from] rustls::Error),
}

/// The certificate currently served; swapped in place on rotation.
#[derive(Debug, Default)]
pub struct HotCert {
    current: RwLock<Option<(String, Arc<CertifiedKey>)>>,
}

impl HotCert {
    /// Serves `cert_pem`/`key_pem` from the next handshake on. Returns whether it changed.
    pub fn set(&self, cert_pem: &str, key_pem: &str) -> Result<bool, TlsError> {
        let same = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|(pem, _)| pem == cert_pem);
        if same {
            return Ok(false);
        }
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem(e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsError::Pem("no certificate".into()));
        }
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Pem(e.to_string()))?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)?;
        let ck = Arc::new(CertifiedKey::new(certs, signer));
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((cert_pem.to_string(), ck));
        Ok(true)
    }

    /// The PEM currently served.
    pub fn pem(&self) -> Option<String> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|(p, _)| p.clone())
    }
}

impl ResolvesServerCert for HotCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|(_, k)| Arc::clone(k))
    }
}

/// State of the handlers.
#[derive(Clone)]
pub struct WebhookState {
    /// Fact source.
    pub source: LiveSource,
    /// The KD namespace.
    pub kd_namespace: String,
    /// Where each AdmissionReview's kind, outcome and latency are reported.
    pub metrics: Option<MetricsHandle>,
}

/// The router (also used without TLS by tests and the benchmark's in-process checks).
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn validate(State(s): State<WebhookState>, headers: HeaderMap, body: Bytes) -> Response {
    let started = std::time::Instant::now();
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let source = &s.source;
    let reply = facts::review(
        ct,
        &body,
        Some(s.kd_namespace.clone()),
        source.tokens(),
        &OsEntropy,
        |q| source.resolve(q),
    )
    .await;
    if let Some(m) = &s.metrics {
        m.send(MetricEvent::WebhookRequest {
            kind: reply.kind,
            result: match reply.outcome {
                ReviewOutcome::Allowed => WebhookResult::Allowed,
                ReviewOutcome::Denied => WebhookResult::Denied,
                ReviewOutcome::Malformed => WebhookResult::Error,
            },
            duration: started.elapsed(),
        });
    }
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, reply.content_type)], reply.body).into_response()
}

/// A rustls server configuration serving whatever `cert` holds.
pub fn tls_config(cert: Arc<HotCert>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut cfg =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves `router` over TLS on `listener` until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let (tcp, peer): (tokio::net::TcpStream, SocketAddr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "webhook accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        conns.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
        while conns.try_join_next().is_some() {}
    }
    conns.abort_all();
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::webhook::certs::{fresh, serving_hosts, Lifetimes};

    #[test]
    fn hot_cert_swaps_only_on_a_new_certificate_and_rejects_garbage() {
        let lifetimes = Lifetimes {
            serving: Duration::from_secs(600),
            ca: Duration::from_secs(6000),
        };
        let hosts = serving_hosts("svc", "ns", &[]);
        let a = fresh(&hosts, SystemTime::now(), lifetimes).unwrap();
        let b = fresh(&hosts, SystemTime::now(), lifetimes).unwrap();
        let hot = HotCert::default();
        assert!(hot.pem().is_none());
        assert!(hot.set(&a.cert, &a.key).unwrap());
        assert!(!hot.set(&a.cert, &a.key).unwrap(), "same certificate: no swap");
        assert!(hot.set(&b.cert, &b.key).unwrap());
        assert_eq!(hot.pem().as_deref(), Some(b.cert.as_str()));
        assert!(hot.set("not a pem", &b.key).is_err());
        assert!(hot.set(&a.cert, "not a key").is_err());
        assert_eq!(
            hot.pem().as_deref(),
            Some(b.cert.as_str()),
            "a failed set keeps serving"
        );
        assert!(tls_config(Arc::new(hot)).is_ok());
    }

    #[test]
    fn the_metric_kind_labels_are_the_ones_the_reviews_produce() {
        assert_eq!(
            crate::admission::review::REVIEW_KINDS,
            kubedirector_actors::metrics::WEBHOOK_KINDS
        );
    }
}
