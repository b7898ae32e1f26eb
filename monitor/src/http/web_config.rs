//! `--web.config.file`: TLS, basic auth and response headers in the Prometheus
//! exporter-toolkit's YAML format, so the file an operator wrote for node_exporter works here.
//! Relative paths are resolved against the file's directory, as the toolkit does. Keys the
//! toolkit knows but pinsight does not implement are refused by name rather than ignored: a
//! security setting silently dropped is worse than a daemon that does not start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::auth::BasicAuth;
use super::tls::{self, ClientAuth, TlsFiles, TlsVersion};

/// A web-config file that cannot be used, naming the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// The file could not be read.
    #[error("cannot read web config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// YAML syntax, an unknown key or a wrongly typed value.
    #[error("web config {}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The YAML parser's message (it names the key and line).
        reason: String,
    },
    /// A value that cannot be used.
    #[error("web config {}: {key}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, dotted ("tls_server_config.cert_file").
        key: String,
        /// Why it is refused.
        reason: String,
    },
}

/// The file as written; every section and key of the toolkit's format is listed so unknown
/// keys are refused by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsSection>,
    #[serde(default)]
    http_server_config: HttpSection,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    /// Known to the toolkit, not implemented here: refused if set.
    rate_limit: Option<serde_norway::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    cert: Option<String>,
    key: Option<String>,
    client_ca_file: Option<PathBuf>,
    client_ca: Option<String>,
    client_auth_type: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    cipher_suites: Vec<String>,
    #[serde(default)]
    curve_preferences: Vec<String>,
    #[serde(default)]
    client_allowed_sans: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// What the endpoint enforces, ready to use: built once per load (and per reload), shared
/// read-only by every connection.
#[derive(Debug, Default)]
pub struct WebConfig {
    /// The rustls server config; None serves plain HTTP.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Users allowed in; None lets every request through.
    pub auth: Option<Arc<BasicAuth>>,
    /// Headers added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Offer HTTP/2 over TLS (ALPN h2); the toolkit's default is on.
    pub http2: bool,
    /// One line for logs and `pinsight check`: what is on.
    pub summary: String,
}

/// Headers the toolkit allows, with the values it accepts (None: any value).
const HEADERS: [(&str, Option<&[&str]>); 5] = [
    ("Content-Security-Policy", None),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-XSS-Protection", None),
    ("Strict-Transport-Security", None),
];

impl WebConfig {
    /// No file: plain HTTP, no authentication, no extra headers.
    pub fn plain() -> WebConfig {
        WebConfig {
            summary: "plain HTTP, no authentication".into(),
            ..WebConfig::default()
        }
    }

