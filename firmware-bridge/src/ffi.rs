//! The C ABI of the bridge, declared in `firmware-bridge/include/pleura_bridge.h`
//! (hand-kept; `tests/c/stream_frames.c` compiles against it).
//!
//! Every function returns a status code (`PLEURA_OK` = 0); `pleura_bridge_status_message`
//! names a code and `pleura_bridge_last_error` gives the detailed message of the last
//! failure on the calling thread. No Rust panic crosses the boundary: a panic becomes
//! `PLEURA_ERR_INTERNAL`. A handle must not be used from two threads at once.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use crate::protocol::{Dtype, Field, FieldData, Key, MAX_NDIM};
use crate::publisher::{now_ns, BridgeError, Mode, Publisher};

pub const PLEURA_OK: i32 = 0;
pub const PLEURA_ERR_ARGUMENT: i32 = 1;
pub const PLEURA_ERR_ENDPOINT: i32 = 2;
pub const PLEURA_ERR_KEY: i32 = 3;
pub const PLEURA_ERR_TIMEOUT: i32 = 4;
pub const PLEURA_ERR_NO_SCAN: i32 = 5;
pub const PLEURA_ERR_PAYLOAD: i32 = 6;
pub const PLEURA_ERR_SEND: i32 = 7;
pub const PLEURA_ERR_RUNTIME: i32 = 8;
pub const PLEURA_ERR_INTERNAL: i32 = 9;
/// The handle announced 2^32 scans (every scan epoch): open a new one.
pub const PLEURA_ERR_EPOCHS: i32 = 10;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn fail(code: i32, message: &str) -> i32 {
    set_error(message);
    code
}

fn bridge_error(e: BridgeError) -> i32 {
    let code = match &e {
        BridgeError::Runtime(_) => PLEURA_ERR_RUNTIME,
        BridgeError::Endpoint { .. } => PLEURA_ERR_ENDPOINT,
        BridgeError::ConnectTimeout { .. } => PLEURA_ERR_TIMEOUT,
        BridgeError::Field(_) => PLEURA_ERR_ARGUMENT,
        BridgeError::Payload { .. } => PLEURA_ERR_PAYLOAD,
        BridgeError::NoScan => PLEURA_ERR_NO_SCAN,
        BridgeError::Send(_) => PLEURA_ERR_SEND,
        BridgeError::EpochsExhausted => PLEURA_ERR_EPOCHS,
    };
    fail(code, &e.to_string())
}

/// Runs `f`, turning a panic into `PLEURA_ERR_INTERNAL`.
fn guard(f: impl FnOnce() -> i32) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(code) => code,
        Err(_) => fail(
            PLEURA_ERR_INTERNAL,
            "internal error (panic) in pleura_bridge",
        ),
    }
}

/// Opaque handle (`pleura_bridge` in C).
pub struct PleuraBridge {
    publisher: Publisher,
    endpoint: CString,
}

/// One scan field for `pleura_bridge_publish_scan` (`pleura_scan_field` in C).
#[repr(C)]
pub struct PleuraScanField {
    pub name: *const c_char,
    pub ndim: u32,
    pub dims: *const u32,
    pub values: *const f64,
}

unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, i32> {
    if p.is_null() {
        return Err(fail(PLEURA_ERR_ARGUMENT, &format!("{what} is NULL")));
    }
    CStr::from_ptr(p)
        .to_str()
        .map_err(|_| fail(PLEURA_ERR_ARGUMENT, &format!("{what} is not UTF-8")))
}

