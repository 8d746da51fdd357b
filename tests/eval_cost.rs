//! `pleura eval` on a reconstruction that records its cost (`recon/nfe`,
//! `recon/latency_ms`) and covers only the first frames of a longer recording.

mod common;

use ndarray::{Array1, Array3};
use pleura::eval::files::{evaluate, Recon, Truth};
use pleura::grid::Grid;

/// The tests of this file run one at a time: a `pleura` child forked by one test would
/// inherit another test's open HDF5 file descriptor, and with it that file's lock.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes a ground truth of `n` frames (aeration 0.5 everywhere, no lung mask).
fn write_truth(path: &std::path::Path, grid: &Grid, n: usize) {
    let f = hdf5::File::create(path)
        .and_then(pleura::recording::close_on_exec)
        .expect("create truth");
    let g = f.create_group("pleura").expect("group");
    let a = Array3::<f32>::from_elem((n, grid.nz(), grid.nx()), 0.5);
    g.new_dataset_builder()
        .with_data(&a)
        .create("aeration")
        .expect("aeration");
    g.new_dataset_builder()
        .with_data(&Array1::from(grid.x.clone()))
        .create("grid_x")
        .expect("grid_x");
    g.new_dataset_builder()
        .with_data(&Array1::from(grid.z.clone()))
        .create("grid_z")
        .expect("grid_z");
    drop(g);
    f.close().expect("close truth");
}

#[test]
fn eval_reports_network_evaluations_and_seconds_per_frame() {
    let _serial = serial();
    let dir = common::tempdir();
    let grid = Grid::uniform(8, 6, 1e-3, 2e-3).expect("grid");
    let truth = dir.path().join("truth.h5");
    write_truth(&truth, &grid, 3);
    // Two frames off by 0.1 everywhere: PSNR 20 dB. A cold frame of 50 network
    // evaluations in 4 s, a warm one of 15 in 1 s: 32.5 evaluations and 2.5 s per frame.
    let recon = Recon {
        mean: Array3::from_elem((2, 6, 8), 0.6),
        std: None,
        aeration_ci: None,
        aeration: None,
        nfe: Some(Array1::from(vec![50, 15])),
        latency_ms: Some(Array1::from(vec![4000.0, 1000.0])),
        grid: grid.clone(),
        method: "test".into(),
        source: truth.display().to_string(),
    };
    let rp = dir.path().join("recon.h5");
    recon.write(&rp).expect("write");
    let back = Recon::read(&rp).expect("read");
    assert_eq!(back, recon);

    let out = common::pleura()
        .args(["eval", rp.to_str().expect("p"), "--json"])
        .output()
        .expect("run pleura");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["frames"].as_array().map(|a| a.len()), Some(2));
    assert_eq!(v["nfe_per_frame"].as_f64(), Some(32.5));
    assert_eq!(v["seconds_per_frame"].as_f64(), Some(2.5));
    assert_eq!(v["frames"][0]["nfe"].as_u64(), Some(50));
    assert_eq!(v["frames"][1]["seconds"].as_f64(), Some(1.0));
    assert_eq!(v["failed_frames"].as_array().map(|a| a.len()), Some(0));
    let psnr = v["mean_psnr_db"].as_f64().expect("psnr");
    assert!((psnr - 20.0).abs() < 1e-4, "PSNR {psnr}");

    let table = common::pleura()
        .args(["eval", rp.to_str().expect("p")])
        .output()
        .expect("run pleura");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("NFE/frame 32.5, s/frame 2.500"),
        "table lacks the cost: {text}"
    );
}

#[test]
fn failed_frames_are_left_out_and_listed() {
    let _serial = serial();
    let dir = common::tempdir();
    let grid = Grid::uniform(8, 6, 1e-3, 2e-3).expect("grid");
    let tp = dir.path().join("truth.h5");
    write_truth(&tp, &grid, 3);
    let truth = Truth::read(&tp).expect("truth");
    // Frame 1 failed (replay writes NaN there); frames 0 and 2 are off by 0.1 (20 dB).
    let mut mean = Array3::from_elem((3, 6, 8), 0.6f32);
    mean.index_axis_mut(ndarray::Axis(0), 1).fill(f32::NAN);
    let recon = Recon {
        mean,
        std: None,
        aeration_ci: None,
        aeration: None,
        nfe: Some(Array1::from(vec![10, 0, 3])),
        latency_ms: None,
        grid,
        method: "test".into(),
        source: String::new(),
    };
    let s = evaluate(&recon, &truth).expect("evaluate");
    assert_eq!(s.failed_frames, vec![1]);
    assert_eq!(
        s.frames.iter().map(|f| f.frame).collect::<Vec<_>>(),
        vec![0, 2]
    );
    assert!((s.mean_psnr_db - 20.0).abs() < 1e-4, "{}", s.mean_psnr_db);
    assert_eq!(s.nfe_per_frame, Some(6.5));
}

#[test]
fn eval_rejects_more_frames_than_the_truth_and_mismatched_cost_lengths() {
    let _serial = serial();
    let dir = common::tempdir();
    let grid = Grid::uniform(8, 6, 1e-3, 2e-3).expect("grid");
    let tp = dir.path().join("truth.h5");
    write_truth(&tp, &grid, 2);
    let truth = Truth::read(&tp).expect("truth");
    let mut recon = Recon {
        mean: Array3::from_elem((3, 6, 8), 0.5),
        std: None,
        aeration_ci: None,
        aeration: None,
        nfe: None,
        latency_ms: None,
        grid,
        method: "test".into(),
        source: String::new(),
    };
    let err = evaluate(&recon, &truth).expect_err("3 frames against 2");
    assert!(err.to_string().contains("(3, 6, 8)"), "{err}");

    recon.nfe = Some(Array1::from(vec![1, 2]));
    let rp = dir.path().join("recon.h5");
    recon.write(&rp).expect("write");
    let err = Recon::read(&rp).expect_err("2 nfe entries for 3 frames");
    assert!(err.to_string().contains("recon/nfe"), "{err}");
}
