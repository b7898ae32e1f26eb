//! Which process is behind a QMP socket, and what its command line says of the VM: the
//! facts pinsight still has when QMP itself cannot be used.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// The pid of the process that created the listening end of `stream` (SO_PEERCRED). The
/// kernel records it at connect time, before (and whether or not) the server accepts.
pub fn peer_pid(stream: &UnixStream) -> Option<u32> {
    // SAFETY: ucred is plain integers; zeroed is a valid value.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is writable and `len` is its size, as SO_PEERCRED wants.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred.pid as u32)
}

/// The pid of a process holding the listening unix socket bound at `socket`, from
/// `/proc/net/unix` (its inode) and the processes' fd links: for when connect itself fails
/// because the backlog is full, so SO_PEERCRED has no connection to ask.
pub fn listener_pid(proc_root: &Path, socket: &Path) -> Option<u32> {
    let table = std::fs::read_to_string(proc_root.join("net/unix")).ok()?;
    let inode = listening_inode(&table, socket.to_str()?)?;
    let link = format!("socket:[{inode}]");
    for entry in std::fs::read_dir(proc_root).ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == link.as_str()));
        if holds {
            return Some(pid);
        }
    }
    None
}

/// The inode of the listening socket bound at `path` in a `/proc/net/unix` table
/// ("Num RefCount Protocol Flags Type St Inode Path"; a listener has flag __SO_ACCEPTCON).
fn listening_inode(table: &str, path: &str) -> Option<u64> {
    const ACCEPTCON: u32 = 0x0001_0000;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (flags, inode, bound) = (fields.get(3)?, fields.get(6)?, fields.get(7)?);
        let listening = u32::from_str_radix(flags, 16).ok()? & ACCEPTCON != 0;
        (listening && *bound == path).then(|| inode.parse().ok())?
    })
}

/// What a QEMU command line says of its VM: `-name` and `-uuid`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandLine {
    /// `-name NAME` or `-name guest=NAME,...`.
    pub name: Option<String>,
    /// `-uuid UUID`.
    pub uuid: Option<String>,
}

/// Reads `/proc/PID/cmdline`; None when the process is gone.
pub fn command_line(proc_root: &Path, pid: u32) -> Option<CommandLine> {
    let raw = std::fs::read(proc_root.join(pid.to_string()).join("cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(parse_command_line(&args))
}

/// `-name` and `-uuid` of QEMU arguments (`--name` too; QEMU accepts both spellings).
pub fn parse_command_line(args: &[String]) -> CommandLine {
    let mut line = CommandLine::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let key = arg.trim_start_matches('-');
        if !arg.starts_with('-') || !(key == "name" || key == "uuid") {
            continue;
        }
        let Some(value) = it.next() else { break };
        if key == "uuid" {
            line.uuid = Some(value.clone());
            continue;
        }
        // "-name guest=NAME,debug-threads=on" or "-name NAME[,process=..]"; ",," escapes a
        // comma inside the name.
        let first = split_options(value).into_iter().next().unwrap_or_default();
        let name = first.strip_prefix("guest=").unwrap_or(&first).to_string();
        let named = split_options(value)
            .into_iter()
            .find_map(|o| o.strip_prefix("guest=").map(String::from));
        line.name = named.or(Some(name)).filter(|n| !n.is_empty());
    }
    line
}

/// QEMU option text split at single commas (",," is a literal comma).
fn split_options(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut part = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != ',' {
            part.push(c);
        } else if chars.peek() == Some(&',') {
            chars.next();
            part.push(',');
        } else {
            parts.push(std::mem::take(&mut part));
        }
    }
    parts.push(part);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split(' ').map(String::from).collect()
    }

    #[test]
    fn name_and_uuid_from_the_command_line_in_every_spelling() {
        let cl = parse_command_line(&args(
            "qemu-system-x86_64 -enable-kvm -name guest=train-7,debug-threads=on -uuid 6b1c7a3e-0c2f-4c7e-9a53-2f0c1e9d8a11",
        ));
        assert_eq!(cl.name.as_deref(), Some("train-7"));
        assert_eq!(
            cl.uuid.as_deref(),
            Some("6b1c7a3e-0c2f-4c7e-9a53-2f0c1e9d8a11")
        );
        let cl = parse_command_line(&args("qemu --name a,,b,process=x"));
        assert_eq!(cl.name.as_deref(), Some("a,b"));
        assert_eq!(
            parse_command_line(&args("qemu -m 128")),
            CommandLine::default()
        );
        assert_eq!(
            parse_command_line(&args("qemu -name")),
            CommandLine::default()
        );
    }

    #[test]
    fn the_listening_inode_is_the_one_bound_at_the_path_with_acceptcon() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 111 /run/qemu/a.qmp\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 222 /run/qemu/a.qmp\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 333 /run/qemu/b.qmp\n\
            0000000000000000: 00000002 00000000 00000000 0002 01 444\n";
        assert_eq!(listening_inode(table, "/run/qemu/a.qmp"), Some(222));
        assert_eq!(listening_inode(table, "/run/qemu/c.qmp"), None);
    }

    #[test]
    fn a_listener_of_this_process_is_found_by_inode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.qmp");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(
            listener_pid(Path::new("/proc"), &path),
            Some(std::process::id())
        );
        let stream = UnixStream::connect(&path).unwrap();
        assert_eq!(peer_pid(&stream), Some(std::process::id()));
    }
}
