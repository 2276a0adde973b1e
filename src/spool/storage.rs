//! The file operations the spool makes, behind one trait.
//!
//! The spool's durability rests on a handful of calls: positional writes and
//! reads, `fdatasync`, `set_len`, create, unlink, rename and a directory fsync.
//! Naming them in one trait lets the tests run the spool on a storage layer that
//! keeps every byte not yet made durable in a volatile buffer and throws it away
//! on a simulated power cut (`sim`, test builds only), the way FoundationDB's and
//! TigerBeetle's simulators find what a crash really leaves behind.
//!
//! Owns no state of the spool's: [`Fs`] is the real filesystem, `sim` a
//! simulated one for tests. Called by the spool's own files only (its open,
//! each stream's segments and acks, the damage report, the 0.1 migration);
//! nothing outside `spool` names it.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// An open file: written at explicit offsets, read at explicit offsets.
pub(crate) trait StoredFile: Send + Sync {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    /// `fdatasync`: what was written is durable when it returns.
    fn sync_data(&self) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// Where the spool keeps its files.
pub(crate) trait Storage: Send + Sync {
    /// Opens a file for reading and writing, creating it when `create` is set.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StoredFile>>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names in a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (files created, removed, renamed) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    /// Bytes free for this process on the filesystem holding `path`.
    fn free_bytes(&self, path: &Path) -> io::Result<u64>;
}

/// Creates `path` and its missing parents, each followed by an fsync of its
/// parent: a new directory's entry is lost in a power cut until its parent is
/// synced, and with it every file below it that a commit reported durable.
pub(crate) fn create_dir_durable(storage: &dyn Storage, path: &Path) -> io::Result<()> {
    if path.as_os_str().is_empty() || storage.exists(path) {
        return Ok(());
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dir_durable(storage, parent)?;
    }
    storage.create_dir_all(path)?;
    match parent {
        Some(parent) => storage.sync_dir(parent),
        None => Ok(()),
    }
}

/// Whether an error says the process ran out of file descriptors.
pub(crate) fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// The real filesystem.
pub(crate) struct Fs;

struct FsFile(std::fs::File);

impl StoredFile for FsFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl Storage for Fs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StoredFile>> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            // Records are log data: readable by the agent only, whatever the umask.
            .mode(0o600)
            .open(path)?;
        Ok(Arc::new(FsFile(file)))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir)? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn free_bytes(&self, path: &Path) -> io::Result<u64> {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `statvfs` is plain data, for which all zeroes is a valid value.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a NUL-terminated path and `s` a valid out-pointer.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(s.f_bavail as u64 * s.f_frsize as u64)
    }
}

#[cfg(test)]
pub(crate) mod sim {
    //! A storage layer with a power switch. Every file has the bytes a power cut
    //! keeps (`durable`, set by `sync_data`) and the bytes the process sees
    //! (`current`); every directory has the names a cut keeps (set by
    //! `sync_dir`) and the names the process sees, subdirectories included: a
    //! directory created or a file created or renamed is lost in a cut unless
    //! its parent was synced since (strict POSIX rules, which ext4's
    //! `auto_da_alloc` and journal ordering only hide). A cut keeps the durable state
    //! plus, for a file that was only appended to, a random prefix of what was
    //! written after its last sync (a torn tail), sometimes with its last bytes
    //! garbled. It can also run out of space (ENOSPC) at a set size.

    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Inode {
        durable: Vec<u8>,
        current: Vec<u8>,
    }

    #[derive(Default)]
    struct State {
        /// Path → inode, as the process sees it.
        current: BTreeMap<PathBuf, Arc<Mutex<Inode>>>,
        /// Path → inode, as a power cut leaves it (directory entries synced).
        durable: BTreeMap<PathBuf, Arc<Mutex<Inode>>>,
        dirs: BTreeSet<PathBuf>,
        /// Directories whose entry in their parent is durable.
        durable_dirs: BTreeSet<PathBuf>,
        /// Bytes all files may hold; past it writes fail with ENOSPC.
        capacity: Option<u64>,
        /// Every `sync_data`, as (path, durable length), for order checks.
        syncs: Vec<(PathBuf, u64)>,
        /// Files open now (for the descriptor bound).
        open_files: Arc<std::sync::atomic::AtomicUsize>,
        /// Most files open at once so far.
        most_open: Arc<std::sync::atomic::AtomicUsize>,
        /// Opens fail with EMFILE past this many open files.
        max_open: Option<usize>,
    }

    /// The simulated storage (cheap to clone: the clones share the files).
    #[derive(Clone, Default)]
    pub(crate) struct Sim {
        state: Arc<Mutex<State>>,
    }

