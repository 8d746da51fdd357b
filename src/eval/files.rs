//! Reconstruction files and the ground truth they are evaluated against.
//!
//! A reconstruction file (HDF5) holds, for F frames on an nz x nx grid, under
//! [`RECON_GROUP`] (`pleura/recon`; files written before zea 0.1.x support have these
//! at `recon/`, and are still read):
//! - `mean` (F, nz, nx) float32: the aeration estimate in [0, 1];
//! - `std` (F, nz, nx) float32, optional: its pixel-wise standard deviation;
//! - `aeration_ci` (F, 2) float64, optional: 95 % interval of the mean lung aeration;
//! - `nfe` (F) uint32, optional: network evaluations spent on each frame;
//! - `latency_ms` (F) float64, optional: milliseconds each frame took;
//! - `grid_x` (nx), `grid_z` (nz) float64, m;
//! - group attributes `method` (what made it) and `source` (the recording it came from).
//!
//! It is also a zea 0.1.x file ([`ReconWriter::finish`]): the root attribute `zea_version`, the
//! mean as zea's `image` (uint8, 0-255 for aeration 0-1) with its pixel coordinates in
//! `tracks/track_0/data/image/`, and the DAS envelope as `envelope_data` where there is
//! one, so `zea.File` opens it and shows the reconstruction.
//!
//! The ground truth is in the simulated recording: `pleura/aeration` (F, nz, nx),
//! `pleura/grid_x`, `pleura/grid_z`, and `pleura/lung_mask` (F, nz, nx) uint8, the pixels
//! over which mean aeration is taken (the whole image when absent).
//!
//! A reconstruction may cover only the first F frames of a longer recording (`pleura
//! replay --max-frames`, `pleura reconstruct-baseline --frames`); it is evaluated against
//! those frames.

use std::path::{Path, PathBuf};

use hdf5::types::VarLenUnicode;
use ndarray::{Array1, Array2, Array3, Ix1, Ix3};

use crate::grid::{Grid, GridError};
use crate::recording::close_on_exec;

#[derive(Debug, thiserror::Error)]
pub enum EvalFileError {
    #[error("{path}: {what}: {source}")]
    Hdf5 {
        path: PathBuf,
        what: String,
        source: hdf5::Error,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("reconstruction does not match the truth: {0}")]
    Mismatch(String),
    #[error("{path}: grid: {source}")]
    Grid { path: PathBuf, source: GridError },
}

fn h5<T>(path: &Path, what: &str, r: hdf5::Result<T>) -> Result<T, EvalFileError> {
    r.map_err(|source| EvalFileError::Hdf5 {
        path: path.to_path_buf(),
        what: what.to_string(),
        source,
    })
}

/// A reconstruction of a sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Recon {
    pub mean: Array3<f32>,
    pub std: Option<Array3<f32>>,
    pub aeration_ci: Option<Array2<f64>>,
    /// The lung aeration the reconstruction published per frame (`recon/aeration`).
    pub aeration: Option<Array1<f64>>,
    pub nfe: Option<Array1<u32>>,
    pub latency_ms: Option<Array1<f64>>,
    pub grid: Grid,
    pub method: String,
    pub source: String,
}

/// Ground truth of a simulated sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Truth {
    pub aeration: Array3<f32>,
    pub lung_mask: Option<Array3<bool>>,
    pub grid: Grid,
}

/// Where a reconstruction file keeps pleura's per-frame results.
pub const RECON_GROUP: &str = "pleura/recon";

/// Where files written before pleura wrote zea 0.1.x kept them.
const OLD_RECON_GROUP: &str = "recon";