/// Opens a publisher. `mode`: 0 bind, 1 connect. `key_file`: NULL for no authentication,
/// else a file with the key in hexadecimal. `timeout_ms`: how long connecting may take.
///
/// # Safety
/// `endpoint` (and `key_file` unless NULL) must be NUL-terminated strings; `out` must be
/// a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn pleura_bridge_open(
    endpoint: *const c_char,
    mode: i32,
    key_file: *const c_char,
    timeout_ms: u32,
    out: *mut *mut PleuraBridge,
) -> i32 {
    guard(|| {
        if out.is_null() {
            return fail(PLEURA_ERR_ARGUMENT, "out is NULL");
        }
        *out = std::ptr::null_mut();
        let endpoint = match str_arg(endpoint, "endpoint") {
            Ok(s) => s,
            Err(code) => return code,
        };
        let mode = match mode {
            0 => Mode::Bind,
            1 => Mode::Connect,
            other => {
                return fail(
                    PLEURA_ERR_ARGUMENT,
                    &format!("mode {other} is neither 0 (bind) nor 1 (connect)"),
                )
            }
        };
        let key = if key_file.is_null() {
            None
        } else {
            let path = match str_arg(key_file, "key_file") {
                Ok(s) => s,
                Err(code) => return code,
            };
            match Key::from_file(Path::new(path)) {
                Ok(k) => Some(k),
                Err(e) => return fail(PLEURA_ERR_KEY, &e.to_string()),
            }
        };
        match Publisher::open(
            endpoint,
            mode,
            key,
            Duration::from_millis(timeout_ms as u64),
        ) {
            Ok(publisher) => {
                let endpoint = CString::new(publisher.endpoint()).unwrap_or_default();
                *out = Box::into_raw(Box::new(PleuraBridge {
                    publisher,
                    endpoint,
                }));
                PLEURA_OK
            }
            Err(e) => bridge_error(e),
        }
    })
}

/// The endpoint with its port resolved (valid until `pleura_bridge_close`).
///
/// # Safety
/// `bridge` must be a handle from `pleura_bridge_open` or NULL.
#[no_mangle]
pub unsafe extern "C" fn pleura_bridge_endpoint(bridge: *const PleuraBridge) -> *const c_char {
    match bridge.as_ref() {
        Some(b) => b.endpoint.as_ptr(),
        None => std::ptr::null(),
    }
}

/// Waits up to `timeout_ms` for a subscriber; `PLEURA_ERR_TIMEOUT` if none came.
///
/// # Safety
/// `bridge` must be a handle from `pleura_bridge_open`.
#[no_mangle]
pub unsafe extern "C" fn pleura_bridge_wait_for_subscriber(
    bridge: *mut PleuraBridge,
    timeout_ms: u32,
) -> i32 {
    guard(|| {
        let Some(b) = bridge.as_mut() else {
            return fail(PLEURA_ERR_ARGUMENT, "bridge is NULL");
        };
        if b.publisher
            .wait_for_subscriber(Duration::from_millis(timeout_ms as u64))
        {
            PLEURA_OK
        } else {
            fail(PLEURA_ERR_TIMEOUT, "no subscriber connected in time")
        }
    })
}

