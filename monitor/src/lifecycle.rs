//! libvirt domain events: a VM that starts, stops, has its pins changed, a device (a GPU)
//! hot-plugged or its metadata (a GPU declaration) changed through libvirt raises a flag
//! that makes the engine rescan at once, so the policy places a new VM when it starts
//! instead of at the next periodic rescan. While the
//! events arrive, the periodic rescan is only a safety net and can be slow; while they do not
//! (libvirtd away, registration refused), [`Lifecycle::connected`] says so and the engine
//! rescans often instead.
//!
//! The `virt` crate has libvirt's event loop but no domain event registration, so this module
//! holds the one small unsafe layer over `virConnectDomainEventRegisterAny` (virt-sys). Events
//! come on a thread of their own with a connection of its own, reopened when libvirtd
//! restarts; the engine only reads an atomic flag.

use std::ffi::c_void;
use std::os::raw::{c_char, c_int};
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
        /// Which events ("lifecycle", "tunable", "device-added", ...).
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
    /// Whether the callbacks are registered on a live connection (events can arrive).
    connected: Arc<AtomicBool>,
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
        let connected = Arc::new(AtomicBool::new(false));
        let (thread_flag, thread_connected, uri) =
            (flag.clone(), connected.clone(), uri.to_string());
        std::thread::Builder::new()
            .name("pinsight-events".into())
            .spawn(move || {
                // This thread lives as long as the process; if it dies, the process goes
                // with it (non-zero, with the reason) rather than silently missing events.
                crate::fatal::exit_on_panic("the libvirt event thread", || {
                    listen(&uri, &thread_flag, &thread_connected)
                })
            })
            .map_err(LifecycleError::Thread)?;
        Ok(Lifecycle { flag, connected })
    }

    /// Whether events can arrive now: the callbacks are registered on a live connection.
    /// False from the start until the first registration, and while libvirtd is away.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
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
fn listen(uri: &str, flag: &Arc<AtomicBool>, connected: &AtomicBool) {
    let (mut logged_down, mut first) = (false, true);
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
        } else if std::mem::take(&mut first) {
            tracing::info!(uri, "libvirt events: listening (a VM start or stop, a pin change, a hot-plug or a metadata change makes a rescan at once)");
        }
        // Events may have been missed while disconnected.
        connected.store(true, Ordering::Release);
        flag.store(true, Ordering::Release);
        while conn.is_alive().unwrap_or(false) {
            if let Err(e) = virt::event::event_run_default_impl() {
                tracing::warn!(error = %e.message(), "libvirt event loop failed");
                std::thread::sleep(RECONNECT);
            }
        }
        connected.store(false, Ordering::Release);
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

/// Registers the lifecycle, tunable (pin change), device added/removed (hot-plug) and
/// metadata change callbacks for every domain.
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
    // SAFETY: as above, for the device added and removed events' signature (the same).
    let device: sys::virConnectDomainEventGenericCallback = unsafe {
        Some(std::mem::transmute::<
            unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *const c_char, *mut c_void),
            unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
        >(on_device))
    };
    // SAFETY: as above, for the metadata change event's signature.
    let metadata: sys::virConnectDomainEventGenericCallback = unsafe {
        Some(std::mem::transmute::<
            unsafe extern "C" fn(
                sys::virConnectPtr,
                sys::virDomainPtr,
                c_int,
                *const c_char,
                *mut c_void,
            ),
            unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
        >(on_metadata))
    };
    let mut ids = Vec::new();
    for (name, event, callback) in [
        ("lifecycle", sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle),
        ("tunable", sys::VIR_DOMAIN_EVENT_ID_TUNABLE, tunable),
        (
            "device-added",
            sys::VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
            device,
        ),
        (
            "device-removed",
            sys::VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
            device,
        ),
        // The operator's GPU declarations and pinsight's own records live in metadata.
        (
            "metadata-change",
            sys::VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
            metadata,
        ),
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
            let message = virt::error::Error::last_error().message().to_string();
            // The retry registers all of them again: none may stay behind twice.
            for id in ids {
                // SAFETY: `conn` is live and `id` a callback id it returned just now.
                unsafe { sys::virConnectDomainEventDeregisterAny(conn.as_ptr(), id) };
            }
            return Err(LifecycleError::Register {
                event: name,
                message,
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

unsafe extern "C" fn on_device(
    _conn: sys::virConnectPtr,
    _dom: sys::virDomainPtr,
    _alias: *const c_char,
    opaque: *mut c_void,
) {
    raise(opaque);
}

unsafe extern "C" fn on_metadata(
    _conn: sys::virConnectPtr,
    _dom: sys::virDomainPtr,
    _kind: c_int,
    _namespace: *const c_char,
    opaque: *mut c_void,
) {
    raise(opaque);
}

unsafe extern "C" fn free_flag(opaque: *mut c_void) {
    drop(Arc::from_raw(opaque as *const AtomicBool));
}
