//! The per-frame processing stage: one RF frame of a scan in, one typed [`Output`] out.
//! `pleura serve`, `pleura replay` and `pleura beamform` build their stage with the one
//! builder here, [`build`], from a [`StageSpec`], and run every frame through
//! [`Stage::process`]; only [`crate::wire`] turns an output into protocol fields.
//!
//! A stage keeps whatever it precomputes per scan (a beamforming plan, a measurement
//! operator) and rebuilds it when the scan changes; the daemon's worker owns one stage and
//! calls it on a blocking thread, one frame at a time.
//!
//! Stages (chosen by `[daemon] stage`):
//! - [`StageKind::Das`] ([`das::DasStage`]): delay-and-sum beamforming on the configured
//!   grid or the scan's default one ([`crate::grid::Grid::default_for`]): the envelope and
//!   its B-mode, log-compressed against the frame's maximum ([`Output::Das`]).
//! - [`StageKind::Posterior`] ([`posterior::PosteriorStage`]): DAS for display and
//!   posterior sampling of the aeration image on a grid that follows the scan at the
//!   model's pixel pitch ([`posterior::ScanGrid`]; the model's own grid when the scan fits
//!   it) ([`Output::Posterior`]).
//! - [`StageKind::None`]: no processing ([`Output::Header`]); used to relay and to
//!   benchmark ingest.
//!
//! A frame a stage fails on is reported the same way on every road: a failed row in
//! replay's and beamform's files, a result message with the reason over the wire
//! ([`Output::failure`], or a [`PipelineError`] whose whole chain, printed by
//! [`crate::logging::Chain`], is the reason). Nothing in the daemon depends on which stage
//! runs.

pub mod das;
pub mod posterior;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::{Array2, Array4};

use crate::beamform::{BeamformError, DasOptions, DasPlan};
use crate::config::{Config, DaemonConfig, StageKind};
use crate::grid::{Grid, GridError, GridExtent};
use crate::operator::{OperatorError, OperatorOptions};
use crate::posterior::echo::Calibration;
use crate::posterior::{PosteriorError, SamplerConfig};
use crate::recording::Scan;
use crate::wire::WireError;

pub use das::DasStage;

/// Errors of a processing stage, naming the setting, scan or frame they concern; the
/// cause is the error's [`std::error::Error::source`] ([`crate::logging::Chain`] prints
/// the chain).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A setting the stage cannot be built with.
    #[error("[daemon] {message}")]
    Config { message: String },
    /// The model named by `[daemon] model` cannot be used.
    #[error("[daemon] model = \"{}\"", path.display())]
    Model {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("scan {scan_id}: the {stage} stage cannot process it")]
    Scan {
        scan_id: u64,
        stage: &'static str,
        #[source]
        source: ScanError,
    },
    #[error("frame {sequence}: the {stage} stage failed")]
    Frame {
        sequence: u64,
        stage: &'static str,
        #[source]
        source: FrameError,
    },
}

