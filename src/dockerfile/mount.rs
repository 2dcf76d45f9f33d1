//! `RUN --mount=…` specs as BuildKit v0.21 reads them: one CSV record of
//! `key=value` fields (and the bare flags `ro`, `rw`, `required`), values
//! expanded with the step's variables, checked with BuildKit's messages.

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum MountError {
    #[error("failed to parse csv mounts: {0}")]
    Csv(String),
    #[error("invalid field '{0}' must be a key=value pair")]
    NotKeyValue(String),
    #[error("unexpected key '{key}' in '{field}'")]
    UnknownKey { key: String, field: String },
    #[error("unexpected key '{key}' for mount type '{kind}'")]
    KeyForType { key: String, kind: &'static str },
    #[error("unsupported mount type {0:?}")]
    Type(String),
    #[error("unsupported sharing value {0:?}")]
    Sharing(String),
    #[error("invalid value for {key}: {value}")]
    Bool { key: String, value: String },
    #[error("invalid value {value} for {key}")]
    Number { key: &'static str, value: String },
    #[error("{key} not allowed for {kind:?} type mounts")]
    FileInfo {
        key: &'static str,
        kind: &'static str,
    },
    #[error("'from' doesn't support variable expansion, define alias stage instead")]
    FromVariable,
    #[error("secret mount should not have a from")]
    SecretFrom,
    #[error("invalid secret mount. one of source, target required")]
    SecretTarget,
    #[error("both source and id can't be set")]
    SecretSourceAndId,
    #[error("invalid cache sharing set for {0} mount")]
    SharingForType(&'static str),
    #[error("invalid mount target {0:?}")]
    Target(String),
    #[error("{0}")]
    Expand(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MountKind {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Cache => "cache",
            MountKind::Tmpfs => "tmpfs",
            MountKind::Secret => "secret",
            MountKind::Ssh => "ssh",
        }
    }
}

/// How concurrent users of one cache share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Sharing {
    #[default]
    Shared,
    Private,
    Locked,
}

/// One `--mount`, its values expanded; defaults are applied where it is used.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MountSpec {
    pub(crate) kind: MountKind,
    pub(crate) target: Option<String>,
    pub(crate) source: Option<String>,
    pub(crate) from: Option<String>,
    pub(crate) readonly: bool,
    pub(crate) id: Option<String>,
    pub(crate) sharing: Option<Sharing>,
    pub(crate) mode: Option<u32>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) required: bool,
    /// tmpfs `size`, in bytes.
    pub(crate) size: Option<u64>,
    /// secret `env`: the variable the secret's value is given in.
    pub(crate) env: Option<String>,
}

/// The CSV fields of a spec (Go's encoding/csv: commas, double quotes).
fn fields(spec: &str) -> Result<Vec<String>, MountError> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(spec.as_bytes());
    let mut record = csv::StringRecord::new();
    match r.read_record(&mut record) {
        Ok(true) => Ok(record.iter().map(str::to_string).collect()),
        Ok(false) => Ok(Vec::new()),
        Err(e) => Err(MountError::Csv(e.to_string())),
    }
}

/// One `RUN --mount` as the Dockerfile writes it, its CSV record read once when
/// the Dockerfile is parsed. The plan reads its type and `from` as written; the
/// step expands its values into a [`MountSpec`] ([`RunMount::expand`]). A record
/// that does not read fails where it is used, as before it was read once.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunMount {
    /// The spec as written (the build checks look for variables in it).
    pub(crate) text: String,
    fields: Result<Vec<String>, MountError>,
}

impl RunMount {
    pub(crate) fn new(text: String) -> RunMount {
        RunMount {
            fields: fields(&text),
            text,
        }
    }

    /// The `from` as written, for planning before anything is expanded; a
    /// variable there is refused, as BuildKit refuses it.
    pub(crate) fn from(&self) -> Result<Option<String>, MountError> {
        let mut from = None;
        for f in self.fields.clone()? {
            if let Some((k, v)) = f.split_once('=') {
                if k.eq_ignore_ascii_case("from") {
                    if v.contains('$') && v.len() > 1 {
                        return Err(MountError::FromVariable);
                    }
                    from = Some(v.to_string());
                }
            }
        }
        Ok(from)
    }

