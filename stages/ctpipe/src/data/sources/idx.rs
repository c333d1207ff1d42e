//! IDX files (the MNIST family's format), plain or gzip-compressed.
//!
//! Header: two zero bytes, an element-type byte (0x08 = unsigned byte, the only type the
//! image datasets use), a dimension count, then one big-endian u32 per dimension. The data
//! must be exactly the product of the dimensions: a short file is reported as truncated, not
//! silently padded.

use crate::error::{bad_input, TagContext};
use anyhow::Result;
use std::io::Read;
use std::path::Path;

/// An IDX array of bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Read an IDX file; `.gz` (gzip magic) is decompressed.
pub fn read_idx(path: &Path) -> Result<Idx> {
    let raw = std::fs::read(path).bad_input_ctx(|| format!("{}: cannot read", path.display()))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .bad_input_ctx(|| format!("{}: corrupt or truncated gzip stream", path.display()))?;
        out
    } else {
        raw
    };
    parse_idx(&bytes).map_err(|e| bad_input(format!("{}: {e}", path.display())))
}

/// Parse IDX bytes (already decompressed).
pub fn parse_idx(bytes: &[u8]) -> std::result::Result<Idx, String> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err("not an IDX file (expected magic 00 00 <type> <ndim>)".into());
    }
    if bytes[2] != 0x08 {
        return Err(format!("IDX element type 0x{:02x} is not supported (expected 0x08, unsigned byte)", bytes[2]));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if ndim == 0 || bytes.len() < header {
        return Err(format!("truncated IDX header ({ndim} dimensions need {header} bytes, file has {})", bytes.len()));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize)
        .collect();
    let want = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("IDX dimensions {dims:?} overflow (a corrupt header)"))?;
    let have = bytes.len() - header;
    let shape = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×");
    if have < want {
        return Err(format!("truncated IDX file: header says {shape} = {want} bytes of data, found {have}"));
    }
    if have > want {
        return Err(format!("IDX file has {} bytes after the {shape} data it declares", have - want));
    }
    Ok(Idx { dims, data: bytes[header..].to_vec() })
}

/// Encode an IDX array (used by tests to write small files).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend((*d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let enc = encode_idx(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(parse_idx(&enc).unwrap(), Idx { dims: vec![2, 3], data: vec![1, 2, 3, 4, 5, 6] });
        let e = parse_idx(&enc[..enc.len() - 2]).unwrap_err();
        assert_eq!(e, "truncated IDX file: header says 2×3 = 6 bytes of data, found 4");
        assert!(parse_idx(&[0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0]).unwrap_err().contains("0x0d"));
        assert!(parse_idx(b"PK\x03\x04").unwrap_err().contains("not an IDX"));
        assert!(parse_idx(&[0, 0, 8, 3, 0]).unwrap_err().contains("truncated IDX header"));
        let mut long = enc.clone();
        long.push(9);
        assert!(parse_idx(&long).unwrap_err().contains("1 bytes after"));
        // 65536⁴ = 2⁶⁴ wraps to 0 bytes in unchecked arithmetic: a header that "fits" no data.
        let mut wrap = vec![0, 0, 8, 4];
        for _ in 0..4 {
            wrap.extend(65536u32.to_be_bytes());
        }
        assert!(parse_idx(&wrap).unwrap_err().contains("overflow"), "{:?}", parse_idx(&wrap));
    }
}
