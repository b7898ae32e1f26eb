//! `pinsight check`: validates a configuration and the sysfs root it names, like
//! ebpf_exporter's `--config.check`; exits non-zero with the reason.

use super::host::{read_topology, HostArgs};
use super::CliError;

/// Arguments of `pinsight check`: the host's.
pub type CheckArgs = HostArgs;

/// Resolves the configuration, reads the topology, and says what was found.
pub fn execute(args: CheckArgs) -> Result<(), CliError> {
    let config = args.config()?;
    let topology = read_topology(&config)?;
    println!(
        "config ok: listen {}, sysfs {} ({} sockets, {} nodes, {} CPUs), libvirt {}",
        config.listen,
        config.sysfs_root.display(),
        topology.sockets().len(),
        topology.nodes.len(),
        topology.cpus.len(),
        config.libvirt_uri
    );
    Ok(())
}
