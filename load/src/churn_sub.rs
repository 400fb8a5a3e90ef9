//! Owns the subscribing variant of `churn` (`churn --subscribe`): cycles of connect, subscribe, receive, close
//! against a steady HTTP publisher, with an exact sequence check per cycle.
//!
//! One cycle, on one TCP connection:
//! 1. `GET /messages/{topic}` (no `since`): the answer's `next` is the topic's last seq N;
//! 2. upgrade `/ws` on the same keep-alive connection and send `{"op":"sub","topic":..,"since":N,"id":1}`;
//! 3. read the ack, then messages until one arrives that was published after the ack: the publisher stamps each
//!    message with its wall-clock send time (`"t"`, nanoseconds, the same clock for every process on one
//!    machine), so the first message stamped after the ack's arrival ends the wait;
//! 4. close (client close frame, then wait for the server's close and FIN).
//!
//! Why the poll first: a `sub`'s ack carries no seq (only a `pub`'s does, docs/PROTOCOL.md), so a plain `sub`
//! cannot tell whether the first message it gets is the first one published after it was registered. With
//! `since: N` the server owes the cycle N+1, N+2, ... with no gap and no duplicate (replay of what was published
//! between the poll and the registration, then live), so every seq the cycle sees is checked ([`CycleCheck`]):
//! a gap is a lost message, a repeat a duplicate, a step back out of order. A cycle that gets no message published
//! after its ack within the receive timeout counts as a lost cycle; a cycle still waiting when the run ends is
//! "cut off" (the publisher stopped), not lost.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use memchr::memmem;
use ringcast_protocol::pubsub::{ClientOp, RequestId, write_client_op};
use ringcast_protocol::ws::{Message, OpCode};

use crate::cli::{ChurnArgs, FanoutArgs};
use crate::fanout::{json_u64, topic_name};
use crate::net::{Conn, MaskRng, Sources, connect, failure_reason, now_ns, ws_decoder};
use crate::run::ThreadCtx;
use crate::seq::{SeqChecker, SeqResult};
use crate::stats::Tally;

/// Longest time for connecting, the poll, the upgrade and the sub's ack.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long cycles still waiting may run past the end of the run before they are cut off.
const END_GRACE: Duration = Duration::from_secs(1);
/// How long to wait for the server's close frame and FIN after ours.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The sequence check of one cycle subscribed with `since`: the server owes `since + 1, since + 2, ...`, each once
/// and in order.
#[derive(Clone, Copy, Debug)]
pub struct CycleCheck {
    since: u64,
    seqs: SeqChecker,
    /// Seqs at or below `since` (the client said it had them): duplicates.
    stale: u64,
    received: u64,
}

impl CycleCheck {
    /// A check for a subscription resumed from `since`.
    pub fn new(since: u64) -> Self {
        CycleCheck {
            since,
            seqs: SeqChecker::new(),
            stale: 0,
            received: 0,
        }
    }

    /// Records one delivered seq.
    pub fn record(&mut self, seq: u64) {
        self.received += 1;
        if seq <= self.since {
            self.stale += 1;
        } else {
            self.seqs.record(seq);
        }
    }

    /// The outcome over `since + 1 ..= highest seq received` (nothing received: nothing lost here; a cycle that
    /// timed out is counted separately).
    pub fn finish(&self) -> SeqResult {
        let mut r = if self.seqs.distinct() == 0 {
            SeqResult::default()
        } else {
            self.seqs
                .finish(Some((self.since + 1, self.seqs.highest())))
        };
        r.duplicated += self.stale;
        r
    }

    /// Messages recorded.
    pub fn received(&self) -> u64 {
        self.received
    }
}

/// What a server text frame is, for a subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// `{"type":"msg",...}` with its seq and the publisher's `"t"` stamp (0 when absent).
    Msg {
        /// The message's seq (0 when unreadable).
        seq: u64,
        /// The publisher's send time, ns since the epoch.
        stamp: u64,
    },
    /// An ack.
    Ack,
    /// A reset (the history no longer reached back to `since`).
    Reset,
    /// An error reply or anything else.
    Other,
}

/// Classifies one server text frame.
pub fn classify(text: &[u8]) -> Frame {
    if memmem::find(text, b"\"type\":\"msg\"").is_some() {
        let seq = json_u64(text, b"\"seq\":").unwrap_or(0);
        let data = memmem::find(text, b"\"data\":")
            .and_then(|p| text.get(p..))
            .unwrap_or_default();
        let stamp = json_u64(data, b"\"t\":").unwrap_or(0);
        Frame::Msg { seq, stamp }
    } else if memmem::find(text, b"\"type\":\"ack\"").is_some() {
        Frame::Ack
    } else if memmem::find(text, b"\"type\":\"reset\"").is_some() {
        Frame::Reset
    } else {
        Frame::Other
    }
}

