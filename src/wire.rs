//! Conversions between pleura's types and the wire protocol ([`crate::protocol`]):
//! [`Scan`] <-> scan-message fields, frame payloads <-> RF arrays, and a stage's
//! [`Output`] (or the reason a frame failed) -> result-message fields. Nothing else in
//! pleura builds protocol fields.

use ndarray::{Array2, Array4};

use crate::grid::Grid;
use crate::pipeline::Output;
use crate::posterior::frame::{DataTerm, FrameOutcome, StartKind};
use crate::protocol::{Dtype, Field, FieldData};
use crate::recording::Scan;

/// A scan message whose fields do not make a valid [`Scan`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    #[error("scan field {name} is missing")]
    Missing { name: &'static str },
    #[error("scan field {name} is {dtype}, expected float64")]
    NotF64 { name: &'static str, dtype: String },
    #[error("scan field {name} has shape {found:?}, expected {expected}")]
    Shape {
        name: &'static str,
        found: Vec<u32>,
        expected: String,
    },
    #[error("scan field {name} = {value} is invalid: {why}")]
    Value {
        name: &'static str,
        value: f64,
        why: &'static str,
    },
    #[error("scan parameters are invalid: {0}")]
    Invalid(String),
    #[error("frame payload of {len} bytes does not hold shape {shape:?} of {dtype}")]
    Payload {
        len: usize,
        shape: [usize; 4],
        dtype: &'static str,
    },
}

fn field<'a>(fields: &'a [Field], name: &'static str) -> Option<&'a Field> {
    fields.iter().find(|f| f.name == name)
}

/// A float64 field's shape and values.
type Values<'a> = (&'a [u32], &'a [f64]);

fn values<'a>(fields: &'a [Field], name: &'static str) -> Result<Option<Values<'a>>, WireError> {
    match field(fields, name) {
        None => Ok(None),
        Some(f) => match f.as_f64() {
            Some(v) => Ok(Some((&f.shape, v))),
            None => Err(WireError::NotF64 {
                name,
                dtype: f.data.dtype().name().to_string(),
            }),
        },
    }
}

fn required<'a>(
    fields: &'a [Field],
    name: &'static str,
) -> Result<(&'a [u32], &'a [f64]), WireError> {
    values(fields, name)?.ok_or(WireError::Missing { name })
}

fn scalar(fields: &[Field], name: &'static str) -> Result<Option<f64>, WireError> {
    match values(fields, name)? {
        None => Ok(None),
        Some((shape, v)) if shape.is_empty() || shape == [1] => Ok(Some(v[0])),
        Some((shape, _)) => Err(WireError::Shape {
            name,
            found: shape.to_vec(),
            expected: "a scalar".into(),
        }),
    }
}

fn positive(fields: &[Field], name: &'static str) -> Result<f64, WireError> {
    let v = scalar(fields, name)?.ok_or(WireError::Missing { name })?;
    if !(v.is_finite() && v > 0.0) {
        return Err(WireError::Value {
            name,
            value: v,
            why: "must be finite and positive",
        });
    }
    Ok(v)
}

fn count(fields: &[Field], name: &'static str) -> Result<usize, WireError> {
    let v = positive(fields, name)?;
    if v.fract() != 0.0 || v > u32::MAX as f64 {
        return Err(WireError::Value {
            name,
            value: v,
            why: "must be a whole number",
        });
    }
    Ok(v as usize)
}

fn vector(fields: &[Field], name: &'static str, n: usize) -> Result<Vec<f64>, WireError> {
    let (shape, v) = required(fields, name)?;
    if shape != [n as u32] {
        return Err(WireError::Shape {
            name,
            found: shape.to_vec(),
            expected: format!("[{n}]"),
        });
    }
    Ok(v.to_vec())
}

fn matrix(
    fields: &[Field],
    name: &'static str,
    rows: Option<usize>,
    cols: usize,
) -> Result<Array2<f64>, WireError> {
    let (shape, v) = required(fields, name)?;
    matrix_from(name, shape, v, rows, cols)
}

fn matrix_from(
    name: &'static str,
    shape: &[u32],
    v: &[f64],
    rows: Option<usize>,
    cols: usize,
) -> Result<Array2<f64>, WireError> {
    let ok = shape.len() == 2
        && shape[1] as usize == cols
        && rows.is_none_or(|r| shape[0] as usize == r);
    let bad = || WireError::Shape {
        name,
        found: shape.to_vec(),
        expected: match rows {
            Some(r) => format!("[{r}, {cols}]"),
            None => format!("[_, {cols}]"),
        },
    };
    if !ok {
        return Err(bad());
    }
    Array2::from_shape_vec((shape[0] as usize, cols), v.to_vec()).map_err(|_| bad())
}

