//! Running one command on one node, over any transport: how the command
//! line is built (quoting, `sudo`, the remote timeout, a fixed locale),
//! how input is fed, how output streams to a [`Sink`] while only a bounded
//! head and tail are kept, and how a command that runs too long is killed.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::quote::quote;
use crate::secret::Secret;

/// The environment variable `sudo`'s password is read from.
pub const SUDO_PASSWORD_ENV: &str = "KILN_SUDO_PASSWORD";

/// sudo's prompt, which kiln answers (`sudo -S -p …`). No `%`: sudo
/// expands those.
const SUDO_PROMPT: &str = "[kiln-sudo-prompt]";
/// Printed on stderr by the command once sudo let it run: from here on
/// stdin belongs to the command and stderr is the command's.
const SUDO_READY: &str = "[kiln-sudo-ready]";
/// stderr held while waiting for sudo's markers: beyond it, all but a
/// marker's length goes on to the capture and the sink, so what a node
/// prints before sudo lets the command run is neither hoarded nor scanned
/// again with every chunk.
const SUDO_PENDING: usize = 4 << 10;
/// Grace after a timeout for the remote `timeout` to kill and report,
/// before kiln kills the channel itself.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// A command to run on a node.
#[derive(Clone, Debug)]
pub struct RemoteCommand {
    /// The shell script, run by the login shell (or `sh -c`).
    pub script: String,
    /// Run as root through `sudo`.
    pub sudo: bool,
    /// Kill the command (its whole process group) after this long.
    pub timeout: Option<Duration>,
    /// Run with `LC_ALL=C`, so parsers and output grouping see the same
    /// text on every node.
    pub fixed_locale: bool,
    /// What errors show instead of the script, for a command that holds
    /// a secret ([`RemoteCommand::sensitive`]).
    pub label: Option<String>,
}

impl RemoteCommand {
    /// A shell script, as an operator types it.
    pub fn shell(script: impl Into<String>) -> RemoteCommand {
        RemoteCommand {
            script: script.into(),
            sudo: false,
            timeout: None,
            fixed_locale: true,
            label: None,
        }
    }

    /// A program and its arguments, each quoted: no value can add shell
    /// syntax.
    pub fn argv<S: AsRef<str>>(args: &[S]) -> RemoteCommand {
        RemoteCommand::shell(super::quote::join(args))
    }

    /// Runs it as root with `sudo`.
    pub fn sudo(mut self, on: bool) -> RemoteCommand {
        self.sudo = on;
        self
    }

    /// Marks the script as holding a secret: errors, logs and reports name
    /// it as `label`, never by its text. Better still, pass the secret on
    /// stdin ([`Input::Bytes`]) so it is not in the script at all.
    pub fn sensitive(mut self, label: impl Into<String>) -> RemoteCommand {
        self.label = Some(label.into());
        self
    }

    /// The command as messages show it: the script, or its label when it
    /// is sensitive.
    pub fn shown(&self) -> String {
        match &self.label {
            Some(label) => format!("{label} (script not shown)"),
            None => self.script.clone(),
        }
    }

    /// Kills it after `d`.
    pub fn timeout(mut self, d: Option<Duration>) -> RemoteCommand {
        self.timeout = d;
        self
    }

    /// The command line sent to the node. The script always runs under
    /// coreutils `timeout` (with no limit when none is asked for): it puts
    /// itself in a new process group and passes its deadline, or a TERM
    /// kiln sends on Ctrl-C, to the whole group, so children die too. sudo
    /// reads its password from stdin after a prompt kiln recognises.
    pub fn wire(&self) -> String {
        let mut inner = String::new();
        if self.sudo {
            inner.push_str(&format!("printf '%s\\n' {} >&2; ", quote(SUDO_READY)));
        }
        if self.fixed_locale {
            inner.push_str("LC_ALL=C; export LC_ALL; ");
        }
        inner.push_str(&self.script);
        // `exec`: the login shell becomes sudo or timeout, so a signal to
        // the session (sshd's killpg) reaches the command's group.
        let mut wire = String::from("exec ");
        if self.sudo {
            wire.push_str(&format!("sudo -S -p {} -- ", quote(SUDO_PROMPT)));
        }
        let limit = self
            .timeout
            .map_or_else(|| "0".to_owned(), |t| format!("{:.3}", t.as_secs_f64()));
        wire.push_str(&format!("timeout -k {} {limit} ", KILL_GRACE.as_secs()));
        wire.push_str("sh -c ");
        wire.push_str(&quote(&inner));
        wire
    }
}

