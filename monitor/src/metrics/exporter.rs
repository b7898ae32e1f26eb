//! What every Prometheus exporter exports about itself: the standard `process_*` families
//! (CPU seconds, resident and virtual memory, open and maximum fds, start time; the
//! prometheus crate's process collector, from /proc/self), and the build's commit and rustc
//! version that `pinsight_build_info` (in [`super::render`]) carries.
//!
//! The process families describe the daemon, not the host view, so the HTTP side renders
//! them next to [`super::render`]; the golden file of the view's families does not see them.

use prometheus::core::Collector;
use prometheus::process_collector::ProcessCollector;
use prometheus::{Encoder, TextEncoder};

/// The git commit the binary was built from (build.rs; "unknown" outside a git checkout).
pub const COMMIT: &str = env!("PINSIGHT_COMMIT");
/// `rustc --version` of the compiler that built the binary (build.rs).
pub const RUSTC_VERSION: &str = env!("PINSIGHT_RUSTC_VERSION");

/// The daemon's own families; one per endpoint, reused by every scrape.
pub struct Exporter {
    process: ProcessCollector,
}

impl Default for Exporter {
    fn default() -> Self {
        Exporter {
            process: ProcessCollector::for_self(),
        }
    }
}

impl Exporter {
    /// The `process_*` families in the Prometheus text format.
    pub fn render(&self) -> String {
        let families = self.process.collect();
        let mut out = Vec::new();
        // Encoding well-formed families into a Vec cannot fail; an error would be a bug.
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!("encoding the process metrics failed: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exporter_renders_the_process_families() {
        let text = Exporter::default().render();
        for family in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family}:\n{text}"
            );
        }
        let fds = text
            .lines()
            .find_map(|l| l.strip_prefix("process_open_fds "))
            .and_then(|v| v.parse::<f64>().ok());
        assert!(fds.is_some_and(|n| n >= 3.0), "{text}");
    }

    #[test]
    fn build_labels_are_a_commit_and_a_rustc_version() {
        assert!(RUSTC_VERSION.starts_with("rustc "), "{RUSTC_VERSION}");
        assert!(
            COMMIT == "unknown" || COMMIT.chars().all(|c| c.is_ascii_hexdigit()),
            "{COMMIT}"
        );
    }
}
