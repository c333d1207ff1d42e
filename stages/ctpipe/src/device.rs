//! Choosing the compute device: `cpu`, `cuda`, `cuda:N`, or `auto` (CUDA when this build has
//! it and a GPU is present, else CPU). The device is an execution detail, not part of an
//! artifact's key; results agree across devices to floating-point tolerance, not bitwise.

use crate::error::usage;
use anyhow::Result;
use candle_core::Device;

pub fn select(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                crate::cuda::check_env()?;
                Device::new_cuda(0).or(Ok(Device::Cpu))
            } else {
                Ok(Device::Cpu)
            }
        }
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal: usize = match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map_err(|_| usage(format!("--device {s}: expected cuda:<ordinal>")))?,
                None => 0,
            };
            if !candle_core::utils::cuda_is_available() {
                return Err(usage(format!("--device {s}: this build has no CUDA support (build with `make cuda`)")));
            }
            crate::cuda::check_env()?;
            Device::new_cuda(ordinal).map_err(|e| usage(format!("--device {s}: {e}")))
        }
        s => Err(usage(format!("--device {s}: expected cpu, cuda, cuda:N or auto"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert!(select("cpu").unwrap().is_cpu());
        assert!(select("gpu").is_err());
        assert!(select("cuda:x").is_err());
        if !candle_core::utils::cuda_is_available() {
            assert!(select("auto").unwrap().is_cpu());
            assert!(select("cuda").is_err());
        }
    }
}
