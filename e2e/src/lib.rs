//! `keyraft-e2e`: a local Kubernetes simulator for end-to-end tests.
//!
//! An HTTP API server speaking the subset of the Kubernetes REST API that
//! the operator, Helm and kubectl use ([`http`]), in-memory storage with
//! watches ([`store`]), the API semantics ([`objects`]), controllers
//! (StatefulSet, Deployment/ReplicaSet, garbage collection, namespaces,
//! CRDs; [`controllers`]) and a kubelet that runs pods as local processes
//! ([`kubelet`]). [`Simulator`] starts it all; `keyraft-k8s-sim` is the binary.
//! See e2e/README.md for what is modelled and what is not.

pub mod auth;
pub mod controllers;
pub mod error;
pub mod http;
pub mod kubelet;
pub mod network;
pub mod objects;
pub mod patch;
pub mod registry;
pub mod schema;
pub mod selector;
pub mod sim;
pub mod store;
pub mod strict;
pub mod time;
pub mod validation;

pub use error::{ApiError, Error};
pub use sim::{SimConfig, Simulator};
pub use strict::Strictness;
