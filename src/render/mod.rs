//! Figures a clinician can read, as PNG bytes: one frame's panel ([`panel`]: B-mode,
//! reconstruction, uncertainty and ground truth with titles, axes in mm, colour bars and a
//! caption with the published aeration) and the aeration trend of a sequence ([`trend`]).
//!
//! Drawn with `plotters` on an in-memory RGB bitmap and encoded with `png`; text uses
//! DejaVu Sans, compiled into the binary (`assets/fonts/`), so rendering never depends
//! on the fonts of the machine. `pleura replay --png` and the daemon's live view
//! (`crate::daemon::live`) both render through here.
//! Plain grey images (B-mode frames, phantoms, sample grids) are encoded by [`gray_png`].

pub mod colormap;
pub mod panel;
pub mod trend;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::drawing::DrawingAreaErrorKind;

pub use panel::{panel_png, Estimate, FrameLabel, PanelInput, PoorFit, Reconstruction};
pub use trend::{trend_png, TrendPoint, TrendValue};

/// The font every figure uses (DejaVu Sans; licence in `assets/fonts/LICENSE-DejaVu`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
/// The family name figures ask for.
pub(crate) const FAMILY: &str = "sans-serif";

/// Errors rendering a figure.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the embedded font cannot be loaded")]
    Font,
    #[error("{0}")]
    Input(String),
    #[error("drawing failed: {0}")]
    Draw(String),
    #[error("PNG encoding failed: {0}")]
    Encode(#[from] png::EncodingError),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for RenderError {
    fn from(e: DrawingAreaErrorKind<E>) -> Self {
        RenderError::Draw(e.to_string())
    }
}

/// Registers the embedded font with plotters, once per process.
fn font() -> Result<(), RenderError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FAMILY, plotters::style::FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(RenderError::Font)
    }
}

/// Draws on a white `width` x `height` RGB canvas with `draw` and encodes it as PNG.
fn draw_png(
    width: u32,
    height: u32,
    draw: impl FnOnce(
        &plotters::drawing::DrawingArea<
            plotters::backend::BitMapBackend<'_>,
            plotters::coord::Shift,
        >,
    ) -> Result<(), RenderError>,
) -> Result<Vec<u8>, RenderError> {
    use plotters::prelude::*;
    font()?;
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        draw(&root)?;
        root.present()?;
    }
    Ok(encode(width, height, png::ColorType::Rgb, &rgb)?)
}

/// An 8-bit grey image, `width` x `height` pixels row by row, as PNG bytes: the one
/// encoder of plain grey images (B-mode frames, phantoms, sample grids).
pub fn gray_png(width: u32, height: u32, pixels: &[u8]) -> Result<Vec<u8>, png::EncodingError> {
    encode(width, height, png::ColorType::Grayscale, pixels)
}

/// 8-bit pixels of `color`, row by row, as PNG bytes.
fn encode(
    width: u32,
    height: u32,
    color: png::ColorType,
    pixels: &[u8],
) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok(out)
}

/// An upper bound on the PNG bytes of a `width` x `height` figure: the raw RGB rows with
/// their filter bytes, however badly they compress, plus the encoder's framing.
pub fn max_png_bytes(width: u32, height: u32) -> u64 {
    let raw = (u64::from(width) * 3 + 1) * u64::from(height);
    raw + raw / 1000 + 4096
}

/// Writes PNG bytes to `path` (replaced).
pub fn write_png(path: &Path, png: &[u8]) -> Result<(), RenderError> {
    std::fs::write(path, png).map_err(|source| RenderError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Tick labels with as many decimals as the axis span needs.
fn tick(v: f64, span: f64) -> String {
    let v = if v.abs() < 1e-9 { 0.0 } else { v };
    if span >= 10.0 {
        format!("{v:.0}")
    } else if span >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    /// Decodes an 8-bit PNG: its colour type, width, height and pixel bytes.
    pub fn decode_any(png: &[u8]) -> (png::ColorType, u32, u32, Vec<u8>) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .expect("a PNG");
        let mut buf = vec![0; reader.output_buffer_size().expect("size")];
        let info = reader.next_frame(&mut buf).expect("a frame");
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        buf.truncate(info.buffer_size());
        (info.color_type, info.width, info.height, buf)
    }

    /// Decodes a PNG: (width, height, RGB bytes).
    pub fn decode(png: &[u8]) -> (u32, u32, Vec<u8>) {
        let (color, width, height, rgb) = decode_any(png);
        assert_eq!(color, png::ColorType::Rgb);
        (width, height, rgb)
    }

    /// The colour of pixel (x, y) of a decoded RGB image of width `w`.
    pub fn pixel(rgb: &[u8], w: u32, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * w as usize + x as usize) * 3;
        [rgb[i], rgb[i + 1], rgb[i + 2]]
    }

    #[test]
    fn gray_png_round_trips() {
        let pixels: Vec<u8> = (0..12).map(|i| i * 20).collect();
        let png = super::gray_png(4, 3, &pixels).expect("encode");
        assert_eq!(
            decode_any(&png),
            (png::ColorType::Grayscale, 4, 3, pixels.clone())
        );
        assert!(super::gray_png(4, 3, &pixels[..11]).is_err());
    }
}
