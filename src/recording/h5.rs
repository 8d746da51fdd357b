//! Typed, validating access to HDF5 fields: every failure becomes a [`RecordingError`] naming
//! the field. Accepts what h5py writes (0-d scalars, any integer or float width).

use hdf5::types::{FixedAscii, FixedUnicode, TypeDescriptor, VarLenAscii, VarLenUnicode};
use hdf5::{Attribute, Container, Dataset, Group, Location};
use ndarray::Array2;

use super::error::RecordingError;

/// Longest fixed-length string attribute read (bytes).
const MAX_FIXED_STRING: usize = 4096;

/// Opens the group `name` inside `parent`; `field` is its full path for messages.
pub fn group(parent: &Group, name: &str, field: &str) -> Result<Group, RecordingError> {
    if !parent.link_exists(name) {
        return Err(RecordingError::Missing {
            field: field.to_string(),
        });
    }
    parent
        .group(name)
        .map_err(|e| RecordingError::hdf5(field, "open group", e))
}

/// Opens the dataset `name` inside `parent`, `None` when absent.
pub fn dataset_opt(
    parent: &Group,
    name: &str,
    field: &str,
) -> Result<Option<Dataset>, RecordingError> {
    if !parent.link_exists(name) {
        return Ok(None);
    }
    parent
        .dataset(name)
        .map(Some)
        .map_err(|e| RecordingError::hdf5(field, "open dataset", e))
}

/// Opens the required dataset `name` inside `parent`.
pub fn dataset(parent: &Group, name: &str, field: &str) -> Result<Dataset, RecordingError> {
    dataset_opt(parent, name, field)?.ok_or_else(|| RecordingError::Missing {
        field: field.to_string(),
    })
}

/// The datatype of a dataset.
pub fn descriptor(ds: &Dataset, field: &str) -> Result<TypeDescriptor, RecordingError> {
    ds.dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| RecordingError::hdf5(field, "read datatype", e))
}

fn is_numeric(d: &TypeDescriptor) -> bool {
    matches!(
        d,
        TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) | TypeDescriptor::Float(_)
    )
}

fn check_numeric(ds: &Dataset, field: &str) -> Result<TypeDescriptor, RecordingError> {
    let d = descriptor(ds, field)?;
    if is_numeric(&d) {
        Ok(d)
    } else {
        Err(RecordingError::DataType {
            field: field.to_string(),
            found: d.to_string(),
            expected: "an integer or floating-point number",
        })
    }
}

/// Reads a numeric dataset of any shape as flat f64, with its shape.
pub fn read_f64(ds: &Dataset, field: &str) -> Result<(Vec<f64>, Vec<usize>), RecordingError> {
    check_numeric(ds, field)?;
    let shape = ds.shape();
    let v = ds
        .read_raw::<f64>()
        .map_err(|e| RecordingError::hdf5(field, "read", e))?;
    Ok((v, shape))
}

/// Reads a numeric scalar: a 0-d dataset (as h5py writes) or one holding a single value.
pub fn read_scalar_f64(ds: &Dataset, field: &str) -> Result<f64, RecordingError> {
    let (v, shape) = read_f64(ds, field)?;
    if v.len() != 1 {
        return Err(RecordingError::shape(field, shape, "a scalar"));
    }
    Ok(v[0])
}

/// Reads the required scalar `name` inside `parent`.
pub fn scalar_f64(parent: &Group, name: &str, field: &str) -> Result<f64, RecordingError> {
    read_scalar_f64(&dataset(parent, name, field)?, field)
}

/// Reads the required count `name`: a non-negative integral scalar.
pub fn scalar_count(parent: &Group, name: &str, field: &str) -> Result<usize, RecordingError> {
    let ds = dataset(parent, name, field)?;
    let d = check_numeric(&ds, field)?;
    let shape = ds.shape();
    let (value, shown) = if matches!(d, TypeDescriptor::Float(_)) {
        let v = read_scalar_f64(&ds, field)?;
        if !(v.is_finite() && v.fract() == 0.0) {
            return Err(RecordingError::value(field, v, "must be a whole number"));
        }
        (v as i128, v.to_string())
    } else {
        let v = ds
            .read_raw::<i64>()
            .map_err(|e| RecordingError::hdf5(field, "read", e))?;
        if v.len() != 1 {
            return Err(RecordingError::shape(field, shape, "a scalar"));
        }
        (i128::from(v[0]), v[0].to_string())
    };
    usize::try_from(value).map_err(|_| RecordingError::value(field, shown, "must not be negative"))
}

