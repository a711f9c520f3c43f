//! A bzip2 decoder in safe Rust, used first to decode package segments.
//!
//! Decoding packages is the unpack bottleneck, and libbz2 (through the `bzip2` crate) reads its
//! Huffman codes a bit at a time. This decoder reads them through lookup tables from a 64-bit
//! bit buffer, keeps the inverse BWT in one `u32` array and follows it from both ends at once.
//! Benchmark 1b times it against libbz2 on the bench's package, one thread each, in every run
//! (`milky-core/examples/bzip2_decoders.rs`); it is kept only while it is clearly faster.
//!
//! It is deliberately strict: anything it does not handle, or that does not check out (a bad
//! magic, a CRC, a randomised block, trailing bytes, an output over the cap), gives `None`, and
//! the caller decodes the same bytes with libbz2, whose answer (output or error) stands.

/// Block header magic (π in BCD) and end-of-stream magic (√π).
const BLOCK_MAGIC: u64 = 0x3141_5926_5359;
const EOS_MAGIC: u64 = 0x1772_4538_5090;
const MAX_CODE_LEN: u32 = 20;
const MAX_GROUPS: usize = 6;
const MAX_SELECTORS: usize = 18002;
const MAX_ALPHA: usize = 258;
/// Bits resolved by one lookup in a Huffman table; longer codes take the slow path.
const FAST_BITS: u32 = 10;

/// Decodes `input` as a sequence of whole bzip2 streams that ends exactly at its last byte
/// (each stream's padding bits are ignored, the next stream starts at the next byte).
/// `None` on anything it does not handle or that does not check out — the caller then uses libbz2.
/// Output larger than `cap` bytes: `None`.
pub fn decode_streams(input: &[u8], cap: usize) -> Option<Vec<u8>> {
    if input.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).min(cap));
    let mut state = BlockState::new();
    let mut pos = 0;
    while pos < input.len() {
        pos = decode_stream(input, pos, cap, &mut state, &mut out)?;
    }
    Some(out)
}

/// Buffers reused from block to block.
struct BlockState {
    /// Inverse BWT links: byte in the low 8 bits, next index above.
    tt: Vec<u32>,
    /// The inverse links, for reading the block's second half backwards.
    lf: Vec<u32>,
    /// The block after the inverse BWT, before the initial run-length decoding.
    bwt: Vec<u8>,
    tables: Vec<Table>,
    selectors: Vec<u8>,
}

impl BlockState {
    fn new() -> Self {
        BlockState {
            tt: Vec::new(),
            lf: Vec::new(),
            bwt: Vec::new(),
            tables: (0..MAX_GROUPS).map(|_| Table::new()).collect(),
            selectors: Vec::new(),
        }
    }
}

/// Decodes the stream at `start`; returns the byte offset just after it.
fn decode_stream(
    input: &[u8],
    start: usize,
    cap: usize,
    state: &mut BlockState,
    out: &mut Vec<u8>,
) -> Option<usize> {
    let header = input.get(start..start.checked_add(4)?)?;
    if &header[..3] != b"BZh" || !(b'1'..=b'9').contains(&header[3]) {
        return None;
    }
    let limit = usize::from(header[3] - b'0') * 100_000;
    if state.tt.len() < limit {
        // Zeroed by the allocator: pages a small block never touches are never written (the
        // contents do not matter, every entry is set before it is read).
        state.tt = vec![0; limit];
    }
    let mut bits = Bits::new(input, start + 4);
    let mut combined: u32 = 0;
    loop {
        let magic = (u64::from(bits.get(24)) << 24) | u64::from(bits.get(24));
        let crc = bits.get(32);
        if magic == EOS_MAGIC {
            if crc != combined {
                return None;
            }
            break;
        }
        if magic != BLOCK_MAGIC {
            return None;
        }
        let block_crc = decode_block(&mut bits, limit, cap, state, out)?;
        if block_crc != crc {
            return None;
        }
        combined = combined.rotate_left(1) ^ block_crc;
    }
    let used_bits = bits.consumed_bits()?;
    let end = used_bits.div_ceil(8);
    (end <= input.len()).then_some(end)
}

