//! The per-frame processing pipeline shared by the live daemon (`pleura serve`) and
//! offline replay: a [`Stage`] turns one RF frame of a scan into named result fields.
//!
//! A stage keeps whatever it precomputes per scan (a beamforming plan, a model on a
//! device) and rebuilds it when the scan changes; the daemon's worker owns one stage and
//! calls it on a blocking thread, one frame at a time. Results are
//! [`crate::protocol::Field`]s so they go on the wire as they are.
//!
//! Stages (chosen by `[daemon] stage`):
//! - [`StageKind::None`]: no processing; results carry only the header (sequence number,
//!   timestamps, latency). Used to relay and to benchmark ingest.
//!
//! The reconstruction stage (posterior mean, standard deviation, mean aeration with its
//! confidence interval, category) is another implementation of [`Stage`] producing
//! those fields; nothing in the daemon depends on which stage runs.

use std::sync::Arc;

use ndarray::Array4;

use crate::config::StageKind;
use crate::protocol::Field;
use crate::recording::Scan;

/// Errors of a processing stage, naming the scan or frame they concern.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("scan {scan_id}: the {stage} stage cannot process it: {message}")]
    Scan {
        scan_id: u64,
        stage: &'static str,
        message: String,
    },
    #[error("frame {sequence}: the {stage} stage failed: {message}")]
    Frame {
        sequence: u64,
        stage: &'static str,
        message: String,
    },
}

/// One frame handed to a stage.
#[derive(Clone, Debug)]
pub struct FrameInput<'a> {
    /// The scan id the frame belongs to (its parameters are `scan`).
    pub scan_id: u64,
    pub scan: &'a Arc<Scan>,
    pub sequence: u64,
    /// Acquisition time, ns since the UNIX epoch.
    pub timestamp_ns: u64,
    /// RF or I/Q samples, (n_tx, n_ax, n_el, n_ch).
    pub data: &'a Array4<f32>,
}

/// A per-frame processor.
pub trait Stage: Send {
    /// Short name (`das`, `none`, ...), used in logs and errors.
    fn name(&self) -> &'static str;

    /// Where the stage computes (`cpu`, `cuda:0`, ...), reported in `/metrics`.
    fn device(&self) -> String;

    /// Processes one frame; the fields are published as the frame's result.
    fn process(&mut self, frame: &FrameInput<'_>) -> Result<Vec<Field>, PipelineError>;
}

/// The stage that does nothing: results carry only their header.
#[derive(Debug, Default)]
pub struct NoStage;

impl Stage for NoStage {
    fn name(&self) -> &'static str {
        "none"
    }

    fn device(&self) -> String {
        "cpu".into()
    }

    fn process(&mut self, _frame: &FrameInput<'_>) -> Result<Vec<Field>, PipelineError> {
        Ok(Vec::new())
    }
}

/// Builds the configured stage.
pub fn build(kind: StageKind) -> Box<dyn Stage> {
    match kind {
        StageKind::None => Box::new(NoStage),
    }
}
