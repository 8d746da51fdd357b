//! Per-frame reconstruction of sequences: warm starts, the divergence guard with restarts,
//! and the summary statistics of the K posterior samples.
//!
//! # Interval of the mean aeration
//!
//! Each sample k gives a frame mean aeration m_k: its mean over the lung region
//! ([`LungRegion`] of the posterior mean, the same pixels for every sample; the whole image
//! when no pleural line is found, reported as a lung fraction of 0). The published
//! aeration is mean(m). Its 95 % interval joins two uncertainties:
//!
//! - the samples' spread, times `[sampler] spread_scale` (a calibration factor,
//!   [`super::SamplerConfig::spread_scale`]): `+- 1.96 sd(m)` (sd with K - 1 in the
//!   denominator) for K < [`QUANTILE_MIN_SAMPLES`], and the empirical 2.5 % / 97.5 %
//!   quantiles (linear interpolation between order statistics, numpy's default) from
//!   there on. With the few samples a frame can afford (4-16), the empirical 2.5 % and
//!   97.5 % quantiles are the sample minimum and maximum, whose expected coverage is only
//!   (K-1)/(K+1) (60 % for K = 4); the normal interval uses all K values through their
//!   spread and is the better estimate until the tails hold a few samples each (K >= 40
//!   puts one sample beyond each 2.5 % quantile);
//! - where the lung begins: the region's first row is known to about a row (it disagrees
//!   with the simulator's by one row or more in 46 % of columns, `posterior::lung`), and
//!   posterior samples that agree on the pixels agree on the region too, so their spread
//!   does not show it. Its standard deviation is [`BOUNDARY_SD_ROWS`] times the change of
//!   the lung mean per row the boundary moves ([`LungRegion::boundary_sensitivity`] of the
//!   posterior mean).
//!
//! Each side of the interval is the root sum of squares of the two half widths (the
//! samples' from mean(m) to their bound, scaled, and 1.96 boundary standard deviations),
//! clipped to [0, 1]. The published per-pixel standard deviation is scaled the same way.

use std::path::Path;
use std::sync::Arc;

use candle_core::Tensor;
use ndarray::{Array2, ArrayView2};

use super::echo::{self, Blur, Calibration, EchoData};
use super::lung::LungRegion;
use super::problem::{Measurement, NoiseSource, NormalizedOperator};
use super::sampler::{PosteriorSampler, Start};
use super::{PosteriorError, SamplerConfig};
use crate::aeration::{category, Z95};

/// K from which the interval is the empirical quantiles instead of mean +- 1.96 sd.
pub const QUANTILE_MIN_SAMPLES: usize = 40;

/// Standard deviation, in rows, of where the lung region begins, for the interval of the
/// frame's aeration (see the module documentation): on the true maps of 400 phantoms
/// (seeds 5001-5400) the region's first row agrees with the simulator's in 54 % of
/// columns, lies one row deeper in 31 % and two or more in 14 % (rms 1.2 rows counting
/// three or more as three), mostly where the line merges into bright lung and a row
/// matters least.
pub const BOUNDARY_SD_ROWS: f64 = 1.0;

/// How a frame's sampling started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartKind {
    /// From noise: first frame, warm start disabled, or after a failed frame.
    Cold,
    /// From the previous frame's estimate.
    Warm,
    /// From noise because the previous estimate explains this frame too badly.
    SceneChange,
}

impl StartKind {
    pub fn name(self) -> &'static str {
        match self {
            StartKind::Cold => "cold",
            StartKind::Warm => "warm",
            StartKind::SceneChange => "scene-change",
        }
    }
}

/// Which data term the published estimate fitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataTerm {
    /// The channel data through the measurement operator.
    Rf,
    /// The DAS echo power over the calibrated depth gain ([`echo`]), for a frame the RF
    /// term did not explain.
    Echo,
}

impl DataTerm {
    pub fn name(self) -> &'static str {
        match self {
            DataTerm::Rf => "rf",
            DataTerm::Echo => "echo",
        }
    }
}

/// A frame's DAS envelope, for the echo data term.
#[derive(Clone, Copy)]
pub struct Echo<'a> {
    /// Envelope (nz, nx) on the reconstruction grid, data units.
    pub envelope: ArrayView2<'a, f32>,
    /// Depth of each row, m.
    pub z: &'a [f64],
}

