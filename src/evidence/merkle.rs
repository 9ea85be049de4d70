//! The Merkle tree of RFC 9162 section 2.1 (the same tree as RFC 6962 and Go's sumdb): leaf
//! hash `SHA-256(0x00 ‖ entry)`, interior node `SHA-256(0x01 ‖ left ‖ right)`, the left
//! subtree of `n` leaves always the largest power of two smaller than `n`.
//!
//! Proofs are built from *stored hashes*: the hash of every complete subtree, addressed as
//! (level, index) = the subtree of `2^level` leaves starting at leaf `index · 2^level`. Those
//! never change once the subtree is full, so a store keeps them (or the tiles that hold them)
//! and answers [`HashReader::node`]; the hashes of the incomplete right edge of a tree of a
//! given size are recomputed from them, a logarithmic number of reads.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// Why a proof was refused, or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {old} is larger than tree size {new}")]
    SizesReversed { old: u64, new: u64 },
    #[error("the proof has {got} hashes; a proof for these sizes has {want}")]
    WrongLength { got: usize, want: usize },
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
    #[error("the proof does not lead to the old tree's root hash")]
    OldRootMismatch,
    #[error("stored hash (level {level}, index {index}) is not available: {reason}")]
    Missing { level: u8, index: u64, reason: String },
}

/// `SHA-256(0x00 ‖ entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: the hash of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly smaller than `n` (`n` ≥ 2): the size of the left subtree.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Stored hashes, read by (level, index): the subtree of `2^level` leaves starting at leaf
/// `index · 2^level`. Implementations answer only for complete subtrees they hold.
pub trait HashReader {
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError>;
}

/// The Merkle tree hash of leaves `lo..hi` (`lo < hi`), where `lo` is a multiple of the
/// largest power of two not above `hi - lo` — true of every subtree the RFC's recursions visit.
fn range_hash<R: HashReader + ?Sized>(r: &R, lo: u64, hi: u64) -> Result<Hash, ProofError> {
    let n = hi - lo;
    if n.is_power_of_two() {
        let level = n.trailing_zeros() as u8;
        return r.node(level, lo >> level);
    }
    let k = split_point(n);
    Ok(node_hash(&range_hash(r, lo, lo + k)?, &range_hash(r, lo + k, hi)?))
}

/// The root of the tree of the first `size` leaves.
pub fn root_at<R: HashReader + ?Sized>(r: &R, size: u64) -> Result<Hash, ProofError> {
    if size == 0 {
        return Ok(empty_root());
    }
    range_hash(r, 0, size)
}

/// RFC 9162 2.1.3.1: the audit path of leaf `index` in the tree of `size` leaves, the hash
/// nearest the leaf first.
pub fn inclusion_proof<R: HashReader + ?Sized>(r: &R, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut path = Vec::with_capacity(64);
    // Walk down from the root, collecting the sibling subtree at each split; the RFC lists
    // them from the leaf up, so reverse at the end.
    let (mut lo, mut hi) = (0u64, size);
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index < lo + k {
            path.push(range_hash(r, lo + k, hi)?);
            hi = lo + k;
        } else {
            path.push(range_hash(r, lo, lo + k)?);
            lo += k;
        }
    }
    path.reverse();
    Ok(path)
}

/// RFC 9162 2.1.4.1: the consistency proof from the tree of `old` leaves to the tree of `new`.
/// Empty when the sizes are equal or `old` is zero (everything extends the empty tree).
pub fn consistency_proof<R: HashReader + ?Sized>(r: &R, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
    if old > new {
        return Err(ProofError::SizesReversed { old, new });
    }
    let mut path = Vec::with_capacity(64);
    if old == 0 || old == new {
        return Ok(path);
    }
    // SUBPROOF(m, D[lo:hi], b), unrolled: each step either descends left (recording the right
    // sibling) or right (recording the left sibling, and b becomes false).
    let (mut lo, mut hi, mut m, mut whole) = (0u64, new, old, true);
    while m != hi - lo {
        let k = split_point(hi - lo);
        if m <= k {
            path.push(range_hash(r, lo + k, hi)?);
            hi = lo + k;
        } else {
            path.push(range_hash(r, lo, lo + k)?);
            lo += k;
            m -= k;
            whole = false;
        }
    }
    if !whole {
        path.push(range_hash(r, lo, hi)?);
    }
    path.reverse();
    Ok(path)
}

