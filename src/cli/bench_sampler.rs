//! `pleura bench sampler`: speed of posterior sampling (figures go to docs/BENCHMARKS.md,
//! section "Posterior sampling speed").
//!
//! For each image size the reference U-Net configuration ([`UNetConfig::default`]) is
//! built untrained (random weights: the arithmetic is that of a trained network) with
//! `image_size` changed; `--model DIR` uses a checkpoint instead (its own size only). The
//! reconstruction grid keeps the field of view of the default 64 x 64 grid of 0.3 mm
//! pixels (19.2 x 19.2 mm from 2 mm depth, the default probe's aperture) with the pitch
//! scaled to `0.3 mm * 64 / size`, so the same 64-element probe and 3 plane waves
//! (-8, 0, 8 deg) image every size; the frames are a simulated sequence (seeded phantom,
//! 20 dB SNR, as `pleura simulate`).
//!
//! Printed tables:
//! 1. per step, for each (size, K): U-Net forward (batch K), forward+backward with respect
//!    to the input, and one sampler step of each method (a cold draw of `--steps` steps
//!    through `PosteriorSampler::draw`, divided by its network evaluations), with the
//!    U-Net's arithmetic per image and the rate it reaches;
//! 2. per frame, for each (size, method, K): latency p50/p99 and frames/s over `--frames`
//!    frames through `PosteriorStage::reconstruct` (DAS, measurement upload, sampling with
//!    warm starts, summary statistics: what `pleura replay` and the daemon run), with the
//!    network evaluations per frame;
//! 3. with `--check-against DEVICE`: the same frames and seeds reconstructed on both
//!    devices, max |difference| and PSNR of the posterior means.
//!
//! Precision: the posterior sampler computes in f32 only (it has no precision setting);
//! the bf16 row times the U-Net forward alone with its weights cast to bf16.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use ndarray::{Array2, Array4};
use pleura::beamform::DasOptions;
use pleura::diffusion::checkpoint::Model;
use pleura::diffusion::sampler::NoiseRng;
use pleura::diffusion::unet::{param_count, UNet, UNetConfig};
use pleura::grid::{Grid, DEFAULT_PITCH, DEFAULT_SIZE, DEFAULT_Z_MIN};
use pleura::operator::{MeasurementOperator, OperatorOptions};
use pleura::pipeline::posterior::PosteriorStage;
use pleura::pipeline::{FrameInput, Stage};
use pleura::posterior::frame::{quantile, FrameOutcome};
use pleura::posterior::problem::{LinearOperator, Measurement, NormalizedOperator};
use pleura::posterior::sampler::{PosteriorSampler, Start};
use pleura::posterior::{Method, SamplerConfig};
use pleura::recording::Scan;
use pleura::simulate::phantom::sequence;
use pleura::simulate::probe::LinearProbe;
use pleura::testing::model_spec;

/// Plane-wave angles of the simulated scan, degrees (`pleura simulate`'s default).
const ANGLES_DEG: [f64; 3] = [-8.0, 0.0, 8.0];
/// Channel SNR of the simulated frames, dB (`pleura simulate`'s default).
const SNR_DB: f64 = 20.0;

/// Arguments of `pleura bench sampler`.
#[derive(clap::Args)]
pub struct Args {
    /// Image sizes (square, pixels); each must be a multiple of 8 (four U-Net levels).
    #[arg(long, default_value = "64,128,256", value_delimiter = ',')]
    pub sizes: Vec<usize>,
    /// Posterior samples K per frame (one batch).
    #[arg(long, default_value = "1,4", value_delimiter = ',')]
    pub samples: Vec<usize>,
    /// Sampling methods.
    #[arg(long, default_value = "dps,ddim-dps,dds", value_delimiter = ',')]
    pub methods: Vec<Method>,
    /// Reverse steps of a cold start (warm-started frames run 30 % of them).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Frames of the simulated sequence per (size, method, K).
    #[arg(long, default_value_t = 8)]
    pub frames: usize,
    /// Timed repetitions of the per-step measures (after one warm-up).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Compute device: cpu, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Start every frame cold (no warm start): each frame runs all `--steps` steps.
    #[arg(long)]
    pub cold: bool,
    /// Put attention at the two coarsest U-Net levels at every size (the 64-pixel
    /// reference layout scaled), instead of at the reference's fixed 16 and 8 pixel sides.
    #[arg(long)]
    pub scale_attention: bool,
    /// A model checkpoint to use instead of the untrained reference configuration; only
    /// its own image size is benchmarked.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Also reconstruct the frames on this device (e.g. cpu) with the same seeds and
    /// report the difference of the posterior means (at the first size only).
    #[arg(long)]
    pub check_against: Option<String>,
    /// Seed of the phantom, the noise, the untrained weights and the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only print the U-Net's arithmetic per size (no timing).
    #[arg(long)]
    pub flops_only: bool,
}

