//! The confirm phase at one destination (see `replication::sync`), and the send of any committed
//! change there: applied, sent again while the destination is unreachable or holds it for its
//! transaction group.

use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::{RECHECK_FIRST, RECHECK_MAX, Send, Shared};
use crate::contract::peer_protocol::{ApplyGroup, ApplyRequest};
use crate::db::replication::StreamRow;
use crate::db::sync_streams::{self as db, SyncDestination};
use crate::replication::peer_client::PeerError;

/// How often an update the destination parks (its transaction group incomplete) is sent again.
const GROUP_RESEND: Duration = Duration::from_millis(10);

impl Shared {
    /// Applies a prepared change at its destination, now that it is committed here.
    pub(super) async fn confirm_one(
        &self,
        send: Send,
        txn_group: Option<Uuid>,
        deadline: Instant,
    ) -> (SyncDestination, Result<(), String>) {
        let Send {
            destination,
            mut request,
        } = send;
        let Some(stream) = &destination.stream else {
            return (destination, Err("its stream is gone".to_string()));
        };
        let to = (&destination.peer_region, &destination.dest_warehouse);
        let result = self
            .deliver(&stream.row, to, &mut request, txn_group, deadline)
            .await;
        let outcome = match &result {
            Ok(_) => "ack",
            Err(_) if Instant::now() >= deadline => "timeout",
            Err(_) => "refused",
        };
        crate::telemetry::record_sync_answer(&destination.peer_region, "confirm", outcome);
        let result = match result {
            Ok(location) => {
                self.record_applied(&stream.row, &request, location.as_deref(), true)
                    .await;
                Ok(())
            }
            Err(reason) => {
                self.record_missed(&stream.row, &reason).await;
                Err(reason)
            }
        };
        (destination, result)
    }

    /// Applies a committed change at a destination (`(peer, warehouse)`, through `stream`), as
    /// one of its transaction group's there when `txn_group` is set; sent again while the
    /// destination is unreachable or holds it for its group, and under the stream's newer lease
    /// token when the stream's task took one meanwhile. A repeat (the stream got there first)
    /// counts as applied. `Ok` has the replica's metadata location, when the answer gave it.
    pub(super) async fn deliver(
        &self,
        stream: &StreamRow,
        (peer, dest_warehouse): (&String, &String),
        request: &mut ApplyRequest,
        txn_group: Option<Uuid>,
        deadline: Instant,
    ) -> Result<Option<String>, String> {
        if let Some(group) = txn_group {
            // Counted as the stream counts it, so the destination waits for the same members.
            let members = crate::db::replica_groups::members_for_destination(
                &self.pool,
                group,
                peer,
                dest_warehouse,
            )
            .await
            .map_err(|e| format!("counting its transaction group: {e}"))?;
            request.group = (members > 1).then(|| ApplyGroup {
                id: group,
                members: u32::try_from(members).unwrap_or(u32::MAX),
            });
        }
        let credential = stream
            .peer_credential
            .as_ref()
            .map(crate::secret::Secret::expose);
        let mut pause = RECHECK_FIRST;
        loop {
            let sent = self
                .client
                .apply(peer, &stream.peer_base_url, credential, request);
            let (wait, reason) = match tokio::time::timeout_at(deadline, sent).await {
                Err(_) => return Err("no answer".to_string()),
                Ok(Ok(response)) if response.parked => (
                    GROUP_RESEND,
                    "it held the change for the rest of its transaction group".to_string(),
                ),
                Ok(Ok(response)) => return Ok(response.metadata_location),
                Ok(Err(PeerError::Position {
                    position: Some(at), ..
                })) if at.generation == request.generation && at.position >= request.to => {
                    return Ok(None);
                }
                Ok(Err(PeerError::LeaseRevoked { message, .. })) => {
                    let token =
                        crate::db::replication::stream_lease_token(&self.pool, stream.stream_id)
                            .await
                            .map_err(|e| format!("reading its stream: {e}"))?;
                    match token {
                        Some(token) if token > request.lease_token => {
                            request.lease_token = token;
                            (Duration::ZERO, message)
                        }
                        _ => return Err(message),
                    }
                }
                Ok(Err(PeerError::Unavailable { message, .. })) => {
                    let wait = pause;
                    pause = (pause * 2).min(RECHECK_MAX);
                    (wait, message)
                }
                Ok(Err(err)) => return Err(err.to_string()),
            };
            if Instant::now() + wait >= deadline {
                return Err(reason);
            }
            tokio::time::sleep(wait).await;
        }
    }
}

impl Shared {
    /// Records the apply at the stream (`db::sync_streams::record_applied`: `confirmed` for a
    /// synchronous commit's own change), so that its task has nothing to send again; a failure
    /// only leaves that to the task.
    pub(super) async fn record_applied(
        &self,
        stream: &StreamRow,
        request: &ApplyRequest,
        metadata_location: Option<&str>,
        confirmed: bool,
    ) {
        let version = request.to.version;
        if let Err(err) =
            db::record_applied(&self.pool, stream, version, metadata_location, confirmed).await
        {
            tracing::debug!(%err, stream = %stream.stream_id, version,
                "a synchronous apply was not recorded at its stream; its task will");
        }
    }

    /// Records at the stream that its destination could not take a synchronous commit, for the
    /// table's status.
    pub(super) async fn record_missed(&self, stream: &StreamRow, reason: &str) {
        if let Err(err) = db::record_missed(&self.pool, stream.stream_id, reason).await {
            tracing::debug!(%err, stream = %stream.stream_id,
                "a synchronous commit's miss was not recorded at its stream");
        }
    }
}
