//! The epsilon-predicting U-Net of the prior, after the OpenAI improved-diffusion U-Net
//! (Nichol & Dhariwal 2021, `improved_diffusion/unet.py`): residual blocks with GroupNorm,
//! SiLU and a projected sinusoidal time embedding, self-attention at low resolution,
//! skip connections by concatenation, zero-initialised output convolutions.
//!
//! Parameter names mirror improved-diffusion's state dict (`time_embed.0`,
//! `input_blocks.N.M.in_layers.2`, `middle_block.1.qkv`, `output_blocks.N.M.conv`, `out.2`),
//! so a checkpoint is self-describing and easy to compare with the reference.
//!
//! Weights are kept in the VarBuilder's dtype (f32 for training); `forward` computes in the
//! dtype of its input, casting weights on the fly, which gives mixed precision (bf16
//! activations with f32 master weights) when the input is bf16. GroupNorm statistics are
//! always computed in at least f32.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::DiffusionError;

/// Architecture of the U-Net.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UNetConfig {
    /// Side of the square input image in pixels (must be divisible by 2^(levels-1)).
    pub image_size: usize,
    /// Image channels (1: aeration map).
    pub in_channels: usize,
    /// Channels of the first level ("model_channels" in improved-diffusion).
    pub base_channels: usize,
    /// Channel multiplier of each resolution level; one 2x downsampling between levels.
    pub channel_mult: Vec<usize>,
    /// Residual blocks per level on the way down (one more on the way up).
    pub num_res_blocks: usize,
    /// Feature-map sides (pixels) at which self-attention blocks are inserted.
    pub attention_resolutions: Vec<usize>,
    /// Dropout probability inside residual blocks (training only).
    pub dropout: f64,
    /// Attention heads (channels at attention levels must be divisible by it).
    pub num_heads: usize,
    /// GroupNorm groups (every channel count must be divisible by it).
    pub groups: usize,
}

impl Default for UNetConfig {
    /// The reference model sized for CPU: 64x64 images, 32 base channels, levels
    /// 64/32/16/8 px with multipliers 1,2,2,2, one residual block per level, attention at
    /// 16 and 8 px, 8 GroupNorm groups: 1 574 561 parameters (6.3 MB of f32).
    /// improved-diffusion's ImageNet-64 model uses 128 base channels, multipliers 1,2,3,4,
    /// three blocks and attention at 16 and 8 px; this is a scaled-down version of it
    /// that trains and samples on two CPU cores.
    fn default() -> Self {
        Self {
            image_size: 64,
            in_channels: 1,
            base_channels: 32,
            channel_mult: vec![1, 2, 2, 2],
            num_res_blocks: 1,
            attention_resolutions: vec![16, 8],
            dropout: 0.0,
            num_heads: 4,
            groups: 8,
        }
    }
}

impl UNetConfig {
    /// The smallest model that still has every kind of block (two levels, a residual
    /// block each, attention at the lower level): 8 base channels, multipliers 1,2, one
    /// head, 4 groups, for `image_size` px images (even). For tests and quick checks; it
    /// learns nothing useful.
    pub fn smallest(image_size: usize) -> Self {
        Self {
            image_size,
            in_channels: 1,
            base_channels: 8,
            channel_mult: vec![1, 2],
            num_res_blocks: 1,
            attention_resolutions: vec![image_size / 2],
            dropout: 0.0,
            num_heads: 1,
            groups: 4,
        }
    }

