//! `--chown` and USER owners: numbers, or names looked up in the stage's
//! `/etc/passwd` and `/etc/group`.

/// Parses `user[:group]`. A user without a group uses the user's number as the
/// group (Docker's documented rule). Names are looked up with `lookup`.
pub(crate) fn parse_owner(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<(u64, u64), String> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid = match u.parse::<u64>() {
        Ok(n) => n,
        Err(_) => lookup(passwd, u, 2).ok_or_else(|| {
            format!("unable to find user {u}: no matching entries in passwd file")
        })?,
    };
    let gid = match g {
        None => uid,
        Some(g) => match g.parse::<u64>() {
            Ok(n) => n,
            Err(_) => lookup(group, g, 2).ok_or_else(|| {
                format!("unable to find group {g}: no matching entries in group file")
            })?,
        },
    };
    Ok((uid, gid))
}

/// Field `field` (2 = uid/gid) of the line whose first field is `name`.
fn lookup(file: Option<&str>, name: &str, field: usize) -> Option<u64> {
    file?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name))
            .then(|| f.get(field)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        let pw = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
        let gr = "root:x:0:\nstaff:x:50:\n";
        assert_eq!(parse_owner("10", None, None), Ok((10, 10)));
        assert_eq!(parse_owner("10:20", None, None), Ok((10, 20)));
        assert_eq!(parse_owner("app", Some(pw), Some(gr)), Ok((1000, 1000)));
        assert_eq!(parse_owner("app:staff", Some(pw), Some(gr)), Ok((1000, 50)));
        assert!(parse_owner("nobody", Some(pw), Some(gr)).is_err());
    }
}
