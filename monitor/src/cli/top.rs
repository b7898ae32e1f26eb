//! `pinsight top`: a live terminal view of a running daemon (its /status.json), like
//! kvm_stat or htop: VMs sorted by remote ratio, overhead, moves/s or exits/s, one line per
//! vCPU on expand, a name filter. Usable over ssh in 80x24; `q` quits and the terminal is
//! restored (also on a panic: ratatui's hook).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Args;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use super::render::top::{draw, ordered, rates, Rates, SortKey, TopState};
use super::{fetch_status, CliError};
use crate::view::HostView;

/// Arguments of `pinsight top`.
#[derive(Args, Debug)]
pub struct TopArgs {
    /// The daemon's address (host:port).
    #[arg(long, default_value = "127.0.0.1:9812")]
    pub addr: String,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
    /// Initial sort column (`s` cycles).
    #[arg(long, value_enum, default_value_t = SortKey::Remote)]
    pub sort: SortKey,
}

/// Runs until `q` (or Ctrl-C); the first fetch fails before the screen is taken.
pub fn execute(args: TopArgs) -> Result<(), CliError> {
    if !(args.interval.is_finite() && args.interval >= 0.1) {
        return Err(CliError::InvalidFlag {
            flag: "--interval",
            value: args.interval.to_string(),
            reason: "must be at least 0.1 seconds",
        });
    }
    let first = fetch_status(&args.addr)?;
    let mut terminal = ratatui::try_init().map_err(|source| CliError::Terminal { source })?;
    let result = run(&mut terminal, &args, first);
    ratatui::restore();
    result
}

/// The refresh-and-key loop.
fn run(
    terminal: &mut ratatui::DefaultTerminal,
    args: &TopArgs,
    first: HostView,
) -> Result<(), CliError> {
    let interval = Duration::from_secs_f64(args.interval);
    let mut state = TopState {
        sort: args.sort,
        ..Default::default()
    };
    let (mut view, mut fetched) = (first, Instant::now());
    let mut per_second: BTreeMap<String, Rates> = BTreeMap::new();
    let terminal_error = |source| CliError::Terminal { source };
    loop {
        terminal
            .draw(|frame| draw(frame, &view, &per_second, &state, &args.addr))
            .map_err(terminal_error)?;
        let wait = interval.saturating_sub(fetched.elapsed());
        if event::poll(wait).map_err(terminal_error)? {
            if let Event::Key(key) = event::read().map_err(terminal_error)? {
                if key.kind != KeyEventKind::Press {
                    continue;
                }
                let ctrl_c =
                    key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
                if ctrl_c || handle_key(&mut state, &view, &per_second, key.code) {
                    return Ok(());
                }
            }
            continue;
        }
        match fetch_status(&args.addr) {
            Ok(next) => {
                per_second = rates(&view, &next, fetched.elapsed().as_secs_f64());
                (view, fetched) = (next, Instant::now());
                state.error = None;
            }
            Err(e) => {
                state.error = Some(e.to_string());
                fetched = Instant::now();
            }
        }
    }
}

/// Applies one key; true means quit.
pub fn handle_key(
    state: &mut TopState,
    view: &HostView,
    rates: &BTreeMap<String, Rates>,
    code: KeyCode,
) -> bool {
    if state.editing_filter {
        match code {
            KeyCode::Enter => state.editing_filter = false,
            KeyCode::Esc => {
                state.editing_filter = false;
                state.filter.clear();
            }
            KeyCode::Backspace => {
                state.filter.pop();
            }
            KeyCode::Char(c) => state.filter.push(c),
            _ => {}
        }
        return false;
    }
    let names: Vec<String> = ordered(view, rates, state)
        .into_iter()
        .map(|vm| vm.domain.clone())
        .collect();
    let at = state
        .selected
        .as_ref()
        .and_then(|s| names.iter().position(|n| n == s));
    match code {
        KeyCode::Char('q') | KeyCode::Esc => return true,
        KeyCode::Char('s') => state.sort = state.sort.next(),
        KeyCode::Char('r') => state.sort = SortKey::Remote,
        KeyCode::Char('o') => state.sort = SortKey::Overhead,
        KeyCode::Char('m') => state.sort = SortKey::Moves,
        KeyCode::Char('e') => state.sort = SortKey::Exits,
        KeyCode::Char('/') => state.editing_filter = true,
        KeyCode::Down | KeyCode::Char('j') => {
            let next = at.map_or(0, |i| (i + 1).min(names.len().saturating_sub(1)));
            state.selected = names.get(next).cloned();
        }
        KeyCode::Up | KeyCode::Char('k') => {
            let next = at.map_or(0, |i| i.saturating_sub(1));
            state.selected = names.get(next).cloned();
        }
        KeyCode::Enter | KeyCode::Char(' ') => {
            let Some(name) = at.and_then(|i| names.get(i)).or(names.first()) else {
                return false;
            };
            state.selected = Some(name.clone());
            if !state.expanded.remove(name) {
                state.expanded.insert(name.clone());
            }
        }
        _ => {}
    }
    false
}

#[cfg(test)]
mod tests;
