//! Log lines on stderr: `LEVEL message` as text, or one JSON object per line
//! (`--log-format json`) for log collectors. The format and level are process-wide
//! settings, chosen once at start-up.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);
/// Kaniko's `color` format on a terminal: the level word in color.
static COLOR: AtomicBool = AtomicBool::new(false);
/// The least level printed, as `Level as u8`.
static LEAST: AtomicU8 = AtomicU8::new(Level::Info as u8);
/// `--log-timestamp`: text lines start with their time.
static TIMESTAMP: AtomicBool = AtomicBool::new(false);
/// A command's output ended without its newline: the next line starts anew.
static OPEN_LINE: AtomicBool = AtomicBool::new(false);

/// An error and its causes on one line. Causes whose text an outer message already
/// carries (the `"{op}: {source}"` pattern) are not repeated.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let msg = cause.to_string();
        if !msg.is_empty() && !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        next = cause.source();
    }
    out
}

/// Public because the exported `log_*!` macros expand to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    /// Text with the level word in color (meant for terminals only).
    Color,
    Json,
}

/// Chooses the format, the least level shown, and whether text lines carry
/// their time.
pub fn configure(format: Format, least: Level, timestamp: bool) {
    JSON.store(format == Format::Json, Ordering::Relaxed);
    COLOR.store(format == Format::Color, Ordering::Relaxed);
    LEAST.store(least as u8, Ordering::Relaxed);
    TIMESTAMP.store(timestamp, Ordering::Relaxed);
}

pub(crate) fn debug_enabled() -> bool {
    LEAST.load(Ordering::Relaxed) <= Level::Debug as u8
}

/// Writes one line; called through the exported `log_*!` macros.
pub fn emit(level: Level, msg: std::fmt::Arguments<'_>) {
    emit_with(level, msg, serde_json::Value::Null)
}

/// Writes one line; with JSON logs, `fields` (an object) joins `level`, `msg`
/// and `time`, so a collector reads numbers without parsing the message.
pub(crate) fn emit_with(level: Level, msg: std::fmt::Arguments<'_>, fields: serde_json::Value) {
    if (level as u8) < LEAST.load(Ordering::Relaxed) {
        return;
    }
    let line = if JSON.load(Ordering::Relaxed) {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut obj =
            serde_json::json!({ "level": level.name(), "msg": msg.to_string(), "time": t });
        if let (Some(o), serde_json::Value::Object(extra)) = (obj.as_object_mut(), fields) {
            for (k, v) in extra {
                o.entry(k).or_insert(v);
            }
        }
        obj.to_string()
    } else {
        let word = level.name().to_ascii_uppercase();
        let word = if COLOR.load(Ordering::Relaxed) {
            let code = match level {
                Level::Debug => 90,
                Level::Info => 36,
                Level::Warn => 33,
                Level::Error => 31,
            };
            format!("\x1b[{code}m{word}\x1b[0m")
        } else {
            word
        };
        if TIMESTAMP.load(Ordering::Relaxed) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            format!("{} {word} {msg}", crate::times::rfc3339(now))
        } else {
            format!("{word} {msg}")
        }
    };
    // A command's line left open (output without its newline yet) is ended
    // first; the terminal view puts the line above its bars.
    if OPEN_LINE.swap(false, Ordering::Relaxed) {
        crate::progress::write(b"\n");
    }
    crate::progress::write(format!("{line}\n").as_bytes());
}

/// A RUN command's output (its stdout and stderr through one pipe), written
/// to stderr as it comes: whole lines at once, above the terminal view's
/// bars, so neither is glued to the other; a line the command leaves
/// open for a while is written as it stands (see [`CommandOutput::flush`]).
#[derive(Default)]
pub(crate) struct CommandOutput {
    pending: Vec<u8>,
}

impl CommandOutput {
    /// Takes bytes the command wrote; writes every line they complete.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        // A line longer than this is written in pieces rather than held.
        const MOST: usize = 64 << 10;
        let cut = match self.pending.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if self.pending.len() >= MOST => self.pending.len(),
            None => return,
        };
        let rest = self.pending.split_off(cut);
        let lines = std::mem::replace(&mut self.pending, rest);
        write_output(&lines);
    }

    /// Writes what is pending of an unfinished line (the command is quiet for
    /// a while: a prompt, dots of progress); a log line coming next ends it.
    pub(crate) fn flush(&mut self) {
        if !self.pending.is_empty() {
            write_output(&std::mem::take(&mut self.pending));
        }
    }

    /// The command is done: what is left, and its line ended.
    pub(crate) fn finish(mut self) {
        self.flush();
        if OPEN_LINE.swap(false, Ordering::Relaxed) {
            crate::progress::write(b"\n");
        }
    }

    /// Whether part of a line is held back.
    pub(crate) fn pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// Reads a RUN's output from the pipe on a thread of its own and writes it
/// through the log module as it comes: whole lines, and an unfinished line
/// once the command has been quiet for 100 ms. The receiver hears when the
/// pipe is closed and everything is written.
pub(crate) fn relay_output(reader: std::io::PipeReader) -> std::sync::mpsc::Receiver<()> {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::io::Read;
        use std::os::fd::AsFd;
        let mut out = CommandOutput::default();
        let mut reader = reader;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            if out.pending() {
                let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
                if let Ok(0) = poll(&mut fds, PollTimeout::from(100u16)) {
                    out.flush();
                    continue;
                }
            }
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.feed(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        out.finish();
        let _ = done.send(());
    });
    finished
}

fn write_output(bytes: &[u8]) {
    crate::progress::write(bytes);
    OPEN_LINE.store(!bytes.ends_with(b"\n"), Ordering::Relaxed);
}

#[macro_export]
macro_rules! log_info {
    ($($t:tt)*) => { $crate::log::emit($crate::log::Level::Info, format_args!($($t)*)) };
}

#[macro_export]
macro_rules! log_warn {
    ($($t:tt)*) => { $crate::log::emit($crate::log::Level::Warn, format_args!($($t)*)) };
}

#[macro_export]
macro_rules! log_debug {
    ($($t:tt)*) => { $crate::log::emit($crate::log::Level::Debug, format_args!($($t)*)) };
}

#[macro_export]
macro_rules! log_error {
    ($($t:tt)*) => { $crate::log::emit($crate::log::Level::Error, format_args!($($t)*)) };
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("{op}: {source}")]
    struct Outer {
        op: String,
        source: std::io::Error,
    }

    #[test]
    fn one_line_does_not_repeat_causes() {
        let inner = std::io::Error::other("disk on fire");
        let e = Outer {
            op: "writing x".into(),
            source: inner,
        };
        assert_eq!(super::one_line(&e), "writing x: disk on fire");
    }
}
