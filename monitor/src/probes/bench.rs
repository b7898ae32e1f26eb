//! Benchmark support: the empty program on sched_switch, loaded the same way as the real one,
//! gives the floor the kernel imposes on any tp_btf program there.

use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf, EbpfLoader};
use monitor_common::programs;

use super::{prog_err, ProbeError, PROBES_OBJECT};

/// Loads the object and attaches only `sched_switch_empty`; detached when dropped.
pub fn load_empty_sched_switch() -> Result<Ebpf, ProbeError> {
    let mut ebpf = EbpfLoader::new().load(PROBES_OBJECT)?;
    let btf = Btf::from_sys_fs().map_err(|e| ProbeError::Load(aya::EbpfError::BtfError(e)))?;
    let name = programs::SCHED_SWITCH_EMPTY;
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or(ProbeError::Missing(name))?
        .try_into()
        .map_err(prog_err(name))?;
    prog.load("sched_switch", &btf).map_err(prog_err(name))?;
    prog.attach().map_err(prog_err(name))?;
    Ok(ebpf)
}

/// (run time ns, run count) of a loaded program, from bpf_stats.
pub fn program_run_stats(ebpf: &Ebpf, name: &str) -> Option<(u64, u64)> {
    let info = ebpf.program(name)?.info().ok()?;
    Some((info.run_time().as_nanos() as u64, info.run_count()))
}
