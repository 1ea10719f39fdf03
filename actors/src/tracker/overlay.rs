//! [`Overlay`]: read-your-writes for the objects a ClusterActor wrote that its cache has not
//! shown yet (see the [tracker](super) module).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;

use crate::plan::Observed;

/// The object kinds the overlay tracks deletions of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OverlayKind {
    /// A StatefulSet.
    StatefulSet,
    /// A Service.
    Service,
    /// A PersistentVolumeClaim.
    PersistentVolumeClaim,
}

/// Read-your-writes overlay: objects written by this actor that the cache has not shown yet,
/// each kept at most `ttl` after its write, without `managedFields` (as the caches keep them).
#[derive(Debug, Default)]
pub struct Overlay {
    statefulsets: HashMap<String, (StatefulSet, Instant)>,
    services: HashMap<String, (Service, Instant)>,
    deleted: HashMap<(OverlayKind, String), Instant>,
}

impl Overlay {
    /// Lays the remembered writes over `observed` (at time `now`), forgetting those the cache
    /// shows already and those older than `ttl`.
    pub fn apply(&mut self, observed: &mut Observed, now: Instant, ttl: Duration) {
        self.statefulsets
            .retain(|name, (_, t)| !observed.statefulsets.contains_key(name) && now - *t < ttl);
        self.services
            .retain(|name, (_, t)| !observed.services.contains_key(name) && now - *t < ttl);
        for (name, (o, _)) in &self.statefulsets {
            observed.statefulsets.insert(name.clone(), o.clone());
        }
        for (name, (o, _)) in &self.services {
            observed.services.insert(name.clone(), o.clone());
        }
        self.deleted.retain(|(kind, name), t| {
            let present = match kind {
                OverlayKind::StatefulSet => observed.statefulsets.remove(name).is_some(),
                OverlayKind::Service => observed.services.remove(name).is_some(),
                OverlayKind::PersistentVolumeClaim => observed.pvcs.remove(name).is_some(),
            };
            present && now - *t < ttl
        });
    }

    /// A StatefulSet was created (as stored by the API server).
    pub fn created_statefulset(&mut self, mut sts: StatefulSet, now: Instant) {
        sts.metadata.managed_fields = None;
        if let Some(n) = sts.metadata.name.clone() {
            self.deleted.remove(&(OverlayKind::StatefulSet, n.clone()));
            self.statefulsets.insert(n, (sts, now));
        }
    }

    /// A Service was created or applied (as stored by the API server).
    pub fn applied_service(&mut self, mut svc: Service, now: Instant) {
        svc.metadata.managed_fields = None;
        if let Some(n) = svc.metadata.name.clone() {
            self.deleted.remove(&(OverlayKind::Service, n.clone()));
            self.services.insert(n, (svc, now));
        }
    }

