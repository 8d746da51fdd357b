//! Delay-and-sum plan: delays, apodization and interpolation tables computed once per
//! (scan, grid, options), applied to every frame.

use ndarray::{ArrayView2, ArrayView4, ArrayViewMut2};
use num_complex::Complex32;
use rayon::prelude::*;

use super::demod::{demodulation_frequency, Demodulator};
use super::{BeamformError, Grid};
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
/// Apodization weights are stored as u16 fractions of APOD_ONE.
const APOD_ONE: f32 = u16::MAX as f32;

/// One receiving element of a pixel: element `el`, its receive delay `rx` in samples and
/// its apodization `apod` / APOD_ONE. The pixel's transmit delays (one per transmit, in
/// samples from the first recorded sample) are added to `rx` when a frame is summed, so the
/// table is shared by all transmits.
#[derive(Clone, Copy, Debug)]
struct ElemTap {
    rx: f32,
    el: u16,
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
    /// Receiving elements of pixel p (column-major, p = ix nz + iz) are
    /// taps[offsets[p]..offsets[p + 1]].
    offsets: Vec<usize>,
    taps: Vec<ElemTap>,
    /// Transmit delay of pixel p for transmit k, in samples of that transmit's channels
    /// ((tau_tx / c - initial_times[k]) fs), at tx[p n_tx + k].
    tx: Vec<f32>,
    /// Number of (pixel, transmit, element) contributions with a recorded sample.
    n_contributions: usize,
}

/// Per-transmit geometry of the transmit delay.
struct TxGeometry {
    firing: Vec<usize>,
    t0c: Vec<f64>,
    focal_z: f64,
    sign: f64,
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
        if grid.z()[0] <= z_front {
            return Err(BeamformError::OutsideFieldOfView {
                axis: "z",
                value: grid.z()[0],
                reason: format!("pixels must lie in front of the array (z > {z_front} m)"),
            });
        }

        let mut txs = Vec::with_capacity(n_tx);
        for k in 0..n_tx {
            let firing: Vec<usize> = (0..n_el)
                .filter(|&e| scan.tx_apodizations[[k, e]] != 0.0)
                .collect();
            if firing.is_empty() {
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
            let t0c = (0..n_el).map(|e| scan.t0_delays[[k, e]] * c).collect();
            txs.push(TxGeometry {
                firing,
                t0c,
                focal_z,
                sign,
            });
        }

        let (nx, nz) = (grid.nx(), grid.nz());
        let xs = grid.x();
        let zs = grid.z();
        let max_s = (n_ax - 1) as f64;
        let half_inv_f = 0.5 / f;
        let apod = options.apodization;
        if n_el > u16::MAX as usize + 1 {
            return Err(BeamformError::scan("n_el", n_el, "at most 65536 elements"));
        }
        struct Column {
            taps: Vec<ElemTap>,
            counts: Vec<u32>,
            tx: Vec<f32>,
            in_range: Vec<usize>,
        }
        let columns: Vec<Column> = (0..nx)
            .into_par_iter()
            .map(|ix| {
                let x = xs[ix];
                let mut col = Column {
                    taps: Vec::new(),
                    counts: Vec::with_capacity(nz),
                    tx: Vec::with_capacity(nz * n_tx),
                    in_range: Vec::with_capacity(nz),
                };
                let mut rx = vec![0.0; n_el];
                for &z in zs {
                    let before = col.taps.len();
                    for (e, p) in el.iter().enumerate() {
                        let (dx, dy, dz) = (x - p[0], -p[1], z - p[2]);
                        rx[e] = (dx * dx + dy * dy + dz * dz).sqrt();
                        let u = dx.abs() / (dz * half_inv_f);
                        let w = (apod.weight(u) * APOD_ONE as f64).round() as u16;
                        if w > 0 {
                            col.taps.push(ElemTap {
                                rx: (rx[e] / c * fs) as f32,
                                el: e as u16,
                                apod: w,
                            });
                        }
                    }
                    let mut in_range = 0;
                    for (k, tx) in txs.iter().enumerate() {
                        let in_front = tx.sign * (z - tx.focal_z) <= 0.0;
                        let mut d = if in_front {
                            f64::INFINITY
                        } else {
                            f64::NEG_INFINITY
                        };
                        for &e in &tx.firing {
                            let v = tx.t0c[e] + rx[e];
                            d = if in_front { d.min(v) } else { d.max(v) };
                        }
                        let t = (d / c - scan.initial_times[k]) * fs;
                        col.tx.push(t as f32);
                        in_range += col.taps[before..]
                            .iter()
                            .filter(|tap| {
                                let s = tap.rx + t as f32;
                                s >= 0.0 && s <= max_s as f32
                            })
                            .count();
                    }
                    col.counts.push((col.taps.len() - before) as u32);
                    col.in_range.push(in_range);
                }
                col
            })
            .collect();

        for (ix, col) in columns.iter().enumerate() {
            if col.in_range.iter().all(|&n| n == 0) {
                return Err(BeamformError::OutsideFieldOfView {
                    axis: "x",
                    value: xs[ix],
                    reason: format!("no element within the f-number {f} receive aperture has a recorded sample for any depth of this column"),
                });
            }
        }
        for iz in 0..nz {
            if columns.iter().all(|col| col.in_range[iz] == 0) {
                return Err(BeamformError::OutsideFieldOfView {
                    axis: "z",
                    value: zs[iz],
                    reason: format!(
                        "no recorded sample reaches this depth (n_ax = {n_ax}, fs = {fs} Hz)"
                    ),
                });
            }
        }

        let total: usize = columns.iter().map(|col| col.taps.len()).sum();
        let n_contributions = columns
            .iter()
            .map(|col| col.in_range.iter().sum::<usize>())
            .sum();
        let mut taps = Vec::with_capacity(total);
        let mut tx = Vec::with_capacity(nx * nz * n_tx);
        let mut offsets = Vec::with_capacity(nx * nz + 1);
        offsets.push(0);
        for col in columns {
            for n in col.counts {
                offsets.push(offsets[offsets.len() - 1] + n as usize);
            }
            taps.extend_from_slice(&col.taps);
            tx.extend_from_slice(&col.tx);
        }

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
            offsets,
            taps,
            tx,
            n_contributions,
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
        self.n_contributions
    }