/// The arguments of the built-in publisher (fanout's HTTP publisher on the same topics), parsed from its own
/// command line so that options fanout adds later keep their defaults.
///
/// # Errors
/// When the values are rejected by fanout's parser.
pub fn publisher_args(a: &ChurnArgs) -> anyhow::Result<FanoutArgs> {
    #[derive(Parser)]
    struct Publisher {
        #[command(flatten)]
        args: FanoutArgs,
    }
    let p = Publisher::try_parse_from([
        "publisher".to_owned(),
        "--topics".to_owned(),
        a.topics.max(1).to_string(),
        "--topic-prefix".to_owned(),
        a.topic_prefix.clone(),
        "--rate".to_owned(),
        a.publish_rate.to_string(),
        "--duration".to_owned(),
        a.duration.to_string(),
        "--publish-via".to_owned(),
        "http".to_owned(),
    ])?;
    Ok(p.args)
}

/// How a cycle ended (errors are returned as `Err`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// A message published after the ack arrived; the connection was closed.
    Done,
    /// No such message within the receive timeout.
    Lost,
    /// Still waiting when the run ended.
    CutOff,
}

/// Counts shared by one cycle and its thread's tally.
struct Cycle<'a> {
    ctx: &'a ThreadCtx,
    tally: &'a RefCell<Tally>,
    check: CycleCheck,
    established: bool,
}

impl Cycle<'_> {
    /// Records a delivery; `live` (published after the ack) also records its publish-to-receive latency (a
    /// replayed message's age would include time before the subscription).
    fn deliver(&mut self, seq: u64, stamp: u64, live: bool) {
        self.check.record(seq);
        if live {
            self.tally
                .borrow_mut()
                .latency
                .record_us(now_ns().saturating_sub(stamp) / 1000);
        }
        self.ctx.control.received.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads more input, giving up at `until` (`Ok(false)`).
async fn fill_until(c: &mut Conn, until: Instant) -> io::Result<bool> {
    let left = until.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Ok(false);
    }
    match monoio::time::timeout(left, c.fill()).await {
        Ok(r) => r.map(|_| true),
        Err(_) => Ok(false),
    }
}

