#!/usr/bin/env python3
"""RF of pleura's phantoms made by another simulator: PyMUST's `simus`.

    scripts/simus_rf.py PHANTOM.h5 OUT.h5 [--per-pixel N] [--snr-db S|inf] [--seed S]
                        [--attenuation A] [--tgc-db-per-cm G]

PHANTOM.h5 is a `pleura simulate` recording (zea layout, one track, RF, the ground truth
under `pleura/`). OUT.h5 is a copy of it whose channel data
(`tracks/track_0/data/raw_data`) are replaced by simus's RF of the same aeration maps on
the same scan: probe geometry, element width, centre frequency, bandwidth, sampling
frequency, sound speed, transmit delays and apodizations, record start and length. Nothing
of pleura's forward model is used; the ground truth (`pleura/aeration`, `lung_mask`,
`mean_aeration`, grid) is kept, so `pleura info|replay|reconstruct-baseline|eval` read it
as they read the phantom file.

The medium (docs/BENCHMARKS.md, "Independent simulator: PyMUST simus"):
- Speckle: every pixel of the aeration map a (pitch d, centre (x, z)) holds N point
  scatterers (--per-pixel, default 4) at independent uniform positions in
  [x - d/2, x + d/2] x [z - d/2, z + d/2], each with reflection coefficient
  a * g / sqrt(N), g standard normal: zero mean, and per pixel the scatterers' summed
  variance is a^2. So the *amplitude* (standard deviation) of the local reflectivity
  follows the aeration, linearly, and the mean echo power of a pixel equals that of one
  scatterer of amplitude a. Pixels with a = 0 get no scatterers.
- Attenuation: --attenuation dB/cm/MHz (default 0.5; simus's PARAM.attenuation, its
  frequency-linear model).
- Pulse, gain and polarity: simus's own (PARAM.fc, PARAM.bandwidth from the scan; no
  rescaling, no sign change).
- Noise: white Gaussian noise added at --snr-db (default 20) = 10 log10(mean(rf^2) /
  sigma^2) over the frame, as `pleura simulate` defines its SNR; "inf" for none.
- TGC: --tgc-db-per-cm G (default 0, none) multiplies every sample, noise included (the
  scanner's amplifier follows its front end), by 10^(G d / 20), d the depth in cm of the
  sample's two-way travel time from the first transmit's record start, and writes that
  curve (float32) as `tracks/track_0/scan/tgc_gain_curve`, as `pleura simulate
  --tgc-db-per-cm` does. A curve the phantom file had is removed first.
Every draw comes from numpy's PCG64 seeded by (--seed, frame index), so a seed gives
the same file. Prints each frame's simus time.
"""

import argparse
import importlib.metadata
import os
import shutil
import sys
import time

import h5py
import numpy as np
import pymust

# Spectral components of the pulse-echo response kept by simus, dB below its peak (simus's
# default is -100; -60 is pfield's: the same RF to 1e-6 relative, 36 s of CPU a frame
# of 4096 pixels instead of 50).
DB_THRESH = -60


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("phantom", help="pleura simulate recording (zea layout, ground truth)")
    ap.add_argument("out", help="output recording")
    ap.add_argument("--per-pixel", type=int, default=4, help="scatterers per pixel (default 4)")
    ap.add_argument("--snr-db", default="20", help='channel SNR, dB, or "inf" (default 20)')
    ap.add_argument("--seed", type=int, default=0, help="seed of positions, reflectivities, noise")
    ap.add_argument("--attenuation", type=float, default=0.5, help="dB/cm/MHz (default 0.5)")
    ap.add_argument("--tgc-db-per-cm", type=float, default=0.0, help="scanner TGC, dB/cm (default 0)")
    a = ap.parse_args(argv)
    if not (np.isfinite(a.tgc_db_per_cm) and a.tgc_db_per_cm >= 0):
        ap.error(f"--tgc-db-per-cm must be finite and not negative, got {a.tgc_db_per_cm}")
    if a.per_pixel < 1:
        ap.error("--per-pixel must be at least 1")
    a.snr_db = None if a.snr_db.strip() == "inf" else float(a.snr_db)
    return a


def scan_of(f):
    """The scan of track 0 and the probe, as simus parameters per transmit."""
    s = f["tracks/track_0/scan"]
    geom = f["probe/probe_geometry"][()]
    xe = geom[:, 0]
    pitch = float(np.mean(np.diff(xe)))
    if not np.allclose(np.diff(xe), pitch, rtol=1e-6) or np.any(geom[:, 1:] != 0):
        sys.exit("simus_rf: the probe is not a uniform linear array on z = 0")
    width = float(f["probe/element_width"][()]) if "probe/element_width" in f else pitch
    p = pymust.utils.Param()
    p.fc = float(s["center_frequency"][()])
    p.bandwidth = float(f["probe/probe_bandwidth_percent"][()])
    p.Nelements = len(xe)
    p.pitch = pitch
    p.width = width
    p.kerf = pitch - width
    p.c = float(s["sound_speed"][()])
    p.fs = float(s["sampling_frequency"][()])
    p.radius = np.inf
    return p, s["t0_delays"][()], s["tx_apodizations"][()], s["initial_times"][()]


