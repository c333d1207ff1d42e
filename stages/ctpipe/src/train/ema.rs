//! How the evaluated EMA follows the online weights, step by step.
//!
//! - A constant decay β per step (`ema_beta`, default 0.9999: iCT, ECT, CD).
//! - EDM's half-life in images, with its ramp-up (`ema_halflife_kimg`, `ema_rampup`;
//!   NVlabs/edm training/training_loop.py).
//! - ema-pytorch 0.2.3's warm-up, the EMA GC trains with (thibautissenhuth/consistency_GC
//!   train_consistency.py:147-152, `EMA(unet, beta=ema_decay, update_after_step=ema_start,
//!   update_every=5)`, ema-pytorch pinned at requirements.txt:6). On its n-th call (one per
//!   optimiser step, after it): nothing unless (n − 1) is a multiple of `every`; a copy of the
//!   online weights while n − 1 ≤ `after`, and at the first update after that (ema_pytorch.py
//!   :133-148: it copies before its first average); otherwise decay
//!   d = min(β, 1 − (1 + n − after − 1)^(−2/3)) (ema_pytorch.py:124-131, inv_gamma 1, power 2/3,
//!   min_value 0). GC's EMA also makes GC's coupling endpoints (train_consistency.py:201-202), so
//!   without the warm-up the first 10–20 % of a run pairs data with a nearly random generator.

/// The EMA's schedule, resolved from the config and the method's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EmaSchedule {
    Constant { beta: f64, every: u64 },
    HalfLife { kimg: f64, rampup: Option<f64>, batch: u64 },
    Warmup { beta: f64, after: u64, every: u64 },
}

