//! Writes the seed corpus of the `decode` target: valid messages of every kind (scan, frame,
//! result, status), each unsigned and signed with the target's key, encoded by
//! `pleura_bridge::protocol::encode_*` and written in the target's input format.
//!
//! `cargo run --example seeds -- [DIR]` (from `fuzz/`; DIR defaults to `corpus/decode`).
//! Existing files of the same names are overwritten; other files are left alone.

use std::path::PathBuf;

use pleura_bridge::protocol::{
    decode, encode_frame, encode_result, encode_scan, encode_status, Auth, Dtype, Field, FieldData,
    FrameHeader, Key, ResultMessage, ScanMessage, StatusMessage,
};

#[path = "../fuzz_targets/input.rs"]
mod input;

/// A scan of `n_tx` plane waves on an `n_el`-element linear array, with every required field
/// of `docs/protocol.md` and the optional ones.
fn full_scan(n_el: u32, n_tx: u32) -> ScanMessage {
    let (e, t) = (n_el as usize, n_tx as usize);
    let pitch = 3e-4;
    let geometry: Vec<f64> = (0..e)
        .flat_map(|i| [(i as f64 - (e as f64 - 1.0) / 2.0) * pitch, 0.0, 0.0])
        .collect();
    let angles: Vec<f64> = (0..t)
        .map(|i| (i as f64 - (t as f64 - 1.0) / 2.0) * 0.1)
        .collect();
    let delays: Vec<f64> = (0..t * e).map(|i| (i % e) as f64 * 1e-8).collect();
    ScanMessage {
        stream_id: 0x1234_5678_9abc_def0,
        scan_id: 1,
        epoch: 1,
        fields: vec![
            Field::f64("probe_geometry", vec![n_el, 3], geometry),
            Field::scalar("sampling_frequency", 20e6),
            Field::scalar("center_frequency", 5e6),
            Field::scalar("demodulation_frequency", 0.0),
            Field::scalar("sound_speed", 1540.0),
            Field::scalar("n_ax", 64.0),
            Field::scalar("n_ch", 1.0),
            Field::f64("initial_times", vec![n_tx], vec![0.0; t]),
            Field::f64("t0_delays", vec![n_tx, n_el], delays),
            Field::f64("tx_apodizations", vec![n_tx, n_el], vec![1.0; t * e]),
            Field::f64("polar_angles", vec![n_tx], angles),
            Field::f64("azimuth_angles", vec![n_tx], vec![0.0; t]),
            Field::f64("focus_distances", vec![n_tx], vec![f64::INFINITY; t]),
            Field::f64("transmit_origins", vec![n_tx, 3], vec![0.0; 3 * t]),
            Field::scalar("element_width", 2.7e-4),
            Field::f64("time_to_next_transmit", vec![1, n_tx], vec![1e-4; t]),
            Field::scalar("fractional_bandwidth", 0.6),
        ],
    }
}

fn field(name: &str, shape: Vec<u32>, data: FieldData) -> Field {
    Field {
        name: name.to_string(),
        shape,
        data,
    }
}

fn frame(dtype: Dtype, shape: [u32; 4], sequence: u64) -> (FrameHeader, Vec<u8>) {
    let n: usize = shape.iter().map(|&d| d as usize).product::<usize>() * dtype.size();
    let payload: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
    let h = FrameHeader::for_payload(
        0x1234_5678_9abc_def0,
        1,
        sequence,
        1_790_000_000_000_000_000,
        dtype,
        shape,
        &payload,
    );
    (h, payload)
}