/// Parameters and floating-point operations of one U-Net forward pass per image.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UnetCost {
    pub params: usize,
    /// Multiply-adds of convolutions, linear layers and attention products, times 2.
    /// Element-wise work (GroupNorm, SiLU, softmax, additions) is not counted.
    pub flops: f64,
    /// f32 bytes the matrix products move through memory, a lower bound of the traffic:
    /// per convolution its im2col matrix written and read (k x k > 1; the input read for
    /// 1 x 1) and its output written; per attention block the q/k/v and output matrices
    /// and the (heads, T, T) weight matrix four times (product out, softmax in and out,
    /// product in). Weights, GroupNorm, SiLU and additions are left out.
    pub bytes: f64,
}

impl UnetCost {
    fn conv(&mut self, i: usize, o: usize, k: usize, out_side: usize) {
        let px = (out_side * out_side) as f64;
        self.params += o * i * k * k + o;
        self.flops += 2.0 * (o * i * k * k) as f64 * px;
        let cols = (i * k * k) as f64 * px;
        let cols_traffic = if k > 1 { 2.0 * cols } else { cols };
        self.bytes += 4.0 * (cols_traffic + o as f64 * px);
    }
    fn linear(&mut self, i: usize, o: usize) {
        self.params += i * o + o;
        self.flops += 2.0 * (i * o) as f64;
    }
    fn norm(&mut self, c: usize) {
        self.params += 2 * c;
    }
    fn res_block(&mut self, i: usize, o: usize, emb: usize, side: usize) {
        self.norm(i);
        self.conv(i, o, 3, side);
        self.linear(emb, o);
        self.norm(o);
        self.conv(o, o, 3, side);
        if i != o {
            self.conv(i, o, 1, side);
        }
    }
    fn attention(&mut self, c: usize, heads: usize, side: usize) {
        let t = (side * side) as f64;
        self.norm(c);
        self.conv(c, 3 * c, 1, side);
        self.conv(c, c, 1, side);
        // q^T k and v weight^T: c t^2 multiply-adds each, summed over the heads.
        self.flops += 2.0 * 2.0 * c as f64 * t * t;
        self.bytes += 4.0 * (4.0 * heads as f64 * t * t + 4.0 * c as f64 * t);
    }
}

/// The cost of [`UNet`] with `cfg`, layer by layer in the order `UNet::build` creates
/// them (per image; its parameter count equals the built network's).
pub fn unet_cost(cfg: &UNetConfig) -> UnetCost {
    let mut cost = UnetCost::default();
    let mc = cfg.base_channels;
    let emb = 4 * mc;
    cost.linear(mc, emb);
    cost.linear(emb, emb);
    let mut side = cfg.image_size;
    cost.conv(cfg.in_channels, mc, 3, side);
    let mut chans = vec![mc];
    let mut ch = mc;
    let levels = cfg.channel_mult.len();
    for (level, &mult) in cfg.channel_mult.iter().enumerate() {
        for _ in 0..cfg.num_res_blocks {
            cost.res_block(ch, mult * mc, emb, side);
            ch = mult * mc;
            if cfg.attention_resolutions.contains(&side) {
                cost.attention(ch, cfg.num_heads, side);
            }
            chans.push(ch);
        }
        if level + 1 != levels {
            side /= 2;
            cost.conv(ch, ch, 3, side);
            chans.push(ch);
        }
    }
    cost.res_block(ch, ch, emb, side);
    cost.attention(ch, cfg.num_heads, side);
    cost.res_block(ch, ch, emb, side);
    for (level, &mult) in cfg.channel_mult.iter().enumerate().rev() {
        for i in 0..=cfg.num_res_blocks {
            let skip = chans.pop().unwrap_or(0);
            cost.res_block(ch + skip, mc * mult, emb, side);
            ch = mc * mult;
            if cfg.attention_resolutions.contains(&side) {
                cost.attention(ch, cfg.num_heads, side);
            }
            if level > 0 && i == cfg.num_res_blocks {
                side *= 2;
                cost.conv(ch, ch, 3, side);
            }
        }
    }
    cost.norm(ch);
    cost.conv(ch, cfg.in_channels, 3, side);
    cost
}