/// The published estimate of one frame.
#[derive(Clone, Debug)]
pub struct FrameEstimate {
    /// Posterior mean aeration (nz, nx).
    pub mean: Array2<f32>,
    /// Per-pixel standard deviation over the samples (nz, nx), times the configured
    /// `spread_scale` (0 for K = 1).
    pub std: Array2<f32>,
    /// Mean aeration of the lung (mean over samples of each sample's mean over the lung
    /// region; see the module documentation).
    pub aeration: f64,
    /// Fraction of the image's pixels in the lung region (0: no pleural line found, the
    /// aeration is then the whole image's).
    pub lung_fraction: f64,
    /// 95 % interval of the frame mean aeration (see the module documentation).
    pub aeration_ci: [f64; 2],
    /// Category of `aeration`: 0 (< 60 %), 1 (60-85 %), 2 (>= 85 %).
    pub category: u8,
    /// Each sample's mean aeration.
    pub sample_aerations: Vec<f64>,
    /// Standard deviation of `sample_aerations` (K - 1 denominator, 0 for K = 1),
    /// unscaled.
    pub aeration_sd: f64,
    /// Standard deviation of the lung mean from where the lung region begins.
    pub boundary_sd: f64,
    /// Relative residual ||y - A mean|| / ||y|| of the posterior mean in its data term
    /// (`data_term`).
    pub residual: f64,
    /// The data term of the published estimate.
    pub data_term: DataTerm,
    /// Estimated (or configured) noise standard deviation, data units.
    pub noise_sigma: f64,
    pub noise_source: NoiseSource,
    pub start: StartKind,
    /// Relative residual of the posterior mean over the noise's (`sigma sqrt(M) / ||y||`):
    /// 1 where the model explains the data to their noise; of the first draw when the
    /// frame was drawn again under model error. NaN where the noise level is 0.
    pub misfit: f64,
    /// Model error per sample, data units, counted as noise in the published draw: the
    /// residual beyond the noise of a first draw whose `misfit` exceeded
    /// [`super::SamplerConfig::model_error_factor`]; 0 otherwise.
    pub model_error: f64,
    /// The channel data are not explained by the operator (`misfit` above
    /// [`super::SamplerConfig::model_error_factor`]). The published estimate is then the
    /// echo data term's when a calibration is loaded (`data_term`), else the RF draw under
    /// model error, which the prior dominates as far as the data fail to constrain it.
    pub poor_fit: bool,
    /// Attempts after the first this frame took: restarts after divergences, DPS redraws
    /// of samples that did not fit the data ([`super::SamplerConfig::fit_factor`]), and
    /// the draw under model error of a poor fit.
    pub restarts: usize,
    /// DPS step size zeta' of the draw published (the configured one, halved per redraw
    /// of samples that did not fit); `None` for a sampler without guidance (DDS).
    pub zeta: Option<f64>,
    /// Network evaluations per sample, all attempts together.
    pub nfe: usize,
}

/// What became of a frame.
#[derive(Clone, Debug)]
pub enum FrameOutcome {
    Done(Box<FrameEstimate>),
    /// Nothing is published for this frame.
    Failed {
        reason: String,
        attempts: usize,
    },
}

struct Previous {
    mean: Tensor,
    residual: f64,
}

/// Reconstructs the frames of one sequence in order.
pub struct Reconstructor {
    sampler: Arc<PosteriorSampler>,
    cfg: SamplerConfig,
    /// Row pitch of the image grid, m (the lung region's effusion test measures depth).
    row_pitch: f64,
    prev: Option<Previous>,
    frame: u64,
    /// Whether the last frame was a poor fit (its warning is logged once per run of them).
    poor_fit: bool,
    /// The calibration of the echo data term, from `[sampler] calibration`.
    calibration: Option<Calibration>,
    /// The echo term's operator for the last image shape.
    echo_op: Option<NormalizedOperator>,
}

impl Reconstructor {
    /// A reconstructor sharing `sampler` (one per sequence or stream; it is `Send`, so a
    /// pipeline stage can own it), for images whose rows are `row_pitch` metres apart.
    pub fn new(
        sampler: Arc<PosteriorSampler>,
        cfg: SamplerConfig,
        row_pitch: f64,
    ) -> Result<Self, PosteriorError> {
        cfg.validate()?;
        if !(row_pitch.is_finite() && row_pitch > 0.0) {
            return Err(PosteriorError::Config {
                field: "grid row pitch",
                value: row_pitch.to_string(),
                reason: "must be finite, > 0".into(),
            });
        }
        let calibration = match &cfg.calibration {
            Some(path) => Some(Calibration::load(path)?),
            None => None,
        };
        Ok(Self {
            sampler,
            cfg,
            row_pitch,
            calibration,
            prev: None,
            frame: 0,
            poor_fit: false,
            echo_op: None,
        })
    }

