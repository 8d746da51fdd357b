use candle_core::Device;
use pleura::grid::Grid;
use pleura::operator::{MeasurementOperator, OperatorOptions};
use pleura::simulate::probe::LinearProbe;
use std::time::Instant;
fn main() {
    let grid = Grid::default_lung();
    let probe = LinearProbe::default_lung();
    let scan = probe.plane_wave_scan(&[-8.0, 0.0, 8.0], &grid);
    let t = Instant::now();
    let op =
        MeasurementOperator::new(&scan, &grid, OperatorOptions::default(), &Device::Cpu).unwrap();
    println!(
        "build {:?} bytes {} U {} n_ax {}",
        t.elapsed(),
        op.table_bytes(),
        op.upsampling(),
        scan.n_ax
    );
    let x = op
        .image_tensor(&ndarray::Array2::from_elem(op.image_shape(), 0.5f32))
        .unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let y = op.forward(&x).unwrap();
        let t1 = t.elapsed();
        let t = Instant::now();
        let _ = op.adjoint(&y).unwrap();
        println!("fwd {:?} adj {:?}", t1, t.elapsed());
    }
}
