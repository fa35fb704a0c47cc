//! Validated names: warehouses, namespaces (multi-level, joined by 0x1F on the wire) and tables.
//! Every name that reaches the database or a storage path has passed through here.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{CatalogError, CatalogResult};

/// The separator of namespace levels in a URL path segment, as the REST spec defines it.
pub const NAMESPACE_SEPARATOR: char = '\u{1f}';
const MAX_NAME_LEN: usize = 255;

fn validate_level(what: &str, name: &str) -> CatalogResult<()> {
    if name.is_empty() {
        return Err(CatalogError::BadRequest(format!(
            "{what} must not be empty"
        )));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(CatalogError::BadRequest(format!(
            "{what} `{}...` is longer than {MAX_NAME_LEN} bytes",
            &name[..name.floor_char_boundary(32)]
        )));
    }
    if name.contains('/') {
        return Err(CatalogError::BadRequest(format!(
            "{what} `{name}` must not contain '/'"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(CatalogError::BadRequest(format!(
            "{what} {name:?} must not contain control characters"
        )));
    }
    if name == "." || name == ".." {
        return Err(CatalogError::BadRequest(format!(
            "{what} must not be `.` or `..`"
        )));
    }
    Ok(())
}

/// Warehouse names double as the URL prefix, so they are restricted to a URL-safe set.
pub fn validate_warehouse_name(name: &str) -> CatalogResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(CatalogError::BadRequest(format!(
            "warehouse name {name:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '-', '_' or '.'"
        )))
    }
}

/// A namespace: one or more validated levels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct NamespaceName(Vec<String>);

impl NamespaceName {
    pub fn new(levels: Vec<String>) -> CatalogResult<Self> {
        if levels.is_empty() {
            return Err(CatalogError::BadRequest(
                "namespace must have at least one level".to_string(),
            ));
        }
        for level in &levels {
            validate_level("namespace level", level)?;
        }
        Ok(Self(levels))
    }

    /// Parses the URL form: levels joined by 0x1F (already percent-decoded).
    pub fn from_url_segment(segment: &str) -> CatalogResult<Self> {
        Self::new(
            segment
                .split(NAMESPACE_SEPARATOR)
                .map(str::to_string)
                .collect(),
        )
    }

    pub fn levels(&self) -> &[String] {
        &self.0
    }

    pub fn parent_levels(&self) -> &[String] {
        &self.0[..self.0.len() - 1]
    }
}

impl TryFrom<Vec<String>> for NamespaceName {
    type Error = CatalogError;
    fn try_from(levels: Vec<String>) -> CatalogResult<Self> {
        Self::new(levels)
    }
}

impl From<NamespaceName> for Vec<String> {
    fn from(ns: NamespaceName) -> Self {
        ns.0
    }
}

impl fmt::Display for NamespaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// A validated table name.
pub fn validate_table_name(name: &str) -> CatalogResult<()> {
    validate_level("table name", name)
}

/// A table's full name within a warehouse.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TableName {
    pub namespace: NamespaceName,
    pub name: String,
}

impl TableName {
    pub fn new(namespace: NamespaceName, name: String) -> CatalogResult<Self> {
        validate_table_name(&name)?;
        Ok(Self { namespace, name })
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_level_namespaces_split_on_unit_separator() {
        let ns = NamespaceName::from_url_segment("a\u{1f}b").unwrap();
        assert_eq!(ns.levels(), ["a", "b"]);
        assert_eq!(ns.parent_levels(), ["a"]);
        assert_eq!(ns.to_string(), "a.b");
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", "a/b", "tab\tname", "..", "x\u{7f}"] {
            assert!(validate_table_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(NamespaceName::from_url_segment("a\u{1f}").is_err());
        assert!(validate_warehouse_name("wh 1").is_err());
        assert!(validate_warehouse_name("wh-1.prod_x").is_ok());
    }
}
