//! The programs under test: this build's probes, an empty program on the same attach point,
//! and older builds' objects, each loaded and attached here, their tables of tracked threads
//! kept in step, and their run time and count read from bpf_stats.

use std::path::Path;

use aya::maps::{Array, MapData};
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf, EbpfLoader};
use monitor_common::programs::{SCHED_SWITCH, SCHED_SWITCH_EMPTY};
use monitor_common::sched_migrate_task::CpuTopo;
use monitor_common::sched_switch::{TASK_DEPTH_OFFSET, TRACKED_DEPTHS};
use monitor_common::tracked::{slot_shift, slot_word, slot_words, TRACKED_TIDS};
use pinsight::probes::btf::KernelBtf;
use pinsight::probes::{
    embedded_object, task_globals, KvmExitSource, ProbeOptions, Probes, VMLINUX_BTF,
};

use crate::common::{attach_order, pinsight_stats, run_stats, Turn};

/// The one-bit-per-tid bitmap that a trial build (2eed912, not kept: BENCHMARKS.md) read
/// before its slot table: 64 thread ids a word. An object compared here may have it.
const TRACKED_BITS: &str = "TRACKED_BITS";

/// The bitmap word of `tid`, and its bit there.
fn bit_of(tid: u32) -> (u32, u64) {
    (tid / 64, 1 << (tid % 64))
}

/// An older object with its sched_switch attached, its tables of tracked threads, and its
/// depth filter word if it has one.
pub struct Other {
    ebpf: Ebpf,
    slots: Array<MapData, u64>,
    bits: Option<Array<MapData, u64>>,
    depths: Option<Array<MapData, u64>>,
}

impl Other {
    pub fn load(object: &[u8], pid_max: u32) -> Other {
        let btf = KernelBtf::read(Path::new(VMLINUX_BTF)).unwrap();
        let globals = task_globals(&btf).unwrap();
        let mut loader = EbpfLoader::new();
        loader
            .set_max_entries(TRACKED_TIDS, slot_words(pid_max))
            .set_max_entries(TRACKED_BITS, pid_max.div_ceil(64))
            .set_max_entries("RUN_NS", 1025)
            .set_max_entries("THREAD_RUN", 1025)
            .set_max_entries("KVM_EXITS", 1025)
            .set_max_entries("CPU_TOPO", 64);
        for (name, value) in &globals {
            // Objects from before the depth filter have no depth offset.
            loader.set_global(name, value, *name != TASK_DEPTH_OFFSET);
        }
        let mut ebpf = loader.load(object).unwrap();
        let prog: &mut BtfTracePoint = ebpf.program_mut(SCHED_SWITCH).unwrap().try_into().unwrap();
        prog.load("sched_switch", &Btf::from_sys_fs().unwrap())
            .unwrap();
        prog.attach().unwrap();
        let slots = Array::try_from(ebpf.take_map(TRACKED_TIDS).unwrap()).unwrap();
        let bits = ebpf
            .take_map(TRACKED_BITS)
            .map(|m| Array::try_from(m).unwrap());
        let depths = ebpf
            .take_map(TRACKED_DEPTHS)
            .map(|m| Array::try_from(m).unwrap());
        Other {
            ebpf,
            slots,
            bits,
            depths,
        }
    }

    /// Sets its depth filter (if it has one) to `word`, this build's: the daemon of each build
    /// would set the same bits for the same tracked threads, so both filter alike.
    fn filter(&mut self, word: u64) {
        if let Some(depths) = &mut self.depths {
            depths.set(0, word, 0).unwrap();
        }
    }

    /// Publishes `tid` in `slot` (0: untracks it), the slot before the bit as the daemon does.
    fn set(&mut self, tid: u32, slot: u32) {
        let (index, shift) = (slot_word(tid), slot_shift(tid));
        let word = self.slots.get(&index, 0).unwrap();
        let word = (word & !(0xffff << shift)) | (u64::from(slot) << shift);
        self.slots.set(index, word, 0).unwrap();
        if let Some(bits) = &mut self.bits {
            let (index, bit) = bit_of(tid);
            let word = bits.get(&index, 0).unwrap();
            let word = match slot {
                0 => word & !bit,
                _ => word | bit,
            };
            bits.set(index, word, 0).unwrap();
        }
    }
}

