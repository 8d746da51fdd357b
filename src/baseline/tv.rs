//! Proximal operator of isotropic total variation with a box constraint: the fast
//! gradient projection (FGP) of Beck & Teboulle (2009), "Fast gradient-based algorithms
//! for constrained total variation image denoising and deblurring problems", IEEE TIP
//! 18(11), algorithm GP/FGP on the dual, step 1/8 (8 bounds ||L||^2 for their L).

use ndarray::Array2;

/// Isotropic TV with forward differences and zero difference past the last row/column.
pub fn tv(x: &Array2<f64>) -> f64 {
    let (m, n) = x.dim();
    let mut s = 0.0;
    for i in 0..m {
        for j in 0..n {
            let dz = if i + 1 < m {
                x[[i, j]] - x[[i + 1, j]]
            } else {
                0.0
            };
            let dx = if j + 1 < n {
                x[[i, j]] - x[[i, j + 1]]
            } else {
                0.0
            };
            s += (dz * dz + dx * dx).sqrt();
        }
    }
    s
}

/// L(p, q)_ij = p_ij - p_(i-1)j + q_ij - q_i(j-1) (Beck & Teboulle's linear operator).
fn l_op(p: &Array2<f64>, q: &Array2<f64>) -> Array2<f64> {
    let (m, n) = p.dim();
    Array2::from_shape_fn((m, n), |(i, j)| {
        let mut v = p[[i, j]] + q[[i, j]];
        if i > 0 {
            v -= p[[i - 1, j]];
        }
        if j > 0 {
            v -= q[[i, j - 1]];
        }
        v
    })
}

/// L^T x = (p, q) with p_ij = x_ij - x_(i+1)j, q_ij = x_ij - x_i(j+1) (0 on the last
/// row / column).
fn lt_op(x: &Array2<f64>) -> (Array2<f64>, Array2<f64>) {
    let (m, n) = x.dim();
    let p = Array2::from_shape_fn((m, n), |(i, j)| {
        if i + 1 < m {
            x[[i, j]] - x[[i + 1, j]]
        } else {
            0.0
        }
    });
    let q = Array2::from_shape_fn((m, n), |(i, j)| {
        if j + 1 < n {
            x[[i, j]] - x[[i, j + 1]]
        } else {
            0.0
        }
    });
    (p, q)
}

/// argmin_x 1/2 ||x - b||^2 + lambda TV(x) subject to lo <= x <= hi, by `iters` FGP
/// iterations.
pub fn prox_tv_box(b: &Array2<f64>, lambda: f64, lo: f64, hi: f64, iters: usize) -> Array2<f64> {
    let clip = |a: Array2<f64>| a.mapv(|v| v.clamp(lo, hi));
    if lambda <= 0.0 {
        return clip(b.clone());
    }
    let (m, n) = b.dim();
    let mut p = Array2::<f64>::zeros((m, n));
    let mut q = Array2::<f64>::zeros((m, n));
    let (mut r, mut s) = (p.clone(), q.clone());
    let mut t = 1.0f64;
    for _ in 0..iters {
        let x = clip(b - &(l_op(&r, &s) * lambda));
        let (gp, gq) = lt_op(&x);
        let mut np = &r + &(gp / (8.0 * lambda));
        let mut nq = &s + &(gq / (8.0 * lambda));
        // Projection onto the unit ball of each (p, q) pair, with p zero on the last row
        // and q zero on the last column.
        for i in 0..m {
            for j in 0..n {
                if i + 1 == m {
                    np[[i, j]] = 0.0;
                }
                if j + 1 == n {
                    nq[[i, j]] = 0.0;
                }
                let norm = (np[[i, j]].powi(2) + nq[[i, j]].powi(2)).sqrt().max(1.0);
                np[[i, j]] /= norm;
                nq[[i, j]] /= norm;
            }
        }
        let nt = (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0;
        let w = (t - 1.0) / nt;
        r = &np + &((&np - &p) * w);
        s = &nq + &((&nq - &q) * w);
        p = np;
        q = nq;
        t = nt;
    }
    clip(b - &(l_op(&p, &q) * lambda))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objective(x: &Array2<f64>, b: &Array2<f64>, lambda: f64) -> f64 {
        0.5 * (x - b).mapv(|v| v * v).sum() + lambda * tv(x)
    }

    #[test]
    fn adjoint_pair_and_limits() {
        let b = Array2::from_shape_fn((7, 9), |(i, j)| ((i * 5 + j * 3) % 7) as f64 / 6.0);
        let p = Array2::from_shape_fn((7, 9), |(i, j)| {
            if i < 6 {
                (i as f64 - j as f64) / 9.0
            } else {
                0.0
            }
        });
        let q = Array2::from_shape_fn(
            (7, 9),
            |(i, j)| if j < 8 { (i * j) as f64 / 50.0 } else { 0.0 },
        );
        let (lp, lq) = lt_op(&b);
        let lhs = (l_op(&p, &q) * &b).sum();
        let rhs = (&p * &lp).sum() + (&q * &lq).sum();
        assert!((lhs - rhs).abs() < 1e-12);
        // lambda = 0: the box projection; huge lambda: the clipped mean, a constant.
        let shifted = &b * 2.0 - 0.5;
        assert_eq!(
            prox_tv_box(&shifted, 0.0, 0.0, 1.0, 10),
            shifted.mapv(|v| v.clamp(0.0, 1.0))
        );
        let flat = prox_tv_box(&b, 1e3, 0.0, 1.0, 500);
        let mean = b.mean().unwrap_or(0.0);
        assert!(
            flat.iter().all(|v| (v - mean).abs() < 1e-3),
            "{flat:?} vs {mean}"
        );
    }

    #[test]
    fn prox_beats_perturbations() {
        let b = Array2::from_shape_fn((8, 8), |(i, j)| {
            (if j > 3 { 0.8 } else { 0.2 }) + (((i * 7 + j * 13) % 5) as f64 - 2.0) / 20.0
        });
        let lam = 0.05;
        let x = prox_tv_box(&b, lam, 0.0, 1.0, 300);
        let f = objective(&x, &b, lam);
        for k in 0..20 {
            let mut y = x.clone();
            y[[k % 8, (k * 3) % 8]] += if k % 2 == 0 { 0.01 } else { -0.01 };
            assert!(
                objective(&y, &b, lam) >= f - 1e-9,
                "perturbation {k} lowers the objective"
            );
        }
        assert!(tv(&x) < tv(&b));
    }
}
