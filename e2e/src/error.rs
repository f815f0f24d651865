//! Errors: [`ApiError`] is what the API server answers (a Kubernetes
//! `Status`), [`Error`] is what the library's own operations return.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// Errors of the simulator library (start-up, files, processes).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// No free loopback subnet could be leased for pod addresses.
    #[error("no free loopback subnet for pod addresses (all of 127.100-127.199 are leased by other simulators)")]
    NoFreeSubnet,
    /// An API operation failed.
    #[error("{0}")]
    Api(#[from] ApiError),
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// Wraps an I/O error with a description of what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }
}

/// An error answered to an API client as a `Status` object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Kubernetes reason (`NotFound`, `AlreadyExists`, `Invalid`, ...).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// Optional `details` of the Status (kind, name, causes).
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }

    /// 404: `<resource> "<name>" not found`.
    pub fn not_found(resource: &str, name: &str) -> Self {
        ApiError::new(404, "NotFound", format!("{resource} \"{name}\" not found"))
            .with_details(json!({"name": name, "kind": resource_plural_kind(resource)}))
    }
    /// 404 for a path that names no served resource.
    pub fn no_route(path: &str) -> Self {
        ApiError::new(404, "NotFound", format!("the server could not find the requested resource ({path})"))
    }
    /// 409: the object already exists.
    pub fn already_exists(resource: &str, name: &str) -> Self {
        ApiError::new(409, "AlreadyExists", format!("{resource} \"{name}\" already exists"))
            .with_details(json!({"name": name, "kind": resource_plural_kind(resource)}))
    }
    /// 409: optimistic-concurrency conflict.
    pub fn conflict(resource: &str, name: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
        )
        .with_details(json!({"name": name, "kind": resource_plural_kind(resource)}))
    }
    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }
    /// 405: the verb is not supported on this resource.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        ApiError::new(405, "MethodNotAllowed", message)
    }
    /// 415: unsupported patch or body content type.
    pub fn unsupported_media(message: impl Into<String>) -> Self {
        ApiError::new(415, "UnsupportedMediaType", message)
    }
    /// 403: the caller may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(403, "Forbidden", message)
    }
    /// 410: the requested resourceVersion is too old to watch from.
    pub fn gone(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }
    /// 500: a bug in the simulator.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, "InternalError", message)
    }
    /// 422: the object is invalid. `causes` are `(field, message)` pairs;
    /// the message reads like the API server's:
    /// `Kind.group "name" is invalid: [field: message, ...]`.
    pub fn invalid(kind_group: &str, name: &str, causes: Vec<(String, String)>) -> Self {
        let joined: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let body = if joined.len() == 1 { joined[0].clone() } else { format!("[{}]", joined.join(", ")) };
        let kind = kind_group.split('.').next().unwrap_or(kind_group).to_string();
        let group = kind_group.split_once('.').map(|(_, g)| g).unwrap_or("");
        ApiError::new(422, "Invalid", format!("{kind_group} \"{name}\" is invalid: {body}")).with_details(json!({
            "name": name,
            "group": group,
            "kind": kind,
            "causes": causes.iter().map(|(f, m)| json!({
                "reason": cause_reason(m), "message": m, "field": f
            })).collect::<Vec<_>>(),
        }))
    }

    /// 429: an eviction that would violate a PodDisruptionBudget; `cause`
    /// is the `DisruptionBudget` cause message.
    pub fn too_many_requests(message: impl Into<String>, cause: Option<String>) -> Self {
        let mut e = ApiError::new(429, "TooManyRequests", message);
        if let Some(c) = cause {
            e.details = Some(json!({"causes": [{"reason": "DisruptionBudget", "message": c}]}));
        }
        e
    }

    /// 409 of a server-side apply whose fields other managers own:
    /// `(field path, manager as printed)` pairs, the message as the API
    /// server writes it.
    pub fn apply_conflict(conflicts: &[(String, String)]) -> Self {
        let message = if let [(path, manager)] = conflicts {
            format!("Apply failed with 1 conflict: conflict with {manager}: {path}")
        } else {
            let mut by_manager: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
            for (path, manager) in conflicts {
                by_manager.entry(manager).or_default().push(path);
            }
            let mut lines = Vec::new();
            for (manager, paths) in by_manager {
                lines.push(format!("conflicts with {manager}"));
                lines.extend(paths.iter().map(|p| format!("- {p}")));
            }
            format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
        };
        ApiError::new(409, "Conflict", message).with_details(json!({
            "causes": conflicts.iter().map(|(path, manager)| json!({
                "reason": "FieldManagerConflict", "message": format!("conflict with {manager}"), "field": path
            })).collect::<Vec<_>>(),
        }))
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The `Status` object for this error.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// The `StatusCause` reason of a field error, from the error type its
/// message starts with (as the API server's field.Error renders it).
fn cause_reason(message: &str) -> &'static str {
    const TYPES: &[(&str, &str)] = &[
        ("Forbidden:", "FieldValueForbidden"),
        ("Required value", "FieldValueRequired"),
        ("Too long:", "FieldValueTooLong"),
        ("Unsupported value:", "FieldValueNotSupported"),
        ("Duplicate value:", "FieldValueDuplicate"),
    ];
    TYPES.iter().find(|(p, _)| message.starts_with(p)).map_or("FieldValueInvalid", |(_, r)| r)
}

fn resource_plural_kind(resource: &str) -> String {
    // `deployments.apps` -> `deployments`: what the Status details carry.
    resource.split('.').next().unwrap_or(resource).to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, [("content-type", "application/json")], self.status().to_string()).into_response()
    }
}

/// Result of API operations.
pub type ApiResult<T> = std::result::Result<T, ApiError>;
