//! History `created_by` texts exactly as BuildKit v0.21 writes them: from the
//! expanded instruction, formatted with Go's `%q` and `%v` (`CMD ["a" "b"]`,
//! `SHELL [/bin/sh -c]`, `EXPOSE map[80/tcp:{}]`), so `docker history` and tools
//! that read it see the same image either builder made.

use crate::dockerfile::parser::go_quote;

/// `%q` of a `[]string`: `["a" "b c"]`.
pub(super) fn quoted_list(words: &[String]) -> String {
    let items: Vec<String> = words.iter().map(|w| go_quote(w)).collect();
    format!("[{}]", items.join(" "))
}

/// `%v` of a `[]string`: `[a b c]`.
pub(super) fn plain_list(words: &[String]) -> String {
    format!("[{}]", words.join(" "))
}

/// `%v` of a `map[string]struct{}`: keys sorted, `map[53/udp:{} 80/tcp:{}]`.
pub(super) fn port_map<'a>(ports: impl IntoIterator<Item = &'a String>) -> String {
    let mut keys: Vec<&String> = ports.into_iter().collect();
    keys.sort();
    keys.dedup();
    let items: Vec<String> = keys.iter().map(|k| format!("{k}:{{}}")).collect();
    format!("map[{}]", items.join(" "))
}

/// `KEY=value` pairs after the instruction name: `ENV A=1 B=two words`.
pub(super) fn pairs(name: &str, kv: &[(String, String)]) -> String {
    let mut s = name.to_string();
    for (k, v) in kv {
        s.push_str(&format!(" {k}={v}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formats() {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            quoted_list(&w(&["/bin/sh", "-c", "echo \"hi\"\t$X"])),
            r#"["/bin/sh" "-c" "echo \"hi\"\t$X"]"#
        );
        assert_eq!(plain_list(&w(&["/bin/sh", "-ec"])), "[/bin/sh -ec]");
        assert_eq!(
            port_map(&w(&["80/tcp", "53/udp", "80/tcp"])),
            "map[53/udp:{} 80/tcp:{}]"
        );
        assert_eq!(
            pairs("ENV", &[("A".into(), "two words".into())]),
            "ENV A=two words"
        );
    }
}
