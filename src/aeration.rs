//! Lung aeration as pleura publishes it: the category of a mean aeration and the 95 %
//! interval's normal quantile. The live path ([`crate::posterior`], [`crate::render`])
//! and the offline modules ([`crate::simulate`], [`crate::eval`]) all read them here.

/// Aeration category boundaries (fractions): normal lung is 60-85 %. pleura's own
/// definition, published on the wire as `posterior/category` (`docs/protocol.md`).
pub const CATEGORY_EDGES: [f64; 2] = [0.60, 0.85];

/// Category of a mean aeration: 0 (< 60 %, poorly aerated), 1 (60-85 %, normal),
/// 2 (>= 85 %, hyper-aerated).
pub fn category(mean_aeration: f64) -> u8 {
    if mean_aeration < CATEGORY_EDGES[0] {
        0
    } else if mean_aeration < CATEGORY_EDGES[1] {
        1
    } else {
        2
    }
}

/// Category names of [`category`], with their ranges.
pub fn category_label(category: u8) -> &'static str {
    match category {
        0 => "poorly aerated (< 60 %)",
        1 => "normal (60-85 %)",
        2 => "hyper-aerated (>= 85 %)",
        _ => "no category",
    }
}

/// z of the two-sided 95 % normal interval: the standard normal's 0.975 quantile
/// (scipy.stats.norm.ppf(0.975) = 1.959963984540054).
pub const Z95: f64 = 1.959_963_984_540_054;

/// The two-sided 95 % quantile of Student's t with `df` degrees of freedom (its 0.975
/// quantile), for intervals whose spread is itself estimated from few values: the
/// Cornish-Fisher expansion about [`Z95`] to 1/df^4 (Abramowitz & Stegun 1964, 26.7.5).
/// Within 4e-3 of scipy.stats.t.ppf(0.975, df) for df >= 3, 0.8 % below it at df = 2, and
/// [`Z95`] as df grows; infinite below df = 1, where no interval can be stated.
pub fn t95(df: f64) -> f64 {
    if df.is_nan() || df < 1.0 {
        return f64::INFINITY;
    }
    let z = Z95;
    let (z3, z5, z7, z9) = (z.powi(3), z.powi(5), z.powi(7), z.powi(9));
    let g1 = (z3 + z) / 4.0;
    let g2 = (5.0 * z5 + 16.0 * z3 + 3.0 * z) / 96.0;
    let g3 = (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / 384.0;
    let g4 = (79.0 * z9 + 776.0 * z7 + 1482.0 * z5 - 1920.0 * z3 - 945.0 * z) / 92160.0;
    z + g1 / df + g2 / df.powi(2) + g3 / df.powi(3) + g4 / df.powi(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// t95 against scipy.stats.t.ppf(0.975, df) (scipy 1.x, computed independently).
    #[test]
    fn t95_matches_students_t() {
        for (df, exact) in [
            (3.0, 3.182_446_305_283_708),
            (5.0, 2.570_581_835_636_315),
            (8.0, 2.306_004_135_204_166),
            (20.0, 2.085_963_447_265_864),
            (100.0, 1.983_971_518_523_552),
        ] {
            assert!((t95(df) - exact).abs() < 4e-3, "df {df}: {}", t95(df));
        }
        assert!((t95(2.0) / 4.302_652_729_749_462 - 1.0).abs() < 0.008);
        assert!((t95(1e9) - Z95).abs() < 1e-8);
        assert_eq!(t95(0.5), f64::INFINITY);
        assert_eq!(t95(f64::NAN), f64::INFINITY);
    }

    #[test]
    fn category_edges() {
        assert_eq!(category(0.599), 0);
        assert_eq!(category(0.60), 1);
        assert_eq!(category(0.849), 1);
        assert_eq!(category(0.85), 2);
    }

    #[test]
    fn category_labels_name_the_edges() {
        assert_eq!(CATEGORY_EDGES, [0.60, 0.85]);
        assert_eq!(category_label(category(0.59)), "poorly aerated (< 60 %)");
        assert_eq!(category_label(category(0.60)), "normal (60-85 %)");
        assert_eq!(category_label(category(0.85)), "hyper-aerated (>= 85 %)");
        assert_eq!(category_label(255), "no category");
    }

    /// The standard normal density integrated from 0 to Z95 (composite Simpson, 4000
    /// intervals) is 0.475, half the 95 % interval's mass.
    #[test]
    fn z95_holds_95_percent_of_the_normal() {
        let n = 4000;
        let h = Z95 / n as f64;
        let phi = |z: f64| (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let inner: f64 = (1..n)
            .map(|i| if i % 2 == 1 { 4.0 } else { 2.0 } * phi(i as f64 * h))
            .sum();
        let mass = h / 3.0 * (phi(0.0) + inner + phi(Z95));
        assert!((mass - 0.475).abs() < 1e-13, "mass {mass}");
    }
}
