//! The byte layout of the trees' keys and values: big-endian sequences (so sled's order is
//! arrival order), body chunk keys, the settled index, outbox values.

use super::{BODY_CHUNK, EventKey, StoreError};

pub(super) fn chunk_key(seq: u64, chunk: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&seq.to_be_bytes());
    key[8..].copy_from_slice(&chunk.to_be_bytes());
    key
}

/// Key of the `settled` index: time first, so a range up to a cutoff is what is due.
pub(super) fn settled_key(settled_at_ms: u64, seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&settled_at_ms.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(super) fn parse_settled_key(key: &[u8]) -> Result<(u64, u64), StoreError> {
    let corrupt = || StoreError::Corrupt("settled index key".to_owned());
    let (at, seq) = key.split_at_checked(8).ok_or_else(corrupt)?;
    Ok((
        u64::from_be_bytes(at.try_into().map_err(|_| corrupt())?),
        u64::from_be_bytes(seq.try_into().map_err(|_| corrupt())?),
    ))
}

pub(super) fn chunk_count(size: u64) -> u32 {
    let chunk = BODY_CHUNK as u64;
    u32::try_from(size.div_ceil(chunk)).expect("bodies are capped far below 4 billion chunks")
}

/// Outbox values: body size (for the byte bound) then the event key.
pub(super) fn outbox_value(size: u64, key: &EventKey) -> Vec<u8> {
    let mut value = size.to_be_bytes().to_vec();
    value.extend_from_slice(&key.0);
    value
}

pub(super) fn parse_outbox_entry(k: &[u8], v: &[u8]) -> Result<(u64, u64, EventKey), StoreError> {
    let corrupt = || StoreError::Corrupt("outbox entry".to_owned());
    let seq = u64::from_be_bytes(k.try_into().map_err(|_| corrupt())?);
    let (size, key) = v.split_at_checked(8).ok_or_else(corrupt)?;
    let size = u64::from_be_bytes(size.try_into().map_err(|_| corrupt())?);
    Ok((seq, size, EventKey(key.to_vec())))
}
