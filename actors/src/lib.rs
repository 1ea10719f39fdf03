//! KubeDirector actors, ports and pure planners.

pub mod plan;
