//! Writes the files of Iceberg snapshots for benchmarks and tests: data files of random bytes (floe copies data
//! files byte for byte and never parses them), and a manifest and manifest list in Avro with the
//! fields floe reads and rewrites (real clients' files are covered by the client tests).

use apache_avro::types::{Record, Value};
use apache_avro::{Schema, Writer};

/// The manifest entry schema; `{bounds}` is where the column bounds go when files carry them.
const MANIFEST_SCHEMA: &str = r#"{"type":"record","name":"manifest_entry","fields":[
  {"name":"status","type":"int","field-id":0},
  {"name":"snapshot_id","type":["null","long"],"default":null,"field-id":1},
  {"name":"sequence_number","type":["null","long"],"default":null,"field-id":3},
  {"name":"file_sequence_number","type":["null","long"],"default":null,"field-id":4},
  {"name":"data_file","field-id":2,"type":{"type":"record","name":"r2","fields":[
    {"name":"content","type":"int","field-id":134},
    {"name":"file_path","type":"string","field-id":100},
    {"name":"file_format","type":"string","field-id":101},
    {"name":"record_count","type":"long","field-id":103},
    {"name":"file_size_in_bytes","type":"long","field-id":104}{bounds}]}}]}"#;

/// Iceberg's lower_bounds and upper_bounds (maps of column id to a serialized bound).
const BOUNDS_FIELDS: &str = r#",
    {"name":"lower_bounds","type":["null",{"type":"array","logicalType":"map","items":{
      "type":"record","name":"k126_v127","fields":[{"name":"key","type":"int","field-id":126},
      {"name":"value","type":"bytes","field-id":127}]}}],"default":null,"field-id":125},
    {"name":"upper_bounds","type":["null",{"type":"array","logicalType":"map","items":{
      "type":"record","name":"k129_v130","fields":[{"name":"key","type":"int","field-id":129},
      {"name":"value","type":"bytes","field-id":130}]}}],"default":null,"field-id":128}"#;

/// Bytes of one column's bound, when files carry bounds.
const BOUND_BYTES: usize = 256;

const LIST_SCHEMA: &str = r#"{"type":"record","name":"manifest_file","fields":[
  {"name":"manifest_path","type":"string","field-id":500},
  {"name":"manifest_length","type":"long","field-id":501},
  {"name":"partition_spec_id","type":"int","field-id":502},
  {"name":"content","type":"int","field-id":517},
  {"name":"sequence_number","type":"long","field-id":515},
  {"name":"added_snapshot_id","type":"long","field-id":503}]}"#;

/// The files of a table's snapshots, each snapshot's list holding every manifest so far.
#[derive(Debug, Default)]
pub struct SnapshotWriter {
    manifests: Vec<(String, i64, i64, i64)>,
    /// When set, the next snapshots' files are position-delete files in this format (e.g. to
    /// test a format floe does not rewrite); data files otherwise.
    pub position_deletes_as: Option<String>,
    /// When set, each file's manifest entry carries lower and upper bounds of about this many
    /// bytes in all (as a wide table's statistics do), making manifests large for few files.
    pub stats_bytes_per_file: usize,
}

fn path_of(location: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = location
        .strip_prefix("file://")
        .ok_or_else(|| anyhow::anyhow!("not a file:// location: {location}"))?;
    Ok(std::path::PathBuf::from(path))
}

fn write(location: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let path = path_of(location)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, bytes)?;
    Ok(())
}

impl SnapshotWriter {
    /// Leaves the last snapshot's manifest out of the lists written next (a test that removed
    /// that snapshot at the source).
    pub fn forget_last_snapshot(&mut self) {
        self.manifests.pop();
    }

    /// Writes `files` data files of `size` bytes and the snapshot's manifest and manifest list
    /// under a `file://` `table_location`; returns the manifest list's location.
    pub fn write_snapshot(
        &mut self,
        table_location: &str,
        snapshot_id: i64,
        sequence_number: i64,
        files: usize,
        size: usize,
    ) -> anyhow::Result<String> {
        self.write_snapshot_to(
            table_location,
            snapshot_id,
            sequence_number,
            files,
            size,
            write,
        )
    }