    /// Checks that the architecture is consistent.
    pub fn validate(&self) -> Result<(), DiffusionError> {
        let bad = |field: &'static str, value: String, reason: String| {
            Err(DiffusionError::Config {
                field,
                value,
                reason,
            })
        };
        if self.channel_mult.is_empty() || self.channel_mult.contains(&0) {
            return bad(
                "model.channel_mult",
                format!("{:?}", self.channel_mult),
                "need at least one level, each multiplier >= 1".into(),
            );
        }
        let down = 1usize << (self.channel_mult.len() - 1);
        if self.image_size == 0 || self.image_size % down != 0 {
            return bad(
                "model.image_size",
                self.image_size.to_string(),
                format!(
                    "must be a positive multiple of {down} for {} levels",
                    self.channel_mult.len()
                ),
            );
        }
        if self.in_channels == 0
            || self.base_channels == 0
            || self.num_heads == 0
            || self.groups == 0
        {
            return bad(
                "model",
                format!("{self:?}"),
                "in_channels, base_channels, num_heads and groups must be >= 1".into(),
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(
                "model.dropout",
                self.dropout.to_string(),
                "must be in [0, 1)".into(),
            );
        }
        for (level, m) in self.channel_mult.iter().enumerate() {
            let ch = m * self.base_channels;
            if ch % self.groups != 0 || self.base_channels % self.groups != 0 {
                return bad(
                    "model.groups",
                    self.groups.to_string(),
                    format!("level {level} has {ch} channels, not divisible by the groups"),
                );
            }
            let side = self.image_size >> level;
            if self.attention_resolutions.contains(&side) && ch % self.num_heads != 0 {
                return bad(
                    "model.num_heads",
                    self.num_heads.to_string(),
                    format!("attention at {side} px has {ch} channels, not divisible by the heads"),
                );
            }
        }
        Ok(())
    }
}

/// Sinusoidal timestep embedding (improved-diffusion `timestep_embedding`, max period
/// 10000): `[cos(t f_k), sin(t f_k)]` with `f_k = exp(-ln(10000) k / (dim/2))`.
pub fn timestep_embedding(t: &Tensor, dim: usize) -> candle_core::Result<Tensor> {
    let half = dim / 2;
    let dev = t.device();
    let freqs: Vec<f32> = (0..half)
        .map(|k| (-(10000f64.ln()) * k as f64 / half as f64).exp() as f32)
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), dev)?.to_dtype(t.dtype())?;
    let args = t.unsqueeze(1)?.broadcast_mul(&freqs)?;
    let emb = Tensor::cat(&[args.cos()?, args.sin()?], 1)?;
    if dim % 2 == 1 {
        let z = emb.zeros_like()?.narrow(1, 0, 1)?;
        return Tensor::cat(&[emb, z], 1);
    }
    Ok(emb)
}

fn cast(w: &Tensor, like: &Tensor) -> candle_core::Result<Tensor> {
    if w.dtype() == like.dtype() {
        Ok(w.clone())
    } else {
        w.to_dtype(like.dtype())
    }
}

struct Linear {
    w: Tensor,
    b: Tensor,
}

impl Linear {
    fn new(i: usize, o: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            w: vb.get((o, i), "weight")?,
            b: vb.get(o, "bias")?,
        })
    }
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&cast(&self.w, x)?.t()?)?
            .broadcast_add(&cast(&self.b, x)?)
    }
}

struct Conv {
    w: Tensor,
    b: Tensor,
    stride: usize,
    padding: usize,
}

impl Conv {
    fn new(
        i: usize,
        o: usize,
        k: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            w: vb.get((o, i, k, k), "weight")?,
            b: vb.get(o, "bias")?,
            stride,
            padding: k / 2,
        })
    }
    /// Convolution as im2col + one matrix product, built from differentiable tensor ops.
    /// candle's CPU backward of `conv2d` goes through a direct `conv_transpose2d` and a
    /// full-image-kernel `conv2d`, about ten times slower than the forward; here the
    /// backward is two matrix products and copies.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let (o, _, k, _) = self.w.dims4()?;
        let s = self.stride;
        let p = self.padding;
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let cols = if k == 1 && s == 1 {
            x.clone()
        } else {
            let xp = if p > 0 {
                x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?
            } else {
                x.clone()
            };
            let (hp, wp) = (h + 2 * p, w + 2 * p);
            let mut taps = Vec::with_capacity(k * k);
            for dy in 0..k {
                for dx in 0..k {
                    let mut t = xp.narrow(2, dy, (s * ho).min(hp - dy))?;
                    t = t.narrow(3, dx, (s * wo).min(wp - dx))?;
                    if s > 1 {
                        let (th, tw) = (t.dim(2)?, t.dim(3)?);
                        if th < s * ho {
                            t = t.pad_with_zeros(2, 0, s * ho - th)?;
                        }
                        if tw < s * wo {
                            t = t.pad_with_zeros(3, 0, s * wo - tw)?;
                        }
                        t = t
                            .reshape((b, c, ho, s, wo, s))?
                            .narrow(3, 0, 1)?
                            .narrow(5, 0, 1)?
                            .reshape((b, c, ho, wo))?;
                    }
                    taps.push(t);
                }
            }
            Tensor::cat(&taps, 1)?
        };
        let kkc = k * k * c;
        let wm = cast(&self.w, x)?
            .permute((0, 2, 3, 1))?
            .reshape((1, o, kkc))?
            .broadcast_as((b, o, kkc))?
            .contiguous()?;
        let y = wm.matmul(&cols.reshape((b, kkc, ho * wo))?)?;
        y.broadcast_add(&cast(&self.b, x)?.reshape((1, o, 1))?)?
            .reshape((b, o, ho, wo))
    }
}

