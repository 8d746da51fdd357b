//! Diffusion prior: schedules against numpy, U-Net gradients against finite differences,
//! sampler reproducibility, training, checkpoints, resumption and the CLI.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use pleura::diffusion::checkpoint::{Model, ModelSpec};
use pleura::diffusion::sampler::{generate, Method, NoiseRng, SampleOptions, Sampler};
use pleura::diffusion::schedule::{
    ddim_timesteps, space_timesteps, Schedule, ScheduleConfig, ScheduleKind,
};
use pleura::diffusion::unet::{UNet, UNetConfig};
use pleura::train::{TrainConfig, Trainer};

fn tiny_unet() -> UNetConfig {
    UNetConfig {
        num_heads: 2,
        ..UNetConfig::smallest(8)
    }
}

fn tiny_config(steps: u64) -> TrainConfig {
    let mut cfg = TrainConfig {
        model: tiny_unet(),
        schedule: ScheduleConfig {
            kind: ScheduleKind::Cosine,
            steps: 100,
        },
        ..TrainConfig::default()
    };
    cfg.train.steps = steps;
    cfg.train.batch_size = 4;
    cfg.train.checkpoint_every = 1000;
    cfg.train.sample_every = 0;
    cfg.train.sample_steps = 5;
    cfg.train.optimizer.warmup_steps = 2;
    cfg.train.optimizer.lr = 2e-3;
    cfg
}

/// Writes `n` 8x8 images of horizontal bands (bright pleural line, darker below) with
/// h5py, as the simulator's `images` dataset.
fn write_images(path: &Path, n: usize, size: usize, scale: f64) {
    common::run_python(
        r#"
import sys, h5py, numpy as np
n, s, scale = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
rng = np.random.default_rng(1)
z = np.arange(s)[:, None] * np.ones((1, s))
imgs = np.stack([np.clip(0.2 + 0.6 * np.exp(-((z - rng.integers(1, s - 1)) ** 2) / 2.0)
                 + 0.1 * rng.random((s, s)), 0, 1) for _ in range(n)]).astype(np.float32) * scale
with h5py.File(sys.argv[1], 'w') as f:
    f['images'] = imgs
    f['grid_x'] = np.linspace(-1e-3, 1e-3, s)
    f['grid_z'] = np.linspace(2e-3, 4e-3, s)
"#,
        &[
            path.to_str().unwrap(),
            &n.to_string(),
            &size.to_string(),
            &scale.to_string(),
        ],
    );
}

fn floats(s: &str) -> Vec<f64> {
    s.split_whitespace().map(|v| v.parse().unwrap()).collect()
}

fn assert_close(ours: &[f64], theirs: &[f64], rel: f64, what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!(
            (a - b).abs() <= rel * b.abs().max(1e-300),
            "{what}[{i}]: ours {a} numpy {b}"
        );
    }
}

/// Every quantity of both schedules at T = 1000 and T = 50 and of a respaced process,
/// against the formulas of Ho et al. / Nichol & Dhariwal evaluated by numpy.
#[test]
fn schedules_match_numpy() {
    let script = r#"
import sys, numpy as np, math
kind, T = sys.argv[1], int(sys.argv[2])
if kind == 'linear':
    sc = 1000 / T
    b = np.linspace(sc * 1e-4, sc * 0.02, T, dtype=np.float64)
else:
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    b = np.array([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)])
keep = [int(k) for k in sys.argv[3].split(',')]
ac = np.cumprod(1 - b)
last, nb = 1.0, []
for i, a in enumerate(ac):
    if i in keep:
        nb.append(1 - a / last); last = a
for bb in (b, np.array(nb)):
    ac = np.cumprod(1 - bb); acp = np.append(1.0, ac[:-1])
    pv = bb * (1 - acp) / (1 - ac)
    plv = np.log(np.append(pv[1], pv[1:]))
    c1 = bb * np.sqrt(acp) / (1 - ac); c2 = (1 - acp) * np.sqrt(1 - bb) / (1 - ac)
    for arr in (bb, ac, pv, plv, c1, c2):
        print(' '.join(repr(float(v)) for v in arr))
