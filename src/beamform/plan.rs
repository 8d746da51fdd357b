//! Delay-and-sum plan: delays, apodization and interpolation tables computed once per
//! (scan, grid, options), applied to every frame.

use ndarray::{ArrayView2, ArrayView4, ArrayViewMut2};
use num_complex::Complex32;
use rayon::prelude::*;

use super::demod::{demodulation_frequency, Demodulator};
use super::BeamformError;
use crate::grid::{Grid, GridExtent};
use crate::recording::Scan;

/// Receive apodization across the dynamic aperture, as a function of the normalised
/// aperture position u = |x_el - x| / (dz / (2 F)) (0 under the pixel, 1 at the aperture
/// edge; 0 outside the aperture).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Apodization {
    /// Uniform weight 1 inside the aperture.
    Rect,
    /// 0.5 (1 + cos(pi u)).
    Hann,
    /// Flat over u < 1 - alpha, cosine taper to 0 at u = 1 (alpha = 0: rect, 1: Hann).
    Tukey(f64),
}

impl Apodization {
    /// The weight at normalised aperture position `u` >= 0.
    pub fn weight(&self, u: f64) -> f64 {
        if u > 1.0 {
            return 0.0;
        }
        match *self {
            Apodization::Rect => 1.0,
            Apodization::Hann => 0.5 * (1.0 + (std::f64::consts::PI * u).cos()),
            Apodization::Tukey(alpha) => {
                let flat = 1.0 - alpha;
                if u <= flat {
                    1.0
                } else {
                    0.5 * (1.0 + (std::f64::consts::PI * (u - flat) / alpha).cos())
                }
            }
        }
    }
}

/// Options of a delay-and-sum plan.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DasOptions {
    /// Receive f-number: an element contributes to a pixel when |x_el - x| <= dz / (2 F).
    pub f_number: f64,
    /// Receive apodization across that aperture.
    pub apodization: Apodization,
}

impl Default for DasOptions {
    fn default() -> Self {
        Self {
            f_number: 1.5,
            apodization: Apodization::Hann,
        }
    }
}

/// Fractional sample positions are quantised to 1/FRAC_STEPS of a sample (phase error at
/// most pi fd / (fs FRAC_STEPS) rad, 0.4 mrad for fd = fs).
const FRAC_STEPS: usize = 4096;
/// Relative margin on the aperture's half-width in the cheap outside test: wider than the
/// rounding of u = |x_e - x| / half-width, so an element it rejects has u > 1 exactly.
const APERTURE_SLACK: f64 = 1.0 + 1e-12;
/// Apodization weights are stored as u16 fractions of APOD_ONE.
const APOD_ONE: f32 = u16::MAX as f32;

/// One contribution to a pixel: channel sample `idx` (flat index into the frame's
/// (tx, el, ax) I/Q buffer) and the next, mixed with fraction `frac` / FRAC_STEPS and
/// weighted by `apod` / APOD_ONE.
#[derive(Clone, Copy, Debug)]
struct Tap {
    idx: u32,
    frac: u16,
    apod: u16,
}

/// What kind of samples a frame carries.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Input {
    Rf,
    Iq,
}

/// A delay-and-sum beamforming plan for one (scan, grid, options).
///
/// Conventions (zea): time 0 of a transmit is when its element with the smallest t0 delay
/// fires; sample n of transmit k was recorded at `initial_times[k] + n / fs`. The transmit
/// travel time to a pixel is min over firing elements of (t0 c + |p - e|) / c in front of
/// the focus (and for plane and diverging waves everywhere), max beyond the focus; the
/// receive time is |p - e| / c. The interpolated I/Q sample is rotated by
/// exp(i 2 pi fd (tau - t0_k)) (its demodulation phase) and the pixel sum by
/// exp(-i 2 pi fd 2 z / c), so the beamformed I/Q is baseband.
pub struct DasPlan {
    grid: Grid,
    dims: [usize; 4],
    input: Input,
    demod: Option<Demodulator>,
    /// exp(+i 2 pi fd n / fs): undoes sample n's demodulation phase.
    remix: Vec<Complex32>,
    /// Interpolation coefficients per quantised fraction f: (1 - f) e^{i theta f} and
    /// f e^{-i theta (1 - f)}, theta = 2 pi fd / fs.
    lut: Vec<[Complex32; 2]>,
    /// Per row: exp(-i 2 pi fd 2 z / c) / APOD_ONE.
    row_phase: Vec<Complex32>,
    /// The taps of every image column, left to right.
    columns: Vec<ColumnTaps>,
}

