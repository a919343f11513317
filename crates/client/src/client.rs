//! The HTTP side of the API: [`Client`] for unauthenticated calls and
//! [`Authed`] for calls made with an access token.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use unimsg_proto::api::{
    AckRequest, AckResponse, ConversationList, Health, HistoryPage, LoginRequest, MessageKind,
    ReadRequest, ReadResponse, Recipient, RefreshRequest, RegisterRequest, SendRequest,
    SendResponse, SessionList, SyncResponse, TokenPair, UserProfile,
};
use unimsg_proto::{ConversationId, MessageId, Seq, SessionId, UserId};

use crate::error::{ClientError, Result};
use crate::sse::SseConnection;
use crate::ws::{WsAuth, WsConnection};

/// A handle on one unimsg server. Cheap to clone: clones share the
/// connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Arc<Url>,
    /// The local address WebSocket connections are bound to (HTTP and SSE
    /// requests get it from `http`).
    local: Option<IpAddr>,
    /// What `wss://` trusts when not the system's roots (HTTP and SSE
    /// requests get it from `http`).
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("local", &self.local)
            .field("own_roots", &self.tls.is_some())
            .finish()
    }
}

impl Client {
    /// A client for the server at `base_url`, e.g. `http://127.0.0.1:8080`.
    /// A path prefix (`http://host/unimsg`) is kept in front of every endpoint.
    pub fn new(base_url: &str) -> Result<Client> {
        // `builder().build()` rather than `new()`, which panics on failure.
        Client::with_http_client(reqwest::Client::builder().build()?, base_url)
    }

    /// Like [`Client::new`], but every connection it opens (HTTP requests,
    /// SSE streams and WebSockets) leaves from the local address `local`,
    /// e.g. one of several `127.0.0.x` addresses, each with its own range
    /// of ephemeral ports. `None` lets the operating system choose, as
    /// [`Client::new`] does.
    pub fn with_local_address(base_url: &str, local: Option<IpAddr>) -> Result<Client> {
        Client::with_options(base_url, local, None)
    }

    /// Like [`Client::new`], but `https://` and `wss://` trust only the
    /// CA certificates in `pem` (one or more PEM certificates), not the
    /// system's: for a server whose certificate a private CA signed.
    pub fn with_root_certificates(base_url: &str, pem: &[u8]) -> Result<Client> {
        Client::with_options(base_url, None, Some(pem))
    }

    /// [`Client::with_local_address`] and [`Client::with_root_certificates`]
    /// together; `None` for either keeps the default.
    pub fn with_options(
        base_url: &str,
        local: Option<IpAddr>,
        root_pem: Option<&[u8]>,
    ) -> Result<Client> {
        let mut builder = reqwest::Client::builder().local_address(local);
        let tls = root_pem.map(trusting).transpose()?.map(Arc::new);
        if let Some(config) = &tls {
            builder = builder.tls_backend_preconfigured(rustls::ClientConfig::clone(config));
        }
        let mut client = Client::with_http_client(builder.build()?, base_url)?;
        client.local = local;
        client.tls = tls;
        Ok(client)
    }

    /// Like [`Client::new`], with a preconfigured `reqwest` client (timeouts, proxies…).
    pub fn with_http_client(http: reqwest::Client, base_url: &str) -> Result<Client> {
        let base = parse_base(base_url)?;
        Ok(Client {
            http,
            base: Arc::new(base),
            local: None,
            tls: None,
        })
    }

    /// The base URL all endpoints are relative to.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The local address connections leave from, if one was chosen with
    /// [`Client::with_local_address`].
    pub fn local_address(&self) -> Option<IpAddr> {
        self.local
    }

    /// An authenticated handle that sends `access_token` as a Bearer token.
    pub fn with_token(&self, access_token: impl Into<String>) -> Authed {
        Authed {
            client: self.clone(),
            token: access_token.into(),
        }
    }

    /// `POST /v1/auth/register`
    pub async fn register(&self, req: &RegisterRequest) -> Result<UserProfile> {
        self.call(
            Method::POST,
            &["v1", "auth", "register"],
            &[],
            None,
            Some(req),
        )
        .await
    }