/// One cycle on topic `topic` for global connection index `i`.
async fn run_cycle(
    cy: &mut Cycle<'_>,
    i: usize,
    topic: &str,
    timeout: Duration,
    end: Instant,
    rng: &mut MaskRng,
) -> io::Result<Outcome> {
    let ctx = cy.ctx;
    let setup_until = Instant::now() + SETUP_TIMEOUT;
    let src = Sources {
        base: ctx.common.source_base,
        count: ctx.common.source_addrs,
    };
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "setup_timeout");
    let s = monoio::time::timeout(
        SETUP_TIMEOUT,
        connect(ctx.common.target, src.for_index(i as u64)),
    )
    .await
    .map_err(|_| timed_out())??;
    let mut c = Conn::new(s, 4096);
    let req = format!("GET /messages/{topic} HTTP/1.1\r\nHost: load\r\n\r\n");
    let poll = async {
        c.send(req.as_bytes()).await?;
        let (status, body) = c.read_response().await?;
        if status != 200 {
            return Err(crate::net::status_error(status));
        }
        let since = json_u64(&body, b"\"next\":")
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "poll_without_next"))?;
        c.ws_upgrade("/ws").await?;
        Ok(since)
    };
    let since = monoio::time::timeout(SETUP_TIMEOUT, poll)
        .await
        .map_err(|_| timed_out())??;
    cy.established = true;
    cy.check = CycleCheck::new(since);
    {
        let mut t = cy.tally.borrow_mut();
        t.established += 1;
    }
    ctx.control.established.fetch_add(1, Ordering::Relaxed);
    let mut op = Vec::new();
    write_client_op(
        &mut op,
        &ClientOp::Sub {
            topic,
            since: Some(since),
            id: Some(RequestId("1")),
        },
    );
    c.push_frame(OpCode::Text, &op, rng);
    c.flush().await?;
    let mut dec = ws_decoder();
    let mut pongs: Vec<Vec<u8>> = Vec::new();
    // Wall-clock time the ack arrived (0 before), and the monotonic deadline for the message after it.
    let mut acked_ns = 0u64;
    let mut wait_until = setup_until;
    let mut done = false;
    while !done {
        if !fill_until(&mut c, wait_until.min(end)).await? {
            let now = Instant::now();
            return if acked_ns > 0 && now >= wait_until {
                Ok(Outcome::Lost)
            } else if now >= end {
                Ok(Outcome::CutOff)
            } else {
                Err(timed_out())
            };
        }
        let input = c.input();
        let len = input.len();
        let mut pos = 0;
        let mut closed = false;
        loop {
            let rest = input.get_mut(pos..).unwrap_or_default();
            let (n, msg) = dec
                .decode(rest)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.as_str()))?;
            pos += n;
            match msg {
                Some(Message::Text(s)) => match classify(s.as_bytes()) {
                    Frame::Msg { seq, stamp } => {
                        if acked_ns == 0 {
                            cy.tally.borrow_mut().error("msg_before_ack");
                        }
                        let live = acked_ns > 0 && stamp > acked_ns;
                        cy.deliver(seq, stamp, live);
                        done |= live;
                    }
                    Frame::Ack if acked_ns == 0 => {
                        acked_ns = now_ns();
                        wait_until = Instant::now() + timeout;
                        ctx.control.subscribed.fetch_add(1, Ordering::Relaxed);
                    }
                    Frame::Ack => cy.tally.borrow_mut().error("second_ack"),
                    Frame::Reset => cy.tally.borrow_mut().error("reset"),
                    Frame::Other => cy.tally.borrow_mut().error("error_reply"),
                },
                Some(Message::Binary(_)) => cy.tally.borrow_mut().error("unexpected_binary"),
                Some(Message::Ping(p)) => pongs.push(p.to_vec()),
                Some(Message::Pong(_)) => {}
                Some(Message::Close(_)) => closed = true,
                None => break,
            }
        }
        c.consume(len);
        if closed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "closed_by_server",
            ));
        }
        for p in pongs.drain(..) {
            c.push_frame(OpCode::Pong, &p, rng);
        }
        c.flush().await?;
    }
    c.push_frame(OpCode::Close, &1000u16.to_be_bytes(), rng);
    c.flush().await?;
    // Wait for the server's close frame and its FIN, so the server closes first (its side keeps TIME_WAIT).
    let close_until = Instant::now() + CLOSE_TIMEOUT;
    while let Ok(true) = fill_until(&mut c, close_until).await {
        let n = c.input().len();
        c.consume(n);
    }
    Ok(Outcome::Done)
}

