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
