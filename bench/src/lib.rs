//! Side-by-side benchmark of Keyraft and etcd on one machine: 3 members of
//! each on loopback, one system at a time, the same closed-loop workload,
//! one table of throughput, latency, CPU per operation and memory.

pub mod error;
pub mod etcd;
pub mod keyraft;
pub mod measure;
pub mod procstat;
pub mod report;
pub mod workload;

pub use error::BenchError;
