//! The Merkle tree of the audit log: RFC 9162 §2.1 (the tree of RFC 6962 §2.1, Certificate
//! Transparency), so that a record's inclusion in a signed checkpoint, and one checkpoint's
//! extension of an earlier one, can be proved to anyone with a standard verifier.
//!
//! - Leaf hash: `SHA-256(0x00 || entry)`; interior node: `SHA-256(0x01 || left || right)`
//!   (RFC 9162 §2.1.1: the prefixes keep a leaf from passing for a node).
//! - The tree of `n` leaves splits at `k`, the largest power of two smaller than `n`; the empty
//!   tree's hash is `SHA-256("")`.
//! - Inclusion proofs are RFC 9162 §2.1.3.1 `PATH`, checked by §2.1.3.2; consistency proofs are
//!   §2.1.4.1 `PROOF`/`SUBPROOF`, checked by §2.1.4.2.
//!
//! Proofs are built from the hashes of subtrees (`range_root(start, end)`), so a store that keeps
//! the complete subtrees answers them without rehashing the whole log; [`Leaves`] builds them
//! from leaf hashes in memory.

use sha2::{Digest as _, Sha256};

/// A SHA-256 output.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || entry)`: the hash of one log entry as a leaf (RFC 9162 §2.1.1).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(entry);
    hasher.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: an interior node (RFC 9162 §2.1.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The hash of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two smaller than `n` (`n` ≥ 2): where a tree of `n` leaves splits.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

/// Leaf hashes in memory, with the subtree hashes proofs are made of.
#[derive(Debug, Clone, Copy)]
pub struct Leaves<'a>(pub &'a [Hash]);

impl Leaves<'_> {
    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.0.len() as u64
    }

    /// MTH of the leaves `start..end` (RFC 9162 §2.1.1); `None` when the range is not inside.
    pub fn range_root(&self, start: u64, end: u64) -> Option<Hash> {
        let slice = self
            .0
            .get(usize::try_from(start).ok()?..usize::try_from(end).ok()?)?;
        Some(mth(slice))
    }

    /// The tree head: MTH of every leaf.
    pub fn root(&self) -> Hash {
        mth(self.0)
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if size > self.size() {
            return None;
        }
        inclusion_proof(index, size, |start, end| self.range_root(start, end))
    }

    /// The consistency proof of the tree of the first `old_size` leaves with the tree of the
    /// first `new_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Option<Vec<Hash>> {
        if new_size > self.size() {
            return None;
        }
        consistency_proof(old_size, new_size, |start, end| self.range_root(start, end))
    }
}

/// The node at `level` and `index` of a tree: the MTH of the `2^level` leaves from
/// `index * 2^level`, a complete subtree a store keeps.
pub type NodeId = (u32, u64);

/// MTH of the leaves `start..end` from the complete subtrees `node(level, index)` gives: a
/// range that is one such subtree is looked up, any other is split as RFC 9162 §2.1.1 splits a
/// tree. `None` when a node is unknown or the range is empty.
pub fn range_root_with(
    start: u64,
    end: u64,
    node: &impl Fn(u32, u64) -> Option<Hash>,
) -> Option<Hash> {
    let n = end.checked_sub(start).filter(|n| *n > 0)?;
    if n.is_power_of_two() && start.is_multiple_of(n) {
        return node(n.trailing_zeros(), start >> n.trailing_zeros());
    }
    let k = split(n);
    Some(node_hash(
        &range_root_with(start, start + k, node)?,
        &range_root_with(start + k, end, node)?,
    ))
}

/// The nodes [`range_root_with`] asks for to hash the leaves `start..end`.
pub fn range_nodes(start: u64, end: u64, out: &mut Vec<NodeId>) {
    let n = end.saturating_sub(start);
    if n == 0 {
        return;
    }
    if n.is_power_of_two() && start.is_multiple_of(n) {
        out.push((n.trailing_zeros(), start >> n.trailing_zeros()));
        return;
    }
    let k = split(n);
    range_nodes(start, start + k, out);
    range_nodes(start + k, end, out);
}

