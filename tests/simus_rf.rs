//! scripts/simus_rf.py, the independent-simulator RF of docs/BENCHMARKS.md: pleura reads
//! what it writes, ground truth included, and its physics are what it states: simus's own
//! gain (not pleura's), reflectivity amplitude linear in the aeration, and attenuation of
//! 0.5 dB/cm/MHz.

mod common;

use std::path::Path;

use candle_core::Device;
use ndarray::Array4;
use pleura::grid::Grid;
use pleura::operator::{MeasurementOperator, OperatorOptions};
use pleura::recording::Recording;

/// Depths of the two reflecting rows, m.
const SHALLOW: f64 = 5e-3;
const DEEP: f64 = 20e-3;

/// Makes IN.h5's aeration map two full rows of aeration SCALE at 5 and 20 mm (zero
/// elsewhere) and writes simus RF of it to OUT.h5 with scripts/simus_rf.py, one scatterer
/// per pixel, no noise, seed 3, and ATTENUATION dB/cm/MHz.
const MAKE: &str = r#"
import shutil, subprocess, sys, h5py, numpy as np
src, out, scale, att, script = sys.argv[1:6]
extra = sys.argv[6:]
edited = out + ".phantom.h5"
shutil.copyfile(src, edited)
with h5py.File(edited, "r+") as f:
    gz = f["pleura/grid_z"][()]
    a = np.zeros_like(f["pleura/aeration"][()])
    for z in (5e-3, 20e-3):
        a[:, int(np.argmin(abs(gz - z))), :] = float(scale)
    f["pleura/aeration"][...] = a
subprocess.run([sys.executable, script, edited, out, "--per-pixel", "1", "--snr-db", "inf",
                "--seed", "3", "--attenuation", att] + extra, check=True)
"#;

fn simus(phantom: &Path, out: &Path, scale: f32, attenuation: f64) -> Recording {
    simus_with(phantom, out, scale, attenuation, &[])
}

/// As [`simus`], with more options of the script.
fn simus_with(
    phantom: &Path,
    out: &Path,
    scale: f32,
    attenuation: f64,
    extra: &[&str],
) -> Recording {
    let script = common::repo().join("scripts/simus_rf.py");
    let (scale, attenuation) = (scale.to_string(), attenuation.to_string());
    let mut args = vec![
        phantom.to_str().expect("path"),
        out.to_str().expect("path"),
        &scale,
        &attenuation,
        script.to_str().expect("path"),
    ];
    args.extend_from_slice(extra);
    common::run_python(MAKE, &args);
    Recording::open(out).expect("pleura opens the simus recording")
}

fn rms(y: &Array4<f32>) -> f64 {
    (y.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / y.len() as f64).sqrt()
}

/// Energy of transmit 0's echo of the row at depth `z`: samples within 60 of the
/// round-trip time 2 z / c on every element.
fn echo_energy(y: &Array4<f32>, z: f64, fs: f64, c: f64) -> f64 {
    let n = (2.0 * z / c * fs).round() as usize;
    y.slice(ndarray::s![0, n - 60..n + 60, .., ..])
        .iter()
        .map(|v| (*v as f64).powi(2))
        .sum()
}

