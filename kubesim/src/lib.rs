//! kubesim: an embedded Kubernetes API server.
