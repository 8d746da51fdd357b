//! Simulation of lung ultrasound recordings: probe, phantoms, RF through the operator.

pub mod output;
pub mod phantom;
pub mod probe;
pub mod speckle;

use ndarray::{Array2, Array4};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::grid::Grid;
use crate::operator::{MeasurementOperator, OperatorError};

/// Seed offset of the noise stream, so that noise and phantom draws are independent.
const NOISE_STREAM: u64 = 0x6e6f_6973_6500_0001;

/// Adds white Gaussian noise to `signal` at `snr_db` = 10 log10(mean(signal^2) / sigma^2);
/// returns sigma. An all-zero signal gets no noise.
pub fn add_noise(signal: &mut Array4<f32>, snr_db: f64, rng: &mut StdRng) -> f64 {
    let power =
        signal.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / signal.len().max(1) as f64;
    let sigma = (power / 10f64.powf(snr_db / 10.0)).sqrt();
    if sigma > 0.0 {
        signal.iter_mut().for_each(|v| {
            let n: f64 = StandardNormal.sample(rng);
            *v += (sigma * n) as f32;
        });
    }
    sigma
}

/// Channel data of each image through `op` (the phantom's aeration, or a speckle
/// lattice's reflectivity), with noise at `snr_db` (none when `None`), drawn from a stream
/// derived from `seed`. Returns the frames and noise sigmas.
pub fn channel_data<'a>(
    op: &MeasurementOperator,
    images: impl IntoIterator<Item = &'a Array2<f32>>,
    snr_db: Option<f64>,
    seed: u64,
) -> Result<Vec<(Array4<f32>, f64)>, OperatorError> {
    let mut rng = StdRng::seed_from_u64(seed ^ NOISE_STREAM);
    images
        .into_iter()
        .map(|image| {
            let mut y = op.forward_array(image)?;
            let sigma = match snr_db {
                Some(s) => add_noise(&mut y, s, &mut rng),
                None => 0.0,
            };
            Ok((y, sigma))
        })
        .collect()
}

/// Grid used by `pleura simulate` unless told otherwise.
pub fn default_grid() -> Grid {
    Grid::default_lung()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn noise_hits_the_requested_snr() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut y = Array4::from_shape_fn((1, 4000, 4, 1), |(_, n, e, _)| {
            ((n * (e + 1)) as f32 * 0.01).sin()
        });
        let clean = y.clone();
        let sigma = add_noise(&mut y, 20.0, &mut rng);
        let p_sig = clean.iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
        let p_noise = (&y - &clean)
            .iter()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>();
        let snr = 10.0 * (p_sig / p_noise).log10();
        assert!((snr - 20.0).abs() < 0.2, "measured SNR {snr} dB");
        assert!(
            (sigma - (0.5f64 / 100.0).sqrt()).abs() < 0.005,
            "sigma {sigma}"
        );
    }
}
