//! Beamforming: conformance with PyMUST on real data, first-principles checks on simulated
//! point scatterers, errors that name values.

mod common;

use ndarray::{Array2, Array3, Array4, Axis};
use pleura::beamform::bmode::{log_compress, max_of};
use pleura::beamform::{Apodization, Beamformer, DasOptions};
use pleura::grid::Grid;
use pleura::recording::{Recording, Scan};

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
    let f = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let b = Array3::from_shape_vec((shape[0], shape[1], shape[2]), std::fs::read(&out).unwrap())
        .unwrap();
    (b, f("x"), f("z"))
}

/// The default grid starts at the shallowest depth the recording holds: pwi_disk's first
/// sample comes 9.95 us after the transmit, 7.4 mm deep at 1480 m/s.
#[test]
fn default_grid_fits_a_recording_with_a_late_first_sample() {
    let rec = Recording::open(common::pwi_disk()).unwrap();
    let scan = rec.scan();
    let grid = Grid::default_for(scan).unwrap();
    let z_first = scan.sound_speed * scan.initial_times[0] / 2.0;
    assert!(
        grid.z[0] >= z_first,
        "grid starts at {} m, above the first sample's depth {z_first} m",
        grid.z[0]
    );
    let mut bf = Beamformer::new(scan, &grid, &DasOptions::default()).unwrap();
    let frame = rec.read_frame(0).unwrap();
    let iq = bf.beamform(frame.data.view()).unwrap();
    assert!(iq.iter().any(|v| v.norm() > 0.0));
}