    struct SimFile {
        path: PathBuf,
        inode: Arc<Mutex<Inode>>,
        sim: Sim,
        open_files: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Drop for SimFile {
        fn drop(&mut self) {
            self.open_files
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn enospc() -> io::Error {
        io::Error::from_raw_os_error(libc::ENOSPC)
    }

    impl Sim {
        fn used(state: &State) -> u64 {
            let inodes: Vec<&Arc<Mutex<Inode>>> = state.current.values().collect();
            inodes
                .iter()
                .map(|i| i.lock().unwrap().current.len() as u64)
                .sum()
        }

        pub(crate) fn set_capacity(&self, bytes: Option<u64>) {
            self.state.lock().unwrap().capacity = bytes;
        }

        /// The `sync_data` calls so far: (path, bytes made durable).
        pub(crate) fn syncs(&self) -> Vec<(PathBuf, u64)> {
            self.state.lock().unwrap().syncs.clone()
        }

        /// Most files the process held open at once so far.
        pub(crate) fn most_open(&self) -> usize {
            self.state
                .lock()
                .unwrap()
                .most_open
                .load(std::sync::atomic::Ordering::Relaxed)
        }

        /// Opens fail with EMFILE while this many files are open.
        pub(crate) fn set_max_open(&self, n: Option<usize>) {
            self.state.lock().unwrap().max_open = n;
        }

        /// Writes a whole file, durably (to put back what a cut would keep).
        pub(crate) fn put(&self, path: &Path, bytes: Vec<u8>) {
            let mut s = self.state.lock().unwrap();
            let i = Arc::new(Mutex::new(Inode {
                durable: bytes.clone(),
                current: bytes,
            }));
            s.current.insert(path.to_owned(), i.clone());
            s.durable.insert(path.to_owned(), i);
        }

        /// Removes a file (to damage the spool), durably.
        pub(crate) fn delete(&self, path: &Path) {
            let mut s = self.state.lock().unwrap();
            s.current.remove(path);
            s.durable.remove(path);
        }

        /// Durable length of a file, as a cut would leave it (without torn bytes).
        pub(crate) fn durable_len(&self, path: &Path) -> Option<u64> {
            let s = self.state.lock().unwrap();
            s.durable
                .get(path)
                .map(|i| i.lock().unwrap().durable.len() as u64)
        }

        /// Paths of the files the process sees.
        pub(crate) fn files(&self) -> Vec<PathBuf> {
            self.state.lock().unwrap().current.keys().cloned().collect()
        }

        /// Simulates a power cut: what was not made durable is gone, but for a
        /// random part of what was appended since the last sync.
        pub(crate) fn power_cut(&self, rng: &mut fastrand::Rng) {
            let mut s = self.state.lock().unwrap();
            let mut after = BTreeMap::new();
            for (path, inode) in &s.durable {
                let i = inode.lock().unwrap();
                let mut kept = i.durable.clone();
                if i.current.len() > kept.len() && i.current.starts_with(&kept) && rng.bool() {
                    let extra = rng.usize(0..=i.current.len() - kept.len());
                    kept.extend_from_slice(&i.current[kept.len()..kept.len() + extra]);
                    if extra > 0 && rng.u8(..) < 64 {
                        let n = kept.len();
                        kept[n - 1] ^= 0x5a;
                    }
                }
                after.insert(
                    path.clone(),
                    Arc::new(Mutex::new(Inode {
                        durable: kept.clone(),
                        current: kept,
                    })),
                );
            }
            // A directory survives if its entry and every ancestor's are durable.
            let survives = |d: &Path, durable: &BTreeSet<PathBuf>| {
                d.ancestors()
                    .all(|a| a.parent().is_none() || durable.contains(a))
            };
            let dirs: BTreeSet<PathBuf> = s
                .durable_dirs
                .iter()
                .filter(|d| survives(d, &s.durable_dirs))
                .cloned()
                .chain(std::iter::once(PathBuf::from("/")))
                .collect();
            after.retain(|p, _| p.parent().is_some_and(|d| dirs.contains(d)));
            s.durable_dirs = dirs.clone();
            s.dirs = dirs;
            s.current = after.clone();
            s.durable = after;
        }

        /// Replaces a file's bytes (to damage it), durably.
        pub(crate) fn overwrite(&self, path: &Path, bytes: Vec<u8>) {
            let s = self.state.lock().unwrap();
            let i = s.current.get(path).expect("file exists");
            let mut i = i.lock().unwrap();
            i.durable = bytes.clone();
            i.current = bytes;
        }

        pub(crate) fn read(&self, path: &Path) -> Option<Vec<u8>> {
            let s = self.state.lock().unwrap();
            s.current
                .get(path)
                .map(|i| i.lock().unwrap().current.clone())
        }
    }

    impl StoredFile for SimFile {
        fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
            let s = self.sim.state.lock().unwrap();
            let len = self.inode.lock().unwrap().current.len() as u64;
            let growth = (offset + buf.len() as u64).saturating_sub(len);
            if let Some(cap) = s.capacity {
                if Sim::used(&s) + growth > cap {
                    return Err(enospc());
                }
            }
            let mut i = self.inode.lock().unwrap();
            let end = offset as usize + buf.len();
            if i.current.len() < end {
                i.current.resize(end, 0);
            }
            i.current[offset as usize..end].copy_from_slice(buf);
            Ok(())
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            let i = self.inode.lock().unwrap();
            let end = offset as usize + buf.len();
            if end > i.current.len() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf.copy_from_slice(&i.current[offset as usize..end]);
            Ok(())
        }
        fn len(&self) -> io::Result<u64> {
            Ok(self.inode.lock().unwrap().current.len() as u64)
        }
        fn sync_data(&self) -> io::Result<()> {
            let mut s = self.sim.state.lock().unwrap();
            let mut i = self.inode.lock().unwrap();
            i.durable = i.current.clone();
            let n = i.durable.len() as u64;
            drop(i);
            s.syncs.push((self.path.clone(), n));
            Ok(())
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.inode.lock().unwrap().current.resize(len as usize, 0);
            Ok(())
        }
    }

    impl Storage for Sim {
        fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StoredFile>> {
            let mut s = self.state.lock().unwrap();
            let inode = match s.current.get(path) {
                Some(i) => i.clone(),
                None if create => {
                    if !s.dirs.contains(path.parent().unwrap_or(Path::new(""))) {
                        return Err(io::ErrorKind::NotFound.into());
                    }
                    let i = Arc::new(Mutex::new(Inode::default()));
                    s.current.insert(path.to_owned(), i.clone());
                    i
                }
                None => return Err(io::ErrorKind::NotFound.into()),
            };
            use std::sync::atomic::Ordering::Relaxed;
            let open = s.open_files.fetch_add(1, Relaxed) + 1;
            if s.max_open.is_some_and(|m| open > m) {
                s.open_files.fetch_sub(1, Relaxed);
                return Err(io::Error::from_raw_os_error(libc::EMFILE));
            }
            s.most_open.fetch_max(open, Relaxed);
            Ok(Arc::new(SimFile {
                path: path.to_owned(),
                inode,
                sim: self.clone(),
                open_files: s.open_files.clone(),
            }))
        }
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            let mut s = self.state.lock().unwrap();
            for a in path.ancestors() {
                s.dirs.insert(a.to_owned());
            }
            Ok(())
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            let s = self.state.lock().unwrap();
            if !s.dirs.contains(dir) {
                return Err(io::ErrorKind::NotFound.into());
            }
            let mut names: BTreeSet<String> = s
                .current
                .keys()
                .filter(|p| p.parent() == Some(dir))
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            for d in &s.dirs {
                if d.parent() == Some(dir) {
                    names.extend(d.file_name().map(|n| n.to_string_lossy().into_owned()));
                }
            }
            Ok(names.into_iter().collect())
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            let mut s = self.state.lock().unwrap();
            s.current
                .remove(path)
                .map(|_| ())
                .ok_or_else(|| io::ErrorKind::NotFound.into())
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            let mut s = self.state.lock().unwrap();
            let i = s.current.remove(from).ok_or(io::ErrorKind::NotFound)?;
            s.current.insert(to.to_owned(), i);
            Ok(())
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            let mut s = self.state.lock().unwrap();
            let State {
                current,
                durable,
                dirs,
                durable_dirs,
                ..
            } = &mut *s;
            durable.retain(|p, _| p.parent() != Some(dir));
            for (p, i) in current.iter() {
                if p.parent() == Some(dir) {
                    durable.insert(p.clone(), i.clone());
                }
            }
            durable_dirs.retain(|d| d.parent() != Some(dir));
            durable_dirs.extend(dirs.iter().filter(|d| d.parent() == Some(dir)).cloned());
            Ok(())
        }
        fn exists(&self, path: &Path) -> bool {
            let s = self.state.lock().unwrap();
            s.current.contains_key(path) || s.dirs.contains(path)
        }
        fn free_bytes(&self, _: &Path) -> io::Result<u64> {
            let s = self.state.lock().unwrap();
            Ok(match s.capacity {
                Some(c) => c.saturating_sub(Sim::used(&s)),
                None => u64::MAX / 2,
            })
        }
    }
}
