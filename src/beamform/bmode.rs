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
    Ok(envelope.mapv(|e| {
        let db = 20.0 * (e as f64 / r).log10() + dynamic_range_db;
        let g = 255.0 * db / dynamic_range_db;
        if g.is_nan() {
            0
        } else {
            g.clamp(0.0, 255.0) as u8
        }
    }))
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