/// The taps of one image column, row after row.
struct ColumnTaps {
    /// Taps of row iz are taps[offsets[iz]..offsets[iz + 1]].
    offsets: Vec<usize>,
    taps: Vec<Tap>,
}

impl ColumnTaps {
    fn row(&self, iz: usize) -> &[Tap] {
        &self.taps[self.offsets[iz]..self.offsets[iz + 1]]
    }
}

/// Per-transmit geometry of the transmit delay.
struct TxGeometry {
    /// t0 delay x c of each element; +inf for silent elements, so they never win the min.
    t0c_min: Vec<f64>,
    /// The same with -inf for silent elements, so they never win the max.
    t0c_max: Vec<f64>,
    focal_z: f64,
    sign: f64,
    /// initial_times of the transmit, s.
    t0: f64,
}

/// min (or max, per `better`) over e of a[e] + b[e], in four independent lanes so the
/// compiler can vectorise it. A min or max does not depend on the order it is taken in, so
/// this equals the sequential fold exactly.
#[inline]
fn extremum_of_sums(a: &[f64], b: &[f64], init: f64, better: impl Fn(f64, f64) -> bool) -> f64 {
    let mut lanes = [init; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            let v = x[l] + y[l];
            if better(v, lanes[l]) {
                lanes[l] = v;
            }
        }
    }
    let mut m = init;
    for v in lanes
        .into_iter()
        .chain(ra.iter().zip(rb).map(|(x, y)| x + y))
    {
        if better(v, m) {
            m = v;
        }
    }
    m
}

/// `v.round()` for finite v in [0, 2^52[ without a libm call: v - trunc(v) is exact there,
/// and ties round up (away from zero) like `f64::round`.
#[inline]
fn round_nonneg(v: f64) -> i64 {
    let t = v as i64;
    if v - t as f64 >= 0.5 {
        t + 1
    } else {
        t
    }
}

/// Everything planning a column needs: element positions (x, y, z), transmits, depths,
/// sampling and the receive aperture.
struct Geometry<'a> {
    el_x: Vec<f64>,
    el_y: Vec<f64>,
    el_z: Vec<f64>,
    txs: Vec<TxGeometry>,
    z: &'a [f64],
    n_ax: usize,
    c: f64,
    fs: f64,
    half_inv_f: f64,
    apodization: Apodization,
}

impl Geometry<'_> {
    /// The taps of the column at lateral position `x`. Receive distances and weights are
    /// computed once per (pixel, element) and shared by all transmits; only elements with a
    /// non-zero weight get taps.
    fn column(&self, x: f64) -> ColumnTaps {
        let n_el = self.el_x.len();
        let n_ax = self.n_ax;
        let max_q = ((n_ax - 1) * FRAC_STEPS) as f64;
        // (x - x_e)^2 + y_e^2 and |x - x_e| are the same at every depth of the column.
        let mut dxy2 = Vec::with_capacity(n_el);
        let mut adx = Vec::with_capacity(n_el);
        for (&ex, &ey) in self.el_x.iter().zip(&self.el_y) {
            let (dx, dy) = (x - ex, -ey);
            dxy2.push(dx * dx + dy * dy);
            adx.push(dx.abs());
        }
        // Every transmit of every element inside the aperture: an upper bound of the
        // column's taps, so the tap buffer is allocated once.
        let inside: usize = self
            .z
            .iter()
            .map(|&z| {
                adx.iter()
                    .zip(&self.el_z)
                    .filter(|(&a, &ez)| a <= (z - ez) * self.half_inv_f * APERTURE_SLACK)
                    .count()
            })
            .sum();
        let mut taps = Vec::with_capacity(inside * self.txs.len());
        let mut offsets = Vec::with_capacity(self.z.len() + 1);
        offsets.push(0);
        let mut rx = vec![0.0; n_el];
        // The elements of the pixel's aperture: first sample of its channel (tx 0),
        // receive distance, weight.
        let mut act_base = Vec::with_capacity(n_el);
        let mut act_rx = Vec::with_capacity(n_el);
        let mut act_w = Vec::with_capacity(n_el);
        let mut positions = Vec::with_capacity(n_el);
        for &z in self.z {
            for ((r, &d2), &ez) in rx.iter_mut().zip(&dxy2).zip(&self.el_z) {
                let dz = z - ez;
                *r = (d2 + dz * dz).sqrt();
            }
            act_base.clear();
            act_rx.clear();
            act_w.clear();
            for e in 0..n_el {
                let half_width = (z - self.el_z[e]) * self.half_inv_f;
                if adx[e] > half_width * APERTURE_SLACK {
                    // Certainly outside (u > 1, weight 0): spare the division.
                    continue;
                }
                let u = adx[e] / half_width;
                let w = round_nonneg(self.apodization.weight(u) * APOD_ONE as f64) as u16;
                if w != 0 {
                    act_base.push(e * n_ax);
                    act_rx.push(rx[e]);
                    act_w.push(w);
                }
            }
            for (k, tx) in self.txs.iter().enumerate() {
                let d = if tx.sign * (z - tx.focal_z) <= 0.0 {
                    extremum_of_sums(&tx.t0c_min, &rx, f64::INFINITY, |v, m| v < m)
                } else {
                    extremum_of_sums(&tx.t0c_max, &rx, f64::NEG_INFINITY, |v, m| v > m)
                };
                let tx_base = k * n_el * n_ax;
                // Sample position s (in samples) x FRAC_STEPS, a power of two: exact, so
                // its rounding is floor(s) FRAC_STEPS + the rounded fraction.
                positions.clear();
                positions.extend(
                    act_rx
                        .iter()
                        .map(|&r| ((d + r) / self.c - tx.t0) * self.fs * FRAC_STEPS as f64),
                );
                for ((&q, &base), &apod) in positions.iter().zip(&act_base).zip(&act_w) {
                    if !(q >= 0.0 && q <= max_q) {
                        continue;
                    }
                    let q = round_nonneg(q) as usize;
                    // The last sample is reached as fraction 1 of the one before it.
                    let i = (q / FRAC_STEPS).min(n_ax - 2);
                    taps.push(Tap {
                        idx: (tx_base + base + i) as u32,
                        frac: (q - i * FRAC_STEPS) as u16,
                        apod,
                    });
                }
            }
            offsets.push(taps.len());
        }
        ColumnTaps { offsets, taps }
    }
}

