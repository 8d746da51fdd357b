//! `pleura bench ...`: throughput benchmarks printing a table (figures go to
//! docs/BENCHMARKS.md). One sub-subcommand per kind of work.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::CpuTime;

use anyhow::{bail, Context, Result};
use ndarray::{Array2, Array4};
use pleura::beamform::sim::{linear_array_scan, simulate_rf, Scatterer, Transmit};
use pleura::beamform::{Apodization, Beamformer, DasOptions};
use pleura::diffusion::eval::quantile;
use pleura::grid::Grid;
use pleura::recording::{Recording, Scan};
use pleura::testing::{linear_array, plane_wave, pulse};

/// Arguments of `pleura bench`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub kind: Kind,
}

/// What to benchmark.
#[derive(clap::Subcommand)]
pub enum Kind {
    /// Delay-and-sum beamforming (pwi_disk and a 7-angle synthetic case), against PyMUST.
    Beamform(BeamformArgs),
    /// The daemon's ingest throughput (no-op worker) and end-to-end latency.
    Ingest(super::bench_ingest::IngestArgs),
    /// The measurement operator A, its adjoint and an autograd gradient (CPU).
    Operator(super::bench_operator::Args),
    /// The diffusion prior's U-Net at the default size: forward, forward+backward, train step.
    Unet(super::bench_unet::UnetArgs),
    /// Posterior sampling: U-Net and sampler step times, per-frame latency and frames/s.
    Sampler(super::bench_sampler::Args),
}

/// Arguments of `pleura bench beamform`.
#[derive(clap::Args)]
pub struct BeamformArgs {
    /// The pwi_disk recording.
    #[arg(long, default_value = "../shared/data/pwi_disk/pwi_disk.zea.h5")]
    pub pwi_disk: PathBuf,
    /// Frames per case.
    #[arg(long, default_value_t = 32)]
    pub frames: usize,
    /// Timed runs per case (the fastest is reported), and runs of each whole process on
    /// pwi_disk (the best and the median are reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Skip the PyMUST side.
    #[arg(long)]
    pub no_pymust: bool,
    /// Python with pymust (scripts/setup.sh).
    #[arg(long, default_value = ".venv/bin/python")]
    pub python: PathBuf,
    /// The PyMUST timing script.
    #[arg(long, default_value = "scripts/bench_pymust_beamform.py")]
    pub pymust_script: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    match args.kind {
        Kind::Beamform(a) => beamform(a),
        Kind::Ingest(a) => super::bench_ingest::run(a),
        Kind::Operator(a) => super::bench_operator::run(a),
        Kind::Unet(a) => super::bench_unet::bench_unet(a),
        Kind::Sampler(a) => super::bench_sampler::run(a),
    }
}

/// One benchmark case: a scan, its frames, a grid, options and a zea file holding the
/// same data for PyMUST.
struct Case {
    name: String,
    scan: Scan,
    frames: Vec<Array4<f32>>,
    grid: Grid,
    options: DasOptions,
    file: PathBuf,
}

/// Timings of pleura on one case.
struct PleuraTimes {
    plan_s: f64,
    cold_s: f64,
    warm_frame_s: f64,
    /// User CPU time of the process (all threads) per warm frame: on a machine shared
    /// with other jobs it shows the work done, where wall time also shows the waiting.
    warm_frame_cpu_s: f64,
}

/// Timings of PyMUST on one case, as its script reports them.
struct PymustTimes {
    rf2iq_s: f64,
    build_s: f64,
    apply_s: f64,
}

