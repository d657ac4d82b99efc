//! Debian's etcdctl 3.4 (`ETCDCTL_API=3`) as the judge of the gRPC API:
//! every test starts a server on a free loopback port and drives it with the
//! real binary.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use waggle_store::grpc::{EtcdServer, MemberInfo, ServerInfo};
use waggle_store::{MemStore, MemStoreConfig, Store};

struct Server {
    addr: SocketAddr,
    store: MemStore,
    _stop: oneshot::Sender<()>,
}

async fn start() -> anyhow::Result<Server> {
    let config =
        MemStoreConfig { min_lease_ttl: 1, lease_check_interval: Duration::from_millis(50), ..Default::default() };
    let store = MemStore::new(config)?;
    let member = MemberInfo::new(
        "test-member",
        vec!["http://127.0.0.1:2380".to_owned()],
        vec!["http://127.0.0.1:2379".to_owned()],
    );
    let server = EtcdServer::new(Arc::new(store.clone()), ServerInfo::single(member, "test-cluster"));
    let (stop, stopped) = oneshot::channel::<()>();
    let (addr, _task) = server
        .spawn("127.0.0.1:0".parse()?, async move {
            let _ = stopped.await;
        })
        .await?;
    Ok(Server { addr, store, _stop: stop })
}

impl Server {
    fn etcdctl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=127.0.0.1:{}", self.addr.port()))
            .arg("--command-timeout=10s")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs etcdctl to completion; returns stdout, failing on a non-zero exit.
    async fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let (ok, stdout, stderr) = self.run_status(args).await?;
        ensure!(ok, "etcdctl {args:?} failed: {stderr}");
        Ok(stdout)
    }

    /// Runs etcdctl to completion; returns (success, stdout, stderr).
    async fn run_status(&self, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        let out = tokio::time::timeout(Duration::from_secs(30), self.etcdctl(args).output())
            .await
            .with_context(|| format!("etcdctl {args:?} did not finish in 30 s"))?
            .context("running etcdctl (is Debian's etcd-client installed?)")?;
        Ok((out.status.success(), String::from_utf8(out.stdout)?, String::from_utf8(out.stderr)?))
    }

    async fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = vec!["-w", "json"];
        all.extend_from_slice(args);
        Ok(serde_json::from_str(&self.run(&all).await?)?)
    }
}

