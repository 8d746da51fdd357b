//! `pleura info`: validate a recording and summarise it.

use std::path::PathBuf;

use anyhow::Context;
use pleura::recording::{Layout, Recording, SampleType, TrackChoice, TrackInfo, TransmitKind};
use serde::Serialize;

/// Arguments of `pleura info`.
#[derive(clap::Args)]
pub struct Args {
    /// The recording (zea HDF5 layout).
    pub file: PathBuf,
    /// Print JSON instead of a human summary.
    #[arg(long)]
    pub json: bool,
    /// The track to summarise in a multi-track zea file: its index or label (default: the
    /// first with channel data). Every track is listed either way.
    #[arg(long)]
    pub track: Option<TrackChoice>,
}

#[derive(Serialize)]
struct Transmit {
    kind: &'static str,
    polar_angle_deg: f64,
    azimuth_angle_deg: f64,
    /// None for a plane wave (infinite focus).
    focus_distance_m: Option<f64>,
}

#[derive(Serialize)]
struct GroundTruthInfo {
    nx: usize,
    nz: usize,
    x_range_m: [f64; 2],
    z_range_m: [f64; 2],
}

#[derive(Serialize)]
struct Summary {
    file: PathBuf,
    size_bytes: u64,
    /// "zea" (0.1.x) or "legacy" (< 0.1.0).
    layout: Layout,
    /// Every acquisition track of the file, and the index of the one summarised.
    tracks: Vec<TrackInfo>,
    track: usize,
    probe_name: String,
    us_machine: String,
    description: String,
    n_elements: usize,
    pitch_m: f64,
    element_width_m: Option<f64>,
    sampling_frequency_hz: f64,
    center_frequency_hz: f64,
    demodulation_frequency_hz: f64,
    fractional_bandwidth: Option<f64>,
    sound_speed_m_s: f64,
    n_ax: usize,
    n_ch: usize,
    signal: &'static str,
    /// The recorded time-gain compensation's range, dB (first and last sample), when the
    /// file gives one.
    tgc_db: Option<[f64; 2]>,
    /// Depth span of the recorded samples for the first transmit (two-way travel), m.
    depth_range_m: [f64; 2],
    transmits: Vec<Transmit>,
    n_frames: usize,
    duration_s: f64,
    frame_rate_hz: Option<f64>,
    sample_type: SampleType,
    ground_truth: Option<GroundTruthInfo>,
    /// False when the writer was killed before closing the file.
    writer_closed: bool,
}

fn kind_name(kind: TransmitKind) -> &'static str {
    match kind {
        TransmitKind::Plane => "plane",
        TransmitKind::Focused => "focused",
        TransmitKind::Diverging => "diverging",
    }
}

fn summarise(rec: &Recording) -> anyhow::Result<Summary> {
    let scan = rec.scan();
    let size_bytes = std::fs::metadata(rec.path())
        .with_context(|| format!("reading the size of {}", rec.path().display()))?
        .len();
    let transmits = (0..scan.n_tx())
        .map(|t| Transmit {
            kind: kind_name(scan.transmit_kind(t)),
            polar_angle_deg: scan.polar_angles[t].to_degrees(),
            azimuth_angle_deg: scan.azimuth_angles[t].to_degrees(),
            focus_distance_m: Some(scan.focus_distances[t]).filter(|f| f.is_finite()),
        })
        .collect();
    let t0 = scan.initial_times[0];
    let t1 = t0 + scan.n_ax as f64 / scan.sampling_frequency;
    let duration_s = rec.duration_s();
    Ok(Summary {
        file: rec.path().to_path_buf(),
        size_bytes,
        layout: rec.layout(),
        tracks: rec.tracks().to_vec(),
        track: rec.track().index,
        probe_name: rec.probe_name().to_string(),
        us_machine: rec.us_machine().to_string(),
        description: rec.description().to_string(),
        n_elements: scan.n_el(),
        pitch_m: scan.pitch(),
        element_width_m: scan.element_width,
        sampling_frequency_hz: scan.sampling_frequency,
        center_frequency_hz: scan.center_frequency,
        demodulation_frequency_hz: scan.demodulation_frequency,
        fractional_bandwidth: scan.fractional_bandwidth,
        sound_speed_m_s: scan.sound_speed,
        n_ax: scan.n_ax,
        n_ch: scan.n_ch,
        signal: if scan.n_ch == 2 { "I/Q" } else { "RF" },
        tgc_db: scan.tgc_db_range(),
        depth_range_m: [t0 * scan.sound_speed / 2.0, t1 * scan.sound_speed / 2.0],
        transmits,
        n_frames: rec.n_frames(),
        duration_s,
        frame_rate_hz: (duration_s > 0.0).then(|| rec.n_frames() as f64 / duration_s),
        sample_type: rec.sample_type(),
        ground_truth: rec.ground_truth_grid().map(|(x, z)| GroundTruthInfo {
            nx: x.len(),
            nz: z.len(),
            x_range_m: [x[0], x[x.len() - 1]],
            z_range_m: [z[0], z[z.len() - 1]],
        }),
        writer_closed: rec.writer_closed(),
    })
}

fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

fn print_human(s: &Summary) {
    println!(
        "file:          {} ({})",
        s.file.display(),
        human_size(s.size_bytes)
    );
    println!(
        "layout:        {}",
        match s.layout {
            Layout::Zea => "zea 0.1.x (tracks/)",
            Layout::Legacy => "zea legacy (< 0.1.0)",
        }
    );
    if s.tracks.len() > 1 {
        println!(
            "tracks:        {} (summarised: {})",
            s.tracks.len(),
            s.track
        );
        for t in &s.tracks {
            let shape = t
                .raw_shape
                .as_ref()
                .map(|d| format!("raw_data {d:?}"))
                .unwrap_or_else(|| "no channel data".into());
            println!(
                "  {:>3}: {:<16} {shape}",
                t.index,
                t.label.as_deref().unwrap_or("(no label)")
            );
        }
    }
    println!("probe:         {} on {}", s.probe_name, s.us_machine);
    if !s.description.is_empty() {
        println!("description:   {}", s.description);
    }
    let width = s
        .element_width_m
        .map(|w| format!(", element width {:.3} mm", w * 1e3))
        .unwrap_or_default();
    println!(
        "elements:      {}, pitch {:.3} mm{width}",
        s.n_elements,
        s.pitch_m * 1e3
    );
    let bandwidth = s
        .fractional_bandwidth
        .map(|b| format!(", bandwidth {:.0} %", b * 100.0))
        .unwrap_or_default();
    println!(
        "frequencies:   centre {:.3} MHz, sampling {:.3} MHz, demodulation {:.3} MHz{bandwidth}",
        s.center_frequency_hz / 1e6,
        s.sampling_frequency_hz / 1e6,
        s.demodulation_frequency_hz / 1e6
    );
    println!("sound speed:   {} m/s", s.sound_speed_m_s);
    println!(
        "samples:       {} per channel, {} ({}), depth {:.1}-{:.1} mm",
        s.n_ax,
        s.signal,
        s.sample_type.name(),
        s.depth_range_m[0] * 1e3,
        s.depth_range_m[1] * 1e3
    );
    if let Some([first, last]) = s.tgc_db {
        println!("TGC:           {first:.1} dB at the first sample, {last:.1} dB at the last (divided out before reconstruction)");
    }
    println!("transmits:     {}", s.transmits.len());
    for (i, t) in s.transmits.iter().enumerate() {
        let focus = t
            .focus_distance_m
            .map(|f| format!(", focus {:.1} mm", f * 1e3))
            .unwrap_or_default();
        println!(
            "  {i:>3}: {:<9} {:>7.2} deg{focus}",
            t.kind, t.polar_angle_deg
        );
    }
    let rate = s
        .frame_rate_hz
        .map(|r| format!(" ({r:.1} frames/s)"))
        .unwrap_or_default();
    println!(
        "frames:        {}, duration {:.6} s{rate}",
        s.n_frames, s.duration_s
    );
    match &s.ground_truth {
        None => println!("ground truth:  none"),
        Some(g) => println!(
            "ground truth:  aeration {} x {} (z x x), x {:.1}..{:.1} mm, z {:.1}..{:.1} mm",
            g.nz,
            g.nx,
            g.x_range_m[0] * 1e3,
            g.x_range_m[1] * 1e3,
            g.z_range_m[0] * 1e3,
            g.z_range_m[1] * 1e3
        ),
    }
    if !s.writer_closed {
        println!("note:          the writer did not close this file (killed?); frames up to its last flush are shown");
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let rec = Recording::open_track(&args.file, args.track.as_ref())
        .with_context(|| format!("{} is not a valid recording", args.file.display()))?;
    let summary = summarise(&rec)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_human(&summary);
    }
    Ok(())
}
