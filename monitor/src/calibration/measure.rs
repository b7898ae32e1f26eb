//! Measures one (CPU node, memory node) pair: a thread pinned to the CPU node's CPUs reads a
//! buffer whose pages are bound to the memory node (mbind MPOL_BIND, checked page by page
//! with get_mempolicy), once as a pointer chase in random order (latency: every load
//! depends on the last, so prefetchers and caches cannot hide the trip) and once
//! sequentially (bandwidth).

use std::time::Instant;

use super::PairFigures;
use crate::cpuset::CpuSet;

/// `MPOL_BIND` of <linux/mempolicy.h>.
const MPOL_BIND: libc::c_int = 2;
/// `MPOL_MF_STRICT`: fail if pages already sit elsewhere.
const MPOL_MF_STRICT: libc::c_uint = 1;
/// `MPOL_F_NODE | MPOL_F_ADDR`: get_mempolicy returns the node of the page at an address.
const MPOL_F_NODE_ADDR: libc::c_ulong = 1 | 2;
/// One pointer-chase slot: a cache line.
const SLOT: usize = 64;
/// Pages checked for their node (spread over the buffer).
const CHECKED_PAGES: usize = 64;

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Buffer size, far larger than the last-level cache.
    pub buffer_bytes: usize,
    /// Dependent loads timed for the latency.
    pub chase_steps: usize,
    /// Sequential passes timed for the bandwidth.
    pub passes: usize,
}

/// Why a pair could not be measured; names the node.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// The thread could not be pinned to the node's CPUs.
    #[error("pinning the measuring thread to node {node}'s CPUs {cpus}: {source}")]
    Affinity {
        /// The CPU node.
        node: u32,
        /// Its CPUs.
        cpus: String,
        /// The error.
        source: std::io::Error,
    },
    /// The buffer could not be mapped.
    #[error("mapping a {bytes}-byte buffer: {source}")]
    Map {
        /// Its size.
        bytes: usize,
        /// The error.
        source: std::io::Error,
    },
    /// The buffer could not be bound to the node.
    #[error("binding memory to node {node} (mbind): {source}")]
    Bind {
        /// The memory node.
        node: u32,
        /// The error.
        source: std::io::Error,
    },
    /// A page ended up on another node than it was bound to.
    #[error("a page bound to node {node} sits on node {found}: the figures would be wrong")]
    Misplaced {
        /// The memory node asked for.
        node: u32,
        /// Where the page is.
        found: i32,
    },
    /// The measuring thread panicked or could not start.
    #[error("the measuring thread failed: {0}")]
    Thread(String),
}

/// Measures a thread on `cpus` (node `from`) reading memory bound to node `to`.
pub fn pair(from: u32, cpus: &CpuSet, to: u32, plan: Plan) -> Result<PairFigures, MeasureError> {
    let cpus = cpus.clone();
    std::thread::Builder::new()
        .name(format!("calibrate-{from}-{to}"))
        .spawn(move || measure(from, &cpus, to, plan))
        .map_err(|e| MeasureError::Thread(e.to_string()))?
        .join()
        .map_err(|_| MeasureError::Thread("panicked".into()))?
}

fn measure(from: u32, cpus: &CpuSet, to: u32, plan: Plan) -> Result<PairFigures, MeasureError> {
    pin_this_thread(cpus).map_err(|source| MeasureError::Affinity {
        node: from,
        cpus: cpus.to_string(),
        source,
    })?;
    let mut buffer = Buffer::bound_to(to, plan.buffer_bytes)?;
    let slots = buffer.len() / SLOT;
    let words = buffer.words();
    // Sattolo's algorithm: a random permutation that is one single cycle, so the chase visits
    // every slot before it repeats. Each slot's first word holds the next slot's index.
    let mut order: Vec<u32> = (0..slots as u32).collect();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    for i in (1..slots).rev() {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        order.swap(i, (rng % i as u64) as usize);
    }
    for (i, &next) in order.iter().enumerate() {
        words[i * SLOT / 8] = u64::from(next);
    }
    drop(order);
    buffer.check_node(to)?;

    let words = buffer.words();
    let mut at = 0usize;
    let started = Instant::now();
    for _ in 0..plan.chase_steps {
        at = words[at * SLOT / 8] as usize;
    }
    let latency_ns = started.elapsed().as_nanos() as f64 / plan.chase_steps as f64;
    std::hint::black_box(at);

    let started = Instant::now();
    let mut sum = 0u64;
    for _ in 0..plan.passes {
        sum = words.iter().fold(sum, |s, w| s.wrapping_add(*w));
    }
    let seconds = started.elapsed().as_secs_f64();
    std::hint::black_box(sum);
    let bandwidth_bytes_per_second = (buffer.len() * plan.passes) as f64 / seconds;
    Ok(PairFigures {
        from,
        to,
        latency_ns,
        bandwidth_bytes_per_second,
    })
}

fn pin_this_thread(cpus: &CpuSet) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET only writes inside it (ids are checked against
    // its size), and sched_setaffinity(0) applies to the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let capacity = 8 * std::mem::size_of::<libc::cpu_set_t>();
        for cpu in cpus.iter().filter(|&c| (c as usize) < capacity) {
            libc::CPU_SET(cpu as usize, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// An anonymous mapping whose pages are bound to one node before they are first touched.
struct Buffer {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Buffer {
    fn bound_to(node: u32, bytes: usize) -> Result<Buffer, MeasureError> {
        let len = bytes.max(CHECKED_PAGES * 4096) / SLOT * SLOT;
        // SAFETY: a fresh private anonymous mapping; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(MeasureError::Map {
                bytes: len,
                source: std::io::Error::last_os_error(),
            });
        }
        let buffer = Buffer { ptr, len };
        let mut mask = vec![0 as libc::c_ulong; node as usize / 64 + 1];
        mask[node as usize / 64] |= 1 << (node % 64);
        let maxnode = (mask.len() * 64) as libc::c_ulong;
        // SAFETY: mbind on our own mapping with a node mask of `maxnode` bits.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mbind,
                buffer.ptr,
                buffer.len,
                MPOL_BIND,
                mask.as_ptr(),
                maxnode,
                MPOL_MF_STRICT,
            )
        };
        if rc != 0 {
            return Err(MeasureError::Bind {
                node,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(buffer)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn words(&mut self) -> &mut [u64] {
        // SAFETY: the mapping is `len` bytes, page-aligned (so u64-aligned), ours alone, and
        // lives as long as `self`; anonymous pages read as zero before they are written.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<u64>(), self.len / 8) }
    }

    /// Checks that pages spread over the buffer sit on `node`.
    fn check_node(&self, node: u32) -> Result<(), MeasureError> {
        let step = (self.len / CHECKED_PAGES).max(1);
        for i in 0..CHECKED_PAGES {
            let addr = self.ptr as usize + (i * step).min(self.len - 1);
            let mut found: libc::c_int = -1;
            // SAFETY: get_mempolicy writes one int; no node mask is asked for.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_get_mempolicy,
                    &mut found as *mut libc::c_int,
                    std::ptr::null_mut::<libc::c_ulong>(),
                    0 as libc::c_ulong,
                    addr as *mut libc::c_void,
                    MPOL_F_NODE_ADDR,
                )
            };
            if rc != 0 || found != node as i32 {
                return Err(MeasureError::Misplaced { node, found });
            }
        }
        Ok(())
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `bound_to`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}