/// Writes the zea 0.1.x view of a reconstruction into `f`: the root attribute
/// `zea_version`, `description`, the posterior mean as zea's `image` (uint8, 0-255 for
/// aeration 0-1, 0 for a failed frame's NaN) and the DAS envelope (in [0, 1]) as
/// `envelope_data`, both with their pixel coordinates ([x, y, z] in m, shape (nz, nx, 3)).
/// zea requires `image` values to be dB at most 0 or uint8; aeration is neither a level
/// nor in dB, so the image is its 8-bit rendering and the full-precision values stay in
/// [`RECON_GROUP`].
fn write_zea_view(
    path: &Path,
    f: &hdf5::File,
    grid: &Grid,
    mean: &Array3<f32>,
    das: Option<&Array3<f32>>,
    description: &str,
) -> Result<(), EvalFileError> {
    write_attr_string(path, f, "zea_version", crate::recording::zea::ZEA_VERSION)?;
    write_attr_string(path, f, "description", description)?;
    let (nz, nx) = (grid.nz(), grid.nx());
    let coordinates = ndarray::Array3::from_shape_fn((nz, nx, 3), |(z, x, k)| match k {
        0 => grid.x[x] as f32,
        1 => 0.0,
        _ => grid.z[z] as f32,
    });
    let image = mean.mapv(|v| {
        if v.is_finite() {
            (v.clamp(0.0, 1.0) * 255.0).round() as u8
        } else {
            0
        }
    });
    let map = |name: &str, what: &str| -> Result<hdf5::Group, EvalFileError> {
        let at = format!("tracks/track_0/data/{name}");
        let g = h5(path, &at, f.create_group(&at))?;
        h5(
            path,
            &format!("{at}/coordinates"),
            g.new_dataset_builder()
                .with_data(&coordinates)
                .create("coordinates")
                .map(drop),
        )?;
        let d: VarLenUnicode = what.parse().map_err(|_| EvalFileError::Invalid {
            path: path.to_path_buf(),
            what: format!("{at}/description is not valid text"),
        })?;
        h5(
            path,
            &format!("{at}/description"),
            g.new_dataset::<VarLenUnicode>()
                .create("description")
                .and_then(|ds| ds.write_scalar(&d)),
        )?;
        Ok(g)
    };
    let g = map(
        "image",
        "pleura posterior mean aeration: 0-255 for 0-1 (full precision in pleura/recon/mean)",
    )?;
    h5(
        path,
        "tracks/track_0/data/image/values",
        g.new_dataset_builder()
            .with_data(&image)
            .create("values")
            .map(drop),
    )?;
    if let Some(das) = das {
        let g = map(
            "envelope_data",
            "DAS envelope on the reconstruction grid, over its frame maximum",
        )?;
        h5(
            path,
            "tracks/track_0/data/envelope_data/values",
            g.new_dataset_builder()
                .with_data(das)
                .create("values")
                .map(drop),
        )?;
    }
    Ok(())
}

/// Writes a reconstruction file, the one way there is: pleura's results as datasets and
/// attributes of [`RECON_GROUP`], then [`finish`](Self::finish) adds the grid and the zea
/// view. `pleura replay` and [`Recon::write`] both write through it.
pub struct ReconWriter {
    path: PathBuf,
    file: hdf5::File,
    group: hdf5::Group,
}

impl ReconWriter {
    /// Creates the file at `path` (replacing any file there).
    pub fn create(path: &Path) -> Result<Self, EvalFileError> {
        let file = h5(
            path,
            "create",
            hdf5::File::create(path).and_then(close_on_exec),
        )?;
        let group = h5(path, RECON_GROUP, file.create_group(RECON_GROUP))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            group,
        })
    }

    /// Writes the dataset `name` of the results.
    pub fn dataset<'a, A, T, D>(&self, name: &str, data: A) -> Result<(), EvalFileError>
    where
        A: Into<ndarray::ArrayView<'a, T, D>>,
        T: hdf5::H5Type + 'a,
        D: ndarray::Dimension,
    {
        h5(
            &self.path,
            &format!("{RECON_GROUP}/{name}"),
            self.group
                .new_dataset_builder()
                .with_data(data)
                .create(name)
                .map(drop),
        )
    }

    /// Writes the dataset `name` of variable-length UTF-8 strings.
    pub fn strings(&self, name: &str, values: &[String]) -> Result<(), EvalFileError> {
        let v: Vec<VarLenUnicode> = values
            .iter()
            .map(|x| x.parse::<VarLenUnicode>())
            .collect::<Result<_, _>>()
            .map_err(|_| EvalFileError::Invalid {
                path: self.path.clone(),
                what: format!("{RECON_GROUP}/{name} holds text that is not valid"),
            })?;
        self.dataset(name, &Array1::from(v))
    }

    /// Writes the text attribute `name` of the results.
    pub fn attr(&self, name: &str, value: &str) -> Result<(), EvalFileError> {
        write_attr_string(&self.path, &self.group, name, value)
    }

    /// Writes the numeric attribute `name` of the results.
    pub fn attr_f64(&self, name: &str, value: f64) -> Result<(), EvalFileError> {
        h5(
            &self.path,
            &format!("{RECON_GROUP}@{name}"),
            self.group
                .new_attr::<f64>()
                .create(name)
                .and_then(|a| a.write_scalar(&value)),
        )
    }

    /// Writes the grid and the zea view (`write_zea_view`) and closes the file.
    pub fn finish(
        self,
        grid: &Grid,
        mean: &Array3<f32>,
        das: Option<&Array3<f32>>,
        description: &str,
    ) -> Result<(), EvalFileError> {
        self.dataset("grid_x", &Array1::from(grid.x.clone()))?;
        self.dataset("grid_z", &Array1::from(grid.z.clone()))?;
        write_zea_view(&self.path, &self.file, grid, mean, das, description)
    }
}

