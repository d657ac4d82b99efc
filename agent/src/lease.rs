//! The node's Lease in kube-node-lease: the cheap heartbeat the node
//! lifecycle controller watches.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use crate::error::{Error, is_not_found};

pub const NAMESPACE: &str = "kube-node-lease";

/// Creates or renews the lease named after the node.
pub async fn renew(client: &kube::Client, node: &str, node_uid: Option<&str>, duration_secs: i32) -> Result<(), Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let now = MicroTime(jiff::Timestamp::now());
    let spec = LeaseSpec {
        holder_identity: Some(node.to_owned()),
        lease_duration_seconds: Some(duration_secs),
        renew_time: Some(now),
        ..Default::default()
    };
    match api.get_opt(node).await.map_err(Error::kube(format!("reading lease {NAMESPACE}/{node}")))? {
        Some(mut lease) => {
            lease.spec = Some(spec);
            match api.replace(node, &PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                // Someone else wrote it in between: the next renewal wins.
                Err(e) if crate::error::is_conflict(&e) || is_not_found(&e) => Ok(()),
                Err(e) => Err(Error::kube(format!("renewing lease {NAMESPACE}/{node}"))(e)),
            }
        }
        None => {
            let owner = node_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node.to_owned(),
                    uid: uid.to_owned(),
                    ..Default::default()
                }]
            });
            let lease = Lease {
                metadata: ObjectMeta { name: Some(node.to_owned()), owner_references: owner, ..Default::default() },
                spec: Some(spec),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(e) if crate::error::is_conflict(&e) => Ok(()),
                Err(e) => Err(Error::kube(format!("creating lease {NAMESPACE}/{node}"))(e)),
            }
        }
    }
}
