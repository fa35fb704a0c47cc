//! Exporting what diverged (issue 14): at a former primary that a promotion elsewhere fenced, its
//! last state, which never reached the new primary, becomes a table of its own,
//! `<table>_diverged_<epoch>`, replicated to the new primary so that an operator can merge it
//! there.
//!
//! The export is a copy, not a second pointer to the same files: the fenced table, a replica of
//! the new primary now, shares its older files with that last state, and a purge of one table
//! deletes every file its metadata names. So the state's files are copied (paths rewritten, as a
//! replica's are) under a location of the new table's own, and the new table's metadata names
//! only those. Dropping either table then never takes a file the other reads; the fenced table's
//! own files, the diverged commits' among them, stay as they were.
//!
//! The new table is this region's, at epoch 1 of its own, and reaches the new primary as any of
//! this region's tables does: by a rule. A rule covering the warehouse or the namespace covers it
//! already; a rule for the fenced table alone is copied for it.

use iceberg::spec::{TableMetadata, TableMetadataBuilder};
use uuid::Uuid;

use crate::catalog::requests::RegisterTableRequest;
use crate::catalog::{Catalog, Warehouse, metadata};
use crate::contract::replication_model::{Destination, DivergedExport, RuleSpec};
use crate::db::catalog as catalog_db;
use crate::db::promotion::{self as promotion_db, Fencing};
use crate::error::{CatalogError, CatalogResult};
use crate::names::TableName;

use super::admin;
use super::copy::{Copier, CopyError};
use super::paths::PathMap;
use super::plan::{self, BackfillStep};

/// Files copied at once by an export (an operator's action, one at a time).
const EXPORT_PARALLEL_FILES: usize = 8;

/// ExportDiverged: copies the fenced `table`'s last state into the new table
/// `<table>_diverged_<epoch>` and sees that it replicates to the new primary.
pub async fn export(
    catalog: &Catalog,
    warehouse: &str,
    table: &TableName,
    principal: &str,
) -> CatalogResult<DivergedExport> {
    let wh = catalog.warehouse(Some(warehouse))?;
    let mut conn = catalog.pool().acquire().await?;
    let row = catalog_db::get_table(&mut conn, wh.id, &table.namespace, &table.name, false)
        .await?
        .ok_or_else(|| CatalogError::no_such_table(table))?;
    drop(conn);
    let Some(fencing) = promotion_db::fencing(catalog.pool(), row.table_id).await? else {
        return Err(CatalogError::Unprocessable(format!(
            "table {table} has not diverged: no promotion elsewhere superseded it here, so it \
             has no commits of its own to export"
        )));
    };
    if fencing.fenced_at_version <= fencing.promoted_at_version {
        return Err(CatalogError::Unprocessable(format!(
            "table {table} has no diverged commits: region `{}` had every version of it up to \
             {} when it was promoted",
            fencing.primary_region, fencing.fenced_at_version
        )));
    }
    let exported = TableName::new(
        table.namespace.clone(),
        format!("{}_diverged_{}", table.name, fencing.epoch),
    )?;
    let metadata_location = copy_state(catalog, wh, &exported, &fencing).await?;
    let request = RegisterTableRequest {
        name: exported.name.clone(),
        metadata_location: metadata_location.clone(),
        overwrite: false,
    };
    let registered = catalog
        .register_table(wh, &exported.namespace, request, principal)
        .await?;
    let (rule, note) = match replicate(catalog, warehouse, table, &exported, &fencing).await {
        Ok(rule) => (rule, None),
        Err(why) => (None, Some(why)),
    };
    Ok(DivergedExport {
        warehouse: warehouse.to_string(),
        namespace: exported.namespace.levels().to_vec(),
        table: exported.name,
        epoch: fencing.epoch,
        primary_region: fencing.primary_region,
        exported_from: fencing.last_metadata_location,
        versions: (fencing.promoted_at_version + 1..=fencing.fenced_at_version).collect(),
        metadata_location: registered.metadata_location.unwrap_or(metadata_location),
        rule,
        note,
    })
}

