//! Ctrl-C and SIGTERM as a flag, so the bench can stop its node processes and remove its
//! temporary directory before it exits.
//!
//! The handlers only set an atomic flag (nothing else is async-signal-safe); every waiting loop
//! of the bench polls [`Interrupt::is_set`] and unwinds through its cleanup guards. A second
//! SIGINT while the flag is already set exits at once with status 130 (for a bench stuck where
//! it does not poll); the node processes then still die with the bench (see `supervisor`).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};

/// Exit status of a process ended by SIGINT, by shell convention.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Set once SIGINT or SIGTERM arrived.
#[derive(Clone, Debug, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Installs the handlers for SIGINT and SIGTERM.
    pub fn install() -> io::Result<Interrupt> {
        let flag = Arc::new(AtomicBool::new(false));
        // Registered first so that it sees the flag as it was before this signal's own store.
        signal_hook::flag::register_conditional_shutdown(SIGINT, EXIT_INTERRUPTED, flag.clone())?;
        signal_hook::flag::register(SIGINT, flag.clone())?;
        signal_hook::flag::register(SIGTERM, flag.clone())?;
        Ok(Interrupt(flag))
    }

    /// Whether a signal arrived.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets the flag as a signal would.
    #[cfg(test)]
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
