//! The tlog-tiles read layout: the log's stored hashes served as immutable "tiles" of up to
//! 256 hashes, and its entries as "entry bundles" of up to 256 entries, so that a client can
//! fetch a few static resources and compute any proof itself.
//!
//! Tile (L, N, W) holds the `W` hashes at stored level `8·L`, indexes `256·N .. 256·N + W`:
//! at level 0 the leaf hashes, at level 1 the roots of full level-0 tiles, and so on. A full
//! tile has 256; the rightmost tile of a level, for a given tree size, may be partial
//! (`.p/W`). Its path is `tile/<L>/<N>[.p/<W>]`, N written in 3-digit groups, all but the last
//! prefixed with `x` (1234067 → `x001/x234/067`).

use super::merkle::{node_hash, Hash, HashReader, ProofError};

/// Hashes (or entries) per full tile.
pub const TILE_WIDTH: u64 = 256;
/// Tree levels per tile level.
pub const TILE_HEIGHT: u8 = 8;
/// Bytes of one hash in a tile.
pub const HASH_SIZE: usize = 32;

/// One hash tile: level, index within the level, and width (1..=256; 256 is a full tile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    pub level: u8,
    pub index: u64,
    pub width: u16,
}

/// One entry bundle: the entries of level-0 tile `index`, `width` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bundle {
    pub index: u64,
    pub width: u16,
}

/// A parsed resource path under the log's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Tile(Tile),
    Entries(Bundle),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    #[error("malformed tile path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("malformed entry bundle: {0}")]
    BadBundle(&'static str),
    #[error("an entry of {0} bytes does not fit a bundle (at most 65535)")]
    EntryTooLong(usize),
    #[error(transparent)]
    Proof(#[from] ProofError),
}

/// `x001/x234/067` for 1234067; `000` for 0.
pub fn encode_index(n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    let mut rest = n / 1000;
    while rest > 0 {
        groups.push(format!("x{:03}", rest % 1000));
        rest /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

fn width_suffix(width: u16) -> String {
    if u64::from(width) == TILE_WIDTH {
        String::new()
    } else {
        format!(".p/{width}")
    }
}

impl Tile {
    pub fn path(&self) -> String {
        format!("tile/{}/{}{}", self.level, encode_index(self.index), width_suffix(self.width))
    }

    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// The stored hash level this tile's hashes are at.
    pub fn hash_level(&self) -> u8 {
        // Saturating: a parsed level may be up to 63, far beyond any tree; callers refuse 64 and up.
        self.level.saturating_mul(TILE_HEIGHT)
    }
}

impl Bundle {
    pub fn path(&self) -> String {
        format!("tile/entries/{}{}", encode_index(self.index), width_suffix(self.width))
    }

    /// The log index of the bundle's first entry.
    pub fn first(&self) -> u64 {
        self.index * TILE_WIDTH
    }
}

/// Parses `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`, refusing every spelling the
/// spec does not allow (leading zeros, missing `x`, empty or zero widths, a full width
/// written as partial), so each resource has exactly one path.
pub fn parse_path(path: &str) -> Result<Resource, TileError> {
    let bad = |reason| TileError::BadPath {
        path: path.to_string(),
        reason,
    };
    let rest = path.strip_prefix("tile/").ok_or_else(|| bad("does not start with tile/"))?;
    let (level, rest) = rest.split_once('/').ok_or_else(|| bad("no level"))?;
    let (index_part, width) = match rest.split_once(".p/") {
        Some((n, w)) => {
            if w.is_empty() || w.starts_with('0') || !w.bytes().all(|b| b.is_ascii_digit()) || w.len() > 3 {
                return Err(bad("the width is not a decimal without leading zeros"));
            }
            let w: u16 = w.parse().map_err(|_| bad("the width is not a number"))?;
            if !(1..TILE_WIDTH as u16).contains(&w) {
                return Err(bad("a partial width is 1 to 255"));
            }
            (n, w)
        }
        None => (rest, TILE_WIDTH as u16),
    };
    let groups: Vec<&str> = index_part.split('/').collect();
    let mut index: u64 = 0;
    for (i, g) in groups.iter().enumerate() {
        let last = i + 1 == groups.len();
        let digits = if last {
            *g
        } else {
            g.strip_prefix('x')
                .ok_or_else(|| bad("every index element but the last starts with x"))?
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("index elements are three digits"));
        }
        if i == 0 && groups.len() > 1 && digits == "000" {
            return Err(bad("the index has a leading zero group"));
        }
        let d: u64 = digits.parse().map_err(|_| bad("index elements are three digits"))?;
        index = index
            .checked_mul(1000)
            .and_then(|v| v.checked_add(d))
            .ok_or_else(|| bad("the index is too large"))?;
    }
    if level == "entries" {
        return Ok(Resource::Entries(Bundle { index, width }));
    }
    if level.is_empty() || (level.len() > 1 && level.starts_with('0')) || !level.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("the level is not a decimal without leading zeros"));
    }
    let level: u8 = level.parse().map_err(|_| bad("the level is not a number"))?;
    if level > 63 {
        return Err(bad("the level is 0 to 63"));
    }
    Ok(Resource::Tile(Tile { level, index, width }))
}

