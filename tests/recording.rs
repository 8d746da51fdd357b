//! Recordings: interoperability with files written by h5py, round trips read back by h5py,
//! crash safety of the recorder, and rejection of malformed files.

mod common;

use pleura::recording::{Recording, SampleType, TransmitKind};

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-30)
}

#[test]
fn reads_pwi_disk_written_by_h5py() {
    let rec = Recording::open(common::pwi_disk()).expect("open pwi_disk");
    let scan = rec.scan();
    assert_eq!(rec.n_frames(), 32);
    assert_eq!(rec.sample_type(), SampleType::Int16);
    assert_eq!(scan.n_el(), 128);
    assert_eq!(scan.n_tx(), 1);
    assert_eq!(scan.n_ax, 334);
    assert_eq!(scan.n_ch, 1);
    assert!(
        close(scan.pitch(), 0.298e-3, 1e-4),
        "pitch {}",
        scan.pitch()
    );
    assert!(
        close(scan.sampling_frequency, 6.666_666_5e6, 1e-6),
        "fs {}",
        scan.sampling_frequency
    );
    assert!(close(scan.center_frequency, 5e6, 1e-7));
    assert!(close(scan.demodulation_frequency, 5e6, 1e-7));
    assert!(close(scan.sound_speed, 1480.0, 1e-7));
    assert!(
        close(scan.initial_times[0], 9.95e-6, 1e-6),
        "t0 {}",
        scan.initial_times[0]
    );
    assert!(close(scan.element_width.unwrap(), 0.262e-3, 1e-6));
    assert!(close(scan.fractional_bandwidth.unwrap(), 0.15, 1e-12));
    assert_eq!(scan.transmit_kind(0), TransmitKind::Plane);
    assert_eq!(scan.polar_angles, vec![0.0]);
    assert!(close(scan.probe_geometry[[0, 0]], -0.018923, 1e-6));
    assert!(close(scan.probe_geometry[[127, 0]], 0.018923, 1e-6));
    let ttnt = scan.time_to_next_transmit.as_ref().unwrap();
    assert_eq!(ttnt.dim(), (32, 1));
    assert!(
        close(rec.duration_s(), 32.0 * 1e-4, 1e-6),
        "duration {}",
        rec.duration_s()
    );
    assert_eq!(rec.probe_name(), "verasonics-linear-128");
    assert_eq!(rec.us_machine(), "Verasonics Vantage");
    assert!(rec.description().starts_with("Rotating disk phantom"));
    assert!(rec.writer_closed());
    assert!(!rec.has_ground_truth());
    assert!(rec.ground_truth().unwrap().is_none());

    let f0 = rec.read_frame(0).unwrap();
    assert_eq!(f0.data.dim(), (1, 334, 128, 1));
    let first: Vec<f32> = (0..8).map(|e| f0.data[[0, 0, e, 0]]).collect();
    assert_eq!(first, vec![-3.0, 6.0, -6.0, -11.0, -9.0, -6.0, -14.0, -5.0]);
    let down: Vec<f32> = (0..5).map(|a| f0.data[[0, a, 0, 0]]).collect();
    assert_eq!(down, vec![-3.0, -16.0, 12.0, 17.0, -9.0]);
    assert_eq!((f0.sequence_number, f0.timestamp_ns), (0, 0));
    let f5 = rec.read_frame(5).unwrap();
    assert_eq!(f5.sequence_number, 5);
    assert_eq!(f5.timestamp_ns, 500_000, "5 frames at PRF 10 kHz");

    // The last frame agrees with h5py sample for sample.
    let last = rec.read_frame(31).unwrap();
    let out = common::run_python(
        "import sys, h5py, numpy as np\n\
         f = h5py.File(sys.argv[1], 'r')\n\
         x = f['data/raw_data'][31].astype(np.int64)\n\
         print(x.sum(), (x * x).sum(), x[0, 100, 64, 0])",
        &[common::pwi_disk().to_str().unwrap()],
    );
    let want: Vec<i64> = out.split_whitespace().map(|v| v.parse().unwrap()).collect();
    let sum: i64 = last.data.iter().map(|&v| v as i64).sum();
    let sq: i64 = last.data.iter().map(|&v| (v as i64) * (v as i64)).sum();
    assert_eq!(vec![sum, sq, last.data[[0, 100, 64, 0]] as i64], want);

    assert!(matches!(
        rec.read_frame(32),
        Err(pleura::recording::RecordingError::FrameIndex {
            index: 32,
            n_frames: 32
        })
    ));
}

use std::path::Path;
use std::time::Duration;

use ndarray::{Array2, Array4};
use pleura::recording::{
    Compression, Frame, GroundTruthGrid, Layout, Recorder, RecorderOptions, Scan,
};

/// A small linear-array scan: `n_tx` steered plane waves, 8 elements, 16 samples.
fn small_scan(n_tx: usize, n_ch: usize) -> Scan {
    scan_of(n_tx, 16, 8, n_ch)
}

/// A linear-array scan of `n_tx` steered plane waves.
fn scan_of(n_tx: usize, n_ax: usize, n_el: usize, n_ch: usize) -> Scan {
    let pitch = 0.3e-3;
    let mut geometry = Array2::zeros((n_el, 3));
    for e in 0..n_el {
        geometry[[e, 0]] = (e as f64 - (n_el - 1) as f64 / 2.0) * pitch;
    }
    let angles: Vec<f64> = (0..n_tx)
        .map(|t| (t as f64 - 1.0) * 10f64.to_radians())
        .collect();
    let mut t0 = Array2::zeros((n_tx, n_el));
    for (t, a) in angles.iter().enumerate() {
        let xmin = geometry[[0, 0]];
        for e in 0..n_el {
            t0[[t, e]] = (geometry[[e, 0]] - xmin) * a.sin().abs() / 1540.0;
        }
    }
    Scan {
        probe_geometry: geometry,
        sampling_frequency: 20e6,
        center_frequency: 5e6,
        demodulation_frequency: if n_ch == 2 { 5e6 } else { 0.0 },
        sound_speed: 1540.0,
        n_ax,
        n_ch,
        initial_times: vec![1e-6; n_tx],
        t0_delays: t0,
        tx_apodizations: Array2::ones((n_tx, n_el)),
        polar_angles: angles,
        azimuth_angles: vec![0.0; n_tx],
        focus_distances: vec![f64::INFINITY; n_tx],
        transmit_origins: Array2::zeros((n_tx, 3)),
        element_width: Some(0.27e-3),
        time_to_next_transmit: Some(Array2::from_elem((1, n_tx), 1e-4)),
        fractional_bandwidth: Some(0.6),
        // Quarter steps: exact in the float32 zea stores the curve in.
        tgc_gain_curve: Some((0..n_ax).map(|a| 1.0 + 0.25 * a as f64).collect()),
    }
}

