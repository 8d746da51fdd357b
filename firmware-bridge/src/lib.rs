//! pleura_bridge: the scanner side of pleura.
//!
//! Acquisition firmware links this library (as an rlib from Rust or as a C shared library
//! through `include/pleura_bridge.h`) to publish scan parameters and RF frames to a
//! `pleura serve` daemon:
//!
//! - [`protocol`]: the wire protocol codec (docs/protocol.md), the single implementation
//!   shared with the daemon (`pleura::protocol`); depends only on crc32c, hmac, sha2.
//! - [`publisher`]: a synchronous publisher over a pure-Rust ZeroMQ PUB socket.
//! - [`ffi`]: the C ABI over the publisher.

pub mod ffi;
pub mod protocol;
pub mod publisher;
