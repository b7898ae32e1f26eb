//! This tick's [`HostView`], built from the engine's state before the policy adds its
//! verdicts: the problems of every source, and the probes' attach state and self-metrics.

use std::collections::BTreeMap;

use super::{libvirt_source, Engine};
use crate::probes::Probes;
use crate::view::{
    DepthFilterView, HostView, MapView, ProbeView, ProbesView, ProgramView, ViewInputs,
};
use monitor_common::sched_switch::{depth_bit, ALL_DEPTHS};

impl Engine {
    /// This tick's view, before the policy's verdicts.
    pub(super) fn build_view(&self) -> HostView {
        let mut extra_problems = Vec::new();
        if let Some(f) = &self.probe_failure {
            extra_problems.push(format!("probes not loaded: {f}"));
        }
        if let Some(why) = self.libvirt.down_reason() {
            extra_problems.push(why.to_string());
        }
        extra_problems.extend(self.placement.problems());
        extra_problems.extend(self.calibration_problem.clone());
        let mut view = HostView::build(ViewInputs {
            topology: &self.topology,
            inventory: &self.inventory,
            totals: self.accounting.domains(),
            probes: probes_view(self.probes.as_ref()),
            libvirt_up: self.libvirt.up(),
            tick_unix_seconds: libvirt_source::unix_seconds(std::time::SystemTime::now()),
            inventory_unix_seconds: self.libvirt.inventory_unix_seconds(),
            mode: self.config.policy.mode,
            per_vcpu_metrics: self.config.per_vcpu_metrics,
            penalties: self.config.penalties(),
            calibration: self.calibration.as_ref(),
            max_exported_vms: self.config.max_exported_vms as usize,
            tick: self.ticks,
            extra_problems,
            measuring: self.probes.as_ref().is_some_and(|p| {
                p.status()
                    .get(monitor_common::programs::SCHED_SWITCH)
                    .is_some_and(|s| s.attached)
            }),
            unmeasured_tids: self.tracking.unmeasured().collect(),
            interrupts: &self.placement.interrupts,
            memory: &self.placement.memory,
        });
        view.topology.reserved_cpus = self.config.policy.reserved_cpus.clone();
        view
    }
}

/// The probes' state for the view; without probes, sched_switch shows as not attached.
fn probes_view(probes: Option<&Probes>) -> ProbesView {
    let Some(p) = probes else {
        let off = ProbeView {
            attached: false,
            detail: "the eBPF object could not be loaded".into(),
        };
        return ProbesView {
            probes: BTreeMap::from([(monitor_common::programs::SCHED_SWITCH.to_string(), off)]),
            ..Default::default()
        };
    };
    ProbesView {
        probes: p
            .status()
            .iter()
            .map(|(name, st)| {
                let view = ProbeView {
                    attached: st.attached,
                    detail: st.detail.clone(),
                };
                (name.to_string(), view)
            })
            .collect(),
        program_stats: p.program_stats().map(|v| {
            v.into_iter()
                .map(|s| ProgramView {
                    program: s.program.to_string(),
                    run_time_ns: s.run_time_ns,
                    run_count: s.run_count,
                })
                .collect()
        }),
        maps: p
            .map_usage()
            .into_iter()
            .map(|m| MapView {
                map: m.map.to_string(),
                entries: m.entries,
                capacity: m.capacity,
            })
            .collect(),
        map_errors: p.map_errors(),
        unseen_switches: p.unseen_switches(),
        depth_filter: p
            .depth_filter()
            .map(|f| {
                let open = f.word == ALL_DEPTHS;
                DepthFilterView {
                    open,
                    depths: match open {
                        true => Vec::new(),
                        false => (0..64).filter(|&d| f.word & depth_bit(d) != 0).collect(),
                    },
                    can_close: f.may_close,
                    threads_ran_unseen: f.threads_ran_unseen,
                }
            })
            .unwrap_or_else(|e| {
                tracing::debug!("depth filter unreadable: {e}");
                DepthFilterView {
                    open: true,
                    ..Default::default()
                }
            }),
    }
}
