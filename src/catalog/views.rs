//! Views (Iceberg REST spec 1.11): list, create, load, exists, replace, drop, rename, register.
//!
//! A view is a row that points at its current metadata file, as a table is, with its own log
//! entries (`create-view`, `replace-view`, `drop-view`, `rename-view`, `register-view`), each of
//! which gives the view its next version. Every change is one transaction that takes the view's
//! change lock first (the lock a table of that name takes, so a table and a view cannot take one
//! name: migrations/0021), reads the row under it, checks the requirements, writes the new
//! metadata file durably, then swaps the pointer and appends the entry before COMMIT. So a view's
//! versions are gap-free and its entries in version order along the log, and nothing planned
//! against a state that moved on is committed. Views change rarely: holding the lock while the
//! file is written costs a client nothing it would notice, and it keeps the argument this short.

use std::sync::Arc;

use iceberg::ViewUpdate;
use iceberg::spec::{ViewFormatVersion, ViewMetadata, ViewMetadataBuilder};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::views::{self as db, ViewPointer};
use crate::error::{CatalogError, CatalogResult};
use crate::log::{self, EntryKind, TableVersionRef};
use crate::names::{NamespaceName, TableName};

use super::commit::PendingFiles;
use super::metadata;
use super::metadata_cache::CachedMetadata;
use super::namespaces::{Page, PageRequest};
use super::paths;
use super::requests::{
    CommitViewRequest, CreateViewRequest, RegisterViewRequest, TableIdentifier, ViewRequirement,
};
use super::tables::Listed;
use super::write_rule::{view_for_write, writable_namespace};
use super::{Catalog, Warehouse};

/// A view's metadata file, parsed.
pub type CachedView = CachedMetadata<ViewMetadata>;

/// A view as loadView returns it.
#[derive(Debug, Clone)]
pub struct LoadedView {
    pub metadata_location: String,
    pub metadata: Arc<CachedView>,
}

/// Maps an iceberg error from building or changing view metadata to a 400 with its message.
fn invalid_view(err: iceberg::Error) -> CatalogError {
    CatalogError::BadRequest(format!("invalid view update: {err}"))
}

/// Applies one spec `ViewUpdate` to the builder (iceberg's builder has a method per update).
fn apply_update(
    builder: ViewMetadataBuilder,
    update: ViewUpdate,
) -> iceberg::Result<ViewMetadataBuilder> {
    Ok(match update {
        ViewUpdate::AssignUuid { uuid } => builder.assign_uuid(uuid),
        ViewUpdate::UpgradeFormatVersion { format_version } => {
            builder.upgrade_format_version(format_version)?
        }
        ViewUpdate::AddSchema { schema, .. } => builder.add_schema(schema),
        ViewUpdate::SetLocation { location } => builder.set_location(location),
        ViewUpdate::SetProperties { updates } => builder.set_properties(updates)?,
        ViewUpdate::RemoveProperties { removals } => builder.remove_properties(&removals),
        ViewUpdate::AddViewVersion { view_version } => builder.add_version(view_version)?,
        ViewUpdate::SetCurrentViewVersion { view_version_id } => {
            builder.set_current_version_id(view_version_id)?
        }
    })
}

/// The 409 for a name that a table or a view already holds (`None`: it is free). Called under
/// the name's change lock, so the answer holds until COMMIT.
pub(super) async fn name_taken(
    conn: &mut PgConnection,
    namespace_id: Uuid,
    name: &TableName,
) -> CatalogResult<Option<CatalogError>> {
    if db::view_holds_name(conn, namespace_id, &name.name).await? {
        return Ok(Some(CatalogError::AlreadyExists(format!(
            "View with same name already exists: {name}"
        ))));
    }
    if db::table_holds_name(conn, namespace_id, &name.name).await? {
        return Ok(Some(CatalogError::AlreadyExists(format!(
            "Table with same name already exists: {name}"
        ))));
    }
    Ok(None)
}

/// A unique violation on insert: the view UUID is another view's.
fn uuid_taken(err: sqlx::Error, view: &TableName, uuid: Uuid) -> CatalogError {
    match &err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            CatalogError::AlreadyExists(format!(
                "Cannot make view {view}: view UUID {uuid} is already registered under another name"
            ))
        }
        _ => err.into(),
    }
}

