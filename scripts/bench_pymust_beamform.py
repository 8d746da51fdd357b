"""PyMUST side of `pleura bench beamform`: time rf2iq, dasmtx (sparse DAS matrix build)
and its application to every frame of a zea recording, and print the timings as JSON.

usage: bench_pymust_beamform.py FILE.h5 XMIN XMAX NX ZMIN ZMAX NZ FNUMBER [N_FRAMES] [--out OUT.h5]

With --out, the envelopes of all frames and their B-mode (60 dB, normalised to the maximum
of all frames) are written to OUT.h5 (datasets envelope, bmode, grid_x, grid_z): the bench
times this whole process (start, imports, read, rf2iq, dasmtx, apply, write) beside the
`pleura beamform` process doing the same.

Per transmit k: param.TXdelay = scan/t0_delays[k], param.t0 = scan/initial_times[k];
the I/Q of transmit k is rf2iq(RF_k, param) and the compound image is sum_k M_k @ IQ_k,
with M_k = dasmtx(1j * [n_ax, n_el], x, z, param, 'linear').
"""

import json
import sys
import time

import h5py
import numpy as np
import pymust


def main():
    argv = sys.argv[1:]
    out_path = None
    if "--out" in argv:
        i = argv.index("--out")
        out_path = argv[i + 1]
        del argv[i : i + 2]
    path = argv[0]
    xmin, xmax, nx, zmin, zmax, nz, fnum = map(float, argv[1:8])
    with h5py.File(path, "r") as f:
        raw = f["data/raw_data"]
        n_frames = int(argv[8]) if len(argv) > 8 else raw.shape[0]
        rf = raw[:n_frames].astype(np.float64)
        s = f["scan"]
        fs = float(s["sampling_frequency"][()])
        fc = float(s["center_frequency"][()])
        c = float(s["sound_speed"][()])
        pg = s["probe_geometry"][()]
        t0_delays = s["t0_delays"][()]
        initial_times = s["initial_times"][()]
        bw = s.attrs.get("fractional_bandwidth_percent", None)
    n_tx, n_ax, n_el = rf.shape[1], rf.shape[2], rf.shape[3]
    x, z = np.meshgrid(np.linspace(xmin, xmax, int(nx)), np.linspace(zmin, zmax, int(nz)))

    def param_for(k):
        p = pymust.utils.Param()
        p.fs, p.fc, p.c = fs, fc, c
        p.pitch = float(abs(pg[-1, 0] - pg[0, 0]) / (n_el - 1))
        p.Nelements = n_el
        p.fnumber = fnum
        p.t0 = np.array([float(initial_times[k])])
        p.TXdelay = t0_delays[k].reshape(1, -1)
        if bw is not None:
            p.bandwidth = float(bw)
        return p

    t = time.perf_counter()
    iq = np.empty((n_frames, n_tx, n_ax, n_el), dtype=np.complex128)
    for i in range(n_frames):
        for k in range(n_tx):
            iq[i, k] = pymust.rf2iq(rf[i, k, :, :, 0], param_for(k))
    t_rf2iq = time.perf_counter() - t

    t = time.perf_counter()
    mats = [pymust.dasmtx(1j * np.array([n_ax, n_el]), x, z, param_for(k), "linear").tocsr() for k in range(n_tx)]
    t_build = time.perf_counter() - t

    t = time.perf_counter()
    out = None
    envelopes = [] if out_path else None
    for i in range(n_frames):
        img = sum(mats[k] @ iq[i, k].flatten(order="F") for k in range(n_tx))
        out = np.abs(img)
        if envelopes is not None:
            envelopes.append(out.reshape(x.shape, order="F"))
    t_apply = time.perf_counter() - t
    assert out is not None and np.isfinite(out).all()

    if out_path:
        env = np.stack(envelopes).astype(np.float32)
        with np.errstate(divide="ignore"):
            db = 20 * np.log10(env / env.max()) + 60.0
        bmode = np.clip(255 * db / 60.0, 0, 255).astype(np.uint8)
        with h5py.File(out_path, "w") as f:
            f["envelope"] = env
            f["bmode"] = bmode
            f["grid_x"] = x[0]
            f["grid_z"] = z[:, 0]

    print(json.dumps({
        "frames": n_frames,
        "rf2iq_s": t_rf2iq,
        "build_s": t_build,
        "apply_s": t_apply,
        "nnz": int(sum(m.nnz for m in mats)),
    }))


if __name__ == "__main__":
    main()