/// What to feed the command's stdin.
#[derive(Clone, Debug, Default)]
pub enum Input {
    /// Nothing (stdin is closed at once).
    #[default]
    None,
    /// These bytes.
    Bytes(Bytes),
    /// This local file, streamed.
    File(PathBuf),
}

/// Which output stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

/// Where output goes as it arrives.
pub trait Sink: Send {
    /// A chunk of output (not split at lines).
    fn output(&mut self, stream: Stream, data: &[u8]);
}

/// A sink that drops everything (output is still captured).
pub struct Discard;

impl Sink for Discard {
    fn output(&mut self, _: Stream, _: &[u8]) {}
}

/// How much output to keep and how to answer sudo.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// Bytes kept from the start of each stream (for `--json` and grouping).
    pub head: usize,
    /// Bytes kept from the end of each stream (for error messages).
    pub tail: usize,
    /// sudo's password, when it asks for one.
    pub sudo_password: Option<Secret>,
    /// Set to true to stop the command (Ctrl-C): it gets a TERM, then a
    /// KILL and its channel is closed 2 s later. OpenSSH delivers signals
    /// only to sessions under privilege separation, which it skips for root
    /// logins: there, a command without a timeout keeps running.
    pub cancel: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            head: 1 << 20,
            tail: 64 << 10,
            sudo_password: None,
            cancel: None,
        }
    }
}

/// One stream's output, bounded: the first `head` bytes, the last `tail`
/// bytes, and the total. A 100 GB log costs at most head + tail of memory.
#[derive(Clone, Debug, Default)]
pub struct Captured {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    head_cap: usize,
    tail_cap: usize,
    /// Bytes seen in all.
    pub total: u64,
}

impl Captured {
    /// Keeps `head` bytes from the start and `tail` from the end.
    pub fn new(head: usize, tail: usize) -> Captured {
        Captured {
            head_cap: head,
            tail_cap: tail,
            ..Captured::default()
        }
    }

    /// Adds a chunk.
    pub fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.head_cap.saturating_sub(self.head.len());
        let n = room.min(data.len());
        self.head.extend_from_slice(&data[..n]);
        data = &data[n..];
        if data.len() >= self.tail_cap {
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.tail_cap..]);
        } else {
            let overflow = (self.tail.len() + data.len()).saturating_sub(self.tail_cap);
            self.tail.drain(..overflow);
            self.tail.extend(data);
        }
    }

    /// Whether more was seen than the head keeps.
    pub fn truncated(&self) -> bool {
        self.total > self.head.len() as u64
    }

    /// The head, as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    /// The head's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.head
    }

    /// The last bytes seen (up to the tail size), as text.
    pub fn tail_text(&self) -> String {
        if self.tail.is_empty() {
            let start = self.head.len().saturating_sub(self.tail_cap);
            return String::from_utf8_lossy(&self.head[start..]).into_owned();
        }
        let (a, b) = self.tail.as_slices();
        let mut v = Vec::with_capacity(a.len() + b.len());
        v.extend_from_slice(a);
        v.extend_from_slice(b);
        String::from_utf8_lossy(&v).into_owned()
    }

    /// Bytes held in memory.
    pub fn held(&self) -> usize {
        self.head.capacity() + self.tail.capacity()
    }
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// An exit status.
    Code(u32),
    /// Killed by a signal (its name).
    Signal(String),
    /// The channel closed without a status.
    Unknown,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The shell's own codes: the tool is missing or cannot run.
            Exit::Code(127) => f.write_str("exit status 127: command not found"),
            Exit::Code(126) => f.write_str("exit status 126: not executable"),
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "killed by SIG{s}"),
            Exit::Unknown => f.write_str("no exit status"),
        }
    }
}

/// A finished command.
#[derive(Clone, Debug)]
pub struct Output {
    /// How it ended.
    pub exit: Exit,
    /// It ran past its timeout and was killed.
    pub timed_out: bool,
    /// It was stopped by an interrupt (Ctrl-C).
    pub interrupted: bool,
    /// stdout, bounded.
    pub stdout: Captured,
    /// stderr, bounded.
    pub stderr: Captured,
    /// Wall time.
    pub duration: Duration,
}

impl Output {
    /// Exit status 0 and no timeout.
    pub fn success(&self) -> bool {
        self.exit == Exit::Code(0) && !self.timed_out && !self.interrupted
    }

    /// A short description of how it ended.
    pub fn outcome(&self) -> String {
        if self.interrupted {
            "interrupted".into()
        } else if self.timed_out {
            "timed out and was killed".into()
        } else {
            self.exit.to_string()
        }
    }

