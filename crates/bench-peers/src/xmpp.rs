//! XMPP over WebSocket (RFC 7395), as ejabberd's `/ws` handler speaks it,
//! and ejabberd's `/api/register` to create users in bulk.
//!
//! Over WebSocket (subprotocol `xmpp`) every frame is one whole XML
//! element: `<open/>` and `<close/>` in the framing namespace replace the
//! stream header and footer, and each stanza is its own frame. That makes
//! the client small enough to write by hand: the few stanzas the bench
//! sends are `format!`ed strings (every interpolated value escaped by
//! `quick_xml::escape`), and what the server sends is parsed by quick-xml
//! into the handful of [`Stanza`] kinds the bench acts on; everything else
//! is [`Stanza::Other`].
//!
//! A connection is: `<open/>` → `<open/>` + `<stream:features/>` (SASL
//! mechanisms) → `<auth mechanism='PLAIN'>` (base64 of
//! `\0user\0password`) → `<success/>` → `<open/>` again → features with
//! `<bind/>` → `<iq type='set'><bind><resource/></bind></iq>` → the bound
//! JID → initial `<presence/>`, which the server reflects to the user's
//! available resources, this one included: the connection counts as open
//! once its own presence came back (from then on, messages to the user are
//! routed to it instead of offline storage). A chat message is
//! `<message to='USER@DOMAIN' type='chat' id='…'><body>…</body></message>`.
//! ejabberd pings WebSocket clients at the WebSocket level, which
//! tungstenite answers while reading.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt, TryStreamExt, stream};
use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use serde_json::json;

use crate::PeerCtx;
use crate::ws::{self, Message, Ws};

/// The virtual host of `scripts/peers/ejabberd/ejabberd.yml`.
pub(crate) const DOMAIN: &str = "localhost";

/// The password of every bench user.
pub(crate) const PASSWORD: &str = "unimsg-bench-password";

/// `/api/register` calls in flight at once.
const REGISTER_CONCURRENCY: usize = 16;

/// Longest wait for the whole login.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// What the bench recognises in a frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stanza {
    /// `<open/>` of the framing namespace.
    Open,
    /// `<close/>`: the server ends the stream.
    Close,
    /// `<stream:features/>`.
    Features { mechanisms: Vec<String>, bind: bool },
    /// SASL `<success/>`.
    Success,
    /// SASL `<failure/>`, with its condition.
    Failure(String),
    Iq {
        kind: String,
        id: String,
        /// `<bind><jid>` of a bind result.
        jid: Option<String>,
    },
    Message {
        from: Option<String>,
        id: Option<String>,
        kind: Option<String>,
        body: Option<String>,
    },
    Presence {
        from: Option<String>,
        kind: Option<String>,
    },
    /// `<stream:error/>`, with its condition.
    StreamError(String),
    /// Anything else, by element name.
    Other(String),
}

/// Parses one frame (one element) from the server.
pub(crate) fn parse(frame: &str) -> Result<Stanza> {
    let mut reader = Reader::from_str(frame);
    let mut top: Option<Top> = None;
    // Local names of the open elements below the top one.
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut found = Found::default();
    loop {
        let event = reader
            .read_event()
            .with_context(|| format!("malformed XML from the server: {frame}"))?;
        match event {
            Event::Start(e) if top.is_none() => top = Some(Top::from(&e)?),
            Event::Empty(e) if top.is_none() => {
                top = Some(Top::from(&e)?);
                break;
            }
            Event::Start(e) => {
                found.open(&local_name(&e), path.len());
                path.push(local_name(&e));
                text.clear();
            }
            Event::Empty(e) => {
                let name = local_name(&e);
                found.open(&name, path.len());
                found.close(&name, &path, "");
            }
            Event::Text(t) => text.push_str(&t.xml10_content()),
            Event::CData(c) => text.push_str(&c.xml10_content()),
            Event::GeneralRef(r) => match r.resolve_char_ref()? {
                Some(ch) => text.push(ch),
                None => match resolve_predefined_entity(&r) {
                    Some(s) => text.push_str(s),
                    None => bail!("unknown entity &{};", &*r),
                },
            },
            Event::End(_) => match path.pop() {
                Some(name) => {
                    found.close(&name, &path, &text);
                    text.clear();
                }
                None => break,
            },
            Event::Eof => break,
            _ => {}
        }
    }
    let Some(top) = top else {
        bail!("no element in a frame from the server: {frame:?}");
    };
    Ok(match top.name.as_str() {
        "open" => Stanza::Open,
        "close" => Stanza::Close,
        "features" => Stanza::Features {
            mechanisms: found.mechanisms,
            bind: found.bind,
        },
        "success" => Stanza::Success,
        "failure" => Stanza::Failure(found.first_child.unwrap_or_default()),
        "iq" => Stanza::Iq {
            kind: top.kind.unwrap_or_default(),
            id: top.id.unwrap_or_default(),
            jid: found.jid,
        },
        "message" => Stanza::Message {
            from: top.from,
            id: top.id,
            kind: top.kind,
            body: found.body,
        },
        "presence" => Stanza::Presence {
            from: top.from,
            kind: top.kind,
        },
        "error" => Stanza::StreamError(found.first_child.unwrap_or_default()),
        _ => Stanza::Other(top.name),
    })
}

