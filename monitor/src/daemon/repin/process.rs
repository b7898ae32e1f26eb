//! The process backend's side of the policy loop: where a job's answer comes from (the
//! libvirt worker or a short-lived thread of a process VM's job), and the sweep of state
//! files of QEMUs that exited.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::Answer;
use crate::inventory::worker::{Poll, Ticket, Worker};
use crate::remediate::state_file;

/// How often state files of exited QEMUs are looked for.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// The /proc the process backend reads: sched_setaffinity acts on this kernel's threads.
pub(super) const PROC: &str = "/proc";

/// Where an answer comes from: the libvirt worker, or the thread of a process VM's job.
pub(super) enum Pending {
    Libvirt(Ticket<Answer>),
    Process(mpsc::Receiver<Answer>),
}

impl Pending {
    pub(super) fn poll(&mut self, worker: &Worker) -> Poll<Answer> {
        match self {
            Pending::Libvirt(t) => t.poll(worker),
            Pending::Process(rx) => match rx.try_recv() {
                Ok(answer) => Poll::Done(answer),
                Err(mpsc::TryRecvError::Empty) => Poll::Pending,
                Err(mpsc::TryRecvError::Disconnected) => {
                    Poll::Lost("the thread of the process VM's job ended without an answer".into())
                }
            },
        }
    }
}

/// Runs `job` on a thread of its own (a process VM's repin or reconcile).
pub(super) fn spawn_process_job(
    what: &str,
    job: impl FnOnce() -> Answer + Send + 'static,
) -> Pending {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("pinsight-pin".into())
        .spawn(move || {
            let _ = tx.send(job());
        });
    if let Err(e) = spawned {
        tracing::warn!(job = what, error = %e, "cannot start the thread of a process VM's job");
    }
    Pending::Process(rx)
}

/// When stale state files were last swept, and the sweep on its way.
#[derive(Default)]
pub(super) struct Sweeper {
    swept: Option<Instant>,
    sweeping: Option<mpsc::Receiver<(Vec<PathBuf>, Vec<String>)>>,
}

impl Sweeper {
    /// In enforce mode (`enforce`), at most every [`SWEEP_EVERY`], removes (on a thread) the state files
    /// of QEMUs that exited: their pins went with them, and a VM that exited mid-repin
    /// leaves nothing to reconcile. Logs what the last sweep found.
    pub fn tick(&mut self, enforce: bool, state_dir: &Path) {
        if let Some(rx) = &self.sweeping {
            match rx.try_recv() {
                Ok((removed, problems)) => {
                    for path in removed {
                        tracing::info!(file = %path.display(), "removed the state file of a QEMU that exited (its pins went with it)");
                    }
                    for p in problems {
                        tracing::warn!("{p}");
                    }
                    self.sweeping = None;
                }
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => self.sweeping = None,
            }
        }
        if !enforce || self.swept.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
            return;
        }
        self.swept = Some(Instant::now());
        let (tx, rx) = mpsc::channel();
        let dir = state_dir.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("pinsight-sweep".into())
            .spawn(move || {
                let _ = tx.send(state_file::sweep(&dir, Path::new(PROC)));
            });
        if spawned.is_ok() {
            self.sweeping = Some(rx);
        }
    }
}
