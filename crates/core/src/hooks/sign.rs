//! Standard Webhooks 1.0 signing: `webhook-signature` is `v1,` and the
//! base64 of HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`,
//! keyed with the bytes of the `whsec_…` secret; several signatures are
//! separated by spaces (a rotation's overlap).

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::error::{CoreError, Result};
use crate::keys::random_bytes;

/// A signing secret's key bytes. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct HookSecret(Vec<u8>);

impl std::fmt::Debug for HookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookSecret([redacted])")
    }
}

const PREFIX: &str = "whsec_";

impl HookSecret {
    /// A fresh secret of 32 random bytes.
    pub fn generate() -> Result<Self> {
        let bytes = random_bytes::<32>()
            .map_err(|e| CoreError::Internal(format!("cannot make a secret: {e}")))?;
        Ok(Self(bytes.to_vec()))
    }

    /// Reads a `whsec_…` secret (as Standard Webhooks libraries take it).
    pub fn parse(text: &str) -> Option<Self> {
        let encoded = text.strip_prefix(PREFIX).unwrap_or(text);
        let bytes = STANDARD.decode(encoded).ok()?;
        (bytes.len() >= 24).then_some(Self(bytes))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The `whsec_…` form shown to the operator once.
    pub fn to_text(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// `v1,<base64>` of this secret over one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }
}

/// The three Standard Webhooks headers of one attempt, signed with every
/// secret given (the current one first).
pub fn headers(
    secrets: &[HookSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let signature = secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ");
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = HookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_secret_round_trips_and_short_ones_are_refused() {
        let s = HookSecret::generate().unwrap();
        assert!(s.to_text().starts_with("whsec_"));
        assert_eq!(HookSecret::parse(&s.to_text()), Some(s));
        assert_eq!(HookSecret::parse("whsec_c2hvcnQ="), None);
        assert!(format!("{:?}", HookSecret::generate().unwrap()).contains("redacted"));
    }

    #[test]
    fn an_overlap_signs_with_both() {
        let (a, b) = (
            HookSecret::generate().unwrap(),
            HookSecret::generate().unwrap(),
        );
        let h = headers(&[a.clone(), b.clone()], "evt_1", 10, b"{}");
        let sig = &h[2].1;
        assert_eq!(
            sig,
            &format!(
                "{} {}",
                a.sign("evt_1", 10, b"{}"),
                b.sign("evt_1", 10, b"{}")
            )
        );
    }
}
