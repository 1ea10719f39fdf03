//! Admission webhooks: kubesim calls the ValidatingWebhookConfigurations and
//! MutatingWebhookConfigurations registered through admissionregistration.k8s.io/v1 over HTTPS,
//! like kube-apiserver does.
//!
//! - `clientConfig.url` is called as given; `clientConfig.service` references are resolved
//!   through a mapping set with [`Admission::map_service`] (control API `PUT
//!   /kubesim/v1/webhook-services`), since there is no cluster network. The TLS server name
//!   checked is `<service>.<namespace>.svc`, as the real server does.
//! - The server certificate is verified against `clientConfig.caBundle` (PEM).
//! - Matching: rules (operations, apiGroups, apiVersions, resources incl. `x/status`, `*/*`,
//!   scope), namespaceSelector, objectSelector. Subresource writes only go to webhooks whose
//!   rules name that subresource.
//! - AdmissionReview `v1` (or `v1beta1` when it is the only version offered); mutating webhooks
//!   run first, in configuration-name order, and their JSONPatch responses are applied; then
//!   all validating webhooks run.
//! - failurePolicy (`Fail`/`Ignore`), timeoutSeconds, sideEffects with dryRun; denials are
//!   reported as `admission webhook "<name>" denied the request: <message>`.

use crate::error::ApiError;
use crate::resources::{GroupResource, ResourceInfo};
use crate::selectors::LabelSelector;
use crate::store::Store;
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Errors calling one webhook.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No address for a service reference.
    #[error("no address mapped for service {0} (use the kubesim control API /kubesim/v1/webhook-services)")]
    UnmappedService(String),
    /// Bad clientConfig.
    #[error("invalid webhook client config: {0}")]
    Config(String),
    /// Transport failure.
    #[error("{0}")]
    Transport(String),
    /// Timeout.
    #[error("context deadline exceeded")]
    Timeout,
    /// Bad response.
    #[error("{0}")]
    Response(String),
}

/// Webhook dispatcher.
#[derive(Debug, Default)]
pub struct Admission {
    services: Mutex<HashMap<String, String>>,
}

struct Call<'a> {
    info: &'a ResourceInfo,
    operation: &'a str,
    sub: Option<&'a str>,
    object: Option<&'a Value>,
    old: Option<&'a Value>,
    dry_run: bool,
    user: &'a str,
    namespace: String,
    name: String,
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn any_matches(list: &[String], v: &str) -> bool {
    list.iter().any(|x| x == "*" || x == v)
}

fn resource_matches(patterns: &[String], resource: &str, sub: Option<&str>) -> bool {
    patterns.iter().any(|p| {
        let (pr, ps) = match p.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (p.as_str(), None),
        };
        let r_ok = pr == "*" || pr == resource;
        let s_ok = match (ps, sub) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some("*"), _) => true,
            (Some(s), Some(actual)) => s == actual,
            (Some(_), None) => false,
        };
        r_ok && s_ok
    })
}

impl crate::store::controller_admission::ControllerAdmission for Admission {
    fn admit_create<'a>(
        &'a self,
        store: &'a Store,
        info: &'a ResourceInfo,
        obj: Value,
        user: &'a str,
    ) -> crate::store::controller_admission::AdmitFuture<'a> {
        Box::pin(self.admit(store, info, "CREATE", None, obj, None, false, user))
    }
}

impl Admission {
    /// Map a webhook service reference (`namespace/name`) to a local address (`127.0.0.1:8443`).
    pub fn map_service(&self, namespace: &str, name: &str, address: &str) {
        self.services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(format!("{namespace}/{name}"), address.to_string());
    }

