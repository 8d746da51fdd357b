//! Typed scan parameters: the `scan/` group of a zea recording.
//!
//! Field names and units follow the zea HDF5 layout (SI units; x along the array with 0 at
//! its centre, z depth). Per-transmit arrays are indexed by transmit, per-element arrays by
//! element in the order of `probe_geometry`.

use std::borrow::Cow;

use hdf5::Group;
use ndarray::{Array2, Array4, Axis};

use super::error::{num, RecordingError};
use super::h5;

/// The kind of wavefront a transmit sends, derived from its focus distance
/// (zea convention: infinite or zero focus = plane wave, positive = focused at that
/// distance from the transmit origin, negative = diverging from a virtual source behind it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TransmitKind {
    Plane,
    Focused,
    Diverging,
}

/// Acquisition parameters of one scan (sequence of transmits), as stored under `scan/`.
#[derive(Clone, Debug, PartialEq)]
pub struct Scan {
    /// Element positions (x, y, z) in metres, shape (n_el, 3).
    pub probe_geometry: Array2<f64>,
    /// RF sampling frequency, Hz.
    pub sampling_frequency: f64,
    /// Transducer centre frequency, Hz.
    pub center_frequency: f64,
    /// Frequency the data were (or are to be) demodulated at, Hz.
    pub demodulation_frequency: f64,
    /// Speed of sound assumed by the acquisition, m/s.
    pub sound_speed: f64,
    /// Number of axial samples per channel.
    pub n_ax: usize,
    /// Number of channels per sample: 1 for RF, 2 for I/Q.
    pub n_ch: usize,
    /// Time from the transmit's t=0 to the first recorded sample, per transmit, s.
    pub initial_times: Vec<f64>,
    /// Firing delay of each element, per transmit, s; shape (n_tx, n_el).
    pub t0_delays: Array2<f64>,
    /// Transmit apodization of each element, per transmit; shape (n_tx, n_el).
    pub tx_apodizations: Array2<f64>,
    /// Steering angle of each transmit in the x-z plane, rad.
    pub polar_angles: Vec<f64>,
    /// Out-of-plane steering angle of each transmit, rad (0 for linear arrays).
    pub azimuth_angles: Vec<f64>,
    /// Focus distance of each transmit, m (see [`TransmitKind`]).
    pub focus_distances: Vec<f64>,
    /// Origin of each transmit's wavefront (x, y, z), m; shape (n_tx, 3).
    pub transmit_origins: Array2<f64>,
    /// Element width, m, when known.
    pub element_width: Option<f64>,
    /// Time from each transmit to the next, s; shape (n_frames, n_tx), when known.
    pub time_to_next_transmit: Option<Array2<f64>>,
    /// Fractional -6 dB bandwidth of the probe (0.15 for 15 %), when known
    /// (stored as the `scan` group attribute `fractional_bandwidth_percent`).
    pub fractional_bandwidth: Option<f64>,
    /// The time-gain compensation the scanner applied to every recorded sample, a
    /// linear factor per axial sample (n_ax), when the file or the scanner gives it
    /// (zea's `scan/tgc_gain_curve`: "divide by this curve to undo the TGC"). The
    /// posterior stage and `pleura calibrate` divide it out ([`Scan::undo_tgc`]): the
    /// echo the operator models is the one before the scanner's gain.
    pub tgc_gain_curve: Option<Vec<f64>>,
}

impl Scan {
    /// Number of elements.
    pub fn n_el(&self) -> usize {
        self.probe_geometry.nrows()
    }

    /// Number of transmits per frame.
    pub fn n_tx(&self) -> usize {
        self.initial_times.len()
    }

    /// Wavelength at the centre frequency, m.
    pub fn wavelength(&self) -> f64 {
        self.sound_speed / self.center_frequency
    }