/// RFC 9162 2.1.3.2: does `proof` show leaf `leaf` at `index` in the tree of `size` leaves
/// whose root is `root`?
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let want = inclusion_len(index, size);
    if proof.len() != want {
        return Err(ProofError::WrongLength { got: proof.len(), want });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::RootMismatch);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 || r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The number of hashes in the audit path of leaf `index` in a tree of `size` leaves.
pub fn inclusion_len(index: u64, size: u64) -> usize {
    let (mut lo, mut hi, mut n) = (0u64, size, 0usize);
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index < lo + k {
            hi = lo + k;
        } else {
            lo += k;
        }
        n += 1;
    }
    n
}

/// RFC 9162 2.1.4.2: does `proof` show that the tree of `old` leaves with root `old_root` is a
/// prefix of the tree of `new` leaves with root `new_root`?
pub fn verify_consistency(old: u64, new: u64, proof: &[Hash], old_root: &Hash, new_root: &Hash) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::SizesReversed { old, new });
    }
    if old == new {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength { got: proof.len(), want: 0 });
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if old == 0 {
        // The empty tree is a prefix of every tree; there is nothing to prove.
        if !proof.is_empty() {
            return Err(ProofError::WrongLength { got: proof.len(), want: 0 });
        }
        return if *old_root == empty_root() {
            Ok(())
        } else {
            Err(ProofError::OldRootMismatch)
        };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength { got: 0, want: 1 });
    };
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return Err(ProofError::RootMismatch);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::RootMismatch);
    }
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch);
    }
    if sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The complete subtrees covering the leaves appended so far (one per set bit of the size,
/// largest first): appending is amortised one node hash per leaf, the root costs a
/// logarithmic fold, and memory stays logarithmic however long the log grows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    peaks: Vec<Hash>,
}

impl CompactRange {
    pub fn new() -> Self {
        Self::default()
    }

    /// Resumes a log of `size` leaves from its peaks (as [`CompactRange::peaks`] gave them,
    /// or as read from stored hashes with [`CompactRange::from_reader`]).
    pub fn from_peaks(size: u64, peaks: Vec<Hash>) -> Option<Self> {
        (peaks.len() == size.count_ones() as usize).then_some(Self { size, peaks })
    }

    /// The peaks of the tree of `size` leaves, read from stored hashes.
    pub fn from_reader<R: HashReader + ?Sized>(r: &R, size: u64) -> Result<Self, ProofError> {
        let mut peaks = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if size & (1u64 << level) != 0 {
                peaks.push(r.node(level, start >> level)?);
                start += 1u64 << level;
            }
        }
        Ok(Self { size, peaks })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// Appends one leaf hash; `stored` sees every stored hash this completes, (level, index,
    /// hash), the leaf itself first — what a store keeps to answer [`HashReader`] later.
    pub fn append_with(&mut self, leaf: Hash, mut stored: impl FnMut(u8, u64, &Hash)) {
        let mut index = self.size;
        let mut level = 0u8;
        let mut h = leaf;
        stored(0, index, &h);
        // Every trailing one bit of the old size is a full left sibling waiting for this one.
        while index & 1 == 1 {
            let Some(left) = self.peaks.pop() else {
                unreachable!("a set bit of the size always has its peak")
            };
            h = node_hash(&left, &h);
            index >>= 1;
            level += 1;
            stored(level, index, &h);
        }
        self.peaks.push(h);
        self.size += 1;
    }

    pub fn append(&mut self, leaf: Hash) {
        self.append_with(leaf, |_, _, _| {});
    }

