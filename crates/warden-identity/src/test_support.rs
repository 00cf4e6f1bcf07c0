//! Keys and token builders shared by this crate's unit tests.
//!
//! The builders sign any header and payload, including ones Warden itself
//! would never produce, so tests can present forged and malformed tokens.

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair as _, RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaKeyPair, RsaPublicKeyComponents,
};
use serde_json::{Value, json};

use crate::jwt::encode_segment;
use crate::signing::SigningKey;

/// A 2048-bit RSA private key in PKCS#8 DER, generated once because ring
/// cannot generate RSA keys: `openssl genpkey -algorithm RSA -pkeyopt
/// rsa_keygen_bits:2048 -outform DER`, then `openssl pkcs8 -topk8 -nocrypt
/// -inform DER -outform DER` (genpkey writes PKCS#1 in DER form).
const RSA_2048_PKCS8: &[u8] = include_bytes!("../tests/fixtures/rsa-2048.pk8");

/// A private key of any algorithm a JWT-SVID bundle may hold.
pub(crate) enum TestKey {
    P256(EcdsaKeyPair),
    P384(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

impl TestKey {
    pub(crate) fn p256() -> TestKey {
        TestKey::P256(generate_ecdsa(&ECDSA_P256_SHA256_FIXED_SIGNING))
    }

    pub(crate) fn p384() -> TestKey {
        TestKey::P384(generate_ecdsa(&ECDSA_P384_SHA384_FIXED_SIGNING))
    }

    pub(crate) fn ed25519() -> TestKey {
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("Ed25519 key");
        TestKey::Ed25519(Ed25519KeyPair::from_pkcs8(document.as_ref()).expect("Ed25519 PKCS#8"))
    }

    pub(crate) fn rsa() -> TestKey {
        TestKey::Rsa(RsaKeyPair::from_pkcs8(RSA_2048_PKCS8).expect("RSA fixture"))
    }

    /// Returns the public JWK with `kid` and, when given, `use`.
    pub(crate) fn jwk(&self, kid: &str, key_use: Option<&str>) -> Value {
        let mut jwk = match self {
            TestKey::P256(pair) => ec_jwk("P-256", pair.public_key().as_ref()),
            TestKey::P384(pair) => ec_jwk("P-384", pair.public_key().as_ref()),
            TestKey::Ed25519(pair) => json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": encode_segment(pair.public_key().as_ref()),
            }),
            TestKey::Rsa(pair) => {
                let components = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                json!({
                    "kty": "RSA",
                    "n": encode_segment(&components.n),
                    "e": encode_segment(&components.e),
                })
            }
        };
        jwk["kid"] = json!(kid);
        if let Some(key_use) = key_use {
            jwk["use"] = json!(key_use);
        }
        jwk
    }

    /// Returns the raw public key bytes: the SEC1 point, the Ed25519 key
    /// or the DER RSAPublicKey.
    pub(crate) fn public_key_bytes(&self) -> Vec<u8> {
        match self {
            TestKey::P256(pair) | TestKey::P384(pair) => pair.public_key().as_ref().to_vec(),
            TestKey::Ed25519(pair) => pair.public_key().as_ref().to_vec(),
            TestKey::Rsa(pair) => pair.public().as_ref().to_vec(),
        }
    }

    /// Signs `message`. For RSA keys, `pss` selects PS256 over RS256.
    pub(crate) fn sign(&self, message: &[u8], pss: bool) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            TestKey::P256(pair) | TestKey::P384(pair) => pair
                .sign(&rng, message)
                .expect("ECDSA sign")
                .as_ref()
                .to_vec(),
            TestKey::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
            TestKey::Rsa(pair) => {
                let padding: &dyn ring::signature::RsaEncoding = if pss {
                    &RSA_PSS_SHA256
                } else {
                    &RSA_PKCS1_SHA256
                };
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(padding, &rng, message, &mut signature)
                    .expect("RSA sign");
                signature
            }
        }
    }

    /// Builds a compact JWS from raw header and payload JSON text, signed
    /// by this key (RS256 for RSA).
    pub(crate) fn token(&self, header: &str, payload: &str) -> String {
        self.token_with(header, payload, false)
    }

    /// Like [`TestKey::token`], with PSS padding for RSA when `pss` is set.
    pub(crate) fn token_with(&self, header: &str, payload: &str, pss: bool) -> String {
        let signing_input = format!(
            "{}.{}",
            encode_segment(header.as_bytes()),
            encode_segment(payload.as_bytes())
        );
        let signature = self.sign(signing_input.as_bytes(), pss);
        format!("{signing_input}.{}", encode_segment(&signature))
    }
}

/// Builds a compact JWS with any header, signed by Warden's signing key.
pub(crate) fn es256_token(key: &SigningKey, header: &Value, payload: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        encode_segment(header.to_string().as_bytes()),
        encode_segment(payload.to_string().as_bytes())
    );
    let signature = key.sign_bytes(signing_input.as_bytes()).expect("sign");
    format!("{signing_input}.{}", encode_segment(&signature))
}

/// Decodes the payload of `token`, lets `change` edit it, and re-encodes it
/// while keeping the original header and signature.
pub(crate) fn tamper_payload(token: &str, change: impl FnOnce(&mut Value)) -> String {
    use base64::Engine as _;

    let mut segments: Vec<String> = token.split('.').map(str::to_owned).collect();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&segments[1])
        .expect("base64url payload");
    let mut payload: Value = serde_json::from_slice(&bytes).expect("JSON payload");
    change(&mut payload);
    segments[1] = encode_segment(payload.to_string().as_bytes());
    segments.join(".")
}

fn generate_ecdsa(algorithm: &'static ring::signature::EcdsaSigningAlgorithm) -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let document = EcdsaKeyPair::generate_pkcs8(algorithm, &rng).expect("ECDSA key");
    EcdsaKeyPair::from_pkcs8(algorithm, document.as_ref(), &rng).expect("ECDSA PKCS#8")
}

fn ec_jwk(curve: &str, point: &[u8]) -> Value {
    let coordinate_len = (point.len() - 1) / 2;
    json!({
        "kty": "EC",
        "crv": curve,
        "x": encode_segment(&point[1..=coordinate_len]),
        "y": encode_segment(&point[1 + coordinate_len..]),
    })
}
