//! The reconstruction stage: DAS for display, then posterior sampling of the aeration
//! image ([`crate::posterior`]) on a grid that follows the scan ([`ScanGrid`]): the
//! model's own grid when the scan fits it, else the scan's aperture and recorded depth at
//! the model's pixel pitch. `pleura replay` and the daemon's
//! `posterior` stage are this stage, built by [`super::build`], so a recording replayed
//! offline and the same frames streamed live give the same numbers.
//!
//! Per scan (rebuilt when the scan changes): its grid, the check that the scan can image it,
//! the measurement operator normalised by its spectral norm (from an
//! [`OperatorCache`], so a scan seen before costs nothing), and the DAS plan on the same
//! grid. A new scan also starts the sequence afresh (the next frame starts cold).

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use ndarray::Array2;

use super::{
    CacheCount, FrameInput, Output, PipelineError, ScanCheck, ScanError, ScanLimits, ScanRefused,
    Stage, StageSpec,
};
use crate::beamform::{self, Beamformer, DasOptions};
use crate::diffusion::checkpoint::Model;
use crate::grid::{Grid, GridExtent, DEFAULT_PITCH, DEFAULT_Z_MIN};
use crate::operator::{OperatorCache, OperatorOptions};
use crate::posterior::echo::Calibration;
use crate::posterior::frame::{Echo, FrameOutcome, Reconstructor};
use crate::posterior::problem::{LinearOperator, NormalizedOperator};
use crate::posterior::sampler::PosteriorSampler;
use crate::posterior::SamplerConfig;
use crate::recording::Scan;

const STAGE: &str = "posterior";
/// Operators a stage keeps unless told otherwise (`[daemon] max_operators`'s default).
pub const DEFAULT_MAX_OPERATORS: usize = 4;

/// One reconstructed frame.
#[derive(Clone, Debug)]
pub struct PosteriorFrame {
    /// DAS envelope on the reconstruction grid divided by its maximum, in [0, 1]
    /// (all zeros when beamforming failed).
    pub das: Array2<f32>,
    /// The estimate, or why the frame failed (non-finite data, divergence, beamforming).
    pub outcome: FrameOutcome,
    /// The reconstruction grid.
    pub grid: Arc<Grid>,
    /// The spectral norm of the scan's measurement operator.
    pub operator_norm: f64,
}

impl PosteriorFrame {
    /// Why the frame failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        match &self.outcome {
            FrameOutcome::Done(_) => None,
            FrameOutcome::Failed { reason, .. } => Some(reason),
        }
    }
}

/// Why a grid cannot be imaged from a scan.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FitError {
    #[error(
        "the grid does not fit the probe: grid x spans [{:.2}, {:.2}] mm but the probe's \
         aperture is [{:.2}, {:.2}] mm (elements +- one pitch)",
        grid.0 * 1e3, grid.1 * 1e3, aperture.0 * 1e3, aperture.1 * 1e3
    )]
    Aperture {
        /// The grid's lateral span, m.
        grid: (f64, f64),
        /// The elements' span widened by one pitch on each side, m.
        aperture: (f64, f64),
    },
    #[error(
        "the grid does not fit the recording: transmit {transmit} records echoes down to \
         {:.2} mm but the grid reaches {:.2} mm",
        recorded * 1e3, grid * 1e3
    )]
    Depth {
        transmit: usize,
        /// The depth of the last sample's echo straight below, m.
        recorded: f64,
        /// The grid's deepest row, m.
        grid: f64,
    },
    #[error(
        "the scan is too small for the prior: its {axis} span {:.2} mm holds {pixels} \
         pixels of {:.2} mm, fewer than the {multiple} the U-Net needs",
        span * 1e3, pitch * 1e3
    )]
    TooSmall {
        /// `aperture` (lateral, the elements' span) or `recorded depth`.
        axis: &'static str,
        /// The span, m.
        span: f64,
        /// Pixels of `pitch` it holds.
        pixels: usize,
        /// The model's pixel pitch on that axis, m.
        pitch: f64,
        /// The U-Net's downsampling factor: every side must be a multiple of it.
        multiple: usize,
    },
}

