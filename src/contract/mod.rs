//! Types that cross a boundary and so belong to no single layer: what one floe sends another when
//! replicating (`peer_protocol`), and replication's peers, rules and status as the management API and
//! the database exchange them (`replication_model`). They depend on nothing else of floe's.

pub mod peer_protocol;
pub mod replication_model;
