//! Group sync: new files written by concurrent commits are made durable by one `syncfs` of their
//! filesystem instead of an `fdatasync` of each file and an `fsync` of each directory.
//!
//! The invariant: [`GroupSync::sync`] returns `Ok` only after a `syncfs` that *began after the
//! call began* has succeeded. Such a sync writes back every file and directory entry made before
//! it began, so the caller's file and its name are on disk. Callers that arrive while a sync runs
//! wait for the next one, which one of them starts when the running one ends. One sync runs at a
//! time, and however many callers arrive while it runs, the next one covers them all: that is
//! where the saving comes from. A failed sync fails every caller it was meant to cover, and,
//! conservatively, any caller whose covering sync cannot be told apart from it.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Condvar, Mutex, PoisonError};

#[derive(Debug, Default)]
pub struct GroupSync {
    state: Mutex<State>,
    ended: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Syncs begun so far (the last one's number).
    begun: u64,
    /// The number of the last sync that has ended; one runs while it is below `begun`.
    ended: u64,
    /// The number of the last sync that failed, and how.
    last_failure: Option<(u64, io::ErrorKind, String)>,
}

impl GroupSync {
    /// Blocks until the filesystem holding `fs` has been synced by a sync begun after this call
    /// began (see the module docs). Runs on a blocking thread.
    pub fn sync(&self, fs: impl AsFd) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // The first sync to begin from now on covers this caller's files.
        let covering = state.begun + 1;
        loop {
            if state.ended >= covering {
                return match &state.last_failure {
                    Some((failed, kind, message)) if *failed >= covering => {
                        Err(io::Error::new(*kind, format!("syncfs: {message}")))
                    }
                    _ => Ok(()),
                };
            }
            if state.ended == state.begun {
                state.begun += 1;
                let number = state.begun;
                drop(state);
                let result = nix::unistd::syncfs(fs.as_fd().as_raw_fd());
                state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.ended = number;
                if let Err(errno) = result {
                    let err = io::Error::from(errno);
                    state.last_failure = Some((number, err.kind(), err.to_string()));
                }
                self.ended.notify_all();
                continue;
            }
            state = self
                .ended
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_caller_returns_after_a_sync_that_began_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let sync = Arc::new(GroupSync::default());
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (sync, path) = (sync.clone(), dir.path().to_path_buf());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let before = sync.state.lock().unwrap().begun;
                        let fs = std::fs::File::open(&path).unwrap();
                        sync.sync(&fs).unwrap();
                        let state = sync.state.lock().unwrap();
                        assert!(state.ended > before, "returned before a later sync ended");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let state = sync.state.lock().unwrap();
        assert!(state.ended <= 16 * 20, "never more syncs than callers");
    }
}