/// Every tile a client may need for a tree of `size` leaves: all full tiles and, per level,
/// the partial tile the size leaves (if any), lowest level first.
pub fn tiles_for_size(size: u64) -> Vec<Tile> {
    let mut out = Vec::new();
    let mut level = 0u8;
    loop {
        let at_level = level_count(size, level);
        if at_level == 0 {
            break;
        }
        for index in 0..at_level / TILE_WIDTH {
            out.push(Tile {
                level,
                index,
                width: TILE_WIDTH as u16,
            });
        }
        let partial = (at_level % TILE_WIDTH) as u16;
        if partial > 0 {
            out.push(Tile {
                level,
                index: at_level / TILE_WIDTH,
                width: partial,
            });
        }
        level += 1;
    }
    out
}

/// The tiles that change when the tree grows from `old` to `new` leaves: the full tiles
/// completed in between and the partial tiles of `new` — what to write for each checkpoint.
pub fn new_tiles(old: u64, new: u64) -> Vec<Tile> {
    tiles_for_size(new)
        .into_iter()
        .filter(|t| {
            let end = (t.index * TILE_WIDTH + u64::from(t.width)) << (u32::from(t.level) * u32::from(TILE_HEIGHT));
            // A tile is new when it covers a leaf beyond `old`, or is partial here but was
            // different (or absent) at `old`.
            end > old
        })
        .collect()
}

/// How many stored hashes level `8·level` has in a tree of `size` leaves.
fn level_count(size: u64, level: u8) -> u64 {
    let shift = u32::from(level) * u32::from(TILE_HEIGHT);
    if shift >= 64 {
        0
    } else {
        size >> shift
    }
}

/// The entry bundles of a tree of `size` leaves: the full ones and the partial last one.
pub fn bundles_for_size(size: u64) -> Vec<Bundle> {
    tiles_for_size(size)
        .into_iter()
        .filter(|t| t.level == 0)
        .map(|t| Bundle {
            index: t.index,
            width: t.width,
        })
        .collect()
}

/// A tile's content: its hashes, concatenated, read from stored hashes.
pub fn tile_data<R: HashReader + ?Sized>(r: &R, tile: Tile) -> Result<Vec<u8>, TileError> {
    let level = tile.hash_level();
    if level >= 64 {
        return Err(TileError::Proof(ProofError::Missing {
            level,
            index: tile.index,
            reason: "no tree this large".into(),
        }));
    }
    let mut out = Vec::with_capacity(usize::from(tile.width) * HASH_SIZE);
    for i in 0..u64::from(tile.width) {
        out.extend_from_slice(&r.node(level, tile.index * TILE_WIDTH + i)?);
    }
    Ok(out)
}

/// Splits a tile's content into its hashes; the length must be exactly `width` hashes.
pub fn tile_hashes(tile: Tile, data: &[u8]) -> Result<Vec<Hash>, TileError> {
    if data.len() != usize::from(tile.width) * HASH_SIZE {
        return Err(TileError::BadPath {
            path: tile.path(),
            reason: "the tile's length is not its width in hashes",
        });
    }
    Ok(data
        .chunks_exact(HASH_SIZE)
        .map(|c| {
            let mut h = [0u8; HASH_SIZE];
            h.copy_from_slice(c);
            h
        })
        .collect())
}

