//! The aeration trend of a sequence: the published lung aeration against time with its
//! 95 % interval as a shaded band, the category edges at 60 % and 85 % (labelled), failed
//! frames marked, and the ground truth's lung mean where it is known.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{draw_png, RenderError, FAMILY};
use crate::aeration::CATEGORY_EDGES;

pub const WIDTH: u32 = 980;
pub const HEIGHT: u32 = 440;
const TITLE_H: u32 = 30;
const MARGIN: u32 = 10;
const MARGIN_RIGHT: u32 = 24;
const X_LABELS: u32 = 44;
const Y_LABELS: u32 = 58;
/// Published aeration and its interval (matplotlib's tab:blue).
const ESTIMATE: RGBColor = RGBColor(31, 119, 180);
/// Ground truth (tab:green).
const TRUTH: RGBColor = RGBColor(44, 160, 44);
const FAILED: RGBColor = RGBColor(200, 30, 30);
/// Opacity of the interval band.
const BAND_ALPHA: f64 = 0.22;
const EDGE: RGBColor = RGBColor(110, 110, 110);
const FRAME_AXIS: &str = "frame";

/// What one frame published.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TrendValue {
    /// The lung's mean aeration and its 95 % interval.
    Estimate { aeration: f64, ci: [f64; 2] },
    /// The frame failed: nothing was published.
    Failed,
}

/// One frame of the trend.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrendPoint {
    /// Frame index (replay) or sequence number (live).
    pub frame: u64,
    /// Acquisition time, ns (any origin).
    pub timestamp_ns: u64,
    pub value: TrendValue,
    /// The ground truth's lung mean aeration, when known.
    pub truth: Option<f64>,
}

/// The x axis: seconds from the first frame, or frame numbers when the timestamps do not
/// tell frames apart (all equal, e.g. all zero).
fn x_axis(points: &[TrendPoint]) -> (Vec<f64>, &'static str) {
    let t0 = points.iter().map(|p| p.timestamp_ns).min().unwrap_or(0);
    let timed = points.iter().any(|p| p.timestamp_ns != t0);
    if timed {
        let xs = points
            .iter()
            .map(|p| (p.timestamp_ns - t0) as f64 * 1e-9)
            .collect();
        (xs, "time since the first frame (s)")
    } else {
        (points.iter().map(|p| p.frame as f64).collect(), FRAME_AXIS)
    }
}

/// Renders the trend as PNG bytes ([`WIDTH`] x [`HEIGHT`]), titled `title`.
pub fn trend_png(points: &[TrendPoint], title: &str) -> Result<Vec<u8>, RenderError> {
    let (xs, x_desc) = x_axis(points);
    let frames = x_desc == FRAME_AXIS;
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if !lo.is_finite() {
        (0.0, 1.0)
    } else if hi - lo < 1e-9 {
        (lo - 0.5, hi + 0.5)
    } else {
        let pad = 0.03 * (hi - lo);
        (lo - pad, hi + pad)
    };
    draw_png(WIDTH, HEIGHT, |root| {
        root.fill(&WHITE)?;
        let (head, body) = root.split_vertically(TITLE_H);
        head.draw(&Text::new(
            title.to_string(),
            ((MARGIN + Y_LABELS) as i32, 6),
            (FAMILY, 18).into_font(),
        ))?;
        let keys: Vec<Key> = [
            (
                Key::Estimate,
                points.iter().any(|p| p.value != TrendValue::Failed),
            ),
            (Key::Truth, points.iter().any(|p| p.truth.is_some())),
            (
                Key::Failed,
                points.iter().any(|p| p.value == TrendValue::Failed),
            ),
        ]
        .into_iter()
        .filter_map(|(k, shown)| shown.then_some(k))
        .collect();
        draw_legend(&head, &keys)?;
        draw_body(&body, points, &xs, (lo, hi), x_desc, frames)
    })
}

