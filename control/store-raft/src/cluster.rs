//! Membership changes at runtime, as etcd's `Cluster` service asks for
//! them: [`RaftStore`] implements [`Membership`], and a follower hands each
//! change to the leader, which alone can propose it.
//!
//! `MemberAdd` of a voter adds a learner first (non-blocking, so the call
//! returns before the new member is even started, as with etcd) and promotes
//! it once it has caught up with the leader's log; until then it does not
//! count towards the quorum.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use waggle_store::StoreError;
use waggle_store::grpc::{MemberInfo, Membership, member_id};

use crate::command::WireError;
use crate::network::{ForwardReply, Forwarded};
use crate::store::{RaftStore, unexpected};
use crate::{Member, NodeId, Raft};

/// How far behind the leader's log a learner may be when it is promoted.
const CAUGHT_UP_ENTRIES: u64 = 100;

/// How long the leader keeps waiting for a new member to catch up.
const PROMOTE_WITHIN: Duration = Duration::from_secs(600);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add a learner; with `promote`, make it a voter once it has caught up.
    Add { id: NodeId, member: Member, promote: bool },
    /// Make a learner a voter.
    Promote(NodeId),
    /// Remove a voter or a learner.
    Remove(NodeId),
    /// Record a member's name and client URLs (its peer URL unchanged), as
    /// an etcd member publishes its attributes when it starts.
    Publish { id: NodeId, member: Member },
}

fn raft_error(op: &str, e: impl std::fmt::Display) -> WireError {
    WireError::Internal { op: op.to_owned(), reason: e.to_string() }
}

/// Applies a change on the leader.
pub(crate) async fn apply(raft: &Raft, change: MembershipChange) -> Result<(), WireError> {
    match change {
        MembershipChange::Add { id, member, promote } => {
            raft.add_learner(id, member.clone(), false).await.map_err(|e| raft_error("adding a learner", e))?;
            info!(id = format_args!("{id:x}"), %member, promote, "learner added");
            if promote {
                tokio::spawn(promote_when_caught_up(raft.clone(), id));
            }
        }
        MembershipChange::Promote(id) => {
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(|e| raft_error("promoting a learner", e))?;
            info!(id = format_args!("{id:x}"), "learner promoted to voter");
        }
        MembershipChange::Remove(id) => {
            let voter = raft.metrics().borrow().membership_config.membership().voter_ids().any(|v| v == id);
            let change = if voter {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            raft.change_membership(change, false).await.map_err(|e| raft_error("removing a member", e))?;
            info!(id = format_args!("{id:x}"), "member removed");
        }
        MembershipChange::Publish { id, member } => {
            let known = raft.metrics().borrow().membership_config.membership().get_node(&id).cloned();
            match known {
                Some(k) if k.peer_url != member.peer_url => {
                    return Err(raft_error(
                        "publishing a member's attributes",
                        format!("member {id:x} is known at {}, not {}", k.peer_url, member.peer_url),
                    ));
                }
                Some(k) if k == member => {}
                Some(_) => {
                    raft.change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, member)])), false)
                        .await
                        .map_err(|e| raft_error("publishing a member's attributes", e))?;
                }
                None => {
                    return Err(raft_error("publishing a member's attributes", format!("{id:x} is not a member")));
                }
            }
        }
    }
    Ok(())
}

/// On the leader: promotes learner `id` once its replicated log is within
/// [`CAUGHT_UP_ENTRIES`] of the leader's.
async fn promote_when_caught_up(raft: Raft, id: NodeId) {
    let deadline = tokio::time::Instant::now() + PROMOTE_WITHIN;
    let mut metrics = raft.metrics();
    loop {
        let ready = {
            let m = metrics.borrow_and_update();
            let membership = m.membership_config.membership();
            if membership.get_node(&id).is_none() || membership.voter_ids().any(|v| v == id) {
                return;
            }
            if m.current_leader != Some(m.id) {
                warn!(
                    id = format_args!("{id:x}"),
                    "lost leadership before the learner caught up; promote it with `member promote`"
                );
                return;
            }
            let last = m.last_log_index.unwrap_or(0);
            let matched = m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map(|l| l.index);
            matched.is_some_and(|i| i + CAUGHT_UP_ENTRIES >= last)
        };
        if ready {
            match raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false).await {
                Ok(_) => {
                    info!(id = format_args!("{id:x}"), "caught-up learner promoted to voter");
                    return;
                }
                Err(e) => warn!(id = format_args!("{id:x}"), error = %e, "promoting the learner failed; retrying"),
            }
        }
        if tokio::time::timeout_at(deadline, metrics.changed()).await.is_err() {
            warn!(
                id = format_args!("{id:x}"),
                "the learner did not catch up in time; promote it with `member promote`"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl RaftStore {
    /// Applies a membership change on the leader, wherever it is.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), StoreError> {
        match self.inner.remote_leader()? {
            None => apply(&self.inner.raft, change).await.map_err(StoreError::from),
            Some(leader) => match self.inner.forwarder.forward(&leader, &Forwarded::Membership(change)).await? {
                ForwardReply::MembershipChanged => Ok(()),
                other => Err(unexpected("forwarding a membership change", other)),
            },
        }
    }

    /// Records this member's name and client URLs in the membership once a
    /// leader is known; retries until it succeeds or `within` passes.
    pub async fn publish(&self, member: Member, within: Duration) {
        let id = self.id();
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            let known = self.raft().metrics().borrow().membership_config.membership().get_node(&id).cloned();
            if known.as_ref() == Some(&member) {
                return;
            }
            if known.is_some() && self.leader().is_some() {
                match self.change_membership(MembershipChange::Publish { id, member: member.clone() }).await {
                    Ok(()) => return,
                    Err(e) => warn!(error = %e, "publishing this member's name and client URLs failed; retrying"),
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn info_of(id: NodeId, member: &Member, is_learner: bool) -> MemberInfo {
    MemberInfo {
        id,
        name: member.name.clone(),
        peer_urls: vec![member.peer_url.clone()],
        client_urls: member.client_urls.clone(),
        is_learner,
    }
}

#[async_trait::async_trait]
impl Membership for RaftStore {
    fn members(&self) -> Vec<MemberInfo> {
        let metrics = self.raft().metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership.nodes().map(|(id, node)| info_of(*id, node, !voters.contains(id))).collect()
    }

    fn leader(&self) -> u64 {
        RaftStore::leader(self).unwrap_or(0)
    }

    fn term(&self) -> u64 {
        self.raft().metrics().borrow().current_term
    }

    async fn add(&self, peer_urls: Vec<String>, is_learner: bool) -> Result<MemberInfo, StoreError> {
        let id = member_id(&peer_urls);
        let peer_url = peer_urls.first().cloned().unwrap_or_default();
        let member = Member { name: String::new(), peer_url, client_urls: Vec::new() };
        self.change_membership(MembershipChange::Add { id, member: member.clone(), promote: !is_learner }).await?;
        Ok(info_of(id, &member, true))
    }

    async fn remove(&self, id: u64) -> Result<(), StoreError> {
        self.change_membership(MembershipChange::Remove(id)).await
    }

    async fn promote(&self, id: u64) -> Result<(), StoreError> {
        self.change_membership(MembershipChange::Promote(id)).await
    }
}
