//! The pulse-echo impulse response of the probe: a Gaussian-modulated cosine.
//!
//! The envelope is exp(-t^2 / (2 sigma^2)); its spectrum is a Gaussian around the centre
//! frequency, |H(f)| ∝ exp(-2 pi^2 sigma^2 (f - fc)^2). The -6 dB (half amplitude) full
//! width of that spectrum is the pulse-echo fractional bandwidth B times fc, which gives
//! sigma = sqrt(2 ln 2) / (pi B fc) (tested against a numerical DFT in `tests`).

use std::f64::consts::PI;

/// Pulse-echo fractional -6 dB bandwidth used when the scan does not say (60 %, a typical
/// linear array; PyMUST's `getparam` presets use 65-77 %).
pub const DEFAULT_FRACTIONAL_BANDWIDTH: f64 = 0.6;

/// Number of envelope standard deviations kept on each side of the pulse centre
/// (the envelope has fallen to exp(-3.5^2/2) = 0.2 % there).
pub const HALF_LENGTH_SIGMAS: f64 = 3.5;

/// A Gaussian-modulated cosine pulse centred at t = 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pulse {
    /// Centre frequency, Hz.
    pub center_frequency: f64,
    /// Pulse-echo fractional -6 dB bandwidth (0.6 for 60 %).
    pub fractional_bandwidth: f64,
}

impl Pulse {
    /// Standard deviation of the Gaussian envelope, s.
    pub fn sigma(&self) -> f64 {
        (2.0 * 2f64.ln()).sqrt() / (PI * self.fractional_bandwidth * self.center_frequency)
    }

    /// Half length of the truncated pulse, s.
    pub fn half_length(&self) -> f64 {
        HALF_LENGTH_SIGMAS * self.sigma()
    }

    /// Envelope at time `t` (1 at t = 0).
    pub fn envelope(&self, t: f64) -> f64 {
        let s = self.sigma();
        (-t * t / (2.0 * s * s)).exp()
    }

    /// The real RF pulse at time `t`.
    pub fn rf(&self, t: f64) -> f64 {
        self.envelope(t) * (2.0 * PI * self.center_frequency * t).cos()
    }

    /// The pulse demodulated at `fd` (analytic signal times exp(-2 pi i fd t)), as (re, im):
    /// envelope(t) * exp(2 pi i (fc - fd) t).
    pub fn baseband(&self, t: f64, fd: f64) -> (f64, f64) {
        let e = self.envelope(t);
        let ph = 2.0 * PI * (self.center_frequency - fd) * t;
        (e * ph.cos(), e * ph.sin())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// |DFT| of the sampled pulse at frequency f (direct sum, fine sampling).
    fn spectrum(p: &Pulse, f: f64) -> f64 {
        let fs = 400e6;
        let n = (4.0 * p.half_length() * fs) as i64;
        let (mut re, mut im) = (0.0, 0.0);
        for k in -n..=n {
            let t = k as f64 / fs;
            let v = p.rf(t);
            re += v * (2.0 * PI * f * t).cos();
            im -= v * (2.0 * PI * f * t).sin();
        }
        (re * re + im * im).sqrt()
    }

    #[test]
    fn bandwidth_is_the_minus_6db_full_width() {
        for (fc, b) in [(5e6, 0.6), (3e6, 0.8), (7.5e6, 0.4)] {
            let p = Pulse {
                center_frequency: fc,
                fractional_bandwidth: b,
            };
            let peak = spectrum(&p, fc);
            let lo = spectrum(&p, fc * (1.0 - b / 2.0)) / peak;
            let hi = spectrum(&p, fc * (1.0 + b / 2.0)) / peak;
            // The negative-frequency image adds a little at the lower edge for wide bands.
            assert!((hi - 0.5).abs() < 0.01, "fc {fc} B {b}: upper edge {hi}");
            assert!((lo - 0.5).abs() < 0.02, "fc {fc} B {b}: lower edge {lo}");
        }
    }

    #[test]
    fn baseband_at_fc_is_the_envelope() {
        let p = Pulse {
            center_frequency: 5e6,
            fractional_bandwidth: 0.6,
        };
        let t = 0.07e-6;
        let (re, im) = p.baseband(t, 5e6);
        assert!((re - p.envelope(t)).abs() < 1e-12 && im.abs() < 1e-12);
        // sigma for 5 MHz, 60 %: sqrt(2 ln 2)/(pi * 3 MHz) = 124.9 ns.
        assert!((p.sigma() - 124.93e-9).abs() < 0.01e-9, "{}", p.sigma());
    }
}