def scatterers(aeration, gx, gz, per_pixel, rng):
    """Speckle of one aeration map: positions (x, z) and reflection coefficients."""
    d = float(gx[1] - gx[0])
    iz, ix = np.nonzero(aeration > 0)
    a = np.repeat(aeration[iz, ix].astype(np.float64), per_pixel)
    x = np.repeat(gx[ix], per_pixel) + rng.uniform(-d / 2, d / 2, a.size)
    z = np.repeat(gz[iz], per_pixel) + rng.uniform(-d / 2, d / 2, a.size)
    rc = a * rng.standard_normal(a.size) / np.sqrt(per_pixel)
    return x, z, rc


def simulate_frame(p, delays, apods, t_init, n_ax, x, z, rc):
    """simus RF (n_tx, n_ax, n_el) of one scatterer set, sampled at t_init + n / fs."""
    opts = pymust.utils.Options()
    opts.ParPool = False
    opts.WaitBar = False
    opts.dBThresh = DB_THRESH
    out = np.zeros((len(delays), n_ax, p.Nelements), dtype=np.float64)
    for t, (dl, ap, t0) in enumerate(zip(delays, apods, t_init)):
        p.TXapodization = np.asarray(ap, dtype=float)
        rf, _ = pymust.simus(x, z, rc, np.asarray(dl, dtype=float).reshape(1, -1), p, opts)
        start = t0 * p.fs
        if abs(start - round(start)) > 1e-6:
            sys.exit(f"simus_rf: initial time {t0} s is not a whole number of samples")
        rf = rf[int(round(start)) :]
        n = min(n_ax, rf.shape[0])
        out[t, :n] = rf[:n]
    return out


def main(argv):
    a = parse_args(argv)
    if os.path.abspath(a.phantom) == os.path.abspath(a.out):
        sys.exit("simus_rf: the output must not be the phantom file")
    shutil.copyfile(a.phantom, a.out)
    with h5py.File(a.out, "r+") as f:
        p, delays, apods, t_init = scan_of(f)
        p.attenuation = a.attenuation
        raw = f["tracks/track_0/data/raw_data"]
        n_frames, n_tx, n_ax, n_el, n_ch = raw.shape
        if n_ch != 1:
            sys.exit("simus_rf: only RF recordings (one channel) are supported")
        truth = f["pleura/aeration"][()]
        gx, gz = f["pleura/grid_x"][()], f["pleura/grid_z"][()]
        data = np.zeros(raw.shape, dtype=np.float32)
        scan = f["tracks/track_0/scan"]
        if "tgc_gain_curve" in scan:
            del scan["tgc_gain_curve"]
        depth_cm = (t_init[0] + np.arange(n_ax) / p.fs) * p.c / 2 * 100
        tgc = (10 ** (a.tgc_db_per_cm * depth_cm / 20)).astype(np.float32)
        for i in range(n_frames):
            rng = np.random.default_rng([a.seed, i])
            x, z, rc = scatterers(truth[i], gx, gz, a.per_pixel, rng)
            t0 = time.perf_counter()
            rf = simulate_frame(p, delays, apods, t_init, n_ax, x, z, rc)
            secs = time.perf_counter() - t0
            if a.snr_db is not None:
                sigma = np.sqrt(np.mean(rf**2) / 10 ** (a.snr_db / 10))
                rf += sigma * rng.standard_normal(rf.shape)
            data[i, ..., 0] = rf * tgc[None, :, None]
            print(f"frame {i}: {x.size} scatterers, simus {secs:.1f} s, rf rms {np.sqrt(np.mean(rf**2)):.3e}")
        del f["tracks/track_0/data/raw_data"]
        f["tracks/track_0/data"].create_dataset(
            "raw_data", data=data, chunks=(1,) + data.shape[1:], compression="gzip", compression_opts=4
        )
        if a.tgc_db_per_cm > 0:
            scan.create_dataset("tgc_gain_curve", data=tgc)
        snr = "none" if a.snr_db is None else f"{a.snr_db:g} dB"
        f.attrs["us_machine"] = "PyMUST simus (scripts/simus_rf.py)"
        f.attrs["description"] = (
            f"Aeration maps of: {f.attrs['description']}. RF not pleura's: PyMUST "
            f"{importlib.metadata.version('pymust')} simus, {a.per_pixel} scatterers per pixel, "
            f"reflectivity std = aeration, attenuation {a.attenuation:g} dB/cm/MHz, "
            f"noise SNR {snr}, TGC {a.tgc_db_per_cm:g} dB/cm, seed {a.seed} (scripts/simus_rf.py)"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
