//! Cross-region replication, the source side: rules and peers, the streams, and the replicator that
//! copies files and pushes changes. The destination side, which applies a change to a replica, is
//! `catalog::replica`; the protocol between them is `contract::peer_protocol`.

pub mod admin;
pub mod copy;
pub mod delete_files;
pub mod destinations;
pub mod diverged;
pub mod paths;
pub mod peer_client;
pub mod peer_url;
pub mod plan;
pub mod promote;
mod push;
pub mod sync;
pub mod worker;

pub use worker::{Replicator, ReplicatorHandle};
