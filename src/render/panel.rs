//! One frame's panel: B-mode | reconstruction | uncertainty | ground truth, each titled,
//! with lateral and depth axes in mm (from the grid's pixel centres, depth increasing
//! downwards) and its colour bar, under a caption with the published aeration, its 95 %
//! interval and category, the frame and its time. A failed frame shows FAILED and the
//! reason where its reconstruction would be, never an image of NaNs.

use ndarray::ArrayView2;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::colormap::Colormap;
use super::{draw_png, tick, RenderError, FAMILY};
use crate::aeration::category_label;

/// B-mode dynamic range, dB.
pub const BMODE_RANGE_DB: f64 = 40.0;

/// Width of each image's plot area, pixels.
const PLOT_W: u32 = 240;
/// Bounds of each image's plot height (it follows the grid's aspect ratio), pixels.
const PLOT_H: (u32, u32) = (160, 420);
const MARGIN: u32 = 8;
const TITLE_H: u32 = 24;
const CAPTION_H: u32 = 62;
const Y_LABELS: u32 = 54;
const X_LABELS: u32 = 44;
/// The colour bar and its labels.
const COLORBAR_W: u32 = 64;
const RECONSTRUCTION: &str = "Reconstruction: aeration (mean)";
const UNCERTAINTY: &str = "Uncertainty: std of aeration";
const RED: RGBColor = RGBColor(200, 30, 30);
const GREY_TEXT: RGBColor = RGBColor(80, 80, 80);
/// The headline of an estimate the RF data term did not explain.
const AMBER: RGBColor = RGBColor(180, 95, 0);

/// A reconstruction's estimate, as published.
#[derive(Clone, Debug)]
pub struct Estimate<'a> {
    /// Posterior mean aeration, (nz, nx).
    pub mean: ArrayView2<'a, f32>,
    /// Its per-pixel standard deviation, (nz, nx).
    pub std: ArrayView2<'a, f32>,
    /// The lung's mean aeration and its 95 % interval.
    pub aeration: f64,
    pub ci: [f64; 2],
    /// 0, 1 or 2 ([`crate::aeration::category`]).
    pub category: u8,
    /// `None` where the RF data term explained the frame to its noise; else how badly
    /// it did, and what the published estimate rests on (docs/reconstruction.md, "Model
    /// error").
    pub poor_fit: Option<PoorFit>,
}

/// A frame the RF data term did not explain.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoorFit {
    /// The RF residual over the noise's (1 where the model explains the data).
    pub misfit: f64,
    /// Whether the estimate was reconstructed from the echo power (a calibration is
    /// loaded) rather than drawn again from the RF under model error.
    pub echo: bool,
}

impl PoorFit {
    /// The caption's note: what the misfit was and what the estimate rests on.
    pub fn note(&self) -> String {
        let rests_on = if self.echo {
            "estimate from the calibrated echo power"
        } else {
            "interval widened by the model error"
        };
        format!("POOR FIT of the RF (misfit {:.1}): {rests_on}", self.misfit)
    }
}

/// What the frame's reconstruction gave.
#[derive(Clone, Debug)]
pub enum Reconstruction<'a> {
    Estimate(Estimate<'a>),
    /// The frame failed, for this reason.
    Failed(&'a str),
    /// No reconstruction was made (a stage that only beamforms).
    None,
}

/// Which frame the panel shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameLabel {
    /// The stream (live view), when there are several.
    pub stream: Option<u64>,
    /// Frame index (replay) or sequence number (live).
    pub frame: u64,
    /// Time of the frame, s (from the first frame of the sequence).
    pub time_s: f64,
}

/// Everything one panel shows.
#[derive(Clone, Debug)]
pub struct PanelInput<'a> {
    /// Pixel centres, m: lateral (nx) and depth (nz).
    pub grid_x: &'a [f64],
    pub grid_z: &'a [f64],
    /// DAS envelope, (nz, nx), any scale (shown in dB below its maximum).
    pub envelope: Option<ArrayView2<'a, f32>>,
    pub reconstruction: Reconstruction<'a>,
    /// Ground-truth aeration, (nz, nx).
    pub truth: Option<ArrayView2<'a, f32>>,
    pub label: FrameLabel,
}

/// Tiles of a panel at most: B-mode, reconstruction, uncertainty, ground truth.
const MAX_TILES: u32 = 4;

