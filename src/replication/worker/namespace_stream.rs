//! A namespace's stream: its properties replicate as the namespace's whole state (migrations/0023),
//! as a view's metadata does. Each turn sends the properties at the namespace's current properties
//! version, from the version the destination holds; the destination keeps them only if they follow
//! what it holds (`catalog::namespace_replica`), so a stream that restarts, rewinds or is resent
//! never moves the replica's properties back. A namespace dropped at the source ends its streams;
//! its replicas stay as they are (namespace drops are not replicated: the replica's tables and
//! views follow their own rules).

use super::{Done, Failure, Replicator, Target};
use crate::catalog::namespace_replica::properties_for_destination;
use crate::contract::peer_protocol::{ApplyAction, Position};
use crate::db::replica_namespaces as db;
use crate::db::replication::{StreamRow, StreamUpdate};

impl Replicator {
    pub(super) async fn drive_namespace(
        &self,
        s: &mut StreamRow,
        mut target: Target,
    ) -> Result<Done, Failure> {
        let Some(state) = db::get_namespace_state(self.pool(), s.table_id).await? else {
            return Ok(Done::Finished);
        };
        if state.properties_version <= s.applied_version {
            return Ok(Done::CaughtUp);
        }
        // A replica namespace carries its origin further, as a replica table does.
        if let Some(origin) = state.origin_region {
            target.origin = (origin, None);
        }
        let mut namespace = s.namespace_prefix.clone();
        namespace.extend(state.levels);
        let destination_root = target
            .dest_root
            .join_all(&s.namespace_prefix)
            .map_err(|e| Failure::Permanent(format!("replica namespace location: {e}")))?;
        let properties =
            properties_for_destination(&state.properties, &target.wh.root, &destination_root);
        s.dest_namespace = Some(namespace.clone());
        let from = (s.applied_version > 0).then(|| Position::at(s.applied_version));
        let to = Position::at(state.properties_version);
        self.send(
            s,
            &target,
            from,
            to,
            ApplyAction::NamespaceProperties { properties },
            None,
        )
        .await
        .map_err(|failure| {
            failure.within(&format!(
                "namespace properties version {}",
                state.properties_version
            ))
        })?;
        self.record(
            s,
            StreamUpdate::Applied {
                version: state.properties_version,
                metadata_location: None,
                dest_namespace: namespace,
                dest_table: String::new(),
            },
        )
        .await?;
        s.applied_version = state.properties_version;
        Ok(Done::CaughtUp)
    }
}