/// Loads the daemon's object and attaches only `sched_switch_empty`; detached when dropped.
pub fn load_empty_sched_switch() -> anyhow::Result<Ebpf> {
    let mut ebpf = EbpfLoader::new().load(embedded_object())?;
    let btf = Btf::from_sys_fs()?;
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(SCHED_SWITCH_EMPTY)
        .ok_or_else(|| anyhow::anyhow!("the object has no {SCHED_SWITCH_EMPTY}"))?
        .try_into()?;
    prog.load("sched_switch", &btf)?;
    prog.attach()?;
    Ok(ebpf)
}

pub fn options() -> ProbeOptions {
    ProbeOptions {
        max_threads: 1024,
        max_other_threads: 64,
        kvm_exit_source: KvmExitSource::Off,
        // 64 one-CPU cores, alternating between two socket-nodes.
        cpu_topo: (0..64)
            .map(|c| {
                let socket = c % 2;
                (
                    c,
                    CpuTopo {
                        core: c,
                        node: socket,
                        socket,
                    },
                )
            })
            .collect(),
    }
}

/// Every program under test, attached afresh: the empty one, the older objects, this build;
/// and the threads tracked all along (the sleeping "VM" thread).
pub struct Attached {
    empty: Ebpf,
    others: Vec<Other>,
    probes: Probes,
    resident: Vec<u32>,
}

impl Attached {
    /// Each round attaches them afresh, in `attach_order` for `round`.
    pub fn all(
        round: usize,
        objects: &[(String, Vec<u8>)],
        pid_max: u32,
        resident: &[u32],
    ) -> Attached {
        let mut empty = None;
        let mut others: Vec<Option<Other>> = (0..objects.len()).map(|_| None).collect();
        let mut probes = None;
        for turn in attach_order(round, objects.len()) {
            match turn {
                Turn::Empty => {
                    empty = Some(load_empty_sched_switch().expect("load empty program"));
                }
                Turn::Other(i) => others[i] = Some(Other::load(&objects[i].1, pid_max)),
                Turn::ThisBuild => {
                    probes = Some(Probes::load(options()).expect("load pinsight probes"));
                }
            }
        }
        let mut attached = Attached {
            empty: empty.unwrap(),
            others: others.into_iter().map(Option::unwrap).collect(),
            probes: probes.unwrap(),
            resident: Vec::new(),
        };
        attached.track(resident, true);
        attached.resident = resident.to_vec();
        attached
    }

    /// (run time, run count) of each program: empty, older objects, this build.
    pub fn sample(&self) -> Vec<(u64, u64)> {
        let mut v = vec![run_stats(&self.empty, SCHED_SWITCH_EMPTY)];
        v.extend(self.others.iter().map(|o| run_stats(&o.ebpf, SCHED_SWITCH)));
        v.push(pinsight_stats(&self.probes, SCHED_SWITCH));
        v
    }

    /// Tracks (`on`) or untracks `tids` in every build, then reads this build's maps once, as
    /// the daemon's tick does (which sets its depth filter), and gives the older builds the
    /// same filter word.
    pub fn track(&mut self, tids: &[u32], on: bool) {
        let first_slot = self.resident.len() as u32 + 1;
        for (n, &tid) in tids.iter().enumerate() {
            for other in &mut self.others {
                other.set(tid, if on { first_slot + n as u32 } else { 0 });
            }
            if on {
                self.probes.track(tid).expect("track");
            } else {
                self.probes.untrack(tid).expect("untrack");
            }
        }
        self.probes.read().expect("read this build's maps");
        let word = self.filter_word();
        for other in &mut self.others {
            other.filter(word);
        }
    }

    /// This build's depth filter word now.
    pub fn filter_word(&self) -> u64 {
        self.probes
            .depth_filter()
            .expect("depth filter readable")
            .word
    }
}
