//! Listing an upstream catalog: every table of every namespace it serves, nested namespaces
//! through `parent`, each list read page by page. Bounded: at most [`MAX_NAMESPACES`]
//! namespaces, and a page token the upstream repeats ends its list, so an upstream that lists
//! without end cannot keep the observer's poll (`observer`) from ending.

use std::collections::{HashSet, VecDeque};

use axum::http::{HeaderMap, Method};
use serde::Deserialize;

use super::client::UpstreamCatalog;
use super::errors::UpstreamError;
use super::forward::UpstreamPath;
use crate::error::CatalogError;
use crate::names::{NamespaceName, TableName};

/// The most namespaces one listing walks.
const MAX_NAMESPACES: usize = 100_000;

/// A name the upstream lists that floe's name rules (`names`) refuse.
pub(super) fn invalid_name(err: CatalogError) -> UpstreamError {
    UpstreamError::InvalidAnswer(format!("it lists a name floe cannot serve: {err}"))
}

/// Every table of every namespace the upstream lists (nested ones through `parent`).
pub(super) async fn all_tables(
    upstream: &UpstreamCatalog,
) -> Result<Vec<TableName>, UpstreamError> {
    #[derive(Deserialize)]
    struct Namespaces {
        namespaces: Vec<Vec<String>>,
        #[serde(rename = "next-page-token")]
        next: Option<String>,
    }
    #[derive(Deserialize)]
    struct Identifier {
        namespace: Vec<String>,
        name: String,
    }
    #[derive(Deserialize)]
    struct Tables {
        identifiers: Vec<Identifier>,
        #[serde(rename = "next-page-token")]
        next: Option<String>,
    }
    let mut namespaces = Vec::new();
    let mut seen = HashSet::new();
    let mut parents: VecDeque<Option<NamespaceName>> = VecDeque::from([None]);
    let list_route = UpstreamPath::new("/v1/{prefix}/namespaces", &[]).map_err(invalid_name)?;
    while let Some(parent) = parents.pop_front() {
        let parent_param = parent.as_ref().map(|ns| ns.levels().join("\u{1f}"));
        let pages = pages(
            upstream,
            &list_route,
            parent_param.as_deref(),
            |page: Namespaces| (page.namespaces, page.next),
        )
        .await?;
        for levels in pages {
            let ns = NamespaceName::new(levels).map_err(invalid_name)?;
            if seen.insert(ns.clone()) {
                if seen.len() > MAX_NAMESPACES {
                    return Err(UpstreamError::InvalidAnswer(format!(
                        "it lists more than {MAX_NAMESPACES} namespaces"
                    )));
                }
                namespaces.push(ns.clone());
                parents.push_back(Some(ns));
            }
        }
    }
    let mut tables = Vec::new();
    for ns in namespaces {
        let joined = ns.levels().join("\u{1f}");
        let route = UpstreamPath::new(
            "/v1/{prefix}/namespaces/{namespace}/tables",
            &[("namespace", &joined)],
        )
        .map_err(invalid_name)?;
        for id in pages(upstream, &route, None, |page: Tables| {
            (page.identifiers, page.next)
        })
        .await?
        {
            match NamespaceName::new(id.namespace).and_then(|ns| TableName::new(ns, id.name)) {
                Ok(table) => tables.push(table),
                Err(err) => tracing::warn!(warehouse = %upstream.warehouse(), error = %err,
                    "the upstream lists a table floe cannot serve; not observed"),
            }
        }
    }
    Ok(tables)
}

/// Every item of a paged list (`pageToken`, `next-page-token`); a token repeated ends it.
async fn pages<Page: serde::de::DeserializeOwned, Item>(
    upstream: &UpstreamCatalog,
    route: &UpstreamPath,
    parent: Option<&str>,
    split: impl Fn(Page) -> (Vec<Item>, Option<String>),
) -> Result<Vec<Item>, UpstreamError> {
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    let mut tokens = HashSet::new();
    loop {
        let mut query = Vec::new();
        if let Some(parent) = parent {
            query.push(("parent", parent));
        }
        if let Some(token) = &token {
            query.push(("pageToken", token.as_str()));
        }
        let (status, _, body) = upstream
            .call(Method::GET, route, &query, &HeaderMap::new(), None)
            .await?;
        if !status.is_success() {
            return Err(UpstreamError::InvalidAnswer(format!(
                "listing answered {status}"
            )));
        }
        let page: Page = serde_json::from_slice(&body)
            .map_err(|e| UpstreamError::InvalidAnswer(format!("a listing: {e}")))?;
        let (page_items, next) = split(page);
        items.extend(page_items);
        match next.filter(|next| !next.is_empty()) {
            Some(next) if tokens.insert(next.clone()) => token = Some(next),
            _ => return Ok(items),
        }
    }
}