    /// The settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// The echo data term's calibration and the file it was loaded from, when
    /// `[sampler] calibration` names one.
    pub fn calibration(&self) -> Option<(&Path, &Calibration)> {
        self.cfg
            .calibration
            .as_deref()
            .zip(self.calibration.as_ref())
    }

    /// Forgets the previous frame: the next one starts cold.
    pub fn reset(&mut self) {
        self.prev = None;
    }

    /// Reconstructs the next frame of the sequence from its data (flat, of the operator's
    /// data shape `shape`). Bad data, or a divergence that persists through
    /// `max_restarts` cold restarts with new seeds, gives [`FrameOutcome::Failed`].
    pub fn reconstruct(
        &mut self,
        op: &NormalizedOperator,
        data: &[f32],
        shape: &[usize],
    ) -> FrameOutcome {
        self.reconstruct_frame(op, data, shape, None)
    }

    /// The next frame from its echo power alone, with `cal` (what `pleura calibrate`
    /// validates a calibration with, on frames of known aeration).
    pub fn reconstruct_echo(&mut self, echo: Echo<'_>, cal: &Calibration) -> FrameOutcome {
        let index = self.frame;
        self.frame += 1;
        match self.echo_estimate(echo, cal, index) {
            Ok((_, outcome)) => outcome,
            Err(e) => FrameOutcome::Failed {
                reason: e.to_string(),
                attempts: 0,
            },
        }
    }

    /// As [`Reconstructor::reconstruct`], with the frame's DAS envelope for the echo data
    /// term, which a frame the RF term does not explain is reconstructed from when a
    /// calibration is loaded.
    pub fn reconstruct_frame(
        &mut self,
        op: &NormalizedOperator,
        data: &[f32],
        shape: &[usize],
        echo: Option<Echo<'_>>,
    ) -> FrameOutcome {
        let index = self.frame;
        self.frame += 1;
        match self.try_reconstruct(op, data, shape, echo, index) {
            Ok((prev, outcome)) => {
                self.prev = prev;
                outcome
            }
            Err(e) => {
                self.prev = None;
                FrameOutcome::Failed {
                    reason: e.to_string(),
                    attempts: 0,
                }
            }
        }
    }

