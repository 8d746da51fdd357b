//! One module per subcommand: its clap arguments (`Args`) and its `run`.

pub mod beamform;
pub mod bench;
pub mod bench_ingest;
pub mod bench_operator;
pub mod eval;
pub mod info;
pub mod reconstruct_baseline;
pub mod serve;
pub mod simulate;
