//! Lung ultrasound aeration phantoms: what a linear probe on the chest sees below it.
//!
//! From the probe down: chest wall soft tissue (aeration about 0, weak speckle-like texture
//! and a few brighter fascia layers), the pleural line (a bright band at a variable depth
//! and tilt), optionally a pleural effusion (anechoic, aeration 0) under it, then lung
//! parenchyma: an air-tissue microstructure, logit-normal around a mean aeration drawn to
//! cover the three categories (0-60, 60-85, 85-100 %), optionally with a consolidation
//! (an ellipse of tissue-like, poorly aerated lung). Frames of a sequence move with
//! breathing: the lung texture and pleural line slide laterally and the pleura moves a
//! little in depth; the chest wall stays still.
//!
//! All randomness comes from one seeded [`StdRng`], so a seed gives the same sequence on
//! every platform.

use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use crate::grid::Grid;

/// A smooth random field: white Gaussian noise blurred by a Gaussian of `sigma` samples,
/// scaled to unit variance, on a regular world grid (spacing `step`, origin `x0`, `z0`).
#[derive(Clone, Debug)]
struct Field {
    values: Array2<f64>,
    x0: f64,
    z0: f64,
    step: f64,
}

impl Field {
    fn new(
        rng: &mut StdRng,
        nz: usize,
        nx: usize,
        x0: f64,
        z0: f64,
        step: f64,
        sigma: f64,
    ) -> Self {
        let mut v = Array2::<f64>::zeros((nz, nx));
        v.iter_mut().for_each(|a| *a = StandardNormal.sample(rng));
        let r = (3.0 * sigma).ceil() as isize;
        let k: Vec<f64> = (-r..=r)
            .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
            .collect();
        let blur = |src: &Array2<f64>, axis: usize| {
            let (n0, n1) = src.dim();
            Array2::from_shape_fn((n0, n1), |(i, j)| {
                let mut s = 0.0;
                for (t, w) in k.iter().enumerate() {
                    let o = t as isize - r;
                    let (a, b) = if axis == 0 {
                        ((i as isize + o).clamp(0, n0 as isize - 1) as usize, j)
                    } else {
                        (i, (j as isize + o).clamp(0, n1 as isize - 1) as usize)
                    };
                    s += w * src[[a, b]];
                }
                s
            })
        };
        let v = blur(&blur(&v, 0), 1);
        let n = v.len() as f64;
        let mean = v.sum() / n;
        let sd = (v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n)
            .sqrt()
            .max(1e-12);
        Self {
            values: v.mapv(|a| (a - mean) / sd),
            x0,
            z0,
            step,
        }
    }

    /// Bilinear sample at world position (x, z), clamped to the field.
    fn at(&self, x: f64, z: f64) -> f64 {
        let (nz, nx) = self.values.dim();
        let fx = ((x - self.x0) / self.step).clamp(0.0, (nx - 1) as f64);
        let fz = ((z - self.z0) / self.step).clamp(0.0, (nz - 1) as f64);
        let (ix, iz) = (fx.floor() as usize, fz.floor() as usize);
        let (ix1, iz1) = ((ix + 1).min(nx - 1), (iz + 1).min(nz - 1));
        let (ax, az) = (fx - ix as f64, fz - iz as f64);
        let v = &self.values;
        (1.0 - az) * ((1.0 - ax) * v[[iz, ix]] + ax * v[[iz, ix1]])
            + az * ((1.0 - ax) * v[[iz1, ix]] + ax * v[[iz1, ix1]])
    }
}

/// The drawn parameters of one phantom sequence (SI units).
#[derive(Clone, Debug, PartialEq)]
pub struct PhantomParams {
    /// Depth of the pleural line centre below x = 0, m.
    pub pleura_depth: f64,
    /// Tilt of the pleural line, rad (positive: deeper towards +x).
    pub pleura_tilt: f64,
    /// Full width at half maximum of the pleural line, m.
    pub pleura_thickness: f64,
    /// Peak aeration of the pleural line.
    pub pleura_brightness: f64,
    /// Target category (0, 1, 2) the lung's mean aeration was drawn in.
    pub target_category: u8,
    /// Centre of the logit-normal lung microstructure (its median aeration).
    pub lung_median: f64,
    /// Standard deviation of the microstructure in logit units.
    pub lung_spread: f64,
    /// Effusion thickness under the pleural line, m (0: none).
    pub effusion_thickness: f64,
    /// Consolidation ellipse (x, z offset below the pleura, semi-axes a_x, a_z, aeration).
    pub consolidation: Option<[f64; 5]>,
    /// Lateral sliding amplitude of lung and pleura over a breath, m.
    pub slide_amplitude: f64,
    /// Depth excursion of the pleura over a breath, m.
    pub depth_amplitude: f64,
    /// Breathing period, frames.
    pub breath_frames: f64,
    /// Depths of fascia layers in the chest wall, m.
    pub fascia: Vec<f64>,
}

