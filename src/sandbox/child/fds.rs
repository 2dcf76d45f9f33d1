//! The device filter's listener, passed from the command's process to the
//! helper that answers it (see `devices`).

use super::ChildError;
use nix::sys::socket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// One descriptor sent with SCM_RIGHTS; `None` when the peer closed first.
pub(super) fn receive_fd(sock: &OwnedFd) -> Option<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(std::os::fd::RawFd);
    let msg = socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    for c in msg.cmsgs().ok()? {
        if let socket::ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just gave this process the descriptor.
            return fds.first().map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    None
}

/// Sends `fd` over `sock` with SCM_RIGHTS.
pub(super) fn send_fd(sock: &OwnedFd, fd: &OwnedFd) -> Result<(), ChildError> {
    let fds = [fd.as_raw_fd()];
    let iov = [std::io::IoSlice::new(b"f")];
    socket::sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[socket::ControlMessage::ScmRights(&fds)],
        socket::MsgFlags::empty(),
        None,
    )
    .map(|_| ())
    .map_err(ChildError::SendFd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_crosses_the_socket_and_a_closed_peer_sends_none() {
        let pair = || {
            socket::socketpair(
                socket::AddressFamily::Unix,
                socket::SockType::Stream,
                None,
                socket::SockFlag::SOCK_CLOEXEC,
            )
            .unwrap()
        };
        let (ours, theirs) = pair();
        let file = tempfile::tempfile().unwrap();
        send_fd(&theirs, &OwnedFd::from(file)).unwrap();
        assert!(receive_fd(&ours).is_some());
        let (ours, theirs) = pair();
        drop(theirs);
        assert!(receive_fd(&ours).is_none());
    }
}
