//! `kubectl kd status`: a kdcluster as a tree, like `kubectl tree`:
//!
//! ```text
//! KubeDirectorCluster/web   configured    app kd-webstack, 3 members (3 configured)
//! ├─Role/controller         1 member
//! │ └─Member/kdss-ab-0      configured
//! └─Role/worker             2 members
//!   ├─Member/kdss-cd-0      configured    1 notification pending: --addnodes --nodegroup 1 ...
//!   └─Member/kdss-cd-1      config error  execution of app config failed: ... exit status {3}
//!                                         stderr: listen failed: port 7000 in use
//! ```

use std::io::Write;

use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use kube::Client;
use kubedirector_crds::KubeDirectorCluster;
use serde_json::Value;

/// Lines of the stderr tail shown under a member in `config error`.
const STDERR_LINES: usize = 5;

/// Prints the tree of `cluster` (or of every cluster in `ns`); 1 when the cluster does not exist.
pub async fn run(
    client: &Client,
    ns: &str,
    cluster: Option<&str>,
    out: &mut dyn Write,
) -> Result<u8, String> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<KubeDirectorCluster>(&()),
    );
    let objs = match cluster {
        Some(name) => match api.get_opt(name).await {
            Ok(Some(o)) => vec![o],
            Ok(None) => return Err(format!("kdcluster {name} not found in namespace {ns}")),
            Err(e) => return Err(format!("cannot read kdcluster {name}: {e}")),
        },
        None => {
            api.list(&Default::default())
                .await
                .map_err(|e| format!("cannot list kdclusters in namespace {ns}: {e}"))?
                .items
        }
    };
    if objs.is_empty() {
        let _ = writeln!(out, "no kdclusters in namespace {ns}");
        return Ok(0);
    }
    for (i, o) in objs.iter().enumerate() {
        if i > 0 {
            let _ = writeln!(out);
        }
        let name = o.metadata.name.as_deref().unwrap_or("?");
        let _ = write!(out, "{}", render(name, &o.data));
    }
    Ok(0)
}

/// One line of the tree before alignment: prefix + object, state, detail lines.
struct Node {
    head: String,
    state: String,
    details: Vec<String>,
}