"#;
    for kind in [ScheduleKind::Linear, ScheduleKind::Cosine] {
        for t in [1000usize, 50] {
            let s = Schedule::new(&ScheduleConfig { kind, steps: t }).unwrap();
            let keep = space_timesteps(t, &[7, 3, 5]).unwrap();
            let r = s.respace(&keep).unwrap();
            let keep_s: Vec<String> = keep.iter().map(|k| k.to_string()).collect();
            let name = if kind == ScheduleKind::Linear {
                "linear"
            } else {
                "cosine"
            };
            let out = common::run_python(script, &[name, &t.to_string(), &keep_s.join(",")]);
            let lines: Vec<Vec<f64>> = out.lines().map(floats).collect();
            for (k, sched) in [&s, &r].into_iter().enumerate() {
                let l = &lines[6 * k..6 * k + 6];
                let what = format!("{name} T={t} respaced={}", k == 1);
                assert_close(&sched.betas, &l[0], 1e-12, &format!("{what} betas"));
                assert_close(
                    &sched.alphas_cumprod,
                    &l[1],
                    1e-10,
                    &format!("{what} alpha-bar"),
                );
                assert_close(
                    &sched.posterior_variance,
                    &l[2],
                    1e-9,
                    &format!("{what} posterior variance"),
                );
                assert_close(
                    &sched.posterior_log_variance_clipped,
                    &l[3],
                    1e-9,
                    &format!("{what} log variance"),
                );
                assert_close(
                    &sched.posterior_mean_coef1,
                    &l[4],
                    1e-9,
                    &format!("{what} coef1"),
                );
                assert_close(
                    &sched.posterior_mean_coef2,
                    &l[5],
                    1e-9,
                    &format!("{what} coef2"),
                );
            }
        }
    }
}

/// Respacing selections against improved-diffusion's `space_timesteps` algorithm run in
/// Python (with Python's round-half-to-even).
#[test]
fn space_timesteps_matches_python() {
    let script = r#"
import sys
T = int(sys.argv[1]); counts = [int(c) for c in sys.argv[2].split(',')]
size_per = T // len(counts); extra = T % len(counts); start = 0; steps = []
for i, c in enumerate(counts):
    size = size_per + (1 if i < extra else 0)
    stride = 1 if c <= 1 else (size - 1) / (c - 1)
    cur = 0.0
    for _ in range(c):
        steps.append(start + round(cur)); cur += stride
    start += size
print(' '.join(str(s) for s in sorted(set(steps))))
"#;
    for (t, counts) in [
        (1000, vec![10]),
        (1000, vec![10, 15, 20]),
        (100, vec![25]),
        (250, vec![3, 7]),
        (50, vec![50]),
    ] {
        let c: Vec<String> = counts.iter().map(|v| v.to_string()).collect();
        let py: Vec<usize> = common::run_python(script, &[&t.to_string(), &c.join(",")])
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(
            space_timesteps(t, &counts).unwrap(),
            py,
            "T={t} counts={counts:?}"
        );
    }
    assert_eq!(
        ddim_timesteps(1000, 50).unwrap(),
        (0..1000).step_by(20).collect::<Vec<_>>()
    );
}

/// Gradients of a tiny U-Net (with attention, a downsampling and an upsampling) by
/// backpropagation against central finite differences, in f64 on the CPU.
#[test]
fn unet_gradients_match_finite_differences() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let cfg = UNetConfig {
        base_channels: 4,
        groups: 2,
        ..tiny_unet()
    };
    let unet = UNet::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F64, &dev)).unwrap();
    // Random values everywhere (the zero-initialised output convolutions would hide
    // every other gradient).
    let mut rng = NoiseRng::new(11);
    let mut vars: Vec<(String, candle_core::Var)> =
        varmap.data().lock().unwrap().clone().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, v) in &vars {
        let t = (rng.normal(v.dims(), &dev, DType::F64).unwrap() * 0.3).unwrap();
        v.set(&t).unwrap();
    }
    let x = rng.normal(&[2, 1, 8, 8], &dev, DType::F64).unwrap();
    let t = Tensor::new(&[3.0f64, 70.0], &dev).unwrap();
    let target = rng.normal(&[2, 1, 8, 8], &dev, DType::F64).unwrap();
    let loss = |unet: &UNet| -> Tensor {
        (unet.forward(&x, &t).unwrap() - &target)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
    };
    let grads = loss(&unet).backward().unwrap();
    let h = 1e-5;
    let mut checked = 0;
    for (name, v) in &vars {
        let g = grads
            .get(v)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let gv = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let base = v
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        // Two entries per parameter tensor: the first and the one in the middle.
        for idx in [0, base.len() / 2] {
            let eval = |delta: f64| {
                let mut p = base.clone();
                p[idx] += delta;
                v.set(&Tensor::from_vec(p, v.dims(), &dev).unwrap())
                    .unwrap();
                loss(&unet).to_scalar::<f64>().unwrap()
            };
            let fd = (eval(h) - eval(-h)) / (2.0 * h);
            v.set(&Tensor::from_vec(base.clone(), v.dims(), &dev).unwrap())
                .unwrap();
            let err = (fd - gv[idx]).abs();
            assert!(
                err <= 1e-6 + 1e-4 * fd.abs(),
                "{name}[{idx}]: backprop {} finite difference {fd}",
                gv[idx]
            );
            checked += 1;
        }
    }
    assert!(checked > 60, "checked only {checked} entries");
}