    /// Mean distance between neighbouring elements along x, m (elements in any order).
    pub fn pitch(&self) -> f64 {
        let n = self.n_el();
        if n < 2 {
            return 0.0;
        }
        let xs = self.probe_geometry.column(0);
        let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (hi - lo) / (n - 1) as f64
    }

    /// The wavefront kind of transmit `tx`.
    pub fn transmit_kind(&self, tx: usize) -> TransmitKind {
        let f = self.focus_distances[tx];
        if !f.is_finite() || f == 0.0 {
            TransmitKind::Plane
        } else if f > 0.0 {
            TransmitKind::Focused
        } else {
            TransmitKind::Diverging
        }
    }
}

/// Relative tolerance of the geometry checks, as a fraction of the aperture (line checks)
/// or of the mean pitch (distinct elements).
const GEOMETRY_TOLERANCE: f64 = 1e-3;

fn finite_positive(field: &str, v: f64) -> Result<(), RecordingError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(RecordingError::value(
            field,
            num(v),
            "must be finite and positive",
        ))
    }
}

fn all_finite<'a>(
    field: &str,
    values: impl IntoIterator<Item = &'a f64>,
) -> Result<(), RecordingError> {
    match values.into_iter().enumerate().find(|(_, v)| !v.is_finite()) {
        None => Ok(()),
        Some((i, v)) => Err(RecordingError::value(
            format!("{field}[{i}] (flat index)"),
            num(*v),
            "must be finite",
        )),
    }
}

fn check_shape2(
    field: &str,
    a: &Array2<f64>,
    rows: usize,
    cols: usize,
    expected: &str,
) -> Result<(), RecordingError> {
    if a.dim() == (rows, cols) {
        Ok(())
    } else {
        Err(RecordingError::shape(field, a.shape().to_vec(), expected))
    }
}

fn check_len(field: &str, v: &[f64], n: usize) -> Result<(), RecordingError> {
    if v.len() == n {
        Ok(())
    } else {
        Err(RecordingError::shape(
            field,
            vec![v.len()],
            format!("[n_tx = {n}]"),
        ))
    }
}

/// The optional `tgc_gain_curve` of the scan group `scan` at `path`, of length `n_ax`.
pub(crate) fn tgc_gain_curve(
    scan: &Group,
    path: &str,
    n_ax: usize,
) -> Result<Option<Vec<f64>>, RecordingError> {
    let field = format!("{path}/tgc_gain_curve");
    h5::dataset_opt(scan, "tgc_gain_curve", &field)?
        .map(|_| h5::vec_f64(scan, "tgc_gain_curve", &field, n_ax))
        .transpose()
}

