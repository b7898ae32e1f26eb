//! systemd's service protocol for `Type=notify` units: READY=1 once the port is bound and
//! the probes attached, STATUS= with a one-line summary of the host, and WATCHDOG=1 sent
//! from the engine's own tick, so a wedged engine stops the pings and systemd restarts the
//! daemon (WatchdogSec= in deploy/pinsight.service). Without NOTIFY_SOCKET (not under
//! systemd) every call is a no-op.

use std::time::{Duration, Instant};

use crate::view::HostView;

/// Tells the service manager the daemon is up, with its first status line.
pub fn ready(status: &str) {
    send(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

fn send(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// The engine's side: a watchdog ping per tick (at most a few per watchdog interval) and
/// the status line whenever it changes.
#[derive(Debug)]
pub struct Notifier {
    /// The watchdog interval systemd asked for (WATCHDOG_USEC), if any.
    interval: Option<Duration>,
    last_ping: Option<Instant>,
    last_status: String,
}

impl Notifier {
    /// Reads the watchdog interval from the environment systemd set.
    pub fn from_env() -> Notifier {
        let interval = sd_notify::watchdog_enabled();
        if let Some(interval) = interval {
            tracing::info!(
                ?interval,
                "systemd watchdog on: the engine pings it every tick"
            );
        }
        Notifier {
            interval,
            last_ping: None,
            last_status: String::new(),
        }
    }

    /// Called after every tick the engine completes.
    pub fn ticked(&mut self, view: &HostView, now: Instant) {
        let status = status_line(view);
        if status != self.last_status {
            send(&[sd_notify::NotifyState::Status(&status)]);
            self.last_status = status;
        }
        let Some(interval) = self.interval else {
            return;
        };
        // A quarter of the interval keeps systemd well fed without a datagram per tick.
        if self
            .last_ping
            .is_none_or(|t| now.duration_since(t) >= interval / 4)
        {
            send(&[sd_notify::NotifyState::Watchdog]);
            self.last_ping = Some(now);
        }
    }
}

/// "3 VMs (2 with GPUs, 1 mostly remote); libvirt up; sched_switch attached; mode observe".
pub fn status_line(view: &HostView) -> String {
    let with_gpu = view.vms.iter().filter(|vm| vm.has_gpu()).count();
    let remote = view
        .vms
        .iter()
        .filter(|vm| vm.remote_ratio.is_some_and(|r| r > 0.5))
        .count();
    let attached = view
        .probes
        .probes
        .get(monitor_common::programs::SCHED_SWITCH)
        .is_some_and(|p| p.attached);
    format!(
        "{} VMs ({with_gpu} with GPUs, {remote} mostly remote); libvirt {}; sched_switch {}; mode {}",
        view.vms.len(),
        if view.libvirt_up { "up" } else { "DOWN" },
        if attached { "attached" } else { "NOT attached" },
        view.mode.as_str()
    )
}
