//! Who a caller is and what it may do.
//!
//! Authentication turns a request's credential into an [`Identity`]: a principal with
//! [`Grant`]s (a [`Role`], optionally limited to named warehouses), a peer region, or, where no
//! authentication is configured at all, `anonymous` with every role. Every route declares the
//! [`Access`] it needs in one table (`http::routes`); [`Identity::check`] is the one place that
//! compares the two. Roles nest: `admin` may do everything a `writer` may, a `writer` everything
//! a `reader` may. A peer's identity is accepted on the peer endpoint only, and nothing else
//! accepts one, so a token handed to another region for replication opens nothing else here.

pub mod authenticator;
pub mod issuer;
pub mod oidc;

use std::collections::BTreeSet;
use std::fmt;

pub use crate::config::Role;
pub use authenticator::Authenticator;

/// Why a credential was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// No credential, or one that is not valid here (401).
    #[error("{0}")]
    Invalid(String),
    /// The credential could not be checked now (an issuer's keys cannot be fetched: 503).
    #[error("{0}")]
    Unavailable(String),
}

/// Compares in time independent of where the inputs differ, so a secret cannot be guessed byte
/// by byte.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A role, on every warehouse or only on the named ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    pub warehouses: Option<BTreeSet<String>>,
}

impl Grant {
    /// Each role on the warehouses given (all when `None`).
    pub fn all(roles: &[Role], warehouses: Option<&[String]>) -> Vec<Grant> {
        roles
            .iter()
            .map(|&role| Grant {
                role,
                warehouses: warehouses.map(|w| w.iter().cloned().collect()),
            })
            .collect()
    }

    /// `reader`, `writer` or `admin`, optionally `:<warehouse>` (as a token's roles claim
    /// carries them); `None` for anything else.
    pub fn parse(text: &str) -> Option<Grant> {
        let (role, warehouse) = match text.split_once(':') {
            Some((role, warehouse)) if !warehouse.is_empty() => (role, Some(warehouse)),
            Some(_) => return None,
            None => (text, None),
        };
        Some(Grant {
            role: Role::parse(role)?,
            warehouses: warehouse.map(|w| BTreeSet::from([w.to_string()])),
        })
    }

    /// This grant limited further to `limit` (an issuer's or client's warehouses).
    pub fn within(mut self, limit: Option<&[String]>) -> Option<Grant> {
        let Some(limit) = limit else {
            return Some(self);
        };
        let limit: BTreeSet<String> = limit.iter().cloned().collect();
        let warehouses = match self.warehouses.take() {
            None => limit,
            Some(own) => own.intersection(&limit).cloned().collect(),
        };
        (!warehouses.is_empty()).then_some(Grant {
            role: self.role,
            warehouses: Some(warehouses),
        })
    }

    /// The strings [`Grant::parse`] reads back (one per warehouse).
    pub fn to_strings(&self) -> Vec<String> {
        match &self.warehouses {
            None => vec![self.role.to_string()],
            Some(warehouses) => warehouses
                .iter()
                .map(|w| format!("{}:{w}", self.role))
                .collect(),
        }
    }

    fn allows(&self, role: Role, warehouse: Scope<'_>) -> bool {
        self.role >= role
            && match (warehouse, &self.warehouses) {
                (_, None) => true,
                (Scope::Warehouse(name), Some(own)) => own.contains(name),
                (Scope::Any, Some(own)) => !own.is_empty(),
                (Scope::Every, Some(_)) => false,
            }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_strings().join(", "))
    }
}

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (the token endpoint: clients call it to get a credential).
    Public,
    /// A catalog role (reader or writer) on the warehouse the request names.
    Catalog(Role),
    /// The admin role: on the warehouse the route names, or on every warehouse.
    Admin,
    /// A peer region's replication token.
    Peer,
}

