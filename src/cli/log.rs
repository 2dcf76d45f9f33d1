//! The log as the flags ask for it.

use super::{Cli, LogFormat, Progress};

impl Cli {
    /// The log's format and level (Kaniko's default: color on a terminal, text
    /// elsewhere), and a notice for a `--progress` Kiln reads its own way.
    pub fn configure_log(&self) {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let format = match self.log_format {
            _ if self.json_log() => kiln::log::Format::Json,
            LogFormat::Color if terminal => kiln::log::Format::Color,
            _ => kiln::log::Format::Text,
        };
        kiln::log::configure(format, self.verbosity.level(), self.log_timestamp);
        match self.progress {
            Progress::Rawjson => kiln::log_info!(
                "--progress=rawjson: Kiln writes its own JSON log lines (as --log-format=json), not BuildKit's raw solve status"
            ),
            Progress::Tty if self.json_log() => kiln::log_info!(
                "--progress=tty: no terminal view among JSON log lines"
            ),
            _ => {}
        }
    }
}
