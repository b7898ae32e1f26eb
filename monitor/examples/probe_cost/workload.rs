//! The threads whose switches are measured: a busy ping-pong, sleepers spread over pid_max,
//! tickers, and the tracked thread that idles all along at a VM's CPU cgroup depth.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::common::thread::{gettid, CpuCgroups};

/// Two threads bouncing a byte over a socket pair until `stop`; returns their tids.
pub fn ping_pong(stop: Arc<AtomicBool>) -> (Vec<u32>, Vec<std::thread::JoinHandle<u64>>) {
    let (mut a, mut b) = UnixStream::pair().expect("socketpair");
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    let stop2 = stop.clone();
    let ping = std::thread::spawn(move || {
        tx.send(gettid()).unwrap();
        let mut n = 0;
        let mut buf = [0u8; 1];
        while !stop.load(Ordering::Relaxed) {
            if a.write_all(&[1]).is_err() || a.read_exact(&mut buf).is_err() {
                break;
            }
            n += 1;
        }
        drop(a);
        n
    });
    let pong = std::thread::spawn(move || {
        tx2.send(gettid()).unwrap();
        let mut buf = [0u8; 1];
        let mut n = 0;
        while b.read_exact(&mut buf).is_ok() && b.write_all(&buf).is_ok() {
            n += 1;
            if stop2.load(Ordering::Relaxed) {
                break;
            }
        }
        n
    });
    (
        vec![rx.recv().unwrap(), rx.recv().unwrap()],
        vec![ping, pong],
    )
}

/// Starts `count` threads that wake every 50-150 ms until `stop`, with thread ids spread
/// evenly over 300..pid_max: each id is asked for through ns_last_pid (another process
/// forking at the same moment may take it, then the thread gets a nearby one).
pub fn sleepers(count: u32, pid_max: u32, stop: Arc<AtomicBool>) -> Vec<u32> {
    let (tx, rx) = mpsc::channel();
    let step = (pid_max - 300) / count.max(1);
    let mut tids = Vec::new();
    for i in 0..count {
        let wanted = 300 + i * step + step / 2;
        std::fs::write("/proc/sys/kernel/ns_last_pid", (wanted - 1).to_string())
            .expect("root needed to write ns_last_pid");
        let (tx, stop) = (tx.clone(), stop.clone());
        std::thread::spawn(move || {
            tx.send(gettid()).unwrap();
            let mut n = u64::from(i);
            while !stop.load(Ordering::Relaxed) {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                std::thread::sleep(Duration::from_millis(50 + (n >> 33) % 100));
            }
        });
        tids.push(rx.recv().unwrap());
    }
    tids
}

/// A thread that wakes every 2 ms until `stop`: the quiet scenario's tracked thread.
pub fn ticker(stop: Arc<AtomicBool>) -> u32 {
    ticker_every(stop, Duration::from_millis(2))
}

/// A thread that wakes every `period` until `stop`.
fn ticker_every(stop: Arc<AtomicBool>, period: Duration) -> u32 {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        tx.send(gettid()).unwrap();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(period);
        }
    });
    rx.recv().unwrap()
}

/// Where the tracked threads go: the cgroups, and the depth in them (None: all in the root).
pub type VmCgroup<'a> = Option<(&'a CpuCgroups, usize)>;

/// A thread that sleeps (waking once a second) until `stop`, at `vm`'s depth: a tracked,
/// idle VM's thread, so that the depth filter has a VM's depth in it in every scenario.
pub fn resident(stop: Arc<AtomicBool>, vm: VmCgroup) -> u32 {
    let tid = ticker_every(stop, Duration::from_secs(1));
    if let Some((cgroups, depth)) = vm {
        cgroups.move_thread(tid, depth);
    }
    tid
}