fn check_len(field: &'static str, got: usize, want: usize) -> Result<(), BeamformError> {
    if got != want {
        return Err(BeamformError::scan(
            field,
            format!("{got} entries"),
            format!("expected {want} (n_tx or n_el)"),
        ));
    }
    Ok(())
}

fn check_scan(scan: &Scan) -> Result<(), BeamformError> {
    let (n_tx, n_el) = (scan.n_tx(), scan.n_el());
    if n_tx == 0 {
        return Err(BeamformError::scan("n_tx", 0, "no transmits"));
    }
    if n_el == 0 {
        return Err(BeamformError::scan("n_el", 0, "no elements"));
    }
    if scan.probe_geometry.ncols() != 3 {
        return Err(BeamformError::scan(
            "probe_geometry",
            format!("{} columns", scan.probe_geometry.ncols()),
            "expected 3 (x, y, z)",
        ));
    }
    if scan.n_ax < 2 {
        return Err(BeamformError::scan(
            "n_ax",
            scan.n_ax,
            "at least 2 samples are needed",
        ));
    }
    if scan.n_ch != 1 && scan.n_ch != 2 {
        return Err(BeamformError::scan(
            "n_ch",
            scan.n_ch,
            "must be 1 (RF) or 2 (I/Q)",
        ));
    }
    if !(scan.sampling_frequency.is_finite() && scan.sampling_frequency > 0.0) {
        return Err(BeamformError::scan(
            "sampling_frequency",
            scan.sampling_frequency,
            "must be > 0 and finite",
        ));
    }
    if !(scan.sound_speed.is_finite() && scan.sound_speed > 0.0) {
        return Err(BeamformError::scan(
            "sound_speed",
            scan.sound_speed,
            "must be > 0 and finite",
        ));
    }
    check_len("t0_delays rows", scan.t0_delays.nrows(), n_tx)?;
    check_len("t0_delays columns", scan.t0_delays.ncols(), n_el)?;
    check_len("tx_apodizations rows", scan.tx_apodizations.nrows(), n_tx)?;
    check_len(
        "tx_apodizations columns",
        scan.tx_apodizations.ncols(),
        n_el,
    )?;
    check_len("polar_angles", scan.polar_angles.len(), n_tx)?;
    check_len("focus_distances", scan.focus_distances.len(), n_tx)?;
    check_len("transmit_origins rows", scan.transmit_origins.nrows(), n_tx)?;
    if let Some(v) = scan.probe_geometry.iter().find(|v| !v.is_finite()) {
        return Err(BeamformError::scan("probe_geometry", v, "must be finite"));
    }
    if let Some(v) = scan.initial_times.iter().find(|v| !v.is_finite()) {
        return Err(BeamformError::scan("initial_times", v, "must be finite"));
    }
    if let Some(v) = scan.t0_delays.iter().find(|v| !v.is_finite()) {
        return Err(BeamformError::scan("t0_delays", v, "must be finite"));
    }
    if let Some(v) = scan.polar_angles.iter().find(|v| !v.is_finite()) {
        return Err(BeamformError::scan("polar_angles", v, "must be finite"));
    }
    if let Some(v) = scan.focus_distances.iter().find(|v| v.is_nan()) {
        return Err(BeamformError::scan("focus_distances", v, "must not be NaN"));
    }
    let samples = n_tx as u64 * n_el as u64 * scan.n_ax as u64;
    if samples >= u32::MAX as u64 {
        return Err(BeamformError::scan(
            "n_ax",
            scan.n_ax,
            format!("n_tx x n_el x n_ax = {samples} samples per frame exceeds 2^32"),
        ));
    }
    Ok(())
}