/// Decodes one block (after its magic and CRC) into `out`; returns the block's computed CRC.
fn decode_block(
    bits: &mut Bits,
    limit: usize,
    cap: usize,
    state: &mut BlockState,
    out: &mut Vec<u8>,
) -> Option<u32> {
    if bits.get(1) != 0 {
        // Randomised blocks: obsolete since bzip2 0.9.5, left to libbz2.
        return None;
    }
    let orig_ptr = bits.get(24) as usize;

    // Symbol map: which byte values occur, in order; the MTF list starts as that order.
    let used_groups = bits.get(16);
    let mut mtf = [0u8; 256];
    let mut n_in_use = 0usize;
    for group in 0..16u32 {
        if used_groups & (0x8000 >> group) != 0 {
            let used = bits.get(16);
            for i in 0..16u32 {
                if used & (0x8000 >> i) != 0 {
                    mtf[n_in_use] = (group * 16 + i) as u8;
                    n_in_use += 1;
                }
            }
        }
    }
    if n_in_use == 0 {
        return None;
    }
    let alpha_size = n_in_use + 2;

    let n_groups = bits.get(3) as usize;
    if !(2..=MAX_GROUPS).contains(&n_groups) {
        return None;
    }
    let n_selectors = bits.get(15) as usize;
    if n_selectors == 0 || n_selectors > MAX_SELECTORS {
        return None;
    }
    let mut group_mtf = [0u8, 1, 2, 3, 4, 5];
    state.selectors.clear();
    for _ in 0..n_selectors {
        let mut j = 0usize;
        while bits.get(1) == 1 {
            j += 1;
            if j >= n_groups {
                return None;
            }
        }
        let chosen = group_mtf[j];
        group_mtf.copy_within(0..j, 1);
        group_mtf[0] = chosen;
        state.selectors.push(chosen);
    }

    let mut lengths = [0u8; MAX_ALPHA];
    for table in state.tables.iter_mut().take(n_groups) {
        let mut current = bits.get(5);
        for length in lengths.iter_mut().take(alpha_size) {
            loop {
                if !(1..=MAX_CODE_LEN).contains(&current) {
                    return None;
                }
                if bits.get(1) == 0 {
                    break;
                }
                if bits.get(1) == 0 {
                    current += 1;
                } else {
                    current -= 1;
                }
            }
            *length = current as u8;
        }
        table.build(&lengths[..alpha_size])?;
    }

    let n = decode_symbols(bits, limit, state, &mut mtf, n_in_use)?;
    if orig_ptr >= n {
        return None;
    }
    bits.check_overrun()?;

    inverse_bwt(&mut state.tt[..n], &mut state.lf, &mut state.bwt, orig_ptr)?;
    let start = out.len();
    unrle(&state.bwt, out, cap)?;
    Some(!crc_update(!0, &out[start..]))
}

