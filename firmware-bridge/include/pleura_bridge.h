/*
 * pleura_bridge.h: the C interface of the pleura scanner bridge (libpleura_bridge).
 *
 * Publishes scan parameters and RF frames to a `pleura serve` daemon over ZeroMQ, speaking
 * the wire protocol of docs/protocol.md (CRC32C, optional HMAC-SHA256 signing, random
 * stream id per handle, scan parameters repeated every second while frames flow).
 * No ZeroMQ or async runtime knowledge is needed: each handle owns its I/O thread.
 *
 * Every function returning int returns a status code: PLEURA_OK (0) or a PLEURA_ERR_*
 * value; pleura_bridge_status_message() names it and pleura_bridge_last_error() gives
 * the detailed message of the last failure on the calling thread.
 * A handle must not be used from two threads at the same time.
 *
 * Hand-kept in sync with firmware-bridge/src/ffi.rs; tests/c/stream_frames.c compiles
 * against it in the test suite.
 */
#ifndef PLEURA_BRIDGE_H
#define PLEURA_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. */
#define PLEURA_OK 0
#define PLEURA_ERR_ARGUMENT 1 /* NULL pointer, bad mode/dtype, inconsistent field */
#define PLEURA_ERR_ENDPOINT 2 /* cannot bind or connect the endpoint */
#define PLEURA_ERR_KEY 3      /* key file unreadable, not hex, or shorter than 32 bytes */
#define PLEURA_ERR_TIMEOUT 4  /* connect or wait_for_subscriber timed out */
#define PLEURA_ERR_NO_SCAN 5  /* a frame before any pleura_bridge_publish_scan */
#define PLEURA_ERR_PAYLOAD 6  /* payload length != product(shape) * dtype size */
#define PLEURA_ERR_SEND 7     /* the socket refused the message */
#define PLEURA_ERR_RUNTIME 8  /* the I/O thread could not start */
#define PLEURA_ERR_INTERNAL 9 /* a bug in the library */
#define PLEURA_ERR_EPOCHS 10  /* the handle announced 2^32 scans (epochs): open a new one */

/* Endpoint modes. */
#define PLEURA_BIND 0
#define PLEURA_CONNECT 1

/* Payload element types (little-endian). */
#define PLEURA_INT16 1
#define PLEURA_FLOAT32 2

/* Opaque publisher handle. */
typedef struct pleura_bridge pleura_bridge;

/* One scan-parameter field: float64 values, C order, named as in docs/protocol.md
 * ("probe_geometry", "t0_delays", ...). ndim 0 is a scalar (one value, dims may be NULL). */
typedef struct pleura_scan_field {
    const char *name;
    uint32_t ndim;
    const uint32_t *dims;
    const double *values;
} pleura_scan_field;

/* Opens a PUB socket on `endpoint` (e.g. "tcp://127.0.0.1:5555"), binding (PLEURA_BIND;
 * port 0 picks a free port) or connecting (PLEURA_CONNECT, waiting at most timeout_ms).
 * key_file: NULL for no authentication, else a file holding the pre-shared key in hex.
 * On success *out receives the handle; on failure *out is NULL. */
int pleura_bridge_open(const char *endpoint, int mode, const char *key_file, uint32_t timeout_ms,
                       pleura_bridge **out);

/* The endpoint with its port resolved; valid until pleura_bridge_close. */
const char *pleura_bridge_endpoint(const pleura_bridge *bridge);

/* Waits up to timeout_ms until a subscriber is connected (PUB sockets drop messages sent
 * while nobody subscribes); PLEURA_ERR_TIMEOUT if none came. */
int pleura_bridge_wait_for_subscriber(pleura_bridge *bridge, uint32_t timeout_ms);

/* Publishes the scan parameters under scan_id; frames refer to them by that id. Each call
 * is the handle's next scan epoch (docs/protocol.md): call it when the parameters change,
 * the handle repeats the last one by itself. */
int pleura_bridge_publish_scan(pleura_bridge *bridge, uint64_t scan_id, const pleura_scan_field *fields,
                               size_t n_fields);

/* Publishes one frame of samples (C order over shape = {n_tx, n_ax, n_el, n_ch}), copying
 * the len bytes at data. timestamp_ns: acquisition time in ns since the UNIX epoch, 0 for
 * now. Sequence numbers must increase within a handle. */
int pleura_bridge_publish_frame(pleura_bridge *bridge, uint64_t scan_id, uint64_t sequence,
                                uint64_t timestamp_ns, int dtype, const uint32_t shape[4], const void *data,
                                size_t len);

/* Zero-copy variant: the library reads data while sending and calls release(data, ctx)
 * exactly once when done with it (possibly from another thread, possibly before this
 * function returns, also on error). The buffer must stay valid and unmodified until then.
 * release may be NULL. */
int pleura_bridge_publish_frame_nocopy(pleura_bridge *bridge, uint64_t scan_id, uint64_t sequence,
                                       uint64_t timestamp_ns, int dtype, const uint32_t shape[4],
                                       const void *data, size_t len,
                                       void (*release)(const void *data, void *ctx), void *ctx);

/* Closes the socket and frees the handle (NULL is ignored). */
void pleura_bridge_close(pleura_bridge *bridge);

/* A static description of a status code. */
const char *pleura_bridge_status_message(int status);

/* The detailed message of the last failure on this thread ("" if none). */
const char *pleura_bridge_last_error(void);

/* Now, in ns since the UNIX epoch. */
uint64_t pleura_bridge_now_ns(void);

#ifdef __cplusplus
}
#endif

#endif /* PLEURA_BRIDGE_H */
