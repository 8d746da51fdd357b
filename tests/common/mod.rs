//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod lung;
pub mod served;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared` beside the repository root (real data shared with CI).
pub fn shared() -> PathBuf {
    repo().join("../shared")
}

/// The real plane-wave disk recording written by h5py.
pub fn pwi_disk() -> PathBuf {
    shared().join("data/pwi_disk/pwi_disk.zea.h5")
}

/// A file in `testdata/`.
pub fn testdata(name: &str) -> PathBuf {
    repo().join("testdata").join(name)
}

/// The Python interpreter with the test peers (h5py, numpy, pyzmq, pymust), as installed
/// by `scripts/setup.sh`; `PLEURA_PYTHON` overrides it.
pub fn python() -> PathBuf {
    match std::env::var_os("PLEURA_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => repo().join(".venv/bin/python"),
    }
}

/// Runs a Python script with arguments and returns its stdout; panics with its stderr when
/// it fails, so the test output shows what the peer complained about.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (run scripts/setup.sh)",
                python().display()
            )
        });
    assert!(
        out.status.success(),
        "python failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python printed non-UTF-8")
}

/// The `pleura` binary built for this test run.
pub fn pleura() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pleura"))
}

/// A fresh temporary directory removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Asserts that a path exists, with a message naming it.
pub fn assert_exists(p: &Path) {
    assert!(p.exists(), "{} does not exist", p.display());
}

/// The interpreter of `.venv-zea`, the real zea package (`scripts/zea-venv.sh` creates it
/// on first use, about 1.4 GB; later calls reuse it). `PLEURA_ZEA_PYTHON` overrides it.
pub fn zea_python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("PLEURA_ZEA_PYTHON") {
                return PathBuf::from(p);
            }
            let out = Command::new(repo().join("scripts/zea-venv.sh"))
                .output()
                .expect("cannot run scripts/zea-venv.sh");
            assert!(
                out.status.success(),
                "scripts/zea-venv.sh failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        })
        .clone()
}

/// Runs `tests/python/zea_peer.py` (the real zea package) and returns its stdout as JSON.
pub fn zea_peer(args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let out = Command::new(zea_python())
        .arg(repo().join("tests/python/zea_peer.py"))
        .args(args)
        .env("KERAS_BACKEND", "jax")
        .output()
        .expect("cannot start the zea peer");
    assert!(
        out.status.success(),
        "zea peer failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("zea peer printed {stdout:?}: {e}"))
}

/// (width, height, pixels as RGB) of an 8-bit RGB or RGBA PNG file (alpha dropped).
pub fn decode_png(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let step = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("{}: colour type {other:?}", path.display()),
    };
    let px = buf[..info.buffer_size()]
        .chunks(step)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, px)
}

/// Dataset `name` of `f`, flattened, panicking with its name when it is missing or
/// mistyped.
pub fn h5_read<T: hdf5::H5Type>(f: &hdf5::File, name: &str) -> Vec<T> {
    f.dataset(name)
        .and_then(|d| d.read_raw::<T>())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// String dataset `name` of `f` (variable-length UTF-8), flattened.
pub fn h5_strings(f: &hdf5::File, name: &str) -> Vec<String> {
    h5_read::<hdf5::types::VarLenUnicode>(f, name)
        .iter()
        .map(|s| s.to_string())
        .collect()
}
