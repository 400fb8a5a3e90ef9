//! HTTP on a core: request heads (and bodies) parsed incrementally, routing, and the answer to every plain request,
//! WebSocket upgrade, SSE stream start, poll and publish, with authentication, origin and CORS checks.

use super::*;

impl Core {
    /// Bytes of a request head (or several pipelined requests, with their bodies).
    pub(super) fn on_http(&mut self, key: usize, data: &mut [u8]) {
        let conn = &mut self.conns[key];
        let mut owned;
        let buf: &mut [u8] = if conn.head.is_empty() {
            data
        } else {
            conn.head.extend_from_slice(data);
            owned = std::mem::take(&mut conn.head);
            &mut owned
        };
        let mut offset = 0;
        while offset < buf.len() {
            // Only as many header slots as the limit allows are initialised (the common limit fits 64).
            let mut small;
            let mut large;
            let headers: &mut [http::Header<'_>] = if self.limits.max_headers <= 64 {
                small = [http::EMPTY_HEADER; 64];
                &mut small[..self.limits.max_headers]
            } else {
                large = [http::EMPTY_HEADER; http::MAX_HEADERS_HARD];
                &mut large[..self.limits.max_headers]
            };
            let rest = &buf[offset..];
            match parse_request(rest, headers, &self.limits) {
                Ok(None) => {
                    self.stash(key, rest);
                    return;
                }
                Err(e) => {
                    write_http_error(&mut self.wbuf, e);
                    self.mark(true);
                    self.conns[key].flags |= CLOSE_ON_FLUSH;
                    return;
                }
                Ok(Some(req)) => {
                    let head_len = req.head_len();
                    let body_len = match self.body_len(&req) {
                        Ok(n) => n,
                        Err((status, msg)) => {
                            self.error_response(status, msg, None, false);
                            self.conns[key].flags |= CLOSE_ON_FLUSH;
                            return;
                        }
                    };
                    if rest.len() < head_len + body_len {
                        // The body is still arriving: keep the request and parse it again when it is whole.
                        self.stash(key, rest);
                        return;
                    }
                    let body = &rest[head_len..head_len + body_len];
                    let next = self.route(key, &req, body);
                    offset += head_len + body_len;
                    match next {
                        Next::Continue => continue,
                        Next::Stop => break,
                        Next::Wait => {
                            // Answered later by another core; what follows waits in the head buffer.
                            let rest = &buf[offset..];
                            self.stash(key, rest);
                            return;
                        }
                    }
                }
            }
        }
        let conn = &mut self.conns[key];
        // The head buffer is only for requests in progress: give its memory back.
        conn.head = Vec::new();
        if conn.state == State::Ws && offset < buf.len() {
            // Frames sent right behind the upgrade request.
            self.on_ws(key, &mut buf[offset..]);
        }
    }

    /// Keeps the unparsed bytes of a request for the next read.
    pub(super) fn stash(&mut self, key: usize, rest: &[u8]) {
        let conn = &mut self.conns[key];
        conn.head.clear();
        conn.head.extend_from_slice(rest);
    }

    /// The length of the body behind a head, or the status to refuse it with.
    pub(super) fn body_len(
        &self,
        req: &http::Request<'_, '_>,
    ) -> Result<usize, (u16, &'static str)> {
        if req.header("transfer-encoding").is_some() {
            return Err((411, "chunked bodies are not accepted: send Content-Length"));
        }
        match req.content_length() {
            Err(_) => Err((400, "invalid Content-Length")),
            Ok(None) => Ok(0),
            Ok(Some(n)) if n > self.shared.config.max_message_size as u64 => {
                Err((413, "body larger than the maximum message size"))
            }
            Ok(Some(n)) => Ok(n as usize),
        }
    }

    /// The Origin to echo in CORS headers, when the request has an allowed one.
    pub(super) fn cors_origin(&self, req: &http::Request<'_, '_>) -> Option<Box<str>> {
        let origin = std::str::from_utf8(req.header("origin")?).ok()?;
        origin_allowed(&self.shared.config.cors_origins, origin).then(|| Box::from(origin))
    }

