//! What every command needs of the host: its configuration (file, then flags, then
//! validation), its topology, its running VMs, and one VM found by name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use virt::domain::Domain;

use super::CliError;
use crate::config::{Config, ConfigError, Mode};
use crate::inventory::worker::Worker;
use crate::inventory::{Access, HostPaths, Inventory, Libvirt, LibvirtError, Vm};
use crate::topology::Topology;

/// Where the host's facts come from (the flags every host-reading command takes).
#[derive(Args, Clone, Debug, Default)]
pub struct HostArgs {
    /// Config file (TOML); see deploy/pinsight.toml for every key and its default.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Root of sysfs; point it at a fixture directory to describe another host's topology.
    #[arg(long)]
    pub sysfs_root: Option<PathBuf>,
    /// libvirt connection URI.
    #[arg(long)]
    pub libvirt_uri: Option<String>,
}

/// One config value given on the command line; it wins over the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Flag {
    /// `--sysfs-root`.
    SysfsRoot(PathBuf),
    /// `--libvirt-uri`.
    LibvirtUri(String),
    /// `--listen`.
    Listen(SocketAddr),
    /// `--mode`.
    Mode(Mode),
}

impl Flag {
    /// The flag as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Flag::SysfsRoot(_) => "--sysfs-root",
            Flag::LibvirtUri(_) => "--libvirt-uri",
            Flag::Listen(_) => "--listen",
            Flag::Mode(_) => "--mode",
        }
    }

    /// The config key it sets, as [`ConfigError::Invalid`] names it.
    pub fn key(&self) -> &'static str {
        match self {
            Flag::SysfsRoot(_) => "sysfs_root",
            Flag::LibvirtUri(_) => "libvirt_uri",
            Flag::Listen(_) => "listen",
            Flag::Mode(_) => "policy.mode",
        }
    }

    fn apply(&self, config: &mut Config) {
        match self {
            Flag::SysfsRoot(root) => config.sysfs_root = root.clone(),
            Flag::LibvirtUri(uri) => config.libvirt_uri = uri.clone(),
            Flag::Listen(listen) => config.listen = *listen,
            Flag::Mode(mode) => config.policy.mode = *mode,
        }
    }
}

impl HostArgs {
    /// The flags given among these.
    pub fn flags(&self) -> Vec<Flag> {
        let root = self.sysfs_root.clone().map(Flag::SysfsRoot);
        let uri = self.libvirt_uri.clone().map(Flag::LibvirtUri);
        root.into_iter().chain(uri).collect()
    }

    /// The configuration these arguments describe (see [`resolve`]).
    pub fn config(&self) -> Result<Config, CliError> {
        resolve(self.config.as_deref(), &self.flags())
    }
}

/// The one way a command gets its configuration: the file (or the defaults without one),
/// then the command-line `flags` over it, then validation of the result. An error names
/// where the bad value came from: the file's path, or the flag.
pub fn resolve(file: Option<&Path>, flags: &[Flag]) -> Result<Config, CliError> {
    let mut config = match file {
        // Validates the file's own values, so errors there name the file.
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    for flag in flags {
        flag.apply(&mut config);
    }
    config
        .validate(file.unwrap_or(Path::new("")))
        .map_err(|e| attribute(e, file, flags))?;
    Ok(config)
}

/// Names the source of a validation error: the last flag that set the key, else the file,
/// else the built-in defaults.
fn attribute(error: ConfigError, file: Option<&Path>, flags: &[Flag]) -> CliError {
    let ConfigError::Invalid {
        key, value, reason, ..
    } = error
    else {
        return error.into();
    };
    if let Some(flag) = flags.iter().rev().find(|f| f.key() == key) {
        return CliError::InvalidFlag {
            flag: flag.name(),
            value,
            reason,
        };
    }
    match file {
        Some(path) => ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            value,
            reason,
        }
        .into(),
        None => CliError::InvalidDefault { key, value, reason },
    }
}

/// The host's topology from `config.sysfs_root`; its oddities are logged as warnings.
pub fn read_topology(config: &Config) -> Result<Topology, CliError> {
    let topology = Topology::read(&config.sysfs_root).map_err(|source| CliError::Topology {
        sysfs_root: config.sysfs_root.clone(),
        source,
    })?;
    for w in &topology.warnings {
        tracing::warn!("topology: {w}");
    }
    Ok(topology)
}

/// Where the inventory finds sysfs and libvirt's QEMU state.
pub fn host_paths(config: &Config) -> HostPaths {
    HostPaths::of(config)
}

/// The running VMs, with libvirt's connection for acting on them; scan problems are logged.
pub fn scan(
    config: &Config,
    topology: &Topology,
    access: Access,
) -> Result<(Libvirt, Inventory), CliError> {
    let inventory = scan_inventory(config, topology, access)?;
    for p in &inventory.problems {
        tracing::warn!("{p}");
    }
    Ok((Libvirt::new(&config.libvirt_uri, access), inventory))
}

