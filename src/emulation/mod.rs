//! Whether this machine can run a platform's binaries: natively, or through a
//! binfmt_misc handler (qemu-user-static) registered with the F flag. RUN in a
//! foreign stage needs one; the plan asks here before anything is fetched.
//!
//! The F flag matters: the kernel then opens the interpreter when it is
//! registered, so it still runs once the RUN sandbox has pivoted into the
//! stage's root, where the interpreter's path does not exist.

mod probe;

use crate::image::spec::Platform;
use probe::Probe;
use std::path::Path;

/// Where the kernel shows its handlers.
pub(crate) const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

#[derive(Debug, thiserror::Error)]
pub enum EmulationError {
    #[error("RUN for {platform} needs an emulator, and Kiln does not know the ELF machine of architecture {arch:?}")]
    UnknownArch { platform: String, arch: String },
    #[error("RUN for {platform} needs an emulator: binfmt_misc is disabled ({how})")]
    Disabled { platform: String, how: &'static str },
    #[error("RUN for {platform} needs an emulator: no binfmt_misc handler for {arch} binaries is registered on this machine{seen} ({how})")]
    NoHandler {
        platform: String,
        arch: String,
        /// How that was found out, where binfmt_misc itself is hidden.
        seen: &'static str,
        how: &'static str,
    },
    #[error("RUN for {platform} needs an emulator: the binfmt_misc handler {name} is registered without the F flag, so the build's root hides its interpreter ({how})")]
    NoFixBinary {
        platform: String,
        name: String,
        how: &'static str,
    },
}

const HOW: &str = "register one with the F flag: `docker run --privileged --rm tonistiigi/binfmt --install all`, or Debian's qemu-user-static registered from /usr/lib/binfmt.d; in a cluster, a DaemonSet of tonistiigi/binfmt on the nodes. A stage FROM --platform=$BUILDPLATFORM that cross-compiles needs none";

/// The ELF identity of an architecture's executables: class (1 = 32-bit,
/// 2 = 64-bit), data (1 = little, 2 = big endian), e_machine, and qemu's name.
fn elf_of(arch: &str) -> Option<(u8, u8, u16, &'static str)> {
    Some(match arch {
        "amd64" => (2, 1, 62, "x86_64"),
        "386" => (1, 1, 3, "i386"),
        "arm64" => (2, 1, 183, "aarch64"),
        "arm" => (1, 1, 40, "arm"),
        "ppc64le" => (2, 1, 21, "ppc64le"),
        "s390x" => (2, 2, 22, "s390x"),
        "riscv64" => (2, 1, 243, "riscv64"),
        "mips64le" => (2, 1, 8, "mips64el"),
        "mips64" => (2, 2, 8, "mips64"),
        "loong64" => (2, 1, 258, "loongarch64"),
        _ => return None,
    })
}

/// The first 20 bytes of an executable of `arch` (ident, e_type EXEC, e_machine):
/// what the kernel matches a handler's magic against.
fn elf_header(class: u8, data: u8, machine: u16) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = class;
    h[5] = data;
    h[6] = 1;
    let (e_type, e_machine) = if data == 2 {
        (2u16.to_be_bytes(), machine.to_be_bytes())
    } else {
        (2u16.to_le_bytes(), machine.to_le_bytes())
    };
    h[16..18].copy_from_slice(&e_type);
    h[18..20].copy_from_slice(&e_machine);
    h
}

/// Whether this machine runs `arch` without help (x86-64 runs i386 too).
fn native(host: &Platform, arch: &str) -> bool {
    host.architecture == arch || (host.architecture == "amd64" && arch == "386")
}

/// One handler as `/proc/sys/fs/binfmt_misc/NAME` shows it.
struct Handler {
    enabled: bool,
    flags: String,
    offset: usize,
    magic: Vec<u8>,
    mask: Option<Vec<u8>>,
}

fn parse_handler(text: &str) -> Option<Handler> {
    let mut h = Handler {
        enabled: false,
        flags: String::new(),
        offset: 0,
        magic: Vec::new(),
        mask: None,
    };
    for line in text.lines() {
        match line.split_once(' ') {
            _ if line == "enabled" => h.enabled = true,
            Some(("flags:", f)) => h.flags = f.trim().to_string(),
            Some(("offset", o)) => h.offset = o.trim().parse().ok()?,
            Some(("magic", m)) => h.magic = hex::decode(m.trim()).ok()?,
            Some(("mask", m)) => h.mask = Some(hex::decode(m.trim()).ok()?),
            _ => {}
        }
    }
    // Extension handlers (`extension .exe`) have no magic: never an ELF's.
    (!h.magic.is_empty()).then_some(h)
}

impl Handler {
    /// The kernel's test: the masked bytes at `offset` equal the magic.
    fn matches(&self, header: &[u8]) -> bool {
        let Some(bytes) = header.get(self.offset..self.offset + self.magic.len()) else {
            return false;
        };
        bytes.iter().enumerate().all(|(i, b)| {
            let m = self.mask.as_ref().and_then(|m| m.get(i)).unwrap_or(&0xff);
            b & m == self.magic[i] & m
        })
    }
}

