//! Image data sets of the prior: HDF5 files with a dataset `images` (n, h, w) float32 of
//! aeration in [0, 1] and, optionally, the grid coordinates `grid_x` (w) and `grid_z` (h)
//! in metres (as `pleura simulate --images-only` writes them).

use std::path::Path;

use candle_core::{Device, Tensor};
use ndarray::Array3;

use super::DiffusionError;

/// Images in memory, row-major (n, h, w), values in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
    pub grid_x: Option<Vec<f64>>,
    pub grid_z: Option<Vec<f64>>,
}

impl ImageSet {
    /// Reads and validates `images` (rank 3, non-empty, finite values in [0, 1]).
    pub fn load(path: &Path) -> Result<Self, DiffusionError> {
        let file = hdf5::File::open(path)
            .and_then(crate::recording::close_on_exec)
            .map_err(DiffusionError::hdf5(path))?;
        let ds = file.dataset("images").map_err(|e| DiffusionError::Data {
            path: path.to_path_buf(),
            reason: format!("no dataset `images`: {e}"),
        })?;
        let shape = ds.shape();
        let bad = |reason: String| DiffusionError::Data {
            path: path.to_path_buf(),
            reason,
        };
        if shape.len() != 3 {
            return Err(bad(format!(
                "`images` must have rank 3 (n, h, w), has shape {shape:?}"
            )));
        }
        if shape.contains(&0) {
            return Err(bad(format!("`images` is empty: shape {shape:?}")));
        }
        let data: Vec<f32> = ds.read_raw::<f32>().map_err(DiffusionError::hdf5(path))?;
        if let Some((i, v)) = data
            .iter()
            .enumerate()
            .find(|(_, v)| !(0.0..=1.0).contains(*v))
        {
            let per = shape[1] * shape[2];
            return Err(bad(format!(
                "`images` values must be in [0, 1]: image {} pixel {} is {v}",
                i / per,
                i % per
            )));
        }
        let read_grid = |name: &str, len: usize| -> Result<Option<Vec<f64>>, DiffusionError> {
            match file.dataset(name) {
                Ok(d) => {
                    let v = d.read_raw::<f64>().map_err(DiffusionError::hdf5(path))?;
                    if v.len() != len {
                        return Err(bad(format!(
                            "`{name}` has {} values, images need {len}",
                            v.len()
                        )));
                    }
                    Ok(Some(v))
                }
                Err(_) => Ok(None),
            }
        };
        Ok(Self {
            n: shape[0],
            h: shape[1],
            w: shape[2],
            grid_x: read_grid("grid_x", shape[2])?,
            grid_z: read_grid("grid_z", shape[1])?,
            data,
        })
    }

    /// Image `i` as a slice of h*w values.
    pub fn image(&self, i: usize) -> &[f32] {
        let p = self.h * self.w;
        &self.data[i * p..(i + 1) * p]
    }

    /// Mean aeration of each image.
    pub fn mean_aeration(&self) -> Vec<f64> {
        (0..self.n)
            .map(|i| {
                self.image(i).iter().map(|&v| v as f64).sum::<f64>() / (self.h * self.w) as f64
            })
            .collect()
    }

    /// A batch (b, 1, h, w) of the given images mapped to model space [-1, 1].
    pub fn batch(&self, idx: &[usize], device: &Device) -> candle_core::Result<Tensor> {
        let mut v = Vec::with_capacity(idx.len() * self.h * self.w);
        for &i in idx {
            v.extend(self.image(i).iter().map(|&a| to_model(a)));
        }
        Tensor::from_vec(v, (idx.len(), 1, self.h, self.w), device)
    }

    /// Images from a model-space tensor (n, 1, h, w).
    pub fn from_model_tensor(x: &Tensor) -> Result<Self, DiffusionError> {
        let (n, _c, h, w) = x.dims4()?;
        let data = x
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(from_model)
            .collect();
        Ok(Self {
            n,
            h,
            w,
            data,
            grid_x: None,
            grid_z: None,
        })
    }

    /// Writes `images` (and the grids when known) to a new HDF5 file.
    pub fn save(&self, path: &Path) -> Result<(), DiffusionError> {
        let file = hdf5::File::create(path)
            .and_then(crate::recording::close_on_exec)
            .map_err(DiffusionError::hdf5(path))?;
        let arr =
            Array3::from_shape_vec((self.n, self.h, self.w), self.data.clone()).map_err(|e| {
                DiffusionError::Data {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }
            })?;
        file.new_dataset_builder()
            .with_data(&arr)
            .create("images")
            .map_err(DiffusionError::hdf5(path))?;
        for (name, g) in [("grid_x", &self.grid_x), ("grid_z", &self.grid_z)] {
            if let Some(g) = g {
                file.new_dataset_builder()
                    .with_data(g.as_slice())
                    .create(name)
                    .map_err(DiffusionError::hdf5(path))?;
            }
        }
        Ok(())
    }

    /// Writes the first `max` images as a grayscale PNG grid (2 px black borders).
    pub fn save_png_grid(&self, path: &Path, max: usize) -> Result<(), DiffusionError> {
        let n = self.n.min(max).max(1);
        let cols = (n as f64).sqrt().ceil() as usize;
        let rows = n.div_ceil(cols);
        let b = 2;
        let (gw, gh) = (cols * (self.w + b) + b, rows * (self.h + b) + b);
        let mut px = vec![0u8; gw * gh];
        for k in 0..n.min(self.n) {
            let (r, c) = (k / cols, k % cols);
            let img = self.image(k);
            for y in 0..self.h {
                for x in 0..self.w {
                    let v = (img[y * self.w + x].clamp(0.0, 1.0) * 255.0).round() as u8;
                    px[(b + r * (self.h + b) + y) * gw + b + c * (self.w + b) + x] = v;
                }
            }
        }
        let png = crate::render::gray_png(gw as u32, gh as u32, &px).map_err(|e| {
            DiffusionError::Data {
                path: path.to_path_buf(),
                reason: format!("PNG encoding failed: {e}"),
            }
        })?;
        std::fs::write(path, png).map_err(DiffusionError::io(path))
    }
}

/// Aeration [0, 1] to model space [-1, 1].
pub fn to_model(a: f32) -> f32 {
    2.0 * a - 1.0
}

/// Model space [-1, 1] to aeration [0, 1] (clamped).
pub fn from_model(x: f32) -> f32 {
    ((x + 1.0) * 0.5).clamp(0.0, 1.0)
}