/// Decodes the Huffman-coded MTF/RLE2 symbols into `state.tt` (one byte per entry) and returns
/// the block length.
fn decode_symbols(
    bits: &mut Bits,
    limit: usize,
    state: &mut BlockState,
    mtf: &mut [u8; 256],
    n_in_use: usize,
) -> Option<usize> {
    let eob = (n_in_use + 1) as u16;
    let tt = &mut state.tt[..limit];
    let tables = &state.tables;
    let mut n = 0usize;
    let mut run = 0usize;
    let mut run_shift = 0u32;
    let mut selectors = state.selectors.iter();
    let mut table = &tables[0];
    let mut group_left = 0u32;
    loop {
        if group_left == 0 {
            table = tables.get(usize::from(*selectors.next()?))?;
            group_left = 50;
        }
        group_left -= 1;
        let sym = table.decode(bits)?;
        if sym <= 1 {
            // RUNA/RUNB: bijective base-2 digits of a run of the front byte, least first.
            if run_shift > 20 {
                return None;
            }
            run += (usize::from(sym) + 1) << run_shift;
            run_shift += 1;
            continue;
        }
        if run > 0 {
            let end = n.checked_add(run).filter(|&end| end <= limit)?;
            tt[n..end].fill(u32::from(mtf[0]));
            n = end;
            run = 0;
            run_shift = 0;
        }
        if sym == eob {
            return Some(n);
        }
        let index = usize::from(sym - 1) & 0xff;
        let byte = mtf[index];
        // Most indices are small: a plain loop beats a call to memmove there.
        if index < 16 {
            let mut i = index;
            while i > 0 {
                mtf[i] = mtf[i - 1];
                i -= 1;
            }
        } else {
            mtf.copy_within(0..index, 1);
        }
        mtf[0] = byte;
        *tt.get_mut(n)? = u32::from(byte);
        n += 1;
    }
}

/// Undoes the BWT of `tt` (bytes in the low 8 bits) into `bwt`; `lf` is scratch space.
///
/// Following the links is one chain of dependent loads into a multi-megabyte array, so it is
/// bound by memory latency. Two chains at once hide half of it: the first half of the block is
/// read forwards from the start, the second half backwards from the end (through the inverse
/// links, kept in `lf`), interleaved in one loop.
fn inverse_bwt(
    tt: &mut [u32],
    lf: &mut Vec<u32>,
    bwt: &mut Vec<u8>,
    orig_ptr: usize,
) -> Option<()> {
    let n = tt.len();
    let mut counts = [0u32; 256];
    for &entry in tt.iter() {
        counts[(entry & 0xff) as usize] += 1;
    }
    let mut next = [0u32; 256];
    let mut sum = 0u32;
    for (slot, &count) in next.iter_mut().zip(counts.iter()) {
        *slot = sum;
        sum += count;
    }
    lf.clear();
    lf.resize(n, 0);
    for i in 0..n {
        let byte = tt[i] & 0xff;
        let at = next[byte as usize];
        next[byte as usize] += 1;
        lf[i] = (at << 8) | byte;
        *tt.get_mut(at as usize)? |= (i as u32) << 8;
    }
    bwt.clear();
    bwt.resize(n, 0);
    let half = n / 2;
    let (front, back) = bwt.split_at_mut(half);
    let mut forward = (tt.get(orig_ptr)? >> 8) as usize;
    let mut backward = orig_ptr;
    for (slot, back_slot) in front.iter_mut().zip(back.iter_mut().rev()) {
        let entry = *tt.get(forward)?;
        let back_entry = *lf.get(backward)?;
        *slot = entry as u8;
        *back_slot = back_entry as u8;
        forward = (entry >> 8) as usize;
        backward = (back_entry >> 8) as usize;
    }
    if back.len() > front.len() {
        back[0] = *lf.get(backward)? as u8;
    }
    Some(())
}

/// The initial run-length decoding: 4 equal bytes are followed by a count of further copies.
fn unrle(data: &[u8], out: &mut Vec<u8>, cap: usize) -> Option<()> {
    out.reserve(data.len());
    let mut last = 0u8;
    let mut run = 0u32;
    for &byte in data {
        if run == 4 {
            if out.len() + usize::from(byte) > cap {
                return None;
            }
            out.resize(out.len() + usize::from(byte), last);
            run = 0;
        } else {
            if run > 0 && byte == last {
                run += 1;
            } else {
                last = byte;
                run = 1;
            }
            out.push(byte);
        }
    }
    (out.len() <= cap).then_some(())
}

