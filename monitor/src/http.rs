//! The HTTP side: /metrics for Prometheus, / for people, /status.json for `pinsight status`.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;

use crate::daemon::Shared;

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    let started = Instant::now();
    let body = {
        let guard = shared.read().unwrap_or_else(|p| p.into_inner());
        crate::metrics::render(&guard.snapshot)
    };
    if let Ok(mut guard) = shared.write() {
        guard.snapshot.scrape_duration_seconds = started.elapsed().as_secs_f64();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn status(State(shared): State<Shared>) -> impl IntoResponse {
    let guard = shared.read().unwrap_or_else(|p| p.into_inner());
    axum::Json(guard.status.clone())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

async fn index(State(shared): State<Shared>) -> Html<String> {
    let status = shared
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .status
        .clone();
    let mut rows = String::new();
    for vm in &status.vms {
        let ratio = vm
            .remote_ratio
            .map(|r| format!("{:.1}%", r * 100.0))
            .unwrap_or_else(|| "n/a (no GPU)".into());
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&vm.domain),
            escape(&vm.gpus.join(", ")),
            vm.vcpus.len(),
            ratio
        ));
    }
    if status.vms.is_empty() {
        rows.push_str("<tr><td colspan=4>no running VMs</td></tr>");
    }
    let probes: Vec<String> = status
        .probes
        .iter()
        .map(|(p, on)| {
            format!(
                "{} {}",
                escape(p),
                if *on { "attached" } else { "not attached" }
            )
        })
        .collect();
    Html(format!(
        "<!doctype html><html><head><title>pinsight</title></head><body>\
<h1>pinsight {version}</h1>\
<p>Measures how much of each VM's vCPU time runs on the socket of its GPUs, and on the other one.</p>\
<p><a href=\"/metrics\">/metrics</a> &middot; <a href=\"/status.json\">/status.json</a></p>\
<p>libvirt: {libvirt} &middot; probes: {probes}</p>\
<table border=1 cellpadding=4><tr><th>VM</th><th>GPUs (node)</th><th>vCPUs</th><th>remote ratio (recent)</th></tr>\n{rows}</table>\
</body></html>",
        version = escape(&status.version),
        libvirt = if status.libvirt_up { "up" } else { "DOWN" },
        probes = probes.join(", "),
    ))
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    shared: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/status.json", get(status))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, / and /status.json");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
