//! Secret-key encryption for kdcluster role `secretKeys` (spec 4.9, rule C-32).
//!
//! Key: hex-decoded kdconfig `masterEncryptionKey` (16/24/32 bytes selects AES-128/192/256).
//! Cipher: AES-GCM, fresh random 12-byte nonce, no associated data. Stored form: lowercase hex
//! of `nonce || ciphertext || tag`. The caller supplies the nonce (fresh randomness in the webhook,
//! fixed bytes in tests), so this module stays pure.
//!
//! Lives beside configmeta generation because the operator decrypts while building configmeta; the
//! admission webhook (root crate) encrypts with the same functions.

use aes_gcm::{
    aead::{consts::U12, Aead, KeyInit},
    aes::Aes192,
    Aes128Gcm, Aes256Gcm, AesGcm, Nonce,
};

/// Nonce length in bytes.
pub const NONCE_LEN: usize = 12;

/// Secret-key encryption and decryption failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretKeyError {
    /// No master key is configured (no kdconfig, or the key is unset).
    #[error("no master encryption key is configured")]
    NoMasterKey,
    /// The master key is not valid hex.
    #[error("{0}")]
    KeyNotHex(String),
    /// The master key has a length AES does not accept.
    #[error("crypto/aes: invalid key size {0}")]
    KeySize(usize),
    /// The stored value is not valid hex or is too short.
    #[error("malformed encrypted value")]
    Malformed,
    /// AES-GCM refused to encrypt or authenticate.
    #[error("cipher failure")]
    Cipher,
}

/// Checks a hex master key as rule K-8 does and returns the raw key bytes.
pub fn decode_master_key(hex_key: &str) -> Result<Vec<u8>, SecretKeyError> {
    let key = hex::decode(hex_key).map_err(|e| SecretKeyError::KeyNotHex(go_hex_error(&e)))?;
    match key.len() {
        16 | 24 | 32 => Ok(key),
        n => Err(SecretKeyError::KeySize(n)),
    }
}

/// Renders a hex decoding error in the words of Go's `encoding/hex`.
fn go_hex_error(e: &hex::FromHexError) -> String {
    match e {
        hex::FromHexError::InvalidHexCharacter { c, .. } => {
            format!("encoding/hex: invalid byte: U+{:04X} {c:?}", u32::from(*c))
        }
        hex::FromHexError::OddLength => "encoding/hex: odd length hex string".to_string(),
        hex::FromHexError::InvalidStringLength => "encoding/hex: invalid length".to_string(),
    }
}

fn seal(key: &[u8], nonce: &[u8; NONCE_LEN], plain: &[u8]) -> Result<Vec<u8>, SecretKeyError> {
    let nonce = Nonce::<U12>::from_slice(nonce);
    let out = match key.len() {
        16 => Aes128Gcm::new_from_slice(key)
            .map_err(|_| SecretKeyError::KeySize(16))?
            .encrypt(nonce, plain),
        24 => AesGcm::<Aes192, U12>::new_from_slice(key)
            .map_err(|_| SecretKeyError::KeySize(24))?
            .encrypt(nonce, plain),
        32 => Aes256Gcm::new_from_slice(key)
            .map_err(|_| SecretKeyError::KeySize(32))?
            .encrypt(nonce, plain),
        n => return Err(SecretKeyError::KeySize(n)),
    };
    out.map_err(|_| SecretKeyError::Cipher)
}

fn open(key: &[u8], nonce: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SecretKeyError> {
    let nonce = Nonce::<U12>::from_slice(nonce);
    let out = match key.len() {
        16 => Aes128Gcm::new_from_slice(key)
            .map_err(|_| SecretKeyError::KeySize(16))?
            .decrypt(nonce, sealed),
        24 => AesGcm::<Aes192, U12>::new_from_slice(key)
            .map_err(|_| SecretKeyError::KeySize(24))?
            .decrypt(nonce, sealed),
        32 => Aes256Gcm::new_from_slice(key)
            .map_err(|_| SecretKeyError::KeySize(32))?
            .decrypt(nonce, sealed),
        n => return Err(SecretKeyError::KeySize(n)),
    };
    out.map_err(|_| SecretKeyError::Cipher)
}

/// Encrypts `plain` with the hex master key and the given fresh `nonce`.
pub fn encrypt(
    master_key_hex: Option<&str>,
    plain: &str,
    nonce: [u8; NONCE_LEN],
) -> Result<String, SecretKeyError> {
    let key = decode_master_key(master_key_hex.ok_or(SecretKeyError::NoMasterKey)?)?;
    let sealed = seal(&key, &nonce, plain.as_bytes())?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(hex::encode(out))
}

/// Decrypts a stored `encryptedValue` (the operator does this when building configmeta).
pub fn decrypt(master_key_hex: &str, encrypted_hex: &str) -> Result<String, SecretKeyError> {
    let key = decode_master_key(master_key_hex)?;
    let raw = hex::decode(encrypted_hex).map_err(|_| SecretKeyError::Malformed)?;
    if raw.len() < NONCE_LEN + 16 {
        return Err(SecretKeyError::Malformed);
    }
    let (nonce, sealed) = raw.split_at(NONCE_LEN);
    let plain = open(&key, nonce, sealed)?;
    String::from_utf8(plain).map_err(|_| SecretKeyError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_for_every_key_size() {
        let e = [7u8; NONCE_LEN];
        for n in [16usize, 24, 32] {
            let key = hex::encode(vec![0xabu8; n]);
            let enc = encrypt(Some(&key), "s3cret", e).unwrap();
            assert_eq!(enc.len(), 2 * (NONCE_LEN + "s3cret".len() + 16));
            assert_eq!(enc, enc.to_lowercase());
            assert_eq!(decrypt(&key, &enc).unwrap(), "s3cret");
        }
    }

    #[test]
    fn same_nonce_same_ciphertext_and_other_nonce_other_ciphertext() {
        let key = hex::encode([1u8; 32]);
        let x1 = encrypt(Some(&key), "v", [1; NONCE_LEN]).unwrap();
        assert_eq!(x1, encrypt(Some(&key), "v", [1; NONCE_LEN]).unwrap());
        assert_ne!(x1, encrypt(Some(&key), "v", [2; NONCE_LEN]).unwrap());
    }

    #[test]
    fn bad_keys_are_errors() {
        let e = [1u8; NONCE_LEN];
        assert_eq!(encrypt(None, "v", e), Err(SecretKeyError::NoMasterKey));
        assert_eq!(encrypt(Some("abcd"), "v", e), Err(SecretKeyError::KeySize(2)));
        assert!(matches!(
            encrypt(Some("zz"), "v", e),
            Err(SecretKeyError::KeyNotHex(_))
        ));
        let key = hex::encode([1u8; 16]);
        assert_eq!(decrypt(&key, "00"), Err(SecretKeyError::Malformed));
    }
}
