//! Where a source path goes at the destination: the source table location is replaced by the
//! replica's, and every path must lie under the source location (a path elsewhere would leave the
//! replica reading the source's storage). Paths are compared as [`Location`]s, segment by
//! segment, so no spelling of a path (`..`, `file:/` against `file:///`) can move it elsewhere.

use crate::storage::{Location, LocationError};

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error(transparent)]
    Invalid(#[from] LocationError),
    #[error(
        "path `{path}` is outside the source table location `{location}`; floe replicates only \
         tables whose files live under their location"
    )]
    Outside { path: String, location: String },
}

impl From<PathError> for crate::manifest_avro::AvroRewriteError {
    fn from(err: PathError) -> Self {
        Self::Edit(Box::new(err))
    }
}

/// The source table location and the replica's.
#[derive(Debug, Clone)]
pub struct PathMap {
    source: Location,
    destination: Location,
}

impl PathMap {
    pub fn new(source_location: &str, destination_location: &str) -> Result<Self, PathError> {
        Ok(Self {
            source: Location::parse(source_location)?,
            destination: Location::parse(destination_location)?,
        })
    }

    pub fn destination_location(&self) -> &Location {
        &self.destination
    }

    /// A source path, checked to lie at or under the source table location.
    pub fn source_file(&self, path: &str) -> Result<Location, PathError> {
        let location = Location::parse(path)?;
        if location.is_at_or_under(&self.source) {
            Ok(location)
        } else {
            Err(PathError::Outside {
                path: path.to_string(),
                location: self.source.to_string(),
            })
        }
    }

    /// The destination location of a source path.
    pub fn rewrite(&self, path: &str) -> Result<Location, PathError> {
        let source = self.source_file(path)?;
        Ok(source
            .rebase(&self.source, &self.destination)
            .expect("source_file checked that the path is under the source location"))
    }

    /// Rewrites a string that may be a path under the source location (a property value); other
    /// strings are returned unchanged.
    pub fn rewrite_if_path(&self, value: &str) -> String {
        self.rewrite(value)
            .map(|location| location.to_string())
            .unwrap_or_else(|_| value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_paths_under_the_location() {
        let map = PathMap::new("file:///a/wh/ns/t-1/", "file:///b/wh/ns/t-1").unwrap();
        assert_eq!(
            map.rewrite("file:///a/wh/ns/t-1/data/x.parquet")
                .unwrap()
                .to_string(),
            "file:///b/wh/ns/t-1/data/x.parquet"
        );
        assert_eq!(
            map.rewrite("file:///a/wh/ns/t-1").unwrap().to_string(),
            "file:///b/wh/ns/t-1"
        );
        assert!(map.rewrite("file:///a/wh/ns/t-10/data/x.parquet").is_err());
        assert!(map.rewrite("file:///a/wh/ns/t-1/../t-2/x.parquet").is_err());
        assert_eq!(map.rewrite_if_path("snappy"), "snappy");
        // Spark (Hadoop) spells the same file `file:/...`.
        assert_eq!(
            map.rewrite("file:/a/wh/ns/t-1/metadata/snap-1.avro")
                .unwrap()
                .to_string(),
            "file:///b/wh/ns/t-1/metadata/snap-1.avro"
        );
    }
}
