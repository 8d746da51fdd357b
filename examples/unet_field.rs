//! Measures whether the prior's U-Net can denoise a field larger than the one it was
//! trained on: the noise prediction on a 128 x 128 image (0.3 mm pixels, a simulated lung
//! phantom) against the prediction on its 64 x 64 crop at the model's training position,
//! at several timesteps. Used for docs/reconstruction.md, "Any linear-array scan".
//!
//! Usage: unet_field [MODEL_DIR] (default testdata/model)

use std::error::Error;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use pleura::diffusion::checkpoint::Model;
use pleura::diffusion::sampler::NoiseRng;
use pleura::diffusion::unet::UNet;
use pleura::grid::Grid;

fn rms(t: &Tensor) -> Result<f64, Box<dyn Error>> {
    Ok(t.sqr()?.mean_all()?.to_scalar::<f32>()?.sqrt() as f64)
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "testdata/model".into());
    let dev = Device::Cpu;
    let model = Model::load(std::path::Path::new(&dir), &dev)?;
    let vb = VarBuilder::from_tensors(model.tensors()?, DType::F32, &dev);
    let unet = UNet::new(&model.spec.model, vb)?;
    let n = model.spec.model.image_size;
    let big = 2 * n;
    // 128 x 128 pixels of 0.3 mm from 2 mm depth; the model's 64 x 64 grid is its top
    // centre (columns 32..96, rows 0..64).
    let grid = Grid::uniform(big, big, 0.3e-3, 2e-3)?;
    let (c0, r0) = (n / 2, 0);
    println!(
        "seed t | rms eps | big vs crop: eps, all / interior | Tweedie a0, interior \
         | tile vs shifted tile, a0 | a0 error vs truth: crop / big (interior)"
    );
    for seed in [11u64, 12, 13] {
        let (_, frames) = pleura::simulate::phantom::sequence(seed, &grid, 1);
        let a = &frames[0].aeration;
        let x0 = Tensor::from_vec(
            a.iter().map(|v| 2.0 * v - 1.0).collect::<Vec<f32>>(),
            (1, 1, big, big),
            &dev,
        )?;
        for t in [999usize, 700, 400, 200, 100, 50, 20] {
            let ac = model.schedule.alphas_cumprod[t];
            let z = NoiseRng::new(seed * 1000 + t as u64).normal(
                &[1, 1, big, big],
                &dev,
                DType::F32,
            )?;
            let xt = ((&x0 * ac.sqrt())? + (&z * (1.0 - ac).sqrt())?)?;
            let tt = Tensor::full(t as f32, 1, &dev)?;
            let eps_big = unet.forward(&xt, &tt)?;
            let crop = |x: &Tensor| x.narrow(2, r0, n).and_then(|x| x.narrow(3, c0, n));
            let eps_crop = unet.forward(&crop(&xt)?.contiguous()?, &tt)?;
            let d = (crop(&eps_big)? - &eps_crop)?;
            let inner = |x: &Tensor| x.narrow(2, 8, n - 16).and_then(|x| x.narrow(3, 8, n - 16));
            let k = ((1.0 - ac) / ac).sqrt() / 2.0; // eps -> aeration of Tweedie's x0
            let err = (crop(&z)? - &eps_crop)?;
            let err_big = (crop(&z)? - crop(&eps_big)?)?;
            // A second tile, 16 px to the right: the two predictions on their overlap's
            // columns 48..80 of the big image (16 px from either tile's edge), rows 8..56.
            let shifted = xt.narrow(2, r0, n)?.narrow(3, c0 + 16, n)?.contiguous()?;
            let eps_shift = unet.forward(&shifted, &tt)?;
            let a = eps_crop.narrow(2, 8, n - 16)?.narrow(3, 16, 32)?;
            let b = eps_shift.narrow(2, 8, n - 16)?.narrow(3, 0, 32)?;
            println!(
                "{seed} {t:4} | {:.3} | {:.4} / {:.4} | {:.2e} | {:.2e} | {:.2e} / {:.2e}",
                rms(&eps_crop)?,
                rms(&d)?,
                rms(&inner(&d)?)?,
                k * rms(&inner(&d)?)?,
                k * rms(&(a - b)?)?,
                k * rms(&inner(&err)?)?,
                k * rms(&inner(&err_big)?)?,
            );
        }
    }
    Ok(())
}