    fn try_reconstruct(
        &mut self,
        op: &NormalizedOperator,
        data: &[f32],
        shape: &[usize],
        echo: Option<Echo<'_>>,
        index: u64,
    ) -> Result<(Option<Previous>, FrameOutcome), PosteriorError> {
        let device = self.sampler.device().clone();
        let meas = Measurement::new(op, data, shape, self.cfg.noise_sigma, &device)?;
        let (mut start, mut kind) = (Start::Cold, StartKind::Cold);
        if self.cfg.warm_start {
            if let Some(prev) = &self.prev {
                let r = meas.relative_residuals(op, &prev.mean.unsqueeze(0)?)?[0];
                if r <= self.cfg.scene_change_factor * prev.residual.max(meas.noise_floor()) {
                    start = Start::Warm(prev.mean.clone());
                    kind = StartKind::Warm;
                } else {
                    tracing::info!(
                        frame = index,
                        residual = r,
                        previous = prev.residual,
                        "scene change: cold start"
                    );
                    kind = StartKind::SceneChange;
                }
            }
        }
        let cfg = self.cfg.clone();
        let (prev, outcome) = self.sample(&cfg, op, &meas, start, kind, Stream::First(index))?;
        let FrameOutcome::Done(mut est) = outcome else {
            return Ok((prev, outcome));
        };
        let floor = meas.noise_floor();
        est.misfit = if floor > 0.0 {
            est.residual / floor
        } else {
            f64::NAN
        };
        // NaN (no noise level) is no evidence of model error.
        let poor = est.misfit > self.cfg.model_error_factor;
        if !poor {
            if self.poor_fit {
                tracing::info!(frame = index, misfit = est.misfit, "the data fit again");
                self.poor_fit = false;
            }
            return Ok((prev, FrameOutcome::Done(est)));
        }
        if !self.poor_fit {
            tracing::warn!(
                frame = index,
                misfit = est.misfit,
                noise_sigma = meas.sigma_data,
                echo = self.calibration.is_some(),
                "the operator does not explain the data: the residual is {:.1} times the \
                 noise's; published as a poor fit, from {}",
                est.misfit,
                if self.calibration.is_some() {
                    "the echo power over the calibrated depth gain"
                } else {
                    "a draw with the excess as model error"
                }
            );
            self.poor_fit = true;
        }
        if let (Some(cal), Some(echo)) = (self.calibration.clone(), echo) {
            // The next frame starts cold: the RF term explains no echo estimate, so a warm
            // start from it would be a scene change on every frame.
            let (_, outcome) = self.echo_estimate(echo, &cal, index)?;
            let FrameOutcome::Done(mut e) = outcome else {
                return Ok((None, outcome));
            };
            e.misfit = est.misfit;
            e.model_error = meas.model_error(est.residual) * op.norm();
            e.poor_fit = true;
            e.noise_sigma = est.noise_sigma;
            e.noise_source = est.noise_source;
            e.restarts += est.restarts + 1;
            e.nfe += est.nfe;
            return Ok((None, FrameOutcome::Done(e)));
        }
        // More residual than noise leaves: model error. Draw again with it counted as
        // noise, so that the samples spread as far as the data then allow. The draw starts
        // cold: a warm start would hold every sample near the previous frame's estimate,
        // which these data did not support either (measured on simus RF: intervals 0.035
        // wide warm against 0.48 cold, docs/reconstruction.md, "Model error").
        let kind = match kind {
            StartKind::Warm => StartKind::Cold,
            other => other,
        };
        let (prev, outcome, model_error) =
            self.redraw_under_model_error(&cfg, op, &meas, &est, kind, index)?;
        let FrameOutcome::Done(mut poor) = outcome else {
            return Ok((prev, outcome));
        };
        poor.misfit = est.misfit;
        poor.model_error = model_error * op.norm();
        poor.poor_fit = true;
        Ok((prev, FrameOutcome::Done(poor)))
    }

    /// Draws the frame again, cold, with the model error that `first`'s residual leaves
    /// counted as noise ([`Measurement::with_model_error`]); the draw's estimate counts
    /// `first`'s attempts and evaluations too. Also returns the model error (normalised
    /// units per sample).
    fn redraw_under_model_error(
        &self,
        cfg: &SamplerConfig,
        op: &NormalizedOperator,
        meas: &Measurement,
        first: &FrameEstimate,
        kind: StartKind,
        index: u64,
    ) -> Result<(Option<Previous>, FrameOutcome, f64), PosteriorError> {
        let model_error = meas.model_error(first.residual);
        let tempered = meas.with_model_error(model_error);
        let (prev, outcome) =
            self.sample(cfg, op, &tempered, Start::Cold, kind, Stream::Redraw(index))?;
        let outcome = match outcome {
            FrameOutcome::Done(mut e) => {
                e.restarts += first.restarts + 1;
                e.nfe += first.nfe;
                FrameOutcome::Done(e)
            }
            failed => failed,
        };
        Ok((prev, outcome, model_error))
    }

    /// The frame from its echo power ([`echo`]): a cold draw on the echo data over the
    /// calibrated depth gain, and a second one under the model error it leaves (the
    /// speckle the smoothing did not average out) when that exceeds the first noise guess.
    fn echo_estimate(
        &mut self,
        echo: Echo<'_>,
        cal: &Calibration,
        index: u64,
    ) -> Result<(Option<Previous>, FrameOutcome), PosteriorError> {
        let device = self.sampler.device().clone();
        let data = EchoData::new(echo.envelope, echo.z, &cal.depth_gain).data;
        let (nz, nx) = data.dim();
        if self
            .echo_op
            .as_ref()
            .is_none_or(|op| op.image_shape() != (nz, nx))
        {
            let blur = std::sync::Arc::new(Blur::new(nz, nx, &device)?);
            self.echo_op = Some(NormalizedOperator::new(
                blur,
                self.cfg.power_iterations,
                &device,
            )?);
        }
        let Some(op) = self.echo_op.as_ref() else {
            unreachable!("built above")
        };
        let flat: Vec<f32> = data.iter().copied().collect();
        let level = flat.iter().map(|v| *v as f64).sum::<f64>() / flat.len() as f64;
        let meas = Measurement::new(
            op,
            &flat,
            &[nz, nx],
            Some(echo::NOISE_FRACTION * level),
            &device,
        )?;
        let cfg = SamplerConfig {
            method: super::Method::Dds,
            lambda: echo::LAMBDA,
            ..self.cfg.clone()
        };
        let (mut prev, mut outcome) = self.sample(
            &cfg,
            op,
            &meas,
            Start::Cold,
            StartKind::Cold,
            Stream::First(index),
        )?;
        if let FrameOutcome::Done(est) = &outcome {
            if est.residual / meas.noise_floor() > self.cfg.model_error_factor {
                let first = est.clone();
                (prev, outcome, _) =
                    self.redraw_under_model_error(&cfg, op, &meas, &first, StartKind::Cold, index)?;
            }
        }
        if let FrameOutcome::Done(e) = &mut outcome {
            e.data_term = DataTerm::Echo;
            match &cal.response {
                Some(r) => respond(e, r),
                None => widen(e, cal.frame_sd_db),
            }
        }
        Ok((prev, outcome))
    }