    /// Stages a JSON error answer `{"error":..,"message":..}`.
    pub(super) fn error_response(
        &mut self,
        status: u16,
        message: &str,
        cors: Option<&str>,
        keep_alive: bool,
    ) {
        self.error_response_with(status, message, cors, keep_alive, &[]);
    }

    /// Stages a JSON error answer with extra headers (`WWW-Authenticate`, `Retry-After`).
    pub(super) fn error_response_with(
        &mut self,
        status: u16,
        message: &str,
        cors: Option<&str>,
        keep_alive: bool,
        extra: &[(&str, &[u8])],
    ) {
        let mut body = Vec::with_capacity(64 + message.len());
        body.extend_from_slice(b"{\"error\":");
        ringcast_protocol::poll::write_json_string(&mut body, http::reason_phrase(status));
        body.extend_from_slice(b",\"message\":");
        ringcast_protocol::poll::write_json_string(&mut body, message);
        body.push(b'}');
        write_json_response_extra(&mut self.wbuf, status, &body, cors, keep_alive, extra);
        self.mark(true);
    }

    /// Is the request's Origin allowed to open a WebSocket? (Always, without an allowlist.)
    pub(super) fn origin_ok(&self, req: &http::Request<'_, '_>) -> bool {
        let list = &self.shared.config.allowed_origins;
        if list.is_empty() {
            return true;
        }
        req.header("origin")
            .and_then(|o| std::str::from_utf8(o).ok())
            .is_some_and(|o| origin_allowed(list, o))
    }

    /// The request's verified identity (`None` when authentication is off), or why it is refused.
    pub(super) fn authenticate(
        &self,
        req: &http::Request<'_, '_>,
    ) -> Result<Option<Arc<crate::auth::Identity>>, crate::auth::AuthError> {
        let Some(verifier) = &self.shared.verifier else {
            return Ok(None);
        };
        let token =
            crate::auth::request_token(req.header("authorization"), req.query_param("token"))
                .ok_or(crate::auth::AuthError::Missing)?;
        verifier
            .verify(token, crate::auth::unix_now())
            .map(|id| Some(Arc::new(id)))
    }

    /// Attaches a verified identity to a long-lived connection, with the tick at which its token expires.
    pub(super) fn attach_identity(
        &mut self,
        key: usize,
        identity: Option<Arc<crate::auth::Identity>>,
    ) {
        let Some(id) = identity else { return };
        let left = id.expires.saturating_sub(crate::auth::unix_now());
        let left = left
            .saturating_mul(crate::conn::TICKS_PER_SEC)
            .min(u64::from(Tick::MAX / 4)) as Tick;
        let serial = self.conns[key].serial;
        let conns = self.users.entry(id.user.clone()).or_default();
        let first = conns.is_empty();
        conns.push((key as u32, serial));
        if first {
            self.tell_bridge_user(&id.user, true);
        }
        let ext = self.conns[key].ext.get_or_insert_with(Box::default);
        ext.expires = Some(self.now.wrapping_add(left.max(1)));
        ext.identity = Some(id);
    }

    /// Would one more long-lived connection put this user over `max_connections_per_user` on this core?
    pub(super) fn user_over_limit(&self, identity: Option<&crate::auth::Identity>) -> bool {
        let max = self.shared.config.max_connections_per_user;
        match identity {
            Some(id) if max != 0 => self
                .users
                .get(&id.user)
                .is_some_and(|v| v.len() >= max as usize),
            _ => false,
        }
    }