/// Copies the state at `fencing.last_metadata_location` under a new location for `exported`
/// and writes its metadata there; returns that metadata file's location. The copy gets a table
/// UUID of its own: it is another table.
async fn copy_state(
    catalog: &Catalog,
    wh: &Warehouse,
    exported: &TableName,
    fencing: &Fencing,
) -> CatalogResult<String> {
    let state = catalog
        .load_metadata(wh, &fencing.last_metadata_location)
        .await?;
    let state = &state.parsed;
    let table_uuid = Uuid::now_v7();
    let location = metadata::default_table_location(wh, exported, table_uuid)?;
    let map =
        PathMap::new(state.location(), &location.to_string()).map_err(|e| copy_failed(e.into()))?;
    let copier = Copier::new(
        wh.storage.clone(),
        wh.storage.clone(),
        map,
        EXPORT_PARALLEL_FILES,
        catalog.max_manifest_bytes(),
    );
    let mut base = plan::create_metadata(state, copier.map()).map_err(copy_failed)?;
    base["table-uuid"] = serde_json::json!(table_uuid);
    let base: TableMetadata = serde_json::from_value(base).map_err(|e| {
        CatalogError::Unprocessable(format!("the diverged state's metadata does not parse: {e}"))
    })?;
    let mut builder = TableMetadataBuilder::new_from_metadata(base, None);
    for step in plan::backfill_steps(state) {
        let updates = match step {
            BackfillStep::Create => continue,
            BackfillStep::Snapshots { snapshots, main_to } => {
                plan::snapshot_updates(&snapshots, main_to, &copier).await
            }
            BackfillStep::Finish => plan::finish_updates(state, &copier).await,
        }
        .map_err(copy_failed)?;
        for update in updates {
            builder = update.apply(builder).map_err(metadata::invalid)?;
        }
    }
    copier.finish().await.map_err(copy_failed)?;
    let built = builder.build().map_err(metadata::invalid)?.metadata;
    crate::catalog::paths::check_metadata(wh, &built)?;
    let json = serde_json::to_vec(&built).map_err(CatalogError::Encoding)?;
    let file = metadata::metadata_file_location(&location.to_string(), 1)?;
    wh.storage.write_new(&file, &json).await?;
    wh.storage.sync_all().await?;
    Ok(file.to_string())
}

/// A storage failure keeps its kind; anything else is the state's own (a file it names that
/// cannot be rewritten), which no retry changes.
fn copy_failed(err: CopyError) -> CatalogError {
    match err {
        CopyError::Storage(err) => err.into(),
        other => CatalogError::Unprocessable(format!(
            "the diverged state could not be copied into a table of its own: {other}"
        )),
    }
}

/// Sees that `exported` replicates to the new primary: reconciled against the rules as they
/// are; when none covers it, a copy of the rule that covered the fenced table alone. The rule
/// made, if one was; else why none could be.
async fn replicate(
    catalog: &Catalog,
    warehouse: &str,
    table: &TableName,
    exported: &TableName,
    fencing: &Fencing,
) -> Result<Option<Uuid>, String> {
    let failed = |e: &dyn std::fmt::Display| format!("its replication was not set up: {e}");
    let wh = catalog.warehouse(Some(warehouse)).map_err(|e| failed(&e))?;
    let mut conn = catalog.pool().acquire().await.map_err(|e| failed(&e))?;
    let row = catalog_db::get_table(&mut conn, wh.id, &exported.namespace, &exported.name, false)
        .await
        .map_err(|e| failed(&e))?
        .ok_or_else(|| failed(&"the exported table is gone"))?;
    crate::db::replication::reconcile_streams(catalog.pool(), Some(&[row.table_id]))
        .await
        .map_err(|e| failed(&e))?;
    if crate::db::replication::has_stream_to(&mut conn, row.table_id, &fencing.primary_region)
        .await
        .map_err(|e| failed(&e))?
    {
        return Ok(None);
    }
    let rules = admin::list_rules(catalog).await.map_err(|e| failed(&e))?;
    let destination: Option<Destination> = rules
        .iter()
        .filter(|rule| {
            rule.spec.warehouse == warehouse
                && rule.spec.table.as_deref() == Some(table.name.as_str())
                && rule.spec.namespace.as_deref() == Some(table.namespace.levels())
        })
        .flat_map(|rule| rule.spec.destinations.iter())
        .find(|d| d.peer == fencing.primary_region)
        .cloned();
    let Some(destination) = destination else {
        return Err(format!(
            "no rule here sends table {table} to region `{}`: add one for {exported} to replicate \
             it there",
            fencing.primary_region
        ));
    };
    let spec = RuleSpec {
        warehouse: warehouse.to_string(),
        namespace: Some(exported.namespace.levels().to_vec()),
        table: Some(exported.name.clone()),
        destinations: vec![destination],
        ..Default::default()
    };
    admin::create_rule(catalog, spec)
        .await
        .map(|rule| Some(rule.id))
        .map_err(|e| failed(&e))
}
