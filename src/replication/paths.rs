//! Where a source path goes at the destination: the source table location is replaced by the
//! replica's, and every path must lie under the source location (a path elsewhere would leave the
//! replica reading the source's storage).

use crate::storage::{canonical, is_under};

#[derive(Debug, thiserror::Error)]
#[error(
    "path `{path}` is outside the source table location `{location}`; floe replicates only tables \
     whose files live under their location"
)]
pub struct OutsideLocation {
    pub path: String,
    pub location: String,
}

impl From<OutsideLocation> for crate::manifest_avro::AvroRewriteError {
    fn from(err: OutsideLocation) -> Self {
        Self::Edit(Box::new(err))
    }
}

/// The source table location and the replica's.
#[derive(Debug, Clone)]
pub struct PathMap {
    source: String,
    destination: String,
}

impl PathMap {
    pub fn new(source_location: &str, destination_location: &str) -> Self {
        Self {
            source: source_location.trim_end_matches('/').to_string(),
            destination: destination_location.trim_end_matches('/').to_string(),
        }
    }

    pub fn destination_location(&self) -> &str {
        &self.destination
    }

    /// The destination path of a source path.
    pub fn rewrite(&self, path: &str) -> Result<String, OutsideLocation> {
        let (source, normalized) = (canonical(&self.source), canonical(path));
        if normalized == source {
            return Ok(self.destination.clone());
        }
        if is_under(&normalized, &source) {
            return Ok(format!(
                "{}{}",
                self.destination,
                &normalized[source.len()..]
            ));
        }
        Err(OutsideLocation {
            path: path.to_string(),
            location: self.source.clone(),
        })
    }

    /// Rewrites a string that may be a path under the source location (a property value); other
    /// strings are returned unchanged.
    pub fn rewrite_if_path(&self, value: &str) -> String {
        self.rewrite(value).unwrap_or_else(|_| value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_paths_under_the_location() {
        let map = PathMap::new("file:///a/wh/ns/t-1/", "file:///b/wh/ns/t-1");
        assert_eq!(
            map.rewrite("file:///a/wh/ns/t-1/data/x.parquet").unwrap(),
            "file:///b/wh/ns/t-1/data/x.parquet"
        );
        assert_eq!(
            map.rewrite("file:///a/wh/ns/t-1").unwrap(),
            "file:///b/wh/ns/t-1"
        );
        assert!(map.rewrite("file:///a/wh/ns/t-10/data/x.parquet").is_err());
        assert_eq!(map.rewrite_if_path("snappy"), "snappy");
        // Spark (Hadoop) spells the same file `file:/...`.
        assert_eq!(
            map.rewrite("file:/a/wh/ns/t-1/metadata/snap-1.avro")
                .unwrap(),
            "file:///b/wh/ns/t-1/metadata/snap-1.avro"
        );
    }
}
