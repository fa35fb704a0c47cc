//! Purge (`DELETE ...?purgeRequested=true`) on a local warehouse and on S3 (s3s-fs, which checks
//! signatures): every file the metadata references goes; the table's location is listed and what
//! is left there goes too when the location is the table's alone; a location shared with another
//! table, or one the client chose, loses only the referenced files; `gc.enabled=false` keeps data.

mod common;

use common::lake::{Lake, loc, local_lake, s3_lake};
use floe::bench::files::SnapshotWriter;
use floe::storage::{LIST_PAGE, Location};
use futures::StreamExt;
use serde_json::{Value, json};

fn location_of(table: &Value) -> String {
    table["metadata"]["location"].as_str().unwrap().to_string()
}

/// A table at the location floe assigned: its files, referenced or not, all go; a neighbour whose
/// name merely starts with the same characters stays, and so does the namespace's other table.
async fn purge_lists_the_tables_own_location(lake: Lake) {
    lake.floe.create_namespace(&["db"]).await;
    let table = lake.create("t", json!({})).await;
    let location = location_of(&table);
    let mut files = SnapshotWriter::default();
    let mut referenced = lake.append("t", &mut files).await;
    referenced.extend(lake.append("t", &mut files).await);
    // What a failed commit, a trimmed metadata log and an interrupted copy leave behind.
    let unreferenced = [
        format!("{location}/data/00000-failed-commit.parquet"),
        format!("{location}/metadata/00042-trimmed.metadata.json"),
        format!("{location}/data/.x.parquet.0123.floe-tmp"),
    ];
    for file in &unreferenced {
        lake.put(file, b"left behind").await;
    }
    // Same string prefix, different directory; and another table of the namespace.
    let lookalike = format!("{location}0/data/keep.parquet");
    lake.put(&lookalike, b"not the table's").await;
    lake.create("other", json!({})).await;
    let other_files = lake.append("other", &mut SnapshotWriter::default()).await;

    lake.purge("t").await;

    let left = lake.storage.list(&loc(&location)).await.unwrap();
    assert!(left.is_empty(), "purge left {left:?}");
    for file in referenced.iter().chain(&unreferenced) {
        assert!(!lake.exists(file).await, "purge left {file}");
    }
    assert!(lake.exists(&lookalike).await, "purge deleted {lookalike}");
    for file in &other_files {
        assert!(
            lake.exists(file).await,
            "purge deleted the other table's {file}"
        );
    }
    lake.floe
        .get("/v1/wh/namespaces/db/tables/other")
        .await
        .expect(200);
    if let Some(path) = location.strip_prefix("file://") {
        assert!(
            !std::path::Path::new(path).exists(),
            "empty directories remain"
        );
    }
}

/// A table with another table inside its location, and a table at a location the client chose:
/// only what their metadata references goes. With `gc.enabled=false`, only the metadata goes.
async fn purge_deletes_only_referenced_files_where_others_may_live(lake: Lake) {
    lake.floe.create_namespace(&["db"]).await;
    let outer = lake.create("outer", json!({})).await;
    let outer_location = location_of(&outer);
    let outer_files = lake.append("outer", &mut SnapshotWriter::default()).await;
    let outer_stray = format!("{outer_location}/data/stray.parquet");
    lake.put(&outer_stray, b"unreferenced").await;
    let inner = lake
        .create(
            "inner",
            json!({ "location": format!("{outer_location}/inner") }),
        )
        .await;
    let inner_files = lake.append("inner", &mut SnapshotWriter::default()).await;

    lake.purge("outer").await;
    for file in &outer_files {
        assert!(!lake.exists(file).await, "purge left {file}");
    }
    assert!(
        lake.exists(&outer_stray).await,
        "a location holding another table was listed and emptied"
    );
    for file in &inner_files {
        assert!(
            lake.exists(file).await,
            "purge deleted the inner table's {file}"
        );
    }
    let inner_metadata = inner["metadata-location"].as_str().unwrap();
    assert!(lake.exists(inner_metadata).await);

    // A location the client chose (no table UUID in it) may hold anything: not listed.
    let chosen = format!("{}/db/shared", lake.root);
    lake.create("chosen", json!({ "location": chosen })).await;
    let chosen_files = lake.append("chosen", &mut SnapshotWriter::default()).await;
    let foreign = format!("{chosen}/exports/report.csv");
    lake.put(&foreign, b"someone else's").await;
    lake.purge("chosen").await;
    for file in &chosen_files {
        assert!(!lake.exists(file).await, "purge left {file}");
    }
    assert!(lake.exists(&foreign).await, "purge deleted {foreign}");

    // gc.enabled=false: the data files may belong to another table too.
    let kept = lake
        .create("no_gc", json!({ "properties": { "gc.enabled": "false" } }))
        .await;
    let kept_files = lake.append("no_gc", &mut SnapshotWriter::default()).await;
    lake.purge("no_gc").await;
    for file in &kept_files {
        let is_data = file.ends_with(".parquet");
        assert_eq!(lake.exists(file).await, is_data, "{file}");
    }
    let kept_metadata = kept["metadata-location"].as_str().unwrap();
    assert!(
        !lake.exists(kept_metadata).await,
        "purge left {kept_metadata}"
    );
}

