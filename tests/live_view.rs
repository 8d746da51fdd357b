//! The live view in a real browser: `pleura serve` reconstructs a looping lung sequence
//! played by the virtual scanner while headless Chromium (Debian's `chromium`, installed
//! by scripts/setup.sh; `PLEURA_CHROMIUM` overrides it) loads the admin server's page at
//! two moments, which must show a later frame and more frames processed the second time,
//! and keeps it open for a while, in which it must move on from the frame it first
//! showed by itself. The page shows the stream's panel and trend, and a screenshot
//! proves them drawn.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::lung;
use common::served::{http_get, play_file, serve_with, wait_for, write_config, Served};

/// Enough virtual time for a few polls and the figures they load.
const VIRTUAL: &str = "--virtual-time-budget=3000";

fn chromium() -> PathBuf {
    std::env::var_os("PLEURA_CHROMIUM").map_or_else(|| PathBuf::from("chromium"), PathBuf::from)
}

/// Runs headless Chromium on `url` with `args` (at most 90 s) and returns its stdout.
fn browse(url: &str, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("90")
        .arg(chromium())
        .args(["--headless=new", "--no-sandbox", "--disable-gpu"])
        .args([
            "--no-first-run",
            "--disable-extensions",
            "--hide-scrollbars",
        ])
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (run scripts/setup.sh)",
                chromium().display()
            )
        });
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with `id` in a DOM dump (its first text node).
fn text_of(dom: &str, id: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let rest = &dom[start..];
    let open = rest.find('>').expect("tag end") + 1;
    let body = &rest[open..];
    let body = body.strip_prefix("<b>").unwrap_or(body);
    body[..body.find('<').expect("text end")].to_string()
}

fn number(dom: &str, id: &str) -> u64 {
    let t = text_of(dom, id);
    t.parse()
        .unwrap_or_else(|_| panic!("#{id} shows {t:?}, not a number"))
}

/// `GET path` as bytes: (status line, body).
fn get_bytes(addr: &str, path: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP head");
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    (head, out[split + 4..].to_vec())
}

fn results(d: &Served) -> f64 {
    d.metric("pleura_results_published_total")
}

#[test]
fn live_view_updates_in_a_real_browser() {
    let dir = common::tempdir();
    let g = pleura::testing::tiny_grid();
    let model = dir.path().join("model");
    lung::write_model(&model, &g, 1);
    let input = dir.path().join("lung.zea.h5");
    lung::write_recording(&input, &g, &g, 4, None);
    let config = write_config(
        dir.path(),
        &format!(
            "stage = \"posterior\"\nmodel = \"{}\"\ndevice = \"cpu\"\nqueue_capacity = 4",
            model.display()
        ),
        "[sampler]\nmethod = \"dds\"\nsteps = 10\nsamples = 3\nseed = 7",
    );
    let mut d = serve_with(dir.path(), &config);
    let mut scanner = play_file(
        &input,
        &d.ingest,
        &["--fps", "4", "--loop"],
        &dir.path().join("bridge.log"),
    );
    d.wait_metric(
        "pleura_results_published_total",
        2.0,
        Duration::from_secs(60),
    );
    let (status, state) = http_get(&d.admin, "/live/state");
    assert_eq!(status, 200);
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    let stream: u64 = state["streams"][0]["stream_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no stream in {state}"));
    let url = format!("http://{}/", d.admin);

    // First look: the stream's card with its sequence number, summary and figures.
    let first = browse(&url, &["--dump-dom", VIRTUAL]);
    let seq1 = number(&first, &format!("sequence-{stream}"));
    let processed1 = number(&first, "counter-frames_processed");
    assert!(processed1 >= 2, "{first}");
    assert_eq!(text_of(&first, "health"), "running");
    assert!(
        text_of(&first, &format!("summary-{stream}")).starts_with("aeration "),
        "{first}"
    );
    for figure in ["panel", "trend"] {
        assert!(
            first.contains(&format!("src=\"/live/{figure}/{stream}.png?v=")),
            "no {figure} image in the page:\n{first}"
        );
    }

    // Frames keep flowing; the second look must show a later frame.
    let seen = results(&d);
    wait_for("two more results", Duration::from_secs(60), || {
        results(&d) >= seen + 2.0
    });
    let second = browse(&url, &["--dump-dom", VIRTUAL]);
    let seq2 = number(&second, &format!("sequence-{stream}"));
    let processed2 = number(&second, "counter-frames_processed");
    assert!(
        seq2 > seq1,
        "the page did not update: sequence {seq1} then {seq2}"
    );
    assert!(
        processed2 > processed1,
        "frames processed {processed1} then {processed2}"
    );

    // One page left open: it polls by itself (each poll a real request, so the 2 minutes
    // of virtual time take seconds of real time while frames flow) and ends on a later
    // frame than the one it first showed.
    let open = browse(&url, &["--dump-dom", "--virtual-time-budget=120000"]);
    let polls = number(&open, "updates");
    assert!(polls >= 10, "the page polled {polls} times");
    let card = &open[open
        .find(&format!("id=\"stream-{stream}\""))
        .expect("the stream's card")..];
    let first_shown: u64 = card
        .split("data-first-sequence=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no data-first-sequence in {card}"));
    let last_shown = number(&open, &format!("sequence-{stream}"));
    assert!(
        last_shown > first_shown,
        "the open page stayed on sequence {first_shown} ({polls} polls)"
    );

    // A screenshot: the figures are drawn in the page (the trend's line colour and the
    // panel's viridis are there, at their natural size).
    let shot = dir.path().join("live-view.png");
    browse(
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1600,1300",
            VIRTUAL,
        ],
    );
    let (w, h, px) = common::decode_png(&shot);
    assert_eq!((w, h), (1600, 1300));
    let count = |c: [u8; 3]| px.iter().filter(|p| **p == c).count();
    assert!(count([31, 119, 180]) > 50, "the trend's line is not shown");
    let viridis = px
        .iter()
        .filter(|p| p[2] > p[0] && p[1] > 100 && p[0] < 120)
        .count();
    assert!(
        viridis > 5_000,
        "the reconstruction is not shown ({viridis} px)"
    );

    // The figures the page loads, straight from the daemon.
    let (head, body) = get_bytes(&d.admin, &format!("/live/panel/{stream}.png"));
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("image/png"),
        "{head}"
    );
    assert_eq!(&body[..8], b"\x89PNG\r\n\x1a\n");
    let m = d.metrics();
    assert_eq!(m["pleura_state_entries{table=\"live_streams\"}"], 1.0);
    assert_eq!(m["pleura_frames_failed_total"], 0.0);
    d.assert_healthy("after the browser");

    scanner.kill().unwrap();
    scanner.wait().unwrap();
    let (status, _, _, log) = d.terminate();
    assert!(status.success(), "{log}");
}
