//! The Service load-balancer reconciler: Services + EndpointSlices →
//! [`desired_state`] (pure; kept per Service by [`ServiceIndex`]) →
//! [`apply_changes`] (writes only what changed, looking only at what the
//! index says changed; [`apply_diff`] compares everything, at start-up).

pub mod apply;
pub mod desired;
pub mod index;
pub mod maglev;
pub mod model;

pub use apply::{ApplyStats, Changes, Current, LbWriters, apply_changes, apply_diff};
pub use desired::{Backend, DesiredMaps, Frontend, FrontendSpec, GroupKey, desired_state};
pub use index::{ObjectKey, RefreshStats, ServiceIndex};
pub use maglev::maglev_table;
pub use model::{Endpoint, EndpointPort, EndpointSlice, Node, Protocol, Service, ServicePort};
