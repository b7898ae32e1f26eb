//! The HTTP side: /metrics for Prometheus, / for people, /status.json for `pinsight status`;
//! over TLS and behind basic auth when a web-config file says so ([`web_config`]).
//!
//! The listener is bound by the caller before anything else starts, so a port already taken
//! stops the daemon before a probe is loaded. Each connection reads the web config current
//! when it is accepted (TLS) and each request the one current when it arrives (auth,
//! headers), so a reload only has to swap the [`SharedWebConfig`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

mod auth;
mod page;
mod tls;
pub mod web_config;

pub use web_config::{WebConfig, WebConfigError};

use crate::daemon::Shared;
use crate::view::HostView;

/// The web config in force; a reload replaces the inner `Arc`.
pub type SharedWebConfig = Arc<RwLock<Arc<WebConfig>>>;

/// The realm of the `WWW-Authenticate` challenge.
const REALM: &str = "Basic realm=\"pinsight\", charset=\"UTF-8\"";
/// A client that has not finished its TLS handshake (or request headers) by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may take to finish after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the endpoint serves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `--web.metrics-only`: /metrics alone; / and /status.json answer 404.
    pub metrics_only: bool,
}

/// What the handlers share: the engine's published view (read only) and what the HTTP side
/// keeps itself.
#[derive(Clone)]
struct AppState {
    view: Shared,
    /// Seconds the previous /metrics render took, as f64 bits.
    last_render: Arc<AtomicU64>,
    /// The daemon's own process_* and build_info families.
    exporter: Arc<crate::metrics::exporter::Exporter>,
}

impl AppState {
    /// The newest view; the lock is held only to clone the pointer.
    fn view(&self) -> Arc<HostView> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The web config in force now (the lock is held only to clone the pointer).
fn current(web: &SharedWebConfig) -> Arc<WebConfig> {
    web.read().unwrap_or_else(|p| p.into_inner()).clone()
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let started = Instant::now();
    let mut body = crate::metrics::render(&state.view());
    let previous = f64::from_bits(state.last_render.load(Ordering::Relaxed));
    body.push_str(&crate::metrics::render_scrape_duration(previous));
    body.push_str(&state.exporter.render());
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

/// The map's embedded script.
async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        page::SCRIPT,
    )
}

/// The map's embedded style sheet.
async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        page::STYLE,
    )
}

/// Basic auth and the configured headers, in front of every route (404s included).
async fn guard(State(web): State<SharedWebConfig>, request: Request, next: Next) -> Response {
    let config = current(&web);
    let credentials = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| auth::BasicAuth::credentials(value.as_bytes()));
    let mut response = match &config.auth {
        Some(auth) if !allowed(auth, credentials).await => {
            let mut refused = (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
            refused
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
            refused
        }
        _ => next.run(request).await,
    };
    for (name, value) in &config.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

/// Whether the request's credentials are good; a cache miss runs bcrypt on the blocking pool
/// so a slow hash never stalls the scrapes of others.
async fn allowed(auth: &Arc<auth::BasicAuth>, credentials: Option<(String, String)>) -> bool {
    let Some((user, password)) = credentials else {
        return false;
    };
    if auth.cached(&user, &password) {
        return true;
    }
    let auth = auth.clone();
    tokio::task::spawn_blocking(move || auth.verify(&user, &password))
        .await
        .unwrap_or(false)
}

/// The routes `options` asks for, behind [`guard`].
fn router(shared: Shared, web: SharedWebConfig, options: Options) -> Router {
    let mut app = Router::new().route("/metrics", get(metrics));
    if !options.metrics_only {
        app = app
            .route("/", get(index))
            .route(page::SCRIPT_PATH, get(script))
            .route(page::STYLE_PATH, get(style))
            .route("/status.json", get(status));
    }
    app.with_state(AppState {
        view: shared,
        last_render: Arc::new(AtomicU64::new(0)),
        exporter: Arc::default(),
    })
    .layer(axum::middleware::from_fn_with_state(web, guard))
}

/// Serves on `listener` (bound by the caller) until `shutdown` resolves, then gives open
/// connections [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    listener: TcpListener,
    shared: Shared,
    web: SharedWebConfig,
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let paths = if options.metrics_only {
        "/metrics only"
    } else {
        "/metrics, / and /status.json"
    };
    tracing::info!(%addr, web = %current(&web).summary, "serving {paths}");
    let app = router(shared, web.clone(), options);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(%addr, "accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let config = current(&web);
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Some(tls) = &config.tls else {
                return serve_io(stream, app, false, watcher).await;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_io(stream, app, config.http2, watcher).await,
                // Debug, not warn: a port scan or a plain-HTTP client would flood the log.
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after shutdown; dropping them");
    }
    Ok(())
}

/// One connection (plain or TLS): HTTP/1.1, and HTTP/2 if `http2` (TLS only, by ALPN).
async fn serve_io<I>(io: I, app: Router, http2: bool, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT);
    if !http2 {
        builder = builder.http1_only();
    }
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!("HTTP connection ended with an error: {e}");
    }
}

/// Binds `addr` for [`serve`]; the error names the address.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, BindError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| BindError { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| BindError { addr, source })?;
    Ok(listener)
}

/// The listen address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// The OS error (address in use, not permitted...).
    pub source: std::io::Error,
}
