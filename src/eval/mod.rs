//! Image and aeration metrics of a reconstruction against the simulated ground truth.

pub mod files;

use ndarray::{Array2, ArrayView2};

use crate::aeration::{category, Z95};

/// SSIM constants of Wang, Bovik, Sheikh & Simoncelli (2004), "Image quality assessment:
/// from error visibility to structural similarity", IEEE TIP 13(4): K1 = 0.01, K2 = 0.03,
/// an 11 x 11 circular-symmetric Gaussian window of standard deviation 1.5 pixels.
pub const SSIM_K1: f64 = 0.01;
pub const SSIM_K2: f64 = 0.03;
pub const SSIM_WINDOW: usize = 11;
pub const SSIM_SIGMA: f64 = 1.5;

/// Peak signal-to-noise ratio for images of dynamic range `range`, dB
/// (infinite for identical images).
pub fn psnr(a: ArrayView2<f32>, b: ArrayView2<f32>, range: f64) -> f64 {
    let mse = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        / a.len().max(1) as f64;
    10.0 * (range * range / mse).log10()
}

fn gaussian_window() -> Array2<f64> {
    let r = (SSIM_WINDOW / 2) as f64;
    let w = Array2::from_shape_fn((SSIM_WINDOW, SSIM_WINDOW), |(i, j)| {
        let (di, dj) = (i as f64 - r, j as f64 - r);
        (-(di * di + dj * dj) / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp()
    });
    let s = w.sum();
    w / s
}

/// Mean SSIM over the valid window positions (Wang et al. 2004, as their reference
/// `ssim_index.m` with `filter2(..., 'valid')`), for images of dynamic range `range`.
/// Images smaller than the window are compared with one window covering them (weights
/// cropped and renormalised).
pub fn ssim(a: ArrayView2<f32>, b: ArrayView2<f32>, range: f64) -> f64 {
    let (nz, nx) = a.dim();
    let full = gaussian_window();
    let (wz, wx) = (SSIM_WINDOW.min(nz), SSIM_WINDOW.min(nx));
    let oz = (SSIM_WINDOW - wz) / 2;
    let ox = (SSIM_WINDOW - wx) / 2;
    let mut w = full.slice(ndarray::s![oz..oz + wz, ox..ox + wx]).to_owned();
    let s = w.sum();
    w /= s;
    let c1 = (SSIM_K1 * range).powi(2);
    let c2 = (SSIM_K2 * range).powi(2);
    let (pz, px) = (nz - wz + 1, nx - wx + 1);
    let mut total = 0.0;
    for i in 0..pz {
        for j in 0..px {
            let (mut ma, mut mb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for u in 0..wz {
                for v in 0..wx {
                    let g = w[[u, v]];
                    let x = a[[i + u, j + v]] as f64;
                    let y = b[[i + u, j + v]] as f64;
                    ma += g * x;
                    mb += g * y;
                    saa += g * x * x;
                    sbb += g * y * y;
                    sab += g * x * y;
                }
            }
            let va = saa - ma * ma;
            let vb = sbb - mb * mb;
            let cov = sab - ma * mb;
            total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                / ((ma * ma + mb * mb + c1) * (va + vb + c2));
        }
    }
    total / (pz * px) as f64
}

/// Mean of `img` over the pixels where `mask` is set (all pixels when none is).
pub fn masked_mean(img: ArrayView2<f32>, mask: ArrayView2<bool>) -> f64 {
    let (mut s, mut n) = (0.0, 0usize);
    for (v, m) in img.iter().zip(mask.iter()) {
        if *m {
            s += *v as f64;
            n += 1;
        }
    }
    if n == 0 {
        img.iter().map(|v| *v as f64).sum::<f64>() / img.len().max(1) as f64
    } else {
        s / n as f64
    }
}

/// The ground truth's lung mean aeration of frame `i` (None past its last frame): the
/// quantity the published aeration estimates and [`FrameMetrics::mean_aeration_truth`]
/// scores against, the mean over the frame's lung mask (the whole image without one).
pub fn truth_lung_aeration(truth: &files::Truth, i: usize) -> Option<f64> {
    if i >= truth.aeration.dim().0 {
        return None;
    }
    let img = truth.aeration.index_axis(ndarray::Axis(0), i);
    Some(match &truth.lung_mask {
        Some(m) => masked_mean(img, m.index_axis(ndarray::Axis(0), i)),
        None => masked_mean(img, Array2::from_elem(img.dim(), true).view()),
    })
}

/// Metrics of one frame.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FrameMetrics {
    pub frame: usize,
    pub psnr_db: f64,
    pub ssim: f64,
    pub mean_aeration_truth: f64,
    pub mean_aeration_recon: f64,
    pub mean_aeration_abs_error: f64,
    pub category_truth: u8,
    pub category_recon: u8,
    /// Mean aeration of the truth over the whole image (for reference: a lung's category
    /// is that of its lung mean, `mean_aeration_truth`).
    pub image_aeration_truth: f64,
    /// Whether the reconstruction's 95 % interval of the lung's mean aeration
    /// (`recon/aeration_ci`, over the lung region the sampler finds,
    /// `posterior::lung`) holds the truth's lung mean (`mean_aeration_truth`).
    pub mean_ci_covers: Option<bool>,
    /// Fraction of pixels whose 95 % interval (mean +- 1.96 std) holds the truth.
    pub pixel_coverage_95: Option<f64>,
    /// The lung aeration the reconstruction published (over the lung region it found
    /// itself), when it publishes one; `mean_aeration_recon` uses the true lung mask.
    pub published_aeration: Option<f64>,
    /// |published - truth's lung mean|.
    pub published_aeration_abs_error: Option<f64>,
    /// Category of the published aeration.
    pub published_category: Option<u8>,
    /// Network evaluations spent on the frame (one per batched call over the K samples),
    /// when the reconstruction records them.
    pub nfe: Option<u32>,
    /// Wall-clock seconds the frame took, when the reconstruction records it.
    pub seconds: Option<f64>,
}

/// Metrics of a whole sequence.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Summary {
    pub frames: Vec<FrameMetrics>,
    pub mean_psnr_db: f64,
    pub mean_ssim: f64,
    pub mean_aeration_mae: f64,
    pub category_accuracy: f64,
    pub mean_ci_coverage: Option<f64>,
    pub pixel_coverage_95: Option<f64>,
    /// Mean |published - true| lung aeration over the frames that publish one.
    pub published_aeration_mae: Option<f64>,
    /// Fraction of those frames whose published category is the truth's.
    pub published_category_accuracy: Option<f64>,
    /// Mean network evaluations per frame over the frames that record them.
    pub nfe_per_frame: Option<f64>,
    /// Mean wall-clock seconds per frame over the frames that record them.
    pub seconds_per_frame: Option<f64>,
    /// Frames left out because the reconstruction failed there (non-finite values).
    pub failed_frames: Vec<usize>,
}