/// Reads the dataset `name` of the group `g` at `at`.
fn read_dataset<T: hdf5::H5Type, D: ndarray::Dimension>(
    path: &Path,
    g: &hdf5::Group,
    at: &str,
    name: &str,
) -> Result<ndarray::Array<T, D>, EvalFileError> {
    h5(
        path,
        &format!("{at}/{name}"),
        g.dataset(name).and_then(|d| d.read::<T, D>()),
    )
}

/// Reads the dataset `name` of the group `g` at `at`, `None` when absent.
fn read_optional<T: hdf5::H5Type, D: ndarray::Dimension>(
    path: &Path,
    g: &hdf5::Group,
    at: &str,
    name: &str,
) -> Result<Option<ndarray::Array<T, D>>, EvalFileError> {
    g.link_exists(name)
        .then(|| read_dataset(path, g, at, name))
        .transpose()
}

fn read_grid(path: &Path, f: &hdf5::Group, prefix: &str) -> Result<Grid, EvalFileError> {
    let x: Array1<f64> = h5(
        path,
        &format!("{prefix}/grid_x"),
        f.dataset(&format!("{prefix}/grid_x"))
            .and_then(|d| d.read::<f64, Ix1>()),
    )?;
    let z: Array1<f64> = h5(
        path,
        &format!("{prefix}/grid_z"),
        f.dataset(&format!("{prefix}/grid_z"))
            .and_then(|d| d.read::<f64, Ix1>()),
    )?;
    Grid::new(x.to_vec(), z.to_vec()).map_err(|source| EvalFileError::Grid {
        path: path.to_path_buf(),
        source,
    })
}

fn read_attr_string(g: &hdf5::Group, name: &str) -> Option<String> {
    g.attr(name)
        .and_then(|a| a.read_scalar::<VarLenUnicode>())
        .ok()
        .map(|s| s.as_str().to_string())
}

fn write_attr_string(
    path: &Path,
    g: &hdf5::Group,
    name: &str,
    v: &str,
) -> Result<(), EvalFileError> {
    let s: VarLenUnicode = v.parse().map_err(|_| EvalFileError::Invalid {
        path: path.to_path_buf(),
        what: format!("attribute {name} is not valid text"),
    })?;
    h5(
        path,
        name,
        g.new_attr::<VarLenUnicode>()
            .shape(())
            .create(name)
            .and_then(|a| a.write_scalar(&s)),
    )
}

impl Recon {
    /// Writes the reconstruction file (replacing an existing one).
    pub fn write(&self, path: &Path) -> Result<(), EvalFileError> {
        let w = ReconWriter::create(path)?;
        w.dataset("mean", &self.mean)?;
        if let Some(s) = &self.std {
            w.dataset("std", s)?;
        }
        if let Some(ci) = &self.aeration_ci {
            w.dataset("aeration_ci", ci)?;
        }
        if let Some(a) = &self.aeration {
            w.dataset("aeration", a)?;
        }
        if let Some(n) = &self.nfe {
            w.dataset("nfe", n)?;
        }
        if let Some(l) = &self.latency_ms {
            w.dataset("latency_ms", l)?;
        }
        w.attr("method", &self.method)?;
        w.attr("source", &self.source)?;
        w.finish(&self.grid, &self.mean, None, &self.method)
    }

    /// Reads a reconstruction file.
    pub fn read(path: &Path) -> Result<Self, EvalFileError> {
        let f = h5(path, "open", hdf5::File::open(path).and_then(close_on_exec))?;
        let at = if f.link_exists(RECON_GROUP) {
            RECON_GROUP
        } else {
            OLD_RECON_GROUP
        };
        let g = h5(path, at, f.group(at))?;
        let name = |n: &str| format!("{at}/{n}");
        let mean: Array3<f32> = read_dataset(path, &g, at, "mean")?;
        let std = read_optional(path, &g, at, "std")?;
        let aeration_ci = read_optional(path, &g, at, "aeration_ci")?;
        let aeration = read_optional(path, &g, at, "aeration")?;
        let nfe = read_optional(path, &g, at, "nfe")?;
        let latency_ms = read_optional(path, &g, at, "latency_ms")?;
        let grid = read_grid(path, &f, at)?;
        let (n, nz, nx) = mean.dim();
        for (field, len) in [
            (name("aeration"), aeration.as_ref().map(|v| v.len())),
            (name("nfe"), nfe.as_ref().map(|v| v.len())),
            (name("latency_ms"), latency_ms.as_ref().map(|v| v.len())),
        ] {
            if len.is_some_and(|l| l != n) {
                return Err(EvalFileError::Invalid {
                    path: path.to_path_buf(),
                    what: format!("{field} has {len:?} entries for {n} frames"),
                });
            }
        }
        if (nz, nx) != (grid.nz(), grid.nx()) {
            return Err(EvalFileError::Invalid {
                path: path.to_path_buf(),
                what: format!(
                    "{} is ({nz}, {nx}) per frame but the grid is ({}, {})",
                    name("mean"),
                    grid.nz(),
                    grid.nx()
                ),
            });
        }
        if std.as_ref().is_some_and(|s| s.dim() != mean.dim()) {
            return Err(EvalFileError::Invalid {
                path: path.to_path_buf(),
                what: format!("{} shape differs from {}", name("std"), name("mean")),
            });
        }
        if aeration_ci.as_ref().is_some_and(|c| c.dim() != (n, 2)) {
            return Err(EvalFileError::Invalid {
                path: path.to_path_buf(),
                what: format!("{} must be ({n}, 2)", name("aeration_ci")),
            });
        }
        // The attributes are on the group; older files have them at the root.
        let attr = |n: &str| read_attr_string(&g, n).or_else(|| read_attr_string(&f, n));
        Ok(Self {
            mean,
            std,
            aeration_ci,
            aeration,
            nfe,
            latency_ms,
            grid,
            method: attr("method").unwrap_or_default(),
            source: attr("source").unwrap_or_default(),
        })
    }
}