impl Scan {
    /// Checks that the parameters are physically meaningful and mutually consistent:
    /// frequencies and sound speed finite and positive, every per-transmit and per-element
    /// array sized (n_tx, n_el), n_ch 1 or 2, and the elements a line of distinct positions
    /// along x (y and z constant, x distinct, in any order).
    pub fn validate(&self) -> Result<(), RecordingError> {
        finite_positive("scan/sampling_frequency", self.sampling_frequency)?;
        finite_positive("scan/center_frequency", self.center_frequency)?;
        finite_positive("scan/sound_speed", self.sound_speed)?;
        if !(self.demodulation_frequency.is_finite() && self.demodulation_frequency >= 0.0) {
            return Err(RecordingError::value(
                "scan/demodulation_frequency",
                num(self.demodulation_frequency),
                "must be finite and not negative",
            ));
        }
        if let Some(w) = self.element_width {
            finite_positive("scan/element_width", w)?;
        }
        if let Some(b) = self.fractional_bandwidth {
            finite_positive("scan/fractional_bandwidth_percent", b * 100.0)?;
        }
        if self.n_ax == 0 {
            return Err(RecordingError::value("scan/n_ax", 0, "must be positive"));
        }
        if let Some(tgc) = &self.tgc_gain_curve {
            if tgc.len() != self.n_ax {
                return Err(RecordingError::shape(
                    "scan/tgc_gain_curve",
                    vec![tgc.len()],
                    format!("[n_ax = {}]", self.n_ax),
                ));
            }
            if let Some((i, v)) = tgc
                .iter()
                .enumerate()
                .find(|(_, v)| !(v.is_finite() && **v > 0.0))
            {
                return Err(RecordingError::value(
                    format!("scan/tgc_gain_curve[{i}]"),
                    num(*v),
                    "must be finite and positive (a gain the samples can be divided by)",
                ));
            }
        }
        if !(self.n_ch == 1 || self.n_ch == 2) {
            return Err(RecordingError::value(
                "scan/n_ch",
                self.n_ch,
                "must be 1 (RF) or 2 (I/Q)",
            ));
        }
        let n_tx = self.n_tx();
        if n_tx == 0 {
            return Err(RecordingError::value("scan/n_tx", 0, "must be positive"));
        }
        if self.probe_geometry.ncols() != 3 {
            return Err(RecordingError::shape(
                "scan/probe_geometry",
                self.probe_geometry.shape().to_vec(),
                "[n_el, 3]",
            ));
        }
        let n_el = self.n_el();
        let per_tx_el = format!("[n_tx = {n_tx}, n_el = {n_el}]");
        check_shape2("scan/t0_delays", &self.t0_delays, n_tx, n_el, &per_tx_el)?;
        check_shape2(
            "scan/tx_apodizations",
            &self.tx_apodizations,
            n_tx,
            n_el,
            &per_tx_el,
        )?;
        check_shape2(
            "scan/transmit_origins",
            &self.transmit_origins,
            n_tx,
            3,
            &format!("[n_tx = {n_tx}, 3]"),
        )?;
        check_len("scan/polar_angles", &self.polar_angles, n_tx)?;
        check_len("scan/azimuth_angles", &self.azimuth_angles, n_tx)?;
        check_len("scan/focus_distances", &self.focus_distances, n_tx)?;
        all_finite("scan/initial_times", &self.initial_times)?;
        all_finite("scan/t0_delays", &self.t0_delays)?;
        all_finite("scan/tx_apodizations", &self.tx_apodizations)?;
        all_finite("scan/transmit_origins", &self.transmit_origins)?;
        all_finite("scan/polar_angles", &self.polar_angles)?;
        all_finite("scan/azimuth_angles", &self.azimuth_angles)?;
        if let Some((i, f)) = self
            .focus_distances
            .iter()
            .enumerate()
            .find(|(_, f)| f.is_nan())
        {
            return Err(RecordingError::value(
                format!("scan/focus_distances[{i}]"),
                f,
                "must be a number (inf for a plane wave)",
            ));
        }
        if let Some(t) = &self.time_to_next_transmit {
            if t.ncols() != n_tx || t.nrows() == 0 {
                return Err(RecordingError::shape(
                    "scan/time_to_next_transmit",
                    t.shape().to_vec(),
                    format!("[n_frames, n_tx = {n_tx}]"),
                ));
            }
            if let Some((i, v)) = t
                .iter()
                .enumerate()
                .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
            {
                return Err(RecordingError::value(
                    format!("scan/time_to_next_transmit[{}, {}]", i / n_tx, i % n_tx),
                    num(*v),
                    "must be finite and not negative",
                ));
            }
        }
        self.validate_geometry()
    }

