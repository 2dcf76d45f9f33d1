//! How a registry is reached: HTTPS, or plain HTTP where go-containerregistry (and so
//! Kaniko) allows it, and what a failed connection means in words a user can act on.
//!
//! Plain HTTP is allowed for registries named insecure and for hosts that look local
//! (`localhost`, loopback, `*.local`, RFC 1918 addresses). For those, HTTPS is tried
//! first and plain HTTP only when HTTPS fails, as go-containerregistry's `ping` does.

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr};

/// The host part of `host[:port]` or `[v6]:port`, without brackets.
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    }
}

/// Whether go-containerregistry's `Registry.Scheme()` rules let this registry be
/// plain HTTP without any flag: localhost, loopback, `.local`/`.localhost` names and
/// RFC 1918 addresses.
pub(crate) fn looks_local(registry: &str) -> bool {
    let host = host_of(registry).to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".local") || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback() || is_rfc1918(ip),
        Ok(IpAddr::V6(ip)) => ip.is_loopback(),
        Err(_) => false,
    }
}

fn is_rfc1918(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 10 || (a == 172 && (16..=31).contains(&b)) || (a == 192 && b == 168)
}

/// What went wrong below HTTP, when it is something retrying cannot fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnectFailure {
    /// The server answered the TLS handshake with plain HTTP.
    PlainHttpServer,
    /// The TLS handshake failed; the cause in words.
    Tls(String),
    /// The server wants a client certificate it trusts; the alert in words.
    ClientCertificate(String),
}

impl ConnectFailure {
    /// The cause in words, for errors that name no flag.
    pub(crate) fn cause(self) -> Option<String> {
        match self {
            ConnectFailure::PlainHttpServer => None,
            ConnectFailure::Tls(c) | ConnectFailure::ClientCertificate(c) => Some(c),
        }
    }
}

/// Finds a TLS failure in a request error's chain. `io::Error::source` skips the
/// error it wraps (and hyper nests one io::Error in another), so an io::Error is
/// looked into through `get_ref`.
pub(crate) fn connect_failure(e: &reqwest::Error) -> Option<ConnectFailure> {
    let mut next: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(classify_tls(t));
        }
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => {
                // An alert after the handshake (TLS 1.3 asks for a client
                // certificate then) reaches hyper as text, not as rustls' error.
                if let Some(alert) = io
                    .get_ref()
                    .map(|inner| inner.to_string())
                    .filter(|m| m.starts_with("received fatal alert"))
                {
                    return Some(alert_failure(&alert));
                }
                io.get_ref().map(|inner| inner as &(dyn StdError + 'static))
            }
            None => err.source(),
        };
    }
    None
}

/// Whether the server closed (or reset) the connection during the TLS
/// handshake, as a plain-HTTP server may do with a TLS hello it cannot read.
/// The same happens to an overloaded HTTPS server, so this alone proves nothing.
pub(crate) fn handshake_closed(e: &reqwest::Error) -> bool {
    use std::io::ErrorKind;
    if !e.is_connect() {
        return false;
    }
    let mut next: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = next {
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io)
                if matches!(
                    io.kind(),
                    ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
                ) =>
            {
                return true
            }
            // As in `connect_failure`: an io::Error's source skips what it wraps.
            Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
            None => err.source(),
        };
    }
    false
}

fn alert_failure(alert: &str) -> ConnectFailure {
    let wants_client_cert = ["BadCertificate", "CertificateRequired", "UnknownCA"]
        .iter()
        .any(|a| alert.ends_with(a));
    if wants_client_cert {
        ConnectFailure::ClientCertificate(format!(
            "the server refused the connection ({alert}): it wants a client certificate it trusts"
        ))
    } else {
        ConnectFailure::Tls(format!("the server ended the TLS session ({alert})"))
    }
}

fn classify_tls(e: &rustls::Error) -> ConnectFailure {
    use rustls::{CertificateError as C, Error as E, InvalidMessage};
    let cause = match e {
        E::InvalidMessage(InvalidMessage::InvalidContentType)
        | E::InvalidMessage(InvalidMessage::UnknownProtocolVersion) => {
            return ConnectFailure::PlainHttpServer
        }
        E::InvalidCertificate(c) => match c {
            C::UnknownIssuer => {
                "certificate signed by unknown authority (self-signed or a private CA)".into()
            }
            C::NotValidForName => "certificate is not valid for this host name".into(),
            C::NotValidForNameContext {
                expected,
                presented,
            } => format!(
                "certificate is not valid for the host name {} (it names {})",
                expected.to_str(),
                if presented.is_empty() {
                    "nothing".to_string()
                } else {
                    presented.join(", ")
                }
            ),
            C::Expired | C::ExpiredContext { .. } => "certificate has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "certificate is not valid yet".into(),
            C::Revoked => "certificate has been revoked".into(),
            C::BadSignature => "certificate has a bad signature".into(),
            other => format!("invalid certificate: {other:?}"),
        },
        E::AlertReceived(_) => return alert_failure(&e.to_string()),
        other => format!("TLS handshake failed: {other}"),
    };
    ConnectFailure::Tls(cause)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hosts_follow_go_containerregistry() {
        for yes in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "registry.kube-system.svc.cluster.local:5000",
            "registry.local",
            "reg.localhost:80",
            "10.0.0.5:5000",
            "172.16.0.1",
            "172.31.255.255:443",
            "192.168.1.10:5000",
        ] {
            assert!(looks_local(yes), "{yes} should allow plain HTTP");
        }
        for no in [
            "ghcr.io",
            "registry.example:5000",
            "172.32.0.1:5000",
            "172.15.0.1",
            "192.169.0.1",
            "11.0.0.1",
            "local",
            "example.localdomain",
            "[2001:db8::1]:5000",
            "registry.local.example.com",
        ] {
            assert!(!looks_local(no), "{no} should need HTTPS");
        }
    }

    #[test]
    fn tls_causes_are_named() {
        use rustls::CertificateError as C;
        let cert = |c| classify_tls(&rustls::Error::InvalidCertificate(c));
        assert_eq!(
            cert(C::UnknownIssuer),
            ConnectFailure::Tls(
                "certificate signed by unknown authority (self-signed or a private CA)".into()
            )
        );
        assert_eq!(
            cert(C::Expired),
            ConnectFailure::Tls("certificate has expired".into())
        );
        assert!(
            matches!(cert(C::NotValidForName), ConnectFailure::Tls(s) if s.contains("not valid for"))
        );
        assert_eq!(
            classify_tls(&rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType
            )),
            ConnectFailure::PlainHttpServer
        );
    }
}
