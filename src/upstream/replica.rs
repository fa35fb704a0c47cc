//! An upstream catalog as the home of floe's replicas: a peer's destination warehouse that is an
//! upstream warehouse keeps its replicas in that catalog, where its own readers find them.
//!
//! floe decides every replica state exactly as for a builtin warehouse (`catalog::replica`: the
//! fence, the generations, retention, merged history); this module only puts the state it decided
//! into the upstream, which has no way to be pointed at a file once a table exists (the Iceberg
//! 1.10 reference catalog has no register-with-overwrite). So a replica's first state is
//! registered (register-table, with a metadata file floe wrote), and every later one is a commit
//! of the changes from the upstream's state to floe's (`diff`), with requirements that pin the
//! upstream's state as floe read it.
//!
//! **What the upstream holds is one of three things**, and [`UpstreamCatalog::publish_state`]
//! tells them apart from its current state alone, so no record of a publish in flight is needed:
//! - the state floe last recorded for the replica: floe moves it to the new one;
//! - the new state already (a publish whose recording a crash or a lost answer cut off, sent
//!   again by the source because it was never acknowledged): floe adopts it;
//! - anything else: someone wrote to the replica at the upstream directly. That is divergence:
//!   the change is refused (409 `ReplicaDivergedException`), the source's stream stops with the
//!   reason in its status, and the upstream's table is left as it is for an operator to look at.
//!
//! The requirements close the window between floe's read and its commit: a direct commit in
//! between fails floe's (409 at the upstream), which is divergence again, never a silent merge.

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use bytes::Bytes;
use iceberg::spec::TableMetadata;
use serde_json::{Value, json};

use super::client::UpstreamCatalog;
use super::errors::UpstreamError;
use super::forward::UpstreamPath;
use super::table_log::{Current, table_path};
use super::{diff, history};
use crate::error::{CatalogError, CatalogResult};
use crate::names::{NamespaceName, TableName};

/// A replica state as the upstream serves it.
pub struct Published {
    pub location: String,
    pub metadata: TableMetadata,
}

impl From<Current> for Published {
    fn from(current: Current) -> Self {
        Self {
            location: current.location,
            metadata: current.metadata,
        }
    }
}

/// What floe asks of the upstream for one replica state.
pub struct ReplicaState<'a> {
    pub table: &'a TableName,
    /// The upstream's metadata location floe last recorded for the replica (`None`: none yet).
    pub recorded: Option<&'a str>,
    /// The state floe decided.
    pub target: &'a TableMetadata,
    /// The state is whole in itself (a backfill's last step), not a step from the recorded one:
    /// a replica the upstream no longer has is registered again rather than refused.
    pub whole: bool,
}

impl UpstreamCatalog {
    /// Makes the upstream serve `state.target` (see the module doc); `write_file` writes the
    /// target to a metadata file and returns its location, for a first registration.
    pub async fn publish_state(
        &self,
        state: ReplicaState<'_>,
        write_file: impl AsyncFnOnce() -> CatalogResult<String>,
    ) -> CatalogResult<Published> {
        let table = state.table;
        let current = self
            .current(table, &HeaderMap::new())
            .await
            .map_err(|e| self.unavailable(e))?;
        match (state.recorded, current) {
            (None, None) => self.register(table, write_file().await?).await,
            (Some(_), None) if state.whole => self.register(table, write_file().await?).await,
            (Some(recorded), None) => Err(self.diverged(
                table,
                format!("floe's replica state {recorded} is gone: the table was dropped there"),
            )),
            (recorded, Some(current)) if recorded == Some(current.location.as_str()) => {
                self.commit_towards(table, current, state.target).await
            }
            (recorded, Some(current)) => {
                let follows = current
                    .metadata
                    .metadata_log()
                    .last()
                    .map(|m| &m.metadata_file);
                // A publish of this very state whose recording was cut off: the upstream made
                // it from floe's recorded state (or registered it, for a first state).
                let mine = history::same_state(&current.metadata, state.target)
                    && match recorded {
                        Some(recorded) => follows.is_some_and(|f| f == recorded),
                        None => current.metadata.uuid() == state.target.uuid(),
                    };
                if mine {
                    return Ok(current.into());
                }
                Err(match recorded {
                    Some(recorded) => self.diverged(
                        table,
                        format!(
                            "it serves {} where floe left {recorded}: the table was written to \
                             there directly",
                            current.location
                        ),
                    ),
                    None => CatalogError::AlreadyExists(format!(
                        "cannot create the replica {table}: the upstream catalog of warehouse \
                         `{}` at {} already has a table of that name that floe did not make; \
                         rename one of them or give the rule a namespace prefix",
                        self.warehouse(),
                        self.url()
                    )),
                })
            }
        }
    }

