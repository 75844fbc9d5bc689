//! Content-addressed blobs in a local directory.
//!
//! Layout: `blobs/<algorithm>/<first two hex>/<hex>` for blobs, `uploads/<uuid>` for
//! uploads in progress. A blob file only ever appears by `rename` from a fully written,
//! fsynced upload file, so a reader can never see a partial blob, and a crash leaves at
//! worst an orphaned upload file (removed when its session expires).
//!
//! Writes copy the request body into a few large blocks that go through two blocking
//! threads in turn: one hashes, then one writes with direct I/O. SHA-256 and the writes
//! then overlap instead of adding up, which is what keeps a large push close to hashing
//! speed; blocks are recycled, so memory per upload is a few blocks whatever the blob
//! size. See [`StagingFile`] and [`Block`] for why direct I/O and why these blocks.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, Semaphore, SemaphorePermit};
use uuid::Uuid;

use super::{Appended, BlobStore, ByteRange, ByteStream, StorageError};
use crate::digest::{Algorithm, Digest, DigestHasher};

/// Read size when streaming a blob out; large enough to keep syscalls cheap.
const READ_CHUNK: usize = 512 * 1024;
/// Blobs up to this size are read in one go instead of through a reader thread.
const SMALL_BLOB: u64 = 1024 * 1024;
/// Size of each slice of a mapped blob handed to the HTTP layer.
const MAPPED_CHUNK: usize = 2 * 1024 * 1024;

/// A slice of a mapped blob, owning its share of the mapping.
struct MappedChunk {
    map: std::sync::Arc<memmap2::Mmap>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MappedChunk {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.start..self.end]
    }
}

impl Drop for MappedChunk {
    fn drop(&mut self) {
        // Sent: unmap its pages from this process so a pull of a large blob does not
        // grow the gateway's RSS by the blob's size. The pages stay in the page cache.
        // SAFETY: a read-only file mapping never written through; dropped pages are
        // re-read from the file if touched again, so no data can be lost.
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                self.start,
                self.end - self.start,
            )
        };
    }
}

#[derive(Debug, Clone)]
pub struct FilesystemStore {
    /// Directory holding `blobs/` and `uploads/`.
    root: PathBuf,
    /// Whether commits fsync; off only for throwaway set-ups where speed beats durability.
    fsync: bool,
}

impl FilesystemStore {
    /// Opens (creating if needed) a store under `root`.
    pub fn open(root: impl Into<PathBuf>, fsync: bool) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("blobs"))?;
        fs::create_dir_all(root.join("uploads"))?;
        Ok(FilesystemStore { root, fsync })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn upload_path(&self, id: Uuid) -> PathBuf {
        self.root.join("uploads").join(id.to_string())
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }
}

async fn blocking<T, F>(f: F) -> Result<T, StorageError>
where
    F: FnOnce() -> Result<T, StorageError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Io(io::Error::other(e)))?
}

fn not_found_as<T>(
    result: io::Result<T>,
    err: impl FnOnce() -> StorageError,
) -> Result<T, StorageError> {
    result.map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            err()
        } else {
            StorageError::Io(e)
        }
    })
}

#[async_trait]
impl BlobStore for FilesystemStore {
    async fn create_upload(&self, id: Uuid) -> Result<(), StorageError> {
        let path = self.upload_path(id);
        blocking(move || {
            OpenOptions::new().write(true).create_new(true).open(path)?;
            Ok(())
        })
        .await
    }