/// One frame of a phantom.
#[derive(Clone, Debug)]
pub struct PhantomFrame {
    /// Aeration in [0, 1], (nz, nx).
    pub aeration: Array2<f32>,
    /// Pixels of lung parenchyma (below the pleural line, outside an effusion).
    pub lung_mask: Array2<bool>,
    /// Mean aeration over the lung mask (0 when the mask is empty).
    pub mean_aeration: f64,
}

/// A phantom sequence: parameters plus the random textures they move.
#[derive(Clone, Debug)]
pub struct Phantom {
    pub params: PhantomParams,
    wall: Field,
    lung: Field,
    consolidation_tex: Field,
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

impl Phantom {
    /// Draws a phantom whose geometry fits `grid`.
    pub fn random(rng: &mut StdRng, grid: &Grid) -> Self {
        let z_top = grid.z[0];
        let z_bot = grid.z[grid.nz() - 1];
        let depth = z_bot - z_top;
        let width = grid.x[grid.nx() - 1] - grid.x[0];
        let pleura_depth = z_top + depth * rng.random_range(0.25..0.5);
        let pleura_tilt = rng.random_range(-8f64..8.0).to_radians();
        let pleura_thickness = rng.random_range(0.4e-3..0.8e-3);
        let pleura_brightness = rng.random_range(0.85..1.0);
        let target_category = rng.random_range(0u8..3);
        let (lo, hi) = match target_category {
            0 => (0.15, 0.55),
            1 => (0.63, 0.82),
            _ => (0.87, 0.97),
        };
        let lung_median = rng.random_range(lo..hi);
        let lung_spread = rng.random_range(0.4..0.9);
        let effusion_thickness = if rng.random_bool(0.2) {
            rng.random_range(0.8e-3..2.5e-3)
        } else {
            0.0
        };
        let consolidation = if rng.random_bool(0.3) {
            Some([
                rng.random_range(-0.3..0.3) * width,
                rng.random_range(1.5e-3..4e-3),
                rng.random_range(1.5e-3..4e-3),
                rng.random_range(1.0e-3..3e-3),
                rng.random_range(0.03..0.2),
            ])
        } else {
            None
        };
        let n_fascia = rng.random_range(0..3usize);
        let fascia = (0..n_fascia)
            .map(|_| z_top + (pleura_depth - z_top) * rng.random_range(0.2..0.8))
            .collect();
        let params = PhantomParams {
            pleura_depth,
            pleura_tilt,
            pleura_thickness,
            pleura_brightness,
            target_category,
            lung_median,
            lung_spread,
            effusion_thickness,
            consolidation,
            slide_amplitude: rng.random_range(0.2e-3..1.0e-3),
            depth_amplitude: rng.random_range(0.0..0.2e-3),
            breath_frames: rng.random_range(12.0..24.0),
            fascia,
        };
        // Textures on a world grid of 0.1 mm with a margin for sliding.
        let step = 0.1e-3;
        let margin = 2e-3;
        let x0 = grid.x[0] - margin;
        let z0 = grid.z[0] - margin;
        let nx = ((width + 2.0 * margin) / step).ceil() as usize + 1;
        let nz = ((depth + 2.0 * margin) / step).ceil() as usize + 1;
        // Speckle-like wall texture ~0.15 mm, alveolar-scale lung texture ~0.3-0.5 mm.
        let wall = Field::new(rng, nz, nx, x0, z0, step, 1.5);
        let lung_sigma = rng.random_range(3.0..5.0);
        let lung = Field::new(rng, nz, nx, x0, z0, step, lung_sigma);
        let consolidation_tex = Field::new(rng, nz, nx, x0, z0, step, 1.5);
        Self {
            params,
            wall,
            lung,
            consolidation_tex,
        }
    }