impl Catalog {
    pub async fn list_views(
        &self,
        wh: &Warehouse,
        ns: &NamespaceName,
        page: &PageRequest,
    ) -> CatalogResult<Page<String>> {
        self.list_names(wh, ns, page, Listed::Views).await
    }

    /// The current metadata location only: for viewExists.
    pub async fn view_metadata_location(
        &self,
        wh: &Warehouse,
        view: &TableName,
    ) -> CatalogResult<String> {
        db::get_view_location(&self.pool, wh.id, &view.namespace, &view.name)
            .await?
            .ok_or_else(|| CatalogError::no_such_view(view))
    }

    pub async fn load_view(&self, wh: &Warehouse, view: &TableName) -> CatalogResult<LoadedView> {
        let metadata_location = self.view_metadata_location(wh, view).await?;
        let metadata = self
            .view_metadata
            .load(&*wh.storage, &metadata_location)
            .await?;
        Ok(LoadedView {
            metadata_location,
            metadata,
        })
    }

    /// createView: the metadata of the request's first version, at `<location>/metadata/00000-*`.
    pub async fn create_view(
        &self,
        wh: &Warehouse,
        ns: &NamespaceName,
        req: CreateViewRequest,
        principal: &str,
    ) -> CatalogResult<LoadedView> {
        let view = TableName::new(ns.clone(), req.name.clone())?;
        let view_uuid = Uuid::now_v7();
        let location = match &req.location {
            Some(location) => paths::under_root(wh, "view location", location)?,
            None => metadata::default_table_location(wh, &view, view_uuid)?,
        };
        let built = ViewMetadataBuilder::new(
            location.to_string(),
            req.schema,
            req.view_version,
            ViewFormatVersion::V1,
            req.properties,
        )
        .map(|builder| builder.assign_uuid(view_uuid))
        .and_then(ViewMetadataBuilder::build)
        .map_err(invalid_view)?;
        let changes = serde_json::to_value(&built.changes).map_err(CatalogError::Encoding)?;
        self.with_view_files(async |files| {
            let mut tx = self.begin_table_change(wh, &[&view]).await?;
            let namespace = writable_namespace(&mut tx, wh.id, ns).await?;
            if let Some(taken) = name_taken(&mut tx, namespace.namespace_id, &view).await? {
                return Err(taken);
            }
            let (metadata_location, written) = self
                .write_view_metadata(files, wh, built.metadata, 1)
                .await?;
            let new = NewView {
                namespace_id: namespace.namespace_id,
                view: &view,
                kind: EntryKind::CreateView,
                changes,
            };
            self.insert_new_view(tx, wh, new, written, metadata_location, principal)
                .await
        })
        .await
    }

    /// replaceView: the requirements checked and the updates applied to the current metadata,
    /// under the view's lock. Updates that change nothing commit nothing.
    pub async fn replace_view(
        &self,
        wh: &Warehouse,
        view: &TableName,
        req: CommitViewRequest,
        principal: &str,
    ) -> CatalogResult<LoadedView> {
        if let Some(TableIdentifier { namespace, name }) = &req.identifier
            && (namespace != &view.namespace || name != &view.name)
        {
            return Err(CatalogError::BadRequest(format!(
                "the body's identifier {namespace}.{name} does not match the view in the path {view}"
            )));
        }
        let requirements =
            serde_json::to_value(&req.requirements).map_err(CatalogError::Encoding)?;
        self.with_view_files(async |files| {
            let mut tx = self.begin_table_change(wh, &[view]).await?;
            let row = view_for_write(&mut tx, wh.id, view, true)
                .await?
                .ok_or_else(|| CatalogError::no_such_view(view))?;
            let current = self
                .view_metadata
                .load(&*wh.storage, &row.metadata_location)
                .await?;
            for requirement in &req.requirements {
                match requirement {
                    ViewRequirement::AssertViewUuid { uuid } if *uuid != current.parsed.uuid() => {
                        return Err(CatalogError::CommitFailed(format!(
                            "Requirement failed: view UUID does not match: expected {uuid} != {}",
                            current.parsed.uuid()
                        )));
                    }
                    ViewRequirement::AssertViewUuid { .. } => {}
                }
            }
            let mut builder = ViewMetadataBuilder::new_from_metadata(current.parsed.clone());
            for update in req.updates {
                builder = apply_update(builder, update).map_err(invalid_view)?;
            }
            let built = builder.build().map_err(invalid_view)?;
            if built.changes.is_empty() {
                return Ok(LoadedView {
                    metadata_location: row.metadata_location,
                    metadata: current,
                });
            }
            let changes = serde_json::to_value(&built.changes).map_err(CatalogError::Encoding)?;
            let version = row.version + 1;
            let (metadata_location, written) = self
                .write_view_metadata(files, wh, built.metadata, version)
                .await?;
            db::swap_view_pointer(
                &mut tx,
                row.view_id,
                version,
                pointer(&written, &metadata_location),
            )
            .await
            .map_err(|e| uuid_taken(e, view, written.parsed.uuid()))?;
            let mut entry = self.table_entry(
                wh,
                EntryKind::ReplaceView,
                view,
                version_ref(view, row.view_id, written.parsed.uuid(), version),
                principal,
            );
            entry.changes = changes;
            entry.requirements = requirements;
            entry.previous_metadata_location = Some(row.metadata_location);
            entry.new_metadata_location = Some(metadata_location.clone());
            log::append(&mut tx, &[entry]).await?;
            self.commit_transaction_or_unknown(tx).await?;
            Ok(LoadedView {
                metadata_location,
                metadata: written,
            })
        })
        .await
    }