/// The largest panel, (width, height) in pixels.
pub const fn max_size() -> (u32, u32) {
    (
        MAX_TILES * (2 * MARGIN + Y_LABELS + PLOT_W + COLORBAR_W),
        CAPTION_H + TITLE_H + 2 * MARGIN + PLOT_H.1 + X_LABELS,
    )
}

/// One tile of the panel.
enum Tile {
    Image {
        title: &'static str,
        /// Row-major (nz, nx) values, NaN where nothing is drawn.
        values: Vec<f64>,
        map: Colormap,
        range: (f64, f64),
    },
    Message {
        title: &'static str,
        headline: String,
        detail: String,
    },
}

/// Renders the panel as PNG bytes.
pub fn panel_png(input: &PanelInput<'_>) -> Result<Vec<u8>, RenderError> {
    let (nx, nz) = (input.grid_x.len(), input.grid_z.len());
    if nx == 0 || nz == 0 {
        return Err(RenderError::Input("the grid has no pixels".into()));
    }
    let check = |name: &str, a: &ArrayView2<'_, f32>| {
        if a.dim() == (nz, nx) {
            Ok(())
        } else {
            Err(RenderError::Input(format!(
                "{name} is {:?} but the grid is ({nz}, {nx}) (nz, nx)",
                a.dim()
            )))
        }
    };
    let mut tiles = Vec::new();
    if let Some(env) = &input.envelope {
        check("the envelope", env)?;
        tiles.push(bmode_tile(env));
    }
    match &input.reconstruction {
        Reconstruction::Estimate(e) => {
            check("the mean", &e.mean)?;
            check("the std", &e.std)?;
            tiles.push(Tile::Image {
                title: RECONSTRUCTION,
                values: finite_or_nan(&e.mean),
                map: Colormap::Viridis,
                range: (0.0, 1.0),
            });
            let std = finite_or_nan(&e.std);
            let top = std
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .fold(0.0, f64::max);
            tiles.push(Tile::Image {
                title: UNCERTAINTY,
                values: std,
                map: Colormap::Inferno,
                range: (0.0, nice_ceiling(top.max(1e-3))),
            });
        }
        Reconstruction::Failed(reason) => {
            for title in [RECONSTRUCTION, UNCERTAINTY] {
                tiles.push(Tile::Message {
                    title,
                    headline: "FAILED".into(),
                    detail: reason.to_string(),
                });
            }
        }
        Reconstruction::None => {}
    }
    if let Some(t) = &input.truth {
        check("the ground truth", t)?;
        tiles.push(Tile::Image {
            title: "Ground truth: aeration",
            values: finite_or_nan(t),
            map: Colormap::Viridis,
            range: (0.0, 1.0),
        });
    }
    if tiles.is_empty() {
        tiles.push(Tile::Message {
            title: "No image",
            headline: "no image".into(),
            detail: "the stage publishes no image".into(),
        });
    }

    let x_edges = edges_mm(input.grid_x);
    let z_edges = edges_mm(input.grid_z);
    let extent_x = x_edges[nx] - x_edges[0];
    let extent_z = z_edges[nz] - z_edges[0];
    let plot_h = ((PLOT_W as f64 * extent_z / extent_x).round() as u32).clamp(PLOT_H.0, PLOT_H.1);
    let tile_w = 2 * MARGIN + Y_LABELS + PLOT_W + COLORBAR_W;
    let tile_h = TITLE_H + 2 * MARGIN + plot_h + X_LABELS;
    let width = tile_w * tiles.len() as u32;
    let height = CAPTION_H + tile_h;
    let grid = Axes {
        x_edges: &x_edges,
        z_edges: &z_edges,
    };
    draw_png(width, height.max(CAPTION_H + 120), |root| {
        root.fill(&WHITE)?;
        let (caption, body) = root.split_vertically(CAPTION_H);
        draw_caption(&caption, input)?;
        for (tile, area) in tiles.iter().zip(body.split_evenly((1, tiles.len()))) {
            draw_tile(&area, tile, &grid)?;
        }
        Ok(())
    })
}

