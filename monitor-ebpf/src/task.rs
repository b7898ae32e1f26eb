//! Fields of `struct task_struct` that the tp_btf programs read directly from the task
//! pointers the tracepoint hands them (sched_switch, sched_process_exit, sched_migrate_task).

/// Byte offset of `pid` in `struct task_struct`; set by the daemon from the kernel's BTF.
/// Being read-only data, the verifier sees it as a constant, so `task + TASK_PID_OFFSET` is a
/// checked direct field load, not a probe_read helper call.
#[no_mangle]
pub static TASK_PID_OFFSET: u32 = 0;

/// Byte offset of `se.sum_exec_runtime` in `struct task_struct`, from the kernel's BTF.
#[no_mangle]
pub static TASK_RUNTIME_OFFSET: u32 = 0;

/// Byte offset of `se.depth` in `struct task_struct`, from the kernel's BTF (see
/// `monitor_common::sched_switch::TRACKED_DEPTHS`).
#[no_mangle]
pub static TASK_DEPTH_OFFSET: u32 = 0;

/// Byte offset of the task's CPU (`thread_info.cpu`, or `cpu` before 5.16) in `struct
/// task_struct`, from the kernel's BTF.
#[no_mangle]
pub static TASK_CPU_OFFSET: u32 = 0;

/// Reads the CPU the task is on (or, in sched_migrate_task, leaving): `task_cpu(task)`.
#[inline(always)]
pub fn task_cpu(task: *const u8) -> u32 {
    // SAFETY: as for task_tid; the offset is that of a u32 member.
    unsafe {
        let offset = core::ptr::read_volatile(&TASK_CPU_OFFSET) as usize;
        *(task.add(offset) as *const u32)
    }
}

/// Reads `task->se.depth`: the depth of the task's CPU cgroup. The scheduler has just walked
/// this line of both tasks of a switch (`se.parent`, `se.cfs_rq` beside it), so it is warm
/// where the thread table's line for the tid is often not.
#[inline(always)]
pub fn task_depth(task: *const u8) -> u32 {
    task_depth_at(task, depth_offset())
}

/// [`TASK_DEPTH_OFFSET`], loaded once for a program that reads the depth of two tasks.
#[inline(always)]
pub fn depth_offset() -> usize {
    // SAFETY: a plain u32 global.
    unsafe { core::ptr::read_volatile(&TASK_DEPTH_OFFSET) as usize }
}

/// Reads `task->se.depth` at `offset` ([`depth_offset`]).
#[inline(always)]
pub fn task_depth_at(task: *const u8, offset: usize) -> u32 {
    // SAFETY: as for task_tid; the offset is that of an int member of a nested struct.
    unsafe { *(task.add(offset) as *const u32) }
}

/// Reads `task->se.sum_exec_runtime`: the scheduler updates it before sched_switch fires, so
/// for prev it includes the stint that is ending. Using the kernel's own clock saves a
/// bpf_ktime_get_ns() call per switch (the larger part of the cost under virtualisation) and
/// agrees with /proc/TID/schedstat by construction.
#[inline(always)]
pub fn task_runtime(task: *const u8) -> u64 {
    // SAFETY: as for task_tid; the offset is that of a u64 member of a nested struct.
    unsafe {
        let offset = core::ptr::read_volatile(&TASK_RUNTIME_OFFSET) as usize;
        *(task.add(offset) as *const u64)
    }
}

/// Reads `task->pid` (the thread id) from a BTF task pointer.
#[inline(always)]
pub fn task_tid(task: *const u8) -> u32 {
    // SAFETY: `task` is a trusted BTF pointer to a task_struct handed to us by the tracepoint,
    // and the offset is the real offset of its `pid` member (the verifier checks both).
    unsafe {
        let offset = core::ptr::read_volatile(&TASK_PID_OFFSET) as usize;
        *(task.add(offset) as *const u32)
    }
}
