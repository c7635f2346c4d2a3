//! The [`Queue`] conformance suite. Factories build a queue whose redrive policy
//! dead-letters a message after `max_receives` receives.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::queue::{OutgoingMessage, Queue, ReceivedMessage};

const NO_WAIT: Duration = Duration::ZERO;
const SHORT_WAIT: Duration = Duration::from_secs(1);
const LONG_VIS: Duration = Duration::from_secs(60);

fn message(body: &str, group: &str) -> OutgoingMessage {
    OutgoingMessage {
        body: body.to_string(),
        dedup_id: super::unique(body),
        group: group.to_string(),
    }
}

async fn receive_one(q: &dyn Queue, vis: Duration) -> Option<ReceivedMessage> {
    let mut got = q.receive(1, vis, SHORT_WAIT).await.expect("receive");
    assert!(got.len() <= 1, "receive(1) returned {} messages", got.len());
    got.pop()
}

/// A sent message is received once, with its body and group, and gone after ack.
pub async fn send_receive_ack(q: &dyn Queue) {
    q.check().await.expect("a fresh queue passes its check");
    q.send(&[message("hello", "g1")]).await.unwrap();
    let m = receive_one(q, LONG_VIS).await.expect("a message");
    assert_eq!(m.body, "hello");
    assert_eq!(m.group, "g1");
    assert_eq!(m.receive_count, 1);
    q.ack(&m.receipt).await.unwrap();
    assert!(q.receive(10, LONG_VIS, NO_WAIT).await.unwrap().is_empty());
    let depth = q.depth().await.unwrap();
    assert_eq!((depth.visible, depth.in_flight), (0, 0));
}

