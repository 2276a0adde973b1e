//! Collecting one shard's user records into an aggregate. [`Aggregator`] owns
//! the aggregate being filled and the indexes of its key tables, and keeps the
//! exact encoded size as records are added, so an aggregate never crosses its
//! limit and needs no trial encoding. The router (one per shard, in delivery)
//! calls it per record: no allocation beyond the tables' growth.

use std::collections::HashMap;

use super::encode::{decimal_len, field_len, record_body_len};
use super::pack::{compress, Packs, Sealed};
use super::{Aggregate, Format, KeyHash, Limits, Pending, FRAMING_LEN};
use crate::record::MAX_RECORD_BYTES;

/// Collects the user records of one shard until the aggregate is full.
#[derive(Debug, Default)]
pub struct Aggregator {
    agg: Aggregate,
    /// Partition key → index in the key table, keyed by a hash of the key; the
    /// string itself is compared on a hit, so a collision only costs a table entry.
    pk_index: HashMap<u64, u32, KeyHash>,
    ehk_index: HashMap<u128, u32, KeyHash>,
    /// With packs: bytes of the open pack's data and the newlines between.
    open_bytes: usize,
}

impl Aggregator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.agg.records.is_empty()
    }

    pub fn len(&self) -> usize {
        self.agg.records.len()
    }

    /// Current size of the aggregate as a Kinesis record.
    pub fn size(&self) -> usize {
        self.agg.size()
    }

    /// What the aggregate's size would become with `record` added, and the keys it
    /// would get.
    fn size_with(&self, p: &Pending) -> (usize, (u32, Option<u32>), bool, bool) {
        self.size_with_data(p, p.record.data.len())
    }

    /// [`size_with`](Self::size_with) for a user record of `data_len` bytes
    /// whose keys are `p`'s (a pack, keyed by its first record).
    fn size_with_data(
        &self,
        p: &Pending,
        data_len: usize,
    ) -> (usize, (u32, Option<u32>), bool, bool) {
        let mut body = self.agg.body_len;
        let pk = &p.record.partition_key;
        let (pk_idx, new_pk) = match self.lookup_pk(p) {
            Some(i) => (i, false),
            None => {
                body += field_len(pk.len());
                (self.agg.pk_owners.len() as u32, true)
            }
        };
        let (ehk_idx, new_ehk) = match p.record.explicit_hash_key {
            None => (None, false),
            Some(k) => match self.ehk_index.get(&k) {
                Some(&i) => (Some(i), false),
                None => {
                    body += field_len(decimal_len(k));
                    (Some(self.agg.ehk_table.len() as u32), true)
                }
            },
        };
        body += field_len(record_body_len(pk_idx, ehk_idx, data_len));
        let outer_pk = self
            .agg
            .records
            .first()
            .map_or(pk.len(), |r| r.record.partition_key.len());
        (
            FRAMING_LEN + body + outer_pk,
            (pk_idx, ehk_idx),
            new_pk,
            new_ehk,
        )
    }

    fn pk_hash(p: &Pending) -> u64 {
        fnv1a(p.record.partition_key.as_bytes())
    }

    fn lookup_pk(&self, p: &Pending) -> Option<u32> {
        let i = *self.pk_index.get(&Self::pk_hash(p))?;
        let owner = &self.agg.records[self.agg.pk_owners[i as usize] as usize];
        (owner.record.partition_key == p.record.partition_key).then_some(i)
    }

    /// Adds a record if the aggregate stays within `limits`; gives it back otherwise.
    /// An empty aggregator always takes the record (a record alone is within the
    /// Kinesis limit by validation, and is sent unaggregated).
    // The record comes back whole when it does not fit: the caller seals and
    // tries again; boxing it would cost an allocation per record.
    #[allow(clippy::result_large_err)]
    pub fn try_add(&mut self, p: Pending, limits: &Limits) -> Result<(), Pending> {
        if limits.format == Format::Lines {
            return self.try_add_line(p, limits);
        }
        if let Some(packs) = limits.packs {
            return self.try_add_packed(p, limits, packs);
        }
        let (size, keys, new_pk, new_ehk) = self.size_with(&p);
        if !self.is_empty()
            && (size > limits.max_bytes.min(MAX_RECORD_BYTES)
                || self.agg.records.len() >= limits.max_records)
        {
            return Err(p);
        }
        let idx = self.agg.records.len() as u32;
        if new_pk {
            self.pk_index.entry(Self::pk_hash(&p)).or_insert(keys.0);
            self.agg.pk_owners.push(idx);
        }
        if let (true, Some(k)) = (new_ehk, p.record.explicit_hash_key) {
            self.ehk_index.insert(k, self.agg.ehk_table.len() as u32);
            self.agg.ehk_table.push(k);
        }
        self.agg.body_len = size - FRAMING_LEN - self.outer_pk_len_with(&p);
        self.agg.keys.push(keys);
        self.agg.records.push(p);
        Ok(())
    }

    /// [`try_add`](Self::try_add) for [`Format::Lines`]: the record's data and
    /// its newline; no key tables.
    #[allow(clippy::result_large_err)]
    fn try_add_line(&mut self, p: Pending, limits: &Limits) -> Result<(), Pending> {
        let size = self.agg.body_len + p.record.data.len() + 1;
        if !self.is_empty()
            && (size > limits.max_bytes.min(MAX_RECORD_BYTES)
                || self.agg.records.len() >= limits.max_records)
        {
            return Err(p);
        }
        self.agg.format = Format::Lines;
        self.agg.body_len = size;
        self.agg.records.push(p);
        Ok(())
    }

    fn outer_pk_len_with(&self, p: &Pending) -> usize {
        self.agg
            .records
            .first()
            .map_or(p.record.partition_key.len(), |r| {
                r.record.partition_key.len()
            })
    }

    /// Where the open pack starts in the records.
    fn open_start(&self) -> usize {
        self.agg.packs.last().map_or(0, |s| s.end)
    }

    /// The aggregate's size with the open pack (first record `first`) holding
    /// `bytes`, counted at its compression bound.
    fn size_packed(&self, first: &Pending, bytes: usize, packs: Packs) -> usize {
        let bound = packs.codec.bound(bytes);
        if self.agg.packs.is_empty() {
            // A lone pack goes as itself.
            return bound + first.record.partition_key.len();
        }
        self.size_with_data(first, bound).0
    }

    /// [`try_add`](Self::try_add) with packs: the record joins the open pack
    /// while it has room, else the open pack is compressed and the record
    /// starts the next one, if the aggregate has room for it.
    #[allow(clippy::result_large_err)]
    fn try_add_packed(&mut self, p: Pending, limits: &Limits, packs: Packs) -> Result<(), Pending> {
        let max = limits.max_bytes.min(MAX_RECORD_BYTES);
        let start = self.open_start();
        if start < self.agg.records.len() {
            let bytes = self.open_bytes + 1 + p.record.data.len();
            if bytes <= packs.max_bytes
                && self.size_packed(&self.agg.records[start], bytes, packs) <= max
            {
                self.open_bytes = bytes;
                self.agg.records.push(p);
                return Ok(());
            }
            self.seal_pack(packs);
        }
        if !self.is_empty()
            && (self.agg.packs.len() >= limits.max_records
                || self.size_packed(&p, p.record.data.len(), packs) > max)
        {
            return Err(p);
        }
        self.agg.pack = Some(packs);
        self.open_bytes = p.record.data.len();
        self.agg.records.push(p);
        Ok(())
    }

    /// Compresses the open pack into a user record of the aggregate.
    fn seal_pack(&mut self, packs: Packs) {
        let start = self.open_start();
        let end = self.agg.records.len();
        if start == end {
            return;
        }
        let data = compress(packs.codec, &self.agg.records[start..end]);
        let first = &self.agg.records[start];
        let (size, keys, new_pk, new_ehk) = self.size_with_data(first, data.len());
        if new_pk {
            self.pk_index.entry(Self::pk_hash(first)).or_insert(keys.0);
            self.agg.pk_owners.push(start as u32);
        }
        if let (true, Some(k)) = (new_ehk, first.record.explicit_hash_key) {
            self.ehk_index.insert(k, self.agg.ehk_table.len() as u32);
            self.agg.ehk_table.push(k);
        }
        let outer_pk = self.agg.records[0].record.partition_key.len();
        self.agg.body_len = size - FRAMING_LEN - outer_pk;
        self.agg.keys.push(keys);
        self.agg.packs.push(Sealed { end, data });
        self.open_bytes = 0;
    }

    /// Takes the aggregate out, leaving the aggregator empty.
    pub fn take(&mut self) -> Aggregate {
        if let Some(packs) = self.agg.pack {
            self.seal_pack(packs);
        }
        self.pk_index.clear();
        self.ehk_index.clear();
        std::mem::take(&mut self.agg)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}
