//! Interoperability with the real zea package (0.1.8, in `.venv-zea`), both ways:
//! files zea's `File.create` writes (one track and two interleaved tracks; Blosc, LZF and
//! gzip) go through `pleura info`, `beamform` and `replay`; what pleura writes (recordings
//! in both layouts, replay's output) passes zea's `validate_file` and `validate_spec`.

mod common;

use std::ffi::OsStr;
use std::path::Path;

use ndarray::{Array1, Array3};
use pleura::recording::{Layout, Recording, TrackChoice};

/// The legacy-layout recording the zea peer writes again with `zea.File.create`.
fn source() -> std::path::PathBuf {
    common::testdata("lung_sequence.zea.h5")
}

fn dataset<T: hdf5::H5Type, D: ndarray::Dimension>(
    path: &Path,
    name: &str,
) -> ndarray::Array<T, D> {
    hdf5::File::open(path)
        .and_then(|f| f.dataset(name))
        .and_then(|d| d.read::<T, D>())
        .unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()))
}

fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("run pleura");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pleura failed ({}):\n{stderr}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A quick posterior replay of the first frame (fixed seed, 10 DDS steps, 3 samples).
fn replay(input: &Path, out: &Path, track: Option<&str>) {
    let mut cmd = common::pleura();
    cmd.arg("replay")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(["--max-frames", "1", "--sampler", "dds", "--steps", "10"])
        .args([
            "--samples",
            "3",
            "--seed",
            "7",
            "--device",
            "cpu",
            "--config",
        ])
        .arg(common::repo().join("config/pleura.toml"))
        .arg("--model")
        .arg(common::testdata("model"));
    if let Some(t) = track {
        cmd.args(["--track", t]);
    }
    run_ok(&mut cmd);
}

