//! Cross-region replication: the source side (rules, streams, the replicator that copies files
//! and pushes changes) and the wire protocol both sides share. The destination side, which
//! applies a change to a replica, is `catalog::replica`.

pub mod admin;
pub mod avro;
pub mod copy;
pub mod delete_files;
pub mod model;
pub mod paths;
pub mod peer_client;
pub mod plan;
pub mod protocol;
pub mod worker;

pub use worker::{Replicator, ReplicatorHandle};