    /// Answers one request; returns whether to keep reading requests.
    pub(super) fn route(&mut self, key: usize, req: &http::Request<'_, '_>, body: &[u8]) -> Next {
        let conn = &mut self.conns[key];
        if conn.has(REJECT) {
            add(&self.stats.connections_rejected, 1);
            write_rejection(&mut self.wbuf, 503, "server at connection capacity");
            self.marks.push((self.wbuf.len(), true));
            conn.flags |= CLOSE_ON_FLUSH;
            return Next::Stop;
        }
        if conn.has(IP_LIMITED) {
            add(&self.stats.http_requests, 1);
            self.too_many("too many connections from this address", None, false);
            self.conns[key].flags |= CLOSE_ON_FLUSH;
            return Next::Stop;
        }
        let keep_alive = req.keep_alive();
        let method = req.method();
        let cors = self.cors_origin(req);
        if method == "OPTIONS" && req.header("access-control-request-method").is_some() {
            add(&self.stats.http_requests, 1);
            match &cors {
                Some(origin) => {
                    write_response(
                        &mut self.wbuf,
                        204,
                        &[
                            ("access-control-allow-origin", origin.as_bytes()),
                            ("access-control-allow-methods", b"GET, POST, OPTIONS"),
                            (
                                "access-control-allow-headers",
                                b"Content-Type, Authorization, Last-Event-ID",
                            ),
                            ("access-control-max-age", b"600"),
                            ("vary", b"Origin"),
                        ],
                        b"",
                        keep_alive,
                    );
                    self.mark(true);
                }
                None => self.error_response(403, "origin not allowed", None, keep_alive),
            }
            return self.after_response(key, keep_alive);
        }
        let mut scratch = String::new();
        let routed = ringcast_protocol::pubsub::route_path(req.path(), &mut scratch);
        let is_ws = matches!(routed, Some(Ok(PubSubRoute::Ws)))
            || (routed.is_none() && req.path() == "/echo");
        if is_ws && !self.origin_ok(req) {
            add(&self.stats.http_requests, 1);
            add(&self.stats.origin_rejected, 1);
            self.error_response(403, "origin not allowed", None, false);
            self.conns[key].flags |= CLOSE_ON_FLUSH;
            return Next::Stop;
        }
        let identity = if routed.is_some() || is_ws {
            match self.authenticate(req) {
                Ok(id) => id,
                Err(e) => {
                    add(&self.stats.http_requests, 1);
                    add(&self.stats.auth_failures, 1);
                    let keep_alive = keep_alive && !is_ws;
                    self.error_response_with(
                        e.http_status(),
                        e.message(),
                        cors.as_deref(),
                        keep_alive,
                        &[("www-authenticate", e.www_authenticate().as_bytes())],
                    );
                    return self.after_response(key, keep_alive);
                }
            }
        } else {
            None
        };
        match routed {
            Some(Err(e)) => {
                add(&self.stats.http_requests, 1);
                self.error_response(400, e.message(), cors.as_deref(), keep_alive);
                self.after_response(key, keep_alive)
            }
            Some(Ok(r))
                if self.shared.config.transport_disabled(match r {
                    PubSubRoute::Ws => "ws",
                    PubSubRoute::Sse(_) => "sse",
                    PubSubRoute::Poll(_) | PubSubRoute::Messages(_) => "poll",
                    PubSubRoute::Publish(_) => "publish",
                }) =>
            {
                add(&self.stats.http_requests, 1);
                let msg = "transport disabled on this server";
                self.error_response(403, msg, cors.as_deref(), keep_alive);
                self.after_response(key, keep_alive)
            }
            Some(Ok(PubSubRoute::Ws)) => self.upgrade(key, req, Route::PubSub, identity),
            Some(Ok(r)) => {
                add(&self.stats.http_requests, 1);
                let (topic, want_post) = match r {
                    PubSubRoute::Publish(t) => (t, true),
                    PubSubRoute::Sse(t) | PubSubRoute::Poll(t) | PubSubRoute::Messages(t) => {
                        (t, false)
                    }
                    PubSubRoute::Ws => return Next::Stop,
                };
                let allowed = if want_post {
                    method == "POST"
                } else {
                    method == "GET"
                };
                if !allowed {
                    let allow: &[u8] = if want_post {
                        b"POST, OPTIONS"
                    } else {
                        b"GET, OPTIONS"
                    };
                    write_response(
                        &mut self.wbuf,
                        405,
                        &[("allow", allow), ("content-type", b"text/plain")],
                        b"method not allowed\n",
                        keep_alive,
                    );
                    self.mark(true);
                    return self.after_response(key, keep_alive);
                }
                if let Some(id) = &identity {
                    let ok = if want_post {
                        id.may_publish(topic)
                    } else {
                        id.may_subscribe(topic)
                    };
                    if !ok {
                        add(&self.stats.forbidden, 1);
                        let msg = if want_post {
                            "the token does not allow publishing on this topic"
                        } else {
                            "the token does not allow subscribing to this topic"
                        };
                        self.error_response(403, msg, cors.as_deref(), keep_alive);
                        return self.after_response(key, keep_alive);
                    }
                }
                match r {
                    PubSubRoute::Sse(_) => {
                        self.start_sse(key, req, topic, cors.as_deref(), identity)
                    }
                    PubSubRoute::Poll(_) => self.start_poll(key, req, topic, cors, true),
                    PubSubRoute::Messages(_) => self.start_poll(key, req, topic, cors, false),
                    _ if !self.take_publish_token(key) => {
                        self.too_many("publish rate limit exceeded", cors.as_deref(), keep_alive);
                        self.after_response(key, keep_alive)
                    }
                    _ => self.start_publish(key, req, topic, body, cors),
                }
            }
            None => match req.path() {
                "/echo" => self.upgrade(key, req, Route::Echo, identity),
                path => {
                    add(&self.stats.http_requests, 1);
                    let get = method == "GET" || method == "HEAD";
                    let start = self.wbuf.len();
                    let asset = self.shared.config.assets.iter().find(|a| a.path == path);
                    match (path, get) {
                        (_, true) if asset.is_some() => {
                            if let Some(a) = asset {
                                write_response(
                                    &mut self.wbuf,
                                    200,
                                    &[
                                        ("content-type", a.content_type.as_bytes()),
                                        ("cache-control", b"no-cache"),
                                    ],
                                    &a.body,
                                    keep_alive,
                                );
                            }
                        }
                        ("/healthz", true) => write_response(
                            &mut self.wbuf,
                            200,
                            &[("content-type", b"text/plain")],
                            b"ok\n",
                            keep_alive,
                        ),
                        ("/metrics", true) => {
                            let mut body = Vec::with_capacity(8 * 1024);
                            render_prometheus(&self.shared.stats, &mut body);
                            if let Some(b) = &self.shared.bridge {
                                b.render(&mut body);
                            }
                            write_response(
                                &mut self.wbuf,
                                200,
                                &[("content-type", b"text/plain; version=0.0.4")],
                                &body,
                                keep_alive,
                            );
                        }
                        ("/readyz", true) => {
                            // Ready: single node always; multi-node while the Redis bridge is connected.
                            let ready = self.shared.bridge.as_ref().is_none_or(|b| b.ready());
                            let (status, body): (u16, &[u8]) = if ready {
                                (200, b"ready\n")
                            } else {
                                (503, b"not ready: redis bridge disconnected\n")
                            };
                            write_response(
                                &mut self.wbuf,
                                status,
                                &[("content-type", b"text/plain")],
                                body,
                                keep_alive,
                            )
                        }
                        ("/healthz" | "/readyz" | "/metrics", false) => write_response(
                            &mut self.wbuf,
                            405,
                            &[("allow", b"GET"), ("content-type", b"text/plain")],
                            b"method not allowed\n",
                            keep_alive,
                        ),
                        _ => write_response(
                            &mut self.wbuf,
                            404,
                            &[("content-type", b"text/plain")],
                            b"not found\n",
                            keep_alive,
                        ),
                    }
                    if method == "HEAD" {
                        // Same head as GET (Content-Length included), no body.
                        if let Some(end) =
                            self.wbuf[start..].windows(4).position(|w| w == b"\r\n\r\n")
                        {
                            self.wbuf.truncate(start + end + 4);
                        }
                    }
                    self.mark(true);
                    self.after_response(key, keep_alive)
                }
            },
        }
    }