/// How the posterior stage's grid follows each scan. Plain data, so the daemon's
/// validator sizes a scan's grid ([`ScanCheck`]) by the same rule before the stage builds
/// it.
///
/// - A scan that fits the model's grid (laterally within the aperture plus one pitch,
///   [`check_fit`], every transmit recording from above its first row's centre down past
///   its last row) is imaged on that grid, exactly as the model was trained.
/// - Any other scan gets a uniform grid at the model's pixel pitch: laterally the
///   elements' span (first to last element's centre), centred on the array; in depth from
///   the first recorded sample (`sound_speed * initial_time / 2`, the latest over the
///   transmits), or the model grid's upper edge when that is deeper, down to the deepest
///   depth every transmit records (`sound_speed * (t0 + (n_ax - 1) / fs) / 2`). Each side
///   is rounded down to a multiple of the U-Net's downsampling factor, dropping the
///   remainder laterally on both sides and in depth at the bottom.
/// - Under caps (the daemon's), the depth is cut further to the most rows that keep the
///   grid within `max_grid_pixels` and its operator within `max_operator_bytes`; a scan
///   whose shallowest allowed grid is still over a cap is refused by [`ScanCheck`].
#[derive(Clone, Debug, PartialEq)]
pub struct ScanGrid {
    /// The grid the model was trained on (or the default lung grid of its size).
    pub model: Grid,
    /// The U-Net's downsampling factor, 2^(levels - 1): every side of a grid is a multiple
    /// of it.
    pub multiple: usize,
}

/// A grid chosen by [`ScanGrid`], before it is built.
enum Chosen {
    Model,
    Uniform(Uniform),
}

/// A uniform grid not built yet.
struct Uniform {
    /// Lateral centre, m.
    x_centre: f64,
    nx: usize,
    dx: f64,
    /// Upper edge of the first row, m.
    z_top: f64,
    nz: usize,
    dz: f64,
}

impl Uniform {
    /// Centre of column `i`, m.
    fn x(&self, i: usize) -> f64 {
        self.x_centre + (i as f64 - (self.nx as f64 - 1.0) / 2.0) * self.dx
    }

    /// Centre of row `i`, m.
    fn z(&self, i: usize) -> f64 {
        self.z_top + self.dz / 2.0 + i as f64 * self.dz
    }
}

impl ScanGrid {
    /// The rule for `model`'s grid (its training grid, else [`Grid::uniform`] of its size
    /// at 0.3 mm from 2 mm) and its U-Net.
    pub fn of_model(model: &Model) -> Result<Self, PipelineError> {
        let n = model.spec.model.image_size;
        let grid = match model_grid(model)? {
            Some(g) => g,
            None => Grid::uniform(n, n, DEFAULT_PITCH, DEFAULT_Z_MIN).map_err(|e| {
                PipelineError::Config {
                    message: format!("default grid: {e}"),
                }
            })?,
        };
        Ok(Self {
            model: grid,
            multiple: 1 << (model.spec.model.channel_mult.len().max(1) - 1),
        })
    }

    fn choose(&self, scan: &Scan, limits: Option<&ScanLimits>) -> Result<Chosen, ScanRefused> {
        let (dx, dz) = (self.model.dx(), self.model.dz());
        let top_recorded = scan
            .initial_times
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
            * scan.sound_speed
            / 2.0;
        let bottom_recorded = scan
            .initial_times
            .iter()
            .map(|t0| t0 + (scan.n_ax as f64 - 1.0) / scan.sampling_frequency)
            .fold(f64::INFINITY, f64::min)
            * scan.sound_speed
            / 2.0;
        if check_fit(scan, &self.model).is_ok() && self.model.z[0] >= top_recorded {
            return Ok(Chosen::Model);
        }
        let m = self.multiple.max(1);
        let xs = scan.probe_geometry.column(0);
        let x_min = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let x_max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let model_top = self.model.z[0] - dz / 2.0;
        let z_top = top_recorded.max(model_top);
        let too_small = |axis, span: f64, pitch: f64| {
            let pixels = if span > 0.0 {
                (span / pitch).floor() as usize
            } else {
                0
            };
            FitError::TooSmall {
                axis,
                span,
                pixels,
                pitch,
                multiple: m,
            }
        };
        // Pixel centres within [x_min, x_max]: floor(span / dx) + 1 of them.
        let span_x = x_max - x_min;
        let nx = ((span_x / dx).floor() as usize + 1) / m * m;
        if nx == 0 || !span_x.is_finite() {
            return Err(too_small("aperture", span_x, dx).into());
        }
        // Rows of dz from z_top whose centres lie above the deepest recorded depth.
        let span_z = bottom_recorded - z_top;
        let rows = if span_z.is_finite() && span_z > dz / 2.0 {
            ((span_z - dz / 2.0) / dz).floor() as usize + 1
        } else {
            0
        };
        let mut nz = rows / m * m;
        if nz == 0 {
            return Err(too_small("recorded depth", span_z, dz).into());
        }
        if let Some(l) = limits {
            let mut most = l.max_grid_pixels as f64;
            let fixed = crate::operator::footprint_bytes(scan, 0.0, &OperatorOptions::default())?;
            let per_pixel =
                crate::operator::footprint_bytes(scan, 1.0, &OperatorOptions::default())? - fixed;
            if per_pixel > 0.0 {
                most = most.min((l.max_operator_bytes as f64 - fixed) / per_pixel);
            }
            let rows_allowed = (most.max(0.0) / nx as f64).floor();
            let cut = ((rows_allowed as usize).min(nz) / m * m).max(m);
            nz = nz.min(cut);
        }
        Ok(Chosen::Uniform(Uniform {
            x_centre: (x_min + x_max) / 2.0,
            nx,
            dx,
            z_top,
            nz,
            dz,
        }))
    }

