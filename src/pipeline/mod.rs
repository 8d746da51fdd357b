//! The per-frame processing pipeline shared by the live daemon (`pleura serve`) and
//! offline replay: a [`Stage`] turns one RF frame of a scan into named result fields.
//!
//! A stage keeps whatever it precomputes per scan (a beamforming plan, a model on a
//! device) and rebuilds it when the scan changes; the daemon's worker owns one stage and
//! calls it on a blocking thread, one frame at a time. Results are
//! [`crate::protocol::Field`]s so they go on the wire as they are.
//!
//! Stages (chosen by `[daemon] stage`):
//! - [`StageKind::Das`] ([`DasStage`]): delay-and-sum beamforming on the configured grid
//!   or the scan's default one ([`crate::grid::Grid::default_for`]); results `envelope`
//!   (float32, nz x nx), `bmode` (uint8, nz x nx, log-compressed against the frame's
//!   maximum), `grid_x` and `grid_z` (float64, m).
//! - [`StageKind::Posterior`] ([`posterior::PosteriorStage`]): posterior sampling of the
//!   aeration image on the model's grid, the same code `pleura replay` runs; results
//!   `mean`, `std`, `aeration`, `aeration_ci`, `category`, `das`, ... (see its
//!   [`Stage::process`]).
//! - [`StageKind::None`]: no processing; results carry only the header (sequence number,
//!   timestamps, latency). Used to relay and to benchmark ingest.
//!
//! Nothing in the daemon depends on which stage runs.

pub mod posterior;

use std::sync::Arc;

use ndarray::{Array2, Array4};

use crate::beamform::{bmode, Beamformer, DasOptions, DasPlan};
use crate::config::{Config, DaemonConfig, StageKind};
use crate::grid::{Grid, GridError, GridExtent};
use crate::operator::{OperatorError, OperatorOptions};
use crate::protocol::{Field, FieldData};
use crate::recording::Scan;

/// Errors of a processing stage, naming the scan or frame they concern.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("[daemon] {message}")]
    Config { message: String },
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
}

