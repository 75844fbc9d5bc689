//! This process's running tasks (for cancellation and the registration heartbeat) and
//! its paused worker kinds (for holding back fetches).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A task running in this process, as the registration heartbeat reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InFlight {
    pub task_id: i64,
    pub execution_id: i64,
    pub kind: String,
    pub started_at: DateTime<Utc>,
}

struct Entry {
    info: InFlight,
    cancel: CancellationToken,
    /// Set when someone asked to stop the task (as opposed to the drain deadline):
    /// the outcome is then `cancelled`, not a retry.
    requested: Arc<AtomicBool>,
}

/// The running tasks, keyed by a per-attempt number: the same task can run twice in
/// one process (redelivered after a lost heartbeat), and each attempt is stopped.
#[derive(Default)]
pub(crate) struct Registry {
    next: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
}

/// A registered attempt; dropping it (however the attempt ends, even by its future
/// being dropped) removes it from the registry.
pub(crate) struct Registration<'a> {
    registry: &'a Registry,
    key: u64,
    pub cancel: CancellationToken,
    requested: Arc<AtomicBool>,
}

impl Registration<'_> {
    /// Whether the token fired because someone asked to stop the task.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut entries) = self.registry.entries.lock() {
            entries.remove(&self.key);
        }
    }
}

impl Registry {
    /// Registers a running attempt whose token is a child of `parent` (the drain
    /// deadline of its fetch loop).
    pub fn register(&self, info: InFlight, parent: &CancellationToken) -> Registration<'_> {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let cancel = parent.child_token();
        let requested = Arc::new(AtomicBool::new(false));
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(
                key,
                Entry {
                    info,
                    cancel: cancel.clone(),
                    requested: requested.clone(),
                },
            );
        }
        Registration {
            registry: self,
            key,
            cancel,
            requested,
        }
    }

    /// Stops the running tasks of `execution_id` (only `task_id` if given). Returns
    /// how many attempts it stopped.
    pub fn cancel(&self, execution_id: i64, task_id: Option<i64>) -> usize {
        self.cancel_where(|info| {
            info.execution_id == execution_id && task_id.is_none_or(|id| id == info.task_id)
        })
    }

    /// Stops the running attempts of tasks `ids`.
    pub fn cancel_tasks(&self, ids: &[i64]) -> usize {
        self.cancel_where(|info| ids.contains(&info.task_id))
    }

    fn cancel_where(&self, matches: impl Fn(&InFlight) -> bool) -> usize {
        let Ok(entries) = self.entries.lock() else {
            return 0;
        };
        let mut stopped = 0;
        for entry in entries.values().filter(|e| matches(&e.info)) {
            if !entry.cancel.is_cancelled() {
                entry.requested.store(true, Ordering::SeqCst);
                entry.cancel.cancel();
                stopped += 1;
            }
        }
        stopped
    }

    pub fn snapshot(&self) -> Vec<InFlight> {
        let Ok(entries) = self.entries.lock() else {
            return Vec::new();
        };
        let mut all: Vec<InFlight> = entries.values().map(|e| e.info.clone()).collect();
        all.sort_by_key(|i| (i.started_at, i.task_id));
        all
    }

    pub fn task_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.snapshot().iter().map(|i| i.task_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// The worker kinds whose queue is paused, as last heard (control message or poll).
pub(crate) struct Pauses {
    kinds: watch::Sender<BTreeSet<String>>,
    /// Bumped by every control message, so a poll that started before one does not
    /// overwrite what it said with older data.
    generation: AtomicU64,
}

impl Default for Pauses {
    fn default() -> Self {
        Pauses {
            kinds: watch::Sender::new(BTreeSet::new()),
            generation: AtomicU64::new(0),
        }
    }
}

impl Pauses {
    pub fn is_paused(&self, kind: &str) -> bool {
        self.kinds.borrow().contains(kind)
    }

    pub fn subscribe(&self) -> watch::Receiver<BTreeSet<String>> {
        self.kinds.subscribe()
    }

    /// A control message: pause or resume one kind now.
    pub fn set(&self, kind: &str, paused: bool) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.kinds.send_if_modified(|kinds| {
            if paused {
                kinds.insert(kind.to_owned())
            } else {
                kinds.remove(kind)
            }
        });
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// A poll's answer, read after `generation` was taken: applied unless a control
    /// message arrived meanwhile (the next poll will agree with it).
    pub fn replace(&self, kinds: BTreeSet<String>, generation: u64) -> bool {
        if self.generation() != generation {
            return false;
        }
        self.kinds.send_if_modified(|current| {
            if *current == kinds {
                false
            } else {
                *current = kinds;
                true
            }
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(task_id: i64, execution_id: i64) -> InFlight {
        InFlight {
            task_id,
            execution_id,
            kind: "echo".into(),
            started_at: Utc::now(),
        }
    }

    #[test]
    fn cancel_stops_the_matching_attempts_only() {
        let registry = Registry::default();
        let drain = CancellationToken::new();
        let a = registry.register(info(1, 10), &drain);
        let b = registry.register(info(2, 10), &drain);
        let c = registry.register(info(3, 11), &drain);
        assert_eq!(registry.cancel(10, Some(2)), 1);
        assert!(!a.cancel.is_cancelled());
        assert!(b.cancel.is_cancelled() && b.requested());
        assert_eq!(registry.cancel(10, None), 1, "b was stopped already");
        assert!(a.cancel.is_cancelled() && a.requested());
        assert!(!c.cancel.is_cancelled());
        assert_eq!(registry.cancel_tasks(&[3, 99]), 1);
        assert!(c.requested());

        // The drain deadline fires tokens without marking them requested.
        let d = registry.register(info(4, 12), &drain);
        drain.cancel();
        assert!(d.cancel.is_cancelled() && !d.requested());

        assert_eq!(registry.snapshot().len(), 4);
        drop(a);
        drop(b);
        assert_eq!(registry.task_ids(), vec![3, 4]);
    }

    #[test]
    fn a_poll_does_not_undo_a_newer_control_message() {
        let pauses = Pauses::default();
        let generation = pauses.generation();
        pauses.set("echo", true);
        assert!(pauses.is_paused("echo"));
        // A poll that read the table before the pause was committed.
        assert!(!pauses.replace(BTreeSet::new(), generation));
        assert!(pauses.is_paused("echo"));
        let generation = pauses.generation();
        assert!(pauses.replace(BTreeSet::from(["scan".to_owned()]), generation));
        assert!(!pauses.is_paused("echo"));
        assert!(pauses.is_paused("scan"));
    }
}
