//! Envelope and log-compressed B-mode.

use ndarray::{Array2, ArrayView2};
use num_complex::Complex32;

use super::BeamformError;

/// The envelope |I/Q| of a beamformed image.
pub fn envelope(iq: ArrayView2<Complex32>) -> Array2<f32> {
    iq.mapv(|v| v.norm())
}

/// Largest value of an envelope (0 for an empty one); NaN is ignored.
pub fn max_of(envelope: ArrayView2<f32>) -> f32 {
    envelope.iter().copied().fold(0.0, f32::max)
}

/// Log-compresses an envelope to 8-bit grey levels the way PyMUST `bmode` does:
/// g = 255 (20 log10(e / reference_max) + DR) / DR, clipped to [0, 255] and truncated.
/// `reference_max` is the envelope value shown as 255: the maximum of this image, or of a
/// whole recording to normalise all frames alike.
///
/// Every pixel gets exactly the grey level of that formula evaluated in f64 ([`grey`]), at
/// a fraction of the cost of a libm `log10` per pixel: g = a ln(e) + b is evaluated with
/// [`ln_normal`], within 1e-9 of ln(e), so g is within a·1e-9 + 1e-12 of the value the
/// formula truncates; where it lies farther than `margin` = a·1e-7 + 1e-9 from an integer,
/// its integer part is the formula's grey level. Pixels closer than that to a level boundary (a few in
/// a million), and zero, subnormal, infinite or NaN values, are given [`grey`] itself.
pub fn log_compress(
    envelope: ArrayView2<f32>,
    reference_max: f32,
    dynamic_range_db: f64,
) -> Result<Array2<u8>, BeamformError> {
    if !(reference_max.is_finite() && reference_max > 0.0) {
        return Err(BeamformError::ReferenceMax(reference_max));
    }
    if !(dynamic_range_db.is_finite() && dynamic_range_db > 0.0) {
        return Err(BeamformError::DynamicRange(dynamic_range_db));
    }
    let r = reference_max as f64;
    let a = 255.0 * 20.0 / (dynamic_range_db * std::f64::consts::LN_10);
    let b = 255.0 - a * r.ln();
    let margin = a * 1e-7 + 1e-9;
    let e = envelope.as_standard_layout();
    let e = e
        .as_slice()
        .unwrap_or_else(|| unreachable!("standard layout"));
    let mut out = vec![0u8; e.len()];
    // Two passes per block: the logarithms (branch-free, so they vectorise), then the
    // grey levels.
    let mut g = [0.0f64; 1024];
    for (es, os) in e.chunks(g.len()).zip(out.chunks_mut(g.len())) {
        for (gi, &ei) in g.iter_mut().zip(es) {
            *gi = a * ln_normal(ei) + b;
        }
        for ((o, &gi), &ei) in os.iter_mut().zip(&g).zip(es) {
            let frac = gi - gi as i64 as f64;
            let near =
                (gi > -margin) & (gi < 255.0 + margin) & !(margin < frac && frac < 1.0 - margin);
            let special = !(f32::MIN_POSITIVE..=f32::MAX).contains(&ei);
            *o = if near | special {
                grey(ei, r, dynamic_range_db)
            } else {
                gi.clamp(0.0, 255.0) as u8
            };
        }
    }
    Ok(Array2::from_shape_vec(envelope.raw_dim(), out)
        .unwrap_or_else(|_| unreachable!("one grey level per pixel")))
}

/// The grey level of envelope value `e`: PyMUST's formula in f64, the definition
/// [`log_compress`] follows.
fn grey(e: f32, reference_max: f64, dynamic_range_db: f64) -> u8 {
    let db = 20.0 * (e as f64 / reference_max).log10() + dynamic_range_db;
    let g = 255.0 * db / dynamic_range_db;
    if g.is_nan() {
        0
    } else {
        g.clamp(0.0, 255.0) as u8
    }
}

