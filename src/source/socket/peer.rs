//! Who is on the other end of a stream connection, and whether they may stay.
//!
//! `allow_gids` grants access to members of a group, as `adduser myapp shardline`
//! makes them: a *supplementary* group, not the peer's primary one. So the peer's
//! groups are read from the kernel: `SO_PEERGROUPS` (Linux 4.13 and later, taken at
//! `connect`, like `SO_PEERCRED`), or else the `Groups:` line of
//! `/proc/<pid>/status`.

use std::io;
use std::os::fd::AsRawFd;

use tokio::net::UnixStream;

use crate::config::SocketConfig;

/// The credentials of a connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl Peer {
    /// The peer of `stream`, as the kernel recorded it at `connect`.
    pub(crate) fn of(stream: &UnixStream) -> io::Result<Peer> {
        let cred = stream.peer_cred()?;
        Ok(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        })
    }
}

/// Whether a peer may connect: its uid is in `allow_uids`, or its primary or one of
/// its supplementary groups is in `allow_gids`. `groups` is asked for only when the
/// answer depends on it.
pub(crate) fn allowed(
    config: &SocketConfig,
    peer: &Peer,
    groups: impl FnOnce() -> io::Result<Vec<u32>>,
) -> io::Result<bool> {
    if config.allow_uids.is_empty() && config.allow_gids.is_empty() {
        return Ok(true);
    }
    if config.allow_uids.contains(&peer.uid) || config.allow_gids.contains(&peer.gid) {
        return Ok(true);
    }
    if config.allow_gids.is_empty() {
        return Ok(false);
    }
    Ok(groups()?.iter().any(|g| config.allow_gids.contains(g)))
}

/// The supplementary groups of the peer of `stream`.
pub(crate) fn groups(stream: &UnixStream, peer: &Peer) -> io::Result<Vec<u32>> {
    match peer_groups(stream) {
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => match peer.pid {
            Some(pid) => proc_groups(pid),
            None => Err(e),
        },
        other => other,
    }
}

/// `SO_PEERGROUPS`: the groups the peer had when it connected.
fn peer_groups(stream: &UnixStream) -> io::Result<Vec<u32>> {
    const GID: usize = std::mem::size_of::<libc::gid_t>();
    // Most processes are in a handful of groups; the kernel says when more room is
    // needed (ERANGE, with the size it needs).
    let mut groups: Vec<libc::gid_t> = vec![0; 16];
    loop {
        let mut len = (groups.len() * GID) as libc::socklen_t;
        // SAFETY: the buffer is valid for `len` bytes, which the kernel does not
        // exceed, and it writes plain integers.
        let r = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r == 0 {
            groups.truncate(len as usize / GID);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        let needed = len as usize / GID;
        if e.raw_os_error() == Some(libc::ERANGE) && needed > groups.len() {
            groups.resize(needed, 0);
            continue;
        }
        return Err(e);
    }
}

/// The `Groups:` line of `/proc/<pid>/status` (kernels without `SO_PEERGROUPS`).
fn proc_groups(pid: i32) -> io::Result<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_groups(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/status has no readable Groups line"),
        )
    })
}

fn parse_groups(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("Groups:"))?;
    line.split_whitespace().map(|g| g.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Framing, OnFull, SocketMode};

    fn socket(uids: Vec<u32>, gids: Vec<u32>) -> SocketConfig {
        SocketConfig {
            block: "socket[0]".into(),
            path: "/x".into(),
            mode: SocketMode::Stream,
            framing: Framing::Frames,
            stream: "s".into(),
            streams: Vec::new(),
            max_line_bytes: 10,
            file_mode: 0o660,
            owner: None,
            group: None,
            allow_uids: uids,
            allow_gids: gids,
            max_connections: 1,
            max_connections_per_uid: 1,
            idle_timeout: std::time::Duration::from_secs(1),
            on_full: OnFull::Wait,
            format: Default::default(),
            record_id: false,
        }
    }

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer {
            uid,
            gid,
            pid: None,
        }
    }

    fn check(c: &SocketConfig, p: &Peer, groups: &[u32]) -> bool {
        allowed(c, p, || Ok(groups.to_vec())).unwrap()
    }

    #[test]
    fn credentials_and_groups_decide_access() {
        assert!(check(&socket(vec![], vec![]), &peer(1000, 1000), &[]));
        let c = socket(vec![0, 1000], vec![]);
        assert!(check(&c, &peer(1000, 5), &[]));
        assert!(!check(&c, &peer(65534, 65534), &[4]));
        let c = socket(vec![], vec![4]);
        assert!(check(&c, &peer(1234, 4), &[]));
        assert!(!check(&c, &peer(1234, 5), &[6, 7]));
        // Regression (issue 14, row 7): a supplementary group grants access.
        assert!(check(&c, &peer(1234, 5), &[6, 4]));
        // Groups are not read when the credentials decide.
        assert!(allowed(&c, &peer(1, 4), || panic!("groups read")).unwrap());
        let c = socket(vec![7], vec![]);
        assert!(!allowed(&c, &peer(1, 4), || panic!("groups read")).unwrap());
    }

    #[test]
    fn groups_of_a_real_peer() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, _b) = UnixStream::pair().unwrap();
            let p = Peer::of(&a).unwrap();
            let mut ours = proc_groups(std::process::id() as i32).unwrap();
            let mut got = groups(&a, &p).unwrap();
            ours.sort();
            got.sort();
            assert_eq!(got, ours);
        });
    }

    #[test]
    fn proc_status_groups_line() {
        let s = "Name:\tx\nGroups:\t4 24 27 \nNSpid:\t1\n";
        assert_eq!(parse_groups(s), Some(vec![4, 24, 27]));
        assert_eq!(parse_groups("Groups:\t\n"), Some(vec![]));
        assert_eq!(parse_groups("Name:\tx\n"), None);
    }
}