/// The running VMs, scanned with the daemon's deadline (libvirt_timeout_seconds), so a hung
/// libvirtd is an error naming the call, not a command that never returns.
pub fn scan_inventory(
    config: &Config,
    topology: &Topology,
    access: Access,
) -> Result<Inventory, LibvirtError> {
    let timeout = std::time::Duration::from_secs_f64(config.libvirt_timeout_seconds);
    let mut worker = Worker::new(&config.libvirt_uri, access, timeout);
    let (t, paths) = (topology.clone(), host_paths(config));
    worker
        .submit("scan", move |lv| lv.scan(&t, &paths))
        .wait(&mut worker)
        .map_err(|reason| LibvirtError::Unanswered {
            uri: config.libvirt_uri.clone(),
            reason,
        })?
}

/// The running VM called `name` and its libvirt domain.
pub fn lookup_vm<'a>(
    libvirt: &mut Libvirt,
    inventory: &'a Inventory,
    name: &str,
) -> Result<(&'a Vm, Domain), CliError> {
    let vm = find_vm(&inventory.vms, name, libvirt.uri())?;
    Ok((vm, libvirt.lookup(name)?))
}

/// The VM called `name` among `vms` (from a scan of `uri`); the error lists those running.
pub fn find_vm<'a>(vms: &'a [Vm], name: &str, uri: &str) -> Result<&'a Vm, CliError> {
    vms.iter()
        .find(|vm| vm.name == name)
        .ok_or_else(|| CliError::NoSuchVm {
            name: name.to_string(),
            uri: uri.to_string(),
            running: vms.iter().map(|vm| vm.name.clone()).collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::domain_xml::parse_domain_xml;
    use crate::test_support::config_file;

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let file = config_file(
            "libvirt_uri = \"test:///file\"\nsysfs_root = \"/file/sys\"\ntick_seconds = 2.0\n",
        );
        let config = resolve(
            Some(&file),
            &[
                Flag::LibvirtUri("test:///flag".into()),
                Flag::Mode(Mode::Enforce),
            ],
        )
        .unwrap();
        assert_eq!(config.libvirt_uri, "test:///flag", "flag over file");
        assert_eq!(config.sysfs_root, Path::new("/file/sys"), "file kept");
        assert_eq!(config.tick_seconds, 2.0, "file kept");
        assert_eq!(config.policy.mode, Mode::Enforce, "flag over default");
        assert_eq!(config.listen, Config::default().listen, "default kept");
        assert_eq!(resolve(None, &[]).unwrap(), Config::default());
    }

    #[test]
    fn host_args_turn_into_flags_in_order() {
        let args = HostArgs {
            config: None,
            sysfs_root: Some("/fixture".into()),
            libvirt_uri: Some("test:///x".into()),
        };
        assert_eq!(
            args.flags(),
            [
                Flag::SysfsRoot("/fixture".into()),
                Flag::LibvirtUri("test:///x".into())
            ]
        );
        assert_eq!(args.config().unwrap().sysfs_root, Path::new("/fixture"));
    }

    #[test]
    fn a_bad_value_names_its_file_never_a_made_up_path() {
        let file = config_file("tick_seconds = 0.0\n");
        let err = resolve(Some(&file), &[Flag::Mode(Mode::Observe)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&file.display().to_string()) && err.contains("tick_seconds"),
            "{err}"
        );
        assert!(!err.contains("command line"), "{err}");
    }

    #[test]
    fn a_validation_error_names_the_flag_that_set_the_key() {
        let invalid = |key| ConfigError::Invalid {
            path: PathBuf::new(),
            key,
            value: "0.0.0.0:1".into(),
            reason: "refused",
        };
        let file = Path::new("/etc/pinsight/pinsight.toml");
        let flags = [Flag::Listen(SocketAddr::from(([0, 0, 0, 0], 1)))];
        let err = attribute(invalid("listen"), Some(file), &flags).to_string();
        assert_eq!(err, "--listen 0.0.0.0:1: refused");
        let err = attribute(invalid("tick_seconds"), Some(file), &flags).to_string();
        assert!(
            err.starts_with("config /etc/pinsight/pinsight.toml: tick_seconds"),
            "{err}"
        );
        let err = attribute(invalid("tick_seconds"), None, &flags).to_string();
        assert!(err.starts_with("built-in default tick_seconds"), "{err}");
    }

    fn vm(name: &str) -> Vm {
        Vm {
            name: name.into(),
            uuid: String::new(),
            pid: 1,
            vcpus: Vec::new(),
            threads: Vec::new(),
            gpus: Vec::new(),
            gpu_nodes: Vec::new(),
            spec: parse_domain_xml(&format!(
                "<domain type='kvm'><name>{name}</name><uuid>u-{name}</uuid><vcpu>1</vcpu></domain>"
            ))
            .unwrap(),
            vmm: crate::inventory::Vmm::Libvirt,
        }
    }

    #[test]
    fn find_vm_names_the_domain_the_uri_and_who_is_running() {
        let vms = [vm("alpha"), vm("beta")];
        assert_eq!(
            find_vm(&vms, "beta", "qemu:///system").unwrap().name,
            "beta"
        );
        let err = find_vm(&vms, "gamma", "qemu:///system")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "no running domain gamma in qemu:///system (running: alpha, beta)"
        );
        let err = find_vm(&[], "gamma", "qemu:///system")
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("(running: none)"), "{err}");
    }
}
