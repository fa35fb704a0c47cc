//! Local filesystem storage (`file://` locations) confined to one root directory.
//!
//! Every path is resolved beneath the root with `openat2(RESOLVE_BENEATH)`: the kernel refuses any
//! resolution that would leave the root, including through a symbolic link (absolute or relative)
//! anywhere on the way, so a link planted inside a warehouse cannot make floe read, write, copy,
//! rename or delete a file outside it. The final operations work on directory descriptors obtained
//! that way: files are created with `O_EXCL | O_NOFOLLOW`, renamed with `renameat` and removed with
//! `unlinkat` within one directory, so none of them follows a link either. On kernels without
//! `openat2` (before 5.6), each component is opened with `O_NOFOLLOW` instead, which refuses every
//! symbolic link below the root. The root itself is configured by the operator and may be a link.
//!
//! Durable writes survive a power cut, not only a crash: a new file's data and its directory entry
//! are synced, and so is the parent of every directory created on the way to it. Metadata files
//! (`write_new`) are synced by a group sync of their filesystem (`group_sync`), shared with the
//! commits writing at the same moment; it also writes back the filesystem's other dirty data
//! (the data files clients wrote just before committing them, for one).

use std::ffi::OsStr;
use std::io::{ErrorKind, Read, Write};
use std::ops::ControlFlow;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::StreamExt;
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2, renameat};
use nix::sys::stat::{Mode, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use tokio::io::{AsyncRead, AsyncWriteExt, BufReader};

use super::group_sync::GroupSync;
use super::{LIST_PAGE, ListPages, Location, Storage, StorageError};

/// The buffer of a streamed copy: the memory one copy holds, whatever the file's size.
const COPY_BUFFER_BYTES: usize = 1024 * 1024;

/// Files floe creates: readable by the group, like the files Iceberg clients write.
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

/// A local directory tree served as storage (see the module docs).
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: Location,
    root_path: PathBuf,
    /// Makes concurrent writes durable together (shared by the clones of this storage).
    group_sync: std::sync::Arc<GroupSync>,
}

impl LocalStorage {
    pub fn new(root: Location) -> Result<Self, StorageError> {
        let root_path = root.local_path().ok_or_else(|| StorageError::OutsideRoot {
            location: root.to_string(),
            root: "a local directory".to_string(),
        })?;
        Ok(Self {
            root,
            root_path,
            group_sync: Default::default(),
        })
    }

    /// The path of `location` relative to the root (empty for the root itself).
    fn relative(&self, location: &Location) -> Result<PathBuf, StorageError> {
        self.check(location)?;
        let segments = location.relative_to(&self.root).unwrap_or_default();
        Ok(segments.iter().collect())
    }

