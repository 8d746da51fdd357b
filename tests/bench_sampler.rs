//! `pleura bench sampler` end to end on the CPU at a tiny size: both tables have one row
//! per (K) and per (method, K), with finite positive figures.

use std::process::Command;

/// The rows of the markdown table whose header starts with `header`, split into cells.
fn table(out: &str, header: &str) -> Vec<Vec<String>> {
    let lines: Vec<&str> = out.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(header))
        .unwrap_or_else(|| panic!("no table starting {header:?} in:\n{out}"));
    lines[start + 2..]
        .iter()
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

fn positive(cell: &str, what: &str) -> f64 {
    let v: f64 = cell
        .parse()
        .unwrap_or_else(|_| panic!("{what}: {cell:?} is not a number"));
    assert!(v.is_finite() && v > 0.0, "{what}: {v}");
    v
}

#[test]
fn bench_sampler_prints_both_tables_on_the_cpu() {
    let out = Command::new(env!("CARGO_BIN_EXE_pleura"))
        .args([
            "bench",
            "sampler",
            "--device",
            "cpu",
            "--sizes",
            "16",
            "--samples",
            "1,2",
            "--methods",
            "dps,dds",
            "--steps",
            "2",
            "--frames",
            "2",
            "--repeats",
            "1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let steps = table(&stdout, "| size | grid pitch mm |");
    assert_eq!(steps.len(), 2, "{stdout}");
    for (row, k) in steps.iter().zip(["1", "2"]) {
        assert_eq!(row[0], "16");
        // 19.2 mm field of view over 16 pixels.
        assert!((positive(&row[1], "pitch") - 1.2).abs() < 1e-9);
        positive(&row[2], "params");
        positive(&row[3], "GFLOP");
        assert_eq!(row[4], k);
        assert_eq!(row[5], "f32");
        for (i, what) in [
            (6, "fwd"),
            (7, "GFLOP/s"),
            (8, "fwd+bwd"),
            (9, "dps step"),
            (11, "dds step"),
        ] {
            positive(&row[i], what);
        }
        assert_eq!(row[10], "-", "ddim-dps was not asked for");
        // bf16 forward: a time, or the reason it cannot run.
        assert!(
            row[12].parse::<f64>().is_ok_and(|v| v > 0.0) || row[12].starts_with("unsupported"),
            "{}",
            row[12]
        );
    }

    let frames = table(&stdout, "| size | method | K |");
    let keys: Vec<(String, String)> = frames
        .iter()
        .map(|r| (r[1].clone(), r[2].clone()))
        .collect();
    let expected: Vec<(String, String)> = [("dps", "1"), ("dps", "2"), ("dds", "1"), ("dds", "2")]
        .iter()
        .map(|(m, k)| (m.to_string(), k.to_string()))
        .collect();
    assert_eq!(keys, expected, "{stdout}");
    for r in &frames {
        assert_eq!(r[0], "16");
        assert_eq!(r[3], "2");
        assert_eq!(r[4], "2");
        // Frame 0 cold (2 steps), frame 1 warm (ceil(0.3 * 2) = 1 step), unless a frame
        // restarted after a divergence, which adds steps.
        assert!(positive(&r[5], "NFE") >= 1.5, "{r:?}");
        let failed: usize = r[6].parse().unwrap();
        assert!(failed < 2, "{r:?}");
        let p50 = positive(&r[7], "p50");
        let p99 = positive(&r[8], "p99");
        assert!(p99 >= p50, "{r:?}");
        let fps = positive(&r[9], "frames/s");
        // Two frames: the median is their mean latency, and frames/s its inverse (the
        // loop adds next to nothing); both are printed rounded to 0.01.
        let expected = 1e3 / p50;
        assert!((fps - expected).abs() <= 0.02 * expected + 0.006, "{r:?}");
        positive(&r[10], "operator build");
    }
}