#[test]
fn files_zea_writes_go_through_info_beamform_and_replay() {
    let dir = common::tempdir();
    let starts = common::zea_peer(&[
        OsStr::new("write"),
        source().as_os_str(),
        dir.path().as_os_str(),
    ]);
    let legacy = Recording::open(source()).unwrap();
    assert_eq!(legacy.layout(), Layout::Legacy);

    // One track, in each of the compressions zea writes: the same frames and scan.
    for name in ["blosc", "lzf", "gzip"] {
        let path = dir.path().join(format!("single-{name}.hdf5"));
        let rec = Recording::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(rec.layout(), Layout::Zea);
        assert_eq!(rec.tracks().len(), 1);
        assert_eq!(rec.probe_name(), "pleura-sim-linear-64");
        assert_eq!(rec.us_machine(), "zea peer");
        assert_eq!(rec.n_frames(), legacy.n_frames());
        let (a, b) = (rec.scan(), legacy.scan());
        assert_eq!(a.probe_geometry.dim(), b.probe_geometry.dim());
        for (x, y) in a.probe_geometry.iter().zip(&b.probe_geometry) {
            assert!((x - y).abs() < 1e-9, "{name}: probe_geometry {x} != {y}");
        }
        assert_eq!(a.sampling_frequency, b.sampling_frequency);
        assert_eq!(a.sound_speed, b.sound_speed);
        assert_eq!(a.fractional_bandwidth, b.fractional_bandwidth);
        assert!((a.element_width.unwrap() - b.element_width.unwrap()).abs() < 1e-9);
        assert_eq!(a.polar_angles.len(), 3);
        for i in 0..rec.n_frames() {
            let (f, g) = (rec.read_frame(i).unwrap(), legacy.read_frame(i).unwrap());
            assert_eq!(f.data, g.data, "{name}: frame {i}");
            // zea keeps time_to_next_transmit in float32: equal to well under 1 us.
            assert!(
                f.timestamp_ns.abs_diff(g.timestamp_ns) < 1000,
                "{name}: frame {i}"
            );
        }
    }

    // Two tracks interleaved by a track_schedule: the first with channel data by default,
    // either by index or label, with the frame times zea itself computes.
    let multi = dir.path().join("multi.hdf5");
    let all = Recording::open(&multi).unwrap();
    assert_eq!(all.track().label.as_deref(), Some("all-angles"));
    assert_eq!(all.scan().n_tx(), 3);
    let zero = Recording::open_track(&multi, Some(&"zero-angle".parse().unwrap())).unwrap();
    assert_eq!(zero.track().index, 1);
    assert_eq!(zero.scan().n_tx(), 1);
    assert_eq!(zero.scan().polar_angles, vec![0.0]);
    for (rec, label) in [(&all, "all-angles"), (&zero, "zero-angle")] {
        let want: Vec<u64> = serde_json::from_value(starts[label].clone()).unwrap();
        assert_eq!(want.len(), 4);
        for (got, want) in rec.timestamps_ns().iter().zip(&want) {
            assert!(got.abs_diff(*want) < 100, "{label}: {got} != {want}");
        }
    }
    let f = zero.read_frame(2).unwrap();
    let g = legacy.read_frame(2).unwrap();
    assert_eq!(
        f.data.index_axis(ndarray::Axis(0), 0),
        g.data.index_axis(ndarray::Axis(0), 1)
    );
    let err = Recording::open_track(&multi, Some(&TrackChoice::Index(2))).unwrap_err();
    assert!(
        err.to_string()
            .contains("no such track; the file has 0 (\"all-angles\"), 1 (\"zero-angle\")"),
        "{err}"
    );

    // pleura info lists the tracks.
    let info: serde_json::Value = serde_json::from_str(&run_ok(
        common::pleura()
            .args(["info", "--json", "--track", "1"])
            .arg(&multi),
    ))
    .unwrap();
    assert_eq!(info["layout"], "zea");
    assert_eq!(info["track"], 1);
    assert_eq!(info["tracks"][0]["label"], "all-angles");
    assert_eq!(
        info["tracks"][1]["raw_shape"],
        serde_json::json!([4, 1, 778, 64, 1])
    );
    assert_eq!(info["transmits"].as_array().unwrap().len(), 1);

    // beamform: the zea copy gives the legacy file's images; the second track beamforms.
    let bf = |input: &Path, out: &str, track: Option<&str>| -> Array3<f32> {
        let out = dir.path().join(out);
        let mut cmd = common::pleura();
        cmd.arg("beamform").arg(input).arg("--out").arg(&out);
        if let Some(t) = track {
            cmd.args(["--track", t]);
        }
        run_ok(&mut cmd);
        dataset(&out, "envelope")
    };
    let from_legacy = bf(&source(), "bf-legacy.h5", None);
    let from_zea = bf(&dir.path().join("single-blosc.hdf5"), "bf-zea.h5", None);
    assert_eq!(from_legacy.dim(), from_zea.dim());
    let peak = from_legacy.iter().fold(0f32, |m, v| m.max(*v));
    let diff = (&from_legacy - &from_zea)
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        peak > 0.0 && diff <= 1e-4 * peak,
        "diff {diff} of peak {peak}"
    );
    let single = bf(&multi, "bf-zero.h5", Some("zero-angle"));
    assert_eq!(single.dim().0, 4);
    assert!(single.iter().all(|v| v.is_finite()) && single.iter().any(|v| *v > 0.0));

    // replay: the zea copy reconstructs like the legacy file, and zea opens the output.
    let out_legacy = dir.path().join("replay-legacy.h5");
    let out_zea = dir.path().join("replay-zea.h5");
    replay(&source(), &out_legacy, None);
    replay(&multi, &out_zea, Some("all-angles"));
    let a: Array1<f64> = dataset(&out_legacy, "pleura/recon/aeration");
    let b: Array1<f64> = dataset(&out_zea, "pleura/recon/aeration");
    assert!(a[0].is_finite() && (a[0] - b[0]).abs() < 0.01, "{a} vs {b}");
    let checked = common::zea_peer(&[OsStr::new("check"), out_zea.as_os_str()]);
    let c = &checked[0];
    assert_eq!(c["validate_file"], "ok", "{c}");
    assert_eq!(c["validate_spec"], "ok", "{c}");
    assert_eq!(c["image_shape"], serde_json::json!([1, 64, 64]), "{c}");
    assert_eq!(c["image_dtype"], "uint8");
    let mean: Array3<f32> = dataset(&out_zea, "pleura/recon/mean");
    let want_max = mean.iter().fold(0f32, |m, v| m.max(*v));
    assert_eq!(c["image_max"], (want_max * 255.0).round() as u64, "{c}");
    let gx: Array1<f64> = dataset(&out_zea, "pleura/recon/grid_x");
    let gz: Array1<f64> = dataset(&out_zea, "pleura/recon/grid_z");
    let extent: Vec<f64> = serde_json::from_value(c["image_extent_m"].clone()).unwrap();
    for (got, want) in extent
        .iter()
        .zip([gx[0], gx[gx.len() - 1], gz[0], gz[gz.len() - 1]])
    {
        assert!((got - want).abs() < 1e-7, "extent {extent:?}");
    }
    // zea says this of every file without channel data, its own included.
    let warnings: Vec<String> = serde_json::from_value(c["warnings"].clone()).unwrap();
    assert!(
        warnings.iter().all(|w| w.contains("track_schedule")),
        "{warnings:?}"
    );
}

