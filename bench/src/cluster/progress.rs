//! A progress bar on a terminal while a run warms up and measures; nothing when stderr is not
//! a terminal (scripts, CI, tests).
//!
//! Owns one thread that redraws the bar ten times a second from the clock alone (the load
//! threads share nothing with it) and clears it when the window ends, the run is interrupted,
//! or the [`Progress`] is dropped.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::interrupt::Interrupt;

/// A running progress bar; dropping it clears the bar.
pub struct Progress {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Shows `label`'s progress from `start` through the warm-up until `measure_start`, then the
    /// window until `measure_end`, if stderr is a terminal.
    pub fn start(
        label: String,
        start: Instant,
        measure_start: Instant,
        measure_end: Instant,
        interrupt: &Interrupt,
    ) -> Progress {
        let done = Arc::new(AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let done = done.clone();
            let interrupt = interrupt.clone();
            std::thread::spawn(move || {
                let total = measure_end - start;
                let bar = ProgressBar::new(total.as_millis() as u64);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} {msg:10} [{bar:40}] {elapsed}/{duration}",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(label);
                while !done.load(Ordering::Relaxed) && !interrupt.is_set() {
                    let now = Instant::now();
                    if now >= measure_end {
                        break;
                    }
                    bar.set_message(if now < measure_start {
                        "warm-up"
                    } else {
                        "measuring"
                    });
                    bar.set_position((now - start).as_millis() as u64);
                    std::thread::sleep(Duration::from_millis(100));
                }
                bar.finish_and_clear();
            })
        });
        Progress { done, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
