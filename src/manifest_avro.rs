//! Manifest lists and manifests at the Avro level, read with each file's own writer schema so that
//! every writer's files (Spark, PyIceberg, DuckDB, ...) read alike.
//!
//! Replication rewrites them: only path fields (and the sizes that follow from rewritten files)
//! change, and the records are written back with the same schema and the same file metadata
//! (Iceberg's schema, partition spec, format version, content). iceberg's `ManifestWriter` would
//! restamp entries (status, snapshot ids, sequence numbers), which a replica must keep exactly.
//! Purge only reads the paths they name.

use std::collections::HashMap;

use apache_avro::types::Value;
use apache_avro::{Codec, Reader, Writer};

#[derive(Debug, thiserror::Error)]
pub enum AvroRewriteError {
    #[error("reading Avro: {0}")]
    Read(#[source] Box<apache_avro::Error>),
    #[error("writing Avro: {0}")]
    Write(#[source] Box<apache_avro::Error>),
    #[error("unexpected Avro record shape: {0}")]
    Shape(String),
    /// The caller's edit refused a record (e.g. a path outside the table location).
    #[error(transparent)]
    Edit(Box<dyn std::error::Error + Send + Sync>),
}

fn read_err(e: apache_avro::Error) -> AvroRewriteError {
    AvroRewriteError::Read(Box::new(e))
}

fn write_err(e: apache_avro::Error) -> AvroRewriteError {
    AvroRewriteError::Write(Box::new(e))
}

/// Reads every record of an Avro file, lets `edit` change each, and writes them back with the same
/// writer schema and user metadata. One record at a time: the memory it holds is the input, the
/// output and one decoded record, however many records the file has.
pub fn rewrite_records(
    bytes: &[u8],
    mut edit: impl FnMut(&mut Value) -> Result<(), AvroRewriteError>,
) -> Result<Vec<u8>, AvroRewriteError> {
    let reader = Reader::new(bytes).map_err(read_err)?;
    let schema = reader.writer_schema().clone();
    let metadata: HashMap<String, Vec<u8>> = reader.user_metadata().clone();
    let mut writer = Writer::with_codec(&schema, Vec::new(), Codec::Deflate(Default::default()));
    for (key, value) in metadata {
        writer.add_user_metadata(key, value).map_err(write_err)?;
    }
    for record in reader {
        let mut record = record.map_err(read_err)?;
        edit(&mut record)?;
        writer.append(record).map_err(write_err)?;
    }
    writer.into_inner().map_err(write_err)
}

/// What `pick` takes from each record of an Avro file, decoding one record at a time.
pub fn map_records<T>(
    bytes: &[u8],
    mut pick: impl FnMut(&Value) -> Result<Option<T>, AvroRewriteError>,
) -> Result<Vec<T>, AvroRewriteError> {
    let mut picked = Vec::new();
    for record in Reader::new(bytes).map_err(read_err)? {
        if let Some(value) = pick(&record.map_err(read_err)?)? {
            picked.push(value);
        }
    }
    Ok(picked)
}

/// The manifests a manifest list names, in its order.
pub fn manifest_paths(manifest_list: &[u8]) -> Result<Vec<String>, AvroRewriteError> {
    map_records(manifest_list, |record| {
        string_field(record, "manifest_path").map(Some)
    })
}

/// The data and delete files a manifest's entries name, whatever each entry's status.
pub fn entry_file_paths(manifest: &[u8]) -> Result<Vec<String>, AvroRewriteError> {
    map_records(manifest, |entry| {
        let data_file = field(entry, "data_file")
            .ok_or_else(|| AvroRewriteError::Shape("entry has no data_file".to_string()))?;
        string_field(unwrap_union(data_file), "file_path").map(Some)
    })
}

fn string_field(record: &Value, name: &str) -> Result<String, AvroRewriteError> {
    field(record, name)
        .and_then(as_str)
        .map(str::to_string)
        .ok_or_else(|| AvroRewriteError::Shape(format!("record has no string `{name}`")))
}

/// The named field of a record.
pub fn field<'a>(record: &'a Value, name: &str) -> Option<&'a Value> {
    match record {
        Value::Record(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
        _ => None,
    }
}

pub fn field_mut<'a>(record: &'a mut Value, name: &str) -> Option<&'a mut Value> {
    match record {
        Value::Record(fields) => fields.iter_mut().find(|(n, _)| n == name).map(|(_, v)| v),
        _ => None,
    }
}

/// The value inside an optional (union) field, or the field itself.
pub fn unwrap_union(value: &Value) -> &Value {
    match value {
        Value::Union(_, inner) => inner,
        other => other,
    }
}

fn unwrap_union_mut(value: &mut Value) -> &mut Value {
    match value {
        Value::Union(_, inner) => inner,
        other => other,
    }
}

pub fn as_str(value: &Value) -> Option<&str> {
    match unwrap_union(value) {
        Value::String(s) => Some(s),
        _ => None,
    }
}

pub fn as_long(value: &Value) -> Option<i64> {
    match unwrap_union(value) {
        Value::Long(n) => Some(*n),
        Value::Int(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Replaces a string field (or the string inside an optional one; null stays null).
pub fn map_string_field(
    record: &mut Value,
    name: &str,
    map: impl FnOnce(&str) -> Result<String, AvroRewriteError>,
) -> Result<(), AvroRewriteError> {
    let Some(value) = field_mut(record, name) else {
        return Ok(());
    };
    if let Value::String(s) = unwrap_union_mut(value) {
        *s = map(s)?;
    }
    Ok(())
}

/// Sets a long field (or the long inside an optional one).
pub fn set_long_field(record: &mut Value, name: &str, to: i64) -> Result<(), AvroRewriteError> {
    let value = field_mut(record, name)
        .ok_or_else(|| AvroRewriteError::Shape(format!("record has no `{name}` field")))?;
    match unwrap_union_mut(value) {
        Value::Long(n) => *n = to,
        Value::Int(n) => {
            *n = i32::try_from(to)
                .map_err(|_| AvroRewriteError::Shape(format!("{name} overflows")))?
        }
        other => {
            return Err(AvroRewriteError::Shape(format!(
                "`{name}` is not a number: {other:?}"
            )));
        }
    }
    Ok(())
}

/// Rewrites the string value of one column's bound in a bounds map (`lower_bounds` or
/// `upper_bounds`: an array of `{key, value}` records). A bound `map` cannot rewrite is removed:
/// without it a reader only checks more files, while a stale one would hide deletes.
pub fn map_bound(
    data_file: &mut Value,
    bounds: &str,
    field_id: i32,
    map: impl Fn(&str) -> Option<String>,
) {
    let Some(value) = field_mut(data_file, bounds) else {
        return;
    };
    let Value::Array(entries) = unwrap_union_mut(value) else {
        return;
    };
    entries.retain_mut(|entry| {
        if field(entry, "key").and_then(as_long) != Some(i64::from(field_id)) {
            return true;
        }
        let Some(Value::Bytes(bytes)) = field_mut(entry, "value").map(unwrap_union_mut) else {
            return true;
        };
        match std::str::from_utf8(bytes).ok().and_then(&map) {
            Some(rewritten) => {
                *bytes = rewritten.into_bytes();
                true
            }
            None => false,
        }
    });
}
