//! Keyraft client library: [`Client`] for applications, [`local`] to run a
//! cluster of real node processes on loopback, [`bench`] for load.

pub mod backup;
pub mod bench;
mod client;
mod error;
pub mod local;
pub mod output;
pub mod status;

pub use client::{Client, ClientOptions, ClientStats, TlsOptions, WriteInfo};
pub use error::ClientError;
pub use keyraft_api::{pb, ConsistencyLevel};
