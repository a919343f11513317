//! Checks of the `Broadcasts` trait.

use super::*;

pub async fn broadcasts_merge_into_every_inbox(store: Arc<dyn Store>) {
    let store = &*store;
    let (a, b) = (user(store, "ba").await, user(store, "bb").await);
    let send = |id: &str| message(id, &a, &b, None);
    store
        .append_message(send("bm1"), vec![a.clone(), b.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.append_broadcast(announcement("bc1")).await.unwrap(),
        1
    );
    // A user created now does not see bc1.
    let late = user(store, "bl").await;
    store
        .append_message(send("bm2"), vec![a.clone(), b.clone()])
        .await
        .unwrap();
    store.append_broadcast(announcement("bc2")).await.unwrap();
    store.append_broadcast(announcement("bc3")).await.unwrap();
    let out = store
        .append_message(send("bm3"), vec![a.clone(), b.clone()])
        .await
        .unwrap();
    // The seq a writer returns is the visible one.
    let AppendOutcome::Created { events, .. } = out else {
        panic!("duplicate")
    };
    assert_eq!(events[0].seq, Seq(6));

    let full = store.events_after(&a, Seq(0), 100).await.unwrap();
    assert_eq!(
        labels(&full),
        vec!["M:bm1", "B:bc1", "M:bm2", "B:bc2", "B:bc3", "M:bm3"]
    );
    assert_eq!(
        full.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(store.last_seq(&a).await.unwrap(), Seq(6));
    // Resuming from any position gives exactly the rest, in pages too.
    for p in 0..=6u64 {
        let rest = store.events_after(&a, Seq(p), 100).await.unwrap();
        assert_eq!(labels(&rest), labels(&full[p as usize..]), "after {p}");
        assert_eq!(
            rest.first().map(|e| e.seq),
            full.get(p as usize).map(|e| e.seq)
        );
        let page = store.events_after(&a, Seq(p), 2).await.unwrap();
        assert_eq!(
            labels(&page),
            labels(&full[p as usize..(p as usize + 2).min(6)])
        );
    }
    let late_stream = store.events_after(&late, Seq(0), 100).await.unwrap();
    assert_eq!(labels(&late_stream), vec!["B:bc2", "B:bc3"]);
    assert_eq!(store.last_seq(&late).await.unwrap(), Seq(2));
    let m3 = MessageId::parse("bm3").unwrap();
    assert_eq!(store.message_seq(&b, &m3).await.unwrap(), Some(Seq(6)));
    // Acks count broadcasts as positions too.
    assert_eq!(store.ack(&late, Seq(50), vec![]).await.unwrap(), Seq(2));
    // A broadcast after everything is the next position for everyone.
    store.append_broadcast(announcement("bc4")).await.unwrap();
    assert_eq!(store.last_seq(&a).await.unwrap(), Seq(7));
    let tail = store.events_after(&late, Seq(2), 10).await.unwrap();
    assert_eq!(
        (labels(&tail), tail[0].seq),
        (vec!["B:bc4".to_owned()], Seq(3))
    );
    // Placing a broadcast for many users at once agrees with each stream,
    // also after later inbox rows; users who do not see it, or do not
    // exist, are left out.
    store
        .append_message(send("bm4"), vec![a.clone(), b.clone()])
        .await
        .unwrap();
    let ghost = UserId::parse("nobody-here").unwrap();
    for (bseq, label) in [(1, "B:bc1"), (2, "B:bc2"), (3, "B:bc3"), (4, "B:bc4")] {
        let mut placed = store
            .broadcast_positions(bseq, vec![a.clone(), late.clone(), ghost.clone()])
            .await
            .unwrap();
        placed.sort();
        let mut expected = Vec::new();
        for u in [&a, &late] {
            let stream = store.events_after(u, Seq(0), 100).await.unwrap();
            if let Some(e) = stream
                .iter()
                .find(|e| labels(std::slice::from_ref(e))[0] == label)
            {
                expected.push(((*u).clone(), e.seq));
            }
        }
        expected.sort();
        assert_eq!(placed, expected, "broadcast {bseq}");
    }
    assert_eq!(
        store.broadcast_positions(1, vec![a.clone()]).await.unwrap(),
        vec![(a.clone(), Seq(2))]
    );
}
