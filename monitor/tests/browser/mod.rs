//! Headless Chromium driven over WebDriver: `chromedriver` (Debian's chromium-driver) on a
//! loopback port, spoken to with ureq (the daemon's own HTTP client: the protocol is a few
//! JSON POSTs, so no WebDriver crate). The browser and the driver are stopped, by pid, on
//! drop; each session has a fresh profile directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// Debian's paths (scripts/setup.sh installs chromium and chromium-driver).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Where a test keeps its screenshots: target/<name>/.
pub fn artifacts(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join(name);
    std::fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir
}

/// One browser session.
pub struct Browser {
    driver: Child,
    base: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width` x `height`; fails (not skips)
    /// when either is missing.
    pub fn start(width: u32, height: u32) -> Browser {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: run `sudo scripts/setup.sh` (installs chromium, chromium-driver)"
            );
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
            l.local_addr().expect("its address").port()
        };
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(60)))
            .proxy(None)
            .http_status_as_error(false)
            .build()
            .into();
        let profile = tempfile::Builder::new()
            .prefix("pinsight-chromium-")
            .tempdir()
            .expect("a profile directory");
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            agent,
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while browser.get("/status").is_none() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ]
        .map(String::from)
        .into_iter()
        .chain([
            format!("--user-data-dir={}", browser._profile.path().display()),
            format!("--window-size={width},{height}"),
        ])
        .collect::<Vec<_>>();
        let session = browser.post(
            "/session",
            json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
                "goog:chromeOptions": {"binary": CHROMIUM, "args": args}}}}),
        );
        let id = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {session}"));
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    fn get(&self, path: &str) -> Option<Value> {
        let mut r = self.agent.get(format!("{}{path}", self.base)).call().ok()?;
        let body = r.body_mut().read_to_string().ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (r.status() == 200).then(|| v["value"].clone())
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let mut r = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .send(body.to_string())
            .unwrap_or_else(|e| panic!("WebDriver POST {path}: {e}"));
        let text = r.body_mut().read_to_string().expect("a WebDriver answer");
        let v: Value = serde_json::from_str(&text).expect("WebDriver JSON");
        assert_eq!(r.status(), 200, "WebDriver POST {path}: {text}");
        v["value"].clone()
    }

    /// Opens `url`.
    pub fn open(&self, url: &str) {
        self.post("/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page, returns its value.
    pub fn eval(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": args}))
    }

    /// Runs a DevTools protocol command (chromedriver's goog/cdp/execute).
    pub fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.post("/goog/cdp/execute", json!({"cmd": cmd, "params": params}))
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) {
        let png = self.get("/screenshot").expect("a screenshot");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 text"))
            .expect("base64 PNG");
        std::fs::write(path, bytes).expect("write the screenshot");
    }

    /// Polls `f` every 100 ms until it gives a value, for up to `timeout`.
    pub fn wait<T>(&self, timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session, so chromedriver stops its Chromium; then the driver itself.
        let _ = self.agent.delete(&self.base).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
