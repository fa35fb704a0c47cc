//! The position rule of what replicates as a whole state (views, namespace properties), in one
//! place: each change carries the source's whole state at a version, so the replica never needs
//! the states between, only never to move back. And the refusal every replicated change gets when
//! a newer lease of its stream has already applied something (see migrations/0011).
//!
//! Against what the replica holds (its generation and version, or nothing): a state at or below the
//! version held, in the same generation, is a repeat, acknowledged without effect; one that does
//! not follow the version held is refused with that position, so the sender resumes from there;
//! a change to a replica that is not here must be the first (`from` none), and one of an older
//! generation than the replica's is refused. A newer generation (a resync) replaces what is held.

use sqlx::PgConnection;

use crate::contract::peer_protocol::{ApplyRequest, Position, ReplicaPosition};
use crate::error::{CatalogError, CatalogResult};

use super::Warehouse;

/// The refusal of a change sent under a lease that a newer one of its stream replaced; `what`
/// names the replica (`db.t`, `view db.v`, `the properties of namespace db`).
pub(super) fn stale_lease(what: &str, req: &ApplyRequest) -> CatalogError {
    CatalogError::StaleLease(format!(
        "the change to {what} from region `{}` was sent under lease {}, which a newer lease of its \
         stream has replaced; it is not applied",
        req.source_region, req.lease_token
    ))
}

/// Passes the change's lease fence in its transaction, or refuses it (see [`stale_lease`]).
pub(super) async fn pass_fence(
    tx: &mut PgConnection,
    wh: &Warehouse,
    req: &ApplyRequest,
    what: &str,
) -> CatalogResult<()> {
    let passed = crate::db::catalog::pass_replica_fence(
        tx,
        wh.id,
        &req.source_region,
        req.source_table_id,
        req.lease_token,
    )
    .await?;
    if passed {
        Ok(())
    } else {
        Err(stale_lease(what, req))
    }
}

/// What a whole-state change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StateDecision {
    /// Applied before: the replica is at this position.
    Repeat(Position),
    /// Apply it (over what is held, if anything).
    Apply,
}

/// Decides a whole-state change against the replica's position; `what` names the replica for the
/// refusals ("source view 0190... from region `eu`").
pub(super) fn decide_state(
    req: &ApplyRequest,
    held: Option<ReplicaPosition>,
    what: &str,
) -> CatalogResult<StateDecision> {
    let Some(at) = held else {
        return match req.from {
            None => Ok(StateDecision::Apply),
            Some(from) => Err(CatalogError::ReplicaPosition {
                message: format!(
                    "the change expects the replica at {from}, but no replica of {what} exists here"
                ),
                position: None,
            }),
        };
    };
    if at.generation > req.generation {
        return Err(CatalogError::ReplicaPosition {
            message: format!(
                "the replica is of generation {}, newer than {}",
                at.generation, req.generation
            ),
            position: Some(at),
        });
    }
    if at.generation == req.generation {
        if at.position >= req.to {
            return Ok(StateDecision::Repeat(at.position));
        }
        if req.from != Some(at.position) {
            return Err(CatalogError::ReplicaPosition {
                message: format!(
                    "the change expects the replica at {}, but it is at {}",
                    req.from
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "no replica".to_string()),
                    at.position
                ),
                position: Some(at),
            });
        }
    }
    Ok(StateDecision::Apply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::peer_protocol::{ApplyAction, Retention};

    fn request(generation: i64, from: Option<i64>, to: i64) -> ApplyRequest {
        ApplyRequest {
            source_region: "eu".into(),
            origin_region: "eu".into(),
            origin_url: None,
            source_table_id: uuid::Uuid::nil(),
            warehouse: "wh".into(),
            namespace: vec!["db".into()],
            name: String::new(),
            generation,
            lease_token: 1,
            epoch: 1,
            source_warehouse: None,
            source_namespace: None,
            supersedes: None,
            from: from.map(Position::at),
            to: Position::at(to),
            action: ApplyAction::DropView,
            retention: Retention::KeepAll,
            last_updated_ms: None,
            group: None,
        }
    }

    fn at(generation: i64, version: i64) -> Option<ReplicaPosition> {
        Some(ReplicaPosition {
            generation,
            position: Position::at(version),
        })
    }

    #[test]
    fn a_state_applies_only_forward_from_what_is_held() {
        let decide = |req, held| decide_state(&req, held, "it");
        assert_eq!(
            decide(request(1, None, 1), None).unwrap(),
            StateDecision::Apply
        );
        assert_eq!(
            decide(request(1, Some(3), 5), at(1, 3)).unwrap(),
            StateDecision::Apply
        );
        // Resent or older: acknowledged, nothing moves back.
        assert_eq!(
            decide(request(1, Some(2), 3), at(1, 5)).unwrap(),
            StateDecision::Repeat(Position::at(5))
        );
        // A gap, a first send to a replica that exists, an older generation: refused.
        assert!(decide(request(1, Some(2), 6), at(1, 5)).is_err());
        assert!(decide(request(1, None, 6), at(1, 5)).is_err());
        assert!(decide(request(1, None, 9), at(2, 1)).is_err());
        assert!(decide(request(1, Some(1), 2), None).is_err());
        // A resync replaces what is held.
        assert_eq!(
            decide(request(3, None, 2), at(2, 7)).unwrap(),
            StateDecision::Apply
        );
    }
}