    async fn append_upload(
        &self,
        id: Uuid,
        offset: u64,
        mut body: ByteStream,
        mut hasher: DigestHasher,
    ) -> Result<Appended, StorageError> {
        let path = self.upload_path(id);
        let (mut staging, first) = blocking(move || {
            let mut staging =
                not_found_as(StagingFile::open(path), || StorageError::UploadNotFound(id))?;
            let first = staging.first_block(offset)?;
            Ok((staging, first))
        })
        .await?;

        // Blocks go request -> hasher -> writer -> back to the request side. Every queue
        // can hold every block there is, so no thread ever waits on a full queue: the
        // request side waiting for a free block is the only back-pressure.
        let (hash_tx, mut hash_rx) = mpsc::channel::<Block>(QUEUE);
        let (write_tx, mut write_rx) = mpsc::channel::<Block>(QUEUE);
        let (free_tx, free_rx) = mpsc::channel::<Block>(QUEUE);
        let hash_thread = tokio::task::spawn_blocking(move || {
            while let Some(block) = hash_rx.blocking_recv() {
                hasher.update(block.new_bytes());
                // A closed queue means the writer failed; its error is reported below.
                if write_tx.blocking_send(block).is_err() {
                    break;
                }
            }
            hasher
        });
        let write_thread = tokio::task::spawn_blocking(move || -> io::Result<u64> {
            let mut written = 0u64;
            let mut end = None;
            while let Some(mut block) = write_rx.blocking_recv() {
                staging.write(&mut block)?;
                written += block.new_bytes().len() as u64;
                end = Some(block.end());
                // Fails only once the request side is done; the block is then freed.
                let _ = free_tx.try_send(block);
            }
            if let Some(end) = end {
                staging.finish(end)?;
            }
            Ok(written)
        });

        // Each frame is copied into a block at once and dropped, which hands hyper back
        // its read buffer: kept while hashing and writing, it would make hyper allocate
        // (and the kernel fault in) a fresh buffer for every frame.
        let mut pool = BlockPool::new(free_rx);
        let mut next_offset = first.file_offset;
        let mut current = Some(first);
        let mut failure = None;
        'body: loop {
            let item = match body.next().now_or_never() {
                Some(item) => item,
                // The client paused with bytes waiting for their block to fill: after a
                // moment they go to disk as they are, as they would have without blocks.
                None if current.as_ref().is_some_and(|b| !b.new_bytes().is_empty()) => {
                    match tokio::time::timeout(IDLE_FLUSH, body.next()).await {
                        Ok(item) => item,
                        Err(_) => {
                            let partial = current.take().expect("checked above");
                            // Placed by `continue_after`, hence no offset here.
                            let mut next = match pool.next(0).await {
                                Ok(Some(block)) => block,
                                Ok(None) => break 'body,
                                Err(e) => {
                                    failure = Some(StorageError::Io(e));
                                    break 'body;
                                }
                            };
                            next.continue_after(&partial);
                            if hash_tx.send(partial).await.is_err() {
                                break 'body;
                            }
                            current = Some(next);
                            continue;
                        }
                    }
                }
                None => body.next().await,
            };
            let frame = match item {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    failure = Some(StorageError::Body(e));
                    break;
                }
                None => break,
            };
            let mut rest = &frame[..];
            while !rest.is_empty() {
                let block = match &mut current {
                    Some(block) => block,
                    None => match pool.next(next_offset).await {
                        Ok(Some(block)) => current.insert(block),
                        // The writer failed; its error is reported below.
                        Ok(None) => break 'body,
                        Err(e) => {
                            failure = Some(StorageError::Io(e));
                            break 'body;
                        }
                    },
                };
                let n = block.fill(rest);
                rest = &rest[n..];
                if block.is_full() {
                    next_offset = block.end();
                    let full = current.take().expect("the block being filled");
                    if hash_tx.send(full).await.is_err() {
                        break 'body;
                    }
                }
            }
        }
        if failure.is_none() {
            if let Some(last) = current.take().filter(|b| !b.new_bytes().is_empty()) {
                // Fails only when the writer failed, reported below.
                let _ = hash_tx.send(last).await;
            }
        }
        drop(hash_tx);
        drop(pool);
        let hasher = hash_thread
            .await
            .map_err(|e| StorageError::Io(io::Error::other(e)))?;
        let written = write_thread
            .await
            .map_err(|e| StorageError::Io(io::Error::other(e)))??;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(Appended { written, hasher })
    }

    async fn hash_upload(
        &self,
        id: Uuid,
        len: u64,
        algorithm: Algorithm,
    ) -> Result<DigestHasher, StorageError> {
        let path = self.upload_path(id);
        blocking(move || {
            let file = not_found_as(File::open(path), || StorageError::UploadNotFound(id))?;
            let mut reader = file.take(len);
            let mut hasher = DigestHasher::new(algorithm);
            let mut buf = vec![0u8; READ_CHUNK];
            let mut seen = 0u64;
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                seen += n as u64;
            }
            if seen != len {
                return Err(StorageError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("upload {id} holds {seen} bytes, expected {len}"),
                )));
            }
            Ok(hasher)
        })
        .await
    }

    async fn commit_upload(&self, id: Uuid, len: u64, digest: &Digest) -> Result<(), StorageError> {
        let upload = self.upload_path(id);
        let blob = self.blob_path(digest);
        let fsync = self.fsync;
        blocking(move || {
            let file = not_found_as(OpenOptions::new().write(true).open(&upload), || {
                StorageError::UploadNotFound(id)
            })?;
            // A failed PATCH may have left bytes past the accepted length.
            file.set_len(len)?;
            if fsync {
                file.sync_all()?;
            }
            drop(file);
            if blob.exists() {
                // Same digest, same bytes: the blob is already there.
                fs::remove_file(&upload)?;
                return Ok(());
            }
            let dir = blob.parent().expect("blob path has a parent");
            fs::create_dir_all(dir)?;
            fs::rename(&upload, &blob)?;
            if fsync {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_upload(&self, id: Uuid) -> Result<(), StorageError> {
        let path = self.upload_path(id);
        blocking(move || match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        })
        .await
    }

    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        let path = self.blob_path(digest);
        blocking(move || match fs::metadata(path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        })
        .await
    }

    async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, StorageError> {
        let path = self.blob_path(digest);
        let missing = digest.clone();
        let (file, len) = blocking(move || {
            let mut file = not_found_as(File::open(path), || StorageError::BlobNotFound(missing))?;
            let size = file.metadata()?.len();
            let (start, len) = match range {
                Some(r) => (r.start, r.len()),
                None => (0, size),
            };
            file.seek(SeekFrom::Start(start))?;
            Ok((file, len))
        })
        .await?;

        if len <= SMALL_BLOB {
            let bytes = blocking(move || {
                let mut buf = Vec::with_capacity(len as usize);
                file.take(len).read_to_end(&mut buf)?;
                Ok(Bytes::from(buf))
            })
            .await?;
            return Ok(Box::pin(futures::stream::once(async move { Ok(bytes) })));
        }

        // Large blobs are served from a read-only mapping: hyper writes straight from
        // the page cache to the socket, with no read copy and no fresh buffer per chunk
        // (fresh pages are what made the copying reader slower than docker-registry's
        // sendfile on pulls). Mapping is safe here because committed blobs are immutable:
        // never rewritten or truncated, only unlinked, which leaves a mapping valid.
        let start = match range {
            Some(r) => r.start,
            None => 0,
        };
        let map = blocking(move || {
            // SAFETY: see above; the file is a committed blob that nothing modifies.
            let map = unsafe {
                memmap2::MmapOptions::new()
                    .offset(start)
                    .len(len as usize)
                    .map(&file)?
            };
            let _ = map.advise(memmap2::Advice::Sequential);
            Ok(std::sync::Arc::new(map))
        })
        .await?;
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
        tokio::task::spawn_blocking(move || {
            let mut offset = 0usize;
            while offset < map.len() {
                let end = (offset + MAPPED_CHUNK).min(map.len());
                // Fault the chunk in here, on a blocking thread, so that a blob read from
                // disk never stalls the async workers that write it to the socket.
                let mut touched = 0u8;
                for page in (offset..end).step_by(4096) {
                    touched ^= map[page];
                }
                std::hint::black_box(touched);
                let chunk = Bytes::from_owner(MappedChunk {
                    map: map.clone(),
                    start: offset,
                    end,
                });
                // The client went away: stop reading.
                if tx.blocking_send(Ok(chunk)).is_err() {
                    break;
                }
                offset = end;
            }
        });
        Ok(Box::pin(tokio_stream_from(rx)))
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<(), StorageError> {
        let path = self.blob_path(digest);
        blocking(move || match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        })
        .await
    }
}

/// Alignment of direct-I/O memory, file offsets and lengths: the largest logical block
/// size in common use, so it suits any disk.
const DIRECT_ALIGN: usize = 4096;
/// How long a body may pause before the bytes it sent are written short of a full block.
const IDLE_FLUSH: Duration = Duration::from_millis(50);
/// Size of an upload's first block. Most blobs (configs, small layers) fit in it, and
/// it is given up as soon as it has been written, so only large uploads get large blocks.
const FIRST_BLOCK: usize = 256 * 1024;
/// Size of the blocks after the first: one transparent huge page.
const BLOCK_SIZE: usize = 2 * 1024 * 1024;
/// Large blocks every upload may have: one filling while the other is hashed or written.
const MIN_BLOCKS: usize = 2;
/// Large blocks an upload may have at most, the ones past `MIN_BLOCKS` taken from
/// [`EXTRA_BLOCKS`]: with four, filling, hashing and writing each have a block and one
/// is spare, which is what keeps the hasher busy (measured on a 1 GiB push: two blocks
/// about 30 % slower, three 10-15 %, six no faster).
const MAX_BLOCKS: usize = 4;
/// Large blocks past `MIN_BLOCKS` shared by all uploads of the process (32 MiB), so that
/// many concurrent uploads stay within a fixed memory budget (32 concurrent 1 GiB pushes
/// peaked at about 200 MiB RSS) while a few get the deeper pipeline.
static EXTRA_BLOCKS: Semaphore = Semaphore::const_new(16);
/// Capacity of the queues between the request side and the threads: every block an
/// upload can have (its large blocks and the first), so no queue is ever full.
const QUEUE: usize = MAX_BLOCKS + 1;

/// A piece of an upload on its way to disk: the bytes for file offsets
/// `file_offset..file_offset + len`, in memory aligned for direct I/O.
struct Block {
    mem: BlockMemory,
    /// Where the block goes in the file; a multiple of `DIRECT_ALIGN`.
    file_offset: u64,
    len: usize,
    /// Leading bytes that were already in the file, there only so that the write starts
    /// aligned: neither hashed nor counted again.
    head: usize,
    /// A share of `EXTRA_BLOCKS`, given back when the block is freed.
    _extra: Option<SemaphorePermit<'static>>,
}

impl Block {
    fn new(capacity: usize, extra: Option<SemaphorePermit<'static>>) -> io::Result<Self> {
        Ok(Block {
            mem: BlockMemory::new(capacity)?,
            file_offset: 0,
            len: 0,
            head: 0,
            _extra: extra,
        })
    }

    fn reset(&mut self, file_offset: u64) {
        self.file_offset = file_offset;
        self.len = 0;
        self.head = 0;
    }

    /// Makes this block continue the upload where `prev`, a partly filled block, ends:
    /// from the alignment boundary before, with the bytes up to there as its head.
    fn continue_after(&mut self, prev: &Block) {
        let end = prev.end();
        let head = (end % DIRECT_ALIGN as u64) as usize;
        self.reset(end - head as u64);
        self.mem.as_mut_slice()[..head].copy_from_slice(&prev.data()[prev.len - head..]);
        self.len = head;
        self.head = head;
    }

    fn is_large(&self) -> bool {
        self.mem.len == BLOCK_SIZE
    }

    /// Copies as much of `bytes` as fits; returns how much that was.
    fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.mem.len - self.len);
        let at = self.len;
        self.mem.as_mut_slice()[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    fn is_full(&self) -> bool {
        self.len == self.mem.len
    }

    /// The bytes this block adds to the upload.
    fn new_bytes(&self) -> &[u8] {
        &self.mem.as_slice()[self.head..self.len]
    }

    /// The block's bytes, from its aligned file offset on.
    fn data(&self) -> &[u8] {
        &self.mem.as_slice()[..self.len]
    }

    /// The block's bytes padded to a whole number of `DIRECT_ALIGN` units, as a direct
    /// write needs them. The padding is zeroed first, so no stale bytes of an earlier use
    /// reach the file, and cut off again by [`StagingFile::finish`].
    fn padded(&mut self) -> &[u8] {
        let padded = self.len.next_multiple_of(DIRECT_ALIGN);
        self.mem.as_mut_slice()[self.len..padded].fill(0);
        &self.mem.as_slice()[..padded]
    }

    /// File offset just past the block's bytes.
    fn end(&self) -> u64 {
        self.file_offset + self.len as u64
    }
}

/// Where the request side of an upload gets its next block: one the writer is done with,
/// or a new one while the upload is below its share.
struct BlockPool {
    free: mpsc::Receiver<Block>,
    large: usize,
}

impl BlockPool {
    fn new(free: mpsc::Receiver<Block>) -> Self {
        BlockPool { free, large: 0 }
    }

    /// A block for file offset `file_offset`; `None` once the writer has stopped.
    async fn next(&mut self, file_offset: u64) -> io::Result<Option<Block>> {
        let mut block = loop {
            let returned = match self.free.try_recv() {
                Ok(block) => Some(block),
                Err(_) if self.large < MIN_BLOCKS => {
                    self.large += 1;
                    break Block::new(BLOCK_SIZE, None)?;
                }
                Err(_) if self.large < MAX_BLOCKS => match EXTRA_BLOCKS.try_acquire() {
                    Ok(permit) => {
                        self.large += 1;
                        break Block::new(BLOCK_SIZE, Some(permit))?;
                    }
                    Err(_) => self.free.recv().await,
                },
                Err(_) => self.free.recv().await,
            };
            match returned {
                Some(block) if block.is_large() => break block,
                // The small first block served the start of the upload: let it go.
                Some(_) => continue,
                None => return Ok(None),
            }
        };
        block.reset(file_offset);
        Ok(Some(block))
    }
}

/// Memory for one block, mapped on its own: page-aligned (as direct I/O needs), and on
/// drop either kept in [`SPARE_MEMORY`] or unmapped, never left to the allocator's
/// trimming. A full-size block is aligned to, and advised as, one transparent huge page:
/// on a 1 GiB push, 2 MiB huge-page blocks instead of 1 MiB ordinary ones took about a
/// fifth off the gateway's CPU time (less TLB work when copying and hashing, one page
/// instead of 512 for the kernel to pin per direct write).
struct BlockMemory {
    map: *mut libc::c_void,
    map_len: usize,
    data: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone and only reached through it.
unsafe impl Send for BlockMemory {}

impl BlockMemory {
    fn new(len: usize) -> io::Result<Self> {
        if let Some(spare) = take_spare(len) {
            return Ok(spare);
        }
        let align = if len == BLOCK_SIZE { BLOCK_SIZE } else { 1 };
        // Mappings are page-aligned; the slack for huge-page alignment is never touched,
        // so it costs address space only.
        let map_len = len + align - 1;
        // SAFETY: a fresh private anonymous mapping, aliasing nothing.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let skip = (align - map as usize % align) % align;
        // SAFETY: `skip + len <= map_len`, so `data..data + len` lies within the mapping.
        let data = unsafe { map.cast::<u8>().add(skip) };
        #[cfg(target_os = "linux")]
        if len == BLOCK_SIZE {
            // Advice only: without huge pages the block works the same, a little slower.
            // SAFETY: the range lies within the mapping.
            unsafe { libc::madvise(data.cast(), len, libc::MADV_HUGEPAGE) };
        }
        Ok(BlockMemory {
            map,
            map_len,
            data,
            len,
        })
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `data..data + len` is mapped readable for the life of `self`.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, writable, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.len) }
    }
}

