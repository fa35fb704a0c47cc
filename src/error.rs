//! The catalog's error type. It knows nothing of HTTP; `http::errors` maps each kind to an Iceberg
//! `ErrorModel` with its status code.

use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The request is malformed or asks for something impossible (400).
    #[error("{0}")]
    BadRequest(String),
    /// A named object does not exist (404). `kind` is the Iceberg exception type.
    #[error("{message}")]
    NotFound { kind: &'static str, message: String },
    /// The object to create already exists (409).
    #[error("{0}")]
    AlreadyExists(String),
    /// A namespace still holds tables or namespaces (409).
    #[error("{0}")]
    NamespaceNotEmpty(String),
    /// A commit requirement does not hold against the current metadata (409); the client may retry.
    #[error("{0}")]
    CommitFailed(String),
    /// The caller may not change this object: a replica, or a peer-only endpoint (403).
    #[error("{0}")]
    Forbidden(String),
    /// A replicated change does not follow the replica's position (409); `position` is where the
    /// replica is, so the sender can resume from there.
    #[error("{message}")]
    ReplicaPosition {
        message: String,
        position: Option<crate::contract::peer_protocol::ReplicaPosition>,
    },
    /// A replicated change sent under a lease the source has since revoked: a newer lease of the
    /// stream sent changes already (409). The sender stops; the newer lease carries on.
    #[error("{0}")]
    StaleLease(String),
    /// A replicated change from a source that is no longer the table's primary: the replica was
    /// promoted here at a newer epoch (409). The sender learns where the primary is.
    #[error("{message}")]
    StaleEpoch {
        message: String,
        promotion: crate::contract::peer_protocol::PromotionNotice,
    },
    /// A replica held by an upstream catalog was changed there directly: floe does not
    /// overwrite it (409); the source's stream stops with the reason.
    #[error("{0}")]
    ReplicaDiverged(String),
    /// The request is well formed but contradicts itself (422).
    #[error("{0}")]
    Unprocessable(String),
    /// PostgreSQL cannot be reached; nothing was changed (503).
    #[error("catalog database unavailable: {0}")]
    Unavailable(String),
    /// COMMIT was sent but its outcome is unknown (the connection broke); the client must reload
    /// before retrying (500 CommitStateUnknownException).
    #[error("commit state unknown: {0}")]
    CommitStateUnknown(String),
    /// Reading or writing warehouse storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A metadata file the catalog points to does not parse: stored data is damaged, which no
    /// retry mends (500).
    #[error("metadata file {location} does not parse: {source}")]
    CorruptMetadata {
        location: String,
        #[source]
        source: serde_json::Error,
    },
    /// A value floe must record (a log entry's changes) does not serialise: the change fails
    /// rather than log something else (500).
    #[error("cannot record the change: {0}")]
    Encoding(#[source] serde_json::Error),
    /// A database error that is not a lost connection.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// A failure injected by a test between two steps of a commit.
    #[error("injected failure: {0}")]
    Injected(&'static str),
}

pub type CatalogResult<T> = Result<T, CatalogError>;

impl CatalogError {
    pub fn no_such_namespace(namespace: impl std::fmt::Display) -> Self {
        Self::NotFound {
            kind: "NoSuchNamespaceException",
            message: format!("Namespace does not exist: {namespace}"),
        }
    }

    pub fn no_such_table(table: impl std::fmt::Display) -> Self {
        Self::NotFound {
            kind: "NoSuchTableException",
            message: format!("Table does not exist: {table}"),
        }
    }

    pub fn no_such_view(view: impl std::fmt::Display) -> Self {
        Self::NotFound {
            kind: "NoSuchViewException",
            message: format!("View does not exist: {view}"),
        }
    }

    pub fn no_such_warehouse(name: &str) -> Self {
        Self::NotFound {
            kind: "NoSuchWarehouseException",
            message: format!(
                "Warehouse does not exist: {name}; configure it under `warehouses` to serve it"
            ),
        }
    }
}

/// Whether a database error means "PostgreSQL is not reachable right now" rather than a bug or a
/// constraint: such errors become 503 so clients retry, and the pool reconnects by itself.
pub fn is_connection_error(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            // Class 08 (connection exception) and 57P01..57P03 (admin shutdown, crash shutdown,
            // cannot connect now) are transient from the client's point of view.
            db.code()
                .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03"))
        }
        _ => false,
    }
}

/// Whether `err` says that PostgreSQL dropped or refused a connection (not that the pool was
/// only busy): the connections that sat idle in the pool meanwhile may be dead too.
pub fn is_lost_connection(err: &sqlx::Error) -> bool {
    is_connection_error(err) && !matches!(err, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
}

impl From<sqlx::Error> for CatalogError {
    fn from(err: sqlx::Error) -> Self {
        crate::db::note_failure(&err);
        if is_connection_error(&err) {
            CatalogError::Unavailable(err.to_string())
        } else {
            CatalogError::Database(err)
        }
    }
}