impl EmaSchedule {
    /// The decay of the EMA update after the optimiser step that takes the run from `step` to
    /// `step + 1` (`Some(0.0)` copies the online weights), or `None` when this step leaves the
    /// EMA as it is.
    pub fn decay_after(&self, step: u64) -> Option<f64> {
        match *self {
            EmaSchedule::Constant { beta, every } => (step % every.max(1) == 0).then_some(beta),
            EmaSchedule::HalfLife { kimg, rampup, batch } => {
                let seen = (step * batch) as f64;
                let mut half = kimg * 1000.0;
                if let Some(r) = rampup {
                    half = half.min(seen * r);
                }
                Some(0.5f64.powf(batch as f64 / half.max(1e-8)))
            }
            EmaSchedule::Warmup { beta, after, every } => {
                let every = every.max(1);
                // ema-pytorch's counter before its increment is our step; its decay reads the
                // counter after the increment, n = step + 1.
                if step % every != 0 {
                    return None;
                }
                let first_average = (after / every + 1) * every;
                if step <= after || step == first_average {
                    return Some(0.0);
                }
                let epoch = step - after; // n − after − 1
                Some((1.0 - (1.0 + epoch as f64).powf(-2.0 / 3.0)).clamp(0.0, beta))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ema-pytorch 0.2.3 by hand (helper's reading of ema_pytorch.py:124-148): β = 0.9999,
    /// update_after_step = 2, update_every = 3 — calls 1..12 (our steps 0..11).
    #[test]
    fn warmup_follows_ema_pytorch() {
        let s = EmaSchedule::Warmup { beta: 0.9999, after: 2, every: 3 };
        let got: Vec<Option<f64>> = (0..12).map(|step| s.decay_after(step)).collect();
        let want = [
            Some(0.0), // n = 1: copy (step 0 ≤ after)
            None,
            None,
            Some(0.0), // n = 4: first average after the copies: copies first, then averages equal weights
            None,
            None,
            Some(1.0 - 5f64.powf(-2.0 / 3.0)), // n = 7: epoch 4 → 0.658005
            None,
            None,
            Some(0.75), // n = 10: epoch 7, 1 − 8^(−2/3) = 1 − 1/4
            None,
            None,
        ];
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            match (g, w) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-12, "call {}: {g} vs {w}", i + 1),
                _ => assert_eq!(*g, w, "call {}", i + 1),
            }
        }
        assert!((got[6].unwrap() - 0.658005).abs() < 1e-6);
    }

    /// GC's own settings (after 0, every 5, β 0.9999): copies at calls 1 and 6, then 0.797820
    /// and 0.842510; β caps the decay only after a million steps.
    #[test]
    fn gc_settings() {
        let s = EmaSchedule::Warmup { beta: 0.9999, after: 0, every: 5 };
        assert_eq!(s.decay_after(0), Some(0.0));
        assert_eq!(s.decay_after(5), Some(0.0));
        assert!((s.decay_after(10).unwrap() - 0.797820).abs() < 1e-6);
        assert!((s.decay_after(15).unwrap() - 0.842510).abs() < 1e-6);
        assert!((s.decay_after(100_000).unwrap() - 0.999536).abs() < 1e-6);
        assert_eq!(s.decay_after(2_000_000), Some(0.9999));
        assert_eq!(s.decay_after(7), None);
    }

    /// EDM's half-life: β = 0.5^(batch / (kimg · 1000)), ramp-up caps the half-life at r · seen.
    #[test]
    fn half_life_and_rampup() {
        let s = EmaSchedule::HalfLife { kimg: 500.0, rampup: None, batch: 512 };
        assert!((s.decay_after(0).unwrap() - 0.5f64.powf(512.0 / 500_000.0)).abs() < 1e-15);
        let r = EmaSchedule::HalfLife { kimg: 500.0, rampup: Some(0.05), batch: 512 };
        // After 1000 steps 512k images were seen: half-life min(500k, 25.6k) = 25.6k images.
        assert!((r.decay_after(1000).unwrap() - 0.5f64.powf(512.0 / 25_600.0)).abs() < 1e-15);
        assert_eq!(EmaSchedule::Constant { beta: 0.99, every: 2 }.decay_after(3), None);
        assert_eq!(EmaSchedule::Constant { beta: 0.99, every: 1 }.decay_after(3), Some(0.99));
    }

    /// GC's values are GC's defaults; other methods keep a constant β; settings override; the
    /// two warm-ups do not mix.
    #[test]
    fn method_defaults_and_settings() {
        use crate::methods::spec::ema_schedule;
        use crate::train::config::TrainConfig;
        let cfg = |method: &str, sets: &str| -> TrainConfig { crate::train::config::from_toml(&format!("method = \"{method}\"\n{sets}")) };
        assert_eq!(ema_schedule(&cfg("gc", ""), "gc").unwrap(), EmaSchedule::Warmup { beta: 0.9999, after: 0, every: 5 });
        assert_eq!(ema_schedule(&cfg("ict", ""), "ict").unwrap(), EmaSchedule::Constant { beta: 0.9999, every: 1 });
        let c = cfg("gc", "ema_beta = 0.995\nema_update_every = 2\nema_update_after = 100");
        assert_eq!(ema_schedule(&c, "gc").unwrap(), EmaSchedule::Warmup { beta: 0.995, after: 100, every: 2 });
        let c = cfg("ect", "ema_update_after = 0");
        assert_eq!(ema_schedule(&c, "ect").unwrap(), EmaSchedule::Warmup { beta: 0.9999, after: 0, every: 1 });
        let c = cfg("edm", "ema_halflife_kimg = 500.0\nema_rampup = 0.05\nbatch = 512");
        assert_eq!(ema_schedule(&c, "edm").unwrap(), EmaSchedule::HalfLife { kimg: 500.0, rampup: Some(0.05), batch: 512 });
        let c = cfg("gc", "ema_halflife_kimg = 500.0\nema_update_after = 0");
        assert!(crate::error::one_line(&ema_schedule(&c, "gc").unwrap_err()).contains("choose ema-pytorch's warm-up or EDM's half-life"));
        assert!(ema_schedule(&cfg("ict", "ema_update_every = 0"), "ict").is_err());
    }
}