/// The B-mode tile: the envelope in dB below its maximum.
fn bmode_tile(env: &ArrayView2<'_, f32>) -> Tile {
    let title = "B-mode (DAS): dB below its maximum";
    let max = env
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f32, f32::max);
    if max <= 0.0 {
        return Tile::Message {
            title,
            headline: "no echo".into(),
            detail: "the envelope is zero (beamforming failed)".into(),
        };
    }
    let values = env
        .iter()
        .map(|&e| {
            let db = 20.0 * (e as f64 / max as f64).log10();
            if db.is_nan() {
                f64::NAN
            } else {
                db.max(-BMODE_RANGE_DB)
            }
        })
        .collect();
    Tile::Image {
        title,
        values,
        map: Colormap::Grey,
        range: (-BMODE_RANGE_DB, 0.0),
    }
}

fn finite_or_nan(a: &ArrayView2<'_, f32>) -> Vec<f64> {
    a.iter().map(|&v| v as f64).collect()
}

/// The smallest 1, 2 or 5 times a power of ten at or above `v` (> 0).
fn nice_ceiling(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|c| *c >= v * (1.0 - 1e-12))
        .unwrap_or(10.0 * p)
}

/// Pixel edges, mm, from pixel centres, m: midpoints, the ends half a spacing out.
fn edges_mm(centres: &[f64]) -> Vec<f64> {
    let c: Vec<f64> = centres.iter().map(|v| v * 1e3).collect();
    let n = c.len();
    if n == 1 {
        return vec![c[0] - 0.5, c[0] + 0.5];
    }
    let mut e = Vec::with_capacity(n + 1);
    e.push(c[0] - (c[1] - c[0]) / 2.0);
    e.extend(c.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    e.push(c[n - 1] + (c[n - 1] - c[n - 2]) / 2.0);
    e
}

struct Axes<'a> {
    x_edges: &'a [f64],
    z_edges: &'a [f64],
}

type Area<'b> = DrawingArea<BitMapBackend<'b>, Shift>;

fn draw_caption(area: &Area<'_>, input: &PanelInput<'_>) -> Result<(), RenderError> {
    let (headline, color) = match &input.reconstruction {
        Reconstruction::Estimate(e) => (
            format!(
                "Lung aeration {:.1} %  (95 % interval {:.1}-{:.1} %)  {}",
                100.0 * e.aeration,
                100.0 * e.ci[0],
                100.0 * e.ci[1],
                category_label(e.category)
            ),
            if e.poor_fit.is_some() { AMBER } else { BLACK },
        ),
        Reconstruction::Failed(reason) => (format!("FAILED: {}", one_line(reason, 110)), RED),
        Reconstruction::None => ("B-mode only: no reconstruction".to_string(), BLACK),
    };
    let poor_fit = match &input.reconstruction {
        Reconstruction::Estimate(Estimate {
            poor_fit: Some(p), ..
        }) => format!("  |  {}", p.note()),
        _ => String::new(),
    };
    let l = &input.label;
    let stream = l
        .stream
        .map(|s| format!("Stream {s}  |  "))
        .unwrap_or_default();
    let frame = if l.stream.is_some() {
        "sequence"
    } else {
        "frame"
    };
    let detail = format!(
        "{stream}{frame} {}  |  t = {:.3} s{poor_fit}",
        l.frame, l.time_s
    );
    area.draw(&Text::new(
        headline,
        (MARGIN as i32 + 4, 10),
        (FAMILY, 21).into_font().color(&color),
    ))?;
    area.draw(&Text::new(
        detail,
        (MARGIN as i32 + 4, 38),
        (FAMILY, 15).into_font().color(&GREY_TEXT),
    ))?;
    Ok(())
}

/// `s` on one line of at most `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let mut cut: String = flat.chars().take(max.saturating_sub(3)).collect();
        cut.push_str("...");
        cut
    }
}

/// Splits `s` into lines of at most `width` characters at spaces, at most `lines` lines.
fn wrap(s: &str, width: usize, lines: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in one_line(s, width * lines).split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push(line);
    }
    out.truncate(lines);
    out
}