    /// The type as written (`bind` when none is given).
    pub(crate) fn kind(&self) -> MountKind {
        self.fields
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter_map(|f| f.split_once('='))
            .filter(|(k, _)| k.eq_ignore_ascii_case("type"))
            .filter_map(|(_, v)| parse_kind(v))
            .next_back()
            .unwrap_or(MountKind::Bind)
    }

    /// The spec with its values expanded (`expand` gives each value's
    /// expansion), checked with BuildKit's rules and messages.
    pub(crate) fn expand(
        &self,
        expand: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<MountSpec, MountError> {
        parse_fields(self.fields.clone()?, expand)
    }
}

fn parse_kind(v: &str) -> Option<MountKind> {
    Some(match v.to_ascii_lowercase().as_str() {
        "bind" => MountKind::Bind,
        "cache" => MountKind::Cache,
        "tmpfs" => MountKind::Tmpfs,
        "secret" => MountKind::Secret,
        "ssh" => MountKind::Ssh,
        _ => return None,
    })
}

/// Go's `strconv.ParseBool`.
fn parse_bool(key: &str, v: &str) -> Result<bool, MountError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(MountError::Bool {
            key: key.into(),
            value: v.into(),
        }),
    }
}

fn number(key: &'static str, v: &str, radix: u32) -> Result<u32, MountError> {
    u32::from_str_radix(v, radix).map_err(|_| MountError::Number {
        key,
        value: v.into(),
    })
}

/// docker/go-units `RAMInBytes`: a number with an optional b, k, m, g, t, p
/// suffix (binary multiples, case-insensitive, an optional trailing `b`/`ib`).
fn ram_in_bytes(v: &str) -> Option<u64> {
    let s = v.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty()))
        .unwrap_or(&unit);
    let mult: u64 = match unit {
        "" | "b" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return None,
    };
    (n >= 0.0).then_some((n * mult as f64) as u64)
}

/// Reads one spec's fields; `expand` gives each value's expansion.
fn parse_fields(
    fields: Vec<String>,
    expand: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<MountSpec, MountError> {
    let mut m = MountSpec {
        kind: MountKind::Bind,
        target: None,
        source: None,
        from: None,
        readonly: false,
        id: None,
        sharing: None,
        mode: None,
        uid: None,
        gid: None,
        required: false,
        size: None,
        env: None,
    };
    let mut ro_auto = true;
    for field in fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), v.to_string()),
            None => {
                match field.to_ascii_lowercase().as_str() {
                    "readonly" | "ro" => m.readonly = true,
                    "readwrite" | "rw" => m.readonly = false,
                    "required" if matches!(m.kind, MountKind::Secret | MountKind::Ssh) => {
                        m.required = true;
                        continue;
                    }
                    "required" => {
                        return Err(MountError::KeyForType {
                            key: "required".into(),
                            kind: m.kind.name(),
                        })
                    }
                    _ => return Err(MountError::NotKeyValue(field)),
                }
                ro_auto = false;
                continue;
            }
        };
        if key == "from" && value.contains('$') && value.len() > 1 {
            return Err(MountError::FromVariable);
        }
        let value = expand(&value).map_err(MountError::Expand)?;
        match key.as_str() {
            "type" => m.kind = parse_kind(&value).ok_or(MountError::Type(value))?,
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "readonly" | "ro" => {
                m.readonly = parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "required" if matches!(m.kind, MountKind::Secret | MountKind::Ssh) => {
                m.required = parse_bool(&key, &value)?;
            }
            "size" if m.kind == MountKind::Tmpfs => {
                m.size = Some(ram_in_bytes(&value).ok_or(MountError::Bool {
                    key: key.clone(),
                    value: value.clone(),
                })?);
            }
            "env" if m.kind == MountKind::Secret => m.env = Some(value),
            "required" | "size" | "env" => {
                return Err(MountError::KeyForType {
                    key,
                    kind: m.kind.name(),
                })
            }
            "id" => m.id = Some(value),
            "sharing" => {
                m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => return Err(MountError::Sharing(value)),
                })
            }
            "mode" => m.mode = Some(number("mode", &value, 8)?),
            "uid" => m.uid = Some(number("uid", &value, 10)?),
            "gid" => m.gid = Some(number("gid", &value, 10)?),
            _ => return Err(MountError::UnknownKey { key, field }),
        }
    }
    validate(&mut m, ro_auto)?;
    Ok(m)
}