    /// Bytes held by the plan's tables.
    pub fn table_bytes(&self) -> usize {
        self.taps.len() * std::mem::size_of::<ElemTap>()
            + self.offsets.len() * std::mem::size_of::<usize>()
            + self.tx.len() * std::mem::size_of::<f32>()
    }

    /// Loads a frame (n_tx, n_ax, n_el, n_ch) into `channels` as (el, tx, ax) I/Q samples
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
        if let Some(((tx, ax, el, ch), &value)) = frame.indexed_iter().find(|(_, v)| !v.is_finite())
        {
            return Err(BeamformError::NonFinite {
                tx,
                ax,
                el,
                ch,
                value,
            });
        }
        let _ = n_ch;
        channels.par_chunks_mut(n_ax).enumerate().for_each_init(
            || self.demod.as_ref().map(|d| d.scratch()),
            |scratch, (ch_i, out)| {
                let (e, tx) = (ch_i / n_tx, ch_i % n_tx);
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

    /// Sums the contributions of every pixel into `iq` (column-major, ix nz + iz).
    fn sum(&self, channels: &[Complex32], iq: &mut [Complex32]) {
        let nz = self.grid.nz();
        let [n_tx, n_ax, _, _] = self.dims;
        let max_s = (n_ax - 1) as f32;
        let steps = FRAC_STEPS as f32;
        iq.par_chunks_mut(nz).enumerate().for_each(|(ix, col)| {
            let base = ix * nz;
            for (iz, out) in col.iter_mut().enumerate() {
                let p = base + iz;
                let taps = &self.taps[self.offsets[p]..self.offsets[p + 1]];
                let tx = &self.tx[p * n_tx..(p + 1) * n_tx];
                let mut acc = Complex32::default();
                for t in taps {
                    let el = &channels[t.el as usize * n_tx * n_ax..][..n_tx * n_ax];
                    let mut acc_el = Complex32::default();
                    for (k, &txk) in tx.iter().enumerate() {
                        let s = t.rx + txk;
                        if !(s >= 0.0 && s <= max_s) {
                            continue;
                        }
                        let i = (s as usize).min(n_ax - 2);
                        let q = ((s - i as f32) * steps + 0.5) as usize;
                        let [c0, c1] = self.lut[q];
                        let pair = &el[k * n_ax + i..][..2];
                        acc_el += c0 * pair[0] + c1 * pair[1];
                    }
                    acc += acc_el * t.apod as f32;
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
            return Err(BeamformError::Grid {
                axis: "output",
                reason: format!(
                    "envelope buffer is {:?}, grid is (nz, nx) = ({nz}, {nx})",
                    out.dim()
                ),
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
