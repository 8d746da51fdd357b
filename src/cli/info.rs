//! `pleura info`: validate a recording and summarise it.

use std::path::PathBuf;

/// Arguments of `pleura info`.
#[derive(clap::Args)]
pub struct Args {
    /// The recording (zea HDF5 layout).
    pub file: PathBuf,
    /// Print JSON instead of a human summary.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::bail!("reading {} is not implemented yet", args.file.display())
}
