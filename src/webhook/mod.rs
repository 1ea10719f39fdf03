//! The admission webhook served by every operator replica (spec 2.1): HTTPS AdmissionReview
//! endpoint ([`server`]), live facts for the rules ([`facts`], [`resolve`], [`probe`]),
//! certificates kept in a Secret and rotated ([`certs`], [`manage`]).
//!
//! [`start`] makes sure the Secret exists, publishes the Mutating- and
//! ValidatingWebhookConfiguration, binds the listener and spawns the server and the rotation
//! loop; it returns a [`Webhook`] to stop them.

pub mod certs;
pub mod facts;
pub mod manage;
pub mod probe;
pub mod resolve;
pub mod server;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{anyhow, Context as _};
use kube::Client;
use kubedirector_actors::{caches::Caches, handle::MetricsHandle};

use self::{
    certs::Lifetimes,
    manage::{CertManager, Endpoint},
    resolve::{LiveCheck, LiveSource},
    server::{HotCert, WebhookState},
};

/// Webhook options of `kubedirector run`.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookOptions {
    /// Serve the admission webhook and register it (every replica serves it).
    #[arg(long = "webhook", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,
    /// Address the HTTPS webhook listens on.
    #[arg(long = "webhook-addr", default_value = "0.0.0.0:8443")]
    pub addr: SocketAddr,
    /// Name of the Service in front of the webhook.
    #[arg(long = "webhook-service-name", default_value = "kubedirector-validator")]
    pub service_name: String,
    /// Namespace of that Service (default: the KubeDirector namespace).
    #[arg(long = "webhook-service-namespace")]
    pub service_namespace: Option<String>,
    /// Register this URL instead of the Service (operator running outside the cluster); its
    /// host is added to the serving certificate.
    #[arg(long = "webhook-url")]
    pub url: Option<String>,
    /// Lifetime of a serving certificate, in seconds (renewed with a third of it left).
    #[arg(long = "webhook-cert-validity-seconds", default_value_t = 30 * 24 * 3600)]
    pub cert_validity_seconds: u64,
    /// Lifetime of the webhook CA, in seconds (rolled over with a third of it left).
    #[arg(long = "webhook-ca-validity-seconds", default_value_t = 10 * 365 * 24 * 3600)]
    pub ca_validity_seconds: u64,
    /// How often every replica re-reads the certificate Secret (rotation, hot-swap), in seconds.
    #[arg(long = "webhook-cert-check-seconds", default_value_t = 60.0)]
    pub cert_check_seconds: f64,
}

impl Default for WebhookOptions {
    /// Disabled, listening on a free local port when enabled (library users and tests opt in).
    fn default() -> Self {
        Self {
            enabled: false,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            service_name: "kubedirector-validator".into(),
            service_namespace: None,
            url: None,
            cert_validity_seconds: 30 * 24 * 3600,
            ca_validity_seconds: 10 * 365 * 24 * 3600,
            cert_check_seconds: 60.0,
        }
    }
}

/// A running webhook.
pub struct Webhook {
    /// Where it listens.
    pub local_addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Webhook {
    /// Stops serving (open connections are closed) and stops the rotation loop.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

fn url_host(url: &str) -> Option<String> {
    url.parse::<http::Uri>().ok().and_then(|u| {
        u.host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
    })
}

/// Starts the webhook: certificates and registration first (errors are returned), then the
/// server and the rotation loop.
pub async fn start(
    opts: &WebhookOptions,
    client: Client,
    kd_namespace: &str,
    caches: Caches,
    live: LiveCheck,
    metrics: Option<MetricsHandle>,
) -> anyhow::Result<Webhook> {
    let svc_ns = opts
        .service_namespace
        .clone()
        .unwrap_or_else(|| kd_namespace.to_string());
    let endpoint = match &opts.url {
        Some(u) => Endpoint::Url(u.clone()),
        None => Endpoint::Service {
            namespace: svc_ns.clone(),
            name: opts.service_name.clone(),
        },
    };
    let extra: Vec<String> = opts.url.as_deref().and_then(url_host).into_iter().collect();
    let hosts = certs::serving_hosts(&opts.service_name, &svc_ns, &extra);
    let served = Arc::new(HotCert::default());
    let manager = CertManager::new(
        client.clone(),
        kd_namespace,
        endpoint,
        hosts,
        Lifetimes {
            serving: Duration::from_secs(opts.cert_validity_seconds.max(3)),
            ca: Duration::from_secs(opts.ca_validity_seconds.max(3)),
        },
        served.clone(),
    );
    let manager = match &metrics {
        Some(m) => manager.with_metrics(m.clone()),
        None => manager,
    };
    // The listener first, so that the API server can reach us as soon as we are registered.
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .with_context(|| format!("kubedirector: cannot listen on {} (webhook)", opts.addr))?;
    let local_addr = listener.local_addr()?;
    manager
        .tick()
        .await
        .map_err(|e| anyhow!("kubedirector: cannot set up the admission webhook: {e}"))?;
    let tls = server::tls_config(served).map_err(|e| anyhow!("kubedirector: webhook TLS: {e}"))?;
    let router = server::router(WebhookState {
        source: LiveSource::new(client, caches, live, kd_namespace),
        kd_namespace: kd_namespace.to_string(),
        metrics,
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let serving = tokio::spawn(server::serve(listener, tls, router, stop_rx.clone()));
    let period = Duration::from_secs_f64(opts.cert_check_seconds.clamp(0.05, 86_400.0));
    let mut stop_rotation = stop_rx;
    let rotation = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                _ = stop_rotation.changed() => return,
            }
            if let Err(e) = manager.tick().await {
                tracing::warn!(error = %e, "webhook certificate check failed; retrying");
            }
        }
    });
    tracing::info!(addr = %local_addr, "admission webhook serving");
    Ok(Webhook {
        local_addr,
        stop: stop_tx,
        tasks: vec![serving, rotation],
    })
}