    /// dropView: the row goes; its metadata files stay (a view has no data to purge, and a
    /// registration can bring it back).
    pub async fn drop_view(
        &self,
        wh: &Warehouse,
        view: &TableName,
        principal: &str,
    ) -> CatalogResult<()> {
        let mut tx = self.begin_table_change(wh, &[view]).await?;
        let row = view_for_write(&mut tx, wh.id, view, true)
            .await?
            .ok_or_else(|| CatalogError::no_such_view(view))?;
        db::delete_view(&mut tx, row.view_id).await?;
        let mut entry = self.table_entry(
            wh,
            EntryKind::DropView,
            view,
            version_ref(view, row.view_id, row.view_uuid, row.version + 1),
            principal,
        );
        entry.previous_metadata_location = Some(row.metadata_location);
        log::append(&mut tx, &[entry]).await?;
        self.commit_transaction_or_unknown(tx).await
    }

    pub async fn rename_view(
        &self,
        wh: &Warehouse,
        source: &TableName,
        destination: &TableName,
        principal: &str,
    ) -> CatalogResult<()> {
        let mut tx = self.begin_table_change(wh, &[source, destination]).await?;
        let row = view_for_write(&mut tx, wh.id, source, true)
            .await?
            .ok_or_else(|| CatalogError::no_such_view(source))?;
        let dest_ns = writable_namespace(&mut tx, wh.id, &destination.namespace).await?;
        let version = row.version + 1;
        if !db::rename_view(
            &mut tx,
            row.view_id,
            dest_ns.namespace_id,
            &destination.name,
            version,
        )
        .await?
        {
            return Err(CatalogError::AlreadyExists(format!(
                "Cannot rename {source} to {destination}: a table or view of that name already \
                 exists"
            )));
        }
        let mut entry = self.table_entry(
            wh,
            EntryKind::RenameView,
            source,
            version_ref(source, row.view_id, row.view_uuid, version),
            principal,
        );
        entry.details = json!({ "destination": {
            "namespace": destination.namespace.levels(), "name": destination.name } });
        entry.previous_metadata_location = Some(row.metadata_location.clone());
        entry.new_metadata_location = Some(row.metadata_location);
        log::append(&mut tx, &[entry]).await?;
        self.commit_transaction_or_unknown(tx).await
    }

