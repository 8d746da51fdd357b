//! Beamforming: conformance with PyMUST on real data, first-principles checks on simulated
//! point scatterers, errors that name values.

mod common;

use ndarray::{Array2, Array3, Array4, Axis};
use pleura::beamform::bmode::{log_compress, max_of};
use pleura::beamform::{Apodization, Beamformer, DasOptions, Grid};
use pleura::recording::Scan;

/// pwi_disk loaded through h5py (until the recording reader lands): scan + RF frames.
fn load_pwi_disk() -> (Scan, Array4<f32>, usize) {
    let dir = common::tempdir();
    let out = dir.path().join("rf.f32");
    let script = r#"
import h5py, numpy as np, sys, json
f = h5py.File(sys.argv[1], 'r')
rf = f['data/raw_data'][()].astype(np.float32)
rf.tofile(sys.argv[2])
s = f['scan']
d = {k: np.asarray(s[k][()]).tolist() for k in s.keys()}
d['fractional_bandwidth_percent'] = float(s.attrs['fractional_bandwidth_percent'])
d['shape'] = list(rf.shape)
print(json.dumps(d).replace('Infinity', 'null'))
"#;
    let js = common::run_python(script, &[common::pwi_disk().to_str().unwrap(), out.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&js).unwrap();
    let arr1 = |k: &str| -> Vec<f64> { v[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap_or(f64::INFINITY)).collect() };
    let arr2 = |k: &str| -> Array2<f64> {
        let rows: Vec<Vec<f64>> = v[k].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()).collect();
        Array2::from_shape_vec((rows.len(), rows[0].len()), rows.concat()).unwrap()
    };
    let shape: Vec<usize> = v["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    let scan = Scan {
        probe_geometry: arr2("probe_geometry"),
        sampling_frequency: v["sampling_frequency"].as_f64().unwrap(),
        center_frequency: v["center_frequency"].as_f64().unwrap(),
        demodulation_frequency: v["demodulation_frequency"].as_f64().unwrap(),
        sound_speed: v["sound_speed"].as_f64().unwrap(),
        n_ax: shape[2],
        n_ch: shape[4],
        initial_times: arr1("initial_times"),
        t0_delays: arr2("t0_delays"),
        tx_apodizations: arr2("tx_apodizations"),
        polar_angles: arr1("polar_angles"),
        azimuth_angles: arr1("azimuth_angles"),
        focus_distances: arr1("focus_distances"),
        transmit_origins: arr2("transmit_origins"),
        element_width: v["element_width"].as_f64(),
        time_to_next_transmit: None,
        fractional_bandwidth: Some(v["fractional_bandwidth_percent"].as_f64().unwrap() / 100.0),
    };
    let bytes = std::fs::read(&out).unwrap();
    let data: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let n_frames = shape[0];
    let frames = Array4::from_shape_vec((n_frames * shape[1], shape[2], shape[3], shape[4]), data).unwrap();
    (scan, frames, n_frames)
}

/// The golden B-mode and its grid.
fn load_golden() -> (Array3<u8>, Vec<f64>, Vec<f64>) {
    let dir = common::tempdir();
    let out = dir.path().join("g.u8");
    let script = r#"
import h5py, numpy as np, sys, json
g = h5py.File(sys.argv[1], 'r')
b = g['bmode'][()]
b.astype(np.uint8).tofile(sys.argv[2])
print(json.dumps({'shape': list(b.shape), 'x': g['grid_x'][()].tolist(), 'z': g['grid_z'][()].tolist()}))
"#;
    let path = common::shared().join("data/pwi_disk/golden_bmode.h5");
    let js = common::run_python(script, &[path.to_str().unwrap(), out.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&js).unwrap();
    let f = |k: &str| -> Vec<f64> { v[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };
    let shape: Vec<usize> = v["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    let b = Array3::from_shape_vec((shape[0], shape[1], shape[2]), std::fs::read(&out).unwrap()).unwrap();
    (b, f("x"), f("z"))
}

#[test]
fn pwi_disk_matches_pymust_golden_bmode() {
    let (scan, frames, n_frames) = load_pwi_disk();
    let (golden, gx, gz) = load_golden();
    let grid = Grid::new(gx, gz).unwrap();
    let opts = DasOptions {
        f_number: 1.1248,
        apodization: Apodization::Rect,
    };
    let mut bf = Beamformer::new(&scan, &grid, &opts).unwrap();
    let mut env = Array3::<f32>::zeros((n_frames, grid.nz(), grid.nx()));
    for i in 0..n_frames {
        let frame = frames.slice_axis(Axis(0), (i..i + 1).into()).into_shape_with_order((1, scan.n_ax, scan.n_el(), 1)).unwrap();
        bf.envelope_into(frame, env.index_axis_mut(Axis(0), i)).unwrap();
    }
    let global = env.iter().copied().fold(0.0f32, f32::max);
    let mut ours = Vec::new();
    for i in 0..n_frames {
        let b = log_compress(env.index_axis(Axis(0), i), global, 30.0).unwrap();
        assert!(max_of(env.index_axis(Axis(0), i)) <= global);
        ours.extend(b.iter().map(|&g| g as f64));
    }
    let theirs: Vec<f64> = golden.iter().map(|&g| g as f64).collect();
    assert_eq!(ours.len(), theirs.len());
    let n = ours.len() as f64;
    let (ma, mb) = (ours.iter().sum::<f64>() / n, theirs.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb, mut mad) = (0.0, 0.0, 0.0, 0.0);
    for (a, b) in ours.iter().zip(&theirs) {
        sab += (a - ma) * (b - mb);
        saa += (a - ma) * (a - ma);
        sbb += (b - mb) * (b - mb);
        mad += (a - b).abs();
    }
    let r = sab / (saa * sbb).sqrt();
    let mad = mad / n;
    println!("pwi_disk vs PyMUST golden: Pearson r = {r:.4}, mean |diff| = {mad:.2} grey levels");
    assert!(r >= 0.99, "correlation {r}");
    assert!(mad <= 4.0, "mean abs diff {mad}");
}