/// A message that is not acknowledged comes back after its visibility timeout, with a
/// higher receive count and a receipt of its own.
///
/// Whether the first receipt is refused afterwards differs by backend (the embedded
/// queue refuses it; SQS and moto may accept it), so this suite does not ask; workers
/// do not rely on it either (see `Queue`'s docs).
pub async fn visibility_timeout_redelivers(q: &dyn Queue) {
    q.send(&[message("redeliver", "g")]).await.unwrap();
    let first = receive_one(q, Duration::from_secs(1))
        .await
        .expect("a message");
    assert!(q.receive(1, LONG_VIS, NO_WAIT).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = receive_one(q, LONG_VIS).await.expect("redelivered");
    assert_eq!(second.id, first.id);
    assert_eq!(second.receive_count, 2);
    assert_ne!(second.receipt, first.receipt);
    q.extend(&second.receipt, LONG_VIS).await.unwrap();
    q.ack(&second.receipt).await.unwrap();
    assert!(q.receive(1, LONG_VIS, NO_WAIT).await.unwrap().is_empty());
}

/// Heartbeats keep a message invisible well past its first timeout.
pub async fn extend_keeps_message_invisible(q: &dyn Queue) {
    q.send(&[message("long job", "g")]).await.unwrap();
    let m = receive_one(q, Duration::from_secs(1))
        .await
        .expect("a message");
    let until = Instant::now() + Duration::from_millis(3000);
    while Instant::now() < until {
        q.extend(&m.receipt, Duration::from_secs(1)).await.unwrap();
        assert!(
            q.receive(1, LONG_VIS, NO_WAIT).await.unwrap().is_empty(),
            "a message kept alive by heartbeats was handed out again"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    q.ack(&m.receipt).await.unwrap();
}

/// A released message comes back after the delay, not before.
pub async fn release_with_delay(q: &dyn Queue) {
    q.send(&[message("retry me", "g")]).await.unwrap();
    let m = receive_one(q, LONG_VIS).await.expect("a message");
    q.release(&m.receipt, Duration::from_secs(2)).await.unwrap();
    assert!(q.receive(1, LONG_VIS, NO_WAIT).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let again = receive_one(q, LONG_VIS).await.expect("released message");
    assert_eq!(again.id, m.id);
    assert_eq!(again.receive_count, 2);
    q.ack(&again.receipt).await.unwrap();
}

/// A released message with no delay is visible again at once.
pub async fn release_without_delay(q: &dyn Queue) {
    q.send(&[message("give back", "g")]).await.unwrap();
    let m = receive_one(q, LONG_VIS).await.expect("a message");
    q.release(&m.receipt, Duration::ZERO).await.unwrap();
    let again = receive_one(q, LONG_VIS).await.expect("visible again");
    assert_eq!(again.id, m.id);
    q.ack(&again.receipt).await.unwrap();
}

/// Within a group, messages come in order and never while an earlier one is in
/// flight; other groups are not blocked.
pub async fn groups_are_ordered_and_exclusive(q: &dyn Queue) {
    q.send(&[message("a1", "A"), message("a2", "A"), message("b1", "B")])
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        if let Some(m) = receive_one(q, LONG_VIS).await {
            held.push(m);
        }
    }
    let mut bodies: Vec<&str> = held.iter().map(|m| m.body.as_str()).collect();
    bodies.sort();
    assert_eq!(bodies, ["a1", "b1"], "a2 must wait for a1");
    let a1 = held.iter().find(|m| m.body == "a1").unwrap();
    q.ack(&a1.receipt).await.unwrap();
    let a2 = receive_one(q, LONG_VIS).await.expect("a2 after a1 is done");
    assert_eq!(a2.body, "a2");
    q.ack(&a2.receipt).await.unwrap();
    let b1 = held.iter().find(|m| m.body == "b1").unwrap();
    q.ack(&b1.receipt).await.unwrap();
}

/// A second send with the same deduplication id, while the first is queued, is dropped.
pub async fn duplicate_sends_are_dropped(q: &dyn Queue) {
    let m = message("once", "g");
    q.send(std::slice::from_ref(&m)).await.unwrap();
    q.send(std::slice::from_ref(&m)).await.unwrap();
    let got = q.receive(10, LONG_VIS, SHORT_WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    q.ack(&got[0].receipt).await.unwrap();
    assert!(q.receive(10, LONG_VIS, NO_WAIT).await.unwrap().is_empty());
}

/// After `max_receives` receives without an ack, the message is dead-lettered by the
/// backend, with a reason.
pub async fn redrive_after_max_receives(q: &dyn Queue, max_receives: u32) {
    q.send(&[message("crashy", "g")]).await.unwrap();
    for attempt in 1..=max_receives {
        let m = receive_one(q, LONG_VIS)
            .await
            .unwrap_or_else(|| panic!("attempt {attempt} got no message"));
        assert_eq!(m.receive_count, attempt);
        q.release(&m.receipt, Duration::ZERO).await.unwrap();
    }
    assert!(
        q.receive(1, LONG_VIS, SHORT_WAIT).await.unwrap().is_empty(),
        "the message outlived its redrive policy"
    );
    let dead = q.dead_letters(10).await.unwrap();
    let d = dead
        .iter()
        .find(|d| d.body == "crashy")
        .expect("dead-lettered");
    assert!(!d.reason.is_empty());
    assert_eq!(q.depth().await.unwrap().dead_lettered, dead.len() as u64);
}

/// An explicit dead-letter removes the message and keeps the reason.
pub async fn dead_letter_keeps_reason(q: &dyn Queue) {
    q.send(&[message("poison", "g")]).await.unwrap();
    let m = receive_one(q, LONG_VIS).await.expect("a message");
    q.dead_letter(&m, "not valid JSON (line 1, column 1)")
        .await
        .unwrap();
    assert!(q.receive(1, LONG_VIS, NO_WAIT).await.unwrap().is_empty());
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "poison");
    assert_eq!(dead[0].reason, "not valid JSON (line 1, column 1)");
    let depth = q.depth().await.unwrap();
    assert_eq!(
        (depth.visible, depth.in_flight, depth.dead_lettered),
        (0, 0, 1)
    );
}

/// Redriving sends back exactly the dead letters picked, as fresh messages with their
/// bodies and groups; the others stay dead-lettered.
pub async fn redrive_sends_back_what_is_picked(q: &dyn Queue) {
    q.send(&[
        message("dead-a", "ga"),
        message("dead-b", "gb"),
        message("dead-c", "gc"),
    ])
    .await
    .unwrap();
    for _ in 0..3 {
        let m = receive_one(q, LONG_VIS).await.expect("a message");
        q.dead_letter(&m, &format!("reason of {}", m.body))
            .await
            .unwrap();
    }
    let moved = q
        .redrive(&|d: &crate::queue::DeadLetter| d.body != "dead-c")
        .await
        .unwrap();
    let mut bodies: Vec<&str> = moved.iter().map(|d| d.body.as_str()).collect();
    bodies.sort();
    assert_eq!(bodies, ["dead-a", "dead-b"]);
    assert_eq!(moved[0].reason, format!("reason of {}", moved[0].body));
    let left = q.dead_letters(10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].body, "dead-c");
    let mut back = Vec::new();
    for _ in 0..2 {
        back.push(receive_one(q, LONG_VIS).await.expect("a redriven message"));
    }
    back.sort_by(|a, b| a.body.cmp(&b.body));
    assert_eq!(back[0].body, "dead-a");
    assert_eq!(back[0].group, "ga");
    assert_eq!(back[1].group, "gb");
    assert!(back.iter().all(|m| m.receive_count == 1));
    assert!(q.receive(1, LONG_VIS, NO_WAIT).await.unwrap().is_empty());
    // Nothing picked: nothing moves.
    assert!(q.redrive(&|_| false).await.unwrap().is_empty());
    assert_eq!(q.dead_letters(10).await.unwrap().len(), 1);
}

/// Depth counts visible and in-flight messages.
pub async fn depth_counts_visible_and_in_flight(q: &dyn Queue) {
    q.send(&[
        message("d1", "g1"),
        message("d2", "g2"),
        message("d3", "g3"),
    ])
    .await
    .unwrap();
    let m = receive_one(q, LONG_VIS).await.expect("a message");
    let depth = q.depth().await.unwrap();
    assert_eq!((depth.visible, depth.in_flight), (2, 1));
    q.ack(&m.receipt).await.unwrap();
}

/// Many messages sent in one call all arrive, each once.
pub async fn batches_round_trip(q: &dyn Queue) {
    let batch: Vec<OutgoingMessage> = (0..25)
        .map(|i| message(&format!("m{i}"), &format!("g{i}")))
        .collect();
    q.send(&batch).await.unwrap();
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 25 && Instant::now() < deadline {
        for m in q.receive(10, LONG_VIS, SHORT_WAIT).await.unwrap() {
            assert!(seen.insert(m.body.clone()), "{} delivered twice", m.body);
            q.ack(&m.receipt).await.unwrap();
        }
    }
    assert_eq!(seen.len(), 25);
}

/// A long poll returns as soon as a message arrives, not at the end of the wait.
pub async fn long_poll_wakes_on_send(q: Arc<dyn Queue>) {
    let sender = q.clone();
    let send = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sender.send(&[message("late", "g")]).await.unwrap();
    });
    let started = Instant::now();
    let got = q
        .receive(1, LONG_VIS, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "the long poll missed the message");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the long poll slept through the message"
    );
    q.ack(&got[0].receipt).await.unwrap();
    send.await.unwrap();
}

