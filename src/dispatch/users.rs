//! `--chown` and USER owners: numbers, or names looked up in the stage's
//! `/etc/passwd` and `/etc/group`.

use super::stage::StageFs;
use super::{BuildError, Session};

/// An owner as BuildKit's file op resolves it, with the names it did not find.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Owner {
    pub uid: u64,
    pub gid: u64,
    /// Each name missing from its file, as `user "NAME" in /etc/passwd` (the
    /// caller warns: BuildKit v0.21 builds on silently).
    pub missing: Vec<String>,
}

/// A number as BuildKit's `llb.parseUID` reads one: `root` is 0, otherwise a
/// base-10 int32 (a negative one is never an owner, so it is a name here).
fn parse_id(word: &str) -> Option<u64> {
    if word == "root" {
        return Some(0);
    }
    word.parse::<i32>().ok().and_then(|n| u64::try_from(n).ok())
}

/// Resolves `user[:group]` as BuildKit v0.21's `readUser` (solver/llbsolver/file):
/// a user number is also the group; a user name takes its passwd entry's uid and
/// gid, or 0:0 when no entry (or no file) has it; a group name found in the group
/// file replaces the gid, one not found keeps it.
pub(crate) fn parse_owner(spec: &str, passwd: Option<&str>, group: Option<&str>) -> Owner {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let mut missing = Vec::new();
    let (uid, mut gid) = match parse_id(u) {
        Some(n) => (n, n),
        None => {
            let entry = records(passwd, 4).into_iter().find(|f| f[0] == u);
            match entry.and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?))) {
                Some(ids) => ids,
                None => {
                    // `:group` names no user: 0 is meant, nothing is missing.
                    if !u.is_empty() {
                        missing.push(format!("user {u:?} in /etc/passwd"));
                    }
                    (0, 0)
                }
            }
        }
    };
    if let Some(g) = g {
        match parse_id(g) {
            Some(n) => gid = n,
            None => match lookup(group, g, 2) {
                Some(n) => gid = n,
                None => missing.push(format!("group {g:?} in /etc/group")),
            },
        }
    }
    Owner { uid, gid, missing }
}

/// Field `field` (2 = uid/gid) of the line whose first field is `name`.
fn lookup(file: Option<&str>, name: &str, field: usize) -> Option<u64> {
    records(file, 1)
        .into_iter()
        .find_map(|f| (f[0] == name).then(|| f.get(field)?.parse().ok()).flatten())
}

/// The colon-separated lines of passwd or group with at least `min` fields.
fn records(file: Option<&str>, min: usize) -> Vec<Vec<&str>> {
    file.unwrap_or("")
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= min)
        .collect()
}

/// Who a RUN command runs as, resolved as runc resolves `USER` against the
/// image's own files: a name must exist; a number need not (group 0, home /).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: every group in /etc/group that lists the user.
    pub groups: Vec<u32>,
    pub home: String,
}

pub(crate) fn exec_user(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ExecUser, String> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entries = records(passwd, 4);
    // A number need not be in passwd; a name must.
    let (uid, entry) = match u.parse::<u32>() {
        Ok(n) => (
            n,
            entries.iter().find(|f| f[2].parse::<u32>().ok() == Some(n)),
        ),
        Err(_) => {
            let f = entries.iter().find(|f| f[0] == u).ok_or_else(|| {
                format!("unable to find user {u}: no matching entries in passwd file")
            })?;
            let uid = f[2]
                .parse()
                .map_err(|_| format!("user {u}: invalid uid in passwd file"))?;
            (uid, Some(f))
        }
    };
    let name = entry.map(|f| f[0]).unwrap_or("");
    let primary = entry.and_then(|f| f[3].parse::<u32>().ok()).unwrap_or(0);
    let home = entry
        .and_then(|f| f.get(5))
        .filter(|h| !h.is_empty())
        .unwrap_or(&"/")
        .to_string();
    let groups_file = records(group, 3);
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups_file
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        },
    };
    // An explicit group replaces the supplementary ones (runc's rule).
    let mut groups = vec![gid];
    if g.is_none() && !name.is_empty() {
        for f in &groups_file {
            let members = f.get(3).copied().unwrap_or("");
            if members.split(',').any(|m| m == name) {
                if let Ok(n) = f[2].parse::<u32>() {
                    if !groups.contains(&n) {
                        groups.push(n);
                    }
                }
            }
        }
    }
    Ok(ExecUser {
        uid,
        gid,
        groups,
        home,
    })
}

