//! One module per subcommand: its clap arguments (`Args`) and its `run`.

pub mod beamform;
pub mod bench;
pub mod bench_ingest;
pub mod bench_operator;
pub mod bench_sampler;
pub mod bench_unet;
pub mod eval;
pub mod eval_prior;
pub mod info;
pub mod reconstruct_baseline;
pub mod replay;
pub mod sample;
pub mod serve;
pub mod simulate;
pub mod train;