    /// A create found a same-named object that the kdcluster does not control (invisible to the
    /// label-selected cache when it carries none of our labels): until the cache shows that name
    /// or `ttl` passes, the planner sees it taken by an object it cannot adopt, so it moves on
    /// to another generated name (or reports the conflict) instead of creating it again.
    pub fn foreign(&mut self, kind: OverlayKind, name: String, now: Instant) {
        let meta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        };
        match kind {
            OverlayKind::StatefulSet => {
                let o = StatefulSet {
                    metadata: meta,
                    ..StatefulSet::default()
                };
                self.statefulsets.insert(name, (o, now));
            }
            OverlayKind::Service => {
                let o = Service {
                    metadata: meta,
                    ..Service::default()
                };
                self.services.insert(name, (o, now));
            }
            OverlayKind::PersistentVolumeClaim => {}
        }
    }

    /// The watch saw object `name` of `kind` (uid `uid`) deleted: a remembered write of that
    /// object is forgotten (one of a later object of the same name, another uid, is kept).
    pub fn gone(&mut self, kind: OverlayKind, name: &str, uid: Option<&str>) {
        let same = |u: Option<&String>| uid.is_none() || u.map(String::as_str) == uid;
        match kind {
            OverlayKind::StatefulSet => {
                if self
                    .statefulsets
                    .get(name)
                    .is_some_and(|(o, _)| same(o.metadata.uid.as_ref()))
                {
                    self.statefulsets.remove(name);
                }
            }
            OverlayKind::Service => {
                if self
                    .services
                    .get(name)
                    .is_some_and(|(o, _)| same(o.metadata.uid.as_ref()))
                {
                    self.services.remove(name);
                }
            }
            OverlayKind::PersistentVolumeClaim => {}
        }
    }

    /// An object was deleted.
    pub fn deleted(&mut self, kind: OverlayKind, name: String, now: Instant) {
        match kind {
            OverlayKind::StatefulSet => {
                self.statefulsets.remove(&name);
            }
            OverlayKind::Service => {
                self.services.remove(&name);
            }
            OverlayKind::PersistentVolumeClaim => {}
        }
        self.deleted.insert((kind, name), now);
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn named<T: Default + k8s_openapi::Metadata<Ty = ObjectMeta>>(name: &str) -> T {
        let mut o = T::default();
        o.metadata_mut().name = Some(name.to_owned());
        o
    }

    #[test]
    fn overlay_shows_created_objects_until_the_cache_has_them_or_the_ttl_passes() {
        let ttl = Duration::from_secs(60);
        let t0 = Instant::now();
        let mut overlay = Overlay::default();
        overlay.created_statefulset(named("sts"), t0);
        overlay.applied_service(named("svc"), t0);
        let mut obs = Observed::default();
        overlay.apply(&mut obs, t0 + Duration::from_secs(1), ttl);
        assert!(obs.statefulsets.contains_key("sts") && obs.services.contains_key("svc"));
        // The cache caught up with the service: the cache's copy wins from now on.
        let mut obs = Observed::default();
        let mut cached: Service = named("svc");
        cached.metadata.resource_version = Some("9".into());
        obs.services.insert("svc".into(), cached.clone());
        overlay.apply(&mut obs, t0 + Duration::from_secs(2), ttl);
        assert_eq!(obs.services["svc"], cached);
        let mut obs = Observed::default();
        overlay.apply(&mut obs, t0 + Duration::from_secs(3), ttl);
        assert!(obs.statefulsets.contains_key("sts"));
        assert!(
            !obs.services.contains_key("svc"),
            "forgotten once the cache showed it"
        );
        let mut obs = Observed::default();
        overlay.apply(&mut obs, t0 + ttl, ttl);
        assert!(obs.statefulsets.is_empty(), "forgotten after the ttl");
    }

    #[test]
    fn a_write_whose_object_the_watch_saw_deleted_is_forgotten() {
        let ttl = Duration::from_secs(60);
        let t0 = Instant::now();
        let mut overlay = Overlay::default();
        let mut svc: Service = named("svc");
        svc.metadata.uid = Some("u2".into());
        overlay.applied_service(svc, t0);
        overlay.gone(OverlayKind::Service, "svc", Some("u1"));
        let mut obs = Observed::default();
        overlay.apply(&mut obs, t0, ttl);
        assert!(
            obs.services.contains_key("svc"),
            "a later object of that name is kept"
        );
        overlay.gone(OverlayKind::Service, "svc", Some("u2"));
        let mut obs = Observed::default();
        overlay.apply(&mut obs, t0, ttl);
        assert!(obs.services.is_empty());
    }

    #[test]
    fn a_foreign_name_is_shown_taken_by_an_object_without_owner() {
        let ttl = Duration::from_secs(60);
        let t0 = Instant::now();
        let mut overlay = Overlay::default();
        overlay.foreign(OverlayKind::StatefulSet, "kdss-x".into(), t0);
        overlay.foreign(OverlayKind::Service, "s-kdss-x-0".into(), t0);
        let mut obs = Observed::default();
        overlay.apply(&mut obs, t0 + Duration::from_secs(1), ttl);
        assert!(obs.statefulsets["kdss-x"].metadata.owner_references.is_none());
        assert!(obs.services["s-kdss-x-0"].metadata.labels.is_none());
        let mut obs = Observed::default();
        overlay.apply(&mut obs, t0 + ttl, ttl);
        assert!(
            obs.statefulsets.is_empty() && obs.services.is_empty(),
            "forgotten after the ttl"
        );
    }

    #[test]
    fn overlay_hides_deleted_objects_until_the_cache_drops_them_or_the_ttl_passes() {
        let ttl = Duration::from_secs(60);
        let t0 = Instant::now();
        let mut overlay = Overlay::default();
        overlay.created_statefulset(named("sts"), t0);
        overlay.deleted(OverlayKind::StatefulSet, "sts".into(), t0);
        overlay.deleted(OverlayKind::PersistentVolumeClaim, "pvc".into(), t0);
        let mut obs = Observed::default();
        obs.statefulsets.insert("sts".into(), named("sts"));
        obs.pvcs.insert("pvc".into(), named("pvc"));
        overlay.apply(&mut obs, t0 + Duration::from_secs(1), ttl);
        assert!(obs.statefulsets.is_empty() && obs.pvcs.is_empty());
        // The cache dropped the claim: a claim of the same name created later is shown.
        overlay.apply(&mut Observed::default(), t0 + Duration::from_secs(2), ttl);
        let mut obs = Observed::default();
        obs.pvcs.insert("pvc".into(), named("pvc"));
        obs.statefulsets.insert("sts".into(), named("sts"));
        overlay.apply(&mut obs, t0 + ttl, ttl);
        assert!(obs.pvcs.contains_key("pvc"));
        assert!(
            obs.statefulsets.contains_key("sts"),
            "a deletion the cache has shown is not applied again"
        );
    }
}
