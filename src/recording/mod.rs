//! zea HDF5 recordings: typed scan parameters, a validating lazy frame reader, and an
//! incremental crash-safe recorder, with pleura's additions under `pleura/`
//! (layout in `docs/recording.md`).

pub mod error;
mod h5;
pub mod reader;
pub mod scan;
pub mod writer;
pub mod zea;

pub use error::RecordingError;
pub use h5::{close_on_exec, write_string_attr};
pub use reader::{Frame, GroundTruth, Recording, SampleType};
pub use scan::{Scan, TransmitKind};
pub use writer::{Compression, GroundTruthGrid, Recorder, RecorderOptions};
pub use zea::{Layout, TrackChoice, TrackInfo};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_and_recorder_can_move_between_threads() {
        fn is_send<T: Send>() {}
        is_send::<Recording>();
        is_send::<Recorder>();
    }
}
