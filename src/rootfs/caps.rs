//! What the executor may do to files, read from its effective capabilities: root
//! in a Pod with `drop: [ALL]` may not chown, and an unprivileged user in a user
//! namespace may. Deciding by uid gets both wrong.

/// Capability bits (linux/capability.h).
const CAP_CHOWN: u32 = 0;
const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_MKNOD: u32 = 27;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileCaps {
    /// Give files any owner.
    pub(crate) chown: bool,
    /// Write into directories whatever their mode.
    pub(crate) dac_override: bool,
    /// Create device nodes.
    pub(crate) mknod: bool,
}

impl FileCaps {
    /// This process's effective set (`CapEff` in /proc/self/status); none if unreadable.
    pub(crate) fn effective() -> FileCaps {
        let eff = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| parse_cap_eff(&s))
            .unwrap_or(0);
        FileCaps::from_mask(eff)
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn none() -> FileCaps {
        FileCaps::from_mask(0)
    }

    fn from_mask(eff: u64) -> FileCaps {
        let has = |bit: u32| eff & (1u64 << bit) != 0;
        FileCaps {
            chown: has(CAP_CHOWN),
            dac_override: has(CAP_DAC_OVERRIDE),
            mknod: has(CAP_MKNOD),
        }
    }
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_set() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\n";
        let caps = FileCaps::from_mask(parse_cap_eff(status).unwrap());
        // Docker's default set: chown, dac_override and mknod are in it.
        assert_eq!(
            caps,
            FileCaps {
                chown: true,
                dac_override: true,
                mknod: true
            }
        );
        let dropped = FileCaps::from_mask(parse_cap_eff("CapEff:\t0000000000000000\n").unwrap());
        assert_eq!(dropped, FileCaps::none());
    }
}