    /// `POST /v1/auth/login`
    pub async fn login(&self, req: &LoginRequest) -> Result<TokenPair> {
        self.call(Method::POST, &["v1", "auth", "login"], &[], None, Some(req))
            .await
    }

    /// `POST /v1/auth/refresh`: trades a refresh token for a new token pair.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair> {
        let req = RefreshRequest {
            refresh_token: refresh_token.to_owned(),
        };
        self.call(
            Method::POST,
            &["v1", "auth", "refresh"],
            &[],
            None,
            Some(&req),
        )
        .await
    }

    /// `GET /healthz`: the process is up.
    pub async fn health(&self) -> Result<Health> {
        self.call(Method::GET, &["healthz"], &[], None, None::<&()>)
            .await
    }

    /// `GET /readyz`: the server can serve requests (its store is reachable).
    pub async fn ready(&self) -> Result<Health> {
        self.call(Method::GET, &["readyz"], &[], None, None::<&()>)
            .await
    }

    /// Sends an arbitrary request, for tests of malformed input.
    ///
    /// `path` starts with `/` and may carry a query; it is appended to the base
    /// URL as is. The body is omitted when empty. Returns the status and the
    /// body as JSON, or `Value::Null` when the body is empty or not JSON. Only
    /// transport failures are errors: a non-2xx status is a normal result here.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
        content_type: Option<&str>,
    ) -> Result<(u16, serde_json::Value)> {
        let url = raw_url(&self.base, path)?;
        let mut req = self.http.request(method, url);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(content_type) = content_type {
            let value = HeaderValue::from_str(content_type)
                .map_err(|e| ClientError::Protocol(format!("invalid content type: {e}")))?;
            req = req.header(CONTENT_TYPE, value);
        }
        if !body.is_empty() {
            req = req.body(body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok((status, value))
    }

    /// Opens `GET /v1/ws[?after=…]` with the token in the `Authorization`
    /// header (never in the URL, which proxies log) and waits for the
    /// `ready` frame. With `after`, the inbox after that seq is replayed
    /// before live events.
    pub async fn connect_ws(&self, token: &str, after: Option<Seq>) -> Result<WsConnection> {
        let url = ws_url(&self.base, after)?;
        let how = WsAuth::Header(token);
        WsConnection::connect(url, how, self.local, self.tls.clone()).await
    }

    /// Opens `GET /v1/ws` without credentials, authenticates with a first
    /// `auth` frame and waits for the `ready` frame.
    pub async fn connect_ws_first_frame(
        &self,
        token: &str,
        after: Option<Seq>,
    ) -> Result<WsConnection> {
        let url = ws_url(&self.base, None)?;
        let how = WsAuth::FirstFrame(token, after);
        WsConnection::connect(url, how, self.local, self.tls.clone()).await
    }

    /// Opens `GET /v1/events` with a Bearer token, resuming after
    /// `last_event_id` (sent as the `Last-Event-ID` header) when given.
    pub async fn connect_sse(
        &self,
        token: &str,
        last_event_id: Option<Seq>,
    ) -> Result<SseConnection> {
        let url = endpoint(&self.base, &["v1", "events"], &[])?;
        let mut req = self.http.get(url).bearer_auth(token);
        if let Some(seq) = last_event_id {
            req = req.header("Last-Event-ID", seq.to_string());
        }
        SseConnection::open(req).await
    }

    /// Opens `GET /v1/events?after=…` with a Bearer token.
    pub async fn connect_sse_after(&self, token: &str, after: Seq) -> Result<SseConnection> {
        let url = endpoint(
            &self.base,
            &["v1", "events"],
            &[("after", after.to_string())],
        )?;
        SseConnection::open(self.http.get(url).bearer_auth(token)).await
    }

    /// Opens `GET /v1/events?access_token=…[&after=…]`, the form for clients
    /// that cannot set headers (such as browsers' `EventSource`).
    pub async fn connect_sse_query_token(
        &self,
        token: &str,
        after: Option<Seq>,
    ) -> Result<SseConnection> {
        let mut query = vec![("access_token", token.to_owned())];
        query.extend(after.map(|seq| ("after", seq.to_string())));
        let url = endpoint(&self.base, &["v1", "events"], &query)?;
        SseConnection::open(self.http.get(url)).await
    }

    /// Sends a JSON request and decodes a JSON answer.
    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        token: Option<&str>,
        body: Option<&B>,
    ) -> Result<T> {
        let resp = self
            .request(method, path, query, token, body)?
            .send()
            .await?;
        let bytes = success(resp).await?.bytes().await?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Sends a request whose answer has no body (`204 No Content`).
    async fn call_empty<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &[&str],
        token: Option<&str>,
        body: Option<&B>,
    ) -> Result<()> {
        let resp = self.request(method, path, &[], token, body)?.send().await?;
        success(resp).await?;
        Ok(())
    }

    /// A request to `path` on this server, with an optional Bearer token
    /// and JSON body.
    pub(crate) fn request<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        token: Option<&str>,
        body: Option<&B>,
    ) -> Result<RequestBuilder> {
        let mut req = self
            .http
            .request(method, endpoint(&self.base, path, query)?);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        Ok(req)
    }
}