/// A location with more files than one page of a listing: the listing comes in pages of at most
/// `LIST_PAGE` files, and the purge goes through all of them.
async fn purge_pages_through_a_crowded_location(lake: Lake) {
    lake.floe.create_namespace(&["db"]).await;
    let table = lake.create("crowded", json!({})).await;
    let location = location_of(&table);
    let left_behind: Vec<String> = (0..LIST_PAGE * 2 + 100)
        .map(|i| format!("{location}/data/{:02}/{i}-failed-commit.parquet", i % 7))
        .collect();
    for file in &left_behind {
        lake.put(file, b"x").await;
    }
    let mut pages = lake.storage.list_pages(&loc(&location));
    let (mut sizes, mut listed) = (Vec::new(), 0);
    while let Some(page) = pages.next().await {
        let page = page.unwrap();
        sizes.push(page.len());
        listed += page.len();
    }
    assert!(sizes.len() >= 3, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n <= LIST_PAGE), "{sizes:?}");
    // The left-behind files and the table's metadata file.
    assert_eq!(listed, left_behind.len() + 1);

    lake.purge("crowded").await;

    let left = lake.storage.list(&loc(&location)).await.unwrap();
    assert!(left.is_empty(), "purge left {} files", left.len());
}

#[tokio::test]
async fn local_purge_pages_through_a_crowded_location() {
    purge_pages_through_a_crowded_location(local_lake().await).await;
}

#[tokio::test]
async fn s3_purge_pages_through_a_crowded_location() {
    if let Some(lake) = s3_lake().await {
        purge_pages_through_a_crowded_location(lake).await;
    }
}

#[tokio::test]
async fn local_purge_lists_the_tables_own_location() {
    purge_lists_the_tables_own_location(local_lake().await).await;
}

#[tokio::test]
async fn s3_purge_lists_the_tables_own_location() {
    if let Some(lake) = s3_lake().await {
        purge_lists_the_tables_own_location(lake).await;
    }
}

#[tokio::test]
async fn local_purge_deletes_only_referenced_files_where_others_may_live() {
    purge_deletes_only_referenced_files_where_others_may_live(local_lake().await).await;
}

#[tokio::test]
async fn s3_purge_deletes_only_referenced_files_where_others_may_live() {
    if let Some(lake) = s3_lake().await {
        purge_deletes_only_referenced_files_where_others_may_live(lake).await;
    }
}

/// S3 lists 1,000 keys a page and deletes 1,000 keys a request: a purge of more must page.
#[tokio::test]
async fn s3_listing_and_batch_deletes_go_past_one_page() {
    let Some(lake) = s3_lake().await else {
        return;
    };
    let prefix = format!("{}/db/big-0123", lake.root);
    let objects: Vec<String> = (0..1_005)
        .map(|i| format!("{prefix}/data/{:02}/{i}.parquet", i % 7))
        .collect();
    for object in &objects {
        lake.put(object, b"x").await;
    }
    let mut listed = lake.storage.list(&loc(&prefix)).await.unwrap();
    listed.sort();
    let mut expected: Vec<Location> = objects.iter().map(|o| loc(o)).collect();
    expected.sort();
    assert_eq!(listed, expected);
    lake.storage.delete_many(&expected).await.unwrap();
    assert!(lake.storage.list(&loc(&prefix)).await.unwrap().is_empty());
}