fn members_of(role: &Value) -> Vec<&Value> {
    role["members"].as_array().into_iter().flatten().collect()
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The tree of one kdcluster (`spec` and `status` of the object), aligned in columns.
pub fn render(name: &str, obj: &Value) -> String {
    let status = &obj["status"];
    let roles: Vec<&Value> = status["roles"].as_array().into_iter().flatten().collect();
    let all: Vec<&Value> = roles.iter().flat_map(|r| members_of(r)).collect();
    let configured = all.iter().filter(|m| m["state"] == "configured").count();
    let errors = all.iter().filter(|m| m["state"] == "config error").count();
    let mut summary = format!(
        "app {}, {} ({configured} configured",
        obj["spec"]["app"].as_str().unwrap_or("?"),
        plural(all.len(), "member")
    );
    if errors > 0 {
        summary.push_str(&format!(", {errors} in config error"));
    }
    summary.push(')');
    if status["memberStateRollup"]["membersDown"] == true {
        summary.push_str(", members down");
    }
    let mut nodes = vec![Node {
        head: format!("KubeDirectorCluster/{name}"),
        state: status["state"].as_str().unwrap_or("<none>").to_string(),
        details: vec![summary],
    }];
    // Roles of the spec that have no status yet are shown too (nothing created for them yet).
    let mut role_ids: Vec<String> = roles
        .iter()
        .filter_map(|r| r["id"].as_str().map(String::from))
        .collect();
    for r in obj["spec"]["roles"].as_array().into_iter().flatten() {
        if let Some(id) = r["id"].as_str() {
            if !role_ids.iter().any(|x| x == id) {
                role_ids.push(id.to_string());
            }
        }
    }
    for (ri, id) in role_ids.iter().enumerate() {
        let last_role = ri + 1 == role_ids.len();
        let (branch, cont) = if last_role {
            ("└─", "  ")
        } else {
            ("├─", "│ ")
        };
        let role = roles.iter().find(|r| r["id"] == id.as_str());
        let members = role.map(|r| members_of(r)).unwrap_or_default();
        let wanted = obj["spec"]["roles"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["id"] == id.as_str())
            .map(|r| r["members"].as_u64().unwrap_or(1));
        let mut detail = plural(members.len(), "member");
        if let Some(w) = wanted.filter(|w| usize::try_from(*w).ok() != Some(members.len())) {
            detail.push_str(&format!(" (spec: {w})"));
        }
        if let Some(ss) = role.and_then(|r| r["statefulSet"].as_str()) {
            detail.push_str(&format!(", statefulset {ss}"));
        }
        nodes.push(Node {
            head: format!("{branch}Role/{id}"),
            state: String::new(),
            details: vec![detail],
        });
        for (mi, m) in members.iter().enumerate() {
            let mb = if mi + 1 == members.len() {
                "└─"
            } else {
                "├─"
            };
            nodes.push(member_node(&format!("{cont}{mb}"), m));
        }
    }
    align(&nodes)
}

fn member_node(prefix: &str, m: &Value) -> Node {
    let d = &m["stateDetail"];
    let mut details = Vec::new();
    if let Some(e) = d["configErrorDetail"].as_str() {
        details.push(e.to_string());
        if let Some(err) = d["startScriptStderrMessage"].as_str() {
            let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
            for l in &lines[lines.len().saturating_sub(STDERR_LINES)..] {
                details.push(format!("stderr: {l}"));
            }
        }
    }
    if let Some(s) = d["schedulingErrorMessage"].as_str() {
        details.push(format!("scheduling: {s}"));
    }
    let pending: Vec<String> = d["pendingNotifyCmds"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            c["arguments"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    if !pending.is_empty() {
        details.push(format!("{} pending:", plural(pending.len(), "notification")));
        details.extend(pending.into_iter().map(|p| format!("  {p}")));
    }
    if details.is_empty() {
        details.push(String::new());
    }
    Node {
        head: format!("{prefix}Member/{}", m["pod"].as_str().unwrap_or("?")),
        state: m["state"].as_str().unwrap_or("<none>").to_string(),
        details,
    }
}

fn align(nodes: &[Node]) -> String {
    let w1 = nodes.iter().map(|n| n.head.chars().count()).max().unwrap_or(0) + 2;
    let w2 = nodes.iter().map(|n| n.state.len()).max().unwrap_or(0).max(5) + 2;
    let mut out = String::new();
    for n in nodes {
        let pad1 = w1 - n.head.chars().count();
        for (i, d) in n.details.iter().enumerate() {
            let line = if i == 0 {
                format!("{}{}{:<w2$}{d}", n.head, " ".repeat(pad1), n.state)
            } else {
                format!("{}{d}", " ".repeat(w1 + w2))
            };
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster() -> Value {
        json!({
            "spec": {"app": "kdtest", "roles": [{"id": "head", "members": 1}, {"id": "worker", "members": 2}]},
            "status": {"state": "configured", "memberStateRollup": {"membersDown": false}, "roles": [
                {"id": "head", "statefulSet": "kdss-ab", "members": [{"pod": "kdss-ab-0", "state": "configured",
                    "stateDetail": {"pendingNotifyCmds": [{"arguments": ["--addnodes", "--nodegroup 1", "--role", "worker"]}]}}]},
                {"id": "worker", "statefulSet": "kdss-cd", "members": [
                    {"pod": "kdss-cd-0", "state": "configured"},
                    {"pod": "kdss-cd-1", "state": "config error", "stateDetail": {
                        "configErrorDetail": "execution of app config failed: configure failed with exit status {3}",
                        "startScriptStderrMessage": "one\ntwo\nthree\nfour\nfive\nlisten failed: port 7000 in use\n"}}
                ]}
            ]}
        })
    }

    #[test]
    fn the_tree_shows_roles_members_states_notifications_and_the_stderr_tail() {
        let t = render("web", &cluster());
        let want = "\
KubeDirectorCluster/web  configured    app kdtest, 3 members (2 configured, 1 in config error)
├─Role/head                            1 member, statefulset kdss-ab
│ └─Member/kdss-ab-0     configured    1 notification pending:
                                         --addnodes --nodegroup 1 --role worker
└─Role/worker                          2 members, statefulset kdss-cd
  ├─Member/kdss-cd-0     configured
  └─Member/kdss-cd-1     config error  execution of app config failed: configure failed with exit status {3}
                                       stderr: two
                                       stderr: three
                                       stderr: four
                                       stderr: five
                                       stderr: listen failed: port 7000 in use
";
        assert_eq!(t, want, "got:\n{t}");
    }

    #[test]
    fn a_cluster_without_status_shows_its_spec_roles() {
        let obj = json!({"spec": {"app": "kdtest", "roles": [{"id": "head"}]}});
        let t = render("new", &obj);
        assert!(t.starts_with("KubeDirectorCluster/new  <none>"), "{t}");
        assert!(
            t.contains("└─Role/head") && t.contains("0 members (spec: 1)"),
            "{t}"
        );
    }
}
