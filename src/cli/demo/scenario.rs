//! The demo's scripted scenario: create the example clusters, wait until every one is
//! `configured`, scale `webstack-demo` out by one worker (its other members get `--addnodes`) and
//! back in (`--delnodes`), showing progress all along.
//!
//! The clusters are watched (every status write is seen, so a queued notification is shown even when
//! it is delivered within the same second); Events are listed on every tick.

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use kubedirector_crds::KubeDirectorCluster;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::view::{self, Row};
use super::{say, NS, SHELL_CLUSTER, WEBSTACK_CLUSTER};

/// The cluster with a setup package that the scenario scales.
pub const WEBSTACK: &str = "webstack-demo";

/// The role of [`WEBSTACK`] that is scaled.
const SCALE_ROLE: &str = "worker";

/// How often the display is refreshed and the Events are listed.
const TICK: Duration = Duration::from_millis(500);

/// Pause between the scenario's steps in interactive runs.
const STEP_PAUSE: Duration = Duration::from_secs(5);

/// Recent events shown under the progress bars.
const EVENT_LINES: usize = 4;

/// One cluster the demo creates.
#[derive(Debug, Clone)]
pub struct DemoCluster {
    /// Its name.
    pub name: String,
    /// The object to create.
    pub object: Value,
    /// Members over all roles, as created.
    pub members: usize,
}

/// Members over all roles of a kdcluster object (a role without `members` has one).
fn total_members(obj: &Value) -> usize {
    obj["spec"]["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            r["members"]
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(1)
        })
        .sum()
}

/// `shell-demo-1 .. shell-demo-<shell>` and `webstack-demo`, from the example cluster files.
///
/// # Errors
/// When an embedded example does not parse.
pub fn clusters(shell: u32) -> Result<Vec<DemoCluster>, String> {
    let parse = |file: &str, text: &str| -> Result<Value, String> {
        serde_yaml::from_str(text).map_err(|e| format!("example cluster {file}: {e}"))
    };
    let shell_t = parse("shell.yaml", SHELL_CLUSTER)?;
    let web_t = parse("webstack.yaml", WEBSTACK_CLUSTER)?;
    let named = |t: &Value, name: String| {
        let mut object = t.clone();
        object["metadata"]["name"] = json!(name);
        DemoCluster {
            members: total_members(&object),
            name,
            object,
        }
    };
    let mut out: Vec<DemoCluster> = (1..=shell)
        .map(|i| named(&shell_t, format!("shell-demo-{i}")))
        .collect();
    out.push(named(&web_t, WEBSTACK.to_string()));
    Ok(out)
}

/// Where the scripted scenario is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for every cluster to be configured.
    Creating,
    /// Waiting for `webstack-demo` to be configured at `n` members after scaling out.
    ScalingUp(usize),
    /// Waiting for `webstack-demo` to be configured at `n` members after scaling in.
    ScalingDown(usize),
    /// Done; the demo keeps running until interrupted (or ends, in scripted runs).
    Complete,
}

/// stdout: live frame on a terminal, plain lines otherwise.
struct Screen {
    tty: bool,
    /// Lines of the frame currently on the terminal.
    drawn: usize,
    frame: Vec<String>,
    table: BTreeMap<String, Row>,
    events: Vec<String>,
}