/// The warehouses a request concerns, as far as the route can tell before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// One named warehouse.
    Warehouse(&'a str),
    /// Whichever the caller holds a role on (`/v1/config` without `warehouse`).
    Any,
    /// All of them (region-wide management: peers, rules, the log, the audit trail).
    Every,
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Identity {
    /// No client authentication is configured: every caller may do everything but push replicas.
    Anonymous,
    /// An authenticated principal and its grants.
    Principal { name: String, grants: Vec<Grant> },
    /// A peer region, by its replication token.
    Peer { region: String },
}

impl Identity {
    /// The principal recorded in the update log and the audit trail.
    pub fn principal(&self) -> String {
        match self {
            Self::Anonymous => "anonymous".to_string(),
            Self::Principal { name, .. } => name.clone(),
            Self::Peer { region } => format!("peer:{region}"),
        }
    }

    /// Whether this caller may make a request that needs `access` within `scope`; the refusal
    /// says which role was missing.
    pub fn check(&self, access: Access, scope: Scope<'_>) -> Result<(), String> {
        let needed = match (access, self) {
            (Access::Public, _) => return Ok(()),
            (Access::Peer, Self::Peer { .. }) => return Ok(()),
            (Access::Peer, _) => {
                return Err(
                    "only peer regions may apply replicated changes: present a token \
                            listed under `replication.accept` of this floe"
                        .to_string(),
                );
            }
            (_, Self::Peer { region }) => {
                return Err(format!(
                    "the replication token of region `{region}` is accepted only on the peer \
                     endpoint (/internal/v1/...)"
                ));
            }
            (_, Self::Anonymous) => return Ok(()),
            (Access::Catalog(role), _) => role,
            (Access::Admin, _) => Role::Admin,
        };
        let Self::Principal { name, grants } = self else {
            unreachable!("the other identities are decided above")
        };
        if grants.iter().any(|g| g.allows(needed, scope)) {
            return Ok(());
        }
        let held = if grants.is_empty() {
            "no role".to_string()
        } else {
            grants
                .iter()
                .map(Grant::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let on = match scope {
            Scope::Warehouse(name) => format!(" on warehouse `{name}`"),
            Scope::Any => String::new(),
            Scope::Every => " on every warehouse".to_string(),
        };
        Err(format!(
            "this request needs role `{needed}`{on}; principal `{name}` has {held}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(grants: &[&str]) -> Identity {
        Identity::Principal {
            name: "p".to_string(),
            grants: grants.iter().map(|g| Grant::parse(g).unwrap()).collect(),
        }
    }

    #[test]
    fn roles_nest_and_warehouse_limits_hold() {
        let writer_on_lake = principal(&["writer:lake"]);
        let lake = Scope::Warehouse("lake");
        let other = Scope::Warehouse("other");
        assert!(
            writer_on_lake
                .check(Access::Catalog(Role::Reader), lake)
                .is_ok()
        );
        assert!(
            writer_on_lake
                .check(Access::Catalog(Role::Writer), lake)
                .is_ok()
        );
        assert!(
            writer_on_lake
                .check(Access::Catalog(Role::Reader), other)
                .is_err()
        );
        assert!(writer_on_lake.check(Access::Admin, lake).is_err());
        assert!(
            writer_on_lake
                .check(Access::Catalog(Role::Reader), Scope::Any)
                .is_ok()
        );
        let admin_on_lake = principal(&["admin:lake"]);
        assert!(admin_on_lake.check(Access::Admin, lake).is_ok());
        assert!(admin_on_lake.check(Access::Admin, Scope::Every).is_err());
        assert!(
            principal(&["admin"])
                .check(Access::Admin, Scope::Every)
                .is_ok()
        );
        let reader = principal(&["reader"]);
        let refusal = reader
            .check(Access::Catalog(Role::Writer), lake)
            .unwrap_err();
        assert!(
            refusal.contains("`writer`") && refusal.contains("lake"),
            "{refusal}"
        );
    }

    #[test]
    fn peers_are_accepted_only_on_the_peer_endpoint() {
        let peer = Identity::Peer {
            region: "us".to_string(),
        };
        assert!(peer.check(Access::Peer, Scope::Every).is_ok());
        assert!(
            peer.check(Access::Catalog(Role::Reader), Scope::Any)
                .is_err()
        );
        assert!(peer.check(Access::Admin, Scope::Every).is_err());
        assert!(
            Identity::Anonymous
                .check(Access::Peer, Scope::Every)
                .is_err()
        );
        assert!(
            Identity::Anonymous
                .check(Access::Admin, Scope::Every)
                .is_ok()
        );
        assert!(
            principal(&["admin"])
                .check(Access::Peer, Scope::Every)
                .is_err()
        );
    }

    #[test]
    fn grants_parse_and_narrow() {
        assert_eq!(
            Grant::parse("writer:lake").unwrap().to_strings(),
            ["writer:lake"]
        );
        assert!(Grant::parse("owner").is_none());
        assert!(Grant::parse("writer:").is_none());
        let limited = Grant::parse("admin")
            .unwrap()
            .within(Some(&["lake".to_string()]))
            .unwrap();
        assert_eq!(limited.to_strings(), ["admin:lake"]);
        assert!(
            Grant::parse("reader:other")
                .unwrap()
                .within(Some(&["lake".to_string()]))
                .is_none()
        );
    }
}