/// Publishes scan parameters (float64 fields named as in docs/protocol.md).
///
/// # Safety
/// `bridge` must be a handle; `fields` must point to `n_fields` fields whose `name` is a
/// NUL-terminated string, `dims` points to `ndim` values (may be NULL when ndim is 0) and
/// `values` to product(dims) doubles.
#[no_mangle]
pub unsafe extern "C" fn pleura_bridge_publish_scan(
    bridge: *mut PleuraBridge,
    scan_id: u64,
    fields: *const PleuraScanField,
    n_fields: usize,
) -> i32 {
    guard(|| {
        let Some(b) = bridge.as_mut() else {
            return fail(PLEURA_ERR_ARGUMENT, "bridge is NULL");
        };
        if fields.is_null() && n_fields > 0 {
            return fail(PLEURA_ERR_ARGUMENT, "fields is NULL");
        }
        let mut out = Vec::with_capacity(n_fields);
        for i in 0..n_fields {
            let f = &*fields.add(i);
            let name = match str_arg(f.name, "field name") {
                Ok(s) => s,
                Err(code) => return code,
            };
            let ndim = f.ndim as usize;
            if ndim > MAX_NDIM || (ndim > 0 && f.dims.is_null()) {
                return fail(
                    PLEURA_ERR_ARGUMENT,
                    &format!("field {name}: bad ndim {ndim} or NULL dims"),
                );
            }
            let dims: Vec<u32> = if ndim == 0 {
                Vec::new()
            } else {
                std::slice::from_raw_parts(f.dims, ndim).to_vec()
            };
            let Some(count) = dims
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d as usize))
            else {
                return fail(
                    PLEURA_ERR_ARGUMENT,
                    &format!("field {name}: shape overflows"),
                );
            };
            if f.values.is_null() && count > 0 {
                return fail(
                    PLEURA_ERR_ARGUMENT,
                    &format!("field {name}: values is NULL"),
                );
            }
            let values = if count == 0 {
                Vec::new()
            } else {
                std::slice::from_raw_parts(f.values, count).to_vec()
            };
            out.push(Field {
                name: name.to_string(),
                shape: dims,
                data: FieldData::F64(values),
            });
        }
        match b.publisher.publish_scan(scan_id, out) {
            Ok(()) => PLEURA_OK,
            Err(e) => bridge_error(e),
        }
    })
}

fn dtype_arg(dtype: i32) -> Result<Dtype, i32> {
    match u8::try_from(dtype).ok().and_then(Dtype::from_u8) {
        Some(d @ (Dtype::I16 | Dtype::F32)) => Ok(d),
        _ => Err(fail(
            PLEURA_ERR_ARGUMENT,
            &format!("dtype {dtype} is neither 1 (int16) nor 2 (float32)"),
        )),
    }
}

/// Checks the arguments both frame-publishing functions share; `timestamp_ns` 0 becomes now.
///
/// # Safety
/// As `pleura_bridge_publish_frame`.
unsafe fn frame_args<'a>(
    bridge: *mut PleuraBridge,
    timestamp_ns: u64,
    dtype: i32,
    shape: *const u32,
    data: *const c_void,
    len: usize,
) -> Result<(&'a mut PleuraBridge, Dtype, [u32; 4], u64), i32> {
    let Some(b) = bridge.as_mut() else {
        return Err(fail(PLEURA_ERR_ARGUMENT, "bridge is NULL"));
    };
    let dtype = dtype_arg(dtype)?;
    if shape.is_null() || (data.is_null() && len > 0) {
        return Err(fail(PLEURA_ERR_ARGUMENT, "shape or data is NULL"));
    }
    let mut s = [0u32; 4];
    s.copy_from_slice(std::slice::from_raw_parts(shape, 4));
    let ts = if timestamp_ns == 0 {
        now_ns()
    } else {
        timestamp_ns
    };
    Ok((b, dtype, s, ts))
}

/// Publishes one frame, copying `len` bytes at `data`. `timestamp_ns` 0 means now.
///
/// # Safety
/// `bridge` must be a handle, `shape` point to 4 values, `data` to `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn pleura_bridge_publish_frame(
    bridge: *mut PleuraBridge,
    scan_id: u64,
    sequence: u64,
    timestamp_ns: u64,
    dtype: i32,
    shape: *const u32,
    data: *const c_void,
    len: usize,
) -> i32 {
    guard(|| {
        let (b, dtype, s, ts) = match frame_args(bridge, timestamp_ns, dtype, shape, data, len) {
            Ok(args) => args,
            Err(code) => return code,
        };
        let payload = if len == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(data as *const u8, len)
        };
        match b
            .publisher
            .publish_frame(scan_id, sequence, ts, dtype, s, payload)
        {
            Ok(()) => PLEURA_OK,
            Err(e) => bridge_error(e),
        }
    })
}

