//! Live facts for the webhook, answered asynchronously around the synchronous rules.
//!
//! The rules in [`crate::admission`] are pure and synchronous (the offline `kubedirector
//! validate` shares them). The webhook runs them in rounds: a [`Recorder`] answers every fact it
//! already knows and records the questions it does not (answering `Unknown` for now); the
//! questions of a round are then resolved concurrently (caches, API reads, SubjectAccessReviews,
//! URL HEADs, each with a short timeout) and the rules run again, until a round asks nothing new.
//! Only the last round's verdict is sent; the token "validated" marks (C-7/K-5 side effect) are
//! applied once, after it. A fact that cannot be resolved (timeout, API error) stays `Unknown`:
//! its rule is skipped and the skip is returned as an admission warning.

use std::{collections::HashMap, future::Future, sync::Mutex};

use kubedirector_actors::tokens::{StatusTokens, TokenTable};
use serde_json::Value;

use crate::admission::{
    review::{handle_review, HttpReply},
    ClusterFacts, Entropy, Fact, SarAnswer, SarRequest, StatusToken, TokenKind, UserInfo,
};

/// Upper bound on resolution rounds (each rule chain needs at most three: app, then what the
/// app's roles name, then the kdconfig-dependent checks).
pub const MAX_ROUNDS: usize = 6;

/// A SubjectAccessReview question in hashable form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SarKey {
    /// User name.
    pub username: String,
    /// User UID.
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes, as JSON text.
    pub extra: String,
    /// Verb.
    pub verb: String,
    /// Plural core resource.
    pub resource: String,
    /// Object name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
}

impl SarKey {
    fn of(r: &SarRequest) -> Self {
        Self {
            username: r.user.username.clone(),
            uid: r.user.uid.clone(),
            groups: r.user.groups.clone(),
            extra: Value::Object(r.user.extra.clone()).to_string(),
            verb: r.verb.clone(),
            resource: r.resource.clone(),
            name: r.name.clone(),
            namespace: r.namespace.clone(),
        }
    }

    /// Back to a [`SarRequest`].
    pub fn request(&self) -> SarRequest {
        SarRequest {
            user: UserInfo {
                username: self.username.clone(),
                uid: self.uid.clone(),
                groups: self.groups.clone(),
                extra: serde_json::from_str(&self.extra).unwrap_or_default(),
            },
            verb: self.verb.clone(),
            resource: self.resource.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
        }
    }
}

/// One fact the rules asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Question {
    /// kdapp (namespace, name).
    App(String, String),
    /// kdclusters using the kdapp (namespace, name).
    ClustersUsingApp(String, String),
    /// Whether any kdcluster exists.
    AnyCluster,
    /// kdcluster (namespace, name).
    Cluster(String, String),
    /// StorageClass existence.
    StorageClass(String),
    /// The default StorageClass.
    DefaultStorageClass,
    /// ServiceAccount existence (namespace, name).
    ServiceAccount(String, String),
    /// Secret existence (namespace, name).
    Secret(String, String),
    /// PVC (namespace, name).
    Pvc(String, String),
    /// `kd-global-config`.
    KdConfig,
    /// Server version.
    ServerVersion,
    /// A SubjectAccessReview.
    Sar(SarKey),
    /// HEAD of a URL.
    Url(String),
}

/// The answer to a [`Question`].
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Could not be determined (the rule is skipped with a warning).
    Unknown,
    /// An object, or its absence.
    Object(Option<Value>),
    /// `ns/name` list.
    Names(Vec<String>),
    /// Yes/no.
    Bool(bool),
    /// A name, or none.
    Name(Option<String>),
    /// (major, minor).
    Version(u32, u32),
    /// A review's answer.
    Review(SarAnswer),
    /// Reachability.
    Reach(Result<(), String>),
}

fn table(kind: TokenKind) -> TokenTable {
    match kind {
        TokenKind::Cluster => TokenTable::Cluster,
        TokenKind::Config => TokenTable::Config,
    }
}

/// Answers from what is known, records what is not.
pub struct Recorder<'a> {
    known: &'a HashMap<Question, Answer>,
    asked: Mutex<Vec<Question>>,
    tokens: Option<&'a StatusTokens>,
    marks: Mutex<Vec<(TokenKind, String)>>,
}