struct GroupNorm {
    w: Tensor,
    b: Tensor,
    groups: usize,
}

/// GroupNorm epsilon (PyTorch default, used by improved-diffusion's GroupNorm32).
const GN_EPS: f64 = 1e-5;

impl GroupNorm {
    fn new(c: usize, groups: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            w: vb.get(c, "weight")?,
            b: vb.get(c, "bias")?,
            groups,
        })
    }
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let (n, c) = (dims[0], dims[1]);
        let stat_dtype = if x.dtype() == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let xf = x.to_dtype(stat_dtype)?.reshape((n, self.groups, ()))?;
        let mean = xf.mean_keepdim(2)?;
        let xc = xf.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(2)?;
        let xn = xc
            .broadcast_div(&(var + GN_EPS)?.sqrt()?)?
            .reshape(dims.as_slice())?;
        let mut shape = vec![1usize; dims.len()];
        shape[1] = c;
        let w = self.w.to_dtype(stat_dtype)?.reshape(shape.as_slice())?;
        let b = self.b.to_dtype(stat_dtype)?.reshape(shape.as_slice())?;
        xn.broadcast_mul(&w)?.broadcast_add(&b)?.to_dtype(x.dtype())
    }
}

fn dropout(x: &Tensor, p: f64, rng: Option<&mut StdRng>) -> candle_core::Result<Tensor> {
    match rng {
        Some(rng) if p > 0.0 => {
            let keep = 1.0 - p;
            let mask: Vec<f32> = (0..x.elem_count())
                .map(|_| {
                    if rng.random::<f64>() < keep {
                        (1.0 / keep) as f32
                    } else {
                        0.0
                    }
                })
                .collect();
            let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
            x * mask
        }
        _ => Ok(x.clone()),
    }
}

struct ResBlock {
    in_norm: GroupNorm,
    in_conv: Conv,
    emb: Linear,
    out_norm: GroupNorm,
    out_conv: Conv,
    skip: Option<Conv>,
    dropout: f64,
}