/// Stored hashes read from the tiles of a tree of `size` leaves: the hash at (level, index)
/// is the root of `2^(level mod 8)` consecutive hashes of one tile at level `level / 8` (the
/// full tile, or the tree's partial one). `read` fetches a tile's content — from files, a
/// database or HTTP; nothing read is trusted, since every proof built from it is checked
/// against a signed root.
pub struct TileHashReader<F> {
    size: u64,
    read: F,
}

impl<F: Fn(Tile) -> Result<Vec<u8>, String>> TileHashReader<F> {
    pub fn new(size: u64, read: F) -> Self {
        Self { size, read }
    }
}

impl<F: Fn(Tile) -> Result<Vec<u8>, String>> HashReader for TileHashReader<F> {
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        let missing = |reason: String| ProofError::Missing { level, index, reason };
        let tile_level = level / TILE_HEIGHT;
        let span = 1u64 << (level % TILE_HEIGHT);
        let first = index.checked_mul(span).ok_or_else(|| missing("beyond any tree".into()))?;
        if first + span > level_count(self.size, tile_level) {
            return Err(missing(format!("not a complete subtree of the tree of {} leaves", self.size)));
        }
        let tile_index = first / TILE_WIDTH;
        let offset = (first % TILE_WIDTH) as usize;
        let width = (level_count(self.size, tile_level) - tile_index * TILE_WIDTH).min(TILE_WIDTH) as u16;
        let tile = Tile {
            level: tile_level,
            index: tile_index,
            width,
        };
        let data = (self.read)(tile).map_err(|e| missing(format!("{}: {e}", tile.path())))?;
        let hashes = tile_hashes(tile, &data).map_err(|e| missing(e.to_string()))?;
        let mut row: Vec<Hash> = hashes[offset..offset + span as usize].to_vec();
        while row.len() > 1 {
            row = row.chunks_exact(2).map(|p| node_hash(&p[0], &p[1])).collect();
        }
        Ok(row[0])
    }
}

/// An entry bundle: each entry as a big-endian u16 length and its bytes.
pub fn encode_bundle<E: AsRef<[u8]>>(entries: &[E]) -> Result<Vec<u8>, TileError> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.as_ref().len() + 2).sum());
    for e in entries {
        let e = e.as_ref();
        let len = u16::try_from(e.len()).map_err(|_| TileError::EntryTooLong(e.len()))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    Ok(out)
}

