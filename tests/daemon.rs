//! Hardware-in-the-loop tests of `pleura serve`: real daemon processes on ephemeral
//! loopback ports, real peers (a Python implementation of the protocol written from
//! docs/protocol.md, the `pleura-bridge` virtual scanner, a C program linked against the
//! bridge's C ABI).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::served::{
    data_file, http_get, lines_of, play_file, python_script, python_watching_rss, rejected, serve,
    serve_with, vm_kib, wait_for, write_config, Served,
};

/// Every malformed kind is rejected and counted exactly once under its reason; the valid
/// frames are accepted and processed; the daemon stays healthy and exits 0 on SIGTERM.
#[test]
fn python_publisher_valid_and_malformed_frames() {
    let dir = common::tempdir();
    let d = serve(dir.path(), "stage = \"none\"\nqueue_capacity = 16");
    let script = python_script(
        r#"
import zmq
ingest, admin, path = sys.argv[1:4]
fields, raw = scan_fields_from_zea(path)
frame = raw[0]
ctx = zmq.Context()
pub = ctx.socket(zmq.PUB)
pub.connect(ingest)
t0 = time.time()
while metrics(admin).get("pleura_scans_accepted_total", 0) < 1:
    pub.send_multipart(scan_message(7, 1, fields))
    time.sleep(0.05)
    assert time.time() - t0 < 20, "scan never accepted"
time.sleep(0.2)   # let repeated scans still in flight be counted
base = metrics(admin)["pleura_messages_received_total"]
msgs = []
msgs += [frame_message(7, 1, s, frame) for s in (0, 1, 2)]                      # valid
msgs.append(frame_message(7, 1, 3, frame, version=1))                          # version
good = frame_message(7, 1, 3, frame)
bad = bytearray(good[1]); bad[100] ^= 0x10
msgs.append([good[0], bytes(bad)])                                            # crc
msgs.append([good[0], good[1][:1000]])                                        # truncated
msgs.append(frame_message(7, 99, 3, frame))                                   # unknown_scan
msgs.append(frame_message(7, 1, 3, frame[:, :-1]))                            # shape_mismatch
msgs.append(frame_message(7, 1, 2, frame))                                    # duplicate
msgs.append(frame_message(7, 1, 5, frame))                                    # valid
msgs.append(frame_message(7, 1, 4, frame))                                    # out_of_order
msgs.append(frame_message(7, 1, 6, frame, key=b"k" * 32))                     # hmac (no key set)
msgs.append([b"garbage"])                                                      # malformed
msgs.append([prefix(STATUS) + struct.pack("<QQ", 0, 2), b"{}"])                # unexpected_kind
msgs.append(scan_message(7, 2, fields, drop=("t0_delays",)))                   # bad_scan
msgs.append(frame_message(7, 1, 6, frame))                                    # valid
for m in msgs:
    pub.send_multipart(m)
    time.sleep(0.01)
wait_metric(admin, "pleura_messages_received_total", base + len(msgs))
print(int(base))
"#,
    );
    let out = common::run_python(
        &script,
        &[&d.ingest, &d.admin, data_file().to_str().unwrap()],
    );
    let before: f64 = out.trim().parse().unwrap();
    let m = d.metrics();
    for reason in [
        "version",
        "crc",
        "truncated",
        "unknown_scan",
        "shape_mismatch",
        "duplicate",
        "out_of_order",
        "hmac",
        "malformed",
        "unexpected_kind",
        "bad_scan",
    ] {
        assert_eq!(rejected(&m, reason), 1.0, "reason {reason}: {m:?}");
    }
    assert_eq!(
        m["pleura_scans_accepted_total"], before,
        "only scans before the test messages"
    );
    assert_eq!(m["pleura_frames_accepted_total"], 5.0);
    assert_eq!(m["pleura_messages_received_total"], before + 16.0);
    let (code, body) = http_get(&d.admin, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let log = d.log_text();
    assert!(log.contains("CRC32C mismatch"), "{log}");
    let (status, _, summary, log) = d.terminate();
    assert!(status.success(), "exit {status}; log:\n{log}");
    assert_eq!(summary["frames_accepted"], 5);
    assert_eq!(
        summary["frames_processed"].as_u64().unwrap() + summary["frames_dropped"].as_u64().unwrap(),
        5,
        "{summary}"
    );
    assert_eq!(summary["messages_rejected"], 11);
}

/// Directory holding the built binaries and `libpleura_bridge.so`.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_pleura"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Compiles tests/c/stream_frames.c with the system C compiler against the header and
/// the cdylib.
fn build_c_program(dir: &Path) -> PathBuf {
    let exe = dir.join("stream_frames");
    let lib = target_dir();
    assert!(
        lib.join("libpleura_bridge.so").exists(),
        "{} has no libpleura_bridge.so",
        lib.display()
    );
    let out = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(common::repo().join("tests/c/stream_frames.c"))
        .arg("-I")
        .arg(common::repo().join("firmware-bridge/include"))
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lpleura_bridge", "-lm"])
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// A C program linked against the bridge streams frames (copying and zero-copy) to a
/// daemon, signed with a key; every frame is accepted and every lent buffer released.
#[test]
fn c_program_streams_frames_to_the_daemon() {
    let dir = common::tempdir();
    let exe = build_c_program(dir.path());
    let key = dir.path().join("key.hex");
    std::fs::write(&key, format!("{}\n", "a1".repeat(32))).unwrap();
    let d = serve(
        dir.path(),
        &format!(
            "stage = \"none\"\nqueue_capacity = 64\nkey_file = \"{}\"",
            key.display()
        ),
    );
    let out = Command::new(&exe)
        .args([d.ingest.as_str(), "20"])
        .arg(&key)
        .output()
        .expect("run the C program");
    assert!(
        out.status.success(),
        "C program failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log_text()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "published 20 released 10"
    );
    let t0 = Instant::now();
    while d.metrics()["pleura_frames_accepted_total"] < 20.0
        && t0.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = d.metrics();
    assert_eq!(m["pleura_frames_accepted_total"], 20.0, "{m:?}");
    assert!(m["pleura_scans_accepted_total"] >= 1.0);
    assert_eq!(rejected(&m, "hmac"), 0.0);
    let (status, _, summary, log) = d.terminate();
    assert!(status.success(), "{log}");
    assert_eq!(summary["frames_accepted"], 20);
}

/// Starts `pleura-bridge play --connect` on the data file.
fn play(endpoint: &str, extra: &[&str], log: &Path) -> Child {
    play_file(&data_file(), endpoint, extra, log)
}

/// A small DAS grid on the disk phantom (the PyMUST golden's extent, coarser).
const DAS_GRID: &str = "das_grid_x = [-0.0125, 0.0125, 101]\ndas_grid_z = [0.010, 0.035, 101]";

/// A Python SUB consumer, started before the frames flow: prints "ready", then one JSON
/// line per result (sequence, field shapes, B-mode maximum, the posterior's scalars, their
/// and the mean's bytes in hex, a failed frame's reason) until `last` is seen.
const CONSUMER: &str = r#"
import hashlib
import zmq
endpoint, last = sys.argv[1], int(sys.argv[2])
key = open(sys.argv[3]).read().strip() if len(sys.argv) > 3 else None
key = bytes.fromhex(key) if key else None
ctx = zmq.Context()
sub = ctx.socket(zmq.SUB)
sub.setsockopt(zmq.SUBSCRIBE, b"PLRA\x02\x00\x03\x00")   # results only
sub.connect(endpoint)
time.sleep(0.5)
print("ready", flush=True)
poller = zmq.Poller(); poller.register(sub, zmq.POLLIN)
while True:
    if not poller.poll(30000):
        raise SystemExit("no result for 30 s")
    m = parse(sub.recv_multipart(), key)
    f = m["fields"]
    print(json.dumps({"sequence": m["sequence"], "stream_id": m["stream_id"],
                      "scan_id": m["scan_id"], "latency_ns": m["latency_ns"],
                      "shapes": {k: list(v.shape) for k, v in f.items()},
                      "bmode_max": int(f["bmode"].max()) if "bmode" in f else None,
                      "values": {k: f[k].tolist() for k in
                                 ("aeration", "aeration_ci", "category", "start", "nfe",
                                  "poor_fit", "misfit")
                                 if k in f},
                      "exact": {k: f[k].tobytes().hex() for k in ("mean", "aeration", "aeration_ci",
                                                                  "misfit")
                                if k in f},
                      "sha256": {k: hashlib.sha256(f[k].tobytes()).hexdigest()
                                 for k in ("envelope", "bmode") if k in f},
                      "failed_reason": f["failed_reason"].tobytes().decode()
                                       if "failed_reason" in f else None}), flush=True)
    if m["sequence"] >= last:
        break
"#;

fn start_consumer(publish: &str, last: u64, key: Option<&Path>) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = Command::new(common::python());
    cmd.arg("-c")
        .arg(python_script(CONSUMER))
        .args([publish, &last.to_string()]);
    if let Some(k) = key {
        cmd.arg(k);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python consumer");
    let rx = lines_of(child.stdout.take().unwrap());
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("consumer ready");
    assert_eq!(first, "ready");
    (child, rx)
}

/// Waits for a consumer from [`start_consumer`] to finish (it must succeed) and returns
/// the results it printed with their sequence numbers.
fn consumed(
    mut consumer: Child,
    results: &mpsc::Receiver<String>,
    d: &Served,
) -> (Vec<serde_json::Value>, Vec<u64>) {
    assert!(
        consumer.wait().unwrap().success(),
        "consumer failed; daemon log:\n{}",
        d.log_text()
    );
    let lines: Vec<serde_json::Value> = results
        .try_iter()
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    let seqs = lines
        .iter()
        .map(|l| l["sequence"].as_u64().unwrap())
        .collect();
    (lines, seqs)
}

/// The virtual scanner plays the recording into the daemon (DAS stage); a Python
/// subscriber checks every published result: increasing sequence numbers from the played
/// range ending with the last frame, and consistent image shapes.
#[test]
fn bridge_to_daemon_to_python_subscriber() {
    let dir = common::tempdir();
    let d = serve(
        dir.path(),
        &format!("stage = \"das\"\nqueue_capacity = 2\n{DAS_GRID}"),
    );
    let frames = 8u64;
    let (consumer, results) = start_consumer(&d.publish, frames - 1, None);
    let mut scanner = play(
        &d.ingest,
        &["--fps", "20", "--loop", "--frames", &frames.to_string()],
        &dir.path().join("bridge.log"),
    );
    let status = scanner.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(dir.path().join("bridge.log")).unwrap()
    );
    let mut played = String::new();
    scanner
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut played)
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(played.trim()).unwrap();
    assert_eq!(report["report"]["frames"], frames);
    assert_eq!(report["report"]["sent_intact"], frames);
    let (lines, seqs) = consumed(consumer, &results, &d);
    assert!(!lines.is_empty());
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(*seqs.last().unwrap(), frames - 1);
    for l in &lines {
        let s = &l["shapes"];
        let (nz, nx) = (
            s["grid_z"][0].as_u64().unwrap(),
            s["grid_x"][0].as_u64().unwrap(),
        );
        assert_eq!((nz, nx), (101, 101), "{l}");
        assert_eq!(s["bmode"], serde_json::json!([nz, nx]));
        assert_eq!(s["envelope"], serde_json::json!([nz, nx]));
        assert_eq!(
            l["bmode_max"], 255,
            "each B-mode is normalised to its maximum"
        );
    }
    let m = d.metrics();
    assert_eq!(m["pleura_frames_accepted_total"], frames as f64);
    assert_eq!(
        m["pleura_frames_processed_total"] + m["pleura_frames_dropped_total"],
        frames as f64
    );
    assert_eq!(
        m["pleura_results_published_total"],
        lines.len() as f64,
        "{m:?}"
    );
    let (status, _, _, log) = d.terminate();
    assert!(status.success(), "{log}");
}

