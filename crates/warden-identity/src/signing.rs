//! Warden's own ES256 signing key, used for task tokens and by the
//! development JWT-SVID issuer.
//!
//! The key is stored as an unencrypted PKCS#8 DER file that only its owner
//! may read. Its `kid` is the RFC 7638 thumbprint of the public JWK, so the
//! same key always gets the same `kid`.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ring::digest;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

use crate::error::IdentityError;
use crate::jwk::VerifyingKey;
use crate::jwt::encode_segment;

/// An ES256 (P-256) signing key with a `kid` that is the base64url SHA-256
/// thumbprint of its public JWK (RFC 7638).
pub struct SigningKey {
    key_pair: EcdsaKeyPair,
    rng: SystemRandom,
    kid: String,
    x: String,
    y: String,
}

impl SigningKey {
    /// Generates a new random key.
    pub fn generate() -> Result<SigningKey, IdentityError> {
        let rng = SystemRandom::new();
        let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| {
                key_error("failed to generate a P-256 key with the system random source")
            })?;
        SigningKey::from_pkcs8(document.as_ref())
    }

    /// Parses a P-256 private key in PKCS#8 DER form.
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, IdentityError> {
        let rng = SystemRandom::new();
        let key_pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|rejected| {
                key_error(&format!(
                    "the data is not a PKCS#8 P-256 private key ({rejected})"
                ))
            })?;

        // The public key is the uncompressed point 04 || x || y.
        let point = key_pair.public_key().as_ref();
        let x = encode_segment(&point[1..33]);
        let y = encode_segment(&point[33..65]);
        let thumbprint_input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid =
            encode_segment(digest::digest(&digest::SHA256, thumbprint_input.as_bytes()).as_ref());

        Ok(SigningKey {
            key_pair,
            rng,
            kid,
            x,
            y,
        })
    }

    /// Loads the key from a PKCS#8 DER file, or creates the file with a new
    /// key when it is missing.
    ///
    /// A new file gets mode 0600 and missing parent directories get mode
    /// 0700. An existing file whose mode lets the group or other users read
    /// or write it is rejected. When two processes create the key at the
    /// same time, both end up with the key of the one that finished first.
    pub fn load_or_create(path: &Path) -> Result<SigningKey, IdentityError> {
        match fs::symlink_metadata(path) {
            Ok(_) => load_key_file(path),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => create_key_file(path),
            Err(source) => Err(IdentityError::Io {
                operation: "inspect signing key file",
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Loads the key from an existing PKCS#8 DER file, with the checks of
    /// [`SigningKey::load_or_create`], and never creates one.
    pub fn load(path: &Path) -> Result<SigningKey, IdentityError> {
        load_key_file(path)
    }

    /// Returns the key id, the RFC 7638 thumbprint of the public JWK.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Returns the public JWK `{"kty":"EC","crv":"P-256","x","y","kid","alg":"ES256"}`,
    /// with `"use"` added when `key_use` is given.
    pub fn public_jwk(&self, key_use: Option<&str>) -> Value {
        let mut jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": self.x,
            "y": self.y,
            "kid": self.kid,
            "alg": "ES256",
        });
        if let Some(key_use) = key_use {
            jwk["use"] = Value::String(key_use.to_owned());
        }
        jwk
    }

    /// Signs `claims` (a JSON object) as a compact JWS with the header
    /// `{"alg":"ES256","typ":"JWT","kid":...}`.
    pub fn sign_jwt(&self, claims: &Value) -> Result<String, IdentityError> {
        if !claims.is_object() {
            return Err(IdentityError::InvalidIssueRequest {
                reason: format!(
                    "JWT claims must be a JSON object, found {}",
                    crate::jwt::json_type(claims)
                ),
            });
        }
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            encode_segment(header.to_string().as_bytes()),
            encode_segment(claims.to_string().as_bytes())
        );
        let signature = self.sign_bytes(signing_input.as_bytes())?;
        Ok(format!("{signing_input}.{}", encode_segment(&signature)))
    }

    /// Signs `payload` as a compact JWS with the header
    /// `{"alg":"ES256","typ":typ,"kid":...}`, for signed documents that are
    /// not tokens.
    ///
    /// Give such documents their own `typ`: token verification accepts only
    /// `JWT` or `JOSE`, so the document can never pass as a token.
    pub fn sign_jws(&self, typ: &str, payload: &[u8]) -> Result<String, IdentityError> {
        let header = json!({"alg": "ES256", "typ": typ, "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            encode_segment(header.to_string().as_bytes()),
            encode_segment(payload)
        );
        let signature = self.sign_bytes(signing_input.as_bytes())?;
        Ok(format!("{signing_input}.{}", encode_segment(&signature)))
    }

    /// Signs `message` and returns the JWS ECDSA signature `r || s`.
    pub(crate) fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, IdentityError> {
        let signature = self
            .key_pair
            .sign(&self.rng, message)
            .map_err(|_| key_error("ECDSA signing failed in the system crypto provider"))?;
        Ok(signature.as_ref().to_vec())
    }

    /// Returns the public half as a verification key.
    pub(crate) fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey::es256_from_point(self.kid.clone(), self.key_pair.public_key().as_ref())
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn load_key_file(path: &Path) -> Result<SigningKey, IdentityError> {
    let metadata = fs::metadata(path).map_err(|source| IdentityError::Io {
        operation: "inspect signing key file",
        path: path.to_path_buf(),
        source,
    })?;
    if !metadata.is_file() {
        return Err(key_error(&format!(
            "`{}` is not a regular file; point the key path at a PKCS#8 file \
             or at a path where Warden may create one",
            path.display()
        )));
    }
    check_owner_only(path, &metadata)?;
    let der = fs::read(path).map_err(|source| IdentityError::Io {
        operation: "read signing key file",
        path: path.to_path_buf(),
        source,
    })?;
    SigningKey::from_pkcs8(&der).map_err(|error| {
        key_error(&format!(
            "`{}` is unusable: {error}; restore the original file, or delete it \
             to create a new key (tokens signed with the old key stop verifying)",
            path.display()
        ))
    })
}

fn create_key_file(path: &Path) -> Result<SigningKey, IdentityError> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_private_dirs(&parent)?;

    let rng = SystemRandom::new();
    let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| key_error("failed to generate a P-256 key with the system random source"))?;

    // Write a temporary file and hard-link it into place: the link fails
    // when another process created the key first, and no reader ever sees
    // a partly written key.
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "signing-key".to_owned());
    let temporary = parent.join(format!(".{file_name}.{}.tmp", uuid::Uuid::new_v4()));
    write_private_file(&temporary, document.as_ref())?;
    let linked = fs::hard_link(&temporary, path);
    // A failed removal leaves only a stray copy with mode 0600 behind.
    let _ = fs::remove_file(&temporary);

    match linked {
        Ok(()) => SigningKey::from_pkcs8(document.as_ref()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => load_key_file(path),
        Err(source) => Err(IdentityError::Io {
            operation: "create signing key file",
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn create_private_dirs(dir: &Path) -> Result<(), IdentityError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| IdentityError::Io {
        operation: "create directory for signing key",
        path: dir.to_path_buf(),
        source,
    })
}

fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let io_error = |source| IdentityError::Io {
        operation: "write signing key file",
        path: path.to_path_buf(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_error)?;
    file.write_all(bytes).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

#[cfg(unix)]
fn check_owner_only(path: &Path, metadata: &fs::Metadata) -> Result<(), IdentityError> {
    use std::os::unix::fs::PermissionsExt as _;

    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(key_error(&format!(
            "`{}` has mode {mode:04o}, so other users can access the private key; \
             run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner_only(_path: &Path, _metadata: &fs::Metadata) -> Result<(), IdentityError> {
    // NOTE: file permissions are not checked on non-Unix systems.
    Ok(())
}

fn key_error(reason: &str) -> IdentityError {
    IdentityError::Key {
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_key_kid_is_rfc7638_thumbprint() {
        let key = SigningKey::generate().expect("generate key");
        let jwk = key.public_jwk(None);
        let canonical = warden_core::json::canonical(&json!({
            "crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"],
        }));
        let expected =
            encode_segment(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref());
        assert_eq!(key.kid(), expected);
    }

    #[test]
    fn signing_key_public_jwk_adds_use_when_given() {
        let key = SigningKey::generate().expect("generate key");
        assert_eq!(key.public_jwk(Some("jwt-svid"))["use"], "jwt-svid");
        assert!(key.public_jwk(None).get("use").is_none());
    }

    #[test]
    fn signing_key_public_jwk_has_no_private_member() {
        let key = SigningKey::generate().expect("generate key");
        assert!(key.public_jwk(None).get("d").is_none());
    }

    #[test]
    fn signing_key_sign_jwt_verifies_with_public_key() {
        let key = SigningKey::generate().expect("generate key");
        let token = key.sign_jwt(&json!({"sub": "x"})).expect("sign");
        let (signing_input, signature) = token.rsplit_once('.').expect("three segments");
        let signature =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
                .expect("base64url signature");
        assert!(
            key.verifying_key()
                .verify(signing_input.as_bytes(), &signature)
        );
    }

    #[test]
    fn signing_key_sign_jws_sets_type_and_verifies() {
        let key = SigningKey::generate().expect("generate key");
        let jws = key
            .sign_jws("example-document", br#"{"seq":1}"#)
            .expect("sign");
        let segments: Vec<&str> = jws.split('.').collect();
        assert_eq!(segments.len(), 3);
        let decode = |segment: &str| {
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, segment)
                .expect("base64url segment")
        };
        let header: Value = serde_json::from_slice(&decode(segments[0])).expect("header JSON");
        assert_eq!(
            header,
            json!({"alg": "ES256", "typ": "example-document", "kid": key.kid()})
        );
        assert_eq!(decode(segments[1]), br#"{"seq":1}"#);
        let (signing_input, _) = jws.rsplit_once('.').expect("three segments");
        assert!(
            key.verifying_key()
                .verify(signing_input.as_bytes(), &decode(segments[2]))
        );
    }

    #[test]
    fn load_reads_key_that_load_or_create_wrote() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("warden.pk8");
        let created = SigningKey::load_or_create(&path).expect("create key");
        let loaded = SigningKey::load(&path).expect("load key");
        assert_eq!(loaded.kid(), created.kid());
    }

    #[test]
    fn load_never_creates_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("missing.pk8");
        let error = SigningKey::load(&path).expect_err("missing key");
        assert!(matches!(error, IdentityError::Io { .. }), "{error:?}");
        assert!(!path.exists());
    }

    #[test]
    fn signing_key_sign_jwt_rejects_non_object() {
        let key = SigningKey::generate().expect("generate key");
        assert!(key.sign_jwt(&json!(["not", "claims"])).is_err());
    }

    #[test]
    fn signing_key_from_pkcs8_rejects_garbage() {
        let error = SigningKey::from_pkcs8(b"not a key").expect_err("garbage");
        assert!(matches!(error, IdentityError::Key { .. }), "{error:?}");
    }

    #[test]
    fn signing_key_debug_hides_private_key() {
        let key = SigningKey::generate().expect("generate key");
        let debug = format!("{key:?}");
        assert!(debug.contains(key.kid()), "{debug}");
        assert!(!debug.contains("key_pair"), "{debug}");
    }

    #[test]
    fn load_or_create_persists_same_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested/keys/warden.pk8");
        let first = SigningKey::load_or_create(&path).expect("create key");
        let second = SigningKey::load_or_create(&path).expect("load key");
        assert_eq!(first.kid(), second.kid());
    }

    #[cfg(unix)]
    #[test]
    fn load_or_create_sets_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys/warden.pk8");
        SigningKey::load_or_create(&path).expect("create key");
        let file_mode = fs::metadata(&path).expect("stat key").permissions().mode() & 0o777;
        assert_eq!(file_mode, 0o600);
        let dir_mode = fs::metadata(path.parent().expect("parent"))
            .expect("stat dir")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
    }

    #[test]
    fn load_or_create_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("warden.pk8");
        SigningKey::load_or_create(&path).expect("create key");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list dir")
            .map(|entry| entry.expect("dir entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("warden.pk8")]);
    }

    #[cfg(unix)]
    #[test]
    fn load_or_create_rejects_world_readable_file() {
        use std::os::unix::fs::PermissionsExt as _;

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("warden.pk8");
        SigningKey::load_or_create(&path).expect("create key");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = SigningKey::load_or_create(&path).expect_err("mode 0644");
        assert!(error.to_string().contains("chmod 600"), "{error}");
    }

    #[test]
    fn load_or_create_rejects_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let error = SigningKey::load_or_create(dir.path()).expect_err("directory");
        assert!(error.to_string().contains("not a regular file"), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn load_or_create_rejects_corrupt_file() {
        use std::os::unix::fs::PermissionsExt as _;

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("warden.pk8");
        fs::write(&path, b"garbage").expect("write file");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let error = SigningKey::load_or_create(&path).expect_err("corrupt key");
        assert!(error.to_string().contains("unusable"), "{error}");
    }
}
