//! GNU sparse files in PAX form (formats 0.0, 0.1 and 1.0), which the tar crate
//! passes through as plain entries named `GNUSparseFile.N/name`. Read the way Go's
//! archive/tar (and so Docker and BuildKit) reads them: the real name and size from
//! the PAX records, holes filled with zeros.

use std::io::{self, Read};

/// Where the data of a sparse file lies: (offset, length) pairs, and its real size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SparseFile {
    pub(crate) name: Option<String>,
    pub(crate) real_size: u64,
    /// `None` for format 1.0, whose map opens the entry's data.
    pub(crate) map: Option<Vec<(u64, u64)>>,
}

/// The sparse description in an entry's PAX records, if it is a PAX sparse file.
pub(crate) fn from_pax(records: &[(String, String)]) -> Result<Option<SparseFile>, String> {
    let get = |k: &str| {
        records
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v)
    };
    let major = get("GNU.sparse.major").map(String::as_str);
    let minor = get("GNU.sparse.minor").map(String::as_str);
    let is_1x0 = match (major, minor) {
        (Some("1"), Some("0")) => true,
        (Some("0"), Some("0" | "1")) => false,
        (Some(_), _) | (_, Some(_)) => return Err("unknown GNU sparse PAX version".into()),
        (None, None) => {
            // 0.0 and 0.1 name no version; their map records give them away.
            let has_map = get("GNU.sparse.map").is_some() || get("GNU.sparse.offset").is_some();
            if !has_map {
                return Ok(None);
            }
            false
        }
    };
    let size = get("GNU.sparse.size")
        .or_else(|| get("GNU.sparse.realsize"))
        .ok_or("GNU sparse file without a size")?;
    let real_size = size
        .parse::<u64>()
        .map_err(|_| format!("GNU sparse size {size:?} is not a number"))?;
    let name = get("GNU.sparse.name").cloned();
    if is_1x0 {
        return Ok(Some(SparseFile {
            name,
            real_size,
            map: None,
        }));
    }
    // 0.1 has one `map` record; 0.0 repeats `offset` and `numbytes`.
    let numbers: Vec<String> = match get("GNU.sparse.map") {
        Some(m) if !m.is_empty() => m.split(',').map(str::to_string).collect(),
        Some(_) => Vec::new(),
        None => records
            .iter()
            .filter(|(k, _)| k == "GNU.sparse.offset" || k == "GNU.sparse.numbytes")
            .map(|(_, v)| v.clone())
            .collect(),
    };
    Ok(Some(SparseFile {
        name,
        real_size,
        map: Some(pairs(&numbers, real_size)?),
    }))
}

fn pairs(numbers: &[String], real_size: u64) -> Result<Vec<(u64, u64)>, String> {
    if !numbers.len().is_multiple_of(2) {
        return Err("GNU sparse map has an odd number of values".into());
    }
    let mut out = Vec::with_capacity(numbers.len() / 2);
    let mut end = 0u64;
    for pair in numbers.chunks(2) {
        let n = |s: &String| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| format!("GNU sparse map value {s:?} is not a number"))
        };
        let (off, len) = (n(&pair[0])?, n(&pair[1])?);
        let stop = off.checked_add(len).ok_or("GNU sparse map overflows")?;
        if off < end || stop > real_size {
            return Err("GNU sparse map is out of order or beyond the file's size".into());
        }
        end = stop;
        out.push((off, len));
    }
    Ok(out)
}

/// Reads format 1.0's map from the start of the entry's data: decimal numbers, each
/// ending in a newline (count, then offset/length pairs), padded to 512 bytes.
pub(crate) fn read_map_1x0(data: &mut dyn Read, real_size: u64) -> Result<Vec<(u64, u64)>, String> {
    let mut consumed = 0u64;
    let mut next_number = |consumed: &mut u64| -> Result<String, String> {
        let mut s = String::new();
        loop {
            let mut b = [0u8; 1];
            data.read_exact(&mut b)
                .map_err(|e| format!("GNU sparse map: {e}"))?;
            *consumed += 1;
            match b[0] {
                b'\n' => return Ok(s),
                c if c.is_ascii_digit() && s.len() < 20 => s.push(c as char),
                _ => return Err("GNU sparse map is malformed".into()),
            }
        }
    };
    let count: usize = next_number(&mut consumed)?
        .parse()
        .map_err(|_| "GNU sparse map count is not a number".to_string())?;
    // Each pair needs at least four bytes of map; more pairs than the file could
    // describe is a lie.
    if count as u64 > real_size.saturating_add(1) {
        return Err("GNU sparse map names more blocks than the file has bytes".into());
    }
    let mut numbers = Vec::with_capacity(count * 2);
    for _ in 0..count * 2 {
        numbers.push(next_number(&mut consumed)?);
    }
    let pad = (512 - consumed % 512) % 512;
    io::copy(&mut data.take(pad), &mut io::sink()).map_err(|e| format!("GNU sparse map: {e}"))?;
    pairs(&numbers, real_size)
}

