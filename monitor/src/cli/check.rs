//! `pinsight check`: validates a configuration and the sysfs root it names, like
//! ebpf_exporter's `--config.check`; exits non-zero with the reason.

use std::path::{Path, PathBuf};

use clap::Args;

use super::host::{read_topology, HostArgs};
use super::CliError;
use crate::http::WebConfig;

/// Arguments of `pinsight check`: the host's, and the web config `pinsight run` would take.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Config file, sysfs root and libvirt URI.
    #[command(flatten)]
    pub host: HostArgs,
    /// A web-config file to validate (certificates, keys and bcrypt hashes are loaded).
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
}

/// The web config `file` describes (fully loaded: certificates, keys, hashes), or plain HTTP
/// without one.
pub fn web_config(file: Option<&Path>) -> Result<WebConfig, CliError> {
    match file {
        Some(path) => Ok(WebConfig::load(path)?),
        None => Ok(WebConfig::plain()),
    }
}

/// Resolves the configuration, reads the topology, and says what was found.
pub fn execute(args: CheckArgs) -> Result<(), CliError> {
    let config = args.host.config()?;
    let topology = read_topology(&config)?;
    if let Some(path) = &args.web_config_file {
        println!(
            "web config {} ok: {}",
            path.display(),
            web_config(Some(path))?.summary
        );
    }
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