/// The scan fields of a scan message (names and shapes as in zea `scan/`, float64).
pub fn scan_to_fields(scan: &Scan) -> Vec<Field> {
    let n_tx = scan.n_tx() as u32;
    let n_el = scan.n_el() as u32;
    let mat = |name: &str, a: &Array2<f64>| {
        Field::f64(
            name,
            vec![a.nrows() as u32, a.ncols() as u32],
            a.iter().copied().collect(),
        )
    };
    let mut fields = vec![
        mat("probe_geometry", &scan.probe_geometry),
        Field::scalar("sampling_frequency", scan.sampling_frequency),
        Field::scalar("center_frequency", scan.center_frequency),
        Field::scalar("demodulation_frequency", scan.demodulation_frequency),
        Field::scalar("sound_speed", scan.sound_speed),
        Field::scalar("n_ax", scan.n_ax as f64),
        Field::scalar("n_ch", scan.n_ch as f64),
        Field::f64("initial_times", vec![n_tx], scan.initial_times.clone()),
        mat("t0_delays", &scan.t0_delays),
        mat("tx_apodizations", &scan.tx_apodizations),
        Field::f64("polar_angles", vec![n_tx], scan.polar_angles.clone()),
        Field::f64("azimuth_angles", vec![n_tx], scan.azimuth_angles.clone()),
        Field::f64("focus_distances", vec![n_tx], scan.focus_distances.clone()),
        mat("transmit_origins", &scan.transmit_origins),
    ];
    debug_assert_eq!(scan.t0_delays.ncols() as u32, n_el);
    if let Some(w) = scan.element_width {
        fields.push(Field::scalar("element_width", w));
    }
    if let Some(t) = &scan.time_to_next_transmit {
        fields.push(mat("time_to_next_transmit", t));
    }
    if let Some(b) = scan.fractional_bandwidth {
        fields.push(Field::scalar("fractional_bandwidth", b));
    }
    if let Some(tgc) = &scan.tgc_gain_curve {
        fields.push(Field::f64(
            "tgc_gain_curve",
            vec![scan.n_ax as u32],
            tgc.clone(),
        ));
    }
    fields
}

/// Builds a [`Scan`] from scan-message fields, checking every shape against n_tx and n_el.
/// Unknown fields are ignored (peers may send more of zea's fields).
pub fn scan_from_fields(fields: &[Field]) -> Result<Scan, WireError> {
    let (geo_shape, _) = required(fields, "probe_geometry")?;
    let n_el = match geo_shape {
        [n, 3] if *n > 0 => *n as usize,
        _ => {
            return Err(WireError::Shape {
                name: "probe_geometry",
                found: geo_shape.to_vec(),
                expected: "[n_el > 0, 3]".into(),
            })
        }
    };
    let probe_geometry = matrix(fields, "probe_geometry", Some(n_el), 3)?;
    let (it_shape, _) = required(fields, "initial_times")?;
    let n_tx = match it_shape {
        [n] if *n > 0 => *n as usize,
        _ => {
            return Err(WireError::Shape {
                name: "initial_times",
                found: it_shape.to_vec(),
                expected: "[n_tx > 0]".into(),
            })
        }
    };
    let n_ch = count(fields, "n_ch")?;
    if n_ch > 2 {
        return Err(WireError::Value {
            name: "n_ch",
            value: n_ch as f64,
            why: "must be 1 (RF) or 2 (I/Q)",
        });
    }
    let time_to_next_transmit = match values(fields, "time_to_next_transmit")? {
        None => None,
        Some((shape, v)) => Some(matrix_from("time_to_next_transmit", shape, v, None, n_tx)?),
    };
    let n_ax = count(fields, "n_ax")?;
    let tgc_gain_curve = match values(fields, "tgc_gain_curve")? {
        None => None,
        Some(_) => Some(vector(fields, "tgc_gain_curve", n_ax)?),
    };
    let scan = Scan {
        probe_geometry,
        sampling_frequency: positive(fields, "sampling_frequency")?,
        center_frequency: positive(fields, "center_frequency")?,
        demodulation_frequency: scalar(fields, "demodulation_frequency")?.ok_or(
            WireError::Missing {
                name: "demodulation_frequency",
            },
        )?,
        sound_speed: positive(fields, "sound_speed")?,
        n_ax,
        n_ch,
        initial_times: vector(fields, "initial_times", n_tx)?,
        t0_delays: matrix(fields, "t0_delays", Some(n_tx), n_el)?,
        tx_apodizations: matrix(fields, "tx_apodizations", Some(n_tx), n_el)?,
        polar_angles: vector(fields, "polar_angles", n_tx)?,
        azimuth_angles: vector(fields, "azimuth_angles", n_tx)?,
        focus_distances: vector(fields, "focus_distances", n_tx)?,
        transmit_origins: matrix(fields, "transmit_origins", Some(n_tx), 3)?,
        element_width: scalar(fields, "element_width")?,
        time_to_next_transmit,
        fractional_bandwidth: scalar(fields, "fractional_bandwidth")?,
        tgc_gain_curve,
    };
    scan.validate()
        .map_err(|e| WireError::Invalid(e.to_string()))?;
    Ok(scan)
}