/// What a stage would build for a scan, sized before it is built: the image grid (fixed,
/// or each scan's default), a DAS plan on it, a measurement operator on it. Plain data,
/// so the daemon's ingest checks each scan message against it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanCheck {
    limits: ScanLimits,
    /// The grid the stage images on; None: each scan's default grid.
    grid: Option<GridExtent>,
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
            grid: None,
            das: None,
            operator: false,
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
            grid,
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
        let (grid, cause) = match self.grid {
            Some(g) => (g, "the stage's grid".to_string()),
            None => (
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

    fn process(&mut self, _frame: &FrameInput<'_>) -> Result<Vec<Field>, PipelineError> {
        Ok(Vec::new())
    }
}

/// A fixed image grid: ((x_min, x_max, nx), (z_min, z_max, nz)), metres.
pub type GridSpec = ((f64, f64, usize), (f64, f64, usize));

/// Delay-and-sum beamforming: envelope and B-mode of every frame.
pub struct DasStage {
    options: DasOptions,
    /// Fixed grid; None: the scan's default.
    grid: Option<GridSpec>,
    dynamic_range_db: f64,
    /// Caps checked before a plan is built (None: none, offline).
    limits: Option<ScanLimits>,
    /// The scan the beamformer was planned for, the beamformer, its grid as fields.
    planned: Option<(Arc<Scan>, Beamformer, Field, Field)>,
}

impl DasStage {
    /// A stage with these beamforming options, grid (None: each scan's default grid) and
    /// B-mode dynamic range (dB).
    pub fn new(options: DasOptions, grid: Option<GridSpec>, dynamic_range_db: f64) -> Self {
        DasStage {
            options,
            grid,
            dynamic_range_db,
            limits: None,
            planned: None,
        }
    }

    /// Refuses, before building anything, a scan whose plan would exceed `limits` (the
    /// daemon's validator checks scans too; this holds for frames queued across a reload).
    pub fn with_limits(mut self, limits: ScanLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    fn plan(&mut self, scan_id: u64, scan: &Arc<Scan>) -> Result<(), PipelineError> {
        let current =
            matches!(&self.planned, Some((s, ..)) if Arc::ptr_eq(s, scan) || **s == **scan);
        if current {
            return Ok(());
        }
        let err = |e: crate::beamform::BeamformError| PipelineError::Scan {
            scan_id,
            stage: "das",
            message: e.to_string(),
        };
        if let Some(limits) = self.limits {
            self.scan_check(limits)
                .check(scan)
                .map_err(|e| PipelineError::Scan {
                    scan_id,
                    stage: "das",
                    message: e.to_string(),
                })?;
        }
        let grid = match self.grid {
            Some((x, z)) => Grid::linspace(x, z),
            None => Grid::default_for(scan),
        }
        .map_err(|e| err(e.into()))?;
        let bf = Beamformer::new(scan, &grid, &self.options).map_err(err)?;
        tracing::info!(scan_id, nx = grid.nx(), nz = grid.nz(), "DAS plan built");
        let gx = Field::f64("grid_x", vec![grid.nx() as u32], grid.x.clone());
        let gz = Field::f64("grid_z", vec![grid.nz() as u32], grid.z.clone());
        self.planned = Some((scan.clone(), bf, gx, gz));
        Ok(())
    }
}

impl Stage for DasStage {
    fn name(&self) -> &'static str {
        "das"
    }

    fn scan_check(&self, limits: ScanLimits) -> ScanCheck {
        let grid = self.grid.map(|(x, z)| GridExtent {
            x: (x.0, x.1, x.2 as f64),
            z: (z.0, z.1, z.2 as f64),
        });
        ScanCheck::imaging(limits, grid, self.options, false)
    }

    fn device(&self) -> String {
        "cpu".into()
    }

    fn process(&mut self, frame: &FrameInput<'_>) -> Result<Vec<Field>, PipelineError> {
        self.plan(frame.scan_id, frame.scan)?;
        let Some((_, bf, gx, gz)) = self.planned.as_mut() else {
            unreachable!("plan() leaves a beamformer")
        };
        let err = |e: crate::beamform::BeamformError| PipelineError::Frame {
            sequence: frame.sequence,
            stage: "das",
            message: e.to_string(),
        };
        let (nz, nx) = (gz.shape[0] as usize, gx.shape[0] as usize);
        let mut envelope = Array2::<f32>::zeros((nz, nx));
        bf.envelope_into(frame.data.view(), envelope.view_mut())
            .map_err(err)?;
        // A frame without signal has a zero envelope: shown black rather than rejected.
        let max = bmode::max_of(envelope.view());
        let reference = if max > 0.0 { max } else { 1.0 };
        let image =
            bmode::log_compress(envelope.view(), reference, self.dynamic_range_db).map_err(err)?;
        let shape = vec![nz as u32, nx as u32];
        Ok(vec![
            Field {
                name: "envelope".into(),
                shape: shape.clone(),
                data: FieldData::F32(envelope.iter().copied().collect()),
            },
            Field {
                name: "bmode".into(),
                shape,
                data: FieldData::U8(image.iter().copied().collect()),
            },
            gx.clone(),
            gz.clone(),
        ])
    }
}

/// Builds the stage `[daemon] stage` names (loading the model for `posterior`); errors
/// name the inconsistent setting.
pub fn build(full: &Config) -> Result<Box<dyn Stage>, PipelineError> {
    let config = &full.daemon;
    let setting = |message: String| PipelineError::Config { message };
    if !(config.das_f_number.is_finite() && config.das_f_number > 0.0) {
        return Err(setting(format!(
            "das_f_number = {} must be positive",
            config.das_f_number
        )));
    }
    let das = DasOptions {
        f_number: config.das_f_number,
        ..DasOptions::default()
    };
    match config.stage {
        StageKind::Das => {
            let grid = match (config.das_grid_x, config.das_grid_z) {
                (Some(x), Some(z)) => {
                    if x.2.saturating_mul(z.2) > config.max_grid_pixels {
                        return Err(setting(format!(
                            "das_grid_x/das_grid_z: {} x {} pixels, over max_grid_pixels = {}",
                            x.2, z.2, config.max_grid_pixels
                        )));
                    }
                    Grid::linspace(x, z)
                        .map_err(|e| setting(format!("das_grid_x/das_grid_z: {e}")))?;
                    Some((x, z))
                }
                (None, None) => None,
                _ => return Err(setting("das_grid_x and das_grid_z go together".into())),
            };
            if !(config.bmode_dynamic_range_db.is_finite() && config.bmode_dynamic_range_db > 0.0) {
                return Err(setting(format!(
                    "bmode_dynamic_range_db = {} must be positive",
                    config.bmode_dynamic_range_db
                )));
            }
            Ok(Box::new(
                DasStage::new(das, grid, config.bmode_dynamic_range_db)
                    .with_limits(ScanLimits::from_config(config)),
            ))
        }
        StageKind::Posterior => {
            let device = crate::device::select(&config.device)
                .map_err(|e| setting(format!("device = \"{}\": {e}", config.device)))?;
            Ok(Box::new(
                posterior::PosteriorStage::load(&config.model, full.sampler.clone(), das, &device)?
                    .with_max_operators(config.max_operators)
                    .with_limits(ScanLimits::from_config(config)),
            ))
        }
        StageKind::None => Ok(Box::new(NoStage)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beamform::sim::{
        linear_array_scan, simulate_rf, GaussianPulse, LinearArray, Scatterer, Transmit,
    };
    use crate::config::DaemonConfig;

    /// A 32-element, 0.3 mm array at 5 MHz sampled at 20 MHz, 600 samples.
    fn array32() -> LinearArray {
        LinearArray {
            n_el: 32,
            pitch: 0.3e-3,
            center_frequency: 5e6,
            sampling_frequency: 20e6,
            sound_speed: 1540.0,
            n_ax: 600,
            initial_time: 0.0,
        }
    }

    /// One unsteered plane wave of `array`.
    fn plane_wave(array: &LinearArray) -> Arc<Scan> {
        Arc::new(linear_array_scan(
            array,
            &[Transmit {
                polar_angle: 0.0,
                focus_distance: f64::INFINITY,
            }],
        ))
    }

    /// The DAS stage images a simulated point scatterer: its B-mode peak (255) lies at the
    /// pixel nearest the scatterer, and the fields have the grid's shapes.
    #[test]
    fn das_stage_finds_a_point_scatterer() {
        let array = array32();
        let scan = plane_wave(&array);
        let (sx, sz) = (1.0e-3, 12e-3);
        let rf = simulate_rf(
            &scan,
            &[Scatterer {
                x: sx,
                z: sz,
                amplitude: 1.0,
            }],
            &GaussianPulse {
                center_frequency: 5e6,
                bandwidth: 0.6,
            },
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
        let mut stage = build(&config).unwrap();
        assert_eq!(stage.name(), "das");
        let fields = stage
            .process(&FrameInput {
                scan_id: 1,
                scan: &scan,
                sequence: 0,
                timestamp_ns: 0,
                data: &rf,
            })
            .unwrap();
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["envelope", "bmode", "grid_x", "grid_z"]);
        assert_eq!(fields[1].shape, vec![81, 41]);
        let FieldData::U8(b) = &fields[1].data else {
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
        let err = build(&bad).err().unwrap().to_string();
        assert!(err.contains("das_grid_x and das_grid_z"), "{err}");
    }

    /// Each cap refuses a scan over it, naming itself: the frame message, the grid, the
    /// DAS taps and the operator bytes, in that order.
    #[test]
    fn each_cap_names_itself() {
        let array = array32();
        let scan = plane_wave(&array);
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
        let scan = plane_wave(&array);
        let mut stage = build(&Config::default()).unwrap();
        let data = Array4::<f32>::zeros((1, 64, 2, 1));
        let err = stage
            .process(&FrameInput {
                scan_id: 9,
                scan: &scan,
                sequence: 0,
                timestamp_ns: 0,
                data: &data,
            })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("scan 9") && err.contains("max_grid_pixels = 1048576"),
            "{err}"
        );
    }
}
