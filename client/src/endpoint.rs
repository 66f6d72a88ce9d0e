//! Where the daemon is and which transport reaches it: [`Endpoint`], and the
//! [`VsockAddr`] a UI VM connects to, with its parser.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use vm_catalog_protocol::stream::DEFAULT_VSOCK_PORT;

/// The CID of the host, as a guest sees it (`VMADDR_CID_HOST`).
pub const VSOCK_CID_HOST: u32 = 2;

/// `VMADDR_CID_ANY` and `VMADDR_PORT_ANY`: wildcards for a bind, not
/// addresses to connect to.
const VSOCK_ANY: u32 = u32::MAX;

/// How to reach the daemon.
///
/// A path converts into a [`Endpoint::Seqpacket`], so every function that
/// takes `impl Into<Endpoint>` takes the host socket's path as before.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// The daemon's `SOCK_SEQPACKET` socket on the host
    /// ([`crate::DEFAULT_SOCKET`]): one frame per datagram.
    Seqpacket(PathBuf),
    /// A Unix `SOCK_STREAM` socket carrying frames back to back: what a UI
    /// VM's connection becomes on the host (the daemon's listener
    /// `<vm-dir>/<NAME>/vsock_<PORT>`, which the VMM connects to for the
    /// guest). The host side of a guest's view, for tests and for checking
    /// what a VM sees.
    Stream(PathBuf),
    /// `AF_VSOCK`, from inside a VM: frames back to back on a vsock stream
    /// to the host.
    Vsock(VsockAddr),
}

impl Endpoint {
    /// The daemon's default socket on the host.
    pub fn default_socket() -> Self {
        Endpoint::Seqpacket(PathBuf::from(crate::DEFAULT_SOCKET))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Seqpacket(p) => write!(f, "{}", p.display()),
            Endpoint::Stream(p) => write!(f, "stream socket {}", p.display()),
            Endpoint::Vsock(a) => write!(f, "vsock {a}"),
        }
    }
}

impl From<PathBuf> for Endpoint {
    fn from(p: PathBuf) -> Self {
        Endpoint::Seqpacket(p)
    }
}

impl From<&PathBuf> for Endpoint {
    fn from(p: &PathBuf) -> Self {
        Endpoint::Seqpacket(p.clone())
    }
}

impl From<&Path> for Endpoint {
    fn from(p: &Path) -> Self {
        Endpoint::Seqpacket(p.to_owned())
    }
}

impl From<&str> for Endpoint {
    fn from(p: &str) -> Self {
        Endpoint::Seqpacket(p.into())
    }
}

impl From<String> for Endpoint {
    fn from(p: String) -> Self {
        Endpoint::Seqpacket(p.into())
    }
}

impl From<&Endpoint> for Endpoint {
    fn from(e: &Endpoint) -> Self {
        e.clone()
    }
}

impl From<VsockAddr> for Endpoint {
    fn from(a: VsockAddr) -> Self {
        Endpoint::Vsock(a)
    }
}

/// A vsock address to connect to: a CID (2, the host, by default) and a
/// port.
///
/// Parsed from `PORT` (CID 2) or `CID:PORT`, both decimal:
///
/// ```
/// use vm_catalog::VsockAddr;
/// assert_eq!("22083".parse(), Ok(VsockAddr { cid: 2, port: 22083 }));
/// assert_eq!("3:5000".parse(), Ok(VsockAddr { cid: 3, port: 5000 }));
/// assert!("2:".parse::<VsockAddr>().is_err());
/// assert!("4294967295".parse::<VsockAddr>().is_err(), "VMADDR_PORT_ANY");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VsockAddr {
    /// The context id of the peer (2: the host).
    pub cid: u32,
    /// The port the daemon listens on in the peer (on the host: the
    /// daemon's `--vsock-port`, [`DEFAULT_VSOCK_PORT`] unless set).
    pub port: u32,
}

impl VsockAddr {
    /// The daemon's default port on the host
    /// ([`DEFAULT_VSOCK_PORT`]).
    pub const DEFAULT: VsockAddr = VsockAddr {
        cid: VSOCK_CID_HOST,
        port: DEFAULT_VSOCK_PORT,
    };

    /// `port` on the host (CID 2).
    pub fn host(port: u32) -> Self {
        VsockAddr {
            cid: VSOCK_CID_HOST,
            port,
        }
    }
}

