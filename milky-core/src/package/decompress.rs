//! Decompressing a package on every core, while it stays a plain `.tar.bz2`.
//!
//! [`super::compress`] writes a package as many independent bzip2 streams. Each stream starts
//! byte-aligned with `BZh1`..`BZh9` followed by the first block's magic `0x314159265359`, so the
//! starts can be found in the file itself: no index to write, trust or keep in step. A match may
//! also occur by chance (or by design) inside compressed data, so a candidate is never trusted:
//! the file is cut at every candidate, segments are decoded on worker threads, and a segment's
//! output is used only if the segment decodes as whole streams that end exactly at its last byte.
//! That is exactly what the sequential decoder ([`bzip2::read::MultiBzDecoder`]) would see
//! there (it starts a new stream where the previous one ends), so the bytes handed on are the
//! ones it would produce. Segments and the sequential decoder alike are decoded by libbz2
//! through the `bzip2` crate. On any doubt (a segment that does not decode, is too
//! large, or an I/O error) the rest of the file, from the last verified stream start, is decoded
//! sequentially: the result is the same, only slower, and a broken file fails as it would have
//! anyway.
//!
//! The decoded bytes are read in order by the one tar loop, [`super::unpack::unpack_tar`], so
//! every check of the security boundary sees every entry, whoever decompressed it. Decoding runs
//! a bounded number of segments ahead, each capped in size, so memory stays bounded even for a
//! hostile file.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

use super::Manifest;
use super::memory::KeepFreedMemory;
use super::unpack::{UnpackError, UnpackLimits, unpack_tar};

/// A segment larger than this, compressed or decoded, is not decoded ahead: what follows it is
/// decoded sequentially. Packages from [`super::compress`] have segments of at most 855 KB decoded.
const SEGMENT_CAP: u64 = 16 << 20;

/// The first block of a bzip2 stream: `BZh` + level digit + the block magic (π in BCD).
const BLOCK_MAGIC: [u8; 6] = [0x31, 0x41, 0x59, 0x26, 0x53, 0x59];

/// Unpacks the `.tar.bz2` at `path` into the existing, empty directory `target` like
/// [`super::unpack()`], decompressing on every core.
pub fn unpack_file(
    path: &Path,
    target: &Path,
    limits: UnpackLimits,
) -> Result<Manifest, UnpackError> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    with_decoded(path, threads, |tar| unpack_tar(tar, target, limits)).map_err(|source| {
        UnpackError::Io {
            path: path.to_owned(),
            source,
        }
    })?
}

/// Runs `consume` on the decompressed content of the bzip2 file at `path`, decoded on `threads`
/// worker threads. The error is opening or scanning the file; decoding errors reach `consume`
/// through its reader, as they would from a sequential decoder.
pub fn with_decoded<T>(
    path: &Path,
    threads: usize,
    consume: impl FnOnce(&mut dyn Read) -> T,
) -> io::Result<T> {
    let file = File::open(path)?;
    let starts = stream_starts(&file)?;
    let len = file.metadata()?.len();
    Ok(decode_segments(&file, &starts, len, threads, consume))
}

/// Byte offsets where a bzip2 stream with at least one block may start: candidates only.
pub fn stream_starts(file: &File) -> io::Result<Vec<u64>> {
    const CHUNK: usize = 4 << 20;
    const MAGIC_LEN: usize = 10;
    let mut starts = Vec::new();
    let mut reader = BufReader::with_capacity(CHUNK, file);
    reader.seek(SeekFrom::Start(0))?;
    // `window` holds the unscanned tail of the previous chunk (fewer than MAGIC_LEN bytes) and
    // the new chunk; `base` is the file offset of window[0].
    let mut window: Vec<u8> = Vec::with_capacity(CHUNK + MAGIC_LEN);
    let mut base = 0u64;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        window.extend_from_slice(chunk);
        let taken = chunk.len();
        reader.consume(taken);
        let scannable = window.len().saturating_sub(MAGIC_LEN - 1);
        let mut at = 0;
        while let Some(found) = window[at..scannable].iter().position(|&b| b == b'B') {
            let p = at + found;
            let w = &window[p..p + MAGIC_LEN];
            if &w[..3] == b"BZh" && (b'1'..=b'9').contains(&w[3]) && w[4..] == BLOCK_MAGIC {
                starts.push(base + p as u64);
            }
            at = p + 1;
        }
        window.drain(..scannable);
        base += scannable as u64;
    }
    Ok(starts)
}

