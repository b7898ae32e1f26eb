//! libvirt calls with a deadline. libvirt's client library blocks the calling thread for as
//! long as libvirtd does not answer, and a stopped or wedged libvirtd never does, so the engine
//! never calls libvirt itself: every call runs as a job on this worker's thread, and the engine
//! polls for the answer and carries on ticking meanwhile.
//!
//! A job that runs past the deadline cannot be cancelled (libvirt has no way to), so the worker
//! is abandoned with its thread and connection: the thread ends when its call returns (at the
//! latest when libvirtd answers again, or sooner when the connection's keepalive gives up),
//! without running the jobs queued behind it. A fresh thread with a fresh connection takes
//! the next job. At most [`MAX_ABANDONED`] threads may be stuck at once; past that, jobs are
//! refused until one returns, so a long hang costs a bounded number of threads.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::libvirt::{Access, Libvirt};

/// Most worker threads left waiting inside a libvirt call at once.
pub const MAX_ABANDONED: usize = 2;

/// A libvirt call that has not returned, for the log and the problem line.
#[derive(Debug, Clone, PartialEq)]
pub struct Hung {
    /// What the job was doing ("scan", "pin vCPU 1 of gpu-vm").
    pub call: String,
    /// How long it has been waiting.
    pub waited: Duration,
}

/// What became of a submitted job.
#[derive(Debug, PartialEq)]
pub enum Poll<R> {
    /// Still queued or running, within its deadline.
    Pending,
    /// It returned this.
    Done(R),
    /// It never ran or never returned: its worker was abandoned (a call hung) or could not
    /// be started. The reason says which.
    Lost(String),
}

/// A submitted job's answer, to be polled.
pub struct Ticket<R> {
    answer: mpsc::Receiver<R>,
    /// An answer taken early by [`Ticket::wait_for`].
    early: Option<R>,
    generation: u64,
    refused: Option<String>,
}

/// What the running job is, and since when (updated by [`heartbeat`] at each call).
#[derive(Default)]
struct Progress {
    busy: Mutex<Option<(Instant, String)>>,
}

impl Progress {
    fn set(&self, busy: Option<(Instant, String)>) {
        // A poisoned lock only means a job panicked mid-update; the value is still a value.
        *self.busy.lock().unwrap_or_else(|p| p.into_inner()) = busy;
    }