/// A caller's buffer lent to the socket until `release(data, ctx)` is called.
struct Lent {
    data: *const u8,
    len: usize,
    release: Option<unsafe extern "C" fn(*const c_void, *mut c_void)>,
    ctx: *mut c_void,
}

// SAFETY: the caller of pleura_bridge_publish_frame_nocopy promises the buffer stays
// valid and unmodified until release runs, and that release may run on any thread.
unsafe impl Send for Lent {}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: see `unsafe impl Send for Lent`.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(release) = self.release {
            // SAFETY: the caller's callback, called exactly once with its own arguments.
            unsafe { release(self.data as *const c_void, self.ctx) };
        }
    }
}

/// Publishes one frame without copying: the socket reads `data` while sending and calls
/// `release(data, ctx)` (possibly from another thread, possibly before this function
/// returns) once it no longer needs it; it is called exactly once, also on error.
///
/// # Safety
/// As `pleura_bridge_publish_frame`; moreover the buffer must stay valid and unmodified
/// until `release` is called, and `release` must be safe to call from any thread.
#[no_mangle]
pub unsafe extern "C" fn pleura_bridge_publish_frame_nocopy(
    bridge: *mut PleuraBridge,
    scan_id: u64,
    sequence: u64,
    timestamp_ns: u64,
    dtype: i32,
    shape: *const u32,
    data: *const c_void,
    len: usize,
    release: Option<unsafe extern "C" fn(*const c_void, *mut c_void)>,
    ctx: *mut c_void,
) -> i32 {
    let lent = Lent {
        data: data as *const u8,
        len: if data.is_null() { 0 } else { len },
        release,
        ctx,
    };
    guard(move || {
        let (b, dtype, s, ts) = match frame_args(bridge, timestamp_ns, dtype, shape, data, len) {
            Ok(args) => args,
            Err(code) => return code,
        };
        match b.publisher.publish_frame_bytes(
            scan_id,
            sequence,
            ts,
            dtype,
            s,
            Bytes::from_owner(lent),
        ) {
            Ok(()) => PLEURA_OK,
            Err(e) => bridge_error(e),
        }
    })
}

/// Closes the publisher and frees the handle (NULL is ignored).
///
/// # Safety
/// `bridge` must be a handle from `pleura_bridge_open` not closed before, or NULL.
#[no_mangle]
pub unsafe extern "C" fn pleura_bridge_close(bridge: *mut PleuraBridge) {
    if !bridge.is_null() {
        let b = Box::from_raw(bridge);
        let _ = catch_unwind(AssertUnwindSafe(move || drop(b)));
    }
}

/// A static description of a status code.
#[no_mangle]
pub extern "C" fn pleura_bridge_status_message(status: i32) -> *const c_char {
    let s: &'static CStr = match status {
        PLEURA_OK => c"ok",
        PLEURA_ERR_ARGUMENT => c"invalid argument",
        PLEURA_ERR_ENDPOINT => c"cannot bind or connect the endpoint",
        PLEURA_ERR_KEY => c"cannot load the key file",
        PLEURA_ERR_TIMEOUT => c"timed out",
        PLEURA_ERR_NO_SCAN => c"no scan published before the frame",
        PLEURA_ERR_PAYLOAD => c"payload length does not match shape and dtype",
        PLEURA_ERR_SEND => c"send failed",
        PLEURA_ERR_RUNTIME => c"cannot start the bridge's runtime",
        PLEURA_ERR_INTERNAL => c"internal error",
        PLEURA_ERR_EPOCHS => c"the handle announced 2^32 scans: open a new one",
        _ => c"unknown status code",
    };
    s.as_ptr()
}

/// The detailed message of the last failure on the calling thread ("" if none); valid
/// until the next call into the library on this thread.
#[no_mangle]
pub extern "C" fn pleura_bridge_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Now, ns since the UNIX epoch (the protocol's timestamp clock).
#[no_mangle]
pub extern "C" fn pleura_bridge_now_ns() -> u64 {
    now_ns()
}