impl<'a> Recorder<'a> {
    /// A recorder over the answers gathered so far; `tokens` is `None` on a replica that does not
    /// reconcile (its table would be empty, so C-7 is skipped rather than judged on nothing).
    pub fn new(known: &'a HashMap<Question, Answer>, tokens: Option<&'a StatusTokens>) -> Self {
        Self {
            known,
            asked: Mutex::new(Vec::new()),
            tokens,
            marks: Mutex::new(Vec::new()),
        }
    }

    fn ask(&self, q: Question) -> Answer {
        match self.known.get(&q) {
            Some(a) => a.clone(),
            None => {
                let mut asked = self
                    .asked
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if !asked.contains(&q) {
                    asked.push(q);
                }
                Answer::Unknown
            }
        }
    }

    /// The questions this round could not answer.
    pub fn take_questions(&self) -> Vec<Question> {
        std::mem::take(
            &mut *self
                .asked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Applies the recorded "validated" marks.
    pub fn commit_marks(&self) {
        if let Some(tokens) = self.tokens {
            for (kind, uid) in self
                .marks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
            {
                tokens.mark_validated(table(*kind), uid);
            }
        }
    }
}

macro_rules! expect_answer {
    ($answer:expr, $pat:pat => $out:expr) => {
        match $answer {
            $pat => Fact::Known($out),
            _ => Fact::Unknown,
        }
    };
}

impl ClusterFacts for Recorder<'_> {
    fn app(&self, namespace: &str, name: &str) -> Fact<Option<Value>> {
        expect_answer!(self.ask(Question::App(namespace.into(), name.into())), Answer::Object(o) => o)
    }
    fn clusters_referencing_app(&self, ns: &str, name: &str) -> Fact<Vec<String>> {
        expect_answer!(self.ask(Question::ClustersUsingApp(ns.into(), name.into())), Answer::Names(n) => n)
    }
    fn any_cluster_exists(&self) -> Fact<bool> {
        expect_answer!(self.ask(Question::AnyCluster), Answer::Bool(b) => b)
    }
    fn cluster(&self, namespace: &str, name: &str) -> Fact<Option<Value>> {
        expect_answer!(self.ask(Question::Cluster(namespace.into(), name.into())), Answer::Object(o) => o)
    }
    fn storage_class_exists(&self, name: &str) -> Fact<bool> {
        expect_answer!(self.ask(Question::StorageClass(name.into())), Answer::Bool(b) => b)
    }
    fn default_storage_class(&self) -> Fact<Option<String>> {
        expect_answer!(self.ask(Question::DefaultStorageClass), Answer::Name(n) => n)
    }
    fn service_account_exists(&self, ns: &str, name: &str) -> Fact<bool> {
        expect_answer!(self.ask(Question::ServiceAccount(ns.into(), name.into())), Answer::Bool(b) => b)
    }
    fn secret_exists(&self, ns: &str, name: &str) -> Fact<bool> {
        expect_answer!(self.ask(Question::Secret(ns.into(), name.into())), Answer::Bool(b) => b)
    }
    fn pvc(&self, ns: &str, name: &str) -> Fact<Option<Value>> {
        expect_answer!(self.ask(Question::Pvc(ns.into(), name.into())), Answer::Object(o) => o)
    }
    fn kd_config(&self) -> Fact<Option<Value>> {
        expect_answer!(self.ask(Question::KdConfig), Answer::Object(o) => o)
    }
    fn server_version(&self) -> Fact<(u32, u32)> {
        expect_answer!(self.ask(Question::ServerVersion), Answer::Version(a, b) => (a, b))
    }
    fn subject_access_review(&self, request: &SarRequest) -> Fact<SarAnswer> {
        expect_answer!(self.ask(Question::Sar(SarKey::of(request))), Answer::Review(r) => r)
    }
    fn url_reachable(&self, url: &str) -> Fact<Result<(), String>> {
        expect_answer!(self.ask(Question::Url(url.into())), Answer::Reach(r) => r)
    }
    fn status_token(&self, kind: TokenKind, uid: &str) -> Fact<Option<StatusToken>> {
        match self.tokens {
            Some(t) => Fact::Known(t.get(table(kind), uid).map(|t| StatusToken {
                uid: t.generation_uid,
                validated: t.validated,
            })),
            None => Fact::Unknown,
        }
    }
    fn mark_status_token_validated(&self, kind: TokenKind, uid: &str) {
        let mut marks = self
            .marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mark = (kind, uid.to_string());
        if !marks.contains(&mark) {
            marks.push(mark);
        }
    }
}

/// Handles one `/validate` request, resolving facts with `resolve` between rounds.
pub async fn review<R, F>(
    content_type: Option<&str>,
    body: &[u8],
    kd_namespace: Option<String>,
    tokens: Option<&StatusTokens>,
    entropy: &(dyn Entropy + Sync),
    resolve: R,
) -> HttpReply
where
    R: Fn(Question) -> F,
    F: Future<Output = Answer>,
{
    let mut known: HashMap<Question, Answer> = HashMap::new();
    for round in 1..=MAX_ROUNDS {
        let (reply, questions, recorder_marks) = {
            let recorder = Recorder::new(&known, tokens);
            let reply = handle_review(content_type, body, kd_namespace.clone(), &recorder, entropy);
            let questions = recorder.take_questions();
            let done = questions.is_empty() || round == MAX_ROUNDS;
            if done {
                recorder.commit_marks();
            }
            (reply, questions, done)
        };
        if recorder_marks {
            return reply;
        }
        let answers = futures::future::join_all(questions.iter().cloned().map(&resolve)).await;
        known.extend(questions.into_iter().zip(answers));
    }
    // Unreachable: the last round always returns.
    HttpReply {
        status: 500,
        content_type: "text/plain; charset=utf-8",
        body: b"admission rounds exhausted\n".to_vec(),
        kind: crate::admission::review::OTHER_KIND,
        outcome: crate::admission::review::ReviewOutcome::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::admission::SeededEntropy;

    fn cluster_review(spec: Value) -> Vec<u8> {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u1", "kind": {"group": "kubedirector.hpe.com", "version": "v1beta1",
                "kind": "KubeDirectorCluster"}, "operation": "CREATE", "namespace": "team", "name": "c1",
                "userInfo": {"username": "alice"},
                "object": {"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
                    "metadata": {"name": "c1", "namespace": "team"}, "spec": spec}}})
        .to_string()
        .into_bytes()
    }

    #[tokio::test]
    async fn unknown_app_is_looked_up_then_refused_with_upstream_text() {
        let asked = Mutex::new(Vec::new());
        let body = cluster_review(json!({"app": "nope", "roles": []}));
        let reply = review(
            Some("application/json"),
            &body,
            Some("kd".into()),
            None,
            &SeededEntropy::new(1),
            |q| {
                asked.lock().unwrap().push(q.clone());
                async move {
                    match q {
                        Question::App(..) | Question::KdConfig => Answer::Object(None),
                        _ => Answer::Unknown,
                    }
                }
            },
        )
        .await;
        let b: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(b["response"]["allowed"], false);
        assert_eq!(
            b["response"]["status"]["message"],
            "\nInvalid app(nope). This app resource ID has not been registered."
        );
        let asked = asked.lock().unwrap();
        assert!(
            asked.contains(&Question::App("team".into(), "nope".into())),
            "{asked:?}"
        );
    }

    #[tokio::test]
    async fn garbage_needs_no_round_trip() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let reply = review(
            Some("application/json"),
            b"{\"request\": 5",
            Some("kd".into()),
            None,
            &SeededEntropy::new(1),
            |_q| {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { Answer::Unknown }
            },
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn token_marks_are_deferred_until_commit() {
        let tokens = StatusTokens::default();
        tokens.record(TokenTable::Cluster, "u", "g");
        let known = HashMap::new();
        let r = Recorder::new(&known, Some(&tokens));
        r.mark_status_token_validated(TokenKind::Cluster, "u");
        assert!(!tokens.get(TokenTable::Cluster, "u").unwrap().validated);
        r.commit_marks();
        assert!(tokens.get(TokenTable::Cluster, "u").unwrap().validated);
        assert_eq!(
            SarKey::of(
                &SarKey::of(&SarRequest {
                    user: UserInfo {
                        username: "a".into(),
                        ..UserInfo::default()
                    },
                    verb: "get".into(),
                    resource: "serviceaccounts".into(),
                    name: "sa".into(),
                    namespace: "ns".into(),
                })
                .request()
            ),
            SarKey::of(&SarRequest {
                user: UserInfo {
                    username: "a".into(),
                    ..UserInfo::default()
                },
                verb: "get".into(),
                resource: "serviceaccounts".into(),
                name: "sa".into(),
                namespace: "ns".into(),
            })
        );
    }
}
