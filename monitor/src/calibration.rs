//! This host's node-to-node memory figures, as `pinsight calibrate` measured them and wrote
//! them to a calibration file, which the daemon reads and exports: latency and bandwidth of a
//! thread on one node reading memory bound to another, and their ratios to the thread's own
//! node (the way Intel MLC reports a NUMA matrix).
//!
//! The file is JSON, bounded in size and checked on reading: a node id out of range, a
//! figure that is not a positive finite number or a pair listed twice is an error naming the
//! file and the pair.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod measure;

/// The calibration file's format version.
pub const VERSION: u32 = 1;
/// Largest calibration file read (a 64-node matrix is ~400 KiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Node ids accepted (the kernel's MAX_NUMNODES is at most 1024).
const MAX_NODE: u32 = 1024;

/// What one (CPU node, memory node) pair measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairFigures {
    /// The node whose CPU ran the measuring thread.
    pub from: u32,
    /// The node the memory was bound to.
    pub to: u32,
    /// Mean time of one dependent load (a pointer chase through a buffer far larger than
    /// the caches), nanoseconds.
    pub latency_ns: f64,
    /// Sequential read bandwidth, bytes per second.
    pub bandwidth_bytes_per_second: f64,
}

/// A calibration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// [`VERSION`].
    pub version: u32,
    /// When it was measured (Unix seconds).
    pub measured_unix_seconds: f64,
    /// Bytes of the buffer each pair was measured with.
    pub buffer_bytes: u64,
    /// Every pair measured.
    pub pairs: Vec<PairFigures>,
}

/// One pair's figures relative to the measuring thread's own node.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairRatios {
    /// The CPU node.
    pub from: u32,
    /// The memory node.
    pub to: u32,
    /// latency(from, to) / latency(from, from): 1 on the node itself, above 1 across.
    pub latency_ratio: f64,
    /// bandwidth(from, to) / bandwidth(from, from): 1 on the node itself, below 1 across.
    pub bandwidth_ratio: f64,
}

/// Why a calibration file cannot be used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// The file cannot be read (other than missing, which is no calibration at all).
    #[error("calibration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Larger than [`MAX_FILE_BYTES`].
    #[error("calibration file {}: {bytes} bytes, more than the limit of {MAX_FILE_BYTES}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// Not JSON of the calibration's shape.
    #[error("calibration file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// serde's error, with line and column.
        source: serde_json::Error,
    },
    /// JSON of the right shape with a value that cannot be right.
    #[error("calibration file {}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the pair.
        reason: String,
    },
    /// Writing the file failed.
    #[error("writing calibration file {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Calibration {
    /// Reads and checks `path`; Ok(None) when there is no such file.
    pub fn read(path: &Path) -> Result<Option<Calibration>, CalibrationError> {
        let read_err = |source| CalibrationError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        let bytes = file.metadata().map_err(read_err)?.len();
        if bytes > MAX_FILE_BYTES {
            return Err(CalibrationError::TooLarge {
                path: path.to_path_buf(),
                bytes,
            });
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_FILE_BYTES), &mut text)
            .map_err(read_err)?;
        let calibration: Calibration =
            serde_json::from_str(&text).map_err(|source| CalibrationError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        calibration
            .check()
            .map_err(|reason| CalibrationError::Invalid {
                path: path.to_path_buf(),
                reason,
            })?;
        Ok(Some(calibration))
    }

    /// Writes the file atomically (a temporary file beside it, then a rename).
    pub fn write(&self, path: &Path) -> Result<(), CalibrationError> {
        let write_err = |source| CalibrationError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| write_err(e.into()))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text + "\n").map_err(write_err)?;
        std::fs::rename(&tmp, path).map_err(write_err)
    }

    /// What is wrong with the figures, if anything.
    fn check(&self) -> Result<(), String> {
        if self.version != VERSION {
            return Err(format!(
                "version {} (this pinsight reads version {VERSION})",
                self.version
            ));
        }
        let mut seen = BTreeMap::new();
        for p in &self.pairs {
            let pair = format!("pair {} -> {}", p.from, p.to);
            if p.from >= MAX_NODE || p.to >= MAX_NODE {
                return Err(format!("{pair}: node ids must be below {MAX_NODE}"));
            }
            for (what, x) in [
                ("latency_ns", p.latency_ns),
                ("bandwidth_bytes_per_second", p.bandwidth_bytes_per_second),
            ] {
                if !(x.is_finite() && x > 0.0) {
                    return Err(format!("{pair}: {what} {x} is not a positive number"));
                }
            }
            if seen.insert((p.from, p.to), ()).is_some() {
                return Err(format!("{pair} is listed twice"));
            }
        }
        Ok(())
    }

    /// Every pair whose CPU node was also measured against itself, as ratios to that.
    pub fn ratios(&self) -> Vec<PairRatios> {
        let own: BTreeMap<u32, &PairFigures> = self
            .pairs
            .iter()
            .filter(|p| p.from == p.to)
            .map(|p| (p.from, p))
            .collect();
        self.pairs
            .iter()
            .filter_map(|p| {
                let base = own.get(&p.from)?;
                Some(PairRatios {
                    from: p.from,
                    to: p.to,
                    latency_ratio: p.latency_ns / base.latency_ns,
                    bandwidth_ratio: p.bandwidth_bytes_per_second / base.bandwidth_bytes_per_second,
                })
            })
            .collect()
    }
}

/// The daemon's reading of its calibration file: the figures, or none with the problem line
/// to show (logged here when it first appears). A missing file is no calibration, quietly.
pub fn load(path: &Path, last_problem: Option<&str>) -> (Option<Calibration>, Option<String>) {
    match Calibration::read(path) {
        Ok(found) => {
            if let Some(c) = &found {
                tracing::info!(file = %path.display(), pairs = c.pairs.len(), "calibration read");
            }
            (found, None)
        }
        Err(e) => {
            let problem = e.to_string();
            if last_problem != Some(problem.as_str()) {
                tracing::warn!("{problem}; node memory figures are not exported");
            }
            (None, Some(problem))
        }
    }
}

#[cfg(test)]
mod tests;
