//! Stop requests: SIGTERM (SLURM preemption), SIGUSR1 (`--signal=B:USR1@120`, time limit
//! ahead) and SIGINT (Ctrl-C) set a flag the training loop checks between steps; it then
//! writes a checkpoint and exits with code 75. A second SIGINT stops at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// A flag set by SIGTERM, SIGUSR1 or SIGINT.
    pub fn install() -> std::io::Result<StopFlag> {
        let flag = StopFlag::default();
        #[cfg(unix)]
        {
            use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
            // The second SIGINT terminates: registered before the flag, it sees the flag already set.
            signal_hook::flag::register_conditional_shutdown(SIGINT, 130, flag.0.clone())?;
            for sig in [SIGTERM, SIGUSR1, SIGINT] {
                signal_hook::flag::register(sig, flag.0.clone())?;
            }
        }
        Ok(flag)
    }

    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Ask for a stop (tests use it to interrupt at a chosen step).
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed)
    }
}