/// Whether RUN can execute `platform`'s binaries here: natively, or through an
/// enabled handler in `binfmt_dir` with the F flag. Where `binfmt_dir` is not
/// mounted (a container's /proc), a probe executable written in `scratch` asks
/// the kernel.
pub(crate) fn check(
    platform: &Platform,
    binfmt_dir: &Path,
    scratch: &Path,
) -> Result<(), EmulationError> {
    let arch = platform.architecture.as_str();
    if native(&Platform::host(), arch) {
        return Ok(());
    }
    let name = platform.to_string();
    let (class, data, machine, qemu) = elf_of(arch).ok_or_else(|| EmulationError::UnknownArch {
        platform: name.clone(),
        arch: arch.to_string(),
    })?;
    let header = elf_header(class, data, machine);
    let status = std::fs::read_to_string(binfmt_dir.join("status"));
    match status.as_deref().map(str::trim) {
        Ok("enabled") => {}
        Ok(_) => {
            return Err(EmulationError::Disabled {
                platform: name,
                how: "it is turned off: `echo 1 > /proc/sys/fs/binfmt_misc/status` on the node",
            })
        }
        // Not visible here: the kernel's answer decides.
        Err(_) => {
            return match probe::run(&probe::elf(class, data, machine), scratch) {
                Probe::Runs => Ok(()),
                Probe::NoHandler => Err(EmulationError::NoHandler {
                    platform: name,
                    arch: format!("{arch} ({qemu})"),
                    seen: " (one fails with `exec format error`; binfmt_misc itself is not visible here)",
                    how: HOW,
                }),
                Probe::NoInterpreter => Err(EmulationError::NoFixBinary {
                    platform: name,
                    name: format!("for {qemu}"),
                    how: HOW,
                }),
                Probe::Unknown(why) => {
                    crate::log_warn!(
                        "cannot tell whether {name} binaries run here ({why}): a RUN without an emulator fails with `exec format error`"
                    );
                    Ok(())
                }
            };
        }
    }
    let mut without_f = None;
    // An unreadable directory reads as "no handler": the error says what to do.
    let entries = std::fs::read_dir(binfmt_dir)
        .into_iter()
        .flatten()
        .flatten();
    for e in entries {
        let file = e.file_name().to_string_lossy().into_owned();
        if file == "status" || file == "register" {
            continue;
        }
        let Some(h) = std::fs::read_to_string(e.path())
            .ok()
            .and_then(|t| parse_handler(&t))
        else {
            continue;
        };
        if !h.enabled || !h.matches(&header) {
            continue;
        }
        if h.flags.contains('F') {
            return Ok(());
        }
        without_f = Some(file);
    }
    Err(match without_f {
        Some(name_f) => EmulationError::NoFixBinary {
            platform: name,
            name: name_f,
            how: HOW,
        },
        None => EmulationError::NoHandler {
            platform: name,
            arch: format!("{arch} ({qemu})"),
            seen: "",
            how: HOW,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    fn dir_with(entries: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("status"), "enabled\n").unwrap();
        for (n, t) in entries {
            std::fs::write(d.path().join(n), t).unwrap();
        }
        d
    }

    fn arm64() -> Platform {
        Platform::parse("linux/arm64").unwrap()
    }

    #[test]
    fn a_registered_handler_with_f_runs_arm64() {
        let d = dir_with(&[("qemu-aarch64", AARCH64)]);
        check(&arm64(), d.path(), d.path()).unwrap();
    }

    #[test]
    fn no_handler_names_the_platform_and_how() {
        let d = dir_with(&[("qemu-aarch64", AARCH64)]);
        let e = check(&Platform::parse("linux/s390x").unwrap(), d.path(), d.path()).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("linux/s390x"), "{text}");
        assert!(text.contains("tonistiigi/binfmt"), "{text}");
    }

    #[test]
    fn a_handler_without_f_is_named() {
        let d = dir_with(&[("qemu-aarch64", &AARCH64.replace("POF", "PO"))]);
        let e = check(&arm64(), d.path(), d.path()).unwrap_err();
        assert!(matches!(e, EmulationError::NoFixBinary { .. }), "{e}");
    }

    #[test]
    fn a_disabled_handler_or_binfmt_misc_is_none() {
        let d = dir_with(&[("qemu-aarch64", &AARCH64.replace("enabled\n", "disabled\n"))]);
        assert!(matches!(
            check(&arm64(), d.path(), d.path()),
            Err(EmulationError::NoHandler { .. })
        ));
        std::fs::write(d.path().join("status"), "disabled\n").unwrap();
        assert!(matches!(
            check(&arm64(), d.path(), d.path()),
            Err(EmulationError::Disabled { .. })
        ));
    }

    #[test]
    fn the_host_and_i386_need_nothing() {
        let empty = tempfile::tempdir().unwrap();
        check(&Platform::host(), empty.path(), empty.path()).unwrap();
        if Platform::host().architecture == "amd64" {
            check(
                &Platform::parse("linux/386").unwrap(),
                empty.path(),
                empty.path(),
            )
            .unwrap();
        }
    }

    #[test]
    fn big_endian_headers_put_the_machine_big_endian() {
        let h = elf_header(2, 2, 22);
        assert_eq!(&h[16..20], &[0, 2, 0, 22]);
    }
}