    /// After a complete answer: keep reading requests, or close once it is written.
    pub(super) fn after_response(&mut self, key: usize, keep_alive: bool) -> Next {
        let conn = &mut self.conns[key];
        if keep_alive {
            conn.deadline = self.now.wrapping_add(self.timers.handshake);
            Next::Continue
        } else {
            conn.flags |= CLOSE_ON_FLUSH;
            Next::Stop
        }
    }

    /// The WebSocket upgrade for `route`.
    pub(super) fn upgrade(
        &mut self,
        key: usize,
        req: &http::Request<'_, '_>,
        route: Route,
        identity: Option<Arc<crate::auth::Identity>>,
    ) -> Next {
        match validate_upgrade(req) {
            Ok(_) if self.user_over_limit(identity.as_deref()) => {
                self.too_many("too many connections for this user", None, false);
                self.conns[key].flags |= CLOSE_ON_FLUSH;
                Next::Stop
            }
            Ok(up) => {
                self.attach_identity(key, identity);
                let conn = &mut self.conns[key];
                write_switching_protocols(&mut self.wbuf, up.key(), None);
                self.marks.push((self.wbuf.len(), true));
                conn.state = State::Ws;
                conn.route = route;
                conn.last_heard = self.now;
                add(&self.stats.handshakes, 1);
                Next::Stop
            }
            Err(e) => {
                add(&self.stats.handshake_failures, 1);
                write_handshake_error(&mut self.wbuf, e);
                self.marks.push((self.wbuf.len(), true));
                self.conns[key].flags |= CLOSE_ON_FLUSH;
                Next::Stop
            }
        }
    }

