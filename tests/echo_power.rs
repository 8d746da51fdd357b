//! The echo data term on RF pleura did not make (docs/reconstruction.md, "Echo power"):
//! `pleura calibrate` fits PyMUST simus's depth gain on two bundled simus frames of known
//! aeration (phantoms 12001, 12002), and `pleura replay` with that calibration reconstructs
//! a third (phantom 12003) from its echo power, with the shipped model and sampler.

mod common;

use std::path::Path;
use std::process::Output;

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn testdata(name: &str) -> std::path::PathBuf {
    common::repo().join("testdata").join(name)
}

/// `pleura eval --json` of `recon` against the bundled truth: the first frame's object.
fn eval(recon: &Path, truth: &Path) -> serde_json::Value {
    let out = common::pleura()
        .arg("eval")
        .arg(recon)
        .arg("--truth")
        .arg(truth)
        .arg("--json")
        .output()
        .expect("run eval");
    let v: serde_json::Value = serde_json::from_str(&ok(out, "eval")).expect("eval json");
    v["frames"][0].clone()
}

fn replay(input: &Path, out: &Path, calibration: Option<&Path>) {
    let mut cmd = common::pleura();
    cmd.arg("replay")
        .arg(input)
        .arg("--out")
        .arg(out)
        .arg("--config")
        .arg(common::repo().join("config/pleura.toml"))
        .arg("--model")
        .arg(testdata("model"))
        .args(["--device", "cpu"]);
    if let Some(c) = calibration {
        cmd.arg("--calibration").arg(c);
    }
    ok(cmd.output().expect("run replay"), "replay");
}

#[test]
fn a_calibrated_system_is_reconstructed_from_its_echo_power() {
    let dir = common::tempdir();
    let cal = dir.path().join("calibration.toml");
    let printed = ok(
        common::pleura()
            .arg("calibrate")
            .arg(testdata("simus_lung_12001.zea.h5"))
            .arg(testdata("simus_lung_12002.zea.h5"))
            .arg("--out")
            .arg(&cal)
            .arg("--config")
            .arg(common::repo().join("config/pleura.toml"))
            .arg("--model")
            .arg(testdata("model"))
            .args(["--device", "cpu"])
            .output()
            .expect("run calibrate"),
        "calibrate",
    );
    assert!(printed.contains("from 2 frames"), "{printed}");
    // Two frames are too few for the response line (at least 4): the interval is widened
    // by the frame-to-frame echo level instead.
    assert!(printed.contains("echo response: not fitted"), "{printed}");
    let written: toml::Value = toml::from_str(&std::fs::read_to_string(&cal).unwrap()).unwrap();
    let gain = written["depth_gain"]["gain_db"].as_float().unwrap();
    let slope = written["depth_gain"]["slope_db_per_cm"].as_float().unwrap();
    // simus's gain on this scan: 83.5-83.6 dB and -2.6 to -2.8 dB/cm from ten other
    // phantoms each (docs/BENCHMARKS.md, "Echo power with a calibration").
    assert!((gain - 83.6).abs() < 1.0, "gain {gain} dB");
    assert!((-3.5..-2.0).contains(&slope), "slope {slope} dB/cm");
    assert!(written["frame_sd_db"].as_float().unwrap() > 0.0);

    let input = testdata("simus_lung_12003.zea.h5");
    let out = dir.path().join("echo.h5");
    replay(&input, &out, Some(&cal));
    let f = hdf5::File::open(&out).unwrap();
    assert_eq!(common::h5_strings(&f, "pleura/recon/data_term"), ["echo"]);
    let poor: Vec<u8> = common::h5_read(&f, "pleura/recon/poor_fit");
    assert_eq!(poor, [1], "the operator does not explain simus's RF");
    let e = eval(&out, &input);

    let das = dir.path().join("das.h5");
    ok(
        common::pleura()
            .arg("reconstruct-baseline")
            .arg(&input)
            .args(["--method", "das", "--out"])
            .arg(&das)
            .output()
            .expect("run das"),
        "das",
    );
    let d = eval(&das, &input);
    let (psnr, psnr_das) = (
        e["psnr_db"].as_f64().unwrap(),
        d["psnr_db"].as_f64().unwrap(),
    );
    let truth = e["mean_aeration_truth"].as_f64().unwrap();
    let published = e["published_aeration"].as_f64().unwrap();
    // Measured: 18.77 dB against DAS's 16.02; 0.344 against the truth's 0.323, category 0,
    // the interval holding it.
    assert!(psnr > psnr_das + 2.0, "PSNR {psnr} dB, DAS {psnr_das} dB");
    assert!(
        (published - truth).abs() < 0.05,
        "aeration {published}, truth {truth}"
    );
    assert_eq!(e["published_category"], e["category_truth"]);
    assert_eq!(e["mean_ci_covers"], serde_json::json!(true), "{e}");

    // Without the calibration the same frame says that its data do not tell: the RF draw
    // under model error, far from the truth or not, with a wide interval.
    let out = dir.path().join("rf.h5");
    replay(&input, &out, None);
    let f = hdf5::File::open(&out).unwrap();
    assert_eq!(common::h5_strings(&f, "pleura/recon/data_term"), ["rf"]);
    let ci: Vec<f64> = common::h5_read(&f, "pleura/recon/aeration_ci");
    assert!(ci[1] - ci[0] > 0.2, "interval {ci:?}");
}
