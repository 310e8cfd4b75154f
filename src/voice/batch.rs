//! Batched UDP I/O (`recvmmsg` / `sendmmsg`): the relay receives up to `BATCH` datagrams
//! per system call and sends a speaker's packet to all of a channel's listeners in one,
//! because at voice packet sizes the system calls, not the cryptography, are the cost.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

pub const BATCH: usize = 32;

/// A socket address in the form the kernel takes.
pub fn to_raw(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid (empty) value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

pub fn from_raw(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Receive buffers for one thread.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<usize>,
    count: usize,
}

impl RecvBatch {
    pub fn new(buf_size: usize) -> RecvBatch {
        RecvBatch {
            bufs: (0..BATCH).map(|_| vec![0u8; buf_size]).collect(),
            // SAFETY: zeroed sockaddr_storage is valid.
            addrs: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            lens: vec![0; BATCH],
            count: 0,
        }
    }

    /// Blocks (up to the socket's read timeout) for at least one datagram, then takes what
    /// else is queued, up to `BATCH`. Returns how many arrived.
    pub fn recv(&mut self, socket: &UdpSocket) -> std::io::Result<usize> {
        let mut iovs: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: zeroed mmsghdr is valid; every pointer set below outlives the call.
        let mut msgs: Vec<libc::mmsghdr> =
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        for i in 0..BATCH {
            msgs[i].msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            msgs[i].msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: msgs holds BATCH valid headers pointing at live buffers.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.count = 0;
            return Err(std::io::Error::last_os_error());
        }
        self.count = n as usize;
        for (len, m) in self.lens.iter_mut().zip(&msgs).take(self.count) {
            // A datagram longer than the buffer is truncated; MSG_TRUNC tells us, and the
            // relay must see it as oversized (the buffer is one byte over the limit).
            *len = if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                usize::MAX
            } else {
                m.msg_len as usize
            };
        }
        Ok(self.count)
    }

    /// The i-th datagram of the last `recv` and its sender.
    pub fn get(&mut self, i: usize) -> Option<(&mut [u8], SocketAddr)> {
        if i >= self.count {
            return None;
        }
        let from = from_raw(&self.addrs[i])?;
        let len = self.lens[i].min(self.bufs[i].len());
        Some((&mut self.bufs[i][..len], from))
    }
}

/// Outgoing datagrams gathered for one `sendmmsg`.
#[derive(Default)]
pub struct SendBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)>,
    used: usize,
}

impl SendBatch {
    /// A cleared buffer to fill for `to`.
    pub fn next_buf(&mut self, to: &SocketAddr) -> &mut Vec<u8> {
        if self.used == self.bufs.len() {
            self.bufs.push(Vec::with_capacity(1200));
            // SAFETY: zeroed sockaddr_storage is valid.
            self.addrs.push((unsafe { std::mem::zeroed() }, 0));
        }
        self.addrs[self.used] = to_raw(to);
        let b = &mut self.bufs[self.used];
        b.clear();
        self.used += 1;
        b
    }

    /// Drops the last buffer taken (sealing failed).
    pub fn undo(&mut self) {
        self.used = self.used.saturating_sub(1);
    }

    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Sends everything gathered; returns how many datagrams the kernel refused.
    pub fn flush(&mut self, socket: &UdpSocket) -> usize {
        let mut sent = 0;
        let mut failed = 0;
        while sent < self.used {
            let n = self.used - sent;
            let mut iovs: Vec<libc::iovec> = self.bufs[sent..self.used]
                .iter()
                .map(|b| libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                })
                .collect();
            // SAFETY: zeroed mmsghdr is valid; the pointers set below outlive the call.
            let mut msgs: Vec<libc::mmsghdr> =
                (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
            for i in 0..n {
                let (addr, len) = &mut self.addrs[sent + i];
                msgs[i].msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                msgs[i].msg_hdr.msg_namelen = *len;
                msgs[i].msg_hdr.msg_iov = &mut iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: msgs holds n valid headers pointing at live buffers.
            let r = unsafe {
                libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, 0)
            };
            if r <= 0 {
                // The first datagram failed (e.g. an unreachable address): skip it.
                sent += 1;
                failed += 1;
                continue;
            }
            sent += r as usize;
        }
        self.used = 0;
        failed
    }
}

/// Bigger socket buffers, so bursts are not dropped by the kernel (best effort).
pub fn enlarge_buffers(socket: &UdpSocket, bytes: libc::c_int) {
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: setsockopt with a pointer to a c_int of the stated size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}