fn validate(m: &mut MountSpec, ro_auto: bool) -> Result<(), MountError> {
    let kind = m.kind.name();
    if !matches!(
        m.kind,
        MountKind::Secret | MountKind::Ssh | MountKind::Cache
    ) {
        for (key, set) in [
            ("mode", m.mode.is_some()),
            ("uid", m.uid.is_some()),
            ("gid", m.gid.is_some()),
        ] {
            if set {
                return Err(MountError::FileInfo { key, kind });
            }
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountKind::Cache | MountKind::Tmpfs);
    }
    if m.kind == MountKind::Secret {
        if m.from.is_some() {
            return Err(MountError::SecretFrom);
        }
        if m.sharing.is_some() {
            return Err(MountError::SharingForType(kind));
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() && m.env.is_none() {
            return Err(MountError::SecretTarget);
        }
        if m.source.is_some() && m.id.is_some() {
            return Err(MountError::SecretSourceAndId);
        }
    }
    if m.sharing.is_some() && m.kind != MountKind::Cache {
        return Err(MountError::SharingForType(kind));
    }
    if matches!(
        m.kind,
        MountKind::Bind | MountKind::Cache | MountKind::Tmpfs
    ) && m.target.as_deref().is_none_or(|t| t.is_empty())
    {
        return Err(MountError::Target("/".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<MountSpec, MountError> {
        RunMount::new(s.into()).expand(&mut |v| Ok(v.replace("$D", "/deps")))
    }

    #[test]
    fn specs_read_as_buildkit_reads_them() {
        let m = p("type=cache,target=$D,id=x,sharing=LOCKED,mode=0700,uid=5,gid=6").unwrap();
        assert_eq!(m.kind, MountKind::Cache);
        assert_eq!(m.target.as_deref(), Some("/deps"));
        assert_eq!(m.sharing, Some(Sharing::Locked));
        assert_eq!((m.mode, m.uid, m.gid), (Some(0o700), Some(5), Some(6)));
        assert!(!m.readonly);
        let m = p("target=/src,source=a,from=build,rw").unwrap();
        assert_eq!(m.kind, MountKind::Bind);
        assert!(!m.readonly);
        assert!(p("dst=/x").unwrap().readonly);
        let m = p("type=secret,id=tok,env=TOKEN,required").unwrap();
        assert!(m.required);
        assert_eq!(m.env.as_deref(), Some("TOKEN"));
        assert_eq!(
            p("type=tmpfs,target=/t,size=64m").unwrap().size,
            Some(64 << 20)
        );
        assert_eq!(
            p("\"type=bind\",\"target=/a,b\"")
                .unwrap()
                .target
                .as_deref(),
            Some("/a,b")
        );
    }

    #[test]
    fn refusals_name_buildkit_causes() {
        let e = |s: &str| p(s).unwrap_err().to_string();
        assert_eq!(
            e("type=bogus,target=/x"),
            "unsupported mount type \"bogus\""
        );
        assert_eq!(
            e("type=cache,target=/x,required"),
            "unexpected key 'required' for mount type 'cache'"
        );
        assert_eq!(
            e("type=tmpfs,target=/x,mode=0700"),
            "mode not allowed for \"tmpfs\" type mounts"
        );
        assert_eq!(e("type=cache"), "invalid mount target \"/\"");
        assert_eq!(
            e("type=cache,target=/x,sharing=weird"),
            "unsupported sharing value \"weird\""
        );
        assert_eq!(
            e("target=/x,color=red"),
            "unexpected key 'color' in 'color=red'"
        );
        assert_eq!(
            e("target=/x,bare"),
            "invalid field 'bare' must be a key=value pair"
        );
        assert_eq!(e("type=cache,target=/x,mode=9"), "invalid value 9 for mode");
        assert_eq!(
            e("type=secret,from=a,id=x"),
            "secret mount should not have a from"
        );
        assert!(e("target=/x,from=$STAGE").contains("variable expansion"));
        let m = |s: &str| RunMount::new(s.into());
        assert_eq!(m("from=build,target=/x").from(), Ok(Some("build".into())));
        assert_eq!(m("type=ssh").kind(), MountKind::Ssh);
        assert_eq!(m("target=/x").kind(), MountKind::Bind);
    }
}
