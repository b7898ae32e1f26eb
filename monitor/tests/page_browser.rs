//! The placement map at / in a real browser (headless Chromium over WebDriver, see
//! tests/browser): the real daemon on the two-socket fixture watches a real busy VM whose
//! vCPU is pinned to the GPU's socket; the page must draw it there as local, follow a live
//! `virsh vcpupin` to the other socket within seconds without a reload, and highlight the
//! VM's GPU and node when it is selected. Screenshots of both states go to
//! target/page-browser/ (scripts/screenshot.sh copies one for the README).
//!
//! `map_at_100_vms_by_8_vcpus` serves a synthetic 100 VM x 8 vCPU view of a 2 x 64-core
//! (SMT) host through the daemon's own HTTP side and prints the figures BENCHMARKS.md cites.

mod browser;
mod common;
mod scale;

use std::time::{Duration, Instant};

use browser::{artifacts, Browser};
use common::daemon::{fixture, Daemon};
use common::{require_host, TestVm, VmOptions};
use serde_json::{json, Value};

const GPU: &str = "0000:3b:00.0";
/// How long the page may take to show a repin: the page polls every 2 s and the daemon
/// reads the probes every tick (0.5 s here), so 2.5 s plus the browser's own time.
const FOLLOW_WITHIN: Duration = Duration::from_secs(6);

/// Where the page draws `domain`'s vCPU 0: [(cpu, class, glyph, title)].
fn markers(browser: &Browser, domain: &str) -> Vec<(String, String, String, String)> {
    let found = browser.eval(
        "return [...document.querySelectorAll('#map .vcpu')]
            .filter(e => e.dataset.domain === arguments[0] && e.dataset.vcpu === '0')
            .map(e => [e.closest('.cpu').dataset.cpu, e.className, e.textContent, e.title]);",
        json!([domain]),
    );
    serde_json::from_value(found).unwrap_or_default()
}

/// Waits until vCPU 0 is drawn on `cpu` alone, as `locality` with its glyph and word.
fn wait_drawn_on(
    browser: &Browser,
    domain: &str,
    cpu: &str,
    locality: &str,
    glyph: &str,
    word: &str,
) {
    browser.wait(
        Duration::from_secs(30),
        &format!("vCPU 0 drawn on CPU {cpu} alone as {locality}"),
        || {
            let m = markers(browser, domain);
            let ok = m.len() == 1 && {
                let (on, class, text, title) = &m[0];
                on == cpu
                    && class.split(' ').any(|c| c == locality)
                    && text == glyph
                    && title.contains(&format!("on CPU {cpu}: {word}"))
            };
            ok.then_some(())
        },
    );
}

#[test]
fn the_map_shows_the_vcpu_on_its_pinned_cpu_and_follows_a_live_repin() {
    require_host();
    let vm = TestVm::start(VmOptions {
        metadata_xml: Some(common::gpu_metadata(GPU)),
        ..VmOptions::busy("browser")
    });
    // CPU 1: the GPU's node (node 1, socket 1) in the fixture.
    vm.pin_vcpu(0, "1");
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        "tick_seconds = 0.5\nrescan_seconds = 0.5\nremote_ratio_window_seconds = 2.0\n",
        &[],
    );
    let browser = Browser::start(1280, 800);
    browser.open(&format!("http://{}/", daemon.addr));
    let domain = vm.name.as_str();

    wait_drawn_on(&browser, domain, "1", "local", "\u{25cf}", "local");
    // The socket boxes and their GPUs are drawn from the fixture.
    let shape = browser.eval(
        "return [...document.querySelectorAll('#map .socket')].map(s => [s.dataset.socket,
            [...s.querySelectorAll('.cpu')].map(c => c.dataset.cpu).join(','),
            [...s.querySelectorAll('.gpu')].map(g => g.dataset.gpu).join(',')]);",
        json!([]),
    );
    assert_eq!(
        shape,
        json!([["0", "0", "0000:af:00.0"], ["1", "1", "0000:3b:00.0"]]),
        "sockets, CPUs and GPUs of the fixture"
    );
    // Selecting the VM highlights its GPU and node and shows its figures.
    browser.eval(
        "[...document.querySelectorAll('#vms tr')].find(r => r.dataset.domain === arguments[0]).click();",
        json!([domain]),
    );
    let panel = browser.wait(Duration::from_secs(10), "the VM's panel", || {
        let v = browser.eval(
            "const p = document.getElementById('panel');
             return p.dataset.domain === arguments[0] ? [p.textContent,
               [...document.querySelectorAll('.gpu.sel')].map(g => g.dataset.gpu).join(','),
               [...document.querySelectorAll('.node.sel')].map(n => n.dataset.node).join(',')] : null;",
            json!([domain]),
        );
        (!v.is_null()).then_some(v)
    });
    let text = panel[0].as_str().unwrap_or_default();
    assert!(
        text.contains("remote ratio") && text.contains("policy:") && text.contains("last action:"),
        "{text}"
    );
    assert_eq!(
        (panel[1].clone(), panel[2].clone()),
        (json!(GPU), json!("1")),
        "{panel}"
    );
    // Its memory (all on this machine's node 0, the far socket from its GPU) as a bar on
    // node 0, marked remote by class and glyph, and none on node 1.
    let memory = browser.wait(Duration::from_secs(10), "the VM's memory bar", || {
        let v = browser.eval(
            "return [...document.querySelectorAll('#map .mem[data-locality]')]
                .map(m => [m.dataset.memoryNode, m.dataset.locality, m.textContent]);",
            json!([]),
        );
        v.as_array().is_some_and(|a| a.len() == 2).then_some(v)
    });
    assert_eq!(memory[0][0], json!("0"), "{memory}");
    assert_eq!(memory[0][1], json!("remote"), "{memory}");
    assert!(
        memory[0][2]
            .as_str()
            .is_some_and(|t| t.starts_with('\u{25b2}') && t.contains("100.0% of its memory")),
        "{memory}"
    );
    assert_eq!(memory[1][1], json!("local"), "{memory}");
    assert!(
        memory[1][2]
            .as_str()
            .is_some_and(|t| t.contains(" 0 MiB (0.0%")),
        "{memory}"
    );
    assert!(text.contains("memory: node 0 "), "{text}");
    let dir = artifacts("page-browser");
    browser.screenshot(&dir.join("local.png"));

    // A flag in the page's global scope survives only if the page is not reloaded.
    browser.eval("window.pinsightNoReload = true;", json!([]));
    vm.pin_vcpu(0, "0");
    let pinned = Instant::now();
    wait_drawn_on(&browser, domain, "0", "remote", "\u{25b2}", "remote");
    let followed = pinned.elapsed();
    assert!(
        followed <= FOLLOW_WITHIN,
        "the page took {followed:?} to follow the repin (at most {FOLLOW_WITHIN:?})"
    );
    assert_eq!(
        browser.eval("return window.pinsightNoReload === true;", json!([])),
        Value::Bool(true),
        "the page was reloaded"
    );
    browser.screenshot(&dir.join("remote.png"));
    eprintln!(
        "the page followed the repin in {followed:?}; screenshots in {}",
        dir.display()
    );
}