fn result(sequence: u64, fields: Vec<Field>) -> ResultMessage {
    ResultMessage {
        stream_id: 7,
        scan_id: 1,
        sequence,
        timestamp_ns: 1_790_000_000_000_000_000,
        published_ns: 1_790_000_000_004_000_000,
        latency_ns: 4_000_000,
        fields,
    }
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("corpus/decode"));
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    let key = Key::new(&input::KEY).expect("a 32-byte key");

    // (name, unsigned parts, signed parts)
    let mut messages: Vec<(String, Box<dyn Fn(Option<&Key>) -> Vec<Vec<u8>>>)> = Vec::new();

    // Scan: a complete one, a one-field one, an empty body, and fields of every dtype and
    // rank (the decoder accepts any; the daemon's validation wants float64).
    let full = full_scan(4, 2);
    messages.push(("scan-full".into(), Box::new(move |k| encode_scan(&full, k))));
    let one = ScanMessage {
        stream_id: 7,
        scan_id: 2,
        epoch: 0xffff_ffff,
        fields: vec![Field::scalar("sound_speed", 1540.0)],
    };
    messages.push((
        "scan-one-field".into(),
        Box::new(move |k| encode_scan(&one, k)),
    ));
    let empty = ScanMessage {
        stream_id: 0,
        scan_id: 0,
        epoch: 0,
        fields: vec![],
    };
    messages.push((
        "scan-empty".into(),
        Box::new(move |k| encode_scan(&empty, k)),
    ));
    let mixed = ScanMessage {
        stream_id: 9,
        scan_id: 3,
        epoch: 5,
        fields: vec![
            field("i16", vec![2, 2], FieldData::I16(vec![-1, 0, 1, i16::MAX])),
            field("f32", vec![3], FieldData::F32(vec![f32::NAN, -0.0, 1.5])),
            field(
                "f64",
                vec![1, 1, 1, 1, 1, 1, 1, 2],
                FieldData::F64(vec![f64::MIN, 2.0]),
            ),
            field("u8", vec![0, 5], FieldData::U8(vec![])),
            field("x", vec![], FieldData::U8(vec![255])),
        ],
    };
    messages.push((
        "scan-mixed-dtypes".into(),
        Box::new(move |k| encode_scan(&mixed, k)),
    ));

    // Frame: int16 and float32 payloads, and an empty one.
    for (name, dtype, shape) in [
        ("frame-i16", Dtype::I16, [2u32, 8, 4, 1]),
        ("frame-f32-iq", Dtype::F32, [1, 4, 4, 2]),
        ("frame-empty", Dtype::I16, [1, 0, 4, 1]),
    ] {
        let (h, payload) = frame(dtype, shape, 42);
        messages.push((
            name.into(),
            Box::new(move |k| encode_frame(&h, &payload, k)),
        ));
    }

    // Result: the fields of each daemon stage (docs/protocol.md, "Result message").
    let none = result(1, vec![]);
    messages.push((
        "result-none".into(),
        Box::new(move |k| encode_result(&none, k)),
    ));
    let (nz, nx) = (3u32, 4u32);
    let px = (nz * nx) as usize;
    let grids = || {
        vec![
            Field::f64(
                "grid_x",
                vec![nx],
                (0..nx).map(|i| i as f64 * 1e-3).collect(),
            ),
            Field::f64(
                "grid_z",
                vec![nz],
                (0..nz).map(|i| 5e-3 + i as f64 * 1e-3).collect(),
            ),
        ]
    };
    let mut das_fields = vec![
        field(
            "envelope",
            vec![nz, nx],
            FieldData::F32((0..px).map(|i| i as f32).collect()),
        ),
        field(
            "bmode",
            vec![nz, nx],
            FieldData::U8((0..px).map(|i| (i * 20) as u8).collect()),
        ),
    ];
    das_fields.extend(grids());
    let das = result(2, das_fields);
    messages.push((
        "result-das".into(),
        Box::new(move |k| encode_result(&das, k)),
    ));
    let mut post_fields = vec![
        field("mean", vec![nz, nx], FieldData::F32(vec![0.25; px])),
        field("std", vec![nz, nx], FieldData::F32(vec![0.05; px])),
        Field::scalar("aeration", 0.7),
        Field::scalar("lung_fraction", 0.5),
        Field::f64("aeration_ci", vec![2], vec![0.6, 0.8]),
        field("category", vec![], FieldData::U8(vec![1])),
    ];
    post_fields.extend(grids());
    let post = result(3, post_fields);
    messages.push((
        "result-posterior".into(),
        Box::new(move |k| encode_result(&post, k)),
    ));

    // Status: an empty object, a typical one, and an empty body.
    for (name, json) in [
        ("status-empty-object", "{}"),
        (
            "status-typical",
            "{\"frames_in\":1200,\"frames_out\":1198,\"rejected\":{\"crc\":2},\"stage\":\"posterior\"}",
        ),
        ("status-empty-body", ""),
    ] {
        let msg = StatusMessage {
            published_ns: 1_790_000_000_000_000_000,
            json: json.to_string(),
        };
        messages.push((name.into(), Box::new(move |k| encode_status(&msg, k))));
    }

    let mut written = 0;
    let mut bytes = 0;
    for (name, make) in &messages {
        for (suffix, k, auth) in [
            ("unsigned", None, Auth::None),
            ("signed", Some(&key), Auth::Required(&key)),
        ] {
            let parts = make(k);
            let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
            if let Err(e) = decode(&refs, auth) {
                panic!("seed {name}-{suffix} does not decode: {e}");
            }
            let data = input::join(&parts);
            assert_eq!(
                input::split(&data),
                refs,
                "seed {name}-{suffix} does not split back"
            );
            let path = dir.join(format!("seed-{name}-{suffix}"));
            std::fs::write(&path, &data).expect("write a seed");
            written += 1;
            bytes += data.len();
        }
    }
    println!("wrote {written} seeds ({bytes} bytes) to {}", dir.display());
}