/// Looks up `user[:group]` against the stage's passwd and group files when names
/// are used. `what` names the step in the warning for a name that is missing.
pub(super) async fn stage_owner(
    session: &Session,
    fs: &StageFs,
    spec: &str,
    what: &str,
) -> Result<(u64, u64), BuildError> {
    let numeric = spec.split(':').all(|p| p.parse::<u64>().is_ok());
    let (passwd, group) = if numeric {
        (None, None)
    } else {
        let p = fs.read_file(session, "/etc/passwd").await?;
        let g = fs.read_file(session, "/etc/group").await?;
        (
            p.map(|b| String::from_utf8_lossy(&b).into_owned()),
            g.map(|b| String::from_utf8_lossy(&b).into_owned()),
        )
    };
    let o = parse_owner(spec, passwd.as_deref(), group.as_deref());
    for name in &o.missing {
        // BuildKit v0.21 builds on silently; a warning says why the owner is what it is.
        crate::log_warn!(
            "{what}: no {name} of the stage; the owner is {}:{}, as BuildKit v0.21 makes it",
            o.uid,
            o.gid
        );
    }
    Ok((o.uid, o.gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        let pw = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
        let gr = "root:x:0:\nstaff:x:50:\n";
        let ids = |spec, pw, gr| {
            let o = parse_owner(spec, pw, gr);
            (o.uid, o.gid, o.missing)
        };
        let none = Vec::<String>::new;
        assert_eq!(ids("10", None, None), (10, 10, none()));
        assert_eq!(ids("10:20", None, None), (10, 20, none()));
        assert_eq!(ids("root", None, None), (0, 0, none()));
        // A name takes its passwd entry's group, as BuildKit's readUser.
        assert_eq!(ids("app", Some(pw), Some(gr)), (1000, 1001, none()));
        assert_eq!(ids("app:staff", Some(pw), Some(gr)), (1000, 50, none()));
        // Missing names: the user is 0:0, the group keeps the gid so far.
        assert_eq!(
            ids("nobody", Some(pw), Some(gr)),
            (0, 0, vec!["user \"nobody\" in /etc/passwd".into()])
        );
        assert_eq!(
            ids("app:nogroup", Some(pw), Some(gr)),
            (1000, 1001, vec!["group \"nogroup\" in /etc/group".into()])
        );
        assert_eq!(
            ids("1234:nogroup", None, None),
            (1234, 1234, vec!["group \"nogroup\" in /etc/group".into()])
        );
        assert_eq!(ids(":staff", Some(pw), Some(gr)), (0, 50, none()));
    }

    #[test]
    fn exec_users_as_runc_resolves_them() {
        let pw = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
        let gr = "root:x:0:\napp:x:1001:\nstaff:x:50:app,bob\n";
        let app = exec_user("app", Some(pw), Some(gr)).unwrap();
        assert_eq!(
            (app.uid, app.gid, app.groups.clone()),
            (1000, 1001, vec![1001, 50])
        );
        assert_eq!(app.home, "/home/app");
        let n = exec_user("4242", Some(pw), Some(gr)).unwrap();
        assert_eq!((n.uid, n.gid, n.home.as_str()), (4242, 0, "/"));
        let g = exec_user("1000:staff", Some(pw), Some(gr)).unwrap();
        assert_eq!((g.uid, g.gid, g.groups), (1000, 50, vec![50]));
        assert!(exec_user("nobody", Some(pw), Some(gr)).is_err());
    }
}