impl ResBlock {
    fn new(
        i: usize,
        o: usize,
        emb: usize,
        cfg: &UNetConfig,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            in_norm: GroupNorm::new(i, cfg.groups, vb.pp("in_layers.0"))?,
            in_conv: Conv::new(i, o, 3, 1, vb.pp("in_layers.2"))?,
            emb: Linear::new(emb, o, vb.pp("emb_layers.1"))?,
            out_norm: GroupNorm::new(o, cfg.groups, vb.pp("out_layers.0"))?,
            out_conv: Conv::new(o, o, 3, 1, vb.pp("out_layers.3"))?,
            skip: if i == o {
                None
            } else {
                Some(Conv::new(i, o, 1, 1, vb.pp("skip_connection"))?)
            },
            dropout: cfg.dropout,
        })
    }
    fn forward(
        &self,
        x: &Tensor,
        emb: &Tensor,
        rng: Option<&mut StdRng>,
    ) -> candle_core::Result<Tensor> {
        let h = self.in_conv.forward(&self.in_norm.forward(x)?.silu()?)?;
        let e = self.emb.forward(&emb.silu()?)?;
        let (b, c) = e.dims2()?;
        let h = h.broadcast_add(&e.reshape((b, c, 1, 1))?)?;
        let h = dropout(&self.out_norm.forward(&h)?.silu()?, self.dropout, rng)?;
        let h = self.out_conv.forward(&h)?;
        match &self.skip {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

struct Attention {
    norm: GroupNorm,
    qkv_w: Tensor,
    qkv_b: Tensor,
    proj_w: Tensor,
    proj_b: Tensor,
    heads: usize,
}

impl Attention {
    fn new(c: usize, cfg: &UNetConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            norm: GroupNorm::new(c, cfg.groups, vb.pp("norm"))?,
            qkv_w: vb.get((3 * c, c, 1), "qkv.weight")?,
            qkv_b: vb.get(3 * c, "qkv.bias")?,
            proj_w: vb.get((c, c, 1), "proj_out.weight")?,
            proj_b: vb.get(c, "proj_out.bias")?,
            heads: cfg.num_heads,
        })
    }
    /// improved-diffusion `AttentionBlock` with `QKVAttentionLegacy`: per head, softmax of
    /// `(q / ch^{1/4})^T (k / ch^{1/4})` over keys.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let t = h * w;
        let xn = self.norm.forward(x)?.reshape((b, c, t))?;
        let conv1x1 = |x: &Tensor, wt: &Tensor, bias: &Tensor| -> candle_core::Result<Tensor> {
            let o = wt.dim(0)?;
            let wm = cast(wt, x)?
                .reshape((1, o, wt.dim(1)?))?
                .broadcast_as((b, o, wt.dim(1)?))?;
            wm.contiguous()?
                .matmul(x)?
                .broadcast_add(&cast(bias, x)?.reshape((1, o, 1))?)
        };
        let qkv = conv1x1(&xn, &self.qkv_w, &self.qkv_b)?;
        let ch = c / self.heads;
        let qkv = qkv.reshape((b * self.heads, 3 * ch, t))?;
        let scale = 1.0 / (ch as f64).sqrt().sqrt();
        let q = (qkv.narrow(1, 0, ch)? * scale)?;
        let k = (qkv.narrow(1, ch, ch)? * scale)?;
        let v = qkv.narrow(1, 2 * ch, ch)?;
        let weight = q.transpose(1, 2)?.contiguous()?.matmul(&k.contiguous()?)?;
        let weight = candle_nn::ops::softmax(&weight, D::Minus1)?;
        let a = v
            .contiguous()?
            .matmul(&weight.transpose(1, 2)?.contiguous()?)?;
        let a = a.reshape((b, c, t))?;
        let out = conv1x1(&a, &self.proj_w, &self.proj_b)?;
        (x.reshape((b, c, t))? + out)?.reshape((b, c, h, w))
    }
}

enum Layer {
    Conv(Conv),
    Res(ResBlock),
    Attn(Attention),
    Down(Conv),
    Up(Conv),
}

impl Layer {
    fn forward(
        &self,
        x: &Tensor,
        emb: &Tensor,
        rng: &mut Option<&mut StdRng>,
    ) -> candle_core::Result<Tensor> {
        match self {
            Layer::Conv(c) | Layer::Down(c) => c.forward(x),
            Layer::Res(r) => r.forward(x, emb, rng.as_deref_mut()),
            Layer::Attn(a) => a.forward(x),
            Layer::Up(c) => {
                // Nearest 2x upsampling by broadcasting (its backward is a sum, where
                // candle's `upsample_nearest2d` backward is a strided convolution).
                let (b, ch, h, w) = x.dims4()?;
                let up = x
                    .reshape((b, ch, h, 1, w, 1))?
                    .broadcast_as((b, ch, h, 2, w, 2))?
                    .reshape((b, ch, 2 * h, 2 * w))?;
                c.forward(&up)
            }
        }
    }
}

fn run_seq(
    layers: &[Layer],
    x: &Tensor,
    emb: &Tensor,
    rng: &mut Option<&mut StdRng>,
) -> candle_core::Result<Tensor> {
    let mut h = x.clone();
    for l in layers {
        h = l.forward(&h, emb, rng)?;
    }
    Ok(h)
}

/// The U-Net epsilon-predictor: `eps_theta(x_t, t)`.
pub struct UNet {
    cfg: UNetConfig,
    time_embed: (Linear, Linear),
    input_blocks: Vec<Vec<Layer>>,
    middle_block: Vec<Layer>,
    output_blocks: Vec<Vec<Layer>>,
    out_norm: GroupNorm,
    out_conv: Conv,
}

