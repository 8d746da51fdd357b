//! RF to I/Q demodulation: down-mixing at the demodulation frequency followed by a
//! zero-phase low-pass filter applied in the frequency domain (rustfft).
//!
//! The recipe follows PyMUST `rf2iq` (MUST toolbox, D. Garcia): the RF is multiplied by
//! exp(-i 2 pi fd t) and low-pass filtered by a 5th-order Butterworth run forwards and
//! backwards (`filtfilt`), times 2 to keep the envelope amplitude. Its normalised cut-off
//! (fraction of Nyquist) is `Wn = B / fs` with `B` the -6 dB bandwidth in Hz
//! (fractional bandwidth x centre frequency) when the probe's bandwidth is known, else
//! `min(2 fd / fs, 0.5)`. A forward-backward IIR pass has the zero-phase magnitude
//! response |H(w)|^2 = 1 / (1 + (tan(w/2) / tan(pi Wn / 2))^(2N)), N = 5 (the bilinear
//! Butterworth design `scipy.signal.butter` uses); here that response multiplies the
//! spectrum directly. Like `filtfilt`, the signal is first extended at both ends by an odd
//! reflection of 3 x (N + 1) = 18 samples, then by its end values, so edges do not ring.
//!
//! Time reference (zea convention): sample n of a transmit is mixed with
//! exp(-i 2 pi fd n / fs), i.e. time is counted from the transmit's first recorded sample.
//! Bandpass-sampled RF (fs < 2 fc) demodulates correctly as long as the signal band does
//! not alias onto itself: the mixing shifts the alias of the band at fd to 0 Hz.

use std::sync::Arc;

use ndarray::ArrayView1;
use num_complex::Complex32;
use rustfft::{Fft, FftPlanner};

use super::BeamformError;
use crate::recording::Scan;

/// Butterworth order of PyMUST `rf2iq` (`scipy.signal.butter(5, Wn)`).
pub const BUTTERWORTH_ORDER: i32 = 5;
/// Odd-reflection padding of `scipy.signal.filtfilt`: 3 x max(len(a), len(b)) = 3 x (N + 1).
pub const FILTFILT_PAD: usize = 3 * (BUTTERWORTH_ORDER as usize + 1);

/// The normalised low-pass cut-off (fraction of Nyquist) PyMUST `rf2iq` uses for a scan:
/// `B / fs` with `B` = fractional bandwidth x centre frequency when known, else
/// `min(2 fd / fs, 0.5)`.
pub fn lowpass_cutoff(scan: &Scan) -> Result<f64, BeamformError> {
    let fs = scan.sampling_frequency;
    let wn = match scan.fractional_bandwidth {
        Some(b) => {
            if !(b.is_finite() && b > 0.0 && b < 2.0) {
                return Err(BeamformError::scan(
                    "fractional_bandwidth",
                    b,
                    "must lie in ]0, 2[ (0 to 200 %)",
                ));
            }
            b * scan.center_frequency / fs
        }
        None => (2.0 * demodulation_frequency(scan)? / fs).min(0.5),
    };
    if !(wn > 0.0 && wn < 1.0) {
        return Err(BeamformError::scan(
            "fractional_bandwidth",
            format!("{:?}", scan.fractional_bandwidth),
            format!("gives a low-pass cut-off of {wn} x Nyquist, not within ]0, 1["),
        ));
    }
    Ok(wn)
}

/// The frequency a scan's RF is demodulated at: `demodulation_frequency`, or the centre
/// frequency when that is zero (zea writes 0 for RF never demodulated).
pub fn demodulation_frequency(scan: &Scan) -> Result<f64, BeamformError> {
    let fd = if scan.demodulation_frequency > 0.0 {
        scan.demodulation_frequency
    } else {
        scan.center_frequency
    };
    if !(fd.is_finite() && fd > 0.0) {
        return Err(BeamformError::scan(
            "demodulation_frequency",
            scan.demodulation_frequency,
            format!(
                "and center_frequency = {} give no positive frequency",
                scan.center_frequency
            ),
        ));
    }
    Ok(fd)
}