/// Reads the required 1-d array `name` of length `len`.
pub fn vec_f64(
    parent: &Group,
    name: &str,
    field: &str,
    len: usize,
) -> Result<Vec<f64>, RecordingError> {
    let (v, shape) = read_f64(&dataset(parent, name, field)?, field)?;
    if shape != [len] {
        return Err(RecordingError::shape(field, shape, format!("[{len}]")));
    }
    Ok(v)
}

/// Reads a 2-d array of shape `(rows, cols)`; `rows = None` accepts any number of rows.
pub fn read_array2(
    ds: &Dataset,
    field: &str,
    rows: Option<usize>,
    cols: usize,
    expected: &str,
) -> Result<Array2<f64>, RecordingError> {
    let (v, shape) = read_f64(ds, field)?;
    let ok = shape.len() == 2 && rows.is_none_or(|r| shape[0] == r) && shape[1] == cols;
    if !ok {
        return Err(RecordingError::shape(field, shape, expected));
    }
    Array2::from_shape_vec((shape[0], shape[1]), v)
        .map_err(|e| RecordingError::value(field, format!("{} values", e), "inconsistent size"))
}

/// Reads the required 2-d array `name` of shape `(rows, cols)`.
pub fn array2(
    parent: &Group,
    name: &str,
    field: &str,
    rows: usize,
    cols: usize,
    expected: &str,
) -> Result<Array2<f64>, RecordingError> {
    read_array2(
        &dataset(parent, name, field)?,
        field,
        Some(rows),
        cols,
        expected,
    )
}

/// Opens an attribute with its type, `None` when absent.
fn open_attr(
    loc: &Location,
    name: &str,
    field: &str,
) -> Result<Option<(Attribute, TypeDescriptor)>, RecordingError> {
    let names = loc
        .attr_names()
        .map_err(|e| RecordingError::hdf5(field, "list attributes", e))?;
    if !names.iter().any(|n| n == name) {
        return Ok(None);
    }
    let attr = loc
        .attr(name)
        .map_err(|e| RecordingError::hdf5(field, "open attribute", e))?;
    let d = attr
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| RecordingError::hdf5(field, "read datatype", e))?;
    Ok(Some((attr, d)))
}

/// Reads a scalar string of datatype `d` from an attribute or a dataset. Accepts
/// variable- and fixed-length, ASCII and UTF-8 strings.
fn read_string(c: &Container, d: TypeDescriptor, field: &str) -> Result<String, RecordingError> {
    let read_err = |e| RecordingError::hdf5(field, "read", e);
    Ok(match d {
        TypeDescriptor::VarLenUnicode => c
            .read_scalar::<VarLenUnicode>()
            .map_err(read_err)?
            .to_string(),
        TypeDescriptor::VarLenAscii => c
            .read_scalar::<VarLenAscii>()
            .map_err(read_err)?
            .to_string(),
        TypeDescriptor::FixedAscii(n) if n <= MAX_FIXED_STRING => c
            .read_scalar::<FixedAscii<MAX_FIXED_STRING>>()
            .map_err(read_err)?
            .to_string(),
        TypeDescriptor::FixedUnicode(n) if n <= MAX_FIXED_STRING => c
            .read_scalar::<FixedUnicode<MAX_FIXED_STRING>>()
            .map_err(read_err)?
            .to_string(),
        other => {
            return Err(RecordingError::DataType {
                field: field.to_string(),
                found: other.to_string(),
                expected: "a string",
            })
        }
    })
}

/// Reads a string attribute, `None` when absent.
pub fn string_attr(
    loc: &Location,
    name: &str,
    field: &str,
) -> Result<Option<String>, RecordingError> {
    let Some((attr, d)) = open_attr(loc, name, field)? else {
        return Ok(None);
    };
    read_string(&attr, d, field).map(Some)
}

/// Reads a numeric scalar attribute, `None` when absent.
pub fn f64_attr(loc: &Location, name: &str, field: &str) -> Result<Option<f64>, RecordingError> {
    let Some((attr, d)) = open_attr(loc, name, field)? else {
        return Ok(None);
    };
    if !is_numeric(&d) {
        return Err(RecordingError::DataType {
            field: field.to_string(),
            found: d.to_string(),
            expected: "an integer or floating-point number",
        });
    }
    let v = attr
        .read_raw::<f64>()
        .map_err(|e| RecordingError::hdf5(field, "read", e))?;
    if v.len() != 1 {
        return Err(RecordingError::shape(field, attr.shape(), "a scalar"));
    }
    Ok(Some(v[0]))
}