fn write_out(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

impl Screen {
    /// A line that stays (above the frame on a terminal).
    fn log(&mut self, line: String) {
        if self.tty {
            write_out(&view::redraw(self.drawn, &[line], &self.frame));
            self.drawn = self.frame.len();
        } else {
            say(&line);
        }
    }

    /// An event line (the frame's recent events on a terminal).
    fn event(&mut self, line: String) {
        if self.tty {
            self.events.push(line);
        } else {
            say(&line);
        }
    }

    fn show(&mut self, rows: &BTreeMap<String, Row>, elapsed: &BTreeMap<String, Duration>, t: u64) {
        if self.tty {
            let frame = view::frame(rows, elapsed, &self.events, EVENT_LINES);
            if frame != self.frame {
                write_out(&view::redraw(self.drawn, &[], &frame));
                self.drawn = frame.len();
                self.frame = frame;
            }
        } else if view::table_differs(rows, &self.table) {
            say(&format!("--- t+{t}s"));
            say(&view::table(rows));
            self.table = rows.clone();
        }
    }
}

/// Per-cluster elapsed time: since creation (or the last scaling step), frozen once settled.
#[derive(Default)]
struct Clock {
    since: BTreeMap<String, Instant>,
    frozen: BTreeMap<String, Duration>,
}

impl Clock {
    fn restart(&mut self, name: &str) {
        self.since.insert(name.to_string(), Instant::now());
        self.frozen.remove(name);
    }

    fn elapsed(&mut self, rows: &BTreeMap<String, Row>) -> BTreeMap<String, Duration> {
        let now = Instant::now();
        for (name, row) in rows {
            let settled = row.state == "configured" && row.configured == row.total;
            if settled && !self.frozen.contains_key(name) {
                if let Some(t) = self.since.get(name) {
                    self.frozen.insert(name.clone(), now - *t);
                }
            }
        }
        self.since
            .iter()
            .map(|(n, t)| (n.clone(), self.frozen.get(n).copied().unwrap_or(now - *t)))
            .collect()
    }
}

/// Watches clusters and events and drives the scenario, until a signal, the operator's end, or (in
/// scripted runs, `deadline_secs` given) the scenario's completion, a config error or the deadline.
pub async fn run(
    client: &Client,
    clusters: &[DemoCluster],
    deadline_secs: Option<u64>,
    operator: &std::thread::JoinHandle<anyhow::Result<()>>,
) -> Result<(), String> {
    let start = Instant::now();
    let deadline = deadline_secs.map(|s| start + Duration::from_secs(s));
    let mut signal = std::pin::pin!(crate::signals::shutdown_signal());
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &ApiResource::erase::<KubeDirectorCluster>(&()),
    );
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let mut screen = Screen {
        tty: std::io::stdout().is_terminal(),
        drawn: 0,
        frame: Vec::new(),
        table: BTreeMap::new(),
        events: Vec::new(),
    };
    let mut clock = Clock::default();
    let mut stream = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();

    for c in clusters {
        let obj: DynamicObject = serde_json::from_value(c.object.clone())
            .map_err(|e| format!("example cluster {}: {e}", c.name))?;
        api.create(&PostParams::default(), &obj)
            .await
            .map_err(|e| format!("cannot create kdcluster {}: {e}", c.name))?;
        clock.restart(&c.name);
        screen.log(format!(
            "demo: created kdcluster {} ({} members of {})",
            c.name,
            c.members,
            c.object["spec"]["app"].as_str().unwrap_or("?")
        ));
    }
    let web = clusters
        .iter()
        .find(|c| c.name == WEBSTACK)
        .ok_or("no webstack cluster to scale")?;

    // Interactive runs pause between steps so that each state can be seen (and inspected with
    // kubectl); scripted runs go straight on.
    let pause = if deadline.is_some() {
        Duration::ZERO
    } else {
        STEP_PAUSE
    };
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut settled_since: Option<Instant> = None;
    let mut stage = Stage::Creating;
    let mut configured_once: HashSet<String> = HashSet::new();
    let mut seen_events: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // Signal first, then the deadline: a step is never started once either is due.
            biased;
            () = &mut signal => {
                screen.log("demo: interrupted; shutting down".into());
                return Ok(());
            }
            () = until_deadline => {
                return Err(format!(
                    "the scenario did not complete within {} s (stage: {stage:?}): {}",
                    deadline_secs.unwrap_or(0),
                    why_not_configured(clusters, &rows)
                ));
            }
            _ = tick.tick() => {}
            ev = stream.next() => {
                if let Some(Ok(ev)) = ev {
                    apply_watch(ev, &mut rows, &mut screen);
                }
                continue;
            }
        }
        if operator.is_finished() {
            return Err("the operator stopped unexpectedly".into());
        }
        show_events(&events, &mut seen_events, &mut screen).await?;
        for (name, row) in &rows {
            if row.state == "configured" && configured_once.insert(name.clone()) {
                screen.log(format!(
                    "demo: {name} is configured ({}/{} members)",
                    row.configured, row.total
                ));
            }
        }
        let elapsed = clock.elapsed(&rows);
        screen.show(&rows, &elapsed, start.elapsed().as_secs());

        if deadline.is_some() {
            if let Some((name, row)) = rows.iter().find(|(_, r)| r.config_error.is_some()) {
                return Err(format!(
                    "kdcluster {name} is {} ({}/{} members configured); config error in member {}",
                    or_none(&row.state),
                    row.configured,
                    row.total,
                    row.config_error.as_deref().unwrap_or("?")
                ));
            }
        }

        // The scripted steps: each one starts `pause` after the previous one settled.
        let settled = |name: &str, n: usize| rows.get(name).is_some_and(|r| r.settled_at(n));
        let now = Instant::now();
        let done = match stage {
            Stage::Creating => clusters.iter().all(|c| settled(&c.name, c.members)),
            Stage::ScalingUp(n) | Stage::ScalingDown(n) => settled(WEBSTACK, n),
            Stage::Complete => false,
        };
        settled_since = if done { settled_since.or(Some(now)) } else { None };
        if settled_since == Some(now) {
            if let Some(line) = settled_line(stage, clusters.len()) {
                screen.log(line);
            }
        }
        if settled_since.is_none_or(|t| now < t + pause) {
            continue;
        }
        settled_since = None;
        match stage {
            Stage::Creating => {
                let to = web.members + 1;
                screen.log(format!(
                    "demo: scaling {WEBSTACK} out by 1 {SCALE_ROLE} ({} -> {to} members); the others get --addnodes",
                    web.members
                ));
                scale(&api, WEBSTACK, 1).await?;
                clock.restart(WEBSTACK);
                stage = Stage::ScalingUp(to);
            }
            Stage::ScalingUp(n) => {
                let to = n - 1;
                screen.log(format!(
                    "demo: scaling {WEBSTACK} in by 1 {SCALE_ROLE} ({n} -> {to} members); the others get --delnodes"
                ));
                scale(&api, WEBSTACK, -1).await?;
                clock.restart(WEBSTACK);
                stage = Stage::ScalingDown(to);
            }
            Stage::ScalingDown(_) => {
                stage = Stage::Complete;
                if deadline.is_some() {
                    screen.log("demo: scenario complete; every cluster is configured; shutting down".into());
                    return Ok(());
                }
                screen.log("demo: scenario complete; everything keeps running (Ctrl-C to stop)".into());
            }
            Stage::Complete => {}
        }
    }
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "<none>"
    } else {
        s
    }
}