/// A canonical Huffman code: a table on the next `FAST_BITS` bits, canonical ranges beyond.
struct Table {
    /// Symbol << 5 | length, or 0 for codes longer than `FAST_BITS` (or no code).
    fast: [u16; 1 << FAST_BITS],
    /// Per length: the first code, the number of codes, and their offset into `perm`.
    first: [u32; MAX_CODE_LEN as usize + 1],
    count: [u32; MAX_CODE_LEN as usize + 1],
    offset: [u32; MAX_CODE_LEN as usize + 1],
    perm: [u16; MAX_ALPHA],
    max_len: u32,
}

impl Table {
    fn new() -> Self {
        Table {
            fast: [0; 1 << FAST_BITS],
            first: [0; MAX_CODE_LEN as usize + 1],
            count: [0; MAX_CODE_LEN as usize + 1],
            offset: [0; MAX_CODE_LEN as usize + 1],
            perm: [0; MAX_ALPHA],
            max_len: 0,
        }
    }

    /// Builds the code from the lengths (1..=20); an over-subscribed code is refused.
    fn build(&mut self, lengths: &[u8]) -> Option<()> {
        self.count = [0; MAX_CODE_LEN as usize + 1];
        let mut kraft = 0u64;
        for &len in lengths {
            self.count[usize::from(len)] += 1;
            kraft += 1 << (MAX_CODE_LEN - u32::from(len));
        }
        if kraft > 1 << MAX_CODE_LEN {
            return None;
        }
        let mut code = 0u32;
        let mut offset = 0u32;
        self.max_len = 0;
        for len in 1..=MAX_CODE_LEN as usize {
            self.first[len] = code;
            self.offset[len] = offset;
            code = (code + self.count[len]) << 1;
            offset += self.count[len];
            if self.count[len] > 0 {
                self.max_len = len as u32;
            }
        }
        self.fast = [0; 1 << FAST_BITS];
        let mut next = self.first;
        let mut slot = self.offset;
        for (sym, &len) in lengths.iter().enumerate() {
            let len_us = usize::from(len);
            let code = next[len_us];
            next[len_us] += 1;
            *self.perm.get_mut(slot[len_us] as usize)? = sym as u16;
            slot[len_us] += 1;
            let len = u32::from(len);
            if len <= FAST_BITS {
                let shift = FAST_BITS - len;
                let lo = (code << shift) as usize;
                let entry = ((sym as u16) << 5) | len as u16;
                self.fast.get_mut(lo..lo + (1 << shift))?.fill(entry);
            }
        }
        Some(())
    }

    #[inline(always)]
    fn decode(&self, bits: &mut Bits) -> Option<u16> {
        if bits.count < MAX_CODE_LEN {
            bits.refill();
        }
        let entry = self.fast[(bits.buf >> (64 - FAST_BITS)) as usize];
        if entry != 0 {
            let len = u32::from(entry & 31);
            bits.buf <<= len;
            bits.count -= len;
            return Some(entry >> 5);
        }
        self.decode_slow(bits)
    }

    #[cold]
    fn decode_slow(&self, bits: &mut Bits) -> Option<u16> {
        for len in FAST_BITS + 1..=self.max_len {
            let code = (bits.buf >> (64 - len)) as u32;
            let l = len as usize;
            let rel = code.wrapping_sub(self.first[l]);
            if rel < self.count[l] {
                bits.buf <<= len;
                bits.count -= len;
                return self.perm.get((self.offset[l] + rel) as usize).copied();
            }
        }
        None
    }
}

/// A big-endian bit reader with a 64-bit buffer; reads zeros past the end (see `consumed_bits`).
struct Bits<'a> {
    input: &'a [u8],
    /// Next byte to load; may run past the end while zeros are loaded.
    pos: usize,
    /// Valid bits at the top, zeros (or the right next bits) below.
    buf: u64,
    count: u32,
}

impl<'a> Bits<'a> {
    fn new(input: &'a [u8], pos: usize) -> Self {
        Bits {
            input,
            pos,
            buf: 0,
            count: 0,
        }
    }

