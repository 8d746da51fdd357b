/*
 * A scanner written in C against pleura_bridge.h: connects to a daemon, publishes the
 * parameters of a small synthetic linear array (one plane wave) and streams frames of
 * int16 RF, alternating the copying and the zero-copy calls.
 *
 * usage: stream_frames ENDPOINT N_FRAMES [KEY_FILE]
 * prints "published N released M" on success; exits 1 with the error otherwise.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pleura_bridge.h"

#define N_EL 32
#define N_AX 64
#define N_TX 1

static int released = 0;

static void on_release(const void *data, void *ctx) {
    (void)data;
    (*(int *)ctx)++;
}

static int check(int status, const char *what) {
    if (status != PLEURA_OK) {
        fprintf(stderr, "%s: %s (%d): %s\n", what, pleura_bridge_status_message(status), status,
                pleura_bridge_last_error());
        exit(1);
    }
    return status;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s ENDPOINT N_FRAMES [KEY_FILE]\n", argv[0]);
        return 2;
    }
    const char *endpoint = argv[1];
    int n_frames = atoi(argv[2]);
    const char *key_file = argc > 3 ? argv[3] : NULL;

    /* Errors come back as codes with a message. */
    pleura_bridge *bad = NULL;
    int status = pleura_bridge_open(endpoint, 7, NULL, 1000, &bad);
    if (status != PLEURA_ERR_ARGUMENT || bad != NULL || strstr(pleura_bridge_last_error(), "mode 7") == NULL) {
        fprintf(stderr, "bad mode not reported: %d %s\n", status, pleura_bridge_last_error());
        return 1;
    }

    pleura_bridge *bridge = NULL;
    check(pleura_bridge_open(endpoint, PLEURA_CONNECT, key_file, 10000, &bridge), "open");
    check(pleura_bridge_wait_for_subscriber(bridge, 10000), "wait_for_subscriber");

    /* Frames before any scan are refused locally. */
    static int16_t rf[N_TX * N_AX * N_EL];
    const uint32_t shape[4] = {N_TX, N_AX, N_EL, 1};
    if (pleura_bridge_publish_frame(bridge, 1, 0, 0, PLEURA_INT16, shape, rf, sizeof rf) != PLEURA_ERR_NO_SCAN) {
        fprintf(stderr, "frame before scan accepted\n");
        return 1;
    }

    /* A 32-element linear array, pitch 0.3 mm, centred on x = 0; one unsteered plane wave. */
    double geometry[N_EL * 3], t0[N_EL], apod[N_EL];
    for (int e = 0; e < N_EL; e++) {
        geometry[3 * e] = (e - (N_EL - 1) / 2.0) * 0.3e-3;
        geometry[3 * e + 1] = 0.0;
        geometry[3 * e + 2] = 0.0;
        t0[e] = 0.0;
        apod[e] = 1.0;
    }
    double fs = 20e6, fc = 5e6, fd = 0.0, c = 1540.0, n_ax = N_AX, n_ch = 1;
    double init_t = 1e-6, polar = 0.0, azimuth = 0.0, focus = INFINITY, origin[3] = {0, 0, 0};
    uint32_t d_geo[2] = {N_EL, 3}, d_tx[1] = {N_TX}, d_txel[2] = {N_TX, N_EL}, d_orig[2] = {N_TX, 3};
    pleura_scan_field fields[] = {
        {"probe_geometry", 2, d_geo, geometry},
        {"sampling_frequency", 0, NULL, &fs},
        {"center_frequency", 0, NULL, &fc},
        {"demodulation_frequency", 0, NULL, &fd},
        {"sound_speed", 0, NULL, &c},
        {"n_ax", 0, NULL, &n_ax},
        {"n_ch", 0, NULL, &n_ch},
        {"initial_times", 1, d_tx, &init_t},
        {"t0_delays", 2, d_txel, t0},
        {"tx_apodizations", 2, d_txel, apod},
        {"polar_angles", 1, d_tx, &polar},
        {"azimuth_angles", 1, d_tx, &azimuth},
        {"focus_distances", 1, d_tx, &focus},
        {"transmit_origins", 2, d_orig, origin},
    };
    check(pleura_bridge_publish_scan(bridge, 1, fields, sizeof fields / sizeof fields[0]), "publish_scan");

    /* A wrong payload length is refused locally. */
    if (pleura_bridge_publish_frame(bridge, 1, 0, 0, PLEURA_INT16, shape, rf, sizeof rf - 2) != PLEURA_ERR_PAYLOAD) {
        fprintf(stderr, "short payload accepted\n");
        return 1;
    }

    int16_t *buffers = malloc((size_t)n_frames * sizeof rf);
    if (buffers == NULL) return 1;
    for (int f = 0; f < n_frames; f++) {
        int16_t *frame = buffers + (size_t)f * N_TX * N_AX * N_EL;
        for (int i = 0; i < N_AX; i++)
            for (int e = 0; e < N_EL; e++)
                frame[i * N_EL + e] = (int16_t)(1000.0 * sin(0.5 * i + 0.1 * e + f));
        if (f % 2 == 0)
            check(pleura_bridge_publish_frame(bridge, 1, (uint64_t)f, pleura_bridge_now_ns(), PLEURA_INT16, shape,
                                              frame, sizeof rf),
                  "publish_frame");
        else
            check(pleura_bridge_publish_frame_nocopy(bridge, 1, (uint64_t)f, 0, PLEURA_INT16, shape, frame,
                                                     sizeof rf, on_release, &released),
                  "publish_frame_nocopy");
    }
    pleura_bridge_close(bridge);
    free(buffers);
    printf("published %d released %d\n", n_frames, released);
    return 0;
}
