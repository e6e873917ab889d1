//! The on-disk index: one file, memory-mapped (memmap2), whose tables are read in place
//! (bytemuck views of the mapping), so opening costs the same whatever the index's size:
//! the header and a checksum, no parsing. Written whole to a temporary file and renamed, so
//! a reader sees the old index or the new one, never half of one. A file that is not an
//! index of this version, is truncated, or fails its checksum is refused at open with the
//! reason (the indexer then rebuilds).
//!
//! Layout (version [`VERSION`], little-endian): a 256-byte header — magic, version, the
//! fingerprint settings, the Bloom filter's hash count, a BLAKE3 checksum of everything
//! after the header, and the (offset, length) of each section — then the sections, each
//! 8-byte aligned:
//!
//! | section | records |
//! |---|---|
//! | files | [`FileRec`] per file, sorted by path |
//! | paths | the files' paths (UTF-8), concatenated |
//! | subtrees | [`Subtree`] per kept subtree, by file |
//! | winnows | [`Winnow`] per kept k-gram hash, by file |
//! | patterns | [`PatternRec`] per fingerprint seen twice or more, sorted by fingerprint |
//! | occurrences | subtree indices (u64), by pattern |
//! | bloom | the Bloom filter's bits (u64 words) over every kept subtree's fingerprint |
//! | clones | [`CloneRec`] per region of a clone group, by group |
//! | root | the indexed folder's path |
//! | winnow lookup | (hash, winnow index) pairs sorted by hash, for [`Index::winnows_with`] |
//! | imports | one line per import: the file's index, a tab, the module it names |
//! | singles | (fingerprint, subtree index) pairs sorted by fingerprint, for each fingerprint kept once, for [`Index::single`] |
//!
//! Opening checks the header and that every section lies inside the file (a truncated file
//! is refused) in constant time; [`Check::Full`] also verifies the checksum and every
//! reference between tables, which the indexer does before it trusts an index. Every
//! accessor is bounds-checked, so even a damaged index opened quickly can give odd answers
//! but never crash.

#![allow(unsafe_code)] // mapping the index file; see open()

use crate::fingerprint::{Settings, Subtree, Winnow};
use bytemuck::{Pod, Zeroable};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bumped whenever the layout changes: another version is rebuilt, not read.
pub const VERSION: u32 = 2;
const MAGIC: &[u8; 8] = b"PERIODIC";
const HEADER: usize = 256;
const SECTIONS: usize = 12;

/// A file of the index.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct FileRec {
    /// Offset of its path in the paths section.
    pub path_off: u64,
    /// Its size, bytes, when indexed.
    pub size: u64,
    /// Its modification time, ns since the epoch, when indexed.
    pub mtime_ns: u64,
    /// BLAKE3 of its content (first 16 bytes).
    pub hash: [u8; 16],
    /// Its first subtree.
    pub sub_start: u64,
    /// Its first winnow.
    pub win_start: u64,
    /// Length of its path.
    pub path_len: u32,
    /// Its subtrees.
    pub sub_count: u32,
    /// Its winnows.
    pub win_count: u32,
    /// Its lines.
    pub lines: u32,
    /// Its language's id.
    pub lang: u32,
    /// 1 if its parse recovered from syntax errors.
    pub had_errors: u32,
}

/// A pattern: a fingerprint kept at least twice.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct PatternRec {
    /// The fingerprint.
    pub fp: u64,
    /// Its first occurrence in the occurrences section.
    pub occ_start: u64,
    /// Occurrences.
    pub count: u32,
    /// Nodes.
    pub size: u32,
    /// [`crate::lang::Kind`] id.
    pub kind: u32,
    /// Lines of its first occurrence.
    pub lines: u32,
    /// 1 if every occurrence lies in an occurrence of one bigger pattern seen as often
    /// (the table shows the bigger one).
    pub subsumed: u32,
    /// Files it occurs in.
    pub files: u32,
}

