//! URL → what is addressed. Resource paths follow upstream's layout:
//! `/api/v1[/namespaces/<ns>]/<plural>[/<name>[/<sub>]]` and the same under
//! `/apis/<group>/<version>`.

use waggle_api::registry::{self, ResourceInfo};

/// What a request path addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Version,
    Health,
    Metrics,
    CoreRoot,
    GroupsRoot,
    Group(String),
    ResourceList {
        group: String,
        version: String,
    },
    OpenApiV3Index,
    OpenApiV3(String),
    OpenApiV2,
    Resource(Target),
    /// A group-version we serve, but a resource we do not.
    UnknownResource {
        plural: String,
    },
    NotFound,
}

/// A resource path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub resource: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

pub fn route(path: &str) -> Route {
    let trimmed = path.trim_end_matches('/');
    match trimmed {
        "/version" => return Route::Version,
        "/healthz" | "/livez" | "/readyz" => return Route::Health,
        "/metrics" => return Route::Metrics,
        "/api" => return Route::CoreRoot,
        "/apis" => return Route::GroupsRoot,
        "/openapi/v3" => return Route::OpenApiV3Index,
        "/openapi/v2" | "/swagger-2.0.0.pb-v1" => return Route::OpenApiV2,
        _ => {}
    }
    if let Some(rest) = trimmed.strip_prefix("/openapi/v3/") {
        return Route::OpenApiV3(rest.to_owned());
    }
    if trimmed.starts_with("/healthz/") || trimmed.starts_with("/livez/") || trimmed.starts_with("/readyz/") {
        return Route::Health;
    }
    let segs: Vec<&str> = trimmed.trim_start_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g] => return Route::Group((*g).to_owned()),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::NotFound,
    };
    if registry::resources_of(group, version).next().is_none() {
        return Route::NotFound;
    }
    if rest.is_empty() {
        return Route::ResourceList { group: group.into(), version: version.into() };
    }
    let lookup = |plural: &str| registry::lookup(group, version, plural);
    let unknown = |plural: &str| Route::UnknownResource { plural: plural.to_owned() };
    // `namespaces/<ns>/<plural>…` addresses a namespaced resource, unless the
    // third segment is a subresource of the namespace itself.
    if rest[0] == "namespaces" && rest.len() >= 3 {
        if let Some(r) = lookup(rest[2]).filter(|r| r.namespaced()) {
            return match rest.len() {
                3 => target(r, Some(rest[1]), None, None),
                4 => target(r, Some(rest[1]), Some(rest[3]), None),
                5 => target(r, Some(rest[1]), Some(rest[3]), Some(rest[4])),
                _ => Route::NotFound,
            };
        }
        if rest.len() > 3 {
            return unknown(rest[2]);
        }
    }
    let Some(r) = lookup(rest[0]) else { return unknown(rest[0]) };
    match rest.len() {
        1 => target(r, None, None, None),
        2 => target(r, None, Some(rest[1]), None),
        3 => target(r, None, Some(rest[1]), Some(rest[2])),
        _ => Route::NotFound,
    }
}

fn target(r: &'static ResourceInfo, ns: Option<&str>, name: Option<&str>, sub: Option<&str>) -> Route {
    Route::Resource(Target {
        resource: r,
        namespace: ns.map(str::to_owned),
        name: name.map(str::to_owned),
        subresource: sub.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(path: &str) -> Target {
        match route(path) {
            Route::Resource(t) => t,
            other => panic!("{path} routed to {other:?}"),
        }
    }

    #[test]
    fn routes_namespaced_and_cluster_paths() {
        let x = t("/api/v1/namespaces/default/pods/p1/status");
        assert_eq!(
            (x.resource.plural, x.namespace.as_deref(), x.name.as_deref(), x.subresource.as_deref()),
            ("pods", Some("default"), Some("p1"), Some("status"))
        );
        let x = t("/apis/apps/v1/deployments");
        assert_eq!((x.resource.plural, x.namespace, x.name), ("deployments", None, None));
        let x = t("/api/v1/namespaces/demo");
        assert_eq!((x.resource.plural, x.name.as_deref()), ("namespaces", Some("demo")));
        let x = t("/api/v1/namespaces/demo/status");
        assert_eq!(
            (x.resource.plural, x.name.as_deref(), x.subresource.as_deref()),
            ("namespaces", Some("demo"), Some("status"))
        );
        let x = t("/api/v1/namespaces/demo/pods");
        assert_eq!((x.resource.plural, x.namespace.as_deref(), x.name), ("pods", Some("demo"), None));
    }

    #[test]
    fn routes_discovery_and_unknowns() {
        assert_eq!(route("/api/v1"), Route::ResourceList { group: "".into(), version: "v1".into() });
        assert_eq!(route("/apis/apps"), Route::Group("apps".into()));
        assert_eq!(route("/api/v1/widgets"), Route::UnknownResource { plural: "widgets".into() });
        assert_eq!(route("/apis/nope/v1/things"), Route::NotFound);
        assert_eq!(route("/openapi/v3/apis/apps/v1"), Route::OpenApiV3("apis/apps/v1".into()));
    }
}