/// The zero-phase (forward-backward) magnitude response of a digital Butterworth low-pass
/// of order `order` and normalised cut-off `wn` at normalised angular frequency `w`
/// (rad/sample, |w| <= pi).
pub fn filtfilt_butterworth_gain(w: f64, wn: f64, order: i32) -> f64 {
    let r = (w.abs() / 2.0).tan() / (std::f64::consts::PI * wn / 2.0).tan();
    1.0 / (1.0 + r.powi(2 * order))
}

/// Smallest length >= n whose only prime factors are 2, 3 and 5 (fast FFT sizes).
fn smooth_len(n: usize) -> usize {
    let mut m = n.max(1);
    loop {
        let mut k = m;
        for p in [2, 3, 5] {
            while k % p == 0 {
                k /= p;
            }
        }
        if k == 1 {
            return m;
        }
        m += 1;
    }
}

/// Reusable RF-to-I/Q demodulator for channels of `n_ax` samples.
pub struct Demodulator {
    n_ax: usize,
    pad: usize,
    len: usize,
    forward: Arc<dyn Fft<f32>>,
    inverse: Arc<dyn Fft<f32>>,
    gain: Vec<f32>,
    mix: Vec<Complex32>,
    scratch_len: usize,
}

/// Per-thread working memory of a [`Demodulator`].
pub struct DemodScratch {
    buf: Vec<Complex32>,
    fft: Vec<Complex32>,
}

impl Demodulator {
    /// A demodulator at `fd` Hz for RF sampled at `fs` Hz with low-pass cut-off `wn`
    /// (fraction of Nyquist, in ]0, 1[).
    pub fn new(n_ax: usize, fs: f64, fd: f64, wn: f64) -> Result<Self, BeamformError> {
        if n_ax < 2 {
            return Err(BeamformError::scan(
                "n_ax",
                n_ax,
                "at least 2 samples are needed",
            ));
        }
        if !(fs.is_finite() && fs > 0.0) {
            return Err(BeamformError::scan(
                "sampling_frequency",
                fs,
                "must be > 0 and finite",
            ));
        }
        if !(fd.is_finite() && fd > 0.0) {
            return Err(BeamformError::scan(
                "demodulation_frequency",
                fd,
                "must be > 0 and finite",
            ));
        }
        if !(wn > 0.0 && wn < 1.0) {
            return Err(BeamformError::scan(
                "fractional_bandwidth",
                wn,
                "low-pass cut-off (x Nyquist) must lie in ]0, 1[",
            ));
        }
        let pad = FILTFILT_PAD.min(n_ax - 1);
        // Room for the filter's transient to die out before it wraps around: a few
        // periods of the cut-off frequency on each side.
        let guard = ((8.0 / wn).ceil() as usize).max(32);
        let len = smooth_len(n_ax + 2 * pad + 2 * guard);
        let mut planner = FftPlanner::new();
        let forward = planner.plan_fft_forward(len);
        let inverse = planner.plan_fft_inverse(len);
        let scale = 2.0 / len as f64;
        let gain = (0..len)
            .map(|k| {
                let kk = if k <= len / 2 {
                    k as f64
                } else {
                    k as f64 - len as f64
                };
                let w = 2.0 * std::f64::consts::PI * kk / len as f64;
                (filtfilt_butterworth_gain(w, wn, BUTTERWORTH_ORDER) * scale) as f32
            })
            .collect();
        let theta = 2.0 * std::f64::consts::PI * fd / fs;
        let mix = (0..n_ax)
            .map(|n| {
                let p = -theta * n as f64;
                Complex32::new(p.cos() as f32, p.sin() as f32)
            })
            .collect();
        let scratch_len = forward
            .get_inplace_scratch_len()
            .max(inverse.get_inplace_scratch_len());
        Ok(Self {
            n_ax,
            pad,
            len,
            forward,
            inverse,
            gain,
            mix,
            scratch_len,
        })
    }

