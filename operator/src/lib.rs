//! keyraft-operator: the `KeyraftCluster` CRD, pure builders of the objects
//! a cluster owns, a pure planner (observation -> actions), and the
//! controller that observes, plans and acts.

pub mod admin;
pub mod builders;
pub mod cert_manager;
pub mod controller;
pub mod crd;
pub mod lease;
pub mod metrics;
pub mod planner;
pub mod rbac;
pub mod tls;

/// Errors of the operator library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("object {0} has no {1}")]
    MissingField(String, &'static str),
    #[error("node admin call to {addr}: {message}")]
    Admin { addr: String, message: String },
    #[error("invalid cluster: {0}")]
    Invalid(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
