//! The endpoint locked down with `--web.config.file`: certificates made by `openssl` for this
//! run, a real client (curl) and a real Prometheus (Debian's package) scraping over TLS with
//! basic auth; 401 without and with wrong credentials; plain HTTP to the TLS port fails;
//! client certificates; `--web.metrics-only`; a port already taken stops the daemon before
//! it loads a probe; `pinsight check` validates the file. Loopback only.

mod common;
// Shared with the end-to-end test, which uses more of it.
#[allow(dead_code)]
#[path = "prometheus_e2e/server.rs"]
mod server;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{fixture, Daemon};
use common::{http_get, pinsight, require_host, wait_for};
use server::Prometheus;

const USER: &str = "prometheus";
const PASSWORD: &str = "correct horse battery staple";

/// A temporary directory of certificates, removed on drop: a CA, a server certificate for
/// 127.0.0.1 signed by it, and a client certificate signed by it.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new(tag: &str) -> Certs {
        let dir =
            std::env::temp_dir().join(format!("pinsight-web-tls-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the certificate directory");
        let certs = Certs { dir };
        let ca = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                  -keyout ca.key -out ca.pem -days 2";
        certs.openssl(ca, &["-subj", "/CN=pinsight test CA"]);
        certs.leaf(
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        certs.leaf("client", "extendedKeyUsage=clientAuth\n");
        certs
    }

    /// NAME.key and NAME.pem, signed by the CA, with `extensions`.
    fn leaf(&self, name: &str, extensions: &str) {
        let ext = format!("{name}.ext");
        std::fs::write(
            self.path(&ext),
            format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n{extensions}"),
        )
        .expect("write the extensions file");
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subject = format!("/CN=pinsight test {name}");
        let req = "req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        self.openssl(req, &["-keyout", &key, "-out", &csr, "-subj", &subject]);
        let sign = "x509 -req -CA ca.pem -CAkey ca.key -CAcreateserial -days 2";
        self.openssl(sign, &["-in", &csr, "-out", &pem, "-extfile", &ext]);
    }

    /// Runs openssl with the words of `fixed` then `args` (which may hold spaces).
    fn openssl(&self, fixed: &str, args: &[&str]) {
        let args: Vec<&str> = fixed
            .split_whitespace()
            .chain(args.iter().copied())
            .collect();
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(&self.dir)
            .output()
            .expect("run openssl (Debian package openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A web config in this directory: TLS with the server certificate, `extra` appended.
    fn web_config(&self, extra: &str) -> PathBuf {
        let file = self.path("web.yml");
        std::fs::write(
            &file,
            format!("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n{extra}"),
        )
        .expect("write web.yml");
        file
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// basic_auth_users with USER's bcrypt hash (cost 10, as `htpasswd -nBC 10` makes it).
fn users() -> String {
    let hash = bcrypt::hash(PASSWORD, 10).expect("bcrypt a password");
    format!("basic_auth_users:\n  {USER}: '{hash}'\n")
}

/// What curl got: its exit success, the response head and body (`-i`), and its stderr.
struct Curl {
    ok: bool,
    out: String,
    err: String,
}

impl Curl {
    fn status(&self) -> Option<u16> {
        self.out.split_whitespace().nth(1)?.parse().ok()
    }
}

fn curl(args: &[&str]) -> Curl {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl (scripts/setup.sh installs it)");
    Curl {
        ok: out.status.success(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A daemon with `--web.config.file web` (and `extra` flags), ready once curl can scrape it
/// with `ready_args`.
fn tls_daemon(web: &Path, extra: &[&str], ready_args: &[&str]) -> Daemon {
    let mut args = vec!["--web.config.file", web.to_str().expect("UTF-8 temp path")];
    args.extend_from_slice(extra);
    let mut daemon = Daemon::spawn(&fixture("two-socket-gpu"), "tick_seconds = 0.25\n", &args);
    let url = format!("https://{}/metrics", daemon.addr);
    daemon.wait_until("the daemon to serve /metrics over TLS", || {
        let mut args = ready_args.to_vec();
        args.push(&url);
        curl(&args).out.contains("pinsight_build_info")
    });
    daemon
}

#[test]
fn curl_and_prometheus_scrape_over_tls_with_basic_auth_and_nothing_else_gets_in() {
    require_host();
    let certs = Certs::new("auth");
    let web = certs.web_config(&users());
    let ca = certs.path("ca.pem");
    let ca = ca.to_str().expect("UTF-8 temp path");
    let auth = format!("{USER}:{PASSWORD}");
    let daemon = tls_daemon(&web, &[], &["--cacert", ca, "-u", &auth]);
    let base = format!("https://{}", daemon.addr);

    for path in ["/metrics", "/", "/status.json"] {
        let url = format!("{base}{path}");
        let anonymous = curl(&["--cacert", ca, &url]);
        assert_eq!(
            anonymous.status(),
            Some(401),
            "{path} without credentials: {}",
            anonymous.out
        );
        assert!(
            anonymous
                .out
                .to_ascii_lowercase()
                .contains("www-authenticate: basic realm=\"pinsight\""),
            "{path}: the 401 carries the challenge: {}",
            anonymous.out
        );
        let wrong = curl(&["--cacert", ca, "-u", &format!("{USER}:wrong"), &url]);
        assert_eq!(
            wrong.status(),
            Some(401),
            "{path} with a wrong password: {}",
            wrong.out
        );
        let stranger = curl(&["--cacert", ca, "-u", &format!("nobody:{PASSWORD}"), &url]);
        assert_eq!(
            stranger.status(),
            Some(401),
            "{path} as an unknown user: {}",
            stranger.out
        );
        let good = curl(&["--cacert", ca, "-u", &auth, &url]);
        assert_eq!(
            good.status(),
            Some(200),
            "{path} with credentials: {}{}",
            good.out,
            good.err
        );
    }

    // http2 defaults to on (the toolkit's default): ALPN offers h2.
    let h2 = curl(&[
        "--http2",
        "--cacert",
        ca,
        "-u",
        &auth,
        &format!("{base}/metrics"),
    ]);
    assert!(
        h2.out.starts_with("HTTP/2 200"),
        "HTTP/2 over TLS: {}{}",
        h2.out,
        h2.err
    );

    // Plain HTTP to the TLS port: the handshake fails and no response comes back.
    let plain = http_get(&daemon.addr, "/metrics");
    assert!(plain.is_err(), "plain HTTP got an answer: {plain:?}");
    let plain = curl(&["-u", &auth, &format!("http://{}/metrics", daemon.addr)]);
    assert!(
        !plain.ok && plain.status().is_none(),
        "curl over http: {}",
        plain.out
    );
    // An untrusted server certificate is refused by the client.
    let untrusted = curl(&["-u", &auth, &format!("{base}/metrics")]);
    assert!(
        !untrusted.ok,
        "curl without --cacert trusted the test CA: {}",
        untrusted.out
    );

    let job = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {ca}\n    basic_auth:\n      \
         username: {USER}\n      password: '{PASSWORD}'\n"
    );
    let prometheus = Prometheus::start_with(&daemon.addr, "groups: []\n", &job);
    wait_for(
        Duration::from_secs(30),
        "Prometheus to scrape with up == 1",
        || {
            let result = prometheus.query("up{job=\"pinsight\"}").ok()?;
            let value = result.first()?["value"][1].as_str()?.to_string();
            (value == "1").then_some(())
        },
    );
    let scraped = prometheus
        .query("pinsight_build_info")
        .unwrap_or_else(|e| panic!("{e}\n{}", prometheus.log_tail()));
    assert!(
        !scraped.is_empty(),
        "Prometheus stored no pinsight_build_info"
    );
}

#[test]
fn client_certificates_are_required_when_the_config_says_so() {
    require_host();
    let certs = Certs::new("mtls");
    let web = certs
        .web_config("  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n");
    let [ca, cert, key] = ["ca.pem", "client.pem", "client.key"].map(|f| certs.path(f));
    let [ca, cert, key] = [&ca, &cert, &key].map(|p| p.to_str().expect("UTF-8 temp path"));
    let with_cert = ["--cacert", ca, "--cert", cert, "--key", key];
    let daemon = tls_daemon(&web, &[], &with_cert);
    let url = format!("https://{}/metrics", daemon.addr);
    let without = curl(&["--cacert", ca, &url]);
    assert!(
        !without.ok && without.status().is_none(),
        "served without a client certificate: {}",
        without.out
    );
    // The server's own certificate is signed by the CA too but is not for client auth.
    let wrong_use = curl(&[
        "--cacert",
        ca,
        "--cert",
        &certs.path("server.pem").display().to_string(),
        "--key",
        &certs.path("server.key").display().to_string(),
        &url,
    ]);
    assert!(
        !wrong_use.ok,
        "a serverAuth-only certificate got in: {}",
        wrong_use.out
    );
    let mut args = with_cert.to_vec();
    args.push(&url);
    assert_eq!(curl(&args).status(), Some(200));
}

#[test]
fn metrics_only_answers_404_for_the_page_and_status_json() {
    require_host();
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        "tick_seconds = 0.25\n",
        &["--web.metrics-only"],
    );
    assert!(daemon.metrics().contains("pinsight_build_info"));
    for path in ["/", "/status.json"] {
        let got = curl(&[&format!("http://{}{path}", daemon.addr)]);
        assert_eq!(got.status(), Some(404), "{path}: {}", got.out);
    }
}

#[test]
fn a_taken_port_stops_the_daemon_before_any_probe_is_loaded() {
    require_host();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = taken.local_addr().expect("local_addr").to_string();
    let log =
        std::env::temp_dir().join(format!("pinsight-web-tls-{}-bind.log", std::process::id()));
    let stderr = std::fs::File::create(&log).expect("create the log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pinsight"))
        .args(["run", "--listen", &addr, "--sysfs-root"])
        .arg(fixture("two-socket-gpu"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn pinsight run");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for pinsight run") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            common::stop_child(&mut child);
            panic!("pinsight run kept running on a taken port");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(!status.success(), "exit status {status}: {text}");
    assert!(
        text.contains(&format!("cannot listen on {addr}")),
        "names the address: {text}"
    );
    assert!(
        !text.contains("probe=") && !text.contains("eBPF"),
        "probes were loaded before the bind failed: {text}"
    );
    drop(taken);
}

#[test]
fn check_validates_the_web_config_and_names_the_file_and_the_problem() {
    let certs = Certs::new("check");
    let sysfs = fixture("two-socket-gpu");
    let sysfs = sysfs.to_str().expect("UTF-8 fixture path");
    let good = certs.web_config(&users());
    let good = good.to_str().expect("UTF-8 temp path");
    let (ok, text) = pinsight(&["check", "--sysfs-root", sysfs, "--web.config.file", good]);
    assert!(ok, "{text}");
    assert!(
        text.contains("TLS") && text.contains("basic auth (1 users)"),
        "{text}"
    );
    let bad = certs.path("bad.yml");
    std::fs::write(
        &bad,
        "tls_server_config:\n  cert_file: missing.pem\n  key_file: server.key\n",
    )
    .expect("write bad.yml");
    let bad = bad.to_str().expect("UTF-8 temp path");
    let (ok, text) = pinsight(&["check", "--sysfs-root", sysfs, "--web.config.file", bad]);
    assert!(!ok, "a missing certificate passed the check: {text}");
    assert!(
        text.contains(bad)
            && text.contains("tls_server_config.cert_file")
            && text.contains("missing.pem"),
        "{text}"
    );
}
