//! Namespace operations. Each change is one transaction with its log entry.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::db::catalog as db;
use crate::error::{CatalogError, CatalogResult};
use crate::log::{self, EntryKind, NewEntry};

use super::requests::{UpdateNamespacePropertiesRequest, UpdateNamespacePropertiesResponse};
use super::write_rule::namespace_for_write;
use super::{Catalog, Warehouse};
use crate::names::NamespaceName;

/// One page of a listing: items and the token for the next page, if any.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

/// Page tokens are opaque to clients: the last item's key, base64url-encoded JSON.
pub mod page_token {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use crate::error::{CatalogError, CatalogResult};

    pub fn encode<T: Serialize>(key: &T) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).expect("page keys serialise"))
    }

    pub fn decode<T: DeserializeOwned>(token: &str) -> CatalogResult<T> {
        URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| {
                CatalogError::BadRequest(format!(
                    "invalid pageToken `{token}`: pass the next-page-token of a previous page"
                ))
            })
    }
}

pub const DEFAULT_PAGE_SIZE: i64 = 1000;
pub const MAX_PAGE_SIZE: i64 = 10_000;

/// Pagination as a request gives it: an optional token (empty means "first page") and size.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub token: Option<String>,
    pub size: Option<i64>,
}

impl PageRequest {
    pub fn size(&self) -> CatalogResult<i64> {
        match self.size {
            None => Ok(DEFAULT_PAGE_SIZE),
            Some(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
            Some(n) => Err(CatalogError::BadRequest(format!(
                "pageSize {n} is out of range: use 1 to {MAX_PAGE_SIZE}"
            ))),
        }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref().filter(|t| !t.is_empty())
    }
}

/// Builds a page from `size + 1` fetched rows: the extra row only says there is more.
pub fn paginate<T, K: serde::Serialize>(
    mut rows: Vec<T>,
    size: i64,
    key: impl Fn(&T) -> K,
) -> Page<T> {
    let more = rows.len() as i64 > size;
    rows.truncate(size as usize);
    let next_page_token = more
        .then(|| rows.last().map(|last| page_token::encode(&key(last))))
        .flatten();
    Page {
        items: rows,
        next_page_token,
    }
}

fn properties_of(value: &Value) -> HashMap<String, String> {
    serde_json::from_value(value.clone()).unwrap_or_default()
}

impl Catalog {
    fn namespace_entry(
        &self,
        wh: &Warehouse,
        kind: EntryKind,
        ns: &NamespaceName,
        details: Value,
        principal: &str,
    ) -> NewEntry {
        NewEntry {
            warehouse_id: wh.id,
            txn_group: Uuid::now_v7(),
            kind,
            namespace: ns.levels().to_vec(),
            table: None,
            changes: json!([]),
            requirements: json!([]),
            metadata: None,
            details,
            principal: principal.to_string(),
            origin_region: self.region.clone(),
            previous_metadata_location: None,
            new_metadata_location: None,
        }
    }

    pub async fn list_namespaces(
        &self,
        wh: &Warehouse,
        parent: Option<&NamespaceName>,
        page: &PageRequest,
    ) -> CatalogResult<Page<Vec<String>>> {
        let size = page.size()?;
        let after: Option<Vec<String>> = page.token().map(page_token::decode).transpose()?;
        let parent_levels: &[String] = match parent {
            Some(parent) => {
                self.load_namespace(wh, parent).await?;
                parent.levels()
            }
            None => &[],
        };
        let rows =
            db::list_namespaces(&self.pool, wh.id, parent_levels, after.as_deref(), size + 1)
                .await?;
        Ok(paginate(rows, size, Clone::clone))
    }

