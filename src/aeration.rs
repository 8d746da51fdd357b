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

#[cfg(test)]
mod tests {
    use super::*;

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
