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

/// An owner recorded for an inode, with the inode's birth time: a file made
/// after the recorded one was removed may get its inode number again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) born: Option<u128>,
}

/// An inode's birth time (statx's btime), in nanoseconds.
pub(crate) fn born(m: &std::fs::Metadata) -> Option<u128> {
    Some(
        m.created()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_nanos(),
    )
}

/// Owners by inode, and the identity the kernel gives every file the step
/// makes (which stands for root's own).
pub(super) struct Owners {
    table: HashMap<Inode, Owner>,
    /// File capabilities set (security.capability), which the kernel keeps
    /// for CAP_SETFCAP: the value and the file's birth time.
    caps: HashMap<Inode, (Vec<u8>, Option<u128>)>,
    real: (u32, u32),
}

impl Owners {
    pub(crate) fn new(real: (u32, u32)) -> Owners {
        Owners {
            table: HashMap::new(),
            caps: HashMap::new(),
            real,
        }
    }

    /// The owner the step sees for a file the kernel says `uid:gid` owns;
    /// `born` gives the file's birth time when the table has its inode.
    pub(crate) fn owner(
        &self,
        inode: Inode,
        uid: u32,
        gid: u32,
        born: impl FnOnce() -> Option<u128>,
    ) -> (u32, u32) {
        lookup(&self.table, inode, born).unwrap_or_else(|| seen(self.real, uid, gid))
    }

    pub(crate) fn set(&mut self, inode: Inode, uid: u32, gid: u32, born: Option<u128>) {
        self.table.insert(inode, Owner { uid, gid, born });
    }

    pub(crate) fn set_cap(&mut self, inode: Inode, value: Vec<u8>, born: Option<u128>) {
        self.caps.insert(inode, (value, born));
    }

    /// The capability xattr recorded for the file now at `inode`.
    pub(crate) fn cap(&self, inode: Inode, born: impl FnOnce() -> Option<u128>) -> Option<&[u8]> {
        let (v, b) = self.caps.get(&inode)?;
        (b.is_none() || *b == born()).then_some(v.as_slice())
    }

    /// Written for the layer writer: `o dev ino uid gid born` per owner,
    /// `c dev ino born hex` per capability.
    pub(crate) fn save(&self, file: &Path) -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(file)?);
        let text = |b: Option<u128>| b.map_or("-".to_string(), |b| b.to_string());
        for ((dev, ino), o) in &self.table {
            writeln!(f, "o {dev} {ino} {} {} {}", o.uid, o.gid, text(o.born))?;
        }
        for ((dev, ino), (v, born)) in &self.caps {
            writeln!(f, "c {dev} {ino} {} {}", text(*born), hex::encode(v))?;
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

/// The recorded owner of an inode, unless the file there now was born after
/// the one recorded.
pub(crate) fn lookup(
    table: &HashMap<Inode, Owner>,
    inode: Inode,
    born: impl FnOnce() -> Option<u128>,
) -> Option<(u32, u32)> {
    let o = table.get(&inode)?;
    (o.born.is_none() || o.born == born()).then_some((o.uid, o.gid))
}

/// What a traced step left: owners and capabilities by inode.
#[derive(Default)]
pub(crate) struct Table {
    pub(crate) owners: HashMap<Inode, Owner>,
    pub(crate) caps: HashMap<Inode, (Vec<u8>, Option<u128>)>,
}

/// The table a traced step left.
pub(crate) fn read(file: &Path) -> Table {
    let mut t = Table::default();
    for l in std::fs::read_to_string(file).unwrap_or_default().lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let inode = |d: &str, i: &str| Some((d.parse().ok()?, i.parse().ok()?));
        match f.as_slice() {
            ["o", dev, ino, uid, gid, born] => {
                let (Some(k), Ok(uid), Ok(gid)) = (inode(dev, ino), uid.parse(), gid.parse())
                else {
                    continue;
                };
                let born = born.parse().ok();
                t.owners.insert(k, Owner { uid, gid, born });
            }
            ["c", dev, ino, born, value] => {
                if let (Some(k), Ok(v)) = (inode(dev, ino), hex::decode(value)) {
                    t.caps.insert(k, (v, born.parse().ok()));
                }
            }
            _ => {}
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_reads_back_and_defaults_to_root() {
        let mut o = Owners::new((65532, 65532));
        o.set((1, 2), 1000, 100, Some(5));
        assert_eq!(o.owner((1, 2), 65532, 65532, || Some(5)), (1000, 100));
        // The inode reused by a file born later.
        assert_eq!(o.owner((1, 2), 65532, 65532, || Some(6)), (0, 0));
        assert_eq!(o.owner((1, 3), 65532, 65532, || None), (0, 0));
        assert_eq!(o.owner((1, 3), 7, 65532, || None), (7, 0));
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("owners");
        o.save(&f).unwrap();
        assert_eq!(
            lookup(&read(&f).owners, (1, 2), || Some(5)),
            Some((1000, 100))
        );
    }
}
