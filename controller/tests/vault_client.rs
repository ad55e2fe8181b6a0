//! Our Vault KV v2 checks against the dev stack's Vault emulator. Secrets are written through the
//! emulator's HTTP API, as any Vault client would.

#![allow(clippy::unwrap_used)]

use std::future::Future;

use futures::FutureExt;
use jobforge_controller::vault::{VaultChecker, VaultError};
use jobforge_devstack::{DevStack, DevStackConfig};

async fn with_vault<F, Fut>(body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut cfg = DevStackConfig::ephemeral();
    cfg.consul_addr = None;
    cfg.nomad_addr = None;
    let stack = DevStack::start(cfg).await.expect("dev stack starts");
    let res = std::panic::AssertUnwindSafe(body(stack.vault_url()))
        .catch_unwind()
        .await;
    stack.shutdown().await;
    if let Err(p) = res {
        std::panic::resume_unwind(p);
    }
}

async fn write(addr: &str, path: &str, data: serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{addr}/v1/secret/data/{path}"))
        .header("X-Vault-Token", "root")
        .json(&serde_json::json!({ "data": data }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "write {path}: {}", r.status());
}

#[tokio::test]
async fn check_paths_reports_only_the_missing_secrets() {
    with_vault(|addr| async move {
        write(
            &addr,
            "jobforge/git",
            serde_json::json!({"username": "u", "password": "p"}),
        )
        .await;
        let v = VaultChecker::new(&addr, "root", None).unwrap();
        let missing = v
            .check_paths(&[
                "secret/data/jobforge/git",
                "secret/jobforge/git",
                "secret/data/jobforge/registry",
            ])
            .await
            .unwrap();
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(missing[0].path, "secret/data/jobforge/registry");
        assert_eq!(missing[0].reason, "not found");
        assert!(v.check_paths(&[]).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn soft_deleted_secret_counts_as_missing() {
    with_vault(|addr| async move {
        write(&addr, "jobforge/old", serde_json::json!({"k": "v"})).await;
        let r = reqwest::Client::new()
            .delete(format!("{addr}/v1/secret/data/jobforge/old"))
            .header("X-Vault-Token", "root")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let v = VaultChecker::new(&addr, "root", None).unwrap();
        let missing = v.check_paths(&["secret/data/jobforge/old"]).await.unwrap();
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(missing[0].reason.contains("deleted"), "{missing:?}");
        assert_eq!(
            v.read_secret("secret/data/jobforge/old").await.unwrap(),
            None
        );
    })
    .await;
}

#[tokio::test]
async fn read_secret_returns_the_current_version_as_strings() {
    with_vault(|addr| async move {
        write(&addr, "jobforge/hook", serde_json::json!({"hmac": "k1"})).await;
        write(
            &addr,
            "jobforge/hook",
            serde_json::json!({"hmac": "k2", "n": 7}),
        )
        .await;
        let v = VaultChecker::new(&addr, "root", None).unwrap();
        let s = v
            .read_secret("secret/data/jobforge/hook")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s["hmac"], "k2");
        assert_eq!(s["n"], "7");
        assert_eq!(
            v.read_secret("secret/data/jobforge/none").await.unwrap(),
            None
        );
    })
    .await;
}

#[tokio::test]
async fn wrong_token_is_permission_denied_not_missing() {
    with_vault(|addr| async move {
        let v = VaultChecker::new(&addr, "not-the-token", None).unwrap();
        let e = v
            .check_paths(&["secret/data/jobforge/git"])
            .await
            .unwrap_err();
        assert!(matches!(e, VaultError::PermissionDenied { .. }), "{e}");
        assert!(!e.is_transient());
    })
    .await;
}

#[tokio::test]
async fn unreachable_vault_is_a_transient_error_not_missing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let v = VaultChecker::new(&addr, "root", None).unwrap();
    let e = v
        .check_paths(&["secret/data/jobforge/git"])
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(matches!(e, VaultError::Transport { .. }), "{e}");
}

#[tokio::test]
async fn malformed_path_is_rejected_before_any_request() {
    let v = VaultChecker::new("http://127.0.0.1:1", "root", None).unwrap();
    let e = v.check_paths(&["secret"]).await.unwrap_err();
    assert!(matches!(e, VaultError::InvalidPath { .. }), "{e}");
}
