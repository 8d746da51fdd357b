//! The measurement operator A: aeration image on a [`Grid`] -> channel data of a [`Scan`].
//!
//! First-order (Born) pulse-echo model, see `docs/physics.md`. Each pixel is a point
//! scatterer of reflectivity equal to its aeration. For transmit `t`, pixel `p` and receive
//! element `e`, the echo arrives at
//!
//! `tau = (d_tx(t, p) + |p - e|) / c`, sample `s = (tau - initial_times[t]) * fs`,
//!
//! where d_tx follows zea's generic transmit model: d_tx = min over firing elements of
//! (t0_delays[t, e'] c + |p - e'|) for pixels before the focus (always, for plane and
//! diverging waves), the max after it. The echo is the probe's pulse-echo impulse response
//! ([`pulse::Pulse`]) centred at tau, scaled by
//!
//! - transmit: the apodization and directivity of the element whose wavelet defines the
//!   wavefront at p, and for focused/diverging waves cylindrical spreading from the virtual
//!   source sqrt(|f| / max(|p - v|, lambda));
//! - receive: element directivity (soft baffle, Selfridge et al. 1980:
//!   sinc(pi w sin(theta) / lambda) cos(theta), w the element width) and cylindrical
//!   spreading sqrt(lambda / max(|p - e|, lambda)).
//!
//! I/Q scans (n_ch = 2) get the analytic echo demodulated at `demodulation_frequency`
//! with absolute time (transmit t = 0): envelope(t - tau) exp(2 pi i (fc - fd)(t - tau))
//! exp(-2 pi i fd tau), channel 0 = I, 1 = Q.
//!
//! # Implementation
//!
//! Matrix-free on candle tensors. Built once per (scan, grid): for every pixel and every
//! (transmit, element) pair, the two linear-interpolation taps of the echo time on a time
//! axis `upsampling` times finer than the data (u32 target index + f32 weight, times the
//! I/Q phase for n_ch = 2). `forward` scatters pixel values onto that fine axis with
//! `index_add`, then convolves with the sampled pulse and decimates in polyphase form:
//! the fine samples, grouped U at a time, times a (U, blocks) pulse matrix, and the
//! `blocks` products summed with shifts (one `index_select` and a sum). `index_add`,
//! `matmul`, `index_select` and `sum` all have cheap candle backward passes, so autograd
//! differentiates through `forward`. `adjoint` is the exact transpose: the shifts spread
//! back with `index_add`, the transposed pulse matrix, then `index_select` and a weighted
//! sum per pixel.

pub mod pulse;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use ndarray::{Array2, Array3, Array4};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use crate::grid::Grid;
use crate::recording::{Scan, TransmitKind};
use pulse::{Pulse, DEFAULT_FRACTIONAL_BANDWIDTH};

