//! The doorbell: one eventfd that a thread blocks on to learn "a sync round may have completed
//! or new work was queued for me", with no relay thread in between.
//!
//! The log registers the doorbell's eventfd with its io_uring ring, so the kernel rings it on
//! every completion it posts (the fallback's helper threads ring it themselves). Whoever queues
//! work for the waiting thread rings it too, but only when the waiter announced that it is
//! going to sleep ([`Doorbell::ring_if_sleeping`]): a busy waiter costs its producers no syscall.
//!
//! Lost wake-up freedom: the waiter announces the sleep, then checks its inputs, then blocks;
//! a producer publishes its input, then reads the announcement. Both sides separate their write
//! from their read by a sequentially consistent fence, so at least one of them sees the other's
//! write: either the waiter finds the input, or the producer sees the announcement and rings.
//! Spurious wake-ups are possible and harmless (the waiter re-checks everything).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::time::Duration;

/// A counting eventfd plus the waiter's "about to sleep" flag.
#[derive(Debug)]
pub struct Doorbell {
    eventfd: OwnedFd,
    sleeping: AtomicBool,
}

impl Doorbell {
    /// A new doorbell (not rung).
    pub fn new() -> io::Result<Doorbell> {
        // SAFETY: plain syscall; the returned descriptor is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Doorbell {
            // SAFETY: `fd` was just created and nothing else owns it.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
            sleeping: AtomicBool::new(false),
        })
    }

    /// The eventfd, for registering with an io_uring ring.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Rings unconditionally (a completion, or a producer that must not be missed, e.g. one
    /// going away).
    pub fn ring(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local buffer to our own eventfd. It cannot block
        // (non-blocking) and fails only when the counter would overflow, which means a ring is
        // pending anyway.
        unsafe { libc::write(self.eventfd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// For producers, after publishing their input: rings if the waiter announced a sleep
    /// (and clears the announcement, so one ring serves many producers).
    pub fn ring_if_sleeping(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            self.ring();
        }
    }

    /// For the waiter: announces the sleep, runs `ready` (the check of every input), and
    /// blocks until a ring (or `timeout`) unless `ready` found something. Returns whether it
    /// woke by a ring or found input (false: timed out).
    pub fn wait(&self, timeout: Option<Duration>, ready: impl FnOnce() -> bool) -> bool {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let woke = ready() || self.block(timeout);
        self.sleeping.store(false, Ordering::Relaxed);
        woke
    }

    /// Blocks until the counter is non-zero (or `timeout`), then resets it.
    fn block(&self, timeout: Option<Duration>) -> bool {
        let millis = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        let mut poll = libc::pollfd {
            fd: self.eventfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one live pollfd.
            let ready = unsafe { libc::poll(&mut poll, 1, millis) };
            if ready < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // poll on our own eventfd cannot otherwise fail: treat as a (spurious) wake.
                return true;
            }
            if ready == 0 {
                return false;
            }
            let mut count = [0u8; 8];
            // SAFETY: reads 8 bytes into a live local buffer; non-blocking, so a racing reader
            // (there is none) would only make it fail with EAGAIN.
            unsafe { libc::read(self.eventfd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const SHORT: Option<Duration> = Some(Duration::from_millis(20));

    #[test]
    fn a_ring_wakes_one_wait_and_is_consumed() {
        let bell = Doorbell::new().unwrap();
        assert!(!bell.wait(SHORT, || false), "not rung: times out");
        bell.ring();
        bell.ring();
        assert!(bell.wait(SHORT, || false), "rung");
        assert!(!bell.wait(SHORT, || false), "two rings are one wake-up");
    }

    #[test]
    fn ring_if_sleeping_rings_only_for_an_announced_sleep() {
        let bell = Doorbell::new().unwrap();
        bell.ring_if_sleeping();
        assert!(!bell.wait(SHORT, || false), "nobody was sleeping: no ring");
        // A producer that publishes while the waiter checks its inputs rings it.
        assert!(bell.wait(SHORT, || {
            bell.ring_if_sleeping();
            false
        }));
        assert!(bell.wait(SHORT, || true), "input found: no block");
    }

    #[test]
    fn a_producer_on_another_thread_is_never_missed() {
        let bell = Arc::new(Doorbell::new().unwrap());
        let (tx, rx) = crossbeam_channel::unbounded::<u32>();
        let producer = {
            let bell = bell.clone();
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    tx.send(i).unwrap();
                    bell.ring_if_sleeping();
                }
            })
        };
        let mut seen = 0;
        while seen < 20_000 {
            while rx.try_recv().is_ok() {
                seen += 1;
            }
            if seen < 20_000 {
                // A missed wake-up would hang here for the whole (long) timeout.
                assert!(
                    bell.wait(Some(Duration::from_secs(10)), || !rx.is_empty()),
                    "lost wake-up after {seen} messages"
                );
            }
        }
        producer.join().unwrap();
    }
}