    /// `GET /sse/{topic}`: the stream head, a retry hint, then replay and live messages as events.
    pub(super) fn start_sse(
        &mut self,
        key: usize,
        req: &http::Request<'_, '_>,
        topic: &str,
        cors: Option<&str>,
        identity: Option<Arc<crate::auth::Identity>>,
    ) -> Next {
        if self.user_over_limit(identity.as_deref()) {
            self.too_many("too many connections for this user", cors, false);
            self.conns[key].flags |= CLOSE_ON_FLUSH;
            return Next::Stop;
        }
        let since = match (req.header("last-event-id"), req.query_param("since")) {
            (Some(h), _) => match ringcast_protocol::sse::parse_last_event_id(h) {
                Ok(v) => v,
                Err(_) => {
                    self.error_response(
                        400,
                        "Last-Event-ID must be a message sequence number",
                        cors,
                        false,
                    );
                    self.conns[key].flags |= CLOSE_ON_FLUSH;
                    return Next::Stop;
                }
            },
            (None, Some(q)) => match q.parse::<u64>() {
                Ok(v) => Some(v),
                Err(_) => {
                    self.error_response(
                        400,
                        "since must be a message sequence number",
                        cors,
                        false,
                    );
                    self.conns[key].flags |= CLOSE_ON_FLUSH;
                    return Next::Stop;
                }
            },
            (None, None) => None,
        };
        let mut extra: Vec<(&str, &[u8])> = Vec::new();
        if let Some(o) = cors {
            extra.push(("access-control-allow-origin", o.as_bytes()));
            extra.push(("vary", b"Origin"));
        }
        if ringcast_protocol::sse::write_stream_head(&mut self.wbuf, &extra).is_err() {
            self.error_response(500, "could not write the stream head", None, false);
            self.conns[key].flags |= CLOSE_ON_FLUSH;
            return Next::Stop;
        }
        let retry = self.shared.config.sse_retry.as_millis();
        let _ = std::io::Write::write_fmt(&mut self.wbuf, format_args!("retry: {retry}\n\n"));
        self.mark(true);
        self.attach_identity(key, identity);
        let conn = &mut self.conns[key];
        conn.state = State::Sse;
        conn.last_heard = self.now;
        self.subscribe(key, topic, since, None);
        Next::Stop
    }

