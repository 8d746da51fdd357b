//! Colour maps of the rendered images: grey for the B-mode, viridis for aeration
//! (perceptually uniform, readable in greyscale print) and inferno for its uncertainty,
//! so that the two never look alike side by side.

use plotters::style::RGBColor;

/// A colour map from [0, 1] to RGB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colormap {
    /// Black (0) to white (1).
    Grey,
    /// matplotlib's viridis: dark blue (0) to yellow (1).
    Viridis,
    /// matplotlib's inferno: black (0) to pale yellow (1).
    Inferno,
}

/// Nine evenly spaced samples of matplotlib's viridis.
const VIRIDIS: [[u8; 3]; 9] = [
    [68, 1, 84],
    [71, 44, 122],
    [59, 81, 139],
    [44, 113, 142],
    [33, 144, 141],
    [39, 173, 129],
    [92, 200, 99],
    [170, 220, 50],
    [253, 231, 37],
];

/// Nine evenly spaced samples of matplotlib's inferno.
const INFERNO: [[u8; 3]; 9] = [
    [0, 0, 4],
    [31, 12, 72],
    [85, 15, 109],
    [136, 34, 106],
    [186, 54, 85],
    [227, 89, 51],
    [249, 140, 10],
    [249, 201, 50],
    [252, 255, 164],
];

impl Colormap {
    /// The colour of `t`, clamped to [0, 1] (NaN maps to 0).
    pub fn color(self, t: f64) -> RGBColor {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let table = match self {
            Colormap::Grey => {
                let g = (t * 255.0).round() as u8;
                return RGBColor(g, g, g);
            }
            Colormap::Viridis => &VIRIDIS,
            Colormap::Inferno => &INFERNO,
        };
        let pos = t * (table.len() - 1) as f64;
        let i = (pos.floor() as usize).min(table.len() - 2);
        let f = pos - i as f64;
        let mix = |k: usize| {
            let (a, b) = (table[i][k] as f64, table[i + 1][k] as f64);
            (a + (b - a) * f).round() as u8
        };
        RGBColor(mix(0), mix(1), mix(2))
    }

    /// The colour of `v` on the range [lo, hi].
    pub fn scaled(self, v: f64, lo: f64, hi: f64) -> RGBColor {
        let span = hi - lo;
        let t = if span > 0.0 { (v - lo) / span } else { 0.0 };
        self.color(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_samples_and_clamping() {
        assert_eq!(Colormap::Grey.color(0.0), RGBColor(0, 0, 0));
        assert_eq!(Colormap::Grey.color(0.5), RGBColor(128, 128, 128));
        assert_eq!(Colormap::Grey.color(2.0), RGBColor(255, 255, 255));
        assert_eq!(Colormap::Viridis.color(0.0), RGBColor(68, 1, 84));
        assert_eq!(Colormap::Viridis.color(1.0), RGBColor(253, 231, 37));
        assert_eq!(Colormap::Viridis.color(0.5), RGBColor(33, 144, 141));
        // Halfway between the first two samples.
        assert_eq!(Colormap::Viridis.color(0.0625), RGBColor(70, 23, 103));
        assert_eq!(Colormap::Inferno.color(-1.0), RGBColor(0, 0, 4));
        assert_eq!(Colormap::Inferno.color(f64::NAN), RGBColor(0, 0, 4));
        assert_eq!(
            Colormap::Inferno.scaled(0.02, 0.0, 0.02),
            RGBColor(252, 255, 164)
        );
        assert_eq!(Colormap::Viridis.scaled(5.0, 1.0, 1.0), RGBColor(68, 1, 84));
    }
}