/// The roots of the complete subtrees a tree of `size` leaves is made of, largest first (one for
/// each 1 bit of `size`): all a log needs to append leaves and to give its tree head, in
/// O(log n) memory. Appending reports every complete subtree a leaf finishes, for a store that
/// keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// The node ids of the frontier of a tree of `size` leaves, largest subtree first.
    pub fn ids(size: u64) -> Vec<NodeId> {
        (0..u64::BITS)
            .rev()
            .filter(|level| (size >> level) & 1 == 1)
            .map(|level| (level, (size >> level) - 1))
            .collect()
    }

    /// The frontier of a tree of `size` leaves from the hashes of [`Frontier::ids`]`(size)`, in
    /// that order; `None` when their number is not the number of 1 bits of `size`.
    pub fn from_nodes(size: u64, nodes: Vec<Hash>) -> Option<Frontier> {
        (nodes.len() == size.count_ones() as usize).then_some(Frontier { size, nodes })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree hashes, in the order of [`Frontier::ids`].
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Appends a leaf hash; `completed` sees each complete subtree it finishes, bottom up: the
    /// leaf itself `(0, index)`, then each parent whose right child it completes.
    pub fn push(&mut self, leaf: Hash, mut completed: impl FnMut(NodeId, &Hash)) {
        let (mut level, mut index, mut hash) = (0u32, self.size, leaf);
        completed((level, index), &hash);
        while index & 1 == 1 {
            // One 1 bit of `size` per node: the left sibling is there.
            let Some(left) = self.nodes.pop() else { break };
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            completed((level, index), &hash);
        }
        self.nodes.push(hash);
        self.size += 1;
    }

    /// The tree head (RFC 9162 §2.1.1): the subtrees joined from the smallest up, as the tree
    /// splits at the largest power of two.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return empty_root();
        };
        nodes.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// MTH over leaf hashes.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [one] => *one,
        _ => {
            // `split` of a slice length that fits in memory fits in usize.
            let k = usize::try_from(split(leaves.len() as u64)).unwrap_or(leaves.len() / 2);
            let (left, right) = leaves.split_at(k);
            node_hash(&mth(left), &mth(right))
        }
    }
}

/// RFC 9162 §2.1.3.1: `PATH(index, D[0:size])`, from the leaf up, with `range_root(start, end)`
/// giving the MTH of the leaves `start..end`. `None` when `index` is not below `size` or a
/// subtree is unknown.
pub fn inclusion_proof(
    index: u64,
    size: u64,
    range_root: impl Fn(u64, u64) -> Option<Hash>,
) -> Option<Vec<Hash>> {
    if index >= size {
        return None;
    }
    let mut proof = Vec::new();
    path(index, 0, size, &range_root, &mut proof)?;
    Some(proof)
}

/// `PATH(m, D[start:end])` pushed in the RFC's order (deepest sibling first).
fn path(
    m: u64,
    start: u64,
    end: u64,
    range_root: &impl Fn(u64, u64) -> Option<Hash>,
    proof: &mut Vec<Hash>,
) -> Option<()> {
    let n = end - start;
    if n <= 1 {
        return Some(());
    }
    let k = split(n);
    if m < k {
        path(m, start, start + k, range_root, proof)?;
        proof.push(range_root(start + k, end)?);
    } else {
        path(m - k, start + k, end, range_root, proof)?;
        proof.push(range_root(start, start + k)?);
    }
    Some(())
}

/// RFC 9162 §2.1.4.1: `PROOF(old_size, D[0:new_size])`. Empty when the sizes are equal; `None`
/// when `old_size` is 0 or above `new_size` (no proof is defined) or a subtree is unknown.
pub fn consistency_proof(
    old_size: u64,
    new_size: u64,
    range_root: impl Fn(u64, u64) -> Option<Hash>,
) -> Option<Vec<Hash>> {
    if old_size == 0 || old_size > new_size {
        return None;
    }
    let mut proof = Vec::new();
    subproof(old_size, 0, new_size, true, &range_root, &mut proof)?;
    Some(proof)
}

/// `SUBPROOF(m, D[start:end], b)`.
fn subproof(
    m: u64,
    start: u64,
    end: u64,
    whole: bool,
    range_root: &impl Fn(u64, u64) -> Option<Hash>,
    proof: &mut Vec<Hash>,
) -> Option<()> {
    let n = end - start;
    if m == n {
        if !whole {
            proof.push(range_root(start, end)?);
        }
        return Some(());
    }
    let k = split(n);
    if m <= k {
        subproof(m, start, start + k, whole, range_root, proof)?;
        proof.push(range_root(start + k, end)?);
    } else {
        subproof(m - k, start + k, end, false, range_root, proof)?;
        proof.push(range_root(start, start + k)?);
    }
    Some(())
}

