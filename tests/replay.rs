//! `pleura replay` end to end on a tiny simulated recording and a tiny model: every output
//! dataset, a frame with NaN data marked failed while the replay goes on, PNG panels and
//! the aeration trend, and
//! a recording that does not fit the model's grid rejected before any sampling.

mod common;

use std::path::Path;

use common::lung::{write_model, write_recording};
use ndarray::{Array, Array1, Array2, Array3, Dimension};
use pleura::grid::Grid;
use pleura::recording::{Frame, Recorder, RecorderOptions};
use pleura::testing::{tiny_grid, tiny_probe, TINY_SIZE as N};

/// Reads dataset `name` of `f`, panicking with its name when it is missing or mistyped.
fn dataset<T: hdf5::H5Type, D: Dimension>(f: &hdf5::File, name: &str) -> Array<T, D> {
    f.dataset(name)
        .and_then(|d| d.read::<T, D>())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn replay_writes_every_output_and_marks_bad_frames() {
    let dir = tempfile::tempdir().expect("tmp");
    let g = tiny_grid();
    let model = dir.path().join("model");
    write_model(&model, &g, 1);
    let input = dir.path().join("in.zea.h5");
    write_recording(&input, &g, &g, 3, Some(1));
    let out = dir.path().join("out.h5");
    let png = dir.path().join("png");
    let status = common::pleura()
        .args(["replay"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--model")
        .arg(&model)
        .arg("--png")
        .arg(&png)
        .args(["--sampler", "dds", "--steps", "10", "--samples", "3"])
        .args(["--device", "cpu", "--config"])
        .arg(common::repo().join("config/pleura.toml"))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(status.status.success(), "replay failed: {stderr}");

    let f = hdf5::File::open(&out).expect("open out");
    let mean: Array3<f32> = dataset(&f, "pleura/recon/mean");
    let std: Array3<f32> = dataset(&f, "pleura/recon/std");
    let das: Array3<f32> = dataset(&f, "pleura/recon/das");
    let aer: Array1<f64> = dataset(&f, "pleura/recon/aeration");
    let ci: Array2<f64> = dataset(&f, "pleura/recon/aeration_ci");
    let cat: Array1<u8> = dataset(&f, "pleura/recon/category");
    let failed: Array1<u8> = dataset(&f, "pleura/recon/failed");
    let lat: Array1<f64> = dataset(&f, "pleura/recon/latency_ms");
    let gx: Array1<f64> = dataset(&f, "pleura/recon/grid_x");
    let aer_sd: Array1<f64> = dataset(&f, "pleura/recon/aeration_sd");
    let boundary_sd: Array1<f64> = dataset(&f, "pleura/recon/boundary_sd");
    // DDS takes no DPS step.
    let zeta: Array1<f64> = dataset(&f, "pleura/recon/zeta");
    assert_eq!(zeta.len(), 3);
    assert!(zeta.iter().all(|v| v.is_nan()), "{zeta}");
    let reasons = f
        .dataset("pleura/recon/failed_reason")
        .and_then(|d| d.read_raw::<hdf5::types::VarLenUnicode>())
        .expect("reasons");
    assert_eq!(mean.dim(), (3, N, N));
    assert_eq!(std.dim(), (3, N, N));
    assert!(gx.iter().zip(&g.x).all(|(a, b)| (a - b).abs() < 1e-12));
    assert_eq!(failed.to_vec(), vec![0, 1, 0]);
    assert!(reasons[1].as_str().contains("NaN"), "{}", reasons[1]);
    assert!(reasons[0].as_str().is_empty());
    // Failed frame: nothing published.
    assert!(mean
        .index_axis(ndarray::Axis(0), 1)
        .iter()
        .all(|v| v.is_nan()));
    assert!(aer[1].is_nan() && cat[1] == u8::MAX);
    for f in [0usize, 2] {
        let m = mean.index_axis(ndarray::Axis(0), f);
        assert!(
            m.iter().all(|v| (0.0..=1.0).contains(v)),
            "frame {f} mean out of range"
        );
        assert!(std
            .index_axis(ndarray::Axis(0), f)
            .iter()
            .all(|v| *v >= 0.0));
        assert!(
            ci[[f, 0]] <= aer[f] && aer[f] <= ci[[f, 1]],
            "frame {f}: {aer} {ci}"
        );
        // The interval's parts: the samples' spread (times the configured spread_scale,
        // 1.96 x ...) and the lung boundary, joined as a root sum of squares.
        let scale = pleura::posterior::SamplerConfig::default().spread_scale;
        let half = pleura::aeration::Z95 * (scale * aer_sd[f]).hypot(boundary_sd[f]);
        assert!(aer_sd[f] > 0.0 && boundary_sd[f] >= 0.0, "frame {f}");
        assert!(
            ((ci[[f, 1]] - aer[f]).min(aer[f] - ci[[f, 0]]) - half).abs() < 1e-9,
            "frame {f}: {ci} half width {half}"
        );
        let expect_cat = if aer[f] < 0.6 {
            0
        } else if aer[f] < 0.85 {
            1
        } else {
            2
        };
        assert_eq!(cat[f], expect_cat);
        assert!(lat[f] > 0.0);
        let d = das.index_axis(ndarray::Axis(0), f);
        assert!(d.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!((d.iter().copied().fold(0.0f32, f32::max) - 1.0).abs() < 1e-6);
    }
    // The attributes are on the results' group (the root's belong to zea).
    let recon = f.group("pleura/recon").expect("pleura/recon");
    let sha = recon
        .attr("model_sha256")
        .and_then(|a| a.read_scalar::<hdf5::types::VarLenUnicode>())
        .expect("sha");
    assert_eq!(sha.as_str().len(), 64);
    let sampler = recon
        .attr("sampler")
        .and_then(|a| a.read_scalar::<hdf5::types::VarLenUnicode>())
        .expect("sampler");
    assert!(
        sampler.as_str().contains("\"method\":\"dds\"")
            && sampler.as_str().contains("\"steps\":10")
    );
    // One panel per frame, four tiles (ground truth present) of a square grid. The failed
    // frame shows FAILED in red where its reconstruction and uncertainty would be; the
    // others have no red. Then the trend: the failed frame's red mark and the truth's green
    // line are drawn.
    for i in 0..3 {
        let (w, h, rgb) = common::decode_png(&png.join(format!("frame_{i:05}.png")));
        assert_eq!((w, h), (1496, 386), "frame {i}");
        assert_eq!(count(&rgb, [200, 30, 30]) > 100, i == 1, "frame {i}");
    }
    let (w, h, rgb) = common::decode_png(&png.join("aeration.png"));
    assert_eq!(
        (w, h),
        (pleura::render::trend::WIDTH, pleura::render::trend::HEIGHT)
    );
    assert!(
        count(&rgb, [200, 30, 30]) > 20,
        "the failed frame is marked"
    );
    assert!(count(&rgb, [44, 160, 44]) > 100, "the truth is drawn");
}

/// Pixels of exactly `color`.
fn count(rgb: &[[u8; 3]], color: [u8; 3]) -> usize {
    rgb.iter().filter(|p| **p == color).count()
}

#[test]
fn replay_rejects_a_recording_that_does_not_fit_before_sampling() {
    let dir = tempfile::tempdir().expect("tmp");
    let g = tiny_grid();
    let model = dir.path().join("model");
    write_model(&model, &g, 1);
    // A recording made for a grid 0.1-0.2 mm deep: its records end (about 1.6 mm) above
    // the model grid's first row (3 mm), so no grid at the model's pitch fits under the
    // probe.
    let shallow = Grid::uniform(2, 1, 0.1e-3, 0.1e-3).expect("grid");
    let input = dir.path().join("shallow.zea.h5");
    write_recording_for(&input, &shallow);
    let out = dir.path().join("out.h5");
    let status = common::pleura()
        .args(["replay"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--model")
        .arg(&model)
        .args(["--device", "cpu", "--steps", "5"])
        .output()
        .expect("run");
    assert!(!status.status.success());
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        stderr.contains("too small for the prior") && stderr.contains("recorded depth span"),
        "{stderr}"
    );
    assert!(!out.exists(), "no output for a rejected recording");
}

fn write_recording_for(path: &Path, g: &Grid) {
    let scan = tiny_probe().plane_wave_scan(&[0.0], g);
    let mut rec = Recorder::create(path, &scan, RecorderOptions::default()).expect("recorder");
    let frame = Frame {
        data: ndarray::Array4::from_elem((scan.n_tx(), scan.n_ax, scan.n_el(), 1), 1.0),
        sequence_number: 0,
        timestamp_ns: 0,
    };
    rec.append(&frame).expect("append");
    rec.finish().expect("finish");
}

/// Real Verasonics plane-wave RF of a rotating disk (128 elements of 0.298 mm, samples
/// from 7.4 to 44.4 mm) replays with the shipped model on a grid that follows the scan:
/// the aperture and the recorded depth at the model's 0.3 mm, 120 x 120 pixels. A short
/// sampler (DDS, 2 steps, 2 samples) on one frame. No quality is claimed: the disk is
/// not a lung, and the system response is not estimated (issue #19, item 2).
#[test]
fn replay_reconstructs_a_real_128_element_scan_on_its_own_grid() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = common::repo().join("testdata/pwi_disk_4frames.zea.h5");
    let out = dir.path().join("pwi.h5");
    let run = common::pleura()
        .args(["replay"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--model")
        .arg(common::repo().join("testdata/model"))
        .args(["--sampler", "dds", "--steps", "2", "--samples", "2"])
        .args(["--max-frames", "1", "--device", "cpu", "--config"])
        .arg(common::repo().join("config/pleura.toml"))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "replay failed: {stderr}");

    let scan = pleura::recording::Recording::open(&input)
        .expect("open")
        .scan()
        .clone();
    let f = hdf5::File::open(&out).expect("open out");
    let gx: Array1<f64> = dataset(&f, "pleura/recon/grid_x");
    let gz: Array1<f64> = dataset(&f, "pleura/recon/grid_z");
    assert_eq!((gx.len(), gz.len()), (120, 120));
    // Laterally: 120 centres 0.3 mm apart, centred on the 37.85 mm aperture.
    let els = scan.probe_geometry.column(0);
    let (e0, e1) = (els[0], els[els.len() - 1]);
    assert!((gx[0] - (-17.85e-3)).abs() < 1e-9 && (gx[119] - 17.85e-3).abs() < 1e-9);
    assert!(e0 <= gx[0] && gx[119] <= e1, "grid inside [{e0}, {e1}]");
    // In depth: from the first recorded sample (c t0 / 2 = 7.36 mm) at 0.3 mm.
    let top = scan.sound_speed * scan.initial_times[0] / 2.0;
    assert!((gz[0] - top - 0.15e-3).abs() < 1e-9, "{} {top}", gz[0]);
    assert!((gz[119] - gz[0] - 119.0 * 0.3e-3).abs() < 1e-9);
    let mean: Array3<f32> = dataset(&f, "pleura/recon/mean");
    let das: Array3<f32> = dataset(&f, "pleura/recon/das");
    assert_eq!(mean.shape(), &[1, 120, 120]);
    assert_eq!(das.shape(), &[1, 120, 120]);
    assert!(mean
        .iter()
        .all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
    assert!(
        das.iter().any(|v| *v == 1.0),
        "the DAS image is normalised to its peak"
    );
    let failed: Array1<u8> = dataset(&f, "pleura/recon/failed");
    let aer: Array1<f64> = dataset(&f, "pleura/recon/aeration");
    let ci: Array2<f64> = dataset(&f, "pleura/recon/aeration_ci");
    assert_eq!(failed[0], 0);
    assert!((0.0..=1.0).contains(&aer[0]), "{}", aer[0]);
    assert!(ci[[0, 0]] <= aer[0] && aer[0] <= ci[[0, 1]], "{ci}");
}

/// A recording whose samples carry the scanner's time-gain compensation (a 30 dB ramp
/// over the record, written as zea's `scan/tgc_gain_curve`) reconstructs as the same
/// recording without it: the posterior stage divides the curve out before the DAS image,
/// the RF term and the echo power, so the operator sees the echo it models.
#[test]
fn replay_divides_out_the_recorded_tgc() {
    let dir = tempfile::tempdir().expect("tmp");
    let g = tiny_grid();
    let model = dir.path().join("model");
    write_model(&model, &g, 1);
    let plain = dir.path().join("plain.zea.h5");
    write_recording(&plain, &g, &g, 2, None);
    let gained = dir.path().join("tgc.zea.h5");
    std::fs::copy(&plain, &gained).expect("copy");
    let curve = common::lung::add_tgc(&gained, 30.0);
    let read = pleura::recording::Recording::open(&gained).expect("open");
    assert_eq!(read.scan().tgc_gain_curve.as_ref(), Some(&curve));

    let replay = |input: &Path, out: &Path| {
        let run = common::pleura()
            .args(["replay"])
            .arg(input)
            .arg("--out")
            .arg(out)
            .arg("--model")
            .arg(&model)
            .args(["--sampler", "dds", "--steps", "10", "--samples", "3"])
            .args(["--device", "cpu", "--config"])
            .arg(common::repo().join("config/pleura.toml"))
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "replay failed: {stderr}");
        let f = hdf5::File::open(out).expect("open out");
        let mean: Array3<f32> = dataset(&f, "pleura/recon/mean");
        let das: Array3<f32> = dataset(&f, "pleura/recon/das");
        let aer: Array1<f64> = dataset(&f, "pleura/recon/aeration");
        (mean, das, aer)
    };
    let (m0, d0, a0) = replay(&plain, &dir.path().join("plain.out.h5"));
    let (m1, d1, a1) = replay(&gained, &dir.path().join("tgc.out.h5"));
    let worst = |x: &Array3<f32>, y: &Array3<f32>| {
        x.iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max)
    };
    assert!(worst(&d0, &d1) < 1e-4, "DAS differs by {}", worst(&d0, &d1));
    assert!(
        worst(&m0, &m1) < 1e-3,
        "mean differs by {}",
        worst(&m0, &m1)
    );
    for (p, q) in a0.iter().zip(&a1) {
        assert!((p - q).abs() < 1e-3, "aeration {a0} against {a1}");
    }
}