/// Per-frame inputs of [`evaluate_frame`].
pub struct FrameInput<'a> {
    pub truth: ArrayView2<'a, f32>,
    pub recon: ArrayView2<'a, f32>,
    pub lung_mask: ArrayView2<'a, bool>,
    pub recon_std: Option<ArrayView2<'a, f32>>,
    pub mean_ci: Option<[f64; 2]>,
    /// The lung aeration the reconstruction published for the frame.
    pub published_aeration: Option<f64>,
    /// Network evaluations spent on the frame.
    pub nfe: Option<u32>,
    /// Milliseconds the frame took.
    pub latency_ms: Option<f64>,
}

pub fn evaluate_frame(frame: usize, f: &FrameInput) -> FrameMetrics {
    let mt = masked_mean(f.truth, f.lung_mask);
    let mr = masked_mean(f.recon, f.lung_mask);
    let image_mean = f.truth.iter().map(|v| *v as f64).sum::<f64>() / f.truth.len().max(1) as f64;
    let pixel_coverage_95 = f.recon_std.map(|sd| {
        let hit = f
            .truth
            .iter()
            .zip(f.recon.iter())
            .zip(sd.iter())
            .filter(|((t, m), s)| (**t as f64 - **m as f64).abs() <= Z95 * **s as f64)
            .count();
        hit as f64 / f.truth.len().max(1) as f64
    });
    FrameMetrics {
        frame,
        psnr_db: psnr(f.truth, f.recon, 1.0),
        ssim: ssim(f.truth, f.recon, 1.0),
        mean_aeration_truth: mt,
        mean_aeration_recon: mr,
        mean_aeration_abs_error: (mt - mr).abs(),
        category_truth: category(mt),
        category_recon: category(mr),
        image_aeration_truth: image_mean,
        mean_ci_covers: f.mean_ci.map(|[lo, hi]| lo <= mt && mt <= hi),
        pixel_coverage_95,
        published_aeration: f.published_aeration,
        published_aeration_abs_error: f.published_aeration.map(|a| (a - mt).abs()),
        published_category: f.published_aeration.map(category),
        nfe: f.nfe,
        seconds: f.latency_ms.map(|ms| ms / 1e3),
    }
}

