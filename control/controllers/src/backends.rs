//! Which pods back a Service and on which ports: shared by the Endpoints
//! and EndpointSlice controllers (upstream's endpointutil). Also the
//! controller wiring both use: Services trigger, and so do pods, mapped to
//! the Services whose selector they match.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt as _;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::pod_state;

/// One resolved port of a Service for one pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    pub name: Option<String>,
    pub port: i32,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

/// One pod behind a Service.
#[derive(Clone, Debug)]
pub struct Backend {
    pub pod: Arc<Pod>,
    pub ip: String,
    pub ready: bool,
    pub terminating: bool,
}

/// The selector of a Service that selects pods (`None`: endpoints are the
/// user's business).
pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

pub fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(sel) = selector(svc) else { return false };
    pod.namespace() == svc.namespace() && sel.iter().all(|(k, v)| pod.labels().get(k) == Some(v))
}

/// Pods with an IP that the Service selects, grouped by their resolved
/// ports (named target ports can resolve differently per pod).
pub fn backends(svc: &Service, pods: &Store<Pod>) -> BTreeMap<Vec<Port>, Vec<Backend>> {
    let mut out: BTreeMap<Vec<Port>, Vec<Backend>> = BTreeMap::new();
    let publish_not_ready = svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    for pod in pods.state() {
        if !selects(svc, &pod) {
            continue;
        }
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).filter(|ip| !ip.is_empty()) else { continue };
        if matches!(pod_state::phase(&pod), "Succeeded" | "Failed") {
            continue;
        }
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let ready = publish_not_ready || pod_state::is_ready(&pod);
        out.entry(ports(svc, &pod)).or_default().push(Backend { pod, ip, ready, terminating });
    }
    for group in out.values_mut() {
        group.sort_by(|a, b| a.ip.cmp(&b.ip));
    }
    out
}

fn ports(svc: &Service, pod: &Pod) -> Vec<Port> {
    let mut out = Vec::new();
    for sp in svc.spec.as_ref().and_then(|s| s.ports.as_ref()).map(Vec::as_slice).unwrap_or_default() {
        let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
        let port = match &sp.target_port {
            Some(IntOrString::Int(p)) => Some(*p),
            Some(IntOrString::String(name)) => name.parse().ok().or_else(|| named_port(pod, name, &protocol)),
            None => Some(sp.port),
        };
        // A named port the pod does not declare leaves that port out for it.
        if let Some(port) = port {
            out.push(Port { name: sp.name.clone(), port, protocol, app_protocol: sp.app_protocol.clone() });
        }
    }
    out.sort();
    out
}

fn named_port(pod: &Pod, name: &str, protocol: &str) -> Option<i32> {
    pod.spec.as_ref()?.containers.iter().flat_map(|c| c.ports.iter().flatten()).find_map(|p| {
        (p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol)
            .then_some(p.container_port)
    })
}

/// The Services a pod change concerns.
pub fn services_for(services: &Store<Service>, pod: &Pod) -> Vec<ObjectRef<Service>> {
    services.state().iter().filter(|s| selects(s, pod)).map(|s| ObjectRef::from_obj(s.as_ref())).collect()
}

/// What a controller of a Service's backends reads: the client and the pods.
pub struct ServiceCtx {
    pub client: kube::Client,
    pub pods: Store<Pod>,
}

impl std::fmt::Debug for ServiceCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCtx").finish_non_exhaustive()
    }
}

/// Runs a controller that reconciles each Service into objects of kind `K`
/// it owns (Endpoints, EndpointSlices), woken by the Service, by what it owns
/// and by the pods its selector matches.
pub async fn run_for_services<K, F, Fut>(
    client: kube::Client,
    informers: &crate::informer::Informers,
    name: &'static str,
    reconcile: F,
) -> Result<(), crate::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    F: FnMut(Arc<Service>, Arc<ServiceCtx>) -> Fut,
    Fut: std::future::Future<Output = Result<kube::runtime::controller::Action, crate::Error>> + Send + 'static,
{
    use kube::Api;
    use kube::runtime::controller::Controller;
    use kube::runtime::watcher;
    let ctx = Arc::new(ServiceCtx { client: client.clone(), pods: informers.pods.store() });
    let (service_events, pod_events) = (informers.services.subscribe(), informers.pods.subscribe());
    informers.pods.ready().await;
    informers.services.ready().await;
    let services = informers.services.store();
    let controller = Controller::for_shared_stream(service_events, services.clone())
        .owns(Api::<K>::all(client), watcher::Config::default())
        .watches_shared_stream(pod_events, move |pod: Arc<Pod>| services_for(&services, &pod));
    crate::informer::drive(controller, name, ctx, reconcile).await;
    Ok(())
}