    /// Renames the replica `from` to `to` at the upstream (`to`'s namespace made if missing); a
    /// rename already done (the same table, by UUID, under the new name) is done.
    pub async fn publish_rename(
        &self,
        from: &TableName,
        to: &TableName,
        table_uuid: uuid::Uuid,
    ) -> CatalogResult<()> {
        self.ensure_namespace(&to.namespace).await?;
        let body = json!({
            "source": { "namespace": from.namespace.levels(), "name": from.name },
            "destination": { "namespace": to.namespace.levels(), "name": to.name },
        });
        let path = UpstreamPath::new("/v1/{prefix}/tables/rename", &[])?;
        let (status, _, answer) = self.send_json(Method::POST, &path, &[], Some(body)).await?;
        if status.is_success() {
            return Ok(());
        }
        if status == StatusCode::NOT_FOUND {
            let moved = self
                .current(to, &HeaderMap::new())
                .await
                .map_err(|e| self.unavailable(e))?;
            if moved.is_some_and(|c| c.metadata.uuid() == table_uuid) {
                return Ok(());
            }
        }
        Err(self.refused(&format!("renaming {from} to {to}"), status, &answer))
    }

    /// Drops the replica at the upstream (its files too when `purge`); one already gone is done.
    pub async fn publish_drop(&self, table: &TableName, purge: bool) -> CatalogResult<()> {
        let path = table_path(table)?;
        let purge = if purge { "true" } else { "false" };
        let query = [("purgeRequested", purge)];
        let (status, _, answer) = self.send_json(Method::DELETE, &path, &query, None).await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(self.refused(&format!("dropping {table}"), status, &answer))
    }

    /// Commits the changes from the upstream's `current` state to `target`, pinned to `current`.
    async fn commit_towards(
        &self,
        table: &TableName,
        current: Current,
        target: &TableMetadata,
    ) -> CatalogResult<Published> {
        let updates = diff::changes_between(Some(&current.metadata), target);
        if updates.is_empty() {
            return Ok(current.into());
        }
        let body = json!({
            "identifier": { "namespace": table.namespace.levels(), "name": table.name },
            "requirements": pinned_to(&current.metadata),
            "updates": updates,
        });
        let (status, _, answer) = self
            .send_json(Method::POST, &table_path(table)?, &[], Some(body))
            .await?;
        if status == StatusCode::CONFLICT {
            return Err(self.diverged(
                table,
                format!(
                    "a commit made there directly moved it while floe applied a replicated \
                     change: {}",
                    error_message(&answer)
                ),
            ));
        }
        if !status.is_success() {
            return Err(self.refused(&format!("committing to {table}"), status, &answer));
        }
        parse_state(&answer, "commitTable")
    }

    /// Registers the metadata file at `location` as `table` (its namespace made if missing).
    async fn register(&self, table: &TableName, location: String) -> CatalogResult<Published> {
        self.ensure_namespace(&table.namespace).await?;
        let namespace = table.namespace.levels().join("\u{1f}");
        let path = UpstreamPath::new(
            "/v1/{prefix}/namespaces/{namespace}/register",
            &[("namespace", &namespace)],
        )?;
        let body = json!({ "name": table.name, "metadata-location": location });
        let (status, _, answer) = self.send_json(Method::POST, &path, &[], Some(body)).await?;
        if !status.is_success() {
            return Err(self.refused(&format!("registering {table}"), status, &answer));
        }
        parse_state(&answer, "registerTable")
    }

