//! Fault injection for tests (feature `fault-injection`): make the next commit fail, or the
//! next operation panic while it holds the store's lock, to test what the store does then.
//! Compiled out of ordinary builds.

use super::EmbeddedStore;

/// A fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The next batch the committer writes fails as an I/O error would.
    FailNextCommit,
    /// The next operation panics inside the engine, with the lock held.
    PanicInNextOperation,
}

/// Faults asked for and not yet injected.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    fail_commit: bool,
    panic_op: bool,
}

impl Faults {
    /// Whether the batch being written should fail (and forgets it).
    pub(crate) fn take_commit_failure(&mut self) -> bool {
        std::mem::take(&mut self.fail_commit)
    }

    /// Panics when asked to (and forgets it): called inside an operation, lock held.
    pub(crate) fn before_operation(&mut self) {
        if std::mem::take(&mut self.panic_op) {
            panic!("injected panic inside an operation");
        }
    }
}

impl EmbeddedStore {
    /// Injects `fault` (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        let mut st = self.inner.shared.state.lock();
        match fault {
            Fault::FailNextCommit => st.faults.fail_commit = true,
            Fault::PanicInNextOperation => st.faults.panic_op = true,
        }
    }
}
