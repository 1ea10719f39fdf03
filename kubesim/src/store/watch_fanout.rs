//! The event stream: the watch history, its fan-out to subscribers, resumable watches and the
//! lag counter of subscribers that fell behind.

use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast;

use super::{Backlog, State, Store, WatchEvent};
use crate::error::ApiError;
use crate::resources::{GroupResource, ResourceKey};

/// A watch on the store: backlog first, then live events.
#[derive(Debug)]
pub struct Watch {
    backlog: VecDeque<Arc<WatchEvent>>,
    rx: broadcast::Receiver<Arc<WatchEvent>>,
    filter: Option<GroupResource>,
    last_rv: u64,
}

impl Watch {
    /// Next event; `None` when the watcher fell too far behind (or the store was dropped): the
    /// caller should re-list.
    pub async fn next(&mut self) -> Option<Arc<WatchEvent>> {
        if let Some(e) = self.backlog.pop_front() {
            self.last_rv = e.rv;
            return Some(e);
        }
        loop {
            match self.rx.recv().await {
                Ok(e) => {
                    if e.rv <= self.last_rv {
                        continue;
                    }
                    if let Some(f) = &self.filter {
                        if &e.gr != f {
                            continue;
                        }
                    }
                    self.last_rv = e.rv;
                    return Some(e);
                }
                Err(_) => return None,
            }
        }
    }

    /// The resourceVersion of the last delivered event (or the start point).
    pub fn last_rv(&self) -> u64 {
        self.last_rv
    }
}

impl Store {
    /// Subscribe to every future event (all resources).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.inner.tx.subscribe()
    }

    /// Watch one resource (or all with `None`) from `from_rv` (exclusive). 410 if compacted.
    pub fn watch(&self, res: Option<&ResourceKey>, from_rv: u64) -> Result<Watch, ApiError> {
        let gr = res.map(ResourceKey::group_resource);
        let (backlog, rx) = self.watch_from(gr.as_ref(), from_rv)?;
        Ok(Watch {
            backlog: backlog.into(),
            rx,
            filter: gr,
            last_rv: from_rv,
        })
    }

    /// Backlog of events after `from_rv` plus a live receiver, atomically.
    pub(crate) fn watch_from(&self, gr: Option<&GroupResource>, from_rv: u64) -> Result<Backlog, ApiError> {
        let st = self.lock();
        if from_rv < st.compacted {
            return Err(ApiError::gone(format!(
                "too old resource version: {} ({})",
                from_rv, st.compacted
            )));
        }
        let start = st.history.partition_point(|e| e.rv <= from_rv);
        let backlog = st
            .history
            .iter()
            .skip(start)
            .filter(|e| gr.is_none_or(|g| &e.gr == g))
            .cloned()
            .collect();
        let rx = self.inner.tx.subscribe();
        Ok((backlog, rx))
    }

    /// Current objects of a resource plus a live receiver, atomically (for rv=0/unset watches).
    pub(crate) fn snapshot_and_subscribe(
        &self,
        gr: &GroupResource,
    ) -> (Vec<Arc<Value>>, u64, broadcast::Receiver<Arc<WatchEvent>>) {
        let st = self.lock();
        let items = st
            .objects
            .get(gr)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let rx = self.inner.tx.subscribe();
        (items, st.rv, rx)
    }

    pub(super) fn emit(&self, st: &mut State, ev: WatchEvent) {
        st.index.apply(&ev);
        let ev = Arc::new(ev);
        st.history.push_back(ev.clone());
        while st.history.len() > self.inner.config.history {
            if let Some(old) = st.history.pop_front() {
                st.compacted = old.rv;
            }
        }
        let _ = self.inner.tx.send(ev);
    }

    /// Counts one subscriber (a simulated controller, the garbage collector, a watch stream) that
    /// fell behind the event stream by more than the buffer and had to re-list or close.
    pub(crate) fn note_lag(&self) {
        self.inner.lags.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many times a subscriber of the event stream (simulated controller, garbage collector,
    /// watch stream) fell behind it so far: each one costs a full re-list (controllers) or a
    /// closed watch (the client resumes or re-lists). A cost counter, like
    /// [`Store::objects_visited`].
    pub fn stream_lags(&self) -> u64 {
        self.inner.lags.load(std::sync::atomic::Ordering::Relaxed)
    }
}
