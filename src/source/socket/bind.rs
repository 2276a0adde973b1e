//! Binding a socket file: a stale one from a crashed run is replaced, a live one or
//! a file that is not a socket never is, and the file appears at its path with its
//! configured mode and owner already set.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixDatagram, UnixListener};

use super::SocketError;
use crate::config::{SocketConfig, SocketMode};

/// A bound socket, ready to serve.
pub(crate) enum Bound {
    Stream(UnixListener),
    Datagram(UnixDatagram),
}

/// Binds the socket of `config`, replacing a stale socket file left by a crashed
/// run (but never a file that is not a socket, nor a socket someone still listens
/// on), with its mode and owner.
///
/// The socket is bound in a fresh private directory beside `path` (mode 0700), given
/// its mode and owner there and renamed into place: the path never exists with
/// other permissions than configured, and nobody else can swap the file that chmod
/// and chown act on for a symlink.
pub(crate) fn bind(config: &SocketConfig) -> Result<Bound, SocketError> {
    let path = &config.path;
    let bind_err = |source| SocketError::Bind {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            let live = match config.mode {
                SocketMode::Stream => std::os::unix::net::UnixStream::connect(path).is_ok(),
                SocketMode::Datagram => std::os::unix::net::UnixDatagram::unbound()
                    .and_then(|d| d.connect(path))
                    .is_ok(),
            };
            if live {
                return Err(SocketError::InUse {
                    path: path.to_owned(),
                });
            }
            // Stale: the rename below replaces it.
        }
        Ok(_) => {
            return Err(SocketError::NotASocket {
                path: path.to_owned(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(bind_err)?;
    let private = PrivateDir::create(dir, path).map_err(bind_err)?;
    let tmp = private.path.join("socket");
    let bound = match config.mode {
        SocketMode::Stream => Bound::Stream(UnixListener::bind(&tmp).map_err(bind_err)?),
        SocketMode::Datagram => Bound::Datagram(UnixDatagram::bind(&tmp).map_err(bind_err)?),
    };
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(config.file_mode))
        .map_err(bind_err)?;
    if config.owner.is_some() || config.group.is_some() {
        std::os::unix::fs::lchown(&tmp, config.owner, config.group).map_err(bind_err)?;
    }
    std::fs::rename(&tmp, path).map_err(bind_err)?;
    Ok(bound)
}

/// A directory only the agent can enter, removed (with what is left in it) when
/// dropped.
struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    /// A new directory in `dir`, named after `target`.
    fn create(dir: &Path, target: &Path) -> io::Result<PrivateDir> {
        use std::os::unix::fs::DirBuilderExt;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        loop {
            let path = dir.join(format!(
                ".{name}.bind-{}-{:08x}",
                std::process::id(),
                fastrand::u32(..)
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(PrivateDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path.join("socket"));
        let _ = std::fs::remove_dir(&self.path);
    }
}
