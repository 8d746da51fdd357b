use candle_core::{Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::simulate::probe::{LinearProbe, Wave};

fn tiny() -> (LinearProbe, Grid) {
    let probe = LinearProbe {
        n_el: 16,
        ..LinearProbe::default_lung()
    };
    let grid = Grid::uniform(10, 12, 0.4e-3, 3e-3).expect("grid");
    (probe, grid)
}

fn random(n: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("a");
    let b = b.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("b");
    a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

fn check_adjoint(scan: &Scan, grid: &Grid, seed: u64) {
    let dev = Device::Cpu;
    let op = MeasurementOperator::new(scan, grid, OperatorOptions::default(), &dev).expect("op");
    let mut rng = StdRng::seed_from_u64(seed);
    let (nz, nx) = op.image_shape();
    let (t, a, e, c) = op.data_shape();
    let x = Tensor::from_vec(random(nz * nx, &mut rng), (nz, nx), &dev).expect("x");
    let y = Tensor::from_vec(random(t * a * e * c, &mut rng), (t, a, e, c), &dev).expect("y");
    let ax = op.forward(&x).expect("forward");
    // y = A x + random, scaled alike, so that <Ax, y> is far from zero.
    let ax_rms = (dot(&ax, &ax) / ax.elem_count() as f64).sqrt();
    assert!(ax_rms > 0.0, "A x is zero");
    let y = ((y * ax_rms).expect("scale") + &ax).expect("y");
    let aty = op.adjoint(&y).expect("adjoint");
    let (lhs, rhs) = (dot(&ax, &y), dot(&x, &aty));
    assert!(
        (lhs - rhs).abs() <= 1e-5 * lhs.abs(),
        "<Ax,y> = {lhs}, <x,A^T y> = {rhs}"
    );
}

#[test]
fn adjoint_identity_plane_focused_diverging_rf() {
    let (probe, grid) = tiny();
    let waves = [
        Wave::Plane(-12f64.to_radians()),
        Wave::Plane(7f64.to_radians()),
        Wave::Focused(1e-3, 5e-3),
        Wave::Diverging(-1e-3, -4e-3),
    ];
    for (i, w) in waves.iter().enumerate() {
        check_adjoint(&probe.scan(&[*w], &grid), &grid, i as u64);
    }
    check_adjoint(&probe.scan(&waves, &grid), &grid, 9);
}

#[test]
fn adjoint_identity_iq_with_offset_start() {
    let (probe, grid) = tiny();
    let mut scan = probe.scan(
        &[Wave::Plane(5f64.to_radians()), Wave::Focused(0.0, 6e-3)],
        &grid,
    );
    scan.n_ch = 2;
    scan.sampling_frequency = 5e6;
    scan.demodulation_frequency = 4.5e6;
    scan.n_ax /= 4;
    scan.initial_times = vec![2e-6, 1.5e-6];
    check_adjoint(&scan, &grid, 3);
}

#[test]
fn batched_forward_matches_single_and_autograd_gives_adjoint() {
    let (probe, grid) = tiny();
    let scan = probe.plane_wave_scan(&[-5.0, 5.0], &grid);
    let dev = Device::Cpu;
    let op = MeasurementOperator::new(&scan, &grid, OperatorOptions::default(), &dev).expect("op");
    let mut rng = StdRng::seed_from_u64(4);
    let (nz, nx) = op.image_shape();
    let xs = Tensor::from_vec(random(2 * nz * nx, &mut rng), (2, nz, nx), &dev).expect("x");
    let yb = op.forward(&xs).expect("batched");
    for i in 0..2 {
        let single = op.forward(&xs.get(i).expect("get")).expect("single");
        let diff = (yb.get(i).expect("get") - &single)
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|d| d.to_scalar::<f32>())
            .expect("diff");
        assert!(diff < 1e-5, "batch element {i} differs by {diff}");
    }
    // d/dx <A x, y> = A^T y.
    let (t, a, e, c) = op.data_shape();
    let y = Tensor::from_vec(random(t * a * e * c, &mut rng), (t, a, e, c), &dev).expect("y");
    let x = Var::from_tensor(&xs.get(0).expect("get")).expect("var");
    let loss = op
        .forward(x.as_tensor())
        .and_then(|ax| Ok((ax * &y)?.sum_all()?))
        .expect("loss");
    let grads = loss.backward().expect("backward");
    let g = grads.get(x.as_tensor()).expect("gradient of x");
    let aty = op.adjoint(&y).expect("adjoint");
    let err = (g - &aty)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("err");
    let scale = aty
        .abs()
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("scale");
    assert!(err <= 1e-5 * scale, "autograd {err} vs scale {scale}");
}

#[test]
fn single_pixel_echo_arrives_at_the_travel_time() {
    // Pixel on axis at depth z, 0 degree plane wave: echo on element e at (z + |p - e|)/c.
    let (probe, grid) = tiny();
    let scan = probe.plane_wave_scan(&[0.0], &grid);
    let op = MeasurementOperator::new(&scan, &grid, OperatorOptions::default(), &Device::Cpu)
        .expect("op");
    let mut x = Array2::<f32>::zeros(op.image_shape());
    let (iz, ix) = (6, 4);
    x[[iz, ix]] = 1.0;
    let y = op.forward_array(&x).expect("forward");
    let xe = probe.element_x();
    for (e, ex) in xe.iter().enumerate() {
        let tau = (grid.z[iz] + (grid.x[ix] - ex).hypot(grid.z[iz])) / scan.sound_speed;
        let expect = tau * scan.sampling_frequency;
        let col: Vec<f32> = (0..scan.n_ax).map(|n| y[[0, n, e, 0]]).collect();
        let peak = col
            .iter()
            .enumerate()
            .fold(
                (0, f32::MIN),
                |b, (i, v)| if *v > b.1 { (i, *v) } else { b },
            )
            .0;
        assert!(
            (peak as f64 - expect).abs() <= 0.5 + 1e-9,
            "element {e}: RF peak at {peak}, travel time {expect} samples"
        );
    }
}

#[test]
fn cache_builds_once_per_key_and_drops_the_least_recent() {
    let (probe, grid) = tiny();
    let cache = OperatorCache::new(2);
    let s1 = probe.plane_wave_scan(&[0.0], &grid);
    let s2 = probe.plane_wave_scan(&[3.0], &grid);
    let s3 = probe.plane_wave_scan(&[-3.0], &grid);
    let get = |s| {
        cache
            .get(s, &grid, OperatorOptions::default(), &Device::Cpu)
            .expect("operator")
    };
    let a = get(&s1);
    assert!(Arc::ptr_eq(&a, &get(&s1)));
    get(&s2);
    assert_eq!((cache.len(), cache.evictions()), (2, 0));
    // s2 was used after s1, so s3 drops s1.
    get(&s3);
    assert_eq!((cache.len(), cache.evictions()), (2, 1));
    assert!(!Arc::ptr_eq(&a, &get(&s1)), "s1 was dropped and is rebuilt");
    assert_eq!((cache.len(), cache.evictions()), (2, 2));
    // s3 and s1 are held now: both come back as they are.
    let c = get(&s3);
    assert!(Arc::ptr_eq(&c, &get(&s3)));
    assert_eq!(cache.evictions(), 2);
}

/// The footprint the daemon caps is the tables' size computed independently, and a scan
/// whose sampling frequency would blow the fine axis up is refused without building it.
#[test]
fn footprint_counts_the_tables_and_refuses_absurd_axes() {
    let (probe, grid) = tiny();
    let scan = probe.plane_wave_scan(&[0.0, 5.0], &grid);
    let n_pix = (grid.nx() * grid.nz()) as f64;
    let bytes = footprint_bytes(&scan, n_pix, &OperatorOptions::default()).unwrap();
    let tables = n_pix * (scan.n_tx() * scan.n_el() * 2 * scan.n_ch) as f64 * 8.0;
    let op = MeasurementOperator::new(&scan, &grid, OperatorOptions::default(), &Device::Cpu)
        .expect("op");
    let fine = (scan.n_tx() * scan.n_el() * scan.n_ch * op.fine_len) as f64 * 8.0;
    assert!(
        bytes >= tables + fine && bytes < (tables + fine) * 1.1,
        "{bytes} vs {tables} + {fine}"
    );
    let mut slow = scan.clone();
    slow.sampling_frequency = 1e-3;
    let err = footprint_bytes(&slow, n_pix, &OperatorOptions::default()).unwrap_err();
    assert!(err.to_string().contains("sampling_frequency"), "{err}");
}

#[test]
fn rejects_inconsistent_scan_and_shapes() {
    let (probe, grid) = tiny();
    let mut scan = probe.plane_wave_scan(&[0.0], &grid);
    scan.n_ch = 3;
    assert!(matches!(
        MeasurementOperator::new(&scan, &grid, OperatorOptions::default(), &Device::Cpu),
        Err(OperatorError::InvalidScan { field: "n_ch", .. })
    ));
    let scan = probe.plane_wave_scan(&[0.0], &grid);
    let op = MeasurementOperator::new(&scan, &grid, OperatorOptions::default(), &Device::Cpu)
        .expect("op");
    let bad = Tensor::zeros((3, 3), candle_core::DType::F32, &Device::Cpu).expect("t");
    assert!(matches!(
        op.forward(&bad),
        Err(OperatorError::Shape { what: "image", .. })
    ));
}