    /// Draws the frame's samples from `start` (restarting after divergences, redrawing
    /// DPS draws that do not fit) and summarises them.
    fn sample(
        &self,
        cfg: &SamplerConfig,
        op: &NormalizedOperator,
        meas: &Measurement,
        mut start: Start,
        mut kind: StartKind,
        stream: Stream,
    ) -> Result<(Option<Previous>, FrameOutcome), PosteriorError> {
        let index = stream.index();
        let floor = meas.noise_floor();
        // Only DPS guidance takes a step size that can overshoot the data.
        let guided = cfg.method.uses_backprop();
        // The attempt's settings: a DPS draw whose samples do not fit the data is drawn
        // again with half the step size.
        let mut cfg = cfg.clone();
        let mut nfe = 0;
        let mut last_reason = String::new();
        // The draw that fitted best of those that did not fit: (worst sample residual,
        // estimate, its mean for the next frame).
        let mut best: Option<(f64, FrameEstimate, Previous)> = None;
        for attempt in 0..=self.cfg.max_restarts {
            let seed = stream.seed(cfg.seed, attempt);
            match self.sampler.draw(&cfg, op, meas, &start, seed) {
                Ok(draw) => {
                    nfe += draw.nfe;
                    let stats = summarize(&draw.samples, self.row_pitch, self.cfg.spread_scale)?;
                    tracing::debug!(
                        frame = index,
                        residuals = ?draw.residuals,
                        capped_steps = draw.capped_steps,
                        aerations = ?stats.sample_aerations,
                        "posterior samples"
                    );
                    let mean_t = draw.samples.mean(0)?;
                    let residual = meas.relative_residuals(op, &mean_t.unsqueeze(0)?)?[0];
                    let est = FrameEstimate {
                        mean: stats.mean,
                        std: stats.std,
                        aeration: stats.aeration,
                        lung_fraction: stats.lung_fraction,
                        aeration_ci: stats.ci,
                        category: category(stats.aeration),
                        aeration_sd: sd(&stats.sample_aerations),
                        sample_aerations: stats.sample_aerations,
                        boundary_sd: stats.boundary_sd,
                        residual,
                        noise_sigma: meas.sigma_data,
                        noise_source: meas.noise_source,
                        start: kind,
                        data_term: DataTerm::Rf,
                        misfit: f64::NAN,
                        model_error: 0.0,
                        poor_fit: false,
                        restarts: attempt,
                        zeta: guided.then_some(cfg.zeta),
                        nfe,
                    };
                    let prev = Previous {
                        mean: mean_t,
                        residual,
                    };
                    let worst = draw.residuals.iter().copied().fold(0.0, f64::max);
                    if !guided || floor == 0.0 || worst <= self.cfg.fit_factor * floor {
                        return Ok((Some(prev), FrameOutcome::Done(Box::new(est))));
                    }
                    tracing::warn!(
                        frame = index,
                        attempt,
                        residual = worst,
                        noise_floor = floor,
                        zeta = cfg.zeta,
                        "posterior samples do not fit the data; drawing again cold with half \
                         the step size"
                    );
                    if best.as_ref().is_none_or(|(w, _, _)| worst < *w) {
                        best = Some((worst, est, prev));
                    }
                    cfg.zeta *= 0.5;
                }
                Err(PosteriorError::Diverged {
                    step,
                    reason,
                    evaluations,
                }) => {
                    tracing::warn!(
                        frame = index,
                        attempt,
                        step,
                        %reason,
                        "sampling diverged; restarting cold with a new seed"
                    );
                    nfe += evaluations;
                    last_reason = format!("diverged at step {step}: {reason}");
                }
                Err(e) => return Err(e),
            }
            start = Start::Cold;
            kind = StartKind::Cold;
        }
        if let Some((worst, mut est, prev)) = best {
            // No attempt fitted: publish the one that came closest, with every
            // evaluation the frame took.
            tracing::warn!(
                frame = index,
                residual = worst,
                noise_floor = floor,
                zeta = ?est.zeta,
                "no draw fitted the data; publishing the closest"
            );
            est.restarts = self.cfg.max_restarts;
            est.nfe = nfe;
            return Ok((Some(prev), FrameOutcome::Done(Box::new(est))));
        }
        Ok((
            None,
            FrameOutcome::Failed {
                reason: format!(
                    "{} attempts diverged; last: {last_reason}",
                    self.cfg.max_restarts + 1
                ),
                attempts: self.cfg.max_restarts + 1,
            },
        ))
    }
}