impl Drop for BlockMemory {
    fn drop(&mut self) {
        // The spare list takes over the mapping, or it goes.
        let handed_over = keep_spare(BlockMemory {
            map: self.map,
            map_len: self.map_len,
            data: self.data,
            len: self.len,
        });
        if let Err(unwanted) = handed_over {
            // SAFETY: unmaps exactly the mapping made in `new`, which nothing refers to
            // now; `forget` keeps this from running again for the copy.
            unsafe { libc::munmap(unwanted.map, unwanted.map_len) };
            std::mem::forget(unwanted);
        }
    }
}

/// Block memory kept for later uploads. A fresh mapping is faulted in and zeroed page by
/// page as it is first filled: profiled pushing many small blobs, that was 5 % of the
/// gateway's CPU, and it is about 6 ms per huge page on this kind of VM. Reused memory is
/// already there. At most 32 first blocks (8 MiB) and 4 large ones (8 MiB) are kept.
static SPARE_MEMORY: Mutex<Vec<BlockMemory>> = Mutex::new(Vec::new());

fn take_spare(len: usize) -> Option<BlockMemory> {
    let mut spare = SPARE_MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    let at = spare.iter().position(|m| m.len == len)?;
    Some(spare.swap_remove(at))
}

/// Keeps `mem` for later, or gives it back when enough of its size are kept already.
fn keep_spare(mem: BlockMemory) -> Result<(), BlockMemory> {
    let limit = if mem.len == BLOCK_SIZE { 4 } else { 32 };
    let mut spare = SPARE_MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    if spare.iter().filter(|m| m.len == mem.len).count() < limit {
        spare.push(mem);
        Ok(())
    } else {
        Err(mem)
    }
}