/// The entries of a bundle; refuses a truncated length or entry, and more than 256 entries.
pub fn decode_bundle(data: &[u8]) -> Result<Vec<&[u8]>, TileError> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let [a, b, tail @ ..] = rest else {
            return Err(TileError::BadBundle("a truncated length prefix"));
        };
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        if tail.len() < len {
            return Err(TileError::BadBundle("an entry shorter than its length prefix"));
        }
        out.push(&tail[..len]);
        rest = &tail[len..];
        if out.len() as u64 > TILE_WIDTH {
            return Err(TileError::BadBundle("more than 256 entries"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::merkle::{consistency_proof, inclusion_proof, leaf_hash, root_at, MemoryTree};
    use super::*;

    #[test]
    fn tiles_of_levels_beyond_any_tree_are_refused_not_overflowed() {
        let tree: MemoryTree = (0..10u8).map(|i| [i; 32]).collect();
        for level in [8, 31, 32, 63] {
            let t = Tile { level, index: 0, width: 1 };
            assert!(t.hash_level() >= 64);
            assert!(tile_data(&tree, t).is_err(), "level {level}");
        }
    }

    #[test]
    fn index_encoding() {
        assert_eq!(encode_index(0), "000");
        assert_eq!(encode_index(7), "007");
        assert_eq!(encode_index(999), "999");
        assert_eq!(encode_index(1000), "x001/000");
        assert_eq!(encode_index(1234067), "x001/x234/067");
        assert_eq!(encode_index(1_000_000), "x001/x000/000");
    }

    #[test]
    fn paths_round_trip() {
        let cases = [
            (
                Tile {
                    level: 0,
                    index: 0,
                    width: 256,
                },
                "tile/0/000",
            ),
            (
                Tile {
                    level: 1,
                    index: 1234067,
                    width: 256,
                },
                "tile/1/x001/x234/067",
            ),
            (
                Tile {
                    level: 2,
                    index: 5,
                    width: 17,
                },
                "tile/2/005.p/17",
            ),
        ];
        for (tile, path) in cases {
            assert_eq!(tile.path(), path);
            assert_eq!(parse_path(path), Ok(Resource::Tile(tile)));
        }
        let b = Bundle { index: 1000, width: 3 };
        assert_eq!(b.path(), "tile/entries/x001/000.p/3");
        assert_eq!(parse_path("tile/entries/x001/000.p/3"), Ok(Resource::Entries(b)));
        assert_eq!(
            parse_path("tile/entries/001"),
            Ok(Resource::Entries(Bundle { index: 1, width: 256 }))
        );
    }

    #[test]
    fn malformed_paths_are_refused() {
        for p in [
            "tile/0/1",
            "tile/0/0001",
            "tile/0/001/002",
            "tile/0/x000/001",
            "tile/00/001",
            "tile/64/001",
            "tile/0/001.p/0",
            "tile/0/001.p/256",
            "tile/0/001.p/07",
            "tile/0/001.p/",
            "tile/0/001.p/1/2",
            "tile/a/001",
            "tile//001",
            "tiles/0/001",
            "tile/0/",
            "tile/0/x001",
            "tile/0/x01/001",
            "tile/entries/1",
        ] {
            assert!(parse_path(p).is_err(), "{p} should be refused");
        }
    }

    #[test]
    fn tiles_for_the_spec_example() {
        // The spec's example: 70,000 leaves are 273 full level-0 tiles and one of width 112,
        // one full level-1 tile and one of width 17, and one level-2 tile of width 1.
        let tiles = tiles_for_size(70_000);
        let count = |level: u8, full: bool| tiles.iter().filter(|t| t.level == level && t.is_full() == full).count();
        assert_eq!(count(0, true), 273);
        assert!(tiles.contains(&Tile {
            level: 0,
            index: 273,
            width: 112
        }));
        assert_eq!(count(1, true), 1);
        assert!(tiles.contains(&Tile {
            level: 1,
            index: 1,
            width: 17
        }));
        assert_eq!(
            tiles.iter().filter(|t| t.level == 2).collect::<Vec<_>>(),
            vec![&Tile {
                level: 2,
                index: 0,
                width: 1
            }]
        );
        assert_eq!(tiles.len(), 273 + 1 + 1 + 1 + 1);
        // 256 leaves: one full level-0 tile and a level-1 tile of width 1.
        assert_eq!(
            tiles_for_size(256),
            vec![
                Tile {
                    level: 0,
                    index: 0,
                    width: 256
                },
                Tile {
                    level: 1,
                    index: 0,
                    width: 1
                }
            ]
        );
        assert!(tiles_for_size(0).is_empty());
    }

    #[test]
    fn new_tiles_are_what_changed() {
        let new = new_tiles(1000, 1537);
        // Level-0 tiles 3 (was partial at 1000) to 5 complete, tile 6 starts; level 1 grows.
        assert_eq!(
            new,
            vec![
                Tile {
                    level: 0,
                    index: 3,
                    width: 256
                },
                Tile {
                    level: 0,
                    index: 4,
                    width: 256
                },
                Tile {
                    level: 0,
                    index: 5,
                    width: 256
                },
                Tile {
                    level: 0,
                    index: 6,
                    width: 1
                },
                Tile {
                    level: 1,
                    index: 0,
                    width: 6
                },
            ]
        );
        assert_eq!(new_tiles(0, 300), tiles_for_size(300));
    }

    #[test]
    fn tile_content_is_the_stored_hashes() {
        let tree: MemoryTree = (0..70_000u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let l0 = tile_data(
            &tree,
            Tile {
                level: 0,
                index: 2,
                width: 256,
            },
        )
        .unwrap();
        let hashes = tile_hashes(
            Tile {
                level: 0,
                index: 2,
                width: 256,
            },
            &l0,
        )
        .unwrap();
        assert_eq!(hashes[5], leaf_hash(&(512u32 + 5).to_be_bytes()));
        // A level-1 hash is the root of the full level-0 tile below it.
        let l1 = tile_data(
            &tree,
            Tile {
                level: 1,
                index: 0,
                width: 256,
            },
        )
        .unwrap();
        let l1 = tile_hashes(
            Tile {
                level: 1,
                index: 0,
                width: 256,
            },
            &l1,
        )
        .unwrap();
        let mut level: Vec<Hash> = hashes.clone();
        while level.len() > 1 {
            level = level.chunks(2).map(|p| node_hash(&p[0], &p[1])).collect();
        }
        assert_eq!(l1[2], level[0]);
        // The level-2 tile of width 1 is the root of the first 65,536 leaves.
        let l2 = tile_data(
            &tree,
            Tile {
                level: 2,
                index: 0,
                width: 1,
            },
        )
        .unwrap();
        assert_eq!(l2, root_at(&tree, 65_536).unwrap().to_vec());
        assert!(tile_data(
            &tree,
            Tile {
                level: 2,
                index: 0,
                width: 2
            }
        )
        .is_err());
        assert!(tile_hashes(
            Tile {
                level: 0,
                index: 0,
                width: 2
            },
            &l0[..63]
        )
        .is_err());
    }

    #[test]
    fn bundles_round_trip_and_refuse_truncation() {
        let entries: Vec<Vec<u8>> = vec![b"".to_vec(), b"a".to_vec(), vec![7u8; 300]];
        let data = encode_bundle(&entries).unwrap();
        assert_eq!(&data[..5], &[0, 0, 0, 1, b'a']);
        assert_eq!(
            decode_bundle(&data).unwrap(),
            entries.iter().map(|e| e.as_slice()).collect::<Vec<_>>()
        );
        assert!(decode_bundle(&data[..data.len() - 1]).is_err());
        assert!(decode_bundle(&data[..4]).is_err());
        assert!(decode_bundle(&[0]).is_err());
        assert!(matches!(encode_bundle(&[vec![0u8; 65536]]), Err(TileError::EntryTooLong(65536))));
        let too_many = encode_bundle(&vec![b"x".to_vec(); 257]).unwrap();
        assert!(decode_bundle(&too_many).is_err());
        assert_eq!(
            bundles_for_size(513),
            vec![
                Bundle { index: 0, width: 256 },
                Bundle { index: 1, width: 256 },
                Bundle { index: 2, width: 1 }
            ]
        );
    }

    #[test]
    fn proofs_from_tiles_equal_proofs_from_stored_hashes() {
        let tree: MemoryTree = (0..70_000u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for size in [1u64, 2, 255, 256, 257, 1000, 1537, 65_536, 70_000] {
            let tiles: HashMap<Tile, Vec<u8>> = tiles_for_size(size)
                .into_iter()
                .map(|t| (t, tile_data(&tree, t).unwrap()))
                .collect();
            let reader = TileHashReader::new(size, |t: Tile| tiles.get(&t).cloned().ok_or_else(|| "no such tile".to_string()));
            assert_eq!(root_at(&reader, size).unwrap(), root_at(&tree, size).unwrap(), "root of {size}");
            for k in 0..40u64 {
                let index = k.wrapping_mul(0x9E37_79B9) % size;
                assert_eq!(
                    inclusion_proof(&reader, index, size).unwrap(),
                    inclusion_proof(&tree, index, size).unwrap(),
                    "inclusion of {index} in {size}"
                );
                let old = 1 + k.wrapping_mul(7919) % size;
                assert_eq!(
                    consistency_proof(&reader, old, size).unwrap(),
                    consistency_proof(&tree, old, size).unwrap(),
                    "consistency {old} to {size}"
                );
            }
        }
    }

    #[test]
    fn tile_reader_refuses_what_the_tree_lacks() {
        let tree: MemoryTree = (0..1000u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let read = |t: Tile| tile_data(&tree, t).map_err(|e| e.to_string());
        let reader = TileHashReader::new(1000, read);
        // Level 8 index 3 would be leaves 768..1024: incomplete at 1000.
        assert!(matches!(reader.node(8, 3), Err(ProofError::Missing { .. })));
        assert!(matches!(reader.node(3, 125), Err(ProofError::Missing { .. })));
        assert_eq!(reader.node(3, 124).unwrap(), tree.node(3, 124).unwrap());
        // A tile of the wrong length is refused, not read past.
        let short = TileHashReader::new(1000, |_t: Tile| Ok(vec![0u8; 31]));
        assert!(matches!(short.node(0, 5), Err(ProofError::Missing { .. })));
    }
}
