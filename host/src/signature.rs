//! Plugin signatures: a `.wasm` file may come with `FILE.wasm.minisig`, made
//! by the standard `minisign` tool; config lists the public keys trusted to
//! sign (`[server] trusted_keys`, per plugin `[plugins.NAME] trusted_keys`)
//! and `[server] require_signature` refuses files without a good one.
//! Bundled plugins are part of the binary and need none.

use serde::Deserialize;

/// A minisign public key as `minisign -G` prints it (`RW…`), checked when
/// the config is read.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String")]
#[schemars(with = "String", example = &"RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3")]
pub struct TrustedKey {
    pub text: String,
    key: minisign_verify::PublicKey,
}

impl TryFrom<String> for TrustedKey {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let text = text.trim().to_string();
        let key = minisign_verify::PublicKey::from_base64(&text).map_err(|e| {
            format!("`{text}` is not a minisign public key ({e}); give the base64 line of the .pub file, `RW…`")
        })?;
        Ok(TrustedKey { text, key })
    }
}

impl PartialEq for TrustedKey {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// What a file's signature came to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", content = "key", rename_all = "snake_case")]
pub enum Signed {
    /// No `.minisig` beside the file.
    Unsigned,
    /// A signature no trusted key was given to check.
    Unverified,
    /// Verified with this trusted key (as configured).
    By(String),
}

impl std::fmt::Display for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signed::Unsigned => write!(f, "unsigned"),
            Signed::Unverified => write!(f, "signed, not verified (no trusted key configured)"),
            Signed::By(k) => write!(f, "signed by trusted key {k}"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("no signature: server.require_signature is on and there is no {0} beside the file (sign it with `minisign -S -m FILE.wasm`)")]
    Missing(String),
    #[error("signature {0} is malformed: {1}")]
    Malformed(String, String),
    #[error("signature {0} does not verify with any trusted key (the file changed after signing, or another key signed it)")]
    Invalid(String),
    #[error("signature {0} is by key {1}, which is not trusted for plugin `{2}`")]
    NotForPlugin(String, String, String),
    #[error("no signature: plugin `{1}` has its own trusted_keys, so its file must be signed by one of them and there is no {0} beside it (sign it with `minisign -S -m FILE.wasm`)")]
    MissingForPlugin(String, String),
}

/// Largest signature file read: minisign writes about 300 bytes; anything
/// much larger is not one, and is not read into memory whole.
pub const MAX_SIG_BYTES: u64 = 16 * 1024;

/// Reads a signature file through `open` (the caller's filesystem handle),
/// at most `MAX_SIG_BYTES`: `None` when there is none, a marker that fails
/// to decode when it is too large or not text.
pub fn read_sig<R: std::io::Read>(file: std::io::Result<R>) -> Option<String> {
    use std::io::Read as _;
    let mut text = String::new();
    let mut limited = file.ok()?.take(MAX_SIG_BYTES + 1);
    if limited.read_to_string(&mut text).is_err() || text.len() as u64 > MAX_SIG_BYTES {
        return Some("(not a minisign signature: too large or not text)".into());
    }
    Some(text)
}

/// When the signer says it signed: the `timestamp:` field minisign writes
/// into the trusted comment, which the signature covers (a plain `minisign
/// -S` writes one; a custom `-t` comment may not).
pub fn signed_at(sig: &str) -> Option<u64> {
    let signature = minisign_verify::Signature::decode(sig).ok()?;
    signature
        .trusted_comment()
        .split('\t')
        .find_map(|field| field.trim().strip_prefix("timestamp:"))
        .and_then(|t| t.trim().parse().ok())
}

/// The signature file of a plugin file.
pub fn sig_path(path: &std::path::Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".minisig");
    p.into()
}

