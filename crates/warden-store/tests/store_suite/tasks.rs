//! Tasks and their revocation.

use std::sync::Arc;

use warden_store::StoreError;

use crate::fixtures::{TRACE_A, TRACE_B, task};
use crate::harness::Harness;

pub async fn task_round_trip(harness: &mut Harness) {
    let store = &harness.store;
    let mut stored = task("task-1", None, TRACE_A, 1_000);
    stored.revoked_at = Some(1_100);

    store.insert_task(&stored).await.expect("insert task");

    let loaded = store.task("task-1").await.expect("load task");
    assert_eq!(loaded, Some(stored));
}

pub async fn task_unknown_id_is_none(harness: &mut Harness) {
    assert_eq!(
        harness.store.task("missing").await.expect("load task"),
        None
    );
}

pub async fn insert_task_rejects_duplicate_id(harness: &mut Harness) {
    let store = &harness.store;
    store
        .insert_task(&task("task-1", None, TRACE_A, 1_000))
        .await
        .expect("insert task");

    let error = store
        .insert_task(&task("task-1", None, TRACE_B, 2_000))
        .await
        .expect_err("duplicate rejected");

    assert!(matches!(error, StoreError::TaskExists { .. }), "{error}");
    let kept = store.task("task-1").await.expect("load").expect("exists");
    assert_eq!(kept.trace_id, TRACE_A);
}

pub async fn insert_task_rejects_unknown_parent(harness: &mut Harness) {
    let store = &harness.store;

    let error = store
        .insert_task(&task("child", Some("ghost"), TRACE_A, 1_000))
        .await
        .expect_err("unknown parent rejected");

    assert!(
        matches!(error, StoreError::ParentNotFound { .. }),
        "{error}"
    );
    assert_eq!(store.task("child").await.expect("load task"), None);
}

pub async fn insert_task_rejects_revoked_parent(harness: &mut Harness) {
    let store = &harness.store;
    store
        .insert_task(&task("root", None, TRACE_A, 1_000))
        .await
        .expect("insert root");
    store.revoke_task("root", 1_050).await.expect("revoke root");

    let error = store
        .insert_task(&task("child", Some("root"), TRACE_A, 1_100))
        .await
        .expect_err("revoked parent rejected");

    assert!(
        matches!(
            error,
            StoreError::ParentRevoked {
                revoked_at: 1_050,
                ..
            }
        ),
        "{error}"
    );
}

pub async fn revoke_cascades_to_descendants_only(harness: &mut Harness) {
    let store = &harness.store;
    let tree = [
        task("root", None, TRACE_A, 1_000),
        task("child", Some("root"), TRACE_A, 1_001),
        task("grandchild", Some("child"), TRACE_A, 1_002),
        task("great-grandchild", Some("grandchild"), TRACE_A, 1_003),
        task("sibling", Some("root"), TRACE_A, 1_004),
        task("other-root", None, TRACE_B, 1_005),
        task("other-child", Some("other-root"), TRACE_B, 1_006),
    ];
    for entry in &tree {
        store.insert_task(entry).await.expect("insert task");
    }

    let revoked = store.revoke_task("child", 2_000).await.expect("revoke");

    assert_eq!(revoked, ["child", "grandchild", "great-grandchild"]);
    for id in ["root", "sibling", "other-root", "other-child"] {
        let loaded = store.task(id).await.expect("load").expect("task exists");
        assert_eq!(loaded.revoked_at, None, "task {id} must stay live");
    }
    for id in ["child", "grandchild", "great-grandchild"] {
        let loaded = store.task(id).await.expect("load").expect("task exists");
        assert_eq!(loaded.revoked_at, Some(2_000), "task {id} must be revoked");
    }
}

pub async fn revoke_skips_tasks_already_revoked(harness: &mut Harness) {
    let store = &harness.store;
    for (id, parent, created_at) in [
        ("root", None, 1_000),
        ("child", Some("root"), 1_001),
        ("sibling", Some("root"), 1_002),
    ] {
        store
            .insert_task(&task(id, parent, TRACE_A, created_at))
            .await
            .expect("insert task");
    }
    store
        .revoke_task("child", 2_000)
        .await
        .expect("revoke child");

    let revoked = store.revoke_task("root", 3_000).await.expect("revoke root");
    let again = store
        .revoke_task("root", 4_000)
        .await
        .expect("revoke again");

    assert_eq!(revoked, ["root", "sibling"]);
    assert!(again.is_empty());
    let child = store.task("child").await.expect("load").expect("exists");
    assert_eq!(child.revoked_at, Some(2_000));
}