    /// Creates `namespace` at the upstream unless it exists.
    async fn ensure_namespace(&self, namespace: &NamespaceName) -> CatalogResult<()> {
        let path = UpstreamPath::new("/v1/{prefix}/namespaces", &[])?;
        let body = json!({ "namespace": namespace.levels() });
        let (status, _, answer) = self.send_json(Method::POST, &path, &[], Some(body)).await?;
        if status.is_success() || status == StatusCode::CONFLICT {
            return Ok(());
        }
        Err(self.refused(&format!("creating namespace {namespace}"), status, &answer))
    }

    /// One call of floe's own (no client's headers), with a JSON body.
    async fn send_json(
        &self,
        method: Method,
        path: &UpstreamPath,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> CatalogResult<(StatusCode, HeaderMap, Bytes)> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let body = body.map(|b| Bytes::from(b.to_string()));
        self.call(method, path, query, &headers, body)
            .await
            .map_err(|e| self.unavailable(e))
    }

    /// The upstream could not be asked: 503, so the source retries the change.
    fn unavailable(&self, err: UpstreamError) -> CatalogError {
        CatalogError::Unavailable(format!(
            "the upstream catalog of warehouse `{}` at {} {err}",
            self.warehouse(),
            self.url()
        ))
    }

    fn diverged(&self, table: &TableName, how: String) -> CatalogError {
        CatalogError::ReplicaDiverged(format!(
            "the replica {table} in the upstream catalog of warehouse `{}` at {} has diverged \
             from its source: {how}. floe does not overwrite it; compare the two, then drop the \
             upstream's table and resync the stream to replicate it again",
            self.warehouse(),
            self.url()
        ))
    }

    /// An answer floe cannot go on from: its 4xx is a refusal (the source's stream fails with
    /// it), anything else a 503 to retry.
    fn refused(&self, what: &str, status: StatusCode, answer: &[u8]) -> CatalogError {
        let message = format!(
            "the upstream catalog of warehouse `{}` at {} answered {status} to {what}: {}",
            self.warehouse(),
            self.url(),
            error_message(answer)
        );
        if status.is_client_error() {
            CatalogError::Unprocessable(message)
        } else {
            CatalogError::Unavailable(message)
        }
    }
}

/// Requirements that hold only while the table is as `current` describes it: its UUID, its
/// refs, and the ids a commit that changes a schema, spec or sort order moves.
fn pinned_to(current: &TableMetadata) -> Value {
    let mut requirements = vec![
        json!({"type": "assert-table-uuid", "uuid": current.uuid()}),
        json!({"type": "assert-current-schema-id", "current-schema-id": current.current_schema_id()}),
        json!({"type": "assert-last-assigned-field-id",
               "last-assigned-field-id": current.last_column_id()}),
        json!({"type": "assert-default-spec-id", "default-spec-id": current.default_partition_spec_id()}),
        json!({"type": "assert-last-assigned-partition-id",
               "last-assigned-partition-id": current.last_partition_id()}),
        json!({"type": "assert-default-sort-order-id",
               "default-sort-order-id": current.default_sort_order_id()}),
    ];
    let json = serde_json::to_value(current).unwrap_or(Value::Null);
    if let Some(refs) = json["refs"].as_object() {
        for (name, reference) in refs {
            requirements.push(json!({"type": "assert-ref-snapshot-id", "ref": name,
                "snapshot-id": reference["snapshot-id"]}));
        }
    }
    if json["refs"].get("main").is_none() {
        requirements
            .push(json!({"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": null}));
    }
    Value::Array(requirements)
}

fn parse_state(answer: &[u8], what: &str) -> CatalogResult<Published> {
    #[derive(serde::Deserialize)]
    struct Loaded {
        #[serde(rename = "metadata-location")]
        location: String,
        metadata: TableMetadata,
    }
    let loaded: Loaded = serde_json::from_slice(answer).map_err(|e| {
        CatalogError::Unavailable(format!(
            "the upstream's {what} answer is not a LoadTableResult: {e}"
        ))
    })?;
    Ok(Published {
        location: loaded.location,
        metadata: loaded.metadata,
    })
}

fn error_message(answer: &[u8]) -> String {
    serde_json::from_slice::<Value>(answer)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&answer[..answer.len().min(300)]).into_owned())
}