impl Truth {
    /// Reads the ground truth under `pleura/` of a simulated recording.
    pub fn read(path: &Path) -> Result<Self, EvalFileError> {
        let f = h5(path, "open", hdf5::File::open(path).and_then(close_on_exec))?;
        let aeration: Array3<f32> = h5(
            path,
            "pleura/aeration",
            f.dataset("pleura/aeration")
                .and_then(|d| d.read::<f32, Ix3>()),
        )?;
        let lung_mask = match f.dataset("pleura/lung_mask") {
            Ok(d) => Some(h5(path, "pleura/lung_mask", d.read::<u8, Ix3>())?.mapv(|v| v != 0)),
            Err(_) => None,
        };
        let grid = read_grid(path, &f, "pleura")?;
        if lung_mask
            .as_ref()
            .is_some_and(|m| m.dim() != aeration.dim())
        {
            return Err(EvalFileError::Invalid {
                path: path.to_path_buf(),
                what: "pleura/lung_mask shape differs from pleura/aeration".into(),
            });
        }
        Ok(Self {
            aeration,
            lung_mask,
            grid,
        })
    }
}

/// Evaluates `recon` against `truth` frame by frame (the reconstruction's F frames against
/// the first F of the truth). A frame whose reconstruction holds a non-finite value (a
/// frame replay marked failed: NaN) is left out of the metrics and listed in
/// `failed_frames`.
pub fn evaluate(recon: &Recon, truth: &Truth) -> Result<super::Summary, EvalFileError> {
    let (rn, rz, rx) = recon.mean.dim();
    let (tn, tz, tx) = truth.aeration.dim();
    if (rz, rx) != (tz, tx) || rn > tn {
        return Err(EvalFileError::Mismatch(format!(
            "reconstruction is {:?} (frames, nz, nx) but the truth is {:?}",
            recon.mean.dim(),
            truth.aeration.dim()
        )));
    }
    let tol = 1e-9;
    let same = |a: &[f64], b: &[f64]| {
        a.len() == b.len() && a.iter().zip(b).all(|(u, v)| (u - v).abs() < tol)
    };
    if !same(&recon.grid.x, &truth.grid.x) || !same(&recon.grid.z, &truth.grid.z) {
        return Err(EvalFileError::Mismatch("the grids differ".into()));
    }
    let (n, nz, nx) = (rn, tz, tx);
    let all = Array2::from_elem((nz, nx), true);
    let failed: Vec<usize> = (0..n)
        .filter(|&i| {
            recon
                .mean
                .index_axis(ndarray::Axis(0), i)
                .iter()
                .any(|v| !v.is_finite())
        })
        .collect();
    let frames = (0..n)
        .filter(|i| !failed.contains(i))
        .map(|i| {
            let mask = match &truth.lung_mask {
                Some(m) => m.index_axis(ndarray::Axis(0), i).to_owned(),
                None => all.clone(),
            };
            super::evaluate_frame(
                i,
                &super::FrameInput {
                    truth: truth.aeration.index_axis(ndarray::Axis(0), i),
                    recon: recon.mean.index_axis(ndarray::Axis(0), i),
                    lung_mask: mask.view(),
                    recon_std: recon
                        .std
                        .as_ref()
                        .map(|s| s.index_axis(ndarray::Axis(0), i)),
                    mean_ci: recon.aeration_ci.as_ref().map(|c| [c[[i, 0]], c[[i, 1]]]),
                    published_aeration: recon.aeration.as_ref().map(|v| v[i]),
                    nfe: recon.nfe.as_ref().map(|v| v[i]),
                    latency_ms: recon.latency_ms.as_ref().map(|v| v[i]),
                },
            )
        })
        .collect();
    let mut summary = super::summarize(frames);
    summary.failed_frames = failed;
    Ok(summary)
}
