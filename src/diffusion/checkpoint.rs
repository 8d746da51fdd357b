//! Model checkpoints on disk.
//!
//! A training output directory holds checkpoint directories `ckpt-<step>/` and a file
//! `latest` naming the newest complete one. Each checkpoint is first written to a hidden
//! temporary directory and renamed into place, then `latest` is replaced by rename, so a
//! kill at any moment leaves `latest` pointing at a complete checkpoint.
//!
//! A checkpoint directory holds `config.json` ([`ModelSpec`]), `model.safetensors` (the
//! trained weights), `ema.safetensors` (their exponential moving average, used for
//! sampling) and, for training runs, `train.json`, `state.json` and
//! `optimizer.safetensors` (see `crate::train`). A directory with only `config.json` and
//! `ema.safetensors` (or `model.safetensors`) is a valid model for sampling.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::schedule::{Schedule, ScheduleConfig};
use super::unet::{UNet, UNetConfig};
use super::DiffusionError;

/// What a checkpoint's weights mean: architecture, schedule, image grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub model: UNetConfig,
    pub schedule: ScheduleConfig,
    /// Lateral grid coordinates (m) of the training images' columns, when known.
    pub grid_x: Option<Vec<f64>>,
    /// Depth grid coordinates (m) of the training images' rows, when known.
    pub grid_z: Option<Vec<f64>>,
}

/// A model with its parameters.
pub struct Model {
    pub spec: ModelSpec,
    pub schedule: Schedule,
    pub varmap: VarMap,
    pub unet: UNet,
}

impl Model {
    /// A freshly initialised model (see [`super::unet::init_params`]).
    pub fn new(spec: ModelSpec, seed: u64, device: &Device) -> Result<Self, DiffusionError> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let unet = UNet::new(&spec.model, vb)?;
        super::unet::init_params(&varmap, seed)?;
        let schedule = Schedule::new(&spec.schedule)?;
        Ok(Self {
            spec,
            schedule,
            varmap,
            unet,
        })
    }

    /// The parameters by name.
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>, DiffusionError> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| DiffusionError::Poisoned)?;
        Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect())
    }

    /// Replaces every parameter by the tensor of the same name; every parameter must be
    /// present with its shape.
    pub fn set_tensors(
        &self,
        tensors: &HashMap<String, Tensor>,
        origin: &Path,
    ) -> Result<(), DiffusionError> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| DiffusionError::Poisoned)?;
        for (name, var) in data.iter() {
            let t = tensors.get(name).ok_or_else(|| DiffusionError::Data {
                path: origin.to_path_buf(),
                reason: format!("parameter `{name}` missing"),
            })?;
            if t.dims() != var.dims() {
                return Err(DiffusionError::Data {
                    path: origin.to_path_buf(),
                    reason: format!(
                        "parameter `{name}` has shape {:?}, model needs {:?}",
                        t.dims(),
                        var.dims()
                    ),
                });
            }
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(())
    }

    /// Loads a model for sampling from a checkpoint directory or a training output
    /// directory (then its `latest` checkpoint), preferring the EMA weights.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, DiffusionError> {
        let ckpt = resolve(dir)?;
        let spec: ModelSpec = read_json(&ckpt.join("config.json"))?;
        let model = Self::new(spec, 0, device)?;
        let ema = ckpt.join("ema.safetensors");
        let weights = if ema.exists() {
            ema
        } else {
            ckpt.join("model.safetensors")
        };
        model.set_tensors(&load_safetensors(&weights, device)?, &weights)?;
        Ok(model)
    }
}

/// The checkpoint directory a model path designates: `dir/<latest>` when `dir/latest`
/// exists, else `dir` itself when it holds `config.json`.
pub fn resolve(dir: &Path) -> Result<PathBuf, DiffusionError> {
    let latest = dir.join("latest");
    if latest.exists() {
        let name = std::fs::read_to_string(&latest).map_err(DiffusionError::io(&latest))?;
        let name = name.trim();
        if name.is_empty() || name.contains('/') {
            return Err(DiffusionError::Data {
                path: latest,
                reason: format!("does not name a checkpoint directory: {name:?}"),
            });
        }
        return Ok(dir.join(name));
    }
    if dir.join("config.json").exists() {
        return Ok(dir.to_path_buf());
    }
    Err(DiffusionError::Data {
        path: dir.to_path_buf(),
        reason: "not a model: neither `latest` nor `config.json` is there".into(),
    })
}

