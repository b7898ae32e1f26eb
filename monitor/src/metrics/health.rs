//! The daemon's own health: whether libvirt answers, when the engine last ticked and libvirt
//! last gave a whole inventory, and whether the policy is paused. A wedged engine keeps
//! serving its last view, so the tick timestamp is what tells it apart from a live one.

use prometheus::proto::MetricType;

use super::text::Family;
use crate::view::HostView;

/// The health families of `view`.
pub(super) fn families(view: &HostView) -> Vec<Family> {
    let mut up = Family::new(
        "pinsight_libvirt_up",
        MetricType::GAUGE,
        "1 when libvirt answered its last call within libvirt_timeout_seconds.",
    );
    up.push(vec![], f64::from(u8::from(view.libvirt_up)));
    let mut tick = Family::new(
        "pinsight_engine_last_tick_timestamp_seconds",
        MetricType::GAUGE,
        "When the engine last read the probes and built this view (Unix time); it stops moving only when the engine is stuck.",
    );
    tick.push(vec![], view.tick_unix_seconds);
    let mut inventory = Family::new(
        "pinsight_inventory_last_success_timestamp_seconds",
        MetricType::GAUGE,
        "When libvirt last gave a whole inventory of the running VMs (Unix time; 0 before the first).",
    );
    inventory.push(vec![], view.inventory_unix_seconds.unwrap_or(0.0));
    let mut families = vec![up, tick, inventory];
    if view.mode != crate::config::Mode::Observe {
        let mut paused = Family::new(
            "pinsight_policy_paused",
            MetricType::GAUGE,
            "1 while the repin policy waits because libvirt is down or its inventory is stale (status says why).",
        );
        paused.push(vec![], f64::from(u8::from(view.policy_paused.is_some())));
        families.push(paused);
    }
    families
}
