//! The webhook Secret and configurations in the API: every replica runs [`CertManager::tick`]
//! periodically. The Secret is the source of truth: whoever creates it first wins (the others get
//! `409 AlreadyExists` and read it), rotations are optimistic updates (a `409 Conflict` means
//! another replica rotated first; its result is read on the next tick). The webhook
//! configurations carry the Secret's generation in an annotation and are never overwritten with
//! an older generation, so a lagging replica cannot un-publish a new CA.

use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

use base64::Engine as _;
use k8s_openapi::{
    api::{
        admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
        core::v1::Secret,
    },
    ByteString,
};
use kube::{
    api::{Api, PostParams},
    Client, Resource,
};
use kubedirector_actors::{
    handle::MetricsHandle,
    metrics::{MetricEvent, CERT_WEBHOOK_CA, CERT_WEBHOOK_SERVING},
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};

use super::{
    certs::{self, CertBundle, Lifetimes, Step},
    server::HotCert,
};

/// Name of the webhook Secret (as upstream).
pub const SECRET_NAME: &str = "kubedirector-validator-secret";
/// Name of both webhook configurations (upstream: the mutating one only).
pub const CONFIG_NAME: &str = "kubedirector-webhook";
/// Annotation carrying the Secret generation (on the Secret and on the configurations).
pub const GENERATION_ANNOTATION: &str = "kubedirector.hpe.com/cert-generation";
/// Annotation carrying a digest of the desired configuration.
pub const DIGEST_ANNOTATION: &str = "kubedirector.hpe.com/webhook-digest";
/// Path served.
pub const PATH: &str = "/validate";

/// Where the API server reaches the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Service (`clientConfig.service`, port 443).
    Service {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// An explicit URL (`clientConfig.url`), for an operator running outside the cluster.
    Url(String),
}

/// Errors of a tick.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// API failure.
    #[error("kubernetes API: {0}")]
    Api(#[from] kube::Error),
    /// Certificate failure.
    #[error(transparent)]
    Cert(#[from] certs::CertError),
    /// TLS failure.
    #[error(transparent)]
    Tls(#[from] super::server::TlsError),
    /// Serialization.
    #[error("serialization: {0}")]
    Json(#[from] serde_json::Error),
}

/// Keeps the Secret, the configurations and the served certificate in step.
pub struct CertManager {
    client: Client,
    namespace: String,
    endpoint: Endpoint,
    hosts: Vec<String>,
    lifetimes: Lifetimes,
    served: Arc<HotCert>,
    metrics: Option<MetricsHandle>,
}

fn generation_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> u64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(GENERATION_ANNOTATION))
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn digest(v: &Value) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(v.to_string().as_bytes()))
}