pub fn summarize(frames: Vec<FrameMetrics>) -> Summary {
    let n = frames.len().max(1) as f64;
    let mean = |g: &dyn Fn(&FrameMetrics) -> f64| frames.iter().map(g).sum::<f64>() / n;
    let ci: Vec<bool> = frames.iter().filter_map(|f| f.mean_ci_covers).collect();
    let px: Vec<f64> = frames.iter().filter_map(|f| f.pixel_coverage_95).collect();
    let nfe: Vec<f64> = frames.iter().filter_map(|f| f.nfe.map(f64::from)).collect();
    let secs: Vec<f64> = frames.iter().filter_map(|f| f.seconds).collect();
    let published_err: Vec<f64> = frames
        .iter()
        .filter_map(|f| f.published_aeration_abs_error)
        .collect();
    let published_cat: Vec<f64> = frames
        .iter()
        .filter_map(|f| {
            f.published_category
                .map(|c| (c == f.category_truth) as u8 as f64)
        })
        .collect();
    let avg = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    Summary {
        mean_psnr_db: mean(&|f| f.psnr_db),
        mean_ssim: mean(&|f| f.ssim),
        mean_aeration_mae: mean(&|f| f.mean_aeration_abs_error),
        category_accuracy: mean(&|f| (f.category_truth == f.category_recon) as u8 as f64),
        mean_ci_coverage: (!ci.is_empty())
            .then(|| ci.iter().filter(|c| **c).count() as f64 / ci.len() as f64),
        pixel_coverage_95: avg(&px),
        published_aeration_mae: avg(&published_err),
        published_category_accuracy: avg(&published_cat),
        nfe_per_frame: avg(&nfe),
        seconds_per_frame: avg(&secs),
        failed_frames: Vec::new(),
        frames,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn psnr_of_known_error() {
        let a = Array2::<f32>::zeros((4, 4));
        let b = Array2::<f32>::from_elem((4, 4), 0.1);
        assert!((psnr(a.view(), b.view(), 1.0) - 20.0).abs() < 1e-5);
    }

    #[test]
    fn ssim_of_identical_is_one_and_coverage_counts() {
        let a = Array2::from_shape_fn((16, 16), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 10.0);
        assert!((ssim(a.view(), a.view(), 1.0) - 1.0).abs() < 1e-12);
        let mask = Array2::from_elem((16, 16), true);
        let sd = Array2::from_elem((16, 16), 0.01f32);
        let shifted = &a + 0.015f32;
        let truth_mean = a.iter().map(|v| *v as f64).sum::<f64>() / a.len() as f64;
        let m = evaluate_frame(
            0,
            &FrameInput {
                truth: a.view(),
                recon: shifted.view(),
                lung_mask: mask.view(),
                recon_std: Some(sd.view()),
                mean_ci: Some([0.0, 0.1]),
                published_aeration: Some(truth_mean + 0.4),
                nfe: Some(12),
                latency_ms: Some(250.0),
            },
        );
        assert_eq!(m.pixel_coverage_95, Some(1.0));
        assert_eq!(m.mean_ci_covers, Some(false));
        assert!((m.mean_aeration_abs_error - 0.015).abs() < 1e-6);
        assert_eq!(m.nfe, Some(12));
        assert_eq!(m.seconds, Some(0.25));
        // The published aeration is scored against the truth's lung mean on its own.
        assert!((m.published_aeration_abs_error.unwrap() - 0.4).abs() < 1e-9);
        assert_eq!(m.category_truth, category(truth_mean));
        assert_eq!(m.published_category, Some(category(truth_mean + 0.4)));
        assert_ne!(m.published_category, Some(m.category_truth));
        let s = summarize(vec![m]);
        assert_eq!(s.published_category_accuracy, Some(0.0));
        assert!((s.published_aeration_mae.unwrap() - 0.4).abs() < 1e-9);
    }

    #[test]
    fn truth_lung_aeration_is_the_masked_mean() {
        // Lung (column 0) at 0.9, the rest at 0.1 then 0.2.
        let aeration = ndarray::Array3::from_shape_fn((2, 2, 2), |(f, _, j)| {
            if j == 0 {
                0.9f32
            } else {
                0.1 + 0.1 * f as f32
            }
        });
        let mask = ndarray::Array3::from_shape_fn((2, 2, 2), |(_, _, j)| j == 0);
        let mut truth = files::Truth {
            aeration,
            lung_mask: Some(mask),
            grid: crate::grid::Grid::uniform(2, 2, 0.3e-3, 3e-3).unwrap(),
        };
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-6);
        assert!(close(truth_lung_aeration(&truth, 0), 0.9));
        assert!(close(truth_lung_aeration(&truth, 1), 0.9));
        assert_eq!(truth_lung_aeration(&truth, 2), None);
        truth.lung_mask = None;
        assert!(close(truth_lung_aeration(&truth, 0), 0.5));
        assert!(close(truth_lung_aeration(&truth, 1), 0.55));
    }

    #[test]
    fn interval_is_checked_against_the_lung_mean_not_the_image_mean() {
        // Lung (left half) at 0.9, the rest at 0.1: lung mean 0.9, image mean 0.5.
        let truth = Array2::from_shape_fn((8, 8), |(_, j)| if j < 4 { 0.9f32 } else { 0.1 });
        let mask = Array2::from_shape_fn((8, 8), |(_, j)| j < 4);
        let frame = |ci: [f64; 2]| {
            evaluate_frame(
                0,
                &FrameInput {
                    truth: truth.view(),
                    recon: truth.view(),
                    lung_mask: mask.view(),
                    recon_std: None,
                    mean_ci: Some(ci),
                    published_aeration: None,
                    nfe: None,
                    latency_ms: None,
                },
            )
        };
        let m = frame([0.85, 0.95]);
        assert!((m.mean_aeration_truth - 0.9).abs() < 1e-6);
        assert!((m.image_aeration_truth - 0.5).abs() < 1e-6);
        assert_eq!(m.mean_ci_covers, Some(true));
        assert_eq!(frame([0.45, 0.55]).mean_ci_covers, Some(false));
    }

    fn frame_with_cost(frame: usize, nfe: Option<u32>, seconds: Option<f64>) -> FrameMetrics {
        FrameMetrics {
            frame,
            psnr_db: 20.0,
            ssim: 0.5,
            mean_aeration_truth: 0.7,
            mean_aeration_recon: 0.7,
            mean_aeration_abs_error: 0.0,
            image_aeration_truth: 0.7,
            category_truth: 1,
            category_recon: 1,
            mean_ci_covers: None,
            pixel_coverage_95: None,
            published_aeration: None,
            published_aeration_abs_error: None,
            published_category: None,
            nfe,
            seconds,
        }
    }

    #[test]
    fn summary_averages_cost_over_frames_that_record_it() {
        // A cold frame of 50 evaluations and a warm one of 15: 32.5 per frame.
        let s = summarize(vec![
            frame_with_cost(0, Some(50), Some(4.0)),
            frame_with_cost(1, Some(15), Some(1.0)),
        ]);
        assert_eq!(s.nfe_per_frame, Some(32.5));
        assert_eq!(s.seconds_per_frame, Some(2.5));
        // A classical reconstruction records neither.
        let b = summarize(vec![frame_with_cost(0, None, None)]);
        assert_eq!(b.nfe_per_frame, None);
        assert_eq!(b.seconds_per_frame, None);
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["nfe_per_frame"].as_f64(), Some(32.5));
        assert_eq!(json["frames"][1]["nfe"].as_u64(), Some(15));
    }
}