fn draw_body(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    points: &[TrendPoint],
    xs: &[f64],
    (lo, hi): (f64, f64),
    x_desc: &str,
    frames: bool,
) -> Result<(), RenderError> {
    let mut chart = ChartBuilder::on(area)
        .margin(MARGIN)
        .margin_right(MARGIN_RIGHT)
        .x_label_area_size(X_LABELS)
        .y_label_area_size(Y_LABELS)
        .build_cartesian_2d(lo..hi, 0f64..100f64)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(228, 228, 228))
        .x_labels(8)
        .y_labels(11)
        // Frame numbers are whole: no labels between them.
        .x_label_formatter(&|v| {
            if !frames {
                super::tick(*v, hi - lo)
            } else if (v - v.round()).abs() < 1e-9 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_desc(x_desc)
        .y_desc("lung aeration (%)")
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .draw()?;

    // Category edges, labelled above their left end, and each category's name under its
    // upper edge at the right.
    let above = (FAMILY, 12)
        .into_font()
        .color(&EDGE)
        .pos(Pos::new(HPos::Left, VPos::Bottom));
    for edge in CATEGORY_EDGES {
        let y = 100.0 * edge;
        chart.draw_series(DashedLineSeries::new(
            [(lo, y), (hi, y)],
            6,
            4,
            EDGE.stroke_width(1),
        ))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{y:.0} %"),
            (lo + 0.01 * (hi - lo), y + 0.8),
            above.clone(),
        )))?;
    }
    let names = [
        ("poorly aerated", 100.0 * CATEGORY_EDGES[0] - 1.0),
        ("normal", 100.0 * CATEGORY_EDGES[1] - 1.0),
        ("hyper-aerated", 99.0),
    ];
    let right = (FAMILY, 13)
        .into_font()
        .color(&EDGE)
        .pos(Pos::new(HPos::Right, VPos::Top));
    chart.draw_series(names.iter().map(|(name, y)| {
        Text::new(name.to_string(), (hi - 0.01 * (hi - lo), *y), right.clone())
    }))?;

    // Runs of consecutive published frames: the band and the line; a failed frame breaks
    // the run.
    let mut runs: Vec<Vec<(f64, f64, [f64; 2])>> = vec![Vec::new()];
    for (p, &x) in points.iter().zip(xs) {
        match p.value {
            TrendValue::Estimate { aeration, ci } => {
                if let Some(run) = runs.last_mut() {
                    run.push((x, 100.0 * aeration, [100.0 * ci[0], 100.0 * ci[1]]));
                }
            }
            TrendValue::Failed => runs.push(Vec::new()),
        }
    }
    let band = ESTIMATE.mix(BAND_ALPHA);
    for run in runs.iter().filter(|r| !r.is_empty()) {
        if run.len() > 1 {
            let upper = run.iter().map(|(x, _, ci)| (*x, ci[1]));
            let lower = run.iter().rev().map(|(x, _, ci)| (*x, ci[0]));
            chart.draw_series(std::iter::once(Polygon::new(
                upper.chain(lower).collect::<Vec<_>>(),
                band.filled(),
            )))?;
        } else {
            let (x, _, ci) = run[0];
            chart.draw_series(std::iter::once(PathElement::new(
                [(x, ci[0]), (x, ci[1])],
                band.stroke_width(8),
            )))?;
        }
        chart.draw_series(LineSeries::new(
            run.iter().map(|(x, a, _)| (*x, *a)),
            ESTIMATE.stroke_width(2),
        ))?;
        chart.draw_series(
            run.iter()
                .map(|(x, a, _)| Circle::new((*x, *a), 3, ESTIMATE.filled())),
        )?;
    }

    let truth: Vec<(f64, f64)> = points
        .iter()
        .zip(xs)
        .filter_map(|(p, &x)| p.truth.map(|t| (x, 100.0 * t)))
        .collect();
    if !truth.is_empty() {
        chart.draw_series(LineSeries::new(
            truth.iter().copied(),
            TRUTH.stroke_width(2),
        ))?;
        chart.draw_series(
            truth
                .iter()
                .map(|&(x, t)| TriangleMarker::new((x, t), 4, TRUTH.filled())),
        )?;
    }

    let failed: Vec<f64> = points
        .iter()
        .zip(xs)
        .filter(|(p, _)| p.value == TrendValue::Failed)
        .map(|(_, &x)| x)
        .collect();
    if !failed.is_empty() {
        for &x in &failed {
            chart.draw_series(std::iter::once(PathElement::new(
                [(x, 0.0), (x, 100.0)],
                FAILED.mix(0.5).stroke_width(1),
            )))?;
        }
        chart.draw_series(
            failed
                .iter()
                .map(|&x| Cross::new((x, 4.0), 6, FAILED.stroke_width(3))),
        )?;
    }
    if points.is_empty() {
        chart.draw_series(std::iter::once(Text::new(
            "no frames yet",
            ((lo + hi) / 2.0, 50.0),
            (FAMILY, 16).into_font().color(&EDGE),
        )))?;
    }
    Ok(())
}

/// What the legend lists.
#[derive(Clone, Copy, PartialEq)]
enum Key {
    Estimate,
    Truth,
    Failed,
}