/// The top element's name and the attributes the bench reads.
#[derive(Debug, Default)]
struct Top {
    name: String,
    kind: Option<String>,
    id: Option<String>,
    from: Option<String>,
}

impl Top {
    fn from(e: &BytesStart<'_>) -> Result<Top> {
        let mut top = Top {
            name: local_name(e),
            ..Top::default()
        };
        for attr in e.attributes() {
            let attr = attr.context("malformed attribute")?;
            let value = attr
                .normalized_value(XmlVersion::Implicit1_0)
                .context("malformed attribute value")?
                .into_owned();
            match attr.key.0 {
                "type" => top.kind = Some(value),
                "id" => top.id = Some(value),
                "from" => top.from = Some(value),
                _ => {}
            }
        }
        Ok(top)
    }
}

/// What was found below the top element.
#[derive(Debug, Default)]
struct Found {
    mechanisms: Vec<String>,
    bind: bool,
    jid: Option<String>,
    body: Option<String>,
    /// Name of the first child of the top element (error conditions).
    first_child: Option<String>,
}

impl Found {
    /// An element opened at `depth` below the top one (0: its child).
    fn open(&mut self, name: &str, depth: usize) {
        if depth == 0 && self.first_child.is_none() {
            self.first_child = Some(name.to_owned());
        }
        if name == "bind" && depth == 0 {
            self.bind = true;
        }
    }

    /// An element closed, `path` being its ancestors below the top one.
    fn close(&mut self, name: &str, path: &[String], text: &str) {
        let parent = path.last().map(String::as_str);
        match (name, parent) {
            ("mechanism", Some("mechanisms")) => self.mechanisms.push(text.to_owned()),
            ("jid", Some("bind")) => self.jid = Some(text.to_owned()),
            ("body", None) if self.body.is_none() => self.body = Some(text.to_owned()),
            _ => {}
        }
    }
}

fn local_name(e: &BytesStart<'_>) -> String {
    e.local_name().as_ref().to_owned()
}

/// `<open/>` for `domain`.
pub(crate) fn open_frame(domain: &str) -> String {
    format!(
        "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='{}' version='1.0'/>",
        escape(domain)
    )
}

/// `<close/>`.
pub(crate) fn close_frame() -> &'static str {
    "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"
}

/// SASL PLAIN with an empty authorization identity.
pub(crate) fn auth_plain(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
}

/// Resource binding request.
pub(crate) fn bind(id: &str, resource: &str) -> String {
    format!(
        "<iq type='set' id='{}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{}</resource></bind></iq>",
        escape(id),
        escape(resource)
    )
}

/// Initial presence.
pub(crate) fn presence() -> &'static str {
    "<presence/>"
}

/// A chat message with `body` as its text.
pub(crate) fn chat(to: &str, id: &str, body: &str) -> String {
    format!(
        "<message to='{}' type='chat' id='{}'><body>{}</body></message>",
        escape(to),
        escape(id),
        escape(body)
    )
}

/// `user@DOMAIN`.
pub(crate) fn bare_jid(user: &str) -> String {
    format!("{user}@{DOMAIN}")
}

/// Who logs in, and as which resource.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Login<'a> {
    pub user: &'a str,
    pub password: &'a str,
    pub resource: &'a str,
}

