//! The measurement operator against PyMUST's `simus` (an independent full-wave-ish
//! frequency-domain simulator): echo arrival times of a point scatterer per channel, and
//! the adjoint of simus's RF focusing back onto the scatterer.

mod common;

use std::path::Path;

use candle_core::Device;
use ndarray::{Array2, Array4};
use pleura::grid::Grid;
use pleura::operator::{MeasurementOperator, OperatorOptions};
use pleura::recording::Scan;

const N_EL: usize = 32;
const PITCH: f64 = 0.3e-3;
const WIDTH: f64 = 0.25e-3;
const FC: f64 = 5e6;
const FS: f64 = 20e6;
const C: f64 = 1540.0;
const SCATTERER: (f64, f64) = (1.0e-3, 10.0e-3);

/// Runs simus for a plane wave at 10 deg, a focus at (0, 15 mm) and a diverging wave of
/// 60 deg opening; writes each RF (n_ax, n_el) as float32 to DIR/rf{i}.f32 and prints
/// n_ax and the transmit delays.
const SIMUS: &str = r#"
import sys, json, numpy as np, pymust
d = sys.argv[1]
p = pymust.utils.Param()
p.fc = 5e6; p.bandwidth = 60; p.Nelements = 32; p.pitch = 0.3e-3; p.width = 0.25e-3
p.kerf = 0.05e-3; p.c = 1540; p.fs = 20e6
dels = [pymust.txdelay(p, np.deg2rad(10)), pymust.txdelay(0.0, 15e-3, p), pymust.txdelay(p, 0, np.pi / 3)]
out = []
for i, dl in enumerate(dels):
    dl = np.asarray(dl, dtype=float).reshape(1, -1)
    rf, _ = pymust.simus(np.array([1.0e-3]), np.array([10.0e-3]), np.array([1.0]), dl, p)
    rf.astype(np.float32).tofile(f"{d}/rf{i}.f32")
    out.append({"n_ax": rf.shape[0], "delays": dl.ravel().tolist()})
print(json.dumps(out))
"#;

/// Prints, per file given, the sample of the envelope peak (|hilbert|) of each channel.
const PEAKS: &str = r#"
import sys, json, numpy as np, scipy.signal as ss
n_el = int(sys.argv[1])
res = []
for f in sys.argv[2:]:
    rf = np.fromfile(f, dtype=np.float32).reshape(-1, n_el)
    res.append(np.argmax(np.abs(ss.hilbert(rf, axis=0)), axis=0).tolist())
print(json.dumps(res))
"#;

fn scan_for(delays: &[f64], n_ax: usize, focus: f64) -> Scan {
    let mut geometry = Array2::zeros((N_EL, 3));
    for e in 0..N_EL {
        geometry[[e, 0]] = (e as f64 - (N_EL as f64 - 1.0) / 2.0) * PITCH;
    }
    Scan {
        probe_geometry: geometry,
        sampling_frequency: FS,
        center_frequency: FC,
        demodulation_frequency: FC,
        sound_speed: C,
        n_ax,
        n_ch: 1,
        initial_times: vec![0.0],
        t0_delays: Array2::from_shape_vec((1, N_EL), delays.to_vec()).expect("delays"),
        tx_apodizations: Array2::ones((1, N_EL)),
        polar_angles: vec![0.0],
        azimuth_angles: vec![0.0],
        focus_distances: vec![focus],
        transmit_origins: Array2::zeros((1, 3)),
        element_width: Some(WIDTH),
        time_to_next_transmit: None,
        fractional_bandwidth: Some(0.6),
        tgc_gain_curve: None,
    }
}

fn write_f32(path: &Path, v: impl Iterator<Item = f32>) {
    let bytes: Vec<u8> = v.flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn point_scatterer_matches_pymust_simus() {
    let dir = common::tempdir();
    let d = dir.path().to_str().expect("utf-8 temp path");
    let out = common::run_python(SIMUS, &[d]);
    let txs: Vec<serde_json::Value> = serde_json::from_str(out.trim()).expect("simus json");
    // Grid of 0.1 mm pixels around the scatterer, which sits on pixel (10, 10).
    let grid = Grid::new(
        (0..21)
            .map(|i| SCATTERER.0 + (i as f64 - 10.0) * 0.1e-3)
            .collect(),
        (0..21)
            .map(|i| SCATTERER.1 + (i as f64 - 10.0) * 0.1e-3)
            .collect(),
    )
    .expect("grid");
    // Diverging: PyMUST's virtual source for a 60 deg opening sits aperture/2/tan(30 deg)
    // behind the array.
    let half_ap = (N_EL as f64 - 1.0) * PITCH / 2.0;
    let foci = [f64::INFINITY, 15e-3, -half_ap / (30f64.to_radians()).tan()];
    let mut files = vec![];
    for (i, tx) in txs.iter().enumerate() {
        let n_ax = tx["n_ax"].as_u64().expect("n_ax") as usize;
        let delays: Vec<f64> = tx["delays"]
            .as_array()
            .expect("delays")
            .iter()
            .map(|v| v.as_f64().expect("delay"))
            .collect();
        let scan = scan_for(&delays, n_ax, foci[i]);
        let op = MeasurementOperator::new(&scan, &grid, OperatorOptions::default(), &Device::Cpu)
            .expect("operator");
        let mut x = Array2::<f32>::zeros((21, 21));
        x[[10, 10]] = 1.0;
        let ours = op.forward_array(&x).expect("forward");
        let ours_path = dir.path().join(format!("ours{i}.f32"));
        write_f32(&ours_path, ours.iter().copied());
        files.push(ours_path.to_str().expect("path").to_string());
        files.push(format!("{d}/rf{i}.f32"));

        // A^T of simus's RF peaks at the scatterer.
        let bytes = std::fs::read(format!("{d}/rf{i}.f32")).expect("read simus rf");
        let rf: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let y = Array4::from_shape_vec((1, n_ax, N_EL, 1), rf).expect("rf shape");
        let img = op.adjoint_array(&y).expect("adjoint");
        let (mut best, mut at) = (0f32, (0, 0));
        for ((iz, ix), v) in img.indexed_iter() {
            if v.abs() > best {
                best = v.abs();
                at = (iz, ix);
            }
        }
        assert!(
            at.0.abs_diff(10) <= 1 && at.1.abs_diff(10) <= 1,
            "transmit {i}: A^T y peaks at pixel {at:?}, scatterer at (10, 10)"
        );
    }
    let mut args = vec![N_EL.to_string()];
    args.extend(files);
    let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let peaks: Vec<Vec<i64>> =
        serde_json::from_str(common::run_python(PEAKS, &argv).trim()).expect("peaks json");
    for i in 0..txs.len() {
        let (ours, theirs) = (&peaks[2 * i], &peaks[2 * i + 1]);
        for e in 0..N_EL {
            assert!(
                (ours[e] - theirs[e]).abs() <= 1,
                "transmit {i} element {e}: envelope peak at sample {} (ours) vs {} (simus)",
                ours[e],
                theirs[e]
            );
        }
    }
}