    /// The extent of the grid [`ScanGrid::grid`] builds for `scan` under `limits`,
    /// computed without building it.
    pub fn extent(
        &self,
        scan: &Scan,
        limits: Option<&ScanLimits>,
    ) -> Result<GridExtent, ScanRefused> {
        Ok(match self.choose(scan, limits)? {
            Chosen::Model => GridExtent::of(&self.model),
            Chosen::Uniform(u) => GridExtent {
                x: (u.x(0), u.x(u.nx - 1), u.nx as f64),
                z: (u.z(0), u.z(u.nz - 1), u.nz as f64),
            },
        })
    }

    /// The grid of `scan` under `limits` (None: no caps, offline).
    pub fn grid(&self, scan: &Scan, limits: Option<&ScanLimits>) -> Result<Grid, ScanError> {
        Ok(match self.choose(scan, limits)? {
            Chosen::Model => self.model.clone(),
            Chosen::Uniform(u) => Grid::new(
                (0..u.nx).map(|i| u.x(i)).collect(),
                (0..u.nz).map(|i| u.z(i)).collect(),
            )?,
        })
    }
}

struct Planned {
    scan: Arc<Scan>,
    grid: Arc<Grid>,
    op: NormalizedOperator,
    das: Beamformer,
}

/// Posterior sampling of every frame on a grid that follows its scan ([`ScanGrid`]).
pub struct PosteriorStage {
    sampler: Arc<PosteriorSampler>,
    recon: Reconstructor,
    /// Every scan's grid: fixed, or following the scan.
    grids: Grids,
    das_options: DasOptions,
    device: Device,
    operators: OperatorCache,
    /// Caps checked before the operator and plan are built (None: none, offline).
    limits: Option<ScanLimits>,
    planned: Option<Planned>,
}

/// Where a stage's grids come from.
enum Grids {
    /// One grid for every scan (given to [`PosteriorStage::new`]).
    Fixed(Arc<Grid>),
    Follow(ScanGrid),
}

/// The grid a model was trained on, when its `config.json` records one; an error when
/// that grid does not have the model's image size.
pub fn model_grid(model: &Model) -> Result<Option<Grid>, PipelineError> {
    let (Some(x), Some(z)) = (&model.spec.grid_x, &model.spec.grid_z) else {
        return Ok(None);
    };
    let setting = |message: String| PipelineError::Config { message };
    let g = Grid::new(x.clone(), z.clone()).map_err(|e| setting(format!("model grid: {e}")))?;
    let n = model.spec.model.image_size;
    if (g.nz(), g.nx()) != (n, n) {
        return Err(setting(format!(
            "model grid is {} x {} (nz x nx) but its images are {n} x {n}",
            g.nz(),
            g.nx()
        )));
    }
    Ok(Some(g))
}