/// The same seed gives the same samples; another seed different ones; DDPM and DDIM run
/// with any step count and stay in [-1, 1].
#[test]
fn sampling_is_seeded_and_bounded() {
    let dev = Device::Cpu;
    let spec = ModelSpec {
        model: tiny_unet(),
        schedule: ScheduleConfig {
            kind: ScheduleKind::Linear,
            steps: 100,
        },
        grid_x: None,
        grid_z: None,
    };
    let model = Model::new(spec, 5, &dev).unwrap();
    pleura::testing::perturb_output(&model, 1, 0.1);
    for (method, steps) in [
        (Method::Ddpm, 7),
        (Method::Ddim { eta: 0.0 }, 5),
        (Method::Ddim { eta: 1.0 }, 1),
        (Method::Ddpm, 100),
    ] {
        let s = Sampler::new(&model.unet, &model.schedule, steps, &dev, DType::F32).unwrap();
        let mut count = 0;
        let a = s
            .sample(3, method, &mut NoiseRng::new(42), |_| count += 1)
            .unwrap();
        assert_eq!(count, steps);
        let b = s.sample(3, method, &mut NoiseRng::new(42), |_| {}).unwrap();
        let c = s.sample(3, method, &mut NoiseRng::new(43), |_| {}).unwrap();
        let va = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(
            va,
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "{method:?}"
        );
        assert_ne!(
            va,
            c.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "{method:?}"
        );
        assert!(va.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert_eq!(a.dims(), &[3, 1, 8, 8]);
    }
    assert!(Sampler::new(&model.unet, &model.schedule, 0, &dev, DType::F32).is_err());
    assert!(Sampler::new(&model.unet, &model.schedule, 101, &dev, DType::F32).is_err());
    // The per-step pieces compose: with the exact noise, Tweedie recovers x0.
    let s = Sampler::new(&model.unet, &model.schedule, 10, &dev, DType::F32).unwrap();
    let mut rng = NoiseRng::new(9);
    let x0 = (rng.normal(&[2, 1, 8, 8], &dev, DType::F32).unwrap() * 0.5).unwrap();
    let eps = rng.normal(&[2, 1, 8, 8], &dev, DType::F32).unwrap();
    let ac = s.schedule().alphas_cumprod[4];
    let xt = ((&x0 * ac.sqrt()).unwrap() + (&eps * (1.0 - ac).sqrt()).unwrap()).unwrap();
    let rec = s.predict_x0(&xt, &eps, 4).unwrap();
    let d = (rec - &x0)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-5, "{d}");
    let e2 = s.eps_from_x0(&xt, &x0, 4).unwrap();
    let d = (e2 - &eps)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-4, "{d}");
}

fn dir_with_images(n: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = common::tempdir();
    let data = dir.path().join("images.h5");
    write_images(&data, n, 8, 1.0);
    (dir, data)
}

