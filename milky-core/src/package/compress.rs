//! bzip2 compression on every core.
//!
//! The input is cut into blocks that are compressed as independent bzip2 streams on worker
//! threads and written in order. Concatenated streams are a valid bzip2 file (`bzip2 -d`,
//! `tar -xjf`, and [`bzip2::read::MultiBzDecoder`] read them), so the result stays a plain
//! `.tar.bz2` for every tool while packaging runs about as many times faster as there are cores.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::memory::KeepFreedMemory;

type Job = (u64, Vec<u8>);

/// A `Write` that compresses what it is given on `threads` threads into `inner`.
pub struct ParallelBzWriter<W: Write + Send + 'static> {
    block_size: usize,
    buffer: Vec<u8>,
    next_sequence: u64,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<io::Result<W>>>,
    _memory: KeepFreedMemory,
}

impl<W: Write + Send + 'static> ParallelBzWriter<W> {
    /// `level` is bzip2's 1..=9; each stream holds one block of that level's size.
    pub fn new(inner: W, level: u32, threads: usize) -> Self {
        let level = level.clamp(1, 9);
        let threads = threads.max(1);
        // Slightly under bzip2's block size, so each stream is one block after its run-length pass.
        let block_size = level as usize * 95_000;
        let (jobs, job_queue) = sync_channel::<Job>(threads * 2);
        let (results, result_queue) = sync_channel::<io::Result<Job>>(threads * 2);
        let job_queue = Arc::new(Mutex::new(job_queue));
        let workers = (0..threads)
            .map(|_| {
                let job_queue = Arc::clone(&job_queue);
                let results = results.clone();
                std::thread::spawn(move || compress_jobs(&job_queue, &results, level))
            })
            .collect();
        drop(results);
        let writer = std::thread::spawn(move || write_in_order(inner, &result_queue));
        Self {
            block_size,
            buffer: Vec::with_capacity(block_size),
            next_sequence: 0,
            jobs: Some(jobs),
            workers,
            writer: Some(writer),
            _memory: KeepFreedMemory::new(),
        }
    }

    fn send_block(&mut self) -> io::Result<()> {
        let block = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.block_size));
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let jobs = self.jobs.as_ref().expect("not finished");
        // A send fails only when the writer thread died; its own error comes out of `finish`.
        jobs.send((sequence, block))
            .map_err(|_| io::Error::other("the compression writer stopped"))
    }

    /// Compresses what is left, waits for every thread and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.buffer.is_empty() || self.next_sequence == 0 {
            self.send_block()?;
        }
        drop(self.jobs.take());
        for worker in self.workers.drain(..) {
            worker
                .join()
                .map_err(|_| io::Error::other("a compression thread panicked"))?;
        }
        self.writer
            .take()
            .expect("finish runs once")
            .join()
            .map_err(|_| io::Error::other("the compression writer panicked"))?
    }
}

impl<W: Write + Send + 'static> Write for ParallelBzWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            let room = self.block_size - self.buffer.len();
            let take = room.min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() == self.block_size {
                self.send_block()?;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn compress_jobs(jobs: &Mutex<Receiver<Job>>, results: &SyncSender<io::Result<Job>>, level: u32) {
    loop {
        let job = jobs.lock().map(|queue| queue.recv());
        let Ok(Ok((sequence, block))) = job else {
            return;
        };
        let compressed = compress(&block, level).map(|bytes| (sequence, bytes));
        if results.send(compressed).is_err() {
            return;
        }
    }
}

fn compress(block: &[u8], level: u32) -> io::Result<Vec<u8>> {
    // bzip2's worst case (incompressible input) in one buffer: one call, no copy, no regrowth.
    let mut out = Vec::with_capacity(block.len() + block.len() / 100 + 600);
    let mut stream = bzip2::Compress::new(bzip2::Compression::new(level), 0);
    let mut input = block;
    loop {
        let before = stream.total_in();
        let status = stream
            .compress_vec(input, &mut out, bzip2::Action::Finish)
            .map_err(io::Error::other)?;
        input = &input[usize::try_from(stream.total_in() - before).expect("fits")..];
        if status == bzip2::Status::StreamEnd {
            return Ok(out);
        }
        // Not reached with the worst-case capacity above; kept so that no input is ever lost.
        out.reserve(block.len() / 2 + 600);
    }
}

fn write_in_order<W: Write>(mut inner: W, results: &Receiver<io::Result<Job>>) -> io::Result<W> {
    let mut waiting = BTreeMap::new();
    let mut next = 0u64;
    for result in results {
        let (sequence, bytes) = result?;
        waiting.insert(sequence, bytes);
        while let Some(bytes) = waiting.remove(&next) {
            inner.write_all(&bytes)?;
            next += 1;
        }
    }
    inner.flush()?;
    Ok(inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn many_streams_decode_as_one_file() {
        let data: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut writer = ParallelBzWriter::new(Vec::new(), 9, 3);
        for chunk in data.chunks(77_777) {
            writer.write_all(chunk).unwrap();
        }
        let compressed = writer.finish().unwrap();
        let streams = compressed.windows(4).filter(|w| w == b"BZh9").count();
        assert!(streams > 1, "expected several streams, found {streams}");
        let mut decoded = Vec::new();
        bzip2::read::MultiBzDecoder::new(&compressed[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, data);
    }

    #[test]
    fn empty_input_is_a_valid_empty_file() {
        let compressed = ParallelBzWriter::new(Vec::new(), 9, 2).finish().unwrap();
        let mut decoded = Vec::new();
        bzip2::read::MultiBzDecoder::new(&compressed[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert!(decoded.is_empty());
    }
}
