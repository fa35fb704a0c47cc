//! A floe whose warehouse `wh` is on local disk or in an S3 bucket (s3s-fs), with a handle on that
//! storage to write files as a client would and to look at what is there.

use std::sync::Arc;

use floe::bench::files::SnapshotWriter;
use floe::storage::{self, Location, Storage};
use serde_json::{Value, json};

use super::TestFloe;
use super::s3::{BUCKET, S3Server, SECRET_KEY, s3_settings, start_s3};

/// A floe whose warehouse `wh` is on local disk or in an S3 bucket, and a handle on that storage.
pub struct Lake {
    pub floe: TestFloe,
    pub storage: Arc<dyn Storage>,
    pub root: String,
    _s3: Option<S3Server>,
}

pub async fn local_lake() -> Lake {
    let floe = TestFloe::start().await;
    let root = floe.warehouse_root();
    let storage = storage::open(&loc(&root), None, "test").await.unwrap();
    Lake {
        floe,
        storage,
        root,
        _s3: None,
    }
}

pub async fn s3_lake() -> Option<Lake> {
    let server = start_s3().await?;
    let url = super::new_database().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = super::settings(&url, dir.path());
    let root = format!("s3://{BUCKET}/wh");
    settings.warehouses[0].root = root.clone();
    settings.warehouses[0].s3 = Some(s3_settings(&server, SECRET_KEY));
    let storage = storage::open(&loc(&root), settings.warehouses[0].s3.as_ref(), "test")
        .await
        .unwrap();
    Some(Lake {
        floe: TestFloe::start_with(settings, dir).await,
        storage,
        root,
        _s3: Some(server),
    })
}

pub fn loc(location: &str) -> Location {
    Location::parse(location).unwrap()
}

impl Lake {
    /// The same lake served by a floe restarted with `change` made to its settings.
    pub async fn reconfigured(self, change: impl FnOnce(&mut floe::config::Settings)) -> Self {
        let TestFloe {
            server,
            mut settings,
            warehouse_dir,
            ..
        } = self.floe;
        server.stop().await;
        change(&mut settings);
        Self {
            floe: TestFloe::start_with(settings, warehouse_dir).await,
            ..self
        }
    }

    pub async fn put(&self, location: &str, bytes: &[u8]) {
        let mut reader = std::io::Cursor::new(bytes.to_vec());
        self.storage
            .write_stream(&loc(location), &mut reader, true)
            .await
            .unwrap();
    }

    pub async fn exists(&self, location: &str) -> bool {
        self.storage.size(&loc(location)).await.unwrap().is_some()
    }

    pub async fn create(&self, name: &str, body: Value) -> Value {
        let mut body = body;
        body["name"] = json!(name);
        body["schema"] = super::simple_schema();
        self.floe
            .post("/v1/wh/namespaces/db/tables", body)
            .await
            .expect(200)
    }

    /// Appends a snapshot of two data files written to the table's location; returns every file
    /// the snapshot added (data files, manifest, manifest list).
    pub async fn append(&self, table: &str, files: &mut SnapshotWriter) -> Vec<String> {
        let loaded = self
            .floe
            .get(&format!("/v1/wh/namespaces/db/tables/{table}"))
            .await
            .expect(200);
        let next = super::prepare_append(&loaded, files, &*self.storage, 2, 1024).await;
        self.floe.commit("db", table, next.body).await.expect(200);
        next.files
    }

    pub async fn purge(&self, table: &str) {
        self.floe
            .delete(&format!(
                "/v1/wh/namespaces/db/tables/{table}?purgeRequested=true"
            ))
            .await
            .expect(204);
        self.floe
            .get(&format!("/v1/wh/namespaces/db/tables/{table}"))
            .await
            .expect(404);
        self.floe.wait_for_purges().await;
    }
}
