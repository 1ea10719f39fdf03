//! `kubedirector validate`: the admission rules, offline.
//!
//! Each document of the given files (YAML, multi-document YAML, JSON; directories are searched
//! recursively for `*.yaml`, `*.yml`, `*.json`) is admitted as a CREATE, in order, and reported
//! as `ok <Kind>/<name>`, `rejected <Kind>/<name>: <messages joined by "; ">` (each message on
//! one line, even where upstream's text has line breaks) or `skipped <Kind>/<name>: ...` (other
//! kinds, and documents that are not objects), followed by `note <Kind>/<name>: ...` lines for
//! checks that need a live cluster. A file without documents gives `skipped <file>: no
//! documents`. Accepted kdapps join the catalog for later documents; an accepted kdconfig
//! becomes the active configuration for later documents.
//!
//! Exit status: 0 all accepted, 1 some document rejected, 2 some input unreadable/unparsable.
//! With `--print-mutated` the stored form of every accepted document goes to stdout as a YAML
//! stream and the status lines go to stderr.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::{Path, PathBuf},
    sync::LazyLock,
};

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use crate::admission::{
    review::admit, AdmissionContext, ClusterFacts, Fact, Operation, OsEntropy, SarAnswer, SarRequest,
    StatusToken, TokenKind, UserInfo, Verdict,
};

/// Arguments of `kubedirector validate`.
#[derive(Debug, Clone, clap::Args)]
pub struct ValidateArgs {
    /// A kdapp catalog file or directory (repeatable); its KubeDirectorApps are visible to the
    /// kdclusters being validated.
    #[arg(long = "catalog", value_name = "PATH")]
    pub catalog: Vec<PathBuf>,
    /// A KubeDirectorConfig document supplying defaults (service type, naming scheme, storage
    /// class, secret prefix, master encryption key, ...).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Namespace of documents that name none.
    #[arg(long, default_value = "default", value_name = "NS")]
    pub namespace: String,
    /// The operator's namespace (system catalog, kdconfig namespace).
    #[arg(long = "kd-namespace", default_value = "kubedirector", value_name = "NS")]
    pub kd_namespace: String,
    /// A StorageClass that exists (repeatable). Without any, storage-class checks become notes.
    #[arg(long = "storage-class", value_name = "NAME")]
    pub storage_classes: Vec<String>,
    /// The cluster's default StorageClass (implies that it exists).
    #[arg(long = "default-storage-class", value_name = "NAME")]
    pub default_storage_class: Option<String>,
    /// Print every accepted document as stored (mutations applied), as a YAML stream on stdout;
    /// status lines then go to stderr.
    #[arg(long = "print-mutated")]
    pub print_mutated: bool,
    /// Files or directories to validate.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Exit status: everything accepted.
pub const EXIT_OK: u8 = 0;
/// Exit status: some document was rejected.
pub const EXIT_REJECTED: u8 = 1;
/// Exit status: some input could not be read or parsed.
pub const EXIT_INPUT: u8 = 2;

/// Why an input file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file or directory could not be read.
    #[error("error: {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML/JSON.
    #[error("error: {path}:{line}:{column}: {reason}")]
    Syntax {
        /// The path.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The offline world: what the files given on the command line define, nothing else.
#[derive(Default)]
struct OfflineFacts {
    apps: RefCell<BTreeMap<(String, String), Value>>,
    clusters: RefCell<BTreeMap<(String, String), Value>>,
    kd_config: RefCell<Option<Value>>,
    storage_classes: BTreeSet<String>,
    default_storage_class: Option<String>,
    storage_known: bool,
}

fn key(ns: &str, name: &str) -> (String, String) {
    (ns.to_string(), name.to_string())
}

impl ClusterFacts for OfflineFacts {
    fn app(&self, namespace: &str, name: &str) -> Fact<Option<Value>> {
        Fact::Known(self.apps.borrow().get(&key(namespace, name)).cloned())
    }
    fn clusters_referencing_app(&self, _ns: &str, _name: &str) -> Fact<Vec<String>> {
        Fact::Unknown
    }
    fn any_cluster_exists(&self) -> Fact<bool> {
        Fact::Unknown
    }
    fn cluster(&self, namespace: &str, name: &str) -> Fact<Option<Value>> {
        Fact::Known(self.clusters.borrow().get(&key(namespace, name)).cloned())
    }
    fn storage_class_exists(&self, name: &str) -> Fact<bool> {
        if self.storage_known {
            Fact::Known(self.storage_classes.contains(name))
        } else {
            Fact::Unknown
        }
    }
    fn default_storage_class(&self) -> Fact<Option<String>> {
        if self.storage_known {
            Fact::Known(self.default_storage_class.clone())
        } else {
            Fact::Unknown
        }
    }
    fn service_account_exists(&self, _ns: &str, _name: &str) -> Fact<bool> {
        Fact::Unknown
    }
    fn secret_exists(&self, _ns: &str, _name: &str) -> Fact<bool> {
        Fact::Unknown
    }
    fn pvc(&self, _ns: &str, _name: &str) -> Fact<Option<Value>> {
        Fact::Unknown
    }
    fn kd_config(&self) -> Fact<Option<Value>> {
        Fact::Known(self.kd_config.borrow().clone())
    }
    fn server_version(&self) -> Fact<(u32, u32)> {
        Fact::Unknown
    }
    fn subject_access_review(&self, _request: &SarRequest) -> Fact<SarAnswer> {
        Fact::Unknown
    }
    fn url_reachable(&self, _url: &str) -> Fact<Result<(), String>> {
        Fact::Unknown
    }
    fn status_token(&self, _kind: TokenKind, _uid: &str) -> Fact<Option<StatusToken>> {
        Fact::Unknown
    }
}

static LOCATION_SUFFIX: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r" at line \d+ column \d+").ok());

