//! Versioned values: one byte of encoding version, then the value.
//!
//! Version 1 is JSON. A new version is added by decoding both in
//! [`decode`]'s callers' types (or migrating on read); a store written by a
//! newer Baton is refused with a clear error instead of being misread.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

/// The encoding every tree writes today.
pub const CURRENT: u8 = 1;

/// Encodes `value` as version [`CURRENT`].
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(128);
    bytes.push(CURRENT);
    // Serialising our own plain data types cannot fail: no maps with
    // non-string keys, no failing Serialize impls.
    serde_json::to_writer(&mut bytes, value).expect("store values serialise to JSON");
    bytes
}

/// Decodes a value of `tree` stored under `key` (`key` is only for the
/// error message).
pub fn decode<T: DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(StoreError::Empty {
            tree,
            key: show_key(key),
        });
    };
    if version != CURRENT {
        return Err(StoreError::UnknownVersion {
            tree,
            key: show_key(key),
            found: version,
            known: CURRENT,
        });
    }
    serde_json::from_slice(body).map_err(|error| StoreError::Decode {
        tree,
        key: show_key(key),
        detail: error.to_string(),
    })
}

/// A key for people: text when it is printable, else hex.
pub fn show_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) if text.chars().all(|c| !c.is_control()) => format!("`{text}`"),
        _ => {
            if key.len() == 16 {
                if let Ok(uuid) = uuid::Uuid::from_slice(key) {
                    return uuid.to_string();
                }
            }
            key.iter().map(|b| format!("{b:02x}")).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_round_trips_with_its_version_byte() {
        let bytes = encode(&vec!["a", "b"]);
        assert_eq!(bytes[0], CURRENT);
        let back: Vec<String> = decode("meta", b"k", &bytes).unwrap();
        assert_eq!(back, ["a", "b"]);
    }

    #[test]
    fn an_unknown_version_is_a_clear_error() {
        let mut bytes = encode(&1u32);
        bytes[0] = 9;
        let error = decode::<u32>("journal", b"key", &bytes).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("tree `journal`"), "{message}");
        assert!(message.contains("version 9"), "{message}");
        assert!(message.contains("`key`"), "{message}");
    }

    #[test]
    fn empty_and_garbled_values_are_errors_not_panics() {
        assert!(matches!(
            decode::<u32>("meta", b"k", &[]),
            Err(StoreError::Empty { .. })
        ));
        assert!(matches!(
            decode::<u32>("meta", b"k", &[CURRENT, b'{']),
            Err(StoreError::Decode { .. })
        ));
    }
}