    /// The output if it succeeded, else a [`CommandFailed`] naming the node,
    /// the command, how it ended and the tail of its output.
    pub fn check(self, node: &str, command: &RemoteCommand) -> Result<Output, CommandFailed> {
        if self.success() {
            return Ok(self);
        }
        Err(CommandFailed {
            node: node.to_owned(),
            command: command.shown(),
            outcome: self.outcome(),
            stdout_tail: last_lines(&self.stdout.tail_text(), 10),
            stderr_tail: last_lines(&self.stderr.tail_text(), 10),
        })
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A remote command that failed: what ran where, how it ended, and the end
/// of what it printed.
#[derive(Debug, thiserror::Error)]
#[error(
    "{node}: `{command}` failed: {outcome}{}{}",
    section("stdout", stdout_tail),
    section("stderr", stderr_tail)
)]
pub struct CommandFailed {
    /// Node.
    pub node: String,
    /// The command as given (before wrapping).
    pub command: String,
    /// How it ended.
    pub outcome: String,
    /// The last lines of stdout.
    pub stdout_tail: String,
    /// The last lines of stderr.
    pub stderr_tail: String,
}

fn section(name: &str, text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(
            "\n  {name} (last lines):\n    {}",
            text.replace('\n', "\n    ")
        )
    }
}

/// A command that could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Could not connect or log in.
    #[error(transparent)]
    Connect(Box<super::session::SshError>),
    /// The connection died while the command ran; it may still be running.
    #[error("{node} ({addr}): connection lost while running `{command}`")]
    Dropped {
        /// Node.
        node: String,
        /// Address.
        addr: String,
        /// The command.
        command: String,
    },
    /// The server refused to run it or the channel failed.
    #[error("{node} ({addr}): cannot run `{command}`: {why}")]
    Refused {
        /// Node.
        node: String,
        /// Address.
        addr: String,
        /// The command.
        command: String,
        /// Why.
        why: String,
    },
    /// sudo wants a password and none was given.
    #[error("{node}: sudo asks for a password; set {SUDO_PASSWORD_ENV}")]
    SudoNeedsPassword {
        /// Node.
        node: String,
    },
    /// sudo refused the password.
    #[error("{node}: sudo refused the password from {SUDO_PASSWORD_ENV}")]
    SudoRefused {
        /// Node.
        node: String,
    },
    /// The input could not be read.
    #[error("{node}: cannot read {path}")]
    Input {
        /// Node.
        node: String,
        /// The local file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not run: kiln was interrupted before it started.
    #[error("{node}: not run (interrupted)")]
    Interrupted {
        /// Node.
        node: String,
    },
    /// A local command could not be started.
    #[error("cannot start a local shell")]
    Spawn(#[source] std::io::Error),
}

impl From<super::session::SshError> for ExecError {
    fn from(e: super::session::SshError) -> ExecError {
        ExecError::Connect(Box::new(e))
    }
}

/// What a running process reports, whatever the transport.
pub(crate) enum Event {
    /// Output.
    Data(Stream, Bytes),
    /// How it ended (output may still follow until `Closed`).
    Exit(Exit),
    /// The server refused the exec request.
    Refused,
    /// Finished: nothing more will come.
    Closed,
}

/// A running command, over SSH or locally.
pub(crate) trait Proc: Send {
    /// The next event; `None` means the transport died.
    fn next(&mut self) -> impl Future<Output = Option<Event>> + Send;
    /// Writes to stdin now (sudo's password).
    fn write(&mut self, data: Bytes) -> impl Future<Output = bool> + Send;
    /// Starts streaming `input` to stdin, then closes it; an error reading
    /// it is reported through the returned receiver.
    fn start_input(
        &mut self,
        input: Input,
    ) -> tokio::sync::oneshot::Receiver<(PathBuf, std::io::Error)>;
    /// Asks the command to stop (TERM, which `timeout` passes to its group).
    fn terminate(&mut self) -> impl Future<Output = ()> + Send;
    /// Kills the command.
    fn kill(&mut self) -> impl Future<Output = ()> + Send;
}

/// Where the command runs, for messages.
pub(crate) struct Where<'a> {
    pub node: &'a str,
    pub addr: &'a str,
}

enum SudoState {
    Off,
    Waiting { prompts: u32 },
    Ready,
}