/// A string as HDF5's variable-length UTF-8 type.
fn varlen(value: &str, field: &str) -> Result<VarLenUnicode, RecordingError> {
    value
        .parse()
        .map_err(|_| RecordingError::value(field, format!("{value:?}"), "must not contain NUL"))
}

/// Writes a variable-length UTF-8 string attribute (as h5py writes `str`).
pub fn write_string_attr(
    loc: &Location,
    name: &str,
    value: &str,
    field: &str,
) -> Result<(), RecordingError> {
    let v = varlen(value, field)?;
    loc.new_attr::<VarLenUnicode>()
        .create(name)
        .and_then(|a| a.write_scalar(&v))
        .map_err(|e| RecordingError::hdf5(field, "write attribute", e))
}

/// Reads a scalar string dataset (as zea writes `probe/name` and track labels), `None`
/// when absent.
pub fn string_dataset(
    parent: &Group,
    name: &str,
    field: &str,
) -> Result<Option<String>, RecordingError> {
    let Some(ds) = dataset_opt(parent, name, field)? else {
        return Ok(None);
    };
    let d = descriptor(&ds, field)?;
    read_string(&ds, d, field).map(Some)
}

/// Writes a scalar variable-length UTF-8 string dataset (as h5py writes a `str`).
pub fn write_string_dataset(
    parent: &Group,
    name: &str,
    value: &str,
    field: &str,
) -> Result<(), RecordingError> {
    let v = varlen(value, field)?;
    parent
        .new_dataset::<VarLenUnicode>()
        .create(name)
        .and_then(|d| d.write_scalar(&v))
        .map_err(|e| RecordingError::hdf5(field, "write", e))
}

/// Writes a float64 scalar dataset (0-d, as h5py writes a Python float).
pub fn write_f64(parent: &Group, name: &str, field: &str, v: f64) -> Result<(), RecordingError> {
    parent
        .new_dataset::<f64>()
        .create(name)
        .and_then(|d| d.write_scalar(&v))
        .map_err(|e| RecordingError::hdf5(field, "write", e))
}

/// Writes an array dataset.
pub fn write_array<'a, A, T, D>(
    parent: &Group,
    name: &str,
    field: &str,
    a: A,
) -> Result<(), RecordingError>
where
    A: Into<ndarray::ArrayView<'a, T, D>>,
    T: hdf5::H5Type + 'a,
    D: ndarray::Dimension,
{
    parent
        .new_dataset_builder()
        .with_data(a)
        .create(name)
        .map(drop)
        .map_err(|e| RecordingError::hdf5(field, "write", e))
}

/// Marks the descriptor behind `file` close-on-exec and hands the file back, for chaining
/// after `File::create` / `File::open`: `File::open(p).and_then(close_on_exec)`.
///
/// HDF5's default (sec2) driver opens files without `O_CLOEXEC` and locks them with
/// `flock` on that descriptor. A child process started while the file is open (the
/// virtual scanner, PyMUST under `pleura bench`, a test's subscriber) inherits the
/// descriptor, and with it the lock, which then outlives pleura's own close for as long as
/// the child runs: nothing can open the file for writing (or at all, after a write) until
/// it exits.
pub fn close_on_exec(file: hdf5::File) -> hdf5::Result<hdf5::File> {
    let mut handle: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: `file.id()` is a valid open file id for the call; HDF5 writes a pointer to
    // the driver's handle into `handle`. The HDF5 library lock is held, as for any call.
    let status = hdf5::sync::sync(|| unsafe {
        hdf5_sys::h5f::H5Fget_vfd_handle(file.id(), hdf5_sys::h5p::H5P_DEFAULT, &mut handle)
    });
    if status < 0 || handle.is_null() {
        return Err(format!(
            "cannot get the file descriptor of {} (H5Fget_vfd_handle returned {status})",
            file.filename()
        )
        .into());
    }
    // SAFETY: the sec2 driver's handle is a pointer to its `int` descriptor, valid while
    // the file is open; pleura opens every file with that driver.
    let fd = unsafe { *(handle as *const libc::c_int) };
    // SAFETY: fcntl on a descriptor this process owns; F_GETFD/F_SETFD only touch its flags.
    let set = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) == 0
    };
    if !set {
        return Err(format!(
            "cannot mark the descriptor of {} close-on-exec: {}",
            file.filename(),
            std::io::Error::last_os_error()
        )
        .into());
    }
    Ok(file)
}