/// Why a stage cannot process a scan: nothing is built for it, and its frames fail.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Refused(#[from] ScanRefused),
    #[error(transparent)]
    Fit(#[from] posterior::FitError),
    #[error("its grid")]
    Grid(#[from] GridError),
    #[error("its DAS plan")]
    Plan(#[from] BeamformError),
    #[error("its measurement operator")]
    Operator(#[from] OperatorError),
    #[error("its measurement operator")]
    Normalisation(#[from] PosteriorError),
}

impl ScanError {
    /// This error as the `stage`'s, for scan `scan_id`.
    pub fn of(self, scan_id: u64, stage: &'static str) -> PipelineError {
        PipelineError::Scan {
            scan_id,
            stage,
            source: self,
        }
    }
}

/// Why a stage failed on one frame of a scan it can process.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("its payload")]
    Payload(#[from] WireError),
    #[error("beamforming")]
    Beamform(#[from] BeamformError),
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

impl<'a> FrameInput<'a> {
    /// Frame `frame` of a recording of `scan` (scan id 0), as the offline commands feed
    /// their stage.
    pub fn recorded(scan: &'a Arc<Scan>, frame: &'a crate::recording::Frame) -> Self {
        FrameInput {
            scan_id: 0,
            scan,
            sequence: frame.sequence_number,
            timestamp_ns: frame.timestamp_ns,
            data: &frame.data,
        }
    }
}

/// What a stage made of one frame.
#[derive(Clone, Debug)]
pub enum Output {
    /// The `none` stage: the result is its header alone.
    Header,
    Das(DasImage),
    Posterior(posterior::PosteriorFrame),
}

impl Output {
    /// Why the frame failed, when the stage gave an output for a failed frame (the
    /// posterior stage keeps the DAS image of a frame whose sampling failed).
    pub fn failure(&self) -> Option<&str> {
        match self {
            Output::Posterior(p) => p.failure(),
            Output::Header | Output::Das(_) => None,
        }
    }

    /// The posterior estimate of the frame, when the stage made one.
    pub fn estimate(&self) -> Option<&crate::posterior::frame::FrameEstimate> {
        match self {
            Output::Posterior(p) => match &p.outcome {
                crate::posterior::frame::FrameOutcome::Done(e) => Some(e),
                crate::posterior::frame::FrameOutcome::Failed { .. } => None,
            },
            Output::Header | Output::Das(_) => None,
        }
    }
}

/// A delay-and-sum image of one frame.
#[derive(Clone, Debug)]
pub struct DasImage {
    /// Envelope, data units, (nz, nx).
    pub envelope: Array2<f32>,
    /// The envelope log-compressed to the stage's dynamic range against its own maximum
    /// (a frame without signal is black), (nz, nx).
    pub bmode: Array2<u8>,
    pub grid: Arc<Grid>,
}

/// A per-frame processor.
pub trait Stage: Send {
    /// Short name (`das`, `none`, ...), used in logs and errors.
    fn name(&self) -> &'static str;

    /// Where the stage computes (`cpu`, `cuda:0`, ...), reported in `/metrics`.
    fn device(&self) -> String;

    /// Builds (or fetches) what the stage needs for `scan`, so that a scan it cannot
    /// process is refused before its first frame; [`Stage::process`] does it too.
    fn prepare(&mut self, _scan_id: u64, _scan: &Arc<Scan>) -> Result<(), PipelineError> {
        Ok(())
    }

    /// The image grid of the scan last prepared; None
    /// before any scan, or for a stage that makes no image.
    fn grid(&self) -> Option<Arc<Grid>> {
        None
    }

    /// Processes one frame.
    fn process(&mut self, frame: &FrameInput<'_>) -> Result<Output, PipelineError>;

    /// What the stage builds for a scan, so that a scan can be sized under `limits`
    /// before any frame of it reaches the stage (the daemon's validator checks it).
    fn scan_check(&self, limits: ScanLimits) -> ScanCheck {
        ScanCheck::frames_only(limits)
    }

    /// Measurement operators held for scans seen before, and how many were dropped to
    /// stay within `[daemon] max_operators` since the stage was built.
    fn operator_cache(&self) -> CacheCount {
        CacheCount::default()
    }

    /// The echo data term's calibration in force and its file (`[sampler] calibration`),
    /// reported in `/status` and `/metrics`; None for a stage without one.
    fn calibration(&self) -> Option<(&Path, &Calibration)> {
        None
    }
}

/// Everything a stage is built from: `[daemon]`'s stage settings and `[sampler]`, which
/// the offline commands adjust from their flags before calling [`build`].
#[derive(Clone, Debug, PartialEq)]
pub struct StageSpec {
    pub kind: StageKind,
    /// Receive beamforming (`[daemon] das_f_number`; Hann apodization unless changed).
    pub das: DasOptions,
    /// The DAS stage's fixed grid (`das_grid_x`, `das_grid_z`); None: each scan's default.
    pub das_grid: Option<Grid>,
    /// B-mode dynamic range of the DAS stage, dB.
    pub dynamic_range_db: f64,
    /// Model directory of the posterior stage.
    pub model: PathBuf,
    /// Compute device of the posterior stage: `cpu`, `cuda:N` or `auto`.
    pub device: String,
    pub sampler: SamplerConfig,
    /// Measurement operators the posterior stage keeps for scans seen before.
    pub max_operators: usize,
    /// Caps every scan is sized against before anything is built for it (the daemon's);
    /// None: none (offline commands, on files the user chose).
    pub limits: Option<ScanLimits>,
}

impl StageSpec {
    /// The stage `pleura serve` runs with `config`, its caps included.
    pub fn serve(config: &Config) -> Result<Self, PipelineError> {
        Ok(StageSpec {
            limits: Some(ScanLimits::from_config(&config.daemon)),
            ..Self::offline(config)?
        })
    }

    /// The stage `config` describes, without the daemon's caps; an error names a grid
    /// setting that makes no grid.
    pub fn offline(config: &Config) -> Result<Self, PipelineError> {
        let d = &config.daemon;
        let das_grid = match (d.das_grid_x, d.das_grid_z) {
            (Some(x), Some(z)) => {
                Some(Grid::linspace(x, z).map_err(|e| PipelineError::Config {
                    message: format!("das_grid_x/das_grid_z: {e}"),
                })?)
            }
            _ => None,
        };
        Ok(StageSpec {
            kind: d.stage,
            das: DasOptions {
                f_number: d.das_f_number,
                ..DasOptions::default()
            },
            das_grid,
            dynamic_range_db: d.bmode_dynamic_range_db,
            model: d.model.clone(),
            device: d.device.clone(),
            sampler: config.sampler.clone(),
            max_operators: d.max_operators,
            limits: None,
        })
    }
}

/// Builds the stage `spec` describes (loading the model for `posterior`): the one road
/// from settings to a stage for the daemon and the offline commands. Errors name the
/// setting at fault.
pub fn build(spec: &StageSpec) -> Result<Box<dyn Stage>, PipelineError> {
    let setting = |message: String| PipelineError::Config { message };
    if !(spec.das.f_number.is_finite() && spec.das.f_number > 0.0) {
        return Err(setting(format!(
            "das_f_number = {} must be positive",
            spec.das.f_number
        )));
    }
    let stage: Box<dyn Stage> = match spec.kind {
        StageKind::Das => {
            if let Some(g) = &spec.das_grid {
                let pixels = g.nx().saturating_mul(g.nz());
                if let Some(l) = spec.limits.filter(|l| pixels as u64 > l.max_grid_pixels) {
                    return Err(setting(format!(
                        "das_grid_x/das_grid_z: {} x {} pixels, over max_grid_pixels = {}",
                        g.nx(),
                        g.nz(),
                        l.max_grid_pixels
                    )));
                }
            }
            if !(spec.dynamic_range_db.is_finite() && spec.dynamic_range_db > 0.0) {
                return Err(setting(format!(
                    "bmode_dynamic_range_db = {} must be positive",
                    spec.dynamic_range_db
                )));
            }
            Box::new(DasStage::new(
                spec.das,
                spec.das_grid.clone(),
                spec.dynamic_range_db,
                spec.limits,
            ))
        }
        StageKind::Posterior => {
            let device = crate::device::select(&spec.device)
                .map_err(|e| setting(format!("device = \"{}\": {e}", spec.device)))?;
            Box::new(posterior::PosteriorStage::load(spec, &device)?)
        }
        StageKind::None => Box::new(NoStage),
    };
    Ok(stage)
}

/// Entries of a bounded per-scan table and its evictions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCount {
    pub len: usize,
    pub evictions: u64,
}

/// Caps on what one scan may make the daemon build (`[daemon] max_message_bytes`,
/// `max_grid_pixels`, `max_das_taps`, `max_operator_bytes`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScanLimits {
    pub max_message_bytes: u64,
    pub max_grid_pixels: u64,
    pub max_das_taps: u64,
    pub max_operator_bytes: u64,
}

impl ScanLimits {
    pub fn from_config(config: &DaemonConfig) -> Self {
        ScanLimits {
            max_message_bytes: config.max_message_bytes as u64,
            max_grid_pixels: config.max_grid_pixels as u64,
            max_das_taps: config.max_das_taps,
            max_operator_bytes: config.max_operator_bytes,
        }
    }
}

/// Why a scan is refused before anything is built for it.
#[derive(Debug, thiserror::Error)]
pub enum ScanRefused {
    #[error("{what} would be {value}, over [daemon] {setting} = {cap} ({cause})")]
    OverCap {
        what: &'static str,
        value: f64,
        setting: &'static str,
        cap: u64,
        /// The scan fields the value follows from, with their values.
        cause: String,
    },
    #[error("its default grid: {0}")]
    Grid(#[from] GridError),
    #[error("its measurement operator: {0}")]
    Operator(#[from] OperatorError),
    #[error("its grid: {0}")]
    Fit(#[from] posterior::FitError),
}

/// Where the grid a stage images a scan on comes from.
#[derive(Clone, Debug, PartialEq)]
enum GridSource {
    /// One grid for every scan.
    Fixed(GridExtent),
    /// Each scan's default grid ([`Grid::default_extent`]).
    ScanDefault,
    /// The posterior stage's rule ([`posterior::ScanGrid`]), under the caps.
    Follow(posterior::ScanGrid),
}

/// What a stage would build for a scan, sized before it is built: the image grid (fixed,
/// or each scan's default), a DAS plan on it, a measurement operator on it. Plain data,
/// so the daemon's ingest checks each scan message against it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanCheck {
    limits: ScanLimits,
    /// The grid the stage images each scan on.
    grid: GridSource,
    /// The receive options when the stage beamforms.
    das: Option<DasOptions>,
    /// Whether the stage builds a measurement operator.
    operator: bool,
}

impl ScanCheck {
    /// A stage that builds nothing per scan: only the frames' size is checked.
    pub fn frames_only(limits: ScanLimits) -> Self {
        ScanCheck {
            limits,
            grid: GridSource::ScanDefault,
            das: None,
            operator: false,
        }
    }

    /// The posterior stage: it beamforms with `das` and builds the measurement operator
    /// on the grid `rule` gives each scan under these caps.
    pub fn following(limits: ScanLimits, rule: posterior::ScanGrid, das: DasOptions) -> Self {
        ScanCheck {
            limits,
            grid: GridSource::Follow(rule),
            das: Some(das),
            operator: true,
        }
    }

    /// A stage that beamforms with `das` on `grid` (None: each scan's default grid) and,
    /// with `operator`, builds the measurement operator on it.
    pub fn imaging(
        limits: ScanLimits,
        grid: Option<GridExtent>,
        das: DasOptions,
        operator: bool,
    ) -> Self {
        ScanCheck {
            limits,
            grid: grid.map_or(GridSource::ScanDefault, GridSource::Fixed),
            das: Some(das),
            operator,
        }
    }

    /// Checks `scan` (already valid, [`Scan::validate`]) against the caps: its int16
    /// frames must fit `max_message_bytes`, and the grid, DAS plan and operator the stage
    /// would build must fit theirs. Costs O(grid pixels log n_el) at most, allocates
    /// nothing that grows with the scan.
    pub fn check(&self, scan: &Scan) -> Result<(), ScanRefused> {
        let l = &self.limits;
        let dims = || {
            format!(
                "n_tx {}, n_ax {}, n_el {}, n_ch {}",
                scan.n_tx(),
                scan.n_ax,
                scan.n_el(),
                scan.n_ch
            )
        };
        let over = |what, value: f64, setting, cap: u64, cause: String| {
            if value > cap as f64 {
                Err(ScanRefused::OverCap {
                    what,
                    value,
                    setting,
                    cap,
                    cause,
                })
            } else {
                Ok(())
            }
        };
        // The transport counts the whole message: payload, header part, tag part and a
        // 32-byte handle per part (vendor/zeromq/PLEURA-PATCH.md).
        let overhead =
            (crate::protocol::FRAME_HEADER_LEN + crate::protocol::TAG_LEN + 3 * 32) as f64;
        let frame_bytes = [scan.n_tx(), scan.n_ax, scan.n_el(), scan.n_ch]
            .iter()
            .fold(2.0, |acc, &d| acc * d as f64)
            + overhead;
        over(
            "one int16 frame message, bytes,",
            frame_bytes,
            "max_message_bytes",
            l.max_message_bytes,
            dims(),
        )?;
        if self.das.is_none() && !self.operator {
            return Ok(());
        }
        let (grid, cause) = match &self.grid {
            GridSource::Fixed(g) => (*g, "the stage's grid".to_string()),
            GridSource::Follow(rule) => (
                rule.extent(scan, Some(l))?,
                format!(
                    "the scan's grid at the model's pitch, depth cut to the caps: \
                     aperture from probe_geometry, n_ax {}, sampling_frequency {} Hz, \
                     initial_times, sound_speed {} m/s",
                    scan.n_ax, scan.sampling_frequency, scan.sound_speed
                ),
            ),
            GridSource::ScanDefault => (
                Grid::default_extent(scan)?,
                format!(
                    "the scan's default grid: n_ax {}, sampling_frequency {} Hz, \
                     initial_times from {} s, sound_speed {} m/s, center_frequency {} Hz, \
                     aperture from probe_geometry",
                    scan.n_ax,
                    scan.sampling_frequency,
                    scan.initial_times
                        .iter()
                        .copied()
                        .fold(f64::INFINITY, f64::min),
                    scan.sound_speed,
                    scan.center_frequency
                ),
            ),
        };
        over(
            "the image grid, pixels,",
            grid.pixels(),
            "max_grid_pixels",
            l.max_grid_pixels,
            format!("{} x {} (nx x nz) on {cause}", grid.x.2, grid.z.2),
        )?;
        if let Some(das) = &self.das {
            over(
                "the DAS plan, taps,",
                DasPlan::tap_bound(scan, &grid, das),
                "max_das_taps",
                l.max_das_taps,
                format!(
                    "{} pixels x aperture x {} transmits",
                    grid.pixels(),
                    scan.n_tx()
                ),
            )?;
        }
        if self.operator {
            over(
                "the measurement operator, bytes,",
                crate::operator::footprint_bytes(scan, grid.pixels(), &OperatorOptions::default())?,
                "max_operator_bytes",
                l.max_operator_bytes,
                format!("{} pixels, {}", grid.pixels(), dims()),
            )?;
        }
        Ok(())
    }
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

    fn process(&mut self, _frame: &FrameInput<'_>) -> Result<Output, PipelineError> {
        Ok(Output::Header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beamform::sim::{linear_array_scan, simulate_rf, LinearArray, Scatterer};
    use crate::config::DaemonConfig;
    use crate::testing::{linear_array, plane_wave, pulse};

    /// A 32-element, 0.3 mm array at 5 MHz sampled at 20 MHz, 600 samples.
    fn array32() -> LinearArray {
        linear_array(32, 600, 0.0)
    }

    /// One unsteered plane wave of `array`.
    fn unsteered(array: &LinearArray) -> Arc<Scan> {
        Arc::new(linear_array_scan(array, &[plane_wave(0.0)]))
    }

    /// The DAS stage images a simulated point scatterer: its B-mode peak (255) lies at the
    /// pixel nearest the scatterer, and the fields have the grid's shapes.
    #[test]
    fn das_stage_finds_a_point_scatterer() {
        let array = array32();
        let scan = unsteered(&array);
        let (sx, sz) = (1.0e-3, 12e-3);
        let rf = simulate_rf(
            &scan,
            &[Scatterer {
                x: sx,
                z: sz,
                amplitude: 1.0,
            }],
            &pulse(),
        );
        let config = Config {
            daemon: DaemonConfig {
                stage: StageKind::Das,
                das_grid_x: Some((-4e-3, 4e-3, 41)),
                das_grid_z: Some((8e-3, 16e-3, 81)),
                ..DaemonConfig::default()
            },
            ..Config::default()
        };
        let mut stage = build(&StageSpec::serve(&config).unwrap()).unwrap();
        assert_eq!(stage.name(), "das");
        let output = stage
            .process(&FrameInput {
                scan_id: 1,
                scan: &scan,
                sequence: 0,
                timestamp_ns: 0,
                data: &rf,
            })
            .unwrap();
        let fields = crate::wire::result_fields(&output);
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["envelope", "bmode", "grid_x", "grid_z"]);
        assert_eq!(fields[1].shape, vec![81, 41]);
        let crate::protocol::FieldData::U8(b) = &fields[1].data else {
            panic!("bmode is not uint8")
        };
        let peak = b
            .iter()
            .enumerate()
            .max_by_key(|(_, v)| **v)
            .map(|(i, _)| i)
            .unwrap();
        assert_eq!(b[peak], 255);
        // Grid steps are 0.2 mm (x) and 0.1 mm (z): the scatterer is at ix 25, iz 40.
        let (iz, ix) = (peak / 41, peak % 41);
        assert!(
            (ix as i64 - 25).abs() <= 1 && (iz as i64 - 40).abs() <= 2,
            "peak at iz {iz} ix {ix}"
        );
        // An inconsistent grid setting is named.
        let mut bad = config.clone();
        bad.daemon.das_grid_z = None;
        let err = bad.daemon.validate().unwrap_err().to_string();
        assert!(
            err.contains("das_grid_x and das_grid_z go together"),
            "{err}"
        );
    }

    /// Each cap refuses a scan over it, naming itself: the frame message, the grid, the
    /// DAS taps and the operator bytes, in that order.
    #[test]
    fn each_cap_names_itself() {
        let array = array32();
        let scan = unsteered(&array);
        let grid = GridExtent {
            x: (-4e-3, 4e-3, 41.0),
            z: (8e-3, 16e-3, 81.0),
        };
        let roomy = ScanLimits::from_config(&DaemonConfig::default());
        let check = |limits| ScanCheck::imaging(limits, Some(grid), DasOptions::default(), true);
        assert!(check(roomy).check(&scan).is_ok());
        let frame = 600.0 * 32.0 * 2.0;
        for (limits, setting) in [
            (
                ScanLimits {
                    max_message_bytes: frame as u64,
                    ..roomy
                },
                "max_message_bytes",
            ),
            (
                ScanLimits {
                    max_grid_pixels: 41 * 81 - 1,
                    ..roomy
                },
                "max_grid_pixels",
            ),
            (
                ScanLimits {
                    max_das_taps: 1000,
                    ..roomy
                },
                "max_das_taps",
            ),
            (
                ScanLimits {
                    max_operator_bytes: 1000,
                    ..roomy
                },
                "max_operator_bytes",
            ),
        ] {
            let err = check(limits).check(&scan).unwrap_err().to_string();
            assert!(
                err.contains(&format!("[daemon] {setting} = ")),
                "{setting}: {err}"
            );
        }
    }

    /// The stage checks its caps itself before planning, so a scan that reached it without
    /// the validator's check (frames queued across a reload) builds nothing: a two-element
    /// scan at 1 mHz would make a default grid of 10^12 pixels.
    #[test]
    fn das_stage_refuses_a_scan_over_its_caps_before_planning() {
        let array = LinearArray {
            n_el: 2,
            pitch: 1e-3,
            sampling_frequency: 1e-3,
            n_ax: 64,
            ..array32()
        };
        let scan = unsteered(&array);
        let mut stage = build(&StageSpec::serve(&Config::default()).unwrap()).unwrap();
        let data = Array4::<f32>::zeros((1, 64, 2, 1));
        let err = stage
            .process(&FrameInput {
                scan_id: 9,
                scan: &scan,
                sequence: 0,
                timestamp_ns: 0,
                data: &data,
            })
            .unwrap_err();
        let err = crate::logging::Chain(&err).to_string();
        assert!(
            err.contains("scan 9") && err.contains("max_grid_pixels = 1048576"),
            "{err}"
        );
    }
}
