//! Tracepoint record layouts from tracefs (`events/<category>/<name>/format`).

use std::path::{Path, PathBuf};

/// The tracefs mount points we look at, in order.
pub const TRACEFS_ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Why a tracepoint field could not be located.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// The tracepoint does not exist (kernel without it, module not loaded, tracefs unmounted).
    #[error("tracepoint {category}:{name} not found (looked for {path}); is tracefs mounted and the kvm module loaded?")]
    Missing {
        /// Category, e.g. "kvm".
        category: String,
        /// Event name.
        name: String,
        /// The format file we looked for.
        path: PathBuf,
    },
    /// The format file lacks the field.
    #[error("{path}: no field {field:?}")]
    NoField {
        /// The format file.
        path: PathBuf,
        /// Field name.
        field: String,
    },
}

/// Whether `category:name` exists under any tracefs root.
pub fn exists(category: &str, name: &str) -> bool {
    format_path(category, name).is_some()
}

fn format_path(category: &str, name: &str) -> Option<PathBuf> {
    TRACEFS_ROOTS
        .iter()
        .map(|root| {
            Path::new(root)
                .join("events")
                .join(category)
                .join(name)
                .join("format")
        })
        .find(|p| p.exists())
}

/// Byte offset of `field` in the record of `category:name`.
pub fn field_offset(category: &str, name: &str, field: &str) -> Result<u32, TracefsError> {
    let path = format_path(category, name).ok_or_else(|| TracefsError::Missing {
        category: category.into(),
        name: name.into(),
        path: Path::new(TRACEFS_ROOTS[0])
            .join("events")
            .join(category)
            .join(name)
            .join("format"),
    })?;
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    parse_field_offset(&text, field).ok_or(TracefsError::NoField {
        path,
        field: field.into(),
    })
}

/// Finds `offset:N;` on the line declaring `field` ("field:unsigned int exit_reason; offset:8;").
pub fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let declared = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()?;
        // Arrays are declared as "char comm[16]".
        let declared = declared.split('[').next()?;
        if declared != field {
            return None;
        }
        let offset = rest
            .split(';')
            .find_map(|p| p.trim().strip_prefix("offset:"))?;
        offset.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KVM_EXIT: &str = "name: kvm_exit\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:unsigned int exit_reason;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:u32 isa;\toffset:24;\tsize:4;\tsigned:0;\n\tfield:char comm[16];\toffset:28;\tsize:16;\n";

    #[test]
    fn parses_offsets() {
        assert_eq!(parse_field_offset(KVM_EXIT, "exit_reason"), Some(8));
        assert_eq!(parse_field_offset(KVM_EXIT, "isa"), Some(24));
        assert_eq!(parse_field_offset(KVM_EXIT, "comm"), Some(28));
        assert_eq!(parse_field_offset(KVM_EXIT, "reason"), None);
    }

    #[test]
    fn reads_the_running_kernels_kvm_formats() {
        // Cross-checks the parser against the kernel's own files (tracefs is mounted by setup).
        assert!(
            exists("sched", "sched_switch"),
            "tracefs not mounted: run scripts/setup.sh"
        );
        let reason = field_offset("kvm", "kvm_userspace_exit", "reason").unwrap();
        let errno = field_offset("kvm", "kvm_userspace_exit", "errno").unwrap();
        assert_eq!(errno, reason + 4);
        let err = field_offset("kvm", "no_such_event", "x").unwrap_err();
        assert!(err.to_string().contains("kvm:no_such_event"), "{err}");
    }
}