/// Widens an echo estimate's interval by the calibration's frame-to-frame spread of the
/// echo level (`frame_sd_db`, [`echo::GainFit::frame_sd_db`]): a frame's lung mean is
/// known to a factor `10^(sd / 20)` beyond what its samples show. The half width
/// `Z95 aeration (10^(sd / 20) - 1)` joins each side in quadrature, clipped to [0, 1].
fn widen(e: &mut FrameEstimate, frame_sd_db: f64) {
    let h = Z95 * e.aeration * (10f64.powf(frame_sd_db / 20.0) - 1.0);
    let lo = e.aeration - (e.aeration - e.aeration_ci[0]).hypot(h);
    let hi = e.aeration + (e.aeration_ci[1] - e.aeration).hypot(h);
    e.aeration_ci = [lo.max(0.0), hi.min(1.0)];
}

/// Which random stream a draw of frame `index` takes: its first draw's, or the redraw's
/// under model error. A redraw from the first draw's stream would start from the same
/// noise and follow it, and its samples would stay as close together as the first draw's,
/// which the data had pulled together (measured on pleura's speckle RF: every frame 0, whose
/// first draw was cold, came out with samples 0.06 apart and intervals that missed every
/// truth above 0.7, while frames whose first draw was warm spread as the prior allows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    First(u64),
    Redraw(u64),
}

impl Stream {
    fn index(self) -> u64 {
        match self {
            Stream::First(i) | Stream::Redraw(i) => i,
        }
    }

    /// The seed of `attempt` (restarts after divergences draw again, from other streams:
    /// the attempt in bits 48-55, the redraw in bit 56).
    fn seed(self, seed: u64, attempt: usize) -> u64 {
        let redraw = match self {
            Stream::First(_) => 0,
            Stream::Redraw(_) => 1 << 56,
        };
        seed.wrapping_add(self.index()) ^ ((attempt as u64) << 48) ^ redraw
    }
}

/// Maps an echo estimate's aeration through the calibration's [`echo::Response`]: the
/// published aeration, its samples and the interval's sample part go through the line,
/// and the line's 95 % prediction half-width for this estimate
/// ([`echo::Response::half_width`]) joins each side in quadrature, clipped to [0, 1].
fn respond(e: &mut FrameEstimate, r: &echo::Response) {
    let lo = r.slope * (e.aeration - e.aeration_ci[0]);
    let hi = r.slope * (e.aeration_ci[1] - e.aeration);
    let h = r.half_width(e.aeration);
    e.aeration = r.correct(e.aeration);
    for a in &mut e.sample_aerations {
        *a = r.correct(*a);
    }
    e.aeration_ci = [
        (e.aeration - lo.hypot(h)).max(0.0),
        (e.aeration + hi.hypot(h)).min(1.0),
    ];
    e.category = category(e.aeration);
}

/// Summary statistics of K aeration samples.
pub struct SampleStats {
    pub mean: Array2<f32>,
    pub std: Array2<f32>,
    pub aeration: f64,
    pub ci: [f64; 2],
    pub sample_aerations: Vec<f64>,
    /// Fraction of pixels in the lung region the aerations are taken over.
    pub lung_fraction: f64,
    /// Standard deviation of the lung mean from where the region begins (0 without a
    /// lung region).
    pub boundary_sd: f64,
}

