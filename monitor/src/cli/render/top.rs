//! `pinsight top`'s screen: what it shows (rows sorted and filtered, rates between two
//! views) as pure functions, and how it is drawn with ratatui in 80x24 and up.

use std::collections::{BTreeMap, BTreeSet};

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Row, Table, TableState};
use ratatui::Frame;

use crate::view::{HostView, VmView};

/// The column VMs are sorted by, most first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// Remote share of vCPU time over the recent window.
    #[default]
    Remote,
    /// Estimated overhead (remote ratio x penalty).
    Overhead,
    /// Cross-socket moves per second.
    Moves,
    /// KVM exits per second.
    Exits,
}

impl SortKey {
    /// The next key (the `s` key cycles).
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Remote => SortKey::Overhead,
            SortKey::Overhead => SortKey::Moves,
            SortKey::Moves => SortKey::Exits,
            SortKey::Exits => SortKey::Remote,
        }
    }

    fn label(self) -> &'static str {
        match self {
            SortKey::Remote => "remote",
            SortKey::Overhead => "overhead",
            SortKey::Moves => "moves/s",
            SortKey::Exits => "exits/s",
        }
    }
}

/// What the person chose: sort, filter, selection, expanded VMs.
#[derive(Debug, Clone, Default)]
pub struct TopState {
    /// Sort column.
    pub sort: SortKey,
    /// Only VMs whose name contains this (case-insensitive).
    pub filter: String,
    /// Typing a filter (after `/`).
    pub editing_filter: bool,
    /// The selected VM's name.
    pub selected: Option<String>,
    /// VMs shown with one line per vCPU.
    pub expanded: BTreeSet<String>,
    /// Why the last refresh failed, shown until one succeeds.
    pub error: Option<String>,
}

/// Per-second rates of one VM between two views.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    /// Cross-socket moves per second.
    pub moves: f64,
    /// KVM exits per second.
    pub exits: f64,
}

/// A VM's counters that rates are taken of.
fn counters(vm: &VmView) -> (u64, u64) {
    let moves = vm.vcpus.iter().map(|v| v.cross_socket_migrations).sum();
    (moves, vm.kvm_exits.total())
}

/// Rates per VM from `before` to `now`, `seconds` apart (VMs new since have none).
pub fn rates(before: &HostView, now: &HostView, seconds: f64) -> BTreeMap<String, Rates> {
    if seconds <= 0.0 {
        return BTreeMap::new();
    }
    now.vms
        .iter()
        .filter_map(|vm| {
            let old = counters(before.vm(&vm.domain)?);
            let new = counters(vm);
            let rate = |n: u64, o: u64| n.saturating_sub(o) as f64 / seconds;
            Some((
                vm.domain.clone(),
                Rates {
                    moves: rate(new.0, old.0),
                    exits: rate(new.1, old.1),
                },
            ))
        })
        .collect()
}

/// The VMs to show, filtered and sorted (most first; VMs without a figure last, then by
/// name so the order is stable).
pub fn ordered<'a>(
    view: &'a HostView,
    rates: &BTreeMap<String, Rates>,
    state: &TopState,
) -> Vec<&'a VmView> {
    let needle = state.filter.to_lowercase();
    let mut vms: Vec<&VmView> = view
        .vms
        .iter()
        .filter(|vm| vm.domain.to_lowercase().contains(&needle))
        .collect();
    let key = |vm: &VmView| -> Option<f64> {
        let r = rates.get(&vm.domain);
        match state.sort {
            SortKey::Remote => vm.remote_ratio,
            SortKey::Overhead => vm.overhead.as_ref().map(|o| o.total),
            SortKey::Moves => r.map(|r| r.moves),
            SortKey::Exits => r.map(|r| r.exits),
        }
    };
    vms.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        kb.partial_cmp(&ka)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.domain.cmp(&b.domain))
    });
    vms
}