impl DasPlan {
    /// Plans delay-and-sum of `scan`'s frames onto `grid`.
    pub fn new(scan: &Scan, grid: &Grid, options: &DasOptions) -> Result<Self, BeamformError> {
        let f = options.f_number;
        if !(f.is_finite() && f > 0.0) {
            return Err(BeamformError::FNumber(f));
        }
        if let Apodization::Tukey(a) = options.apodization {
            if !(0.0..=1.0).contains(&a) {
                return Err(BeamformError::TukeyAlpha(a));
            }
        }
        check_scan(scan)?;
        let (n_tx, n_el, n_ax) = (scan.n_tx(), scan.n_el(), scan.n_ax);
        let c = scan.sound_speed;
        let fs = scan.sampling_frequency;
        let fd = demodulation_frequency(scan)?;
        let input = if scan.n_ch == 1 { Input::Rf } else { Input::Iq };
        let demod = match input {
            Input::Rf => Some(Demodulator::for_scan(scan)?),
            Input::Iq => None,
        };

        let pg = &scan.probe_geometry;
        let el: Vec<[f64; 3]> = (0..n_el)
            .map(|e| [pg[[e, 0]], pg[[e, 1]], pg[[e, 2]]])
            .collect();
        let z_front = el.iter().map(|p| p[2]).fold(f64::NEG_INFINITY, f64::max);
        if grid.z[0] <= z_front {
            return Err(BeamformError::OutsideFieldOfView {
                axis: "z",
                value: grid.z[0],
                reason: format!("pixels must lie in front of the array (z > {z_front} m)"),
            });
        }

        let mut txs = Vec::with_capacity(n_tx);
        for k in 0..n_tx {
            let firing = |e: usize| scan.tx_apodizations[[k, e]] != 0.0;
            if !(0..n_el).any(firing) {
                return Err(BeamformError::scan(
                    "tx_apodizations",
                    format!("row {k} all zero"),
                    "transmit fires no element",
                ));
            }
            let fdist = scan.focus_distances[k];
            // zea's sign(focus_distance): 0 for 0, and +-1; the focal depth relative to the
            // transmit origin follows the steering angle.
            let sign = if fdist > 0.0 {
                1.0
            } else if fdist < 0.0 {
                -1.0
            } else {
                0.0
            };
            let focal_z = scan.transmit_origins[[k, 2]] + scan.polar_angles[k].cos() * fdist;
            let t0c = |silent: f64| {
                (0..n_el)
                    .map(|e| {
                        if firing(e) {
                            scan.t0_delays[[k, e]] * c
                        } else {
                            silent
                        }
                    })
                    .collect()
            };
            txs.push(TxGeometry {
                t0c_min: t0c(f64::INFINITY),
                t0c_max: t0c(f64::NEG_INFINITY),
                focal_z,
                sign,
                t0: scan.initial_times[k],
            });
        }

        let geometry = Geometry {
            el_x: el.iter().map(|p| p[0]).collect(),
            el_y: el.iter().map(|p| p[1]).collect(),
            el_z: el.iter().map(|p| p[2]).collect(),
            txs,
            z: &grid.z,
            n_ax,
            c,
            fs,
            half_inv_f: 0.5 / f,
            apodization: options.apodization,
        };
        let xs = &grid.x;
        let zs = &grid.z;
        let columns: Vec<ColumnTaps> = xs.par_iter().map(|&x| geometry.column(x)).collect();

        for (ix, col) in columns.iter().enumerate() {
            if col.taps.is_empty() {
                return Err(BeamformError::OutsideFieldOfView {
                    axis: "x",
                    value: xs[ix],
                    reason: format!("no element within the f-number {f} receive aperture has a recorded sample for any depth of this column"),
                });
            }
        }
        for (iz, &z) in zs.iter().enumerate() {
            if columns.iter().all(|col| col.row(iz).is_empty()) {
                return Err(BeamformError::OutsideFieldOfView {
                    axis: "z",
                    value: z,
                    reason: format!(
                        "no recorded sample reaches this depth (n_ax = {n_ax}, fs = {fs} Hz)"
                    ),
                });
            }
        }
        debug_assert_eq!(columns.len(), grid.nx());

        let theta = 2.0 * std::f64::consts::PI * fd / fs;
        let cis = |p: f64| Complex32::new(p.cos() as f32, p.sin() as f32);
        let remix = (0..n_ax).map(|n| cis(theta * n as f64)).collect();
        let lut = (0..=FRAC_STEPS)
            .map(|q| {
                let fr = q as f64 / FRAC_STEPS as f64;
                [
                    cis(theta * fr) * (1.0 - fr) as f32,
                    cis(-theta * (1.0 - fr)) * fr as f32,
                ]
            })
            .collect();
        let row_phase = zs
            .iter()
            .map(|&z| cis(-2.0 * std::f64::consts::PI * fd * 2.0 * z / c) / APOD_ONE)
            .collect();

        Ok(Self {
            grid: grid.clone(),
            dims: [n_tx, n_ax, n_el, scan.n_ch],
            input,
            demod,
            remix,
            lut,
            row_phase,
            columns,
        })
    }

