//! pleura: lung ultrasound reconstruction by diffusion posterior sampling, beside the scanner.
//!
//! # Layout
//!
//! One module per concept of the domain, in the order a frame flows through them:
//!
//! - [`recording`]: zea HDF5 recordings: typed scan parameters, lazy frame reader,
//!   incremental crash-safe recorder, pleura's additions under `pleura/`.
//! - [`protocol`] (from `pleura_bridge`) and [`wire`]: the ZeroMQ wire protocol
//!   (`docs/protocol.md`) and its conversions to pleura's types: scan messages to a
//!   [`recording::Scan`], frame payloads to RF arrays, a stage's output (or a failed
//!   frame's reason) to result fields; nothing else builds protocol fields.
//! - [`device`]: compute device selection (`cpu`, `cuda:N`, `auto`).
//! - [`beamform`]: delay-and-sum of RF or I/Q channel data to I/Q images, envelope, B-mode.
//! - [`grid`]: the reconstruction grid (pixel centres below the probe) aeration lives on.
//! - [`operator`]: the measurement operator A (first-order Born pulse-echo model) mapping an
//!   aeration image to channel data, and its adjoint, on candle tensors; its spectral norm
//!   by power iteration.
//! - [`diffusion`]: the diffusion prior over aeration images: noise schedules, U-Net,
//!   DDPM/DDIM sampling with the per-step pieces posterior sampling uses, memorisation check.
//! - [`posterior`]: posterior sampling of one frame (DPS, DDS) on the scale-free problem,
//!   per-frame reconstruction with warm starts, the divergence guard and the lung's mean
//!   aeration with its 95 % interval.
//! - [`aeration`]: the aeration categories (edges at 60 % and 85 %, their names) and the
//!   95 % interval's normal quantile, shared by the live path and the offline modules.
//! - [`render`]: figures as PNG bytes: a frame's panel (B-mode, reconstruction,
//!   uncertainty, ground truth, with axes in mm, colour bars and the published aeration)
//!   and the aeration trend; used by `pleura replay --png` and the daemon's live view;
//!   the one grey-level PNG encoder.
//! - [`pipeline`]: the per-frame stage, built one way ([`pipeline::build`] from a
//!   [`pipeline::StageSpec`]) for `serve`, `replay` and `beamform`: DAS
//!   ([`pipeline::DasStage`]) or posterior sampling ([`pipeline::posterior`]), each frame
//!   to a typed [`pipeline::Output`] or a typed [`pipeline::PipelineError`]; and the caps a
//!   scan is sized against before the stage builds anything for it.
//! - [`daemon`]: `pleura serve`, ZeroMQ in (a ZMTP transport bounded in frame size,
//!   handshake time and connections: `vendor/zeromq/`) -> validation (per-stream scans,
//!   epochs and sequence windows in bounded tables) -> worker (payload -> stage ->
//!   [`wire`] result fields) -> ZeroMQ out;
//!   [`metrics`]: its counters and the admin HTTP server.
//! - [`config`]: the daemon's TOML configuration (`config/pleura.toml`), strictly parsed.
//! - [`logging`]: `tracing` set-up (RUST_LOG-style filters, optional JSON lines) and its
//!   `[log]` table, which [`config`] holds.
//!
//! # One frame's road
//!
//! Live, from the socket to the published result:
//! 1. `daemon` (ingest task): the ZeroMQ message is checked by `daemon::validate`
//!    (protocol decode, [`wire::scan_from_fields`] for scans, per-stream tables) and the
//!    accepted frame, with its payload as received, goes on the bounded latest-frame queue
//!    (`daemon::queue`), and to the recorder (`daemon::record`) when recording.
//! 2. `daemon` (worker thread): [`wire::payload_to_array`], then [`pipeline::Stage::process`]
//!    of the stage [`pipeline::build`] made: [`beamform`] on the [`grid`], and for the
//!    posterior stage the [`operator`] (cached per scan) and [`posterior`] sampling with the
//!    [`diffusion`] prior, summarised with [`aeration`]'s categories.
//! 3. [`wire::result_fields`] (or [`wire::failure_fields`] with the error's chain,
//!    [`logging::Chain`]) -> the sink task publishes the result message and hands it to the live view
//!    (`daemon::live`, drawn by [`render`]); [`metrics`] count every step.
//!
//! Offline, `replay` and `beamform` read frames with [`recording::Recording`] and run the
//! same stage, built by the same [`pipeline::build`], writing each [`pipeline::Output`]
//! (or failed row) to HDF5.
//!
//! Offline, beside the frame path (the modules above import none of them outside their
//! tests, which use [`simulate`] and `testing` for fixtures):
//!
//! - [`train`]: training of the prior (AdamW, EMA, atomic checkpoints, exact resumption).
//! - [`simulate`]: simulated linear probe, lung aeration phantoms, simulated recordings.
//! - [`baseline`]: classical reconstructions (DAS envelope, Tikhonov, total variation).
//! - [`eval`]: image and aeration metrics of reconstructions against ground truth.
//! - [`scanner`]: the virtual scanner behind the `pleura-bridge` binary (replays a
//!   recording through the bridge with injected faults).
//!
//! Beside both, hidden from the documentation: `testing`, the fixtures of the tests and
//! benches (a tiny scan, simulated linear arrays, the tiny lung grid, probe and model), one
//! copy each.
//!
//! The `pleura` binary (`src/main.rs`, commands in `src/cli/`) is a thin layer over these:
//! it parses arguments, reports errors with `anyhow` and calls into the library.
//! The scanner side (wire protocol codec, C ABI) is the `pleura_bridge` crate in
//! `firmware-bridge/`.

pub mod aeration;
pub mod baseline;
pub mod beamform;
pub mod config;
pub mod daemon;
pub mod device;
pub mod diffusion;
pub mod eval;
pub mod grid;
pub mod logging;
pub mod metrics;
pub mod operator;
pub mod pipeline;
pub mod posterior;
pub mod recording;
pub mod render;
pub mod scanner;
pub mod simulate;
#[doc(hidden)]
pub mod testing;
pub mod train;
pub mod wire;

/// The wire protocol codec, shared with the scanner side (`firmware-bridge/src/protocol/`).
pub use pleura_bridge::protocol;
