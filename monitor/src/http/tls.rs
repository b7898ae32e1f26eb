//! The rustls server config a web-config file's `tls_server_config` describes: certificate
//! chain and key (files or inline PEM), TLS versions, and client certificates verified
//! against `client_ca_file`. The ring provider: it builds with only a C compiler.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

/// PEM text: a file (named in errors) or inline in the web config.
#[derive(Debug, Clone)]
pub enum Pem {
    /// A file, already resolved against the web config's directory.
    File(PathBuf),
    /// The text itself (`cert:`, `key:`, `client_ca:`).
    Inline(String),
}

/// `client_auth_type`, of the values pinsight accepts (those that verify).
#[derive(Debug, Clone, PartialEq)]
pub enum ClientAuth {
    /// NoClientCert.
    None,
    /// VerifyClientCertIfGiven.
    VerifyIfGiven,
    /// RequireAndVerifyClientCert.
    Require,
}

/// `min_version` / `max_version`; rustls speaks TLS 1.2 and 1.3 only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS12.
    Tls12,
    /// TLS13.
    Tls13,
}

impl TlsVersion {
    /// The toolkit's spelling ("TLS12", "TLS13"); older versions are refused, not raised.
    pub fn parse(text: &str) -> Result<TlsVersion, String> {
        match text {
            "TLS12" => Ok(TlsVersion::Tls12),
            "TLS13" => Ok(TlsVersion::Tls13),
            "TLS10" | "TLS11" => Err(format!(
                "{text} is not supported (TLS 1.0 and 1.1 are broken; use TLS12 or TLS13)"
            )),
            other => Err(format!("{other:?} is not one of TLS12, TLS13")),
        }
    }
}

/// Everything of `tls_server_config` the server config is made of.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: Pem,
    /// The private key of the leaf.
    pub key: Pem,
    /// CAs client certificates must chain to.
    pub client_ca: Option<Pem>,
    /// Whether client certificates are asked for.
    pub client_auth: ClientAuth,
    /// Lowest version offered.
    pub min: TlsVersion,
    /// Highest version offered.
    pub max: TlsVersion,
    /// The server's cipher-suite order wins (prefer_server_cipher_suites).
    pub server_order: bool,
    /// Offer h2 by ALPN.
    pub http2: bool,
}

/// The rustls server config; a refusal carries the dotted key (`key(name)`) and the reason.
pub fn server_config(
    files: &TlsFiles,
    key: &dyn Fn(&str) -> String,
) -> Result<Arc<ServerConfig>, (String, String)> {
    let (cert_key, key_key, ca_key) = match (&files.cert, &files.key) {
        (Pem::File(_), Pem::File(_)) => ("cert_file", "key_file", "client_ca_file"),
        _ => ("cert", "key", "client_ca"),
    };
    let certs = certificates(&files.cert).map_err(|r| (key(cert_key), r))?;
    let private = private_key(&files.key).map_err(|r| (key(key_key), r))?;
    let provider = Arc::new(ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (files.min..=files.max).contains(v))
    .map(|(_, version)| version)
    .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| (key("min_version"), e.to_string()))?;
    let builder = match (&files.client_auth, &files.client_ca) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca)) => {
            let ca_key = match ca {
                Pem::File(_) => "client_ca_file",
                Pem::Inline(_) => ca_key,
            };
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca).map_err(|r| (key(ca_key), r))? {
                roots
                    .add(cert)
                    .map_err(|e| (key(ca_key), format!("not a usable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match auth {
                ClientAuth::VerifyIfGiven => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier.build().map_err(|e| (key(ca_key), e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, private)
        .map_err(|e| (key(key_key), format!("does not fit the certificate: {e}")))?;
    config.ignore_client_order = files.server_order;
    config.alpn_protocols = if files.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// The PEM text of `pem`, the file's read error naming it.
fn read(pem: &Pem) -> Result<(Vec<u8>, String), String> {
    match pem {
        Pem::File(path) => std::fs::read(path)
            .map(|bytes| (bytes, path.display().to_string()))
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
        Pem::Inline(text) => Ok((text.as_bytes().to_vec(), "the inline PEM".to_string())),
    }
}

/// Every certificate in `pem`; none is an error.
fn certificates(pem: &Pem) -> Result<Vec<CertificateDer<'static>>, String> {
    let (bytes, name) = read(pem)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{name}: bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{name}: no CERTIFICATE in it"));
    }
    Ok(certs)
}

/// The one private key in `pem` (PKCS#8, PKCS#1 or SEC1).
fn private_key(pem: &Pem) -> Result<PrivateKeyDer<'static>, String> {
    let (bytes, name) = read(pem)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| format!("{name}: no usable private key: {e}"))
}