/// The walk up the tree shared by both verifications (RFC 9162 §2.1.3.2 and §2.1.4.2), from
/// the node numbers `f_n` and `s_n`: `step(c, left)` takes each proof node, `left` when it is
/// the left sibling. Returns the final `s_n` (0 when the proof had the right length), `None`
/// when the proof is too long.
fn walk(
    mut f_n: u64,
    mut s_n: u64,
    proof: &[Hash],
    mut step: impl FnMut(&Hash, bool),
) -> Option<u64> {
    for c in proof {
        if s_n == 0 {
            return None;
        }
        if f_n & 1 == 1 || f_n == s_n {
            step(c, true);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            step(c, false);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    Some(s_n)
}

/// RFC 9162 §2.1.3.2: whether `proof` shows the leaf `leaf` at `index` in the tree of `size`
/// leaves whose head is `root`.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let mut r = *leaf;
    let end = walk(index, size - 1, proof, |p, left| {
        r = if left {
            node_hash(p, &r)
        } else {
            node_hash(&r, p)
        };
    });
    end == Some(0) && r == *root
}

/// RFC 9162 §2.1.4.2: whether `proof` shows that the tree of `new_size` leaves with head
/// `new_root` extends the tree of `old_size` leaves with head `old_root`.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size == 0 || old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    // A power of two: the old tree is a complete subtree, its head the first node.
    let first = if old_size.is_power_of_two() {
        Some(old_root)
    } else {
        proof.first()
    };
    let rest = if old_size.is_power_of_two() {
        proof
    } else {
        proof.get(1..).unwrap_or_default()
    };
    let Some(first) = first else {
        return false;
    };
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut f_r, mut s_r) = (*first, *first);
    let end = walk(f_n, s_n, rest, |c, left| {
        if left {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
        } else {
            s_r = node_hash(&s_r, c);
        }
    });
    end == Some(0) && f_r == *old_root && s_r == *new_root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(hash: &Hash) -> String {
        hash.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The entries of the Certificate Transparency test vectors (RFC 6962 trees).
    fn ct_leaves() -> Vec<Hash> {
        [
            &b""[..],
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ]
        .iter()
        .map(|entry| leaf_hash(entry))
        .collect()
    }

    /// Tree heads of the first 1..=8 entries, as Certificate Transparency's tests give them.
    const CT_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn tree_heads_match_the_certificate_transparency_vectors() {
        let leaves = ct_leaves();
        assert_eq!(
            hex(&Leaves(&[]).root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for (n, expected) in CT_ROOTS.iter().enumerate() {
            assert_eq!(
                hex(&Leaves(&leaves[..=n]).root()),
                *expected,
                "size {}",
                n + 1
            );
        }
    }

    #[test]
    fn proofs_match_the_certificate_transparency_vectors() {
        let leaves = ct_leaves();
        let tree = Leaves(&leaves);
        let hexes = |proof: Vec<Hash>| proof.iter().map(hex).collect::<Vec<_>>();
        assert_eq!(
            hexes(tree.inclusion_proof(5, 8).unwrap()),
            [
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]
        );
        assert_eq!(
            hexes(tree.consistency_proof(3, 8).unwrap()),
            [
                "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
                "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ]
        );
        assert_eq!(
            hexes(tree.consistency_proof(2, 5).unwrap()),
            [
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ]
        );
    }

    /// Leaves 0..n with distinct entries.
    fn numbered(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn every_proof_of_trees_up_to_40_leaves_verifies_and_no_neighbour_does() {
        let leaves = numbered(40);
        let tree = Leaves(&leaves);
        for size in 1..=40u64 {
            let root = Leaves(&leaves[..size as usize]).root();
            for index in 0..size {
                let proof = tree.inclusion_proof(index, size).unwrap();
                let leaf = &leaves[index as usize];
                assert!(verify_inclusion(leaf, index, size, &proof, &root));
                // Another leaf, index, size or root fails.
                let other = &leaves[((index + 1) % 40) as usize];
                assert!(!verify_inclusion(other, index, size, &proof, &root));
                if size > 1 {
                    assert!(!verify_inclusion(
                        leaf,
                        (index + 1) % size,
                        size,
                        &proof,
                        &root
                    ));
                }
                // The head of another size is not this one's.
                if (size as usize) < leaves.len() {
                    let next = Leaves(&leaves[..=size as usize]).root();
                    assert!(!verify_inclusion(leaf, index, size + 1, &proof, &next));
                }
                assert!(!verify_inclusion(
                    leaf,
                    index,
                    size,
                    &proof,
                    &leaf_hash(b"x")
                ));
            }
            for old in 1..=size {
                let old_root = Leaves(&leaves[..old as usize]).root();
                let proof = tree.consistency_proof(old, size).unwrap();
                assert!(
                    verify_consistency(old, size, &old_root, &root, &proof),
                    "{old}->{size}"
                );
                // A forked history (another old head) or a truncated proof fails.
                assert!(!verify_consistency(
                    old,
                    size,
                    &leaf_hash(b"fork"),
                    &root,
                    &proof
                ));
                if !proof.is_empty() {
                    assert!(!verify_consistency(
                        old,
                        size,
                        &old_root,
                        &root,
                        &proof[..proof.len() - 1]
                    ));
                    let mut flipped = proof.clone();
                    flipped[0][0] ^= 1;
                    assert!(!verify_consistency(old, size, &old_root, &root, &flipped));
                }
            }
        }
    }

    #[test]
    fn stored_subtrees_give_every_range_and_proof() {
        // Nodes as a store keeps them, reported leaf by leaf by a frontier.
        let leaves = numbered(37);
        let mut nodes = std::collections::BTreeMap::new();
        let mut frontier = Frontier::new();
        for (i, leaf) in leaves.iter().enumerate() {
            frontier.push(*leaf, |id, hash| {
                nodes.insert(id, *hash);
            });
            let size = i as u64 + 1;
            assert_eq!(frontier.root(), Leaves(&leaves[..=i]).root(), "size {size}");
            let ids = Frontier::ids(size);
            let again: Vec<Hash> = ids.iter().map(|id| nodes[id]).collect();
            assert_eq!(Frontier::from_nodes(size, again), Some(frontier.clone()));
        }
        assert_eq!(Frontier::new().root(), empty_root());
        assert_eq!(Frontier::from_nodes(5, vec![[0; 32]]), None);
        let node = |l: u32, x: u64| nodes.get(&(l, x)).copied();
        let tree = Leaves(&leaves);
        for start in 0..37u64 {
            for end in start + 1..=37 {
                let mut wanted = Vec::new();
                range_nodes(start, end, &mut wanted);
                assert!(wanted.iter().all(|id| nodes.contains_key(id)));
                assert_eq!(
                    range_root_with(start, end, &node),
                    tree.range_root(start, end)
                );
            }
        }
        // Proofs from the stored nodes are the in-memory ones.
        for size in 1..=37u64 {
            for index in 0..size {
                assert_eq!(
                    inclusion_proof(index, size, |a, b| range_root_with(a, b, &node)),
                    tree.inclusion_proof(index, size)
                );
            }
            assert_eq!(
                consistency_proof(size / 2 + 1, size, |a, b| range_root_with(a, b, &node)),
                tree.consistency_proof(size / 2 + 1, size)
            );
        }
        assert!(range_root_with(3, 3, &node).is_none());
        assert!(
            range_root_with(0, 64, &node).is_none(),
            "no such subtree yet"
        );
    }

    #[test]
    fn out_of_range_requests_have_no_proof() {
        let leaves = numbered(5);
        let tree = Leaves(&leaves);
        assert!(tree.inclusion_proof(5, 5).is_none());
        assert!(tree.inclusion_proof(0, 6).is_none());
        assert!(tree.consistency_proof(0, 5).is_none());
        assert!(tree.consistency_proof(4, 3).is_none());
        assert!(tree.consistency_proof(3, 6).is_none());
        assert_eq!(tree.consistency_proof(5, 5), Some(Vec::new()));
        let root = tree.root();
        assert!(!verify_inclusion(&leaves[0], 0, 0, &[], &root));
        assert!(!verify_consistency(0, 5, &root, &root, &[]));
        assert!(!verify_consistency(6, 5, &root, &root, &[]));
        assert!(verify_consistency(5, 5, &root, &root, &[]));
        assert!(!verify_consistency(5, 5, &root, &root, &[root]));
        // The one-leaf tree: the leaf is the head, the proof empty.
        let one = Leaves(&leaves[..1]);
        assert_eq!(one.root(), leaves[0]);
        assert!(verify_inclusion(&leaves[0], 0, 1, &[], &leaves[0]));
    }
}
