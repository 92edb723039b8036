//! Local node processes: start one from a command line, capture its output in a log file,
//! wait for its ready line, signal it, stop it (SIGTERM, then SIGKILL after a grace time) or
//! kill it, and read the tail of its log.
//!
//! A [`Launch`] says how one node process starts; [`Launch::spawn`] returns the running
//! [`NodeProcess`], which owns the child: it is never left running nor unreaped once the
//! `NodeProcess` is dropped (SIGKILL at once by default, or SIGTERM first with
//! [`Launch::stop_on_drop`]). A restart on the same data directory is a new `Launch` of the same
//! command line; with [`Output::StderrAppended`] the log keeps what earlier runs wrote.
//!
//! Readiness is the node's ready line (`lockstep_server::ready_line`): `lockstep node <id>
//! ready: peer <addr> client <addr>`, which the server prints to stdout once both ports are
//! bound. A node that exits first, or stays silent past the timeout, is a [`NotReady`] value the
//! caller words as it needs.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lockstep_server::READY_MARKER;

/// How long a node may take to exit after SIGTERM before it is killed, where the caller does
/// not choose otherwise.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How often a wait looks at the processes (and at the caller's stop condition).
const POLL: Duration = Duration::from_millis(20);

/// How long the output threads of a process that exited get to hand over what it wrote.
const DRAIN_MAX: Duration = Duration::from_secs(1);

/// Where a node's output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Stderr (the node's log) is appended to the log file, which keeps what earlier runs of
    /// the node wrote; stdout is read only for the ready line.
    StderrAppended,
    /// Stdout and stderr are both copied, line by line, into the log file, created empty; the
    /// ready line may come on either.
    BothCopied,
}

/// How one node process starts: the program and its arguments, where its output goes, and
/// what the child does before it runs the program.
pub struct Launch {
    id: u64,
    command: Command,
    log_path: PathBuf,
    output: Output,
    drop_grace: Option<Duration>,
}

/// Why a [`Launch`] did not start.
#[derive(Debug)]
pub enum SpawnError {
    /// The log file could not be opened or created.
    Log {
        /// The log file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The program could not be started.
    Program(io::Error),
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::Log { path, source } => write!(f, "open {}: {source}", path.display()),
            SpawnError::Program(source) => write!(f, "{source}"),
        }
    }
}

impl std::error::Error for SpawnError {}

impl Launch {
    /// Node `id` as `program`, its output going to `log_path` as `output` says.
    pub fn new(
        id: u64,
        program: impl AsRef<OsStr>,
        log_path: impl Into<PathBuf>,
        output: Output,
    ) -> Launch {
        Launch {
            id,
            command: Command::new(program),
            log_path: log_path.into(),
            output,
            drop_grace: None,
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Launch {
        self.command.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Sets an environment variable of the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Launch {
        self.command.env(key, value);
        self
    }

    /// Ties the node to this process: it runs in a process group of its own (a terminal's
    /// Ctrl-C reaches only the supervisor, which then stops the nodes in order), and the
    /// kernel SIGKILLs it should the spawning thread die without stopping it
    /// (`PR_SET_PDEATHSIG`).
    pub fn tied_to_supervisor(mut self) -> Launch {
        self.command.process_group(0);
        // SAFETY: the hook runs in the forked child before exec and only makes one
        // async-signal-safe system call.
        unsafe {
            self.command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self
    }

    /// Makes a drop of the [`NodeProcess`] stop the node with SIGTERM, and SIGKILL only after
    /// `grace` (the default is SIGKILL at once).
    pub fn stop_on_drop(mut self, grace: Duration) -> Launch {
        self.drop_grace = Some(grace);
        self
    }

    /// Runs `hook` in the child between fork and exec (e.g. to enter a network namespace), after
    /// the hooks given before.
    ///
    /// # Safety
    /// As for [`CommandExt::pre_exec`]: the hook runs in a forked copy of this multi-threaded
    /// process, so it may only make async-signal-safe calls (no allocation, no locks).
    pub unsafe fn pre_exec(
        mut self,
        hook: impl FnMut() -> io::Result<()> + Send + Sync + 'static,
    ) -> Launch {
        // SAFETY: the caller vouches for the hook (see above).
        unsafe {
            self.command.pre_exec(hook);
        }
        self
    }

    /// Starts the process with stdin closed and its output captured as the launch says.
    pub fn spawn(mut self) -> Result<NodeProcess, SpawnError> {
        let id = self.id;
        let log_error = |source| SpawnError::Log {
            path: self.log_path.clone(),
            source,
        };
        let log = match self.output {
            Output::StderrAppended => OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log_path),
            Output::BothCopied => File::create(&self.log_path),
        }
        .map_err(log_error)?;
        let stderr = match self.output {
            Output::StderrAppended => Stdio::from(log.try_clone().map_err(log_error)?),
            Output::BothCopied => Stdio::piped(),
        };
        let mut child = self
            .command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(SpawnError::Program)?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let (copy_to, readers) = match self.output {
            Output::StderrAppended => (None, vec![read_lines(id, stdout, None, ready_tx)]),
            Output::BothCopied => {
                let file = Arc::new(Mutex::new(log));
                let stderr = child.stderr.take().expect("stderr is piped");
                let readers = vec![
                    read_lines(id, stdout, Some(file.clone()), ready_tx.clone()),
                    read_lines(id, stderr, Some(file.clone()), ready_tx),
                ];
                (Some(file), readers)
            }
        };
        Ok(NodeProcess {
            id,
            child,
            log_path: self.log_path,
            ready_rx,
            ready_line: None,
            copy_to,
            readers,
            exit: None,
            drop_grace: self.drop_grace,
        })
    }
}

/// Reads `stream` line by line on a thread of its own, copying each line into `copy_to` if
/// given and sending the first ready line of node `id` on `ready_tx`. Ends with the stream (when
/// the process exits).
fn read_lines(
    id: u64,
    stream: impl Read + Send + 'static,
    copy_to: Option<Arc<Mutex<File>>>,
    ready_tx: mpsc::Sender<String>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut announced = false;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(file) = &copy_to {
                if let Ok(mut file) = file.lock() {
                    drop(writeln!(file, "{line}"));
                }
            }
            if !announced && is_ready_line(&line, id) {
                announced = true;
                drop(ready_tx.send(line));
            }
        }
    })
}