/// Checks `bytes` against the signature text `sig` (the `.minisig` file,
/// if any) and the `keys` that may have signed it. A signature present is
/// always checked when there are keys to check it with, required or not.
pub fn check(
    bytes: &[u8],
    sig: Option<&str>,
    sig_name: &str,
    keys: &[&TrustedKey],
    required: bool,
) -> Result<Signed, SignatureError> {
    let Some(sig) = sig else {
        return if required {
            Err(SignatureError::Missing(sig_name.to_string()))
        } else {
            Ok(Signed::Unsigned)
        };
    };
    let signature = minisign_verify::Signature::decode(sig)
        .map_err(|e| SignatureError::Malformed(sig_name.to_string(), e.to_string()))?;
    if keys.is_empty() {
        return if required {
            Err(SignatureError::Invalid(sig_name.to_string()))
        } else {
            Ok(Signed::Unverified)
        };
    }
    keys.iter()
        .find(|k| k.key.verify(bytes, &signature, false).is_ok())
        .map(|k| Signed::By(k.text.clone()))
        .ok_or_else(|| SignatureError::Invalid(sig_name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // minisign's published test vector: this key signed the bytes `test`.
    const KEY: &str = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";
    const SIG: &str = "untrusted comment: signature from minisign secret key
RUQf6LRCGA9i559r3g7V1qNyJDApGip8MfqcadIgT9CuhV3EMhHoN1mGTkUidF/z7SrlQgXdy8ofjb7bNJJylDOocrCo8KLzZwo=
trusted comment: timestamp:1633700835\tfile:test\tprehashed
wLMDjy9FLAuxZ3q4NlEvkgtyhrr0gtTu6KC4KBJdITbbOeAi1zBIYo0v4iTgt8jJpIidRJnp94ABQkJAgAooBQ==";
    // Another valid key (a different key id).
    const OTHER: &str = "RWTP1ZAFHFEcsweWEIpuPJumV9zwRuwoPQ4rZbUjnIYRvS4trAe91Nn0";

    fn key(s: &str) -> TrustedKey {
        TrustedKey::try_from(s.to_string()).unwrap()
    }

    #[test]
    fn a_good_signature_names_its_key() {
        let k = key(KEY);
        assert_eq!(
            check(b"test", Some(SIG), "f.minisig", &[&key(OTHER), &k], true),
            Ok(Signed::By(KEY.into()))
        );
    }

    #[test]
    fn changed_bytes_wrong_key_missing_and_malformed_are_refused() {
        let (k, other) = (key(KEY), key(OTHER));
        let invalid = Err(SignatureError::Invalid("f.minisig".into()));
        assert_eq!(
            check(b"tesT", Some(SIG), "f.minisig", &[&k], false),
            invalid
        );
        assert_eq!(
            check(b"test", Some(SIG), "f.minisig", &[&other], false),
            invalid
        );
        // Required with no key to check it: not trusted.
        assert_eq!(check(b"test", Some(SIG), "f.minisig", &[], true), invalid);
        assert_eq!(
            check(b"test", None, "f.minisig", &[&k], true),
            Err(SignatureError::Missing("f.minisig".into()))
        );
        assert!(matches!(
            check(b"test", Some("not a signature"), "f.minisig", &[&k], false),
            Err(SignatureError::Malformed(..))
        ));
        for e in [
            check(b"test", None, "f.minisig", &[&k], true).unwrap_err(),
            check(b"tesT", Some(SIG), "f.minisig", &[&k], true).unwrap_err(),
        ] {
            assert!(e.to_string().contains("signature"), "{e}");
        }
    }

    #[test]
    fn unsigned_and_unverifiable_files_load_when_not_required() {
        assert_eq!(
            check(b"x", None, "f.minisig", &[], false),
            Ok(Signed::Unsigned)
        );
        assert_eq!(
            check(b"test", Some(SIG), "f.minisig", &[], false),
            Ok(Signed::Unverified)
        );
    }

    #[test]
    fn a_huge_signature_file_is_not_read_whole() {
        let huge = vec![b'A'; 10 << 20];
        let sig = read_sig(Ok(&huge[..])).unwrap();
        assert!(sig.len() < 100, "{}", sig.len());
        let k = key(KEY);
        assert!(matches!(
            check(b"test", Some(&sig), "f.minisig", &[&k], true),
            Err(SignatureError::Malformed(..))
        ));
        assert_eq!(read_sig(Ok(SIG.as_bytes())).as_deref(), Some(SIG));
        assert_eq!(
            read_sig::<&[u8]>(Err(std::io::ErrorKind::NotFound.into())),
            None
        );
    }

    #[test]
    fn the_signed_timestamp_is_read_from_the_trusted_comment() {
        assert_eq!(signed_at(SIG), Some(1633700835));
        assert_eq!(signed_at("not a signature"), None);
        let custom = SIG.replace("timestamp:1633700835\tfile:test\tprehashed", "release 1.2");
        assert_eq!(signed_at(&custom), None);
    }

    #[test]
    fn a_bad_key_in_config_names_itself() {
        let e = TrustedKey::try_from("RWnotakey".to_string()).unwrap_err();
        assert!(e.contains("RWnotakey") && e.contains("minisign"), "{e}");
    }
}
