//! A QMP conversation over a unix socket, every step within one deadline: connect without
//! waiting (a full backlog is an answer, not a wait), read the greeting, `qmp_capabilities`,
//! then commands one at a time. The socket is closed when the [`Session`] drops.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::reply::{self, Message, ReplyError};

/// Longest line pinsight reads from a QMP socket: far above any reply it asks for, and a
/// bound on what a socket that speaks garbage without a newline can make it buffer.
const MAX_LINE: usize = 1 << 20;
/// Most asynchronous events skipped while waiting for one reply.
const MAX_EVENTS: usize = 64;

/// A QMP socket that could not be used; names the socket and the step.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Nobody accepts connections there (a stale socket of an exited QEMU), or no access.
    #[error("QMP socket {}: cannot connect: {source}", socket.display())]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The connect error.
        source: std::io::Error,
    },
    /// The listener's backlog is full: other clients are queued on it already.
    #[error("QMP socket {}: busy (its listen backlog is full)", socket.display())]
    Backlog {
        /// The socket.
        socket: PathBuf,
    },
    /// The deadline passed during `step`.
    #[error("QMP socket {}: no answer to {step} within {:.1} s{hint}", socket.display(), budget.as_secs_f64())]
    Timeout {
        /// The socket.
        socket: PathBuf,
        /// What was waited for.
        step: String,
        /// The whole conversation's budget.
        budget: Duration,
        /// Why that may be.
        hint: &'static str,
    },
    /// QEMU closed the connection (it exited, say).
    #[error("QMP socket {}: closed during {step}", socket.display())]
    Closed {
        /// The socket.
        socket: PathBuf,
        /// What was going on.
        step: String,
    },
    /// Reading or writing failed.
    #[error("QMP socket {}: {step}: {source}", socket.display())]
    Io {
        /// The socket.
        socket: PathBuf,
        /// What was going on.
        step: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line that is not the expected QMP.
    #[error("QMP socket {}: {step}: {source}", socket.display())]
    Reply {
        /// The socket.
        socket: PathBuf,
        /// What was going on.
        step: String,
        /// What is wrong with the line.
        source: ReplyError,
    },
}

