//! Writing unpacked files on every core. The tar loop in `unpack.rs` stays sequential and does
//! every check, every directory and every link; it hands small regular files, already read and
//! checked, to these threads, because creating thousands of files is kernel time that scales
//! with cores (measured: 2 threads create the reference package's files in half the time).
//!
//! Safe to reorder: each file is created with `O_CREAT|O_EXCL` (never replacing or following
//! anything) under directories the loop made itself, and a path written twice fails whichever
//! write comes second.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::unpack::UnpackError;

/// Files up to this size go to the writers; larger ones are written by the loop (memory bound).
pub const MAX_QUEUED_FILE: u64 = 1 << 20;

pub struct WriteJob {
    pub entry: String,
    pub dest: PathBuf,
    pub mode: u32,
    pub bytes: Vec<u8>,
}

pub struct Writers {
    jobs: Option<SyncSender<WriteJob>>,
    threads: Vec<JoinHandle<()>>,
    error: Arc<Mutex<Option<UnpackError>>>,
}

impl Writers {
    pub fn new() -> Self {
        let count = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
        let (jobs, queue) = sync_channel::<WriteJob>(count * 4);
        let queue = Arc::new(Mutex::new(queue));
        let error = Arc::new(Mutex::new(None));
        let threads = (0..count)
            .map(|_| {
                let (queue, error) = (Arc::clone(&queue), Arc::clone(&error));
                std::thread::spawn(move || write_jobs(&queue, &error))
            })
            .collect();
        Writers {
            jobs: Some(jobs),
            threads,
            error,
        }
    }

    pub fn send(&self, job: WriteJob) -> Result<(), UnpackError> {
        self.check()?;
        let jobs = self.jobs.as_ref().expect("not finished");
        // Fails only if every writer is gone, which they are not before `finish`.
        jobs.send(job)
            .map_err(|_| UnpackError::Corrupt(std::io::Error::other("file writers stopped")))
    }

    /// The first error a writer met, if any (taken: reported once).
    pub fn check(&self) -> Result<(), UnpackError> {
        match self.error.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Waits for every queued file to be written.
    pub fn finish(mut self) -> Result<(), UnpackError> {
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.check()
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        // On an early return: let the writers drain and stop before the caller cleans up.
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn write_jobs(queue: &Mutex<Receiver<WriteJob>>, error: &Mutex<Option<UnpackError>>) {
    loop {
        let job = match queue.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let failed = error.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        if failed {
            continue;
        }
        if let Err(err) = write(&job) {
            let mut slot = error.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(err);
        }
    }
}

fn write(job: &WriteJob) -> Result<(), UnpackError> {
    let io_err = |source| UnpackError::Io {
        path: job.dest.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(job.mode)
        .open(&job.dest)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                UnpackError::Refused {
                    entry: job.entry.clone(),
                    why: "the same path appears twice".to_owned(),
                }
            } else {
                io_err(e)
            }
        })?;
    file.write_all(&job.bytes).map_err(io_err)?;
    // The umask may have taken bits off.
    file.set_permissions(std::fs::Permissions::from_mode(job.mode))
        .map_err(io_err)
}