    /// registerView: a view made from a metadata file under the warehouse root.
    pub async fn register_view(
        &self,
        wh: &Warehouse,
        ns: &NamespaceName,
        req: RegisterViewRequest,
        principal: &str,
    ) -> CatalogResult<LoadedView> {
        let view = TableName::new(ns.clone(), req.name.clone())?;
        let (file, parsed): (_, ViewMetadata) = metadata::read_registered(
            wh,
            self.view_metadata.max_file_bytes(),
            &req.metadata_location,
            &format!("view {view}"),
            "view metadata",
        )
        .await?;
        paths::check_view_metadata(wh, &parsed)?;
        let registered = Arc::new(CachedView::from_parsed(parsed)?);
        let mut tx = self.begin_table_change(wh, &[&view]).await?;
        let namespace = writable_namespace(&mut tx, wh.id, ns).await?;
        if let Some(taken) = name_taken(&mut tx, namespace.namespace_id, &view).await? {
            return Err(taken);
        }
        let new = NewView {
            namespace_id: namespace.namespace_id,
            view: &view,
            kind: EntryKind::RegisterView,
            changes: json!([]),
        };
        let loaded = self
            .insert_new_view(tx, wh, new, registered, file.to_string(), principal)
            .await?;
        self.view_metadata
            .insert(&loaded.metadata_location, loaded.metadata.clone());
        Ok(loaded)
    }

    /// The step that makes a view, shared by create and register: its row and its first log
    /// entry, committed. The caller holds the name's change lock and found the name free under it.
    async fn insert_new_view(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        wh: &Warehouse,
        new: NewView<'_>,
        state: Arc<CachedView>,
        metadata_location: String,
        principal: &str,
    ) -> CatalogResult<LoadedView> {
        let view_uuid = state.parsed.uuid();
        let view_id = Uuid::now_v7();
        db::insert_view(
            &mut tx,
            wh.id,
            view_id,
            new.namespace_id,
            new.view,
            pointer(&state, &metadata_location),
            None,
        )
        .await
        .map_err(|e| uuid_taken(e, new.view, view_uuid))?;
        let mut entry = self.table_entry(
            wh,
            new.kind,
            new.view,
            version_ref(new.view, view_id, view_uuid, 1),
            principal,
        );
        entry.changes = new.changes;
        entry.metadata = Some(whole(&state)?);
        entry.new_metadata_location = Some(metadata_location.clone());
        log::append(&mut tx, &[entry]).await?;
        self.commit_transaction_or_unknown(tx).await?;
        Ok(LoadedView {
            metadata_location,
            metadata: state,
        })
    }

    /// Runs a view change that writes a metadata file, removing the file if the change fails
    /// before its COMMIT, and caching it once committed.
    async fn with_view_files(
        &self,
        run: impl AsyncFnOnce(&mut PendingFiles) -> CatalogResult<LoadedView>,
    ) -> CatalogResult<LoadedView> {
        let loaded = self.with_pending_files(run).await?;
        self.view_metadata
            .insert(&loaded.metadata_location, loaded.metadata.clone());
        Ok(loaded)
    }

    /// Writes a view's next metadata file (durably, before the pointer to it is committed) once
    /// its location passed the location policy.
    async fn write_view_metadata(
        &self,
        files: &mut PendingFiles,
        wh: &Warehouse,
        metadata: ViewMetadata,
        version: i64,
    ) -> CatalogResult<(String, Arc<CachedView>)> {
        paths::check_view_metadata(wh, &metadata)?;
        let written = Arc::new(CachedView::from_parsed(metadata)?);
        let file = metadata::metadata_file_location(written.parsed.location(), version)?;
        files
            .write(&wh.storage, &file, written.json.as_bytes())
            .await?;
        Ok((file.to_string(), written))
    }
}

/// A view about to be made: where, and its first log entry's kind and changes.
struct NewView<'a> {
    namespace_id: Uuid,
    view: &'a TableName,
    kind: EntryKind,
    changes: Value,
}

fn pointer<'a>(metadata: &'a CachedView, metadata_location: &'a str) -> ViewPointer<'a> {
    ViewPointer {
        view_uuid: metadata.parsed.uuid(),
        metadata_location,
        location: metadata.parsed.location(),
    }
}

fn version_ref(view: &TableName, view_id: Uuid, view_uuid: Uuid, version: i64) -> TableVersionRef {
    TableVersionRef {
        table_id: view_id,
        table_uuid: view_uuid,
        name: view.name.clone(),
        version,
    }
}

/// The whole metadata, for the entries that establish a view (create, register).
fn whole(metadata: &CachedView) -> CatalogResult<Value> {
    serde_json::from_str(&metadata.json).map_err(CatalogError::Encoding)
}
