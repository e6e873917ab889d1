//! A plan file as `mille render` reads it: memory-mapped, then hashed (the cache key) and
//! parsed straight from the mapping, with the pages the parser has passed handed back to the
//! kernel as it goes. Reading the file into a buffer held all of it at the peak (6 MiB of
//! a 15 MiB peak at 3,000 changes), and parsing from a reader instead is half as fast
//! (measured: 71 against 44 ms), because serde_json's reader path copies every string and
//! reads byte by byte. The mapping keeps the slice parser's speed without the buffer.
//!
//! How the parser says how far it got: the plan's big members (each resource change, and
//! `planned_values`, `prior_state`, ... which mille skips) are read as borrowed text, so
//! their address in the mapping is where the parser is; [`consumed`] releases whole chunks
//! below it with `madvise(MADV_DONTNEED)`. On a read-only file mapping that only drops our
//! view of page-cache pages: touching them again reads the same bytes back from the file.
//!
//! Like every memory-mapped reader, mille must not be given a file that another process
//! rewrites while it reads (a file truncated under it ends the process). Standard input is
//! read into memory.

#![allow(unsafe_code)] // memory-mapping the file, and madvise; each block says why it is sound

use std::cell::Cell;
use std::io::Read as _;
use std::path::Path;

/// Released in steps of this many bytes (a multiple of the page size).
const CHUNK: usize = 1 << 20;

/// A plan's bytes: a file's mapping, or what was read from stdin.
pub enum PlanBytes {
    /// A file, mapped read-only.
    Mapped(memmap2::Mmap),
    /// Standard input (or an empty file, which cannot be mapped).
    Owned(Vec<u8>),
}

thread_local! {
    /// The mapping being parsed on this thread: (start address, length, bytes released).
    static WINDOW: Cell<Option<(usize, usize, usize)>> = const { Cell::new(None) };
}

/// Tells the reader that the parser is past `ptr`: whole chunks of the mapping being parsed
/// below it are released. A pointer outside that mapping (a decoded UTF-16 copy, stdin's
/// buffer, an unescaped copy) is ignored.
pub(crate) fn consumed(ptr: *const u8) {
    WINDOW.with(|w| {
        let Some((start, len, released)) = w.get() else {
            return;
        };
        let at = ptr as usize;
        if at < start || at >= start + len {
            return;
        }
        let upto = (at - start) / CHUNK * CHUNK;
        if upto > released {
            release(start + released, upto - released);
            w.set(Some((start, len, upto)));
        }
    });
}

#[cfg(unix)]
fn release(addr: usize, len: usize) {
    // SAFETY: the range lies inside a live read-only private file mapping (checked by the
    // caller against the window, which is set only while that mapping is borrowed). Dropping
    // such pages never loses data: the next access faults the file's bytes back in.
    unsafe {
        libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED);
    }
}

#[cfg(not(unix))]
fn release(_addr: usize, _len: usize) {}

/// Registers a mapping as the one being read for the life of the guard.
struct Window;

impl Window {
    fn open(bytes: &[u8]) -> Window {
        WINDOW.with(|w| w.set(Some((bytes.as_ptr() as usize, bytes.len(), 0))));
        Window
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        WINDOW.with(|w| w.set(None));
    }
}

impl PlanBytes {
    /// The plan at `path`, or standard input for `-`.
    pub fn open(path: &Path) -> std::io::Result<PlanBytes> {
        if path.as_os_str() == "-" {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b)?;
            return Ok(PlanBytes::Owned(b));
        }
        let file = std::fs::File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(PlanBytes::Owned(Vec::new()));
        }
        // SAFETY: a read-only private mapping of a file mille does not write; see the
        // module's note on files rewritten while they are read.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(PlanBytes::Mapped(map))
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            PlanBytes::Mapped(m) => m,
            PlanBytes::Owned(b) => b,
        }
    }

    /// The render cache's key of these bytes ([`crate::cache::key`]), releasing the mapping
    /// behind the hash as it goes.
    pub fn key(&self, include_noop: bool) -> String {
        let bytes = self.bytes();
        let _w = Window::open(bytes);
        let mut h = blake3::Hasher::new();
        for chunk in bytes.chunks(CHUNK) {
            h.update(chunk);
            consumed(chunk.as_ptr_range().end);
        }
        crate::cache::finish_key(h, include_noop)
    }

    /// Parses the plan, releasing the mapping behind the parser.
    pub fn parse(&self) -> Result<crate::Plan, crate::InputError> {
        let _w = Window::open(self.bytes());
        crate::Plan::parse(self.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resident_kib(map: &[u8]) -> usize {
        // mincore would tell the page cache; what matters is this process's view, which
        // /proc/self/smaps gives per mapping.
        let start = map.as_ptr() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((a, _)) = range.split_once('-') {
                    if let Ok(a) = usize::from_str_radix(a, 16) {
                        inside = a == start;
                        continue;
                    }
                }
            }
            if inside {
                if let Some(v) = line.strip_prefix("Rss:") {
                    return v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0);
                }
            }
        }
        0
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_parsed_plan_does_not_stay_resident_and_parses_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        let text = crate::synth::plan(3000, 20, 2000).to_string();
        std::fs::write(&path, &text).unwrap();
        let src = PlanBytes::open(&path).unwrap();
        let key = src.key(false);
        assert_eq!(key, crate::cache::key(text.as_bytes(), false));
        let after_hash = resident_kib(src.bytes());
        let plan = src.parse().unwrap();
        let after_parse = resident_kib(src.bytes());
        let whole = text.len() / 1024;
        assert!(
            after_hash < whole / 2 && after_parse < whole / 2,
            "resident after hashing {after_hash} KiB, after parsing {after_parse} KiB, of {whole} KiB"
        );
        let from_memory = crate::Plan::parse(text.as_bytes()).unwrap();
        assert_eq!(plan.changes.len(), from_memory.changes.len());
        assert_eq!(plan.counts(), from_memory.counts());
        assert_eq!(
            format!("{:?}", plan.changes),
            format!("{:?}", from_memory.changes)
        );
        // Everything is still readable after its pages were released.
        assert_eq!(src.bytes(), text.as_bytes());
    }
}