fn pwi_disk_case(path: &Path, n_frames: usize) -> Result<Case> {
    let rec = Recording::open(path).with_context(|| format!("opening {}", path.display()))?;
    let scan = rec.scan().clone();
    let n = n_frames.min(rec.n_frames());
    let frames = (0..n)
        .map(|i| {
            rec.read_frame(i)
                .map(|f| f.data)
                .with_context(|| format!("frame {i} of {}", path.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Case {
        name: "pwi_disk (1 PW)".into(),
        scan,
        frames,
        // The golden B-mode's grid (README of pwi_disk) and its receive f-number.
        grid: Grid::linspace((-12.5e-3, 12.5e-3, 251), (10e-3, 35e-3, 251))?,
        options: DasOptions {
            f_number: 1.1248,
            apodization: Apodization::Rect,
        },
        file: path.to_path_buf(),
    })
}

/// 7 plane waves (-9..9 deg, 3 deg step), 128 elements, 0.3 mm pitch, 5 MHz sampled at
/// 20 MHz, 20 point scatterers; the frame is repeated `n_frames` times.
fn synthetic_case(dir: &Path, n_frames: usize) -> Result<Case> {
    let transmits: Vec<Transmit> = (-3..=3).map(|k| plane_wave(3.0 * k as f64)).collect();
    let scan = linear_array_scan(&linear_array(128, 1280, 0.0), &transmits);
    let scatterers: Vec<Scatterer> = (0..20)
        .map(|i| Scatterer {
            x: -15e-3 + 1.5e-3 * i as f64,
            z: 8e-3 + 1.5e-3 * i as f64,
            amplitude: 1.0,
        })
        .collect();
    let rf = simulate_rf(&scan, &scatterers, &pulse());
    let file = dir.join("synthetic_7pw.zea.h5");
    write_zea(&file, &scan, &rf, n_frames)?;
    Ok(Case {
        name: "synthetic (7 PW)".into(),
        scan,
        frames: vec![rf; n_frames],
        grid: Grid::linspace((-19e-3, 19e-3, 251), (5e-3, 40e-3, 251))?,
        options: DasOptions {
            f_number: 1.5,
            apodization: Apodization::Rect,
        },
        file,
    })
}

/// Writes the datasets of the zea layout the PyMUST script reads.
fn write_zea(path: &Path, scan: &Scan, frame: &Array4<f32>, n_frames: usize) -> Result<()> {
    let f = hdf5::File::create(path).and_then(pleura::recording::close_on_exec)?;
    let (n_tx, n_ax, n_el, n_ch) = frame.dim();
    let data = f.create_group("data")?;
    let raw = data
        .new_dataset::<f32>()
        .shape([n_frames, n_tx, n_ax, n_el, n_ch])
        .create("raw_data")?;
    let one = frame.as_standard_layout();
    let all: Vec<f32> = (0..n_frames).flat_map(|_| one.iter().copied()).collect();
    raw.write_raw(all.as_slice())?;
    let s = f.create_group("scan")?;
    let scalar = |name: &str, v: f64| -> Result<()> {
        s.new_dataset::<f64>().create(name)?.write_scalar(&v)?;
        Ok(())
    };
    scalar("sampling_frequency", scan.sampling_frequency)?;
    scalar("center_frequency", scan.center_frequency)?;
    scalar("sound_speed", scan.sound_speed)?;
    let matrix = |name: &str, a: &Array2<f64>| -> Result<()> {
        let v = a.as_standard_layout();
        let d = s
            .new_dataset::<f64>()
            .shape([a.nrows(), a.ncols()])
            .create(name)?;
        d.write_raw(v.as_slice().context("contiguous")?)?;
        Ok(())
    };
    matrix("probe_geometry", &scan.probe_geometry)?;
    matrix("t0_delays", &scan.t0_delays)?;
    s.new_dataset::<f64>()
        .shape([scan.initial_times.len()])
        .create("initial_times")?
        .write_raw(scan.initial_times.as_slice())?;
    Ok(())
}

fn time_pleura(case: &Case, repeats: usize) -> Result<PleuraTimes> {
    let (nz, nx) = (case.grid.nz(), case.grid.nx());
    let mut env = Array2::<f32>::zeros((nz, nx));
    let mut best: Option<PleuraTimes> = None;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        let mut bf = Beamformer::new(&case.scan, &case.grid, &case.options)?;
        let plan_s = t.elapsed().as_secs_f64();
        for f in &case.frames {
            bf.envelope_into(f.view(), env.view_mut())?;
        }
        let cold_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let cpu = CpuTime::now().user_s;
        for f in &case.frames {
            bf.envelope_into(f.view(), env.view_mut())?;
        }
        let warm_frame_s = t.elapsed().as_secs_f64() / case.frames.len() as f64;
        let warm_frame_cpu_s = (CpuTime::now().user_s - cpu) / case.frames.len() as f64;
        let run = PleuraTimes {
            plan_s,
            cold_s,
            warm_frame_s,
            warm_frame_cpu_s,
        };
        best = Some(match best {
            None => run,
            Some(b) => {
                let (plan_s, cold_s) = if run.cold_s < b.cold_s {
                    (run.plan_s, run.cold_s)
                } else {
                    (b.plan_s, b.cold_s)
                };
                PleuraTimes {
                    plan_s,
                    cold_s,
                    warm_frame_s: b.warm_frame_s.min(run.warm_frame_s),
                    warm_frame_cpu_s: b.warm_frame_cpu_s.min(run.warm_frame_cpu_s),
                }
            }
        });
    }
    best.context("no timed run")
}

/// The PyMUST script on `case`'s file and grid: its first `frames` frames (None: all), and
/// with `out`, writing envelopes and B-mode there.
fn pymust_command(
    args: &BeamformArgs,
    case: &Case,
    frames: Option<usize>,
    out: Option<&Path>,
) -> Command {
    let (x, z) = (&case.grid.x, &case.grid.z);
    let mut cmd = Command::new(&args.python);
    cmd.arg(&args.pymust_script).arg(&case.file).args(
        [
            x[0],
            x[x.len() - 1],
            x.len() as f64,
            z[0],
            z[z.len() - 1],
            z.len() as f64,
            case.options.f_number,
        ]
        .map(|v| v.to_string()),
    );
    if let Some(n) = frames {
        cmd.arg(n.to_string());
    }
    if let Some(out) = out {
        cmd.arg("--out").arg(out);
    }
    cmd
}

fn time_pymust(args: &BeamformArgs, case: &Case) -> Result<PymustTimes> {
    let out = pymust_command(args, case, Some(case.frames.len()), None)
        .output()
        .with_context(|| format!("running {}", args.python.display()))?;
    if !out.status.success() {
        bail!(
            "PyMUST bench failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("PyMUST bench output")?;
    let get = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("PyMUST bench output lacks {k}"))
    };
    Ok(PymustTimes {
        rf2iq_s: get("rf2iq_s")?,
        build_s: get("build_s")?,
        apply_s: get("apply_s")?,
    })
}

fn beamform(args: BeamformArgs) -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("pleura-bench-beamform-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let cases = [
        pwi_disk_case(&args.pwi_disk, args.frames)?,
        synthetic_case(&tmp, args.frames)?,
    ];
    println!(
        "threads: {} (rayon); timings: best of {} runs; ns/px-ch = time per frame / (pixels x elements x transmits)",
        rayon::current_num_threads(),
        args.repeats
    );
    println!();
    println!("| case | grid | frames | pleura plan | pleura plan+all frames | pleura warm /frame | pleura warm user CPU /frame | pleura ns/px-ch | PyMUST rf2iq | PyMUST dasmtx build | PyMUST apply /frame | PyMUST ns/px-ch | speed-up (PyMUST build+apply / pleura plan+all) | warm per-frame pleura / PyMUST apply |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for case in &cases {
        let p = time_pleura(case, args.repeats)?;
        let n = case.frames.len() as f64;
        let px_ch = (case.grid.nx() * case.grid.nz() * case.scan.n_el() * case.scan.n_tx()) as f64;
        let mut row = format!(
            "| {} | {}x{} | {} | {:.0} ms | {:.3} s ({:.0} frames/s) | {:.2} ms ({:.0} frames/s) | {:.2} ms | {:.3} |",
            case.name,
            case.grid.nx(),
            case.grid.nz(),
            case.frames.len(),
            p.plan_s * 1e3,
            p.cold_s,
            n / p.cold_s,
            p.warm_frame_s * 1e3,
            1.0 / p.warm_frame_s,
            p.warm_frame_cpu_s * 1e3,
            p.warm_frame_s * 1e9 / px_ch
        );
        if args.no_pymust {
            row.push_str(" - | - | - | - | - | - |");
        } else {
            let m = time_pymust(&args, case)?;
            let apply_frame = m.apply_s / n;
            row.push_str(&format!(
                " {:.2} s | {:.2} s | {:.2} ms | {:.3} | {:.1}x | {:.2}x |",
                m.rf2iq_s,
                m.build_s,
                apply_frame * 1e3,
                apply_frame * 1e9 / px_ch,
                (m.build_s + m.apply_s) / p.cold_s,
                p.warm_frame_s / apply_frame
            ));
        }
        println!("{row}");
    }
    whole_process(&args, &cases[0], &tmp)?;
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}

/// Wall and CPU (user + system) times of the runs of one command, s.
#[derive(Default)]
struct ProcessTimes {
    wall_s: Vec<f64>,
    cpu_s: Vec<f64>,
}

impl ProcessTimes {
    /// Runs `cmd` to its end; records its wall time and the CPU time it (and any child it
    /// waited for) used.
    fn run(&mut self, cmd: &mut Command) -> Result<()> {
        let cpu = CpuTime::children().total_s();
        let t = Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("running {}", cmd.get_program().to_string_lossy()))?;
        let wall_s = t.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}",
                cmd.get_program().to_string_lossy(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.wall_s.push(wall_s);
        self.cpu_s.push(CpuTime::children().total_s() - cpu);
        Ok(())
    }

    /// (best, median) of wall and of CPU time.
    fn summary(&self) -> [(f64, f64); 2] {
        [&self.wall_s, &self.cpu_s].map(|v| {
            let mut v = v.clone();
            v.sort_by(f64::total_cmp);
            (v[0], quantile(&v, 0.5))
        })
    }
}

