//! Delay-and-sum (DAS) beamforming of linear-array channel data onto a rectangular (x, z)
//! [`crate::grid::Grid`], for any transmit a zea scan describes (steered plane waves,
//! focused and diverging waves), coherently compounded over the transmits of a frame.
//!
//! Flow: RF is demodulated to I/Q ([`demod`], PyMUST `rf2iq` recipe) or I/Q is taken as
//! stored; a [`DasPlan`] built once per (scan, grid, options) holds every pixel's
//! (sample index, interpolation fraction, apodization) taps; [`Beamformer`] applies it to
//! frame after frame with preallocated buffers on all cores; [`bmode`] turns envelopes
//! into 8-bit log-compressed images. Conventions: `docs/beamforming.md`.

pub mod bmode;
pub mod demod;
mod error;
mod plan;
pub mod sim;

pub use error::BeamformError;
pub use plan::{Apodization, Beamformer, DasOptions, DasPlan};
