//! The ClusterActor's book of configuration jobs (spec 4): which member has a job running, the
//! finished results not yet consumed by a pass, the jobs a pass asked for (started only once the
//! pass's writes succeeded, so a job never runs on the strength of a status that was not
//! stored), and which results a pass was shown (dropped once that pass succeeded).
//!
//! Pure bookkeeping without actix; the actor starts and stops the ConfigJobActors.

use std::collections::{BTreeMap, HashMap};

use crate::config_job::{JobError, JobFinished};
use crate::plan::config::member::{GuestResult, GuestView};
use crate::plan::config::script::GuestJob;

/// A job a pass asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRequest {
    /// Pod.
    pub pod: String,
    /// Container.
    pub container_id: String,
    /// Work.
    pub job: GuestJob,
}

/// The book.
#[derive(Debug, Default)]
pub struct Jobs<H> {
    next_id: u64,
    running: HashMap<String, (u64, GuestJob, H)>,
    results: HashMap<String, GuestResult>,
    shown: Vec<(String, u64)>,
    requested: Vec<JobRequest>,
}

impl<H> Jobs<H> {
    /// An empty book.
    pub fn new() -> Self {
        Self {
            next_id: 0,
            running: HashMap::new(),
            results: HashMap::new(),
            shown: Vec::new(),
            requested: Vec::new(),
        }
    }

    /// What the next pass sees, by pod; remembers which results it was shown.
    pub fn view(&mut self) -> BTreeMap<String, GuestView> {
        self.shown.clear();
        let mut out: BTreeMap<String, GuestView> = BTreeMap::new();
        for pod in self.running.keys() {
            out.entry(pod.clone()).or_default().busy = true;
        }
        for (pod, r) in &self.results {
            self.shown.push((pod.clone(), r.id));
            out.entry(pod.clone()).or_default().result = Some(r.clone());
        }
        out
    }

    /// The pass asked for `req` (started by [`Jobs::take_requested`] once the pass succeeded).
    pub fn request(&mut self, req: JobRequest) {
        self.requested.push(req);
    }

    /// The pass's writes succeeded: its shown results are consumed, and the jobs it asked for
    /// are handed out with fresh ids (never a second job for a member that has one running).
    pub fn pass_succeeded(&mut self) -> Vec<(u64, JobRequest)> {
        for (pod, id) in self.shown.drain(..) {
            if self.results.get(&pod).is_some_and(|r| r.id == id) {
                self.results.remove(&pod);
            }
        }
        let mut out = Vec::new();
        for req in std::mem::take(&mut self.requested) {
            if self.running.contains_key(&req.pod)
                || out.iter().any(|(_, r): &(u64, JobRequest)| r.pod == req.pod)
            {
                continue;
            }
            self.next_id += 1;
            out.push((self.next_id, req));
        }
        out
    }

    /// The pass failed: nothing it asked for starts, the results it saw stay for the next one.
    pub fn pass_failed(&mut self) {
        self.shown.clear();
        self.requested.clear();
    }

    /// A job was started.
    pub fn started(&mut self, id: u64, pod: String, job: GuestJob, handle: H) {
        self.running.insert(pod, (id, job, handle));
    }

    /// A job finished: its result is kept for the next pass. `false` for an unknown job.
    pub fn finished(&mut self, msg: &JobFinished) -> bool {
        let Some((id, job, _)) = self.running.get(&msg.pod) else {
            return false;
        };
        if *id != msg.id {
            return false;
        }
        let job = job.clone();
        self.running.remove(&msg.pod);
        self.results.insert(
            msg.pod.clone(),
            GuestResult {
                id: msg.id,
                container_id: msg.container_id.clone(),
                job,
                outcome: msg.result.clone().map_err(|e: JobError| e.to_string()),
            },
        );
        true
    }

    /// Every running job's handle (to cancel them).
    pub fn drain_running(&mut self) -> Vec<H> {
        self.running.drain().map(|(_, (_, _, h))| h).collect()
    }

    /// Number of running jobs.
    pub fn running(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::plan::config::script::GuestReport;

    fn job() -> GuestJob {
        GuestJob::WriteConfigmeta {
            generation: 1,
            configmeta: "{}".into(),
        }
    }

    fn req(pod: &str) -> JobRequest {
        JobRequest {
            pod: pod.into(),
            container_id: "c".into(),
            job: job(),
        }
    }

    fn done(id: u64, pod: &str) -> JobFinished {
        JobFinished {
            id,
            pod: pod.into(),
            container_id: "c".into(),
            operation: "configmeta",
            result: Ok(GuestReport::ConfigWritten),
            execs: 1,
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn requested_jobs_start_only_after_the_pass_succeeded_and_never_twice_per_member() {
        let mut jobs: Jobs<()> = Jobs::new();
        jobs.request(req("p0"));
        jobs.pass_failed();
        assert!(jobs.pass_succeeded().is_empty(), "a failed pass starts nothing");
        jobs.request(req("p0"));
        jobs.request(req("p0"));
        let started = jobs.pass_succeeded();
        assert_eq!(started.len(), 1);
        jobs.started(started[0].0, "p0".into(), job(), ());
        jobs.request(req("p0"));
        assert!(jobs.pass_succeeded().is_empty(), "p0 has a job running");
        assert!(jobs.view()["p0"].busy);
    }

    #[test]
    fn a_result_is_shown_until_a_pass_that_saw_it_succeeds() {
        let mut jobs: Jobs<()> = Jobs::new();
        jobs.request(req("p0"));
        let (id, _) = jobs.pass_succeeded().remove(0);
        jobs.started(id, "p0".into(), job(), ());
        assert!(!jobs.finished(&done(id + 1, "p0")), "unknown job id");
        assert!(jobs.finished(&done(id, "p0")));
        let v = jobs.view();
        assert!(!v["p0"].busy && v["p0"].result.is_some());
        jobs.pass_failed();
        assert!(jobs.view()["p0"].result.is_some(), "kept after a failed pass");
        jobs.pass_succeeded();
        assert!(jobs.view().is_empty(), "consumed");
    }
}