/// The frame shape (n_tx, n_ax, n_el, n_ch) a scan implies.
pub fn frame_shape(scan: &Scan) -> [usize; 4] {
    [scan.n_tx(), scan.n_ax, scan.n_el(), scan.n_ch]
}

/// Decodes a little-endian payload of `dtype` into an RF array of `shape` (C order).
/// Integer samples are converted to float32 unscaled, as the recording reader does.
pub fn payload_to_array(
    payload: &[u8],
    dtype: Dtype,
    shape: [usize; 4],
) -> Result<Array4<f32>, WireError> {
    let n: usize = shape.iter().product();
    let bad = || WireError::Payload {
        len: payload.len(),
        shape,
        dtype: dtype.name(),
    };
    if n.checked_mul(dtype.size()) != Some(payload.len()) {
        return Err(bad());
    }
    let values: Vec<f32> = match dtype {
        Dtype::I16 => payload
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)
            .collect(),
        Dtype::F32 => payload
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => payload
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        Dtype::U8 => payload.iter().map(|&b| b as f32).collect(),
    };
    Array4::from_shape_vec(shape, values).map_err(|_| bad())
}

/// The float32 little-endian payload of an RF array (C order).
pub fn array_to_payload(data: &Array4<f32>) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 4);
    for v in data.iter() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The result fields of a stage's output (docs/protocol.md, "Result message").
///
/// - [`Output::Header`] gives none.
/// - [`Output::Das`] gives `envelope` (float32, nz x nx), `bmode` (uint8, nz x nx), `grid_x`,
///   `grid_z` (float64, m).
/// - [`Output::Posterior`] gives `mean`, `std` (float32, nz x nx), `aeration` (float64
///   scalar), `aeration_ci` (float64 \[2\]), `lung_fraction`, `category` (uint8 scalar),
///   `das` (float32, nz x nx, in [0, 1]), `residual`, `noise_sigma`, `misfit`,
///   `model_error`, `nfe` (float64 scalars), `poor_fit`, `data_term` (uint8 scalars: 0
///   rf, 1 echo), `start` (uint8 scalar: 0 cold, 1 warm, 2 scene change), `grid_x`,
///   `grid_z`. A frame whose sampling failed: [`failure_fields`], then `das`, `grid_x`,
///   `grid_z`.
pub fn result_fields(output: &Output) -> Vec<Field> {
    match output {
        Output::Header => Vec::new(),
        Output::Das(d) => {
            let mut fields = vec![
                image_f32("envelope", &d.envelope),
                Field {
                    name: "bmode".into(),
                    shape: image_shape(d.bmode.dim()),
                    data: FieldData::U8(d.bmode.iter().copied().collect()),
                },
            ];
            fields.extend(grid_fields(&d.grid));
            fields
        }
        Output::Posterior(p) => {
            let mut fields = match &p.outcome {
                FrameOutcome::Done(e) => vec![
                    image_f32("mean", &e.mean),
                    image_f32("std", &e.std),
                    Field::scalar("aeration", e.aeration),
                    Field::f64("aeration_ci", vec![2], e.aeration_ci.to_vec()),
                    Field::scalar("lung_fraction", e.lung_fraction),
                    u8_scalar("category", e.category),
                    image_f32("das", &p.das),
                    Field::scalar("residual", e.residual),
                    Field::scalar("noise_sigma", e.noise_sigma),
                    Field::scalar("misfit", e.misfit),
                    Field::scalar("model_error", e.model_error),
                    u8_scalar("poor_fit", e.poor_fit as u8),
                    u8_scalar(
                        "data_term",
                        match e.data_term {
                            DataTerm::Rf => 0,
                            DataTerm::Echo => 1,
                        },
                    ),
                    Field::scalar("nfe", e.nfe as f64),
                    u8_scalar(
                        "start",
                        match e.start {
                            StartKind::Cold => 0,
                            StartKind::Warm => 1,
                            StartKind::SceneChange => 2,
                        },
                    ),
                ],
                FrameOutcome::Failed { reason, .. } => {
                    let mut f = failure_fields(reason);
                    f.push(image_f32("das", &p.das));
                    f
                }
            };
            fields.extend(grid_fields(&p.grid));
            fields
        }
    }
}

