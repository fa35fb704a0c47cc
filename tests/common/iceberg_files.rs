//! Test helpers for Iceberg files (the snapshot writer is floe's own `floe::bench::files`).

/// Every file under a directory whose bytes mention `needle`.
pub fn files_mentioning(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    super::files_under(dir)
        .into_iter()
        // Avro blocks are deflated: check the decoded records too.
        .filter(|path| std::fs::read(path).is_ok_and(|bytes| decoded_text(&bytes).contains(needle)))
        .collect()
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
