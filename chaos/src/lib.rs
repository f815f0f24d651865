//! Keyraft's nemesis: concurrent clients record a history of operations on a
//! small key space while faults hit real node processes; a checker decides
//! whether the history is linearizable.

pub mod checker;
pub mod cluster;
pub mod error;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod run;
pub mod workload;
