//! Compute device selection for the diffusion model: `"cpu"`, `"cuda:N"` or `"auto"`.

use candle_core::Device;

/// Errors selecting a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("invalid device {value:?}: expected \"cpu\", \"cuda:N\" or \"auto\"")]
    Parse { value: String },
    #[error("cannot open device {value:?}: {source}")]
    Open {
        value: String,
        source: candle_core::Error,
    },
}

/// A requested device, parsed from a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    /// The CPU.
    Cpu,
    /// CUDA GPU with this ordinal.
    Cuda(usize),
    /// CUDA GPU 0 when candle was built with CUDA and a GPU is present, else the CPU.
    Auto,
}

impl std::str::FromStr for DeviceRequest {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DeviceError::Parse {
            value: s.to_string(),
        };
        match s {
            "cpu" => Ok(Self::Cpu),
            "auto" => Ok(Self::Auto),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(err)?;
                n.parse::<usize>().map(Self::Cuda).map_err(|_| err())
            }
        }
    }
}

/// Opens the device named by `spec` (`"cpu"`, `"cuda:N"`, `"auto"`) and logs which one is used.
///
/// `auto` falls back to the CPU, with a warning, when candle was built without the `cuda`
/// feature or no GPU can be opened; an explicit `cuda:N` that cannot be opened is an error.
pub fn select(spec: &str) -> Result<Device, DeviceError> {
    let device = match spec.parse::<DeviceRequest>()? {
        DeviceRequest::Cpu => Device::Cpu,
        DeviceRequest::Cuda(n) => Device::new_cuda(n).map_err(|source| DeviceError::Open {
            value: spec.to_string(),
            source,
        })?,
        DeviceRequest::Auto => {
            if !candle_core::utils::cuda_is_available() {
                tracing::warn!("device auto: pleura was built without CUDA support, using the CPU");
                Device::Cpu
            } else {
                match Device::new_cuda(0) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!("device auto: no usable CUDA GPU ({e}), using the CPU");
                        Device::Cpu
                    }
                }
            }
        }
    };
    tracing::info!(device = describe(&device), "compute device selected");
    Ok(device)
}

/// A short human name of a device, e.g. `cpu` or `cuda:0`.
pub fn describe(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_strings() {
        assert_eq!("cpu".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cpu);
        assert_eq!(
            "auto".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Auto
        );
        assert_eq!(
            "cuda:3".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Cuda(3)
        );
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", "cuda:-1"] {
            let err = bad.parse::<DeviceRequest>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn cpu_and_auto_open_without_gpu() {
        assert!(select("cpu").unwrap().is_cpu());
        let auto = select("auto").unwrap();
        if !candle_core::utils::cuda_is_available() {
            assert!(auto.is_cpu());
            assert!(select("cuda:0").is_err());
        }
    }
}
