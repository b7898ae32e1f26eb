//! The daemon's own page at `/`: what pinsight is, its version, links, the placement map and
//! one row per VM. All HTML lives here; the map's script and style sheet are embedded in the
//! binary (`assets/`, served at [`SCRIPT_PATH`] and [`STYLE_PATH`]): no CDN, no build step.
//!
//! The server renders the summary and the table, so the page says what matters without
//! JavaScript (and to curl); the script draws the map from /status.json and keeps all of it
//! live.

use crate::view::HostView;

/// Where the map's script is served.
pub const SCRIPT_PATH: &str = "/assets/map.js";
/// Where the map's style sheet is served.
pub const STYLE_PATH: &str = "/assets/map.css";
/// The map's script.
pub const SCRIPT: &str = include_str!("assets/map.js");
/// The map's style sheet.
pub const STYLE: &str = include_str!("assets/map.css");

/// What the map's glyphs and marks mean; colour is never the only signal.
const LEGEND: &str = "<p class=\"legend\">Each vCPU is drawn on the CPUs it ran on since the daemon's \
previous reading (one tick); an idle vCPU pinned to at most 4 CPUs is drawn faded on them, one allowed more \
is not drawn. Locality to the VM's GPU: <span class=\"vcpu local\">\u{25cf}</span> local (the GPU's node), \
<span class=\"vcpu same_socket\">\u{25c6}</span> same socket, <span class=\"vcpu remote\">\u{25b2}</span> \
remote (another socket), <span class=\"vcpu none\">?</span> unknown (no GPU). CPU cells: R reserved \
(policy.reserved_cpus), off offline. A node's bar is the selected VM's memory there (its memory cgroup), marked like the vCPUs; emulator and I/O threads are not measured yet.</p>\n";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Remote ratio above which the page counts a VM as misplaced (the alert rule's threshold).
const MISPLACED_RATIO: f64 = 0.5;

/// The landing page: what pinsight is, its version, links, and one row per VM.
pub fn index(status: &HostView) -> String {
    let mut rows = String::new();
    for vm in &status.vms {
        let ratio = vm
            .remote_ratio
            .map(|r| format!("{:.1}%", r * 100.0))
            .unwrap_or_else(|| "n/a (no GPU)".into());
        let gpus = vm.gpu_list().unwrap_or_else(|| "none".into());
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&vm.domain),
            escape(&gpus),
            vm.vcpus.len(),
            ratio
        ));
    }
    if status.vms.is_empty() {
        rows.push_str("<tr><td colspan=4>no running VMs</td></tr>\n");
    }
    let with_gpu = status
        .vms
        .iter()
        .filter(|vm| vm.remote_ratio.is_some())
        .count();
    let misplaced = status
        .vms
        .iter()
        .filter(|vm| vm.remote_ratio.is_some_and(|r| r > MISPLACED_RATIO))
        .count();
    let probes: Vec<String> = status
        .probes
        .probes
        .iter()
        .map(|(p, st)| {
            format!(
                "{} {}",
                escape(p),
                if st.attached {
                    "attached"
                } else {
                    "not attached"
                }
            )
        })
        .collect();
    let problems: String = status
        .problems
        .iter()
        .map(|p| format!("<li>{}</li>", escape(p)))
        .collect();
    let problems = if problems.is_empty() {
        String::new()
    } else {
        format!("<p>Problems found in the last scan:</p><ul>{problems}</ul>\n")
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>pinsight</title>\
<meta name=\"viewport\" content=\"width=device-width\"><link rel=\"stylesheet\" href=\"{STYLE_PATH}\"></head><body>\n\
<h1>pinsight {version}</h1>\n\
<p>Measures how much of each VM's vCPU time runs on the socket of its GPUs, and on the other one.</p>\n\
<p><a href=\"/metrics\">/metrics</a> (Prometheus) &middot; <a href=\"/status.json\">/status.json</a> (pinsight status)</p>\n\
<p>libvirt: {libvirt} &middot; probes: {probes}</p>\n\
<p id=\"summary\">{vms} running VM(s), {with_gpu} with GPUs, {misplaced} of them with more than half of their recent vCPU time on the wrong socket.</p>\n\
{problems}\
<p id=\"status\">waiting for the first update (the map needs JavaScript)</p>\n\
{LEGEND}\
<div id=\"map\"></div>\n<div id=\"panel\"></div>\n\
<table id=\"vms\" border=1 cellpadding=4><tr><th>VM</th><th>GPUs (node)</th><th>vCPUs</th><th>remote ratio (recent)</th></tr>\n{rows}</table>\n\
<script src=\"{SCRIPT_PATH}\"></script>\n\
</body></html>\n",
        version = escape(&status.version),
        libvirt = if status.libvirt_up { "up" } else { "DOWN" },
        probes = probes.join(", "),
        vms = status.vms.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Gpu, GpuSource};
    use crate::view::HostView;
    use crate::view::{ProbeView, VmView};

    /// A VM with GPUs on node 1 at `gpus`.
    fn vm(domain: &str, gpus: &[&str], remote_ratio: Option<f64>) -> VmView {
        VmView {
            domain: domain.into(),
            uuid: String::new(),
            pid: 1,
            vmm: crate::inventory::Vmm::Libvirt,
            gpus: gpus
                .iter()
                .map(|g| Gpu {
                    address: g.to_string(),
                    node: Some(1),
                    source: GpuSource::Declared,
                })
                .collect(),
            gpu_nodes: if gpus.is_empty() { vec![] } else { vec![1] },
            remote_ratio,
            ..Default::default()
        }
    }

    #[test]
    fn landing_page_names_version_links_and_each_vm_with_its_remote_ratio() {
        let status = HostView {
            version: "1.2.3".into(),
            libvirt_up: true,
            probes: crate::view::ProbesView {
                probes: [(
                    "sched_switch".to_string(),
                    ProbeView {
                        attached: true,
                        detail: String::new(),
                    },
                )]
                .into(),
                ..Default::default()
            },
            vms: vec![
                vm("far<vm>", &["0000:3b:00.0"], Some(0.75)),
                vm("near", &["0000:3b:00.0"], Some(0.02)),
                vm("plain", &[], None),
            ],
            problems: vec!["GPU 0000:99:00.0 of \"x\" is not in sysfs".into()],
            mode: crate::config::Mode::Observe,
            ..Default::default()
        };
        let page = index(&status);
        assert!(page.contains("<h1>pinsight 1.2.3</h1>"), "{page}");
        assert!(page.contains("<a href=\"/metrics\">"), "{page}");
        assert!(
            page.contains("<tr><td>far&lt;vm&gt;</td><td>0000:3b:00.0@node1</td><td>0</td><td>75.0%</td></tr>"),
            "{page}"
        );
        assert!(
            page.contains("<td>near</td>") && page.contains("<td>2.0%</td>"),
            "{page}"
        );
        assert!(
            page.contains("<td>plain</td><td>none</td><td>0</td><td>n/a (no GPU)</td>"),
            "{page}"
        );
        assert!(
            page.contains("3 running VM(s), 2 with GPUs, 1 of them with more than half"),
            "{page}"
        );
        assert!(
            page.contains("<li>GPU 0000:99:00.0 of &quot;x&quot; is not in sysfs</li>"),
            "{page}"
        );
        assert!(page.contains("sched_switch attached"), "{page}");
    }

    #[test]
    fn the_map_is_embedded_and_its_legend_does_not_rely_on_colour() {
        let page = index(&HostView::default());
        assert!(
            page.contains(&format!("<script src=\"{SCRIPT_PATH}\">")),
            "{page}"
        );
        assert!(page.contains(&format!("href=\"{STYLE_PATH}\"")), "{page}");
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "{page}"
        );
        for glyph in [
            "\u{25cf}</span> local",
            "\u{25c6}</span> same socket",
            "\u{25b2}</span> remote",
        ] {
            assert!(page.contains(glyph), "{glyph} in {page}");
        }
        // The script fetches the page's own origin only.
        assert!(SCRIPT.contains("fetch(\"/status.json\""));
        assert!(!SCRIPT.contains("http") || !SCRIPT.contains("://"));
        assert!(STYLE.contains(".vcpu.remote"));
    }

    #[test]
    fn landing_page_says_when_no_vm_runs_and_libvirt_is_down() {
        let page = index(&HostView {
            version: "1.2.3".into(),
            ..Default::default()
        });
        assert!(page.contains("no running VMs"), "{page}");
        assert!(page.contains("libvirt: DOWN"), "{page}");
        assert!(!page.contains("Problems found"), "{page}");
    }
}
