//! The engine's side of libvirt: scans and pings run on the [`Worker`] with a deadline and are
//! polled once per tick, so the engine never waits for libvirtd. This is where "libvirt up"
//! is decided: up when libvirt answered its last call, down when a call failed or ran past
//! `libvirt_timeout_seconds` (the call is logged and the connection recycled).

use std::time::{Duration, Instant, SystemTime};

use crate::inventory::worker::{Poll, Ticket, Worker};
use crate::inventory::{Access, HostPaths, Inventory, LibvirtError};
use crate::topology::Topology;

/// How long libvirt may stay silent before a ping asks whether it is still there: with the
/// default 5 s deadline, a hang shows as libvirt down within about 8 s.
const PING_AFTER: Duration = Duration::from_secs(2);

/// Scans, pings and what they said.
pub struct LibvirtSource {
    worker: Worker,
    scan: Option<Ticket<Result<Inventory, LibvirtError>>>,
    ping: Option<Ticket<Result<(), LibvirtError>>>,
    up: bool,
    /// The last time libvirt answered anything.
    answered: Option<Instant>,
    /// When the last whole inventory arrived, for the view and the staleness check.
    inventory_at: Option<(Instant, SystemTime)>,
    /// Why libvirt is down, for the log (once per outage) and the view.
    down_reason: Option<String>,
}

impl LibvirtSource {
    /// A source for `uri`; nothing is called until the first tick.
    pub fn new(uri: &str, access: Access, timeout: Duration) -> LibvirtSource {
        LibvirtSource {
            worker: Worker::new(uri, access, timeout),
            scan: None,
            ping: None,
            up: false,
            answered: None,
            inventory_at: None,
            down_reason: None,
        }
    }

    /// The worker, for the policy's actions.
    pub fn worker(&mut self) -> &mut Worker {
        &mut self.worker
    }

    /// Applies a reload's access mode and deadline.
    pub fn reconfigure(&mut self, access: Access, timeout: Duration) {
        self.worker.set_access(access);
        self.worker.set_timeout(timeout);
    }

    /// Whether libvirt answered its last call.
    pub fn up(&self) -> bool {
        self.up
    }

    /// Why libvirt is down, while it is.
    pub fn down_reason(&self) -> Option<&str> {
        self.down_reason.as_deref().filter(|_| !self.up)
    }

    /// When the last whole inventory arrived (Unix seconds).
    pub fn inventory_unix_seconds(&self) -> Option<f64> {
        self.inventory_at.map(|(_, at)| unix_seconds(at))
    }

    /// How old the last whole inventory is; `None` before the first.
    pub fn inventory_age(&self, now: Instant) -> Option<Duration> {
        self.inventory_at
            .map(|(at, _)| now.saturating_duration_since(at))
    }

    /// Whether a scan is on its way.
    pub fn scanning(&self) -> bool {
        self.scan.is_some()
    }

    /// Asks for a scan (unless one is already on its way) and gives it up to `grace` to
    /// answer, so a healthy libvirt's inventory is used in this very tick; a slow one's is
    /// taken at a later tick.
    pub fn start_scan(&mut self, topology: &Topology, paths: &HostPaths, grace: Duration) {
        if self.scan.is_some() {
            return;
        }
        let (topology, paths) = (topology.clone(), paths.clone());
        let mut ticket = self
            .worker
            .submit("scan", move |lv| lv.scan(&topology, &paths));
        ticket.wait_for(grace);
        self.scan = Some(ticket);
    }

    /// This tick's news: gives up on a hung call, takes the answers that came, pings a
    /// silent libvirt. Returns the inventory of a scan that completed since the last poll.
    pub fn poll(&mut self, now: Instant) -> Option<Inventory> {
        if let Some(hung) = self.worker.hung() {
            self.worker.abandon();
            tracing::warn!(
                uri = self.worker.uri(),
                call = %hung.call,
                waited_seconds = hung.waited.as_secs_f64(),
                "a libvirt call did not return within libvirt_timeout_seconds: libvirt is down, the connection is recycled"
            );
            self.down(
                now,
                format!(
                    "libvirt at {} did not answer ({}) within {:.1} s",
                    self.worker.uri(),
                    hung.call,
                    hung.waited.as_secs_f64()
                ),
            );
        }
        let mut scanned = None;
        if let Some(answer) = take(&mut self.scan, &self.worker) {
            match answer {
                Ok(Ok(inventory)) => {
                    self.answer(now, inventory.vms.len());
                    self.inventory_at = Some((now, SystemTime::now()));
                    scanned = Some(inventory);
                }
                Ok(Err(e)) => self.down(now, e.to_string()),
                Err(lost) => self.down(now, format!("scan lost: {lost}")),
            }
        }
        if let Some(answer) = take(&mut self.ping, &self.worker) {
            match answer {
                Ok(Ok(())) => self.answer(now, 0),
                Ok(Err(e)) => self.down(now, e.to_string()),
                Err(lost) => self.down(now, format!("ping lost: {lost}")),
            }
        }
        let silent = self
            .answered
            .is_none_or(|at| now.saturating_duration_since(at) >= PING_AFTER);
        if silent && self.scan.is_none() && self.ping.is_none() {
            self.ping = Some(self.worker.submit("ping", |lv| lv.ping()));
        }
        scanned
    }

    fn answer(&mut self, now: Instant, vms: usize) {
        self.answered = Some(now);
        if !self.up {
            tracing::info!(uri = self.worker.uri(), vms, "libvirt reachable");
        }
        self.up = true;
    }

    fn down(&mut self, now: Instant, reason: String) {
        if self.up || self.down_reason.is_none() {
            tracing::warn!(
                "{reason}: keeping the last known VMs; the policy waits until libvirt answers"
            );
        } else {
            tracing::debug!("{reason}");
        }
        self.up = false;
        self.down_reason = Some(reason);
        // A failed call is an answer of sorts: ping again after PING_AFTER, not every tick.
        self.answered = Some(now);
    }
}

/// The answer of `ticket` if it came (or was lost), leaving `None` behind.
fn take<R>(ticket: &mut Option<Ticket<R>>, worker: &Worker) -> Option<Result<R, String>> {
    let answer = match ticket.as_mut()?.poll(worker) {
        Poll::Pending => return None,
        Poll::Done(r) => Ok(r),
        Poll::Lost(why) => Err(why),
    };
    *ticket = None;
    Some(answer)
}

/// `at` as Unix seconds (0 for a clock before 1970).
pub fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