impl PosteriorStage {
    /// A stage sampling with `model` and `cfg` on `device`. The grid is `grid` for every
    /// scan when given (each side a multiple of the U-Net's downsampling factor), else
    /// each scan's by [`ScanGrid::of_model`]. `das` sets the beamforming of the displayed
    /// DAS image.
    pub fn new(
        model: &Model,
        cfg: SamplerConfig,
        grid: Option<Grid>,
        das: DasOptions,
        device: &Device,
    ) -> Result<Self, PipelineError> {
        let setting = |message: String| PipelineError::Config { message };
        let rule = ScanGrid::of_model(model)?;
        let grids = match grid {
            Some(g) => {
                if g.nz() % rule.multiple != 0 || g.nx() % rule.multiple != 0 {
                    return Err(setting(format!(
                        "reconstruction grid is {} x {} (nz x nx) but the model's U-Net \
                         needs sides that are multiples of {}",
                        g.nz(),
                        g.nx(),
                        rule.multiple
                    )));
                }
                Grids::Fixed(Arc::new(g))
            }
            None => Grids::Follow(rule),
        };
        let sampler = Arc::new(
            PosteriorSampler::new(model, device).map_err(|e| setting(format!("model: {e}")))?,
        );
        let row_pitch = match &grids {
            Grids::Fixed(g) => g.dz(),
            Grids::Follow(r) => r.model.dz(),
        };
        let recon = Reconstructor::new(sampler.clone(), cfg, row_pitch)
            .map_err(|e| setting(e.to_string()))?;
        Ok(Self {
            sampler,
            recon,
            grids,
            das_options: das,
            device: device.clone(),
            operators: OperatorCache::new(DEFAULT_MAX_OPERATORS),
            limits: None,
            planned: None,
        })
    }

    /// Keeps at most `n` measurement operators of scans seen before (least recently used
    /// dropped first), instead of [`DEFAULT_MAX_OPERATORS`].
    pub fn with_max_operators(mut self, n: usize) -> Self {
        self.operators = OperatorCache::new(n);
        self
    }

    /// Loads the model `spec` names (a checkpoint or a training output directory) onto
    /// `device` and builds the stage on its grid with `spec`'s sampler, DAS options,
    /// operator cache and caps.
    pub(super) fn load(spec: &StageSpec, device: &Device) -> Result<Self, PipelineError> {
        let model = Model::load(&spec.model, device).map_err(|e| PipelineError::Model {
            path: spec.model.clone(),
            source: Box::new(e),
        })?;
        let mut stage = Self::new(&model, spec.sampler.clone(), None, spec.das, device)?
            .with_max_operators(spec.max_operators);
        stage.limits = spec.limits;
        Ok(stage)
    }

    /// The sampler settings.
    pub fn config(&self) -> &SamplerConfig {
        self.recon.config()
    }

    /// Checks that `scan` can image the grid and builds (or fetches) its operator and
    /// DAS plan. A scan other than the current one restarts the sequence cold.
    fn plan(&mut self, scan: &Arc<Scan>) -> Result<(), ScanError> {
        let current =
            matches!(&self.planned, Some(p) if Arc::ptr_eq(&p.scan, scan) || *p.scan == **scan);
        if current {
            return Ok(());
        }
        // The daemon's validator checks scans too; this holds for frames queued across a
        // reload.
        if let Some(limits) = self.limits {
            self.scan_check(limits).check(scan)?;
        }
        let grid = match &self.grids {
            Grids::Fixed(g) => g.clone(),
            Grids::Follow(rule) => Arc::new(rule.grid(scan, self.limits.as_ref())?),
        };
        check_fit(scan, &grid)?;
        let started = std::time::Instant::now();
        let op = self
            .operators
            .get(scan, &grid, OperatorOptions::default(), &self.device)?;
        let op: Arc<dyn LinearOperator> = op;
        let op = NormalizedOperator::new(op, self.config().power_iterations, &self.device)?;
        self.sampler.check_operator(&op)?;
        let das = Beamformer::new(scan, &grid, &self.das_options)?;
        tracing::info!(
            nx = grid.nx(),
            nz = grid.nz(),
            operator_norm = op.norm(),
            seconds = started.elapsed().as_secs_f64(),
            "operator and DAS plan built"
        );
        if let Some([first_db, last_db]) = scan.tgc_db_range() {
            tracing::info!(
                first_db,
                last_db,
                "the scan records a TGC curve: its samples are divided by it"
            );
        }
        self.recon.reset();
        self.planned = Some(Planned {
            scan: scan.clone(),
            grid,
            op,
            das,
        });
        Ok(())
    }