    #[inline(always)]
    fn refill(&mut self) {
        if self.count > 56 {
            return;
        }
        if let Some(chunk) = self
            .input
            .get(self.pos..)
            .and_then(|s| s.first_chunk::<8>())
        {
            // Loads 8 bytes, keeps the whole ones that fit; the partial byte's bits are
            // loaded again, identically, next time.
            self.buf |= u64::from_be_bytes(*chunk) >> self.count;
            let take = (63 - self.count) >> 3;
            self.pos += take as usize;
            self.count += take << 3;
        } else {
            while self.count <= 56 {
                let byte = self.input.get(self.pos).copied().unwrap_or(0);
                self.buf |= u64::from(byte) << (56 - self.count);
                self.pos += 1;
                self.count += 8;
            }
        }
    }

    /// The next `n` (1..=32) bits.
    #[inline]
    fn get(&mut self, n: u32) -> u32 {
        if self.count < n {
            self.refill();
        }
        let value = (self.buf >> (64 - n)) as u32;
        self.buf <<= n;
        self.count -= n;
        value
    }

    /// Bits consumed from the start of the input, `None` if past its end.
    fn consumed_bits(&self) -> Option<usize> {
        let used = self.pos.checked_mul(8)?.checked_sub(self.count as usize)?;
        (used <= self.input.len().checked_mul(8)?).then_some(used)
    }

    fn check_overrun(&self) -> Option<()> {
        self.consumed_bits().map(|_| ())
    }
}

/// CRC-32 as bzip2 uses it: MSB first, polynomial 0x04c11db7; slicing by 8.
static CRC_TABLES: [[u32; 256]; 8] = crc_tables();

const fn crc_tables() -> [[u32; 256]; 8] {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev << 8) ^ tables[0][(prev >> 24) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
}