fn draw_tile(area: &Area<'_>, tile: &Tile, axes: &Axes<'_>) -> Result<(), RenderError> {
    let (title_area, body) = area.split_vertically(TITLE_H);
    let title = match tile {
        Tile::Image { title, .. } | Tile::Message { title, .. } => *title,
    };
    title_area.draw(&Text::new(
        title,
        ((MARGIN + Y_LABELS) as i32, 4),
        (FAMILY, 16).into_font(),
    ))?;
    let (w, _) = body.dim_in_pixel();
    let (plot, bar) = body.split_horizontally(w.saturating_sub(COLORBAR_W));
    let (x0, x1) = (axes.x_edges[0], axes.x_edges[axes.x_edges.len() - 1]);
    let (z0, z1) = (axes.z_edges[0], axes.z_edges[axes.z_edges.len() - 1]);
    let mut chart = ChartBuilder::on(&plot)
        .margin(MARGIN)
        .x_label_area_size(X_LABELS)
        .y_label_area_size(Y_LABELS)
        // Depth grows downwards: the chart's y is -z.
        .build_cartesian_2d(x0..x1, -z1..-z0)?;
    let (sx, sz) = (x1 - x0, z1 - z0);
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(5)
        .y_labels(6)
        .x_label_formatter(&|v| tick(*v, sx))
        .y_label_formatter(&|v| tick(-*v, sz))
        .x_desc("lateral x (mm)")
        .y_desc("depth z (mm)")
        .label_style((FAMILY, 12))
        .axis_desc_style((FAMILY, 13))
        .draw()?;
    match tile {
        Tile::Image {
            values, map, range, ..
        } => {
            let nx = axes.x_edges.len() - 1;
            let pixels = values.iter().enumerate().filter_map(|(k, v)| {
                let (i, j) = (k / nx, k % nx);
                v.is_finite().then(|| {
                    Rectangle::new(
                        [
                            (axes.x_edges[j], -axes.z_edges[i]),
                            (axes.x_edges[j + 1], -axes.z_edges[i + 1]),
                        ],
                        map.scaled(*v, range.0, range.1).filled(),
                    )
                })
            });
            chart.draw_series(pixels)?;
            draw_colorbar(&bar, *map, *range)?;
        }
        Tile::Message {
            headline, detail, ..
        } => {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x0, -z0), (x1, -z1)],
                RGBColor(238, 238, 238).filled(),
            )))?;
            let pa = chart.plotting_area();
            let (pw, ph) = pa.dim_in_pixel();
            let centre = pa.get_base_pixel();
            let (cx, cy) = (centre.0 + pw as i32 / 2, centre.1 + ph as i32 / 3);
            let big = (FAMILY, 30)
                .into_font()
                .color(&RED)
                .pos(text_anchor(HPos::Center));
            area.draw(&Text::new(
                headline.clone(),
                (cx - area.get_base_pixel().0, cy - area.get_base_pixel().1),
                big,
            ))?;
            for (k, line) in wrap(detail, 30, 6).into_iter().enumerate() {
                let style = (FAMILY, 13)
                    .into_font()
                    .color(&BLACK)
                    .pos(text_anchor(HPos::Center));
                area.draw(&Text::new(
                    line,
                    (
                        cx - area.get_base_pixel().0,
                        cy - area.get_base_pixel().1 + 34 + 17 * k as i32,
                    ),
                    style,
                ))?;
            }
        }
    }
    Ok(())
}

fn text_anchor(h: HPos) -> Pos {
    Pos::new(h, VPos::Top)
}

/// A vertical colour bar of `map` over `range`, labelled on its right (the tile's title
/// names the unit).
fn draw_colorbar(area: &Area<'_>, map: Colormap, range: (f64, f64)) -> Result<(), RenderError> {
    let (lo, hi) = range;
    let mut bar = ChartBuilder::on(area)
        .margin_top(MARGIN)
        .margin_bottom(MARGIN)
        .margin_left(4)
        .x_label_area_size(X_LABELS)
        .right_y_label_area_size(COLORBAR_W - 24)
        .build_cartesian_2d(0f64..1f64, lo..hi)?;
    let span = hi - lo;
    bar.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(5)
        .y_label_formatter(&|v| tick_bar(*v, span))
        .label_style((FAMILY, 12))
        .draw()?;
    const STEPS: usize = 96;
    bar.draw_series((0..STEPS).map(|k| {
        let a = lo + span * k as f64 / STEPS as f64;
        let b = lo + span * (k + 1) as f64 / STEPS as f64;
        Rectangle::new(
            [(0.0, a), (1.0, b)],
            map.scaled((a + b) / 2.0, lo, hi).filled(),
        )
    }))?;
    Ok(())
}

