//! Writes the first frames of a recording into a new one with pleura's own recorder.
//! Used by `scripts/make-testdata.sh` to make `testdata/pwi_disk_4frames.zea.h5`.
//!
//! Usage: make_testdata SOURCE.h5 DEST.h5 N_FRAMES

use std::error::Error;
use std::time::Duration;

use pleura::recording::{Compression, Layout, Recorder, RecorderOptions, Recording};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, source, dest, n] = &args[..] else {
        return Err("usage: make_testdata SOURCE.h5 DEST.h5 N_FRAMES".into());
    };
    let n: usize = n.parse().map_err(|e| format!("N_FRAMES {n:?}: {e}"))?;
    let rec = Recording::open(source)?;
    if n == 0 || n > rec.n_frames() {
        return Err(format!("N_FRAMES must be 1 to {}, not {n}", rec.n_frames()).into());
    }
    let options = RecorderOptions {
        sample_type: rec.sample_type(),
        flush_every: Duration::from_secs(1),
        compression: Compression::Deflate(9),
        // The bundled copy stays in the legacy layout: the tests read both layouts.
        layout: Layout::Legacy,
        probe_name: rec.probe_name().to_string(),
        us_machine: rec.us_machine().to_string(),
        description: format!("First {n} frames of: {}", rec.description()),
        ground_truth_grid: None,
    };
    let mut out = Recorder::create(dest, rec.scan(), options)?;
    for frame in rec.frames().take(n) {
        out.append(&frame?)?;
    }
    let written = out.finish()?;
    println!("wrote {written} frames to {dest}");
    Ok(())
}