#[test]
fn pwi_disk_matches_pymust_golden_bmode() {
    let rec = Recording::open(common::pwi_disk()).unwrap();
    let scan = rec.scan().clone();
    let n_frames = rec.n_frames();
    let (golden, gx, gz) = load_golden();
    let grid = Grid::new(gx, gz).unwrap();
    let opts = DasOptions {
        f_number: 1.1248,
        apodization: Apodization::Rect,
    };
    let mut bf = Beamformer::new(&scan, &grid, &opts).unwrap();
    let mut env = Array3::<f32>::zeros((n_frames, grid.nz(), grid.nx()));
    for i in 0..n_frames {
        let frame = rec.read_frame(i).unwrap();
        bf.envelope_into(frame.data.view(), env.index_axis_mut(Axis(0), i))
            .unwrap();
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

// ---------------------------------------------------------------------------------------
// First principles: simulated point scatterers (Huygens pulse-echo, see beamform::sim).

use pleura::beamform::sim::{linear_array_scan, simulate_rf, LinearArray, Scatterer, Transmit};
use pleura::beamform::BeamformError;
use pleura::testing::{linear_array, plane_wave, pulse, CENTER_FREQUENCY as FC, SOUND_SPEED as C};

/// 64 elements, 800 samples from 2 us.
fn array64() -> LinearArray {
    linear_array(64, 800, 2e-6)
}

/// A grid of `half_x` x `half_z` around (x0, z0), step lambda / 20.
fn grid_around(x0: f64, z0: f64, half_x: f64, half_z: f64) -> Grid {
    let step = C / FC / 20.0;
    let nx = (2.0 * half_x / step).round() as usize + 1;
    let nz = (2.0 * half_z / step).round() as usize + 1;
    Grid::linspace(
        (x0 - half_x, x0 + half_x, nx),
        (z0 - half_z, z0 + half_z, nz),
    )
    .unwrap()
}

/// Envelope image of one simulated frame.
fn image(scan: &Scan, grid: &Grid, opts: &DasOptions, s: &[Scatterer]) -> Array2<f32> {
    let rf = simulate_rf(scan, s, &pulse());
    let mut bf = Beamformer::new(scan, grid, opts).unwrap();
    let mut env = Array2::zeros((grid.nz(), grid.nx()));
    bf.envelope_into(rf.view(), env.view_mut()).unwrap();
    env
}

/// (x, z) of the envelope's maximum and the maximum.
fn peak(env: &Array2<f32>, grid: &Grid) -> (f64, f64, usize, f32) {
    let (mut best, mut at) = (f32::MIN, (0, 0));
    for ((iz, ix), &v) in env.indexed_iter() {
        if v > best {
            best = v;
            at = (iz, ix);
        }
    }
    (grid.x[at.1], grid.z[at.0], at.0, best)
}

/// -6 dB full width along x of the row through the peak (linear interpolation).
fn lateral_width(env: &Array2<f32>, grid: &Grid) -> f64 {
    let (_, _, iz, m) = peak(env, grid);
    let row = env.row(iz);
    let half = m * 0.5;
    let ip = row.iter().position(|&v| v == m).unwrap();
    let x = &grid.x;
    let mut l = ip;
    while l > 0 && row[l - 1] >= half {
        l -= 1;
    }
    let mut r = ip;
    while r + 1 < row.len() && row[r + 1] >= half {
        r += 1;
    }
    assert!(
        l > 0 && r + 1 < row.len(),
        "main lobe wider than the window"
    );
    let cross =
        |a: usize, b: usize| x[a] + (x[b] - x[a]) * ((half - row[a]) / (row[b] - row[a])) as f64;
    cross(r, r + 1) - cross(l - 1, l)
}

/// Peak side-lobe level, dB: the largest envelope of the peak's row farther than `exclude`
/// from the peak, relative to the peak.
fn side_lobe_db(env: &Array2<f32>, grid: &Grid, exclude: f64) -> f64 {
    let (xp, _, iz, m) = peak(env, grid);
    let side = env
        .row(iz)
        .iter()
        .zip(&grid.x)
        .filter(|(_, &x)| (x - xp).abs() > exclude)
        .map(|(&v, _)| v)
        .fold(0.0f32, f32::max);
    20.0 * (side / m).log10() as f64
}

/// Hann-apodized receive aperture: no element enters or leaves the sum with a jump as the
/// pixel moves, so the peak is not pulled towards where one more element counts (which a
/// rectangular aperture does by up to a few grid steps).
const HANN_F2: DasOptions = DasOptions {
    f_number: 2.0,
    apodization: Apodization::Hann,
};

const RECT_F2: DasOptions = DasOptions {
    f_number: 2.0,
    apodization: Apodization::Rect,
};

#[test]
fn steered_plane_wave_puts_the_peak_on_the_scatterer() {
    let lambda = C / FC;
    let (x0, z0) = (1.2e-3, 15e-3);
    let s = [Scatterer {
        x: x0,
        z: z0,
        amplitude: 1.0,
    }];
    let grid = grid_around(x0, z0, 2e-3, 1e-3);
    for deg in [-10.0, 0.0, 7.0] {
        let scan = linear_array_scan(&array64(), &[plane_wave(deg)]);
        let env = image(&scan, &grid, &HANN_F2, &s);
        let (x, z, _, _) = peak(&env, &grid);
        println!(
            "plane wave {deg} deg: peak error dx = {:.1} um, dz = {:.1} um (lambda/10 = {:.1} um)",
            (x - x0) * 1e6,
            (z - z0) * 1e6,
            lambda / 10.0 * 1e6
        );
        assert!(
            (x - x0).abs() <= lambda / 10.0 && (z - z0).abs() <= lambda / 10.0,
            "{deg} deg: peak at ({x}, {z})"
        );
    }
}

#[test]
fn lateral_resolution_follows_lambda_f_number() {
    // Plane-wave transmit, uniform receive aperture of width D = z / F: the lateral
    // point-spread function is the aperture's sinc, whose -6 dB full width is
    // 1.2067 lambda z / D = 1.2067 lambda F (sinc(u) = 1/2 at u = 0.6034).
    let lambda = C / FC;
    let (x0, z0) = (0.0, 15e-3);
    let s = [Scatterer {
        x: x0,
        z: z0,
        amplitude: 1.0,
    }];
    let grid = grid_around(x0, z0, 3e-3, 0.5e-3);
    let scan = linear_array_scan(&array64(), &[plane_wave(0.0)]);
    for f in [1.5, 2.5] {
        let opts = DasOptions {
            f_number: f,
            apodization: Apodization::Rect,
        };
        let w = lateral_width(&image(&scan, &grid, &opts, &s), &grid);
        let expected = 1.2067 * lambda * f;
        println!(
            "F# {f}: lateral -6 dB width {:.3} mm, expected {:.3} mm (+-15 %)",
            w * 1e3,
            expected * 1e3
        );
        assert!(
            (w / expected - 1.0).abs() <= 0.15,
            "F# {f}: width {w}, expected {expected}"
        );
    }
}

#[test]
fn compounding_angles_lowers_side_lobes() {
    let lambda = C / FC;
    let (x0, z0) = (0.0, 15e-3);
    let s = [Scatterer {
        x: x0,
        z: z0,
        amplitude: 1.0,
    }];
    let grid = grid_around(x0, z0, 4e-3, 0.5e-3);
    let exclude = 1.5 * lambda * RECT_F2.f_number;
    let single = image(
        &linear_array_scan(&array64(), &[plane_wave(0.0)]),
        &grid,
        &RECT_F2,
        &s,
    );
    let angles: Vec<Transmit> = (-3..=3).map(|k| plane_wave(4.0 * k as f64)).collect();
    let compound = image(&linear_array_scan(&array64(), &angles), &grid, &RECT_F2, &s);
    let (p1, p7) = (
        side_lobe_db(&single, &grid, exclude),
        side_lobe_db(&compound, &grid, exclude),
    );
    println!("peak side lobe: 1 angle {p1:.1} dB, 7 angles (-12..12 deg) {p7:.1} dB");
    assert!(p7 <= p1 - 6.0, "compounding: {p7} dB vs single {p1} dB");
    let (x, z, _, _) = peak(&compound, &grid);
    assert!((x - x0).abs() <= lambda / 10.0 && (z - z0).abs() <= lambda / 10.0);
}

#[test]
fn focused_and_diverging_waves_put_the_peak_on_the_scatterer() {
    let lambda = C / FC;
    let (x0, z0) = (0.5e-3, 18e-3);
    let s = [Scatterer {
        x: x0,
        z: z0,
        amplitude: 1.0,
    }];
    let grid = grid_around(x0, z0, 1.5e-3, 1e-3);
    let cases = [
        ("focused at 30 mm (scatterer before the focus)", 30e-3, 0.0),
        ("focused at 10 mm (scatterer beyond the focus)", 10e-3, 0.0),
        ("focused at 25 mm, steered 3 deg", 25e-3, 3.0),
        ("diverging from 10 mm behind", -10e-3, 0.0),
        ("diverging from 6 mm behind, steered -5 deg", -6e-3, -5.0),
    ];
    for (name, focus, deg) in cases {
        let scan = linear_array_scan(
            &array64(),
            &[Transmit {
                polar_angle: f64::to_radians(deg),
                focus_distance: focus,
            }],
        );
        let env = image(&scan, &grid, &HANN_F2, &s);
        let (x, z, _, _) = peak(&env, &grid);
        println!(
            "{name}: dx = {:.1} um, dz = {:.1} um",
            (x - x0) * 1e6,
            (z - z0) * 1e6
        );
        assert!(
            (x - x0).abs() <= lambda / 10.0 && (z - z0).abs() <= lambda / 10.0,
            "{name}: peak at ({x}, {z})"
        );
    }
    // Control: the same focused-beyond-focus echoes beamformed as if the transmit had
    // been an unsteered plane wave land millimetres too shallow (transmit path through the
    // 10 mm focus vs straight down), so the check above does test the transmit model.
    let focused = linear_array_scan(
        &array64(),
        &[Transmit {
            polar_angle: 0.0,
            focus_distance: 10e-3,
        }],
    );
    let rf = simulate_rf(&focused, &s, &pulse());
    let mut as_plane = focused.clone();
    as_plane.focus_distances = vec![f64::INFINITY];
    as_plane.t0_delays.fill(0.0);
    let deep = grid_around(x0, z0 + 1.5e-3, 1.5e-3, 2.5e-3);
    let mut bf = Beamformer::new(&as_plane, &deep, &HANN_F2).unwrap();
    let mut env = Array2::zeros((deep.nz(), deep.nx()));
    bf.envelope_into(rf.view(), env.view_mut()).unwrap();
    let (_, z, _, _) = peak(&env, &deep);
    println!(
        "control, focused echoes beamformed as a plane wave: dz = {:.2} mm",
        (z - z0) * 1e3
    );
    assert!(
        (z - z0).abs() > 5.0 * lambda,
        "wrong transmit model still at {z}"
    );
}

#[test]
fn result_does_not_depend_on_element_order() {
    let (x0, z0) = (-0.8e-3, 12e-3);
    let s = [
        Scatterer {
            x: x0,
            z: z0,
            amplitude: 1.0,
        },
        Scatterer {
            x: 2e-3,
            z: 13e-3,
            amplitude: 0.5,
        },
    ];
    let grid = grid_around(0.0, 12.5e-3, 3e-3, 1.5e-3);
    let scan = linear_array_scan(&array64(), &[plane_wave(-6.0), plane_wave(5.0)]);
    let rf = simulate_rf(&scan, &s, &pulse());
    let opts = DasOptions {
        f_number: 1.7,
        apodization: Apodization::Hann,
    };
    let mut bf = Beamformer::new(&scan, &grid, &opts).unwrap();
    let reference = bf.beamform(rf.view()).unwrap().to_owned();

    // A fixed pseudo-random permutation of the 64 elements (multiplication by 23 mod 64).
    let perm: Vec<usize> = (0..64).map(|i| (i * 23 + 5) % 64).collect();
    let mut shuffled = scan.clone();
    let mut rf2 = rf.clone();
    for (new, &old) in perm.iter().enumerate() {
        shuffled
            .probe_geometry
            .row_mut(new)
            .assign(&scan.probe_geometry.row(old));
        shuffled
            .t0_delays
            .column_mut(new)
            .assign(&scan.t0_delays.column(old));
        shuffled
            .tx_apodizations
            .column_mut(new)
            .assign(&scan.tx_apodizations.column(old));
        rf2.index_axis_mut(Axis(2), new)
            .assign(&rf.index_axis(Axis(2), old));
    }
    let mut bf2 = Beamformer::new(&shuffled, &grid, &opts).unwrap();
    let permuted = bf2.beamform(rf2.view()).unwrap().to_owned();
    let m = reference.iter().map(|v| v.norm()).fold(0.0f32, f32::max);
    let worst = reference
        .iter()
        .zip(&permuted)
        .map(|(a, b)| (a - b).norm())
        .fold(0.0f32, f32::max);
    assert!(m > 0.0);
    assert!(worst <= 1e-4 * m, "largest difference {worst} of peak {m}");
}

#[test]
fn iq_input_beamforms_like_rf() {
    // The same scene stored as I/Q (demodulated at fc, zea phase convention: t from the
    // first sample) must give the same image as the RF.
    let s = [Scatterer {
        x: 0.4e-3,
        z: 14e-3,
        amplitude: 1.0,
    }];
    let scan = linear_array_scan(&array64(), &[plane_wave(0.0), plane_wave(8.0)]);
    let grid = grid_around(0.4e-3, 14e-3, 1.5e-3, 1e-3);
    let rf = simulate_rf(&scan, &s, &pulse());
    let demod = pleura::beamform::demod::Demodulator::for_scan(&scan).unwrap();
    let (n_tx, n_ax, n_el) = (scan.n_tx(), scan.n_ax, scan.n_el());
    let mut iq = Array4::<f32>::zeros((n_tx, n_ax, n_el, 2));
    let mut out = vec![num_complex::Complex32::default(); n_ax];
    let mut scratch = demod.scratch();
    for k in 0..n_tx {
        for e in 0..n_el {
            demod.demodulate(rf.slice(ndarray::s![k, .., e, 0]), &mut out, &mut scratch);
            for (n, v) in out.iter().enumerate() {
                iq[[k, n, e, 0]] = v.re;
                iq[[k, n, e, 1]] = v.im;
            }
        }
    }
    let mut iq_scan = scan.clone();
    iq_scan.n_ch = 2;
    let from_rf = image(&scan, &grid, &RECT_F2, &s);
    let mut bf = Beamformer::new(&iq_scan, &grid, &RECT_F2).unwrap();
    let mut from_iq = Array2::zeros((grid.nz(), grid.nx()));
    bf.envelope_into(iq.view(), from_iq.view_mut()).unwrap();
    let m = max_of(from_rf.view());
    let worst = from_rf
        .iter()
        .zip(&from_iq)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-4 * m, "largest difference {worst} of peak {m}");
}

#[test]
fn demodulation_matches_pymust_rf2iq() {
    // Bandpass-sampled RF like pwi_disk (fc 5 MHz, fs 6.67 MHz, 15 % bandwidth): our
    // frequency-domain filtfilt equivalent against PyMUST rf2iq itself, away from the ends.
    let script = r#"
import numpy as np, json, pymust
fs, fc, n = 20e6 / 3, 5e6, 334
t = np.arange(n) / fs
rng = np.random.default_rng(7)
rf = np.zeros(n)
for _ in range(12):
    t0, a = rng.uniform(0, n / fs), rng.normal()
    rf += a * np.exp(-((t - t0) / 0.6e-6) ** 2) * np.cos(2 * np.pi * fc * (t - t0) + rng.uniform(0, 6.3))
p = pymust.utils.Param(); p.fs = fs; p.fc = fc; p.bandwidth = 15
iq = pymust.rf2iq(rf.reshape(-1, 1).astype(np.float64), p)[:, 0]
print(json.dumps({'rf': rf.tolist(), 're': iq.real.tolist(), 'im': iq.imag.tolist()}))
"#;
    let v: serde_json::Value = serde_json::from_str(&common::run_python(script, &[])).unwrap();
    let get = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let (rf, re, im) = (get("rf"), get("re"), get("im"));
    let n = rf.len();
    let mut scan = linear_array_scan(&array64(), &[plane_wave(0.0)]);
    scan.sampling_frequency = 20e6 / 3.0;
    scan.n_ax = n;
    scan.fractional_bandwidth = Some(0.15);
    let d = pleura::beamform::demod::Demodulator::for_scan(&scan).unwrap();
    let rf32 = ndarray::Array1::from_iter(rf.iter().map(|&x| x as f32));
    let mut out = vec![num_complex::Complex32::default(); n];
    d.demodulate(rf32.view(), &mut out, &mut d.scratch());
    let peak = re
        .iter()
        .zip(&im)
        .map(|(a, b)| a.hypot(*b))
        .fold(0.0, f64::max);
    let edge = 40;
    let worst = (edge..n - edge)
        .map(|i| (out[i].re as f64 - re[i]).hypot(out[i].im as f64 - im[i]))
        .fold(0.0, f64::max);
    println!(
        "rf2iq: largest interior I/Q difference {:.2e} of peak {peak:.3}",
        worst
    );
    assert!(
        worst <= 0.01 * peak,
        "largest difference {worst} of peak {peak}"
    );
}

// ---------------------------------------------------------------------------------------
// Bad input: errors name the value.

#[test]
fn bad_input_errors_name_values() {
    let scan = linear_array_scan(&array64(), &[plane_wave(0.0)]);
    let grid = grid_around(0.0, 15e-3, 1e-3, 1e-3);
    let err = |o: DasOptions, g: &Grid| {
        Beamformer::new(&scan, g, &o)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        err(
            DasOptions {
                f_number: 0.0,
                ..RECT_F2
            },
            &grid
        ),
        "f-number must be > 0 and finite, got 0"
    );
    assert_eq!(
        err(
            DasOptions {
                f_number: -1.5,
                ..RECT_F2
            },
            &grid
        ),
        "f-number must be > 0 and finite, got -1.5"
    );
    assert!(err(
        DasOptions {
            apodization: Apodization::Tukey(1.5),
            ..RECT_F2
        },
        &grid
    )
    .contains("got 1.5"));

    // A grid reaching above the probe is no grid; one behind an array lifted off z = 0 is
    // outside the plan's field of view.
    let above = Grid::linspace((-1e-3, 1e-3, 5), (-2e-3, 10e-3, 5)).unwrap_err();
    assert_eq!(
        above.to_string(),
        "grid depth z must be positive (below the probe), got -0.002 m"
    );
    let mut lifted = scan.clone();
    lifted.probe_geometry.column_mut(2).fill(8e-3);
    let behind = Grid::linspace((-1e-3, 1e-3, 5), (5e-3, 10e-3, 5)).unwrap();
    let e = Beamformer::new(&lifted, &behind, &RECT_F2)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("grid z = 0.005 m is outside the field of view"),
        "{e}"
    );
    let aside = Grid::linspace((-1e-3, 60e-3, 2), (5e-3, 10e-3, 5)).unwrap();
    let e = err(RECT_F2, &aside);
    assert!(
        e.contains("grid x = 0.06 m is outside the field of view"),
        "{e}"
    );
    let deep = Grid::linspace((-1e-3, 1e-3, 5), (10e-3, 90e-3, 5)).unwrap();
    let e = err(RECT_F2, &deep);
    assert!(
        e.contains("grid z = 0.05 m is outside the field of view") && e.contains("n_ax = 800"),
        "{e}"
    );

    let mut bf = Beamformer::new(&scan, &grid, &RECT_F2).unwrap();
    let wrong = Array4::<f32>::zeros((1, 799, 64, 1));
    assert_eq!(
        bf.beamform(wrong.view()).unwrap_err(),
        BeamformError::FrameShape {
            expected: [1, 800, 64, 1],
            got: [1, 799, 64, 1]
        }
    );
    let mut rf = simulate_rf(
        &scan,
        &[Scatterer {
            x: 0.0,
            z: 15e-3,
            amplitude: 1.0,
        }],
        &pulse(),
    );
    let good = bf.beamform(rf.view()).unwrap().to_owned();
    rf[[0, 123, 45, 0]] = f32::NAN;
    let e = bf.beamform(rf.view()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "frame sample (tx 0, ax 123, el 45, ch 0) is NaN, not finite"
    );
    rf[[0, 123, 45, 0]] = 0.0;
    rf[[0, 123, 45, 0]] = simulate_rf(
        &scan,
        &[Scatterer {
            x: 0.0,
            z: 15e-3,
            amplitude: 1.0,
        }],
        &pulse(),
    )[[0, 123, 45, 0]];
    assert_eq!(
        bf.beamform(rf.view()).unwrap().to_owned(),
        good,
        "the beamformer is usable after a bad frame"
    );
}