/// Deterministic frame `i`: whole numbers in int16 range, distinct per position.
fn frame(scan: &Scan, i: usize) -> Frame {
    let dim = (scan.n_tx(), scan.n_ax, scan.n_el(), scan.n_ch);
    let data = Array4::from_shape_fn(dim, |(t, a, e, c)| {
        (((i * 7919 + t * 1009 + a * 101 + e * 13 + c * 5) % 2001) as f32) - 1000.0
    });
    Frame {
        data,
        sequence_number: 1000 + 3 * i as u64,
        timestamp_ns: 5_000_000 + 33_333_333 * i as u64,
    }
}

fn aeration(i: usize, nz: usize, nx: usize) -> Array2<f32> {
    Array2::from_shape_fn((nz, nx), |(z, x)| ((i + z * nx + x) % 11) as f32 / 10.0)
}

fn options(sample_type: SampleType, grid: Option<GroundTruthGrid>) -> RecorderOptions {
    RecorderOptions {
        sample_type,
        flush_every: Duration::from_millis(50),
        compression: Compression::Deflate(4),
        layout: Layout::Zea,
        probe_name: "test-linear-8".into(),
        us_machine: "pleura test".into(),
        description: "round trip".into(),
        ground_truth_grid: grid,
    }
}

const READ_BACK: &str = r#"
import sys, json, h5py, numpy as np
f = h5py.File(sys.argv[1], 'r')
out = {'attrs': {k: str(v) for k, v in f.attrs.items()}, 'datasets': {}, 'strings': {}}
def visit(name, obj):
    if isinstance(obj, h5py.Dataset) and obj.dtype.kind == 'O':
        out['strings'][name] = obj.asstr()[()]
    elif isinstance(obj, h5py.Dataset):
        v = obj[()]
        out['datasets'][name] = {
            'shape': list(obj.shape), 'dtype': str(obj.dtype), 'chunks': obj.chunks and list(obj.chunks),
            'compression': obj.compression,
            'values': [x if np.isfinite(x) else repr(x) for x in np.asarray(v, dtype=np.float64).ravel().tolist()],
        }
f.visititems(visit)
if 'fractional_bandwidth_percent' in f['scan'].attrs if 'scan' in f else False:
    out['bandwidth'] = float(f['scan'].attrs['fractional_bandwidth_percent'])
else:
    out['bandwidth'] = float(f['probe/probe_bandwidth_percent'][()])
print(json.dumps(out))
"#;

/// Equal to the last couple of bits: serde_json's float parsing is not always correctly
/// rounded, so values printed by Python can come back one ulp off.
fn assert_same(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g == w || (g - w).abs() <= 1e-15 * w.abs(),
            "{what}[{i}]: {g} != {w}"
        );
    }
}

