//! HTTP GET for tests (the daemon's pages, Prometheus's API) through ureq: HTTP/1.1 with
//! chunked bodies and query encoding done by a maintained client, not by hand.

use std::time::Duration;

/// GETs `path` from `addr` ("127.0.0.1:PORT"); the body of a 200 response, or Err naming the
/// URL and what went wrong (another status comes with its body).
pub fn http_get(addr: &str, path: &str) -> Result<String, String> {
    http_get_query(addr, path, &[])
}

/// Like `http_get`, with `query` pairs percent-encoded into the URL's query string.
pub fn http_get_query(addr: &str, path: &str, query: &[(&str, &str)]) -> Result<String, String> {
    let url = format!("http://{addr}{path}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        // A 503 is an answer whose body says why: keep it for the error message.
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(&url)
        .query_pairs(query.iter().copied())
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("GET {url}: body: {e}"))?;
    if status != ureq::http::StatusCode::OK {
        return Err(format!("GET {url}: {status}: {body}"));
    }
    Ok(body)
}
