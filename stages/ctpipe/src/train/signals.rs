//! Stop requests: SIGTERM (SLURM preemption), SIGUSR1 (`--signal=B:USR1@120`, time limit
//! ahead) and SIGINT (Ctrl-C) set a flag the training loop checks between steps; it then
//! writes a checkpoint and exits with code 75. A second SIGINT stops at once.
//!
//! Handlers are installed first thing in a stage's `main` ([`install_for_stage`]), before the
//! arguments are read and long before the wait on another run's lock: a signal that arrives
//! then (SLURM's requeue overlapping the previous job) must still end in exit 75, not 143.

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

/// The signals a stage answers with exit 75.
#[cfg(unix)]
const STOP_SIGNALS: [i32; 2] = [signal_hook::consts::SIGTERM, signal_hook::consts::SIGUSR1];

/// Install a stage's handlers. A stage that checkpoints (`handles`) gets the flag of
/// [`StopFlag::install`]; any other stage exits 75 on SIGTERM or SIGUSR1 at once (`_exit`, as
/// a kill would: its artifact is published atomically or not at all), so a batch script can
/// requeue on 75 whichever stage was running. Signals the parent left blocked are unblocked
/// after the handlers are in place, so one already pending reaches them.
pub fn install_for_stage(handles: bool) -> std::io::Result<StopFlag> {
    let flag = if handles {
        StopFlag::install()?
    } else {
        #[cfg(unix)]
        for sig in STOP_SIGNALS {
            // SAFETY: the action only calls `_exit`, which is async-signal-safe.
            unsafe { signal_hook::low_level::register(sig, || signal_hook::low_level::exit(75))? };
        }
        StopFlag::default()
    };
    #[cfg(unix)]
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in STOP_SIGNALS.into_iter().chain([signal_hook::consts::SIGINT]) {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    Ok(flag)
}