/// The virtual scanner plays a simulated lung sequence into the daemon running the
/// `posterior` stage; a Python subscriber receives every frame's reconstruction, and
/// the aeration, its interval, category and start kind agree with `pleura replay` of the
/// same file with the same settings: the daemon and replay run the same pipeline. Then
/// the model on disk is replaced and SIGHUP reloads it: the next stream is reconstructed
/// with the new model, again as replay does, on the same connection. The echo-power
/// calibration in force is reported by `/status`, `/metrics` and replay's file, and a
/// reload brings the new one.
#[test]
fn posterior_stage_matches_replay_and_reloads_its_model() {
    use common::lung;
    let dir = common::tempdir();
    let g = pleura::testing::tiny_grid();
    let model = dir.path().join("model");
    lung::write_model(&model, &g, 1);
    let calibration = dir.path().join("calibration.toml");
    let write_calibration = |gain_db: f64| {
        std::fs::write(
            &calibration,
            format!(
                "frame_sd_db = 0.25\nsource = \"test\"\n\n[depth_gain]\n\
                 gain_db = {gain_db:?}\nslope_db_per_cm = -2.5\n"
            ),
        )
        .unwrap();
    };
    write_calibration(83.5);
    let frames = 5u64;
    // Frame 2 holds a NaN: both roads fail on it, for the same reason.
    let input = dir.path().join("lung.zea.h5");
    lung::write_recording(&input, &g, &g, frames as usize, Some(2));
    // A scanner's TGC, recorded: both roads divide it out, serve after it crossed the
    // wire in the scan message.
    lung::add_tgc(&input, 20.0);
    let config = write_config(
        dir.path(),
        &format!(
            "stage = \"posterior\"\nmodel = \"{}\"\ndevice = \"cpu\"\nqueue_capacity = 8",
            model.display()
        ),
        &format!(
            "[sampler]\nmethod = \"dds\"\nsteps = 10\nsamples = 3\nseed = 7\n\
             calibration = \"{}\"",
            calibration.display()
        ),
    );
    // The calibration in force, as `/status`, `/metrics` and replay's file report it.
    let reported_gain = |d: &Served| {
        let (code, body) = http_get(&d.admin, "/status");
        assert_eq!(code, 200, "{body}");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        let c = &status["in_force"]["calibration"];
        assert_eq!(c["file"].as_str(), calibration.to_str(), "{c}");
        assert_eq!(c["depth_gain"]["slope_db_per_cm"], -2.5, "{c}");
        assert_eq!(c["frame_sd_db"], 0.25, "{c}");
        let m = d.metrics();
        assert_eq!(m["pleura_calibration_loaded"], 1.0);
        assert_eq!(m["pleura_calibration_slope_db_per_cm"], -2.5);
        assert_eq!(
            m["pleura_calibration_gain_db"],
            c["depth_gain"]["gain_db"].as_f64().unwrap()
        );
        m["pleura_calibration_gain_db"]
    };

    // What `pleura replay` writes per frame with the model on disk.
    struct Replayed {
        gain_db: f64,
        aeration: Vec<f64>,
        ci: Vec<f64>,
        category: Vec<u8>,
        mean: Vec<f32>,
        start: Vec<String>,
        failed_reason: Vec<String>,
    }
    let replay = |name: &str| {
        let out = dir.path().join(name);
        let run = common::pleura()
            .arg("replay")
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .arg("--model")
            .arg(&model)
            .arg("--config")
            .arg(&config)
            .args(["--device", "cpu"])
            .output()
            .expect("run replay");
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let f = hdf5::File::open(&out).unwrap();
        let cal: hdf5::types::VarLenUnicode = f
            .group("pleura/recon")
            .unwrap()
            .attr("calibration")
            .unwrap()
            .read_scalar()
            .unwrap();
        let cal: serde_json::Value = serde_json::from_str(cal.as_str()).unwrap();
        Replayed {
            gain_db: cal["depth_gain"]["gain_db"].as_f64().unwrap(),
            aeration: common::h5_read(&f, "pleura/recon/aeration"),
            ci: common::h5_read(&f, "pleura/recon/aeration_ci"),
            category: common::h5_read(&f, "pleura/recon/category"),
            mean: common::h5_read(&f, "pleura/recon/mean"),
            start: common::h5_strings(&f, "pleura/recon/start"),
            failed_reason: common::h5_strings(&f, "pleura/recon/failed_reason"),
        }
    };
    // Plays the recording once and checks every published frame against `expected`:
    // the same posterior mean, aeration, interval, category and start, bit for bit, and
    // for the failed frame a result with the same reason.
    let stream = |d: &Served, expected: &Replayed, log: &str| {
        assert_eq!(expected.aeration.len(), frames as usize);
        let (consumer, results) = start_consumer(&d.publish, frames - 1, None);
        let mut scanner = play_file(&input, &d.ingest, &["--fps", "5"], &dir.path().join(log));
        assert!(scanner.wait().unwrap().success());
        let (lines, seqs) = consumed(consumer, &results, d);
        assert_eq!(
            seqs,
            (0..frames).collect::<Vec<_>>(),
            "every frame, the failed one included, in order"
        );
        let n = pleura::testing::TINY_SIZE;
        for (i, l) in lines.iter().enumerate() {
            let reason = &expected.failed_reason[i];
            if !reason.is_empty() {
                assert_eq!(i, 2, "only the NaN frame fails");
                assert!(reason.contains("NaN"), "{reason}");
                assert_eq!(l["failed_reason"].as_str(), Some(reason.as_str()), "{l}");
                assert!(l["values"].get("aeration").is_none(), "{l}");
                continue;
            }
            assert!(l["failed_reason"].is_null(), "frame {i}: {l}");
            for name in ["mean", "std", "das"] {
                assert_eq!(l["shapes"][name], serde_json::json!([n, n]), "{l}");
            }
            // Bit for bit: the little-endian bytes the daemon published.
            let exact = |name: &str| l["exact"][name].as_str().unwrap().to_string();
            let hex = |bytes: Vec<u8>| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
            let mean = &expected.mean[i * n * n..(i + 1) * n * n];
            let mean = hex(mean.iter().flat_map(|v| v.to_le_bytes()).collect());
            assert_eq!(exact("mean"), mean, "frame {i}: posterior mean");
            let aeration = hex(expected.aeration[i].to_le_bytes().to_vec());
            assert_eq!(exact("aeration"), aeration, "frame {i}: aeration");
            let ci = &expected.ci[2 * i..2 * i + 2];
            let ci = hex(ci.iter().flat_map(|v| v.to_le_bytes()).collect());
            assert_eq!(exact("aeration_ci"), ci, "frame {i}: interval");
            let v = &l["values"];
            assert_eq!(v["category"].as_u64().unwrap(), expected.category[i] as u64);
            let start = ["cold", "warm", "scene-change"][v["start"].as_u64().unwrap() as usize];
            assert_eq!(start, expected.start[i], "frame {i}");
        }
    };

    let first = replay("replay-1.h5");
    // Warm starts follow a good frame; the frame after the failed one starts cold.
    assert_eq!(first.start, ["cold", "warm", "", "cold", "warm"]);
    let d = serve_with(dir.path(), &config);
    stream(&d, &first, "bridge-1.log");
    assert_eq!(first.gain_db, 83.5);
    assert_eq!(reported_gain(&d), 83.5);

    lung::write_model(&model, &g, 2);
    write_calibration(71.25);
    let second = replay("replay-2.h5");
    assert_eq!(second.gain_db, 71.25);
    assert!(
        (second.aeration[0] - first.aeration[0]).abs() > 1e-6,
        "another model gives another reconstruction: {} {}",
        first.aeration[0],
        second.aeration[0]
    );
    d.signal(libc::SIGHUP);
    wait_for("the rebuilt stage", Duration::from_secs(30), || {
        d.log_text().contains("configuration reloaded")
    });
    stream(&d, &second, "bridge-2.log");
    assert_eq!(
        reported_gain(&d),
        71.25,
        "the reloaded calibration is in force"
    );
    let m = d.metrics();
    assert_eq!(
        m["pleura_frames_processed_total"],
        2.0 * (frames - 1) as f64
    );
    assert_eq!(m["pleura_frames_failed_total"], 2.0);
    assert_eq!(m["pleura_results_published_total"], 2.0 * frames as f64);
    assert_eq!(m["pleura_frames_dropped_total"], 0.0);
    assert_eq!(m["pleura_device_info{device=\"cpu\"}"], 1.0);
    let (status, _, _, log) = d.terminate();
    assert!(status.success(), "{log}");
}

