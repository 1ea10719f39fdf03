//! KubeDirector custom resource types.