    fn service_address(&self, ns: &str, name: &str) -> Option<String> {
        self.services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&format!("{ns}/{name}"))
            .cloned()
    }

    /// Run mutating then validating webhooks for a write; returns the (possibly mutated) object.
    #[allow(clippy::too_many_arguments)]
    pub async fn admit(
        &self,
        store: &Store,
        info: &ResourceInfo,
        operation: &str,
        sub: Option<&str>,
        obj: Value,
        old: Option<&Value>,
        dry_run: bool,
        user: &str,
    ) -> Result<Value, ApiError> {
        if info.group == "admissionregistration.k8s.io" {
            return Ok(obj);
        }
        let mutating = webhooks(store, "mutatingwebhookconfigurations");
        let validating = webhooks(store, "validatingwebhookconfigurations");
        if mutating.is_empty() && validating.is_empty() {
            return Ok(obj);
        }
        let namespace = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let mut obj = obj;
        for hook in &mutating {
            let call = Call {
                info,
                operation,
                sub,
                object: Some(&obj),
                old,
                dry_run,
                user,
                namespace: namespace.clone(),
                name: name.clone(),
            };
            if !self.matches(store, hook, &call) {
                continue;
            }
            if let Some(patched) = self.invoke(hook, &call, true).await? {
                obj = patched;
            }
        }
        for hook in &validating {
            let call = Call {
                info,
                operation,
                sub,
                object: Some(&obj),
                old,
                dry_run,
                user,
                namespace: namespace.clone(),
                name: name.clone(),
            };
            if self.matches(store, hook, &call) {
                self.invoke(hook, &call, false).await?;
            }
        }
        Ok(obj)
    }

    /// Run validating webhooks for a DELETE.
    pub async fn admit_delete(
        &self,
        store: &Store,
        info: &ResourceInfo,
        old: &Value,
        dry_run: bool,
        user: &str,
    ) -> Result<(), ApiError> {
        if info.group == "admissionregistration.k8s.io" {
            return Ok(());
        }
        let validating = webhooks(store, "validatingwebhookconfigurations");
        for hook in &validating {
            let call = Call {
                info,
                operation: "DELETE",
                sub: None,
                object: None,
                old: Some(old),
                dry_run,
                user,
                namespace: old["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                name: old["metadata"]["name"].as_str().unwrap_or_default().to_string(),
            };
            if self.matches(store, hook, &call) {
                self.invoke(hook, &call, false).await?;
            }
        }
        Ok(())
    }

    fn matches(&self, store: &Store, hook: &Value, c: &Call<'_>) -> bool {
        let rules = hook["rules"].as_array().cloned().unwrap_or_default();
        let rule_ok = rules.iter().any(|r| {
            let ops = str_list(&r["operations"]);
            let scope = r["scope"].as_str().unwrap_or("*");
            let scope_ok = match scope {
                "Cluster" => !c.info.namespaced,
                "Namespaced" => c.info.namespaced,
                _ => true,
            };
            (any_matches(&ops, c.operation) || ops.iter().any(|o| o == "*"))
                && any_matches(&str_list(&r["apiGroups"]), &c.info.group)
                && any_matches(&str_list(&r["apiVersions"]), &c.info.version)
                && resource_matches(&str_list(&r["resources"]), &c.info.resource, c.sub)
                && scope_ok
        });
        if !rule_ok {
            return false;
        }
        // objectSelector: new or old object labels.
        if let Ok(sel) = LabelSelector::from_structured(&hook["objectSelector"]) {
            if !sel.is_empty() {
                let new_ok = c.object.is_some_and(|o| sel.matches(&o["metadata"]["labels"]));
                let old_ok = c.old.is_some_and(|o| sel.matches(&o["metadata"]["labels"]));
                if !new_ok && !old_ok {
                    return false;
                }
            }
        }
        // namespaceSelector.
        if let Ok(sel) = LabelSelector::from_structured(&hook["namespaceSelector"]) {
            if !sel.is_empty() {
                let is_ns = c.info.group.is_empty() && c.info.resource == "namespaces";
                let labels = if is_ns {
                    c.object
                        .or(c.old)
                        .map(|o| o["metadata"]["labels"].clone())
                        .unwrap_or(Value::Null)
                } else if c.info.namespaced {
                    store
                        .get_arc(&GroupResource::new("", "namespaces"), "", &c.namespace)
                        .map(|n| n["metadata"]["labels"].clone())
                        .unwrap_or(Value::Null)
                } else {
                    return true;
                };
                if !sel.matches(&labels) {
                    return false;
                }
            }
        }
        true
    }

    /// Call one webhook. Mutating: returns the patched object if a patch was returned.
    async fn invoke(&self, hook: &Value, c: &Call<'_>, mutating: bool) -> Result<Option<Value>, ApiError> {
        let name = hook["name"].as_str().unwrap_or_default().to_string();
        let fail_open = hook["failurePolicy"].as_str() == Some("Ignore");
        if c.dry_run {
            let se = hook["sideEffects"].as_str().unwrap_or("Unknown");
            if se != "None" && se != "NoneOnDryRun" {
                return Err(ApiError::bad_request(format!(
                    "admission webhook \"{name}\" does not support dry run"
                )));
            }
        }
        let versions = str_list(&hook["admissionReviewVersions"]);
        let review_version = if versions.iter().any(|v| v == "v1") {
            "admission.k8s.io/v1"
        } else if versions.iter().any(|v| v == "v1beta1") {
            "admission.k8s.io/v1beta1"
        } else {
            return self.fail(
                &name,
                fail_open,
                WebhookError::Config("webhook does not accept known AdmissionReview versions".into()),
            );
        };
        let uid = uuid::Uuid::new_v4().to_string();
        let review = self.review(c, review_version, &uid);
        let timeout = Duration::from_secs(hook["timeoutSeconds"].as_u64().unwrap_or(10).clamp(1, 30));
        let resp = match tokio::time::timeout(timeout, self.post(hook, &review)).await {
            Err(_) => return self.fail(&name, fail_open, WebhookError::Timeout),
            Ok(Err(e)) => return self.fail(&name, fail_open, e),
            Ok(Ok(v)) => v,
        };
        let r = &resp["response"];
        if r.is_null() {
            return self.fail(&name, fail_open, WebhookError::Response("response is nil".into()));
        }
        if r["uid"].as_str() != Some(uid.as_str()) {
            return self.fail(
                &name,
                fail_open,
                WebhookError::Response(format!(
                    "expected response.uid={uid:?}, got {:?}",
                    r["uid"].as_str().unwrap_or_default()
                )),
            );
        }
        if r["allowed"] != json!(true) {
            return Err(denied(&name, &r["status"]));
        }
        if !mutating {
            return Ok(None);
        }
        let Some(patch_b64) = r["patch"].as_str().filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        if r["patchType"].as_str().unwrap_or("JSONPatch") != "JSONPatch" {
            return self.fail(
                &name,
                fail_open,
                WebhookError::Response("unsupported patch type".into()),
            );
        }
        let raw = match base64::engine::general_purpose::STANDARD.decode(patch_b64) {
            Ok(r) => r,
            Err(e) => {
                return self.fail(
                    &name,
                    fail_open,
                    WebhookError::Response(format!("decoding patch: {e}")),
                )
            }
        };
        let patch: Value = match serde_json::from_slice(&raw) {
            Ok(p) => p,
            Err(e) => {
                return self.fail(
                    &name,
                    fail_open,
                    WebhookError::Response(format!("decoding patch: {e}")),
                )
            }
        };
        let Some(obj) = c.object else { return Ok(None) };
        match crate::patch::json_patch(obj, &patch) {
            Ok(p) => Ok(Some(p)),
            Err(e) => Err(ApiError::internal(format!(
                "admission webhook \"{name}\" returned an invalid patch: {}",
                e.message
            ))),
        }
    }

    fn fail<T>(&self, name: &str, fail_open: bool, e: WebhookError) -> Result<Option<T>, ApiError> {
        if fail_open {
            tracing::warn!(webhook = %name, error = %e, "webhook failed, failurePolicy=Ignore");
            return Ok(None);
        }
        Err(ApiError::internal(format!(
            "failed calling webhook \"{name}\": failed to call webhook: {e}"
        )))
    }

    fn review(&self, c: &Call<'_>, api_version: &str, uid: &str) -> Value {
        let info = c.info;
        let (kind, object, old) = if c.sub == Some("scale") {
            (
                json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}),
                c.object.map(|o| crate::scale::to_scale(info, o)),
                c.old.map(|o| crate::scale::to_scale(info, o)),
            )
        } else {
            (
                json!({"group": info.group, "version": info.version, "kind": info.kind}),
                c.object.cloned(),
                c.old.cloned(),
            )
        };
        let resource = json!({"group": info.group, "version": info.version, "resource": info.resource});
        let mut req = json!({
            "uid": uid,
            "kind": kind,
            "resource": resource,
            "requestKind": kind,
            "requestResource": resource,
            "name": c.name,
            "operation": c.operation,
            "userInfo": {"username": c.user, "groups": ["system:masters", "system:authenticated"]},
            "object": object,
            "oldObject": old,
            "dryRun": c.dry_run,
            "options": match c.operation {
                "CREATE" => json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}),
                "UPDATE" => json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"}),
                _ => json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1"}),
            },
        });
        if info.namespaced {
            req["namespace"] = json!(c.namespace);
        }
        if let Some(s) = c.sub {
            req["subResource"] = json!(s);
            req["requestSubResource"] = json!(s);
        }
        json!({"apiVersion": api_version, "kind": "AdmissionReview", "request": req})
    }

    async fn post(&self, hook: &Value, review: &Value) -> Result<Value, WebhookError> {
        let cc = &hook["clientConfig"];
        let (addr, server_name, path) = if let Some(url) = cc["url"].as_str() {
            let rest = url
                .strip_prefix("https://")
                .ok_or_else(|| WebhookError::Config(format!("webhook url must use https: {url}")))?;
            let (hostport, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let host = if let Some(h) = hostport.strip_prefix('[') {
                h.split(']').next().unwrap_or_default().to_string()
            } else {
                hostport
                    .rsplit_once(':')
                    .map(|(h, _)| h)
                    .unwrap_or(hostport)
                    .to_string()
            };
            let addr = if hostport
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                && !hostport.ends_with(']')
            {
                hostport.to_string()
            } else {
                format!("{hostport}:443")
            };
            (addr, host, path.to_string())
        } else if cc["service"].is_object() {
            let ns = cc["service"]["namespace"].as_str().unwrap_or_default();
            let n = cc["service"]["name"].as_str().unwrap_or_default();
            let addr = self
                .service_address(ns, n)
                .ok_or_else(|| WebhookError::UnmappedService(format!("{ns}/{n}")))?;
            let path = cc["service"]["path"].as_str().unwrap_or("/").to_string();
            (addr, format!("{n}.{ns}.svc"), path)
        } else {
            return Err(WebhookError::Config("neither url nor service set".into()));
        };
        let url_for_msg = format!("https://{server_name}{path}");
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = cc["caBundle"].as_str().filter(|s| !s.is_empty()) {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(ca)
                .map_err(|e| WebhookError::Config(format!("caBundle is not base64: {e}")))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| WebhookError::Config(format!("caBundle: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| WebhookError::Config(format!("caBundle: {e}")))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| WebhookError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let sn =
            ServerName::try_from(server_name.clone()).map_err(|e| WebhookError::Config(e.to_string()))?;
        let post_err = |e: String| WebhookError::Transport(format!("Post \"{url_for_msg}\": {e}"));
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| post_err(e.to_string()))?;
        let tls = connector
            .connect(sn, tcp)
            .await
            .map_err(|e| post_err(format!("tls: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| post_err(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let body = serde_json::to_vec(review).unwrap_or_default();
        let req = http::Request::post(path)
            .header("host", server_name.as_str())
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| post_err(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| post_err(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| post_err(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(WebhookError::Response(format!(
                "received non-2xx status code {} from webhook: {}",
                status.as_u16(),
                String::from_utf8_lossy(&bytes)
            )));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| WebhookError::Response(format!("decoding AdmissionReview: {e}")))
    }
}

fn denied(name: &str, status: &Value) -> ApiError {
    let code = status["code"]
        .as_u64()
        .map(|c| c as u16)
        .filter(|c| *c >= 400)
        .unwrap_or(403);
    let msg = status["message"].as_str().filter(|m| !m.is_empty());
    let reason_s = status["reason"].as_str().filter(|m| !m.is_empty());
    let denied_by = format!("admission webhook \"{name}\" denied the request");
    let message = match (msg, reason_s) {
        (Some(m), _) => format!("{denied_by}: {m}"),
        (None, Some(r)) => format!("{denied_by}: {r}"),
        (None, None) => format!("{denied_by} without explanation"),
    };
    let reason: &'static str = match reason_s {
        Some("Forbidden") => "Forbidden",
        Some("Invalid") => "Invalid",
        Some("BadRequest") => "BadRequest",
        Some("Conflict") => "Conflict",
        Some("NotFound") => "NotFound",
        Some("AlreadyExists") => "AlreadyExists",
        Some(_) | None => "",
    };
    ApiError {
        code,
        reason,
        message,
        details: status
            .get("details")
            .filter(|d| d.is_object())
            .map(|d| Box::new(d.clone())),
    }
}

fn webhooks(store: &Store, resource: &str) -> Vec<Value> {
    let (configs, _) = store.list_arcs(
        &GroupResource::new("admissionregistration.k8s.io", resource),
        None,
    );
    let mut out = Vec::new();
    // Configurations are already ordered by name (store order); webhooks keep their order.
    for c in configs {
        for h in c["webhooks"].as_array().cloned().unwrap_or_default() {
            out.push(h);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_patterns() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(resource_matches(&p(&["pods"]), "pods", None));
        assert!(!resource_matches(&p(&["pods"]), "pods", Some("status")));
        assert!(resource_matches(&p(&["pods/status"]), "pods", Some("status")));
        assert!(resource_matches(&p(&["*/*"]), "pods", Some("status")));
        assert!(resource_matches(&p(&["*"]), "pods", None));
        assert!(!resource_matches(&p(&["*"]), "pods", Some("status")));
        assert!(resource_matches(&p(&["pods/*"]), "pods", Some("exec")));
    }

    #[test]
    fn denial_format() {
        let e = denied("v.example.com", &json!({"code": 200, "message": "no way"}));
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "admission webhook \"v.example.com\" denied the request: no way"
        );
        let e = denied("v", &json!({"code": 422, "reason": "Invalid"}));
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        let e = denied("v", &Value::Null);
        assert!(e.message.ends_with("without explanation"));
    }
}