impl CertManager {
    /// A manager for the Secret in `namespace`; `hosts` are the serving certificate's names.
    pub fn new(
        client: Client,
        namespace: &str,
        endpoint: Endpoint,
        hosts: Vec<String>,
        lifetimes: Lifetimes,
        served: Arc<HotCert>,
    ) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            endpoint,
            hosts,
            lifetimes,
            served,
            metrics: None,
        }
    }

    /// Reports the served certificate's and its CA's notAfter to `metrics` on every load and
    /// rotation (`kubedirector_certificate_expiry_timestamp_seconds`).
    #[must_use]
    pub fn with_metrics(mut self, metrics: MetricsHandle) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Serves `bundle`'s certificate from the next handshake on and reports its expiry.
    fn serve(&self, bundle: &CertBundle) -> Result<(), ManageError> {
        self.served.set(&bundle.cert, &bundle.key)?;
        if let Some(m) = &self.metrics {
            for (label, pem) in [
                (CERT_WEBHOOK_SERVING, &bundle.cert),
                (CERT_WEBHOOK_CA, &bundle.cert_ca),
            ] {
                match certs::not_after(pem) {
                    Ok(t) => m.send(MetricEvent::CertificateExpiry {
                        certificate: label,
                        not_after: t.into(),
                    }),
                    Err(e) => {
                        tracing::warn!(certificate = label, error = %e, "cannot read a certificate's expiry")
                    }
                }
            }
        }
        Ok(())
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn secret_object(
        &self,
        bundle: &CertBundle,
        generation: u64,
        resource_version: Option<String>,
    ) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(SECRET_NAME.into());
        s.metadata.namespace = Some(self.namespace.clone());
        s.metadata.resource_version = resource_version;
        s.metadata.annotations = Some(BTreeMap::from([(
            GENERATION_ANNOTATION.to_string(),
            generation.to_string(),
        )]));
        s.type_ = Some("Opaque".into());
        s.data = Some(
            bundle
                .to_data()
                .into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        );
        s
    }

    /// Reads the Secret, creating it when missing: (content, generation, resourceVersion).
    async fn read_or_create(&self) -> Result<(CertBundle, u64, Option<String>), ManageError> {
        for _ in 0..3 {
            if let Some(s) = self.secrets().get_opt(SECRET_NAME).await? {
                let data: BTreeMap<String, Vec<u8>> = s
                    .data
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                match CertBundle::from_data(&data) {
                    Ok(b) => return Ok((b, generation_of(&s.metadata), s.metadata.resource_version)),
                    Err(e) => {
                        // An unusable Secret (for instance upstream's, without `ca.key`) is
                        // replaced by a fresh one, optimistically.
                        tracing::warn!(error = %e, "webhook secret unusable; replacing it");
                        let fresh = certs::fresh(&self.hosts, SystemTime::now(), self.lifetimes)?;
                        let gen = generation_of(&s.metadata) + 1;
                        let obj = self.secret_object(&fresh, gen, s.metadata.resource_version.clone());
                        match self
                            .secrets()
                            .replace(SECRET_NAME, &PostParams::default(), &obj)
                            .await
                        {
                            Ok(w) => return Ok((fresh, gen, w.metadata.resource_version)),
                            Err(e) if is_conflict(&e) => continue,
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
            let fresh = certs::fresh(&self.hosts, SystemTime::now(), self.lifetimes)?;
            let obj = self.secret_object(&fresh, 1, None);
            match self.secrets().create(&PostParams::default(), &obj).await {
                Ok(w) => {
                    tracing::info!("webhook certificates generated");
                    return Ok((fresh, 1, w.metadata.resource_version));
                }
                // Another replica created it first: use theirs.
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ManageError::Api(kube::Error::Service(
            "webhook secret kept changing while being read".into(),
        )))
    }

    fn client_config(&self, ca_bundle: &str) -> Value {
        let ca = base64::engine::general_purpose::STANDARD.encode(ca_bundle);
        match &self.endpoint {
            Endpoint::Service { namespace, name } => json!({
                "service": {"namespace": namespace, "name": name, "path": PATH, "port": 443},
                "caBundle": ca
            }),
            Endpoint::Url(url) => json!({"url": url, "caBundle": ca}),
        }
    }

    /// The desired `webhooks` of the mutating (CREATE/UPDATE of the CRs: rules and defaults;
    /// CREATE of labelled PVCs: owner reference) and validating (DELETE of the CRs)
    /// configurations.
    pub fn desired(&self, ca_bundle: &str) -> (Value, Value) {
        let cc = self.client_config(ca_bundle);
        let cr_rule = |ops: Value| {
            json!({"operations": ops, "apiGroups": ["kubedirector.hpe.com"], "apiVersions": ["v1beta1"],
                   "resources": ["kubedirectorconfigs", "kubedirectorapps", "kubedirectorclusters"],
                   "scope": "*"})
        };
        let versions = json!(["v1", "v1beta1"]);
        let mutating = json!([
            {"name": "hard-validate-cr.kubedirector.hpe.com", "clientConfig": cc,
             "rules": [cr_rule(json!(["CREATE", "UPDATE"]))], "failurePolicy": "Fail",
             "sideEffects": "None", "admissionReviewVersions": versions, "timeoutSeconds": 10,
             "matchPolicy": "Equivalent", "reinvocationPolicy": "Never",
             "namespaceSelector": {}, "objectSelector": {}},
            {"name": "soft-validate-cr.kubedirector.hpe.com", "clientConfig": cc,
             "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                        "resources": ["persistentvolumeclaims"], "scope": "Namespaced"}],
             "failurePolicy": "Ignore", "sideEffects": "None", "admissionReviewVersions": versions,
             "timeoutSeconds": 10, "matchPolicy": "Equivalent", "reinvocationPolicy": "Never",
             "namespaceSelector": {},
             "objectSelector": {"matchExpressions": [
                 {"key": kubedirector_crds::wire::LABEL_CLUSTER, "operator": "Exists"}]}}
        ]);
        let validating = json!([
            {"name": "hard-validate-delete.kubedirector.hpe.com", "clientConfig": cc,
             "rules": [cr_rule(json!(["DELETE"]))], "failurePolicy": "Fail", "sideEffects": "None",
             "admissionReviewVersions": versions, "timeoutSeconds": 10, "matchPolicy": "Equivalent",
             "namespaceSelector": {}, "objectSelector": {}}
        ]);
        (mutating, validating)
    }

    /// Writes one configuration if it is older than `generation` or differs; returns whether the
    /// API now holds `generation` with this content.
    async fn publish_one<K>(&self, kind: &str, webhooks: Value, generation: u64) -> Result<bool, ManageError>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client.clone());
        let want = digest(&webhooks);
        let existing = api.get_opt(CONFIG_NAME).await?;
        let rv = match &existing {
            Some(e) => {
                let meta = e.meta();
                let have_gen = generation_of(meta);
                let have_digest = meta.annotations.as_ref().and_then(|a| a.get(DIGEST_ANNOTATION));
                if have_gen > generation {
                    return Ok(false);
                }
                if have_gen == generation && have_digest == Some(&want) {
                    return Ok(true);
                }
                meta.resource_version.clone()
            }
            None => None,
        };
        let obj: K = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
            "metadata": {"name": CONFIG_NAME, "resourceVersion": rv,
                         "labels": {"app.kubernetes.io/name": "kubedirector"},
                         "annotations": {GENERATION_ANNOTATION: generation.to_string(), DIGEST_ANNOTATION: want}},
            "webhooks": webhooks
        }))?;
        let res = match existing {
            Some(_) => api.replace(CONFIG_NAME, &PostParams::default(), &obj).await,
            None => api.create(&PostParams::default(), &obj).await,
        };
        match res {
            Ok(_) => {
                tracing::info!(kind, generation, "webhook configuration published");
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn publish(&self, bundle: &CertBundle, generation: u64) -> Result<bool, ManageError> {
        let (mutating, validating) = self.desired(&bundle.trust_pem());
        let m = self
            .publish_one::<MutatingWebhookConfiguration>("MutatingWebhookConfiguration", mutating, generation)
            .await?;
        let v = self
            .publish_one::<ValidatingWebhookConfiguration>(
                "ValidatingWebhookConfiguration",
                validating,
                generation,
            )
            .await?;
        Ok(m && v)
    }

    /// One round: read (or create) the Secret, serve its certificate, publish the
    /// configurations, rotate what is due. Returns the generation now served.
    pub async fn tick(&self) -> Result<u64, ManageError> {
        let (mut bundle, mut generation, rv) = self.read_or_create().await?;
        self.serve(&bundle)?;
        let published = self.publish(&bundle, generation).await?;
        if let Step::Write(next, why) =
            certs::next(&bundle, &self.hosts, SystemTime::now(), self.lifetimes, published)?
        {
            let obj = self.secret_object(&next, generation + 1, rv);
            match self
                .secrets()
                .replace(SECRET_NAME, &PostParams::default(), &obj)
                .await
            {
                Ok(_) => {
                    tracing::info!(
                        reason = why,
                        generation = generation + 1,
                        "webhook certificates rotated"
                    );
                    bundle = *next;
                    generation += 1;
                    // Publish the new bundle before serving a certificate it may be needed for.
                    if self.publish(&bundle, generation).await? {
                        self.serve(&bundle)?;
                    }
                }
                Err(e) if is_conflict(&e) => {
                    tracing::debug!("another replica rotated the webhook certificates first");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(generation)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Mutex},
        time::{Duration, SystemTime},
    };

    use super::*;

    #[tokio::test]
    async fn serving_a_bundle_reports_the_certificate_and_ca_expiry() {
        let client = Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let lifetimes = Lifetimes {
            serving: Duration::from_secs(3600),
            ca: Duration::from_secs(36_000),
        };
        let hosts = certs::serving_hosts("svc", "ns", &[]);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let served = Arc::new(HotCert::default());
        let manager = CertManager::new(
            client,
            "ns",
            Endpoint::Url("https://127.0.0.1:8443/validate".into()),
            hosts.clone(),
            lifetimes,
            served.clone(),
        )
        .with_metrics(MetricsHandle::from_fn(move |ev| sink.lock().unwrap().push(ev)));
        let now = SystemTime::now();
        let bundle = certs::fresh(&hosts, now, lifetimes).unwrap();
        manager.serve(&bundle).unwrap();
        assert_eq!(served.pem().as_deref(), Some(bundle.cert.as_str()));
        let events: Vec<(&str, SystemTime)> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|e| match e {
                MetricEvent::CertificateExpiry {
                    certificate,
                    not_after,
                } => (*certificate, *not_after),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(events.len(), 2, "{events:?}");
        let left = |label: &str| {
            events
                .iter()
                .find(|(l, _)| *l == label)
                .unwrap()
                .1
                .duration_since(now)
                .unwrap()
                .as_secs()
        };
        // Whole seconds: the certificate's notAfter has no sub-second part.
        assert!((3598..=3600).contains(&left(CERT_WEBHOOK_SERVING)), "{events:?}");
        assert!((35_998..=36_000).contains(&left(CERT_WEBHOOK_CA)), "{events:?}");
    }
}
