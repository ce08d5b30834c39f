//! The stored form of a saga: a versioned envelope around postcard.
//!
//! ```text
//! +----------------+----------------------------+
//! | version: u16 BE| postcard body of that version |
//! +----------------+----------------------------+
//! ```
//!
//! Version 1 is the postcard encoding of [`Saga`] as defined in this
//! release. postcard is not self-describing: field order and enum variant
//! order are the format. When `Saga` changes shape, the old shape is kept
//! as a frozen type, [`CURRENT`] grows by one, and [`decode`] converts the
//! old version into the new type. A version is never reused.

use crate::saga::Saga;

/// The version this release writes.
pub const CURRENT: u16 = 1;

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("record is {0} bytes, too short for a version header")]
    Truncated(usize),
    #[error("record has format version {0}")]
    UnknownVersion(u16),
    #[error("record body is not valid for version {version}: {reason}")]
    Body { version: u16, reason: String },
}

/// Encodes a saga in the current version.
pub fn encode(saga: &Saga) -> Vec<u8> {
    let mut out = CURRENT.to_be_bytes().to_vec();
    // Serialising plain data into a Vec cannot fail; should postcard ever
    // refuse, an empty body is written and `decode` reports it.
    if let Ok(body) = postcard::to_extend(saga, Vec::with_capacity(512)) {
        out.extend_from_slice(&body);
    }
    out
}

/// Decodes a record of any known version.
///
/// # Errors
///
/// The record is truncated, has an unknown version, or its body does not
/// decode.
pub fn decode(bytes: &[u8]) -> Result<Saga, Error> {
    let Some((header, body)) = bytes.split_first_chunk::<2>() else {
        return Err(Error::Truncated(bytes.len()));
    };
    match u16::from_be_bytes(*header) {
        1 => postcard::from_bytes(body).map_err(|e| Error::Body {
            version: 1,
            reason: e.to_string(),
        }),
        other => Err(Error::UnknownVersion(other)),
    }
}

/// The version of a record, without decoding its body.
pub fn version(bytes: &[u8]) -> Option<u16> {
    bytes
        .split_first_chunk::<2>()
        .map(|(h, _)| u16::from_be_bytes(*h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registration::RegistrationInput;

    fn saga() -> Saga {
        let input: RegistrationInput = serde_json::from_str(
            r#"{"email":"jane.roe@example.com","fullName":"Jane Roe",
                "phoneNumber":"+12025550143",
                "initialPayment":{"amount":29.99,"paymentMethod":"credit_card"}}"#,
        )
        .unwrap();
        Saga::new(input.validate().unwrap(), crate::saga::now())
    }

    #[test]
    fn round_trip() {
        let saga = saga();
        let bytes = encode(&saga);
        assert_eq!(version(&bytes), Some(CURRENT));
        assert_eq!(decode(&bytes), Ok(saga));
    }

    #[test]
    fn unknown_version_is_named() {
        let mut bytes = encode(&saga());
        bytes[..2].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(decode(&bytes), Err(Error::UnknownVersion(7)));
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        assert_eq!(decode(&[1]), Err(Error::Truncated(1)));
        let bytes = encode(&saga());
        for len in 2..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "prefix of {len} bytes");
        }
        let mut flipped = bytes.clone();
        flipped[10] ^= 0xff;
        let _ = decode(&flipped);
    }
}