/// The expanded file: data segments where the map says, zeros elsewhere.
pub(crate) struct Expanded<'a> {
    data: &'a mut dyn Read,
    map: std::vec::IntoIter<(u64, u64)>,
    /// The segment being read: its offset and what is left of it.
    current: Option<(u64, u64)>,
    pos: u64,
    real_size: u64,
}

impl<'a> Expanded<'a> {
    pub(crate) fn new(data: &'a mut dyn Read, map: Vec<(u64, u64)>, real_size: u64) -> Self {
        let mut map = map.into_iter();
        let current = map.next();
        Expanded {
            data,
            map,
            current,
            pos: 0,
            real_size,
        }
    }
}

impl Read for Expanded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.real_size || buf.is_empty() {
            return Ok(0);
        }
        let n = match self.current {
            // A hole before the next segment (or up to the end).
            Some((off, _)) if self.pos < off => {
                let n = (off - self.pos).min(buf.len() as u64) as usize;
                buf[..n].fill(0);
                n
            }
            Some((_, 0)) => {
                self.current = self.map.next();
                return self.read(buf);
            }
            Some((off, left)) => {
                let want = left.min(buf.len() as u64) as usize;
                let n = self.data.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "sparse file data ends early",
                    ));
                }
                self.current = Some((off + n as u64, left - n as u64));
                n
            }
            None => {
                let n = (self.real_size - self.pos).min(buf.len() as u64) as usize;
                buf[..n].fill(0);
                n
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn the_three_pax_formats_are_recognised() {
        let v00 = [
            rec("GNU.sparse.size", "10"),
            rec("GNU.sparse.numblocks", "2"),
            rec("GNU.sparse.offset", "0"),
            rec("GNU.sparse.numbytes", "2"),
            rec("GNU.sparse.offset", "8"),
            rec("GNU.sparse.numbytes", "2"),
        ];
        let v01 = [
            rec("GNU.sparse.size", "10"),
            rec("GNU.sparse.map", "0,2,8,2"),
        ];
        for r in [&v00[..], &v01[..]] {
            assert_eq!(
                from_pax(r).unwrap(),
                Some(SparseFile {
                    name: None,
                    real_size: 10,
                    map: Some(vec![(0, 2), (8, 2)])
                })
            );
        }
        let v10 = [
            rec("GNU.sparse.major", "1"),
            rec("GNU.sparse.minor", "0"),
            rec("GNU.sparse.name", "real/name"),
            rec("GNU.sparse.realsize", "10"),
        ];
        let s = from_pax(&v10).unwrap().unwrap();
        assert_eq!(
            (s.name.as_deref(), s.real_size, s.map),
            (Some("real/name"), 10, None)
        );
        assert_eq!(from_pax(&[rec("path", "x")]).unwrap(), None);
        assert!(from_pax(&[rec("GNU.sparse.size", "4"), rec("GNU.sparse.map", "0,8")]).is_err());
    }

    #[test]
    fn holes_read_as_zeros() {
        let mut data: &[u8] = b"abcd";
        let mut out = Vec::new();
        Expanded::new(&mut data, vec![(0, 2), (8, 2)], 12)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"ab\0\0\0\0\0\0cd\0\0");
        let mut map: &[u8] = b"2\n0\n2\n8\n2\n";
        let mut padded = map.to_vec();
        padded.resize(512, 0);
        padded.extend_from_slice(b"abcd");
        map = &padded;
        let m = read_map_1x0(&mut map, 10).unwrap();
        assert_eq!(m, vec![(0, 2), (8, 2)]);
        assert_eq!(map, b"abcd");
    }
}