    /// Reconstructs one frame. Errors concern the scan (see [`Stage::prepare`]); a frame
    /// that cannot be reconstructed is a [`FrameOutcome::Failed`] with the reason, and the
    /// next frame starts cold.
    pub fn reconstruct(&mut self, frame: &FrameInput<'_>) -> Result<PosteriorFrame, PipelineError> {
        self.prepare(frame.scan_id, frame.scan)?;
        let Some(p) = self.planned.as_mut() else {
            unreachable!("prepare() leaves a plan")
        };
        // The operator models the echo before the scanner's time-gain compensation.
        let rf = frame.scan.undo_tgc(frame.data);
        let mut das = Array2::<f32>::zeros((p.grid.nz(), p.grid.nx()));
        let outcome = match p.das.envelope_into(rf.view(), das.view_mut()) {
            Err(e) => {
                self.recon.reset();
                das.fill(0.0);
                FrameOutcome::Failed {
                    reason: format!("beamforming: {e}"),
                    attempts: 0,
                }
            }
            Ok(()) => {
                let data = rf.as_slice().map_or_else(
                    || std::borrow::Cow::Owned(rf.iter().copied().collect()),
                    std::borrow::Cow::Borrowed,
                );
                // The envelope in data units, for the echo data term.
                let echo = Echo {
                    envelope: das.view(),
                    z: &p.grid.z,
                };
                let outcome = self
                    .recon
                    .reconstruct_frame(&p.op, &data, rf.shape(), Some(echo));
                let peak = beamform::bmode::max_of(das.view());
                if peak > 0.0 {
                    das.mapv_inplace(|v| v / peak);
                }
                outcome
            }
        };
        Ok(PosteriorFrame {
            das,
            outcome,
            grid: p.grid.clone(),
            operator_norm: p.op.norm(),
        })
    }
}

impl Stage for PosteriorStage {
    fn name(&self) -> &'static str {
        STAGE
    }

    fn scan_check(&self, limits: ScanLimits) -> ScanCheck {
        match &self.grids {
            Grids::Fixed(g) => {
                ScanCheck::imaging(limits, Some(GridExtent::of(g)), self.das_options, true)
            }
            Grids::Follow(rule) => ScanCheck::following(limits, rule.clone(), self.das_options),
        }
    }

    fn operator_cache(&self) -> CacheCount {
        CacheCount {
            len: self.operators.len(),
            evictions: self.operators.evictions(),
        }
    }

    fn device(&self) -> String {
        crate::device::describe(&self.device)
    }

    fn calibration(&self) -> Option<(&Path, &Calibration)> {
        self.recon.calibration()
    }

    fn prepare(&mut self, scan_id: u64, scan: &Arc<Scan>) -> Result<(), PipelineError> {
        self.plan(scan).map_err(|e| e.of(scan_id, STAGE))
    }

    fn grid(&self) -> Option<Arc<Grid>> {
        match (&self.planned, &self.grids) {
            (Some(p), _) => Some(p.grid.clone()),
            (None, Grids::Fixed(g)) => Some(g.clone()),
            (None, Grids::Follow(_)) => None,
        }
    }

    fn process(&mut self, frame: &FrameInput<'_>) -> Result<Output, PipelineError> {
        self.reconstruct(frame).map(Output::Posterior)
    }
}

