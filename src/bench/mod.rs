//! `floe bench`: figures for BENCHMARKS.md, against a throwaway PostgreSQL (fsync on) and local
//! warehouses, with floe served in-process on 127.0.0.1.

pub mod commits;
pub mod files;
pub mod replication;

pub use commits::{BenchOptions, run_commits};