    /// The grid this plan beamforms onto.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    /// Frame dimensions (n_tx, n_ax, n_el, n_ch) this plan accepts.
    pub fn frame_dims(&self) -> [usize; 4] {
        self.dims
    }

    /// Number of (pixel, transmit, element) contributions summed per frame.
    pub fn n_taps(&self) -> usize {
        self.columns.iter().map(|c| c.taps.len()).sum()
    }

    /// An upper bound of [`DasPlan::n_taps`] for `scan` on a grid of this extent, computed
    /// without building the plan: every (pixel, element) pair inside the receive aperture
    /// (`|x - x_e| <= (z - z_e) / (2 F)`, with the shallowest element's z_e), times the
    /// transmits. It costs O(nx nz log n_el), so the caller bounds the grid's pixels first.
    /// Each tap holds [`DasPlan::TAP_BYTES`].
    pub fn tap_bound(scan: &Scan, grid: &GridExtent, options: &DasOptions) -> f64 {
        let mut el_x: Vec<f64> = scan.probe_geometry.column(0).to_vec();
        el_x.sort_by(f64::total_cmp);
        let z_el = scan
            .probe_geometry
            .column(2)
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let half_inv_f = 0.5 / options.f_number;
        let axis = |(min, max, n): (f64, f64, f64)| {
            let n = n as usize;
            (0..n).map(move |i| {
                if n > 1 {
                    min + (max - min) * i as f64 / (n - 1) as f64
                } else {
                    min
                }
            })
        };
        let mut inside = 0.0;
        for z in axis(grid.z) {
            let half_width = (z - z_el) * half_inv_f * APERTURE_SLACK;
            if half_width.is_nan() || half_width < 0.0 {
                continue;
            }
            for x in axis(grid.x) {
                let lo = el_x.partition_point(|&e| e < x - half_width);
                let hi = el_x.partition_point(|&e| e <= x + half_width);
                inside += (hi - lo) as f64;
            }
        }
        inside * scan.n_tx() as f64
    }

    /// Bytes of one tap of the plan.
    pub const TAP_BYTES: usize = std::mem::size_of::<Tap>();

    /// Bytes held by the plan's tables.
    pub fn table_bytes(&self) -> usize {
        self.columns
            .iter()
            .map(|c| {
                c.taps.len() * std::mem::size_of::<Tap>()
                    + c.offsets.len() * std::mem::size_of::<usize>()
            })
            .sum()
    }

