//! Memorisation check of the prior and comparison of aeration statistics.
//!
//! Feature space: the image's aeration average-pooled over `pool x pool` blocks (4x4 by
//! default, 16x16 features for 64x64 images). Distances are RMS differences per feature,
//! in aeration units: `||f(a) - f(b)||_2 / sqrt(n_features)`. Pooling discards the
//! pixel-level noise of sampling so that a near-copy of a training image is near in
//! feature space even when its fine texture differs. For scale, the same nearest-neighbour
//! distance is reported from each training image to the rest of the training set: a
//! generated set whose distances sit well below that baseline copies the training set.
//!
//! Aeration categories (mean aeration of an image): 0: [0, 0.60), 1: [0.60, 0.85),
//! 2: [0.85, 1] (the pleura physics contract's 0-60 / 60-85 / 85-100 %). The mean is over
//! the whole image for both sets, since generated images carry no lung mask; it therefore
//! runs lower than the simulator's lung-only `mean_aeration`.

use serde::Serialize;

use super::data::ImageSet;
use super::DiffusionError;
use crate::aeration::category;

/// Category names, in index order.
pub const CATEGORIES: [&str; 3] = ["0-60%", "60-85%", "85-100%"];

/// Average-pooled features of every image (image sides must be multiples of `pool`).
pub fn pooled_features(set: &ImageSet, pool: usize) -> Result<Vec<Vec<f32>>, DiffusionError> {
    if pool == 0 || set.h % pool != 0 || set.w % pool != 0 {
        return Err(DiffusionError::Config {
            field: "pool",
            value: pool.to_string(),
            reason: format!("must divide the image sides {}x{}", set.h, set.w),
        });
    }
    let (fh, fw) = (set.h / pool, set.w / pool);
    let norm = 1.0 / (pool * pool) as f32;
    Ok((0..set.n)
        .map(|i| {
            let img = set.image(i);
            let mut f = vec![0f32; fh * fw];
            for y in 0..set.h {
                for x in 0..set.w {
                    f[(y / pool) * fw + x / pool] += img[y * set.w + x] * norm;
                }
            }
            f
        })
        .collect())
}

fn rms(a: &[f32], b: &[f32]) -> f64 {
    let s: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    (s / a.len() as f64).sqrt()
}

/// Distribution summary of a set of distances.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// Quantiles at 0, 5, 25, 50, 75, 95, 100 % (linear interpolation).
    pub quantiles: [f64; 7],
    /// Histogram: `counts[k]` of values in `[edges[k], edges[k+1])` (last bin closed).
    pub edges: Vec<f64>,
    pub counts: Vec<usize>,
}

/// Quantile levels of [`Summary::quantiles`].
pub const QUANTILE_LEVELS: [f64; 7] = [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0];

/// Linear-interpolation quantile of sorted values (numpy's default method).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl Summary {
    /// Summarises `values` with a histogram of `bins` bins over `[0, max]`.
    pub fn new(values: &[f64], bins: usize, max: f64) -> Self {
        let mut s = values.to_vec();
        s.sort_by(f64::total_cmp);
        let mean = if s.is_empty() {
            f64::NAN
        } else {
            s.iter().sum::<f64>() / s.len() as f64
        };
        let edges: Vec<f64> = (0..=bins).map(|k| max * k as f64 / bins as f64).collect();
        let mut counts = vec![0; bins];
        for &v in &s {
            let k = ((v / max) * bins as f64)
                .floor()
                .clamp(0.0, (bins - 1) as f64) as usize;
            counts[k] += 1;
        }
        Self {
            n: s.len(),
            mean,
            quantiles: QUANTILE_LEVELS.map(|q| quantile(&s, q)),
            edges,
            counts,
        }
    }
}

/// Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs.
pub fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

/// Aeration statistics of a set of images.
#[derive(Clone, Debug, Serialize)]
pub struct AerationStats {
    pub mean: f64,
    pub std: f64,
    /// Fraction of images in each category.
    pub fractions: [f64; 3],
}

fn aeration_stats(a: &[f64]) -> AerationStats {
    let n = a.len().max(1) as f64;
    let mean = a.iter().sum::<f64>() / n;
    let std = (a.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let mut fractions = [0.0; 3];
    for &v in a {
        fractions[usize::from(category(v))] += 1.0 / n;
    }
    AerationStats {
        mean,
        std,
        fractions,
    }
}

/// The memorisation and aeration report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub pool: usize,
    pub n_train: usize,
    pub n_generated: usize,
    /// Nearest-training-image distance of every generated image.
    pub nearest: Summary,
    /// The same, per aeration category of the generated image (see [`CATEGORIES`]).
    pub nearest_by_category: Vec<(String, Summary)>,
    /// Baseline: distance of each training image to its nearest other training image.
    pub train_baseline: Summary,
    pub train_aeration: AerationStats,
    pub generated_aeration: AerationStats,
    /// KS statistic between the mean-aeration distributions of the two sets.
    pub aeration_ks: f64,
}

