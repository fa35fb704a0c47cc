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

use super::paths::{OutsideLocation, PathMap};

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
    Path(#[from] OutsideLocation),
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
    let rewrite = |value: Option<&str>| value.map(|path| map.rewrite(path)).transpose();
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
