//! The lung region of a reconstructed aeration image, so that the frame's aeration, its
//! interval and its category describe the lung and not the whole image (the chest wall
//! above the pleura is nearly airless and would pull a normal lung's mean into the
//! "< 60 %" category).
//!
//! Per column, from the top: the pleural line is the first run of pixels at or above
//! [`PLEURA_THRESHOLD`], and the lung starts at its brightest pixel (the simulator's lung
//! mask starts at the line's centre too, `simulate::phantom`). When the line is followed,
//! within [`EFFUSION_MAX`], by an anechoic gap (below [`ANECHOIC`]) and a second bright
//! line, the gap is a pleural effusion and the lung starts at the second line (the
//! visceral surface). A column without a pleural line holds no lung.
//!
//! Thresholds, from the phantoms' aeration ranges (`simulate::phantom`): the chest wall is
//! at most about 0.2 (0.03-0.06 soft tissue plus fascia layers of 0.12), the pleural line
//! peaks at 0.85-1.0, an effusion is 0, lung parenchyma 0.15-0.97 and consolidation
//! 0.03-0.2. 0.5 separates the line from the wall with room for the reconstruction's
//! noise on both sides.

use ndarray::{Array2, ArrayView2};

/// Aeration the pleural line reaches and the chest wall does not.
pub const PLEURA_THRESHOLD: f32 = 0.5;
/// Aeration below which a pixel between two lines counts as fluid (anechoic).
pub const ANECHOIC: f32 = 0.05;
/// Largest depth, metres, from the first line's centre to the second one that is read as
/// an effusion (the phantoms' effusions are 0.8-2.5 mm thick).
pub const EFFUSION_MAX: f64 = 3e-3;

/// The lung pixels of `a` (nz, nx) on rows of pitch `dz` metres.
pub fn lung_mask(a: ArrayView2<f32>, dz: f64) -> Array2<bool> {
    let (nz, nx) = a.dim();
    let max_gap = (EFFUSION_MAX / dz).ceil() as usize;
    let mut mask = Array2::from_elem((nz, nx), false);
    for ix in 0..nx {
        let col = a.column(ix);
        let Some(first) = (0..nz).find(|&iz| col[iz] >= PLEURA_THRESHOLD) else {
            continue;
        };
        // The brightest pixel of the run starting at `from` (its first on a plateau).
        let peak = |from: usize| {
            let mut p = from;
            while p + 1 < nz && col[p + 1] > col[p] {
                p += 1;
            }
            p
        };
        let mut start = peak(first);
        if let Some(end) = (start..nz).find(|&iz| col[iz] < PLEURA_THRESHOLD) {
            let limit = (start + max_gap).min(nz);
            if let Some(second) = (end..limit).find(|&iz| col[iz] >= PLEURA_THRESHOLD) {
                let fluid = (end..second).any(|iz| col[iz] < ANECHOIC);
                if fluid {
                    start = peak(second);
                }
            }
        }
        for iz in start..nz {
            mask[[iz, ix]] = true;
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::Grid;
    use crate::simulate::phantom::{category, sequence};

    /// On the simulator's phantoms (their true aeration maps), the estimated lung region
    /// agrees with the simulator's lung mask on nearly every pixel, and the lung's mean
    /// aeration and category follow from it; the whole-image mean would misplace most
    /// normal lungs into the lowest category.
    #[test]
    fn lung_region_of_phantoms_matches_the_simulator_mask() {
        let g = Grid::default_lung();
        let (mut agree, mut total) = (0usize, 0usize);
        let (mut cat_ok, mut cat_image_ok, mut worst) = (0, 0, 0.0f64);
        let n = 40;
        for seed in 0..n {
            let (_, frames) = sequence(seed, &g, 1);
            let f = &frames[0];
            let m = lung_mask(f.aeration.view(), g.dz());
            agree += m
                .iter()
                .zip(f.lung_mask.iter())
                .filter(|(a, b)| a == b)
                .count();
            total += m.len();
            let (sum, count) = f
                .aeration
                .iter()
                .zip(m.iter())
                .filter(|(_, l)| **l)
                .fold((0.0, 0usize), |(s, c), (a, _)| (s + *a as f64, c + 1));
            let est = sum / count.max(1) as f64;
            worst = worst.max((est - f.mean_aeration).abs());
            cat_ok += usize::from(category(est) == category(f.mean_aeration));
            let image = f.aeration.iter().map(|a| *a as f64).sum::<f64>() / f.aeration.len() as f64;
            cat_image_ok += usize::from(category(image) == category(f.mean_aeration));
        }
        let agreement = agree as f64 / total as f64;
        eprintln!(
            "pixel agreement {agreement:.4}, worst lung-mean error {worst:.3}, \
             categories right {cat_ok}/{n} (whole-image mean: {cat_image_ok}/{n})"
        );
        assert!(agreement > 0.98, "{agreement}");
        assert!(worst < 0.05, "{worst}");
        assert!(cat_ok >= n as usize - 2, "{cat_ok}/{n}");
        assert!(cat_image_ok < cat_ok, "{cat_image_ok} vs {cat_ok}");
    }

    /// Hand-made columns: wall, line, lung; an effusion between two lines; no line.
    #[test]
    fn columns() {
        let dz = 0.3e-3;
        let col = |v: &[f32]| Array2::from_shape_vec((v.len(), 1), v.to_vec()).unwrap();
        let m = lung_mask(col(&[0.1, 0.2, 0.6, 0.9, 0.7, 0.8, 0.8]).view(), dz);
        assert_eq!(
            m.column(0).to_vec(),
            [false, false, false, true, true, true, true]
        );
        let m = lung_mask(col(&[0.1, 0.9, 0.3, 0.0, 0.0, 0.95, 0.6, 0.7]).view(), dz);
        assert_eq!(
            m.column(0).to_vec(),
            [false, false, false, false, false, true, true, true]
        );
        // A low-aeration lung under the line (no fluid) is lung.
        let m = lung_mask(col(&[0.1, 0.9, 0.3, 0.2, 0.6, 0.7]).view(), dz);
        assert_eq!(m.column(0).to_vec(), [false, true, true, true, true, true]);
        let m = lung_mask(col(&[0.1, 0.2, 0.3]).view(), dz);
        assert!(m.iter().all(|l| !l));
        // A uniformly bright column: the lung starts at the top of the plateau.
        let m = lung_mask(col(&[0.1, 0.8, 0.8, 0.8]).view(), dz);
        assert_eq!(m.column(0).to_vec(), [false, true, true, true]);
    }
}