#[test]
fn simus_rf_is_read_by_pleura_and_has_the_stated_physics() {
    let dir = common::tempdir();
    let phantom = dir.path().join("phantom.h5");
    let st = common::pleura()
        .args(["simulate", "--out"])
        .arg(&phantom)
        .args([
            "--frames",
            "1",
            "--seed",
            "1",
            "--grid",
            "4,72,0.3,4",
            "--elements",
            "16",
            "--angles",
            "0",
            "--snr-db",
            "inf",
        ])
        .output()
        .expect("pleura simulate");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );

    let plain = simus(&phantom, &dir.path().join("plain.h5"), 1.0, 0.0);
    let attenuated = simus(&phantom, &dir.path().join("att.h5"), 1.0, 0.5);
    let half = simus(&phantom, &dir.path().join("half.h5"), 0.5, 0.5);
    let gained = simus_with(
        &phantom,
        &dir.path().join("tgc.h5"),
        1.0,
        0.5,
        &["--tgc-db-per-cm", "2"],
    );

    // Ground truth kept: the edited map, on the phantom's grid.
    let truth = attenuated
        .read_ground_truth_frame(0)
        .expect("ground truth")
        .expect("the simus recording keeps the ground truth");
    let (gx, gz) = attenuated.ground_truth_grid().expect("grid");
    let rows: Vec<usize> = (0..gz.len())
        .filter(|&i| truth.row(i).iter().all(|&a| a == 1.0))
        .collect();
    assert_eq!(rows.len(), 2, "two reflecting rows, got {rows:?}");
    assert!((gz[rows[0]] - SHALLOW).abs() < 0.2e-3 && (gz[rows[1]] - DEEP).abs() < 0.2e-3);
    assert_eq!(truth.sum(), 2.0 * gx.len() as f32);

    let scan = attenuated.scan().clone();
    let (fs, c) = (scan.sampling_frequency, scan.sound_speed);
    let y_plain = plain.read_frame(0).expect("frame").data;
    let y_att = attenuated.read_frame(0).expect("frame").data;
    let y_half = half.read_frame(0).expect("frame").data;

    // Attenuation: relative to the shallow row, the deep row loses
    // 0.5 dB/cm/MHz x 5 MHz x 2 x 1.5 cm = 7.5 dB at the centre frequency, a little less
    // over the pulse's band (the lower frequencies lose less).
    let ratio = |y: &Array4<f32>| echo_energy(y, DEEP, fs, c) / echo_energy(y, SHALLOW, fs, c);
    let loss_db = 10.0 * (ratio(&y_plain) / ratio(&y_att)).log10();
    assert!(
        (6.0..=7.5).contains(&loss_db),
        "attenuation lowers the deep echo by {loss_db:.2} dB relative to the shallow one"
    );

    // A scanner's TGC: the same RF times 10^(2 d / 20), d the sample's depth in cm, and
    // the curve in the file.
    assert!(attenuated.scan().tgc_gain_curve.is_none());
    let tgc = gained.scan().tgc_gain_curve.clone().expect("the TGC curve");
    let y_tgc = gained.read_frame(0).expect("frame").data;
    for (a, g) in tgc.iter().enumerate() {
        let depth_cm = (scan.initial_times[0] + a as f64 / fs) * c / 2.0 * 100.0;
        assert!(
            (g / 10f64.powf(2.0 * depth_cm / 20.0) - 1.0).abs() < 1e-6,
            "sample {a}"
        );
        let (p, q) = (
            y_tgc.index_axis(ndarray::Axis(1), a),
            y_att.index_axis(ndarray::Axis(1), a),
        );
        for (u, v) in p.iter().zip(q) {
            assert!(
                (u - v * *g as f32).abs() <= 1e-5 * v.abs().max(1e-30),
                "sample {a}"
            );
        }
    }

    // Reflectivity amplitude linear in the aeration (same scatterers, half the aeration).
    let lin = rms(&y_half) / rms(&y_att);
    assert!(
        (lin - 0.5).abs() < 1e-3,
        "RMS ratio {lin} for half the aeration"
    );

    // simus's own gain: nothing rescales it to pleura's operator for the same map.
    let grid = Grid::new(gx.to_vec(), gz.to_vec()).expect("grid");
    let op = MeasurementOperator::new(&scan, &grid, OperatorOptions::default(), &Device::Cpu)
        .expect("operator");
    let ours = op.forward_array(&truth).expect("forward");
    let gain = rms(&y_plain) / rms(&ours);
    assert!(
        gain > 100.0,
        "simus RF is {gain:.1} times pleura's operator output (its own gain)"
    );
}
