//! JSON Web Keys (RFC 7517) and SPIFFE bundles as sets of verification keys.
//!
//! A [`VerifyingKey`] fixes its algorithm when it is loaded, from the key
//! type and curve (or, for RSA, from the JWK's `alg`), so a token header
//! can never choose how its signature is checked. Symmetric (`oct`) keys
//! and JWKs that carry private key members are rejected at load.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

use crate::error::IdentityError;

/// The JWK `use` value that marks a SPIFFE bundle key for JWT-SVIDs.
pub const JWT_SVID_USE: &str = "jwt-svid";

/// Minimum RSA modulus size accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Maximum RSA modulus size accepted, in bits (ring's verifiers stop here).
pub const MAX_RSA_BITS: usize = 8192;

/// A JWS signature algorithm that Warden verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// Ed25519.
    EdDSA,
}

impl Algorithm {
    /// Returns the JWS `alg` name, e.g. `ES256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// Looks up a JWS `alg` name; returns `None` for names Warden does not
    /// verify, including `none` and the HMAC algorithms.
    pub fn from_jws_name(name: &str) -> Option<Algorithm> {
        let algorithm = match name {
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "EdDSA" => Algorithm::EdDSA,
            _ => return None,
        };
        Some(algorithm)
    }

    fn is_rsa(self) -> bool {
        matches!(
            self,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        )
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One JWT verification key taken from a JWK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    /// The JWK `kid`, when present.
    pub kid: Option<String>,
    /// The only algorithm this key verifies.
    pub algorithm: Algorithm,
    /// The JWK `use`, when present (`jwt-svid`, `x509-svid`, `sig`, ...).
    pub key_use: Option<String>,
    material: KeyMaterial,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyMaterial {
    /// Uncompressed SEC1 point `04 || x || y`.
    Ec(Vec<u8>),
    /// The 32-byte Ed25519 public key.
    Ed25519(Vec<u8>),
    /// Big-endian modulus and exponent without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

impl VerifyingKey {
    /// Parses one public JWK of type EC (P-256, P-384), OKP (Ed25519) or RSA.
    pub fn from_jwk(jwk: &Value) -> Result<VerifyingKey, IdentityError> {
        let object = jwk
            .as_object()
            .ok_or_else(|| invalid_jwks("the key is not a JSON object"))?;
        let kid = optional_string(object, "kid")?;
        if kid.as_deref() == Some("") {
            return Err(invalid_jwks("`kid` is an empty string"));
        }
        let key_use = optional_string(object, "use")?;
        let alg = optional_string(object, "alg")?;
        let kty = optional_string(object, "kty")?
            .ok_or_else(|| invalid_jwks("the key has no `kty` member"))?;

        let (algorithm, material) = match kty.as_str() {
            "EC" => parse_ec(object, alg.as_deref())?,
            "OKP" => parse_okp(object, alg.as_deref())?,
            "RSA" => parse_rsa(object, alg.as_deref())?,
            "oct" => {
                return Err(invalid_jwks(
                    "symmetric keys (kty `oct`) are not accepted, because anyone \
                     who can read the key set could sign tokens with them",
                ));
            }
            other => {
                return Err(invalid_jwks(&format!(
                    "key type `{other}` is not supported (EC, OKP or RSA)"
                )));
            }
        };

        Ok(VerifyingKey {
            kid,
            algorithm,
            key_use,
            material,
        })
    }

    /// Builds a P-256 key from its uncompressed SEC1 point, as ring's
    /// `EcdsaKeyPair::public_key` returns it.
    pub(crate) fn es256_from_point(kid: String, point: &[u8]) -> VerifyingKey {
        VerifyingKey {
            kid: Some(kid),
            algorithm: Algorithm::ES256,
            key_use: None,
            material: KeyMaterial::Ec(point.to_vec()),
        }
    }

    /// Returns true when the key may verify JWT-SVIDs: its `use` is absent
    /// (a plain JWK set) or `jwt-svid`.
    pub fn is_jwt_svid_key(&self) -> bool {
        match self.key_use.as_deref() {
            None => true,
            Some(key_use) => key_use == JWT_SVID_USE,
        }
    }

    /// Verifies a JWS `signature` over `message` with this key's algorithm.
    ///
    /// ECDSA signatures are the JWS form, the fixed-width `r || s`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match (&self.material, self.algorithm) {
            (KeyMaterial::Ec(point), Algorithm::ES256) => verify_unparsed(
                &signature::ECDSA_P256_SHA256_FIXED,
                point,
                message,
                signature,
            ),
            (KeyMaterial::Ec(point), Algorithm::ES384) => verify_unparsed(
                &signature::ECDSA_P384_SHA384_FIXED,
                point,
                message,
                signature,
            ),
            (KeyMaterial::Ed25519(public_key), Algorithm::EdDSA) => {
                verify_unparsed(&signature::ED25519, public_key, message, signature)
            }
            (KeyMaterial::Rsa { n, e }, algorithm) => {
                let parameters: &signature::RsaParameters = match algorithm {
                    Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
                    Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                RsaPublicKeyComponents { n, e }
                    .verify(parameters, message, signature)
                    .is_ok()
            }
            // The public `algorithm` field was changed to one that the key
            // material cannot verify.
            _ => false,
        }
    }
}

fn verify_unparsed(
    algorithm: &'static dyn signature::VerificationAlgorithm,
    public_key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> bool {
    UnparsedPublicKey::new(algorithm, public_key)
        .verify(message, signature)
        .is_ok()
}

/// A parsed JWK set, such as a SPIFFE trust bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwks {
    keys: Vec<VerifyingKey>,
}

impl Jwks {
    /// Parses a JWK set object `{"keys": [...]}`; other members such as
    /// `spiffe_refresh_hint` are ignored.
    ///
    /// Every key must parse, and two JWT-SVID keys may not share a `kid`.
    pub fn from_json(value: &Value) -> Result<Jwks, IdentityError> {
        let keys_value = value
            .as_object()
            .ok_or_else(|| invalid_jwks("the key set is not a JSON object"))?
            .get("keys")
            .ok_or_else(|| invalid_jwks("the key set has no `keys` member"))?;
        let entries = keys_value
            .as_array()
            .ok_or_else(|| invalid_jwks("`keys` is not an array"))?;

        let mut keys = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let key = VerifyingKey::from_jwk(entry).map_err(|error| match error {
                IdentityError::InvalidJwks { reason } => invalid_jwks(&format!(
                    "key {index}{}: {reason}",
                    describe_entry_kid(entry)
                )),
                other => other,
            })?;
            if key.is_jwt_svid_key() && key.kid.is_some() {
                let duplicate = keys
                    .iter()
                    .any(|seen: &VerifyingKey| seen.is_jwt_svid_key() && seen.kid == key.kid);
                if duplicate {
                    return Err(invalid_jwks(&format!(
                        "key {index}{}: another JWT key has the same `kid`",
                        describe_entry_kid(entry)
                    )));
                }
            }
            keys.push(key);
        }
        Ok(Jwks { keys })
    }

    /// Reads and parses a JWK set file, rejecting duplicate JSON keys.
    pub fn from_file(path: &Path) -> Result<Jwks, IdentityError> {
        let bytes = std::fs::read(path).map_err(|source| IdentityError::Io {
            operation: "read JWK set file",
            path: path.to_path_buf(),
            source,
        })?;
        let value = warden_core::json::parse_strict(&bytes).map_err(|error| {
            invalid_jwks(&format!(
                "file `{}` is not valid JSON: {error}",
                path.display()
            ))
        })?;
        Jwks::from_json(&value)
    }

    /// Returns every key of the set, including keys not meant for JWTs.
    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    /// Returns the keys that may verify JWT-SVIDs (see
    /// [`VerifyingKey::is_jwt_svid_key`]).
    pub fn jwt_svid_keys(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.keys.iter().filter(|key| key.is_jwt_svid_key())
    }
}

fn parse_ec(
    object: &Map<String, Value>,
    alg: Option<&str>,
) -> Result<(Algorithm, KeyMaterial), IdentityError> {
    reject_private_members(object, &["d"])?;
    let curve = optional_string(object, "crv")?
        .ok_or_else(|| invalid_jwks("the EC key has no `crv` member"))?;
    let (algorithm, coordinate_len) = match curve.as_str() {
        "P-256" => (Algorithm::ES256, 32),
        "P-384" => (Algorithm::ES384, 48),
        other => {
            return Err(invalid_jwks(&format!(
                "EC curve `{other}` is not supported (P-256 or P-384)"
            )));
        }
    };
    check_declared_alg(alg, algorithm)?;

    let x = fixed_length_member(object, "x", coordinate_len)?;
    let y = fixed_length_member(object, "y", coordinate_len)?;
    let mut point = Vec::with_capacity(1 + 2 * coordinate_len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Ok((algorithm, KeyMaterial::Ec(point)))
}

fn parse_okp(
    object: &Map<String, Value>,
    alg: Option<&str>,
) -> Result<(Algorithm, KeyMaterial), IdentityError> {
    reject_private_members(object, &["d"])?;
    let curve = optional_string(object, "crv")?
        .ok_or_else(|| invalid_jwks("the OKP key has no `crv` member"))?;
    if curve != "Ed25519" {
        return Err(invalid_jwks(&format!(
            "OKP curve `{curve}` is not supported (Ed25519)"
        )));
    }
    check_declared_alg(alg, Algorithm::EdDSA)?;
    let x = fixed_length_member(object, "x", 32)?;
    Ok((Algorithm::EdDSA, KeyMaterial::Ed25519(x)))
}

fn parse_rsa(
    object: &Map<String, Value>,
    alg: Option<&str>,
) -> Result<(Algorithm, KeyMaterial), IdentityError> {
    reject_private_members(object, &["d", "p", "q", "dp", "dq", "qi", "oth"])?;
    let algorithm = match alg {
        None => Algorithm::RS256,
        Some(name) => Algorithm::from_jws_name(name)
            .filter(|algorithm| algorithm.is_rsa())
            .ok_or_else(|| {
                invalid_jwks(&format!(
                    "`alg` `{name}` does not fit an RSA key (RS256, RS384, RS512, PS256, PS384 or PS512)"
                ))
            })?,
    };

    let n = strip_leading_zeros(decode_member(object, "n")?);
    let e = strip_leading_zeros(decode_member(object, "e")?);
    let bits = bit_length(&n);
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(invalid_jwks(&format!(
            "the RSA modulus has {bits} bits; use {MIN_RSA_BITS} to {MAX_RSA_BITS} bits"
        )));
    }
    if e.is_empty() {
        return Err(invalid_jwks("the RSA exponent `e` is zero"));
    }
    Ok((algorithm, KeyMaterial::Rsa { n, e }))
}

/// Rejects an `alg` member that names a different algorithm than the key
/// type implies.
fn check_declared_alg(alg: Option<&str>, implied: Algorithm) -> Result<(), IdentityError> {
    match alg {
        Some(name) if name != implied.as_str() => Err(invalid_jwks(&format!(
            "`alg` `{name}` does not fit this key, which verifies {implied} only"
        ))),
        _ => Ok(()),
    }
}

fn reject_private_members(
    object: &Map<String, Value>,
    members: &[&str],
) -> Result<(), IdentityError> {
    if let Some(member) = members.iter().find(|member| object.contains_key(**member)) {
        return Err(invalid_jwks(&format!(
            "the key contains the private member `{member}`; publish only the public key"
        )));
    }
    Ok(())
}

fn optional_string(
    object: &Map<String, Value>,
    member: &str,
) -> Result<Option<String>, IdentityError> {
    match object.get(member) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(invalid_jwks(&format!("`{member}` is not a string"))),
    }
}

