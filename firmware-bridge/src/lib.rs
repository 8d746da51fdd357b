//! pleura_bridge: the scanner side of pleura.
//!
//! Acquisition firmware links this library (as an rlib from Rust or as a C shared library
//! through `pleura_bridge.h`) to publish scan parameters and RF frames to a `pleura serve`
//! daemon. The wire protocol codec lives here ([`protocol`]) so that the daemon and the
//! bridge share one implementation.

pub mod protocol;
