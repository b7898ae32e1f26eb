//! What can go wrong preparing, attaching and using the probes; every variant names the file,
//! map, program or tracepoint at fault.

use super::btf::BtfError;
use super::tracefs::TracefsError;
use super::VMLINUX_BTF;

/// Errors loading or using the probes.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Our reader could not give a struct member's offset (task_struct's layout).
    #[error(transparent)]
    Btf(#[from] BtfError),
    /// aya could not parse the kernel's BTF, which the object and tp_btf programs need.
    #[error("parsing the kernel's BTF {VMLINUX_BTF} failed: {0}")]
    KernelBtf(#[source] aya::BtfError),
    /// The number of possible CPUs (the length of every per-CPU value) could not be read.
    #[error("cannot read the possible CPUs from {path}: {source}")]
    PossibleCpus {
        /// The sysfs file aya reads.
        path: &'static str,
        /// The I/O or parse error.
        source: std::io::Error,
    },
    /// Loading the object (relocation, map creation) failed.
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program failed to load (the verifier refused it, or its BTF hook is missing) or attach.
    #[error("program {program}: {source}")]
    Program {
        /// Program name.
        program: &'static str,
        /// aya's error.
        source: aya::programs::ProgramError,
    },
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// aya's error.
        source: aya::maps::MapError,
    },
    /// The object lacks something the daemon expects (a build mismatch).
    #[error("the embedded eBPF object has no {0}")]
    Missing(&'static str),
    /// A tracepoint a probe attaches to is missing (the error names it).
    #[error(transparent)]
    Tracepoint(#[from] TracefsError),
    /// A thread id beyond the thread table, which was sized from kernel.pid_max at load.
    #[error("cannot track thread {tid}: the thread table holds ids below {table_tids} (kernel.pid_max when the probes loaded; it was raised since: restart pinsight)")]
    TidBeyondTable {
        /// The thread.
        tid: u32,
        /// Thread ids the table holds.
        table_tids: u32,
    },
    /// The thread's run-time clock (/proc/TID/schedstat) cannot be read: it exited, or /proc
    /// is not this host's.
    #[error("cannot track thread {tid}: /proc/{tid}/schedstat: {source}")]
    ThreadClock {
        /// The thread.
        tid: u32,
        /// The read or parse error.
        source: std::io::Error,
    },
    /// More threads of a kind (vCPU, or other) than the maps hold.
    #[error("cannot track thread {tid}: all {capacity} slots of its kind are taken (raise {key})")]
    Full {
        /// The thread.
        tid: u32,
        /// The slots of its kind.
        capacity: u32,
        /// The config key that sizes them.
        key: &'static str,
    },
}

/// Wraps a map error with the map's name.
pub(super) fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> ProbeError {
    move |source| ProbeError::Map { map, source }
}

/// Wraps a program error with the program's name.
pub(super) fn prog_err(
    program: &'static str,
) -> impl Fn(aya::programs::ProgramError) -> ProbeError {
    move |source| ProbeError::Program { program, source }
}