/// The grid must lie under the probe (laterally within its aperture plus one pitch) and
/// within the recorded depth (the echo of the deepest row straight below must arrive
/// before the last sample of every transmit).
pub fn check_fit(scan: &Scan, grid: &Grid) -> Result<(), FitError> {
    // No allocation: the daemon's validator runs this for every scan message
    // ([`ScanGrid`] through [`ScanCheck`]).
    let xs = scan.probe_geometry.column(0);
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min) - scan.pitch();
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max) + scan.pitch();
    let (gx0, gx1) = (grid.x[0], grid.x[grid.nx() - 1]);
    if gx0 < lo || gx1 > hi {
        return Err(FitError::Aperture {
            grid: (gx0, gx1),
            aperture: (lo, hi),
        });
    }
    let z_max = grid.z[grid.nz() - 1];
    for (transmit, t0) in scan.initial_times.iter().enumerate() {
        let t_end = t0 + (scan.n_ax as f64 - 1.0) / scan.sampling_frequency;
        let recorded = t_end * scan.sound_speed / 2.0;
        if recorded < z_max {
            return Err(FitError::Depth {
                transmit,
                recorded,
                grid: z_max,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::probe::LinearProbe;

    fn rule() -> ScanGrid {
        ScanGrid {
            model: Grid::default_lung(),
            multiple: 8,
        }
    }

    fn roomy() -> ScanLimits {
        ScanLimits::from_config(&crate::config::DaemonConfig::default())
    }

    /// The simulated 64-element probe the model was trained for keeps the model's grid,
    /// bit for bit, with or without caps.
    #[test]
    fn a_scan_that_fits_the_model_grid_keeps_it() {
        let model = Grid::default_lung();
        let scan = LinearProbe::default_lung().plane_wave_scan(&[-10.0, 0.0, 10.0], &model);
        assert_eq!(rule().grid(&scan, None).unwrap(), model);
        assert_eq!(rule().grid(&scan, Some(&roomy())).unwrap(), model);
        assert_eq!(
            rule().extent(&scan, Some(&roomy())).unwrap(),
            GridExtent::of(&model)
        );
    }

    /// Real Verasonics plane-wave data (128 elements of 0.298 mm, samples from 7.4 to
    /// 44.4 mm): the grid spans the aperture and the recorded depth at the model's 0.3 mm,
    /// 120 x 120 pixels, and the extent the daemon checks is the grid's.
    #[test]
    fn the_grid_follows_a_real_scan() {
        let rec = crate::recording::Recording::open("testdata/pwi_disk_4frames.zea.h5").unwrap();
        let scan = rec.scan();
        let g = rule().grid(scan, None).unwrap();
        // Aperture 127 x 0.298 = 37.85 mm holds 127 centres 0.3 mm apart: 120 of them,
        // centred on the array.
        assert_eq!((g.nz(), g.nx()), (120, 120));
        assert!((g.dx() - 0.3e-3).abs() < 1e-12 && (g.dz() - 0.3e-3).abs() < 1e-12);
        assert!((g.x[0] + 17.85e-3).abs() < 1e-9, "{}", g.x[0]);
        assert!((g.x[119] - 17.85e-3).abs() < 1e-9, "{}", g.x[119]);
        // Depth: from the first sample's depth, c t0 / 2, half a pixel down to the centre.
        let top = scan.sound_speed * scan.initial_times[0] / 2.0;
        assert!((top - 7.4e-3).abs() < 0.05e-3, "first sample at {top}");
        assert!((g.z[0] - (top + 0.15e-3)).abs() < 1e-12);
        let bottom = scan.sound_speed
            * (scan.initial_times[0] + (scan.n_ax - 1) as f64 / scan.sampling_frequency)
            / 2.0;
        assert!(
            g.z[119] <= bottom && bottom - g.z[119] < 9.0 * 0.3e-3,
            "{bottom}"
        );
        assert!(check_fit(scan, &g).is_ok());
        assert_eq!(
            rule().extent(scan, None).unwrap(),
            GridExtent::of(&g),
            "the checked extent is the built grid's"
        );
        // Under caps the depth is cut to what they allow, in steps of 8 rows.
        let pixels = ScanLimits {
            max_grid_pixels: 120 * 70,
            ..roomy()
        };
        let cut = rule().grid(scan, Some(&pixels)).unwrap();
        assert_eq!((cut.nz(), cut.nx()), (64, 120));
        assert_eq!(cut.z[0], g.z[0]);
        let per_pixel = crate::operator::footprint_bytes(scan, 1.0, &OperatorOptions::default())
            .unwrap()
            - crate::operator::footprint_bytes(scan, 0.0, &OperatorOptions::default()).unwrap();
        let fixed =
            crate::operator::footprint_bytes(scan, 0.0, &OperatorOptions::default()).unwrap();
        let bytes = ScanLimits {
            max_operator_bytes: (fixed + per_pixel * 120.0 * 33.0) as u64,
            ..roomy()
        };
        assert_eq!(rule().grid(scan, Some(&bytes)).unwrap().nz(), 32);
        // Caps below the smallest grid (8 rows) refuse the scan, naming the cap.
        let tiny = ScanLimits {
            max_grid_pixels: 120 * 7,
            ..roomy()
        };
        let check = ScanCheck::following(tiny, rule(), DasOptions::default());
        let err = check.check(scan).unwrap_err().to_string();
        assert!(err.contains("[daemon] max_grid_pixels = 840"), "{err}");
        assert!(ScanCheck::following(roomy(), rule(), DasOptions::default())
            .check(scan)
            .is_ok());
    }

    /// A probe too narrow for one U-Net block of pixels is refused, naming the aperture.
    #[test]
    fn a_scan_too_small_for_the_unet_is_refused() {
        let model = Grid::default_lung();
        // Four elements 0.3 mm apart: 0.9 mm holds 4 pixel centres, fewer than 8.
        let probe = LinearProbe {
            n_el: 4,
            ..LinearProbe::default_lung()
        };
        let scan = probe.plane_wave_scan(&[0.0], &model);
        let err = rule().grid(&scan, None).unwrap_err();
        let ScanError::Refused(ScanRefused::Fit(FitError::TooSmall { axis, multiple, .. })) = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!((*axis, *multiple), ("aperture", 8));
    }
}