impl fmt::Display for VsockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.cid, self.port)
    }
}

/// Why a string is not a vsock address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VsockAddrError {
    /// An empty string.
    #[error("empty vsock address: expected PORT or CID:PORT")]
    Empty,
    /// The port is not a decimal number below 2^32.
    #[error("invalid vsock port {0:?}: expected a decimal number below 4294967295")]
    BadPort(String),
    /// The CID is not a decimal number below 2^32.
    #[error("invalid vsock CID {0:?}: expected a decimal number below 4294967295 (2 is the host)")]
    BadCid(String),
    /// `VMADDR_PORT_ANY` or `VMADDR_CID_ANY`: a wildcard, not an address.
    #[error("{0} 4294967295 is the vsock wildcard, not an address to connect to")]
    Wildcard(&'static str),
}

/// A decimal `u32` with digits only (no sign, no spaces).
fn number(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl FromStr for VsockAddr {
    type Err = VsockAddrError;

    fn from_str(s: &str) -> Result<Self, VsockAddrError> {
        if s.is_empty() {
            return Err(VsockAddrError::Empty);
        }
        let (cid, port) = match s.split_once(':') {
            Some((cid, port)) => (
                number(cid).ok_or_else(|| VsockAddrError::BadCid(cid.into()))?,
                port,
            ),
            None => (VSOCK_CID_HOST, s),
        };
        let port = number(port).ok_or_else(|| VsockAddrError::BadPort(port.into()))?;
        if cid == VSOCK_ANY {
            return Err(VsockAddrError::Wildcard("CID"));
        }
        if port == VSOCK_ANY {
            return Err(VsockAddrError::Wildcard("port"));
        }
        Ok(VsockAddr { cid, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<VsockAddr, VsockAddrError> {
        s.parse()
    }

    #[test]
    fn a_port_alone_is_on_the_host() {
        assert_eq!(parse("22083"), Ok(VsockAddr::DEFAULT));
        assert_eq!(parse("0"), Ok(VsockAddr::host(0)));
        assert_eq!(parse("007"), Ok(VsockAddr::host(7)));
        assert_eq!(parse("4294967294"), Ok(VsockAddr::host(u32::MAX - 1)));
    }

    #[test]
    fn cid_and_port() {
        assert_eq!(parse("3:5000"), Ok(VsockAddr { cid: 3, port: 5000 }));
        assert_eq!(parse("2:1"), Ok(VsockAddr::host(1)));
        assert_eq!(parse("0:1"), Ok(VsockAddr { cid: 0, port: 1 }));
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        assert_eq!(parse(""), Err(VsockAddrError::Empty));
        for port in ["x", "-1", "+5", " 5", "5 ", "4294967296", "1.5", "0x10"] {
            assert_eq!(
                parse(port),
                Err(VsockAddrError::BadPort(port.into())),
                "{port}"
            );
        }
        assert_eq!(parse("3:"), Err(VsockAddrError::BadPort("".into())));
        assert_eq!(parse(":5"), Err(VsockAddrError::BadCid("".into())));
        assert_eq!(parse("1:2:3"), Err(VsockAddrError::BadPort("2:3".into())));
        assert_eq!(parse("host:5"), Err(VsockAddrError::BadCid("host".into())));
        assert_eq!(parse("4294967295"), Err(VsockAddrError::Wildcard("port")));
        assert_eq!(parse("4294967295:5"), Err(VsockAddrError::Wildcard("CID")));
        assert_eq!(
            parse("x").unwrap_err().to_string(),
            "invalid vsock port \"x\": expected a decimal number below 4294967295"
        );
    }

    #[test]
    fn endpoints_display_and_paths_convert_to_seqpacket() {
        assert_eq!(
            Endpoint::from("/run/vm-catalog/socket"),
            Endpoint::default_socket()
        );
        assert_eq!(
            Endpoint::default_socket().to_string(),
            "/run/vm-catalog/socket"
        );
        assert_eq!(
            Endpoint::Stream("/run/vm/x/vsock_22083".into()).to_string(),
            "stream socket /run/vm/x/vsock_22083"
        );
        assert_eq!(
            Endpoint::Vsock(VsockAddr::DEFAULT).to_string(),
            "vsock 2:22083"
        );
        assert_eq!(
            VsockAddr::DEFAULT.to_string().parse(),
            Ok(VsockAddr::DEFAULT)
        );
    }
}
