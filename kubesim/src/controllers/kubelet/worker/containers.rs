//! Containers of a pod's worker: image pulls, the sandbox spec of a container (env, mounts,
//! DNS), creating and starting it, init containers run to completion, app containers started
//! with their postStart hooks and readiness delay, and restarts.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::super::volumes;
use super::{containers, Cmd, Worker};
use crate::exec::logs;
use crate::sandbox::{ContainerId, ContainerSpec, PodDns, SandboxError};
use crate::store::now_rfc3339;

fn argv(c: &Value) -> Vec<String> {
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let mut v = list(&c["command"]);
    v.extend(list(&c["args"]));
    v
}

impl Worker {
    fn pod_spec_container(&self, field: &str, name: &str) -> Option<Value> {
        self.pod()
            .and_then(|p| containers(&p, field).into_iter().find(|c| c["name"] == name))
    }

    /// Pulls an image (delay + events) unless present on the node under `IfNotPresent`/`Never`.
    async fn pull(&mut self, c: &Value) -> bool {
        let image = c["image"].as_str().unwrap_or("").to_string();
        let policy = c["imagePullPolicy"].as_str().unwrap_or("IfNotPresent");
        let key = (self.node.clone(), image.clone());
        let present = self
            .sh
            .pulled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key);
        if present && policy != "Always" {
            self.event(
                "Normal",
                "Pulled",
                &format!("Container image \"{image}\" already present on machine"),
            );
            return true;
        }
        self.event("Normal", "Pulling", &format!("Pulling image \"{image}\""));
        let delay = self.sh.config.image_pull_delay;
        if !self.sleep(delay).await {
            return false;
        }
        self.sh
            .pulled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key);
        let secs = delay.as_secs_f64();
        self.event(
            "Normal",
            "Pulled",
            &format!("Successfully pulled image \"{image}\" in {secs:.3}s ({secs:.3}s including waiting). Image size: 0 bytes."),
        );
        true
    }

    fn container_spec(&self, pod: &Value, c: &Value) -> Result<ContainerSpec, volumes::NotReady> {
        let pod_ip = self.pod_ip.clone().unwrap_or_default();
        // Virtual containers (no sandbox on this machine) run nothing: no service links.
        let env = volumes::env(&self.sh.store, pod, c, &pod_ip, self.sh.runtime.available())?;
        let mounts = volumes::mounts(c, &self.volumes, pod)?;
        let hostname = pod["spec"]["hostname"]
            .as_str()
            .filter(|h| !h.is_empty())
            .unwrap_or(&self.name)
            .to_string();
        let fqdn = pod["spec"]["subdomain"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|sub| format!("{hostname}.{sub}.{}.svc.cluster.local", self.ns));
        let mut search = vec![
            format!("{}.svc.cluster.local", self.ns),
            "svc.cluster.local".to_string(),
            "cluster.local".to_string(),
        ];
        if let Some(extra) = pod["spec"]["dnsConfig"]["searches"].as_array() {
            search.extend(extra.iter().filter_map(|s| s.as_str().map(String::from)));
        }
        Ok(ContainerSpec {
            namespace: self.ns.clone(),
            pod_uid: self.uid.clone(),
            pod_name: self.name.clone(),
            hostname,
            container_name: c["name"].as_str().unwrap_or("").to_string(),
            image: c["image"].as_str().unwrap_or("").to_string(),
            env,
            mounts,
            working_dir: c["workingDir"]
                .as_str()
                .filter(|w| !w.is_empty())
                .map(String::from),
            dns: Some(PodDns {
                pod_ip,
                fqdn,
                search,
                nameserver: "10.96.0.10".to_string(),
            }),
        })
    }

    /// Creates and starts a container; `None` (with the record updated) on failure.
    async fn create_container(
        &mut self,
        pod: &Value,
        c: &Value,
        init: bool,
        idx: usize,
    ) -> Option<ContainerId> {
        let cname = c["name"].as_str().unwrap_or("").to_string();
        let spec = match self.container_spec(pod, c) {
            Ok(s) => s,
            Err(nr) => {
                let rec = if init {
                    &mut self.inits[idx]
                } else {
                    &mut self.apps[idx]
                };
                rec.state = json!({"waiting": {"reason": nr.reason, "message": nr.message}});
                self.event("Warning", "Failed", &format!("Error: {}", nr.message));
                self.publish();
                return None;
            }
        };
        let key = format!("{}/{}", self.ns, self.name);
        if !init && self.sh.store.faults().pod_faults().fail_start_pods.contains(&key) {
            let msg =
                "failed to create containerd task: failed to start shim: kubesim: injected start failure";
            self.apps[idx].state = json!({"waiting": {"reason": "RunContainerError", "message": msg}});
            self.event("Warning", "Failed", &format!("Error: {msg}"));
            self.publish();
            return None;
        }
        let started = self.sh.runtime.start_container(spec).await;
        let id = match started {
            Ok(id) => id,
            Err(e) => {
                let rec = if init {
                    &mut self.inits[idx]
                } else {
                    &mut self.apps[idx]
                };
                rec.state = json!({"waiting": {"reason": "RunContainerError", "message": e.to_string()}});
                self.event("Warning", "Failed", &format!("Error: {e}"));
                self.publish();
                return None;
            }
        };
        self.event("Normal", "Created", &format!("Created container: {cname}"));
        if !self.sleep(self.sh.config.container_start_delay).await {
            let _ = self.sh.runtime.stop_container(&id).await;
            return None;
        }
        self.event("Normal", "Started", &format!("Started container {cname}"));
        let rec = if init {
            &mut self.inits[idx]
        } else {
            &mut self.apps[idx]
        };
        rec.id = Some(id.to_string());
        rec.state = json!({"running": {"startedAt": now_rfc3339()}});
        rec.started = true;
        Some(id)
    }

    async fn log(&self, container: &str, stream: &str, text: &str) {
        if text.is_empty() {
            return;
        }
        if let Err(e) = self
            .sh
            .runtime
            .append_log(&self.uid, container, stream, text)
            .await
        {
            tracing::debug!(pod = %self.name, error = %e, "writing container log failed");
        }
    }

    /// Runs init container `i` to success; `false` when the pod cannot continue.
    pub(super) async fn run_init(&mut self, i: usize, c: &Value) -> bool {
        let cname = c["name"].as_str().unwrap_or("").to_string();
        loop {
            if !self.pull(c).await {
                return false;
            }
            let Some(pod) = self.pod() else {
                return false;
            };
            let Some(id) = self.create_container(&pod, c, true, i).await else {
                if self.terminate {
                    return false;
                }
                let d = self.next_backoff(&cname);
                if !self.sleep(d).await {
                    return false;
                }
                continue;
            };
            let started_at = self.inits[i].state["running"]["startedAt"].clone();
            self.publish();
            let command = argv(c);
            let exit = if command.is_empty() {
                0
            } else {
                let run = self.sh.runtime.run(&id, &command, None);
                let result = tokio::select! {
                    r = run => Some(r),
                    cmd = self.rx.recv() => {
                        if matches!(cmd, Some(Cmd::Terminate) | None) {
                            self.terminate = true;
                        }
                        None
                    }
                };
                match result {
                    None => {
                        // Terminate requested (other commands are dropped while initializing).
                        let _ = self.sh.runtime.stop_container(&id).await;
                        if self.terminate {
                            return false;
                        }
                        continue;
                    }
                    Some(Ok(out)) => {
                        self.log(&cname, "stdout", &String::from_utf8_lossy(&out.stdout))
                            .await;
                        self.log(&cname, "stderr", &String::from_utf8_lossy(&out.stderr))
                            .await;
                        out.exit_code
                    }
                    Some(Err(e @ (SandboxError::BwrapMissing | SandboxError::SandboxUnusable(_)))) => {
                        // No sandbox on this machine: the command cannot run; let the pod start.
                        self.log(&cname, "stderr", &format!("kubesim: command not run: {e}"))
                            .await;
                        0
                    }
                    Some(Err(e)) => {
                        self.log(&cname, "stderr", &e.to_string()).await;
                        128
                    }
                }
            };
            let _ = self.sh.runtime.stop_container(&id).await;
            let terminated = json!({"terminated": {
                "exitCode": exit, "reason": if exit == 0 { "Completed" } else { "Error" },
                "startedAt": started_at, "finishedAt": now_rfc3339(), "containerID": id.as_str()}});
            let rec = &mut self.inits[i];
            rec.state = terminated.clone();
            rec.ready = exit == 0;
            if exit == 0 {
                self.publish();
                return true;
            }
            let policy = self.pod().map(|p| {
                p["spec"]["restartPolicy"]
                    .as_str()
                    .unwrap_or("Always")
                    .to_string()
            });
            if policy.as_deref() == Some("Never") {
                self.failed = true;
                self.publish();
                return false;
            }
            let rec = &mut self.inits[i];
            rec.last_state = terminated;
            rec.restart_count += 1;
            let d = self.next_backoff(&cname);
            let msg = format!(
                "back-off {}s restarting failed container={cname} pod={}_{}({})",
                d.as_secs(),
                self.name,
                self.ns,
                self.uid
            );
            self.inits[i].state = json!({"waiting": {"reason": "CrashLoopBackOff", "message": msg}});
            self.publish();
            self.event(
                "Warning",
                "BackOff",
                &format!(
                    "Back-off restarting failed container {cname} in pod {}_{}({})",
                    self.name, self.ns, self.uid
                ),
            );
            if !self.sleep(d).await {
                return false;
            }
        }
    }

    /// Starts app container `i` (pull, create, start, postStart) until it runs; `false` on
    /// termination.
    pub(super) async fn start_app(&mut self, i: usize, c: &Value) -> bool {
        let cname = c["name"].as_str().unwrap_or("").to_string();
        loop {
            if !self.pull(c).await {
                return false;
            }
            let Some(pod) = self.pod() else {
                return false;
            };
            let Some(id) = self.create_container(&pod, c, false, i).await else {
                if self.terminate {
                    return false;
                }
                let d = self.next_backoff(&cname);
                let msg = format!(
                    "back-off {}s restarting failed container={cname} pod={}_{}({})",
                    d.as_secs(),
                    self.name,
                    self.ns,
                    self.uid
                );
                self.apps[i].state = json!({"waiting": {"reason": "CrashLoopBackOff", "message": msg}});
                self.publish();
                if !self.sleep(d).await {
                    return false;
                }
                continue;
            };
            self.log(
                &cname,
                "stdout",
                &format!(
                    "kubesim: container {cname} started from image {} as {id}",
                    c["image"].as_str().unwrap_or("")
                ),
            )
            .await;
            if let Some(hook) = c["lifecycle"]["postStart"]["exec"]["command"].as_array() {
                let hook: Vec<String> = hook.iter().filter_map(|s| s.as_str().map(String::from)).collect();
                let ok = match self.sh.runtime.run(&id, &hook, None).await {
                    Ok(out) if out.exit_code == 0 => true,
                    Ok(out) => {
                        tracing::debug!(pod = %self.name, code = out.exit_code, "postStart hook failed");
                        false
                    }
                    Err(SandboxError::BwrapMissing | SandboxError::SandboxUnusable(_)) => true,
                    Err(_) => false,
                };
                if !ok {
                    self.event("Warning", "FailedPostStartHook", "PostStartHook failed");
                    let _ = self.sh.runtime.stop_container(&id).await;
                    self.event(
                        "Normal",
                        "Killing",
                        &format!("FailedPostStartHook: Stopping container {cname}"),
                    );
                    let rec = &mut self.apps[i];
                    rec.last_state = json!({"terminated": {"exitCode": 137, "reason": "Error",
                        "startedAt": rec.state["running"]["startedAt"], "finishedAt": now_rfc3339(), "containerID": id.as_str()}});
                    rec.restart_count += 1;
                    rec.ready = false;
                    let d = self.next_backoff(&cname);
                    let msg = format!(
                        "back-off {}s restarting failed container={cname} pod={}_{}({})",
                        d.as_secs(),
                        self.name,
                        self.ns,
                        self.uid
                    );
                    self.apps[i].state = json!({"waiting": {"reason": "CrashLoopBackOff", "message": msg}});
                    self.publish();
                    if !self.sleep(d).await {
                        return false;
                    }
                    continue;
                }
            }
            let delay = c["readinessProbe"]["initialDelaySeconds"].as_u64().unwrap_or(0);
            if delay == 0 {
                self.apps[i].ready = true;
            } else {
                self.ready_at[i] = Some(Instant::now() + Duration::from_secs(delay));
            }
            self.backoff.remove(&cname);
            self.publish();
            return true;
        }
    }

    pub(super) async fn restart_app(&mut self, name: &str) -> bool {
        let Some(i) = self.apps.iter().position(|c| c.name == name) else {
            return true;
        };
        let Some(c) = self.pod_spec_container("containers", name) else {
            return true;
        };
        if let Some(old) = self.apps[i].id.clone().and_then(|s| ContainerId::parse(&s)) {
            let _ = self.sh.runtime.stop_container(&old).await;
        }
        logs::rotate(&self.sh.runtime, &self.uid, name).await;
        let rec = &mut self.apps[i];
        if rec.is_running() {
            rec.last_state = json!({"terminated": {"exitCode": 137, "reason": "Error",
                "startedAt": rec.state["running"]["startedAt"], "finishedAt": now_rfc3339(),
                "containerID": rec.id.clone().unwrap_or_default()}});
        }
        rec.restart_count += 1;
        rec.ready = false;
        rec.state = json!({"waiting": {"reason": "ContainerCreating"}});
        self.ready_at[i] = None;
        self.publish();
        let policy = self.pod().map(|p| {
            p["spec"]["restartPolicy"]
                .as_str()
                .unwrap_or("Always")
                .to_string()
        });
        if policy.as_deref() == Some("Never") {
            self.apps[i].state = self.apps[i].last_state.clone();
            self.apps[i].restart_count -= 1;
            if self.apps.iter().all(|c| !c.is_running()) {
                self.failed = true;
            }
            self.publish();
            return true;
        }
        self.start_app(i, &c).await
    }
}
