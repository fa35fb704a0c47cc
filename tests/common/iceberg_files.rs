//! Test helpers for Iceberg files (the snapshot writer is floe's own `floe::bench::files`).

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