/// `pleura beamform` and the daemon's `das` stage are one stage: a recording beamformed
/// offline and played into the daemon give the same envelope and B-mode bit for bit, frame
/// by frame, and the same reason for the frame with a NaN sample.
#[test]
fn beamform_matches_the_das_stage() {
    use sha2::{Digest, Sha256};
    let dir = common::tempdir();
    let g = pleura::testing::tiny_grid();
    let frames = 4u64;
    let input = dir.path().join("lung.zea.h5");
    common::lung::write_recording(&input, &g, &g, frames as usize, Some(1));
    let (x, z) = ((g.x[0], g.x[15], 31), (g.z[0], g.z[15], 41));
    let config = write_config(
        dir.path(),
        &format!(
            "stage = \"das\"\nqueue_capacity = 8\ndas_f_number = 1.2\nbmode_dynamic_range_db = 50\n\
             das_grid_x = [{}, {}, {}]\ndas_grid_z = [{}, {}, {}]",
            x.0, x.1, x.2, z.0, z.1, z.2
        ),
        "",
    );
    let out = dir.path().join("bf.h5");
    let run = common::pleura()
        .arg("beamform")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg(format!("--grid-x={},{},{}", x.0, x.1, x.2))
        .arg(format!("--grid-z={},{},{}", z.0, z.1, z.2))
        .args(["--f-number", "1.2", "--dynamic-range", "50"])
        .output()
        .expect("run beamform");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let f = hdf5::File::open(&out).unwrap();
    let envelope: Vec<f32> = common::h5_read(&f, "envelope");
    let bmode: Vec<u8> = common::h5_read(&f, "bmode");
    let reasons = common::h5_strings(&f, "failed_reason");
    let pixels = x.2 * z.2;
    let sha = |bytes: &[u8]| {
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };

    let d = serve_with(dir.path(), &config);
    let (consumer, results) = start_consumer(&d.publish, frames - 1, None);
    let mut scanner = play_file(
        &input,
        &d.ingest,
        &["--fps", "20"],
        &dir.path().join("b.log"),
    );
    assert!(scanner.wait().unwrap().success());
    let (lines, seqs) = consumed(consumer, &results, &d);
    assert_eq!(seqs, (0..frames).collect::<Vec<_>>());
    for (i, l) in lines.iter().enumerate() {
        if i == 1 {
            assert!(reasons[1].contains("is NaN"), "{reasons:?}");
            assert_eq!(
                l["failed_reason"].as_str(),
                Some(reasons[1].as_str()),
                "{l}"
            );
            continue;
        }
        assert_eq!(reasons[i], "", "frame {i}");
        assert_eq!(l["shapes"]["bmode"], serde_json::json!([z.2, x.2]), "{l}");
        let frame = i * pixels..(i + 1) * pixels;
        let env: Vec<u8> = envelope[frame.clone()]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            l["sha256"]["envelope"].as_str(),
            Some(sha(&env).as_str()),
            "frame {i}"
        );
        assert_eq!(
            l["sha256"]["bmode"].as_str(),
            Some(sha(&bmode[frame]).as_str()),
            "frame {i}"
        );
    }
    let m = d.metrics();
    assert_eq!(m["pleura_frames_processed_total"], (frames - 1) as f64);
    assert_eq!(m["pleura_frames_failed_total"], 1.0);
    let (status, _, _, log) = d.terminate();
    assert!(status.success(), "{log}");
}

