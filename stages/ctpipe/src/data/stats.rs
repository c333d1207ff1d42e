//! Dataset statistics for the manifest: rows, counts per class, per-channel mean and std.
//!
//! Image values are reported on the [0, 1] scale (byte / 255), the convention of torchvision's
//! normalisation constants; point coordinates as they are. Sums are accumulated in f64 over
//! all pixels, so the figures are exact to f64 rounding for any realistic dataset size.

use super::schema::{DatasetInfo, Samples, Split};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SplitStats {
    pub rows: usize,
    pub per_class: BTreeMap<String, usize>,
    pub channel_mean: Vec<f64>,
    pub channel_std: Vec<f64>,
}

/// Streaming accumulator, so splits larger than memory can be summarised batch by batch.
#[derive(Debug, Clone)]
pub struct StatsAccumulator {
    channels: usize,
    counts: Vec<usize>,
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
    n_per_channel: u64,
    rows: usize,
}

impl StatsAccumulator {
    pub fn new(info: &DatasetInfo) -> Self {
        let channels = info.kind.channels();
        StatsAccumulator {
            channels,
            counts: vec![0; info.class_names.len()],
            sum: vec![0.0; channels],
            sum_sq: vec![0.0; channels],
            n_per_channel: 0,
            rows: 0,
        }
    }

    pub fn add(&mut self, split: &Split) {
        for &l in &split.labels {
            self.counts[l as usize] += 1;
        }
        self.rows += split.rows();
        let c = self.channels;
        match &split.samples {
            Samples::Images(px) => {
                // Integer histograms per channel keep the sums exact and fast.
                let mut hist = vec![[0u64; 256]; c];
                for (i, &v) in px.iter().enumerate() {
                    hist[i % c][v as usize] += 1;
                }
                for (ch, h) in hist.iter().enumerate() {
                    for (v, &n) in h.iter().enumerate() {
                        let x = v as f64 / 255.0;
                        self.sum[ch] += n as f64 * x;
                        self.sum_sq[ch] += n as f64 * x * x;
                    }
                }
                self.n_per_channel += (px.len() / c.max(1)) as u64;
            }
            Samples::Points(xs) => {
                for (i, &v) in xs.iter().enumerate() {
                    let x = v as f64;
                    self.sum[i % c] += x;
                    self.sum_sq[i % c] += x * x;
                }
                self.n_per_channel += (xs.len() / c.max(1)) as u64;
            }
        }
    }

    pub fn finish(&self, info: &DatasetInfo) -> SplitStats {
        let n = self.n_per_channel.max(1) as f64;
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let std = self.sum_sq.iter().zip(&mean).map(|(sq, m)| (sq / n - m * m).max(0.0).sqrt()).collect();
        let per_class = info.class_names.iter().cloned().zip(self.counts.iter().copied()).collect();
        SplitStats { rows: self.rows, per_class, channel_mean: mean, channel_std: std }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::schema::SampleKind;

    #[test]
    fn image_stats_match_direct_computation() {
        let info = DatasetInfo {
            name: "t".into(),
            kind: SampleKind::Images { height: 1, width: 2, channels: 2 },
            class_names: vec!["a".into(), "b".into()],
        };
        // Two images, HWC: channel 0 gets 0, 255, 51, 102; channel 1 gets 255 ×4.
        let split = Split { samples: Samples::Images(vec![0, 255, 255, 255, 51, 255, 102, 255]), labels: vec![1, 1] };
        let mut acc = StatsAccumulator::new(&info);
        acc.add(&split);
        let s = acc.finish(&info);
        let c0 = [0.0, 1.0, 0.2, 0.4];
        let m0 = c0.iter().sum::<f64>() / 4.0;
        let v0 = c0.iter().map(|x| (x - m0) * (x - m0)).sum::<f64>() / 4.0;
        assert!((s.channel_mean[0] - m0).abs() < 1e-12);
        assert!((s.channel_std[0] - v0.sqrt()).abs() < 1e-12);
        assert!((s.channel_mean[1] - 1.0).abs() < 1e-12 && s.channel_std[1].abs() < 1e-6);
        assert_eq!(s.per_class, BTreeMap::from([("a".into(), 0), ("b".into(), 2)]));
        assert_eq!(s.rows, 2);
    }
}
