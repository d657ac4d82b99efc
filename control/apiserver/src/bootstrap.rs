//! What exists from the first start: the system namespaces and the
//! `kubernetes` Service in `default`.

use serde_json::json;
use waggle_api::registry::lookup;
use waggle_api::{Reason, StatusError};

use crate::handlers::create_object;
use crate::owners::Writer;
use crate::state::App;

pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates whatever of the bootstrap objects is missing.
pub async fn ensure(app: &App) -> Result<(), StatusError> {
    let namespaces =
        lookup("", "v1", "namespaces").ok_or_else(|| StatusError::internal("namespaces not registered"))?;
    for ns in SYSTEM_NAMESPACES {
        if app.objects.try_get(namespaces, None, ns).await?.is_some() {
            continue;
        }
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        ignore_exists(create_object(app, namespaces, obj, &Writer::update("waggle-apiserver"), false).await)?;
    }
    let services = lookup("", "v1", "services").ok_or_else(|| StatusError::internal("services not registered"))?;
    if app.objects.try_get(services, Some("default"), "kubernetes").await?.is_some() {
        return Ok(());
    }
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "clusterIP": app.config.kubernetes_service_ip().to_string(),
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": app.config.secure_port}],
            "sessionAffinity": "None",
            "type": "ClusterIP",
        },
    });
    ignore_exists(create_object(app, services, svc, &Writer::update("waggle-apiserver"), false).await)?;
    Ok(())
}

fn ignore_exists(r: Result<serde_json::Value, StatusError>) -> Result<(), StatusError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.reason == Reason::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}