    fn validate_geometry(&self) -> Result<(), RecordingError> {
        const FIELD: &str = "scan/probe_geometry";
        let g = &self.probe_geometry;
        let n = g.nrows();
        if n < 2 {
            return Err(RecordingError::shape(
                FIELD,
                g.shape().to_vec(),
                "at least 2 elements",
            ));
        }
        for (i, row) in g.rows().into_iter().enumerate() {
            if row.iter().any(|v| !v.is_finite()) {
                return Err(RecordingError::value(
                    format!("{FIELD}[{i}]"),
                    format!("({}, {}, {})", num(row[0]), num(row[1]), num(row[2])),
                    "element position must be finite",
                ));
            }
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| g[[a, 0]].total_cmp(&g[[b, 0]]));
        let span = g[[order[n - 1], 0]] - g[[order[0], 0]];
        let line_tol = GEOMETRY_TOLERANCE * span;
        for i in 0..n {
            let dy = (g[[i, 1]] - g[[0, 1]]).abs();
            let dz = (g[[i, 2]] - g[[0, 2]]).abs();
            if span <= 0.0 || dy > line_tol || dz > line_tol {
                return Err(RecordingError::value(
                    format!("{FIELD}[{i}]"),
                    format!("({}, {}, {})", num(g[[i, 0]]), num(g[[i, 1]]), num(g[[i, 2]])),
                    format!(
                        "elements must lie on a line along x (same y and z as element 0 at ({}, {}, {}))",
                        num(g[[0, 0]]),
                        num(g[[0, 1]]),
                        num(g[[0, 2]])
                    ),
                ));
            }
        }
        let gap_tol = GEOMETRY_TOLERANCE * span / (n - 1) as f64;
        for w in order.windows(2) {
            let (a, b) = (w[0], w[1]);
            if g[[b, 0]] - g[[a, 0]] <= gap_tol {
                let (a, b) = (a.min(b), a.max(b));
                return Err(RecordingError::value(
                    format!("{FIELD}[{b}]"),
                    format!("x = {}", num(g[[b, 0]])),
                    format!("elements {a} and {b} are at the same x position"),
                ));
            }
        }
        Ok(())
    }

    /// Reads and validates the `scan` group of a recording.
    pub(crate) fn read(root: &Group) -> Result<Self, RecordingError> {
        let scan = h5::group(root, "scan", "scan")?;
        let n_el = h5::scalar_count(&scan, "n_el", "scan/n_el")?;
        let n_tx = h5::scalar_count(&scan, "n_tx", "scan/n_tx")?;
        let n_ax = h5::scalar_count(&scan, "n_ax", "scan/n_ax")?;
        let n_ch = h5::scalar_count(&scan, "n_ch", "scan/n_ch")?;
        if n_tx == 0 {
            return Err(RecordingError::value("scan/n_tx", 0, "must be positive"));
        }
        if n_el < 2 {
            return Err(RecordingError::value(
                "scan/n_el",
                n_el,
                "must be at least 2",
            ));
        }
        let per_tx_el = format!("[n_tx = {n_tx}, n_el = {n_el}]");
        let per_tx3 = format!("[n_tx = {n_tx}, 3]");
        let optional_scalar = |name: &str| -> Result<Option<f64>, RecordingError> {
            let field = format!("scan/{name}");
            h5::dataset_opt(&scan, name, &field)?
                .map(|ds| h5::read_scalar_f64(&ds, &field))
                .transpose()
        };
        let time_to_next_transmit =
            h5::dataset_opt(&scan, "time_to_next_transmit", "scan/time_to_next_transmit")?
                .map(|ds| {
                    h5::read_array2(
                        &ds,
                        "scan/time_to_next_transmit",
                        None,
                        n_tx,
                        &format!("[n_frames, n_tx = {n_tx}]"),
                    )
                })
                .transpose()?;
        let tgc_gain_curve = tgc_gain_curve(&scan, "scan", n_ax)?;
        let fractional_bandwidth = h5::f64_attr(
            &scan,
            "fractional_bandwidth_percent",
            "scan@fractional_bandwidth_percent",
        )?
        .map(|p| p / 100.0);
        let s = Scan {
            probe_geometry: h5::array2(
                &scan,
                "probe_geometry",
                "scan/probe_geometry",
                n_el,
                3,
                &format!("[n_el = {n_el}, 3]"),
            )?,
            sampling_frequency: h5::scalar_f64(
                &scan,
                "sampling_frequency",
                "scan/sampling_frequency",
            )?,
            center_frequency: h5::scalar_f64(&scan, "center_frequency", "scan/center_frequency")?,
            demodulation_frequency: h5::scalar_f64(
                &scan,
                "demodulation_frequency",
                "scan/demodulation_frequency",
            )?,
            sound_speed: h5::scalar_f64(&scan, "sound_speed", "scan/sound_speed")?,
            n_ax,
            n_ch,
            initial_times: h5::vec_f64(&scan, "initial_times", "scan/initial_times", n_tx)?,
            t0_delays: h5::array2(&scan, "t0_delays", "scan/t0_delays", n_tx, n_el, &per_tx_el)?,
            tx_apodizations: h5::array2(
                &scan,
                "tx_apodizations",
                "scan/tx_apodizations",
                n_tx,
                n_el,
                &per_tx_el,
            )?,
            polar_angles: h5::vec_f64(&scan, "polar_angles", "scan/polar_angles", n_tx)?,
            azimuth_angles: h5::vec_f64(&scan, "azimuth_angles", "scan/azimuth_angles", n_tx)?,
            focus_distances: h5::vec_f64(&scan, "focus_distances", "scan/focus_distances", n_tx)?,
            transmit_origins: h5::array2(
                &scan,
                "transmit_origins",
                "scan/transmit_origins",
                n_tx,
                3,
                &per_tx3,
            )?,
            element_width: optional_scalar("element_width")?,
            time_to_next_transmit,
            fractional_bandwidth,
            tgc_gain_curve,
        };
        s.validate()?;
        Ok(s)
    }