/// The reference configuration at `size` pixels.
fn reference_config(size: usize, scale_attention: bool) -> UNetConfig {
    let reference = UNetConfig::default();
    let attention_resolutions = if scale_attention {
        reference
            .attention_resolutions
            .iter()
            .map(|r| r * size / reference.image_size)
            .collect()
    } else {
        reference.attention_resolutions.clone()
    };
    UNetConfig {
        image_size: size,
        attention_resolutions,
        ..reference
    }
}

/// The grid of `size` pixels over the default grid's field of view.
fn bench_grid(size: usize) -> Result<Grid> {
    let pitch = DEFAULT_PITCH * DEFAULT_SIZE as f64 / size as f64;
    Ok(Grid::uniform(size, size, pitch, DEFAULT_Z_MIN)?)
}

/// One size's problem: model, grid, scan and simulated frames.
struct Case {
    model: Model,
    grid: Grid,
    scan: Arc<Scan>,
    frames: Vec<Array4<f32>>,
}

fn build_case(size: usize, args: &Args, device: &Device) -> Result<Case> {
    let model = match &args.model {
        Some(dir) => Model::load(dir, device)
            .with_context(|| format!("loading the model {}", dir.display()))?,
        None => Model::new(
            model_spec(reference_config(size, args.scale_attention), None),
            args.seed,
            device,
        )?,
    };
    let grid = bench_grid(size)?;
    let scan = LinearProbe::default_lung().plane_wave_scan(&ANGLES_DEG, &grid);
    // The data are simulated on the CPU whatever the device, so every device sees the
    // same frames.
    let sim = MeasurementOperator::new(&scan, &grid, OperatorOptions::default(), &Device::Cpu)?;
    let (_, phantom) = sequence(args.seed, &grid, args.frames.max(1));
    let frames = pleura::simulate::channel_data(
        &sim,
        phantom.iter().map(|f| &f.aeration),
        Some(SNR_DB),
        args.seed,
    )?
    .into_iter()
    .map(|(y, _)| y)
    .collect();
    Ok(Case {
        model,
        grid,
        scan: Arc::new(scan),
        frames,
    })
}

/// Wall-clock seconds of `f` (the device synchronised after it), mean over `repeats` runs
/// after one warm-up.
fn time(device: &Device, repeats: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    device.synchronize()?;
    let t = Instant::now();
    for _ in 0..repeats.max(1) {
        f()?;
    }
    device.synchronize()?;
    Ok(t.elapsed().as_secs_f64() / repeats.max(1) as f64)
}

/// A frozen U-Net (weights as constants, as the posterior sampler holds it) in `dtype`.
fn frozen_unet(model: &Model, dtype: DType, device: &Device) -> Result<UNet> {
    let tensors: HashMap<String, Tensor> = model
        .tensors()?
        .into_iter()
        .map(|(k, v)| Ok((k, v.detach().to_dtype(dtype)?.to_device(device)?)))
        .collect::<Result<_>>()?;
    let vb = VarBuilder::from_tensors(tensors, dtype, device);
    Ok(UNet::new(&model.spec.model, vb)?)
}

fn sampler_config(args: &Args, method: Method, k: usize) -> SamplerConfig {
    SamplerConfig {
        method,
        steps: args.steps,
        samples: k,
        seed: args.seed,
        warm_start: !args.cold,
        ..SamplerConfig::default()
    }
}

/// Per-frame results of one run of the stage over the frames.
struct FrameRun {
    latencies_s: Vec<f64>,
    total_s: f64,
    nfe: Vec<usize>,
    failed: usize,
    means: Vec<Option<Array2<f32>>>,
    operator_s: f64,
}

