//! Tissue speckle: sub-resolution scatterers at random positions whose reflectivity follows
//! the aeration (docs/physics.md, "Speckle"; docs/simulator.md, "Scatterers").
//!
//! Each pixel of aeration `a` holds `per_pixel` point scatterers at independent uniform
//! positions, each of reflectivity `a g / sqrt(per_pixel)`, `g` standard normal: zero mean,
//! and per pixel a summed reflectivity of variance `a^2`, so a pixel's mean echo power is
//! that of the one in-phase reflector of the first-order model ([`Scatterers::Born`]). It is
//! the model of the independent-simulator RF (`scripts/simus_rf.py`, PyMUST `simus`, 4
//! per pixel), here through pleura's own operator.
//!
//! Positions are drawn on a lattice `subdivision` times finer than the image grid (a third
//! of a pixel by default: 0.1 mm, a third of a wavelength at 5 MHz), because the operator
//! is built on a grid; at that spacing the positions are random on the scale the speckle
//! is formed at (the resolution cell, several wavelengths wide). The scatterers, their
//! positions and `g`, are drawn once per sequence: tissue that stays still keeps its
//! speckle from frame to frame, as in a recording, and each frame scales them by its own
//! aeration.

use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use crate::grid::{Grid, GridError};

/// Seed offset of the scatterer stream, independent of the phantom's and the noise's.
const SCATTERER_STREAM: u64 = 0x7370_6563_6b6c_6501;

/// Which scatterers make the simulated RF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scatterers {
    /// One in-phase reflector at each pixel centre of reflectivity equal to its aeration:
    /// the operator's own model (RF that the posterior's RF term explains exactly).
    Born,
    /// Sub-resolution scatterers at random positions ([`Speckle`]).
    Speckle(Speckle),
}

impl Scatterers {
    /// One line for file descriptions and logs.
    pub fn describe(&self) -> String {
        match self {
            Scatterers::Born => "first-order Born model, one reflector per pixel".into(),
            Scatterers::Speckle(s) => format!(
                "speckle: {} scatterers per pixel at random positions (1/{} pixel lattice), \
                 zero-mean reflectivity of standard deviation equal to the aeration",
                s.per_pixel, s.subdivision
            ),
        }
    }
}

/// The speckle model's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Speckle {
    /// Scatterers per pixel (4, as `scripts/simus_rf.py --per-pixel`).
    pub per_pixel: usize,
    /// Lattice cells per pixel side the positions are drawn on.
    pub subdivision: usize,
}

impl Default for Speckle {
    fn default() -> Self {
        Speckle {
            per_pixel: 4,
            subdivision: 3,
        }
    }
}

/// One sequence's scatterers: on the lattice, a reflectivity weight per cell (the sum of
/// the `g / sqrt(per_pixel)` of the scatterers drawn into it).
#[derive(Clone, Debug)]
pub struct ScattererField {
    /// The lattice: each pixel of the image grid split into `subdivision` x `subdivision`
    /// cells, their centres.
    pub lattice: Grid,
    subdivision: usize,
    /// (nz * subdivision, nx * subdivision) weights.
    weights: Array2<f32>,
}

/// The lattice of `grid`: each pixel's cell (half-way to its neighbours; an edge pixel's
/// as wide as its neighbour's spacing) split into `s` x `s` cells. Each axis needs two
/// pixels at least, for a pixel size.
pub fn lattice(grid: &Grid, s: usize) -> Result<Grid, GridError> {
    let split = |v: &[f64], axis: &'static str| -> Result<Vec<f64>, GridError> {
        if v.len() < 2 {
            return Err(GridError::Empty { axis, n: v.len() });
        }
        let n = v.len();
        let mut out = Vec::with_capacity(n * s);
        for i in 0..n {
            let lo = if i == 0 {
                v[0] - (v[1] - v[0]) / 2.0
            } else {
                (v[i - 1] + v[i]) / 2.0
            };
            let hi = if i == n - 1 {
                v[n - 1] + (v[n - 1] - v[n - 2]) / 2.0
            } else {
                (v[i] + v[i + 1]) / 2.0
            };
            out.extend((0..s).map(|k| lo + (k as f64 + 0.5) * (hi - lo) / s as f64));
        }
        Ok(out)
    };
    Grid::new(split(&grid.x, "x")?, split(&grid.z, "z")?)
}

impl ScattererField {
    /// Draws the scatterers of a sequence on `grid` from `seed` (a stream of its own).
    pub fn draw(grid: &Grid, speckle: Speckle, seed: u64) -> Result<Self, GridError> {
        let s = speckle.subdivision.max(1);
        let lattice = lattice(grid, s)?;
        let mut rng = StdRng::seed_from_u64(seed ^ SCATTERER_STREAM);
        let (nz, nx) = (grid.nz(), grid.nx());
        let mut weights = Array2::<f32>::zeros((nz * s, nx * s));
        let scale = 1.0 / (speckle.per_pixel.max(1) as f64).sqrt();
        for iz in 0..nz {
            for ix in 0..nx {
                for _ in 0..speckle.per_pixel {
                    let (cz, cx) = (rng.random_range(0..s), rng.random_range(0..s));
                    let g: f64 = StandardNormal.sample(&mut rng);
                    weights[[iz * s + cz, ix * s + cx]] += (g * scale) as f32;
                }
            }
        }
        Ok(ScattererField {
            lattice,
            subdivision: s,
            weights,
        })
    }

