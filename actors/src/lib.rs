//! KubeDirector actors, ports and pure planners.
//!
//! What is watched: KubeDirectorClusters, KubeDirectorApps, KubeDirectorConfigs,
//! KubeDirectorStatusBackups, the StatefulSets, Services, Pods and PVCs labelled
//! `kubedirector.hpe.com/kdcluster`, and the ConfigMaps and Secrets labelled
//! `kubedirector.hpe.com/cmType` / `…/secretType` (connections, [`connections`]). The global
//! kdconfig is reconciled by [`kdconfig::ConfigActor`]. The
//! [`watcher::WatcherActor`] keeps the reflector caches ([`caches`]) and routes every event to
//! one [`cluster::ClusterActor`] per kdcluster (app events go to the [`catalog::CatalogActor`]).
//! A ClusterActor runs the pipeline `observe (caches) → plan (pure, [`plan`]; bookkeeping in the
//! pure [`tracker`]) → execute
//! ([`role::RoleActor`] / [`member_service::MemberServiceActor`] / ports) → status
//! ([`status_writer::StatusWriter`])`, and reports to the [`metrics::MetricsActor`]. Only
//! [`ports`] reach the outside world; the root crate implements them with kube.
//! [`system::start`] wires the whole topology.

pub mod caches;
pub mod catalog;
pub mod cluster;
pub mod config_job;
pub mod connections;
pub mod handle;
pub mod kdconfig;
pub mod member_service;
pub mod messages;
pub mod metrics;
pub mod owner_index;
pub mod plan;
pub mod ports;
pub mod retry;
pub mod role;
pub mod status_writer;
pub mod system;
pub mod tokens;
pub mod tracker;
pub mod watcher;
