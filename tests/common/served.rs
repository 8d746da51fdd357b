//! A real `pleura serve` for the integration tests: the daemon process on free loopback
//! ports, its admin endpoint (`/metrics`, `/healthz`), its resident memory, and the Python
//! protocol peer that test scripts talk to it with.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The Python protocol peer, prepended to every test script.
pub const PEER: &str = include_str!("../python/pleura_peer.py");

/// `body` after the Python protocol peer [`PEER`].
pub fn python_script(body: &str) -> String {
    format!("{PEER}\n# ---- test ----\n{body}")
}

/// A running `pleura serve`, killed when dropped.
pub struct Served {
    pub child: Child,
    pub ingest: String,
    pub publish: String,
    pub admin: String,
    stdout: mpsc::Receiver<String>,
    pub log: PathBuf,
    pub config: PathBuf,
}

/// Writes `dir/pleura.toml`: all endpoints on free loopback ports (ingest bound), `extra`
/// lines in `[daemon]`, and `sections` (other tables) after it.
pub fn write_config(dir: &Path, extra: &str, sections: &str) -> PathBuf {
    let config = dir.join("pleura.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ningest = \"tcp://127.0.0.1:0\"\ningest_mode = \"bind\"\n\
             publish = \"tcp://127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{extra}\n{sections}\n"
        ),
    )
    .unwrap();
    config
}

/// Starts `pleura serve` with [`write_config`]`(dir, extra, "")`.
pub fn serve(dir: &Path, extra: &str) -> Served {
    serve_with(dir, &write_config(dir, extra, ""))
}

/// Starts `pleura serve --config config`, logging to a file in `dir`, and waits for its
/// ready line.
pub fn serve_with(dir: &Path, config: &Path) -> Served {
    let log = dir.join(format!("daemon-{}.log", std::process::id()));
    let mut child = super::pleura()
        .args(["--log", "info,pleura=debug", "serve", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start pleura serve");
    let rx = lines_of(child.stdout.take().unwrap());
    let ready = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!(
                "no ready line; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    let v: serde_json::Value = serde_json::from_str(&ready).expect("ready line is JSON");
    assert_eq!(v["event"], "ready", "{ready}");
    let e = &v["endpoints"];
    Served {
        child,
        ingest: e["ingest"].as_str().unwrap().to_string(),
        publish: e["publish"].as_str().unwrap().to_string(),
        admin: e["admin"].as_str().unwrap().to_string(),
        stdout: rx,
        log,
        config: config.to_path_buf(),
    }
}

impl Served {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Sends SIGTERM and waits; returns the exit status, the time taken, the summary and
    /// the log.
    pub fn terminate(
        mut self,
    ) -> (
        std::process::ExitStatus,
        Duration,
        serde_json::Value,
        String,
    ) {
        let t0 = Instant::now();
        self.signal(libc::SIGTERM);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("daemon did not exit; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = t0.elapsed();
        let mut summary = serde_json::Value::Null;
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(2)) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["event"] == "stopped" {
                summary = v["summary"].clone();
            }
        }
        (status, took, summary, self.log_text())
    }

    pub fn metrics(&self) -> HashMap<String, f64> {
        metrics(&self.admin)
    }

    /// One value of `/metrics`, 0 when absent.
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics().get(name).copied().unwrap_or(0.0)
    }

    /// Waits until `name` in /metrics reaches `at_least`.
    pub fn wait_metric(&self, name: &str, at_least: f64, timeout: Duration) {
        let t0 = Instant::now();
        loop {
            let v = self.metric(name);
            if v >= at_least {
                return;
            }
            assert!(
                t0.elapsed() < timeout,
                "{name} = {v}, expected >= {at_least}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts the daemon process is alive, `/healthz` answers 200 and its resident memory
    /// stayed below 200 MB; `what` names the step in failures.
    pub fn assert_healthy(&mut self, what: &str) {
        let health = try_http_get(&self.admin, "/healthz");
        if health.is_err() {
            // Give a dying daemon the time to be reaped, to report how it ended.
            std::thread::sleep(Duration::from_secs(1));
        }
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{what}: the daemon died ({status}); log:\n{}",
                self.log_text()
            );
        }
        let (status, _) = health.unwrap_or_else(|e| panic!("{what}: /healthz: {e}"));
        assert_eq!(status, 200, "{what}: /healthz");
        let rss = vm_kib(self.child.id(), "VmRSS:");
        assert!(rss < 200 * 1024, "{what}: RSS {rss} KiB");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on the HTTP server at `addr`: the status code and the body; panics on any
/// error.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// [`http_get`] returning connection and protocol errors instead of panicking.
pub fn try_http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {out:?}")))?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The samples of `/metrics` at `addr`, by name with labels.
pub fn metrics(addr: &str) -> HashMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

/// `pleura_messages_rejected_total` of `reason` in `m`.
pub fn rejected(m: &HashMap<String, f64>, reason: &str) -> f64 {
    m[&format!("pleura_messages_rejected_total{{reason=\"{reason}\"}}")]
}

/// The recording the peers stream: the small copy in testdata/ when present, else the
/// shared one.
pub fn data_file() -> PathBuf {
    let small = super::testdata("pwi_disk_4frames.zea.h5");
    if small.exists() {
        small
    } else {
        super::pwi_disk()
    }
}

/// Runs the Python `script` with `args` while sampling the resident memory of process
/// `pid` every 50 ms: (the script's stdout, whether it succeeded, the largest RSS seen
/// in KiB).
pub fn python_watching_rss(script: &str, args: &[&str], pid: u32) -> (String, bool, u64) {
    let mut py = std::process::Command::new(super::python())
        .arg("-c")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the Python peer");
    let mut rss_max = vm_kib(pid, "VmRSS:");
    while py.try_wait().unwrap().is_none() {
        rss_max = rss_max.max(vm_kib(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    py.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    (out, py.wait().unwrap().success(), rss_max)
}

/// A field of `/proc/pid/status` in KiB (`field` with its colon, e.g. "VmRSS:").
pub fn vm_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The lines `r` gives (a child's stdout), read on a thread of their own until it ends.
pub fn lines_of(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `pleura-bridge` built for this test run.
pub fn bridge() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_pleura-bridge"))
}

/// Starts `pleura-bridge play --connect` on `file`.
pub fn play_file(file: &Path, endpoint: &str, extra: &[&str], log: &Path) -> Child {
    bridge()
        .args(["--log", "info", "play"])
        .arg(file)
        .args(["--endpoint", endpoint, "--connect"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start pleura-bridge")
}

/// Polls `ok` every 20 ms until it holds; panics after `timeout`, naming `what`.
pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