/// A watch event into `rows`; queued and delivered notifications become event lines.
fn apply_watch(ev: watcher::Event<DynamicObject>, rows: &mut BTreeMap<String, Row>, screen: &mut Screen) {
    let obj = match ev {
        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => o,
        watcher::Event::Delete(o) => {
            if let Some(name) = &o.metadata.name {
                rows.remove(name);
            }
            return;
        }
        watcher::Event::Init | watcher::Event::InitDone => return,
    };
    let Some(name) = obj.metadata.name.clone() else {
        return;
    };
    let row = Row::from_cluster(&obj.data);
    let old = rows.get(&name).map(|r| r.pending.clone()).unwrap_or_default();
    for (pod, args) in &row.pending {
        if !old.iter().any(|(p, a)| p == pod && a == args) {
            screen.event(format!("notify {name}/{pod}: startscript {args} queued"));
        }
    }
    for (pod, args) in &old {
        if !row.pending.iter().any(|(p, a)| p == pod && a == args) {
            screen.event(format!("notify {name}/{pod}: startscript {args} done"));
        }
    }
    rows.insert(name, row);
}

/// Notable Events not shown yet: everything about kdclusters, and every warning.
async fn show_events(
    api: &Api<Event>,
    seen: &mut HashSet<String>,
    screen: &mut Screen,
) -> Result<(), String> {
    let mut evs = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("cannot list events: {e}"))?
        .items;
    // Creation order: timestamps have one-second precision; resource versions break ties.
    evs.sort_by_key(|e: &Event| {
        let rv = e.metadata.resource_version.as_deref().unwrap_or("");
        (
            e.metadata.creation_timestamp.clone(),
            rv.parse::<u64>().unwrap_or(0),
        )
    });
    for ev in evs {
        let kind = ev.involved_object.kind.as_deref().unwrap_or("");
        let warning = ev.type_.as_deref() == Some("Warning");
        if kind != "KubeDirectorCluster" && !warning {
            continue;
        }
        // A repeat is folded into the same Event with a higher count (issue 13): shown again.
        let id = ev
            .metadata
            .uid
            .clone()
            .or_else(|| ev.metadata.name.clone())
            .unwrap_or_default();
        if !seen.insert(format!("{id}#{}", ev.count.unwrap_or(1))) {
            continue;
        }
        screen.event(format!(
            "event {}/{}: {} {}: {}",
            kind.to_lowercase(),
            ev.involved_object.name.as_deref().unwrap_or(""),
            ev.type_.as_deref().unwrap_or("Normal"),
            ev.reason.as_deref().unwrap_or(""),
            ev.message.as_deref().unwrap_or("").trim()
        ));
    }
    Ok(())
}