#[test]
fn map_at_100_vms_by_8_vcpus() {
    let server = scale::Server::start(100, 8);
    let json_bytes = server.status_json_len();
    let browser = Browser::start(1600, 1200);
    browser.cdp("Performance.enable", json!({}));
    browser.open(&format!("http://{}/", server.addr));
    browser.wait(Duration::from_secs(30), "the first draw", || {
        let n = browser.eval("return window.pinsightDraws || 0;", json!([]));
        (n.as_u64().unwrap_or(0) >= 1).then_some(())
    });
    // Readable: every vCPU is drawn, inside a CPU cell, at least 10 px wide with its glyph.
    let drawn = browser.eval(
        "const m = [...document.querySelectorAll('#map .vcpu')];
         return [m.length, m.filter(e => e.closest('.cpu') && e.getBoundingClientRect().width >= 10
            && e.textContent.length === 1).length];",
        json!([]),
    );
    assert_eq!(
        drawn,
        json!([800, 800]),
        "markers drawn, and drawn readably"
    );
    let figures = |b: &Browser| {
        let metrics = b.cdp("Performance.getMetrics", json!({}));
        let get = |name: &str| {
            metrics["metrics"]
                .as_array()
                .and_then(|all| all.iter().find(|m| m["name"] == name))
                .and_then(|m| m["value"].as_f64())
                .unwrap_or(0.0)
        };
        let draws = b
            .eval("return window.pinsightDraws;", json!([]))
            .as_f64()
            .unwrap_or(0.0);
        (get("TaskDuration"), get("ScriptDuration"), draws)
    };
    let (task0, script0, draws0) = figures(&browser);
    std::thread::sleep(Duration::from_secs(10));
    let (task1, script1, draws1) = figures(&browser);
    let updates = draws1 - draws0;
    assert!(updates >= 3.0, "only {updates} updates in 10 s");
    let page = browser.eval(
        "const nav = performance.getEntriesByType('navigation')[0];
         const res = performance.getEntriesByType('resource');
         const first = performance.getEntriesByName('pinsight-first-draw')[0];
         const fcp = performance.getEntriesByName('first-contentful-paint')[0];
         return {html: nav.transferSize, assets: res.filter(r => r.name.includes('/assets/')).reduce((a, r) => a + r.transferSize, 0),
                 json: res.filter(r => r.name.includes('/status.json')).map(r => r.transferSize)[0],
                 first_paint_ms: fcp ? fcp.startTime : null, first_draw_ms: first.startTime};",
        json!([]),
    );
    browser.screenshot(&artifacts("page-browser").join("scale-100x8.png"));
    println!(
        "100 VMs x 8 vCPUs on 2 x 64 cores (256 CPUs): /status.json {json_bytes} bytes per update; \
         page load {} bytes (HTML {} + assets {} + first status.json {}); first paint {:.0} ms, map drawn {:.0} ms \
         after navigation start; per update {:.1} ms CPU (task), {:.1} ms script, over {updates} updates",
        page["html"].as_f64().unwrap_or(0.0) + page["assets"].as_f64().unwrap_or(0.0) + page["json"].as_f64().unwrap_or(0.0),
        page["html"], page["assets"], page["json"],
        page["first_paint_ms"].as_f64().unwrap_or(f64::NAN),
        page["first_draw_ms"].as_f64().unwrap_or(f64::NAN),
        1000.0 * (task1 - task0) / updates,
        1000.0 * (script1 - script0) / updates,
    );
}