/// `pleura beamform` (this binary) and the PyMUST script, each a whole process from start
/// to written output, on every frame of the pwi_disk recording and `case`'s grid; run
/// alternately `args.repeats` times.
fn whole_process(args: &BeamformArgs, case: &Case, tmp: &Path) -> Result<()> {
    let n_frames = Recording::open(&args.pwi_disk)?.n_frames();
    let (x, z) = (&case.grid.x, &case.grid.z);
    let apodization = match case.options.apodization {
        Apodization::Rect => "rect",
        Apodization::Hann => "hann",
        Apodization::Tukey(0.5) => "tukey",
        Apodization::Tukey(a) => bail!("pleura beamform has no Tukey({a}) apodization"),
    };
    let mut pleura = Command::new(std::env::current_exe().context("locating pleura")?);
    pleura
        .arg("beamform")
        .arg(&args.pwi_disk)
        .arg("--out")
        .arg(tmp.join("pleura.h5"))
        .arg(format!("--grid-x={},{},{}", x[0], x[x.len() - 1], x.len()))
        .arg(format!("--grid-z={},{},{}", z[0], z[z.len() - 1], z.len()))
        .args(["--f-number", &case.options.f_number.to_string()])
        .args(["--apodization", apodization]);
    let mut pymust = pymust_command(args, case, None, Some(&tmp.join("pymust.h5")));
    let (mut p, mut m) = (ProcessTimes::default(), ProcessTimes::default());
    for _ in 0..args.repeats.max(1) {
        p.run(&mut pleura)?;
        if !args.no_pymust {
            m.run(&mut pymust)?;
        }
    }
    println!();
    println!(
        "Whole process, {} ({n_frames} frames, {}x{}, F {}), {} runs of each side, alternating; \
         CPU = user + system time of the process",
        case.name,
        case.grid.nx(),
        case.grid.nz(),
        case.options.f_number,
        p.wall_s.len()
    );
    println!();
    println!("| process | wall best | wall median | CPU best | CPU median |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, t: &ProcessTimes| {
        let [(w, wm), (c, cm)] = t.summary();
        println!("| {name} | {w:.3} s | {wm:.3} s | {c:.3} s | {cm:.3} s |");
    };
    row("`pleura beamform` (start, read, plan, DAS, write)", &p);
    if !args.no_pymust {
        row(
            "PyMUST script --out (Python start, imports, h5py read, rf2iq, dasmtx, apply, write)",
            &m,
        );
        let ([(pw, pwm), (pc, pcm)], [(mw, mwm), (mc, mcm)]) = (p.summary(), m.summary());
        println!(
            "| PyMUST / pleura | {:.1}x | {:.1}x | {:.1}x | {:.1}x |",
            mw / pw,
            mwm / pwm,
            mc / pc,
            mcm / pcm
        );
    }
    Ok(())
}
