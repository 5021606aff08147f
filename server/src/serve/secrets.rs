//! Secrets at rest: a teacher's API key is sealed with ChaCha20-Poly1305 under a key kept in the
//! data folder (`secret.key`, 32 random bytes, readable by the server's user only, made on first
//! use). The database then holds `hex(nonce ‖ ciphertext ‖ tag)`: a copy of it alone (a backup, a
//! shared PostgreSQL) does not give the keys away.

use std::io::Write;
use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use super::ApiError;

const KEY_FILE: &str = "secret.key";

fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

/// The data folder's sealing key, made (0600) when there is none.
fn key(data_dir: &Path) -> Result<LessSafeKey, ApiError> {
    let path = key_path(data_dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = vec![0u8; 32];
            SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| ApiError::internal("no randomness for the sealing key"))?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(&path) {
                Ok(mut file) => {
                    file.write_all(&bytes)?;
                    file.sync_all()?;
                    bytes
                }
                // Made by another request meanwhile: use that one.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(&path)?,
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
        .map_err(|_| ApiError::internal(format!("{}: not a 32-byte key", path.display())))?;
    Ok(LessSafeKey::new(unbound))
}

/// `secret` sealed for the database.
pub fn seal(data_dir: &Path, secret: &str) -> Result<String, ApiError> {
    let key = key(data_dir)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| ApiError::internal("no randomness for a nonce"))?;
    let mut sealed = secret.as_bytes().to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::empty(),
        &mut sealed,
    )
    .map_err(|_| ApiError::internal("sealing a secret failed"))?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Ok(hex::encode(out))
}

/// The secret `sealed` holds.
pub fn open(data_dir: &Path, sealed: &str) -> Result<String, ApiError> {
    let key = key(data_dir)?;
    let bytes =
        hex::decode(sealed).map_err(|_| ApiError::internal("a sealed secret is not hex"))?;
    if bytes.len() < NONCE_LEN {
        return Err(ApiError::internal("a sealed secret is too short"));
    }
    let (nonce, rest) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| ApiError::internal("a sealed secret's nonce is bad"))?;
    let mut rest = rest.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::empty(), &mut rest)
        .map_err(|_| {
            ApiError::internal(format!(
                "a sealed secret does not open with {} (was it replaced?)",
                key_path(data_dir).display()
            ))
        })?;
    String::from_utf8(plain.to_vec()).map_err(|_| ApiError::internal("a sealed secret is not text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_with_their_folders_key_only() {
        let dir = std::env::temp_dir().join(crate::db::new_id("secrets-"));
        std::fs::create_dir_all(&dir).unwrap();
        let sealed = seal(&dir, "sk-very-secret").unwrap();
        assert!(!sealed.contains("very"));
        assert_ne!(
            sealed,
            seal(&dir, "sk-very-secret").unwrap(),
            "a nonce each"
        );
        assert_eq!(open(&dir, &sealed).unwrap(), "sk-very-secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = std::env::temp_dir().join(crate::db::new_id("secrets-"));
        std::fs::create_dir_all(&other).unwrap();
        assert!(open(&other, &sealed).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other);
    }
}