// ---------------------------------------------------------------------------------------
// The command line.

#[test]
fn cli_beamforms_pwi_disk_like_the_golden() {
    let dir = common::tempdir();
    let out = dir.path().join("bf.h5");
    let png = dir.path().join("png");
    let status = common::pleura()
        .args([
            "beamform",
            common::pwi_disk().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args([
            "--grid-x=-0.0125,0.0125,251",
            "--grid-z=0.01,0.035,251",
            "--f-number",
            "1.1248",
        ])
        .args([
            "--apodization",
            "rect",
            "--dynamic-range",
            "30",
            "--png",
            png.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let golden = common::shared().join("data/pwi_disk/golden_bmode.h5");
    let script = r#"
import h5py, numpy as np, sys
o, g = h5py.File(sys.argv[1], 'r'), h5py.File(sys.argv[2], 'r')
b, gb = o['bmode'][()].astype(float), g['bmode'][()].astype(float)
assert o['bmode'].dtype == np.uint8 and o['envelope'].dtype == np.float32
assert o['envelope'].shape == (32, 251, 251) and b.shape == gb.shape
assert np.allclose(o['grid_x'][()], g['grid_x'][()]) and np.allclose(o['grid_z'][()], g['grid_z'][()])
assert (o['failed'][()] == 0).all()
assert (b.reshape(32, -1).max(axis=1) == 255).all(), 'each frame against its own maximum'
assert [r.decode() if isinstance(r, bytes) else r for r in o['failed_reason'][()]] == [''] * 32
# The golden is compressed against the recording's maximum, pleura against each frame's
# (as the daemon publishes it): lift each golden frame so that its maximum is 255, and
# compare where the golden is above its floor (its 0 hides how far below -30 dB it was).
gb = np.clip(gb + (255 - gb.reshape(32, -1).max(axis=1))[:, None, None], 0, 255)
above = g['bmode'][()] > 0
print(np.corrcoef(b.ravel(), gb.ravel())[0, 1], np.abs(b - gb)[above].mean())
"#;
    let r = common::run_python(script, &[out.to_str().unwrap(), golden.to_str().unwrap()]);
    let v: Vec<f64> = r.split_whitespace().map(|x| x.parse().unwrap()).collect();
    println!(
        "pleura beamform vs golden: r = {:.4}, mean |diff| = {:.2}",
        v[0], v[1]
    );
    assert!(v[0] >= 0.99 && v[1] <= 4.0, "{r}");
    let n_png = std::fs::read_dir(&png)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    assert_eq!(n_png, 32);
}

#[test]
fn cli_skips_frames_with_nan_and_beamforms_the_rest() {
    use pleura::recording::{Frame, Recorder, RecorderOptions, SampleType};
    let dir = common::tempdir();
    let input = dir.path().join("nan.zea.h5");
    let scan = linear_array_scan(&array64(), &[plane_wave(0.0)]);
    let rf = simulate_rf(
        &scan,
        &[Scatterer {
            x: 0.0,
            z: 15e-3,
            amplitude: 1.0,
        }],
        &pulse(),
    );
    let options = RecorderOptions {
        sample_type: SampleType::Float32,
        ..RecorderOptions::default()
    };
    let mut rec = Recorder::create(&input, &scan, options).unwrap();
    for i in 0..3u64 {
        rec.append(&Frame {
            data: rf.clone(),
            sequence_number: i,
            timestamp_ns: i * 1000,
        })
        .unwrap();
    }
    rec.finish().unwrap();
    // The recorder refuses non-finite samples; a corrupt file can still hold them.
    common::run_python(
        "import h5py, sys\nf = h5py.File(sys.argv[1], 'r+')\nf['tracks/track_0/data/raw_data'][1, 0, 200, 10, 0] = float('nan')",
        &[input.to_str().unwrap()],
    );
    let out = dir.path().join("bf.h5");
    let res = common::pleura()
        .args([
            "beamform",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--grid-x", "-0.003,0.003,31", "--grid-z", "0.012,0.018,31"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{stderr}");
    // The reason is the one the daemon publishes for the frame.
    let reason = "frame 1: the das stage failed: beamforming: \
                  frame sample (tx 0, ax 200, el 10, ch 0) is NaN, not finite";
    assert!(
        stderr.contains(&format!("frame 1 skipped: {reason}")),
        "{stderr}"
    );
    let script = r#"
import h5py, sys
o = h5py.File(sys.argv[1], 'r')
print(o['failed'][()].tolist(), float(abs(o['envelope'][1]).max()), int(o['bmode'][0].max()), int(o['bmode'][2].max()))
print(o['failed_reason'][1].decode())
"#;
    let r = common::run_python(script, &[out.to_str().unwrap()]);
    let lines: Vec<&str> = r.lines().collect();
    assert_eq!(lines, ["[0, 1, 0] 0.0 255 255", reason]);
}