#[test]
fn zea_accepts_what_pleura_writes() {
    let dir = common::tempdir();
    let sim = |name: &str, layout: &str, tgc: &str| {
        let out = dir.path().join(name);
        run_ok(
            common::pleura()
                .args([
                    "simulate", "--frames", "2", "--seed", "11", "--layout", layout,
                ])
                .args(["--tgc-db-per-cm", tgc])
                .arg("--out")
                .arg(&out),
        );
        out
    };
    // The current layout with a scanner's TGC (1.5 dB/cm), as zea's `scan/tgc_gain_curve`.
    let current = sim("current.zea.h5", "zea", "1.5");
    let legacy = sim("legacy.zea.h5", "legacy", "0");
    let checked = common::zea_peer(&[OsStr::new("check"), current.as_os_str(), legacy.as_os_str()]);

    let c = &checked[0];
    assert_eq!(c["validate_file"], "ok", "{c}");
    assert_eq!(c["validate_spec"], "ok", "{c}");
    assert_eq!(c["warnings"], serde_json::json!([]), "{c}");
    assert_eq!(c["probe_name"], "pleura-sim-linear-64");
    let rec = Recording::open(&current).unwrap();
    assert_eq!(rec.layout(), Layout::Zea);
    let tgc = rec
        .scan()
        .tgc_gain_curve
        .clone()
        .expect("the TGC curve read back");
    let want = serde_json::json!([tgc.len(), tgc[0], tgc[tgc.len() - 1]]);
    assert_eq!(c["tgc"], want, "zea reads the curve pleura wrote");
    // 1.5 dB/cm over the recorded depth, from the first sample at 0 m.
    let depth_cm = (tgc.len() - 1) as f64 / rec.scan().sampling_frequency * rec.scan().sound_speed
        / 2.0
        * 100.0;
    let last_db = 20.0 * tgc[tgc.len() - 1].log10();
    assert!(
        tgc[0] == 1.0 && (last_db - 1.5 * depth_cm).abs() < 1e-3,
        "{last_db} dB over {depth_cm} cm"
    );
    assert_eq!(
        c["raw_shape"],
        serde_json::json!([2, 3, rec.scan().n_ax, 64, 1])
    );
    let sum: f64 = (0..2)
        .map(|i| {
            rec.read_frame(i)
                .unwrap()
                .data
                .iter()
                .map(|v| f64::from(*v))
                .sum::<f64>()
        })
        .sum();
    let zea_sum = c["raw_sum"].as_f64().unwrap();
    assert!(
        (sum - zea_sum).abs() <= 1e-9 * sum.abs().max(1.0),
        "{sum} vs {zea_sum}"
    );

    // The legacy layout stays an option, and zea reads it as such.
    let l = &checked[1];
    assert_eq!(l["validate_file"], "ok", "{l}");
    let warnings: Vec<String> = serde_json::from_value(l["warnings"].clone()).unwrap();
    assert!(
        warnings.iter().any(|w| w.contains("legacy version of zea")),
        "{warnings:?}"
    );
    assert_eq!(Recording::open(&legacy).unwrap().layout(), Layout::Legacy);
}