    /// `GET /poll/{topic}` (long, `wait`) and `GET /messages/{topic}` (short): ask the owner, answer later.
    pub(super) fn start_poll(
        &mut self,
        key: usize,
        req: &http::Request<'_, '_>,
        topic: &str,
        cors: Option<Box<str>>,
        wait: bool,
    ) -> Next {
        let keep_alive = req.keep_alive();
        let c = &self.shared.config;
        let parse = |name: &str| req.query_param(name).map(|v| v.parse::<u64>());
        let since = match parse("since") {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => {
                self.error_response(
                    400,
                    "since must be a message sequence number",
                    cors.as_deref(),
                    keep_alive,
                );
                return self.after_response(key, keep_alive);
            }
        };
        let limit = match parse("limit") {
            None => c.poll_limit,
            Some(Ok(v)) if v >= 1 => (v as usize).min(c.poll_limit_max),
            Some(_) => {
                self.error_response(
                    400,
                    "limit must be a positive integer",
                    cors.as_deref(),
                    keep_alive,
                );
                return self.after_response(key, keep_alive);
            }
        };
        let timeout = match parse("timeout") {
            None => c.poll_timeout,
            Some(Ok(v)) => Duration::from_secs(v).min(c.poll_timeout_max),
            Some(Err(_)) => {
                self.error_response(
                    400,
                    "timeout must be a number of seconds",
                    cors.as_deref(),
                    keep_alive,
                );
                return self.after_response(key, keep_alive);
            }
        };
        let topic: Arc<str> = Arc::from(topic);
        let token = self.token(key, None);
        let conn = &mut self.conns[key];
        conn.state = State::Waiting;
        // The owner answers at the deadline; this one is the safety net should it not.
        conn.deadline = self.now.wrapping_add(ticks(timeout) + self.timers.close);
        conn.ext.get_or_insert_with(Box::default).waiting = Some(Box::new(Waiting::Poll {
            topic: topic.clone(),
            since,
            cors,
            keep_alive,
        }));
        let wait_until = wait.then(|| Instant::now() + timeout);
        let owner = self.owner_of(&topic);
        self.send(
            owner,
            CoreMsg::Fetch {
                topic,
                token,
                since,
                limit,
                wait_until,
            },
        );
        Next::Wait
    }

    /// `POST /publish/{topic}`: validate the body, have the owner number it, answer with its seq.
    pub(super) fn start_publish(
        &mut self,
        key: usize,
        req: &http::Request<'_, '_>,
        topic: &str,
        body: &[u8],
        cors: Option<Box<str>>,
    ) -> Next {
        let keep_alive = req.keep_alive();
        if !matches!(req.content_length(), Ok(Some(_))) {
            self.error_response(
                411,
                "a publish needs a Content-Length",
                cors.as_deref(),
                false,
            );
            return self.after_response(key, false);
        }
        let mut scratch = Vec::new();
        let data = match ringcast_protocol::pubsub::publish_data(
            req.header("content-type"),
            body,
            &mut scratch,
        ) {
            Ok(d) => Bytes::copy_from_slice(d),
            Err(e) => {
                let msg = match e {
                    ringcast_protocol::pubsub::PublishError::InvalidJson => {
                        "the body is not one JSON value"
                    }
                    _ => "the body is not UTF-8 text",
                };
                self.error_response(400, msg, cors.as_deref(), keep_alive);
                return self.after_response(key, keep_alive);
            }
        };
        let topic: Arc<str> = Arc::from(topic);
        let token = self.token(key, None);
        let conn = &mut self.conns[key];
        conn.state = State::Waiting;
        conn.deadline = self
            .now
            .wrapping_add(self.timers.close.max(self.timers.handshake));
        conn.ext.get_or_insert_with(Box::default).waiting =
            Some(Box::new(Waiting::Publish { cors, keep_alive }));
        let owner = self.owner_of(&topic);
        self.send(
            owner,
            CoreMsg::Publish {
                topic,
                data,
                ack: Some(token),
            },
        );
        Next::Wait
    }
}
