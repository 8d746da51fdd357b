//! pleura: lung ultrasound reconstruction by diffusion posterior sampling, beside the scanner.
//!
//! # Layout
//!
//! One module per concept of the domain; data flows top to bottom:
//!
//! - [`recording`]: zea HDF5 recordings: typed scan parameters, lazy frame reader,
//!   incremental crash-safe recorder, pleura's additions under `pleura/`.
//! - [`device`]: compute device selection (`cpu`, `cuda:N`, `auto`).
//! - [`diffusion`]: the diffusion prior over aeration images: noise schedules, U-Net,
//!   DDPM/DDIM sampling with the per-step pieces posterior sampling uses, memorisation check.
//! - [`train`]: training of the prior (AdamW, EMA, atomic checkpoints, exact resumption).
//! - [`config`]: the daemon's TOML configuration (`config/pleura.toml`), strictly parsed.
//! - [`logging`]: `tracing` set-up (RUST_LOG-style filters, optional JSON lines).
//!
//! The `pleura` binary (`src/main.rs`, commands in `src/cli/`) is a thin layer over these:
//! it parses arguments, reports errors with `anyhow` and calls into the library.
//! The scanner side (wire protocol codec, C ABI) is the `pleura_bridge` crate in
//! `firmware-bridge/`.

pub mod config;
pub mod device;
pub mod diffusion;
pub mod logging;
pub mod recording;
pub mod train;