    /// The demodulator PyMUST `rf2iq` would use for a scan (see [`lowpass_cutoff`]).
    pub fn for_scan(scan: &Scan) -> Result<Self, BeamformError> {
        Self::new(
            scan.n_ax,
            scan.sampling_frequency,
            demodulation_frequency(scan)?,
            lowpass_cutoff(scan)?,
        )
    }

    /// Number of samples per channel.
    pub fn n_ax(&self) -> usize {
        self.n_ax
    }

    /// Working memory for [`Demodulator::demodulate`].
    pub fn scratch(&self) -> DemodScratch {
        DemodScratch {
            buf: vec![Complex32::default(); self.len],
            fft: vec![Complex32::default(); self.scratch_len],
        }
    }

    /// Demodulates one RF channel (`n_ax` samples) into `out` (`n_ax` I/Q samples).
    pub fn demodulate(
        &self,
        rf: ArrayView1<f32>,
        out: &mut [Complex32],
        scratch: &mut DemodScratch,
    ) {
        let n = self.n_ax;
        let pad = self.pad;
        assert!(
            rf.len() == n && out.len() == n,
            "channel length differs from the plan's n_ax"
        );
        let buf = &mut scratch.buf;
        for (i, (&x, &m)) in rf.iter().zip(&self.mix).enumerate() {
            buf[pad + i] = m * x;
        }
        let first = buf[pad];
        let last = buf[pad + n - 1];
        for k in 1..=pad {
            buf[pad - k] = first * 2.0 - buf[pad + k];
            buf[pad + n - 1 + k] = last * 2.0 - buf[pad + n - 1 - k];
        }
        // Beyond the reflections, hold the end values; the two holds meet half-way
        // round the circular buffer.
        let left = buf[0];
        let right = buf[2 * pad + n - 1];
        let tail = 2 * pad + n;
        let half = tail + (self.len - tail) / 2;
        buf[tail..half].fill(right);
        buf[half..].fill(left);
        self.forward.process_with_scratch(buf, &mut scratch.fft);
        for (b, &g) in buf.iter_mut().zip(&self.gain) {
            *b *= g;
        }
        self.inverse.process_with_scratch(buf, &mut scratch.fft);
        out.copy_from_slice(&buf[pad..pad + n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array1;

    #[test]
    fn smooth_lengths() {
        assert_eq!(smooth_len(7), 8);
        assert_eq!(smooth_len(514), 540);
        assert_eq!(smooth_len(1), 1);
    }

    #[test]
    fn gain_is_half_power_at_cutoff_per_pass() {
        // At the cut-off each Butterworth pass is at -3 dB, so forward-backward gives 1/2.
        let wn = 0.1125;
        let g = filtfilt_butterworth_gain(std::f64::consts::PI * wn, wn, 5);
        assert!((g - 0.5).abs() < 1e-12, "{g}");
        assert!((filtfilt_butterworth_gain(0.0, wn, 5) - 1.0).abs() < 1e-15);
        assert!(filtfilt_butterworth_gain(std::f64::consts::PI, wn, 5) < 1e-20);
    }

    #[test]
    fn tone_at_fd_gives_constant_envelope() {
        // A cosine at fd demodulates to a constant of amplitude 1 (factor 2 of rf2iq).
        let (fs, fd, n) = (20e6, 5e6, 400);
        let d = Demodulator::new(n, fs, fd, 0.2).unwrap();
        let rf = Array1::from_iter(
            (0..n).map(|i| (2.0 * std::f64::consts::PI * fd * i as f64 / fs + 0.3).cos() as f32),
        );
        let mut out = vec![Complex32::default(); n];
        d.demodulate(rf.view(), &mut out, &mut d.scratch());
        // Away from the ends (the odd reflection of the 2 fd mixing product rings for a
        // few cut-off periods, as in filtfilt).
        for z in &out[60..n - 60] {
            assert!((z.norm() - 1.0).abs() < 1e-3, "{z}");
            assert!((z.arg() - 0.3).abs() < 1e-3, "{z}");
        }
    }
}