    /// Reads, parses and checks `path`: certificates and keys are loaded and matched, every
    /// bcrypt hash is parsed, so a file that loads is a file that serves.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// [`WebConfig::load`] on text already read; `path` names it in errors and anchors
    /// relative file names.
    pub fn parse(path: &Path, text: &str) -> Result<WebConfig, WebConfigError> {
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_norway::from_str(text).map_err(|e| WebConfigError::Parse {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?
        };
        let invalid = |key: &str, reason: String| WebConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        if file.rate_limit.is_some() {
            return Err(invalid("rate_limit", "not supported by pinsight".into()));
        }
        let dir = path.parent().unwrap_or(Path::new(""));
        let tls = file
            .tls_server_config
            .as_ref()
            .map(|section| tls_config(section, dir, file.http_server_config.http2))
            .transpose()
            .map_err(|(key, reason)| invalid(&key, reason))?;
        if tls.is_none() && file.http_server_config.http2 == Some(true) {
            tracing::debug!("web config: http2 needs TLS; serving HTTP/1.1");
        }
        let auth = if file.basic_auth_users.is_empty() {
            None
        } else {
            let users = file.basic_auth_users.iter();
            Some(Arc::new(BasicAuth::new(users).map_err(
                |(user, reason)| invalid(&format!("basic_auth_users.{user}"), reason),
            )?))
        };
        if auth.is_some() && tls.is_none() {
            tracing::warn!(
                file = %path.display(),
                "basic_auth_users without tls_server_config: passwords cross the network in clear"
            );
        }
        let headers = headers(&file.http_server_config.headers).map_err(|(name, reason)| {
            invalid(&format!("http_server_config.headers.{name}"), reason)
        })?;
        let summary = summary(&file, tls.is_some());
        Ok(WebConfig {
            tls,
            auth,
            headers,
            http2: file.http_server_config.http2.unwrap_or(true),
            summary,
        })
    }
}

/// Dotted key and reason of a refused value.
type Refusal = (String, String);

/// The TLS section checked and turned into a rustls config (files read relative to `dir`).
fn tls_config(
    section: &TlsSection,
    dir: &Path,
    http2: Option<bool>,
) -> Result<Arc<tokio_rustls::rustls::ServerConfig>, Refusal> {
    let key = |k: &str| format!("tls_server_config.{k}");
    for (name, list) in [
        ("cipher_suites", &section.cipher_suites),
        ("curve_preferences", &section.curve_preferences),
        ("client_allowed_sans", &section.client_allowed_sans),
    ] {
        if !list.is_empty() {
            return Err((
                key(name),
                "not supported by pinsight (rustls offers only its safe defaults)".into(),
            ));
        }
    }
    let pem =
        |file: &Option<PathBuf>, inline: &Option<String>, k: &str, ki: &str| match (file, inline) {
            (Some(_), Some(_)) => Err((key(k), format!("set either {k} or {ki}, not both"))),
            (Some(f), None) => Ok(Some(tls::Pem::File(dir.join(f)))),
            (None, Some(text)) => Ok(Some(tls::Pem::Inline(text.clone()))),
            (None, None) => Ok(None),
        };
    let files = {
        let cert = pem(&section.cert_file, &section.cert, "cert_file", "cert")?
            .ok_or_else(|| (key("cert_file"), "required (or cert inline)".to_string()))?;
        let private = pem(&section.key_file, &section.key, "key_file", "key")?
            .ok_or_else(|| (key("key_file"), "required (or key inline)".to_string()))?;
        let client_ca = pem(
            &section.client_ca_file,
            &section.client_ca,
            "client_ca_file",
            "client_ca",
        )?;
        let client_auth = match section.client_auth_type.as_deref().unwrap_or("") {
            "" | "NoClientCert" => ClientAuth::None,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::Require,
            "RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert" => {
                return Err((
                    key("client_auth_type"),
                    "accepts client certificates without verifying them; not supported \
                     (use RequireAndVerifyClientCert)"
                        .into(),
                ))
            }
            other => {
                return Err((
                    key("client_auth_type"),
                    format!(
                        "{other:?} is not one of NoClientCert, VerifyClientCertIfGiven, \
                         RequireAndVerifyClientCert"
                    ),
                ))
            }
        };
        match (&client_auth, &client_ca) {
            (ClientAuth::None, Some(_)) => Err((
                key("client_ca_file"),
                "set, but client_auth_type is NoClientCert".to_string(),
            )),
            (ClientAuth::VerifyIfGiven | ClientAuth::Require, None) => Err((
                key("client_auth_type"),
                "verifies client certificates: needs client_ca_file".to_string(),
            )),
            _ => Ok(()),
        }?;
        let version = |k: &str, v: &Option<String>, default| match v.as_deref() {
            None => Ok(default),
            Some(text) => TlsVersion::parse(text).map_err(|reason| (key(k), reason)),
        };
        let min = version("min_version", &section.min_version, TlsVersion::Tls12)?;
        let max = version("max_version", &section.max_version, TlsVersion::Tls13)?;
        if min > max {
            return Err((key("min_version"), "is above max_version".to_string()));
        }
        TlsFiles {
            cert,
            key: private,
            client_ca,
            client_auth,
            min,
            max,
            server_order: section.prefer_server_cipher_suites.unwrap_or(true),
            http2: http2.unwrap_or(true),
        }
    };
    tls::server_config(&files, &key)
}

/// The `headers` map checked against the toolkit's list; blank values are left unset.
fn headers(map: &BTreeMap<String, String>) -> Result<Vec<(HeaderName, HeaderValue)>, Refusal> {
    let mut out = Vec::new();
    for (name, value) in map {
        let Some((canonical, allowed)) = HEADERS
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
        else {
            let known: Vec<&str> = HEADERS.iter().map(|(n, _)| *n).collect();
            return Err((
                name.clone(),
                format!("not a header pinsight sets (one of {})", known.join(", ")),
            ));
        };
        if value.trim().is_empty() {
            continue;
        }
        if let Some(allowed) = allowed {
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(value)) {
                return Err((
                    name.clone(),
                    format!("{value:?} is not one of {}", allowed.join(", ")),
                ));
            }
        }
        let value = HeaderValue::from_str(value).map_err(|e| {
            (
                name.clone(),
                format!("{value:?} is not a header value: {e}"),
            )
        })?;
        // Invariant: the names in HEADERS are valid header names.
        let name = HeaderName::from_bytes(canonical.to_ascii_lowercase().as_bytes())
            .expect("HEADERS holds valid header names");
        out.push((name, value));
    }
    Ok(out)
}

fn summary(file: &File, tls: bool) -> String {
    let mut parts = vec![if tls { "TLS" } else { "plain HTTP" }.to_string()];
    if let Some(section) = &file.tls_server_config {
        let client = section
            .client_auth_type
            .as_deref()
            .unwrap_or("NoClientCert");
        parts.push(format!("client_auth_type {client}"));
    }
    parts.push(match file.basic_auth_users.len() {
        0 => "no basic auth".to_string(),
        n => format!("basic auth ({n} users)"),
    });
    if !file.http_server_config.headers.is_empty() {
        parts.push(format!("{} headers", file.http_server_config.headers.len()));
    }
    parts.join(", ")
}

#[cfg(test)]
#[path = "web_config_tests.rs"]
mod tests;