    fn get(&self) -> Option<(Instant, String)> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

type Job = Box<dyn FnOnce(&mut Libvirt) + Send>;

/// One worker thread: its queue, what it is doing, and whether it was abandoned.
struct Thread {
    jobs: mpsc::Sender<(String, Job)>,
    progress: Arc<Progress>,
    abandoned: Arc<AtomicBool>,
}

thread_local! {
    /// The progress of the worker this thread is, if it is one.
    static CURRENT: std::cell::RefCell<Option<Arc<Progress>>> = const { std::cell::RefCell::new(None) };
}

/// Says that the job running on this thread starts another libvirt call (`call` names it),
/// so the deadline counts from now: a scan of many domains is many quick calls, not one long
/// one. Does nothing outside a worker.
pub fn heartbeat(call: &str) {
    CURRENT.with(|c| {
        if let Some(p) = c.borrow().as_ref() {
            p.set(Some((Instant::now(), call.to_string())));
        }
    });
}

/// The libvirt worker: runs jobs in order on one thread with one connection, and replaces
/// both when a call hangs.
pub struct Worker {
    uri: String,
    access: Access,
    timeout: Duration,
    thread: Option<Thread>,
    /// Bumped when a worker is abandoned: tickets of older generations are lost.
    generation: u64,
    /// Threads still inside a call they were abandoned in.
    stuck: Arc<AtomicUsize>,
}

impl Worker {
    /// A worker for `uri`; its thread and connection start with the first job.
    pub fn new(uri: &str, access: Access, timeout: Duration) -> Worker {
        Worker {
            uri: uri.to_string(),
            access,
            timeout,
            thread: None,
            generation: 0,
            stuck: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The URI the worker's connections use.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Changes the deadline of every call from now on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Changes what the connection may do; the next job opens a connection of that kind (on
    /// the same thread: the change is queued behind the jobs already submitted).
    pub fn set_access(&mut self, access: Access) {
        if access != self.access {
            self.access = access;
            let _ = self.submit("reopen the connection", move |lv| lv.set_access(access));
        }
    }

    /// Queues `job` on the worker's thread (starting one if needed).
    pub fn submit<R, F>(&mut self, what: &str, job: F) -> Ticket<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Libvirt) -> R + Send + 'static,
    {
        let (tx, answer) = mpsc::channel();
        let generation = self.generation;
        let refused = move |why: String| Ticket {
            answer: mpsc::channel().1,
            early: None,
            generation,
            refused: Some(why),
        };
        if self.thread.is_none() {
            match self.spawn() {
                Ok(thread) => self.thread = Some(thread),
                Err(why) => return refused(why),
            }
        }
        let job: Job = Box::new(move |lv: &mut Libvirt| {
            // The engine may have stopped waiting; an answer nobody reads is dropped.
            let _ = tx.send(job(lv));
        });
        let sent = self
            .thread
            .as_ref()
            .map(|t| t.jobs.send((what.to_string(), job)));
        match sent {
            Some(Ok(())) => Ticket {
                answer,
                early: None,
                generation: self.generation,
                refused: None,
            },
            // The thread is gone (its job panicked and ended the process, or it is ending).
            _ => {
                self.thread = None;
                refused(format!(
                    "the libvirt worker thread for {} is gone",
                    self.uri
                ))
            }
        }
    }

    /// The call that has been running past the deadline, if one has: the caller logs it and
    /// calls [`Worker::abandon`].
    pub fn hung(&self) -> Option<Hung> {
        let (since, call) = self.thread.as_ref()?.progress.get()?;
        let waited = since.elapsed();
        (waited > self.timeout).then_some(Hung { call, waited })
    }

    /// Gives up on the current thread and its connection (a call hung): every ticket it
    /// holds is lost, and the next job starts a fresh thread with a fresh connection.
    pub fn abandon(&mut self) {
        if let Some(thread) = self.thread.take() {
            thread.abandoned.store(true, Ordering::SeqCst);
            self.stuck.fetch_add(1, Ordering::SeqCst);
            self.generation += 1;
        }
    }

    fn spawn(&self) -> Result<Thread, String> {
        let stuck = self.stuck.load(Ordering::SeqCst);
        if stuck >= MAX_ABANDONED {
            return Err(format!(
                "{stuck} libvirt calls to {} are still waiting for libvirtd; no new call until one returns",
                self.uri
            ));
        }
        let (jobs, queue) = mpsc::channel::<(String, Job)>();
        let progress = Arc::new(Progress::default());
        let abandoned = Arc::new(AtomicBool::new(false));
        let (p, a, counter) = (progress.clone(), abandoned.clone(), self.stuck.clone());
        let mut libvirt = Libvirt::new(&self.uri, self.access);
        std::thread::Builder::new()
            .name("pinsight-libvirt".into())
            .spawn(move || {
                CURRENT.with(|c| *c.borrow_mut() = Some(p.clone()));
                while let Ok((what, job)) = queue.recv() {
                    p.set(Some((Instant::now(), what)));
                    crate::fatal::exit_on_panic("the libvirt worker", || job(&mut libvirt));
                    p.set(None);
                    if a.load(Ordering::SeqCst) {
                        // Abandoned while inside that call: the jobs behind it belong to a
                        // connection the engine no longer trusts.
                        counter.fetch_sub(1, Ordering::SeqCst);
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start a libvirt worker thread: {e}"))?;
        Ok(Thread {
            jobs,
            progress,
            abandoned,
        })
    }
}

impl<R> Ticket<R> {
    /// Waits at most `within` for the answer (a quick call need not cost a tick), keeping it
    /// for the next [`Ticket::poll`]. Returns whether it came.
    pub fn wait_for(&mut self, within: Duration) -> bool {
        if self.early.is_none() && self.refused.is_none() {
            self.early = self.answer.recv_timeout(within).ok();
        }
        self.early.is_some()
    }

    /// The answer if there is one yet.
    pub fn poll(&mut self, worker: &Worker) -> Poll<R> {
        if let Some(why) = &self.refused {
            return Poll::Lost(why.clone());
        }
        if let Some(r) = self.early.take() {
            return Poll::Done(r);
        }
        match self.answer.try_recv() {
            Ok(r) => Poll::Done(r),
            Err(mpsc::TryRecvError::Disconnected) => {
                Poll::Lost("the libvirt worker ended without answering".into())
            }
            Err(mpsc::TryRecvError::Empty) if self.generation != worker.generation => {
                Poll::Lost("a libvirt call before it hung; the connection was recycled".into())
            }
            Err(mpsc::TryRecvError::Empty) => Poll::Pending,
        }
    }

    /// Waits for the answer up to the worker's deadline (for one-shot commands, which have
    /// nothing else to do meanwhile); a hung call abandons the worker.
    pub fn wait(mut self, worker: &mut Worker) -> Result<R, String> {
        loop {
            match self.poll(worker) {
                Poll::Done(r) => return Ok(r),
                Poll::Lost(why) => return Err(why),
                Poll::Pending => {}
            }
            if let Some(h) = worker.hung() {
                worker.abandon();
                return Err(format!(
                    "libvirt at {} did not answer {} within {:.1} s",
                    worker.uri,
                    h.call,
                    h.waited.as_secs_f64()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests;