fn strip_location(msg: &str) -> String {
    match LOCATION_SUFFIX.as_ref() {
        Some(re) => re.replace(msg, "").into_owned(),
        None => msg.to_string(),
    }
}

/// Parses one file into its documents (empty YAML documents are dropped, `List`s expanded).
pub fn parse_documents(path: &Path, text: &str) -> Result<Vec<Value>, InputError> {
    let display = path.display().to_string();
    let mut docs = Vec::new();
    let is_json = path.extension().is_some_and(|e| e == "json");
    if is_json {
        let v: Value = serde_json::from_str(text).map_err(|e| InputError::Syntax {
            path: display.clone(),
            line: e.line(),
            column: e.column(),
            reason: strip_location(&e.to_string()),
        })?;
        docs.push(v);
    } else {
        for de in serde_yaml::Deserializer::from_str(text) {
            let v = Value::deserialize(de).map_err(|e| {
                let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
                InputError::Syntax {
                    path: display.clone(),
                    line,
                    column,
                    reason: strip_location(&e.to_string()),
                }
            })?;
            docs.push(v);
        }
    }
    let mut out = Vec::new();
    for d in docs {
        match d {
            Value::Null => {}
            Value::Object(ref o) if o.get("kind").and_then(Value::as_str) == Some("List") => {
                out.extend(
                    o.get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

fn is_input(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
}

/// Expands files and directories (recursively, sorted) into input files.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| InputError::Read {
            path: p.display().to_string(),
            source,
        })?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|source| InputError::Read {
                    path: p.display().to_string(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            let (dirs, files): (Vec<_>, Vec<_>) = entries.into_iter().partition(|e| e.is_dir());
            out.extend(files.into_iter().filter(|f| is_input(f)));
            out.extend(collect_files(&dirs)?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn read_documents(path: &Path) -> Result<Vec<Value>, InputError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_documents(path, &text)
}

fn str_at<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a str> {
    crate::admission::get_str(v, keys)
}

/// One admission message on one line: upstream built a few messages with line breaks (the
/// kdconfig namespace one ends in `\n`), and the webhook envelope puts one before everything.
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// All messages of a rejection on one line, separated by `; `.
fn joined(messages: &[String]) -> String {
    messages
        .iter()
        .map(|m| one_line(m))
        .collect::<Vec<_>>()
        .join("; ")
}

fn label(doc: &Value) -> String {
    format!(
        "{}/{}",
        str_at(doc, &["kind"]).unwrap_or("<no kind>"),
        str_at(doc, &["metadata", "name"]).unwrap_or("<no name>")
    )
}

/// One validation run.
struct Run<'a> {
    args: &'a ValidateArgs,
    facts: OfflineFacts,
    entropy: OsEntropy,
}

/// Outcome of admitting one document.
enum Outcome {
    Accepted {
        stored: Value,
        notes: Vec<String>,
    },
    Rejected {
        messages: Vec<String>,
        notes: Vec<String>,
    },
    Skipped(String),
}

impl Run<'_> {
    fn admit(&self, doc: &Value) -> Outcome {
        if !doc.is_object() {
            let what = match doc {
                Value::Array(_) => "a list",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "empty",
            };
            return Outcome::Skipped(format!("not a Kubernetes object ({what})"));
        }
        let kind = str_at(doc, &["kind"]).unwrap_or_default();
        let kd_kinds = ["KubeDirectorApp", "KubeDirectorCluster", "KubeDirectorConfig"];
        if kind == "KubeDirectorStatusBackup" {
            return Outcome::Skipped("no admission rules cover this kind".into());
        }
        if !kd_kinds.contains(&kind) && kind != "PersistentVolumeClaim" {
            return Outcome::Skipped("not a KubeDirector resource".into());
        }
        let api_version = str_at(doc, &["apiVersion"]).unwrap_or_default();
        if kd_kinds.contains(&kind) && api_version != "kubedirector.hpe.com/v1beta1" {
            return Outcome::Rejected {
                messages: vec![format!(
                    "apiVersion {api_version:?} is not served; use \"kubedirector.hpe.com/v1beta1\""
                )],
                notes: Vec::new(),
            };
        }
        let namespace = str_at(doc, &["metadata", "namespace"])
            .map(str::to_string)
            .unwrap_or_else(|| {
                if kind == "KubeDirectorConfig" {
                    self.args.kd_namespace.clone()
                } else {
                    self.args.namespace.clone()
                }
            });
        let mut doc = doc.clone();
        if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.entry("namespace")
                .or_insert_with(|| Value::String(namespace.clone()));
        }
        let ctx = AdmissionContext {
            facts: &self.facts,
            kd_namespace: Some(self.args.kd_namespace.clone()),
            namespace: namespace.clone(),
            name: str_at(&doc, &["metadata", "name"])
                .unwrap_or_default()
                .to_string(),
            user: UserInfo {
                username: "kubedirector-validate".into(),
                ..UserInfo::default()
            },
            entropy: &self.entropy,
        };
        let verdict: Verdict = admit(kind, Operation::Create, None, Some(&doc), &ctx);
        if !verdict.allowed {
            return Outcome::Rejected {
                messages: verdict.messages,
                notes: verdict.notes,
            };
        }
        let mut stored = doc;
        if let Err(e) = json_patch::patch(&mut stored, &verdict.patch) {
            return Outcome::Rejected {
                messages: vec![format!(
                    "internal error: the webhook's own patch does not apply: {e}"
                )],
                notes: verdict.notes,
            };
        }
        let name = str_at(&stored, &["metadata", "name"])
            .unwrap_or_default()
            .to_string();
        match kind {
            "KubeDirectorApp" => {
                self.facts
                    .apps
                    .borrow_mut()
                    .insert(key(&namespace, &name), stored.clone());
            }
            "KubeDirectorCluster" => {
                self.facts
                    .clusters
                    .borrow_mut()
                    .insert(key(&namespace, &name), stored.clone());
            }
            "KubeDirectorConfig" => {
                *self.facts.kd_config.borrow_mut() = Some(stored.clone());
            }
            _ => {}
        }
        Outcome::Accepted {
            stored,
            notes: verdict.notes,
        }
    }
}

fn emit(out: &mut dyn Write, line: &str) {
    // A closed stdout (e.g. `| head`) is not worth a panic or an error exit.
    let _ = writeln!(out, "{line}");
}

/// Runs `kubedirector validate`; returns the exit status.
pub fn run(args: &ValidateArgs, stdout: &mut dyn Write, stderr: &mut dyn Write) -> u8 {
    let mut status = EXIT_OK;
    let explicit_storage = !args.storage_classes.is_empty() || args.default_storage_class.is_some();
    let mut classes: BTreeSet<String> = args.storage_classes.iter().cloned().collect();
    classes.extend(args.default_storage_class.clone());
    let run = Run {
        args,
        facts: OfflineFacts {
            storage_classes: classes,
            default_storage_class: args.default_storage_class.clone(),
            storage_known: explicit_storage,
            ..OfflineFacts::default()
        },
        entropy: OsEntropy,
    };
    // status lines go to stderr when stdout carries the YAML stream
    let mut buffered_yaml: Vec<String> = Vec::new();

    // kdconfig first, then the catalog
    let mut preload = Vec::new();
    if let Some(cfg) = &args.config {
        preload.push(("config", cfg.clone()));
    }
    for c in &args.catalog {
        preload.push(("catalog", c.clone()));
    }
    for (what, path) in preload {
        let files = match collect_files(std::slice::from_ref(&path)) {
            Ok(f) => f,
            Err(e) => {
                emit(stderr, &e.to_string());
                status = EXIT_INPUT;
                continue;
            }
        };
        for file in files {
            match read_documents(&file) {
                Err(e) => {
                    emit(stderr, &e.to_string());
                    status = EXIT_INPUT;
                }
                Ok(docs) => {
                    for doc in docs {
                        let kind = str_at(&doc, &["kind"]).unwrap_or_default();
                        let wanted = if what == "config" {
                            "KubeDirectorConfig"
                        } else {
                            "KubeDirectorApp"
                        };
                        if kind != wanted {
                            continue;
                        }
                        if let Outcome::Rejected { messages, .. } = run.admit(&doc) {
                            emit(
                                stderr,
                                &format!(
                                    "error: {}: {what} document {} rejected: {}",
                                    file.display(),
                                    label(&doc),
                                    joined(&messages)
                                ),
                            );
                            status = EXIT_INPUT;
                        }
                    }
                }
            }
        }
    }

    let files = match collect_files(&args.files) {
        Ok(f) => f,
        Err(e) => {
            emit(stderr, &e.to_string());
            return EXIT_INPUT;
        }
    };
    for file in files {
        let docs = match read_documents(&file) {
            Ok(d) => d,
            Err(e) => {
                emit(stderr, &e.to_string());
                status = EXIT_INPUT;
                continue;
            }
        };
        if docs.is_empty() {
            let sink: &mut dyn Write = if args.print_mutated {
                &mut *stderr
            } else {
                &mut *stdout
            };
            emit(sink, &format!("skipped {}: no documents", file.display()));
        }
        for doc in docs {
            let what = label(&doc);
            let mut lines = Vec::new();
            match run.admit(&doc) {
                Outcome::Accepted { stored, notes } => {
                    lines.push(format!("ok {what}"));
                    lines.extend(notes.iter().map(|n| format!("note {what}: {n}")));
                    if args.print_mutated {
                        match serde_yaml::to_string(&stored) {
                            Ok(y) => buffered_yaml.push(y),
                            Err(e) => lines.push(format!("note {what}: cannot render as YAML: {e}")),
                        }
                    }
                }
                Outcome::Rejected { messages, notes } => {
                    lines.push(format!("rejected {what}: {}", joined(&messages)));
                    lines.extend(notes.iter().map(|n| format!("note {what}: {n}")));
                    if status == EXIT_OK {
                        status = EXIT_REJECTED;
                    }
                }
                Outcome::Skipped(why) => lines.push(format!("skipped {what}: {why}")),
            }
            let sink: &mut dyn Write = if args.print_mutated {
                &mut *stderr
            } else {
                &mut *stdout
            };
            for l in lines {
                emit(sink, &l);
            }
            if args.print_mutated {
                for y in buffered_yaml.drain(..) {
                    emit(stdout, &format!("---\n{}", y.trim_end()));
                }
            }
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_syntax_errors_carry_a_location() {
        let err = parse_documents(Path::new("x.yaml"), "a: 1\nb: [\n").unwrap_err();
        match err {
            InputError::Syntax {
                line, column, reason, ..
            } => {
                assert!(line >= 2, "line {line}");
                assert!(column >= 1);
                assert!(!reason.contains(" at line "), "{reason}");
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn json_syntax_errors_carry_a_location() {
        let err = parse_documents(Path::new("x.json"), "{\n  \"a\": ,\n}").unwrap_err();
        assert!(
            err.to_string().starts_with("error: x.json:2:8: expected value"),
            "{err}"
        );
    }

    #[test]
    fn messages_are_put_on_one_line() {
        assert_eq!(
            joined(&[
                "Invalid namespace 'x', must be 'y'.\n".to_string(),
                "\nfirst\nsecond ".to_string()
            ]),
            "Invalid namespace 'x', must be 'y'.; first second"
        );
    }

    #[test]
    fn multi_document_yaml_and_lists_are_split() {
        let docs = parse_documents(
            Path::new("x.yaml"),
            "---\nkind: A\n---\n---\nkind: List\nitems:\n- kind: B\n- kind: C\n",
        )
        .unwrap();
        let kinds: Vec<_> = docs
            .iter()
            .map(|d| d["kind"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(kinds, ["A", "B", "C"]);
    }
}