    /// Loads a frame (n_tx, n_ax, n_el, n_ch) into `channels` as (tx, el, ax) I/Q samples
    /// with their demodulation phase undone (see [`DasPlan`]).
    fn load(
        &self,
        frame: ArrayView4<f32>,
        channels: &mut [Complex32],
    ) -> Result<(), BeamformError> {
        let [n_tx, n_ax, n_el, n_ch] = self.dims;
        let got = frame.dim();
        let got = [got.0, got.1, got.2, got.3];
        if got != self.dims {
            return Err(BeamformError::FrameShape {
                expected: self.dims,
                got,
            });
        }
        // Fast scan first; the indexed search only runs on a bad frame.
        let all_finite = match frame.as_slice_memory_order() {
            Some(v) => v.iter().all(|x| x.is_finite()),
            None => frame.iter().all(|x| x.is_finite()),
        };
        if !all_finite {
            if let Some(((tx, ax, el, ch), &value)) =
                frame.indexed_iter().find(|(_, v)| !v.is_finite())
            {
                return Err(BeamformError::NonFinite {
                    tx,
                    ax,
                    el,
                    ch,
                    value,
                });
            }
        }
        let _ = n_ch;
        channels.par_chunks_mut(n_ax).enumerate().for_each_init(
            || self.demod.as_ref().map(|d| d.scratch()),
            |scratch, (ch_i, out)| {
                let (tx, e) = (ch_i / n_el, ch_i % n_el);
                match (self.input, &self.demod, scratch) {
                    (Input::Rf, Some(d), Some(s)) => {
                        d.demodulate(frame.slice(ndarray::s![tx, .., e, 0]), out, s);
                    }
                    _ => {
                        for (n, o) in out.iter_mut().enumerate() {
                            *o = Complex32::new(frame[[tx, n, e, 0]], frame[[tx, n, e, 1]]);
                        }
                    }
                }
                for (o, r) in out.iter_mut().zip(&self.remix) {
                    *o *= r;
                }
            },
        );
        debug_assert_eq!(channels.len(), n_tx * n_el * n_ax);
        Ok(())
    }

    /// Sums the taps of every pixel into `iq` (column-major, ix nz + iz).
    fn sum(&self, channels: &[Complex32], iq: &mut [Complex32]) {
        let nz = self.grid.nz();
        iq.par_chunks_mut(nz)
            .zip(self.columns.par_iter())
            .for_each(|(col, column)| {
                for (iz, out) in col.iter_mut().enumerate() {
                    let taps = column.row(iz);
                    let mut acc = Complex32::default();
                    for t in taps {
                        let i = t.idx as usize;
                        let [c0, c1] = self.lut[t.frac as usize];
                        let pair = &channels[i..i + 2];
                        acc += (c0 * pair[0] + c1 * pair[1]) * t.apod as f32;
                    }
                    *out = acc * self.row_phase[iz];
                }
            });
    }
}

/// A [`DasPlan`] with its per-frame buffers: beamform frame after frame without allocating.
pub struct Beamformer {
    plan: DasPlan,
    channels: Vec<Complex32>,
    iq: Vec<Complex32>,
}

impl Beamformer {
    /// Plans and allocates (see [`DasPlan::new`]).
    pub fn new(scan: &Scan, grid: &Grid, options: &DasOptions) -> Result<Self, BeamformError> {
        Ok(Self::from_plan(DasPlan::new(scan, grid, options)?))
    }

    /// Allocates the buffers of an existing plan.
    pub fn from_plan(plan: DasPlan) -> Self {
        let [n_tx, n_ax, n_el, _] = plan.dims;
        let n_pix = plan.grid.nx() * plan.grid.nz();
        Self {
            channels: vec![Complex32::default(); n_tx * n_el * n_ax],
            iq: vec![Complex32::default(); n_pix],
            plan,
        }
    }

    /// The plan.
    pub fn plan(&self) -> &DasPlan {
        &self.plan
    }

