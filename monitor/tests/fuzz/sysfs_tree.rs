//! Random sysfs trees for the topology reader: a real fixture tree with some files given odd
//! contents (empty, -1, huge numbers, garbage, invalid UTF-8), removed, or added.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use proptest::prelude::*;
use proptest::sample::Index;

/// One file of a tree: its path below the root and what it holds.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A regular file.
    File(PathBuf, Vec<u8>),
    /// A symlink and its (relative) target, as bus/pci/devices has on a host.
    Link(PathBuf, PathBuf),
}

/// A whole tree, written to disk by [`TreeDir::write`].
#[derive(Debug, Clone)]
pub struct Tree {
    /// The fixture it started from.
    pub seed: String,
    /// Its files after the edits.
    pub entries: Vec<Entry>,
}

/// What a file may hold instead of its real value.
fn odd_content() -> impl Strategy<Value = Vec<u8>> {
    let fixed: Vec<&[u8]> = vec![
        b"",
        b"\n",
        b"-1",
        b"-2",
        b"0",
        b"1",
        b"99999999999999999999",
        b"4294967296",
        b"0-8191",
        b"0-8192",
        b"0-1048575",
        b"3-1",
        b"0,0,0",
        b" 0 \n",
        b"0x",
        b"zz",
        b"0x030200",
        b"0x10de",
        b"0x1ffff",
        b"\xff\xfe",
        b"0-1\x00",
        b"node0",
    ];
    prop_oneof![
        4 => prop::sample::select(fixed).prop_map(<[u8]>::to_vec),
        1 => "[0-9,\\-]{1,24}".prop_map(String::into_bytes),
        1 => (1usize..4096).prop_map(|n| "7".repeat(n).into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..32),
    ]
}

/// Files a tree may gain (relative to the root).
const ADDED: &[&str] = &[
    "devices/system/node/node7/cpulist",
    "devices/system/node/node0/cpulist",
    "devices/system/node/node4294967295/cpulist",
    "devices/system/node/nodex/cpulist",
    "devices/system/cpu/possible",
    "devices/system/cpu/cpu8191/topology/core_id",
    "devices/system/cpu/cpu2/topology/physical_package_id",
    "devices/system/cpu/cpu2/topology/core_id",
    "devices/system/cpu/cpu2/topology/thread_siblings_list",
    "bus/pci/devices/0000:ff:1f.7/numa_node",
    "bus/pci/devices/0000:ff:1f.7/class",
    "bus/pci/devices/0000:ff:1f.7/local_cpulist",
    "bus/pci/devices/zzzz/numa_node",
];

#[derive(Debug, Clone)]
enum Edit {
    Replace(Index, Vec<u8>),
    Remove(Index),
    Add(Index, Vec<u8>),
}

/// A fixture tree with up to 6 edits.
pub fn tree() -> impl Strategy<Value = Tree> {
    let seeds = fixture_trees();
    let edit = prop_oneof![
        4 => (any::<Index>(), odd_content()).prop_map(|(i, c)| Edit::Replace(i, c)),
        2 => any::<Index>().prop_map(Edit::Remove),
        2 => (any::<Index>(), odd_content()).prop_map(|(i, c)| Edit::Add(i, c)),
    ];
    (
        prop::sample::select(seeds),
        prop::collection::vec(edit, 0..6),
    )
        .prop_map(|((seed, mut entries), edits)| {
            for edit in edits {
                match edit {
                    Edit::Replace(i, content) if !entries.is_empty() => {
                        let at = i.index(entries.len());
                        let path = match &entries[at] {
                            Entry::File(path, _) | Entry::Link(path, _) => path.clone(),
                        };
                        entries[at] = Entry::File(path, content);
                    }
                    Edit::Remove(i) if !entries.is_empty() => {
                        entries.remove(i.index(entries.len()));
                    }
                    Edit::Add(i, content) => {
                        let path = PathBuf::from(ADDED[i.index(ADDED.len())]);
                        entries.retain(
                            |e| !matches!(e, Entry::File(p, _) | Entry::Link(p, _) if *p == path),
                        );
                        entries.push(Entry::File(path, content));
                    }
                    _ => {}
                }
            }
            Tree { seed, entries }
        })
}

/// Every fixture under tests/fixtures/sysfs, read into memory once.
fn fixture_trees() -> Vec<(String, Vec<Entry>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs");
    let mut trees = Vec::new();
    for dir in std::fs::read_dir(&root).expect("tests/fixtures/sysfs is readable") {
        let dir = dir.expect("fixture directory entry").path();
        if dir.is_dir() {
            let mut entries = Vec::new();
            read_tree(&dir, &dir, &mut entries);
            let name = dir
                .file_name()
                .expect("a fixture has a name")
                .to_string_lossy()
                .into_owned();
            trees.push((name, entries));
        }
    }
    trees.sort_by(|a, b| a.0.cmp(&b.0));
    trees
}

fn read_tree(root: &Path, dir: &Path, out: &mut Vec<Entry>) {
    for entry in std::fs::read_dir(dir).expect("fixture directory is readable") {
        let path = entry.expect("fixture directory entry").path();
        let rel = path
            .strip_prefix(root)
            .expect("below the root")
            .to_path_buf();
        let meta = std::fs::symlink_metadata(&path).expect("fixture file");
        if meta.file_type().is_symlink() {
            out.push(Entry::Link(
                rel,
                std::fs::read_link(&path).expect("fixture symlink"),
            ));
        } else if meta.is_dir() {
            read_tree(root, &path, out);
        } else {
            out.push(Entry::File(
                rel,
                std::fs::read(&path).expect("fixture file is readable"),
            ));
        }
    }
}

/// A tree on disk in a fresh temporary directory, removed on drop.
pub struct TreeDir(PathBuf);

impl TreeDir {
    /// Writes `tree` below a new directory.
    pub fn write(tree: &Tree) -> TreeDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // tmpfs when there is one: on this VM's disk each mkdir/unlink costs 0.1-0.2 ms, which
        // made tree writes, not parses, the whole cost of the target.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let root = base.join(format!(
            "pinsight-fuzz-sysfs-{}-{}-{}",
            tree.seed,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let dir = TreeDir(root);
        for entry in &tree.entries {
            let (Entry::File(rel, _) | Entry::Link(rel, _)) = entry;
            let path = dir.0.join(rel);
            std::fs::create_dir_all(path.parent().expect("a file has a parent"))
                .expect("temporary directory is writable");
            match entry {
                Entry::File(_, content) => std::fs::write(&path, content).expect("temporary file"),
                Entry::Link(_, target) => {
                    std::os::unix::fs::symlink(target, &path).expect("temporary symlink")
                }
            }
        }
        std::fs::create_dir_all(&dir.0).expect("temporary directory is writable");
        dir
    }

    /// The tree's root (what `--sysfs-root` would name).
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TreeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