/// The worker logs failed frames at most once per `reject_log_interval_ms`, and a reload
/// brings the new interval to it: at an hour, two streams with a NaN frame each give one
/// "frame failed" line; reloaded at 0, two more give a line each. Every failure is counted.
#[test]
fn a_reload_brings_the_failure_log_interval() {
    let dir = common::tempdir();
    let g = pleura::testing::tiny_grid();
    let input = dir.path().join("lung.zea.h5");
    common::lung::write_recording(&input, &g, &g, 3, Some(1));
    let config = |interval_ms: u64| {
        write_config(
            dir.path(),
            &format!("stage = \"das\"\nqueue_capacity = 8\nreject_log_interval_ms = {interval_ms}"),
            "",
        )
    };
    let d = serve_with(dir.path(), &config(3_600_000));
    let failed_lines = |d: &Served| d.log_text().matches("frame failed").count();
    let play_twice = |d: &Served, round: &str| {
        for k in 0..2 {
            let log = dir.path().join(format!("{round}-{k}.log"));
            let mut scanner = play_file(&input, &d.ingest, &["--fps", "20"], &log);
            assert!(scanner.wait().unwrap().success());
        }
    };
    play_twice(&d, "a");
    d.wait_metric("pleura_frames_failed_total", 2.0, Duration::from_secs(30));
    assert_eq!(failed_lines(&d), 1, "{}", d.log_text());

    config(0);
    d.signal(libc::SIGHUP);
    wait_for("the reload", Duration::from_secs(30), || {
        d.log_text().contains("configuration reloaded")
    });
    play_twice(&d, "b");
    d.wait_metric("pleura_frames_failed_total", 4.0, Duration::from_secs(30));
    wait_for("a line per failure", Duration::from_secs(10), || {
        failed_lines(&d) == 3
    });
    let (status, _, _, log) = d.terminate();
    assert!(status.success(), "{log}");
}

/// `pleura serve` with the posterior stage takes real Verasonics RF (128 elements, samples
/// from 7.4 mm) from the virtual scanner and publishes, on the grid that follows the scan
/// (120 x 120 at the model's 0.3 mm), what `pleura replay` writes for the same frame, bit
/// for bit. A short sampler (DDS, 2 steps, 2 samples) and one frame. No quality is claimed:
/// the disk is not a lung.
#[test]
fn posterior_stage_serves_a_real_128_element_scan_as_replay_does() {
    let dir = common::tempdir();
    let input = common::repo().join("testdata/pwi_disk_4frames.zea.h5");
    let config = write_config(
        dir.path(),
        &format!(
            "stage = \"posterior\"\nmodel = \"{}\"\ndevice = \"cpu\"",
            common::repo().join("testdata/model").display()
        ),
        "[sampler]\nmethod = \"dds\"\nsteps = 2\nsamples = 2\nseed = 7",
    );
    let out = dir.path().join("pwi.h5");
    let run = common::pleura()
        .arg("replay")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--config")
        .arg(&config)
        .args(["--max-frames", "1"])
        .output()
        .expect("run replay");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let f = hdf5::File::open(&out).unwrap();
    let mean: Vec<f32> = common::h5_read(&f, "pleura/recon/mean");
    let aeration: Vec<f64> = common::h5_read(&f, "pleura/recon/aeration");
    assert_eq!(mean.len(), 120 * 120);
    assert!(aeration[0].is_finite(), "{aeration:?}");
    // The operator explains none of the disk's echoes: a poor fit, drawn again under
    // model error (docs/reconstruction.md, "Model error").
    let misfit: Vec<f64> = common::h5_read(&f, "pleura/recon/misfit");
    let poor: Vec<u8> = common::h5_read(&f, "pleura/recon/poor_fit");
    assert_eq!(poor, [1]);
    assert!(misfit[0] > 2.0, "misfit {misfit:?}");
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("(0 failed, 1 poor fits)"),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );

    let d = serve_with(dir.path(), &config);
    let (consumer, results) = start_consumer(&d.publish, 0, None);
    let log = dir.path().join("bridge.log");
    let mut scanner = play_file(&input, &d.ingest, &["--fps", "5", "--frames", "1"], &log);
    assert!(scanner.wait().unwrap().success());
    let (lines, seqs) = consumed(consumer, &results, &d);
    assert_eq!(seqs, [0]);
    let l = &lines[0];
    assert!(l["failed_reason"].is_null(), "{l}");
    for name in ["mean", "std", "das"] {
        assert_eq!(l["shapes"][name], serde_json::json!([120, 120]), "{l}");
    }
    let hex = |bytes: Vec<u8>| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let exact = |name: &str| l["exact"][name].as_str().unwrap().to_string();
    assert_eq!(
        exact("mean"),
        hex(mean.iter().flat_map(|v| v.to_le_bytes()).collect()),
        "posterior mean"
    );
    assert_eq!(
        exact("aeration"),
        hex(aeration[0].to_le_bytes().to_vec()),
        "aeration"
    );
    assert_eq!(exact("misfit"), hex(misfit[0].to_le_bytes().to_vec()));
    assert_eq!(l["values"]["poor_fit"], serde_json::json!(1), "{l}");
    let m = d.metrics();
    assert_eq!(m["pleura_frames_poor_fit_total"], 1.0);
    assert_eq!(m["pleura_misfit"], misfit[0]);
    let (status, _, _, log) = d.terminate();
    assert!(
        log.contains("the operator does not explain the data"),
        "the poor fit is logged: {log}"
    );
    assert!(status.success(), "{log}");
}

/// `[log]` of the configuration file applies to the daemon: `format = "json"` gives one
/// JSON object per log line (the `--log` filter flag still applies on top).
#[test]
fn log_section_of_the_configuration_applies() {
    let dir = common::tempdir();
    let config = write_config(dir.path(), "stage = \"none\"", "[log]\nformat = \"json\"");
    let d = serve_with(dir.path(), &config);
    let (status, _, _, log) = d.terminate();
    assert!(status.success(), "{log}");
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 2, "{log}");
    for l in lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
    assert!(log.contains("daemon running"), "{log}");
}