    /// Beamforms one frame (n_tx, n_ax, n_el, n_ch) coherently over its transmits and
    /// returns the I/Q image, shape (nz, nx). A frame with a NaN or infinite sample is an
    /// error ([`BeamformError::NonFinite`]); the beamformer stays usable.
    pub fn beamform(
        &mut self,
        frame: ArrayView4<f32>,
    ) -> Result<ArrayView2<'_, Complex32>, BeamformError> {
        self.plan.load(frame, &mut self.channels)?;
        self.plan.sum(&self.channels, &mut self.iq);
        Ok(self.iq_view())
    }

    /// The I/Q image of the last frame, shape (nz, nx).
    pub fn iq_view(&self) -> ArrayView2<'_, Complex32> {
        let (nx, nz) = (self.plan.grid.nx(), self.plan.grid.nz());
        ArrayView2::from_shape((nx, nz), &self.iq)
            .map(|v| v.reversed_axes())
            .unwrap_or_else(|_| unreachable!("iq buffer holds nx x nz pixels"))
    }

    /// Beamforms one frame and writes its envelope |I/Q| into `out` (nz, nx).
    pub fn envelope_into(
        &mut self,
        frame: ArrayView4<f32>,
        mut out: ArrayViewMut2<f32>,
    ) -> Result<(), BeamformError> {
        let (nz, nx) = (self.plan.grid.nz(), self.plan.grid.nx());
        if out.dim() != (nz, nx) {
            return Err(BeamformError::OutputShape {
                expected: (nz, nx),
                got: out.dim(),
            });
        }
        let iq = self.beamform(frame)?;
        out.zip_mut_with(&iq, |o, v| *o = v.norm());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beamform::sim::{linear_array_scan, Transmit};
    use crate::testing::{linear_array, plane_wave};

    /// The taps of every pixel (column-major) by the plain definition, one (pixel,
    /// transmit, element) at a time with nothing shared: (position in 1/FRAC_STEPS samples
    /// from the start of the frame's (tx, el, ax) buffer, apodization).
    fn reference_taps(scan: &Scan, grid: &Grid, opts: &DasOptions) -> Vec<Vec<(usize, u16)>> {
        let (n_tx, n_el, n_ax) = (scan.n_tx(), scan.n_el(), scan.n_ax);
        let (c, fs) = (scan.sound_speed, scan.sampling_frequency);
        let pg = &scan.probe_geometry;
        let dist = |x: f64, z: f64, e: usize| {
            let (dx, dy, dz) = (x - pg[[e, 0]], -pg[[e, 1]], z - pg[[e, 2]]);
            (dx * dx + dy * dy + dz * dz).sqrt()
        };
        let mut out = Vec::new();
        for &x in &grid.x {
            for &z in &grid.z {
                let mut taps = Vec::new();
                for k in 0..n_tx {
                    let fdist = scan.focus_distances[k];
                    let focal_z =
                        scan.transmit_origins[[k, 2]] + scan.polar_angles[k].cos() * fdist;
                    let sign = if fdist > 0.0 {
                        1.0
                    } else if fdist < 0.0 {
                        -1.0
                    } else {
                        0.0
                    };
                    let in_front = sign * (z - focal_z) <= 0.0;
                    let firing = (0..n_el).filter(|&e| scan.tx_apodizations[[k, e]] != 0.0);
                    let arrivals = firing.map(|e| scan.t0_delays[[k, e]] * c + dist(x, z, e));
                    let d = if in_front {
                        arrivals.fold(f64::INFINITY, f64::min)
                    } else {
                        arrivals.fold(f64::NEG_INFINITY, f64::max)
                    };
                    for e in 0..n_el {
                        let u = (x - pg[[e, 0]]).abs() / ((z - pg[[e, 2]]) * 0.5 / opts.f_number);
                        let w = (opts.apodization.weight(u) * APOD_ONE as f64).round() as u16;
                        let s = ((d + dist(x, z, e)) / c - scan.initial_times[k]) * fs;
                        if w == 0 || !(0.0..=(n_ax - 1) as f64).contains(&s) {
                            continue;
                        }
                        let pos = (s * FRAC_STEPS as f64).round() as usize;
                        taps.push(((k * n_el + e) * n_ax * FRAC_STEPS + pos, w));
                    }
                }
                out.push(taps);
            }
        }
        out
    }

    /// The bound the daemon checks before planning holds the plan's taps, and is tight
    /// when every aperture element contributes (rectangular apodization, every sample
    /// recorded).
    #[test]
    fn tap_bound_holds_the_plan() {
        let scan = linear_array_scan(&linear_array(32, 800, 0.0), &[0.0, 8.0].map(plane_wave));
        let grid = Grid::linspace((-5e-3, 5e-3, 21), (3e-3, 20e-3, 35)).unwrap();
        for (apodization, tight) in [(Apodization::Rect, true), (Apodization::Hann, false)] {
            let opts = DasOptions {
                f_number: 1.5,
                apodization,
            };
            let taps = DasPlan::new(&scan, &grid, &opts).unwrap().n_taps() as f64;
            let bound = DasPlan::tap_bound(&scan, &GridExtent::of(&grid), &opts);
            assert!(
                taps > 1000.0 && bound >= taps,
                "{apodization:?}: {taps} > {bound}"
            );
            if tight {
                assert!(bound <= taps * 1.01, "{apodization:?}: {bound} vs {taps}");
            }
        }
    }

    #[test]
    fn plan_equals_a_straightforward_reference_plan() {
        // 19 elements (not a multiple of the 4 lanes of the transmit-delay min), slightly
        // off the x axis, transmits of every kind (steered plane wave, focused inside the
        // grid so pixels lie on both sides of the focus, diverging, one with silent
        // elements), a late first sample and too few samples for the deepest pixels of
        // some elements.
        let array = linear_array(19, 300, 1.5e-6);
        let transmits = [
            (-12.0, f64::INFINITY),
            (5.0, 9e-3),
            (-4.0, -6e-3),
            (0.0, 7e-3),
        ]
        .map(|(deg, focus): (f64, f64)| Transmit {
            polar_angle: deg.to_radians(),
            focus_distance: focus,
        });
        let mut scan = linear_array_scan(&array, &transmits);
        for e in 0..array.n_el {
            scan.probe_geometry[[e, 1]] = 1e-5 * (e % 2) as f64;
            scan.probe_geometry[[e, 2]] = 2e-5 * (e % 3) as f64;
            if e % 4 == 1 {
                scan.tx_apodizations[[3, e]] = 0.0;
            }
        }
        scan.initial_times[2] = 0.5e-6;
        let grid = Grid::linspace((-4e-3, 3.5e-3, 7), (4e-3, 12e-3, 9)).unwrap();
        for apodization in [
            Apodization::Hann,
            Apodization::Tukey(0.4),
            Apodization::Rect,
        ] {
            let opts = DasOptions {
                f_number: 1.3,
                apodization,
            };
            let plan = DasPlan::new(&scan, &grid, &opts).unwrap();
            let reference = reference_taps(&scan, &grid, &opts);
            let mut dropped = 0;
            for (ix, column) in plan.columns.iter().enumerate() {
                for iz in 0..grid.nz() {
                    let got: Vec<(usize, u16)> = column
                        .row(iz)
                        .iter()
                        .map(|t| (t.idx as usize * FRAC_STEPS + t.frac as usize, t.apod))
                        .collect();
                    let want = &reference[ix * grid.nz() + iz];
                    assert_eq!(&got, want, "{apodization:?} pixel ({ix}, {iz})");
                    assert!(column.row(iz).iter().all(|t| t.frac as usize <= FRAC_STEPS
                        && (t.idx as usize % array.n_ax) < array.n_ax - 1));
                    let inside = (0..array.n_el)
                        .filter(|&e| {
                            let u = (grid.x[ix] - scan.probe_geometry[[e, 0]]).abs()
                                / ((grid.z[iz] - scan.probe_geometry[[e, 2]]) * 0.5 / 1.3);
                            apodization.weight(u) * APOD_ONE as f64 >= 0.5
                        })
                        .count();
                    dropped += inside * transmits.len() - want.len();
                }
            }
            // The case exercises the sample-range check, not only the aperture.
            assert!(
                dropped > 0,
                "{apodization:?}: no tap fell outside the record"
            );
            assert_eq!(plan.n_taps(), reference.iter().map(Vec::len).sum::<usize>());
        }
    }

    #[test]
    fn apodization_windows() {
        for a in [
            Apodization::Rect,
            Apodization::Hann,
            Apodization::Tukey(0.5),
        ] {
            assert_eq!(a.weight(0.0), 1.0);
            assert_eq!(a.weight(1.01), 0.0);
        }
        assert!((Apodization::Hann.weight(0.5) - 0.5).abs() < 1e-15);
        assert!(Apodization::Hann.weight(1.0).abs() < 1e-15);
        assert_eq!(Apodization::Tukey(0.5).weight(0.5), 1.0);
        // Half-way down the taper: 0.5 (1 + cos(pi / 2)) = 0.5.
        assert!((Apodization::Tukey(0.5).weight(0.75) - 0.5).abs() < 1e-15);
        assert_eq!(Apodization::Tukey(0.0).weight(1.0), 1.0);
        assert!(
            (Apodization::Tukey(1.0).weight(0.3) - Apodization::Hann.weight(0.3)).abs() < 1e-15
        );
    }

    #[test]
    fn lut_interpolates_a_rotating_phasor_exactly_at_the_nodes() {
        // (1 - f) e^{i theta f} b0 + f e^{-i theta (1 - f)} b1 with b_n = e^{i theta n} a_n
        // equals e^{i theta f} ((1 - f) a0 + f a1).
        let theta: f64 = 4.71;
        let (a0, a1) = (Complex32::new(0.3, -0.2), Complex32::new(-0.1, 0.7));
        let cis = |p: f64| Complex32::new(p.cos() as f32, p.sin() as f32);
        for fr in [0.0, 0.25, 0.5, 0.9, 1.0] {
            let c0 = cis(theta * fr) * (1.0 - fr) as f32;
            let c1 = cis(-theta * (1.0 - fr)) * fr as f32;
            let got = c0 * a0 + c1 * (a1 * cis(theta));
            let want = cis(theta * fr) * (a0 * (1.0 - fr) as f32 + a1 * fr as f32);
            assert!((got - want).norm() < 1e-6, "f = {fr}: {got} vs {want}");
        }
    }
}