/// Runs `PosteriorStage::reconstruct` over the frames. One-time device set-up (kernel
/// loading) is already done by the per-step measures of the same size and device.
fn run_frames(case: &Case, cfg: &SamplerConfig, device: &Device) -> Result<FrameRun> {
    let mut stage = PosteriorStage::new(
        &case.model,
        cfg.clone(),
        Some(case.grid.clone()),
        DasOptions::default(),
        device,
    )?;
    let input = |i: usize| FrameInput {
        scan_id: 1,
        scan: &case.scan,
        sequence: i as u64,
        timestamp_ns: 0,
        data: &case.frames[i],
    };
    let t = Instant::now();
    stage.prepare(1, &case.scan)?;
    device.synchronize()?;
    let operator_s = t.elapsed().as_secs_f64();
    let mut run = FrameRun {
        latencies_s: Vec::with_capacity(case.frames.len()),
        total_s: 0.0,
        nfe: Vec::new(),
        failed: 0,
        means: Vec::new(),
        operator_s,
    };
    let all = Instant::now();
    for i in 0..case.frames.len() {
        let t = Instant::now();
        let r = stage.reconstruct(&input(i))?;
        run.latencies_s.push(t.elapsed().as_secs_f64());
        match r.outcome {
            FrameOutcome::Done(e) => {
                run.nfe.push(e.nfe);
                run.means.push(Some(e.mean));
            }
            FrameOutcome::Failed { .. } => {
                run.failed += 1;
                run.means.push(None);
            }
        }
    }
    run.total_s = all.elapsed().as_secs_f64();
    Ok(run)
}

/// Seconds per network evaluation of cold draws of `cfg` (one warm-up, `repeats` timed).
/// The divergence limits are lifted: they decide when a draw stops, not what a step
/// computes, and an untrained network's draw may leave them (the per-frame runs keep
/// them, with the pipeline's restarts).
fn step_time(
    case: &Case,
    sampler: &PosteriorSampler,
    op: &NormalizedOperator,
    meas: &Measurement,
    cfg: &SamplerConfig,
    repeats: usize,
) -> Result<f64> {
    let device = sampler.device();
    let cfg = SamplerConfig {
        divergence_factor: f64::MAX,
        max_abs: f64::MAX,
        ..cfg.clone()
    };
    let mut nfe = 0;
    let s = time(device, repeats, || {
        let d = sampler.draw(&cfg, op, meas, &Start::Cold, cfg.seed)?;
        nfe = d.nfe;
        Ok(())
    })?;
    if nfe == 0 {
        bail!("a {} draw at {} px ran no step", cfg.method, case.grid.nx());
    }
    Ok(s / nfe as f64)
}

fn ms(s: f64) -> String {
    format!("{:.2}", s * 1e3)
}

/// Time of the bf16 U-Net forward (batch k), or why it cannot run.
fn bf16_forward(model: &Model, k: usize, repeats: usize, device: &Device) -> String {
    let run = || -> Result<f64> {
        let unet = frozen_unet(model, DType::BF16, device)?;
        let s = model.spec.model.image_size;
        let x = NoiseRng::new(1).normal(&[k, 1, s, s], device, DType::BF16)?;
        let t = Tensor::full(500f32, k, device)?.to_dtype(DType::BF16)?;
        time(device, repeats, || {
            unet.forward(&x, &t)?;
            Ok(())
        })
    };
    match run() {
        Ok(s) => ms(s),
        Err(e) => format!("unsupported ({e})"),
    }
}

