//! Position-delete files name the data files they delete from (`file_path`, field id 2147483546):
//! a replica's copy must name the replica's data files, so the column is rewritten and every other
//! column, the schema (with its field ids) and the row order are kept.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, LargeStringArray, RecordBatch, StringArray};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::paths::{PathError, PathMap};

/// The column of a position-delete file that names the data file.
const FILE_PATH_COLUMN: &str = "file_path";

#[derive(Debug, thiserror::Error)]
pub enum DeleteFileError {
    #[error("position-delete file: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("position-delete file: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("position-delete file has no string column `file_path`")]
    NoFilePath,
    #[error(transparent)]
    Path(#[from] PathError),
}

/// Rewrites the `file_path` column of a Parquet position-delete file.
pub fn rewrite_parquet_position_deletes(
    bytes: Bytes,
    map: &PathMap,
) -> Result<Vec<u8>, DeleteFileError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let schema = builder.schema().clone();
    let column = schema
        .index_of(FILE_PATH_COLUMN)
        .map_err(|_| DeleteFileError::NoFilePath)?;
    let reader = builder.build()?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties))?;
    for batch in reader {
        let batch = batch?;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns[column] = rewrite_column(&columns[column], map)?;
        writer.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
    }
    Ok(writer.into_inner()?)
}

fn rewrite_column(column: &ArrayRef, map: &PathMap) -> Result<ArrayRef, DeleteFileError> {
    let rewrite = |value: Option<&str>| {
        value
            .map(|path| map.rewrite(path).map(|l| l.to_string()))
            .transpose()
    };
    if let Some(strings) = column.as_any().downcast_ref::<StringArray>() {
        let values = strings.iter().map(rewrite).collect::<Result<Vec<_>, _>>()?;
        return Ok(Arc::new(StringArray::from(values)));
    }
    if let Some(strings) = column.as_any().downcast_ref::<LargeStringArray>() {
        let values = strings.iter().map(rewrite).collect::<Result<Vec<_>, _>>()?;
        return Ok(Arc::new(LargeStringArray::from(values)));
    }
    Err(DeleteFileError::NoFilePath)
}

/// Puffin's magic, at the file's start and around its footer.
const PUFFIN_MAGIC: &[u8; 4] = b"PFA1";
/// Footer flag: the footer payload is LZ4-compressed.
const PUFFIN_FOOTER_COMPRESSED: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PuffinError {
    #[error("not a Puffin file: {0}")]
    Malformed(&'static str),
    #[error("Puffin footer: {0}")]
    Footer(#[from] serde_json::Error),
    #[error("the Puffin footer is compressed; floe rewrites uncompressed footers only")]
    Compressed,
    #[error(transparent)]
    Path(#[from] PathError),
}

/// Rewrites the `referenced-data-file` property of each blob in a Puffin file's footer (deletion
/// vectors name the data file they apply to). Blobs precede the footer, so their offsets, which
/// manifests record, stay valid.
pub fn rewrite_puffin_references(bytes: &[u8], map: &PathMap) -> Result<Vec<u8>, PuffinError> {
    let len = bytes.len();
    if len < 4 + 4 + 4 + 4 + 4 || &bytes[..4] != PUFFIN_MAGIC || &bytes[len - 4..] != PUFFIN_MAGIC {
        return Err(PuffinError::Malformed("magic missing"));
    }
    let flags = &bytes[len - 8..len - 4];
    if flags[0] & PUFFIN_FOOTER_COMPRESSED != 0 {
        return Err(PuffinError::Compressed);
    }
    let payload_size =
        u32::from_le_bytes(bytes[len - 12..len - 8].try_into().expect("4 bytes")) as usize;
    let payload_end = len - 12;
    let payload_start = payload_end
        .checked_sub(payload_size)
        .ok_or(PuffinError::Malformed("footer size"))?;
    let footer_start = payload_start
        .checked_sub(4)
        .ok_or(PuffinError::Malformed("footer size"))?;
    if &bytes[footer_start..payload_start] != PUFFIN_MAGIC {
        return Err(PuffinError::Malformed("footer magic missing"));
    }
    let mut footer: serde_json::Value = serde_json::from_slice(&bytes[payload_start..payload_end])?;
    if let Some(blobs) = footer["blobs"].as_array_mut() {
        for blob in blobs {
            if let Some(path) = blob["properties"]["referenced-data-file"].as_str() {
                let rewritten = map.rewrite(path)?.to_string();
                blob["properties"]["referenced-data-file"] = serde_json::Value::from(rewritten);
            }
        }
    }
    let payload = serde_json::to_vec(&footer)?;
    let mut out = Vec::with_capacity(footer_start + payload.len() + 16);
    out.extend_from_slice(&bytes[..footer_start]);
    out.extend_from_slice(PUFFIN_MAGIC);
    out.extend_from_slice(&payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(flags);
    out.extend_from_slice(PUFFIN_MAGIC);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn puffin(footer: &serde_json::Value, blob: &[u8]) -> Vec<u8> {
        let payload = serde_json::to_vec(footer).unwrap();
        let mut out = PUFFIN_MAGIC.to_vec();
        out.extend_from_slice(blob);
        out.extend_from_slice(PUFFIN_MAGIC);
        out.extend_from_slice(&payload);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(PUFFIN_MAGIC);
        out
    }

    #[test]
    fn puffin_footer_references_are_rewritten_and_blobs_kept() {
        let map = PathMap::new("file:///src/t", "file:///dst/t").unwrap();
        let footer = serde_json::json!({ "blobs": [{ "type": "deletion-vector-v1", "offset": 4,
            "length": 3, "properties": { "referenced-data-file": "file:///src/t/data/a.parquet",
            "cardinality": "1" } }] });
        let source = puffin(&footer, b"DV!");
        let rewritten = rewrite_puffin_references(&source, &map).unwrap();
        assert_eq!(&rewritten[4..7], b"DV!");
        let text = String::from_utf8_lossy(&rewritten);
        assert!(text.contains("file:///dst/t/data/a.parquet"));
        assert!(!text.contains("/src/"));
        // The rewritten file is itself valid Puffin.
        let same = PathMap::new("file:///dst/t", "file:///dst/t").unwrap();
        let again = rewrite_puffin_references(&rewritten, &same).unwrap();
        assert_eq!(again, rewritten);
        assert!(rewrite_puffin_references(b"not puffin at all, no", &map).is_err());
    }
}
