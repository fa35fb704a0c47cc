//! Writes the files of Iceberg snapshots for tests: data files of random bytes (floe copies data
//! files byte for byte and never parses them), and a manifest and manifest list in Avro with the
//! fields floe reads and rewrites (real clients' files are covered by the client tests).

use apache_avro::types::{Record, Value};
use apache_avro::{Schema, Writer};

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
    {"name":"file_size_in_bytes","type":"long","field-id":104}]}}]}"#;

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
}

fn path_of(location: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(location.strip_prefix("file://").expect("file:// location"))
}

fn write(location: &str, bytes: &[u8]) {
    let path = path_of(location);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

impl SnapshotWriter {
    /// Writes `files` data files of `size` bytes and the snapshot's manifest and manifest list
    /// under `table_location`; returns the manifest list's location.
    pub fn write_snapshot(
        &mut self,
        table_location: &str,
        snapshot_id: i64,
        sequence_number: i64,
        files: usize,
        size: usize,
    ) -> String {
        let manifest_schema = Schema::parse_str(MANIFEST_SCHEMA).unwrap();
        let mut writer = Writer::new(&manifest_schema, Vec::new());
        writer
            .add_user_metadata("format-version".to_string(), "2")
            .unwrap();
        for i in 0..files {
            let data = format!("{table_location}/data/{snapshot_id}-{i}.parquet");
            let bytes: Vec<u8> = (0..size)
                .map(|b| (b as u64 * 31 + i as u64) as u8)
                .collect();
            write(&data, &bytes);
            let data_file = Value::Record(vec![
                ("content".into(), Value::Int(0)),
                ("file_path".into(), Value::String(data)),
                ("file_format".into(), Value::String("PARQUET".into())),
                ("record_count".into(), Value::Long(10)),
                ("file_size_in_bytes".into(), Value::Long(size as i64)),
            ]);
            let mut entry = Record::new(&manifest_schema).unwrap();
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
            writer.append(entry).unwrap();
        }
        let manifest_bytes = writer.into_inner().unwrap();
        let manifest = format!("{table_location}/metadata/{snapshot_id}-m0.avro");
        write(&manifest, &manifest_bytes);
        self.manifests.push((
            manifest,
            manifest_bytes.len() as i64,
            sequence_number,
            snapshot_id,
        ));

        let list_schema = Schema::parse_str(LIST_SCHEMA).unwrap();
        let mut writer = Writer::new(&list_schema, Vec::new());
        for (path, length, seq, added) in &self.manifests {
            let mut record = Record::new(&list_schema).unwrap();
            record.put("manifest_path", Value::String(path.clone()));
            record.put("manifest_length", Value::Long(*length));
            record.put("partition_spec_id", Value::Int(0));
            record.put("content", Value::Int(0));
            record.put("sequence_number", Value::Long(*seq));
            record.put("added_snapshot_id", Value::Long(*added));
            writer.append(record).unwrap();
        }
        let list = format!("{table_location}/metadata/snap-{snapshot_id}.avro");
        write(&list, &writer.into_inner().unwrap());
        list
    }
}

/// Every file under a directory whose bytes mention `needle`.
pub fn files_mentioning(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                // Avro blocks are deflated: check the decoded records too.
                let text = decoded_text(&bytes);
                if text.contains(needle) {
                    found.push(path);
                }
            }
        }
    }
    found
}

fn decoded_text(bytes: &[u8]) -> String {
    if bytes.starts_with(b"Obj\x01")
        && let Ok(reader) = apache_avro::Reader::new(bytes)
    {
        let records: Vec<String> = reader.flatten().map(|v| format!("{v:?}")).collect();
        return records.join("\n");
    }
    String::from_utf8_lossy(bytes).into_owned()
}