/// The arithmetic table of `--flops-only`.
fn print_costs(args: &Args) {
    println!("U-Net arithmetic per image and forward pass (reference config, image size changed; attention {}):", if args.scale_attention { "at the two coarsest levels" } else { "at 16 and 8 px" });
    println!();
    println!("| size | attention at px | params | GFLOP | MB moved (lower bound) | FLOP/byte |");
    println!("|---|---|---|---|---|---|");
    for &size in &args.sizes {
        let cfg = reference_config(size, args.scale_attention);
        let levels: Vec<String> = (0..cfg.channel_mult.len())
            .map(|l| size >> l)
            .filter(|s| cfg.attention_resolutions.contains(s))
            .chain(std::iter::once(size >> (cfg.channel_mult.len() - 1)))
            .map(|s| s.to_string())
            .collect();
        let c = unet_cost(&cfg);
        println!(
            "| {size} | {} (middle: {}) | {} | {:.3} | {:.1} | {:.1} |",
            levels[..levels.len() - 1].join(", "),
            levels[levels.len() - 1],
            c.params,
            c.flops / 1e9,
            c.bytes / 1e6,
            c.flops / c.bytes
        );
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.flops_only {
        print_costs(&args);
        return Ok(());
    }
    let device = pleura::device::select(&args.device)?;
    if args.steps == 0 || args.frames == 0 || args.samples.contains(&0) {
        bail!("--steps, --frames and every --samples value must be >= 1");
    }
    let check = match &args.check_against {
        Some(spec) => Some(pleura::device::select(spec)?),
        None => None,
    };
    let sizes = match &args.model {
        Some(dir) => {
            let m = Model::load(dir, &Device::Cpu)
                .with_context(|| format!("loading the model {}", dir.display()))?;
            vec![m.spec.model.image_size]
        }
        None => args.sizes.clone(),
    };
    println!(
        "device {}; {} CPU threads; steps {} (warm starts: {}); frames {}; seed {}; model: {}",
        pleura::device::describe(&device),
        candle_core::utils::get_num_threads(),
        args.steps,
        if args.cold {
            "off".to_string()
        } else {
            format!(
                "{:.0} % of the steps",
                SamplerConfig::default().warm_start_fraction * 100.0
            )
        },
        args.frames,
        args.seed,
        match &args.model {
            Some(d) => d.display().to_string(),
            None => format!(
                "untrained reference U-Net config, attention {}",
                if args.scale_attention {
                    "at the two coarsest levels"
                } else {
                    "at 16 and 8 px"
                }
            ),
        }
    );
    println!();
    println!("Per step (ms; one network evaluation; methods: cold draw / NFE). The sampler computes in f32 only: it has no precision setting; bf16 is the U-Net forward alone with bf16 weights.");
    println!();
    println!("| size | grid pitch mm | U-Net params | GFLOP/forward/image | K | precision | U-Net fwd (batch K) | U-Net GFLOP/s | U-Net fwd+bwd (input grad) | dps step (backprop) | ddim-dps step (backprop) | dds step (no backprop) | U-Net fwd bf16 |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut cases = Vec::new();
    for &size in &sizes {
        let case =
            build_case(size, &args, &device).with_context(|| format!("setting up size {size}"))?;
        let cost = unet_cost(&case.model.spec.model);
        let unet = frozen_unet(&case.model, DType::F32, &device)?;
        let sampler = PosteriorSampler::new(&case.model, &device)?;
        let op: Arc<dyn LinearOperator> = Arc::new(MeasurementOperator::new(
            &case.scan,
            &case.grid,
            OperatorOptions::default(),
            &device,
        )?);
        let op = NormalizedOperator::new(op, SamplerConfig::default().power_iterations, &device)?;
        let meas = Measurement::from_frame(&op, &case.frames[0], None, &device)?;
        for &k in &args.samples {
            let x = NoiseRng::new(1).normal(&[k, 1, size, size], &device, DType::F32)?;
            let t = Tensor::full(500f32, k, &device)?;
            let fwd = time(&device, args.repeats, || {
                unet.forward(&x, &t)?;
                Ok(())
            })?;
            let fwd_bwd = time(&device, args.repeats, || {
                let xv = Var::from_tensor(&x)?;
                unet.forward(xv.as_tensor(), &t)?
                    .sqr()?
                    .sum_all()?
                    .backward()?;
                Ok(())
            })?;
            let mut steps = Vec::new();
            for &m in &args.methods {
                let cfg = sampler_config(&args, m, k);
                steps.push((
                    m,
                    step_time(&case, &sampler, &op, &meas, &cfg, args.repeats)?,
                ));
            }
            let step = |m: Method| {
                steps
                    .iter()
                    .find(|(n, _)| *n == m)
                    .map_or("-".to_string(), |(_, s)| ms(*s))
            };
            println!(
                "| {size} | {:.4} | {} | {:.3} | {k} | f32 | {} | {:.1} | {} | {} | {} | {} | {} |",
                case.grid.dx() * 1e3,
                param_count(&case.model.varmap),
                cost.flops / 1e9,
                ms(fwd),
                cost.flops * k as f64 / fwd / 1e9,
                ms(fwd_bwd),
                step(Method::Dps),
                step(Method::DdimDps),
                step(Method::Dds),
                bf16_forward(&case.model, k, args.repeats, &device),
            );
        }
        cases.push(case);
    }
    println!();
    println!("Per frame (PosteriorStage::reconstruct: DAS + upload + sampling + statistics; operator built once per scan, not counted):");
    println!();
    println!("| size | method | K | steps (cold) | frames | NFE/frame (mean) | failed | latency p50 ms | latency p99 ms | frames/s | operator build s |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for case in &cases {
        for &m in &args.methods {
            for &k in &args.samples {
                let cfg = sampler_config(&args, m, k);
                let run = run_frames(case, &cfg, &device)?;
                let mut lat = run.latencies_s.clone();
                lat.sort_by(|a, b| a.total_cmp(b));
                let nfe = if run.nfe.is_empty() {
                    "-".to_string()
                } else {
                    format!(
                        "{:.1}",
                        run.nfe.iter().sum::<usize>() as f64 / run.nfe.len() as f64
                    )
                };
                println!(
                    "| {} | {m} | {k} | {} | {} | {nfe} | {} | {} | {} | {:.2} | {:.2} |",
                    case.grid.nx(),
                    args.steps,
                    lat.len(),
                    run.failed,
                    ms(quantile(&lat, 0.5)),
                    ms(quantile(&lat, 0.99)),
                    lat.len() as f64 / run.total_s,
                    run.operator_s,
                );
            }
        }
    }
    if let (Some(other), Some(case)) = (check, cases.first()) {
        println!();
        println!(
            "Same frames and seeds on {} and {} (posterior mean aeration; PSNR with peak 1):",
            pleura::device::describe(&device),
            pleura::device::describe(&other)
        );
        println!();
        println!("| size | method | K | frames compared | max abs diff | PSNR dB |");
        println!("|---|---|---|---|---|---|");
        for &m in &args.methods {
            for &k in &args.samples {
                let cfg = sampler_config(&args, m, k);
                let a = run_frames(case, &cfg, &device)?;
                let b = run_frames(case, &cfg, &other)?;
                let (mut n, mut max, mut se, mut count) = (0, 0f64, 0f64, 0usize);
                for (x, y) in a.means.iter().zip(&b.means) {
                    if let (Some(x), Some(y)) = (x, y) {
                        n += 1;
                        for (p, q) in x.iter().zip(y) {
                            let d = (*p as f64 - *q as f64).abs();
                            max = max.max(d);
                            se += d * d;
                            count += 1;
                        }
                    }
                }
                let psnr = if count == 0 {
                    f64::NAN
                } else {
                    -10.0 * (se / count as f64).log10()
                };
                println!(
                    "| {} | {m} | {k} | {n} | {max:.3e} | {psnr:.1} |",
                    case.grid.nx()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cost walk creates exactly the parameters of the built network (so it visits the
    /// same layers), and its conv arithmetic matches a hand count of the first layer.
    #[test]
    fn cost_walk_matches_the_built_unet() {
        for (size, scale) in [(64, false), (32, false), (128, true)] {
            let cfg = reference_config(size, scale);
            let model = Model::new(model_spec(cfg.clone(), None), 0, &Device::Cpu).unwrap();
            assert_eq!(unet_cost(&cfg).params, param_count(&model.varmap), "{size}");
        }
        let mut c = UnetCost::default();
        c.conv(1, 32, 3, 64);
        assert_eq!(c.params, 32 * 9 + 32);
        assert_eq!(c.flops, 2.0 * 32.0 * 9.0 * 4096.0);
        // im2col (9 x 4096) written and read, output (32 x 4096) written, 4 bytes each.
        assert_eq!(c.bytes, 4.0 * (2.0 * 9.0 * 4096.0 + 32.0 * 4096.0));
        // The reference 64-px config is documented as 1 574 561 parameters.
        assert_eq!(unet_cost(&UNetConfig::default()).params, 1_574_561);
    }
}