    /// Frame `f` of the sequence on `grid`.
    pub fn frame(&self, grid: &Grid, f: usize) -> PhantomFrame {
        let p = &self.params;
        let phase = 2.0 * std::f64::consts::PI * f as f64 / p.breath_frames;
        let slide = p.slide_amplitude * phase.sin();
        let dz = p.depth_amplitude * (1.0 - phase.cos()) / 2.0;
        let sigma_line = p.pleura_thickness / 2.355;
        let (nz, nx) = (grid.nz(), grid.nx());
        let mut aeration = Array2::<f32>::zeros((nz, nx));
        let mut mask = Array2::<bool>::from_elem((nz, nx), false);
        for iz in 0..nz {
            for ix in 0..nx {
                let (x, z) = (grid.x[ix], grid.z[iz]);
                let zp = p.pleura_depth + dz + x * p.pleura_tilt.tan();
                // Lung tissue moves with the sliding pleura: sample its texture upstream.
                let (lx, lz) = (x - slide, z - dz);
                let mut a = if z < zp {
                    let mut w = 0.03 + 0.03 * self.wall.at(x, z).abs();
                    for fz in &p.fascia {
                        w += 0.12 * (-(z - fz).powi(2) / (2.0 * (0.15e-3f64).powi(2))).exp();
                    }
                    w
                } else if z < zp + p.effusion_thickness {
                    0.0
                } else {
                    mask[[iz, ix]] = true;
                    let mut v =
                        sigmoid(logit(p.lung_median) + p.lung_spread * self.lung.at(lx, lz));
                    if let Some([cx, cd, ax, az, ca]) = p.consolidation {
                        let cz = zp + p.effusion_thickness + cd;
                        let r = ((lx - cx) / ax).powi(2) + ((z - cz) / az).powi(2);
                        if r < 1.0 {
                            v = ca * (1.0 + 0.5 * self.consolidation_tex.at(lx, lz)).max(0.0);
                        }
                    }
                    v
                };
                // Parietal pleura, and the visceral lung surface below an effusion.
                let line = |c: f64| {
                    p.pleura_brightness * (-(z - c).powi(2) / (2.0 * sigma_line * sigma_line)).exp()
                };
                a = a.max(line(zp));
                if p.effusion_thickness > 0.0 {
                    a = a.max(line(zp + p.effusion_thickness));
                }
                aeration[[iz, ix]] = a.clamp(0.0, 1.0) as f32;
            }
        }
        let n = mask.iter().filter(|m| **m).count();
        let mean_aeration = if n == 0 {
            0.0
        } else {
            aeration
                .iter()
                .zip(mask.iter())
                .filter(|(_, m)| **m)
                .map(|(a, _)| *a as f64)
                .sum::<f64>()
                / n as f64
        };
        PhantomFrame {
            aeration,
            lung_mask: mask,
            mean_aeration,
        }
    }
}

/// `n_frames` frames of the phantom drawn from `seed`.
pub fn sequence(seed: u64, grid: &Grid, n_frames: usize) -> (Phantom, Vec<PhantomFrame>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let ph = Phantom::random(&mut rng, grid);
    let frames = (0..n_frames).map(|f| ph.frame(grid, f)).collect();
    (ph, frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aeration::category;

    #[test]
    fn deterministic_for_a_seed_and_in_range() {
        let g = Grid::uniform(32, 32, 0.6e-3, 2e-3).expect("grid");
        let (_, a) = sequence(7, &g, 2);
        let (_, b) = sequence(7, &g, 2);
        let (_, c) = sequence(8, &g, 1);
        assert_eq!(a[0].aeration, b[0].aeration);
        assert_ne!(a[0].aeration, c[0].aeration);
        for f in &a {
            assert!(f.aeration.iter().all(|v| (0.0..=1.0).contains(v)));
            assert!(f.lung_mask.iter().any(|m| *m));
        }
        // Breathing moves the lung between frames but not the top of the chest wall.
        assert_ne!(a[0].aeration, a[1].aeration);
        assert_eq!(a[0].aeration.row(0), a[1].aeration.row(0));
    }

    #[test]
    fn seeds_cover_all_three_categories() {
        let g = Grid::uniform(24, 24, 0.8e-3, 2e-3).expect("grid");
        let mut seen = [0usize; 3];
        for seed in 0..30 {
            let (_, f) = sequence(seed, &g, 1);
            seen[category(f[0].mean_aeration) as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n >= 3), "category counts {seen:?}");
    }
}