/// A logged-in, bound XMPP session with initial presence sent.
#[derive(Debug)]
pub(crate) struct Conn {
    ws: Ws,
    /// Stanzas read during the login that were not part of it.
    pending: VecDeque<Stanza>,
    pub jid: String,
}

impl Conn {
    /// Connects to `url` and logs in (see the module doc).
    pub(crate) async fn login(url: &str, login: Login<'_>) -> Result<Conn> {
        let ws = ws::connect(url, Some("xmpp")).await?;
        let mut conn = Conn {
            ws,
            pending: VecDeque::new(),
            jid: String::new(),
        };
        tokio::time::timeout(LOGIN_TIMEOUT, conn.handshake(login))
            .await
            .with_context(|| format!("no XMPP login within {} s", LOGIN_TIMEOUT.as_secs()))??;
        Ok(conn)
    }

    async fn handshake(&mut self, login: Login<'_>) -> Result<()> {
        let features = self.restart().await?;
        match features {
            Stanza::Features { mechanisms, .. } if mechanisms.iter().any(|m| m == "PLAIN") => {}
            other => bail!("the server offers no SASL PLAIN: {other:?}"),
        }
        self.send(auth_plain(login.user, login.password)).await?;
        match self.expect().await? {
            Stanza::Success => {}
            Stanza::Failure(condition) => bail!("SASL PLAIN refused: {condition}"),
            other => bail!("expected SASL success, got {other:?}"),
        }
        match self.restart().await? {
            Stanza::Features { bind: true, .. } => {}
            other => bail!("no resource binding offered: {other:?}"),
        }
        self.send(bind("bind", login.resource)).await?;
        loop {
            match self.expect().await? {
                Stanza::Iq { id, kind, jid } if id == "bind" => match (kind.as_str(), jid) {
                    ("result", Some(jid)) => {
                        self.jid = jid;
                        break;
                    }
                    _ => bail!("resource binding failed ({kind})"),
                },
                other => self.pending.push_back(other),
            }
        }
        self.send(presence().to_owned()).await?;
        loop {
            match self.expect().await? {
                Stanza::Presence {
                    from: Some(from), ..
                } if from == self.jid => return Ok(()),
                other => self.pending.push_back(other),
            }
        }
    }

    /// Sends `<open/>` and returns the features that follow the answering
    /// `<open/>`.
    async fn restart(&mut self) -> Result<Stanza> {
        self.send(open_frame(DOMAIN)).await?;
        match self.expect().await? {
            Stanza::Open => {}
            other => bail!("expected <open/>, got {other:?}"),
        }
        self.expect().await
    }

    /// The next stanza during the login: the end of the stream or a stream
    /// error is an error here.
    async fn expect(&mut self) -> Result<Stanza> {
        match self.read().await? {
            Some(Stanza::StreamError(condition)) => bail!("stream error: {condition}"),
            Some(stanza) => Ok(stanza),
            None => bail!("the server closed the stream"),
        }
    }

    /// The next stanza; `None` once the server closed the stream.
    /// Cancel-safe.
    pub(crate) async fn next_stanza(&mut self) -> Result<Option<Stanza>> {
        if let Some(stanza) = self.pending.pop_front() {
            return Ok(Some(stanza));
        }
        self.read().await
    }

    async fn read(&mut self) -> Result<Option<Stanza>> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    return match parse(&text)? {
                        Stanza::Close => Ok(None),
                        stanza => Ok(Some(stanza)),
                    };
                }
                Some(Ok(Message::Close(_))) | None => return Ok(None),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("WebSocket read failed"),
            }
        }
    }

    pub(crate) async fn send(&mut self, xml: String) -> Result<()> {
        self.ws
            .send(Message::text(xml))
            .await
            .context("WebSocket write failed")
    }

    /// Ends the stream politely.
    pub(crate) async fn close(mut self) {
        let _ = self.send(close_frame().to_owned()).await;
        let _ = self.ws.close(None).await;
    }
}

