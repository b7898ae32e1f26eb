//! Builds the eBPF probes (monitor-ebpf) with the nightly toolchain and bpf-linker, so that one
//! `cargo build` at the root gives a daemon with its probes embedded.

use anyhow::{anyhow, Context as _};
use cargo_metadata::{MetadataCommand, Package};

fn main() -> anyhow::Result<()> {
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
