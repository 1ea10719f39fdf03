//! Wiring of the actor topology (DESIGN.md section 2), shared by `kubedirector run`, the demo
//! and the tests.

use actix::prelude::*;
use prometheus::Registry;

use crate::{
    caches::{caches, Caches},
    catalog::CatalogActor,
    cluster::{ClusterDeps, ClusterSettings},
    metrics::{MetricsActor, MetricsError},
    ports::Ports,
    status_writer::StatusWriter,
    watcher::WatcherActor,
};

/// Addresses of the long-lived actors.
#[derive(Clone)]
pub struct Topology {
    /// The front door: send it every watch event.
    pub watcher: Addr<WatcherActor>,
    /// The kdapp cache actor.
    pub catalog: Addr<CatalogActor>,
    /// The status writer.
    pub status_writer: Addr<StatusWriter>,
    /// The metrics actor (ask it to `Render`).
    pub metrics: Addr<MetricsActor>,
    /// Read handles on the caches.
    pub caches: Caches,
}

/// Starts the topology on the current actix System.
pub fn start(ports: Ports, settings: ClusterSettings, registry: Registry) -> Result<Topology, MetricsError> {
    let metrics = MetricsActor::new(registry)?.start();
    let (caches, writers) = caches(&settings.kd_namespace);
    let catalog = CatalogActor::new(caches.catalog.clone()).start();
    let status_writer = StatusWriter::new(ports.api.clone(), Some(metrics.clone().recipient())).start();
    let guest = ports.exec.clone().map(|exec| crate::cluster::GuestDeps {
        exec,
        probe: crate::config_job::cache_probe((*caches.pods).clone()),
    });
    let deps = ClusterDeps {
        ports,
        caches: caches.clone(),
        register_interest: catalog.clone().recipient(),
        drop_interest: catalog.clone().recipient(),
        write_status: status_writer.clone().recipient(),
        forget_status: status_writer.clone().recipient(),
        metrics: Some(metrics.clone().recipient()),
        settings,
        guest,
    };
    let watcher = WatcherActor::new(writers, catalog.clone(), deps).start();
    Ok(Topology {
        watcher,
        catalog,
        status_writer,
        metrics,
        caches,
    })
}