    /// The root hash of the tree of all leaves appended so far.
    pub fn root(&self) -> Hash {
        let mut it = self.peaks.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// Every stored hash of a log, in memory: level 0 holds the leaf hashes, level `l` the hashes
/// of complete subtrees of `2^l` leaves. For tests, tools and building tiles; a database
/// implements [`HashReader`] itself.
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
    range: CompactRange,
}

impl MemoryTree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn append(&mut self, leaf: Hash) {
        let levels = &mut self.levels;
        self.range.append_with(leaf, |level, index, h| {
            let level = level as usize;
            if levels.len() <= level {
                levels.push(Vec::new());
            }
            debug_assert_eq!(levels[level].len() as u64, index);
            levels[level].push(*h);
        });
    }

    pub fn size(&self) -> u64 {
        self.range.size()
    }

    pub fn root(&self) -> Hash {
        self.range.root()
    }
}

impl HashReader for MemoryTree {
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        self.levels
            .get(level as usize)
            .and_then(|l| usize::try_from(index).ok().and_then(|i| l.get(i)))
            .copied()
            .ok_or_else(|| ProofError::Missing {
                level,
                index,
                reason: "beyond the complete subtrees of this tree".into(),
            })
    }
}

impl FromIterator<Hash> for MemoryTree {
    fn from_iter<I: IntoIterator<Item = Hash>>(iter: I) -> Self {
        let mut t = Self::new();
        for h in iter {
            t.append(h);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MTH straight from the RFC's recursive definition: the reference the fast paths are
    /// checked against.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    /// PATH(m, D[n]) from the RFC, recursively.
    fn path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return vec![];
        }
        let k = split_point(n as u64) as usize;
        if m < k {
            let mut p = path(m, &leaves[..k]);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = path(m - k, &leaves[k..]);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    /// SUBPROOF(m, D[n], b) from the RFC, recursively.
    fn subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if b { vec![] } else { vec![mth(leaves)] };
        }
        let k = split_point(n as u64) as usize;
        if m <= k {
            let mut p = subproof(m, &leaves[..k], b);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = subproof(m - k, &leaves[k..], false);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(format!("entry {i}").as_bytes())).collect()
    }

