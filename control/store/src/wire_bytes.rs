//! Byte strings for serde as byte strings: `Vec<u8>` fields use
//! `#[serde(with = "crate::wire_bytes")]`, so a binary format (the raft log's
//! bincode) writes them with one copy instead of element by element. On
//! bincode the bytes are the same as before (a length, then the bytes);
//! formats that write bytes as a sequence of numbers (JSON) still read back.

use std::fmt;

use serde::de::{Error, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    deserializer.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Vec<u8>, E> {
        Ok(v.as_bytes().to_vec())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // A length claimed by the input is not trusted for the allocation.
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 1024));
        while let Some(b) = seq.next_element::<u8>()? {
            bytes.push(b);
        }
        Ok(bytes)
    }
}

/// `Vec<Vec<u8>>` with each element as a byte string.
pub mod list {
    use serde::ser::SerializeSeq as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Bytes(#[serde(with = "super")] Vec<u8>);

    #[derive(Serialize)]
    struct BytesRef<'a>(#[serde(with = "super")] &'a Vec<u8>);

    pub fn serialize<S: Serializer>(list: &[Vec<u8>], serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(list.len()))?;
        for item in list {
            seq.serialize_element(&BytesRef(item))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Ok(Vec::<Bytes>::deserialize(deserializer)?.into_iter().map(|b| b.0).collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::{KeyValue, PutRequest};

    #[test]
    fn a_put_reads_back_from_json_and_its_value_is_one_byte_string() {
        let put = PutRequest::new("k", vec![0u8, 1, 255]);
        let json = serde_json::to_string(&put).expect("encode");
        assert!(json.contains("[0,1,255]"), "{json}");
        assert_eq!(serde_json::from_str::<PutRequest>(&json).expect("decode"), put);
        let kv = KeyValue { key: b"a".to_vec(), value: vec![7; 3], ..KeyValue::default() };
        let back: KeyValue = serde_json::from_str(&serde_json::to_string(&kv).expect("encode")).expect("decode");
        assert_eq!(back, kv);
    }
}