/// Errors building or applying the operator.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("scan field {field} is invalid for the measurement operator: {value}")]
    InvalidScan { field: &'static str, value: String },
    #[error("operator option {field} is invalid: {value}")]
    InvalidOption { field: &'static str, value: String },
    #[error("{what} tensor has shape {got:?}, expected {expected:?} with an optional leading batch dimension")]
    Shape {
        what: &'static str,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("array is not contiguous in memory order: {what}")]
    Layout { what: &'static str },
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Options of the operator beyond what the scan says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OperatorOptions {
    /// Pulse-echo fractional bandwidth when the scan has none
    /// (default [`DEFAULT_FRACTIONAL_BANDWIDTH`]).
    pub default_fractional_bandwidth: f64,
    /// Fine time axis oversampling factor; `None` picks enough for 16 samples per period
    /// of the highest significant frequency of the (RF or baseband) pulse.
    pub upsampling: Option<usize>,
}

impl Default for OperatorOptions {
    fn default() -> Self {
        Self {
            default_fractional_bandwidth: DEFAULT_FRACTIONAL_BANDWIDTH,
            upsampling: None,
        }
    }
}

/// Fine samples per period of the highest significant pulse frequency used by default.
const FINE_SAMPLES_PER_PERIOD: f64 = 16.0;

/// The linear measurement operator A of one (scan, grid), with its adjoint.
///
/// Images are f32 tensors (nz, nx) or (batch, nz, nx); data are f32 tensors
/// (n_tx, n_ax, n_el, n_ch) or (batch, n_tx, n_ax, n_el, n_ch) — the zea frame layout.
#[derive(Debug)]
pub struct MeasurementOperator {
    n_tx: usize,
    n_ax: usize,
    n_el: usize,
    n_ch: usize,
    nz: usize,
    nx: usize,
    /// Scatter channels per (transmit, element): 1 for RF, 2 (re, im) for I/Q.
    c_in: usize,
    upsampling: usize,
    fine_len: usize,
    /// Entries per pixel: n_tx * n_el * 2 taps * c_in.
    per_pixel: usize,
    /// Fine-axis target of each entry, u32, (n_pixels * per_pixel).
    targets: Tensor,
    /// Weight of each entry, f32, (n_pixels, per_pixel).
    weights: Tensor,
    /// Pulse taps per output sample (ceil((2 half + 1) / upsampling)).
    blocks: usize,
    /// Polyphase pulse matrix, f32, (c_in * upsampling, blocks * n_ch): row (ci, phase b),
    /// column (block a, output channel o) holds tap k = a U + b of channel ci -> o.
    pulse_matrix: Tensor,
    /// Its transpose, contiguous.
    pulse_matrix_t: Tensor,
    /// u32 (n_ax * blocks * n_ch): position of p[n + a, a, o] in a row of the per-block
    /// products p (n_ax + blocks - 1, blocks, n_ch), in (n, a, o) order.
    shift_index: Tensor,
    pulse: Pulse,
    device: Device,
}

/// zea's transmit distance of pixel `p` for transmit `tx`, with the index of the element
/// whose wavelet defines it; `None` when no element fires.
fn transmit_distance(scan: &Scan, tx: usize, px: f64, pz: f64) -> Option<(f64, usize)> {
    let c = scan.sound_speed;
    let after_focus = match scan.transmit_kind(tx) {
        TransmitKind::Focused => {
            pz > scan.polar_angles.get(tx).copied().unwrap_or(0.0).cos() * scan.focus_distances[tx]
        }
        TransmitKind::Plane | TransmitKind::Diverging => false,
    };
    let mut best: Option<(f64, usize)> = None;
    for e in 0..scan.n_el() {
        if scan.tx_apodizations[[tx, e]] == 0.0 {
            continue;
        }
        let ex = scan.probe_geometry[[e, 0]];
        let ez = scan.probe_geometry[[e, 2]];
        let d = scan.t0_delays[[tx, e]] * c + ((px - ex).powi(2) + (pz - ez).powi(2)).sqrt();
        let better = match best {
            None => true,
            Some((b, _)) => {
                if after_focus {
                    d > b
                } else {
                    d < b
                }
            }
        };
        if better {
            best = Some((d, e));
        }
    }
    best
}

/// Soft-baffle element directivity (Selfridge, Kino & Khuri-Yakub 1980):
/// sinc(pi w sin(theta) / lambda) cos(theta), theta from the element normal (+z).
pub fn directivity(width: f64, wavelength: f64, dx: f64, dz: f64) -> f64 {
    let r = (dx * dx + dz * dz).sqrt();
    if r == 0.0 {
        return 1.0;
    }
    let sin_t = dx / r;
    let cos_t = (dz / r).max(0.0);
    let a = std::f64::consts::PI * width * sin_t / wavelength;
    let sinc = if a.abs() < 1e-12 { 1.0 } else { a.sin() / a };
    sinc * cos_t
}

fn invalid(field: &'static str, value: impl std::fmt::Display) -> OperatorError {
    OperatorError::InvalidScan {
        field,
        value: value.to_string(),
    }
}

fn validate(scan: &Scan) -> Result<(), OperatorError> {
    let (n_tx, n_el) = (scan.n_tx(), scan.n_el());
    let positive = |field, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(invalid(field, v))
        }
    };
    positive("sampling_frequency", scan.sampling_frequency)?;
    positive("center_frequency", scan.center_frequency)?;
    positive("sound_speed", scan.sound_speed)?;
    if n_tx == 0 {
        return Err(invalid("initial_times", "no transmits"));
    }
    if n_el == 0 || scan.probe_geometry.ncols() != 3 {
        return Err(invalid(
            "probe_geometry",
            format!("shape {:?}", scan.probe_geometry.dim()),
        ));
    }
    if scan.n_ax == 0 {
        return Err(invalid("n_ax", 0));
    }
    if scan.n_ch != 1 && scan.n_ch != 2 {
        return Err(invalid("n_ch", scan.n_ch));
    }
    if scan.t0_delays.dim() != (n_tx, n_el) {
        return Err(invalid(
            "t0_delays",
            format!(
                "shape {:?}, expected ({n_tx}, {n_el})",
                scan.t0_delays.dim()
            ),
        ));
    }
    if scan.tx_apodizations.dim() != (n_tx, n_el) {
        return Err(invalid(
            "tx_apodizations",
            format!(
                "shape {:?}, expected ({n_tx}, {n_el})",
                scan.tx_apodizations.dim()
            ),
        ));
    }
    if scan.focus_distances.len() != n_tx {
        return Err(invalid(
            "focus_distances",
            format!("{} values for {n_tx} transmits", scan.focus_distances.len()),
        ));
    }
    if scan.transmit_origins.dim() != (n_tx, 3) {
        return Err(invalid(
            "transmit_origins",
            format!("shape {:?}", scan.transmit_origins.dim()),
        ));
    }
    if scan.polar_angles.len() != n_tx {
        return Err(invalid(
            "polar_angles",
            format!("{} values for {n_tx} transmits", scan.polar_angles.len()),
        ));
    }
    for tx in 0..n_tx {
        if (0..n_el).all(|e| scan.tx_apodizations[[tx, e]] == 0.0) {
            return Err(invalid(
                "tx_apodizations",
                format!("transmit {tx} fires no element"),
            ));
        }
    }
    if let Some(b) = scan.fractional_bandwidth {
        positive("fractional_bandwidth", b)?;
    }
    if let Some(w) = scan.element_width {
        if !(w.is_finite() && w >= 0.0) {
            return Err(invalid("element_width", w));
        }
    }
    Ok(())
}

/// The time axes of an operator: pulse, fine-axis oversampling and lengths. Computed in
/// f64 and checked before anything is sized from them, so that no scan (a sampling
/// frequency of 1 mHz, say) can make them overflow.
struct Layout {
    pulse: Pulse,
    /// Demodulation frequency of I/Q data, 0 for RF.
    fd: f64,
    /// Scatter channels per (transmit, element): 1 for RF, 2 (re, im) for I/Q.
    c_in: usize,
    upsampling: usize,
    /// Half-length of the sampled pulse, fine samples.
    half: usize,
    blocks: usize,
    fine_len: usize,
}

impl Layout {
    fn of(scan: &Scan, options: &OperatorOptions) -> Result<Self, OperatorError> {
        validate(scan)?;
        let b = scan
            .fractional_bandwidth
            .unwrap_or(options.default_fractional_bandwidth);
        if !(b.is_finite() && b > 0.0) {
            return Err(OperatorError::InvalidOption {
                field: "default_fractional_bandwidth",
                value: b.to_string(),
            });
        }
        let pulse = Pulse {
            center_frequency: scan.center_frequency,
            fractional_bandwidth: b,
        };
        let (n_tx, n_el, n_ax, n_ch) = (scan.n_tx(), scan.n_el(), scan.n_ax, scan.n_ch);
        let fs = scan.sampling_frequency;
        let fc = scan.center_frequency;
        let fd = if n_ch == 2 {
            scan.demodulation_frequency
        } else {
            0.0
        };
        let c_in = n_ch;
        let f_hi = (fc - fd).abs() + 0.5 * b * fc;
        let upsampling = match options.upsampling {
            Some(0) => {
                return Err(OperatorError::InvalidOption {
                    field: "upsampling",
                    value: "0".into(),
                })
            }
            Some(u) => u as f64,
            None => (FINE_SAMPLES_PER_PERIOD * f_hi / fs).ceil().max(1.0),
        };
        let half = (pulse.half_length() * fs * upsampling).ceil();
        let blocks = ((2.0 * half + 1.0) / upsampling).ceil();
        let fine_len = (n_ax as f64 + blocks - 1.0) * upsampling;
        let total_fine = (n_tx * n_el * c_in) as f64 * fine_len;
        if total_fine.is_nan() || total_fine > u32::MAX as f64 {
            return Err(OperatorError::InvalidOption {
                field: "upsampling",
                value: format!(
                    "{upsampling} gives {total_fine} fine samples, more than u32 indices hold \
                     (scan sampling_frequency {fs} Hz, n_ax {n_ax})"
                ),
            });
        }
        // Every count is now at most u32::MAX: the casts are exact.
        Ok(Layout {
            pulse,
            fd,
            c_in,
            upsampling: upsampling as usize,
            half: half as usize,
            blocks: blocks as usize,
            fine_len: fine_len as usize,
        })
    }
}

/// Bytes the operator of `scan` on a grid of `n_pixels` pixels holds: its per-pixel
/// tables, pulse matrices and shift index, and the fine-axis buffers of one image's
/// forward and adjoint. Computed without building anything (the daemon's
/// `max_operator_bytes` cap is checked against it).
pub fn footprint_bytes(
    scan: &Scan,
    n_pixels: f64,
    options: &OperatorOptions,
) -> Result<f64, OperatorError> {
    let l = Layout::of(scan, options)?;
    let (n_tx, n_el, n_ax, n_ch) = (scan.n_tx(), scan.n_el(), scan.n_ax, scan.n_ch);
    let per_pixel = (n_tx * n_el * 2 * l.c_in) as f64;
    let tables = n_pixels * per_pixel * 8.0;
    let fine = (n_tx * n_el * l.c_in * l.fine_len) as f64 * 4.0 * 2.0;
    let pulse = (l.c_in * l.upsampling * l.blocks * n_ch) as f64 * 4.0 * 2.0;
    let shift = (n_ax * l.blocks * n_ch) as f64 * 4.0;
    Ok(tables + fine + pulse + shift)
}

impl MeasurementOperator {
    /// Builds the operator of `scan` on `grid`, its tables living on `device`.
    pub fn new(
        scan: &Scan,
        grid: &Grid,
        options: OperatorOptions,
        device: &Device,
    ) -> Result<Self, OperatorError> {
        let Layout {
            pulse,
            fd,
            c_in,
            upsampling,
            half,
            blocks,
            fine_len,
        } = Layout::of(scan, &options)?;
        let (n_tx, n_el, n_ax, n_ch) = (scan.n_tx(), scan.n_el(), scan.n_ax, scan.n_ch);
        let fc = scan.center_frequency;
        let fine_fs = scan.sampling_frequency * upsampling as f64;
        let klen = 2 * half + 1;

        let c = scan.sound_speed;
        let lambda = c / fc;
        let width = scan.element_width.unwrap_or_else(|| scan.pitch());
        let per_pixel = n_tx * n_el * 2 * c_in;
        let (nz, nx) = (grid.nz(), grid.nx());
        let n_pix = nz * nx;

        let mut targets = vec![0u32; n_pix * per_pixel];
        let mut weights = vec![0f32; n_pix * per_pixel];
        targets
            .par_chunks_mut(per_pixel)
            .zip(weights.par_chunks_mut(per_pixel))
            .enumerate()
            .for_each(|(p, (tg, wt))| {
                let (pz, px) = (grid.z[p / nx], grid.x[p % nx]);
                for tx in 0..n_tx {
                    let Some((d_tx, e_tx)) = transmit_distance(scan, tx, px, pz) else {
                        continue;
                    };
                    let ex = scan.probe_geometry[[e_tx, 0]];
                    let ez = scan.probe_geometry[[e_tx, 2]];
                    let mut a_tx = scan.tx_apodizations[[tx, e_tx]]
                        * directivity(width, lambda, px - ex, pz - ez);
                    if scan.transmit_kind(tx) != TransmitKind::Plane {
                        let f = scan.focus_distances[tx];
                        let th = scan.polar_angles[tx];
                        let vx = scan.transmit_origins[[tx, 0]] + f * th.sin();
                        let vz = scan.transmit_origins[[tx, 2]] + f * th.cos();
                        let r = ((px - vx).powi(2) + (pz - vz).powi(2)).sqrt();
                        a_tx *= (f.abs() / r.max(lambda)).sqrt();
                    }
                    for e in 0..n_el {
                        let ex = scan.probe_geometry[[e, 0]];
                        let ez = scan.probe_geometry[[e, 2]];
                        let d_rx = ((px - ex).powi(2) + (pz - ez).powi(2)).sqrt();
                        let a = a_tx
                            * directivity(width, lambda, px - ex, pz - ez)
                            * (lambda / d_rx.max(lambda)).sqrt();
                        let tau = (d_tx + d_rx) / c;
                        let q = (tau - scan.initial_times[tx]) * fine_fs + half as f64;
                        let q0 = q.floor();
                        let frac = q - q0;
                        let phase = 2.0 * std::f64::consts::PI * fd * tau;
                        let chan = if c_in == 2 {
                            [phase.cos(), -phase.sin()]
                        } else {
                            [1.0, 0.0]
                        };
                        let base = ((tx * n_el + e) * 2) * c_in;
                        for (k, tap_w) in [(0usize, 1.0 - frac), (1, frac)] {
                            let idx = q0 + k as f64;
                            if idx < 0.0 || idx >= fine_len as f64 {
                                continue;
                            }
                            for (ci, cw) in chan.iter().enumerate().take(c_in) {
                                let slot = base + k * c_in + ci;
                                let row = ((tx * n_el + e) * c_in + ci) * fine_len;
                                tg[slot] = (row + idx as usize) as u32;
                                wt[slot] = (a * tap_w * cw) as f32;
                            }
                        }
                    }
                }
            });

        // Output sample n sits at fine index n U + half, and an echo centred at fine index
        // m adds pulse((n U + half - m) / fine_fs) to it. With m = n U + k, k = a U + b
        // (block a, phase b), out[n] = sum_(a, ci, b) fine[ci][(n + a) U + b] w_ci[k], where
        // w[k] = pulse((half - k) / fine_fs).
        let u = upsampling;
        let (rows, cols) = (c_in * u, blocks * n_ch);
        let mut pm = vec![0f32; rows * cols];
        for k in 0..klen {
            let t = (half as f64 - k as f64) / fine_fs;
            let (a, bph) = (k / u, k % u);
            let at = |ci: usize, o: usize| (ci * u + bph) * cols + a * n_ch + o;
            if n_ch == 1 {
                pm[at(0, 0)] = pulse.rf(t) as f32;
            } else {
                let (re, im) = pulse.baseband(t, fd);
                // I <- re * d_re - im * d_im, Q <- im * d_re + re * d_im.
                pm[at(0, 0)] = re as f32;
                pm[at(0, 1)] = im as f32;
                pm[at(1, 0)] = -im as f32;
                pm[at(1, 1)] = re as f32;
            }
        }
        let pulse_matrix = Tensor::from_vec(pm, (rows, cols), device)?;
        let pulse_matrix_t = pulse_matrix.t()?.contiguous()?;
        let mut shift = Vec::with_capacity(n_ax * blocks * n_ch);
        for n in 0..n_ax {
            for a in 0..blocks {
                for o in 0..n_ch {
                    shift.push((((n + a) * blocks + a) * n_ch + o) as u32);
                }
            }
        }
        let shift_index = Tensor::from_vec(shift, n_ax * blocks * n_ch, device)?;

        Ok(Self {
            n_tx,
            n_ax,
            n_el,
            n_ch,
            nz,
            nx,
            c_in,
            upsampling,
            fine_len,
            per_pixel,
            targets: Tensor::from_vec(targets, n_pix * per_pixel, device)?,
            weights: Tensor::from_vec(weights, (n_pix, per_pixel), device)?,
            blocks,
            pulse_matrix,
            pulse_matrix_t,
            shift_index,
            pulse,
            device: device.clone(),
        })
    }

    /// Image shape (nz, nx).
    pub fn image_shape(&self) -> (usize, usize) {
        (self.nz, self.nx)
    }

    /// Data shape (n_tx, n_ax, n_el, n_ch).
    pub fn data_shape(&self) -> (usize, usize, usize, usize) {
        (self.n_tx, self.n_ax, self.n_el, self.n_ch)
    }

    /// The pulse-echo impulse response used.
    pub fn pulse(&self) -> Pulse {
        self.pulse
    }

    /// Fine time axis oversampling factor used.
    pub fn upsampling(&self) -> usize {
        self.upsampling
    }

    /// The device the operator's tables live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes held by the precomputed tables.
    pub fn table_bytes(&self) -> usize {
        (self.targets.elem_count() + self.weights.elem_count() + 2 * self.pulse_matrix.elem_count())
            * 4
    }

    /// A x: image (nz, nx) or (b, nz, nx) -> data (n_tx, n_ax, n_el, n_ch) or
    /// (b, n_tx, n_ax, n_el, n_ch). Differentiable with candle autograd.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, OperatorError> {
        let (b, batched) = match *x.dims() {
            [nz, nx] if (nz, nx) == (self.nz, self.nx) => (1, false),
            [b, nz, nx] if (nz, nx) == (self.nz, self.nx) => (b, true),
            _ => {
                return Err(OperatorError::Shape {
                    what: "image",
                    got: x.dims().to_vec(),
                    expected: vec![self.nz, self.nx],
                })
            }
        };
        let n_pix = self.nz * self.nx;
        let src = x
            .to_dtype(DType::F32)?
            .reshape((b, n_pix, 1))?
            .broadcast_mul(&self.weights.unsqueeze(0)?)?
            .reshape((b, n_pix * self.per_pixel))?;
        let total = self.n_tx * self.n_el * self.c_in * self.fine_len;
        let fine = Tensor::zeros((b, total), DType::F32, &self.device)?.index_add(
            &self.targets,
            &src,
            1,
        )?;
        let r = b * self.n_tx * self.n_el;
        let (u, nb, ci) = (self.upsampling, self.n_ax + self.blocks - 1, self.c_in);
        let g = fine
            .reshape((r, ci, nb, u))?
            .permute((0, 2, 1, 3))?
            .reshape((r, nb, ci * u))?;
        // p[n', a] = g[n'] . w_a for every block a, then out[n] = sum_a p[n + a, a].
        let p = g
            .reshape((r * nb, ci * u))?
            .matmul(&self.pulse_matrix)?
            .reshape((r, nb, self.blocks, self.n_ch))?;
        let y = p
            .reshape((r, nb * self.blocks * self.n_ch))?
            .index_select(&self.shift_index, 1)?
            .reshape((r, self.n_ax, self.blocks, self.n_ch))?
            .sum(2)?;
        let y = y
            .reshape((b, self.n_tx, self.n_el, self.n_ax, self.n_ch))?
            .permute((0, 1, 3, 2, 4))?
            .contiguous()?;
        Ok(if batched { y } else { y.squeeze(0)? })
    }

    /// A^T y: data (n_tx, n_ax, n_el, n_ch) or (b, ...) -> image (nz, nx) or (b, nz, nx);
    /// the exact transpose of [`forward`](Self::forward).
    pub fn adjoint(&self, y: &Tensor) -> Result<Tensor, OperatorError> {
        let d = (self.n_tx, self.n_ax, self.n_el, self.n_ch);
        let (b, batched) = match *y.dims() {
            [t, a, e, c] if (t, a, e, c) == d => (1, false),
            [b, t, a, e, c] if (t, a, e, c) == d => (b, true),
            _ => {
                return Err(OperatorError::Shape {
                    what: "data",
                    got: y.dims().to_vec(),
                    expected: vec![d.0, d.1, d.2, d.3],
                })
            }
        };
        let r = b * self.n_tx * self.n_el;
        let (u, nb, ci) = (self.upsampling, self.n_ax + self.blocks - 1, self.c_in);
        let y = y
            .to_dtype(DType::F32)?
            .reshape((b, self.n_tx, self.n_ax, self.n_el, self.n_ch))?
            .permute((0, 1, 3, 2, 4))?
            .contiguous()?
            .reshape((r, self.n_ax, self.n_ch))?;
        // Transpose of out[n] = sum_a p[n + a, a]: p[n + a, a] = y[n], then the transposed
        // pulse matrix.
        let spread = y
            .unsqueeze(2)?
            .broadcast_as((r, self.n_ax, self.blocks, self.n_ch))?
            .reshape((r, self.n_ax * self.blocks * self.n_ch))?;
        let g = Tensor::zeros((r, nb * self.blocks * self.n_ch), DType::F32, &self.device)?
            .index_add(&self.shift_index, &spread, 1)?
            .reshape((r * nb, self.blocks * self.n_ch))?
            .matmul(&self.pulse_matrix_t)?;
        let fine = g
            .reshape((r, nb, ci, u))?
            .permute((0, 2, 1, 3))?
            .contiguous()?;
        let total = self.n_tx * self.n_el * self.c_in * self.fine_len;
        let n_pix = self.nz * self.nx;
        let x = fine
            .reshape((b, total))?
            .index_select(&self.targets, 1)?
            .reshape((b, n_pix, self.per_pixel))?
            .broadcast_mul(&self.weights.unsqueeze(0)?)?
            .sum(2)?
            .reshape((b, self.nz, self.nx))?;
        Ok(if batched { x } else { x.squeeze(0)? })
    }

    /// Image array (nz, nx) -> tensor on the operator's device.
    pub fn image_tensor(&self, x: &Array2<f32>) -> Result<Tensor, OperatorError> {
        let v: Vec<f32> = x.iter().copied().collect();
        Ok(Tensor::from_vec(v, x.dim(), &self.device)?)
    }

    /// Frame array (n_tx, n_ax, n_el, n_ch) -> tensor on the operator's device.
    pub fn data_tensor(&self, y: &Array4<f32>) -> Result<Tensor, OperatorError> {
        let v: Vec<f32> = y.iter().copied().collect();
        Ok(Tensor::from_vec(v, y.dim(), &self.device)?)
    }

    /// A x on arrays.
    pub fn forward_array(&self, x: &Array2<f32>) -> Result<Array4<f32>, OperatorError> {
        let y = self.forward(&self.image_tensor(x)?)?;
        let v = y.flatten_all()?.to_vec1::<f32>()?;
        Array4::from_shape_vec(self.data_shape(), v).map_err(|_| OperatorError::Layout {
            what: "forward output",
        })
    }

    /// A^T y on arrays.
    pub fn adjoint_array(&self, y: &Array4<f32>) -> Result<Array2<f32>, OperatorError> {
        let x = self.adjoint(&self.data_tensor(y)?)?;
        let v = x.flatten_all()?.to_vec1::<f32>()?;
        Array2::from_shape_vec((self.nz, self.nx), v).map_err(|_| OperatorError::Layout {
            what: "adjoint output",
        })
    }

    /// `||A||_2^2` by `iterations` power iterations on `A^T A` ([`power_iteration`]).
    pub fn norm_sq(&self, iterations: usize) -> Result<f64, OperatorError> {
        power_iteration(&[self.nz, self.nx], &self.device, iterations, |x| {
            self.adjoint(&self.forward(x)?)
        })
    }
}

/// Seed of the power iteration's start vector (any fixed value: the estimate converges
/// to the same norm from almost every start).
const POWER_ITERATION_SEED: u64 = 0x5eed;

/// The largest eigenvalue of a symmetric positive semi-definite map `normal` (`A^T A`,
/// so `||A||_2^2`) by `iterations` (at least one) power iterations from a seeded
/// standard-normal start of `shape` on `device` (deterministic): `||normal(v)||` of the
/// last unit-norm iterate `v`. 0 when `normal` maps an iterate to zero.
pub fn power_iteration<E: From<candle_core::Error>>(
    shape: &[usize],
    device: &Device,
    iterations: usize,
    mut normal: impl FnMut(&Tensor) -> Result<Tensor, E>,
) -> Result<f64, E> {
    let mut rng = StdRng::seed_from_u64(POWER_ITERATION_SEED);
    let n: usize = shape.iter().product();
    let start: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    let mut v = Tensor::from_vec(start, shape, &Device::Cpu)?.to_device(device)?;
    let mut norm_sq = 0.0;
    for _ in 0..iterations.max(1) {
        let n = l2(&v)?;
        if n == 0.0 {
            return Ok(0.0);
        }
        v = (v / n)?;
        let w = normal(&v)?;
        norm_sq = l2(&w)?;
        v = w;
    }
    Ok(norm_sq)
}

/// The l2 norm of a whole tensor.
pub fn l2(t: &Tensor) -> candle_core::Result<f64> {
    Ok(t.sqr()?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?
        .sqrt())
}

/// Tensor (b, nz, nx) -> array, for callers working with ndarray.
pub fn tensor_to_array3(t: &Tensor) -> Result<Array3<f32>, OperatorError> {
    let (b, nz, nx) = t.dims3()?;
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    Array3::from_shape_vec((b, nz, nx), v).map_err(|_| OperatorError::Layout {
        what: "image batch",
    })
}

/// Hash of everything the operator depends on: scan, grid, options and device.
pub fn fingerprint(scan: &Scan, grid: &Grid, options: &OperatorOptions, device: &Device) -> u64 {
    let mut h = DefaultHasher::new();
    let mut f = |v: f64| v.to_bits().hash(&mut h);
    scan.probe_geometry.iter().for_each(|v| f(*v));
    scan.t0_delays.iter().for_each(|v| f(*v));
    scan.tx_apodizations.iter().for_each(|v| f(*v));
    scan.transmit_origins.iter().for_each(|v| f(*v));
    scan.initial_times.iter().for_each(|v| f(*v));
    scan.polar_angles.iter().for_each(|v| f(*v));
    scan.focus_distances.iter().for_each(|v| f(*v));
    for v in [
        scan.sampling_frequency,
        scan.center_frequency,
        scan.demodulation_frequency,
        scan.sound_speed,
        scan.element_width.unwrap_or(-1.0),
        scan.fractional_bandwidth.unwrap_or(-1.0),
        options.default_fractional_bandwidth,
    ] {
        f(v);
    }
    (scan.n_ax, scan.n_ch, scan.n_el(), options.upsampling).hash(&mut h);
    grid.hash_into(&mut h);
    format!("{:?}", device.location()).hash(&mut h);
    h.finish()
}

/// Operators built once and shared, keyed by [`fingerprint`]: at most `capacity`, the
/// least recently used dropped first (a scan seen again after that is rebuilt).
pub struct OperatorCache {
    inner: Mutex<CacheInner>,
}

struct CacheInner {
    capacity: usize,
    /// Most recently used first.
    entries: Vec<(u64, Arc<MeasurementOperator>)>,
    evictions: u64,
}

impl OperatorCache {
    /// A cache holding at most `capacity` operators (at least one).
    pub fn new(capacity: usize) -> Self {
        OperatorCache {
            inner: Mutex::new(CacheInner {
                capacity: capacity.max(1),
                entries: Vec::new(),
                evictions: 0,
            }),
        }
    }

    /// The operator of (scan, grid, options) on `device`, built on first use.
    pub fn get(
        &self,
        scan: &Scan,
        grid: &Grid,
        options: OperatorOptions,
        device: &Device,
    ) -> Result<Arc<MeasurementOperator>, OperatorError> {
        let key = fingerprint(scan, grid, &options, device);
        {
            let mut inner = self.lock();
            if let Some(pos) = inner.entries.iter().position(|(k, _)| *k == key) {
                let entry = inner.entries.remove(pos);
                let op = entry.1.clone();
                inner.entries.insert(0, entry);
                return Ok(op);
            }
        }
        let op = Arc::new(MeasurementOperator::new(scan, grid, options, device)?);
        let mut inner = self.lock();
        // Another caller may have built the same operator meanwhile: keep one entry.
        if let Some(pos) = inner.entries.iter().position(|(k, _)| *k == key) {
            inner.entries.remove(pos);
        }
        inner.entries.insert(0, (key, op.clone()));
        while inner.entries.len() > inner.capacity {
            inner.entries.pop();
            inner.evictions += 1;
        }
        Ok(op)
    }

    /// Number of operators held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Operators dropped to stay within the capacity, since the cache was made.
    pub fn evictions(&self) -> u64 {
        self.lock().evictions
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // A panic while holding the lock cannot leave the entries half-updated (each
        // change is one Vec operation), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests;
