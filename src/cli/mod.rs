//! One module per subcommand: its clap arguments (`Args`) and its `run`.

pub mod beamform;
pub mod bench;
pub mod bench_ingest;
pub mod bench_operator;
pub mod bench_sampler;
pub mod bench_unet;
pub mod calibrate;
pub mod eval;
pub mod eval_prior;
pub mod info;
pub mod reconstruct_baseline;
pub mod replay;
pub mod sample;
pub mod serve;
pub mod simulate;
pub mod train;

use std::path::{Path, PathBuf};

use anyhow::Context;
use pleura::recording::{Recording, TrackChoice};

/// The recording a command reads frames from.
#[derive(clap::Args)]
pub struct RecordingArgs {
    /// The recording (zea HDF5 layout), RF or I/Q.
    pub input: PathBuf,
    /// The track of a multi-track zea file: its index or label (default: the first with
    /// channel data).
    #[arg(long)]
    pub track: Option<TrackChoice>,
}

/// The configuration, prior and device the posterior stage of an offline command runs
/// with (`replay`, `calibrate`).
#[derive(clap::Args)]
pub struct StageArgs {
    /// Configuration file: its DAS settings, and its `[sampler]` section (the defaults of
    /// the sampler options).
    #[arg(long, default_value = "config/pleura.toml")]
    pub config: PathBuf,
    /// Model directory (a checkpoint, or a training output directory with `latest`).
    #[arg(long, default_value = "testdata/model")]
    pub model: PathBuf,
    /// Compute device: cpu, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// The configuration at `path` (a command's `--config`), or the defaults, with a warning,
/// when there is no file there.
pub fn config_or_defaults(path: &Path) -> anyhow::Result<pleura::config::Config> {
    if path.exists() {
        Ok(pleura::config::Config::load(path)?)
    } else {
        tracing::warn!(path = %path.display(), "no configuration file, using defaults");
        Ok(pleura::config::Config::default())
    }
}

impl RecordingArgs {
    /// Opens the recording at its track.
    pub fn open(&self) -> anyhow::Result<Recording> {
        Recording::open_track(&self.input, self.track.as_ref())
            .with_context(|| format!("cannot open recording {}", self.input.display()))
    }
}

/// CPU time consumed so far, s, by this process (all threads) or by its waited-for
/// children; NaN when `getrusage` fails.
#[derive(Clone, Copy, Debug)]
pub struct CpuTime {
    /// In user mode.
    pub user_s: f64,
    /// In the kernel on its behalf (e.g. page reclaim when the machine is short of memory).
    pub system_s: f64,
}

impl CpuTime {
    /// The process's CPU time now.
    pub fn now() -> Self {
        Self::of(libc::RUSAGE_SELF)
    }

    /// CPU time of this process's children that have ended and been waited for, summed.
    pub fn children() -> Self {
        Self::of(libc::RUSAGE_CHILDREN)
    }

    fn of(who: libc::c_int) -> Self {
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes one rusage into the valid, exclusively borrowed `ru`.
        let rc = unsafe { libc::getrusage(who, &mut ru) };
        if rc != 0 {
            return Self {
                user_s: f64::NAN,
                system_s: f64::NAN,
            };
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        Self {
            user_s: tv(ru.ru_utime),
            system_s: tv(ru.ru_stime),
        }
    }

    /// User plus system time, s.
    pub fn total_s(&self) -> f64 {
        self.user_s + self.system_s
    }
}

#[cfg(test)]
mod tests {
    use super::CpuTime;

    #[test]
    fn cpu_time_counts_the_work_done() {
        let before = CpuTime::now();
        let mut x = 0u64;
        for _ in 0..100_000_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = CpuTime::now();
        assert!(before.user_s >= 0.0 && before.system_s >= 0.0);
        // 1e8 dependent multiply-adds take well over 20 ms of user time, busy machine or not.
        assert!(
            after.user_s - before.user_s > 0.02,
            "{before:?} -> {after:?}"
        );
        assert!(after.total_s() >= after.user_s);
    }

    #[test]
    fn children_cpu_time_counts_a_waited_for_child() {
        let before = CpuTime::children();
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let after = CpuTime::children();
        // 100k shell loop iterations take well over 20 ms of CPU.
        assert!(
            after.total_s() - before.total_s() > 0.02,
            "{before:?} -> {after:?}"
        );
    }
}