/// One region of a clone group.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct CloneRec {
    /// The group.
    pub group: u32,
    /// The file.
    pub file: u32,
    /// First line.
    pub start_line: u32,
    /// Last line.
    pub end_line: u32,
}

/// Everything written to an index file.
#[derive(Debug, Default)]
pub struct Tables {
    /// Fingerprint settings.
    pub settings: Settings,
    /// Files, sorted by path.
    pub files: Vec<FileRec>,
    /// Paths.
    pub paths: Vec<u8>,
    /// Subtrees.
    pub subtrees: Vec<Subtree>,
    /// Winnows.
    pub winnows: Vec<Winnow>,
    /// Patterns, by fingerprint.
    pub patterns: Vec<PatternRec>,
    /// Occurrences.
    pub occurrences: Vec<u64>,
    /// Bloom filter bits.
    pub bloom: Vec<u64>,
    /// Bloom hash count.
    pub bloom_k: u32,
    /// Clone regions, by group.
    pub clones: Vec<CloneRec>,
    /// The indexed folder.
    pub root: String,
    /// (hash, winnow index), sorted.
    pub win_by_hash: Vec<[u64; 2]>,
    /// `file\tmodule\n` lines.
    pub imports: String,
    /// (fingerprint, subtree index) of every fingerprint kept once, sorted.
    pub singles: Vec<[u64; 2]>,
}

/// How much [`Index::open`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The header and the section table: constant time, for queries.
    Quick,
    /// Also the checksum of every byte and every reference between tables.
    Full,
}

fn pad8(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(8) {
        out.push(0);
    }
}

