//! kube-rs, a real client library, against waggle's API server: CRUD,
//! list, watch and patch; and the watch cache behind watches.

mod support;

use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use support::TestServer;

fn configmap(name: &str, value: &str) -> anyhow::Result<ConfigMap> {
    Ok(serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "t"}}, "data": {"v": value}}))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_creates_lists_watches_patches_and_deletes() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = server.kube_client().await?;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");

    let created = api.create(&PostParams::default(), &configmap("one", "1")?).await?;
    let rv = created.metadata.resource_version.clone().unwrap_or_default();
    let mut stream = api.watch(&WatchParams::default().labels("app=t"), &rv).await?.boxed();

    api.patch("one", &PatchParams::default(), &Patch::Merge(json!({"data": {"v": "2"}}))).await?;
    api.create(&PostParams::default(), &configmap("two", "x")?).await?;
    let listed = api.list(&ListParams::default().labels("app=t")).await?;
    anyhow::ensure!(listed.items.len() == 2, "two configmaps listed, got {}", listed.items.len());
    api.delete("one", &DeleteParams::default()).await?;

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await??;
        match ev {
            Some(WatchEvent::Added(cm)) => seen.push(format!("ADDED {}", cm.metadata.name.unwrap_or_default())),
            Some(WatchEvent::Modified(cm)) => seen.push(format!("MODIFIED {}", cm.metadata.name.unwrap_or_default())),
            Some(WatchEvent::Deleted(cm)) => seen.push(format!("DELETED {}", cm.metadata.name.unwrap_or_default())),
            Some(WatchEvent::Bookmark(_)) => {}
            Some(WatchEvent::Error(e)) => anyhow::bail!("watch error: {e:?}"),
            None => anyhow::bail!("the watch ended early"),
        }
    }
    anyhow::ensure!(seen == ["MODIFIED one", "ADDED two", "DELETED one"], "watch events in order: {seen:?}");
    let err = api.get("one").await.expect_err("deleted");
    anyhow::ensure!(matches!(&err, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"), "404: {err:?}");
    Ok(())
}

async fn metric(server: &TestServer, name: &str) -> anyhow::Result<u64> {
    let client = server.kube_client().await?;
    let text = client.request_text(http_get("/metrics")?).await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).map(str::trim).and_then(|v| v.parse().ok()))
        .ok_or_else(|| anyhow::anyhow!("metric {name} missing from:\n{text}"))
}

fn http_get(path: &str) -> anyhow::Result<http::Request<Vec<u8>>> {
    Ok(http::Request::get(path).body(Vec::new())?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_watchers_share_one_store_watch_and_all_see_a_change() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = server.kube_client().await?;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let before = metric(&server, "apiserver_watch_cache_store_watches_total").await?;
    let rv = api.list(&ListParams::default()).await?.metadata.resource_version.unwrap_or_default();
    let mut streams = Vec::new();
    for _ in 0..20 {
        streams.push(api.watch(&WatchParams::default(), &rv).await?.boxed());
    }
    api.create(&PostParams::default(), &configmap("shared", "1")?).await?;
    for s in &mut streams {
        match tokio::time::timeout(Duration::from_secs(5), s.try_next()).await?? {
            Some(WatchEvent::Added(cm)) => anyhow::ensure!(cm.metadata.name.as_deref() == Some("shared")),
            other => anyhow::bail!("expected ADDED shared, got {other:?}"),
        }
    }
    let after = metric(&server, "apiserver_watch_cache_store_watches_total").await?;
    anyhow::ensure!(after - before <= 1, "configmaps needed at most one store watch, opened {}", after - before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_resource_version_older_than_the_cache_window_gets_410() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.watch_cache_history = 3).await?;
    let client = server.kube_client().await?;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let first = api.create(&PostParams::default(), &configmap("old", "0")?).await?;
    let old_rv = first.metadata.resource_version.unwrap_or_default();
    for i in 1..10 {
        api.patch("old", &PatchParams::default(), &Patch::Merge(json!({"data": {"v": i.to_string()}}))).await?;
    }
    let mut stream = api.watch(&WatchParams::default(), &old_rv).await?.boxed();
    match tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await?? {
        Some(WatchEvent::Error(e)) => anyhow::ensure!(e.code == 410 && e.reason == "Expired", "410 Expired: {e:?}"),
        other => anyhow::bail!("expected a 410 ERROR event, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_server_side_apply_conflicts_between_managers_until_forced() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = server.kube_client().await?;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let applied =
        |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"v": v}});

    let created = api.patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(applied("1"))).await?;
    let entries = created.metadata.managed_fields.unwrap_or_default();
    anyhow::ensure!(entries.len() == 1, "one manager: {entries:?}");
    anyhow::ensure!(entries[0].manager.as_deref() == Some("alice") && entries[0].operation.as_deref() == Some("Apply"));
    let fields = entries[0].fields_v1.as_ref().map(|f| f.0.clone()).unwrap_or_default();
    anyhow::ensure!(fields == json!({"f:data": {"f:v": {}}}), "alice owns data.v: {fields}");

    // Same value: shared. Another value: conflict with alice.
    api.patch("ssa", &PatchParams::apply("bob"), &Patch::Apply(applied("1"))).await?;
    let err = api.patch("ssa", &PatchParams::apply("bob"), &Patch::Apply(applied("2"))).await.expect_err("conflict");
    match &err {
        kube::Error::Api(s) => {
            anyhow::ensure!(s.code == 409 && s.reason == "Conflict", "409 Conflict: {s:?}");
            anyhow::ensure!(
                s.message == r#"Apply failed with 1 conflict: conflict with "alice": .data.v"#,
                "upstream's message: {}",
                s.message
            );
        }
        other => anyhow::bail!("expected an API error, got {other:?}"),
    }

    let forced = api.patch("ssa", &PatchParams::apply("bob").force(), &Patch::Apply(applied("2"))).await?;
    anyhow::ensure!(forced.data.unwrap_or_default().get("v").map(String::as_str) == Some("2"), "bob's value");
    let managers: Vec<String> =
        forced.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|e| e.manager).collect();
    anyhow::ensure!(managers == ["bob"], "alice lost her only field: {managers:?}");

    // A merge patch is an update: it takes the field from the applier.
    api.patch(
        "ssa",
        &PatchParams { field_manager: Some("carol".into()), ..PatchParams::default() },
        &Patch::Merge(json!({"data": {"v": "3"}})),
    )
    .await?;
    let err = api.patch("ssa", &PatchParams::apply("bob"), &Patch::Apply(applied("2"))).await.expect_err("conflict");
    anyhow::ensure!(
        matches!(&err, kube::Error::Api(s) if s.message.contains(r#"conflict with "carol" using v1: .data.v"#)),
        "conflict with the updater: {err:?}"
    );
    Ok(())
}