/// Whether `line` is node `id`'s ready line: `lockstep node <id> ready: ...`.
pub fn is_ready_line(line: &str, id: u64) -> bool {
    line.trim_start()
        .strip_prefix(READY_MARKER)
        .and_then(|rest| rest.strip_prefix(&id.to_string()))
        .is_some_and(|rest| rest.starts_with(" ready:"))
}

/// A running (or exited, not yet dropped) node process.
pub struct NodeProcess {
    id: u64,
    child: Child,
    log_path: PathBuf,
    /// Gets the node's ready line.
    ready_rx: mpsc::Receiver<String>,
    ready_line: Option<String>,
    /// The log file the output threads copy into ([`Output::BothCopied`]).
    copy_to: Option<Arc<Mutex<File>>>,
    /// The threads reading the child's piped output.
    readers: Vec<JoinHandle<()>>,
    /// The exit status, once reaped.
    exit: Option<ExitStatus>,
    drop_grace: Option<Duration>,
}

/// Why a node did not become ready.
#[derive(Debug)]
pub enum NotReady {
    /// Node `id` exited before it printed its ready line.
    Exited {
        /// The node.
        id: u64,
        /// How it ended.
        status: ExitStatus,
    },
    /// Node `id` printed no ready line within the timeout.
    TimedOut {
        /// The node.
        id: u64,
        /// The timeout.
        after: Duration,
    },
    /// The caller's stop condition held before every node was ready.
    Stopped,
    /// Node `id` could not be waited for.
    Unwatchable {
        /// The node.
        id: u64,
        /// Why.
        error: io::Error,
    },
}

/// How a node ended when it was stopped.
#[derive(Clone, Copy, Debug)]
pub struct Stopped {
    /// Its exit status.
    pub status: ExitStatus,
    /// Whether it had to be killed (SIGKILL) because it outlived the grace time.
    pub killed: bool,
}

impl NodeProcess {
    /// The node's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The node's log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The ready line, once [`NodeProcess::wait_ready`] or [`wait_all_ready`] saw it.
    pub fn ready_line(&self) -> Option<&str> {
        self.ready_line.as_deref()
    }