/// Histogram bins of the report.
pub const BINS: usize = 20;

/// Compares generated images with the training set.
pub fn evaluate(
    train: &ImageSet,
    generated: &ImageSet,
    pool: usize,
) -> Result<Report, DiffusionError> {
    if (train.h, train.w) != (generated.h, generated.w) {
        return Err(DiffusionError::Config {
            field: "generated image size",
            value: format!("{}x{}", generated.h, generated.w),
            reason: format!("training images are {}x{}", train.h, train.w),
        });
    }
    let ft = pooled_features(train, pool)?;
    let fg = pooled_features(generated, pool)?;
    use rayon::prelude::*;
    let nearest: Vec<f64> = fg
        .par_iter()
        .map(|g| ft.iter().map(|t| rms(g, t)).fold(f64::INFINITY, f64::min))
        .collect();
    let baseline: Vec<f64> = ft
        .par_iter()
        .enumerate()
        .map(|(i, a)| {
            ft.iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, b)| rms(a, b))
                .fold(f64::INFINITY, f64::min)
        })
        .filter(|d| d.is_finite())
        .collect();
    let max = nearest
        .iter()
        .chain(&baseline)
        .copied()
        .fold(1e-6, f64::max);
    let ga = generated.mean_aeration();
    let ta = train.mean_aeration();
    let nearest_by_category = (0..3)
        .map(|c| {
            let v: Vec<f64> = nearest
                .iter()
                .zip(&ga)
                .filter(|(_, a)| usize::from(category(**a)) == c)
                .map(|(d, _)| *d)
                .collect();
            (CATEGORIES[c].to_string(), Summary::new(&v, BINS, max))
        })
        .collect();
    Ok(Report {
        pool,
        n_train: train.n,
        n_generated: generated.n,
        nearest: Summary::new(&nearest, BINS, max),
        nearest_by_category,
        train_baseline: Summary::new(&baseline, BINS, max),
        train_aeration: aeration_stats(&ta),
        generated_aeration: aeration_stats(&ga),
        aeration_ks: ks_statistic(&ta, &ga),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ks_and_quantiles() {
        assert_eq!(ks_statistic(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 0.0);
        assert_eq!(ks_statistic(&[0.0, 0.1], &[0.5, 0.6]), 1.0);
        assert!((ks_statistic(&[1.0, 2.0, 3.0, 4.0], &[3.0, 4.0, 5.0, 6.0]) - 0.5).abs() < 1e-12);
        assert_eq!(quantile(&[0.0, 1.0, 2.0, 3.0], 0.5), 1.5);
        assert_eq!(category(0.59), 0);
        assert_eq!(category(0.6), 1);
        assert_eq!(category(0.85), 2);
    }

    fn set(values: &[[f32; 4]]) -> ImageSet {
        ImageSet {
            n: values.len(),
            h: 2,
            w: 2,
            data: values.iter().flatten().copied().collect(),
            grid_x: None,
            grid_z: None,
        }
    }

    #[test]
    fn copies_have_zero_distance() {
        let train = set(&[
            [0.1, 0.2, 0.3, 0.4],
            [0.9, 0.9, 0.9, 0.9],
            [0.7, 0.7, 0.7, 0.7],
        ]);
        let gen = set(&[[0.9, 0.9, 0.9, 0.9], [0.5, 0.5, 0.5, 0.5]]);
        let r = evaluate(&train, &gen, 1).unwrap();
        // Generated 0 copies training image 1; generated 1 is 0.2 from image 2 everywhere.
        assert_eq!(r.nearest.quantiles[0], 0.0);
        assert!((r.nearest.quantiles[6] - 0.2).abs() < 1e-6);
        assert_eq!(r.nearest_by_category[2].1.n, 1);
        assert_eq!(r.nearest_by_category[0].1.n, 1);
        assert!((r.train_baseline.quantiles[0] - 0.2).abs() < 1e-6);
        assert!((r.generated_aeration.mean - 0.7).abs() < 1e-6);
        assert_eq!(r.generated_aeration.fractions, [0.5, 0.0, 0.5]);
        // Pooling 2x2 averages each image to one feature.
        let r2 = evaluate(&train, &gen, 2).unwrap();
        assert!((r2.nearest.quantiles[6] - 0.2).abs() < 1e-6);
        assert!(evaluate(&train, &gen, 3).is_err());
    }
}