fn crc_update(mut crc: u32, data: &[u8]) -> u32 {
    let t = &CRC_TABLES;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let hi = crc ^ u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        crc = t[7][(hi >> 24) as usize]
            ^ t[6][((hi >> 16) & 0xff) as usize]
            ^ t[5][((hi >> 8) & 0xff) as usize]
            ^ t[4][(hi & 0xff) as usize]
            ^ t[3][usize::from(c[4])]
            ^ t[2][usize::from(c[5])]
            ^ t[1][usize::from(c[6])]
            ^ t[0][usize::from(c[7])];
    }
    for &byte in chunks.remainder() {
        crc = (crc << 8) ^ t[0][((crc >> 24) as u8 ^ byte) as usize];
    }
    crc
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use rand::rngs::StdRng;
    use rand::{Rng, RngCore, SeedableRng};

    use super::decode_streams;

    fn compress(data: &[u8], level: u32) -> Vec<u8> {
        let mut encoder = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(level));
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// What libbz2 makes of `input`: `None` on an error.
    fn reference(input: &[u8]) -> Option<Vec<u8>> {
        let mut output = Vec::new();
        bzip2::read::MultiBzDecoder::new(input)
            .read_to_end(&mut output)
            .ok()?;
        Some(output)
    }

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut data = vec![0; len];
        StdRng::seed_from_u64(seed).fill_bytes(&mut data);
        data
    }

    fn text(len: usize, seed: u64) -> Vec<u8> {
        let words = [
            "def ",
            "class ",
            "return ",
            "self",
            ".",
            "(",
            ")",
            ":\n",
            "    ",
            "import ",
            "django",
            "models",
            " = ",
            "Field",
            "\n",
            "{% block %}",
            "<div>",
            "</div>",
            "0",
            "1",
        ];
        let mut rng = StdRng::seed_from_u64(seed);
        let mut data = Vec::with_capacity(len + 16);
        while data.len() < len {
            data.extend_from_slice(words[rng.random_range(0..words.len())].as_bytes());
        }
        data.truncate(len);
        data
    }

    fn runs() -> Vec<u8> {
        let mut data = Vec::new();
        for (i, &len) in [1usize, 4, 5, 255, 256, 300, 10_000, 3, 4, 259, 260, 1_000]
            .iter()
            .enumerate()
        {
            data.extend(std::iter::repeat_n((i as u8).wrapping_mul(37), len));
        }
        data
    }

    fn mix() -> Vec<u8> {
        let mut data = text(20_000, 1);
        data.extend(runs());
        data.extend(random(5_000, 2));
        data.extend(std::iter::repeat_n(b'x', 70_000));
        data.extend(text(150_000, 3));
        data
    }

    fn samples() -> Vec<Vec<u8>> {
        vec![
            Vec::new(),
            vec![42],
            random(30_000, 7),
            text(250_000, 8),
            runs(),
            vec![7; 4],
            vec![7; 5],
            vec![0; 255],
            vec![0; 256],
            vec![0; 300],
            vec![0; 10_000],
            mix(),
        ]
    }

    #[test]
    fn matches_libbz2() {
        for level in [1, 9] {
            for data in samples() {
                let compressed = compress(&data, level);
                assert_eq!(reference(&compressed).as_deref(), Some(&data[..]));
                let decoded = decode_streams(&compressed, usize::MAX);
                assert_eq!(
                    decoded.as_deref(),
                    Some(&data[..]),
                    "level {level}, {} bytes",
                    data.len()
                );
            }
        }
    }

    #[test]
    fn concatenated_streams() {
        let parts = [
            text(40_000, 5),
            Vec::new(),
            random(3_000, 6),
            runs(),
            vec![1],
        ];
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            input.extend(compress(part, if i % 2 == 0 { 9 } else { 1 }));
            expected.extend_from_slice(part);
        }
        assert_eq!(reference(&input).as_ref(), Some(&expected));
        assert_eq!(decode_streams(&input, usize::MAX), Some(expected));
    }

    #[test]
    fn cap() {
        let data = mix();
        let compressed = compress(&data, 9);
        assert_eq!(decode_streams(&compressed, data.len()), Some(data.clone()));
        assert_eq!(decode_streams(&compressed, data.len() - 1), None);
        assert_eq!(decode_streams(&compressed, 0), None);
        // A run expansion alone over the cap.
        let zeros = compress(&[0; 10_000], 9);
        assert_eq!(decode_streams(&zeros, 9_999), None);
    }

    /// Corrupted input: `None`, or exactly libbz2's output (never a different answer).
    fn check_corrupt(input: &[u8]) {
        if let Some(decoded) = decode_streams(input, usize::MAX) {
            assert_eq!(reference(input), Some(decoded));
        }
    }

    #[test]
    fn corrupted() {
        let mut inputs = Vec::new();
        for level in [1, 9] {
            inputs.push(compress(&text(3_000, 9), level));
            inputs.push(compress(&runs(), level));
            inputs.push(compress(&random(500, 10), level));
            let mut two = compress(&[5], level);
            two.extend(compress(&text(800, 11), level));
            inputs.push(two);
        }
        let mut rng = StdRng::seed_from_u64(12);
        for input in &inputs {
            // Flipped bits: every bit of the headers, then random positions.
            let bits = input.len() * 8;
            let positions: Vec<usize> = (0..bits.min(400))
                .chain((0..300).map(|_| rng.random_range(0..bits)))
                .collect();
            for bit in positions {
                let mut broken = input.clone();
                broken[bit / 8] ^= 0x80 >> (bit % 8);
                // A flipped level digit may still decode, the same for libbz2.
                check_corrupt(&broken);
            }
            for len in (0..input.len()).step_by(input.len() / 200 + 1) {
                assert_eq!(
                    decode_streams(&input[..len], usize::MAX),
                    None,
                    "length {len}"
                );
            }
            for garbage in [&[0u8][..], b"BZh9", b"junk", &[0; 64]] {
                let mut longer = input.clone();
                longer.extend_from_slice(garbage);
                assert_eq!(decode_streams(&longer, usize::MAX), None);
            }
            let mut bad = input.clone();
            bad[0] = b'b';
            assert_eq!(decode_streams(&bad, usize::MAX), None);
            let mut level0 = input.clone();
            level0[3] = b'0';
            assert_eq!(decode_streams(&level0, usize::MAX), None);
        }
        // Random bytes behind a valid header never panic.
        for seed in 0..200 {
            let mut input = b"BZh9\x31\x41\x59\x26\x53\x59".to_vec();
            input.extend(random(rng.random_range(0..2_000), seed));
            check_corrupt(&input);
        }
    }

    /// Differential fuzzing against libbz2: mutated streams either fail to decode or decode to
    /// exactly what libbz2 makes of them, and never panic. The default keeps test runs short;
    /// `MILKY_BZ_FUZZ_ITERATIONS` runs it longer and `MILKY_BZ_FUZZ_SEED` varies it. An input
    /// that fails is saved to a temp file named in the failure.
    #[test]
    fn fuzz_against_libbz2() {
        let setting = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let iterations = setting("MILKY_BZ_FUZZ_ITERATIONS", 2_000);
        let seed = setting("MILKY_BZ_FUZZ_SEED", 13);
        let corpus: Vec<Vec<u8>> = vec![
            compress(&text(6_000, 20), 9),
            compress(&runs(), 1),
            compress(&random(400, 21), 9),
            compress(&[9; 40], 1),
            [compress(&text(900, 22), 1), compress(&[3; 700], 9)].concat(),
        ];
        let mut rng = StdRng::seed_from_u64(seed);
        for iteration in 0..iterations {
            let mut input = corpus[rng.random_range(0..corpus.len())].clone();
            for _ in 0..rng.random_range(1..=3) {
                mutate(&mut input, &corpus, &mut rng);
            }
            let decoded = std::panic::catch_unwind(|| decode_streams(&input, 1 << 22));
            let failure = match decoded {
                Err(_) => "panicked",
                Ok(Some(out)) if reference(&input).as_ref() != Some(&out) => {
                    "disagrees with libbz2"
                }
                Ok(_) => continue,
            };
            let path =
                std::env::temp_dir().join(format!("bzip2-decoder-fuzz-{seed}-{iteration}.bz2"));
            std::fs::write(&path, &input).unwrap();
            panic!(
                "the decoder {failure} on iteration {iteration} of seed {seed}: {}",
                path.display()
            );
        }
    }

    /// One random change: a flipped bit (most often in the first bytes of a block, where its
    /// tables are), a byte set, a range dropped or repeated, a cut, or a splice of another stream.
    fn mutate(input: &mut Vec<u8>, corpus: &[Vec<u8>], rng: &mut StdRng) {
        if input.is_empty() {
            input.push(rng.random());
            return;
        }
        let len = input.len();
        let at = if rng.random_bool(0.5) {
            rng.random_range(0..len.min(64))
        } else {
            rng.random_range(0..len)
        };
        match rng.random_range(0..7) {
            0 | 1 => input[at] ^= 1 << rng.random_range(0..8),
            2 => input[at] = [0, 0xff, 0x7f, 0x80, rng.random()][rng.random_range(0..5)],
            3 => {
                let end = (at + rng.random_range(1..=16)).min(len);
                input.drain(at..end);
            }
            4 => {
                let end = (at + rng.random_range(1..=32)).min(len);
                let copy = input[at..end].to_vec();
                let to = rng.random_range(0..=len);
                input.splice(to..to, copy);
            }
            5 => input.truncate(at),
            _ => {
                let other = &corpus[rng.random_range(0..corpus.len())];
                let from = rng.random_range(0..other.len());
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
        }
    }
}
