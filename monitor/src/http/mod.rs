//! The HTTP side: /metrics for Prometheus, / for people, /status.json for `pinsight status`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;

mod page;

use crate::daemon::Shared;
use crate::view::HostView;

/// What the handlers share: the engine's published view (read only) and what the HTTP side
/// keeps itself.
#[derive(Clone)]
struct AppState {
    view: Shared,
    /// Seconds the previous /metrics render took, as f64 bits.
    last_render: Arc<AtomicU64>,
}

impl AppState {
    /// The newest view; the lock is held only to clone the pointer.
    fn view(&self) -> Arc<HostView> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let started = Instant::now();
    let mut body = crate::metrics::render(&state.view());
    let previous = f64::from_bits(state.last_render.load(Ordering::Relaxed));
    body.push_str(&crate::metrics::render_scrape_duration(previous));
    state
        .last_render
        .store(started.elapsed().as_secs_f64().to_bits(), Ordering::Relaxed);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn status(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(state.view().as_ref().clone())
}

async fn index(State(state): State<AppState>) -> Html<String> {
    Html(page::index(&state.view()))
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
        .with_state(AppState {
            view: shared,
            last_render: Arc::new(AtomicU64::new(0)),
        });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, / and /status.json");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