/// Registers `users` (local parts) with [`PASSWORD`] through ejabberd's
/// `POST /api/register` (allowed from loopback by the bench config).
pub(crate) async fn register(ctx: &PeerCtx, users: &[String]) -> Result<()> {
    let url = ctx.http_url("/api/register");
    stream::iter(users)
        .map(|user| {
            let url = &url;
            async move {
                let body = json!({"user": user, "host": DOMAIN, "password": PASSWORD});
                let response = ctx
                    .http
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .with_context(|| format!("POST {url}"))?;
                let status = response.status();
                if !status.is_success() {
                    let text = response.text().await.unwrap_or_default();
                    bail!("cannot register {user}: {status}: {text}");
                }
                Ok(())
            }
        })
        .buffer_unordered(REGISTER_CONCURRENCY)
        .try_collect::<()>()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(frame: &str) -> Stanza {
        parse(frame).unwrap_or_else(|e| panic!("{frame}: {e:#}"))
    }

    #[test]
    fn framing_and_features() {
        assert_eq!(
            parsed(
                "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='localhost' id='1' version='1.0' xml:lang='en'/>"
            ),
            Stanza::Open
        );
        let features = "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>\
            <mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
            <mechanism>PLAIN</mechanism><mechanism>SCRAM-SHA-1</mechanism></mechanisms>\
            <register xmlns='http://jabber.org/features/iq-register'/></stream:features>";
        assert_eq!(
            parsed(features),
            Stanza::Features {
                mechanisms: vec!["PLAIN".into(), "SCRAM-SHA-1".into()],
                bind: false
            }
        );
        let after_auth = "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>\
            <bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>\
            <session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>\
            <sm xmlns='urn:xmpp:sm:3'/></stream:features>";
        assert_eq!(
            parsed(after_auth),
            Stanza::Features {
                mechanisms: vec![],
                bind: true
            }
        );
        assert_eq!(
            parsed("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"),
            Stanza::Close
        );
    }

    #[test]
    fn sasl_bind_and_errors() {
        assert_eq!(
            parsed("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
            Stanza::Success
        );
        assert_eq!(
            parsed(
                "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/><text xml:lang='en'>Invalid username or password</text></failure>"
            ),
            Stanza::Failure("not-authorized".into())
        );
        assert_eq!(
            parsed(
                "<iq xmlns='jabber:client' type='result' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>u1@localhost/r0</jid></bind></iq>"
            ),
            Stanza::Iq {
                kind: "result".into(),
                id: "bind".into(),
                jid: Some("u1@localhost/r0".into())
            }
        );
        assert_eq!(
            parsed(
                "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
            ),
            Stanza::StreamError("conflict".into())
        );
        assert!(parse("<message><body>unclosed</message>").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn messages_and_presence() {
        let m = parsed(
            "<message xmlns='jabber:client' from='s@localhost/r' to='r@localhost/r' type='chat' id='7'>\
             <body>{&quot;i&quot;:7,&quot;t&quot;:5,&quot;text&quot;:&quot;a&lt;b &amp; &#x263A;&quot;}</body>\
             <active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        );
        assert_eq!(
            m,
            Stanza::Message {
                from: Some("s@localhost/r".into()),
                id: Some("7".into()),
                kind: Some("chat".into()),
                body: Some(r#"{"i":7,"t":5,"text":"a<b & ☺"}"#.into()),
            }
        );
        assert_eq!(
            parsed("<presence xmlns='jabber:client' from='u@localhost/r' to='u@localhost/r'/>"),
            Stanza::Presence {
                from: Some("u@localhost/r".into()),
                kind: None
            }
        );
        assert_eq!(
            parsed("<a xmlns='urn:xmpp:sm:3' h='1'/>"),
            Stanza::Other("a".into())
        );
    }

    #[test]
    fn built_stanzas_escape_and_parse_back() {
        let body = r#"{"run":"x","t":1,"text":"<&'>"}"#;
        let frame = chat("r'1@localhost", "id&1", body);
        assert!(!frame.contains("<&"), "{frame}");
        match parsed(&frame) {
            Stanza::Message {
                id, kind, body: b, ..
            } => {
                assert_eq!(id.as_deref(), Some("id&1"));
                assert_eq!(kind.as_deref(), Some("chat"));
                assert_eq!(b.as_deref(), Some(body));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            auth_plain("u1", "pw"),
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AHUxAHB3</auth>"
        );
        match parsed(&bind("bind", "r<1>")) {
            Stanza::Iq { kind, id, jid } => {
                assert_eq!((kind.as_str(), id.as_str(), jid), ("set", "bind", None));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parsed(&open_frame(DOMAIN)), Stanza::Open);
    }
}