    /// Writes what both zea layouts keep in the scan group at `path` alike: the
    /// frequencies, the sound speed and the per-transmit arrays.
    pub(crate) fn write_transmits(&self, scan: &Group, path: &str) -> Result<(), RecordingError> {
        let field = |name: &str| format!("{path}/{name}");
        for (name, v) in [
            ("sampling_frequency", self.sampling_frequency),
            ("center_frequency", self.center_frequency),
            ("demodulation_frequency", self.demodulation_frequency),
            ("sound_speed", self.sound_speed),
        ] {
            h5::write_f64(scan, name, &field(name), v)?;
        }
        for (name, v) in [
            ("initial_times", &self.initial_times),
            ("polar_angles", &self.polar_angles),
            ("azimuth_angles", &self.azimuth_angles),
            ("focus_distances", &self.focus_distances),
        ] {
            h5::write_array(scan, name, &field(name), &ndarray::ArrayView1::from(v))?;
        }
        for (name, a) in [
            ("t0_delays", &self.t0_delays),
            ("tx_apodizations", &self.tx_apodizations),
            ("transmit_origins", &self.transmit_origins),
        ] {
            h5::write_array(scan, name, &field(name), a)?;
        }
        if let Some(tgc) = &self.tgc_gain_curve {
            // float32, as zea's schema has it.
            let v: Vec<f32> = tgc.iter().map(|g| *g as f32).collect();
            h5::write_array(
                scan,
                "tgc_gain_curve",
                &field("tgc_gain_curve"),
                &ndarray::ArrayView1::from(&v),
            )?;
        }
        Ok(())
    }

    /// The recorded TGC at the first and the last sample, dB; `None` without a curve.
    pub fn tgc_db_range(&self) -> Option<[f64; 2]> {
        let tgc = self.tgc_gain_curve.as_ref()?;
        let db = |g: &f64| 20.0 * g.log10();
        Some([db(tgc.first()?), db(tgc.last()?)])
    }