impl QmpError {
    /// Whether the socket file vanished (its QEMU exited cleanly between glob and connect).
    pub fn socket_gone(&self) -> bool {
        matches!(self, QmpError::Connect { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// A connected socket and the pid of the process listening on it.
pub struct Connection {
    stream: UnixStream,
    /// The peer's pid (SO_PEERCRED): the process that made the listening socket. Known as
    /// soon as connect returns, even when QEMU serves another client and never accepts us.
    pub peer_pid: Option<u32>,
}

/// Connects to `socket` without blocking: a unix connect completes at once or fails.
pub fn connect(socket: &Path) -> Result<Connection, QmpError> {
    let err = |source| QmpError::Connect {
        socket: socket.to_path_buf(),
        source,
    };
    let (addr, len) = sockaddr(socket).map_err(err)?;
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes that lives across the call.
    let rc = unsafe {
        libc::connect(
            owned.as_raw_fd(),
            std::ptr::addr_of!(addr).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EAGAIN) {
            return Err(QmpError::Backlog {
                socket: socket.to_path_buf(),
            });
        }
        return Err(err(e));
    }
    let stream = UnixStream::from(owned);
    stream.set_nonblocking(false).map_err(err)?;
    let peer_pid = super::peer::peer_pid(&stream);
    Ok(Connection { stream, peer_pid })
}

fn sockaddr(socket: &Path) -> Result<(libc::sockaddr_un, libc::socklen_t), std::io::Error> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain bytes; zeroed is an empty path.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = socket.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "path too long for a unix socket (or holds a NUL byte)",
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// A QMP session in command mode.
pub struct Session {
    reader: BufReader<UnixStream>,
    socket: PathBuf,
    deadline: Instant,
    budget: Duration,
    /// QEMU's version from the greeting.
    pub version: String,
}

impl Session {
    /// Reads the greeting and negotiates capabilities, by `deadline` (of a `budget`).
    pub fn open(
        conn: Connection,
        socket: &Path,
        deadline: Instant,
        budget: Duration,
    ) -> Result<Session, QmpError> {
        let mut session = Session {
            reader: BufReader::new(conn.stream),
            socket: socket.to_path_buf(),
            deadline,
            budget,
            version: String::new(),
        };
        let busy = ": QEMU serves one QMP client at a time, so another client may hold the \
                    socket (or QEMU is hung)";
        let line = session.read_line("the greeting", busy)?;
        let greeting =
            reply::parse_greeting(&line).map_err(|e| session.reply("the greeting", e))?;
        session.version = greeting.version;
        session.execute("qmp_capabilities", None)?;
        Ok(session)
    }

    /// Runs `command` (with `arguments`) and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut request = serde_json::json!({ "execute": command });
        if let Some(args) = arguments {
            request["arguments"] = args;
        }
        let mut line = request.to_string();
        line.push('\n');
        let step = format!("`{command}`");
        self.set_timeouts(&step)?;
        self.reader
            .get_mut()
            .write_all(line.as_bytes())
            .map_err(|e| self.io(&step, e))?;
        for _ in 0..MAX_EVENTS {
            let text = self.read_line(&step, "")?;
            match reply::parse_message(&text, command).map_err(|e| self.reply(&step, e))? {
                Message::Return(value) => return Ok(value),
                Message::Event(_) => continue,
            }
        }
        Err(self.reply(
            &step,
            ReplyError::Unexpected {
                expected: "a reply among the first 64 lines",
                start: "only events".into(),
            },
        ))
    }

    /// Runs `command` and reads its `return` value as `T` (`what` names the expected shape).
    pub fn query<T: serde::de::DeserializeOwned>(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        what: &'static str,
    ) -> Result<T, QmpError> {
        let value = self.execute(command, arguments)?;
        reply::decode(value, what).map_err(|e| self.reply(&format!("`{command}`"), e))
    }

    /// The remaining budget as the socket's timeouts; a timeout error once it is spent.
    fn set_timeouts(&mut self, step: &str) -> Result<(), QmpError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timeout(step, ""));
        }
        let stream = self.reader.get_ref();
        stream
            .set_read_timeout(Some(left))
            .and_then(|()| stream.set_write_timeout(Some(left)))
            .map_err(|e| self.io(step, e))
    }

    /// One line, each read bounded by what is left of the deadline.
    fn read_line(&mut self, step: &str, hint: &'static str) -> Result<String, QmpError> {
        let mut line = Vec::new();
        loop {
            self.set_timeouts(step).map_err(|e| match e {
                QmpError::Timeout { .. } => self.timeout(step, hint),
                other => other,
            })?;
            let buf = match self.reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => return Err(self.timeout(step, hint)),
                Err(e) => return Err(self.io(step, e)),
            };
            if buf.is_empty() {
                return Err(QmpError::Closed {
                    socket: self.socket.clone(),
                    step: step.into(),
                });
            }
            let (taken, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            line.extend_from_slice(&buf[..taken]);
            self.reader.consume(taken);
            if done {
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            if line.len() > MAX_LINE {
                let start = String::from_utf8_lossy(&line[..80]).into_owned();
                let e = ReplyError::Unexpected {
                    expected: "a line shorter than 1 MiB",
                    start,
                };
                return Err(self.reply(step, e));
            }
        }
    }

    fn timeout(&self, step: &str, hint: &'static str) -> QmpError {
        QmpError::Timeout {
            socket: self.socket.clone(),
            step: step.into(),
            budget: self.budget,
            hint,
        }
    }

    fn io(&self, step: &str, source: std::io::Error) -> QmpError {
        if is_timeout(&source) {
            return self.timeout(step, "");
        }
        QmpError::Io {
            socket: self.socket.clone(),
            step: step.into(),
            source,
        }
    }

    fn reply(&self, step: &str, source: ReplyError) -> QmpError {
        QmpError::Reply {
            socket: self.socket.clone(),
            step: step.into(),
            source,
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
