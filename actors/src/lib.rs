//! KubeDirector actors, ports and pure planners.
