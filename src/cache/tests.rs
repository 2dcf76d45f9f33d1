use super::indexes::{decode_entries, encode_entries};
use super::*;
use crate::layer::reader::Kind;

#[test]
fn entries_round_trip() {
    let e = vec![Entry {
        path: "a/b".into(),
        kind: Kind::Symlink("../c".into()),
        mode: 0o777,
        uid: 1,
        gid: 2,
        size: 0,
        mtime: 3,
        whiteout: None,
        xattrs: Vec::new(),
    }];
    let back = decode_entries(&encode_entries(&e).unwrap()).unwrap();
    assert_eq!(back[0].path, "a/b");
    assert_eq!(back[0].kind, Kind::Symlink("../c".into()));
}
