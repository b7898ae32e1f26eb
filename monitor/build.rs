//! Builds the eBPF probes (monitor-ebpf) with the nightly toolchain and bpf-linker, so that one
//! `cargo build` at the root gives a daemon with its probes embedded.

use anyhow::{anyhow, Context as _};
use cargo_metadata::{MetadataCommand, Package};
use std::process::Command;

fn main() -> anyhow::Result<()> {
    build_info();
    let metadata = MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata failed")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|Package { name, .. }| name == "monitor-ebpf")
        .ok_or_else(|| anyhow!("monitor-ebpf is not in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("monitor-ebpf manifest has no parent directory"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the eBPF probes failed: is scripts/setup.sh done (nightly rust-src, bpf-linker 0.10.3)?")
}

/// The labels of pinsight_build_info: PINSIGHT_COMMIT (short hash of HEAD; "unknown" outside
/// a git checkout, e.g. a source tarball) and
/// PINSIGHT_RUSTC_VERSION (`$RUSTC --version`).
fn build_info() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|s| s.trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PINSIGHT_COMMIT={commit}");
    // A new commit (HEAD or the branch it names moves) reruns this script.
    for path in ["HEAD", "logs/HEAD"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PINSIGHT_RUSTC_VERSION={version}");
}