impl UNet {
    /// Builds the network, creating or loading its parameters through `vb`.
    pub fn new(cfg: &UNetConfig, vb: VarBuilder) -> Result<Self, DiffusionError> {
        cfg.validate()?;
        Ok(Self::build(cfg, vb)?)
    }

    fn build(cfg: &UNetConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let mc = cfg.base_channels;
        let emb = 4 * mc;
        let time_embed = (
            Linear::new(mc, emb, vb.pp("time_embed.0"))?,
            Linear::new(emb, emb, vb.pp("time_embed.2"))?,
        );
        let mut input_blocks = vec![vec![Layer::Conv(Conv::new(
            cfg.in_channels,
            mc,
            3,
            1,
            vb.pp("input_blocks.0.0"),
        )?)]];
        let mut chans = vec![mc];
        let mut ch = mc;
        let mut side = cfg.image_size;
        let levels = cfg.channel_mult.len();
        for (level, &mult) in cfg.channel_mult.iter().enumerate() {
            for _ in 0..cfg.num_res_blocks {
                let p = vb.pp(format!("input_blocks.{}", input_blocks.len()));
                let mut layers = vec![Layer::Res(ResBlock::new(
                    ch,
                    mult * mc,
                    emb,
                    cfg,
                    p.pp("0"),
                )?)];
                ch = mult * mc;
                if cfg.attention_resolutions.contains(&side) {
                    layers.push(Layer::Attn(Attention::new(ch, cfg, p.pp("1"))?));
                }
                input_blocks.push(layers);
                chans.push(ch);
            }
            if level + 1 != levels {
                let p = vb.pp(format!("input_blocks.{}.0.op", input_blocks.len()));
                input_blocks.push(vec![Layer::Down(Conv::new(ch, ch, 3, 2, p)?)]);
                chans.push(ch);
                side /= 2;
            }
        }
        let mb = vb.pp("middle_block");
        let middle_block = vec![
            Layer::Res(ResBlock::new(ch, ch, emb, cfg, mb.pp("0"))?),
            Layer::Attn(Attention::new(ch, cfg, mb.pp("1"))?),
            Layer::Res(ResBlock::new(ch, ch, emb, cfg, mb.pp("2"))?),
        ];
        let mut output_blocks = Vec::new();
        for (level, &mult) in cfg.channel_mult.iter().enumerate().rev() {
            for i in 0..=cfg.num_res_blocks {
                let p = vb.pp(format!("output_blocks.{}", output_blocks.len()));
                let skip = chans.pop().unwrap_or(0);
                let mut layers = vec![Layer::Res(ResBlock::new(
                    ch + skip,
                    mc * mult,
                    emb,
                    cfg,
                    p.pp("0"),
                )?)];
                ch = mc * mult;
                if cfg.attention_resolutions.contains(&side) {
                    layers.push(Layer::Attn(Attention::new(ch, cfg, p.pp("1"))?));
                }
                if level > 0 && i == cfg.num_res_blocks {
                    let name = format!("{}.conv", layers.len());
                    layers.push(Layer::Up(Conv::new(ch, ch, 3, 1, p.pp(name))?));
                    side *= 2;
                }
                output_blocks.push(layers);
            }
        }
        Ok(Self {
            cfg: cfg.clone(),
            time_embed,
            input_blocks,
            middle_block,
            output_blocks,
            out_norm: GroupNorm::new(ch, cfg.groups, vb.pp("out.0"))?,
            out_conv: Conv::new(ch, cfg.in_channels, 3, 1, vb.pp("out.2"))?,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// Predicts the noise of `x` (B, C, H, W) at model timesteps `t` (B,) (indices into the
    /// training schedule, any float dtype). Computes in `x`'s dtype. No dropout.
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_train(x, t, None)
    }

    /// As [`UNet::forward`], with dropout masks drawn from `rng` when given (training).
    pub fn forward_train(
        &self,
        x: &Tensor,
        t: &Tensor,
        rng: Option<&mut StdRng>,
    ) -> candle_core::Result<Tensor> {
        let mut rng = rng;
        let t = t.to_dtype(x.dtype())?;
        let emb = timestep_embedding(&t, self.cfg.base_channels)?;
        let emb = self
            .time_embed
            .1
            .forward(&self.time_embed.0.forward(&emb)?.silu()?)?;
        let mut hs = Vec::with_capacity(self.input_blocks.len());
        let mut h = x.clone();
        for block in &self.input_blocks {
            h = run_seq(block, &h, &emb, &mut rng)?;
            hs.push(h.clone());
        }
        h = run_seq(&self.middle_block, &h, &emb, &mut rng)?;
        for block in &self.output_blocks {
            let skip = hs
                .pop()
                .ok_or_else(|| candle_core::Error::Msg("U-Net skip stack empty".into()))?;
            h = Tensor::cat(&[&h, &skip], 1)?;
            h = run_seq(block, &h, &emb, &mut rng)?;
        }
        self.out_conv.forward(&self.out_norm.forward(&h)?.silu()?)
    }
}

/// Deterministic initialisation of every parameter of a VarMap built by [`UNet::new`],
/// in name order from a seeded generator (candle's own initialisers use an unseeded RNG):
/// weights of convolutions and linear layers uniform in `+-1/sqrt(fan_in)` (PyTorch's
/// default), biases 0, GroupNorm scales 1, and the convolutions that close each residual
/// branch (`out_layers.3`, `proj_out`, `out.2`) zero, as improved-diffusion's `zero_module`.
pub fn init_params(varmap: &candle_nn::VarMap, seed: u64) -> Result<(), DiffusionError> {
    use rand::SeedableRng;
    let data = varmap.data().lock().map_err(|_| DiffusionError::Poisoned)?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = StdRng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let zero = name.ends_with("out_layers.3.weight")
            || name.ends_with("proj_out.weight")
            || name == "out.2.weight";
        let values: Vec<f64> = if name.ends_with(".bias") || zero {
            vec![0.0; n]
        } else if dims.len() == 1 {
            vec![1.0; n]
        } else {
            let fan_in: usize = dims[1..].iter().product();
            let bound = 1.0 / (fan_in as f64).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        };
        let t = Tensor::from_vec(values, dims.as_slice(), &Device::Cpu)?
            .to_dtype(var.dtype())?
            .to_device(var.device())?;
        var.set(&t)?;
    }
    Ok(())
}

/// Number of scalar parameters of a VarMap.
pub fn param_count(varmap: &candle_nn::VarMap) -> usize {
    varmap.all_vars().iter().map(|v| v.elem_count()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::sampler::NoiseRng;

    /// The shipped model on a 128 x 128 field (a simulated lung phantom at 0.3 mm, noised
    /// to t = 200) against the same network on its 64 x 64 crop at the model grid's place:
    /// on the crop's interior the whole field's Tweedie estimate is as close to the truth as
    /// the crop's (GroupNorm and attention see the whole field, and that costs no accuracy),
    /// and the two differ by a fraction of that error (docs/reconstruction.md, "Any
    /// linear-array scan"; `examples/unet_field.rs` measures more timesteps and phantoms).
    #[test]
    fn shipped_unet_denoises_a_larger_field_as_well_as_its_crop() {
        let dev = Device::Cpu;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/model");
        let model = crate::diffusion::checkpoint::Model::load(&dir, &dev).unwrap();
        let vb = VarBuilder::from_tensors(model.tensors().unwrap(), DType::F32, &dev);
        let unet = UNet::new(&model.spec.model, vb).unwrap();
        let grid = crate::grid::Grid::uniform(128, 128, 0.3e-3, 2e-3).unwrap();
        let (_, frames) = crate::simulate::phantom::sequence(11, &grid, 1);
        let x0: Vec<f32> = frames[0].aeration.iter().map(|v| 2.0 * v - 1.0).collect();
        let x0 = Tensor::from_vec(x0, (1, 1, 128, 128), &dev).unwrap();
        let t = 200;
        let ac = model.schedule.alphas_cumprod[t];
        let z = NoiseRng::new(11_200)
            .normal(&[1, 1, 128, 128], &dev, DType::F32)
            .unwrap();
        let xt = ((&x0 * ac.sqrt()).unwrap() + (&z * (1.0 - ac).sqrt()).unwrap()).unwrap();
        let tt = Tensor::full(t as f32, 1, &dev).unwrap();
        // The crop: rows 0..64, columns 32..96; its interior 8 px in from its edges.
        let crop = |x: &Tensor| x.narrow(2, 0, 64).unwrap().narrow(3, 32, 64).unwrap();
        let inner = |x: &Tensor| x.narrow(2, 8, 48).unwrap().narrow(3, 8, 48).unwrap();
        let eps_big = crop(&unet.forward(&xt, &tt).unwrap());
        let eps_crop = unet.forward(&crop(&xt).contiguous().unwrap(), &tt).unwrap();
        // Aeration error of Tweedie's estimate: sqrt((1 - ac) / ac) / 2 per unit of eps.
        let k = ((1.0 - ac) / ac).sqrt() / 2.0;
        let rms = |a: &Tensor, b: &Tensor| {
            let d = inner(&(a - b).unwrap());
            k * d
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .sqrt() as f64
        };
        let (err_big, err_crop) = (rms(&eps_big, &crop(&z)), rms(&eps_crop, &crop(&z)));
        let apart = rms(&eps_big, &eps_crop);
        assert!(err_big <= 1.05 * err_crop, "{err_big} vs {err_crop}");
        assert!(apart < 0.5 * err_crop, "{apart} vs {err_crop}");
        assert!(
            apart > 1e-4,
            "GroupNorm and attention do see the field: {apart}"
        );
    }

    #[test]
    fn im2col_conv_matches_candle_conv2d() {
        let dev = Device::Cpu;
        let mut rng = NoiseRng::new(3);
        for (k, s, h) in [(3, 1, 6), (3, 2, 8), (1, 1, 5), (3, 2, 7)] {
            let x = rng.normal(&[2, 3, h, h], &dev, DType::F64).unwrap();
            let w = rng.normal(&[4, 3, k, k], &dev, DType::F64).unwrap();
            let b = rng.normal(&[4], &dev, DType::F64).unwrap();
            let conv = Conv {
                w: w.clone(),
                b: b.clone(),
                stride: s,
                padding: k / 2,
            };
            let ours = conv.forward(&x).unwrap();
            let reference = x
                .conv2d(&w, k / 2, s, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap())
                .unwrap();
            assert_eq!(ours.dims(), reference.dims(), "k {k} s {s} h {h}");
            let d = (ours - reference)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert!(d.to_scalar::<f64>().unwrap() < 1e-12, "k {k} s {s} h {h}");
        }
    }

    /// Mixed precision: f32 weights, bf16 activations, close to the f32 forward.
    #[test]
    fn bf16_activations_track_f32() {
        let dev = Device::Cpu;
        let varmap = candle_nn::VarMap::new();
        let cfg = UNetConfig {
            image_size: 8,
            base_channels: 8,
            channel_mult: vec![1, 2],
            attention_resolutions: vec![4],
            num_heads: 2,
            groups: 4,
            ..UNetConfig::default()
        };
        let unet = UNet::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev)).unwrap();
        for v in varmap.all_vars() {
            let t = (NoiseRng::new(v.elem_count() as u64)
                .normal(v.dims(), &dev, DType::F32)
                .unwrap()
                * 0.2)
                .unwrap();
            v.set(&t).unwrap();
        }
        let x = NoiseRng::new(1)
            .normal(&[2, 1, 8, 8], &dev, DType::F32)
            .unwrap();
        let t = Tensor::new(&[5f32, 50.0], &dev).unwrap();
        let full = unet.forward(&x, &t).unwrap();
        let half = unet.forward(&x.to_dtype(DType::BF16).unwrap(), &t).unwrap();
        assert_eq!(half.dtype(), DType::BF16);
        let err = (half.to_dtype(DType::F32).unwrap() - &full)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap();
        let scale = full.sqr().unwrap().mean_all().unwrap();
        let rel = (err.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap()).sqrt();
        assert!(rel < 0.05, "relative RMS error of bf16 forward {rel}");
    }

    #[test]
    fn default_config_fits_budget() {
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        UNet::new(&UNetConfig::default(), vb).unwrap();
        let n = param_count(&varmap);
        assert!(n * 4 < 20_000_000, "{n} parameters");
        assert_eq!(n, 1_574_561, "documented in UNetConfig::default");
        assert!(varmap
            .data()
            .lock()
            .unwrap()
            .contains_key("middle_block.1.qkv.weight"));
        assert!(varmap
            .data()
            .lock()
            .unwrap()
            .contains_key("time_embed.0.weight"));
    }
}
