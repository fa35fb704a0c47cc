//! The storage clients of the replicator's destinations, opened once and shared by every stream
//! that writes there (an S3 client holds its connection pool and credentials; opening one per
//! drive would pay for both on every change).
//!
//! A client is keyed by the destination (peer, warehouse) and reused only while the peer's
//! settings for it (root and S3 settings) are the ones it was opened with: a changed peer gets a
//! new client on its next use, so a rotated key or a moved root takes effect without a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::storage::{self, Location, S3Settings, Storage, StorageError};

struct Opened {
    root: Location,
    s3: Option<S3Settings>,
    storage: Arc<dyn Storage>,
}

/// The destinations' storage clients.
#[derive(Default)]
pub struct DestinationStorages {
    opened: Mutex<HashMap<String, Opened>>,
}

impl DestinationStorages {
    /// The client for `owner`'s storage at `root`, opened now if none is open with these settings.
    pub async fn get(
        &self,
        owner: &str,
        root: &Location,
        s3: Option<&S3Settings>,
    ) -> Result<Arc<dyn Storage>, StorageError> {
        if let Some(open) = self.opened.lock().expect("not poisoned").get(owner)
            && open.root == *root
            && open.s3.as_ref() == s3
        {
            return Ok(open.storage.clone());
        }
        let storage = storage::open(root, s3, owner).await?;
        self.opened.lock().expect("not poisoned").insert(
            owner.to_string(),
            Opened {
                root: root.clone(),
                s3: s3.cloned(),
                storage: storage.clone(),
            },
        );
        Ok(storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(dir: &std::path::Path) -> Location {
        storage::parse_root(&format!("file://{}", dir.display())).unwrap()
    }

    #[tokio::test]
    async fn a_client_is_reused_until_its_settings_change() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let storages = DestinationStorages::default();
        let first = storages.get("peer x", &root(&a), None).await.unwrap();
        let again = storages.get("peer x", &root(&a), None).await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the open client was not reused"
        );
        let moved = storages.get("peer x", &root(&b), None).await.unwrap();
        assert!(
            !Arc::ptr_eq(&first, &moved),
            "a moved root kept the old client"
        );
        let other = storages.get("peer y", &root(&b), None).await.unwrap();
        assert!(
            !Arc::ptr_eq(&moved, &other),
            "two destinations shared a client"
        );
    }
}
