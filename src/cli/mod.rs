//! One module per subcommand: its clap arguments (`Args`) and its `run`.

pub mod bench;
pub mod eval_prior;
pub mod info;
pub mod replay;
pub mod sample;
pub mod train;
