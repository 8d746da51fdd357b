//! Typed scan parameters: the `scan/` group of a zea recording.
//!
//! Field names and units follow the zea HDF5 layout (SI units; x along the array with 0 at
//! its centre, z depth). Per-transmit arrays are indexed by transmit, per-element arrays by
//! element in the order of `probe_geometry`.

use ndarray::Array2;

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

    /// Mean distance between neighbouring elements along x, m.
    pub fn pitch(&self) -> f64 {
        let n = self.n_el();
        if n < 2 {
            return 0.0;
        }
        let x0 = self.probe_geometry[[0, 0]];
        let x1 = self.probe_geometry[[n - 1, 0]];
        (x1 - x0).abs() / (n - 1) as f64
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
