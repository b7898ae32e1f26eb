use super::*;
use crate::cli::render::top::rows;
use crate::view::VmView;

fn vm(domain: &str, remote: Option<f64>, moves: u64) -> VmView {
    let mut vcpu: crate::view::VcpuView = serde_json::from_value(serde_json::json!({
        "vcpu": 0, "tid": 1, "allowed_cpus": "1", "allowed_on_far_socket": false,
        "run_seconds": {"local": 0.0, "same_socket": 0.0, "remote": 0.0, "none": 0.0},
        "cross_socket_migrations": 0, "kvm_exits": [], "remote_ratio": remote,
        "repin_recommended": null, "measured": true, "recent_cpus": {"1": 0.9}
    }))
    .expect("a vCPU view");
    vcpu.cross_socket_migrations = moves;
    VmView {
        domain: domain.into(),
        pid: 1,
        gpu_nodes: vec![1],
        remote_ratio: remote,
        vcpus: vec![vcpu],
        ..Default::default()
    }
}

fn view(vms: Vec<VmView>) -> HostView {
    HostView {
        vms,
        ..Default::default()
    }
}

fn names(view: &HostView, rates: &BTreeMap<String, Rates>, state: &TopState) -> Vec<String> {
    ordered(view, rates, state)
        .into_iter()
        .map(|vm| vm.domain.clone())
        .collect()
}

#[test]
fn vms_sort_by_remote_ratio_then_by_moves_per_second() {
    let before = view(vec![
        vm("a", Some(0.1), 0),
        vm("b", Some(0.9), 0),
        vm("c", None, 0),
    ]);
    let now = view(vec![
        vm("a", Some(0.1), 20),
        vm("b", Some(0.9), 2),
        vm("c", None, 0),
    ]);
    let per_second = rates(&before, &now, 2.0);
    assert_eq!(per_second["a"].moves, 10.0);
    let mut state = TopState::default();
    assert_eq!(names(&now, &per_second, &state), ["b", "a", "c"]);
    handle_key(&mut state, &now, &per_second, KeyCode::Char('m'));
    assert_eq!(names(&now, &per_second, &state), ["a", "b", "c"]);
    handle_key(&mut state, &now, &per_second, KeyCode::Char('s'));
    assert_eq!(state.sort, SortKey::Exits);
}

#[test]
fn filter_expand_and_quit_keys() {
    let now = view(vec![vm("web-1", Some(0.5), 0), vm("db-1", Some(0.2), 0)]);
    let none = BTreeMap::new();
    let mut state = TopState::default();
    for c in ['/', 'd', 'b'] {
        assert!(!handle_key(&mut state, &now, &none, KeyCode::Char(c)));
    }
    handle_key(&mut state, &now, &none, KeyCode::Enter);
    assert_eq!(names(&now, &none, &state), ["db-1"]);
    handle_key(&mut state, &now, &none, KeyCode::Enter);
    let shown = rows(&now, &none, &state);
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert_eq!(shown[1].1[0], "    vCPU 0");
    assert_eq!(shown[1].1[6], "pin 1 on 1");
    assert!(handle_key(&mut state, &now, &none, KeyCode::Char('q')));
}

#[test]
fn an_expanded_vm_shows_its_memory_by_node() {
    let mut db = vm("db-1", Some(0.2), 0);
    db.memory = Some(crate::view::MemoryView {
        by_node: BTreeMap::from([(0, 3 << 30), (1, 1 << 30)]),
        remote_ratio: Some(0.75),
        ..Default::default()
    });
    let now = view(vec![db]);
    let state = TopState {
        expanded: ["db-1".to_string()].into(),
        ..Default::default()
    };
    let shown = rows(&now, &BTreeMap::new(), &state);
    assert_eq!(shown[1].1[0], "    memory");
    assert_eq!(shown[1].1[1], "75.0%");
    assert_eq!(shown[1].1[6], "node 0 3072 MiB, node 1 1024 MiB");
    assert_eq!(shown[2].1[0], "    vCPU 0");
}

#[test]
fn the_screen_fits_80x24() {
    let now = view(
        (0..40)
            .map(|i| vm(&format!("vm-{i:02}"), Some(0.01 * i as f64), 0))
            .collect(),
    );
    let backend = ratatui::backend::TestBackend::new(80, 24);
    let mut terminal = ratatui::Terminal::new(backend).expect("a test terminal");
    let state = TopState::default();
    terminal
        .draw(|f| draw(f, &now, &BTreeMap::new(), &state, "127.0.0.1:9812"))
        .expect("draw");
    let screen: Vec<String> = terminal
        .backend()
        .buffer()
        .content()
        .chunks(80)
        .map(|row| row.iter().map(|c| c.symbol()).collect())
        .collect();
    assert!(screen[0].contains("40 VMs"), "{screen:#?}");
    assert!(
        screen[2].contains("REMOTE") && screen[2].contains("LAST ACTION"),
        "{screen:#?}"
    );
    // The most remote VM comes first, with its share.
    assert!(
        screen[3].contains("vm-39") && screen[3].contains("39.0%"),
        "{screen:#?}"
    );
    assert!(screen[23].contains("q quit"), "{screen:#?}");
}
