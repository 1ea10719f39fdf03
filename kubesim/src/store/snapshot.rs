//! Point-in-time snapshots reconstructed from the watch history (consistent list paging and
//! `resourceVersionMatch=Exact`).

use super::{EventKind, Objects, Store};
use crate::error::ApiError;
use crate::resources::GroupResource;

/// The objects of `gr` as they were at `rv`; 410 when the history no longer reaches back.
pub(super) fn at(store: &Store, gr: &GroupResource, rv: u64) -> Result<Objects, ApiError> {
    let st = store.lock();
    if rv >= st.rv {
        return Ok(st.objects.get(gr).cloned().unwrap_or_default());
    }
    if rv < st.compacted {
        return Err(ApiError::gone(format!(
            "The resourceVersion for the provided list is too old. (requested {rv}, oldest {})",
            st.compacted
        )));
    }
    let mut objs = st.objects.get(gr).cloned().unwrap_or_default();
    for ev in st.history.iter().rev() {
        if ev.rv <= rv {
            break;
        }
        if &ev.gr != gr {
            continue;
        }
        let key = (ev.namespace.clone(), ev.name.clone());
        match ev.kind {
            EventKind::Added => {
                objs.remove(&key);
            }
            EventKind::Modified | EventKind::Deleted => {
                if let Some(old) = &ev.old {
                    objs.insert(key, old.clone());
                }
            }
        }
    }
    Ok(objs)
}
