//! `pleura bench operator`: time of the measurement operator A, its adjoint and an
//! autograd gradient of ||A x - y||^2 on the default grid and probe (CPU).

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Var};
use pleura::grid::Grid;
use pleura::operator::{MeasurementOperator, OperatorOptions};
use pleura::simulate::phantom::sequence;
use pleura::simulate::probe::LinearProbe;

/// Arguments of `pleura bench operator`.
#[derive(clap::Args)]
pub struct Args {
    /// Timed runs per case; the fastest is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Numbers of plane-wave transmits to time (angles spread over +-10 deg).
    #[arg(long, default_value = "1,3,7", value_delimiter = ',')]
    pub transmits: Vec<usize>,
}

fn best<F: FnMut() -> Result<()>>(repeats: usize, mut f: F) -> Result<f64> {
    let mut t = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let s = Instant::now();
        f()?;
        t = t.min(s.elapsed().as_secs_f64());
    }
    Ok(t)
}

pub fn run(args: Args) -> Result<()> {
    let grid = Grid::default_lung();
    let probe = LinearProbe::default_lung();
    let dev = Device::Cpu;
    let (_, frames) = sequence(0, &grid, 1);
    println!("| grid | elements | transmits | n_ax | tables MiB | build s | A x s | A^T y s | grad of ||Ax-y||^2 s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n_tx in &args.transmits {
        let angles: Vec<f64> = if n_tx == 1 {
            vec![0.0]
        } else {
            (0..n_tx)
                .map(|i| -10.0 + 20.0 * i as f64 / (n_tx - 1) as f64)
                .collect()
        };
        let scan = probe.plane_wave_scan(&angles, &grid);
        let s = Instant::now();
        let op = MeasurementOperator::new(&scan, &grid, OperatorOptions::default(), &dev)?;
        let build = s.elapsed().as_secs_f64();
        let x = op.image_tensor(&frames[0].aeration)?;
        let y = op.forward(&x)?;
        let fwd = best(args.repeats, || Ok(op.forward(&x).map(|_| ())?))?;
        let adj = best(args.repeats, || Ok(op.adjoint(&y).map(|_| ())?))?;
        let x0 = (x.clone() * 0.5)?;
        let grad = best(args.repeats, || {
            let v = Var::from_tensor(&x0)?;
            let r = (op.forward(v.as_tensor())? - &y)?;
            let loss = r.sqr()?.sum_all()?;
            loss.backward()?;
            Ok(())
        })?;
        println!(
            "| {}x{} | {} | {} | {} | {:.1} | {:.3} | {:.3} | {:.3} | {:.3} |",
            grid.nx(),
            grid.nz(),
            probe.n_el,
            n_tx,
            scan.n_ax,
            op.table_bytes() as f64 / (1024.0 * 1024.0),
            build,
            fwd,
            adj,
            grad
        );
    }
    Ok(())
}
