//! The actions on their way: what the policy loop asked of the libvirt worker (or of a
//! process VM's thread), the shape of the answer, and taking, counting and logging each
//! answer when it comes.

use std::time::Instant;

use super::process::Pending;
use super::PolicyLoop;
use crate::inventory::worker::{Poll, Worker};
use crate::policy::record::{describe, ActionResult};
use crate::remediate::{Reconciled, RemediateError};

/// An action on its way through the libvirt worker.
pub(super) struct InFlight {
    pub(super) domain: String,
    pub(super) what: Job,
    pub(super) answer: Pending,
}

/// The repins_total label and message of a failed apply.
pub(super) fn apply_error(e: RemediateError) -> (&'static str, String) {
    match e {
        // Compare-and-set: moved by someone else since the decision.
        RemediateError::Changed { .. } => ("skipped_operator", e.to_string()),
        e => (ActionResult::Failed.as_str(), e.to_string()),
    }
}

/// What was asked of the worker, for the log when the answer comes.
pub(super) enum Job {
    Repin {
        moves: String,
        reason: String,
    },
    Reconcile {
        uuid: String,
        /// The `reconciled` key of this try.
        key: (String, String),
    },
}

/// The worker's answer to a [`Job`].
pub(super) enum Answer {
    /// Ok, or the repins_total result label and the error.
    Repin(Result<(), (&'static str, String)>),
    /// How an interrupted action was reconciled (or why not, and whether because someone
    /// else moved a vCPU), and how long it took.
    Reconcile(Result<Reconciled, (bool, String)>, f64),
}

impl PolicyLoop {
    /// Takes the answers of actions on their way, counting and logging each. Returns true
    /// when pins or records may have changed (so the caller rescans before deciding again).
    pub fn settle(&mut self, worker: &Worker) -> bool {
        let mut changed = false;
        let mut pending = Vec::new();
        for mut f in std::mem::take(&mut self.in_flight) {
            let answer = match f.answer.poll(worker) {
                Poll::Pending => {
                    pending.push(f);
                    continue;
                }
                Poll::Done(answer) => Ok(answer),
                // The call hung and its worker was abandoned: the action may still finish
                // when libvirtd answers again; the state journal says where it stopped.
                Poll::Lost(why) => Err(format!("libvirt did not answer: {why}")),
            };
            // Pins or the record may have changed whatever the outcome: rescan first.
            changed = true;
            self.log_answer(&f.domain, &f.what, answer);
        }
        self.in_flight = pending;
        changed
    }

    fn log_answer(&mut self, domain: &str, what: &Job, answer: Result<Answer, String>) {
        match (what, answer) {
            (Job::Repin { moves, reason }, Ok(Answer::Repin(Ok(())))) => {
                self.count(domain, ActionResult::Applied.as_str());
                tracing::info!(domain, moves = %moves, reason = %reason, "repinned");
            }
            (Job::Repin { moves, .. }, Ok(Answer::Repin(Err((result, e))))) => {
                self.count(domain, result);
                tracing::warn!(domain, moves = %moves, result, error = %e, "repin not made");
            }
            (Job::Repin { moves, .. }, Err(e)) => {
                self.count(domain, ActionResult::Failed.as_str());
                tracing::warn!(domain, moves = %moves, error = %e, "repin not made");
            }
            (Job::Reconcile { uuid, key }, Ok(Answer::Reconcile(result, seconds))) => {
                // Someone else moved a vCPU: retrying cannot help; the verdict says so.
                let retry = match &result {
                    Err((true, _)) => None,
                    _ => Some(Instant::now()),
                };
                self.reconciled.insert(key.clone(), retry);
                match result {
                    Ok(Reconciled::Nothing) => {}
                    Ok(Reconciled::Completed(done)) => {
                        tracing::info!(domain, uuid = %uuid, outcome = "completed", action = %describe(&done), seconds, "reconciled an interrupted action")
                    }
                    Ok(Reconciled::RolledBack(done)) => {
                        tracing::warn!(domain, uuid = %uuid, outcome = "rolled_back", action = %describe(&done), seconds, "reconciled an interrupted action")
                    }
                    Err((_, e)) => {
                        tracing::warn!(domain, uuid = %uuid, error = %e, "reconciling an interrupted action failed (retried after a failed call, not over someone else's change: pinsight restore ends it)")
                    }
                }
            }
            (Job::Reconcile { uuid, key }, Err(e)) => {
                self.reconciled.insert(key.clone(), Some(Instant::now()));
                tracing::warn!(domain, uuid = %uuid, error = %e, "reconciling an interrupted action failed; retried later")
            }
            // Each job gets the answer of its own kind.
            (_, Ok(_)) => {}
        }
    }
}