/// Colour-bar labels: enough decimals for the bar's span.
fn tick_bar(v: f64, span: f64) -> String {
    let v = if v.abs() < 1e-12 { 0.0 } else { v };
    let decimals = (-(span / 5.0).log10().floor()).clamp(0.0, 6.0) as usize;
    format!("{v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::super::tests::{decode, pixel};
    use super::*;
    use ndarray::Array2;

    fn grid(n: usize) -> Vec<f64> {
        (0..n).map(|i| (i as f64 - 8.0) * 0.3e-3).collect()
    }

    #[test]
    fn helpers() {
        assert_eq!(edges_mm(&[1e-3, 2e-3, 4e-3]), vec![0.5, 1.5, 3.0, 5.0]);
        assert_eq!(edges_mm(&[1e-3]), vec![0.5, 1.5]);
        assert_eq!(nice_ceiling(0.013), 0.02);
        assert_eq!(nice_ceiling(0.05), 0.05);
        assert_eq!(nice_ceiling(0.3), 0.5);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(tick(-0.0, 20.0), "0");
        assert_eq!(tick(4.5, 4.8), "4.5");
        assert_eq!(tick(0.12000000000000001, 0.15), "0.12");
        assert_eq!(tick_bar(0.015, 0.02), "0.015");
        assert_eq!(tick_bar(-20.0, 40.0), "-20");
        assert_eq!(
            wrap("a frame of non-finite samples was refused", 16, 2),
            vec!["a frame of".to_string(), "non-finite".to_string()]
        );
        assert_eq!(one_line("a\nb", 10), "a b");
    }

    /// A done frame: four tiles of the computed size; the reconstruction tile shows the
    /// image's colours (viridis of 0.25 and 0.75 in its two halves), the uncertainty
    /// tile inferno, the B-mode grey.
    #[test]
    fn done_frame_panel() {
        let n = 16;
        let (x, z) = (
            grid(n),
            (0..n).map(|i| 3e-3 + i as f64 * 0.3e-3).collect::<Vec<_>>(),
        );
        let mean = Array2::from_shape_fn((n, n), |(_, j)| if j < n / 2 { 0.25f32 } else { 0.75 });
        let std = Array2::from_elem((n, n), 0.01f32);
        let env = Array2::from_shape_fn((n, n), |(i, _)| if i < n / 2 { 1.0f32 } else { 0.01 });
        let png = panel_png(&PanelInput {
            grid_x: &x,
            grid_z: &z,
            envelope: Some(env.view()),
            reconstruction: Reconstruction::Estimate(Estimate {
                mean: mean.view(),
                std: std.view(),
                aeration: 0.72,
                ci: [0.71, 0.73],
                category: 1,
                poor_fit: None,
            }),
            truth: Some(mean.view()),
            label: FrameLabel {
                stream: None,
                frame: 3,
                time_s: 0.3,
            },
        })
        .unwrap();
        let (w, h, rgb) = decode(&png);
        let tile_w = 2 * MARGIN + Y_LABELS + PLOT_W + COLORBAR_W;
        assert_eq!(w, 4 * tile_w);
        assert_eq!(w, max_size().0);
        assert!(png.len() as u64 <= super::super::max_png_bytes(w, h));
        // A square grid: the plot is as high as wide.
        assert_eq!(h, CAPTION_H + TITLE_H + 2 * MARGIN + PLOT_W + X_LABELS);
        // Plot areas start after the margin and the y labels, below caption and title.
        let plot_x = MARGIN + Y_LABELS;
        let plot_y = CAPTION_H + TITLE_H + MARGIN;
        let at = |tile: u32, fx: f64, fy: f64| {
            pixel(
                &rgb,
                w,
                tile * tile_w + plot_x + (fx * PLOT_W as f64) as u32,
                plot_y + (fy * PLOT_W as f64) as u32,
            )
        };
        let c = |c: RGBColor| [c.0, c.1, c.2];
        // B-mode: the top half at 0 dB (white), the bottom half at -40 dB (black).
        assert_eq!(at(0, 0.5, 0.25), [255, 255, 255]);
        assert_eq!(at(0, 0.5, 0.75), [0, 0, 0]);
        assert_eq!(at(1, 0.25, 0.5), c(Colormap::Viridis.color(0.25)));
        assert_eq!(at(1, 0.75, 0.5), c(Colormap::Viridis.color(0.75)));
        // std 0.01 on a bar to 0.01: the top of inferno.
        assert_eq!(at(2, 0.5, 0.5), c(Colormap::Inferno.color(1.0)));
        assert_eq!(at(3, 0.75, 0.5), c(Colormap::Viridis.color(0.75)));
    }

    /// A failed frame shows no image where the reconstruction would be: the tile is the
    /// light grey FAILED box with red text, not NaN pixels; mismatched shapes are refused.
    #[test]
    fn failed_frame_and_bad_input() {
        let n = 16;
        let (x, z) = (
            grid(n),
            (0..n).map(|i| 3e-3 + i as f64 * 0.3e-3).collect::<Vec<_>>(),
        );
        let env = Array2::from_elem((n, n), 1.0f32);
        let png = panel_png(&PanelInput {
            grid_x: &x,
            grid_z: &z,
            envelope: Some(env.view()),
            reconstruction: Reconstruction::Failed("non-finite samples in the frame"),
            truth: None,
            label: FrameLabel {
                stream: Some(2),
                frame: 41,
                time_s: 1.5,
            },
        })
        .unwrap();
        let (w, _, rgb) = decode(&png);
        let tile_w = 2 * MARGIN + Y_LABELS + PLOT_W + COLORBAR_W;
        assert_eq!(w, 3 * tile_w);
        let plot_y = CAPTION_H + TITLE_H + MARGIN;
        for tile in [1, 2] {
            let x0 = tile * tile_w + MARGIN + Y_LABELS;
            assert_eq!(pixel(&rgb, w, x0 + 5, plot_y + PLOT_W - 5), [238, 238, 238]);
            let red = (plot_y..plot_y + PLOT_W)
                .flat_map(|y| (x0..x0 + PLOT_W).map(move |x| (x, y)))
                .filter(|&(x, y)| {
                    let [r, g, b] = pixel(&rgb, w, x, y);
                    r > 150 && g < 100 && b < 100
                })
                .count();
            assert!(red > 100, "tile {tile}: {red} red pixels of FAILED");
        }
        let short = Array2::from_elem((n - 1, n), 1.0f32);
        let err = panel_png(&PanelInput {
            grid_x: &x,
            grid_z: &z,
            envelope: Some(short.view()),
            reconstruction: Reconstruction::None,
            truth: None,
            label: FrameLabel {
                stream: None,
                frame: 0,
                time_s: 0.0,
            },
        })
        .unwrap_err();
        assert!(err.to_string().contains("(15, 16)"), "{err}");
    }

    /// A poor fit is marked in the caption: the headline turns amber, and the note says
    /// the misfit and what the estimate rests on; a good fit has no amber at all.
    #[test]
    fn poor_fit_is_marked_in_the_caption() {
        let n = 16;
        let (x, z) = (
            grid(n),
            (0..n).map(|i| 3e-3 + i as f64 * 0.3e-3).collect::<Vec<_>>(),
        );
        let mean = Array2::from_elem((n, n), 0.5f32);
        let std = Array2::from_elem((n, n), 0.01f32);
        let amber_in_caption = |poor_fit: Option<PoorFit>| {
            let png = panel_png(&PanelInput {
                grid_x: &x,
                grid_z: &z,
                envelope: None,
                reconstruction: Reconstruction::Estimate(Estimate {
                    mean: mean.view(),
                    std: std.view(),
                    aeration: 0.5,
                    ci: [0.2, 0.8],
                    category: 0,
                    poor_fit,
                }),
                truth: None,
                label: FrameLabel {
                    stream: None,
                    frame: 1,
                    time_s: 0.1,
                },
            })
            .unwrap();
            let (w, _, rgb) = decode(&png);
            (0..CAPTION_H)
                .flat_map(|y| (0..w).map(move |x| (x, y)))
                .filter(|&(x, y)| {
                    let [r, g, b] = pixel(&rgb, w, x, y);
                    r > 140 && (60..130).contains(&g) && b < 40
                })
                .count()
        };
        assert_eq!(amber_in_caption(None), 0);
        let poor = PoorFit {
            misfit: 9.84,
            echo: false,
        };
        assert!(amber_in_caption(Some(poor)) > 100);
        assert_eq!(
            poor.note(),
            "POOR FIT of the RF (misfit 9.8): interval widened by the model error"
        );
        let echo = PoorFit { echo: true, ..poor };
        assert!(echo
            .note()
            .ends_with("estimate from the calibrated echo power"));
    }
}