/// ln(e) for a positive normal `e`, within 1e-9, without a libm call (any other input gives
/// a finite meaningless value). e = 2^k m with m in [sqrt(1/2), sqrt(2)[, and
/// ln(m) = 2 atanh(t), t = (m - 1) / (m + 1), |t| < 0.1716, summed to t^9: the remainder is
/// below 2 |t|^11 / (11 (1 - t^2)) < 7.2e-10.
#[inline(always)]
fn ln_normal(e: f32) -> f64 {
    // The bits of sqrt(1/2) as f32: subtracting them puts k in the exponent field and m's
    // offset from sqrt(1/2) in the mantissa field.
    const SQRT_HALF_BITS: u32 = 0x3f35_04f3;
    let u = e.to_bits().wrapping_sub(SQRT_HALF_BITS);
    let k = (u as i32) >> 23;
    let m = f32::from_bits((u & 0x007f_ffff) + SQRT_HALF_BITS) as f64;
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let series =
        t * (2.0 + t2 * (2.0 / 3.0 + t2 * (2.0 / 5.0 + t2 * (2.0 / 7.0 + t2 * (2.0 / 9.0)))));
    k as f64 * std::f64::consts::LN_2 + series
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn grey_levels() {
        // 1 -> 255; -15 dB of 30 dB -> 127.5 -> 127; -30 dB and below -> 0; 0 -> 0.
        let e = array![
            [2.0_f32, 2.0 * 10f32.powf(-15.0 / 20.0)],
            [2.0 * 10f32.powf(-31.0 / 20.0), 0.0]
        ];
        let g = log_compress(e.view(), 2.0, 30.0).unwrap();
        assert_eq!(g, array![[255u8, 127], [0, 0]]);
        // Above the reference clips to 255.
        assert_eq!(
            log_compress(array![[4.0f32]].view(), 2.0, 30.0).unwrap()[[0, 0]],
            255
        );
    }

    #[test]
    fn ln_normal_is_within_1e_9_for_every_mantissa() {
        // [1, 2[ holds every mantissa, on both sides of the split at sqrt(2); other
        // exponents only change k.
        let err = |e: f32| (ln_normal(e) - (e as f64).ln()).abs();
        let worst = (0x3f80_0000u32..0x4000_0000)
            .map(|bits| err(f32::from_bits(bits)))
            .fold(0.0, f64::max);
        assert!(worst < 7.2e-10, "{worst:e}");
        // sqrt(1/2) and its neighbours: the split between k and k - 1.
        let half = std::f32::consts::FRAC_1_SQRT_2.to_bits();
        let split = [half - 1, half, half + 1].map(f32::from_bits);
        for e in [f32::MIN_POSITIVE, 1e-30, 0.5, 3e20, f32::MAX]
            .into_iter()
            .chain(split)
        {
            assert!(err(e) < 1e-9, "{e}: {:e}", err(e));
        }
    }

    #[test]
    fn grey_levels_are_the_f64_formula_at_every_level_boundary() {
        for (r, dr) in [
            (1.0f32, 60.0),
            (2.0, 30.0),
            (1234.5, 40.0),
            (3e-7, 1.0),
            (7.5e5, 100.0),
        ] {
            let mut e = vec![
                0.0,
                -0.0,
                -1.0,
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                1e-40,
            ];
            e.extend([f32::MIN_POSITIVE, f32::MAX, r, 2.0 * r]);
            // Every level's lower edge, r 10^((k DR / 255 - DR) / 20), and its f32 neighbours.
            for k in 0..=256 {
                let edge = (r as f64 * 10f64.powf((k as f64 * dr / 255.0 - dr) / 20.0)) as f32;
                for d in -6i32..=6 {
                    e.push(f32::from_bits((edge.to_bits() as i32 + d) as u32));
                }
            }
            // Log-uniform from 1e-8 r to 10 r.
            e.extend((0..20_000).map(|i| r * 10f32.powf(-8.0 + 9.0 * i as f32 / 20_000.0)));
            let n = e.len() / 2;
            let image = Array2::from_shape_vec((2, n), e[..2 * n].to_vec()).unwrap();
            for view in [image.view(), image.t()] {
                let want = view.mapv(|v| grey(v, r as f64, dr));
                assert_eq!(log_compress(view, r, dr).unwrap(), want, "r {r}, DR {dr}");
            }
        }
    }

    #[test]
    fn bad_parameters_name_the_value() {
        let e = array![[1.0f32]];
        assert_eq!(
            log_compress(e.view(), 0.0, 30.0).unwrap_err().to_string(),
            "B-mode reference maximum must be > 0 and finite, got 0"
        );
        assert!(log_compress(e.view(), 1.0, -3.0)
            .unwrap_err()
            .to_string()
            .contains("-3 dB"));
    }
}