/// The fields of a result for a frame the stage failed on: `failed` (uint8 scalar, 1) and
/// `failed_reason` (uint8 \[n\], the reason as UTF-8 text).
pub fn failure_fields(reason: &str) -> Vec<Field> {
    vec![
        u8_scalar("failed", 1),
        Field {
            name: "failed_reason".into(),
            shape: vec![reason.len() as u32],
            data: FieldData::U8(reason.as_bytes().to_vec()),
        },
    ]
}

/// Why the frame of a result failed (its `failed_reason`), when it did.
pub fn result_failure(fields: &[Field]) -> Option<String> {
    match &field(fields, "failed_reason")?.data {
        FieldData::U8(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => None,
    }
}

fn image_shape((nz, nx): (usize, usize)) -> Vec<u32> {
    vec![nz as u32, nx as u32]
}

fn image_f32(name: &str, image: &Array2<f32>) -> Field {
    Field {
        name: name.into(),
        shape: image_shape(image.dim()),
        data: FieldData::F32(image.iter().copied().collect()),
    }
}

fn u8_scalar(name: &str, value: u8) -> Field {
    Field {
        name: name.into(),
        shape: Vec::new(),
        data: FieldData::U8(vec![value]),
    }
}

fn grid_fields(grid: &Grid) -> [Field; 2] {
    [
        Field::f64("grid_x", vec![grid.nx() as u32], grid.x.clone()),
        Field::f64("grid_z", vec![grid.nz() as u32], grid.z.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tiny_scan;

    #[test]
    fn scan_round_trips_through_fields() {
        let mut scan = tiny_scan();
        let back = scan_from_fields(&scan_to_fields(&scan)).unwrap();
        assert_eq!(back, scan);
        assert_eq!(frame_shape(&back), [2, 16, 4, 1]);
        scan.tgc_gain_curve = Some((0..16).map(|a| 1.1f64.powi(a)).collect());
        let back = scan_from_fields(&scan_to_fields(&scan)).unwrap();
        assert_eq!(back.tgc_gain_curve, scan.tgc_gain_curve);
    }

    #[test]
    fn inconsistent_scans_name_the_field() {
        let mut fields = scan_to_fields(&tiny_scan());
        fields.retain(|f| f.name != "sound_speed");
        assert_eq!(
            scan_from_fields(&fields).unwrap_err(),
            WireError::Missing {
                name: "sound_speed"
            }
        );
        let mut fields = scan_to_fields(&tiny_scan());
        for f in &mut fields {
            if f.name == "t0_delays" {
                f.shape = vec![4, 2];
            }
        }
        let err = scan_from_fields(&fields).unwrap_err().to_string();
        assert!(err.contains("t0_delays") && err.contains("[2, 4]"), "{err}");
        let mut fields = scan_to_fields(&tiny_scan());
        fields.push(Field::f64("tgc_gain_curve", vec![15], vec![1.0; 15]));
        let err = scan_from_fields(&fields).unwrap_err().to_string();
        assert!(
            err.contains("tgc_gain_curve") && err.contains("[15]") && err.contains("[16]"),
            "{err}"
        );
        let mut fields = scan_to_fields(&tiny_scan());
        fields.push(Field::scalar("n_ax", 2.5));
        fields.retain(|f| !(f.name == "n_ax" && f.as_f64() == Some(&[16.0])));
        assert!(scan_from_fields(&fields)
            .unwrap_err()
            .to_string()
            .contains("n_ax"));
    }

    #[test]
    fn payload_conversion() {
        let payload: Vec<u8> = [1i16, -2, 300, -32768]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let a = payload_to_array(&payload, Dtype::I16, [1, 2, 2, 1]).unwrap();
        assert_eq!(a[[0, 1, 1, 0]], -32768.0);
        assert_eq!(a[[0, 0, 1, 0]], -2.0);
        let f = array_to_payload(&a);
        assert_eq!(payload_to_array(&f, Dtype::F32, [1, 2, 2, 1]).unwrap(), a);
        assert!(payload_to_array(&payload, Dtype::I16, [1, 2, 3, 1]).is_err());
    }
}