fn check_round_trip(
    path: &Path,
    scan: &Scan,
    sample_type: SampleType,
    n: usize,
    grid: Option<&GroundTruthGrid>,
    layout: Layout,
) {
    // Where each legacy field is in the layout written.
    let at = |name: &str| -> String {
        match (layout, name) {
            (Layout::Legacy, _) => name.to_string(),
            (Layout::Zea, "scan/probe_geometry" | "scan/element_width") => {
                format!("probe/{}", &name[5..])
            }
            (Layout::Zea, "scan/n_frames") => "pleura/n_frames".into(),
            (Layout::Zea, _) if name.starts_with("scan/") || name.starts_with("data/") => {
                format!("tracks/track_0/{name}")
            }
            (Layout::Zea, _) => name.to_string(),
        }
    };
    let out = common::run_python(READ_BACK, &[path.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    match layout {
        Layout::Legacy => {
            assert_eq!(v["attrs"]["probe_name"], "test-linear-8");
            assert!(v["attrs"].get("zea_version").is_none());
        }
        Layout::Zea => {
            assert_eq!(v["strings"]["probe/name"], "test-linear-8");
            assert_eq!(v["attrs"]["zea_version"], "0.1.8");
            assert!(v["attrs"].get("probe_name").is_none());
        }
    }
    assert_eq!(v["attrs"]["us_machine"], "pleura test");
    assert_eq!(v["attrs"]["description"], "round trip");
    assert_eq!(v["bandwidth"].as_f64().unwrap(), 60.0);
    let ds = &v["datasets"];
    let shape = |name: &str| -> Vec<usize> {
        let name = &at(name);
        serde_json::from_value(ds[name]["shape"].clone())
            .unwrap_or_else(|_| panic!("{name} missing"))
    };
    // Non-finite values come as their Python repr ("inf", "nan").
    let values = |name: &str| -> Vec<f64> {
        let name = &at(name);
        let vals = ds[name]["values"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} missing"));
        vals.iter()
            .map(|x| {
                x.as_f64()
                    .unwrap_or_else(|| x.as_str().unwrap().parse().unwrap())
            })
            .collect()
    };
    let (n_tx, n_el, n_ax, n_ch) = (scan.n_tx(), scan.n_el(), scan.n_ax, scan.n_ch);
    assert_eq!(shape("data/raw_data"), vec![n, n_tx, n_ax, n_el, n_ch]);
    assert_eq!(ds[&at("data/raw_data")]["dtype"], sample_type.name());
    assert_eq!(
        ds[&at("data/raw_data")]["chunks"],
        serde_json::json!([1, n_tx, n_ax, n_el, n_ch])
    );
    assert_eq!(ds[&at("data/raw_data")]["compression"], "gzip");
    let raw = values("data/raw_data");
    let want: Vec<f64> = (0..n)
        .flat_map(|i| frame(scan, i).data.into_iter().map(f64::from))
        .collect();
    assert_eq!(raw, want);
    // zea 0.1.x takes the dimensions from the shapes; a scan group with them would not
    // pass its `validate_spec`.
    let dims: &[(&str, usize)] = match layout {
        Layout::Legacy => &[
            ("scan/n_frames", n),
            ("scan/n_tx", n_tx),
            ("scan/n_el", n_el),
            ("scan/n_ax", n_ax),
            ("scan/n_ch", n_ch),
        ],
        Layout::Zea => &[("scan/n_frames", n)],
    };
    for &(name, want) in dims {
        assert_eq!(shape(name), Vec::<usize>::new(), "{name} is 0-d");
        assert_eq!(ds[&at(name)]["dtype"], "int64", "{name}");
        assert_eq!(values(name), vec![want as f64], "{name}");
    }
    if layout == Layout::Zea {
        for name in ["n_tx", "n_el", "n_ax", "n_ch", "n_frames"] {
            assert!(ds.get(format!("tracks/track_0/scan/{name}")).is_none());
        }
    }
    for (name, want) in [
        ("scan/sampling_frequency", scan.sampling_frequency),
        ("scan/center_frequency", scan.center_frequency),
        ("scan/demodulation_frequency", scan.demodulation_frequency),
        ("scan/sound_speed", scan.sound_speed),
        ("scan/element_width", scan.element_width.unwrap()),
    ] {
        assert_eq!(shape(name), Vec::<usize>::new(), "{name} is 0-d");
        assert_same(&values(name), &[want], name);
    }
    assert_eq!(shape("scan/probe_geometry"), vec![n_el, 3]);
    assert_same(
        &values("scan/probe_geometry"),
        scan.probe_geometry.as_slice().unwrap(),
        "probe_geometry",
    );
    assert_eq!(shape("scan/t0_delays"), vec![n_tx, n_el]);
    assert_same(
        &values("scan/t0_delays"),
        scan.t0_delays.as_slice().unwrap(),
        "t0_delays",
    );
    assert_eq!(shape("scan/tx_apodizations"), vec![n_tx, n_el]);
    assert_eq!(shape("scan/transmit_origins"), vec![n_tx, 3]);
    assert_eq!(ds[&at("scan/tgc_gain_curve")]["dtype"], "float32");
    assert_same(
        &values("scan/tgc_gain_curve"),
        scan.tgc_gain_curve.as_ref().unwrap(),
        "tgc_gain_curve",
    );
    assert_same(
        &values("scan/polar_angles"),
        &scan.polar_angles,
        "polar_angles",
    );
    assert_same(
        &values("scan/initial_times"),
        &scan.initial_times,
        "initial_times",
    );
    assert_eq!(shape("scan/time_to_next_transmit"), vec![n, n_tx]);
    assert_same(
        &values("scan/time_to_next_transmit"),
        &vec![1e-4; n * n_tx],
        "time_to_next_transmit",
    );
    assert_eq!(values("scan/focus_distances"), vec![f64::INFINITY; n_tx]);
    assert_eq!(ds["pleura/sequence_number"]["dtype"], "uint64");
    assert_eq!(ds["pleura/timestamp_ns"]["dtype"], "uint64");
    let seq: Vec<f64> = (0..n)
        .map(|i| frame(scan, i).sequence_number as f64)
        .collect();
    let ts: Vec<f64> = (0..n).map(|i| frame(scan, i).timestamp_ns as f64).collect();
    assert_eq!(values("pleura/sequence_number"), seq);
    assert_eq!(values("pleura/timestamp_ns"), ts);
    match grid {
        None => assert!(ds.get("pleura/aeration").is_none()),
        Some(g) => {
            let (nz, nx) = (g.grid_z.len(), g.grid_x.len());
            assert_eq!(shape("pleura/aeration"), vec![n, nz, nx]);
            assert_eq!(ds["pleura/aeration"]["dtype"], "float32");
            let want: Vec<f64> = (0..n)
                .flat_map(|i| aeration(i, nz, nx).into_iter().map(f64::from))
                .collect();
            assert_same(&values("pleura/aeration"), &want, "aeration");
            assert_same(&values("pleura/grid_x"), &g.grid_x, "grid_x");
            assert_same(&values("pleura/grid_z"), &g.grid_z, "grid_z");
        }
    }

    // pleura reads back what it wrote.
    let rec = Recording::open(path).unwrap();
    assert!(rec.writer_closed());
    assert_eq!(rec.n_frames(), n);
    assert_eq!(rec.sample_type(), sample_type);
    assert_eq!(rec.probe_name(), "test-linear-8");
    assert_eq!(rec.layout(), layout);
    assert_eq!(rec.scan().probe_geometry, scan.probe_geometry);
    assert_eq!(rec.scan().fractional_bandwidth, scan.fractional_bandwidth);
    assert_eq!(rec.scan().tgc_gain_curve, scan.tgc_gain_curve);
    for i in 0..n {
        assert_eq!(rec.read_frame(i).unwrap(), frame(scan, i));
    }
    let gt = rec.ground_truth().unwrap();
    assert_eq!(gt.is_some(), grid.is_some());
    if let (Some(gt), Some(g)) = (gt, grid) {
        assert_eq!(gt.grid_x, g.grid_x);
        let a2 = rec.read_ground_truth_frame(n - 1).unwrap().unwrap();
        assert_eq!(a2, aeration(n - 1, g.grid_z.len(), g.grid_x.len()));
        assert_eq!(
            gt.aeration.index_axis(ndarray::Axis(0), 0),
            aeration(0, g.grid_z.len(), g.grid_x.len())
        );
    }
}

#[test]
fn round_trip_through_h5py() {
    let dir = common::tempdir();
    let grid = GroundTruthGrid {
        grid_x: vec![-2e-3, -1e-3, 0.0, 1e-3, 2e-3],
        grid_z: vec![5e-3, 6e-3, 7e-3, 8e-3],
    };
    for (sample_type, n_ch, with_gt, layout) in [
        (SampleType::Int16, 1, true, Layout::Zea),
        (SampleType::Float32, 1, false, Layout::Legacy),
        (SampleType::Int16, 2, false, Layout::Legacy),
        (SampleType::Float32, 2, true, Layout::Zea),
    ] {
        let scan = small_scan(3, n_ch);
        let path = dir
            .path()
            .join(format!("rt_{}_{n_ch}.zea.h5", sample_type.name()));
        let g = with_gt.then(|| grid.clone());
        let opts = RecorderOptions {
            layout,
            ..options(sample_type, g.clone())
        };
        let mut rec = Recorder::create(&path, &scan, opts).unwrap();
        let n = 5;
        for i in 0..n {
            let f = frame(&scan, i);
            if with_gt {
                rec.append_with_ground_truth(&f, aeration(i, 4, 5).view())
                    .unwrap();
            } else {
                rec.append(&f).unwrap();
            }
        }
        assert_eq!(rec.finish().unwrap(), n);
        check_round_trip(&path, &scan, sample_type, n, g.as_ref(), layout);
    }
}

#[test]
fn dropping_the_recorder_keeps_every_frame() {
    let dir = common::tempdir();
    let path = dir.path().join("dropped.zea.h5");
    let scan = small_scan(3, 1);
    let mut opts = options(SampleType::Int16, None);
    opts.flush_every = Duration::from_secs(3600);
    let mut rec = Recorder::create(&path, &scan, opts).unwrap();
    for i in 0..3 {
        rec.append(&frame(&scan, i)).unwrap();
    }
    assert_eq!(
        rec.flushed_frames(),
        0,
        "no flush within the hour-long period"
    );
    drop(rec);
    let read = Recording::open(&path).unwrap();
    assert!(read.writer_closed());
    assert_eq!(read.n_frames(), 3);
    assert_eq!(read.read_frame(2).unwrap(), frame(&scan, 2));
}

/// A child process started while pleura has an HDF5 file open (the daemon's tests start
/// scanners and subscribers while their thread reads or writes a recording; `bench` starts
/// PyMUST) must not inherit the file's descriptor: HDF5 locks the file through it, and an
/// inherited copy keeps the lock after pleura closes the file, for as long as the child lives.
#[test]
fn a_child_started_while_a_file_is_open_does_not_keep_it_locked() {
    let dir = common::tempdir();
    let path = dir.path().join("shared.zea.h5");
    let scan = small_scan(1, 1);
    let mut rec = Recorder::create(&path, &scan, options(SampleType::Int16, None)).unwrap();
    rec.append(&frame(&scan, 0)).unwrap();
    rec.finish().unwrap();
    let read = Recording::open(&path).unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("start sleep");
    // `spawn` returns once the child's exec is under way, and exec closes the inherited
    // close-on-exec descriptors a moment later: until then the child's copy holds HDF5's
    // lock (more so while other tests have many descriptors open). A descriptor without
    // close-on-exec stays for the child's life.
    let held = || {
        std::fs::read_dir(format!("/proc/{}/fd", child.id()))
            .map(|fds| {
                fds.filter_map(Result::ok)
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == path))
            })
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while held() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(!held(), "the child inherited the recording's descriptor");
    drop(read);
    let rewritten = Recorder::create(&path, &scan, options(SampleType::Int16, None));
    child.kill().unwrap();
    child.wait().unwrap();
    let mut rec = rewritten.expect("the recording can be rewritten while the child lives");
    rec.append(&frame(&scan, 1)).unwrap();
    rec.finish().unwrap();
    assert_eq!(
        Recording::open(&path).unwrap().read_frame(0).unwrap(),
        frame(&scan, 1)
    );
}

#[test]
fn recorder_rejects_bad_frames() {
    let dir = common::tempdir();
    let scan = small_scan(3, 1);
    let mut rec = Recorder::create(
        dir.path().join("bad.zea.h5"),
        &scan,
        options(SampleType::Int16, None),
    )
    .unwrap();
    let mut f = frame(&scan, 0);
    f.data = Array4::zeros((3, 16, 7, 1));
    let err = rec.append(&f).unwrap_err().to_string();
    assert!(
        err.contains("[3, 16, 7, 1]") && err.contains("[3, 16, 8, 1]"),
        "{err}"
    );
    let mut f = frame(&scan, 0);
    f.data[[1, 2, 3, 0]] = 0.5;
    let err = rec.append(&f).unwrap_err().to_string();
    assert!(err.contains("0.5") && err.contains("[1, 2, 3, 0]"), "{err}");
    f.data[[1, 2, 3, 0]] = 40000.0;
    assert!(rec.append(&f).unwrap_err().to_string().contains("40000"));
    let err = rec
        .append_with_ground_truth(&frame(&scan, 0), Array2::zeros((2, 2)).view())
        .unwrap_err();
    assert!(
        err.to_string().contains("without a ground-truth grid"),
        "{err}"
    );
    f.data[[1, 2, 3, 0]] = f32::NAN;
    assert!(rec.append(&f).unwrap_err().to_string().contains("NaN"));
    let mut floats = Recorder::create(
        dir.path().join("bad_f32.zea.h5"),
        &scan,
        options(SampleType::Float32, None),
    )
    .unwrap();
    let mut f = frame(&scan, 0);
    f.data[[2, 15, 7, 0]] = f32::INFINITY;
    let err = floats.append(&f).unwrap_err().to_string();
    assert!(
        err.contains("data/raw_data[0, 2, 15, 7, 0]") && err.contains("inf"),
        "{err}"
    );
    f.data[[2, 15, 7, 0]] = 0.25;
    floats.append(&f).unwrap();
    assert_eq!(floats.finish().unwrap(), 1);
    assert_eq!(rec.n_frames(), 0);
    rec.append(&frame(&scan, 0)).unwrap();
    assert_eq!(rec.finish().unwrap(), 1);
}

/// Environment variable that turns the kill test's own binary into the writer it kills.
const KILL_CHILD_FILE: &str = "PLEURA_TEST_KILL_CHILD_FILE";

/// The scan the killed writer records: ~100 kB per int16 frame, so that flushes take time.
fn kill_scan() -> Scan {
    scan_of(3, 256, 64, 1)
}

/// Child side: appends frames until killed, printing each flushed frame count.
fn kill_child(path: &Path) {
    use std::io::Write;
    let scan = kill_scan();
    let mut opts = options(SampleType::Int16, None);
    opts.flush_every = Duration::from_millis(20);
    let mut rec = Recorder::create(path, &scan, opts).unwrap();
    let started = std::time::Instant::now();
    let mut stdout = std::io::stdout();
    let mut reported = 0;
    // Bounded, so that a child whose parent died does not write forever.
    while started.elapsed() < Duration::from_secs(30) {
        let i = rec.n_frames();
        rec.append(&frame(&scan, i)).unwrap();
        if rec.flushed_frames() != reported {
            reported = rec.flushed_frames();
            writeln!(stdout, "flushed {reported}").unwrap();
            stdout.flush().unwrap();
        }
    }
}

const CHECK_KILLED: &str = r#"
import sys, h5py, numpy as np
path, flushed = sys.argv[1], int(sys.argv[2])
# The writer died in SWMR-write mode: the file keeps that mark, SWMR readers open it as is.
f = h5py.File(path, 'r', swmr=True)
raw = f['tracks/track_0/data/raw_data']
n = raw.shape[0]
assert n >= flushed, (n, flushed)
assert raw.dtype == np.int16 and raw.shape[1:] == (3, 256, 64, 1), (raw.dtype, raw.shape)
t, a, e, c = np.meshgrid(np.arange(3), np.arange(256), np.arange(64), np.arange(1), indexing='ij')
for i in range(flushed):
    want = (i * 7919 + t * 1009 + a * 101 + e * 13 + c * 5) % 2001 - 1000
    assert np.array_equal(raw[i], want), f'frame {i} differs'
seq = f['pleura/sequence_number'][:flushed]
assert np.array_equal(seq, 1000 + 3 * np.arange(flushed)), seq
n_frames = int(f['pleura/n_frames'][()])
assert n_frames >= flushed, (n_frames, flushed)
print(n, n_frames)
"#;

#[test]
fn recorder_survives_sigkill() {
    use rand::Rng;
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    if let Some(path) = std::env::var_os(KILL_CHILD_FILE) {
        kill_child(Path::new(&path));
        return;
    }
    let dir = common::tempdir();
    let mut rng = rand::rng();
    for round in 0..3 {
        let path = dir.path().join(format!("killed_{round}.zea.h5"));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "recorder_survives_sigkill",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(KILL_CHILD_FILE, &path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        // Kill after a random number of flushes plus a random fraction of a flush period.
        let kill_after: usize = rng.random_range(2..12);
        let mut flushed = 0;
        let mut lines = stdout.lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("flushed ") {
                flushed = n.parse().unwrap();
                if flushed >= kill_after {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_micros(rng.random_range(0..20_000)));
        child.kill().unwrap();
        for line in lines {
            if let Some(n) = line.unwrap().strip_prefix("flushed ") {
                flushed = n.parse().unwrap();
            }
        }
        let status = child.wait().unwrap();
        assert!(!status.success(), "the writer was killed");
        assert!(
            flushed >= kill_after,
            "writer reported only {flushed} flushed frames"
        );
        let out = common::run_python(
            CHECK_KILLED,
            &[path.to_str().unwrap(), &flushed.to_string()],
        );
        let counts: Vec<usize> = out.split_whitespace().map(|v| v.parse().unwrap()).collect();
        assert!(counts[0] >= flushed);
        // pleura opens it too (in SWMR-read mode) and reads the last flushed frame.
        let rec = Recording::open(&path).unwrap();
        assert!(!rec.writer_closed());
        assert!(rec.n_frames() >= flushed);
        assert_eq!(
            rec.read_frame(flushed - 1).unwrap(),
            frame(&kill_scan(), flushed - 1)
        );
    }
}

/// Writes hand-broken variants of the first two frames of pwi_disk, one file per case.
const MAKE_MALFORMED: &str = r#"
import sys, os, h5py, numpy as np
src_path, out = sys.argv[1], sys.argv[2]
src = h5py.File(src_path, 'r')

def write(case, mutate=None, raw=None, frames=2):
    f = h5py.File(os.path.join(out, case + '.h5'), 'w')
    for k, v in src.attrs.items():
        f.attrs[k] = v
    scan = f.create_group('scan')
    for k, v in src['scan'].attrs.items():
        scan.attrs[k] = v
    for k, d in src['scan'].items():
        scan[k] = d[()]
    del scan['n_frames'], scan['time_to_next_transmit']
    scan['n_frames'] = np.int64(frames)
    scan['time_to_next_transmit'] = src['scan/time_to_next_transmit'][:frames]
    f['data/raw_data'] = src['data/raw_data'][:frames] if raw is None else raw
    if mutate:
        mutate(f)
    f.close()

def replace(name, value):
    def m(f):
        del f[name]
        f[name] = value
    return m

def geometry(edit):
    def m(f):
        g = f['scan/probe_geometry'][()]
        edit(g)
        del f['scan/probe_geometry']
        f['scan/probe_geometry'] = g
    return m

def both(*ms):
    def m(f):
        for x in ms:
            x(f)
    return m

raw2 = src['data/raw_data'][:2]
write('valid')
def variants(f):
    # Other ways h5py users store the same things.
    f.attrs['probe_name'] = np.bytes_('fixed-ascii-probe')
    f.attrs['us_machine'] = np.array('fixed-unicode'.encode(), dtype='S')
    replace('scan/sound_speed', np.float64(1480.0))(f)
    replace('scan/n_ax', np.int32(334))(f)
    replace('scan/sampling_frequency', np.array([6.6666665e6], np.float32))(f)
    replace('scan/n_el', np.float64(128.0))(f)
write('h5py_variants', variants)
write('reversed_elements', geometry(lambda g: g.__setitem__(slice(None), g[::-1].copy())))
write('missing_fs', lambda f: f['scan'].__delitem__('sampling_frequency'))
write('missing_scan', lambda f: f.__delitem__('scan'))
write('missing_probe_name', lambda f: f.attrs.__delitem__('probe_name'))
write('nan_fc', replace('scan/center_frequency', np.float32('nan')))
write('negative_fs', replace('scan/sampling_frequency', np.float64(-6.5e6)))
write('zero_c', replace('scan/sound_speed', np.float32(0)))
write('inf_demod', replace('scan/demodulation_frequency', np.float64('inf')))
write('string_c', replace('scan/sound_speed', 'fast'))
write('t0_shape', replace('scan/t0_delays', np.zeros((1, 127), np.float32)))
write('n_el_127', replace('scan/n_el', np.int64(127)))
write('n_ax_negative', replace('scan/n_ax', np.int64(-334)))
write('n_frames_5', replace('scan/n_frames', np.int64(5)))
write('ttnt_shape', replace('scan/time_to_next_transmit', np.full((3, 1), 1e-4, np.float32)))
write('duplicate_element', geometry(lambda g: g.__setitem__(5, g[4])))
write('off_line', geometry(lambda g: g.__setitem__((10, 2), 0.005)))
write('nan_element', geometry(lambda g: g.__setitem__((7, 0), np.nan)))
write('raw_rank4', raw=raw2[..., 0])
write('raw_float64', raw=raw2.astype(np.float64))
write('n_ch_3', replace('scan/n_ch', np.int64(3)), raw=np.repeat(raw2, 3, axis=4))
write('empty', raw=raw2[:0], frames=0)
write('seq_short', lambda f: f.create_dataset('pleura/sequence_number', data=np.arange(1, dtype=np.uint64)))
def gt(f, value=0.5):
    f['pleura/grid_x'] = np.linspace(-1e-3, 1e-3, 3)
    f['pleura/grid_z'] = np.linspace(1e-3, 2e-3, 4)
    f['pleura/aeration'] = np.full((2, 4, 3), value, np.float32)
write('aeration_shape', lambda f: (gt(f), f['pleura'].__delitem__('grid_x'), f['pleura'].create_dataset('grid_x', data=np.zeros(1) + [5e-3])))
write('grid_unsorted', lambda f: (gt(f), f['pleura'].__delitem__('grid_z'), f['pleura'].create_dataset('grid_z', data=[1e-3, 3e-3, 2e-3, 4e-3])))
write('aeration_range', lambda f: gt(f, 1.5))
with open(os.path.join(out, 'not_hdf5.h5'), 'w') as t:
    t.write('this is not an HDF5 file\n')
"#;

#[test]
fn malformed_files_give_errors_naming_field_and_value() {
    let dir = common::tempdir();
    let d = dir.path();
    common::run_python(
        MAKE_MALFORMED,
        &[common::pwi_disk().to_str().unwrap(), d.to_str().unwrap()],
    );
    let open = |case: &str| Recording::open(d.join(format!("{case}.h5")));

    let valid = open("valid").unwrap();
    assert_eq!(valid.n_frames(), 2);
    let variants = open("h5py_variants").unwrap();
    assert_eq!(variants.probe_name(), "fixed-ascii-probe");
    assert_eq!(variants.us_machine(), "fixed-unicode");
    assert_eq!(variants.scan(), valid.scan());
    let reversed = open("reversed_elements").unwrap();
    assert!(
        close(reversed.scan().pitch(), 0.298e-3, 1e-4),
        "unsorted elements are a line too"
    );

    let cases: &[(&str, &[&str])] = &[
        ("missing_fs", &["missing", "scan/sampling_frequency"]),
        ("missing_scan", &["missing", "`scan`"]),
        ("missing_probe_name", &["missing", "@probe_name"]),
        (
            "nan_fc",
            &["scan/center_frequency", "NaN", "finite and positive"],
        ),
        (
            "negative_fs",
            &["scan/sampling_frequency", "-6500000", "finite and positive"],
        ),
        (
            "zero_c",
            &["scan/sound_speed", "= 0", "finite and positive"],
        ),
        ("inf_demod", &["scan/demodulation_frequency", "inf"]),
        (
            "string_c",
            &["scan/sound_speed", "datatype unicode", "floating-point"],
        ),
        ("t0_shape", &["scan/t0_delays", "[1, 127]", "n_el = 128"]),
        (
            "n_el_127",
            &["scan/probe_geometry", "[128, 3]", "n_el = 127"],
        ),
        ("n_ax_negative", &["scan/n_ax", "-334", "negative"]),
        (
            "n_frames_5",
            &["data/raw_data", "[2, 1, 334, 128, 1]", "n_frames = 5"],
        ),
        (
            "ttnt_shape",
            &["scan/time_to_next_transmit", "[3, 1]", "n_frames = 2"],
        ),
        (
            "duplicate_element",
            &["scan/probe_geometry[5]", "elements 4 and 5", "x = -0.01"],
        ),
        (
            "off_line",
            &["scan/probe_geometry[10]", "0.005", "line along x"],
        ),
        ("nan_element", &["scan/probe_geometry[7]", "NaN", "finite"]),
        (
            "raw_rank4",
            &["data/raw_data", "[2, 1, 334, 128]", "n_ch = 1"],
        ),
        (
            "raw_float64",
            &["data/raw_data", "float64", "int16 or float32"],
        ),
        ("n_ch_3", &["scan/n_ch", "= 3", "1 (RF) or 2 (I/Q)"]),
        (
            "empty",
            &["no frames", "`scan/n_frames` = 0", "[0, 1, 334, 128, 1]"],
        ),
        (
            "seq_short",
            &["pleura/sequence_number", "[1]", "n_frames = 2"],
        ),
        (
            "aeration_shape",
            &["pleura/aeration", "[2, 4, 3]", "nx = 1"],
        ),
        (
            "grid_unsorted",
            &["pleura/grid_z[2]", "0.002", "greater than the previous"],
        ),
        ("not_hdf5", &["cannot open", "not_hdf5.h5"]),
    ];
    for (case, needles) in cases {
        let err = open(case).expect_err(case).to_string();
        for n in *needles {
            assert!(err.contains(n), "{case}: error {err:?} lacks {n:?}");
        }
    }
    // Aeration values are checked when read.
    let rec = open("aeration_range").unwrap();
    let err = rec.read_ground_truth_frame(1).unwrap_err().to_string();
    assert!(
        err.contains("pleura/aeration[1]") && err.contains("1.5") && err.contains("[0, 1]"),
        "{err}"
    );
    assert!(rec.ground_truth().is_err());
}

#[test]
fn bundled_testdata_is_the_first_frames_of_pwi_disk() {
    let small = Recording::open(common::testdata("pwi_disk_4frames.zea.h5")).unwrap();
    let full = Recording::open(common::pwi_disk()).unwrap();
    assert_eq!(small.n_frames(), 4);
    assert_eq!(small.scan(), &{
        let mut s = full.scan().clone();
        s.time_to_next_transmit = s
            .time_to_next_transmit
            .map(|t| t.slice(ndarray::s![..4, ..]).to_owned());
        s
    });
    for i in 0..4 {
        assert_eq!(small.read_frame(i).unwrap(), full.read_frame(i).unwrap());
    }
    let size = std::fs::metadata(common::testdata("pwi_disk_4frames.zea.h5"))
        .unwrap()
        .len();
    assert!(size < 1_000_000, "testdata is {size} bytes");
}

/// An offline command whose reader goes away (`pleura info ... | head -c 1`) ends as Unix
/// tools do, without a panic: its stdout here is a pipe whose read end is already closed.
#[test]
fn a_closed_stdout_ends_an_offline_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = common::pleura()
        .arg("info")
        .arg(common::testdata("pwi_disk_4frames.zea.h5"))
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}

#[test]
fn info_prints_a_summary_and_json() {
    let path = common::testdata("pwi_disk_4frames.zea.h5");
    let out = common::pleura().arg("info").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "verasonics-linear-128 on Verasonics Vantage",
        "elements:      128, pitch 0.298 mm, element width 0.262 mm",
        "centre 5.000 MHz, sampling 6.667 MHz, demodulation 5.000 MHz, bandwidth 15 %",
        "sound speed:   1480 m/s",
        "334 per channel, RF (int16)",
        "0: plane        0.00 deg",
        "frames:        4, duration 0.000400 s (10000.0 frames/s)",
        "ground truth:  none",
    ] {
        assert!(
            text.contains(needle),
            "info output lacks {needle:?}:\n{text}"
        );
    }

    // A recording with steered transmits, I/Q samples and ground truth, as JSON.
    let dir = common::tempdir();
    let rec_path = dir.path().join("gt.zea.h5");
    let scan = small_scan(3, 2);
    let grid = GroundTruthGrid {
        grid_x: vec![-1e-3, 0.0, 1e-3],
        grid_z: vec![4e-3, 5e-3],
    };
    let mut rec =
        Recorder::create(&rec_path, &scan, options(SampleType::Float32, Some(grid))).unwrap();
    for i in 0..2 {
        rec.append_with_ground_truth(&frame(&scan, i), aeration(i, 2, 3).view())
            .unwrap();
    }
    rec.finish().unwrap();
    let out = common::pleura()
        .args(["info", "--json"])
        .arg(&rec_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["n_frames"], 2);
    assert_eq!(v["n_elements"], 8);
    assert_eq!(v["signal"], "I/Q");
    assert_eq!(v["sample_type"], "float32");
    assert_eq!(v["size_bytes"], std::fs::metadata(&rec_path).unwrap().len());
    let angles: Vec<f64> = v["transmits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["polar_angle_deg"].as_f64().unwrap())
        .collect();
    assert_eq!(angles.len(), 3);
    for (a, want) in angles.iter().zip([-10.0, 0.0, 10.0]) {
        assert!((a - want).abs() < 1e-9, "angle {a} != {want}");
    }
    assert_eq!(v["transmits"][0]["kind"], "plane");
    assert_eq!(v["ground_truth"]["nx"], 3);
    assert_eq!(v["ground_truth"]["nz"], 2);
    // 2 frames at 3 transmits of 1e-4 s each.
    assert!((v["duration_s"].as_f64().unwrap() - 6e-4).abs() < 1e-12);

    // An invalid file: failure, with the field and value on stderr.
    let bad = dir.path().join("bad.h5");
    common::run_python(
        "import sys, h5py, shutil\n\
         shutil.copy(sys.argv[1], sys.argv[2])\n\
         f = h5py.File(sys.argv[2], 'r+')\n\
         del f['scan/sound_speed']\n\
         f['scan/sound_speed'] = -1540.0",
        &[path.to_str().unwrap(), bad.to_str().unwrap()],
    );
    let out = common::pleura().arg("info").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scan/sound_speed") && err.contains("-1540"),
        "{err}"
    );
}

/// Little-endian bytes of `values`, as a scanner sends a frame.
fn le_bytes<T: Copy, const N: usize>(values: &[T], to_le: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| to_le(v)).collect()
}