/// Writes `t` to `path` (atomically: a temporary file beside it, then a rename).
pub fn write(path: &Path, t: &Tables) -> std::io::Result<()> {
    let mut body: Vec<u8> = Vec::new();
    let mut table = [(0u64, 0u64); SECTIONS];
    let sections: [&[u8]; SECTIONS] = [
        bytemuck::cast_slice(&t.files),
        &t.paths,
        bytemuck::cast_slice(&t.subtrees),
        bytemuck::cast_slice(&t.winnows),
        bytemuck::cast_slice(&t.patterns),
        bytemuck::cast_slice(&t.occurrences),
        bytemuck::cast_slice(&t.bloom),
        bytemuck::cast_slice(&t.clones),
        t.root.as_bytes(),
        bytemuck::cast_slice(&t.win_by_hash),
        t.imports.as_bytes(),
        bytemuck::cast_slice(&t.singles),
    ];
    for (i, bytes) in sections.iter().enumerate() {
        pad8(&mut body);
        table[i] = ((HEADER + body.len()) as u64, bytes.len() as u64);
        body.extend_from_slice(bytes);
    }
    pad8(&mut body);
    let mut header = vec![0u8; HEADER];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&t.settings.min_nodes.to_le_bytes());
    header[16..20].copy_from_slice(&t.settings.k.to_le_bytes());
    header[20..24].copy_from_slice(&t.settings.window.to_le_bytes());
    header[24..28].copy_from_slice(&t.bloom_k.to_le_bytes());
    header[32..64].copy_from_slice(blake3::hash(&body).as_bytes());
    for (i, (off, len)) in table.iter().enumerate() {
        let at = 64 + i * 16;
        header[at..at + 8].copy_from_slice(&off.to_le_bytes());
        header[at + 8..at + 16].copy_from_slice(&len.to_le_bytes());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".index.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&header)?;
    f.write_all(&body)?;
    // No fsync: the index is derived from the sources, and one torn by a crash fails its
    // checksum at the next `periodic index`, which rebuilds it.
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// An open index: its mapping, read in place.
pub struct Index {
    map: memmap2::Mmap,
    table: [(usize, usize); SECTIONS],
    /// Fingerprint settings it was built with.
    pub settings: Settings,
    bloom_k: u32,
    /// Where it is.
    pub path: PathBuf,
}

/// Why an index file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No file there.
    #[error("no index at {0}")]
    Missing(PathBuf),
    /// It cannot be read.
    #[error("cannot read {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// It is not an index this periodic reads.
    #[error("{0} is not a usable index: {1}")]
    Corrupt(PathBuf, String),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

impl Index {
    /// Opens the index at `path`, checking it as `check` says.
    pub fn open(path: &Path, check: Check) -> Result<Index, OpenError> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OpenError::Missing(path.to_path_buf()))
            }
            Err(e) => return Err(OpenError::Io(path.to_path_buf(), e)),
        };
        let corrupt = |why: &str| OpenError::Corrupt(path.to_path_buf(), why.to_string());
        let len = file
            .metadata()
            .map_err(|e| OpenError::Io(path.to_path_buf(), e))?
            .len();
        if len < HEADER as u64 {
            return Err(corrupt("shorter than its header (truncated)"));
        }
        // SAFETY: a read-only private mapping. The indexer replaces the file by renaming a
        // new one over it, never by writing into it, so the mapped bytes do not change
        // under this reader.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| OpenError::Io(path.to_path_buf(), e))?;
        let h = &map[..HEADER];
        if &h[..8] != MAGIC {
            return Err(corrupt("not a periodic index (bad magic)"));
        }
        let version = u32_at(h, 8);
        if version != VERSION {
            return Err(corrupt(&format!(
                "index format version {version}, this periodic reads {VERSION}"
            )));
        }
        let mut table = [(0usize, 0usize); SECTIONS];
        for (i, t) in table.iter_mut().enumerate() {
            let off = u64_at(h, 64 + i * 16);
            let n = u64_at(h, 64 + i * 16 + 8);
            let end = off
                .checked_add(n)
                .ok_or_else(|| corrupt("bad section table"))?;
            if off < HEADER as u64 || end > len || !off.is_multiple_of(8) {
                return Err(corrupt("a section lies outside the file (truncated)"));
            }
            *t = (off as usize, n as usize);
        }
        if check == Check::Full && blake3::hash(&map[HEADER..]).as_bytes()[..] != h[32..64] {
            return Err(corrupt("checksum mismatch (damaged or truncated)"));
        }
        let idx = Index {
            settings: Settings {
                min_nodes: u32_at(h, 12),
                k: u32_at(h, 16),
                window: u32_at(h, 20),
            },
            bloom_k: u32_at(h, 24),
            map,
            table,
            path: path.to_path_buf(),
        };
        // Every table must be whole records.
        let ok = bytemuck::try_cast_slice::<u8, FileRec>(idx.raw(0)).is_ok()
            && bytemuck::try_cast_slice::<u8, Subtree>(idx.raw(2)).is_ok()
            && bytemuck::try_cast_slice::<u8, Winnow>(idx.raw(3)).is_ok()
            && bytemuck::try_cast_slice::<u8, PatternRec>(idx.raw(4)).is_ok()
            && bytemuck::try_cast_slice::<u8, u64>(idx.raw(5)).is_ok()
            && bytemuck::try_cast_slice::<u8, u64>(idx.raw(6)).is_ok()
            && bytemuck::try_cast_slice::<u8, CloneRec>(idx.raw(7)).is_ok()
            && bytemuck::try_cast_slice::<u8, [u64; 2]>(idx.raw(9)).is_ok()
            && bytemuck::try_cast_slice::<u8, [u64; 2]>(idx.raw(11)).is_ok();
        if !ok {
            return Err(corrupt("a table is not whole records"));
        }
        if check == Check::Quick {
            return Ok(idx);
        }
        if std::str::from_utf8(idx.raw(1)).is_err()
            || std::str::from_utf8(idx.raw(8)).is_err()
            || std::str::from_utf8(idx.raw(10)).is_err()
        {
            return Err(corrupt("a path is not text"));
        }
        // Every reference between tables must land inside its table.
        let (subs, wins, paths) = (idx.subtrees().len(), idx.winnows().len(), idx.raw(1).len());
        let files_ok = idx.files().iter().all(|f| {
            f.path_off as usize + f.path_len as usize <= paths
                && f.sub_start as usize + f.sub_count as usize <= subs
                && f.win_start as usize + f.win_count as usize <= wins
                && std::str::from_utf8(
                    &idx.raw(1)[f.path_off as usize..f.path_off as usize + f.path_len as usize],
                )
                .is_ok()
        });
        let occs = idx.occurrences();
        let nfiles = idx.files().len();
        let refs_ok = files_ok
            && idx
                .patterns()
                .iter()
                .all(|p| p.occ_start as usize + p.count as usize <= occs.len())
            && occs.iter().all(|&o| (o as usize) < subs)
            && idx.subtrees().iter().all(|s| (s.file as usize) < nfiles)
            && idx.clones().iter().all(|c| (c.file as usize) < nfiles)
            && idx.winnows().iter().all(|w| (w.file as usize) < nfiles)
            && idx.win_by_hash().iter().all(|p| (p[1] as usize) < wins)
            && idx.singles().iter().all(|p| (p[1] as usize) < subs);
        if !refs_ok {
            return Err(corrupt("a table refers outside another"));
        }
        Ok(idx)
    }

    fn raw(&self, i: usize) -> &[u8] {
        let (off, n) = self.table[i];
        self.map.get(off..off + n).unwrap_or_default()
    }

    /// Files, sorted by path.
    pub fn files(&self) -> &[FileRec] {
        bytemuck::try_cast_slice(self.raw(0)).unwrap_or_default()
    }

    /// A file by its index.
    pub fn file(&self, i: u32) -> Option<&FileRec> {
        self.files().get(i as usize)
    }

    /// The path of a file.
    pub fn path_of(&self, f: &FileRec) -> &str {
        let (at, n) = (f.path_off as usize, f.path_len as usize);
        self.raw(1)
            .get(at..at.saturating_add(n))
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }

    /// The path of the file with index `i`.
    pub fn path_of_file(&self, i: u32) -> &str {
        self.file(i).map(|f| self.path_of(f)).unwrap_or_default()
    }

    /// Every kept subtree.
    pub fn subtrees(&self) -> &[Subtree] {
        bytemuck::try_cast_slice(self.raw(2)).unwrap_or_default()
    }

    /// A file's subtrees.
    pub fn subtrees_of(&self, f: &FileRec) -> &[Subtree] {
        let at = f.sub_start as usize;
        self.subtrees()
            .get(at..at.saturating_add(f.sub_count as usize))
            .unwrap_or_default()
    }

    /// Every kept winnow.
    pub fn winnows(&self) -> &[Winnow] {
        bytemuck::try_cast_slice(self.raw(3)).unwrap_or_default()
    }

    /// A file's winnows.
    pub fn winnows_of(&self, f: &FileRec) -> &[Winnow] {
        let at = f.win_start as usize;
        self.winnows()
            .get(at..at.saturating_add(f.win_count as usize))
            .unwrap_or_default()
    }

    /// Patterns, by fingerprint.
    pub fn patterns(&self) -> &[PatternRec] {
        bytemuck::try_cast_slice(self.raw(4)).unwrap_or_default()
    }

    /// Subtree indices, by pattern.
    pub fn occurrences(&self) -> &[u64] {
        bytemuck::try_cast_slice(self.raw(5)).unwrap_or_default()
    }

    /// A pattern's occurrences.
    pub fn occurrences_of(&self, p: &PatternRec) -> impl Iterator<Item = &Subtree> {
        let subs = self.subtrees();
        let at = p.occ_start as usize;
        self.occurrences()
            .get(at..at.saturating_add(p.count as usize))
            .unwrap_or_default()
            .iter()
            .filter_map(move |&o| subs.get(o as usize))
    }

    /// Clone regions, by group.
    pub fn clones(&self) -> &[CloneRec] {
        bytemuck::try_cast_slice(self.raw(7)).unwrap_or_default()
    }

    fn win_by_hash(&self) -> &[[u64; 2]] {
        bytemuck::try_cast_slice(self.raw(9)).unwrap_or_default()
    }

    /// The winnows with hash `h`, unless there are more than `most` (a hash that common is
    /// boilerplate, not a sign of a copy).
    pub fn winnows_with(&self, h: u64, most: usize) -> impl Iterator<Item = &Winnow> {
        let t = self.win_by_hash();
        let lo = t.partition_point(|p| p[0] < h);
        let hi = lo + t[lo..].partition_point(|p| p[0] <= h);
        let wins = self.winnows();
        let run = if hi - lo > most {
            &t[lo..lo]
        } else {
            &t[lo..hi]
        };
        run.iter().filter_map(move |p| wins.get(p[1] as usize))
    }

    /// Every import: (file index, module named).
    pub fn imports(&self) -> impl Iterator<Item = (u32, &str)> {
        std::str::from_utf8(self.raw(10))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (f, m) = l.split_once('\t')?;
                Some((f.parse().ok()?, m))
            })
    }

    /// The indexed folder.
    pub fn root(&self) -> &str {
        std::str::from_utf8(self.raw(8)).unwrap_or_default()
    }

    /// Whether a fingerprint may have been seen: `false` means never, without looking at
    /// the tables.
    pub fn maybe_seen(&self, fp: u64) -> bool {
        bloom_check(
            bytemuck::try_cast_slice(self.raw(6)).unwrap_or_default(),
            self.bloom_k,
            fp,
        )
    }

    fn singles(&self) -> &[[u64; 2]] {
        bytemuck::try_cast_slice(self.raw(11)).unwrap_or_default()
    }

    /// The one subtree of a fingerprint kept once (binary search; no scan of the subtrees).
    pub fn single(&self, fp: u64) -> Option<&Subtree> {
        let t = self.singles();
        let i = t.binary_search_by_key(&fp, |p| p[0]).ok()?;
        self.subtrees().get(t[i][1] as usize)
    }

    /// The pattern of a fingerprint, if it is one.
    pub fn pattern(&self, fp: u64) -> Option<&PatternRec> {
        let p = self.patterns();
        p.binary_search_by_key(&fp, |r| r.fp).ok().map(|i| &p[i])
    }

    /// Bytes mapped.
    pub fn mapped_bytes(&self) -> usize {
        self.map.len()
    }
}