fn decode_member(object: &Map<String, Value>, member: &str) -> Result<Vec<u8>, IdentityError> {
    let encoded = optional_string(object, member)?
        .ok_or_else(|| invalid_jwks(&format!("the key has no `{member}` member")))?;
    URL_SAFE_NO_PAD
        .decode(encoded.as_bytes())
        .map_err(|error| invalid_jwks(&format!("`{member}` is not unpadded base64url: {error}")))
}

fn fixed_length_member(
    object: &Map<String, Value>,
    member: &str,
    expected_len: usize,
) -> Result<Vec<u8>, IdentityError> {
    let bytes = decode_member(object, member)?;
    if bytes.len() != expected_len {
        return Err(invalid_jwks(&format!(
            "`{member}` is {} bytes long, expected {expected_len}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|byte| **byte == 0).count();
    bytes.drain(..zeros);
    bytes
}

fn bit_length(big_endian: &[u8]) -> usize {
    match big_endian.first() {
        None => 0,
        Some(first) => big_endian.len() * 8 - first.leading_zeros() as usize,
    }
}

fn describe_entry_kid(entry: &Value) -> String {
    match entry.get("kid").and_then(Value::as_str) {
        Some(kid) => format!(" (kid `{kid}`)"),
        None => String::new(),
    }
}

fn invalid_jwks(reason: &str) -> IdentityError {
    IdentityError::InvalidJwks {
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::signing::SigningKey;

    fn ec_jwk() -> Value {
        SigningKey::generate()
            .expect("generate key")
            .public_jwk(Some(JWT_SVID_USE))
    }

    #[test]
    fn jwks_rejects_oct_key() {
        let set = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]});
        let error = Jwks::from_json(&set).expect_err("oct must be rejected");
        assert!(error.to_string().contains("kty `oct`"), "{error}");
    }

    #[test]
    fn jwks_rejects_private_member() {
        let mut jwk = ec_jwk();
        jwk["d"] = json!("AAAA");
        let error = Jwks::from_json(&json!({"keys": [jwk]})).expect_err("private key");
        assert!(error.to_string().contains("private member `d`"), "{error}");
    }

    #[test]
    fn jwks_rejects_alg_conflicting_with_curve() {
        let mut jwk = ec_jwk();
        jwk["alg"] = json!("ES384");
        assert!(Jwks::from_json(&json!({"keys": [jwk]})).is_err());
    }

    #[test]
    fn jwks_rejects_hmac_alg_on_rsa_key() {
        let n = URL_SAFE_NO_PAD.encode([0xff_u8; 256]);
        let set = json!({"keys": [{"kty": "RSA", "n": n, "e": "AQAB", "alg": "HS256"}]});
        let error = Jwks::from_json(&set).expect_err("HS256 on RSA");
        assert!(
            error.to_string().contains("does not fit an RSA key"),
            "{error}"
        );
    }

    #[test]
    fn jwks_rejects_short_rsa_modulus() {
        let n = URL_SAFE_NO_PAD.encode([0xff_u8; 128]);
        let set = json!({"keys": [{"kty": "RSA", "n": n, "e": "AQAB"}]});
        let error = Jwks::from_json(&set).expect_err("1024-bit RSA");
        assert!(error.to_string().contains("1024 bits"), "{error}");
    }

    #[test]
    fn jwks_rsa_without_alg_defaults_to_rs256() {
        let n = URL_SAFE_NO_PAD.encode([0xff_u8; 256]);
        let set = json!({"keys": [{"kty": "RSA", "n": n, "e": "AQAB"}]});
        let jwks = Jwks::from_json(&set).expect("valid RSA key");
        assert_eq!(jwks.keys()[0].algorithm, Algorithm::RS256);
    }

    #[test]
    fn jwks_rejects_wrong_coordinate_length() {
        let mut jwk = ec_jwk();
        jwk["x"] = json!(URL_SAFE_NO_PAD.encode([1_u8; 31]));
        let error = Jwks::from_json(&json!({"keys": [jwk]})).expect_err("short x");
        assert!(error.to_string().contains("expected 32"), "{error}");
    }

    #[test]
    fn jwks_rejects_duplicate_kid() {
        let jwk = ec_jwk();
        let error =
            Jwks::from_json(&json!({"keys": [jwk.clone(), jwk]})).expect_err("duplicate kid");
        assert!(error.to_string().contains("same `kid`"), "{error}");
    }

    #[test]
    fn jwks_rejects_missing_keys_member() {
        assert!(Jwks::from_json(&json!({"spiffe_refresh_hint": 300})).is_err());
    }

    #[test]
    fn jwks_marks_x509_svid_key_unusable_for_jwt() {
        let jwks = Jwks::from_json(&json!({"keys": [ec_jwk()]})).expect("valid set");
        assert!(jwks.keys()[0].is_jwt_svid_key());

        let mut x509 = ec_jwk();
        x509["use"] = json!("x509-svid");
        let jwks = Jwks::from_json(&json!({"keys": [x509]})).expect("valid set");
        assert!(!jwks.keys()[0].is_jwt_svid_key());
        assert_eq!(jwks.jwt_svid_keys().count(), 0);
    }

    #[test]
    fn jwks_from_file_rejects_duplicate_json_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bundle.json");
        std::fs::write(&path, br#"{"keys":[],"keys":[]}"#).expect("write file");
        let error = Jwks::from_file(&path).expect_err("duplicate keys");
        assert!(error.to_string().contains("duplicate key"), "{error}");
    }

    #[test]
    fn jwks_from_file_reads_bundle() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bundle.json");
        let bundle = json!({"keys": [ec_jwk()], "spiffe_refresh_hint": 300});
        std::fs::write(&path, bundle.to_string()).expect("write file");
        let jwks = Jwks::from_file(&path).expect("valid bundle");
        assert_eq!(jwks.keys().len(), 1);
    }

    #[test]
    fn jwks_from_file_missing_names_path() {
        let error = Jwks::from_file(Path::new("/nonexistent/bundle.json")).expect_err("missing");
        assert!(
            error.to_string().contains("/nonexistent/bundle.json"),
            "{error}"
        );
    }
}