/// An authenticated handle: a [`Client`] plus an access token.
#[derive(Clone)]
pub struct Authed {
    client: Client,
    token: String,
}

impl fmt::Debug for Authed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authed")
            .field("client", &self.client)
            .field("token", &"[redacted]")
            .finish()
    }
}

impl Authed {
    /// The access token sent with each request.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `POST /v1/auth/logout`: ends this session.
    pub async fn logout(&self) -> Result<()> {
        self.empty(Method::POST, &["v1", "auth", "logout"], None::<&()>)
            .await
    }

    /// `GET /v1/me`
    pub async fn me(&self) -> Result<UserProfile> {
        self.get(&["v1", "me"], &[]).await
    }

    /// `GET /v1/me/sessions`
    pub async fn sessions(&self) -> Result<SessionList> {
        self.get(&["v1", "me", "sessions"], &[]).await
    }

    /// `DELETE /v1/me/sessions/{id}`: revokes one of the user's sessions.
    pub async fn revoke_session(&self, id: &SessionId) -> Result<()> {
        self.empty(
            Method::DELETE,
            &["v1", "me", "sessions", id.as_str()],
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/messages`
    pub async fn send(&self, req: &SendRequest) -> Result<SendResponse> {
        self.post(&["v1", "messages"], req).await
    }

    /// Sends `{"text": text}` as a chat message to `to`.
    pub async fn send_text(
        &self,
        to: &UserId,
        text: &str,
        client_msg_id: Option<&str>,
    ) -> Result<SendResponse> {
        self.send(&text_message(to, text, client_msg_id)).await
    }

    /// `GET /v1/sync?after=&limit=`: inbox events after `after`, oldest first.
    pub async fn sync(&self, after: Option<Seq>, limit: Option<u32>) -> Result<SyncResponse> {
        let mut query = Vec::new();
        query.extend(after.map(|seq| ("after", seq.to_string())));
        query.extend(limit.map(|limit| ("limit", limit.to_string())));
        self.get(&["v1", "sync"], &query).await
    }

    /// `POST /v1/ack`: acknowledges the inbox up to `seq`.
    pub async fn ack(&self, seq: Seq) -> Result<AckResponse> {
        self.post(&["v1", "ack"], &AckRequest { seq }).await
    }

    /// `POST /v1/conversations/{id}/read`: marks `conversation` read up to `message_id`.
    pub async fn read(
        &self,
        conversation: &ConversationId,
        message_id: &MessageId,
    ) -> Result<ReadResponse> {
        let req = ReadRequest {
            message_id: message_id.clone(),
        };
        self.post(
            &["v1", "conversations", conversation.as_str(), "read"],
            &req,
        )
        .await
    }

    /// `GET /v1/conversations`
    pub async fn conversations(&self) -> Result<ConversationList> {
        self.get(&["v1", "conversations"], &[]).await
    }

    /// `GET /v1/conversations/{id}/messages?before=&limit=`: newest first.
    pub async fn history(
        &self,
        conversation: &ConversationId,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<HistoryPage> {
        let mut query = Vec::new();
        query.extend(before.map(|before| ("before", before.to_string())));
        query.extend(limit.map(|limit| ("limit", limit.to_string())));
        self.get(
            &["v1", "conversations", conversation.as_str(), "messages"],
            &query,
        )
        .await
    }

    /// `POST /v1/messages/{id}/recall`
    pub async fn recall(&self, message_id: &MessageId) -> Result<()> {
        self.empty(
            Method::POST,
            &["v1", "messages", message_id.as_str(), "recall"],
            None::<&()>,
        )
        .await
    }

    /// [`Client::raw`] with this handle's token.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        content_type: Option<&str>,
    ) -> Result<(u16, serde_json::Value)> {
        self.client
            .raw(method, path, Some(&self.token), body, content_type)
            .await
    }

    /// [`Client::connect_ws`] with this handle's token.
    pub async fn connect_ws(&self, after: Option<Seq>) -> Result<WsConnection> {
        self.client.connect_ws(&self.token, after).await
    }

    /// [`Client::connect_ws_first_frame`] with this handle's token.
    pub async fn connect_ws_first_frame(&self, after: Option<Seq>) -> Result<WsConnection> {
        self.client.connect_ws_first_frame(&self.token, after).await
    }

    /// [`Client::connect_sse`] with this handle's token.
    pub async fn connect_sse(&self, last_event_id: Option<Seq>) -> Result<SseConnection> {
        self.client.connect_sse(&self.token, last_event_id).await
    }

    /// [`Client::connect_sse_after`] with this handle's token.
    pub async fn connect_sse_after(&self, after: Seq) -> Result<SseConnection> {
        self.client.connect_sse_after(&self.token, after).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &[&str], query: &[(&str, String)]) -> Result<T> {
        self.client
            .call(Method::GET, path, query, Some(&self.token), None::<&()>)
            .await
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &[&str],
        body: &B,
    ) -> Result<T> {
        self.client
            .call(Method::POST, path, &[], Some(&self.token), Some(body))
            .await
    }

    async fn empty<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &[&str],
        body: Option<&B>,
    ) -> Result<()> {
        self.client
            .call_empty(method, path, Some(&self.token), body)
            .await
    }
}

/// A chat message with content `{"text": text}`, for [`Authed::send`] or
/// [`WsConnection::send`].
pub fn text_message(to: &UserId, text: &str, client_msg_id: Option<&str>) -> SendRequest {
    SendRequest {
        to: Recipient::User(to.clone()),
        kind: MessageKind::Chat,
        content: serde_json::json!({ "text": text }),
        client_msg_id: client_msg_id.map(str::to_owned),
    }
}

/// Passes a 2xx response through; turns anything else into an error.
pub(crate) async fn success(resp: Response) -> Result<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.bytes().await?;
    Err(ClientError::from_response(status.as_u16(), &body))
}

/// A TLS client configuration that trusts only the CA certificates in
/// `pem`, with the aws-lc-rs provider and TLS 1.2 / 1.3.
fn trusting(pem: &[u8]) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |why: String| ClientError::InvalidCertificate(why);
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the PEM data".into()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

fn parse_base(base_url: &str) -> Result<Url> {
    let invalid = |why: &str| ClientError::InvalidBaseUrl(format!("{base_url:?}: {why}"));
    let url = Url::parse(base_url).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.cannot_be_a_base() {
        return Err(invalid("not a base URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or fragment"));
    }
    Ok(url)
}

/// `base` + `/seg/seg…` + `?query`, each segment and pair percent-encoded.
fn endpoint(base: &Url, segments: &[&str], query: &[(&str, String)]) -> Result<Url> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| ClientError::InvalidBaseUrl(format!("{base}: not a base URL")))?
        // Drop the empty segment of a trailing `/` so `http://h/` and `http://h` agree.
        .pop_if_empty()
        .extend(segments);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// The WebSocket URL: the HTTP endpoint with a `ws`/`wss` scheme.
fn ws_url(base: &Url, after: Option<Seq>) -> Result<Url> {
    let query: Vec<_> = after
        .map(|seq| ("after", seq.to_string()))
        .into_iter()
        .collect();
    let mut url = endpoint(base, &["v1", "ws"], &query)?;
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme)
        .map_err(|()| ClientError::InvalidBaseUrl(format!("{base}: no WebSocket equivalent")))?;
    Ok(url)
}

/// The base URL with `path` (which may carry a query) appended verbatim.
fn raw_url(base: &Url, path: &str) -> Result<Url> {
    let joined = format!("{}{}", base.as_str().trim_end_matches('/'), path);
    Url::parse(&joined)
        .map_err(|e| ClientError::Protocol(format!("invalid raw path {path:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(s: &str) -> Url {
        parse_base(s).unwrap()
    }

    fn ok<T>(r: Result<T>) -> T {
        r.unwrap()
    }

    #[test]
    fn base_url_must_be_http() {
        assert!(parse_base("ftp://example.com").is_err());
        assert!(parse_base("mailto:someone@example.com").is_err());
        assert!(parse_base("not a url").is_err());
        assert!(parse_base("http://h/?x=1").is_err());
        assert!(parse_base("https://h").is_ok());
    }

    #[test]
    fn endpoints_keep_prefix_and_ignore_trailing_slash() {
        for b in ["http://127.0.0.1:8080", "http://127.0.0.1:8080/"] {
            let url = ok(endpoint(&base(b), &["v1", "me"], &[]));
            assert_eq!(url.as_str(), "http://127.0.0.1:8080/v1/me");
        }
        let url = ok(endpoint(&base("http://h/api/"), &["v1", "me"], &[]));
        assert_eq!(url.as_str(), "http://h/api/v1/me");
    }

    #[test]
    fn path_segments_are_encoded_but_colons_kept() {
        let url = ok(endpoint(
            &base("http://h"),
            &["v1", "conversations", "d:alice:bob", "read"],
            &[],
        ));
        assert_eq!(url.as_str(), "http://h/v1/conversations/d:alice:bob/read");
        let url = ok(endpoint(
            &base("http://h"),
            &["v1", "conversations", "a/b c?#%"],
            &[],
        ));
        assert_eq!(url.as_str(), "http://h/v1/conversations/a%2Fb%20c%3F%23%25");
    }

    #[test]
    fn queries_are_encoded() {
        let q = [
            ("after", "5".to_owned()),
            ("access_token", "a+b/c=".to_owned()),
        ];
        let url = ok(endpoint(&base("http://h"), &["v1", "sync"], &q));
        assert_eq!(
            url.as_str(),
            "http://h/v1/sync?after=5&access_token=a%2Bb%2Fc%3D"
        );
        let url = ok(endpoint(&base("http://h"), &["v1", "sync"], &[]));
        assert_eq!(url.query(), None);
    }

    #[test]
    fn ws_urls_switch_scheme() {
        let url = ok(ws_url(&base("http://h:1"), Some(Seq(7))));
        assert_eq!(url.as_str(), "ws://h:1/v1/ws?after=7");
        let url = ok(ws_url(&base("https://h/p"), None));
        assert_eq!(url.as_str(), "wss://h/p/v1/ws");
    }

    #[test]
    fn raw_paths_are_appended_verbatim() {
        let url = ok(raw_url(&base("http://h/api/"), "/v1/sync?after=x"));
        assert_eq!(url.as_str(), "http://h/api/v1/sync?after=x");
    }

    #[test]
    fn text_message_is_chat_with_text_content() {
        let to = UserId::parse("bob").unwrap();
        let req = text_message(&to, "hi", Some("c1"));
        let v = serde_json::to_value(&req).unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!({"to": {"user": "bob"}, "kind": "chat", "content": {"text": "hi"}, "client_msg_id": "c1"})
        );
    }

    #[test]
    fn local_address_is_kept() {
        let local = IpAddr::from([127, 0, 0, 2]);
        let client = ok(Client::with_local_address("http://h", Some(local)));
        assert_eq!(client.local_address(), Some(local));
        assert_eq!(client.with_token("t").client().local_address(), Some(local));
        assert_eq!(ok(Client::new("http://h")).local_address(), None);
        let any = ok(Client::with_local_address("http://h", None));
        assert_eq!(any.local_address(), None);
    }

    #[test]
    fn debug_redacts_token() {
        let client = Client::new("http://h").unwrap();
        let authed = client.with_token("secret-token");
        let s = format!("{authed:?}");
        assert!(!s.contains("secret-token"));
        assert!(s.contains("[redacted]"));
    }
}