/// A few steps of training lower the loss measured on a fixed batch with fixed noise.
#[test]
fn training_reduces_loss() {
    let (dir, data) = dir_with_images(16);
    let dev = Device::Cpu;
    let mut tr =
        Trainer::new(&data, &dir.path().join("run"), tiny_config(60), false, &dev).unwrap();
    let before = tr.eval_loss(16, 7).unwrap();
    tr.run(|_| {}).unwrap();
    let after = tr.eval_loss(16, 7).unwrap();
    assert!(after < 0.7 * before, "loss before {before} after {after}");
    let log = std::fs::read_to_string(dir.path().join("run/loss.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 60);
    assert!(dir.path().join("run/latest").exists());
}

/// Saving and loading a model gives bit-identical outputs; the EMA weights are what
/// sampling loads.
#[test]
fn checkpoint_round_trip_is_exact() {
    let (dir, data) = dir_with_images(8);
    let dev = Device::Cpu;
    let out = dir.path().join("run");
    let mut tr = Trainer::new(&data, &out, tiny_config(3), false, &dev).unwrap();
    tr.run(|_| {}).unwrap();
    let loaded = Model::load(&out, &dev).unwrap();
    assert_eq!(loaded.spec.grid_x.as_ref().map(|g| g.len()), Some(8));
    let x = NoiseRng::new(2)
        .normal(&[2, 1, 8, 8], &dev, DType::F32)
        .unwrap();
    let t = Tensor::new(&[10f32, 90.0], &dev).unwrap();
    let a = tr
        .ema
        .unet
        .forward(&x, &t)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = loaded
        .unet
        .forward(&x, &t)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(a, b);
    let w = tr
        .model
        .unet
        .forward(&x, &t)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_ne!(a, w, "EMA and raw weights must differ after training");
    let opts = SampleOptions {
        n: 3,
        steps: 4,
        method: Method::Ddpm,
        seed: 1,
        batch: 2,
    };
    let s1 = generate(&loaded, &opts, &dev, |_| {}).unwrap();
    assert!(s1.data.iter().all(|v| (0.0..=1.0).contains(v)));
    assert_eq!((s1.n, s1.h, s1.w), (3, 8, 8));
}

/// A run interrupted and resumed from its checkpoint reproduces the uninterrupted run
/// exactly: loss log and weights.
#[test]
fn resume_reproduces_uninterrupted_run() {
    let (dir, data) = dir_with_images(6); // 6 images, batch 4: epochs straddle batches
    let dev = Device::Cpu;
    let whole = dir.path().join("whole");
    let mut cfg = tiny_config(7);
    cfg.train.checkpoint_every = 3;
    let mut tr = Trainer::new(&data, &whole, cfg.clone(), false, &dev).unwrap();
    tr.run(|_| {}).unwrap();
    let ref_w = tr.model.tensors().unwrap();
    let ref_e = tr.ema.tensors().unwrap();

    let part = dir.path().join("part");
    let mut first = cfg.clone();
    first.train.steps = 3;
    let mut a = Trainer::new(&data, &part, first, false, &dev).unwrap();
    a.run(|_| {}).unwrap();
    // Steps after the checkpoint that a kill loses: they must be redone identically.
    a.step().unwrap();
    drop(a);
    assert!(
        Trainer::new(&data, &part, cfg.clone(), false, &dev).is_err(),
        "must refuse to overwrite a run"
    );
    let mut b = Trainer::new(&data, &part, cfg.clone(), true, &dev).unwrap();
    assert_eq!(b.state.step, 3);
    b.run(|_| {}).unwrap();
    let log_whole = std::fs::read_to_string(whole.join("loss.jsonl")).unwrap();
    let log_part = std::fs::read_to_string(part.join("loss.jsonl")).unwrap();
    assert_eq!(log_whole, log_part);
    for (name, t) in b.model.tensors().unwrap() {
        let x = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(
            x,
            ref_w[&name]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            "{name}"
        );
    }
    for (name, t) in b.ema.tensors().unwrap() {
        let x = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(
            x,
            ref_e[&name]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            "ema {name}"
        );
    }
}

fn write_tiny_config(dir: &Path) -> PathBuf {
    let p = dir.join("train.toml");
    let text = "[model]\nimage_size = 8\nbase_channels = 8\nchannel_mult = [1, 2]\nnum_res_blocks = 1\n\
                attention_resolutions = [4]\nnum_heads = 2\ngroups = 4\n\n[schedule]\nkind = \"cosine\"\nsteps = 100\n\n\
                [train]\nsteps = 4\nbatch_size = 2\ncheckpoint_every = 2\nsample_every = 4\nsample_count = 4\nsample_steps = 3\n";
    std::fs::write(&p, text).unwrap();
    p
}

/// `pleura train --data DATA --out OUT --config CFG --device cpu`, run to completion.
fn train_cli(data: &Path, out: &Path, cfg: &Path) -> std::process::Output {
    common::pleura()
        .arg("train")
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .arg("--config")
        .arg(cfg)
        .args(["--device", "cpu"])
        .output()
        .expect("run pleura train")
}

/// The commands end to end on a tiny model: train (with sample grid), sample to HDF5 and
/// PNG, eval-prior.
#[test]
fn cli_train_sample_eval() {
    let (dir, data) = dir_with_images(8);
    let cfg = write_tiny_config(dir.path());
    let out = dir.path().join("run");
    let o = train_cli(&data, &out, &cfg);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    common::assert_exists(&out.join("samples/step-00000004.png"));
    common::assert_exists(&out.join("ckpt-00000004/optimizer.safetensors"));
    let samples = dir.path().join("s.h5");
    let o = common::pleura()
        .args([
            "sample",
            "--model",
            out.to_str().unwrap(),
            "--n",
            "3",
            "--out",
            samples.to_str().unwrap(),
        ])
        .args([
            "--png",
            dir.path().to_str().unwrap(),
            "--steps",
            "4",
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    common::assert_exists(&dir.path().join("samples.png"));
    let shape = common::run_python(
        "import sys, h5py; f = h5py.File(sys.argv[1]); x = f['images'][:]; \
         print(x.shape, x.min() >= 0, x.max() <= 1, f['grid_x'].shape)",
        &[samples.to_str().unwrap()],
    );
    assert_eq!(shape.trim(), "(3, 8, 8) True True (8,)");
    let json = dir.path().join("eval.json");
    let o = common::pleura()
        .args([
            "eval-prior",
            "--model",
            out.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ])
        .args([
            "--n",
            "4",
            "--steps",
            "3",
            "--pool",
            "2",
            "--device",
            "cpu",
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("KS statistic"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["n_generated"], 4);
    assert_eq!(report["n_train"], 8);
}

/// Bad input is refused before training starts, with a message naming the problem.
#[test]
fn cli_train_rejects_bad_input() {
    let dir = common::tempdir();
    let cfg = write_tiny_config(dir.path());
    let out = dir.path().join("run");
    let run = |data: &Path, out: &Path| {
        let o = train_cli(data, out, &cfg);
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let out_of_range = dir.path().join("range.h5");
    write_images(&out_of_range, 4, 8, 2.0);
    assert!(run(&out_of_range, &out).contains("must be in [0, 1]"));
    let wrong_size = dir.path().join("size.h5");
    write_images(&wrong_size, 4, 12, 1.0);
    assert!(run(&wrong_size, &out).contains("images are 12x12 but the model takes 8x8"));
    let rank = dir.path().join("rank.h5");
    common::run_python(
        "import sys, h5py, numpy as np; h5py.File(sys.argv[1], 'w')['images'] = np.zeros((8, 8), np.float32)",
        &[rank.to_str().unwrap()],
    );
    assert!(run(&rank, &out).contains("rank 3"));
    let good = dir.path().join("good.h5");
    write_images(&good, 4, 8, 1.0);
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    let msg = run(&good, &blocker.join("sub"));
    assert!(msg.contains("file/sub"), "{msg}");
    let msg = run(&dir.path().join("missing.h5"), &out);
    assert!(msg.contains("missing.h5"), "{msg}");
    assert!(!out.join("latest").exists());
}

/// The shipped model (testdata/model/) loads its EMA weights and samples 64x64 aeration
/// images on the simulator's grid with the phantoms' layout: a dark chest-wall band at
/// the top over brighter, aerated lung (an untrained model gives no such contrast).
#[test]
fn shipped_model_loads_and_samples() {
    let dev = Device::Cpu;
    let model = Model::load(&common::testdata("model"), &dev).unwrap();
    assert_eq!(model.spec.model.image_size, 64);
    assert_eq!(model.spec.grid_x.as_ref().map(|g| g.len()), Some(64));
    assert!(common::testdata("model/ema.safetensors").exists());
    let opts = SampleOptions {
        n: 4,
        steps: 10,
        method: Method::Ddim { eta: 0.0 },
        seed: 0,
        batch: 4,
    };
    let s = generate(&model, &opts, &dev, |_| {}).unwrap();
    assert_eq!((s.n, s.h, s.w), (4, 64, 64));
    assert!(s.data.iter().all(|v| (0.0..=1.0).contains(v)));
    let band = |rows: std::ops::Range<usize>| {
        let mut sum = 0.0f32;
        for k in 0..s.n {
            for r in rows.clone() {
                let start = (k * s.h + r) * s.w;
                sum += s.data[start..start + s.w].iter().sum::<f32>();
            }
        }
        sum / (s.n * rows.len() * s.w) as f32
    };
    let (wall, lung) = (band(0..8), band(40..64));
    eprintln!("mean aeration: chest wall rows {wall:.3}, lung rows {lung:.3}");
    assert!(wall < 0.2 && lung > wall + 0.3, "wall {wall}, lung {lung}");
}
