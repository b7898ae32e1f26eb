//! Unit tests against the sysfs-shaped fixtures in tests/fixtures/sysfs and the host's /sys.

mod checks;
mod fixtures;
mod moves;

use std::fs;
use std::path::{Path, PathBuf};

use super::{CpuSet, Topology};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sysfs");

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn read(name: &str) -> Topology {
    Topology::read(&fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn set(text: &str) -> CpuSet {
    text.parse().unwrap()
}

/// A throw-away sysfs tree for the error cases no fixture should carry; removed on drop.
struct TempTree(PathBuf);

impl TempTree {
    fn new(name: &str, files: &[(&str, &str)]) -> TempTree {
        let root =
            std::env::temp_dir().join(format!("pinsight-topo-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (path, content) in files {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, format!("{content}\n")).unwrap();
        }
        TempTree(root)
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Files of a CPU: (socket, core, siblings).
fn cpu_files(cpu: u32, socket: &str, core: &str, siblings: &str) -> Vec<(String, String)> {
    let dir = format!("devices/system/cpu/cpu{cpu}/topology");
    vec![
        (format!("{dir}/physical_package_id"), socket.to_string()),
        (format!("{dir}/core_id"), core.to_string()),
        (format!("{dir}/thread_siblings_list"), siblings.to_string()),
    ]
}

fn tree(name: &str, files: Vec<(String, String)>) -> TempTree {
    let borrowed: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    TempTree::new(name, &borrowed)
}
