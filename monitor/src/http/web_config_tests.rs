//! The web-config parser against good and bad files. The certificate is a throw-away
//! self-signed P-256 one for localhost, valid until 2126, used by nothing else.

use std::path::PathBuf;

use super::*;

const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBmjCCAUGgAwIBAgIUW4lC+2dFTr+PTyFyp4omcvGJpHwwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwMTIxNDE1OFoYDzIxMjYxMTA3
MjE0MTU4WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAATPL7/2rFPEj3uTFMD6ua6A4fBIPmMfpwbejtctGwksE/PLsOI8O9ys
+WeP6mnCGhk2GsgQuNVAvSHAJkFQmfDWo28wbTAdBgNVHQ4EFgQUWaczDkfWnR8l
2GM9Wa7YYcb1C/UwHwYDVR0jBBgwFoAUWaczDkfWnR8l2GM9Wa7YYcb1C/UwDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCgYIKoZI
zj0EAwIDRwAwRAIgUPqtA/Q2X+lZl8GOK8LwiULksJ9aJB9KwUnSa56hGEYCIBPt
iCzua6Z59epxo4PlXlgXFV7LfJ3bcp4MG1cuZKzT
-----END CERTIFICATE-----
";
const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgG8cQVOkkoxS64AD4
R97QrtnRpmLZ/mg2ydlh8SZWZkChRANCAATPL7/2rFPEj3uTFMD6ua6A4fBIPmMf
pwbejtctGwksE/PLsOI8O9ys+WeP6mnCGhk2GsgQuNVAvSHAJkFQmfDW
-----END PRIVATE KEY-----
";

/// A web.yml in a temporary directory of its own, beside cert.pem and key.pem; the directory
/// goes with it.
struct WebFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl std::ops::Deref for WebFile {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.path
    }
}

/// cert.pem, key.pem and `web.yml` = `yaml` in a directory of their own.
fn dir_with(name: &str, yaml: &str) -> WebFile {
    let dir = tempfile::Builder::new()
        .prefix(&format!("pinsight-web-config-{name}-"))
        .tempdir()
        .unwrap();
    std::fs::write(dir.path().join("cert.pem"), CERT).unwrap();
    std::fs::write(dir.path().join("key.pem"), KEY).unwrap();
    let path = dir.path().join("web.yml");
    std::fs::write(&path, yaml).unwrap();
    WebFile { _dir: dir, path }
}

fn error(name: &str, yaml: &str) -> String {
    let file = dir_with(name, yaml);
    let err = WebConfig::load(&file).unwrap_err().to_string();
    assert!(
        err.contains(&file.display().to_string()),
        "names the file: {err}"
    );
    err
}

fn hash() -> String {
    bcrypt::hash("s3cret", 4).unwrap()
}

#[test]
fn a_toolkit_file_loads_with_relative_paths_beside_it() {
    let yaml = format!(
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  min_version: TLS13\n\
         http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    \
         X-Content-Type-Options: nosniff\n    Content-Security-Policy: \"\"\n\
         basic_auth_users:\n  prometheus: '{}'\n",
        hash()
    );
    let config = WebConfig::load(&dir_with("good", &yaml)).unwrap();
    let tls = config.tls.as_ref().expect("TLS on");
    assert_eq!(tls.alpn_protocols, [b"http/1.1".to_vec()], "http2: false");
    assert!(config.auth.is_some() && !config.http2);
    // The blank Content-Security-Policy is left unset.
    let names: Vec<&str> = config.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["x-content-type-options", "x-frame-options"]);
    assert_eq!(
        config.summary,
        "TLS, client_auth_type NoClientCert, basic auth (1 users), 3 headers"
    );
}

#[test]
fn an_empty_file_is_plain_http_and_inline_pem_works() {
    let config = WebConfig::load(&dir_with("empty", "")).unwrap();
    assert!(config.tls.is_none() && config.auth.is_none());
    let indent = |pem: &str| pem.replace('\n', "\n    ");
    let yaml = format!(
        "tls_server_config:\n  cert: |\n    {}\n  key: |\n    {}\n",
        indent(CERT),
        indent(KEY)
    );
    assert!(WebConfig::load(&dir_with("inline", &yaml))
        .unwrap()
        .tls
        .is_some());
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let err = error(
        "unknown",
        "tls_server_config:\n  cert_file: cert.pem\n  key_fil: key.pem\n",
    );
    assert!(err.contains("unknown field `key_fil`"), "{err}");
    let err = error("unknown-top", "basic_auth_user:\n  a: b\n");
    assert!(err.contains("unknown field `basic_auth_user`"), "{err}");
    let err = error(
        "header",
        "http_server_config:\n  headers:\n    X-Powered-By: me\n",
    );
    assert!(
        err.contains("http_server_config.headers.X-Powered-By: not a header"),
        "{err}"
    );
    let err = error("rate", "rate_limit:\n  interval: 1s\n  burst: 2\n");
    assert!(err.contains("rate_limit: not supported"), "{err}");
    let err = error(
        "ciphers",
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  \
         cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
    );
    assert!(
        err.contains("tls_server_config.cipher_suites: not supported"),
        "{err}"
    );
}

#[test]
fn a_missing_or_bad_certificate_file_is_named() {
    let err = error(
        "missing",
        "tls_server_config:\n  cert_file: nope.pem\n  key_file: key.pem\n",
    );
    assert!(
        err.contains("tls_server_config.cert_file: cannot read"),
        "{err}"
    );
    assert!(err.contains("nope.pem"), "{err}");
    let err = error("nokey", "tls_server_config:\n  cert_file: cert.pem\n");
    assert!(
        err.contains("tls_server_config.key_file: required"),
        "{err}"
    );
    let err = error(
        "swapped",
        "tls_server_config:\n  cert_file: key.pem\n  key_file: cert.pem\n",
    );
    assert!(err.contains("no CERTIFICATE"), "{err}");
}

#[test]
fn a_bad_bcrypt_hash_names_its_user() {
    let err = error(
        "bcrypt",
        "basic_auth_users:\n  prometheus: s3cret-in-clear\n",
    );
    assert!(
        err.contains("basic_auth_users.prometheus: not a bcrypt hash"),
        "{err}"
    );
}

#[test]
fn tls_versions_and_client_auth_are_checked() {
    let tls = |extra: &str| {
        format!("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n{extra}")
    };
    let err = error("tls10", &tls("  min_version: TLS10\n"));
    assert!(err.contains("min_version: TLS10 is not supported"), "{err}");
    let err = error(
        "order",
        &tls("  min_version: TLS13\n  max_version: TLS12\n"),
    );
    assert!(err.contains("is above max_version"), "{err}");
    let err = error(
        "noca",
        &tls("  client_auth_type: RequireAndVerifyClientCert\n"),
    );
    assert!(err.contains("needs client_ca_file"), "{err}");
    let err = error("any", &tls("  client_auth_type: RequireAnyClientCert\n"));
    assert!(err.contains("without verifying"), "{err}");
    let err = error("nopolicy", &tls("  client_ca_file: cert.pem\n"));
    assert!(err.contains("client_auth_type is NoClientCert"), "{err}");
    let ok = tls("  client_ca_file: cert.pem\n  client_auth_type: RequireAndVerifyClientCert\n");
    assert!(WebConfig::load(&dir_with("mtls", &ok)).is_ok());
}
