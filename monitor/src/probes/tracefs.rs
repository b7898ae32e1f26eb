//! Tracepoint record layouts from tracefs (`events/<category>/<name>/format`).

use std::path::{Path, PathBuf};

/// The tracefs mount points we look at, in order.
pub const TRACEFS_ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Why a tracepoint or one of its fields could not be located.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// No tracefs root has an `events` directory.
    #[error("tracepoint {category}:{name}: tracefs is not mounted (looked in {roots}; `mount -t tracefs nodev /sys/kernel/tracing`)")]
    NotMounted {
        /// Category, e.g. "kvm".
        category: String,
        /// Event name.
        name: String,
        /// The roots we looked in.
        roots: String,
    },
    /// tracefs is mounted but has no such tracepoint.
    #[error("tracepoint {category}:{name} not found ({path} is missing): {hint}")]
    Missing {
        /// Category, e.g. "kvm".
        category: String,
        /// Event name.
        name: String,
        /// The format file we looked for.
        path: PathBuf,
        /// The likely cause: the whole category is absent, or only this event.
        hint: String,
    },
    /// The format file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The format file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
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

/// The format file of `category:name`, or why there is none.
pub fn format_path(category: &str, name: &str) -> Result<PathBuf, TracefsError> {
    let roots: Vec<&Path> = TRACEFS_ROOTS.iter().map(Path::new).collect();
    locate_in(&roots, category, name)
}

fn locate_in(roots: &[&Path], category: &str, name: &str) -> Result<PathBuf, TracefsError> {
    let Some(events) = roots
        .iter()
        .map(|root| root.join("events"))
        .find(|events| events.is_dir())
    else {
        return Err(TracefsError::NotMounted {
            category: category.into(),
            name: name.into(),
            roots: roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let path = events.join(category).join(name).join("format");
    if path.exists() {
        return Ok(path);
    }
    let hint = match (category, events.join(category).is_dir()) {
        ("kvm", false) => "no kvm tracepoints at all: is the kvm module loaded?".to_string(),
        (_, false) => format!("this kernel has no {category} tracepoints"),
        (_, true) => format!("this kernel's {category} tracepoints do not include {name}"),
    };
    Err(TracefsError::Missing {
        category: category.into(),
        name: name.into(),
        path,
        hint,
    })
}

/// Byte offset of `field` in the record of `category:name`.
pub fn field_offset(category: &str, name: &str, field: &str) -> Result<u32, TracefsError> {
    let path = format_path(category, name)?;
    let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Read {
        path: path.clone(),
        source,
    })?;
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
    fn an_unmounted_tracefs_names_the_tracepoint_and_the_roots() {
        let roots = [Path::new("/nonexistent/tracing")];
        let err = locate_in(&roots, "sched", "sched_migrate_task").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sched:sched_migrate_task"), "{text}");
        assert!(text.contains("/nonexistent/tracing"), "{text}");
        assert!(!text.contains("kvm"), "{text}");
    }
}
