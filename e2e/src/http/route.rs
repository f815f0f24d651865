//! Parsing request paths into what they address.

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group(String),
    /// `/api/v1`, `/apis/{group}/{version}`
    Resources {
        group: String,
        version: String,
    },
    /// A resource, collection or subresource.
    Object(ObjectPath),
    /// `/openapi/v2`
    OpenApiV2,
    /// `/openapi/v3`
    OpenApiV3,
    /// `/openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}`
    OpenApiV3Gv {
        group: String,
        version: String,
    },
    /// `/sim/...`: the simulator's fault hooks.
    Sim(Vec<String>),
    /// `/healthz`, `/readyz`, `/livez`
    Health,
    NotFound,
}

/// A path under a group/version naming a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

fn object(group: &str, version: &str, rest: &[&str]) -> Route {
    let (namespace, rest) = match rest {
        // namespaces/{name}/status|finalize is the Namespace itself.
        ["namespaces", _, "status" | "finalize"] => (None, rest),
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(ns.to_string()), tail),
        _ => (None, rest),
    };
    match rest {
        [resource, tail @ ..] if tail.len() <= 2 => Route::Object(ObjectPath {
            group: group.into(),
            version: version.into(),
            namespace,
            resource: resource.to_string(),
            name: tail.first().map(|s| s.to_string()),
            subresource: tail.get(1).map(|s| s.to_string()),
        }),
        _ => Route::NotFound,
    }
}

/// Parses a request path.
pub fn parse(path: &str) -> Route {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "readyz" | "livez", ..] => Route::Health,
        ["api"] => Route::CoreVersions,
        ["api", v] => Route::Resources { group: String::new(), version: v.to_string() },
        ["api", v, rest @ ..] => object("", v, rest),
        ["apis"] => Route::Groups,
        ["apis", g] => Route::Group(g.to_string()),
        ["apis", g, v] => Route::Resources { group: g.to_string(), version: v.to_string() },
        ["apis", g, v, rest @ ..] => object(g, v, rest),
        ["openapi", "v2"] => Route::OpenApiV2,
        ["openapi", "v3"] => Route::OpenApiV3,
        ["openapi", "v3", "api", v] => Route::OpenApiV3Gv { group: String::new(), version: v.to_string() },
        ["openapi", "v3", "apis", g, v] => Route::OpenApiV3Gv { group: g.to_string(), version: v.to_string() },
        ["sim", rest @ ..] => Route::Sim(rest.iter().map(|s| s.to_string()).collect()),
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(g: &str, ns: Option<&str>, r: &str, n: Option<&str>, s: Option<&str>) -> Route {
        Route::Object(ObjectPath {
            group: g.into(),
            version: "v1".into(),
            namespace: ns.map(Into::into),
            resource: r.into(),
            name: n.map(Into::into),
            subresource: s.map(Into::into),
        })
    }

    #[test]
    fn parses_resource_paths() {
        assert_eq!(parse("/api/v1/namespaces"), obj("", None, "namespaces", None, None));
        assert_eq!(parse("/api/v1/namespaces/x"), obj("", None, "namespaces", Some("x"), None));
        assert_eq!(parse("/api/v1/namespaces/x/status"), obj("", None, "namespaces", Some("x"), Some("status")));
        assert_eq!(parse("/api/v1/namespaces/x/pods"), obj("", Some("x"), "pods", None, None));
        assert_eq!(parse("/api/v1/namespaces/x/pods/p/log"), obj("", Some("x"), "pods", Some("p"), Some("log")));
        assert_eq!(parse("/apis/apps/v1/statefulsets"), obj("apps", None, "statefulsets", None, None));
        assert_eq!(parse("/apis/apps"), Route::Group("apps".into()));
        assert_eq!(parse("/api/v1/nodes/n1/status"), obj("", None, "nodes", Some("n1"), Some("status")));
    }
}