    fn hex(h: &Hash) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hashing_is_domain_separated() {
        // Known answers: SHA-256 of the single byte 0x00, and of the empty string.
        assert_eq!(
            hex(&leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        assert_eq!(
            hex(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let a = leaf_hash(b"a");
        assert_ne!(node_hash(&a, &a), leaf_hash(&[a, a].concat()));
    }

    #[test]
    fn rfc6962_test_vector_roots() {
        // The eight leaves and roots used by the Certificate Transparency test suites.
        let inputs: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let mut range = CompactRange::new();
        for (input, root) in inputs.iter().zip(roots) {
            range.append(leaf_hash(input));
            assert_eq!(hex(&range.root()), root, "root of {} leaves", range.size());
        }
    }

    #[test]
    fn compact_range_and_stored_hashes_agree_with_the_definition() {
        let all = leaves(300);
        let tree: MemoryTree = all.iter().copied().collect();
        let mut range = CompactRange::new();
        for n in 0..=all.len() {
            let want = mth(&all[..n]);
            assert_eq!(range.root(), want, "compact range, {n} leaves");
            assert_eq!(root_at(&tree, n as u64).unwrap(), want, "stored hashes, {n} leaves");
            let resumed = CompactRange::from_reader(&tree, n as u64).unwrap();
            assert_eq!(resumed, range, "peaks read back, {n} leaves");
            if n < all.len() {
                range.append(all[n]);
            }
        }
    }

    #[test]
    fn inclusion_proofs_match_the_rfc_and_verify() {
        let all = leaves(70);
        let tree: MemoryTree = all.iter().copied().collect();
        for size in 1..=all.len() {
            let root = mth(&all[..size]);
            for index in 0..size {
                let proof = inclusion_proof(&tree, index as u64, size as u64).unwrap();
                assert_eq!(proof, path(index, &all[..size]), "PATH({index}, D[{size}])");
                assert_eq!(proof.len(), inclusion_len(index as u64, size as u64));
                verify_inclusion(&all[index], index as u64, size as u64, &proof, &root).unwrap();
                // The same proof must not pass for another leaf, position or root.
                let other = (index + 1) % size;
                if other != index {
                    assert!(verify_inclusion(&all[other], index as u64, size as u64, &proof, &root).is_err());
                    assert!(verify_inclusion(&all[index], other as u64, size as u64, &proof, &root).is_err());
                }
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i][7] ^= 1;
                    assert_eq!(
                        verify_inclusion(&all[index], index as u64, size as u64, &bad, &root),
                        Err(ProofError::RootMismatch)
                    );
                }
            }
        }
    }

    #[test]
    fn inclusion_refuses_bad_shapes() {
        let all = leaves(10);
        let tree: MemoryTree = all.iter().copied().collect();
        let root = tree.root();
        let proof = inclusion_proof(&tree, 3, 10).unwrap();
        assert_eq!(
            inclusion_proof(&tree, 10, 10),
            Err(ProofError::IndexOutOfRange { index: 10, size: 10 })
        );
        assert!(matches!(
            verify_inclusion(&all[3], 3, 10, &proof[1..], &root),
            Err(ProofError::WrongLength { .. })
        ));
        let mut long = proof.clone();
        long.push(root);
        assert!(matches!(
            verify_inclusion(&all[3], 3, 10, &long, &root),
            Err(ProofError::WrongLength { .. })
        ));
        // A size whose path has another shape does not accept the proof.
        assert!(verify_inclusion(&all[3], 3, 4, &proof, &root).is_err());
        assert!(matches!(inclusion_proof(&tree, 3, 11), Err(ProofError::Missing { .. })));
    }

    #[test]
    fn consistency_proofs_match_the_rfc_and_verify() {
        let all = leaves(70);
        let tree: MemoryTree = all.iter().copied().collect();
        for new in 1..=all.len() {
            let new_root = mth(&all[..new]);
            for old in 1..=new {
                let old_root = mth(&all[..old]);
                let proof = consistency_proof(&tree, old as u64, new as u64).unwrap();
                assert_eq!(proof, subproof(old, &all[..new], true), "PROOF({old}, D[{new}])");
                verify_consistency(old as u64, new as u64, &proof, &old_root, &new_root).unwrap();
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i][0] ^= 0x80;
                    assert!(verify_consistency(old as u64, new as u64, &bad, &old_root, &new_root).is_err());
                }
                if old < new {
                    let other = mth(&all[..old - 1]);
                    assert!(verify_consistency(old as u64, new as u64, &proof, &other, &new_root).is_err());
                    assert!(verify_consistency(old as u64, new as u64, &proof, &old_root, &old_root).is_err());
                    if !proof.is_empty() {
                        assert!(verify_consistency(old as u64, new as u64, &proof[1..], &old_root, &new_root).is_err());
                    }
                }
            }
        }
    }

    #[test]
    fn consistency_edge_cases() {
        let all = leaves(8);
        let tree: MemoryTree = all.iter().copied().collect();
        let r8 = tree.root();
        assert_eq!(consistency_proof(&tree, 0, 8).unwrap(), Vec::<Hash>::new());
        verify_consistency(0, 8, &[], &empty_root(), &r8).unwrap();
        assert!(verify_consistency(0, 8, &[], &r8, &r8).is_err());
        verify_consistency(8, 8, &[], &r8, &r8).unwrap();
        assert!(verify_consistency(8, 8, &[r8], &r8, &r8).is_err());
        assert_eq!(consistency_proof(&tree, 9, 8), Err(ProofError::SizesReversed { old: 9, new: 8 }));
        assert!(verify_consistency(4, 8, &[], &r8, &r8).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn random_sizes_prove_and_verify(size in 1u64..3000, a in 0u64..3000, b in 0u64..3000) {
            let tree: MemoryTree = (0..size).map(|i| leaf_hash(&i.to_be_bytes())).collect();
            let index = a % size;
            let old = 1 + b % size;
            let root = tree.root();
            let proof = inclusion_proof(&tree, index, size).unwrap();
            verify_inclusion(&leaf_hash(&index.to_be_bytes()), index, size, &proof, &root).unwrap();
            let old_root = root_at(&tree, old).unwrap();
            let proof = consistency_proof(&tree, old, size).unwrap();
            verify_consistency(old, size, &proof, &old_root, &root).unwrap();
        }
    }
}
