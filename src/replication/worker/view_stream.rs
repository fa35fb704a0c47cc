//! A view's stream: views replicate as their whole state (migrations/0022), so there is no backfill
//! and no per-change translation. Each turn sends the view's current metadata, its location moved
//! into the destination, at the view's current source version, from the version the destination
//! holds; a drop is sent (when the rule replicates drops) once the view is gone. The destination
//! keeps a state only if it follows what it holds (`catalog::view_replica`), so a stream that
//! restarts, rewinds or is resent never moves the replica back.

use serde_json::Value;

use super::{Done, Failure, Replicator, Target};
use crate::contract::peer_protocol::{ApplyAction, Position};
use crate::db::replication::{StreamRow, StreamUpdate};
use crate::db::views as views_db;
use crate::log;

impl Replicator {
    pub(super) async fn drive_view(
        &self,
        s: &mut StreamRow,
        mut target: Target,
    ) -> Result<Done, Failure> {
        let Some((row, name)) = views_db::get_view_by_id(self.pool(), s.table_id).await? else {
            return self.deliver_view_drop(s, &target).await;
        };
        // A replica view carries its origin further, as a replica table does.
        if let Some(origin) = &row.replica_of {
            target.origin = (origin.origin_region.clone(), origin.origin_url.clone());
        }
        let target = &target;
        if row.version <= s.applied_version {
            return Ok(Done::CaughtUp);
        }
        let mut namespace = s.namespace_prefix.clone();
        namespace.extend(name.namespace.levels().iter().cloned());
        let dest_location = match &s.dest_location {
            Some(location) => location.clone(),
            None => {
                // Fixed at the first send, as a replica table's location is: renames keep it.
                let location = target
                    .dest_root
                    .join_all(&namespace)
                    .and_then(|dir| dir.join(&format!("{}-{}", name.name, row.view_uuid.simple())))
                    .map_err(|e| Failure::Permanent(format!("replica view location: {e}")))?
                    .to_string();
                self.record(
                    s,
                    StreamUpdate::BackfillStarted {
                        version: row.version,
                        location: row.metadata_location.clone(),
                        dest_location: location.clone(),
                        dest_namespace: namespace.clone(),
                        dest_table: name.name.clone(),
                    },
                )
                .await?;
                s.dest_location = Some(location.clone());
                s.dest_namespace = Some(namespace.clone());
                s.dest_table = Some(name.name.clone());
                location
            }
        };
        let state = self
            .catalog
            .load_view_metadata(&target.wh, &row.metadata_location)
            .await?;
        // A view's metadata holds one path, its location.
        let mut metadata: Value = serde_json::from_str(&state.json)
            .map_err(|e| Failure::Permanent(format!("view metadata: {e}")))?;
        metadata["location"] = Value::from(dest_location);
        let from = (s.applied_version > 0).then(|| Position::at(s.applied_version));
        let action = ApplyAction::ViewState {
            metadata,
            namespace: namespace.clone(),
            name: name.name.clone(),
        };
        let location = self
            .send(s, target, from, Position::at(row.version), action, None)
            .await
            .map_err(|failure| failure.within(&format!("view version {}", row.version)))?;
        self.record(
            s,
            StreamUpdate::Applied {
                version: row.version,
                metadata_location: location,
                dest_namespace: namespace.clone(),
                dest_table: name.name.clone(),
            },
        )
        .await?;
        s.applied_version = row.version;
        s.dest_namespace = Some(namespace);
        s.dest_table = Some(name.name);
        Ok(Done::CaughtUp)
    }

    /// The view is gone at the source: its drop goes to a destination that was sent the view,
    /// when the rule replicates drops (otherwise the replica stays as it is, read-only).
    async fn deliver_view_drop(&self, s: &mut StreamRow, target: &Target) -> Result<Done, Failure> {
        let Some(drop) = log::find_table_drop(self.pool(), s.table_id, s.applied_version).await?
        else {
            return Ok(Done::Finished);
        };
        let version = drop.table_version.unwrap_or(s.applied_version + 1);
        if s.replicate_drops && s.dest_table.is_some() && s.applied_version > 0 {
            self.send(
                s,
                target,
                Some(Position::at(s.applied_version)),
                Position::at(version),
                ApplyAction::DropView,
                None,
            )
            .await?;
        }
        self.record(
            s,
            StreamUpdate::Applied {
                version,
                metadata_location: None,
                dest_namespace: s.dest_namespace.clone().unwrap_or_default(),
                dest_table: s.dest_table.clone().unwrap_or_default(),
            },
        )
        .await?;
        Ok(Done::Finished)
    }
}
