//! The engine driven directly, over a perfect in-memory network: the
//! application-facing contract (state-transfer cut, clean leave, errors).

use bytes::Bytes;
use vsync_core::engine::EngineError;
mod common;

use common::{Net, delivered};
use vsync_core::{AppEvent, Config, Engine, Pid};

#[test]
fn state_transfer_is_named_at_the_exact_cut() {
    let mut net = Net::new();
    let a = net.add(1, true);
    let b = net.add(2, false);
    net.run(200_000);
    for i in 0..10u8 {
        net.engines[a]
            .multicast(net.now, Bytes::from(vec![i]))
            .unwrap();
    }
    net.run(50_000);
    let c = net.add(3, false);
    net.run(300_000);
    let view_of = |evs: &[AppEvent]| {
        evs.iter()
            .filter_map(|e| match e {
                AppEvent::View { view, .. } => Some(view.clone()),
                _ => None,
            })
            .next_back()
    };
    let last = view_of(&net.events[a]).expect("a view");
    assert_eq!(last.members.len(), 3, "{last}");
    // The joiner is told whom to expect the state from, with its first view.
    let joiner = &net.events[c];
    let pos_view = joiner
        .iter()
        .position(|e| matches!(e, AppEvent::View { joined: true, .. }));
    let pos_await = joiner
        .iter()
        .position(|e| matches!(e, AppEvent::AwaitState { .. }));
    assert_eq!(
        pos_await,
        pos_view.map(|p| p + 1),
        "AwaitState follows the joiner's first View"
    );
    let Some(AppEvent::AwaitState { donor, view }) = pos_await.map(|p| &joiner[p]) else {
        panic!("no AwaitState: {joiner:?}")
    };
    assert_eq!(*view, last.id);
    // The donor is told to send it right after its last old-view delivery:
    // every one of the ten multicasts comes before, nothing after.
    let d = net
        .engines
        .iter()
        .position(|e| e.pid() == *donor)
        .expect("donor is a member");
    let evs = &net.events[d];
    let send_at = evs
        .iter()
        .position(|e| matches!(e, AppEvent::SendState { joiner, .. } if *joiner == Pid::new(3, 1)))
        .expect("the donor got SendState");
    assert_eq!(delivered(&evs[..send_at]).len(), 10);
    assert!(
        matches!(evs[send_at - 1], AppEvent::View { .. }),
        "SendState comes right after the View"
    );
    let _ = b;
}

#[test]
fn a_clean_leave_is_a_view_change_and_the_leaver_is_told() {
    let mut net = Net::new();
    let a = net.add(1, true);
    let b = net.add(2, false);
    let c = net.add(3, false);
    net.run(300_000);
    net.engines[b]
        .multicast(net.now, Bytes::from_static(b"bye"))
        .unwrap();
    net.engines[b].leave(net.now);
    net.run(300_000);
    assert!(
        net.events[b]
            .iter()
            .any(|e| matches!(e, AppEvent::Left { .. }))
    );
    assert!(
        !net.events[b]
            .iter()
            .any(|e| matches!(e, AppEvent::Removed { .. }))
    );
    // Its last multicast was delivered everywhere, in the old view.
    for i in [a, b, c] {
        assert!(
            delivered(&net.events[i]).contains(&Bytes::from_static(b"bye")),
            "at {i}"
        );
    }
    let v = net.engines[a].view().cloned().expect("a is a member");
    assert_eq!(v.members, vec![Pid::new(1, 1), Pid::new(3, 1)]);
    assert_eq!(
        net.engines[b].multicast(net.now, Bytes::new()),
        Err(EngineError::Left)
    );
}

#[test]
fn errors_before_starting() {
    let mut e = Engine::new(Pid::new(1, 1), Config::default());
    assert_eq!(e.multicast(0, Bytes::new()), Err(EngineError::NotStarted));
    assert_eq!(e.poll_timeout(), None);
    assert!(e.poll_output().is_none());
}

#[test]
fn fifo_causal_and_total_do_not_wait_for_stability_but_safe_does() {
    use vsync_core::Delivery;
    let mut net = Net::new();
    let a = net.add(1, true);
    let b = net.add(2, false);
    net.run(100_000);
    let c = net.add(3, false);
    net.run(200_000);
    // c stops answering (not yet suspected): nothing is stable any more.
    net.dead[c] = true;
    let t0 = net.events[b].len();
    for (i, mode) in Delivery::ALL.into_iter().enumerate() {
        net.engines[a]
            .multicast_with(net.now, Bytes::from(vec![i as u8]), mode)
            .unwrap();
    }
    net.run(20_000);
    // (No order between the two families: compare as a set.)
    let mut modes_at_b: Vec<Delivery> = net.events[b][t0..]
        .iter()
        .filter_map(|e| match e {
            AppEvent::Deliver { mode, .. } => Some(*mode),
            _ => None,
        })
        .collect();
    modes_at_b.sort_by_key(|m| *m as u8);
    assert_eq!(
        modes_at_b,
        vec![Delivery::Fifo, Delivery::Causal, Delivery::Total],
        "before the view change"
    );
    // The view change without c delivers the safe one in the old view.
    net.run(1_000_000);
    let got: Vec<Bytes> = delivered(&net.events[b][t0..]);
    assert_eq!(got.len(), 4, "{got:?}");
    let safe_at = net.events[b][t0..]
        .iter()
        .position(|e| {
            matches!(
                e,
                AppEvent::Deliver {
                    mode: Delivery::Safe,
                    ..
                }
            )
        })
        .unwrap();
    let view_at = net.events[b][t0..]
        .iter()
        .position(|e| matches!(e, AppEvent::View { .. }))
        .unwrap();
    assert!(
        safe_at < view_at,
        "the safe message belongs to the old view"
    );
}
