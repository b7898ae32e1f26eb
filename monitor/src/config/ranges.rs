//! The allowed range of every numeric config key, in one table that drives the check, the
//! errors and the "# Range of" lines of deploy/pinsight.toml (a test keeps them equal).

/// The allowed range of one numeric key.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    /// The key, `section.key` inside a section.
    pub key: &'static str,
    /// Smallest allowed value.
    pub min: f64,
    /// Largest allowed value.
    pub max: f64,
    /// The range in words, as errors and deploy/pinsight.toml say it.
    pub text: &'static str,
}

impl Range {
    /// Whether `value` is a number within the range (NaN and infinities never are).
    pub fn contains(&self, value: f64) -> bool {
        value.is_finite() && (self.min..=self.max).contains(&value)
    }
}

/// Every numeric key's range. The bounds keep the daemon's arithmetic finite and its loops
/// calm whatever the file says: no tick so short it busy-loops, no duration so long that
/// time arithmetic overflows, no map larger than the kernel allows.
pub const RANGES: &[Range] = &[
    Range {
        key: "numa_maps_fallback_seconds",
        min: 0.0,
        max: 86_400.0,
        text: "must be 0 (never) to 86400",
    },
    Range {
        key: "tick_seconds",
        min: 0.05,
        max: 60.0,
        text: "must be 0.05 to 60 seconds",
    },
    Range {
        key: "rescan_seconds",
        min: 0.05,
        max: 3600.0,
        text: "must be 0.05 to 3600 seconds",
    },
    Range {
        key: "placement_read_seconds",
        min: 0.05,
        max: 3600.0,
        text: "must be 0.05 to 3600 seconds",
    },
    Range {
        key: "libvirt_timeout_seconds",
        min: 0.5,
        max: 300.0,
        text: "must be 0.5 to 300 seconds",
    },
    Range {
        key: "remote_ratio_window_seconds",
        min: 0.05,
        max: 86400.0,
        text: "must be 0.05 to 86400 seconds",
    },
    Range {
        key: "cross_socket_penalty",
        min: 0.0,
        max: 1.0,
        text: "must be a fraction from 0 to 1",
    },
    Range {
        key: "overhead.memory_penalty",
        min: 0.0,
        max: 1.0,
        text: "must be a fraction from 0 to 1",
    },
    Range {
        key: "overhead.irq_penalty",
        min: 0.0,
        max: 1.0,
        text: "must be a fraction from 0 to 1",
    },
    Range {
        key: "overhead.emulator_penalty",
        min: 0.0,
        max: 1.0,
        text: "must be a fraction from 0 to 1",
    },
    Range {
        key: "max_exported_vms",
        min: 1.0,
        max: 100_000.0,
        text: "must be 1 to 100000",
    },
    Range {
        key: "probes.max_threads",
        min: 1.0,
        max: 32767.0,
        text: "must be 1 to 32767 (slots are 16-bit, shared with max_other_threads)",
    },
    Range {
        key: "probes.max_other_threads",
        min: 0.0,
        max: 32768.0,
        text: "must be 0 to 32768 (slots are 16-bit, shared with max_threads)",
    },
    Range {
        key: "policy.remote_ratio_high",
        min: 0.0,
        max: 1.0,
        text: "must be a fraction from 0 to 1",
    },
    Range {
        key: "policy.remote_ratio_clear",
        min: 0.0,
        max: 1.0,
        text: "must be a fraction from 0 to 1",
    },
    Range {
        key: "policy.cooldown_seconds",
        min: 0.0,
        max: 604_800.0,
        text: "must be 0 to 604800 seconds (a week)",
    },
    Range {
        key: "policy.max_repins_per_minute",
        min: 1.0,
        max: 600.0,
        text: "must be 1 to 600 (use mode = \"recommend\" to act on nothing)",
    },
    Range {
        key: "policy.max_oversubscription",
        min: 1.0,
        max: 64.0,
        text: "must be a ratio from 1.0 (one pinned vCPU per host CPU) to 64",
    },
    Range {
        key: "policy.memory_remote_high",
        min: 0.0,
        max: 1.0,
        text: "must be a fraction from 0 to 1",
    },
    Range {
        key: "policy.memory_bytes_per_second",
        min: 1_048_576.0,
        max: 1e12,
        text: "must be 1048576 (1 MiB/s) to 1e12 bytes per second",
    },
    Range {
        key: "policy.fix_cooldown_seconds",
        min: 0.0,
        max: 604_800.0,
        text: "must be 0 to 604800 seconds (a week)",
    },
    Range {
        key: "qmp.timeout_seconds",
        min: 0.1,
        max: 60.0,
        text: "must be 0.1 to 60 seconds",
    },
];