    /// Runs blocking filesystem work off the async runtime's threads.
    async fn blocking<T: Send + 'static>(
        &self,
        location: &Location,
        work: impl FnOnce(&Self) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let this = self.clone();
        let shown = location.to_string();
        tokio::task::spawn_blocking(move || work(&this))
            .await
            .map_err(|e| StorageError::Io {
                location: shown,
                source: std::io::Error::other(e),
            })?
    }

    /// Maps an IO error on `location` to a storage error of its kind.
    fn error(&self, location: &Location, source: std::io::Error) -> StorageError {
        match (source.kind(), source.raw_os_error()) {
            (ErrorKind::NotFound, _) => StorageError::NotFound(location.to_string()),
            (ErrorKind::AlreadyExists, _) => StorageError::AlreadyExists(location.to_string()),
            // EXDEV: openat2 refused to resolve out of the root; ELOOP: a link under O_NOFOLLOW.
            (_, Some(code)) if code == Errno::EXDEV as i32 || code == Errno::ELOOP as i32 => {
                StorageError::SymlinkEscape {
                    location: location.to_string(),
                    root: self.root.to_string(),
                }
            }
            _ => StorageError::Io {
                location: location.to_string(),
                source,
            },
        }
    }

    /// The root directory, created first when `create` says so.
    fn open_root(&self, create: bool) -> std::io::Result<OwnedFd> {
        if create {
            std::fs::create_dir_all(&self.root_path)?;
        }
        let fd = nix::fcntl::open(
            &self.root_path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: `open` just returned this descriptor, and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The directory at `relative` below the root (the root for an empty path), its missing
    /// components created when `create` says so.
    fn open_dir(&self, relative: &Path, create: bool) -> std::io::Result<OwnedFd> {
        let root = self.open_root(create)?;
        if relative.as_os_str().is_empty() {
            return Ok(root);
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
        match open_beneath(&root, relative, flags) {
            Err(e) if create && e.kind() == ErrorKind::NotFound => {
                let mut dir = root;
                for component in relative.iter() {
                    match mkdirat(
                        Some(dir.as_raw_fd()),
                        component,
                        Mode::from_bits_truncate(DIR_MODE),
                    ) {
                        // A new directory is an entry of its parent: durable only once the
                        // parent is synced, or a power cut could lose it with all below it.
                        Ok(()) => nix::unistd::fsync(dir.as_raw_fd())?,
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    dir = open_beneath(&dir, Path::new(component), flags)?;
                }
                Ok(dir)
            }
            other => other,
        }
    }

    /// The directory holding `relative` and the file's name in it.
    fn open_parent<'a>(
        &self,
        relative: &'a Path,
        create: bool,
    ) -> std::io::Result<(OwnedFd, &'a OsStr)> {
        let name = relative.file_name().ok_or_else(|| {
            std::io::Error::new(ErrorKind::InvalidInput, "the storage root is not a file")
        })?;
        let dir = self.open_dir(relative.parent().unwrap_or(Path::new("")), create)?;
        Ok((dir, name))
    }

    /// Opens a regular file below the root for reading.
    fn open_file(&self, location: &Location) -> Result<std::fs::File, StorageError> {
        let relative = self.relative(location)?;
        let root = self.open_root(false).map_err(|e| self.error(location, e))?;
        let fd =
            open_beneath(&root, &relative, OFlag::O_RDONLY).map_err(|e| self.error(location, e))?;
        let file = std::fs::File::from(fd);
        let meta = file.metadata().map_err(|e| self.error(location, e))?;
        if !meta.is_file() {
            return Err(StorageError::NotAFile(location.to_string()));
        }
        Ok(file)
    }

    /// A new file under a temporary name beside `relative` (its directory created), for a write
    /// that appears only whole when [`publish`](Self::publish) renames it.
    fn create_temp(&self, relative: &Path) -> std::io::Result<Temp> {
        let (dir, name) = self.open_parent(relative, true)?;
        let temp_name = format!(
            ".{}.{}.floe-tmp",
            name.to_string_lossy(),
            uuid::Uuid::new_v4().simple()
        );
        let file = create_exclusive(&dir, OsStr::new(&temp_name))?;
        Ok(Temp {
            dir,
            temp_name,
            name: name.to_os_string(),
            file: Some(file),
        })
    }

    /// Copies a file of `source` (another local storage, or this one) to `to` with the kernel's
    /// copy (no user-space buffer), under a temporary name then renamed; durable only after
    /// [`Storage::sync_all`].
    pub async fn copy_from(
        &self,
        source: &LocalStorage,
        from: &Location,
        to: &Location,
    ) -> Result<u64, StorageError> {
        let (source, from_owned, to_owned) = (source.clone(), from.clone(), to.clone());
        self.blocking(to, move |this| {
            let mut input = source.open_file(&from_owned)?;
            let relative = this.relative(&to_owned)?;
            let mut temp = this
                .create_temp(&relative)
                .map_err(|e| this.error(&to_owned, e))?;
            let copied = std::io::copy(&mut input, temp.file())
                .and_then(|copied| temp.publish(false).map(|()| copied))
                .map_err(|e| this.error(&to_owned, e))?;
            Ok(copied)
        })
        .await
    }
}

/// A file being written under a temporary name; removed unless published.
struct Temp {
    dir: OwnedFd,
    temp_name: String,
    name: std::ffi::OsString,
    file: Option<std::fs::File>,
}

impl Temp {
    fn file(&mut self) -> &mut std::fs::File {
        self.file.as_mut().expect("open until published")
    }

    /// Renames the finished file to its name (replacing a file, or a link, of that name, never
    /// following it); with `durable`, syncs the directory so the rename survives a crash before
    /// anyone commits a pointer to the file.
    fn publish(mut self, durable: bool) -> std::io::Result<()> {
        drop(self.file.take());
        renameat(
            Some(self.dir.as_raw_fd()),
            self.temp_name.as_str(),
            Some(self.dir.as_raw_fd()),
            self.name.as_os_str(),
        )?;
        self.temp_name.clear();
        if durable {
            nix::unistd::fsync(self.dir.as_raw_fd())?;
        }
        Ok(())
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.temp_name.is_empty() {
            let _ = unlinkat(
                Some(self.dir.as_raw_fd()),
                self.temp_name.as_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

/// Opens `relative` below `dir` without leaving it (see the module docs). Links that stay below
/// `dir` are followed unless `flags` has `O_NOFOLLOW` (for the last component).
fn open_beneath(dir: &OwnedFd, relative: &Path, flags: OFlag) -> std::io::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(dir.as_fd().as_raw_fd(), relative, how) {
        // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(Errno::ENOSYS) => open_each_component(dir, relative, flags),
        Err(e) => Err(e.into()),
    }
}

/// Without `openat2`: every component opened with `O_NOFOLLOW`, so no link is followed at all.
fn open_each_component(dir: &OwnedFd, relative: &Path, flags: OFlag) -> std::io::Result<OwnedFd> {
    let components: Vec<&OsStr> = relative.iter().collect();
    let mut current: Option<OwnedFd> = None;
    for (i, component) in components.iter().enumerate() {
        let last = i + 1 == components.len();
        let how = if last {
            flags
        } else {
            OFlag::O_RDONLY | OFlag::O_DIRECTORY
        } | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC;
        let parent = current.as_ref().unwrap_or(dir).as_raw_fd();
        let fd = openat(Some(parent), *component, how, Mode::empty())?;
        // SAFETY: `openat` just returned this descriptor, and nothing else owns it.
        current = Some(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    current.ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "empty path"))
}

/// Creates a new file in `dir`, failing if anything (a file, a link) has that name.
fn create_exclusive(dir: &OwnedFd, name: &OsStr) -> std::io::Result<std::fs::File> {
    let fd = openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(FILE_MODE),
    )?;
    // SAFETY: `openat` just returned this descriptor, and nothing else owns it.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[async_trait]
impl Storage for LocalStorage {
    fn root(&self) -> &Location {
        &self.root
    }

    async fn write_new(&self, location: &Location, bytes: &[u8]) -> Result<(), StorageError> {
        let relative = self.relative(location)?;
        let (owned, bytes) = (location.clone(), bytes.to_vec());
        self.blocking(location, move |this| {
            let (dir, name) = this
                .open_parent(&relative, true)
                .map_err(|e| this.error(&owned, e))?;
            let mut file = create_exclusive(&dir, name).map_err(|e| this.error(&owned, e))?;
            // The pointer to this file is committed right after: its bytes and its directory
            // entry must be on disk first, so that a power cut cannot leave a pointer to nothing.
            // One filesystem sync for this and every concurrent write (`group_sync`).
            file.write_all(&bytes)
                .and_then(|()| this.group_sync.sync(&dir))
                .map_err(|e| this.error(&owned, e))
        })
        .await
    }

    async fn read(&self, location: &Location, max_bytes: u64) -> Result<Vec<u8>, StorageError> {
        let owned = location.clone();
        self.blocking(location, move |this| {
            let file = this.open_file(&owned)?;
            let too_large = || StorageError::TooLarge {
                location: owned.to_string(),
                limit: max_bytes,
            };
            let len = file.metadata().map_err(|e| this.error(&owned, e))?.len();
            if len > max_bytes {
                return Err(too_large());
            }
            let mut bytes = Vec::with_capacity(len as usize);
            file.take(max_bytes.saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(|e| this.error(&owned, e))?;
            if bytes.len() as u64 > max_bytes {
                return Err(too_large());
            }
            Ok(bytes)
        })
        .await
    }

    async fn size(&self, location: &Location) -> Result<Option<u64>, StorageError> {
        let owned = location.clone();
        self.blocking(location, move |this| match this.open_file(&owned) {
            Ok(file) => Ok(Some(
                file.metadata().map_err(|e| this.error(&owned, e))?.len(),
            )),
            Err(StorageError::NotFound(_) | StorageError::NotAFile(_)) => Ok(None),
            Err(other) => Err(other),
        })
        .await
    }

    async fn open(
        &self,
        location: &Location,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>, StorageError> {
        let owned = location.clone();
        let file = self
            .blocking(location, move |this| this.open_file(&owned))
            .await?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn write_stream(
        &self,
        location: &Location,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        durable: bool,
    ) -> Result<u64, StorageError> {
        let relative = self.relative(location)?;
        let owned = location.clone();
        let mut temp = self
            .blocking(location, move |this| {
                this.create_temp(&relative)
                    .map_err(|e| this.error(&owned, e))
            })
            .await?;
        let file = temp.file.take().expect("just created");
        let result = async {
            let mut file = tokio::fs::File::from_std(file);
            let mut buffered = BufReader::with_capacity(COPY_BUFFER_BYTES, reader);
            let written = tokio::io::copy_buf(&mut buffered, &mut file).await?;
            file.flush().await?;
            if durable {
                file.sync_data().await?;
            }
            Ok::<_, std::io::Error>((written, file.into_std().await))
        }
        .await;
        // On failure `temp` is dropped here, which removes the temporary file.
        let (written, file) = result.map_err(|e| self.error(location, e))?;
        temp.file = Some(file);
        let owned = location.clone();
        self.blocking(location, move |this| {
            temp.publish(durable).map_err(|e| this.error(&owned, e))
        })
        .await?;
        Ok(written)
    }

    async fn sync_all(&self) -> Result<(), StorageError> {
        let root = self.root.clone();
        self.blocking(&root.clone(), move |this| {
            let dir = this.open_root(true).map_err(|e| this.error(&root, e))?;
            // syncfs flushes the whole filesystem holding the root.
            nix::unistd::syncfs(dir.as_raw_fd()).map_err(|e| this.error(&root, e.into()))
        })
        .await
    }

    fn as_local(&self) -> Option<&LocalStorage> {
        Some(self)
    }

    async fn delete(&self, location: &Location) -> Result<(), StorageError> {
        let relative = self.relative(location)?;
        let owned = location.clone();
        self.blocking(location, move |this| {
            let (dir, name) = match this.open_parent(&relative, false) {
                Ok(found) => found,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(this.error(&owned, e)),
            };
            // unlinkat removes a link itself, never what it points to.
            match unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err(this.error(&owned, e.into())),
            }
        })
        .await
    }

    fn list_pages(&self, prefix: &Location) -> ListPages {
        // The walk runs on a blocking thread and hands over one page at a time: the channel
        // holds one, so the walk waits while the consumer works, and stops when it is dropped.
        let (pages, received) = tokio::sync::mpsc::channel(1);
        let (this, owned) = (self.clone(), prefix.clone());
        tokio::task::spawn_blocking(move || {
            let mut page = Vec::with_capacity(LIST_PAGE);
            let walked = this.walk(&owned, |file| {
                page.push(file);
                if page.len() < LIST_PAGE {
                    return ControlFlow::Continue(());
                }
                match pages.blocking_send(Ok(std::mem::take(&mut page))) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()),
                }
            });
            let last = match walked {
                Ok(_) if page.is_empty() => return,
                Ok(_) => Ok(page),
                Err(err) => Err(err),
            };
            let _ = pages.blocking_send(last);
        });
        futures::stream::unfold(received, |mut received| async move {
            let page = received.recv().await?;
            Some((page, received))
        })
        .boxed()
    }

    async fn remove_empty_dirs(&self, prefix: &Location) -> Result<(), StorageError> {
        let owned = prefix.clone();
        self.blocking(prefix, move |this| {
            let dirs = this.walk(&owned, |_| ControlFlow::Continue(()))?;
            // Children come after their parents in `dirs`: removing in reverse empties each
            // parent before it is tried. A directory that still holds anything stays.
            for dir in dirs.iter().rev() {
                let Ok(relative) = this.relative(dir) else {
                    continue;
                };
                if let Ok((parent, name)) = this.open_parent(&relative, false) {
                    let _ = unlinkat(Some(parent.as_raw_fd()), name, UnlinkatFlags::RemoveDir);
                }
            }
            Ok(())
        })
        .await
    }
}

impl LocalStorage {
    /// Walks the tree under `prefix`, handing each file to `on_file` (which may stop the walk),
    /// and returns the directories it went through (`prefix` included, parents before their
    /// children). Symbolic links are files here, never entered; a missing directory holds
    /// nothing.
    fn walk(
        &self,
        prefix: &Location,
        mut on_file: impl FnMut(Location) -> ControlFlow<()>,
    ) -> Result<Vec<Location>, StorageError> {
        let mut dirs = Vec::new();
        let root = match self.open_root(false) {
            Ok(root) => root,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(dirs),
            Err(e) => return Err(self.error(prefix, e)),
        };
        let mut stack = vec![prefix.clone()];
        while let Some(dir) = stack.pop() {
            let relative = self.relative(&dir)?;
            // A directory swapped for a link since it was listed is not entered.
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
            let fd = if relative.as_os_str().is_empty() {
                root.try_clone().map_err(|e| self.error(&dir, e))?
            } else {
                match open_beneath(&root, &relative, flags) {
                    Ok(fd) => fd,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) if e.raw_os_error() == Some(Errno::ELOOP as i32) => continue,
                    Err(e) if e.raw_os_error() == Some(Errno::ENOTDIR as i32) => continue,
                    Err(e) => return Err(self.error(&dir, e)),
                }
            };
            let dir_fd = fd.as_raw_fd();
            // `Dir` owns (and closes) the descriptor from here on.
            let mut entries = nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(fd))
                .map_err(|e| self.error(&dir, e.into()))?;
            for entry in entries.iter() {
                let entry = entry.map_err(|e| self.error(&dir, e.into()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name == "." || name == ".." {
                    continue;
                }
                let Ok(child) = dir.join(&name) else {
                    tracing::warn!(directory = %dir, name, "a file whose name is not a valid \
                        location segment is left alone");
                    continue;
                };
                let is_dir = match entry.file_type() {
                    Some(kind) => kind == nix::dir::Type::Directory,
                    None => {
                        // The filesystem does not say: ask without following a link.
                        let stat = nix::sys::stat::fstatat(
                            Some(dir_fd),
                            entry.file_name(),
                            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                        )
                        .map_err(|e| self.error(&child, e.into()))?;
                        stat.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR
                    }
                };
                if is_dir {
                    stack.push(child);
                } else if on_file(child).is_break() {
                    return Ok(dirs);
                }
            }
            dirs.push(dir);
        }
        // Parents before children, as the reverse removal in `remove_empty_dirs` needs.
        dirs.sort_by_key(|d| d.segments().len());
        Ok(dirs)
    }
}