/// One reactor thread of `churn --subscribe`: `concurrency` workers each running cycles back to back (paced by
/// `--rate` when set) until the run's end.
pub async fn churn_sub_thread(ctx: ThreadCtx, args: ChurnArgs) -> Tally {
    let ctx = Rc::new(ctx);
    let args = Rc::new(args);
    let tally = Rc::new(RefCell::new(Tally::default()));
    ctx.control.set_ready();
    ctx.control.wait_go().await;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.duration);
    let end = deadline + END_GRACE;
    let rate = ctx.rate_share(args.rate);
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    let next_slot = Rc::new(RefCell::new(start));
    let counter = Rc::new(RefCell::new(0usize));
    let done = Rc::new(RefCell::new(0usize));
    let workers = args.concurrency.max(1);
    let topics = args.topics.max(1);
    let timeout = args.receive_timeout();
    for w in 0..workers {
        let (cx, t, slot, cnt, d, a) = (
            ctx.clone(),
            tally.clone(),
            next_slot.clone(),
            counter.clone(),
            done.clone(),
            args.clone(),
        );
        monoio::spawn(async move {
            let mut rng = MaskRng::new((cx.global * 1_000_003 + w) as u64 + 11);
            loop {
                if let Some(iv) = interval {
                    let at = {
                        let mut s = slot.borrow_mut();
                        let at = *s;
                        *s += iv;
                        at
                    };
                    let now = Instant::now();
                    if at > now {
                        monoio::time::sleep(at - now).await;
                    }
                }
                if Instant::now() >= deadline {
                    break;
                }
                let i = {
                    let mut c = cnt.borrow_mut();
                    *c += 1;
                    cx.global + (*c - 1) * cx.total
                };
                let topic = topic_name(&a.topic_prefix, (rng.next_u64() % topics as u64) as usize);
                t.borrow_mut().attempted += 1;
                let mut cy = Cycle {
                    ctx: &cx,
                    tally: &t,
                    check: CycleCheck::new(0),
                    established: false,
                };
                let r = run_cycle(&mut cy, i, &topic, timeout, end, &mut rng).await;
                let seqs = cy.check.finish();
                let mut t = t.borrow_mut();
                t.received += cy.check.received();
                t.lost += seqs.lost;
                t.duplicated += seqs.duplicated;
                t.out_of_order += seqs.out_of_order;
                match r {
                    Ok(Outcome::Done) => t.handshakes += 1,
                    Ok(Outcome::Lost) => t.lost_cycles += 1,
                    Ok(Outcome::CutOff) => t.unfinished += 1,
                    Err(e) if cy.established => t.error(&failure_reason(&e)),
                    Err(e) => {
                        t.fail(&failure_reason(&e));
                        cx.control.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            *d.borrow_mut() += 1;
        });
    }
    let give_up = end + SETUP_TIMEOUT + CLOSE_TIMEOUT + Duration::from_secs(1);
    while *done.borrow() < workers && Instant::now() < give_up {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    let stalled = workers - *done.borrow();
    let mut t = tally.borrow().clone();
    for _ in 0..stalled {
        t.error("stalled");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(since: u64, seqs: &[u64]) -> (u64, SeqResult) {
        let mut c = CycleCheck::new(since);
        for &s in seqs {
            c.record(s);
        }
        (c.received(), c.finish())
    }

    #[test]
    fn cycle_check_table() {
        let r = |delivered, lost, duplicated, out_of_order| SeqResult {
            delivered,
            lost,
            duplicated,
            out_of_order,
        };
        let cases: &[(u64, &[u64], SeqResult)] = &[
            // The usual cycle: one live message right after the poll's seq.
            (7, &[8], r(1, 0, 0, 0)),
            // A replayed message, then the live one.
            (7, &[8, 9], r(2, 0, 0, 0)),
            // Nothing received (a timed-out cycle): nothing lost by seq.
            (7, &[], r(0, 0, 0, 0)),
            // The first owed seq never came.
            (7, &[9], r(1, 1, 0, 0)),
            // A gap in the middle.
            (0, &[1, 2, 4], r(3, 1, 0, 0)),
            // A seq the client already had (at or below since) is a duplicate.
            (7, &[7, 8], r(1, 0, 1, 0)),
            // Repeated and swapped.
            (7, &[8, 8, 10, 9], r(3, 0, 1, 1)),
        ];
        for (since, seqs, want) in cases {
            let (received, got) = check(*since, seqs);
            assert_eq!(received, seqs.len() as u64);
            assert_eq!(got, *want, "since {since}, {seqs:?}");
        }
    }

    #[test]
    fn frames_are_classified() {
        assert_eq!(
            classify(br#"{"type":"msg","topic":"churn.3","seq":12,"data":{"t":1700000000000000001,"i":5,"p":""}}"#),
            Frame::Msg {
                seq: 12,
                stamp: 1_700_000_000_000_000_001
            }
        );
        // A "t" outside data is not the stamp.
        assert_eq!(
            classify(br#"{"type":"msg","topic":"t","seq":1,"data":"x"}"#),
            Frame::Msg { seq: 1, stamp: 0 }
        );
        assert_eq!(classify(br#"{"type":"ack","id":1}"#), Frame::Ack);
        assert_eq!(
            classify(br#"{"type":"reset","topic":"t","seq":3}"#),
            Frame::Reset
        );
        assert_eq!(
            classify(br#"{"type":"error","id":1,"code":"rate_limited","message":"x"}"#),
            Frame::Other
        );
    }

    #[test]
    fn publisher_uses_the_churn_topics_and_rate() {
        let cli = crate::cli::Cli::try_parse_from([
            "ringcast-load",
            "churn",
            "--subscribe",
            "--topics",
            "300",
            "--publish-rate",
            "60",
            "--duration",
            "42",
            "--concurrency",
            "7",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let crate::cli::Mode::Churn(a) = cli.mode else {
            panic!("not churn")
        };
        assert!(a.subscribe);
        assert_eq!(a.concurrency, 7);
        // Twice the 5 s a topic waits between publishes, plus 5 s.
        assert_eq!(a.receive_timeout(), Duration::from_secs(15));
        let p = publisher_args(&a).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (p.topics, p.rate, p.duration, p.topic_prefix.as_str()),
            (300, 60, 42, "churn")
        );
        assert_eq!(p.publish_via, crate::cli::PubVia::Http);
        assert_eq!(topic_name(&p.topic_prefix, 299), "churn.299");
    }
}