/// Concurrent receivers never get the same message.
pub async fn concurrent_receivers_never_share(q: Arc<dyn Queue>) {
    let batch: Vec<OutgoingMessage> = (0..40)
        .map(|i| message(&format!("c{i}"), &format!("g{i}")))
        .collect();
    q.send(&batch).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = q.receive(3, LONG_VIS, SHORT_WAIT).await.unwrap();
                if got.is_empty() {
                    break;
                }
                for m in got {
                    mine.push(m.body.clone());
                    q.ack(&m.receipt).await.unwrap();
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a message went to two receivers");
    assert_eq!(all.len(), 40);
}

/// A batch acknowledgement deletes every message it names.
pub async fn ack_batch_deletes_all(q: &dyn Queue) {
    let batch: Vec<OutgoingMessage> = (0..13)
        .map(|i| message(&format!("a{i}"), &format!("g{i}")))
        .collect();
    q.send(&batch).await.unwrap();
    let mut receipts = Vec::new();
    while receipts.len() < 13 {
        let got = q.receive(10, LONG_VIS, SHORT_WAIT).await.unwrap();
        assert!(!got.is_empty(), "only {} of 13 received", receipts.len());
        receipts.extend(got.into_iter().map(|m| m.receipt));
    }
    let results = q.ack_batch(&receipts).await;
    assert_eq!(results.len(), 13);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let depth = q.depth().await.unwrap();
    assert_eq!((depth.visible, depth.in_flight), (0, 0));
}

/// Generates one `#[tokio::test]` per queue conformance case. `$factory` is an async
/// function `(max_receives: u32) -> Fixture<dyn Queue>` building a fresh, empty queue.
#[macro_export]
macro_rules! queue_conformance {
    ($factory:ident) => {
        mod queue_conformance {
            use $crate::conformance::queue as cases;
            const MAX_RECEIVES: u32 = 3;

            macro_rules! case {
                ($name:ident, |$q:ident| $body:expr) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let fixture = super::$factory(MAX_RECEIVES).await;
                        let $q = fixture.backend.clone();
                        $body.await;
                    }
                };
            }
            case!(send_receive_ack, |q| cases::send_receive_ack(&*q));
            case!(visibility_timeout_redelivers, |q| {
                cases::visibility_timeout_redelivers(&*q)
            });
            case!(extend_keeps_message_invisible, |q| {
                cases::extend_keeps_message_invisible(&*q)
            });
            case!(release_with_delay, |q| cases::release_with_delay(&*q));
            case!(release_without_delay, |q| cases::release_without_delay(&*q));
            case!(groups_are_ordered_and_exclusive, |q| {
                cases::groups_are_ordered_and_exclusive(&*q)
            });
            case!(duplicate_sends_are_dropped, |q| {
                cases::duplicate_sends_are_dropped(&*q)
            });
            case!(redrive_after_max_receives, |q| {
                cases::redrive_after_max_receives(&*q, MAX_RECEIVES)
            });
            case!(dead_letter_keeps_reason, |q| {
                cases::dead_letter_keeps_reason(&*q)
            });
            case!(redrive_sends_back_what_is_picked, |q| {
                cases::redrive_sends_back_what_is_picked(&*q)
            });
            case!(depth_counts_visible_and_in_flight, |q| {
                cases::depth_counts_visible_and_in_flight(&*q)
            });
            case!(batches_round_trip, |q| cases::batches_round_trip(&*q));
            case!(long_poll_wakes_on_send, |q| cases::long_poll_wakes_on_send(
                q
            ));
            case!(concurrent_receivers_never_share, |q| {
                cases::concurrent_receivers_never_share(q)
            });
            case!(ack_batch_deletes_all, |q| cases::ack_batch_deletes_all(&*q));
        }
    };
}
