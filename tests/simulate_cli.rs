//! `pleura simulate` -> `reconstruct-baseline` -> `eval` on a tiny grid, and the image set
//! read back with h5py (what the diffusion prior's training reads).

mod common;

use pleura::eval::files::{Recon, Truth};
use pleura::recording::Recording;

fn run(args: &[&str]) -> String {
    let out = common::pleura().args(args).output().expect("run pleura");
    assert!(
        out.status.success(),
        "pleura {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `pleura simulate` of the tests' small sequence (seed 5, 2 frames, 12 x 12 pixels of
/// 1.2 mm, 24 elements, 2 plane waves, 30 dB) into `out`, with `extra` arguments.
fn simulate(out: &std::path::Path, extra: &[&str]) {
    let out = out.to_str().expect("path");
    let mut args = vec![
        "simulate",
        "--out",
        out,
        "--frames",
        "2",
        "--seed",
        "5",
        "--grid",
        "12,12,1.2,2",
        "--angles",
        "-5,5",
        "--snr-db",
        "30",
        "--elements",
        "24",
    ];
    args.extend_from_slice(extra);
    run(&args);
}

#[test]
fn simulate_reconstruct_evaluate() {
    let dir = common::tempdir();
    let sim = dir.path().join("sim.h5");
    let sim_s = sim.to_str().expect("path");
    simulate(&sim, &[]);
    let rec = Recording::open(&sim).expect("open simulated recording");
    assert_eq!(rec.n_frames(), 2);
    assert_eq!(rec.scan().n_tx(), 2);
    assert_eq!(rec.scan().n_el(), 24);
    let truth = Truth::read(&sim).expect("truth");
    assert_eq!(truth.aeration.dim(), (2, 12, 12));
    assert!(truth.lung_mask.is_some());
    // The same seed gives the same file contents.
    let again = dir.path().join("again.h5");
    simulate(&again, &[]);
    let rec2 = Recording::open(&again).expect("open");
    assert_eq!(
        rec.read_frame(1).expect("f").data,
        rec2.read_frame(1).expect("f").data
    );
    // Speckle by default, said in the file; --scatterers born makes other RF of the same
    // phantom.
    let scatterers = |p: &std::path::Path| -> String {
        let f = hdf5::File::open(p).expect("open");
        let a: hdf5::types::VarLenUnicode = f
            .group("pleura")
            .and_then(|g| g.attr("scatterers"))
            .and_then(|a| a.read_scalar())
            .expect("pleura/ scatterers attribute");
        a.to_string()
    };
    assert!(scatterers(&sim).starts_with("speckle: 4 scatterers per pixel"));
    let born = dir.path().join("born.h5");
    simulate(&born, &["--scatterers", "born"]);
    assert!(scatterers(&born).starts_with("first-order Born model"));
    assert_eq!(Truth::read(&born).expect("truth").aeration, truth.aeration);
    assert_ne!(
        Recording::open(&born)
            .expect("open")
            .read_frame(1)
            .expect("f")
            .data,
        rec.read_frame(1).expect("f").data
    );

    for method in ["das", "tikhonov"] {
        let out = dir.path().join(format!("{method}.h5"));
        run(&[
            "reconstruct-baseline",
            sim_s,
            "--method",
            method,
            "--out",
            out.to_str().expect("p"),
        ]);
        let r = Recon::read(&out).expect("recon");
        assert_eq!(r.mean.dim(), (2, 12, 12));
        assert!(r.mean.iter().all(|v| (0.0..=1.0).contains(v)));
        let json = run(&["eval", out.to_str().expect("p"), "--json"]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(v["frames"].as_array().map(|a| a.len()), Some(2));
        let psnr = v["mean_psnr_db"].as_f64().expect("psnr");
        assert!(psnr.is_finite() && psnr > 5.0, "{method}: PSNR {psnr}");
        // Classical methods spend no network evaluations but record their time per frame.
        assert!(
            v["nfe_per_frame"].is_null(),
            "{method}: {}",
            v["nfe_per_frame"]
        );
        let secs = v["seconds_per_frame"].as_f64().expect("seconds");
        assert!(secs > 0.0 && secs < 60.0, "{method}: {secs} s/frame");
    }
}

#[test]
fn images_only_set_reads_in_h5py() {
    let dir = common::tempdir();
    let p = dir.path().join("images.h5");
    let png = dir.path().join("png");
    run(&[
        "simulate",
        "--images-only",
        "--out",
        p.to_str().expect("p"),
        "--frames",
        "5",
        "--frames-per-seed",
        "2",
        "--seed",
        "3",
        "--grid",
        "16,8,0.5,2",
        "--png",
        png.to_str().expect("p"),
    ]);
    let out = common::run_python(
        "import sys, h5py, numpy as np\n\
         f = h5py.File(sys.argv[1], 'r')\n\
         im = f['images'][...]\n\
         print(im.shape, im.dtype, float(im.min()) >= 0, float(im.max()) <= 1, \
         f['grid_x'].shape[0], f['grid_z'].shape[0], \
         round(float(f['grid_x'][0]) * 1e3, 3), len(f['images'].attrs['grid_z']))",
        &[p.to_str().expect("p")],
    );
    assert_eq!(out.trim(), "(5, 8, 16) float32 True True 16 8 -3.75 8");
    assert!(png.join("frame_0004.png").exists());
}
