//! Reading the first N entries of an array map in one system call (`BPF_MAP_LOOKUP_BATCH`,
//! Linux >= 5.6), instead of one `BPF_MAP_LOOKUP_ELEM` per entry: at 100 VMs x 8 vCPUs the
//! daemon reads ~3,200 entries a tick, each a syscall on a host that is often a nested VM.
//! aya 0.13 has no batch operations, so this is the one raw `bpf(2)` call of the daemon.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};

use aya::maps::MapData;
use aya::Pod;

/// `BPF_MAP_LOOKUP_BATCH` of `enum bpf_cmd` (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr`; the kernel zero-fills the rest of the union.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The values of entries `first..first + count` of an array map, as the kernel copies them
/// out: for a per-CPU map, each entry is one value per possible CPU, each rounded up to 8
/// bytes.
pub struct Entries<V> {
    first: u32,
    bytes: Vec<u8>,
    /// Bytes of one entry.
    stride: usize,
    /// Bytes of one CPU's value within an entry (per-CPU maps) or of the entry.
    value: usize,
    count: u32,
    _value: PhantomData<V>,
}

impl<V: Pod> Entries<V> {
    /// Bytes one entry of a map of `V` takes (`per_cpu`: a per-CPU array on a host of that
    /// many possible CPUs).
    pub fn stride(per_cpu: Option<usize>) -> usize {
        match per_cpu {
            Some(cpus) => size_of::<V>().next_multiple_of(8) * cpus,
            None => size_of::<V>(),
        }
    }

    /// Entries `first..first + count` of the array map `map` (`per_cpu` as in
    /// [`Entries::stride`]). `Err` when the kernel has no batch lookup (before 5.6: `EINVAL`)
    /// or the call failed; the caller then reads entry by entry.
    pub fn read(
        map: &MapData,
        first: u32,
        count: u32,
        per_cpu: Option<usize>,
    ) -> io::Result<Entries<V>> {
        let value = match per_cpu {
            Some(_) => size_of::<V>().next_multiple_of(8),
            None => size_of::<V>(),
        };
        let stride = Self::stride(per_cpu);
        let mut bytes = vec![0u8; stride * count as usize];
        let mut keys = vec![0u32; count as usize];
        let fd = map_fd(map);
        let mut filled = 0u32;
        // The kernel starts after the key `in_batch` points to (at key 0 for NULL) and leaves
        // the last key it read in `out_batch`: each call goes on from the one before.
        let mut next = first.wrapping_sub(1);
        while filled < count {
            let mut attr = BatchAttr {
                in_batch: if first == 0 && filled == 0 {
                    0
                } else {
                    &next as *const u32 as u64
                },
                out_batch: &mut next as *mut u32 as u64,
                keys: keys[filled as usize..].as_mut_ptr() as u64,
                values: bytes[filled as usize * stride..].as_mut_ptr() as u64,
                count: count - filled,
                map_fd: fd.as_raw_fd() as u32,
                ..BatchAttr::default()
            };
            // SAFETY: attr is a valid `batch` attribute whose buffers hold `attr.count` keys
            // and values of this map's sizes; the kernel writes only within them.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_MAP_LOOKUP_BATCH,
                    &mut attr as *mut BatchAttr,
                    size_of::<BatchAttr>() as u32,
                )
            };
            let err = (rc < 0).then(io::Error::last_os_error);
            filled += attr.count;
            match err {
                // The end of the map: every entry there is has been read.
                Some(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
                Some(e) => return Err(e),
                None if attr.count == 0 => break,
                None => {}
            }
        }
        if filled < count {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("batch lookup gave {filled} of {count} entries"),
            ));
        }
        Ok(Entries {
            first,
            bytes,
            stride,
            value,
            count,
            _value: PhantomData,
        })
    }

    /// Whether entry `index` was read.
    pub fn has(&self, index: u32) -> bool {
        index
            .checked_sub(self.first)
            .is_some_and(|i| i < self.count)
    }

    /// The value of entry `index` on CPU `cpu` (0 for a map that is not per CPU); None
    /// outside what was read.
    pub fn get(&self, index: u32, cpu: usize) -> Option<V> {
        if !self.has(index) || (cpu + 1) * self.value > self.stride {
            return None;
        }
        let at = (index - self.first) as usize * self.stride + cpu * self.value;
        let bytes = &self.bytes[at..at + size_of::<V>()];
        // SAFETY: `bytes` is size_of::<V>() long, and V is Pod: any bit pattern is a value.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<V>()) })
    }
}

fn map_fd(map: &MapData) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    map.fd().as_fd()
}
