"""The real zea package as a test peer of pleura (tests/zea.rs), run with `.venv-zea`.

    zea_peer.py write SRC OUT_DIR
        Writes SRC (a legacy-layout recording, read with h5py) again with zea's own
        `zea.File.create`: `single-{blosc,lzf,gzip}.hdf5` (one track, zea's default Blosc
        compression, LZF, gzip) and `multi.hdf5` (two tracks interleaved by a
        `track_schedule`: "all-angles" with every transmit and "zero-angle" with the middle
        one). Prints JSON: each track's frame start times as zea computes them, in ns.
    zea_peer.py check FILE...
        Opens each FILE as zea does (`validate_file`, `zea.File`, `File.validate_spec`) and
        prints JSON per file: whether each step passed, the warnings zea logged, and what
        zea reads (frames, raw data checksum, image shape, custom groups, and for a
        one-track file its scan's TGC curve: length, first and last value).
"""

import json
import logging
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import h5py  # noqa: E402
import numpy as np  # noqa: E402


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def read_legacy(path):
    with h5py.File(path, "r") as f:
        s = f["scan"]
        scan = {
            name: s[name][()]
            for name in [
                "sampling_frequency", "center_frequency", "demodulation_frequency",
                "initial_times", "t0_delays", "tx_apodizations", "focus_distances",
                "transmit_origins", "polar_angles", "azimuth_angles", "sound_speed",
                "time_to_next_transmit",
            ]
        }
        probe = {
            "name": f.attrs["probe_name"],
            "type": "linear",
            "probe_geometry": s["probe_geometry"][()],
            "element_width": s["element_width"][()],
            "probe_bandwidth_percent": s.attrs["fractional_bandwidth_percent"],
        }
        return f["data/raw_data"][()], scan, probe


def write(src, out):
    from zea import File

    raw, scan, probe = read_legacy(src)
    for name, compression in [("blosc", None), ("lzf", "lzf"), ("gzip", "gzip")]:
        kwargs = {} if compression is None else {"compression": compression}
        File.create(
            os.path.join(out, f"single-{name}.hdf5"),
            data={"raw_data": raw},
            scan=scan,
            probe=probe,
            us_machine="zea peer",
            description=f"pleura's lung sequence written by zea.File.create ({name})",
            overwrite=True,
            warn_missing_optional_fields=False,
            **kwargs,
        )
    n_frames, n_tx = raw.shape[:2]
    mid = n_tx // 2
    single = {
        k: (v[mid:mid + 1] if k in ("initial_times", "t0_delays", "tx_apodizations",
                                    "focus_distances", "transmit_origins", "polar_angles",
                                    "azimuth_angles") else v)
        for k, v in scan.items()
    }
    # Interleaved acquisition: each frame fires the three angles, then one more 0 degree
    # transmit of the second track, 40 us apart.
    single["time_to_next_transmit"] = np.full((n_frames, 1), 40e-6)
    scan = dict(scan, time_to_next_transmit=np.full((n_frames, n_tx), 40e-6))
    schedule = np.array(([0] * n_tx + [1]) * n_frames, np.int32)
    path = os.path.join(out, "multi.hdf5")
    File.create(
        path,
        tracks=[
            {"label": "all-angles", "data": {"raw_data": raw}, "scan": scan},
            {"label": "zero-angle", "data": {"raw_data": raw[:, mid:mid + 1]}, "scan": single},
        ],
        track_schedule=schedule,
        probe=probe,
        us_machine="zea peer",
        overwrite=True,
        warn_missing_optional_fields=False,
    )
    with File(path) as f:
        starts = {
            t.label: [int(round(v * 1e9)) for v in t.timestamps[:, 0]] for t in f.tracks
        }
    print(json.dumps(starts))


def check(path):
    handler = Collect()
    logger = logging.getLogger("zea")
    logger.addHandler(handler)
    try:
        return check_with(path, handler)
    finally:
        logger.removeHandler(handler)


def check_with(path, handler):
    from zea import File
    from zea.data.file import validate_file

    out = {"file": path}
    try:
        validate_file(path)
        out["validate_file"] = "ok"
    except Exception as e:  # noqa: BLE001 - the test reports what zea said
        out["validate_file"] = f"{type(e).__name__}: {e}"
        out["warnings"] = list(handler.messages)
        return out
    with File(path) as f:
        try:
            f.validate_spec()
            out["validate_spec"] = "ok"
        except Exception as e:  # noqa: BLE001
            out["validate_spec"] = f"{type(e).__name__}: {e}"
        tracks = f.tracks if "tracks" in f else []
        out["tracks"] = len(tracks)
        out["n_frames"] = int(tracks[0].n_frames if len(tracks) > 1 else f.n_frames)
        data = f["tracks/track_0/data"] if "tracks" in f else f["data"]
        if "raw_data" in data:
            raw = data["raw_data"][()]
            out["raw_shape"] = list(raw.shape)
            out["raw_sum"] = float(np.asarray(raw, np.float64).sum())
        if "image" in data:
            out["image_shape"] = list(data["image/values"].shape)
            out["image_dtype"] = str(data["image/values"].dtype)
            out["image_max"] = int(np.max(data["image/values"][()]))
            c = data["image/coordinates"][()]
            out["image_extent_m"] = [float(c[..., 0].min()), float(c[..., 0].max()),
                                     float(c[..., 2].min()), float(c[..., 2].max())]
        out["probe_name"] = f.probe_name if hasattr(f, "probe_name") else None
        if len(tracks) == 1 and "scan" in f["tracks/track_0"]:
            tgc = f.scan.tgc_gain_curve
            out["tgc"] = None if tgc is None else [len(tgc), float(tgc[0]), float(tgc[-1])]
    out["warnings"] = list(handler.messages)
    return out


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "write":
        write(*args)
    elif cmd == "check":
        print(json.dumps([check(p) for p in args]))
    else:
        sys.exit(f"unknown command {cmd}")