/// `append_raw` writes a received frame's samples as they are: int16 to the int16 dataset
/// (no float32 round trip), float32 to the float32 one, bit for bit; a frame whose byte
/// count or sample type does not match the recording is refused naming the field.
#[test]
fn raw_frames_are_written_as_received() {
    let dir = common::tempdir();
    let scan = small_scan(2, 1);
    let n = 2 * 16 * 8;
    // The extremes, odd values, and a pattern over the rest.
    let mut ints: Vec<i16> = vec![i16::MIN, i16::MAX, -1, 1, 0, -32767, 32765, -12345, 77];
    ints.extend((ints.len()..n).map(|k| (k as i32 * 7919 % 65536 - 32768) as i16));
    let mut floats: Vec<f32> = vec![
        -0.0,
        f32::MIN_POSITIVE / 2.0, // subnormal
        f32::MAX,
        f32::MIN,
        0.1,
        -3.5e-20,
    ];
    floats.extend((floats.len()..n).map(|k| (k as f32).sin() * 1e4));
    for layout in [Layout::Zea, Layout::Legacy] {
        let path = dir.path().join(format!("raw_{layout:?}.h5"));
        let opts = RecorderOptions {
            layout,
            ..options(SampleType::Int16, None)
        };
        let mut rec = Recorder::create(&path, &scan, opts).unwrap();
        let first = le_bytes(&ints, i16::to_le_bytes);
        let reversed: Vec<i16> = ints.iter().rev().copied().collect();
        rec.append_raw(SampleType::Int16, &first, 7, 70).unwrap();
        rec.append_raw(
            SampleType::Int16,
            &le_bytes(&reversed, i16::to_le_bytes),
            9,
            90,
        )
        .unwrap();
        assert_eq!(rec.finish().unwrap(), 2);
        let raw_path = match layout {
            Layout::Zea => "tracks/track_0/data/raw_data",
            Layout::Legacy => "data/raw_data",
        };
        let file = hdf5::File::open(&path).unwrap();
        let ds = file.dataset(raw_path).unwrap();
        assert_eq!(
            ds.dtype().unwrap().to_descriptor().unwrap(),
            hdf5::types::TypeDescriptor::Integer(hdf5::types::IntSize::U2)
        );
        let back: Vec<i16> = ds.read_raw().unwrap();
        assert_eq!(back[..n], ints[..], "{layout:?}: frame 0");
        assert_eq!(back[n..], reversed[..], "{layout:?}: frame 1");
        let rec = Recording::open(&path).unwrap();
        assert_eq!(rec.n_frames(), 2);
        let f1 = rec.read_frame(1).unwrap();
        assert_eq!((f1.sequence_number, f1.timestamp_ns), (9, 90));
        assert_eq!(f1.data[[0, 0, 0, 0]], f32::from(reversed[0]));
    }

    let path = dir.path().join("raw_f32.h5");
    let mut rec = Recorder::create(&path, &scan, options(SampleType::Float32, None)).unwrap();
    rec.append_raw(
        SampleType::Float32,
        &le_bytes(&floats, f32::to_le_bytes),
        1,
        10,
    )
    .unwrap();
    // Refused, naming the field and what does not match; nothing is appended.
    let err = rec
        .append_raw(SampleType::Int16, &le_bytes(&ints, i16::to_le_bytes), 2, 20)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tracks/track_0/data/raw_data[1]")
            && err.contains("int16")
            && err.contains("float32"),
        "{err}"
    );
    let short = le_bytes(&floats[..n - 1], f32::to_le_bytes);
    let err = rec
        .append_raw(SampleType::Float32, &short, 2, 20)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tracks/track_0/data/raw_data[1]")
            && err.contains(&format!("{} bytes", 4 * (n - 1)))
            && err.contains(&format!("{}", 4 * n))
            && err.contains("[2, 16, 8, 1]"),
        "{err}"
    );
    let mut bad = floats.clone();
    bad[2 * 16 * 8 - 1] = f32::NAN;
    let err = rec
        .append_raw(
            SampleType::Float32,
            &le_bytes(&bad, f32::to_le_bytes),
            2,
            20,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tracks/track_0/data/raw_data[1, 1, 15, 7, 0]") && err.contains("NaN"),
        "{err}"
    );
    assert_eq!(rec.finish().unwrap(), 1);
    let file = hdf5::File::open(&path).unwrap();
    let back: Vec<f32> = file
        .dataset("tracks/track_0/data/raw_data")
        .unwrap()
        .read_raw()
        .unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    assert_eq!(bits(&back), bits(&floats));
}

/// What the daemon logs when a frame is not recorded: its own line, then each cause down
/// to HDF5's message (`logging::Chain`), none of them lost to a string.
#[test]
fn recorder_errors_are_logged_with_their_causes() {
    use pleura::daemon::record::RecordError;
    use pleura::logging::Chain;
    use pleura::recording::RecordingError;
    let e = RecordError::Append {
        stream_id: 0x2a,
        scan_id: 5,
        sequence: 3,
        source: RecordingError::Hdf5 {
            field: "tracks/track_0/data/raw_data[3]".into(),
            op: "write",
            source: hdf5::Error::from("no space left on device"),
        },
    };
    assert_eq!(
        Chain(&e).to_string(),
        "frame 3 of stream 0x2a, scan 5, not recorded: tracks/track_0/data/raw_data[3]: \
         write failed: no space left on device"
    );
    let inner = std::error::Error::source(&e).expect("the recording error");
    assert!(matches!(
        inner.downcast_ref::<RecordingError>(),
        Some(RecordingError::Hdf5 { op: "write", .. })
    ));
}