/// Reads a JSON file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, DiffusionError> {
    let text = std::fs::read_to_string(path).map_err(DiffusionError::io(path))?;
    serde_json::from_str(&text).map_err(|source| DiffusionError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a JSON file (pretty-printed).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), DiffusionError> {
    let text = serde_json::to_string_pretty(value).map_err(|source| DiffusionError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(path, text).map_err(DiffusionError::io(path))
}

/// Loads every tensor of a safetensors file onto `device`.
pub fn load_safetensors(
    path: &Path,
    device: &Device,
) -> Result<HashMap<String, Tensor>, DiffusionError> {
    if !path.exists() {
        return Err(DiffusionError::Data {
            path: path.to_path_buf(),
            reason: "file not found".into(),
        });
    }
    candle_core::safetensors::load(path, device).map_err(|e| DiffusionError::Data {
        path: path.to_path_buf(),
        reason: format!("cannot read safetensors: {e}"),
    })
}

/// Saves tensors as safetensors.
pub fn save_safetensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
) -> Result<(), DiffusionError> {
    candle_core::safetensors::save(tensors, path).map_err(|e| DiffusionError::Data {
        path: path.to_path_buf(),
        reason: format!("cannot write safetensors: {e}"),
    })
}

/// Writes a checkpoint atomically: `fill` writes the files into a temporary directory
/// which is then renamed to `out/ckpt-<step>`, `out/latest` is replaced by rename, and older
/// checkpoints are removed. Returns the checkpoint directory.
pub fn write_checkpoint(
    out: &Path,
    step: u64,
    fill: impl FnOnce(&Path) -> Result<(), DiffusionError>,
) -> Result<PathBuf, DiffusionError> {
    let name = format!("ckpt-{step:08}");
    let tmp = out.join(format!(".tmp-{name}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(DiffusionError::io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(DiffusionError::io(&tmp))?;
    fill(&tmp)?;
    let dst = out.join(&name);
    if dst.exists() {
        std::fs::remove_dir_all(&dst).map_err(DiffusionError::io(&dst))?;
    }
    std::fs::rename(&tmp, &dst).map_err(DiffusionError::io(&dst))?;
    let latest_tmp = out.join(".latest.tmp");
    std::fs::write(&latest_tmp, &name).map_err(DiffusionError::io(&latest_tmp))?;
    let latest = out.join("latest");
    std::fs::rename(&latest_tmp, &latest).map_err(DiffusionError::io(&latest))?;
    let entries = std::fs::read_dir(out).map_err(DiffusionError::io(out))?;
    for e in entries.flatten() {
        let fname = e.file_name().to_string_lossy().to_string();
        if fname.starts_with("ckpt-") && fname != name {
            std::fs::remove_dir_all(e.path()).map_err(DiffusionError::io(e.path()))?;
        }
    }
    Ok(dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint whose writing fails part-way (as a kill would leave it) is never
    /// designated by `latest`; the next write cleans it up.
    #[test]
    fn interrupted_checkpoint_leaves_latest_intact() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        write_checkpoint(out, 1, |d| {
            std::fs::write(d.join("config.json"), "{}").map_err(DiffusionError::io(d))
        })
        .unwrap();
        let err = write_checkpoint(out, 2, |d| {
            std::fs::write(d.join("config.json"), "{").map_err(DiffusionError::io(d))?;
            Err(DiffusionError::Poisoned)
        });
        assert!(err.is_err());
        assert_eq!(resolve(out).unwrap(), out.join("ckpt-00000001"));
        assert!(out.join(".tmp-ckpt-00000002").exists());
        write_checkpoint(out, 2, |d| {
            std::fs::write(d.join("config.json"), "{}").map_err(DiffusionError::io(d))
        })
        .unwrap();
        assert_eq!(resolve(out).unwrap(), out.join("ckpt-00000002"));
        assert!(!out.join(".tmp-ckpt-00000002").exists());
        assert!(
            !out.join("ckpt-00000001").exists(),
            "older checkpoints are removed"
        );
        assert!(resolve(&out.join("nothing")).is_err());
    }
}
