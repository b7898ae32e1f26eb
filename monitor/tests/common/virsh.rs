//! `virsh` against the system QEMU driver, as the tests drive libvirt.

use std::process::Command;

use super::LIBVIRT_URI;

/// Runs `virsh -c qemu:///system ARGS`; Ok(stdout) or Err(the command and its stderr).
pub fn virsh(args: &[&str]) -> Result<String, String> {
    let out = Command::new("virsh")
        .args(["-c", LIBVIRT_URI])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run virsh: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`virsh {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Like `virsh`, but panics with virsh's stderr on failure.
pub fn virsh_ok(args: &[&str]) -> String {
    virsh(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Destroys a domain by name; a domain that is already gone is fine.
pub fn destroy(name: &str) -> Result<(), String> {
    match virsh(&["destroy", name]) {
        Ok(_) => Ok(()),
        Err(e) if e.contains("failed to get domain") || e.contains("not found") => Ok(()),
        Err(e) if e.contains("domain is not running") => Ok(()),
        Err(e) => Err(e),
    }
}
