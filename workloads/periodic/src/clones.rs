//! Clone groups from winnowed k-gram hashes (see [`crate::fingerprint`]): two places that
//! share kept hashes at a constant offset in their token streams are a copied run; runs are
//! cut where the shared hashes stop following each other; places in one file that overlap
//! mostly are one region; and regions that are copies of each other, directly or through a
//! third, are one group (union-find). Part of periodic's core, so written here.

use crate::fingerprint::{Settings, Winnow};
use crate::store::CloneRec;
use std::collections::HashMap;

/// A hash kept in more places than this is boilerplate (license headers, imports), not a
/// clone.
pub const MAX_PLACES: usize = 48;
/// Shortest region kept, lines, as jscpd's default (`periodic clones --min-lines` can ask
/// for longer ones). Shorter shared runs are mostly boilerplate, and would chain unrelated
/// copies into one group.
pub const MIN_LINES: u32 = 5;

#[derive(Clone, Copy, Debug)]
struct Region {
    file: u32,
    start: u32,
    end: u32,
}

/// (file a, file b, offset of b's tokens from a's).
type Diagonal = (u32, u32, i64);

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// Clone regions grouped, biggest groups (by lines) first.
pub fn groups(winnows: &[Winnow], s: &Settings) -> Vec<CloneRec> {
    let mut by_hash: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, w) in winnows.iter().enumerate() {
        by_hash.entry(w.hash).or_default().push(i);
    }
    // Shared hashes by diagonal: (file a, file b, token offset) → (token in a, a, b).
    let mut diagonals: HashMap<Diagonal, Vec<(u32, usize, usize)>> = HashMap::new();
    for places in by_hash.values() {
        if places.len() < 2 || places.len() > MAX_PLACES {
            continue;
        }
        for (n, &a) in places.iter().enumerate() {
            for &b in &places[n + 1..] {
                let (wa, wb) = (&winnows[a], &winnows[b]);
                let (a, b, wa, wb) = if (wa.file, wa.token) <= (wb.file, wb.token) {
                    (a, b, wa, wb)
                } else {
                    (b, a, wb, wa)
                };
                let offset = i64::from(wb.token) - i64::from(wa.token);
                if wa.file == wb.file && offset < i64::from(s.k) {
                    continue; // overlapping itself
                }
                diagonals
                    .entry((wa.file, wb.file, offset))
                    .or_default()
                    .push((wa.token, a, b));
            }
        }
    }
    let gap = s.k + s.window;
    let mut pairs: Vec<(Region, Region)> = Vec::new();
    for ((fa, fb, _), mut hits) in diagonals {
        hits.sort_unstable();
        let mut run: Vec<(usize, usize)> = Vec::new();
        let mut last_token = None;
        let mut flush = |run: &mut Vec<(usize, usize)>| {
            if run.is_empty() {
                return;
            }
            let span = |ix: &mut dyn Iterator<Item = usize>| {
                let mut lo = u32::MAX;
                let mut hi = 0;
                for i in ix {
                    lo = lo.min(winnows[i].start_line);
                    hi = hi.max(winnows[i].end_line);
                }
                (lo, hi)
            };
            let (sa, ea) = span(&mut run.iter().map(|p| p.0));
            let (sb, eb) = span(&mut run.iter().map(|p| p.1));
            if ea + 1 - sa >= MIN_LINES && eb + 1 - sb >= MIN_LINES {
                pairs.push((
                    Region {
                        file: fa,
                        start: sa,
                        end: ea,
                    },
                    Region {
                        file: fb,
                        start: sb,
                        end: eb,
                    },
                ));
            }
            run.clear();
        };
        for (token, a, b) in hits {
            if last_token.is_some_and(|t: u32| token - t > gap) {
                flush(&mut run);
            }
            run.push((a, b));
            last_token = Some(token);
        }
        flush(&mut run);
    }
    // Regions of one file that mostly overlap are one.
    let mut regions: Vec<Region> = pairs.iter().flat_map(|(a, b)| [*a, *b]).collect();
    regions.sort_by_key(|r| (r.file, r.start, r.end));
    let mut clusters: Vec<Region> = Vec::new();
    for r in &regions {
        match clusters.last_mut() {
            Some(c) if c.file == r.file && r.start <= c.end => {
                let overlap = c.end.min(r.end) + 1 - r.start.max(c.start);
                let shorter = (r.end - r.start + 1).min(c.end - c.start + 1);
                if overlap * 2 >= shorter {
                    c.end = c.end.max(r.end);
                    continue;
                }
                clusters.push(*r);
            }
            _ => clusters.push(*r),
        }
    }
    let cluster_of = |r: &Region| -> usize {
        // The last cluster starting at or before r that holds its start.
        let i = clusters.partition_point(|c| (c.file, c.start) <= (r.file, r.start));
        (0..i)
            .rev()
            .find(|&j| clusters[j].file == r.file && clusters[j].end >= r.start)
            .unwrap_or(i.saturating_sub(1))
    };
    let mut parent: Vec<usize> = (0..clusters.len()).collect();
    for (a, b) in &pairs {
        let (x, y) = (cluster_of(a), cluster_of(b));
        let (rx, ry) = (find(&mut parent, x), find(&mut parent, y));
        if rx != ry {
            parent[rx.max(ry)] = rx.min(ry);
        }
    }
    let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
    for c in 0..clusters.len() {
        let root = find(&mut parent, c);
        members.entry(root).or_default().push(c);
    }
    let mut groups: Vec<Vec<Region>> = members
        .into_values()
        .filter(|m| m.len() >= 2)
        .map(|m| m.into_iter().map(|c| clusters[c]).collect())
        .collect();
    let lines = |g: &Vec<Region>| g.iter().map(|r| r.end - r.start + 1).max().unwrap_or(0);
    groups.sort_by(|a, b| {
        lines(b)
            .cmp(&lines(a))
            .then_with(|| (a[0].file, a[0].start).cmp(&(b[0].file, b[0].start)))
    });
    let mut out = Vec::new();
    for (g, regions) in groups.into_iter().enumerate() {
        for r in regions {
            out.push(CloneRec {
                group: g as u32,
                file: r.file,
                start_line: r.start,
                end_line: r.end,
            });
        }
    }
    out
}