/// The legend, in the title row from its right end: only what the plot shows.
fn draw_legend(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    keys: &[Key],
) -> Result<(), RenderError> {
    let font = (FAMILY, 13).into_font().color(&BLACK);
    let (width, _) = area.dim_in_pixel();
    let mut right = width as i32 - MARGIN_RIGHT as i32;
    let y = TITLE_H as i32 / 2;
    for key in keys.iter().rev() {
        let text = match key {
            Key::Estimate => "published aeration, 95 % interval shaded",
            Key::Truth => "ground truth (lung mean)",
            Key::Failed => "failed frame",
        };
        let (tw, th) = area.estimate_text_size(text, &font)?;
        let x = right - tw as i32;
        area.draw(&Text::new(text, (x, y - th as i32 / 2), font.clone()))?;
        let sx = x - 28;
        match key {
            Key::Estimate => {
                area.draw(&Rectangle::new(
                    [(sx, y - 6), (sx + 22, y + 6)],
                    ESTIMATE.mix(BAND_ALPHA).filled(),
                ))?;
                area.draw(&PathElement::new(
                    [(sx, y), (sx + 22, y)],
                    ESTIMATE.stroke_width(2),
                ))?;
            }
            Key::Truth => area.draw(&PathElement::new(
                [(sx, y), (sx + 22, y)],
                TRUTH.stroke_width(2),
            ))?,
            Key::Failed => area.draw(&Cross::new((sx + 11, y), 5, FAILED.stroke_width(3)))?,
        }
        right = sx - 22;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{decode, pixel};
    use super::*;

    fn point(frame: u64, timestamp_ns: u64, value: TrendValue, truth: Option<f64>) -> TrendPoint {
        TrendPoint {
            frame,
            timestamp_ns,
            value,
            truth,
        }
    }

    fn est(aeration: f64, lo: f64, hi: f64) -> TrendValue {
        TrendValue::Estimate {
            aeration,
            ci: [lo, hi],
        }
    }

    #[test]
    fn x_axis_is_time_unless_timestamps_are_all_equal() {
        let timed = [
            point(5, 2_000_000_000, TrendValue::Failed, None),
            point(6, 2_500_000_000, TrendValue::Failed, None),
        ];
        assert_eq!(
            x_axis(&timed),
            (vec![0.0, 0.5], "time since the first frame (s)")
        );
        let untimed = [
            point(5, 0, TrendValue::Failed, None),
            point(6, 0, TrendValue::Failed, None),
        ];
        assert_eq!(x_axis(&untimed), (vec![5.0, 6.0], "frame"));
    }

    /// Frames 0-2 published a 60-80 % interval, frame 3 failed: the band is shaded where
    /// it lies (the band colour on white, off the line), nowhere outside it, and the failed
    /// frame's marker is red at its place.
    #[test]
    fn band_edges_and_failed_frame() {
        let points = [
            point(0, 0, est(0.70, 0.60, 0.80), Some(0.72)),
            point(1, 0, est(0.70, 0.60, 0.80), Some(0.72)),
            point(2, 0, est(0.70, 0.60, 0.80), Some(0.72)),
            point(3, 0, TrendValue::Failed, Some(0.72)),
        ];
        let (w, h, rgb) = decode(&trend_png(&points, "test").unwrap());
        assert_eq!((w, h), (WIDTH, HEIGHT));
        // The plot area in pixels, and chart coordinates there.
        let (left, right) = (MARGIN + Y_LABELS, WIDTH - MARGIN_RIGHT);
        let (top, bottom) = (TITLE_H + MARGIN, HEIGHT - MARGIN - X_LABELS);
        let (x_lo, x_hi) = (-0.09, 3.09);
        let px = |x: f64| left + ((x - x_lo) / (x_hi - x_lo) * (right - left) as f64) as u32;
        let py = |y: f64| bottom - (y / 100.0 * (bottom - top) as f64) as u32;
        // The band between frames 0 and 1 at 64 %: 22 % of tab:blue over white.
        let blend = |c: u8| (255.0 + BAND_ALPHA * (c as f64 - 255.0)).round() as i32;
        let expected = [blend(31), blend(119), blend(180)];
        let got = pixel(&rgb, w, px(0.3), py(63.0));
        for k in 0..3 {
            assert!((got[k] as i32 - expected[k]).abs() <= 2, "band {got:?}");
        }
        // Above the band: background (white or a light grid line).
        let above = pixel(&rgb, w, px(0.3), py(93.0));
        assert!(above.iter().all(|c| *c >= 220), "above the band {above:?}");
        // The failed frame's cross at 4 % (within the pixel rounding of the mapping).
        let (cx, cy) = (px(3.0), py(4.0));
        let cross = (cy - 3..=cy + 3)
            .flat_map(|y| (cx - 3..=cx + 3).map(move |x| (x, y)))
            .filter(|&(x, y)| pixel(&rgb, w, x, y) == [200, 30, 30])
            .count();
        assert!(cross >= 5, "{cross} red pixels at the failed frame");
        // Nothing failed: no red anywhere.
        let ok = &points[..3];
        let (_, _, rgb) = decode(&trend_png(ok, "test").unwrap());
        let red = rgb
            .chunks(3)
            .filter(|p| p[0] > 150 && p[1] < 80 && p[2] < 80)
            .count();
        assert_eq!(red, 0);
    }
}
