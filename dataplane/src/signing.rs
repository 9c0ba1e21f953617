//! Signed responses: a Project with signing on gets `X-Sluice-Timestamp` on every response
//! and an HMAC-SHA256 of `<timestamp>.<body>` with its signing secret, so a client holding the
//! secret can tell that an answer came from its gateway unchanged. A whole body's signature is
//! the `X-Sluice-Signature` header (`v1=<hex>`); a stream's cannot be known when its headers
//! leave, so it ends with an SSE comment (`: sluice-signature t=<timestamp> v1=<hex>`), which
//! SSE parsers (and so every SDK) skip, over every byte before it. During a rotation's grace
//! period there is one `v1=` per secret (the new one first), so clients holding either verify.

use bytes::{Bytes, BytesMut};
use hmac::{Hmac, Mac};
use hyper::header::{HeaderName, HeaderValue};
use sha2::Sha256;

/// `X-Sluice-Timestamp`: Unix seconds when the response was signed.
pub static TIMESTAMP: HeaderName = HeaderName::from_static("x-sluice-timestamp");
/// `X-Sluice-Signature`: `v1=<hex>[,v1=<hex>]`, or `trailer` on a stream.
pub static SIGNATURE: HeaderName = HeaderName::from_static("x-sluice-signature");
/// The start of a stream's closing signature comment.
pub const STREAM_TRAILER_PREFIX: &str = ": sluice-signature ";

/// The secrets a response is signed with now: the current one, and the previous one while its
/// grace period lasts.
#[derive(Clone)]
pub struct SigningKeys {
    keys: Vec<Vec<u8>>,
}

impl SigningKeys {
    /// Signs with each of `secrets` (the newest first); `None` when there is none.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a [u8]>) -> Option<Self> {
        let keys: Vec<Vec<u8>> = secrets.into_iter().filter(|s| !s.is_empty()).map(<[u8]>::to_vec).collect();
        (!keys.is_empty()).then_some(Self { keys })
    }

    fn macs(&self, timestamp: i64) -> Vec<Hmac<Sha256>> {
        let prefix = format!("{timestamp}.");
        self.keys
            .iter()
            .filter_map(|key| Hmac::<Sha256>::new_from_slice(key).ok())
            .map(|mut mac| {
                mac.update(prefix.as_bytes());
                mac
            })
            .collect()
    }

    /// The `X-Sluice-Signature` value of a whole `body` sent at `timestamp`.
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> HeaderValue {
        let signatures = self.macs(timestamp).into_iter().map(|mut mac| {
            mac.update(body);
            mac
        });
        // Only `v1=`, hex digits and commas: always a valid header value.
        HeaderValue::from_str(&joined(signatures, ",")).unwrap_or_else(|_| HeaderValue::from_static("v1="))
    }

    /// A signer for a stream sent from `timestamp`.
    pub fn stream(&self, timestamp: i64) -> StreamSigner {
        StreamSigner { timestamp, macs: self.macs(timestamp) }
    }
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKeys({} secrets, redacted)", self.keys.len())
    }
}

/// Signs a stream as it passes: every byte sent, then the closing comment.
pub struct StreamSigner {
    timestamp: i64,
    macs: Vec<Hmac<Sha256>>,
}

impl StreamSigner {
    /// Takes in bytes sent to the client.
    pub fn update(&mut self, bytes: &[u8]) {
        for mac in &mut self.macs {
            mac.update(bytes);
        }
    }

    /// The closing comment, over everything taken in.
    pub fn trailer(self) -> Bytes {
        let mut out = BytesMut::with_capacity(40 + 68 * self.macs.len());
        out.extend_from_slice(STREAM_TRAILER_PREFIX.as_bytes());
        out.extend_from_slice(format!("t={} ", self.timestamp).as_bytes());
        out.extend_from_slice(joined(self.macs.into_iter(), " ").as_bytes());
        out.extend_from_slice(b"\n\n");
        out.freeze()
    }
}

fn joined(macs: impl Iterator<Item = Hmac<Sha256>>, separator: &str) -> String {
    macs.map(|mac| format!("v1={}", hex::encode(mac.finalize().into_bytes()))).collect::<Vec<_>>().join(separator)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any length");
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn a_whole_body_is_signed_with_every_secret_newest_first() {
        let keys = SigningKeys::new([b"new".as_slice(), b"old".as_slice()]).expect("keys");
        let header = keys.sign(1_700_000_000, br#"{"id":"x"}"#);
        let expected = format!(
            "v1={},v1={}",
            reference(b"new", 1_700_000_000, br#"{"id":"x"}"#),
            reference(b"old", 1_700_000_000, br#"{"id":"x"}"#)
        );
        assert_eq!(header.to_str().expect("ascii"), expected);
        // One changed byte, or another time, gives another signature.
        assert_ne!(keys.sign(1_700_000_000, br#"{"id":"y"}"#), header);
        assert_ne!(keys.sign(1_700_000_001, br#"{"id":"x"}"#), header);
    }

    #[test]
    fn a_stream_signature_covers_every_byte_however_it_was_chunked() {
        let keys = SigningKeys::new([b"secret".as_slice()]).expect("keys");
        let body = b"data: {\"a\":1}\n\ndata: [DONE]\n\n";
        let mut whole = keys.stream(42);
        whole.update(body);
        let mut pieces = keys.stream(42);
        for chunk in body.chunks(3) {
            pieces.update(chunk);
        }
        let trailer = whole.trailer();
        assert_eq!(trailer, pieces.trailer());
        let text = std::str::from_utf8(&trailer).expect("ascii");
        assert_eq!(text, format!(": sluice-signature t=42 v1={}\n\n", reference(b"secret", 42, body)));
    }

    #[test]
    fn no_secret_means_no_signing_and_debug_shows_none() {
        assert!(SigningKeys::new([b"".as_slice()]).is_none());
        let keys = SigningKeys::new([b"topsecret".as_slice()]).expect("keys");
        assert!(!format!("{keys:?}").contains("topsecret"));
    }
}