    /// The same, handing each file (location, bytes) to `sink`, for storages other than local
    /// directories; files come in the order they must be written (data, manifest, list).
    pub fn write_snapshot_to(
        &mut self,
        table_location: &str,
        snapshot_id: i64,
        sequence_number: i64,
        files: usize,
        size: usize,
        mut write: impl FnMut(&str, &[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<String> {
        let bounds = if self.stats_bytes_per_file > 0 {
            BOUNDS_FIELDS
        } else {
            ""
        };
        let manifest_schema = Schema::parse_str(&MANIFEST_SCHEMA.replace("{bounds}", bounds))?;
        let columns = self.stats_bytes_per_file / (2 * BOUND_BYTES);
        let mut writer = Writer::new(&manifest_schema, Vec::new());
        writer.add_user_metadata("format-version".to_string(), "2")?;
        for i in 0..files {
            let data = format!("{table_location}/data/{snapshot_id}-{i}.parquet");
            let bytes: Vec<u8> = (0..size)
                .map(|b| (b as u64 * 31 + i as u64) as u8)
                .collect();
            write(&data, &bytes)?;
            let (content, format) = match &self.position_deletes_as {
                Some(format) => (1, format.clone()),
                None => (0, "PARQUET".to_string()),
            };
            let mut fields = vec![
                ("content".into(), Value::Int(content)),
                ("file_path".into(), Value::String(data)),
                ("file_format".into(), Value::String(format)),
                ("record_count".into(), Value::Long(10)),
                ("file_size_in_bytes".into(), Value::Long(size as i64)),
            ];
            if self.stats_bytes_per_file > 0 {
                let seed = (snapshot_id as u64) << 20 | i as u64;
                fields.push(("lower_bounds".into(), bounds_value(columns, seed)));
                fields.push(("upper_bounds".into(), bounds_value(columns, !seed)));
            }
            let data_file = Value::Record(fields);
            let mut entry = Record::new(&manifest_schema)
                .ok_or_else(|| anyhow::anyhow!("not a record schema"))?;
            entry.put("status", Value::Int(1));
            entry.put(
                "snapshot_id",
                Value::Union(1, Box::new(Value::Long(snapshot_id))),
            );
            entry.put(
                "sequence_number",
                Value::Union(1, Box::new(Value::Long(sequence_number))),
            );
            entry.put(
                "file_sequence_number",
                Value::Union(1, Box::new(Value::Long(sequence_number))),
            );
            entry.put("data_file", data_file);
            writer.append(entry)?;
        }
        let manifest_bytes = writer.into_inner()?;
        let manifest = format!("{table_location}/metadata/{snapshot_id}-m0.avro");
        write(&manifest, &manifest_bytes)?;
        self.manifests.push((
            manifest,
            manifest_bytes.len() as i64,
            sequence_number,
            snapshot_id,
        ));

        let list_schema = Schema::parse_str(LIST_SCHEMA)?;
        let mut writer = Writer::new(&list_schema, Vec::new());
        for (path, length, seq, added) in &self.manifests {
            let mut record =
                Record::new(&list_schema).ok_or_else(|| anyhow::anyhow!("not a record schema"))?;
            record.put("manifest_path", Value::String(path.clone()));
            record.put("manifest_length", Value::Long(*length));
            record.put("partition_spec_id", Value::Int(0));
            record.put("content", Value::Int(0));
            record.put("sequence_number", Value::Long(*seq));
            record.put("added_snapshot_id", Value::Long(*added));
            writer.append(record)?;
        }
        let list = format!("{table_location}/metadata/snap-{snapshot_id}.avro");
        write(&list, &writer.into_inner()?)?;
        Ok(list)
    }
}

/// `columns` bounds of [`BOUND_BYTES`] pseudo-random bytes each (incompressible, as real bounds of
/// distinct values mostly are), as the union value of an optional bounds map.
fn bounds_value(columns: usize, seed: u64) -> Value {
    let mut state = seed | 1;
    let mut next = move || {
        // xorshift64: fast, and enough to defeat deflate.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let entries = (0..columns)
        .map(|column| {
            let bytes: Vec<u8> = (0..BOUND_BYTES / 8)
                .flat_map(|_| next().to_le_bytes())
                .collect();
            Value::Record(vec![
                ("key".into(), Value::Int(column as i32 + 1)),
                ("value".into(), Value::Bytes(bytes)),
            ])
        })
        .collect();
    Value::Union(1, Box::new(Value::Array(entries)))
}
