//! The snapshot format: the live keys and leases at one revision.
//!
//! Layout: an 8-byte little-endian length, that many bytes of protobuf
//! image, zero padding to a multiple of 512 bytes, then the SHA-256 of
//! everything before it. The shape is etcd's (a page-aligned database plus a
//! SHA-256): etcdctl 3.4's `snapshot save` rejects a download whose size is
//! not 32 more than a multiple of 512 ("sha256 checksum not found").

use prost::Message as _;
use sha2::{Digest as _, Sha256};

use crate::error::{Result, StoreError};
use crate::proto::mvccpb;
use crate::types::{KeyValue, LeaseId, Revision};

const DIGEST_LEN: usize = 32;
const LEN_PREFIX: usize = 8;
const ALIGN: usize = 512;

/// The state a snapshot carries.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Image {
    pub revision: Revision,
    /// History below this is not in the image.
    pub compact_revision: Revision,
    pub kvs: Vec<KeyValue>,
    pub leases: Vec<LeaseImage>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LeaseImage {
    pub id: LeaseId,
    pub granted_ttl: i64,
    pub remaining_ttl: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireImage {
    #[prost(string, tag = "1")]
    format: String,
    #[prost(int64, tag = "2")]
    revision: i64,
    #[prost(int64, tag = "3")]
    compact_revision: i64,
    #[prost(message, repeated, tag = "4")]
    kvs: Vec<mvccpb::KeyValue>,
    #[prost(message, repeated, tag = "5")]
    leases: Vec<WireLease>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireLease {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    granted_ttl: i64,
    #[prost(int64, tag = "3")]
    remaining_ttl: i64,
}

const FORMAT: &str = "waggle-store-snapshot/1";

pub fn encode(image: &Image) -> Vec<u8> {
    let wire = WireImage {
        format: FORMAT.to_owned(),
        revision: image.revision,
        compact_revision: image.compact_revision,
        kvs: image.kvs.iter().cloned().map(mvccpb::KeyValue::from).collect(),
        leases: image
            .leases
            .iter()
            .map(|l| WireLease { id: l.id, granted_ttl: l.granted_ttl, remaining_ttl: l.remaining_ttl })
            .collect(),
    };
    let image = wire.encode_to_vec();
    let mut bytes = Vec::with_capacity(LEN_PREFIX + image.len() + ALIGN + DIGEST_LEN);
    bytes.extend_from_slice(&u64::try_from(image.len()).unwrap_or(u64::MAX).to_le_bytes());
    bytes.extend_from_slice(&image);
    bytes.resize(bytes.len().div_ceil(ALIGN) * ALIGN, 0);
    let digest = Sha256::digest(&bytes);
    bytes.extend_from_slice(&digest);
    bytes
}

pub fn decode(bytes: &[u8]) -> Result<Image> {
    let bad = |reason: String| StoreError::BadSnapshot { reason };
    let split = bytes
        .len()
        .checked_sub(DIGEST_LEN)
        .ok_or_else(|| bad(format!("{} bytes is too short to hold a snapshot", bytes.len())))?;
    let (body, digest) = bytes.split_at(split);
    if Sha256::digest(body).as_slice() != digest {
        return Err(bad("the SHA-256 at its end does not match its content (truncated or damaged?)".to_owned()));
    }
    let (len, rest) = body.split_at_checked(LEN_PREFIX).ok_or_else(|| bad("no length prefix".to_owned()))?;
    let mut len_bytes = [0u8; LEN_PREFIX];
    len_bytes.copy_from_slice(len);
    let len = usize::try_from(u64::from_le_bytes(len_bytes)).unwrap_or(usize::MAX);
    let image = rest
        .get(..len)
        .ok_or_else(|| bad(format!("the image claims {len} bytes but the file holds {}", rest.len())))?;
    let wire = WireImage::decode(image).map_err(|e| bad(format!("decoding the image: {e}")))?;
    if wire.format != FORMAT {
        return Err(bad(format!("format {:?} is not {FORMAT:?}", wire.format)));
    }
    Ok(Image {
        revision: wire.revision,
        compact_revision: wire.compact_revision,
        kvs: wire.kvs.into_iter().map(KeyValue::from).collect(),
        leases: wire
            .leases
            .into_iter()
            .map(|l| LeaseImage { id: l.id, granted_ttl: l.granted_ttl, remaining_ttl: l.remaining_ttl })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_survives_encoding_and_decoding() {
        let image = Image {
            revision: 7,
            compact_revision: 7,
            kvs: vec![KeyValue {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                create_revision: 2,
                mod_revision: 5,
                version: 3,
                lease: 9,
            }],
            leases: vec![LeaseImage { id: 9, granted_ttl: 60, remaining_ttl: 50 }],
        };
        let bytes = encode(&image);
        assert_eq!(bytes.len() % 512, 32, "page-aligned plus a SHA-256, as etcdctl checks");
        assert_eq!(decode(&bytes).expect("decodes"), image);
    }

    #[test]
    fn a_damaged_snapshot_is_rejected() {
        let mut bytes = encode(&Image { revision: 3, ..Image::default() });
        bytes[0] ^= 0xff;
        assert!(matches!(decode(&bytes), Err(StoreError::BadSnapshot { .. })));
        assert!(matches!(decode(b"short"), Err(StoreError::BadSnapshot { .. })));
    }
}
