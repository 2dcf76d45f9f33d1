//! Owners the traced command asked for and the kernel could not give: an
//! unprivileged tracee's files are all its own uid's, so `chown` is
//! remembered here by inode instead of made, `stat` answers from here, and
//! the layer writer reads the table back ([`read`]) to write the owners the
//! command asked for, as a root-run step's layer would carry them.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// An inode: (st_dev, st_ino).
pub(crate) type Inode = (u64, u64);

/// Owners by inode, and the identity the kernel gives every file the step
/// makes (which stands for root's own).
pub(super) struct Owners {
    table: HashMap<Inode, (u32, u32)>,
    real: (u32, u32),
}

impl Owners {
    pub fn new(real: (u32, u32)) -> Owners {
        Owners {
            table: HashMap::new(),
            real,
        }
    }

    /// The owner the step sees for a file the kernel says `uid:gid` owns.
    pub fn owner(&self, inode: Inode, uid: u32, gid: u32) -> (u32, u32) {
        self.table
            .get(&inode)
            .copied()
            .unwrap_or_else(|| seen(self.real, uid, gid))
    }

    pub fn set(&mut self, inode: Inode, uid: u32, gid: u32) {
        self.table.insert(inode, (uid, gid));
    }

    /// Written for the layer writer: one `dev ino uid gid` line each.
    pub fn save(&self, file: &Path) -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(file)?);
        for ((dev, ino), (uid, gid)) in &self.table {
            writeln!(f, "{dev} {ino} {uid} {gid}")?;
        }
        f.flush()
    }
}

/// The owner a file made by the step's own uid stands for: root's.
pub(crate) fn seen(real: (u32, u32), uid: u32, gid: u32) -> (u32, u32) {
    (
        if uid == real.0 { 0 } else { uid },
        if gid == real.1 { 0 } else { gid },
    )
}

/// The table a traced step left.
pub(crate) fn read(file: &Path) -> HashMap<Inode, (u32, u32)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ').map(str::parse::<u64>);
            let (dev, ino, uid, gid) = (
                f.next()?.ok()?,
                f.next()?.ok()?,
                f.next()?.ok()?,
                f.next()?.ok()?,
            );
            Some((
                (dev, ino),
                (u32::try_from(uid).ok()?, u32::try_from(gid).ok()?),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_reads_back_and_defaults_to_root() {
        let mut o = Owners::new((65532, 65532));
        o.set((1, 2), 1000, 100);
        assert_eq!(o.owner((1, 2), 65532, 65532), (1000, 100));
        assert_eq!(o.owner((1, 3), 65532, 65532), (0, 0));
        assert_eq!(o.owner((1, 3), 7, 65532), (7, 0));
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("owners");
        o.save(&f).unwrap();
        assert_eq!(read(&f).get(&(1, 2)), Some(&(1000, 100)));
    }
}