fn bloom_hashes(fp: u64) -> (u64, u64) {
    let a = fp ^ (fp >> 29);
    let b = fp.rotate_left(31).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (a, b)
}

/// A Bloom filter for `n` fingerprints at about 1 % false positives: (bits, hash count).
pub fn bloom_build(fps: impl Iterator<Item = u64>, n: usize) -> (Vec<u64>, u32) {
    // 10 bits an item and 7 hashes: under 1 % false positives.
    let words = (n * 10).div_ceil(64).max(1);
    let k = 7;
    let mut bits = vec![0u64; words];
    let m = (words * 64) as u64;
    for fp in fps {
        let (a, b) = bloom_hashes(fp);
        for i in 0..u64::from(k) {
            let bit = a.wrapping_add(i.wrapping_mul(b)) % m;
            bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }
    (bits, k)
}

fn bloom_check(bits: &[u64], k: u32, fp: u64) -> bool {
    if bits.is_empty() || k > 64 {
        return false;
    }
    let m = (bits.len() * 64) as u64;
    let (a, b) = bloom_hashes(fp);
    (0..u64::from(k)).all(|i| {
        let bit = a.wrapping_add(i.wrapping_mul(b)) % m;
        bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bloom_filter_never_misses_and_rarely_lies() {
        let (bits, k) = bloom_build((0..10_000u64).map(|i| i * 7919), 10_000);
        assert!((0..10_000u64).all(|i| bloom_check(&bits, k, i * 7919)));
        let false_positives = (0..10_000u64)
            .filter(|i| bloom_check(&bits, k, i * 7919 + 1))
            .count();
        assert!(false_positives < 300, "{false_positives} of 10,000");
    }
}