    pub async fn create_namespace(
        &self,
        wh: &Warehouse,
        ns: &NamespaceName,
        properties: HashMap<String, String>,
        principal: &str,
    ) -> CatalogResult<HashMap<String, String>> {
        let mut tx = self.pool.begin().await?;
        if ns.levels().len() > 1 {
            let parent = NamespaceName::new(ns.parent_levels().to_vec())?;
            // Locked so the parent cannot be dropped while its child is being created.
            if namespace_for_write(&mut tx, wh.id, &parent, true)
                .await?
                .is_none()
            {
                return Err(CatalogError::NotFound {
                    kind: "NoSuchNamespaceException",
                    message: format!(
                        "Cannot create namespace {ns}: parent namespace {parent} does not exist"
                    ),
                });
            }
        }
        let props = serde_json::to_value(&properties).expect("string maps serialise");
        if !db::insert_namespace(&mut tx, wh.id, ns, &props).await? {
            return Err(CatalogError::AlreadyExists(format!(
                "Namespace already exists: {ns}"
            )));
        }
        let entry = self.namespace_entry(
            wh,
            EntryKind::CreateNamespace,
            ns,
            json!({ "properties": props }),
            principal,
        );
        log::append(&mut tx, &[entry]).await?;
        self.commit_logged(tx).await?;
        Ok(properties)
    }

    pub async fn load_namespace(
        &self,
        wh: &Warehouse,
        ns: &NamespaceName,
    ) -> CatalogResult<HashMap<String, String>> {
        let mut conn = self.pool.acquire().await?;
        let row = db::get_namespace(&mut conn, wh.id, ns, false)
            .await?
            .ok_or_else(|| CatalogError::no_such_namespace(ns))?;
        Ok(properties_of(&row.properties))
    }

    pub async fn drop_namespace(
        &self,
        wh: &Warehouse,
        ns: &NamespaceName,
        principal: &str,
    ) -> CatalogResult<()> {
        let mut tx = self.pool.begin().await?;
        let row = namespace_for_write(&mut tx, wh.id, ns, true)
            .await?
            .ok_or_else(|| CatalogError::no_such_namespace(ns))?;
        if db::namespace_has_children(&mut tx, wh.id, row.namespace_id, &row.levels).await? {
            return Err(CatalogError::NamespaceNotEmpty(format!(
                "Namespace {ns} is not empty: drop its tables and child namespaces first"
            )));
        }
        db::delete_namespace(&mut tx, row.namespace_id)
            .await
            .map_err(|e| match &e {
                // A table was created in it concurrently (its foreign key holds the namespace).
                sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => {
                    CatalogError::NamespaceNotEmpty(format!("Namespace {ns} is not empty"))
                }
                _ => e.into(),
            })?;
        let entry = self.namespace_entry(wh, EntryKind::DropNamespace, ns, json!({}), principal);
        log::append(&mut tx, &[entry]).await?;
        self.commit_logged(tx).await?;
        Ok(())
    }

    pub async fn update_namespace_properties(
        &self,
        wh: &Warehouse,
        ns: &NamespaceName,
        req: UpdateNamespacePropertiesRequest,
        principal: &str,
    ) -> CatalogResult<UpdateNamespacePropertiesResponse> {
        if let Some(both) = req.removals.iter().find(|k| req.updates.contains_key(*k)) {
            return Err(CatalogError::Unprocessable(format!(
                "property `{both}` is both updated and removed; send it in only one of the two"
            )));
        }
        let mut tx = self.pool.begin().await?;
        let row = namespace_for_write(&mut tx, wh.id, ns, true)
            .await?
            .ok_or_else(|| CatalogError::no_such_namespace(ns))?;
        let mut properties: BTreeMap<String, String> =
            serde_json::from_value(row.properties).unwrap_or_default();
        let mut response = UpdateNamespacePropertiesResponse::default();
        for key in &req.removals {
            if properties.remove(key).is_some() {
                response.removed.push(key.clone());
            } else {
                response.missing.push(key.clone());
            }
        }
        for (key, value) in &req.updates {
            properties.insert(key.clone(), value.clone());
            response.updated.push(key.clone());
        }
        response.updated.sort();
        if !response.updated.is_empty() || !response.removed.is_empty() {
            let props = serde_json::to_value(&properties).expect("string maps serialise");
            db::set_namespace_properties(&mut tx, row.namespace_id, &props).await?;
            let entry = self.namespace_entry(
                wh,
                EntryKind::UpdateNamespaceProperties,
                ns,
                json!({ "updates": req.updates, "removals": response.removed, "properties": props }),
                principal,
            );
            log::append(&mut tx, &[entry]).await?;
        }
        self.commit_logged(tx).await?;
        Ok(response)
    }
}
