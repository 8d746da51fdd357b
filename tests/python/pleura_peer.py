# An independent Python implementation of the pleura wire protocol (docs/protocol.md),
# written from the document, used by the integration tests as a scanner and as a consumer.
# Needs numpy, h5py and pyzmq; CRC32C and HMAC-SHA256 are computed here, not by pleura.
import hashlib
import hmac
import json
import struct
import sys
import time
import urllib.request

import numpy as np

MAGIC = b"PLRA"
VERSION = 2
SCAN, FRAME, RESULT, STATUS = 1, 2, 3, 4
SIGNED = 1
DTYPES = {1: np.dtype("<i2"), 2: np.dtype("<f4"), 3: np.dtype("<f8"), 4: np.dtype("u1")}
DTYPE_CODES = {np.dtype("<i2"): 1, np.dtype("<f4"): 2, np.dtype("<f8"): 3, np.dtype("u1"): 4}


def _crc32c_table():
    poly = 0x82F63B78  # reflected Castagnoli polynomial
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    t = _TABLE
    for b in bytes(data):
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4


def prefix(kind, flags=0, version=VERSION):
    return struct.pack("<4sHHII", MAGIC, version, kind, flags, 0)


def sign(parts, key):
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for p in parts:
        mac.update(struct.pack("<I", len(p)))
        mac.update(p)
    return mac.digest()


def finish(parts, key):
    return parts + [sign(parts, key)] if key is not None else parts


def field(name, array):
    a = np.ascontiguousarray(array)
    code = DTYPE_CODES[a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype]
    nb = name.encode("ascii")
    return (struct.pack("<B", len(nb)) + nb + struct.pack("<BB", code, a.ndim)
            + struct.pack("<%dI" % a.ndim, *a.shape) + a.tobytes())


def parse_field(buf, pos=0):
    n = buf[pos]
    name = buf[pos + 1:pos + 1 + n].decode("ascii")
    pos += 1 + n
    code, ndim = buf[pos], buf[pos + 1]
    pos += 2
    shape = struct.unpack_from("<%dI" % ndim, buf, pos)
    pos += 4 * ndim
    dt = DTYPES[code]
    count = int(np.prod(shape)) if ndim else 1
    data = np.frombuffer(buf, dt, count, pos).reshape(shape)
    return name, data, pos + count * dt.itemsize


def scan_fields_from_zea(path):
    """The scan fields of a zea file (0.1.x track 0, or legacy), as float64 arrays, named as
    on the wire."""
    import h5py
    with h5py.File(path, "r") as f:
        current = "tracks" in f
        s = f["tracks/track_0/scan"] if current else f["scan"]
        raw = (f["tracks/track_0/data/raw_data"] if current else f["data/raw_data"])[()]
        out = {}
        for name in ["probe_geometry", "sampling_frequency", "center_frequency",
                     "demodulation_frequency", "sound_speed", "n_ax", "n_ch", "initial_times",
                     "t0_delays", "tx_apodizations", "polar_angles", "azimuth_angles",
                     "focus_distances", "transmit_origins", "element_width",
                     "time_to_next_transmit"]:
            if name in s:
                out[name] = np.asarray(s[name][()], dtype="<f8")
            elif current and name in f["probe"]:
                out[name] = np.asarray(f["probe"][name][()], dtype="<f8")
        if current:
            out["n_ax"] = np.asarray(raw.shape[2], "<f8")
            out["n_ch"] = np.asarray(raw.shape[4], "<f8")
            if "probe_bandwidth_percent" in f["probe"]:
                out["fractional_bandwidth"] = np.asarray(f["probe/probe_bandwidth_percent"][()] / 100.0, "<f8")
        elif "fractional_bandwidth_percent" in s.attrs:
            out["fractional_bandwidth"] = np.asarray(s.attrs["fractional_bandwidth_percent"] / 100.0, "<f8")
    return out, raw


def scan_message(stream_id, scan_id, fields, key=None, drop=(), epoch=0):
    body = b"".join(field(n, a) for n, a in fields.items() if n not in drop)
    h = prefix(SCAN, SIGNED if key else 0) + struct.pack("<QQQII", stream_id, scan_id, len(body), crc32c(body), epoch)
    return finish([h, body], key)


def frame_message(stream_id, scan_id, seq, frame, key=None, ts_ns=None, version=VERSION,
                  shape=None, crc=None, payload=None):
    a = np.ascontiguousarray(frame)
    data = a.tobytes() if payload is None else payload
    shp = a.shape if shape is None else shape
    ts = time.time_ns() if ts_ns is None else ts_ns
    c = crc32c(data) if crc is None else crc
    h = (prefix(FRAME, SIGNED if key else 0, version)
         + struct.pack("<QQQQQ4IB3xI", stream_id, scan_id, seq, ts, a.nbytes if shape is None else
                       int(np.prod(shp)) * a.dtype.itemsize, *shp, DTYPE_CODES[a.dtype], c))
    assert len(h) == 80
    return finish([h, data], key)


def parse(parts, key=None):
    """Decodes a result or status message (checks the tag when a key is given)."""
    h = parts[0]
    magic, version, kind, flags, _ = struct.unpack_from("<4sHHII", h)
    assert magic == MAGIC and version == VERSION, (magic, version)
    if flags & SIGNED:
        assert key is not None and hmac.compare_digest(sign(parts[:-1], key), parts[-1])
        parts = parts[:-1]
    else:
        assert key is None, "unsigned message while a key is configured"
    if kind == RESULT:
        stream_id, scan_id, seq, ts, pub, lat, n = struct.unpack_from("<QQQQQQI", h, 16)
        fields = {}
        for p in parts[1:]:
            name, data, used = parse_field(p)
            assert used == len(p)
            fields[name] = data
        assert len(fields) == n
        return {"kind": "result", "stream_id": stream_id, "scan_id": scan_id, "sequence": seq, "timestamp_ns": ts,
                "published_ns": pub, "latency_ns": lat, "fields": fields}
    if kind == STATUS:
        pub, n = struct.unpack_from("<QQ", h, 16)
        assert len(parts[1]) == n
        return {"kind": "status", "published_ns": pub, "status": json.loads(parts[1])}
    raise AssertionError("unexpected kind %d" % kind)


def metrics(admin):
    text = urllib.request.urlopen("http://%s/metrics" % admin, timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def wait_metric(admin, name, at_least, timeout=20.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        m = metrics(admin)
        if m.get(name, 0) >= at_least:
            return m
        time.sleep(0.02)
    raise AssertionError("%s did not reach %s: %s" % (name, at_least, metrics(admin)))
