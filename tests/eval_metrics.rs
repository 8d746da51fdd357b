//! SSIM and PSNR against an independent numpy implementation of Wang et al. (2004).

mod common;

use ndarray::Array2;
use pleura::eval::{psnr, ssim};

/// Wang et al.'s ssim_index.m in numpy: Gaussian 11x11, sigma 1.5, K = (0.01, 0.03),
/// L = 1, 'valid' filtering, mean of the SSIM map; and PSNR with peak 1.
const NUMPY_SSIM: &str = r#"
import sys, numpy as np
from scipy.signal import convolve2d
nz, nx = int(sys.argv[1]), int(sys.argv[2])
a = np.fromfile(sys.argv[3], dtype=np.float32).reshape(nz, nx).astype(np.float64)
b = np.fromfile(sys.argv[4], dtype=np.float32).reshape(nz, nx).astype(np.float64)
r = np.arange(11) - 5
g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5 ** 2)); g /= g.sum()
f = lambda x: convolve2d(x, np.rot90(g, 2), mode="valid")
C1, C2 = (0.01) ** 2, (0.03) ** 2
mu1, mu2 = f(a), f(b)
s11 = f(a * a) - mu1 ** 2; s22 = f(b * b) - mu2 ** 2; s12 = f(a * b) - mu1 * mu2
m = ((2 * mu1 * mu2 + C1) * (2 * s12 + C2)) / ((mu1 ** 2 + mu2 ** 2 + C1) * (s11 + s22 + C2))
print(m.mean(), 10 * np.log10(1 / np.mean((a - b) ** 2)))
"#;

#[test]
fn ssim_and_psnr_match_numpy_reference() {
    let (nz, nx) = (24, 30);
    let a = Array2::from_shape_fn((nz, nx), |(i, j)| {
        (0.5 + 0.4 * ((i as f32 * 0.7).sin() * (j as f32 * 0.3).cos())).clamp(0.0, 1.0)
    });
    let b = Array2::from_shape_fn((nz, nx), |(i, j)| {
        let n = (((i * 31 + j * 17) % 13) as f32 - 6.0) / 40.0;
        (a[[i, j]] * 0.8 + 0.05 + n).clamp(0.0, 1.0)
    });
    let dir = common::tempdir();
    let (pa, pb) = (dir.path().join("a.f32"), dir.path().join("b.f32"));
    for (p, img) in [(&pa, &a), (&pb, &b)] {
        let bytes: Vec<u8> = img.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(p, bytes).expect("write");
    }
    let out = common::run_python(
        NUMPY_SSIM,
        &[
            &nz.to_string(),
            &nx.to_string(),
            pa.to_str().expect("p"),
            pb.to_str().expect("p"),
        ],
    );
    let v: Vec<f64> = out
        .split_whitespace()
        .map(|s| s.parse().expect("number"))
        .collect();
    let ours = ssim(a.view(), b.view(), 1.0);
    assert!(
        ours > 0.1 && ours < 0.99,
        "test images too alike or unlike: {ours}"
    );
    assert!((ours - v[0]).abs() < 1e-9, "ssim {ours} vs numpy {}", v[0]);
    let p = psnr(a.view(), b.view(), 1.0);
    assert!((p - v[1]).abs() < 1e-4, "psnr {p} vs numpy {}", v[1]);
}
