//! Reading and parsing single sysfs attribute files, with errors that name the file.

use std::fs;
use std::io;
use std::path::Path;

use super::TopologyError;
use crate::cpuset::CpuSet;

/// The file's content without surrounding whitespace; a missing file is an error.
pub(super) fn read_trimmed(path: &Path) -> Result<String, TopologyError> {
    fs::read_to_string(path)
        .map(|text| text.trim().to_string())
        .map_err(|source| TopologyError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// The file's trimmed content, or `None` if it does not exist.
pub(super) fn read_optional(path: &Path) -> Result<Option<String>, TopologyError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TopologyError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A decimal number that may be negative (sysfs writes -1 for "unknown").
pub(super) fn parse_i64(path: &Path, text: &str) -> Result<i64, TopologyError> {
    text.parse().map_err(|_| TopologyError::Parse {
        path: path.to_path_buf(),
        reason: format!("{text:?} is not a number"),
    })
}

/// A non-negative decimal number.
pub(super) fn parse_u32(path: &Path, text: &str) -> Result<u32, TopologyError> {
    text.parse().map_err(|_| TopologyError::Parse {
        path: path.to_path_buf(),
        reason: format!("{text:?} is not a number"),
    })
}

/// A hex number with or without "0x" (PCI class, vendor and device files).
pub(super) fn parse_hex(path: &Path, text: &str) -> Result<u32, TopologyError> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    u32::from_str_radix(digits, 16).map_err(|_| TopologyError::Parse {
        path: path.to_path_buf(),
        reason: format!("{text:?} is not a hex number"),
    })
}

/// A 16-bit hex id (PCI vendor and device files).
pub(super) fn parse_hex_u16(path: &Path, text: &str) -> Result<u16, TopologyError> {
    let value = parse_hex(path, text)?;
    u16::try_from(value).map_err(|_| TopologyError::Parse {
        path: path.to_path_buf(),
        reason: format!("{text:?} does not fit in 16 bits"),
    })
}

/// A CPU list ("0-3,8"); an empty file is the empty set.
pub(super) fn parse_cpuset(path: &Path, text: &str) -> Result<CpuSet, TopologyError> {
    text.parse()
        .map_err(|e: crate::cpuset::CpuSetError| TopologyError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Reads and parses a non-negative decimal number.
pub(super) fn read_u32(path: &Path) -> Result<u32, TopologyError> {
    parse_u32(path, &read_trimmed(path)?)
}

/// Reads and parses a CPU list.
pub(super) fn read_cpuset(path: &Path) -> Result<CpuSet, TopologyError> {
    parse_cpuset(path, &read_trimmed(path)?)
}
