//! sched_migrate_task: moves of tracked threads between sockets (counted in
//! [`crate::sched_switch::CpuRun::cross_socket_migrations`]).
//!
//! A classic tracepoint: its record layout comes from tracefs at load time, in these globals.

/// Global: byte offset of `pid` in the sched:sched_migrate_task record.
pub const MIGRATE_PID_OFFSET: &str = "MIGRATE_PID_OFFSET";
/// Global: byte offset of `orig_cpu` in the record.
pub const MIGRATE_ORIG_CPU_OFFSET: &str = "MIGRATE_ORIG_CPU_OFFSET";
/// Global: byte offset of `dest_cpu` in the record.
pub const MIGRATE_DEST_CPU_OFFSET: &str = "MIGRATE_DEST_CPU_OFFSET";