/// The scanner is killed with SIGKILL mid-stream and restarted: the daemon keeps running
/// and accepts the new session (new stream id, sequence numbers from 0 again).
#[test]
fn bridge_killed_and_restarted() {
    let dir = common::tempdir();
    let d = serve(dir.path(), "stage = \"none\"");
    let log = dir.path().join("bridge.log");
    let mut first = play(&d.ingest, &["--fps", "100", "--loop"], &log);
    wait_for(
        "frames from the first bridge",
        Duration::from_secs(30),
        || d.metrics()["pleura_frames_accepted_total"] >= 20.0,
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let before = d.metrics()["pleura_frames_accepted_total"];
    let mut second = play(
        &d.ingest,
        &["--fps", "100", "--loop", "--frames", "30"],
        &dir.path().join("bridge2.log"),
    );
    assert!(second.wait().unwrap().success());
    wait_for(
        "frames from the second bridge",
        Duration::from_secs(30),
        || d.metrics()["pleura_frames_accepted_total"] >= before + 30.0,
    );
    let m = d.metrics();
    assert_eq!(m["pleura_frames_accepted_total"], before + 30.0, "{m:?}");
    assert_eq!(
        rejected(&m, "out_of_order") + rejected(&m, "duplicate"),
        0.0
    );
    assert_eq!(http_get(&d.admin, "/healthz").0, 200);
    let (status, _, _, log) = d.terminate();
    assert!(status.success(), "{log}");
}

/// SIGTERM while recording: exit 0 within the deadline, and the zea file (read by h5py)
/// holds exactly the frames the daemon accepted, int16 and byte for byte the played ones.
#[test]
fn sigterm_during_recording() {
    let dir = common::tempdir();
    let rec = dir.path().join("live.zea.h5");
    let d = serve(
        dir.path(),
        &format!(
            "stage = \"das\"\n{DAS_GRID}\nshutdown_deadline_ms = 5000\nrecord = \"{}\"",
            rec.display()
        ),
    );
    let mut scanner = play(
        &d.ingest,
        &["--fps", "50", "--loop"],
        &dir.path().join("bridge.log"),
    );
    wait_for("frames", Duration::from_secs(30), || {
        d.metrics()["pleura_frames_accepted_total"] >= 30.0
    });
    let (status, took, summary, log) = d.terminate();
    scanner.kill().unwrap();
    scanner.wait().unwrap();
    assert!(status.success(), "exit {status}:\n{log}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert!(log.contains("recording closed"), "{log}");
    let accepted = summary["frames_accepted"].as_u64().unwrap();
    assert!(accepted >= 30);
    assert_eq!(summary["frames_recorded"], accepted, "{summary}");
    assert_eq!(summary["frames_not_recorded"], 0);
    let out = common::run_python(
        r#"
import sys, h5py, numpy as np
rec, src = sys.argv[1:3]
with h5py.File(rec, "r") as f, h5py.File(src, "r") as g:
    raw = f["tracks/track_0/data/raw_data"]
    n = raw.shape[0]
    assert int(f["pleura/n_frames"][()]) == n
    seq = f["pleura/sequence_number"][()]
    assert len(seq) == n and np.all(np.diff(seq.astype(np.int64)) > 0), seq
    ref = g["data/raw_data"]
    assert raw.dtype == ref.dtype == np.dtype("<i2"), (raw.dtype, ref.dtype)
    for k in range(n):
        assert raw[k].tobytes() == ref[int(seq[k]) % ref.shape[0]].tobytes(), k
    print(n)
"#,
        &[rec.to_str().unwrap(), data_file().to_str().unwrap()],
    );
    assert_eq!(out.trim().parse::<u64>().unwrap(), accepted);
}

/// With a key configured, unsigned, tampered and wrongly keyed messages are rejected as
/// `hmac` and signed ones accepted; results come back signed. SIGHUP then reloads a
/// configuration without the key, on the same connections.
#[test]
fn hmac_authentication_and_sighup_reload() {
    let dir = common::tempdir();
    let key = dir.path().join("key.hex");
    std::fs::write(&key, "5e".repeat(40)).unwrap();
    let d = serve(
        dir.path(),
        &format!(
            "stage = \"none\"\nqueue_capacity = 8\nkey_file = \"{}\"",
            key.display()
        ),
    );
    let (mut consumer, results) = start_consumer(&d.publish, 0, Some(&key));
    let script = python_script(
        r#"
import zmq
ingest, admin, path, keyfile, phase = sys.argv[1:6]
key = bytes.fromhex(open(keyfile).read().strip())
fields, raw = scan_fields_from_zea(path)
frame = raw[0]
pub = zmq.Context().socket(zmq.PUB)
pub.connect(ingest)
sent = 0
def send(m):
    global sent
    pub.send_multipart(m); sent += 1; time.sleep(0.01)
start = metrics(admin)["pleura_messages_received_total"]
if phase == "keyed":
    # Until the connection is up, messages may be lost: repeat the unsigned scan until the
    # daemon has counted it, then the signed one until it is accepted.
    while metrics(admin)["pleura_messages_rejected_total{reason=\"hmac\"}"] < 1:
        pub.send_multipart(scan_message(3, 1, fields)); time.sleep(0.05)
    while metrics(admin)["pleura_scans_accepted_total"] < 1:
        pub.send_multipart(scan_message(3, 1, fields, key=key)); time.sleep(0.05)
    time.sleep(0.2)   # let repeated scans still in flight be counted
    print(int(metrics(admin)["pleura_messages_rejected_total{reason=\"hmac\"}"]))
    start = metrics(admin)["pleura_messages_received_total"]
    send(frame_message(3, 1, 0, frame))                                   # unsigned
    t = frame_message(3, 1, 0, frame, key=key)
    p = bytearray(t[1]); p[7] ^= 1
    h = bytearray(t[0]); h[76:80] = struct.pack("<I", crc32c(bytes(p)))  # CRC fixed up
    send([bytes(h), bytes(p), t[2]])                                      # tampered
    send(frame_message(3, 1, 0, frame, key=b"\x01" * 32))                 # wrong key
    send(frame_message(3, 1, 0, frame, key=key))                          # valid
else:
    while metrics(admin)["pleura_frames_accepted_total"] < 2:
        pub.send_multipart(frame_message(3, 1, 1, frame)); time.sleep(0.05)   # unsigned, now fine
    start = metrics(admin)["pleura_messages_received_total"]
    send(frame_message(3, 1, 2, frame, key=key))                          # signed, no key now
wait_metric(admin, "pleura_messages_received_total", start + sent)
"#,
    );
    let args = |phase: &'static str| {
        vec![
            d.ingest.clone(),
            d.admin.clone(),
            data_file().display().to_string(),
            key.display().to_string(),
            phase.to_string(),
        ]
    };
    let a = args("keyed");
    let out = common::run_python(&script, &a.iter().map(String::as_str).collect::<Vec<_>>());
    let unsigned_scans: f64 = out.trim().parse().unwrap();
    assert!(unsigned_scans >= 1.0);
    let m = d.metrics();
    assert_eq!(rejected(&m, "hmac"), unsigned_scans + 3.0, "{m:?}");
    assert_eq!(m["pleura_frames_accepted_total"], 1.0);
    assert!(
        consumer.wait().unwrap().success(),
        "consumer failed to verify a signed result"
    );
    let result: serde_json::Value = serde_json::from_str(&results.recv().unwrap()).unwrap();
    assert_eq!(result["sequence"], 0);
    // The result names the frame's stream (3) and its scan id within it (1).
    assert_eq!(
        (&result["stream_id"], &result["scan_id"]),
        (&3.into(), &1.into())
    );

    // Reload without the key: unsigned frames are now accepted, signed ones rejected.
    let text = std::fs::read_to_string(&d.config).unwrap();
    let unkeyed: String = text
        .lines()
        .filter(|l| !l.starts_with("key_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&d.config, unkeyed).unwrap();
    d.signal(libc::SIGHUP);
    wait_for("reload", Duration::from_secs(10), || {
        d.metrics()["pleura_config_reloads_total"] >= 1.0
    });
    let a = args("unkeyed");
    common::run_python(&script, &a.iter().map(String::as_str).collect::<Vec<_>>());
    let m = d.metrics();
    assert_eq!(m["pleura_frames_accepted_total"], 2.0, "{m:?}");
    assert_eq!(rejected(&m, "hmac"), unsigned_scans + 4.0);
    let (status, _, _, log) = d.terminate();
    assert!(status.success(), "{log}");
    assert!(log.contains("configuration reloaded"), "{log}");
}

/// A publisher far faster than the worker (DAS on a 251 x 251 grid): the queue drops the
/// oldest frames and counts them, every accepted frame is either processed or dropped,
/// the queue never exceeds its capacity, memory stays bounded and the latency of what is
/// published stays bounded.
#[test]
fn fast_publisher_drops_are_counted_and_bounded() {
    let dir = common::tempdir();
    let d = serve(
        dir.path(),
        "stage = \"das\"\nqueue_capacity = 2\ndas_grid_x = [-0.0125, 0.0125, 251]\ndas_grid_z = [0.010, 0.035, 251]",
    );
    let script = python_script(
        r#"
import zmq
ingest, admin, path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
fields, raw = scan_fields_from_zea(path)
frame = np.ascontiguousarray(raw[0])
payload = frame.tobytes(); c = crc32c(payload)
pub = zmq.Context().socket(zmq.PUB)
pub.setsockopt(zmq.SNDHWM, 100000)
pub.connect(ingest)
while metrics(admin)["pleura_scans_accepted_total"] < 1:
    pub.send_multipart(scan_message(11, 1, fields)); time.sleep(0.05)
t0 = time.time()
for s in range(n):
    pub.send_multipart(frame_message(11, 1, s, frame, crc=c, payload=payload))
    if s == n // 4:
        wait_metric(admin, "pleura_frames_accepted_total", n // 8)
        print("quarter", flush=True)
print("sent %d in %.2f s" % (n, time.time() - t0), flush=True)
"#,
    );
    let n = 1200u64;
    let mut py = Command::new(common::python())
        .arg("-c")
        .arg(&script)
        .args([
            d.ingest.as_str(),
            d.admin.as_str(),
            data_file().to_str().unwrap(),
            &n.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(py.stdout.take().unwrap()).lines();
    assert_eq!(out.next().unwrap().unwrap(), "quarter");
    let pid = d.child.id();
    let rss_early = vm_kib(pid, "VmRSS:");
    let mut max_depth = 0.0f64;
    let t0 = Instant::now();
    loop {
        let m = d.metrics();
        max_depth = max_depth.max(m["pleura_queue_depth"]);
        let settled = m["pleura_frames_processed_total"] + m["pleura_frames_dropped_total"]
            == m["pleura_frames_accepted_total"];
        if settled && py.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "never settled: {m:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(py.wait().unwrap().success());
    let m = d.metrics();
    let accepted = m["pleura_frames_accepted_total"];
    let dropped = m["pleura_frames_dropped_total"];
    let processed = m["pleura_frames_processed_total"];
    eprintln!(
        "accepted {accepted} processed {processed} dropped {dropped}; {:?}",
        out.next()
    );
    assert!(accepted >= n as f64 * 0.9, "{m:?}");
    assert!(dropped > accepted / 2.0, "the worker kept up? {m:?}");
    assert_eq!(processed + dropped, accepted);
    assert!(max_depth <= 2.0, "queue depth {max_depth}");
    // Memory: growth over the last three quarters of the stream (about 75 MB of frames)
    // stays far below what queuing them would take.
    let rss_late = vm_kib(pid, "VmRSS:");
    assert!(
        rss_late < rss_early + 40 * 1024,
        "RSS grew from {rss_early} KiB to {rss_late} KiB"
    );
    // Latency of everything published: acquisition -> publication under 2 s.
    let count = m["pleura_latency_seconds_count"];
    assert_eq!(count, processed);
    assert_eq!(m["pleura_latency_seconds_bucket{le=\"2\"}"], count, "{m:?}");
    let (status, _, _, log) = d.terminate();
    assert!(status.success(), "{log}");
}

/// Every hostile case of issue 23, in a loop for `PLEURA_SOAK_SECONDS` (10 by default; 60
/// for docs/BENCHMARKS.md) against one daemon, while a legitimate stream goes on: ZMTP
/// frame headers announcing 2^40 and 2^32 bytes, silent connections, scan bombs, a
/// replayed scan announcement, another stream reusing the scan id, a frame 2^63 ahead,
/// and thousands of distinct streams and scan ids. The daemon stays up, every attack is
/// counted under its reason, the legitimate stream is never disturbed (no shape mismatch,
/// no out-of-order frame), the tables stay within their bounds, and the resident memory
/// grows less than the budget the configured bounds add up to.
#[test]
fn hostile_ingest_loop_keeps_the_daemon_up_and_bounded() {
    let seconds: f64 = std::env::var("PLEURA_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let dir = common::tempdir();
    let d = serve(
        dir.path(),
        "stage = \"das\"\nqueue_capacity = 2\nmax_message_bytes = 1048576\n\
         handshake_timeout_ms = 500\nmax_streams = 16\nmax_scans_per_stream = 4\n\
         max_scan_bytes = 262144\nmax_grid_pixels = 262144\nmax_das_taps = 16777216\n\
         max_operators = 1\nmax_operator_bytes = 67108864\nmax_connections = 32\n\
         publish_queue = 4\nreject_log_interval_ms = 5000",
    );
    let pid = d.child.id();
    let script = python_script(
        r#"
import socket, zmq
ingest, admin, path, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
host, port = ingest[len("tcp://"):].rsplit(":", 1)
fields, raw = scan_fields_from_zea(path)
short = dict(fields); short["n_ax"] = np.asarray(200.0)        # epoch 1: 200 samples
frame = np.ascontiguousarray(raw[0][:, :200])
bomb = dict(fields)
bomb["probe_geometry"] = fields["probe_geometry"][:2]
bomb["t0_delays"] = fields["t0_delays"][:, :2]
bomb["tx_apodizations"] = fields["tx_apodizations"][:, :2]
bomb["n_ax"] = np.asarray(64.0)
bomb_frame = np.zeros((1, 64, 2, 1), "<i2")
tiny = dict(bomb); tiny["sampling_frequency"] = fields["sampling_frequency"]
ctx = zmq.Context()
legit = ctx.socket(zmq.PUB); legit.connect(ingest)
attacker = ctx.socket(zmq.PUB); attacker.connect(ingest)
L = 1000
recorded = scan_message(L, 1, fields, epoch=0)
t0 = time.time()
while metrics(admin).get("pleura_scans_accepted_total", 0) < 1:
    legit.send_multipart(recorded); time.sleep(0.05)
    assert time.time() - t0 < 20, "scan never accepted"
current = scan_message(L, 1, short, epoch=1)
legit.send_multipart(current)
seq = 0
while metrics(admin).get("pleura_frames_accepted_total", 0) < 1:   # the victim's stream flows
    legit.send_multipart(frame_message(L, 1, seq, frame)); seq += 1; time.sleep(0.05)
    assert time.time() - t0 < 20, "no frame accepted"
time.sleep(0.3)   # and the attacker's subscription has arrived
GREETING = b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0]) + b"NULL" + bytes(16) + b"\x00" + bytes(31)
name = b"Socket-Type"
READY = b"\x05READY" + bytes([len(name)]) + name + struct.pack(">I", 3) + b"PUB"
READY = bytes([0x04, len(READY)]) + READY

def closed_by_daemon(s, within):
    s.settimeout(within)
    try:
        while s.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    finally:
        s.close()

def zmtp_bomb(header):
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(GREETING + header)
    assert closed_by_daemon(s, 5), "the daemon kept a connection announcing %r" % header

stream, rounds = 5000, 0
while time.time() - t0 < seconds:
    rounds += 1
    silent = [socket.create_connection((host, int(port)), timeout=5) for _ in range(10)]
    zmtp_bomb(b"\x06" + struct.pack(">Q", 1 << 40))
    zmtp_bomb(READY + b"\x02" + struct.pack(">Q", 1 << 40))
    zmtp_bomb(READY + b"\x02" + struct.pack(">Q", 1 << 32))
    for fs in (1e-3, 200.0):
        bomb["sampling_frequency"] = np.asarray(fs)
        attacker.send_multipart(scan_message(stream, 1, bomb)); stream += 1
        attacker.send_multipart(frame_message(stream - 1, 1, 0, bomb_frame))
    attacker.send_multipart(recorded)                                   # replayed scan
    attacker.send_multipart(scan_message(stream, 1, tiny)); stream += 1  # scan id 1, stream B
    attacker.send_multipart(frame_message(L, 1, 1 << 63, frame))        # 2^63 ahead
    for _ in range(200):                                                # distinct streams
        attacker.send_multipart(scan_message(stream, stream, tiny)); stream += 1
    legit.send_multipart(current)
    for _ in range(5):
        legit.send_multipart(frame_message(L, 1, seq, frame)); seq += 1
        time.sleep(0.01)
    for s in silent:
        assert closed_by_daemon(s, 3), "a silent connection outlived the handshake timeout"
time.sleep(0.5)
print(json.dumps({"rounds": rounds, "frames": seq, "streams": stream - 5000}))
"#,
    );
    let rss_start = vm_kib(pid, "VmRSS:");
    let (out, ok, rss_max) = python_watching_rss(
        &script,
        &[
            &d.ingest,
            &d.admin,
            data_file().to_str().unwrap(),
            &seconds.to_string(),
        ],
        pid,
    );
    assert!(ok, "attacker failed; log:\n{}", d.log_text());
    let run: serde_json::Value = serde_json::from_str(out.trim()).expect("summary line");
    let rounds = run["rounds"].as_f64().unwrap();
    let m = d.metrics();
    eprintln!(
        "{seconds} s, {rounds} rounds, {} legit frames, {} streams: RSS {rss_start} -> max {rss_max} KiB, budget {} B",
        run["frames"], run["streams"], m["pleura_memory_budget_bytes"]
    );
    let counted: Vec<String> = m
        .iter()
        .filter(|(k, v)| {
            **v > 0.0
                && (k.starts_with("pleura_messages_rejected_total")
                    || k.starts_with("pleura_state_")
                    || k.starts_with("pleura_ingest_errors")
                    || k.starts_with("pleura_frames_"))
        })
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    eprintln!("{}", counted.join("\n"));
    assert!(rounds >= 2.0, "{run}");
    for (reason, at_least) in [
        ("bad_scan", 2.0 * rounds),
        ("unknown_scan", 2.0 * rounds),
        ("stale_scan", rounds),
        ("sequence_jump", rounds),
    ] {
        assert!(rejected(&m, reason) >= at_least, "{reason}: {m:?}");
    }
    for reason in ["shape_mismatch", "out_of_order", "duplicate"] {
        assert_eq!(
            rejected(&m, reason),
            0.0,
            "{reason}: the legit stream was disturbed"
        );
    }
    assert!(m["pleura_ingest_errors_total"] >= 11.0 * rounds, "{m:?}");
    assert_eq!(
        m["pleura_frames_accepted_total"],
        run["frames"].as_f64().unwrap()
    );
    assert!(m["pleura_frames_processed_total"] >= 1.0, "{m:?}");
    assert!(m["pleura_state_entries{table=\"streams\"}"] <= 16.0);
    assert!(m["pleura_state_entries{table=\"scans\"}"] <= 64.0);
    assert!(m["pleura_state_evictions_total{table=\"streams\"}"] >= 200.0 * rounds - 16.0);
    let budget_kib = m["pleura_memory_budget_bytes"] / 1024.0;
    assert!(
        ((rss_max - rss_start) as f64) < budget_kib,
        "RSS grew {rss_start} -> {rss_max} KiB, over the budget of {budget_kib} KiB"
    );
    let (status, _, _, log) = d.terminate();
    assert!(status.success(), "{log}");
}

/// Issue 23, case 5: a reload whose key file is missing changes nothing, not even the
/// settings beside the key; the log and `/status` say the previous configuration stays in
/// force and that it is not authenticated. A later valid reload applies whole.
#[test]
fn failed_reload_changes_nothing_and_says_so() {
    let dir = common::tempdir();
    let d = serve(dir.path(), "stage = \"none\"\nqueue_capacity = 4");
    let status = |d: &Served| -> serde_json::Value {
        let (code, body) = http_get(&d.admin, "/status");
        assert_eq!(code, 200);
        serde_json::from_str(&body).expect("/status is JSON")
    };
    let s = status(&d);
    assert_eq!(s["in_force"]["authenticated"], false);
    assert_eq!(s["in_force"]["queue_capacity"], 4);
    assert!(s["last_reload"].is_null(), "{s}");
    let text = std::fs::read_to_string(&d.config).unwrap();
    let missing = dir.path().join("no-such-key.hex");
    std::fs::write(
        &d.config,
        text.replace("queue_capacity = 4", "queue_capacity = 9")
            + &format!("key_file = \"{}\"\n", missing.display()),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    wait_for("the refused reload", Duration::from_secs(20), || {
        d.metrics()["pleura_config_reload_failures_total"] >= 1.0
    });
    let m = d.metrics();
    assert_eq!(m["pleura_config_reloads_total"], 0.0);
    assert_eq!(
        m["pleura_queue_capacity"], 4.0,
        "queue_capacity changed in a refused reload"
    );
    let s = status(&d);
    assert_eq!(s["in_force"]["authenticated"], false, "{s}");
    assert_eq!(s["in_force"]["queue_capacity"], 4, "{s}");
    assert_eq!(s["last_reload"]["applied"], false, "{s}");
    let error = s["last_reload"]["error"].as_str().unwrap();
    assert!(
        error.contains("key_file") && error.contains("no-such-key"),
        "{error}"
    );
    let log = d.log_text();
    assert!(log.contains("configuration reload refused"), "{log}");
    assert!(!log.contains("configuration reloaded"), "{log}");
    assert!(!log.contains("authenticated=true"), "{log}");
    // A configuration that does not even parse is refused the same way.
    std::fs::write(
        &d.config,
        text.replace("queue_capacity = 4", "queue_capacity = 0"),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    wait_for("the second refusal", Duration::from_secs(20), || {
        d.metrics()["pleura_config_reload_failures_total"] >= 2.0
    });
    assert!(status(&d)["last_reload"]["error"]
        .as_str()
        .unwrap()
        .contains("[daemon] queue_capacity = 0"));
    // A valid one applies whole.
    let key = dir.path().join("key.hex");
    std::fs::write(&key, "3c".repeat(32)).unwrap();
    std::fs::write(
        &d.config,
        text.replace("queue_capacity = 4", "queue_capacity = 9")
            + &format!("key_file = \"{}\"\n", key.display()),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    wait_for("the applied reload", Duration::from_secs(20), || {
        d.metrics()["pleura_config_reloads_total"] >= 1.0
    });
    let s = status(&d);
    assert_eq!(s["in_force"]["authenticated"], true, "{s}");
    assert_eq!(s["in_force"]["queue_capacity"], 9, "{s}");
    assert_eq!(s["last_reload"]["applied"], true, "{s}");
    assert_eq!(d.metrics()["pleura_queue_capacity"], 9.0);
    let (code, _, _, log) = d.terminate();
    assert!(code.success(), "{log}");
}

/// Issue 23, case 6: PUSH and DEALER peers cannot talk to the ingest SUB socket; each
/// failed handshake is now logged and counted instead of vanishing.
#[test]
fn incompatible_peers_are_logged_and_counted() {
    let dir = common::tempdir();
    let d = serve(dir.path(), "stage = \"none\"\nreject_log_interval_ms = 0");
    let script = python_script(
        r#"
import zmq
ingest, admin = sys.argv[1:3]
ctx = zmq.Context()
for kind in (zmq.PUSH, zmq.DEALER):
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(ingest)
    try:
        s.send(b"hello", zmq.NOBLOCK)
    except zmq.Again:
        pass
    time.sleep(0.3)
    s.close()
wait_metric(admin, "pleura_ingest_errors_total", 2)
"#,
    );
    common::run_python(&script, &[&d.ingest, &d.admin]);
    let log = d.log_text();
    assert!(log.matches("failed its handshake").count() >= 2, "{log}");
    assert!(log.contains("not compatible"), "{log}");
    let (status, _, _, log) = d.terminate();
    assert!(status.success(), "{log}");
}

/// Issue 21: 10,000 distinct scan ids, each announced and followed by a frame of it, to a
/// daemon with small bounds. Three streams keep announcing (a new epoch each time) and
/// every tenth scan comes from a new stream (a restarted publisher), so every table fed
/// from the wire churns: the validator's streams (`max_streams` = 4) and scans
/// (`max_scans_per_stream` = 8 each), the live view's streams (`max_streams`), and the DAS
/// stage's plan (one; consecutive scans differ in sound speed, so it is rebuilt for every
/// frame). Each scan carries 12 kB of `time_to_next_transmit`, so that keeping them would
/// show in the resident memory. The sender waits for the worker between batches smaller
/// than the queue, so no frame is dropped and the stage sees every scan. (The posterior
/// stage's operator cache, `max_operators`, is left to `operator::tests`: that stage costs
/// seconds a frame.) Every table stays within its bound with each eviction counted, the
/// resident memory grows less than the budget, the scan log stays throttled, and the
/// daemon exits 0 on SIGTERM.
#[test]
fn ten_thousand_scan_ids_stay_within_the_bounds() {
    const SCANS: u64 = 10_000;
    let (max_streams, max_scans) = (4.0, 8.0);
    let dir = common::tempdir();
    let d = serve(
        dir.path(),
        "stage = \"das\"\ndas_grid_x = [-0.001, 0.001, 8]\ndas_grid_z = [0.001, 0.004, 16]\n\
         queue_capacity = 64\nmax_message_bytes = 65536\nmax_connections = 4\npublish_queue = 4\n\
         max_streams = 4\nmax_scans_per_stream = 8\nmax_scan_bytes = 16384\n\
         max_grid_pixels = 4096\nmax_das_taps = 1048576\nmax_operators = 1\n\
         max_operator_bytes = 1048576\nreject_log_interval_ms = 5000",
    );
    let pid = d.child.id();
    let script = python_script(
        r#"
import zmq
ingest, admin, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
n_el, n_ax = 8, 128
geo = np.zeros((n_el, 3)); geo[:, 0] = (np.arange(n_el) - (n_el - 1) / 2) * 3e-4
def fields(c):
    return {"probe_geometry": geo, "sampling_frequency": np.asarray(20e6),
            "center_frequency": np.asarray(5e6), "demodulation_frequency": np.asarray(0.0),
            "sound_speed": np.asarray(c), "n_ax": np.asarray(float(n_ax)), "n_ch": np.asarray(1.0),
            "initial_times": np.zeros(1), "t0_delays": np.zeros((1, n_el)),
            "tx_apodizations": np.ones((1, n_el)), "polar_angles": np.zeros(1),
            "azimuth_angles": np.zeros(1), "focus_distances": np.full(1, np.inf),
            "transmit_origins": np.zeros((1, 3)), "element_width": np.asarray(2.7e-4),
            "time_to_next_transmit": np.full((1500, 1), 1e-4)}
# Two parameter sets, alternating: the bodies and their CRCs are computed once.
bodies = [b"".join(field(k, v) for k, v in fields(c).items()) for c in (1540.0, 1480.0)]
bodies = [(b, crc32c(b)) for b in bodies]
frame = ((np.arange(n_ax * n_el) * 37) % 401 - 200).astype("<i2").reshape(1, n_ax, n_el, 1)
fcrc = crc32c(frame.tobytes())
epochs, seqs, streams = {}, {}, set()
def pair(i):
    s = 1_000_000 + i if i % 10 == 9 else (1, 2, 3)[i % 3]
    streams.add(s)
    e = epochs[s] = epochs.get(s, -1) + 1
    q = seqs[s] = seqs.get(s, -1) + 1
    body, crc = bodies[i % 2]
    scan = [prefix(SCAN) + struct.pack("<QQQII", s, i, len(body), crc, e), body]
    return scan, frame_message(s, i, q, frame, crc=fcrc)
def caught_up(n):
    t = time.time()
    while True:
        m = metrics(admin)
        done = sum(m.get("pleura_frames_%s_total" % k, 0) for k in ("processed", "failed", "dropped"))
        if done >= n:
            return
        assert time.time() - t < 20, "the worker is at %d of %d frames: %s" % (done, n, m)
        time.sleep(0.002)
ctx = zmq.Context()
pub = ctx.socket(zmq.PUB)
pub.setsockopt(zmq.SNDHWM, 0)   # queue, never drop
pub.setsockopt(zmq.LINGER, 0)
pub.connect(ingest)
scan, frame0 = pair(0)
t0 = time.time()
while metrics(admin).get("pleura_scans_accepted_total", 0) < 1:
    pub.send_multipart(scan); time.sleep(0.05)     # the same announcement until subscribed
    assert time.time() - t0 < 20, "scan never accepted"
pub.send_multipart(frame0)
caught_up(1)
batch = 50   # below queue_capacity: no frame is dropped
for start in range(1, total, batch):
    end = min(start + batch, total)
    for i in range(start, end):
        for msg in pair(i):
            pub.send_multipart(msg)
    caught_up(end)
print(json.dumps({"streams": len(streams), "seconds": time.time() - t0}))
"#,
    );
    let rss_start = vm_kib(pid, "VmRSS:");
    let t0 = Instant::now();
    let (out, ok, rss_max) =
        python_watching_rss(&script, &[&d.ingest, &d.admin, &SCANS.to_string()], pid);
    assert!(
        ok,
        "publisher failed; log tail:\n{}",
        tail(&d.log_text(), 40)
    );
    let took = t0.elapsed();
    let run: serde_json::Value = serde_json::from_str(out.trim()).expect("summary line");
    let streams = run["streams"].as_f64().unwrap();
    // The sink hands each result to the live view after the worker counted it processed.
    let live = |m: &std::collections::HashMap<String, f64>| {
        m["pleura_state_entries{table=\"live_streams\"}"]
            + m["pleura_state_evictions_total{table=\"live_streams\"}"]
    };
    wait_for("the last results", Duration::from_secs(10), || {
        live(&d.metrics()) >= streams
    });
    let m = d.metrics();
    let budget_kib = m["pleura_memory_budget_bytes"] / 1024.0;
    eprintln!(
        "{SCANS} scans on {streams} streams in {took:?} (sender {} s): RSS {rss_start} -> max \
         {rss_max} KiB, budget {budget_kib} KiB",
        run["seconds"]
    );
    let state = |what: &str, table: &str| m[&format!("pleura_state_{what}{{table=\"{table}\"}}")];
    for table in ["streams", "scans", "live_streams"] {
        eprintln!(
            "{table}: {} entries, {} evicted",
            state("entries", table),
            state("evictions_total", table)
        );
    }
    // 1000 new streams and the three long-lived ones.
    assert_eq!(streams, 1003.0);
    let n = SCANS as f64;
    assert_eq!(m["pleura_frames_accepted_total"], n, "{m:?}");
    assert_eq!(m["pleura_frames_processed_total"], n, "{m:?}");
    assert_eq!(m["pleura_frames_dropped_total"], 0.0);
    assert_eq!(m["pleura_frames_failed_total"], 0.0);
    let rejected: Vec<(&String, &f64)> = m
        .iter()
        .filter(|(k, v)| k.starts_with("pleura_messages_rejected_total") && **v > 0.0)
        .collect();
    assert!(rejected.is_empty(), "{rejected:?}");
    // Every scan was remembered, then forgotten to make room (and counted), or is still
    // there; the same for the streams, in the validator and in the live view.
    let scans = state("entries", "scans");
    assert!(scans <= max_streams * max_scans, "{scans} scans");
    assert!(
        scans >= 3.0 * max_scans,
        "the long-lived streams keep their 8 latest"
    );
    assert!(state("evictions_total", "scans") >= n - max_streams * max_scans);
    assert_eq!(scans + state("evictions_total", "scans"), n);
    for table in ["streams", "live_streams"] {
        let entries = state("entries", table);
        assert!((1.0..=max_streams).contains(&entries), "{table}: {entries}");
        assert_eq!(
            entries + state("evictions_total", table),
            streams,
            "{table}"
        );
    }
    assert!(
        ((rss_max - rss_start) as f64) < budget_kib,
        "RSS grew {rss_start} -> {rss_max} KiB, over the budget of {budget_kib} KiB"
    );
    // 10,000 new scans, logged at most once per reject_log_interval_ms (5 s).
    let log = d.log_text();
    let logged = log.matches("scan parameters received").count() as u64;
    assert!(
        logged <= 2 + took.as_secs() / 5,
        "{logged} scan lines in {took:?}"
    );
    let (status, _, summary, log) = d.terminate();
    assert!(
        status.success(),
        "exit {status}; log tail:\n{}",
        tail(&log, 40)
    );
    assert_eq!(summary["frames_processed"], SCANS, "{summary}");
    assert_eq!(summary["results_published"], SCANS, "{summary}");
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
