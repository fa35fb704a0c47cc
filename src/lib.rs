//! floe: an Apache Iceberg REST catalog that records every commit in a sequenced PostgreSQL update
//! log, from which tables are replicated to read-only replicas in other regions.

pub mod auth;
pub mod bench;
pub mod catalog;
pub mod config;
pub mod contract;
pub mod db;
pub mod dev;
pub mod error;
pub mod http;
pub mod log;
pub mod manifest_avro;
pub mod names;
pub mod pgtemp;
pub mod replication;
pub mod secret;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod upstream;