    /// `data` (n_tx, n_ax, n_el, n_ch) with the scanner's time-gain compensation divided
    /// out, sample by sample along the axis n_ax; `data` itself when the scan records
    /// none.
    pub fn undo_tgc<'a>(&self, data: &'a Array4<f32>) -> Cow<'a, Array4<f32>> {
        let Some(tgc) = &self.tgc_gain_curve else {
            return Cow::Borrowed(data);
        };
        let mut out = data.clone();
        for (mut sample, g) in out.axis_iter_mut(Axis(1)).zip(tgc) {
            let inv = (1.0 / g) as f32;
            sample.mapv_inplace(|v| v * inv);
        }
        Cow::Owned(out)
    }

    /// Writes the fixed part of a legacy `scan` group (everything but `n_frames` and
    /// `time_to_next_transmit`, which grow with the recording) into `scan`.
    pub(crate) fn write_fixed(&self, scan: &Group) -> Result<(), RecordingError> {
        self.write_transmits(scan, "scan")?;
        h5::write_array(
            scan,
            "probe_geometry",
            "scan/probe_geometry",
            &self.probe_geometry,
        )?;
        if let Some(w) = self.element_width {
            h5::write_f64(scan, "element_width", "scan/element_width", w)?;
        }
        for (name, v) in [
            ("n_ax", self.n_ax),
            ("n_ch", self.n_ch),
            ("n_el", self.n_el()),
            ("n_tx", self.n_tx()),
        ] {
            let field = format!("scan/{name}");
            let v = i64::try_from(v).map_err(|_| RecordingError::value(&field, v, "too large"))?;
            scan.new_dataset::<i64>()
                .create(name)
                .and_then(|d| d.write_scalar(&v))
                .map_err(|e| RecordingError::hdf5(field, "write", e))?;
        }
        if let Some(b) = self.fractional_bandwidth {
            scan.new_attr::<f64>()
                .create("fractional_bandwidth_percent")
                .and_then(|a| a.write_scalar(&(b * 100.0)))
                .map_err(|e| {
                    RecordingError::hdf5("scan@fractional_bandwidth_percent", "write", e)
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan() -> Scan {
        let n_el = 4;
        let mut g = Array2::zeros((n_el, 3));
        for e in 0..n_el {
            g[[e, 0]] = (e as f64 - 1.5) * 0.3e-3;
        }
        Scan {
            probe_geometry: g,
            sampling_frequency: 20e6,
            center_frequency: 5e6,
            demodulation_frequency: 0.0,
            sound_speed: 1540.0,
            n_ax: 10,
            n_ch: 1,
            initial_times: vec![0.0, 0.0],
            t0_delays: Array2::zeros((2, n_el)),
            tx_apodizations: Array2::ones((2, n_el)),
            polar_angles: vec![-0.1, 0.1],
            azimuth_angles: vec![0.0; 2],
            focus_distances: vec![f64::INFINITY, 0.03],
            transmit_origins: Array2::zeros((2, 3)),
            element_width: None,
            time_to_next_transmit: None,
            fractional_bandwidth: None,
            tgc_gain_curve: None,
        }
    }

    fn err(s: &Scan) -> String {
        s.validate().expect_err("invalid scan accepted").to_string()
    }

    #[test]
    fn a_valid_scan_passes_and_derives_its_quantities() {
        let s = scan();
        s.validate().unwrap();
        assert_eq!((s.n_el(), s.n_tx()), (4, 2));
        assert!((s.pitch() - 0.3e-3).abs() < 1e-15);
        assert!((s.wavelength() - 1540.0 / 5e6).abs() < 1e-15);
        assert_eq!(s.transmit_kind(0), TransmitKind::Plane);
        assert_eq!(s.transmit_kind(1), TransmitKind::Focused);
    }

    #[test]
    fn elements_may_come_in_any_order_and_off_the_x_axis_along_a_line() {
        let mut s = scan();
        for (row, x) in [0.45e-3, -0.45e-3, 0.15e-3, -0.15e-3]
            .into_iter()
            .enumerate()
        {
            s.probe_geometry[[row, 0]] = x;
            s.probe_geometry[[row, 2]] = 1e-3;
        }
        s.validate().unwrap();
        assert!((s.pitch() - 0.3e-3).abs() < 1e-15);
    }

    #[test]
    fn bad_parameters_are_named_with_their_values() {
        let mut s = scan();
        s.sampling_frequency = f64::NAN;
        let e = err(&s);
        assert!(
            e.contains("scan/sampling_frequency") && e.contains("NaN"),
            "{e}"
        );
        let mut s = scan();
        s.sound_speed = -1540.0;
        let e = err(&s);
        assert!(e.contains("scan/sound_speed") && e.contains("-1540"), "{e}");
        let mut s = scan();
        s.n_ch = 3;
        assert!(err(&s).contains("scan/n_ch` = 3"));
        let mut s = scan();
        s.t0_delays = Array2::zeros((2, 3));
        let e = err(&s);
        assert!(
            e.contains("scan/t0_delays") && e.contains("[2, 3]") && e.contains("n_el = 4"),
            "{e}"
        );
        let mut s = scan();
        s.focus_distances[1] = f64::NAN;
        assert!(err(&s).contains("scan/focus_distances[1]"));
        let mut s = scan();
        s.time_to_next_transmit = Some(Array2::from_elem((3, 2), -1e-4));
        assert!(err(&s).contains("scan/time_to_next_transmit[0, 0]` = -0.0001"));
        let mut s = scan();
        s.tgc_gain_curve = Some(vec![1.0; 9]);
        let e = err(&s);
        assert!(
            e.contains("scan/tgc_gain_curve") && e.contains("[9]") && e.contains("n_ax = 10"),
            "{e}"
        );
        let mut s = scan();
        s.tgc_gain_curve = Some((0..10).map(|a| 1.0 - 0.25 * a as f64).collect());
        assert!(
            err(&s).contains("scan/tgc_gain_curve[4]` = 0"),
            "{}",
            err(&s)
        );
    }

    #[test]
    fn undoing_the_tgc_divides_each_axial_sample_by_its_gain() {
        let mut s = scan();
        let data = Array4::from_shape_fn((2, 10, 4, 1), |(t, a, e, _)| {
            (t * 100 + a * 10 + e) as f32 - 50.0
        });
        assert!(matches!(s.undo_tgc(&data), Cow::Borrowed(_)));
        s.tgc_gain_curve = Some((0..10).map(|a| 2f64.powi(a)).collect());
        let [first, last] = s.tgc_db_range().unwrap();
        assert!(first == 0.0 && (last - 180.0 * 2f64.log10()).abs() < 1e-12);
        let undone = s.undo_tgc(&data);
        for ((t, a, e, c), v) in undone.indexed_iter() {
            assert_eq!(*v, data[[t, a, e, c]] / (1u32 << a) as f32, "{t} {a} {e}");
        }
    }

    #[test]
    fn geometry_must_be_a_line_of_distinct_elements() {
        let mut s = scan();
        s.probe_geometry[[3, 0]] = s.probe_geometry[[2, 0]];
        let e = err(&s);
        assert!(e.contains("elements 2 and 3"), "{e}");
        let mut s = scan();
        s.probe_geometry[[1, 1]] = 0.1e-3;
        let e = err(&s);
        assert!(
            e.contains("scan/probe_geometry[1]") && e.contains("0.0001"),
            "{e}"
        );
        let mut s = scan();
        s.probe_geometry = Array2::zeros((1, 3));
        s.t0_delays = Array2::zeros((2, 1));
        s.tx_apodizations = Array2::zeros((2, 1));
        assert!(err(&s).contains("at least 2 elements"));
    }

    #[test]
    fn values_stored_as_float32_print_as_written() {
        assert_eq!(num(f64::from(0.005_f32)), "0.005");
        assert_eq!(num(0.1), "0.1");
        assert_eq!(num(f64::NAN), "NaN");
    }
}
