//! The libvirt connection: list running domains and read their XML.

use virt::connect::Connect;
use virt::domain::Domain;

use super::{build_vm, domain_xml, HostPaths, Inventory};
use crate::topology::Topology;

/// libvirt could not be reached or answered with an error for the whole host.
#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    /// Opening the connection failed.
    #[error("cannot connect to libvirt at {uri}: {message}")]
    Connect {
        /// Connection URI.
        uri: String,
        /// libvirt's message.
        message: String,
    },
    /// A domain pinsight asked for by name is not there (or libvirt failed to say).
    #[error("libvirt at {uri}: no domain {domain}: {message}")]
    Lookup {
        /// Connection URI.
        uri: String,
        /// The domain name asked for.
        domain: String,
        /// libvirt's message.
        message: String,
    },
    /// A call ran past its deadline (libvirt_timeout_seconds), or could not be made.
    #[error("{reason} (libvirt_timeout_seconds bounds every libvirt call)")]
    Unanswered {
        /// Connection URI.
        uri: String,
        /// What did not answer, and for how long.
        reason: String,
    },
    /// libvirtd did not answer a round trip.
    #[error("libvirt at {uri} did not answer: {message}")]
    Ping {
        /// Connection URI.
        uri: String,
        /// libvirt's message.
        message: String,
    },
    /// Listing domains failed (libvirtd went away, say).
    #[error("libvirt at {uri} failed to list domains: {message}")]
    List {
        /// Connection URI.
        uri: String,
        /// libvirt's message.
        message: String,
    },
}

/// What a connection may do. libvirt's read-only connections can list domains, read their
/// XML and metadata and hear events, and are refused every call that changes something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Observe and recommend: nothing is changed, so nothing can be.
    ReadOnly,
    /// Enforce and restore: pins and pinsight's own state element are written.
    ReadWrite,
}

/// Seconds between keepalive pings on a connection.
const KEEPALIVE_INTERVAL: i32 = 2;
/// Unanswered pings after which libvirt closes the connection.
const KEEPALIVE_COUNT: u32 = 3;

/// A lazily (re)opened connection to libvirtd.
pub struct Libvirt {
    uri: String,
    access: Access,
    conn: Option<Connect>,
    /// Domain XMLs already parsed: an unchanged domain is not parsed again.
    specs: domain_xml::SpecCache,
}

impl Libvirt {
    /// A connection to `uri`, opened on first use and reopened after failures
    /// (libvirtd restarts are expected).
    pub fn new(uri: &str, access: Access) -> Self {
        // libvirt prints every error to stderr by default; we report them ourselves.
        virt::error::clear_error_callback();
        Libvirt {
            uri: uri.to_string(),
            access,
            conn: None,
            specs: domain_xml::SpecCache::default(),
        }
    }

    /// Changes what the connection may do (a reload changed the mode); the next call opens
    /// a connection of that kind.
    pub fn set_access(&mut self, access: Access) {
        if access != self.access {
            tracing::info!(uri = %self.uri, ?access, "libvirt connection reopened");
            self.access = access;
            self.conn = None;
        }
    }

    /// The URI this connection uses.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The open connection, opening it if needed.
    pub fn connection(&mut self) -> Result<&Connect, LibvirtError> {
        let alive = self
            .conn
            .as_ref()
            .is_some_and(|c| c.is_alive().unwrap_or(false));
        if !alive {
            self.conn = None;
            super::worker::heartbeat("connect");
            let opened = match self.access {
                Access::ReadOnly => Connect::open_read_only(Some(&self.uri)),
                Access::ReadWrite => Connect::open(Some(&self.uri)),
            };
            let conn = opened.map_err(|e| LibvirtError::Connect {
                uri: self.uri.clone(),
                message: e.message().to_string(),
            })?;
            // libvirt closes a connection whose daemon misses KEEPALIVE_COUNT pings, which
            // ends the calls waiting on it. It needs the event loop (lifecycle runs it); without
            // one the worker's deadline alone bounds the calls.
            if let Err(e) = conn.set_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT) {
                tracing::debug!(uri = %self.uri, error = %e.message(), "no keepalive on the libvirt connection");
            }
            self.conn = Some(conn);
        }
        self.conn.as_ref().ok_or_else(|| LibvirtError::Connect {
            uri: self.uri.clone(),
            message: "connection lost".into(),
        })
    }

    /// A round trip to libvirtd (its library version): whether it answers at all.
    pub fn ping(&mut self) -> Result<(), LibvirtError> {
        let uri = self.uri.clone();
        let result = self
            .connection()?
            .lib_version()
            .map(|_| ())
            .map_err(|e| LibvirtError::Ping {
                uri,
                message: e.message().to_string(),
            });
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// The running domain named `name`.
    pub fn lookup(&mut self, name: &str) -> Result<Domain, LibvirtError> {
        let uri = self.uri.clone();
        let conn = self.connection()?;
        conn.lookup_domain_by_name(name)
            .map_err(|e| LibvirtError::Lookup {
                uri,
                domain: name.into(),
                message: e.message().to_string(),
            })
    }

    /// Scans every running domain. Per-domain trouble goes into `problems`; only a failure
    /// to talk to libvirt at all is an error.
    pub fn scan(
        &mut self,
        topology: &Topology,
        paths: &HostPaths,
    ) -> Result<Inventory, LibvirtError> {
        let uri = self.uri.clone();
        super::worker::heartbeat("list domains");
        let list = self
            .connection()?
            .list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            .map_err(|e| LibvirtError::List {
                uri: uri.clone(),
                message: e.message().to_string(),
            });
        let domains = match list {
            Ok(domains) => domains,
            Err(e) => {
                self.conn = None;
                return Err(e);
            }
        };
        let mut inventory = Inventory::default();
        for domain in domains {
            let name = domain.name().unwrap_or_else(|_| "unknown".into());
            super::worker::heartbeat(&format!("read the XML of domain {name}"));
            // The domain may stop between listing and reading: that is a problem line, not a
            // failed scan.
            let xml = match domain.xml_desc(0) {
                Ok(xml) => xml,
                Err(e) => {
                    inventory
                        .problems
                        .push(format!("domain {name}: cannot read XML: {}", e.message()));
                    continue;
                }
            };
            let spec = match self.specs.parse(&xml, &topology.possible_cpus) {
                Ok(spec) => spec,
                Err(e) => {
                    inventory.problems.push(e.to_string());
                    continue;
                }
            };
            match build_vm(spec, topology, paths, &mut inventory.problems) {
                Ok(vm) => inventory.vms.push(vm),
                Err(problem) => inventory.problems.push(problem.to_string()),
            }
        }
        self.specs.prune();
        inventory.vms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(inventory)
    }
}