    /// The lattice reflectivity of a frame of aeration `a` (on the image grid): each
    /// cell's weight times its pixel's aeration.
    pub fn reflectivity(&self, a: &Array2<f32>) -> Array2<f32> {
        let s = self.subdivision;
        Array2::from_shape_fn(self.weights.dim(), |(z, x)| {
            self.weights[[z, x]] * a[[z / s, x / s]]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lattice splits each pixel evenly and keeps the pixel centres as cell centres
    /// for odd `s`; a one-pixel axis is refused.
    #[test]
    fn lattice_cells() {
        let g = Grid::uniform(4, 3, 0.3e-3, 2e-3).unwrap();
        let l = lattice(&g, 3).unwrap();
        assert_eq!((l.nx(), l.nz()), (12, 9));
        for (i, x) in g.x.iter().enumerate() {
            assert!((l.x[3 * i + 1] - x).abs() < 1e-12);
        }
        let steps: Vec<f64> = l.z.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            steps.iter().all(|d| (d - 0.1e-3).abs() < 1e-12),
            "{steps:?}"
        );
        let one = Grid::uniform(1, 3, 0.3e-3, 2e-3).unwrap();
        assert!(lattice(&one, 3).is_err());
    }

    /// Over many pixels, each pixel's summed reflectivity has mean 0 and variance a^2
    /// (the first-order model's echo power), and a pixel of aeration 0 has none.
    #[test]
    fn per_pixel_reflectivity_has_the_aerations_variance() {
        let g = Grid::uniform(60, 60, 0.3e-3, 2e-3).unwrap();
        let field = ScattererField::draw(&g, Speckle::default(), 7).unwrap();
        let a = Array2::from_shape_fn((60, 60), |(z, _)| if z < 30 { 0.8f32 } else { 0.0 });
        let r = field.reflectivity(&a);
        let sums: Vec<f64> = (0..30 * 60)
            .map(|p| {
                let (iz, ix) = (p / 60, p % 60);
                let mut s = 0.0;
                for dz in 0..3 {
                    for dx in 0..3 {
                        s += r[[3 * iz + dz, 3 * ix + dx]] as f64;
                    }
                }
                s
            })
            .collect();
        let n = sums.len() as f64;
        let mean = sums.iter().sum::<f64>() / n;
        let var = sums.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        // 1,800 pixels: the variance's standard error is about 3.3 %.
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!(
            (var / 0.64 - 1.0).abs() < 0.1,
            "variance {var} against 0.64"
        );
        assert!(r.slice(ndarray::s![90.., ..]).iter().all(|v| *v == 0.0));
        // The same seed gives the same scatterers; another seed others.
        let again = ScattererField::draw(&g, Speckle::default(), 7).unwrap();
        assert_eq!(again.reflectivity(&a), r);
        let other = ScattererField::draw(&g, Speckle::default(), 8).unwrap();
        assert_ne!(other.reflectivity(&a), r);
    }

    /// Through the operator and DAS, speckle RF gives the echo statistics docs/physics.md
    /// states: fully developed speckle in a region of uniform aeration (the envelope's mean
    /// over its standard deviation near Rayleigh's 1.91), and a mean echo power that
    /// follows a^2 (aeration 0.8 beside 0.4: four times the power, at the same depths).
    #[test]
    fn speckle_rf_has_rayleigh_statistics_and_power_in_a_squared() {
        use crate::beamform::{Beamformer, DasOptions};
        use crate::operator::{MeasurementOperator, OperatorOptions};
        use crate::simulate::probe::LinearProbe;

        let g = Grid::uniform(48, 40, 0.3e-3, 6e-3).unwrap();
        let a = Array2::from_shape_fn((40, 48), |(_, x)| if x < 24 { 0.8f32 } else { 0.4 });
        let field = ScattererField::draw(&g, Speckle::default(), 3).unwrap();
        let scan = LinearProbe::default_lung().plane_wave_scan(&[0.0], &field.lattice);
        let op = MeasurementOperator::new(
            &scan,
            &field.lattice,
            OperatorOptions::default(),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let rf = op.forward_array(&field.reflectivity(&a)).unwrap();
        let mut bf = Beamformer::new(&scan, &g, &DasOptions::default()).unwrap();
        let mut env = Array2::<f32>::zeros((40, 48));
        bf.envelope_into(rf.view(), env.view_mut()).unwrap();
        // Rows 10-30 (9-15 mm), columns away from the sides and the 0.8/0.4 edge.
        let region = |x0: usize| -> Vec<f64> {
            (10..30)
                .flat_map(|z| (x0..x0 + 14).map(move |x| (z, x)))
                .map(|(z, x)| env[[z, x]] as f64)
                .collect()
        };
        let stats = |v: &[f64]| {
            let n = v.len() as f64;
            let mean = v.iter().sum::<f64>() / n;
            let sd = (v.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n).sqrt();
            let power = v.iter().map(|e| e * e).sum::<f64>() / n;
            (mean / sd, power)
        };
        let (snr_hi, p_hi) = stats(&region(6));
        let (snr_lo, p_lo) = stats(&region(28));
        for snr in [snr_hi, snr_lo] {
            assert!(
                (1.4..2.5).contains(&snr),
                "speckle SNR {snr} (Rayleigh 1.91)"
            );
        }
        let ratio = p_hi / p_lo;
        assert!((3.0..5.3).contains(&ratio), "power ratio {ratio} (a^2: 4)");
    }
}