/// Decodes the file cut at `starts` (candidates) and runs `consume` on the ordered output.
fn decode_segments<T>(
    file: &File,
    starts: &[u64],
    len: u64,
    threads: usize,
    consume: impl FnOnce(&mut dyn Read) -> T,
) -> T {
    let mut segments: Vec<(u64, u64)> = starts
        .windows(2)
        .map(|w| (w[0], w[1]))
        .chain(starts.last().map(|&s| (s, len)))
        .filter(|(start, end)| start < end)
        .collect();
    // Only a file that starts with a stream, cut in several, is worth (and safe) to split.
    if threads < 2 || segments.len() < 2 || segments[0].0 != 0 {
        segments.clear();
    }
    let _memory = KeepFreedMemory::new();
    let (jobs, queue) = channel::<Job>();
    let queue = Mutex::new(queue);
    std::thread::scope(|scope| {
        let workers = if segments.is_empty() { 0 } else { threads };
        for _ in 0..workers {
            let queue = &queue;
            scope.spawn(move || decode_jobs(file, queue));
        }
        let mut reader = OrderedReader {
            file,
            segments,
            next_job: 0,
            ahead: threads * 2,
            pending: VecDeque::new(),
            jobs: Some(jobs),
            current: Vec::new(),
            position: 0,
            sequential: None,
        };
        reader.dispatch();
        let result = consume(&mut reader);
        // Closes the job queue: the workers end, and the scope joins them.
        drop(reader);
        result
    })
}

/// A segment to decode: its byte range and where to send the result (`None`: use sequential).
type Job = (u64, u64, SyncSender<Option<Vec<u8>>>);

fn decode_jobs(file: &File, queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok((start, end, result)) = job else {
            return;
        };
        // The reader may have gone sequential and dropped the receiver: nothing to do then.
        let _ = result.send(decode_segment(file, start, end));
    }
}

/// The decoded bytes of `start..end` if it is a sequence of whole bzip2 streams, else `None`.
pub(super) fn decode_segment(file: &File, start: u64, end: u64) -> Option<Vec<u8>> {
    let size = end - start;
    if size > SEGMENT_CAP {
        return None;
    }
    let mut input = vec![0; usize::try_from(size).ok()?];
    file.read_exact_at(&mut input, start).ok()?;
    decode_streams(&input, usize::try_from(SEGMENT_CAP).expect("fits"))
}

/// The decoded bytes of `input` if it is a sequence of whole bzip2 streams that ends exactly at
/// its last byte and decodes to at most `cap` bytes, else `None`. libbz2 is never given room for
/// more than `cap + 1` bytes, so a segment that decodes to far more stops there.
fn decode_streams(input: &[u8], cap: usize) -> Option<Vec<u8>> {
    let mut output = Vec::with_capacity(input.len().saturating_mul(3).min(cap.saturating_add(1)));
    // Reads to the end of the input: an error unless the last stream ends at the last byte.
    bzip2::read::MultiBzDecoder::new(input)
        .take((cap as u64).saturating_add(1))
        .read_to_end(&mut output)
        .ok()?;
    (output.len() <= cap).then_some(output)
}

/// The decoded file, in order: segments decoded ahead by the workers, then, after the first
/// doubt, a sequential decoder from the start of the segment in doubt to the end of the file.
struct OrderedReader<'a> {
    file: &'a File,
    segments: Vec<(u64, u64)>,
    next_job: usize,
    ahead: usize,
    pending: VecDeque<(u64, Receiver<Option<Vec<u8>>>)>,
    jobs: Option<Sender<Job>>,
    current: Vec<u8>,
    position: usize,
    sequential: Option<bzip2::read::MultiBzDecoder<BufReader<File>>>,
}

