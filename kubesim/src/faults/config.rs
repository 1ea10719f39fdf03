//! The serialisable fault configuration: the documents of the control API's fault endpoints
//! (error, latency, throttle and after-commit rules; pod and exec hooks).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One error-injection rule: requests matching `verb` and `resource` fail with `code` with
/// probability `rate` (0.0..=1.0). Empty/`*` matches any verb or resource.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRule {
    /// Verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, ...) or `*`.
    #[serde(default)]
    pub verb: String,
    /// Resource plural (`pods`, `statefulsets`, `pods/status`...) or `*`.
    #[serde(default)]
    pub resource: String,
    /// Probability of failing a matching request.
    #[serde(default = "one")]
    pub rate: f64,
    /// HTTP status code to answer (default 500).
    #[serde(default = "default_code")]
    pub code: u16,
    /// Remaining number of injections (`None` = unlimited).
    #[serde(default)]
    pub count: Option<u64>,
}

fn one() -> f64 {
    1.0
}
fn default_code() -> u16 {
    500
}

/// A latency rule: matching requests are delayed by `millis`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LatencyRule {
    /// Verb or `*`.
    #[serde(default)]
    pub verb: String,
    /// Resource or `*`.
    #[serde(default)]
    pub resource: String,
    /// Delay in milliseconds.
    pub millis: u64,
}

/// A throttling rule: matching requests are refused with 429 and a `Retry-After` header, the
/// way kube-apiserver's max-in-flight and priority-and-fairness filters refuse them when
/// overloaded (before any handler runs: nothing is committed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ThrottleRule {
    /// Verb or `*`.
    #[serde(default)]
    pub verb: String,
    /// Resource or `*`.
    #[serde(default)]
    pub resource: String,
    /// Probability of refusing a matching request.
    #[serde(default = "one")]
    pub rate: f64,
    /// The `Retry-After` header, in seconds (the real filters send 1).
    #[serde(default = "one_second")]
    pub retry_after_seconds: u64,
    /// Remaining number of refusals (`None` = unlimited).
    #[serde(default)]
    pub count: Option<u64>,
}

fn one_second() -> u64 {
    1
}

/// Failure hooks consumed by the simulated kubelet / exec implementation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodFaults {
    /// Probability that an exec fails to start (the exec handler answers an error).
    #[serde(default)]
    pub exec_failure_rate: f64,
    /// Exit code forced on execs whose command line contains the given substring.
    #[serde(default)]
    pub exec_exit_codes: BTreeMap<String, i32>,
    /// Pods (`namespace/name`) whose containers should crash/restart once.
    #[serde(default)]
    pub crash_pods: Vec<String>,
    /// Pods (`namespace/name`) that should fail to start (stay Pending / CrashLoop).
    #[serde(default)]
    pub fail_start_pods: Vec<String>,
    /// The next this many execs fail to start (the exec handler answers an error), then execs
    /// run normally again: a deterministic [`Self::exec_failure_rate`].
    #[serde(default)]
    pub exec_failures: u64,
    /// The next this many execs hang: the connection is upgraded and announced, the command never
    /// runs and nothing more is sent until the client gives up (an exec stuck in the container
    /// runtime or a node that stopped answering).
    #[serde(default)]
    pub exec_hangs: u64,
}

/// The complete, serialisable fault configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FaultConfig {
    /// Error rules.
    #[serde(default)]
    pub errors: Vec<ErrorRule>,
    /// Latency rules.
    #[serde(default)]
    pub latency: Vec<LatencyRule>,
    /// Probability that an update/patch answers 409 Conflict although it would succeed.
    #[serde(default)]
    pub conflict_rate: f64,
    /// Rules whose matching writes are committed, then answered with the rule's error (the
    /// client cannot tell the write happened: an etcd commit followed by an API server timeout).
    #[serde(default)]
    pub after_commit: Vec<ErrorRule>,
    /// 429 rules with `Retry-After`.
    #[serde(default)]
    pub throttle: Vec<ThrottleRule>,
    /// Pod and exec hooks.
    #[serde(default)]
    pub pods: PodFaults,
}