pub async fn revoke_unknown_task_returns_empty(harness: &mut Harness) {
    let revoked = harness
        .store
        .revoke_task("missing", 1_000)
        .await
        .expect("revoke");

    assert!(revoked.is_empty());
}

pub async fn tasks_list_newest_first(harness: &mut Harness) {
    let store = &harness.store;
    for (id, created_at) in [
        ("old", 1_000),
        ("new", 3_000),
        ("middle", 2_000),
        ("tie", 2_000),
    ] {
        store
            .insert_task(&task(id, None, TRACE_A, created_at))
            .await
            .expect("insert task");
    }

    let all: Vec<String> = store
        .tasks(10)
        .await
        .expect("list")
        .into_iter()
        .map(|task| task.task_id)
        .collect();
    let limited = store.tasks(2).await.expect("list");

    assert_eq!(all, ["new", "tie", "middle", "old"]);
    assert_eq!(limited.len(), 2);
}

pub async fn task_text_round_trips_exactly(harness: &mut Harness) {
    let store = &harness.store;
    let mut stored = task("t-ü", None, TRACE_A, 1_000);
    stored.intent = "summarise 'notes'; DROP TABLE tasks; -- \u{1F600} \"x\" \\ y".into();
    stored.user = "o'brien@acme.test".into();
    stored.tools = vec!["*".into(), "files__*".into()];

    store.insert_task(&stored).await.expect("insert task");

    let loaded = store.task("t-ü").await.expect("load task");
    assert_eq!(loaded, Some(stored));
}

/// Delegations from a parent race a revocation of the parent's subtree:
/// every child either was refused or ended up revoked with it.
pub async fn concurrent_delegation_and_revocation_leave_no_live_child(harness: &mut Harness) {
    let other = harness.open_another().await;
    let store = Arc::clone(&harness.store);
    store
        .insert_task(&task("root", None, TRACE_A, 1_000))
        .await
        .expect("insert root");
    store
        .insert_task(&task("parent", Some("root"), TRACE_A, 1_001))
        .await
        .expect("insert parent");

    let delegations: Vec<_> = (0..20_i64)
        .map(|index| {
            let store = if index % 2 == 0 {
                Arc::clone(&store)
            } else {
                Arc::clone(&other)
            };
            tokio::spawn(async move {
                let id = format!("child-{index}");
                let outcome = store
                    .insert_task(&task(&id, Some("parent"), TRACE_A, 1_002 + index))
                    .await;
                (id, outcome)
            })
        })
        .collect();
    let revoker = {
        let other = Arc::clone(&other);
        tokio::spawn(async move { other.revoke_task("root", 5_000).await })
    };
    let revoked = revoker.await.expect("revoker finished").expect("revoke");
    let mut inserted = Vec::new();
    for delegation in delegations {
        let (id, outcome) = delegation.await.expect("delegation finished");
        match outcome {
            Ok(()) => inserted.push(id),
            Err(StoreError::ParentRevoked { .. }) => {}
            Err(error) => panic!("unexpected error for {id}: {error}"),
        }
    }

    for id in &inserted {
        let child = store.task(id).await.expect("load").expect("exists");
        if child.revoked_at.is_none() {
            assert!(
                !revoked.contains(id),
                "{id} reported revoked but stored live"
            );
            panic!("{id} was delegated from a revoked parent and stayed live");
        }
    }
    other.close().await.expect("close second store");
}

/// A task whose text contains NUL round-trips on SQLite and is rejected
/// with a clear error on PostgreSQL, whose text cannot hold NUL; it is
/// never stored altered.
pub async fn task_with_nul_kept_or_rejected(harness: &mut Harness) {
    let store = &harness.store;
    let mut stored = task("task-1", None, TRACE_A, 1_000);
    stored.intent = "read\0write".into();

    let inserted = store.insert_task(&stored).await;

    let loaded = store.task("task-1").await.expect("load task");
    if harness.is_postgres() {
        let error = inserted.expect_err("NUL rejected");
        assert!(matches!(error, StoreError::Unstorable { .. }), "{error}");
        assert!(error.to_string().contains("intent"), "{error}");
        assert_eq!(loaded, None);
    } else {
        inserted.expect("insert task");
        assert_eq!(loaded, Some(stored));
    }
}