/// An upload's staging file, written with direct I/O where the filesystem allows it.
///
/// Direct I/O takes the page cache out of the write path. A buffered write copies every
/// byte into freshly allocated page-cache pages, the kernel writes them back later, and
/// the commit's fsync then waits for a whole blob at once: profiled on a 1 GiB push, that
/// was about as much CPU as SHA-256 itself plus 0.3-0.4 s of fsync. A direct write hands
/// the (aligned) block to the disk, which copies it by DMA; by the commit only metadata
/// and the disk's cache remain to be flushed, and concurrent uploads no longer fill the
/// page cache with data nobody reads soon. Where direct I/O is refused (some filesystems
/// do, e.g. older tmpfs), plain buffered writes are used instead.
struct StagingFile {
    file: File,
    path: PathBuf,
    direct: bool,
}

impl StagingFile {
    fn open(path: PathBuf) -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::OpenOptionsExt;
            match OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(StagingFile {
                        file,
                        path,
                        direct: true,
                    })
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        Ok(StagingFile {
            file,
            path,
            direct: false,
        })
    }

    /// Gives up on direct I/O after the filesystem refused an aligned request.
    fn reopen_buffered(&mut self) -> io::Result<()> {
        self.file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        self.direct = false;
        Ok(())
    }

    /// The block an append at `offset` starts with: aligned, so it begins with the bytes
    /// already in the file between the alignment boundary and `offset`.
    fn first_block(&mut self, offset: u64) -> io::Result<Block> {
        let head = (offset % DIRECT_ALIGN as u64) as usize;
        let mut block = Block::new(FIRST_BLOCK, None)?;
        block.reset(offset - head as u64);
        if head > 0 {
            let unit = &mut block.mem.as_mut_slice()[..DIRECT_ALIGN];
            let mut got = 0;
            while got < head {
                match self
                    .file
                    .read_at(&mut unit[got..], offset - head as u64 + got as u64)
                {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if self.refused(&e) => self.reopen_buffered()?,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            // Bytes missing from a short file read as zeros, as a write past the end
            // would have left them.
            unit[got.min(head)..head].fill(0);
            block.len = head;
            block.head = head;
        }
        Ok(block)
    }

    fn write(&mut self, block: &mut Block) -> io::Result<()> {
        let at = block.file_offset;
        let bytes = if self.direct {
            block.padded()
        } else {
            block.data()
        };
        match self.file.write_all_at(bytes, at) {
            Err(e) if self.refused(&e) => {
                self.reopen_buffered()?;
                self.file.write_all_at(block.data(), at)
            }
            result => result,
        }
    }

    /// Cuts off the padding of the last direct write, which ended at `end`.
    fn finish(&self, end: u64) -> io::Result<()> {
        if self.direct && !end.is_multiple_of(DIRECT_ALIGN as u64) {
            self.file.set_len(end)?;
        }
        Ok(())
    }

    /// Whether `e` is the filesystem refusing direct I/O.
    fn refused(&self, e: &io::Error) -> bool {
        #[cfg(target_os = "linux")]
        {
            self.direct && e.raw_os_error() == Some(libc::EINVAL)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = e;
            false
        }
    }
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<io::Result<Bytes>>,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: Vec<&'static [u8]>) -> ByteStream {
        Box::pin(futures::stream::iter(
            chunks.into_iter().map(|c| Ok(Bytes::from_static(c))),
        ))
    }

    fn body_of(bytes: Vec<u8>) -> ByteStream {
        Box::pin(futures::stream::once(async move { Ok(Bytes::from(bytes)) }))
    }

    async fn collect(stream: ByteStream) -> Vec<u8> {
        stream.map(|c| c.unwrap().to_vec()).concat().await
    }

    #[tokio::test]
    async fn upload_hash_commit_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilesystemStore::open(dir.path(), true).unwrap();
        let id = Uuid::new_v4();
        store.create_upload(id).await.unwrap();
        let first = store
            .append_upload(
                id,
                0,
                body(vec![b"hello ", b"wor"]),
                DigestHasher::new(Algorithm::Sha256),
            )
            .await
            .unwrap();
        assert_eq!(first.written, 9);
        let second = store
            .append_upload(id, 9, body(vec![b"ld"]), first.hasher)
            .await
            .unwrap();
        let digest = second.hasher.finish();
        assert_eq!(digest, Digest::sha256_of(b"hello world"));
        // Re-hashing from disk, as after a restart, gives the same state.
        let rehashed = store.hash_upload(id, 11, Algorithm::Sha256).await.unwrap();
        assert_eq!(rehashed.finish(), digest);

        assert_eq!(store.blob_size(&digest).await.unwrap(), None);
        store.commit_upload(id, 11, &digest).await.unwrap();
        assert_eq!(store.blob_size(&digest).await.unwrap(), Some(11));
        assert!(!store.upload_path(id).exists());
        assert_eq!(
            collect(store.read_blob(&digest, None).await.unwrap()).await,
            b"hello world"
        );
        let range = ByteRange { start: 6, end: 10 };
        assert_eq!(
            collect(store.read_blob(&digest, Some(range)).await.unwrap()).await,
            b"world"
        );
    }

    #[tokio::test]
    async fn failed_body_reports_body_error_and_commit_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilesystemStore::open(dir.path(), false).unwrap();
        let id = Uuid::new_v4();
        store.create_upload(id).await.unwrap();
        store
            .append_upload(
                id,
                0,
                body(vec![b"abc"]),
                DigestHasher::new(Algorithm::Sha256),
            )
            .await
            .unwrap();
        let failing: ByteStream = Box::pin(futures::stream::iter(vec![
            Ok(Bytes::from_static(b"garbage")),
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "client went away",
            )),
        ]));
        let err = store
            .append_upload(id, 3, failing, DigestHasher::new(Algorithm::Sha256))
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Body(_)));
        // The accepted length is still 3; commit cuts the garbage off.
        let digest = Digest::sha256_of(b"abc");
        store.commit_upload(id, 3, &digest).await.unwrap();
        assert_eq!(
            collect(store.read_blob(&digest, None).await.unwrap()).await,
            b"abc"
        );
    }

    #[tokio::test]
    async fn large_blobs_stream_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilesystemStore::open(dir.path(), false).unwrap();
        let data: Vec<u8> = (0..3 * 1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
        let id = Uuid::new_v4();
        store.create_upload(id).await.unwrap();
        let chunks: Vec<io::Result<Bytes>> = data
            .chunks(100_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let appended = store
            .append_upload(
                id,
                0,
                Box::pin(futures::stream::iter(chunks)),
                DigestHasher::new(Algorithm::Sha256),
            )
            .await
            .unwrap();
        let digest = appended.hasher.finish();
        store
            .commit_upload(id, data.len() as u64, &digest)
            .await
            .unwrap();
        assert_eq!(
            collect(store.read_blob(&digest, None).await.unwrap()).await,
            data
        );
        let range = ByteRange {
            start: 1_000_000,
            end: 2_500_000,
        };
        assert_eq!(
            collect(store.read_blob(&digest, Some(range)).await.unwrap()).await,
            &data[1_000_000..=2_500_000]
        );
    }

    #[tokio::test]
    async fn appends_at_unaligned_offsets_keep_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilesystemStore::open(dir.path(), true).unwrap();
        let data: Vec<u8> = (0..5 * 1024 * 1024 + 12_345)
            .map(|i| (i * 7 % 253) as u8)
            .collect();
        let id = Uuid::new_v4();
        store.create_upload(id).await.unwrap();
        let mut hasher = DigestHasher::new(Algorithm::Sha256);
        let mut offset = 0usize;
        // Appends ending inside, on and just past alignment units and blocks.
        for len in [1, 4095, 4097, 300_001, 2 * 1024 * 1024 + 3, 8191] {
            let chunk = &data[offset..offset + len];
            let frames: Vec<io::Result<Bytes>> = chunk
                .chunks(65_537)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let appended = store
                .append_upload(
                    id,
                    offset as u64,
                    Box::pin(futures::stream::iter(frames)),
                    hasher,
                )
                .await
                .unwrap();
            assert_eq!(appended.written, len as u64);
            hasher = appended.hasher;
            offset += len;
            assert_eq!(
                fs::metadata(store.upload_path(id)).unwrap().len(),
                offset as u64
            );
        }
        let rest = &data[offset..];
        let appended = store
            .append_upload(id, offset as u64, body_of(rest.to_vec()), hasher)
            .await
            .unwrap();
        let digest = appended.hasher.finish();
        assert_eq!(digest, Digest::sha256_of(&data));
        let rehashed = store
            .hash_upload(id, data.len() as u64, Algorithm::Sha256)
            .await
            .unwrap();
        assert_eq!(rehashed.finish(), digest);
        store
            .commit_upload(id, data.len() as u64, &digest)
            .await
            .unwrap();
        assert_eq!(
            collect(store.read_blob(&digest, None).await.unwrap()).await,
            data
        );
    }

    #[tokio::test]
    async fn a_paused_body_reaches_the_file_before_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilesystemStore::open(dir.path(), false).unwrap();
        let data: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 241) as u8).collect();
        let id = Uuid::new_v4();
        store.create_upload(id).await.unwrap();
        let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(4);
        let body: ByteStream = Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        let append = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append_upload(id, 0, body, DigestHasher::new(Algorithm::Sha256))
                    .await
            })
        };
        // Past the first block, short of the second: stuck in memory without the pause
        // rule.
        let sent = 1024 * 1024 + 1;
        tx.send(Ok(Bytes::copy_from_slice(&data[..sent])))
            .await
            .unwrap();
        let path = store.upload_path(id);
        let mut staged = 0;
        // Poll for up to 10 s: the pause rule acts after 50 ms, but a noisy 2-core CI
        // machine may be slow to schedule the writer thread.
        for _ in 0..500 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            staged = fs::metadata(&path).unwrap().len();
            if staged >= sent as u64 {
                break;
            }
        }
        assert!(
            staged >= sent as u64,
            "only {staged} of {sent} bytes staged"
        );
        tx.send(Ok(Bytes::copy_from_slice(&data[sent..])))
            .await
            .unwrap();
        drop(tx);
        let appended = append.await.unwrap().unwrap();
        assert_eq!(appended.written, data.len() as u64);
        let digest = appended.hasher.finish();
        assert_eq!(digest, Digest::sha256_of(&data));
        store
            .commit_upload(id, data.len() as u64, &digest)
            .await
            .unwrap();
        assert_eq!(
            collect(store.read_blob(&digest, None).await.unwrap()).await,
            data
        );
    }

    #[tokio::test]
    async fn missing_things_are_reported_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilesystemStore::open(dir.path(), false).unwrap();
        let digest = Digest::sha256_of(b"nope");
        assert!(matches!(
            store.read_blob(&digest, None).await,
            Err(StorageError::BlobNotFound(_))
        ));
        let id = Uuid::new_v4();
        assert!(matches!(
            store
                .append_upload(id, 0, body(vec![]), DigestHasher::new(Algorithm::Sha256))
                .await,
            Err(StorageError::UploadNotFound(_))
        ));
        store.delete_upload(id).await.unwrap();
        store.delete_blob(&digest).await.unwrap();
    }
}
