//! In-process queues per table, taken before a commit's database transaction.
//!
//! The PostgreSQL row lock is what makes commits to one table serialise, across instances too. But
//! when dozens of requests on one instance wait on the same row lock, PostgreSQL wakes them all at
//! every release and throughput collapses. Queueing them here first (tokio's mutex is fair, FIFO)
//! leaves at most one waiter per table per instance at the database.

use std::hash::BuildHasher;

use tokio::sync::{Mutex, MutexGuard};

use crate::names::TableName;

/// Stripes rather than one mutex per table: bounded memory whatever the number of tables, at the
/// price of two tables sometimes sharing a stripe.
const STRIPES: usize = 1024;

#[derive(Debug)]
pub struct TableLocks {
    stripes: Vec<Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for TableLocks {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: Default::default(),
        }
    }
}

impl TableLocks {
    /// Locks the stripes of these tables, in stripe order so that concurrent callers cannot deadlock.
    pub async fn lock<'a>(
        &self,
        warehouse: uuid::Uuid,
        tables: impl Iterator<Item = &'a TableName>,
    ) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = tables
            .map(|t| self.hasher.hash_one((warehouse, t)) as usize % STRIPES)
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            guards.push(self.stripes[stripe].lock().await);
        }
        guards
    }
}