/// Why a scripted run is not done: every cluster not configured, with its state and config error.
fn why_not_configured(clusters: &[DemoCluster], rows: &BTreeMap<String, Row>) -> String {
    let parts: Vec<String> = clusters
        .iter()
        .filter_map(|c| match rows.get(&c.name) {
            None => Some(format!("{} has no status yet", c.name)),
            Some(r) if r.state == "configured" && r.configured == r.total => None,
            Some(r) => {
                let mut s = format!(
                    "{} is {} ({}/{} members configured)",
                    c.name,
                    or_none(&r.state),
                    r.configured,
                    r.total
                );
                if let Some(e) = &r.config_error {
                    s.push_str(&format!(", last config error: {e}"));
                }
                Some(s)
            }
        })
        .collect();
    if parts.is_empty() {
        "every cluster is configured but the last step had not settled".into()
    } else {
        parts.join("; ")
    }
}

/// The line announcing that a step of the scenario settled.
fn settled_line(stage: Stage, clusters: usize) -> Option<String> {
    match stage {
        Stage::Creating => Some(format!(
            "demo: all clusters configured ({clusters} of {clusters})"
        )),
        Stage::ScalingUp(n) => Some(format!(
            "demo: scale-out done: {WEBSTACK} is configured with {n} members"
        )),
        Stage::ScalingDown(n) => Some(format!(
            "demo: scale-in done: {WEBSTACK} is configured with {n} members"
        )),
        Stage::Complete => None,
    }
}

/// Changes the member count of [`SCALE_ROLE`] by `by` (merge patch of the whole roles list, the
/// other fields as they are).
async fn scale(api: &Api<DynamicObject>, name: &str, by: i64) -> Result<(), String> {
    let current = api
        .get(name)
        .await
        .map_err(|e| format!("cannot read kdcluster {name}: {e}"))?;
    let mut roles = current.data["spec"]["roles"].clone();
    let role = roles
        .as_array_mut()
        .and_then(|rs| rs.iter_mut().find(|r| r["id"] == SCALE_ROLE))
        .ok_or_else(|| format!("kdcluster {name} has no role {SCALE_ROLE}"))?;
    let now = role["members"].as_i64().unwrap_or(1);
    role["members"] = json!((now + by).max(0));
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"roles": roles}})),
    )
    .await
    .map_err(|e| format!("cannot scale kdcluster {name}: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_creates_shell_clusters_and_one_webstack_cluster_with_a_worker_role() {
        let cs = clusters(2).unwrap();
        let names: Vec<&str> = cs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["shell-demo-1", "shell-demo-2", WEBSTACK]);
        assert_eq!(cs[2].object["spec"]["app"], "kd-webstack");
        assert_eq!(cs[2].members, 3, "controller (1) + 2 workers");
        assert!(cs[2].object["spec"]["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == SCALE_ROLE));
        assert_eq!(cs[0].object["spec"]["app"], "kd-shell");
        assert_eq!(cs[0].object["metadata"]["name"], "shell-demo-1");
    }

    #[test]
    fn a_timeout_names_every_unconfigured_cluster_with_its_state_and_config_error() {
        let cs = clusters(1).unwrap();
        let mut rows = BTreeMap::new();
        rows.insert(
            "shell-demo-1".to_string(),
            Row {
                state: "configured".into(),
                configured: 2,
                total: 2,
                ..Row::default()
            },
        );
        rows.insert(
            WEBSTACK.to_string(),
            Row {
                state: "creating".into(),
                configured: 1,
                total: 3,
                config_error: Some("kdss-w-0: boom".into()),
                ..Row::default()
            },
        );
        assert_eq!(
            why_not_configured(&cs, &rows),
            "webstack-demo is creating (1/3 members configured), last config error: kdss-w-0: boom"
        );
        assert_eq!(
            why_not_configured(&cs, &BTreeMap::new()),
            "shell-demo-1 has no status yet; webstack-demo has no status yet"
        );
    }
}