/// Drives a started command to its end: streams output, answers sudo,
/// feeds input, enforces the timeout.
pub(crate) async fn drive<P: Proc>(
    at: Where<'_>,
    mut proc: P,
    cmd: &RemoteCommand,
    input: Input,
    sink: &mut dyn Sink,
    opts: &ExecOptions,
) -> Result<Output, ExecError> {
    let start = Instant::now();
    let mut stdout = Captured::new(opts.head, opts.tail);
    let mut stderr = Captured::new(opts.head, opts.tail);
    let mut sudo = if cmd.sudo {
        SudoState::Waiting { prompts: 0 }
    } else {
        SudoState::Off
    };
    let mut pending_err: Vec<u8> = Vec::new();
    let mut input = Some(input);
    let mut input_error = None;
    if !cmd.sudo {
        input_error = input.take().map(|i| proc.start_input(i));
    }
    let mut deadline = cmd.timeout.map(|t| start + t + KILL_GRACE);
    let mut exit = None;
    let mut timed_out = false;
    let mut interrupted = false;
    let mut cancel = opts.cancel.clone();
    let dropped = loop {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let armed = !interrupted;
        let cancelled = async {
            if let (Some(rx), true) = (&mut cancel, armed)
                && rx.wait_for(|c| *c).await.is_ok()
            {
                return;
            }
            std::future::pending::<()>().await;
        };
        let event = tokio::select! {
            e = proc.next() => e,
            () = sleep => {
                // The remote `timeout` should have fired already (or the
                // TERM after an interrupt should have worked); kill from
                // this side too (a missing `timeout`, a hung sudo).
                proc.kill().await;
                timed_out = !interrupted;
                break false;
            }
            () = cancelled => {
                proc.terminate().await;
                interrupted = true;
                deadline = Some(Instant::now() + Duration::from_secs(2));
                continue;
            }
        };
        match event {
            None => break true,
            Some(Event::Closed) => break false,
            Some(Event::Refused) => {
                return Err(ExecError::Refused {
                    node: at.node.to_owned(),
                    addr: at.addr.to_owned(),
                    command: cmd.shown(),
                    why: "the server refused the exec request".into(),
                });
            }
            Some(Event::Exit(e)) => exit = Some(e),
            Some(Event::Data(Stream::Stdout, data)) => {
                stdout.push(&data);
                sink.output(Stream::Stdout, &data);
            }
            Some(Event::Data(Stream::Stderr, data)) => {
                let SudoState::Waiting { prompts } = &mut sudo else {
                    stderr.push(&data);
                    sink.output(Stream::Stderr, &data);
                    continue;
                };
                pending_err.extend_from_slice(&data);
                if let Some(i) = find(&pending_err, SUDO_READY.as_bytes()) {
                    let mut end = i + SUDO_READY.len();
                    if pending_err.get(end) == Some(&b'\n') {
                        end += 1;
                    }
                    let mut rest = pending_err.split_off(end);
                    pending_err.truncate(i);
                    pending_err.append(&mut rest);
                    sudo = SudoState::Ready;
                    if !pending_err.is_empty() {
                        stderr.push(&pending_err);
                        sink.output(Stream::Stderr, &pending_err);
                        pending_err.clear();
                    }
                    input_error = input.take().map(|i| proc.start_input(i));
                } else if let Some(i) = find(&pending_err, SUDO_PROMPT.as_bytes()) {
                    pending_err.drain(i..i + SUDO_PROMPT.len());
                    *prompts += 1;
                    let password = match (&opts.sudo_password, *prompts) {
                        (None, _) => {
                            proc.kill().await;
                            return Err(ExecError::SudoNeedsPassword {
                                node: at.node.to_owned(),
                            });
                        }
                        (Some(_), 2..) => {
                            proc.kill().await;
                            return Err(ExecError::SudoRefused {
                                node: at.node.to_owned(),
                            });
                        }
                        (Some(p), _) => p,
                    };
                    let line = format!("{}\n", password.expose());
                    proc.write(Bytes::from(line)).await;
                }
                if matches!(sudo, SudoState::Waiting { .. }) && pending_err.len() > SUDO_PENDING {
                    // Keep what could be the start of a marker.
                    let keep = SUDO_READY.len().max(SUDO_PROMPT.len()) - 1;
                    let cut = pending_err.len() - keep;
                    stderr.push(&pending_err[..cut]);
                    sink.output(Stream::Stderr, &pending_err[..cut]);
                    pending_err.drain(..cut);
                }
            }
        }
    };
    if !pending_err.is_empty() {
        // sudo's own complaint ("not in the sudoers file"): show it.
        stderr.push(&pending_err);
        sink.output(Stream::Stderr, &pending_err);
    }
    if let Some(mut rx) = input_error
        && let Ok((path, source)) = rx.try_recv()
    {
        return Err(ExecError::Input {
            node: at.node.to_owned(),
            path,
            source,
        });
    }
    let duration = start.elapsed();
    if dropped && exit.is_none() {
        return Err(ExecError::Dropped {
            node: at.node.to_owned(),
            addr: at.addr.to_owned(),
            command: cmd.shown(),
        });
    }
    let exit = exit.unwrap_or(Exit::Unknown);
    // `timeout` exits 124 when it fired (137 when it had to KILL).
    if let Some(t) = cmd.timeout
        && duration >= t
        && matches!(exit, Exit::Code(124 | 137))
    {
        timed_out = true;
    }
    Ok(Output {
        exit,
        timed_out,
        interrupted,
        stdout,
        stderr,
        duration,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_keeps_head_and_tail_only() {
        let mut c = Captured::new(4, 3);
        for chunk in [&b"ab"[..], b"cdef", b"ghij", b"k"] {
            c.push(chunk);
        }
        assert_eq!(c.text(), "abcd");
        assert_eq!(c.tail_text(), "ijk");
        assert_eq!(c.total, 11);
        assert!(c.truncated());
        let mut small = Captured::new(10, 3);
        small.push(b"hello");
        assert_eq!(small.tail_text(), "llo");
        assert!(!small.truncated());
    }

    /// A command that prints `chunks` × 32 KiB on stderr before sudo's
    /// ready marker, then exits; it notes how much the sink had seen by then.
    struct Chatty {
        chunks: usize,
        seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        seen_at_end: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        step: usize,
    }

    impl Proc for Chatty {
        async fn next(&mut self) -> Option<Event> {
            use std::sync::atomic::Ordering::Relaxed;
            self.step += 1;
            Some(match self.step {
                n if n <= self.chunks => {
                    Event::Data(Stream::Stderr, Bytes::from(vec![b'x'; 32 << 10]))
                }
                n if n == self.chunks + 1 => {
                    self.seen_at_end.store(self.seen.load(Relaxed), Relaxed);
                    Event::Data(Stream::Stderr, Bytes::from_static(b"[kiln-sudo-ready]\n"))
                }
                n if n == self.chunks + 2 => Event::Exit(Exit::Code(0)),
                _ => Event::Closed,
            })
        }
        async fn write(&mut self, _: Bytes) -> bool {
            true
        }
        fn start_input(
            &mut self,
            _: Input,
        ) -> tokio::sync::oneshot::Receiver<(PathBuf, std::io::Error)> {
            tokio::sync::oneshot::channel().1
        }
        async fn terminate(&mut self) {}
        async fn kill(&mut self) {}
    }

    struct Counting(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Sink for Counting {
        fn output(&mut self, _: Stream, data: &[u8]) {
            self.0
                .fetch_add(data.len(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn output_before_sudo_is_ready_streams_instead_of_piling_up() {
        use std::sync::atomic::Ordering::Relaxed;
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen_at_end = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let chunks = 640; // 20 MiB
        let proc = Chatty {
            chunks,
            seen: seen.clone(),
            seen_at_end: seen_at_end.clone(),
            step: 0,
        };
        let cmd = RemoteCommand::shell("true").sudo(true);
        let at = Where {
            node: "n1",
            addr: "test",
        };
        let start = Instant::now();
        let out = drive(
            at,
            proc,
            &cmd,
            Input::None,
            &mut Counting(seen.clone()),
            &ExecOptions::default(),
        )
        .await
        .unwrap();
        assert!(out.success());
        let total = chunks * (32 << 10);
        assert!(
            seen_at_end.load(Relaxed) + SUDO_PENDING + (32 << 10) >= total,
            "only {} of {total} bytes passed on while waiting for sudo",
            seen_at_end.load(Relaxed)
        );
        assert_eq!(out.stderr.total, total as u64);
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn wire_forms() {
        let plain = RemoteCommand::shell("uname -r");
        assert_eq!(
            plain.wire(),
            "exec timeout -k 5 0 sh -c 'LC_ALL=C; export LC_ALL; uname -r'"
        );
        let t = RemoteCommand::shell("sleep 9").timeout(Some(Duration::from_millis(1500)));
        assert_eq!(
            t.wire(),
            "exec timeout -k 5 1.500 sh -c 'LC_ALL=C; export LC_ALL; sleep 9'"
        );
        let s = RemoteCommand::argv(&["cat", "/etc/it's"]).sudo(true);
        assert!(
            s.wire()
                .starts_with("exec sudo -S -p '[kiln-sudo-prompt]' -- timeout -k 5 0 sh -c ")
        );
    }
}
