//! What the demo shows: one [`Row`] per cluster, read from its status, rendered either as the plain
//! table (`kubectl get kdcluster`-like, printed whenever it changes; for pipes and logs) or as a
//! live frame of progress bars redrawn in place with ANSI cursor movement (for terminals).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

/// One cluster as the demo shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Row {
    /// The cluster's app (`spec.app`).
    pub app: String,
    /// `status.state`.
    pub state: String,
    /// Members in state `configured`.
    pub configured: usize,
    /// All members in the status.
    pub total: usize,
    /// `status.memberStateRollup.membersDown`.
    pub any_down: bool,
    /// The first member in `config error`: `pod: detail` plus the last line of its stderr tail.
    pub config_error: Option<String>,
    /// Queued startscript notifications, `(pod, arguments)`, in member order.
    pub pending: Vec<(String, String)>,
}

impl Row {
    /// Reads a kdcluster object (`spec.app`, `status`).
    pub fn from_cluster(obj: &Value) -> Row {
        let status = &obj["status"];
        let members: Vec<&Value> = status["roles"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["members"].as_array().into_iter().flatten())
            .collect();
        let config_error = members.iter().find(|m| m["state"] == "config error").map(|m| {
            let detail = &m["stateDetail"];
            let mut s = format!(
                "{}: {}",
                m["pod"].as_str().unwrap_or("?"),
                detail["configErrorDetail"].as_str().unwrap_or("config error")
            );
            if let Some(line) = detail["startScriptStderrMessage"]
                .as_str()
                .and_then(|e| e.lines().rev().find(|l| !l.trim().is_empty()))
            {
                let _ = write!(s, " (stderr: {})", line.trim());
            }
            s
        });
        let pending = members
            .iter()
            .flat_map(|m| {
                let pod = m["pod"].as_str().unwrap_or("?").to_string();
                m["stateDetail"]["pendingNotifyCmds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(move |c| (pod.clone(), join_args(&c["arguments"])))
            })
            .collect();
        Row {
            app: obj["spec"]["app"].as_str().unwrap_or("").to_string(),
            state: status["state"].as_str().unwrap_or("").to_string(),
            configured: members.iter().filter(|m| m["state"] == "configured").count(),
            total: members.len(),
            any_down: status["memberStateRollup"]["membersDown"]
                .as_bool()
                .unwrap_or(false),
            config_error,
            pending,
        }
    }

    /// Configured, with exactly `members` members, all configured.
    pub fn settled_at(&self, members: usize) -> bool {
        self.state == "configured" && self.total == members && self.configured == members
    }

    /// What the plain table compares: the columns it prints.
    fn columns(&self) -> (&str, usize, usize, bool) {
        (&self.state, self.configured, self.total, self.any_down)
    }
}

fn join_args(args: &Value) -> String {
    args.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether the plain table would print differently for `a` and `b`.
pub fn table_differs(a: &BTreeMap<String, Row>, b: &BTreeMap<String, Row>) -> bool {
    a.len() != b.len()
        || a.iter()
            .zip(b)
            .any(|((na, ra), (nb, rb))| na != nb || ra.columns() != rb.columns())
}

/// The plain table (`NAME STATE MEMBERS ANY DOWN`).
pub fn table(rows: &BTreeMap<String, Row>) -> String {
    let width = rows.keys().map(String::len).max().unwrap_or(0).max(4) + 2;
    let mut out = format!("{:<width$}{:<16}{:<10}{}", "NAME", "STATE", "MEMBERS", "ANY DOWN");
    for (name, r) in rows {
        let state = if r.state.is_empty() { "<none>" } else { &r.state };
        let _ = write!(
            out,
            "\n{:<width$}{:<16}{:<10}{}",
            name,
            state,
            format!("{}/{}", r.configured, r.total),
            r.any_down
        );
    }
    out
}

/// Width of a progress bar, in cells.
const BAR: usize = 24;

/// Longest line of the live frame (longer ones are cut, so that a line never wraps and the cursor
/// movement stays exact on ordinary terminals).
const MAX_LINE: usize = 118;

/// The live frame: one progress bar per cluster, then the recent events (at most `events` lines,
/// newest last). `elapsed` gives each cluster's time since it was created (frozen once configured).
pub fn frame(
    rows: &BTreeMap<String, Row>,
    elapsed: &BTreeMap<String, Duration>,
    events: &[String],
    max_events: usize,
) -> Vec<String> {
    let name_w = rows.keys().map(String::len).max().unwrap_or(0).max(7);
    let app_w = rows.values().map(|r| r.app.len()).max().unwrap_or(0).max(3);
    let mut lines = Vec::with_capacity(rows.len() + max_events + 1);
    for (name, r) in rows {
        let filled = (r.configured * BAR).checked_div(r.total).unwrap_or(0);
        let bar: String = "#".repeat(filled) + &"-".repeat(BAR - filled);
        let state = if r.state.is_empty() { "<none>" } else { &r.state };
        let secs = elapsed.get(name).map_or(0, Duration::as_secs);
        let mut line = format!(
            "{name:<name_w$}  {app:<app_w$}  [{bar}] {c:>2}/{t:<2} {state:<14} {secs:>4}s",
            app = r.app,
            c = r.configured,
            t = r.total,
        );
        if let Some(err) = &r.config_error {
            let _ = write!(line, "  {err}");
        } else if !r.pending.is_empty() {
            let _ = write!(line, "  {} notification(s) pending", r.pending.len());
        }
        lines.push(cut(&line));
    }
    let shown = events.len().saturating_sub(max_events);
    lines.push(format!("recent events ({}):", events.len()));
    for e in &events[shown..] {
        lines.push(cut(&format!("  {e}")));
    }
    lines
}

fn cut(line: &str) -> String {
    match line.char_indices().nth(MAX_LINE) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

/// The bytes that replace a previously drawn frame of `previous` lines with `lines`, after first
/// printing `log` (lines that scroll away above the frame): cursor up over the old frame, then
/// every line cleared (`ESC[2K`) and rewritten. Stale lines of a longer old frame are cleared too.
pub fn redraw(previous: usize, log: &[String], lines: &[String]) -> String {
    let mut out = String::new();
    if previous > 0 {
        let _ = write!(out, "\x1b[{previous}A");
    }
    let mut written = 0;
    for l in log.iter().chain(lines) {
        let _ = write!(out, "\r\x1b[2K{l}\n");
        written += 1;
    }
    // A shorter frame than the last one: clear what is left below, then come back up.
    if written < previous {
        let rest = previous - written;
        for _ in 0..rest {
            out.push_str("\r\x1b[2K\n");
        }
        let _ = write!(out, "\x1b[{rest}A");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(state: &str, members: Value) -> Value {
        json!({"spec": {"app": "kd-webstack"}, "status": {
            "state": state,
            "memberStateRollup": {"membersDown": false},
            "roles": [{"id": "worker", "members": members}]
        }})
    }

    #[test]
    fn rows_count_configured_members_and_the_table_lines_up() {
        let obj = cluster(
            "updating",
            json!([{"state": "configured"}, {"state": "configured"}, {"state": "create pending"}]),
        );
        let row = Row::from_cluster(&obj);
        assert_eq!((row.configured, row.total), (2, 3));
        assert_eq!(row.app, "kd-webstack");
        assert!(!row.settled_at(3));
        let rows = BTreeMap::from([("shell-demo-1".to_string(), row)]);
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        assert!(lines[1].contains("updating") && lines[1].contains("2/3"));
        let empty = Row::from_cluster(&Value::Null);
        assert_eq!(empty.total, 0);
        assert!(table(&BTreeMap::from([("x".to_string(), empty)])).contains("<none>"));
    }

    #[test]
    fn a_config_error_names_the_member_its_detail_and_the_last_stderr_line() {
        let obj = cluster(
            "configured",
            json!([{"pod": "kdss-a-0", "state": "config error", "stateDetail": {
                "configErrorDetail": "execution of app config failed: configure failed with exit status {3}",
                "startScriptStderrMessage": "starting\nlisten failed: port 7000 in use\n"
            }}]),
        );
        let row = Row::from_cluster(&obj);
        assert_eq!(
            row.config_error.as_deref(),
            Some("kdss-a-0: execution of app config failed: configure failed with exit status {3} (stderr: listen failed: port 7000 in use)")
        );
    }

    #[test]
    fn pending_notifications_are_listed_per_member() {
        let obj = cluster(
            "updating",
            json!([{"pod": "kdss-a-0", "state": "configured", "stateDetail": {
                "pendingNotifyCmds": [{"arguments": ["--addnodes", "--nodegroup 1", "--role", "worker"]}]
            }}]),
        );
        let row = Row::from_cluster(&obj);
        assert_eq!(
            row.pending,
            vec![(
                "kdss-a-0".to_string(),
                "--addnodes --nodegroup 1 --role worker".to_string()
            )]
        );
    }

    #[test]
    fn the_table_changes_only_with_its_columns() {
        let a = Row::from_cluster(&cluster("updating", json!([{"state": "configured"}])));
        let mut b = a.clone();
        b.pending.push(("p".into(), "--addnodes".into()));
        let m = |r: &Row| BTreeMap::from([("c".to_string(), r.clone())]);
        assert!(!table_differs(&m(&a), &m(&b)));
        b.state = "configured".into();
        assert!(table_differs(&m(&a), &m(&b)));
        assert!(table_differs(&m(&a), &BTreeMap::new()));
    }

    #[test]
    fn the_frame_has_one_bar_per_cluster_and_the_latest_events() {
        let mut half = Row::from_cluster(&cluster(
            "creating",
            json!([{"state": "configured"}, {"state": "creating"}]),
        ));
        half.app = "kd-webstack".into();
        let rows = BTreeMap::from([("webstack-demo".to_string(), half)]);
        let elapsed = BTreeMap::from([("webstack-demo".to_string(), Duration::from_secs(7))]);
        let events: Vec<String> = (1..=5).map(|i| format!("event {i}")).collect();
        let f = frame(&rows, &elapsed, &events, 2);
        assert_eq!(f.len(), 1 + 1 + 2, "{f:?}");
        assert!(
            f[0].starts_with("webstack-demo  kd-webstack  [############------------]  1/2"),
            "{}",
            f[0]
        );
        assert!(f[0].contains("creating") && f[0].ends_with("   7s"), "{}", f[0]);
        assert_eq!(f[1], "recent events (5):");
        assert_eq!(&f[2..], ["  event 4", "  event 5"]);
        let long = frame(&rows, &elapsed, &["x".repeat(500)], 1);
        assert_eq!(long[2].chars().count(), MAX_LINE + 1);
    }

    #[test]
    fn redraw_moves_up_over_the_old_frame_and_clears_every_line() {
        let first = redraw(0, &[], &["a".into(), "b".into()]);
        assert_eq!(first, "\r\x1b[2Ka\n\r\x1b[2Kb\n");
        let second = redraw(2, &["log".into()], &["c".into()]);
        assert_eq!(second, "\x1b[2A\r\x1b[2Klog\n\r\x1b[2Kc\n");
        let shorter = redraw(3, &[], &["d".into()]);
        assert_eq!(shorter, "\x1b[3A\r\x1b[2Kd\n\r\x1b[2K\n\r\x1b[2K\n\x1b[2A");
    }
}
