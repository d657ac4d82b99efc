//! The resource types the controllers act on, found through discovery.

use std::sync::Arc;

use kube::Client;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};

use crate::Error;

/// One served resource type.
#[derive(Clone, Debug)]
pub struct Resource {
    pub ar: ApiResource,
    pub namespaced: bool,
    pub verbs: Vec<String>,
}

impl Resource {
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }
}

/// Every resource type the server serves that can be listed and deleted.
pub async fn discover(client: &Client) -> Result<Arc<Vec<Resource>>, Error> {
    let discovery = Discovery::new(client.clone()).run().await.map_err(Error::kube("discovering the API"))?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            let ApiCapabilities { scope, operations, .. } = caps;
            let r = Resource { ar, namespaced: scope == Scope::Namespaced, verbs: operations };
            if r.supports("list") && r.supports("delete") && r.supports("watch") {
                out.push(r);
            }
        }
    }
    Ok(Arc::new(out))
}