fn pct(x: Option<f64>) -> String {
    x.map(|x| format!("{:.1}%", x * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

fn rate(x: Option<f64>) -> String {
    x.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into())
}

/// The table's rows: one per VM, and under an expanded VM one per vCPU.
pub fn rows(
    view: &HostView,
    rates: &BTreeMap<String, Rates>,
    state: &TopState,
) -> Vec<(Option<String>, [String; 7])> {
    let mut out = Vec::new();
    for vm in ordered(view, rates, state) {
        let r = rates.get(&vm.domain);
        let open = state.expanded.contains(&vm.domain);
        out.push((
            Some(vm.domain.clone()),
            [
                format!("{} {}", if open { "-" } else { "+" }, vm.domain),
                pct(vm.remote_ratio),
                pct(vm.overhead.as_ref().map(|o| o.total)),
                rate(r.map(|r| r.moves)),
                rate(r.map(|r| r.exits)),
                vm.vcpus.len().to_string(),
                vm.last_action.clone().unwrap_or_else(|| "none".into()),
            ],
        ));
        if open {
            if let Some(m) = &vm.memory {
                let nodes: Vec<String> = m
                    .by_node
                    .iter()
                    .map(|(n, b)| format!("node {n} {} MiB", b >> 20))
                    .collect();
                out.push((
                    None,
                    [
                        "    memory".to_string(),
                        pct(m.remote_ratio),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        nodes.join(", "),
                    ],
                ));
            }
            for v in &vm.vcpus {
                let ran: Vec<String> = v.recent_cpus.keys().map(u32::to_string).collect();
                out.push((
                    None,
                    [
                        format!("    vCPU {}", v.vcpu),
                        pct(v.remote_ratio),
                        String::new(),
                        super::moves(&v.migrations),
                        String::new(),
                        String::new(),
                        format!(
                            "pin {} on {}",
                            v.allowed_cpus,
                            if ran.is_empty() {
                                "-".into()
                            } else {
                                ran.join(",")
                            }
                        ),
                    ],
                ));
            }
        }
    }
    out
}

/// Draws one screen.
pub fn draw(
    frame: &mut Frame,
    view: &HostView,
    rates: &BTreeMap<String, Rates>,
    state: &TopState,
    addr: &str,
) {
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let misplaced = view
        .vms
        .iter()
        .filter(|vm| vm.remote_ratio.is_some_and(|r| r > 0.5))
        .count();
    let status = match &state.error {
        Some(e) => format!("NOT UPDATING: {e}"),
        None => format!(
            "tick {} · mode {:?} · libvirt {}",
            view.tick,
            view.mode,
            if view.libvirt_up { "up" } else { "DOWN" }
        ),
    };
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(format!(
                "pinsight top {addr} · {} VMs, {misplaced} mostly remote · sort: {}",
                view.vms.len(),
                state.sort.label()
            )),
            Line::from(status),
        ]),
        head,
    );
    let all = rows(view, rates, state);
    let selected = all
        .iter()
        .position(|(d, _)| d.is_some() && *d == state.selected);
    let header = Row::new([
        "VM",
        "REMOTE",
        "OVERHD",
        "MOVES/s",
        "EXITS/s",
        "vCPU",
        "LAST ACTION",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED));
    let table = Table::new(
        all.into_iter().map(|(_, cells)| Row::new(cells)),
        [
            Constraint::Fill(3),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(4),
            Constraint::Fill(2),
        ],
    )
    .header(header)
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut table_state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(table, body, &mut table_state);
    let help = if state.editing_filter {
        format!("filter: {}_  (Enter keeps, Esc clears)", state.filter)
    } else {
        format!(
            "q quit  s sort  ↑↓ select  Enter expand  / filter{}",
            if state.filter.is_empty() {
                String::new()
            } else {
                format!(" [{}]", state.filter)
            }
        )
    };
    frame.render_widget(Paragraph::new(help), foot);
}