    /// Waits up to `timeout` for the node's ready line; returns it.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<String, NotReady> {
        wait_all_ready(std::slice::from_mut(self), timeout, &|| false)?;
        Ok(self.ready_line.clone().expect("ready"))
    }

    /// The exit status if the process has exited (it is reaped then), `None` while it runs.
    pub fn try_exit(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait()?;
        }
        Ok(self.exit)
    }

    /// Sends `signal` (e.g. SIGSTOP, SIGCONT) to the process.
    pub fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        if self.exit.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("node {} was reaped already", self.id),
            ));
        }
        let pid = libc::pid_t::try_from(self.child.id()).expect("pids fit in pid_t");
        // SAFETY: kill(2) on our own child, not reaped yet, so the pid cannot name another
        // process.
        if unsafe { libc::kill(pid, signal) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Kills the process with SIGKILL (paused or not) and reaps it; returns its exit status.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        self.child.kill()?;
        let status = self.child.wait()?;
        self.exit = Some(status);
        Ok(status)
    }

    /// Stops the process: SIGTERM, then SIGKILL if it still runs after `grace`.
    pub fn stop(&mut self, grace: Duration) -> io::Result<Stopped> {
        self.terminate();
        self.reap_by(Instant::now() + grace)
    }

    /// Sends SIGTERM unless the process was reaped.
    fn terminate(&mut self) {
        if self.exit.is_none() {
            // A process that exited but was not reaped yet ignores it; the reap follows.
            drop(self.signal(libc::SIGTERM));
        }
    }

    /// Waits for the process until `deadline`, then SIGKILLs it.
    fn reap_by(&mut self, deadline: Instant) -> io::Result<Stopped> {
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(Stopped {
                    status,
                    killed: false,
                });
            }
            if Instant::now() >= deadline {
                return Ok(Stopped {
                    status: self.kill()?,
                    killed: true,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits (up to [`DRAIN_MAX`]) until the output threads of an exited process have handed
    /// over everything it wrote.
    fn drain_output(&self) {
        let deadline = Instant::now() + DRAIN_MAX;
        while !self.readers.iter().all(JoinHandle::is_finished) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        // The output threads write whole lines under this lock.
        let _writers_done = self.copy_to.as_ref().map(|file| file.lock());
        log_tail(&self.log_path, lines)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let stopped = match self.drop_grace {
            Some(grace) => self.stop(grace).map(drop),
            None => self.kill().map(drop),
        };
        // Nothing more can be done about a child that cannot be waited for.
        drop(stopped);
    }
}

/// Waits up to `timeout` until every node of `nodes` printed its ready line, checking
/// `should_stop` (e.g. a signal flag) as it waits. Fails on the first node found exited, or the
/// first not ready at the timeout.
pub fn wait_all_ready(
    nodes: &mut [NodeProcess],
    timeout: Duration,
    should_stop: &dyn Fn() -> bool,
) -> Result<(), NotReady> {
    let deadline = Instant::now() + timeout;
    loop {
        if should_stop() {
            return Err(NotReady::Stopped);
        }
        let mut all_ready = true;
        for node in nodes.iter_mut() {
            if node.ready_line.is_none() {
                node.ready_line = node.ready_rx.try_recv().ok();
            }
            if node.ready_line.is_some() {
                continue;
            }
            all_ready = false;
            let id = node.id;
            match node.try_exit() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    node.drain_output();
                    // The line may have come just before the exit.
                    node.ready_line = node.ready_rx.try_recv().ok();
                    if node.ready_line.is_none() {
                        return Err(NotReady::Exited { id, status });
                    }
                }
                Err(error) => return Err(NotReady::Unwatchable { id, error }),
            }
        }
        if all_ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let node = nodes
                .iter()
                .find(|node| node.ready_line.is_none())
                .expect("one is not ready");
            return Err(NotReady::TimedOut {
                id: node.id,
                after: timeout,
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Stops every node of `nodes`: SIGTERM to all at once, then each gets the rest of `grace`
/// before SIGKILL. Returns how each ended, in order.
pub fn stop_all(nodes: &mut [NodeProcess], grace: Duration) -> Vec<(u64, io::Result<Stopped>)> {
    for node in nodes.iter_mut() {
        node.terminate();
    }
    let deadline = Instant::now() + grace;
    nodes
        .iter_mut()
        .map(|node| (node.id, node.reap_by(deadline)))
        .collect()
}

/// The last `lines` lines of the file at `path` (empty when it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        drop(file.read_to_string(&mut text));
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The ids of the live processes whose parent is process `parent` (from `/proc`): e.g. the nodes
/// a supervisor started, to check that none outlives it.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        // The process may be gone by now.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "PID (COMM) STATE PPID ...": the command name may hold spaces and parentheses.
        let Some(name_end) = stat.rfind(')') else {
            continue;
        };
        let ppid = stat[name_end + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|field| field.parse::<u32>().ok());
        if ppid == Some(parent) {
            children.push(pid);
        }
    }
    children
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake node: `/bin/sh -c SCRIPT`.
    fn fake(id: u64, dir: &Path, output: Output, script: &str) -> Launch {
        Launch::new(id, "/bin/sh", dir.join(format!("node-{id}.log")), output).args(["-c", script])
    }

    fn alive(pid: u32) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
    }

    #[test]
    fn ready_lines_are_recognized() {
        assert!(is_ready_line(
            "lockstep node 3 ready: peer 127.0.0.1:1 client 127.0.0.1:2",
            3
        ));
        assert!(!is_ready_line("lockstep node 31 ready: peer a client b", 3));
        assert!(!is_ready_line("lockstep node 3 starting", 3));
    }

    #[test]
    fn a_ready_node_is_stopped_by_sigterm_and_its_stderr_appended_across_runs() {
        let dir = tempfile::tempdir().unwrap();
        let script = "echo started >&2; echo 'lockstep node 2 ready: peer a client b'; \
                      exec sleep 60";
        for run in 1..=2 {
            let mut node = fake(2, dir.path(), Output::StderrAppended, script)
                .spawn()
                .unwrap();
            let line = node.wait_ready(Duration::from_secs(10)).unwrap();
            assert_eq!(line, "lockstep node 2 ready: peer a client b");
            assert!(alive(node.pid()));
            assert!(children_of(std::process::id()).contains(&node.pid()));
            let stopped = node.stop(STOP_GRACE).unwrap();
            // `sleep` dies of SIGTERM, well within the grace time.
            assert!(!stopped.killed && !stopped.status.success(), "{stopped:?}");
            assert_eq!(node.log_tail(10), vec!["started"; run].join("\n"));
        }
    }

    #[test]
    fn both_streams_are_copied_and_the_ready_line_may_come_on_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let script = "echo out; echo 'lockstep node 1 ready: peer a client b' >&2; exec sleep 60";
        let mut node = fake(1, dir.path(), Output::BothCopied, script)
            .spawn()
            .unwrap();
        node.wait_ready(Duration::from_secs(10)).unwrap();
        let pid = node.pid();
        let tail = node.log_tail(10);
        assert!(
            tail.contains("out") && tail.contains("node 1 ready"),
            "{tail}"
        );
        drop(node);
        assert!(!alive(pid));
    }

    #[test]
    fn a_node_that_exits_or_stays_silent_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = vec![
            fake(
                1,
                dir.path(),
                Output::StderrAppended,
                "echo 'lockstep node 1 ready: x'; exec sleep 60",
            )
            .spawn()
            .unwrap(),
            fake(
                2,
                dir.path(),
                Output::StderrAppended,
                "echo 'Address already in use' >&2; exit 3",
            )
            .spawn()
            .unwrap(),
        ];
        match wait_all_ready(&mut nodes, Duration::from_secs(10), &|| false) {
            Err(NotReady::Exited { id: 2, status }) => assert_eq!(status.code(), Some(3)),
            other => panic!("{other:?}"),
        }
        assert!(nodes[1].log_tail(5).contains("Address already in use"));

        let mut silent = vec![fake(3, dir.path(), Output::StderrAppended, "exec sleep 60")
            .stop_on_drop(STOP_GRACE)
            .spawn()
            .unwrap()];
        let start = Instant::now();
        match wait_all_ready(&mut silent, Duration::from_millis(200), &|| false) {
            Err(NotReady::TimedOut { id: 3, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            wait_all_ready(&mut silent, Duration::from_secs(10), &|| true),
            Err(NotReady::Stopped)
        ));
        let pid = silent[0].pid();
        drop(silent);
        // SIGTERM ended the sleep at once: no grace time was waited out.
        assert!(start.elapsed() < STOP_GRACE, "{:?}", start.elapsed());
        assert!(!alive(pid));
    }

    #[test]
    fn stop_all_terminates_every_node_and_kills_one_that_ignores_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = vec![
            fake(1, dir.path(), Output::StderrAppended, "exec sleep 60")
                .spawn()
                .unwrap(),
            fake(
                2,
                dir.path(),
                Output::StderrAppended,
                "trap '' TERM; while :; do sleep 1; done",
            )
            .spawn()
            .unwrap(),
        ];
        std::thread::sleep(Duration::from_millis(100));
        let stopped = stop_all(&mut nodes, Duration::from_millis(300));
        let killed: Vec<(u64, bool)> = stopped
            .iter()
            .map(|(id, stopped)| (*id, stopped.as_ref().unwrap().killed))
            .collect();
        assert_eq!(killed, [(1, false), (2, true)]);
        assert!(nodes.iter().all(|node| node.signal(libc::SIGCONT).is_err()));
    }
}
