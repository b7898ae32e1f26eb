//! Which cgroup a task is in, from its /proc/PID/cgroup, on cgroup v1, v2 and hybrid hosts:
//! the memory readers and the probes' depth filter ask it for different controllers.

use std::path::{Path, PathBuf};

/// Where a task is for one controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControllerCgroup<'a> {
    /// On the v1 hierarchy the controller is mounted on: the path in it.
    V1(&'a str),
    /// On the v2 hierarchy (the controller is not on v1): the task's v2 path.
    V2(&'a str),
}

/// The cgroup of the task whose /proc/PID/cgroup reads `text`, for `controller`: its v1 line
/// wins over the `0::` line (a hybrid host has both, and a controller mounted on v1 is not on
/// v2). Lines that are not `ID:CONTROLLERS:PATH` are skipped.
pub fn controller_cgroup<'a>(text: &'a str, controller: &str) -> Option<ControllerCgroup<'a>> {
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id != "0" && controllers.split(',').any(|c| c == controller) {
            return Some(ControllerCgroup::V1(path));
        }
        if id == "0" && controllers.is_empty() {
            v2 = Some(ControllerCgroup::V2(path));
        }
    }
    v2
}

/// Where the v2 hierarchy is mounted under `cgroup_root` (`/sys/fs/cgroup`): there on a pure
/// v2 host (it has `cgroup.controllers`), else in `unified` beside the v1 hierarchies.
pub fn v2_root(cgroup_root: &Path) -> PathBuf {
    match cgroup_root.join("cgroup.controllers").exists() {
        true => cgroup_root.to_path_buf(),
        false => cgroup_root.join("unified"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v1_line_wins_over_the_v2_line_and_bad_lines_are_skipped() {
        let text = "garbage\n0::/v2/path\n4:memory,hugetlb:/machine/vm\n1:cpu:/a/b\n";
        assert_eq!(
            controller_cgroup(text, "hugetlb"),
            Some(ControllerCgroup::V1("/machine/vm"))
        );
        assert_eq!(
            controller_cgroup(text, "cpu"),
            Some(ControllerCgroup::V1("/a/b"))
        );
        assert_eq!(
            controller_cgroup(text, "pids"),
            Some(ControllerCgroup::V2("/v2/path"))
        );
        assert_eq!(controller_cgroup("1:cpuset:/a\n", "cpu"), None);
    }
}
