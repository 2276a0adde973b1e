//! The shard map of one stream: the open shards' hash key ranges, sorted, so a
//! record's 128-bit hash key finds its shard by binary search.
//!
//! Ranges always come from ListShards; they are never computed, because after
//! splits and merges they are anything but even.

use std::sync::Arc;

/// One open shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub id: Arc<str>,
    pub start: u128,
    pub end: u128,
}

impl Shard {
    pub fn contains(&self, hash_key: u128) -> bool {
        self.start <= hash_key && hash_key <= self.end
    }
}

/// Why a list of shards is not a usable map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardMapError {
    #[error("stream has no open shards")]
    Empty,
    #[error("shard {shard:?} has an invalid hash key range {start}..={end}")]
    InvalidRange {
        shard: String,
        start: u128,
        end: u128,
    },
    #[error("shards {first:?} and {second:?} overlap")]
    Overlap { first: String, second: String },
}

/// The open shards of a stream, sorted by starting hash key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    shards: Vec<Shard>,
}

impl ShardMap {
    /// Builds a map from open shards in any order.
    ///
    /// Gaps are allowed (a stream mid-reshard can briefly show one): a hash key in a
    /// gap finds no shard, which tells the caller to refresh the map.
    pub fn new(mut shards: Vec<Shard>) -> Result<Self, ShardMapError> {
        if shards.is_empty() {
            return Err(ShardMapError::Empty);
        }
        shards.sort_by_key(|s| s.start);
        for s in &shards {
            if s.start > s.end {
                return Err(ShardMapError::InvalidRange {
                    shard: s.id.to_string(),
                    start: s.start,
                    end: s.end,
                });
            }
        }
        for w in shards.windows(2) {
            if w[1].start <= w[0].end {
                return Err(ShardMapError::Overlap {
                    first: w[0].id.to_string(),
                    second: w[1].id.to_string(),
                });
            }
        }
        Ok(ShardMap { shards })
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Index (into [`ShardMap::shards`]) of the shard whose range holds `hash_key`.
    pub fn lookup(&self, hash_key: u128) -> Option<usize> {
        // Index of the first shard starting after the key; the one before it is the
        // only candidate.
        let i = self.shards.partition_point(|s| s.start <= hash_key);
        let i = i.checked_sub(1)?;
        self.shards[i].contains(hash_key).then_some(i)
    }

    pub fn get(&self, index: usize) -> &Shard {
        &self.shards[index]
    }

    /// Index of the shard with this id.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.shards.iter().position(|s| &*s.id == id)
    }

    /// Whether both maps have the same shards with the same ranges.
    pub fn same_shards(&self, other: &ShardMap) -> bool {
        self.shards == other.shards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, start: u128, end: u128) -> Shard {
        Shard {
            id: id.into(),
            start,
            end,
        }
    }

    #[test]
    fn lookup_finds_range_edges_and_gaps() {
        let map = ShardMap::new(vec![
            shard("b", 100, 199),
            shard("a", 0, 99),
            shard("c", 300, u128::MAX),
        ])
        .unwrap();
        assert_eq!(map.lookup(0), Some(0));
        assert_eq!(map.lookup(99), Some(0));
        assert_eq!(map.lookup(100), Some(1));
        assert_eq!(map.lookup(199), Some(1));
        assert_eq!(map.lookup(200), None);
        assert_eq!(map.lookup(299), None);
        assert_eq!(map.lookup(300), Some(2));
        assert_eq!(map.lookup(u128::MAX), Some(2));
        assert_eq!(&*map.get(1).id, "b");
    }

    #[test]
    fn invalid_maps_are_refused() {
        assert_eq!(ShardMap::new(vec![]), Err(ShardMapError::Empty));
        assert!(matches!(
            ShardMap::new(vec![shard("a", 0, 10), shard("b", 10, 20)]),
            Err(ShardMapError::Overlap { .. })
        ));
        assert!(matches!(
            ShardMap::new(vec![shard("a", 5, 4)]),
            Err(ShardMapError::InvalidRange { .. })
        ));
    }
}
