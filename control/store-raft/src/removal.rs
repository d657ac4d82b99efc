//! Members removed from the cluster, and this member's own removal.
//!
//! openraft stops replicating to a member as soon as the membership without
//! it is appended, so a removed member usually never learns of its removal
//! from its log; it times out and campaigns. As in etcd (whose peers answer
//! a removed member "the member has been permanently removed from the
//! cluster" and which then stops), every member records the IDs that left
//! the applied membership (kept with the state machine), answers a vote
//! request from one of them with [`MEMBER_REMOVED`], and a member that gets
//! that answer, or applies its own removal, stops serving.

use std::collections::BTreeSet;
use std::sync::RwLock;

use openraft::Membership;
use tokio::sync::watch;
use tracing::error;

use crate::{Member, NodeId};

/// etcd's words (rafthttp's `errMemberRemoved`).
pub const MEMBER_REMOVED: &str = "the member has been permanently removed from the cluster";

/// The removed IDs this member knows of, and whether it is one of them.
#[derive(Debug)]
pub struct Removal {
    me: NodeId,
    removed: RwLock<BTreeSet<NodeId>>,
    me_removed: watch::Sender<bool>,
}

impl Removal {
    pub fn new(me: NodeId) -> Self {
        Self { me, removed: RwLock::default(), me_removed: watch::Sender::new(false) }
    }

    /// Whether `id` left the cluster (and was not added back).
    pub fn is_removed(&self, id: NodeId) -> bool {
        self.removed.read().map(|r| r.contains(&id)).unwrap_or(false)
    }

    pub fn removed(&self) -> BTreeSet<NodeId> {
        self.removed.read().map(|r| r.clone()).unwrap_or_default()
    }

    /// Sets the removed IDs (as stored with the state machine).
    pub fn restore(&self, removed: BTreeSet<NodeId>) {
        let me = removed.contains(&self.me);
        if let Ok(mut r) = self.removed.write() {
            *r = removed;
        }
        if me {
            self.mark_me_removed("this member's removal is in its applied state");
        }
    }

    /// Records a membership change being applied: the members of `before`
    /// missing from `after` are removed, the members of `after` are not.
    pub fn apply(&self, before: &Membership<NodeId, Member>, after: &Membership<NodeId, Member>) {
        let (gone, me) = {
            let Ok(mut removed) = self.removed.write() else { return };
            for (id, _) in before.nodes() {
                if after.get_node(id).is_none() {
                    removed.insert(*id);
                }
            }
            for (id, _) in after.nodes() {
                removed.remove(id);
            }
            (removed.len(), removed.contains(&self.me))
        };
        if me {
            self.mark_me_removed("applied a membership without this member");
        } else {
            tracing::debug!(removed = gone, "membership applied");
        }
    }

    /// This member was removed: it stops serving.
    pub fn mark_me_removed(&self, how: &str) {
        if !self.me_removed.send_replace(true) {
            error!(
                id = format_args!("{:x}", self.me),
                how, "{MEMBER_REMOVED}; the data-dir used by this member must be removed"
            );
        }
    }

    pub fn me_removed(&self) -> bool {
        *self.me_removed.borrow()
    }

    /// Resolves once this member is removed.
    pub async fn wait_me_removed(&self) {
        let mut rx = self.me_removed.subscribe();
        let _ = rx.wait_for(|removed| *removed).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn membership(ids: &[NodeId]) -> Membership<NodeId, Member> {
        let nodes: BTreeMap<NodeId, Member> = ids.iter().map(|id| (*id, Member::default())).collect();
        Membership::new(vec![ids.iter().copied().collect()], nodes)
    }

    #[test]
    fn members_that_leave_the_membership_are_removed_until_added_back() {
        let r = Removal::new(1);
        r.apply(&membership(&[1, 2, 3]), &membership(&[1, 2]));
        assert!(r.is_removed(3) && !r.is_removed(2) && !r.me_removed());
        r.apply(&membership(&[1, 2]), &membership(&[1, 2, 3]));
        assert!(!r.is_removed(3));
        r.apply(&membership(&[1, 2, 3]), &membership(&[2, 3]));
        assert!(r.me_removed());
    }
}
