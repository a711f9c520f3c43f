//! Times the package's two bzip2 decoders for benchmark 1b (`cargo xtask bench`).
//!
//! `bzip2_decoders PACKAGE ROUNDS SCRATCH` cuts the package at its stream starts, as the agent
//! does, and decodes every segment on this one thread with our own decoder and with libbz2, in
//! alternate rounds, after checking once that both give the same bytes. Each round prints one
//! line, `own SECONDS` or `library SECONDS`: the CPU time this thread spent, which a busy machine
//! inflates less than wall time. Then it unpacks the package as the agent does (every core,
//! every check, into a new directory under SCRATCH), with our decoder first and with libbz2
//! alone, in alternate rounds: `own-unpack SECONDS` or `library-unpack SECONDS`, wall time.

use std::fs::File;
use std::os::unix::fs::FileExt;

use milky_core::package::UnpackLimits;
use milky_core::package::decompress::{Decoder, stream_starts, unpack_file_decoding_first_with};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(rounds), Some(scratch)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: bzip2_decoders PACKAGE ROUNDS SCRATCH".into());
    };
    let rounds: usize = rounds.parse()?;
    let file = File::open(&path).map_err(|e| format!("opening {path}: {e}"))?;
    let len = file.metadata()?.len();
    let starts = stream_starts(&file)?;
    let mut segments = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(len);
        let mut bytes = vec![0; usize::try_from(end - start)?];
        file.read_exact_at(&mut bytes, start)?;
        segments.push(bytes);
    }
    let cap = 16 << 20;
    for (segment, start) in segments.iter().zip(&starts) {
        let own = Decoder::Own.decode(segment, cap);
        if own.is_none() || own != Decoder::Library.decode(segment, cap) {
            return Err(
                format!("the decoders disagree on the segment at byte {start} of {path}").into(),
            );
        }
    }
    for _ in 0..rounds {
        for (name, decoder) in [("own", Decoder::Own), ("library", Decoder::Library)] {
            let before = thread_cpu()?;
            for segment in &segments {
                std::hint::black_box(decoder.decode(segment, cap));
            }
            println!("{name} {:.4}", thread_cpu()? - before);
        }
    }
    drop(segments);
    // Trees are removed only at the end, as in the rest of benchmark 1b (ext4 scans past
    // inodes freed in the last minute).
    let scratch = std::path::Path::new(&scratch);
    for round in 0..rounds {
        for (name, decoder) in [("own", Decoder::Own), ("library", Decoder::Library)] {
            let target = scratch.join(format!("{name}-{round}"));
            std::fs::create_dir_all(&target)?;
            let start = std::time::Instant::now();
            unpack_file_decoding_first_with(
                std::path::Path::new(&path),
                &target,
                UnpackLimits::default(),
                decoder,
            )?;
            println!("{name}-unpack {:.4}", start.elapsed().as_secs_f64());
        }
    }
    std::fs::remove_dir_all(scratch)?;
    Ok(())
}

/// CPU seconds this thread has run (the first field of its schedstat, in nanoseconds).
fn thread_cpu() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let nanos: u64 = stat
        .split_whitespace()
        .next()
        .ok_or("empty schedstat")?
        .parse()?;
    Ok(nanos as f64 / 1e9)
}
