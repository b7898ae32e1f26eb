//! libvirt domain events: a VM that starts, stops or has its pins changed through libvirt
//! raises a flag that makes the engine rescan at once, so the policy places a new VM when it
//! starts instead of at the next periodic rescan.
//!
//! The `virt` crate has libvirt's event loop but no domain event registration, so this module
//! holds the one small unsafe layer over `virConnectDomainEventRegisterAny` (virt-sys). Events
//! come on a thread of their own with a connection of its own, reopened when libvirtd
//! restarts; the engine only reads an atomic flag.

use std::ffi::c_void;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use virt::connect::Connect;
use virt::sys;

/// The event thread could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// libvirt's default event loop could not be registered.
    #[error("cannot register libvirt's event loop: {message}")]
    EventLoop {
        /// libvirt's message.
        message: String,
    },
    /// libvirt refused a domain event callback.
    #[error("cannot register for libvirt's {event} events: {message}")]
    Register {
        /// Which events ("lifecycle", "tunable").
        event: &'static str,
        /// libvirt's message.
        message: String,
    },
    /// The thread could not be spawned.
    #[error("cannot start the libvirt event thread: {0}")]
    Thread(std::io::Error),
}

/// A running event listener; the flag says "something changed, rescan".
pub struct Lifecycle {
    flag: Arc<AtomicBool>,
}

/// Seconds between reconnection attempts while libvirtd is away.
const RECONNECT: Duration = Duration::from_secs(2);

impl Lifecycle {
    /// Starts listening on `uri` on a background thread (which lives as long as the process).
    pub fn start(uri: &str) -> Result<Lifecycle, LifecycleError> {
        // libvirt prints every error to stderr by default; failures are logged here instead.
        virt::error::clear_error_callback();
        register_event_loop()?;
        let flag = Arc::new(AtomicBool::new(false));
        let (thread_flag, uri) = (flag.clone(), uri.to_string());
        std::thread::Builder::new()
            .name("pinsight-events".into())
            .spawn(move || {
                // This thread lives as long as the process; if it dies, the process goes
                // with it (non-zero, with the reason) rather than silently missing events.
                crate::fatal::exit_on_panic("the libvirt event thread", || {
                    listen(&uri, &thread_flag)
                })
            })
            .map_err(LifecycleError::Thread)?;
        Ok(Lifecycle { flag })
    }

    /// Whether an event arrived since the last [`Lifecycle::take`].
    pub fn pending(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Whether an event arrived, clearing the flag.
    pub fn take(&self) -> bool {
        self.flag.swap(false, Ordering::AcqRel)
    }
}

/// libvirt wants its event loop registered once per process, before the connection opens.
fn register_event_loop() -> Result<(), LifecycleError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result =
            virt::event::event_register_default_impl().map_err(|e| LifecycleError::EventLoop {
                message: e.message().to_string(),
            });
    });
    result
}

/// Keeps a connection with registered callbacks and runs the event loop, forever.
fn listen(uri: &str, flag: &Arc<AtomicBool>) {
    let mut logged_down = false;
    loop {
        // Events need no write access.
        let conn = match Connect::open_read_only(Some(uri)) {
            Ok(conn) => conn,
            Err(e) => {
                if !logged_down {
                    tracing::warn!(uri, error = %e.message(), "libvirt events: cannot connect; retrying");
                    logged_down = true;
                }
                std::thread::sleep(RECONNECT);
                continue;
            }
        };
        // Keepalive makes the loop notice a dead libvirtd within seconds.
        let _ = conn.set_keep_alive(2, 3);
        let ids = match register(&conn, flag) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(uri, error = %e, "libvirt events: retrying");
                std::thread::sleep(RECONNECT);
                continue;
            }
        };
        if std::mem::take(&mut logged_down) {
            tracing::info!(uri, "libvirt events: connected again");
        }
        // Events may have been missed while disconnected.
        flag.store(true, Ordering::Release);
        while conn.is_alive().unwrap_or(false) {
            if let Err(e) = virt::event::event_run_default_impl() {
                tracing::warn!(error = %e.message(), "libvirt event loop failed");
                std::thread::sleep(RECONNECT);
            }
        }
        tracing::warn!(uri, "libvirt events: connection lost; reconnecting");
        logged_down = true;
        for id in ids {
            // SAFETY: `conn` is a live connection and `id` a callback id it returned.
            unsafe { sys::virConnectDomainEventDeregisterAny(conn.as_ptr(), id) };
        }
        drop(conn);
        std::thread::sleep(RECONNECT);
    }
}

/// Registers the lifecycle and tunable (pin change) callbacks for every domain.
fn register(conn: &Connect, flag: &Arc<AtomicBool>) -> Result<Vec<c_int>, LifecycleError> {
    // SAFETY: libvirt calls each callback with the argument list of its event id and casts
    // it to the generic type itself (VIR_DOMAIN_EVENT_CALLBACK in libvirt's headers); the
    // function pointer types have the same size and calling convention.
    let lifecycle: sys::virConnectDomainEventGenericCallback = unsafe {
        Some(std::mem::transmute::<
            unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_int, c_int, *mut c_void),
            unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
        >(on_lifecycle))
    };
    // SAFETY: as above, for the tunable event's signature.
    let tunable: sys::virConnectDomainEventGenericCallback = unsafe {
        Some(std::mem::transmute::<
            unsafe extern "C" fn(
                sys::virConnectPtr,
                sys::virDomainPtr,
                sys::virTypedParameterPtr,
                c_int,
                *mut c_void,
            ),
            unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
        >(on_tunable))
    };
    let mut ids = Vec::new();
    for (name, event, callback) in [
        ("lifecycle", sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle),
        ("tunable", sys::VIR_DOMAIN_EVENT_ID_TUNABLE, tunable),
    ] {
        // Each registration owns one strong count, given back by `free_flag`.
        let opaque = Arc::into_raw(flag.clone()) as *mut c_void;
        // SAFETY: `conn` is live; a null domain means every domain; `opaque` stays valid
        // until libvirt calls `free_flag` on it, exactly once.
        let id = unsafe {
            sys::virConnectDomainEventRegisterAny(
                conn.as_ptr(),
                std::ptr::null_mut(),
                event as c_int,
                callback,
                opaque,
                Some(free_flag),
            )
        };
        if id < 0 {
            // SAFETY: libvirt did not take the registration, so the count is still ours.
            unsafe { drop(Arc::from_raw(opaque as *const AtomicBool)) };
            return Err(LifecycleError::Register {
                event: name,
                message: virt::error::Error::last_error().message().to_string(),
            });
        }
        ids.push(id);
    }
    Ok(ids)
}

/// Raises the flag behind `opaque`.
///
/// # Safety
/// `opaque` must come from `Arc::into_raw` of an `Arc<AtomicBool>` still registered.
unsafe fn raise(opaque: *mut c_void) {
    let flag = &*(opaque as *const AtomicBool);
    flag.store(true, Ordering::Release);
}

unsafe extern "C" fn on_lifecycle(
    _conn: sys::virConnectPtr,
    _dom: sys::virDomainPtr,
    _event: c_int,
    _detail: c_int,
    opaque: *mut c_void,
) {
    raise(opaque);
}

unsafe extern "C" fn on_tunable(
    _conn: sys::virConnectPtr,
    _dom: sys::virDomainPtr,
    _params: sys::virTypedParameterPtr,
    _nparams: c_int,
    opaque: *mut c_void,
) {
    raise(opaque);
}

unsafe extern "C" fn free_flag(opaque: *mut c_void) {
    drop(Arc::from_raw(opaque as *const AtomicBool));
}
