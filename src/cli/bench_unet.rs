//! `pleura bench unet`: speed of the diffusion prior's U-Net (figures go to
//! docs/BENCHMARKS.md, section "Diffusion prior").

use std::collections::HashMap;
use std::time::Instant;

use super::CpuTime;

use candle_core::{DType, Tensor, Var};
use pleura::diffusion::checkpoint::Model;
use pleura::diffusion::sampler::NoiseRng;
use pleura::diffusion::unet::{param_count, UNetConfig};
use pleura::testing::model_spec;
use pleura::train::adamw::{AdamW, AdamWConfig};

/// Arguments of `pleura bench unet`.
#[derive(clap::Args)]
pub struct UnetArgs {
    /// Images per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Timed repetitions (after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Compute device: cpu, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// Mean wall-clock and CPU seconds of `f` over `iters` runs after one warm-up. On a
/// shared machine the CPU time shows the work when the wall time is inflated by waiting.
fn time(iters: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<(f64, f64)> {
    f()?;
    let t = Instant::now();
    let c = CpuTime::now().total_s();
    for _ in 0..iters {
        f()?;
    }
    let n = iters.max(1) as f64;
    Ok((
        t.elapsed().as_secs_f64() / n,
        (CpuTime::now().total_s() - c) / n,
    ))
}

/// U-Net forward and forward+backward time per image and AdamW training steps per second
/// at the default configuration.
pub fn bench_unet(a: UnetArgs) -> anyhow::Result<()> {
    let device = pleura::device::select(&a.device)?;
    let model = Model::new(model_spec(UNetConfig::default(), None), 0, &device)?;
    let s = model.spec.model.image_size;
    let mut rng = NoiseRng::new(0);
    let x = rng.normal(&[a.batch, 1, s, s], &device, DType::F32)?;
    let t = Tensor::full(500f32, a.batch, &device)?;
    let fwd = time(a.iters, || {
        model.unet.forward(&x, &t)?.sum_all()?.to_scalar::<f32>()?;
        Ok(())
    })?;
    let fwd_bwd = time(a.iters, || {
        model.unet.forward(&x, &t)?.sqr()?.mean_all()?.backward()?;
        Ok(())
    })?;
    let params: HashMap<String, Var> = model
        .varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let mut opt = AdamW::new(AdamWConfig::default(), params)?;
    let step = time(a.iters, || {
        let g = model.unet.forward(&x, &t)?.sqr()?.mean_all()?.backward()?;
        opt.step(&g)?;
        Ok(())
    })?;
    let b = a.batch as f64;
    println!(
        "U-Net {}x{} ({} parameters, {:.1} MB f32) on {}, batch {}, {} threads",
        s,
        s,
        param_count(&model.varmap),
        param_count(&model.varmap) as f64 * 4.0 / 1e6,
        pleura::device::describe(&device),
        a.batch,
        candle_core::utils::get_num_threads()
    );
    println!(
        "{:<28} {:>14} {:>14}",
        "measure", "wall", "CPU (all threads)"
    );
    let row = |name: &str, (w, c): (f64, f64), div: f64| {
        println!(
            "{name:<28} {:>11.1} ms {:>11.1} ms",
            w / div * 1e3,
            c / div * 1e3
        )
    };
    row("forward / image", fwd, b);
    row("forward+backward / image", fwd_bwd, b);
    row("train step (batch)", step, 1.0);
    println!("{:<28} {:>14.3}", "train steps/s (wall)", 1.0 / step.0);
    println!("{:<28} {:>14.2}", "train images/s (wall)", b / step.0);
    Ok(())
}
