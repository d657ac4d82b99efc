//! The pod-template-hash: upstream hashes the pod template (fnv32a) with
//! the collision count and encodes the number with a vowel-free alphabet, so
//! ReplicaSets are named `<deployment>-<hash>`. Ours hashes the template's
//! JSON; the value differs from upstream's but has the same shape and the
//! same stability (same template and count, same name).

use k8s_openapi::api::core::v1::PodTemplateSpec;

const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Upstream's rand.SafeEncodeString over the decimal form of the hash.
pub fn safe_encode(s: &str) -> String {
    s.bytes().map(|b| ALPHABET[b as usize % ALPHABET.len()] as char).collect()
}

pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut data = serde_json::to_vec(template).unwrap_or_default();
    if let Some(c) = collision_count {
        data.extend_from_slice(&c.to_le_bytes());
    }
    safe_encode(&fnv32a(&data).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container { name: "c".into(), image: Some(image.into()), ..Default::default() }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn fnv32a_matches_the_reference_vectors() {
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        assert_eq!(fnv32a(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn the_hash_is_stable_and_changes_with_the_template_or_the_collision_count() {
        let a = pod_template_hash(&template("nginx:1"), None);
        assert_eq!(a, pod_template_hash(&template("nginx:1"), None));
        assert_ne!(a, pod_template_hash(&template("nginx:2"), None));
        assert_ne!(a, pod_template_hash(&template("nginx:1"), Some(1)));
        assert!(a.bytes().all(|b| ALPHABET.contains(&b)), "{a}");
    }
}
