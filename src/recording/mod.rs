//! zea HDF5 recordings.

pub mod scan;

pub use scan::{Scan, TransmitKind};