/// etcdctl's JSON prints keys and values in base64.
fn b64(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Reads lines from a running `etcdctl watch` until `want` lines arrived.
async fn read_lines(child: &mut Child, want: usize) -> anyhow::Result<Vec<String>> {
    let stdout = child.stdout.take().context("watch stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut got = Vec::new();
    while got.len() < want {
        match tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await {
            Ok(Ok(Some(line))) => got.push(line),
            Ok(Ok(None)) => bail!("etcdctl watch ended after {got:?}"),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => bail!("etcdctl watch printed only {got:?} in 10 s"),
        }
    }
    Ok(got)
}

/// Gives a freshly spawned `etcdctl watch` time to open its watcher
/// (etcdctl prints nothing when it is ready).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(700)).await;
}

#[tokio::test]
async fn etcdctl_puts_and_gets_keys_with_their_revisions() -> anyhow::Result<()> {
    let s = start().await?;
    assert_eq!(s.run(&["put", "foo", "bar"]).await?.trim(), "OK");
    assert_eq!(s.run(&["put", "foo", "baz"]).await?.trim(), "OK");
    assert_eq!(s.run(&["get", "foo"]).await?, "foo\nbaz\n");
    let json = s.json(&["get", "foo"]).await?;
    let kv = &json["kvs"][0];
    assert_eq!(kv["key"], b64("foo"));
    assert_eq!(kv["value"], b64("baz"));
    assert_eq!(kv["create_revision"], 2);
    assert_eq!(kv["mod_revision"], 3);
    assert_eq!(kv["version"], 2);
    assert_eq!(json["header"]["revision"], 3);
    assert_eq!(json["count"], 1);
    assert_ne!(json["header"]["cluster_id"], 0);
    assert_ne!(json["header"]["member_id"], 0);
    assert_eq!(json["header"]["raft_term"], 1);
    Ok(())
}

#[tokio::test]
async fn etcdctl_gets_by_prefix_at_a_revision_and_with_a_limit() -> anyhow::Result<()> {
    let s = start().await?;
    for (k, v) in [("app/a", "1"), ("app/b", "2"), ("app/c", "3"), ("other", "x")] {
        s.run(&["put", k, v]).await?;
    }
    s.run(&["put", "app/a", "changed"]).await?;
    assert_eq!(s.run(&["get", "--prefix", "app/"]).await?, "app/a\nchanged\napp/b\n2\napp/c\n3\n");
    assert_eq!(s.run(&["get", "--prefix", "app/", "--rev=3"]).await?, "app/a\n1\napp/b\n2\n");
    assert_eq!(s.run(&["get", "--prefix", "app/", "--keys-only"]).await?, "app/a\n\napp/b\n\napp/c\n\n");
    let limited = s.json(&["get", "--prefix", "app/", "--limit=2"]).await?;
    assert_eq!(limited["kvs"].as_array().map(Vec::len), Some(2));
    assert_eq!(limited["more"], true);
    assert_eq!(limited["count"], 3);
    assert_eq!(s.run(&["get", "--from-key", "app/c"]).await?, "app/c\n3\nother\nx\n");
    assert_eq!(s.run(&["get", "--prefix", "app/", "--order=DESCEND", "--limit=1"]).await?, "app/c\n3\n");
    Ok(())
}

#[tokio::test]
async fn etcdctl_deletes_a_key_and_a_prefix() -> anyhow::Result<()> {
    let s = start().await?;
    for k in ["d/1", "d/2", "d/3", "keep"] {
        s.run(&["put", k, "v"]).await?;
    }
    assert_eq!(s.run(&["del", "d/1"]).await?.trim(), "1");
    assert_eq!(s.run(&["del", "--prev-kv", "--prefix", "d/"]).await?, "2\nd/2\nv\nd/3\nv\n");
    assert_eq!(s.run(&["del", "missing"]).await?.trim(), "0");
    assert_eq!(s.run(&["get", "--prefix", ""]).await?, "keep\nv\n");
    Ok(())
}

#[tokio::test]
async fn etcdctl_watch_prints_puts_and_deletes_under_a_prefix() -> anyhow::Result<()> {
    let s = start().await?;
    let mut watch = s.etcdctl(&["watch", "--prefix", "w/", "--prev-kv"]).spawn()?;
    settle().await;
    s.run(&["put", "w/1", "one"]).await?;
    s.run(&["put", "elsewhere", "x"]).await?;
    s.run(&["put", "w/1", "two"]).await?;
    s.run(&["del", "w/1"]).await?;
    // With --prev-kv, etcdctl prints the previous key and value before the new ones.
    let lines = read_lines(&mut watch, 13).await?;
    let expected = ["PUT", "w/1", "one", "PUT", "w/1", "one", "w/1", "two", "DELETE", "w/1", "two", "w/1", ""];
    assert_eq!(lines, expected);
    watch.kill().await?;
    Ok(())
}

#[tokio::test]
async fn etcdctl_watch_from_a_past_revision_replays_history() -> anyhow::Result<()> {
    let s = start().await?;
    s.run(&["put", "h", "1"]).await?; // rev 2
    s.run(&["put", "h", "2"]).await?; // rev 3
    s.run(&["put", "h", "3"]).await?; // rev 4
    let mut watch = s.etcdctl(&["watch", "--rev=3", "h"]).spawn()?;
    let lines = read_lines(&mut watch, 6).await?;
    assert_eq!(lines, ["PUT", "h", "2", "PUT", "h", "3"]);
    watch.kill().await?;
    Ok(())
}

#[tokio::test]
async fn etcdctl_watch_from_a_compacted_revision_reports_the_compaction() -> anyhow::Result<()> {
    let s = start().await?;
    for v in ["1", "2", "3"] {
        s.run(&["put", "c", v]).await?;
    }
    s.run(&["compaction", "4"]).await?;
    let (ok, stdout, stderr) = s.run_status(&["watch", "--rev=2", "c"]).await?;
    let all = format!("{stdout}{stderr}");
    assert!(!ok || all.contains("compacted"), "ok={ok} out={all}");
    assert!(all.contains("required revision has been compacted"), "{all}");
    Ok(())
}

#[tokio::test]
async fn etcdctl_txn_reads_compares_and_operations_from_stdin() -> anyhow::Result<()> {
    let s = start().await?;
    s.run(&["put", "user1", "bad"]).await?; // rev 2
    let script = "mod(\"user1\") = \"2\"\n\nput user1 good\nget user1\n\nput user1 conflict\n\n";
    let run = |script: &'static str| {
        let mut cmd = s.etcdctl(&["txn"]);
        cmd.stdin(Stdio::piped());
        async move {
            let mut child = cmd.spawn()?;
            let mut stdin = child.stdin.take().context("stdin")?;
            stdin.write_all(script.as_bytes()).await?;
            drop(stdin);
            let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await??;
            ensure!(out.status.success(), "etcdctl txn failed: {}", String::from_utf8_lossy(&out.stderr));
            anyhow::Ok(String::from_utf8(out.stdout)?)
        }
    };
    assert_eq!(run(script).await?, "SUCCESS\n\nOK\n\nuser1\ngood\n");
    assert_eq!(run(script).await?, "FAILURE\n\nOK\n", "mod_revision moved on: the failure branch runs");
    assert_eq!(s.run(&["get", "user1"]).await?, "user1\nconflict\n");
    let value_guard =
        "value(\"user1\") = \"conflict\"\nversion(\"user1\") > \"1\"\ncreate(\"user1\") = \"2\"\n\ndel user1\n\n\n";
    assert_eq!(run(value_guard).await?, "SUCCESS\n\n1\n");
    Ok(())
}

