use super::memory::MemoryKv;
use super::*;
use jobforge_schema::{BuildSpec, Phase};

fn req(ns: &str, name: &str) -> BuildRequest {
    BuildRequest::new(
        ns,
        name,
        BuildSpec {
            owner: "team-a".into(),
            repo_url: "https://git.example.com/a.git".into(),
            git_ref: "main".into(),
            image_name: "app".into(),
            registry_url: "registry.local:5000".into(),
            ..Default::default()
        },
    )
}

fn store() -> RequestStore<MemoryKv> {
    RequestStore::new(MemoryKv::default(), KeyLayout::default())
}

async fn set_status(s: &RequestStore<MemoryKv>, ns: &str, name: &str, st: &BuildStatus) {
    let key = s.keys().status_key(ns, name);
    s.kv()
        .put(&key, &serde_json::to_vec(st).unwrap(), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn create_is_create_only_and_returns_the_modify_index_as_generation() {
    let s = store();
    let g = s.create(&req("default", "a")).await.unwrap();
    let got = s.require("default", "a").await.unwrap();
    assert_eq!(got.generation, g);
    assert!(matches!(
        s.create(&req("default", "a")).await,
        Err(StoreError::AlreadyExists { .. })
    ));
}

#[tokio::test]
async fn replace_with_stale_generation_conflicts_and_with_current_one_bumps_it() {
    let s = store();
    let g = s.create(&req("default", "a")).await.unwrap();
    let g2 = s.replace(&req("default", "a"), Some(g)).await.unwrap();
    assert!(g2 > g);
    assert!(matches!(
        s.replace(&req("default", "a"), Some(g)).await,
        Err(StoreError::Conflict { .. })
    ));
    let g3 = s.replace(&req("default", "a"), None).await.unwrap();
    assert!(g3 > g2);
}

#[tokio::test]
async fn cancel_sets_spec_cancel_and_is_idempotent() {
    let s = store();
    s.create(&req("default", "a")).await.unwrap();
    let first = s.cancel("default", "a").await.unwrap();
    assert!(matches!(first, CancelOutcome::Requested { .. }));
    let got = s.require("default", "a").await.unwrap();
    assert!(got.request.unwrap().spec.cancel);
    assert_eq!(got.generation, first.generation());
    assert_eq!(
        s.cancel("default", "a").await.unwrap(),
        CancelOutcome::AlreadyRequested {
            generation: first.generation()
        }
    );
    assert!(matches!(
        s.cancel("default", "zz").await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test]
async fn cancel_of_a_finished_generation_writes_nothing() {
    for phase in [Phase::Succeeded, Phase::Failed, Phase::Cancelled] {
        let s = store();
        let g = s.create(&req("default", "a")).await.unwrap();
        let st = BuildStatus {
            observed_generation: g,
            phase,
            ..Default::default()
        };
        set_status(&s, "default", "a", &st).await;
        let out = s.cancel("default", "a").await.unwrap();
        assert_eq!(
            out,
            CancelOutcome::Finished {
                generation: g,
                phase
            }
        );
        assert_eq!(out.message(), format!("already {phase}; nothing to cancel"));
        let got = s.require("default", "a").await.unwrap();
        assert_eq!(got.generation, g, "{phase}: a new generation was written");
        assert!(!got.request.unwrap().spec.cancel);
    }
    // A terminal status of an older generation does not count: the new one is running.
    let s = store();
    let g = s.create(&req("default", "a")).await.unwrap();
    let st = BuildStatus {
        observed_generation: g - 1,
        phase: Phase::Succeeded,
        ..Default::default()
    };
    set_status(&s, "default", "a", &st).await;
    assert!(matches!(
        s.cancel("default", "a").await.unwrap(),
        CancelOutcome::Requested { .. }
    ));
}

#[tokio::test]
async fn delete_removes_only_the_spec_unless_purged() {
    let s = store();
    s.create(&req("default", "a")).await.unwrap();
    set_status(&s, "default", "a", &BuildStatus::default()).await;
    s.delete("default", "a", false).await.unwrap();
    assert!(s.get("default", "a").await.unwrap().is_none());
    let (_, st) = s
        .kv()
        .get(&s.keys().status_key("default", "a"), Blocking::default())
        .await
        .unwrap();
    assert!(st.is_some());
    s.create(&req("default", "b")).await.unwrap();
    set_status(&s, "default", "b", &BuildStatus::default()).await;
    s.delete("default", "b", true).await.unwrap();
    let (_, st) = s
        .kv()
        .get(&s.keys().status_key("default", "b"), Blocking::default())
        .await
        .unwrap();
    assert!(st.is_none());
    assert!(matches!(
        s.delete("default", "a", false).await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test]
async fn list_joins_statuses_sorts_and_reports_invalid_documents() {
    let s = store();
    s.create(&req("b", "x")).await.unwrap();
    let g = s.create(&req("a", "y")).await.unwrap();
    s.kv()
        .put(&s.keys().request_key("a", "bad"), b"{not json", None)
        .await
        .unwrap();
    set_status(
        &s,
        "a",
        "y",
        &BuildStatus {
            observed_generation: g,
            phase: Phase::Building,
            ..Default::default()
        },
    )
    .await;
    let all = s.list(None).await.unwrap();
    let names: Vec<_> = all
        .iter()
        .map(|r| format!("{}/{}", r.namespace, r.name))
        .collect();
    assert_eq!(names, ["a/bad", "a/y", "b/x"]);
    assert!(all[0].request.is_err());
    assert_eq!(all[1].phase(), Phase::Building);
    assert_eq!(all[2].phase(), Phase::Pending);
    assert_eq!(s.list(Some("b")).await.unwrap().len(), 1);
}

#[tokio::test]
async fn history_lists_finished_requests_newest_first_with_paging_and_owner() {
    let s = store();
    for (i, name) in ["old", "new", "mid", "running"].iter().enumerate() {
        let mut r = req("default", name);
        if *name == "mid" {
            r.spec.owner = "team-b".into();
        }
        let g = s.create(&r).await.unwrap();
        let t = match *name {
            "old" => Some(1_000),
            "mid" => Some(2_000),
            "new" => Some(3_000),
            _ => None,
        };
        let st = BuildStatus {
            observed_generation: g,
            phase: if t.is_some() {
                Phase::Succeeded
            } else {
                Phase::Building
            },
            completion_time: t.map(|t| chrono::DateTime::from_timestamp(t, 0).unwrap()),
            ..Default::default()
        };
        let _ = i;
        set_status(&s, "default", name, &st).await;
    }
    let page = s.history(None, None, 10, 0).await.unwrap();
    let names: Vec<_> = page.items.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["new", "mid", "old"]);
    assert_eq!(page.total, 3);
    let page = s.history(None, None, 1, 1).await.unwrap();
    assert_eq!(page.items[0].name, "mid");
    let page = s.history(None, Some("team-b"), 10, 0).await.unwrap();
    assert_eq!(page.items.len(), 1);
}

#[tokio::test]
async fn watch_status_blocks_until_the_status_key_changes() {
    let s = store();
    s.create(&req("default", "a")).await.unwrap();
    let (idx, st) = s
        .watch_status("default", "a", 0, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(st.is_none());
    let s2 = s.clone();
    let waiter = tokio::spawn(async move {
        s2.watch_status("default", "a", idx, Duration::from_secs(30))
            .await
            .unwrap()
    });
    set_status(
        &s,
        "default",
        "a",
        &BuildStatus {
            phase: Phase::Testing,
            ..Default::default()
        },
    )
    .await;
    let (idx2, st) = waiter.await.unwrap();
    assert!(idx2 > idx);
    assert_eq!(st.unwrap().phase, Phase::Testing);
}

#[test]
fn label_selector_parses_terms_and_matches_all_of_them() {
    let sel = LabelSelector::parse("app=x, tier==web").unwrap();
    let mut labels = BTreeMap::new();
    labels.insert("app".to_string(), "x".to_string());
    assert!(!sel.matches(&labels));
    labels.insert("tier".to_string(), "web".to_string());
    assert!(sel.matches(&labels));
    assert!(LabelSelector::parse("novalue").is_err());
    assert!(LabelSelector::parse("").unwrap().matches(&BTreeMap::new()));
}
