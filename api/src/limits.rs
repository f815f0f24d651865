//! Request limits shared by node and client, so both name the same numbers.

/// Default largest key, in bytes.
pub const DEFAULT_MAX_KEY_BYTES: usize = 4 * 1024;
/// Default largest value, in bytes.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Largest number of operations in one Batch.
pub const MAX_BATCH_OPS: usize = 1024;
/// Scan page size when the request names none, and the largest allowed.
pub const DEFAULT_SCAN_LIMIT: u32 = 1000;
pub const MAX_SCAN_LIMIT: u32 = 10_000;
/// Largest gRPC message the node and client accept.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