#[tokio::test]
async fn etcdctl_leases_attach_keys_and_revoking_deletes_them() -> anyhow::Result<()> {
    let s = start().await?;
    let granted = s.run(&["lease", "grant", "60"]).await?;
    // "lease 694d71ddacfda227 granted with TTL(60s)"
    let id = granted.split_whitespace().nth(1).context("lease id")?.to_owned();
    assert!(granted.contains("granted with TTL(60s)"), "{granted}");
    s.run(&["put", "--lease", &id, "leased", "v"]).await?;
    let ttl = s.run(&["lease", "timetolive", "--keys", &id]).await?;
    assert!(ttl.contains("granted with TTL(60s)") && ttl.contains("attached keys([leased])"), "{ttl}");
    let keepalive = s.run(&["lease", "keep-alive", "--once", &id]).await?;
    assert!(keepalive.contains("keepalived with TTL(60)"), "{keepalive}");
    assert!(s.run(&["lease", "list"]).await?.contains(&id));
    let revoked = s.run(&["lease", "revoke", &id]).await?;
    assert!(revoked.contains("revoked"), "{revoked}");
    assert_eq!(s.run(&["get", "leased"]).await?, "");
    let gone = s.run(&["lease", "timetolive", &id]).await?;
    assert!(gone.contains("already expired"), "{gone}");
    let (ok, _, stderr) = s.run_status(&["lease", "revoke", &id]).await?;
    assert!(!ok && stderr.contains("requested lease not found"), "{stderr}");
    let (ok, _, stderr) = s.run_status(&["put", "--lease", "1234abcd", "k", "v"]).await?;
    assert!(!ok && stderr.contains("requested lease not found"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn an_expired_lease_removes_its_key_for_etcdctl() -> anyhow::Result<()> {
    let s = start().await?;
    let granted = s.run(&["lease", "grant", "1"]).await?;
    let id = granted.split_whitespace().nth(1).context("lease id")?.to_owned();
    s.run(&["put", "--lease", &id, "short", "v"]).await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(s.run(&["get", "short"]).await?, "");
    Ok(())
}

#[tokio::test]
async fn etcdctl_compaction_makes_old_revisions_unreadable() -> anyhow::Result<()> {
    let s = start().await?;
    for v in ["1", "2", "3"] {
        s.run(&["put", "k", v]).await?;
    }
    assert_eq!(s.run(&["compaction", "3"]).await?.trim(), "compacted revision 3");
    let (ok, _, stderr) = s.run_status(&["get", "k", "--rev=2"]).await?;
    assert!(!ok && stderr.contains("etcdserver: mvcc: required revision has been compacted"), "{stderr}");
    let (ok, _, stderr) = s.run_status(&["get", "k", "--rev=99"]).await?;
    assert!(!ok && stderr.contains("etcdserver: mvcc: required revision is a future revision"), "{stderr}");
    assert_eq!(s.run(&["get", "k", "--rev=3"]).await?, "k\n2\n");
    Ok(())
}

#[tokio::test]
async fn etcdctl_lists_the_single_member() -> anyhow::Result<()> {
    let s = start().await?;
    let table = s.run(&["member", "list"]).await?;
    assert!(table.contains("started, test-member, http://127.0.0.1:2380, http://127.0.0.1:2379, false"), "{table}");
    let json = s.json(&["member", "list"]).await?;
    assert_eq!(json["members"][0]["name"], "test-member");
    let (ok, _, stderr) = s.run_status(&["member", "add", "other", "--peer-urls=http://127.0.0.1:2390"]).await?;
    assert!(!ok && stderr.contains("membership changes need the replicated"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn etcdctl_reports_endpoint_status_and_health() -> anyhow::Result<()> {
    let s = start().await?;
    s.run(&["put", "a", "1"]).await?;
    let json = s.json(&["endpoint", "status"]).await?;
    let status = &json[0]["Status"];
    assert_eq!(status["version"], "3.4.0");
    assert_eq!(status["header"]["revision"], 2);
    assert_eq!(status["leader"], status["header"]["member_id"]);
    assert!(status["dbSize"].as_i64().unwrap_or(0) > 0, "{status}");
    let table = s.run(&["endpoint", "status"]).await?;
    assert!(table.contains("3.4.0"), "{table}");
    let (ok, stdout, stderr) = s.run_status(&["endpoint", "health"]).await?;
    assert!(ok && format!("{stdout}{stderr}").contains("is healthy"), "{stdout}{stderr}");
    Ok(())
}

#[tokio::test]
async fn etcdctl_saves_a_snapshot_that_holds_the_keys() -> anyhow::Result<()> {
    let s = start().await?;
    for i in 0..200 {
        // Enough data for several 32 KiB chunks.
        s.store.put(waggle_store::PutRequest::new(format!("snap/{i:03}"), vec![b'x'; 1000])).await?;
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("backup.db");
    let path_str = path.to_str().context("utf-8 path")?;
    let out = s.run(&["snapshot", "save", path_str]).await?;
    assert!(out.contains("Snapshot saved at"), "{out}");
    let bytes = std::fs::read(&path)?;
    let image = waggle_store::snapshot::decode(&bytes)?;
    assert_eq!(image.kvs.len(), 200);
    assert_eq!(image.revision, 201);
    Ok(())
}
