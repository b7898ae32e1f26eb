//! The client side of `pinsight status` and `pinsight plan`: /status.json from a running
//! daemon, over ureq (chunked and length-delimited bodies alike), with a timeout.

use std::time::Duration;

use crate::view::HostView;

/// How long a whole request may take: the daemon answers from memory, so a slow answer
/// means a wedged or wrong peer, not a busy one.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What to try when the daemon cannot be reached.
const HINT: &str = "is `pinsight run` running? use --addr";

/// /status.json could not be had from `addr`; every variant names the address.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No connection, a timeout, or a broken HTTP exchange.
    #[error("cannot reach the pinsight daemon at {addr}: {source} ({HINT})")]
    Unreachable {
        /// host:port asked.
        addr: String,
        /// ureq's error (connection refused, timeout, protocol error).
        source: Box<ureq::Error>,
    },
    /// The peer answered, but not with 200.
    #[error(
        "the pinsight daemon at {addr} answered HTTP {status} for /status.json: {body} ({HINT})"
    )]
    Status {
        /// host:port asked.
        addr: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The answer is not a pinsight /status.json (another program on the port, or another
    /// pinsight version).
    #[error("the answer of {addr} is not a pinsight /status.json: {source} ({HINT})")]
    Json {
        /// host:port asked.
        addr: String,
        /// serde's message (names the field).
        source: serde_json::Error,
    },
}

/// Fetches /status.json from a running daemon at `addr` ("host:port").
pub fn fetch_status(addr: &str) -> Result<HostView, FetchError> {
    let unreachable = |source| FetchError::Unreachable {
        addr: addr.to_string(),
        source: Box::new(source),
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        // The daemon is on this host or next to it: an HTTP_PROXY meant for the outside
        // world must not stand between them.
        .proxy(None)
        // A non-200 answer's body says why (e.g. "libvirt down"): read it, do not drop it.
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(format!("http://{addr}/status.json"))
        .call()
        .map_err(unreachable)?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().map_err(unreachable)?;
    if status != 200 {
        return Err(FetchError::Status {
            addr: addr.to_string(),
            status,
            body: body
                .chars()
                .take(200)
                .collect::<String>()
                .trim()
                .to_string(),
        });
    }
    serde_json::from_str(&body).map_err(|source| FetchError::Json {
        addr: addr.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::net::TcpListener;

    /// A one-shot server on loopback that answers `response` to the first request.
    fn serve_once(response: String) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = conn.read(&mut request);
            conn.write_all(response.as_bytes()).unwrap();
        });
        addr
    }

    #[test]
    fn reads_a_chunked_status() {
        let view = HostView {
            version: "1".into(),
            libvirt_up: true,
            ..Default::default()
        };
        let json = serde_json::to_string(&view).unwrap();
        let mut response =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                .to_string();
        for chunk in json.as_bytes().chunks(10) {
            let chunk = std::str::from_utf8(chunk).unwrap();
            response += &format!("{:x}\r\n{chunk}\r\n", chunk.len());
        }
        response += "0\r\n\r\n";
        let addr = serve_once(response);
        let status = fetch_status(&addr).unwrap();
        assert_eq!(status.version, "1");
        assert!(status.libvirt_up);
    }

    #[test]
    fn errors_name_the_address_and_the_way_out() {
        let addr = serve_once(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndown"
                .into(),
        );
        let err = fetch_status(&addr).unwrap_err().to_string();
        assert!(
            err.contains(&addr) && err.contains("503") && err.contains("down"),
            "{err}"
        );
        let addr = serve_once(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".into(),
        );
        let err = fetch_status(&addr).unwrap_err().to_string();
        assert!(err.contains("not a pinsight /status.json"), "{err}");
        // A port nobody listens on: bind one, then free it.
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = fetch_status(&free.to_string()).unwrap_err().to_string();
        assert!(
            err.contains(&free.to_string())
                && err.contains("is `pinsight run` running? use --addr"),
            "{err}"
        );
    }
}
