//! Untrusted input: random and extreme messages thrown at a live group never
//! panic an engine, and garbage from outsiders does not disturb delivery.

mod common;

use bytes::Bytes;
use common::{Net, delivered};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vsync_core::message::{Ballot, FlushReport, Proposal};
use vsync_core::{Message, Pid, View, ViewId};

fn num(rng: &mut ChaCha8Rng) -> u64 {
    match rng.random_range(0..6) {
        0 => 0,
        1 => u64::MAX,
        2 => u64::MAX / 2,
        3 => rng.random_range(0..4),
        _ => rng.random(),
    }
}

fn pid(rng: &mut ChaCha8Rng) -> Pid {
    Pid::new(rng.random_range(0..6), rng.random_range(0..3))
}

fn view_id(rng: &mut ChaCha8Rng, real: ViewId) -> ViewId {
    if rng.random_bool(0.5) {
        real
    } else {
        ViewId {
            epoch: num(rng),
            installer: pid(rng),
        }
    }
}

fn garbage(rng: &mut ChaCha8Rng, real: ViewId) -> Message {
    let view = view_id(rng, real);
    let ballot = Ballot {
        round: num(rng),
        proposer: pid(rng),
    };
    let v = |rng: &mut ChaCha8Rng| {
        (0..rng.random_range(0..5))
            .map(|_| num(rng))
            .collect::<Vec<_>>()
    };
    let proposal = |rng: &mut ChaCha8Rng| Proposal {
        view: View {
            id: view_id(rng, real),
            members: (0..rng.random_range(0..4)).map(|_| pid(rng)).collect(),
        },
        base: num(rng),
        base_seq: v(rng),
        tail: (0..rng.random_range(0..4))
            .map(|_| (rng.random_range(0..5), num(rng)))
            .collect(),
        leavers: vec![pid(rng)],
        transfers: vec![(pid(rng), pid(rng))],
    };
    match rng.random_range(0..17) {
        0 => Message::Data {
            view,
            first_seq: num(rng),
            payloads: vec![Bytes::from_static(b"x"); rng.random_range(0..4)],
        },
        1 => Message::Order {
            view,
            first_pos: num(rng),
            runs: (0..rng.random_range(0..4))
                .map(|_| (rng.random_range(0..5), num(rng), rng.random()))
                .collect(),
        },
        2 => Message::Ack {
            view,
            have: num(rng),
            order_len: num(rng),
            recv: v(rng),
        },
        3 => Message::Nack {
            view,
            data: vec![(rng.random_range(0..5), num(rng), num(rng))],
            order: Some((num(rng), num(rng))),
        },
        4 => Message::LeaveRequest { view },
        5 => Message::Suspect {
            view,
            pids: vec![pid(rng)],
        },
        6 => Message::FlushStart { old: view, ballot },
        7 => Message::FlushState {
            old: view,
            ballot,
            report: Box::new(FlushReport {
                delivered: num(rng),
                delivered_seq: v(rng),
                order: vec![(rng.random_range(0..5), num(rng))],
                order_from: num(rng),
                recv: v(rng),
                payloads: vec![(rng.random_range(0..5), num(rng), Bytes::new())],
                accepted: None,
            }),
        },
        8 => Message::FlushReject {
            old: view,
            promised: ballot,
        },
        9 => Message::Prepare {
            old: view,
            ballot,
            proposal: Box::new(proposal(rng)),
            payloads: Vec::new(),
        },
        10 => Message::PrepareAck { old: view, ballot },
        11 => Message::Commit {
            old: view,
            new: view_id(rng, real),
        },
        12 => Message::Install {
            old: view,
            proposal: Box::new(proposal(rng)),
            payloads: Vec::new(),
        },
        13 => Message::Welcome {
            view: proposal(rng).view,
            transfers: Vec::new(),
        },
        14 => Message::InstallAck { new: view },
        15 => Message::Probe { view },
        _ => Message::NotMember { view },
    }
}

#[test]
fn random_messages_from_anyone_never_panic() {
    for seed in 0..300 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut net = Net::new();
        for node in 1..=3 {
            net.add(node, node == 1);
        }
        net.run(200_000);
        let real = net.engines[0].view().map(|v| v.id).expect("a view");
        for round in 0..400 {
            let target = rng.random_range(0..net.engines.len());
            let from = if rng.random_bool(0.5) {
                net.engines[rng.random_range(0..3)].pid()
            } else {
                pid(&mut rng)
            };
            let msg = garbage(&mut rng, real);
            let now = net.now;
            net.engines[target].handle_message(now, from, msg);
            if round % 10 == 0 {
                let _ = net.engines[target].multicast(now, Bytes::from_static(b"m"));
                net.run(5_000);
            }
        }
        net.run(500_000);
    }
}

#[test]
fn garbage_from_outsiders_does_not_disturb_delivery() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut net = Net::new();
    for node in 1..=3 {
        net.add(node, node == 1);
    }
    net.run(200_000);
    let real = net.engines[0].view().cloned().expect("a view");
    for i in 0..300u32 {
        let target = rng.random_range(0..3);
        let outsider = Pid::new(rng.random_range(10..20), rng.random_range(0..3));
        let msg = match garbage(&mut rng, real.id) {
            // A join request from an outsider is a legitimate request.
            Message::JoinRequest { .. } => continue,
            m => m,
        };
        let now = net.now;
        net.engines[target].handle_message(now, outsider, msg);
        if i % 30 == 0 {
            net.engines[target]
                .multicast(now, Bytes::from(i.to_be_bytes().to_vec()))
                .unwrap();
            net.run(2_000);
        }
    }
    net.run(300_000);
    let first = delivered(&net.events[0]);
    assert_eq!(first.len(), 10, "every multicast delivered");
    for e in &net.events {
        assert_eq!(delivered(e), first, "same deliveries, same order");
    }
    for e in &net.engines {
        assert_eq!(e.view(), Some(&real), "the view did not change");
    }
}

/// A forged ordering record from the sequencer's identity naming 2^32 - 1
/// positions per run: the engine keeps at most what a sequencer can have
/// unstable (before the bound, this allocated tens of gigabytes and ran for
/// minutes: the elapsed-time check is a hang detector, not a speed target).
#[test]
fn a_forged_ordering_record_of_billions_of_positions_is_cut_short() {
    let mut net = Net::new();
    for node in 1..=3 {
        net.add(node, node == 1);
    }
    net.run(200_000);
    let real = net.engines[0].view().cloned().expect("a view");
    let coordinator = real.members[0];
    let now = net.now;
    let started = std::time::Instant::now();
    net.engines[1].handle_message(
        now,
        coordinator,
        Message::Order {
            view: real.id,
            first_pos: 1,
            runs: vec![(0, 1, u32::MAX), (1, 1, u32::MAX), (2, 1, u32::MAX)],
        },
    );
    // Without the bound this takes minutes and tens of GiB; with it, no time.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the forged record was applied at length"
    );
    let _ = net.engines[1].drain_outputs();
    net.run(100_000);
    assert!(net.engines[0].view().is_some(), "the others go on");
}
