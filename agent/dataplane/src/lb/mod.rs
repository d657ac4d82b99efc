//! The Service load-balancer reconciler: Services + EndpointSlices →
//! [`desired_state`] (pure; kept per Service by [`ServiceIndex`]) →
//! [`apply_diff`] (writes only what changed).

pub mod apply;
pub mod desired;
pub mod index;
pub mod maglev;
pub mod model;

pub use apply::{ApplyStats, Current, LbWriters, apply_diff};
pub use desired::{Backend, DesiredMaps, Frontend, FrontendSpec, GroupKey, desired_state};
pub use index::{ObjectKey, RefreshStats, ServiceIndex};
pub use maglev::maglev_table;
pub use model::{Endpoint, EndpointPort, EndpointSlice, Node, Protocol, Service, ServicePort};