/// Mean, per-pixel std (K - 1 denominator; 0 for K = 1) times `spread_scale`, and the
/// lung's mean aeration with its 95 % interval (see the module documentation) of samples
/// (K, nz, nx) on rows `row_pitch` metres apart.
pub fn summarize(
    samples: &Tensor,
    row_pitch: f64,
    spread_scale: f64,
) -> Result<SampleStats, PosteriorError> {
    let (k, nz, nx) = samples.dims3()?;
    let v = samples.flatten_all()?.to_vec1::<f32>()?;
    let n = nz * nx;
    let mut mean = Array2::<f32>::zeros((nz, nx));
    let mut std = Array2::<f32>::zeros((nz, nx));
    for p in 0..n {
        let vals = (0..k).map(|s| v[s * n + p] as f64);
        let m = vals.clone().sum::<f64>() / k as f64;
        let var = if k > 1 {
            vals.map(|x| (x - m) * (x - m)).sum::<f64>() / (k - 1) as f64
        } else {
            0.0
        };
        mean[[p / nx, p % nx]] = m as f32;
        std[[p / nx, p % nx]] = (spread_scale * var.sqrt()) as f32;
    }
    let lung = LungRegion::find(mean.view(), row_pitch);
    let in_lung = lung.count();
    let (region, boundary_sd) = if in_lung > 0 {
        let sd = BOUNDARY_SD_ROWS * lung.boundary_sensitivity(mean.view());
        (lung, sd)
    } else {
        (LungRegion::whole(nz, nx), 0.0)
    };
    let sample_aerations = v
        .chunks_exact(n)
        .map(|s| {
            let image = ArrayView2::from_shape((nz, nx), s).expect("chunks of nz * nx");
            region.mean(image).unwrap_or(f64::NAN)
        })
        .collect::<Vec<f64>>();
    let (aeration, ci) = interval(&sample_aerations, spread_scale, boundary_sd);
    Ok(SampleStats {
        mean,
        std,
        aeration,
        ci,
        sample_aerations,
        lung_fraction: in_lung as f64 / n as f64,
        boundary_sd,
    })
}

/// Mean of `values` and its 95 % interval: their spread times `spread_scale`, joined with a
/// boundary standard deviation `boundary_sd` (see the module documentation).
pub fn interval(values: &[f64], spread_scale: f64, boundary_sd: f64) -> (f64, [f64; 2]) {
    let k = values.len();
    if k == 0 {
        return (f64::NAN, [f64::NAN, f64::NAN]);
    }
    let m = values.iter().sum::<f64>() / k as f64;
    let (below, above) = if k < QUANTILE_MIN_SAMPLES {
        let half = Z95 * sd(values);
        (half, half)
    } else {
        let mut s = values.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        (m - quantile(&s, 0.025), quantile(&s, 0.975) - m)
    };
    let boundary = Z95 * boundary_sd;
    let lo = m - (spread_scale * below).hypot(boundary);
    let hi = m + (spread_scale * above).hypot(boundary);
    (m, [lo.clamp(0.0, 1.0), hi.clamp(0.0, 1.0)])
}

/// Standard deviation of `values` with K - 1 in the denominator (0 for fewer than two).
pub fn sd(values: &[f64]) -> f64 {
    let k = values.len();
    if k < 2 {
        return 0.0;
    }
    let m = values.iter().sum::<f64>() / k as f64;
    (values.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (k - 1) as f64).sqrt()
}

/// Quantile `q` of sorted values, linear interpolation (numpy's default method).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::Stream;

    /// A frame's first draw, its redraw and their restarts each take a stream of their
    /// own, and the first draw's seeds are those of before the redraw had its own
    /// (seed + index, the attempt in bits 48-55).
    #[test]
    fn redraws_and_restarts_take_streams_of_their_own() {
        let seeds: Vec<u64> = [Stream::First(3), Stream::Redraw(3)]
            .iter()
            .flat_map(|s| (0..4).map(move |a| s.seed(7, a)))
            .collect();
        let mut distinct = seeds.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), seeds.len(), "{seeds:?}");
        assert_eq!(Stream::First(3).seed(7, 0), 10);
        assert_eq!(Stream::First(3).seed(7, 2), 10 ^ (2 << 48));
        assert_eq!(Stream::Redraw(3).seed(7, 0), 10 ^ (1 << 56));
    }
}