impl OrderedReader<'_> {
    /// Keeps up to `ahead` segments in the workers' hands.
    fn dispatch(&mut self) {
        let Some(jobs) = &self.jobs else { return };
        while self.pending.len() < self.ahead && self.next_job < self.segments.len() {
            let (start, end) = self.segments[self.next_job];
            let (result, receiver) = sync_channel(1);
            if jobs.send((start, end, result)).is_err() {
                return;
            }
            self.pending.push_back((start, receiver));
            self.next_job += 1;
        }
    }

    /// From `start` (where the sequential decoder would begin a stream) to the end of the file.
    fn go_sequential(&mut self, start: u64) -> io::Result<()> {
        self.jobs = None;
        self.pending.clear();
        let mut file = self.file.try_clone()?;
        file.seek(SeekFrom::Start(start))?;
        self.sequential = Some(bzip2::read::MultiBzDecoder::new(BufReader::new(file)));
        Ok(())
    }
}

impl Read for OrderedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.position < self.current.len() {
                let n = buf.len().min(self.current.len() - self.position);
                buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
                self.position += n;
                return Ok(n);
            }
            if let Some(sequential) = &mut self.sequential {
                return sequential.read(buf);
            }
            if self.segments.is_empty() {
                // Not split at all: the whole file, sequentially.
                self.go_sequential(0)?;
                continue;
            }
            let Some((start, receiver)) = self.pending.pop_front() else {
                return Ok(0);
            };
            match receiver.recv() {
                Ok(Some(decoded)) => {
                    self.current = decoded;
                    self.position = 0;
                    self.dispatch();
                }
                _ => self.go_sequential(start)?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::package::compress::ParallelBzWriter;

    fn data(len: u32) -> Vec<u8> {
        (0..len)
            .flat_map(|i| (i.wrapping_mul(2_654_435_761) % 97 + i % 13).to_le_bytes())
            .collect()
    }

    fn compressed(data: &[u8], level: u32) -> tempfile::NamedTempFile {
        let mut writer = ParallelBzWriter::new(Vec::new(), level, 3);
        writer.write_all(data).unwrap();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&writer.finish().unwrap()).unwrap();
        file
    }

    fn decoded(path: &Path, threads: usize) -> io::Result<Vec<u8>> {
        with_decoded(path, threads, |reader| {
            let mut out = Vec::new();
            reader.read_to_end(&mut out).map(|_| out)
        })?
    }

    fn decoded_at(path: &Path, starts: &[u64]) -> io::Result<Vec<u8>> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        decode_segments(&file, starts, len, 3, |reader| {
            let mut out = Vec::new();
            reader.read_to_end(&mut out).map(|_| out)
        })
    }

    #[test]
    fn finds_every_stream_and_decodes_in_order() {
        let data = data(2_000_000);
        let file = compressed(&data, 1);
        let starts = stream_starts(file.as_file()).unwrap();
        assert!(starts.len() > 50, "{} streams", starts.len());
        assert_eq!(starts[0], 0);
        for threads in [1, 2, 4] {
            assert_eq!(
                decoded(file.path(), threads).unwrap(),
                data,
                "{threads} threads"
            );
        }
    }

    #[test]
    fn a_false_start_inside_a_stream_changes_nothing() {
        let data = data(1_000_000);
        let file = compressed(&data, 1);
        let mut starts = stream_starts(file.as_file()).unwrap();
        // Cut the third stream in the middle, and add a cut one byte into the last one.
        let (a, b) = (starts[2], starts[3]);
        starts.insert(3, (a + b) / 2);
        starts.push(starts.last().unwrap() + 1);
        starts.sort();
        assert_eq!(decoded_at(file.path(), &starts).unwrap(), data);
        // A file that does not start with a stream is decoded sequentially (and fails as such).
        assert_eq!(decoded_at(file.path(), &starts[1..]).unwrap(), data);
    }

    #[test]
    fn one_stream_and_broken_files_behave_as_the_sequential_decoder() {
        let data = data(300_000);
        let mut single = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(9));
        single.write_all(&data).unwrap();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&single.finish().unwrap()).unwrap();
        assert_eq!(decoded(file.path(), 2).unwrap(), data);

        let good = std::fs::read(compressed(&data, 1).path()).unwrap();
        for broken in [&good[..good.len() - 30], &good[..good.len() / 2]] {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            file.write_all(broken).unwrap();
            assert!(decoded(file.path(), 2).is_err(), "a truncated file fails");
        }
        let mut corrupt = good.clone();
        let middle = corrupt.len() / 2;
        corrupt[middle] ^= 0x55;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&corrupt).unwrap();
        assert!(decoded(file.path(), 2).is_err(), "a corrupt file fails");

        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"not bzip2 at all").unwrap();
        assert!(decoded(file.path(), 2).is_err());
    }

    fn compress_one(data: &[u8], level: u32) -> Vec<u8> {
        let mut encoder = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(level));
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn file_of(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    #[test]
    fn a_segment_is_whole_streams_within_the_cap_or_nothing() {
        let data = data(100_000);
        let one = compress_one(&data, 9);
        let two = [one.clone(), compress_one(b"second", 1)].concat();
        assert_eq!(decode_streams(&one, data.len()), Some(data.clone()));
        assert_eq!(
            decode_streams(&two, data.len() + 6),
            Some([&data[..], b"second"].concat())
        );
        // Over the cap by one byte, or far over it (a run of zeros expands most).
        assert_eq!(decode_streams(&one, data.len() - 1), None);
        assert_eq!(decode_streams(&one, 0), None);
        assert_eq!(
            decode_streams(&compress_one(&[0; 100_000], 9), 99_999),
            None
        );
        // Cut short, or followed by anything that is not a whole stream.
        for len in (0..one.len()).step_by(one.len() / 50) {
            assert_eq!(
                decode_streams(&one[..len], usize::MAX),
                None,
                "length {len}"
            );
        }
        for trailing in [&[0u8][..], b"BZh9", b"junk", &[0; 64]] {
            let longer = [&one[..], trailing].concat();
            assert_eq!(decode_streams(&longer, usize::MAX), None, "{trailing:?}");
        }
        // A segment larger than the cap is not even read.
        let mut big = file_of(&one);
        big.as_file_mut().set_len(SEGMENT_CAP + 1).unwrap();
        assert_eq!(decode_segment(big.as_file(), 0, SEGMENT_CAP + 1), None);
        assert_eq!(
            decode_segment(big.as_file(), 0, one.len() as u64),
            Some(data)
        );
    }

    #[test]
    fn a_stream_decoding_past_the_cap_is_decoded_sequentially() {
        // 17 MB of zeros compress to a few hundred bytes: a segment whose output is over the cap.
        let bomb = vec![0; usize::try_from(SEGMENT_CAP).unwrap() + (1 << 20)];
        let before = data(200_000);
        let after = data(50_000);
        let file = file_of(
            &[
                compress_one(&before, 1),
                compress_one(&bomb, 9),
                compress_one(&after, 1),
            ]
            .concat(),
        );
        let starts = stream_starts(file.as_file()).unwrap();
        assert!(starts.len() >= 3, "{starts:?}");
        let expected = [&before[..], &bomb[..], &after[..]].concat();
        assert!(decoded(file.path(), 2).unwrap() == expected);
    }

    #[test]
    fn trailing_bytes_behave_as_the_sequential_decoder() {
        let data = data(300_000);
        let good = std::fs::read(compressed(&data, 1).path()).unwrap();
        for trailing in [&[0u8][..], b"BZh9", b"junk", &[0; 64]] {
            let file = file_of(&[&good[..], trailing].concat());
            let mut sequential = Vec::new();
            let expected = bzip2::read::MultiBzDecoder::new(file.reopen().unwrap())
                .read_to_end(&mut sequential)
                .map(|_| sequential);
            let parallel = decoded(file.path(), 2);
            assert_eq!(parallel.is_ok(), expected.is_ok(), "{trailing:?}");
            if let (Ok(parallel), Ok(expected)) = (parallel, expected) {
                assert!(parallel == expected, "{trailing:?}");
            }
        }
    }

    #[test]
    fn hostile_entries_in_a_later_stream_are_refused() {
        // A good first entry filling several streams, then an escaping one.
        let mut tar = tar::Builder::new(Vec::new());
        let body = data(400_000);
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, "big.bin", &body[..]).unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        let name = b"../escaped";
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_cksum();
        tar.append(&header, &b"evil"[..]).unwrap();
        let file = compressed(&tar.into_inner().unwrap(), 1);
        assert!(stream_starts(file.as_file()).unwrap().len() > 3);

        let parent = tempfile::tempdir().unwrap();
        let target = parent.path().join("release");
        std::fs::create_dir(&target).unwrap();
        let err = unpack_file(file.path(), &target, UnpackLimits::default()).unwrap_err();
        assert!(err.to_string().contains("climbs out"), "{err}");
        assert!(!parent.path().join("escaped").exists());
    }
}
