//! `waggle store …`: one store member serving etcd's v3 gRPC API, with
//! etcd's own flag names, and `waggle store restore` for saved snapshots.

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use tokio::sync::watch;
use tracing::{info, warn};
use waggle_store::durability::{Batch, Durability as _, Entry};
use waggle_store::grpc::{
    DEFAULT_MAX_REQUEST_BYTES, EtcdServer, MemberInfo, ServerInfo, TransportError, cluster_id, member_id,
};
use waggle_store::{EventKind, MemStore, MemStoreConfig};
use waggle_store_raft::removal::MEMBER_REMOVED;
use waggle_store_raft::{RaftConfig, RaftStore};
use waggle_store_rocks::RocksDisk;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct StoreCommand {
    #[command(subcommand)]
    pub action: Option<StoreAction>,
    #[command(flatten)]
    pub member: MemberArgs,
}

#[derive(Debug, Subcommand)]
pub enum StoreAction {
    /// Restore a snapshot saved by `etcdctl snapshot save` into a new data dir.
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The snapshot file.
    pub snapshot: PathBuf,
    /// The data dir to create; it must not exist yet.
    #[arg(long)]
    pub data_dir: PathBuf,
}

/// etcd's flags for one member; the names, defaults and `ETCD_*` variables match etcd's.
#[derive(Debug, Args)]
pub struct MemberArgs {
    /// Human-readable name of this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,
    /// Where the member keeps its data (default: `<name>.etcd`).
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// URLs to serve client traffic on (comma separated).
    #[arg(long, env = "ETCD_LISTEN_CLIENT_URLS", default_value = "http://localhost:2379", value_delimiter = ',')]
    pub listen_client_urls: Vec<String>,
    /// Client URLs advertised to the cluster (comma separated).
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS", default_value = "http://localhost:2379", value_delimiter = ',')]
    pub advertise_client_urls: Vec<String>,
    /// URLs to serve peer traffic on (comma separated).
    #[arg(long, env = "ETCD_LISTEN_PEER_URLS", default_value = "http://localhost:2380", value_delimiter = ',')]
    pub listen_peer_urls: Vec<String>,
    /// Peer URLs advertised to the cluster (comma separated).
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380",
        value_delimiter = ','
    )]
    pub initial_advertise_peer_urls: Vec<String>,
    /// The initial cluster, `name=peer-url,…`. Several members make a
    /// replicated (raft) cluster; one member runs alone.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER", default_value = "default=http://localhost:2380")]
    pub initial_cluster: String,
    /// `new` bootstraps the cluster named by --initial-cluster; `existing`
    /// joins a running cluster this member was added to (`etcdctl member add`).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new", value_parser = ["new", "existing"])]
    pub initial_cluster_state: String,
    /// Applied raft entries between two snapshots (the log before a snapshot is purged).
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 10_000)]
    pub snapshot_count: u64,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Raft election timeout in milliseconds.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Distinguishes clusters bootstrapped from the same configuration.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_TOKEN", default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Largest client request in bytes.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// Most operations in one branch of a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,
}

pub fn run(cmd: StoreCommand) -> anyhow::Result<()> {
    match cmd.action {
        Some(StoreAction::Restore(args)) => restore(&args),
        None => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(serve_until_signal(cmd.member))
        }
    }
}

/// Where a restored snapshot waits inside a data dir (etcd's layout).
fn snapshot_path(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("snap").join("db")
}

/// Where the member's RocksDB database lives inside its data dir.
fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("rocks")
}

fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.snapshot).with_context(|| format!("reading snapshot {}", args.snapshot.display()))?;
    waggle_store::snapshot::decode(&bytes).with_context(|| format!("checking snapshot {}", args.snapshot.display()))?;
    if args.data_dir.exists() {
        bail!("restoring into {}: the data dir already exists", args.data_dir.display());
    }
    let target = snapshot_path(&args.data_dir);
    let parent = target.parent().context("snapshot path has a parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    std::fs::write(&target, &bytes).with_context(|| format!("writing {}", target.display()))?;
    println!("restored snapshot {} into {}", args.snapshot.display(), args.data_dir.display());
    Ok(())
}

async fn serve_until_signal(args: MemberArgs) -> anyhow::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let member = start(args, stopped).await?;
    tokio::select! {
        r = shutdown_signal() => r?,
        () = member.removed() => {
            warn!("{MEMBER_REMOVED}: this member stops; the data-dir used by this member must be removed");
        }
    }
    info!("shutting down");
    let _ = stop.send(true);
    member.wait().await
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// A started member: its bound client addresses and its serving tasks.
pub struct Member {
    pub client_addrs: Vec<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), TransportError>>>,
    raft: Option<Arc<RaftStore>>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("client_addrs", &self.client_addrs).finish_non_exhaustive()
    }
}

impl Member {
    /// Resolves once this member is removed from its cluster (never for a single member).
    pub async fn removed(&self) {
        match &self.raft {
            Some(raft) => raft.removed().await,
            None => std::future::pending().await,
        }
    }

    pub async fn wait(self) -> anyhow::Result<()> {
        for task in self.tasks {
            task.await.context("joining a client listener")?.context("serving client requests")?;
        }
        if let Some(raft) = self.raft {
            raft.shutdown().await;
        }
        Ok(())
    }
}

/// The boot script of one member: check the flags, load the data dir, bind
/// the client URLs, serve until `stop` turns true.
pub async fn start(args: MemberArgs, stop: watch::Receiver<bool>) -> anyhow::Result<Member> {
    let cluster = initial_cluster(&args)?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}.etcd", args.name)));
    if cluster.len() > 1 || args.initial_cluster_state == "existing" {
        return start_replicated(args, &cluster, data_dir, stop).await;
    }
    if data_dir.join("member").join("raft").exists() {
        bail!(
            "data dir {} belongs to a member of a replicated cluster: start it with that cluster's --initial-cluster",
            data_dir.display()
        );
    }
    let config = MemStoreConfig { max_txn_ops: args.max_txn_ops, ..MemStoreConfig::default() };
    let store = open_store(&data_dir, config)?;
    warn!(
        data_dir = %data_dir.display(),
        "single member without raft: writes are durable on this machine (RocksDB, fsync per commit) \
         but not replicated"
    );
    if !args.listen_peer_urls.is_empty() {
        info!(urls = ?args.listen_peer_urls, "peer URLs are not served: a single member has no peers");
    }
    let member =
        MemberInfo::new(&args.name, args.initial_advertise_peer_urls.clone(), args.advertise_client_urls.clone());
    let mut info = ServerInfo::single(member, &args.initial_cluster_token);
    info.max_request_bytes = args.max_request_bytes;
    info!(name = %args.name, member_id = format_args!("{:x}", info.member.id), cluster_id = format_args!("{:x}", info.cluster_id), "starting store member");
    let server = EtcdServer::new(Arc::new(store), info);
    serve_clients(&args, server, stop, None).await
}

/// Binds every client URL and serves the etcd API there until `stop`.
async fn serve_clients(
    args: &MemberArgs,
    server: EtcdServer,
    stop: watch::Receiver<bool>,
    raft: Option<Arc<RaftStore>>,
) -> anyhow::Result<Member> {
    let mut client_addrs = Vec::new();
    let mut tasks = Vec::new();
    for url in &args.listen_client_urls {
        let addr = socket_addr(url).with_context(|| format!("parsing --listen-client-urls entry {url:?}"))?;
        let mut stop = stop.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        let (bound, task) =
            server.clone().spawn(addr, shutdown).await.with_context(|| format!("listening for clients on {url}"))?;
        info!(address = %bound, "ready to serve client requests");
        client_addrs.push(bound);
        tasks.push(task);
    }
    Ok(Member { client_addrs, tasks, raft })
}

/// `--initial-cluster` as (name, peer URL) pairs, checked: every entry is
/// `name=url`, this member is named, no peer URL appears twice.
fn initial_cluster(args: &MemberArgs) -> anyhow::Result<Vec<(String, String)>> {
    let mut members: Vec<(String, String)> = Vec::new();
    for entry in args.initial_cluster.split(',').filter(|m| !m.is_empty()) {
        let Some((name, url)) = entry.split_once('=') else {
            bail!("--initial-cluster {:?}: every entry must be name=peer-url", args.initial_cluster);
        };
        socket_addr(url).with_context(|| format!("--initial-cluster entry {entry:?}"))?;
        if members.iter().any(|(_, u)| u == url) {
            bail!("--initial-cluster {:?} names peer URL {url} twice", args.initial_cluster);
        }
        members.push((name.to_owned(), url.to_owned()));
    }
    if !members.iter().any(|(n, _)| n == &args.name) {
        bail!("--initial-cluster {:?} does not name this member ({:?})", args.initial_cluster, args.name);
    }
    Ok(members)
}

/// A refusal for data dirs this store cannot read (etcd's own layout).
fn refuse_etcd_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    if data_dir.join("member").join("wal").exists() {
        bail!(
            "data dir {} holds an etcd write-ahead log: waggle cannot read etcd's data dir; \
             take an `etcdctl snapshot save` from waggle instead",
            data_dir.display()
        );
    }
    Ok(())
}

/// Checks that the data dir was written by the member with this ID (its
/// peer URLs), or claims a new one for it.
fn claim_data_dir(data_dir: &Path, id: u64) -> anyhow::Result<()> {
    let file = data_dir.join("member").join("id");
    match std::fs::read_to_string(&file) {
        Ok(found) if found.trim() == format!("{id:x}") => Ok(()),
        Ok(found) => bail!(
            "data dir {} belongs to member {} but this member's --initial-advertise-peer-urls make it {id:x}: \
             a member keeps its peer URLs, or starts on a new data dir",
            data_dir.display(),
            found.trim()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = data_dir.join("member");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::write(&file, format!("{id:x}\n")).with_context(|| format!("writing {}", file.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}

/// One member of a replicated cluster: raft (store-raft) with its peers on
/// --listen-peer-urls, the etcd API on the client URLs.
async fn start_replicated(
    args: MemberArgs,
    cluster: &[(String, String)],
    data_dir: PathBuf,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Member> {
    refuse_etcd_data_dir(&data_dir)?;
    if database_path(&data_dir).exists() || snapshot_path(&data_dir).exists() {
        bail!(
            "data dir {} belongs to a single member (no raft log): it cannot join a replicated cluster; \
             use a new data dir",
            data_dir.display()
        );
    }
    let peer_urls: Vec<String> =
        args.initial_advertise_peer_urls.iter().map(|u| u.trim_end_matches('/').to_owned()).collect();
    let peer_url = peer_urls.first().cloned().context("--initial-advertise-peer-urls is empty")?;
    let id = member_id(&peer_urls);
    let named = cluster.iter().find(|(n, _)| n == &args.name).map(|(_, u)| u.trim_end_matches('/'));
    if named != Some(peer_url.as_str()) {
        bail!(
            "--initial-cluster names {:?} at {:?}, but --initial-advertise-peer-urls is {peer_url}",
            args.name,
            named.unwrap_or_default()
        );
    }
    claim_data_dir(&data_dir, id)?;
    let listen = args.listen_peer_urls.first().context("--listen-peer-urls is empty")?;
    let peer_addr = socket_addr(listen).with_context(|| format!("parsing --listen-peer-urls entry {listen:?}"))?;
    let listener =
        tokio::net::TcpListener::bind(peer_addr).await.with_context(|| format!("listening for peers on {listen}"))?;

    let me = waggle_store_raft::Member {
        name: args.name.clone(),
        peer_url: peer_url.clone(),
        client_urls: args.advertise_client_urls.clone(),
    };
    let mut config = RaftConfig::new(id, me.clone(), data_dir.join("member").join("raft"));
    config.store = MemStoreConfig { max_txn_ops: args.max_txn_ops, ..MemStoreConfig::default() };
    config.snapshot_after_entries = args.snapshot_count.max(1);
    config.keep_entries_after_snapshot = (args.snapshot_count / 10).clamp(1, 5_000);
    config.heartbeat_interval = std::time::Duration::from_millis(args.heartbeat_interval.max(1));
    config.election_timeout_min = std::time::Duration::from_millis(args.election_timeout.max(2));
    config.election_timeout_max = config.election_timeout_min * 6 / 5;
    let store = Arc::new(
        RaftStore::start(config, listener)
            .await
            .with_context(|| format!("starting raft member {} on data dir {}", args.name, data_dir.display()))?,
    );
    if args.initial_cluster_state == "new" {
        let members: std::collections::BTreeMap<u64, waggle_store_raft::Member> = cluster
            .iter()
            .map(|(name, url)| {
                let url = url.trim_end_matches('/').to_owned();
                let member =
                    waggle_store_raft::Member { name: name.clone(), peer_url: url.clone(), client_urls: Vec::new() };
                (member_id(&[url]), member)
            })
            .collect();
        // A log, or a vote already cast for a peer that bootstrapped first:
        // this member is part of the cluster already.
        let in_motion = || {
            let m = store.raft().metrics();
            let m = m.borrow();
            m.last_log_index.is_some() || m.current_term > 0
        };
        if in_motion() {
            info!("the data dir already holds a raft log: not bootstrapping the cluster again");
        } else {
            store.initialize(members).await.context("bootstrapping the cluster")?;
        }
    }
    let publisher = Arc::clone(&store);
    tokio::spawn(async move { publisher.publish(me, std::time::Duration::from_secs(600)).await });

    let member = MemberInfo {
        id,
        name: args.name.clone(),
        peer_urls,
        client_urls: args.advertise_client_urls.clone(),
        is_learner: false,
    };
    let info = ServerInfo {
        cluster_id: cluster_id(&[], &args.initial_cluster_token),
        member,
        raft_term: 0,
        max_request_bytes: args.max_request_bytes,
    };
    info!(name = %args.name, member_id = format_args!("{id:x}"), members = cluster.len(), "starting replicated store member");
    let server = EtcdServer::new(Arc::clone(&store) as Arc<dyn waggle_store::Store>, info)
        .with_membership(Arc::clone(&store) as _);
    serve_clients(&args, server, stop, Some(store)).await
}

/// Opens the data dir: its RocksDB database if there is one; else a
/// snapshot restored by `waggle store restore` is imported first; else an
/// empty store. An etcd data dir or a damaged one is refused.
pub(crate) fn open_store(data_dir: &Path, config: MemStoreConfig) -> anyhow::Result<MemStore> {
    refuse_etcd_data_dir(data_dir)?;
    let database = database_path(data_dir);
    let snapshot = snapshot_path(data_dir);
    if !database.exists() && snapshot.exists() {
        import_snapshot(data_dir, &snapshot, &database)?;
    }
    std::fs::create_dir_all(&database).with_context(|| format!("creating {}", database.display()))?;
    let (disk, recovered) =
        RocksDisk::open(&database).with_context(|| format!("opening the data dir {}", data_dir.display()))?;
    Ok(MemStore::durable(config, disk, recovered)?)
}

/// Writes a restored snapshot into a new database, as one synced batch.
fn import_snapshot(data_dir: &Path, snapshot: &Path, database: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(snapshot).with_context(|| format!("reading {}", snapshot.display()))?;
    let image = waggle_store::snapshot::decode(&bytes).with_context(|| {
        format!("data dir {}: {} is not a waggle store snapshot", data_dir.display(), snapshot.display())
    })?;
    let mut kvs = image.kvs;
    kvs.sort_by(|a, b| (a.mod_revision, &a.key).cmp(&(b.mod_revision, &b.key)));
    let mut entries: Vec<Entry> = Vec::with_capacity(kvs.len());
    for kv in kvs {
        let sub = match entries.last() {
            Some(prev) if prev.revision == kv.mod_revision => prev.sub + 1,
            _ => 0,
        };
        entries.push(Entry { revision: kv.mod_revision, sub, kind: EventKind::Put, kv });
    }
    let batch = Batch {
        revision: image.revision,
        entries,
        granted: image.leases.iter().map(|l| (l.id, l.granted_ttl)).collect(),
        revoked: Vec::new(),
        compacted: Some((image.compact_revision, Vec::new())),
    };
    std::fs::create_dir_all(database).with_context(|| format!("creating {}", database.display()))?;
    let (disk, _) = RocksDisk::open(database).with_context(|| format!("creating {}", database.display()))?;
    disk.write(&batch).with_context(|| format!("importing {} into {}", snapshot.display(), database.display()))?;
    info!(snapshot = %snapshot.display(), revision = image.revision, "imported the restored snapshot");
    Ok(())
}

/// `http://host:port` to a socket address; `localhost` means 127.0.0.1, as for etcd.
fn socket_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else if url.starts_with("https://") || url.starts_with("unixs://") {
        bail!("TLS client URLs are not supported yet");
    } else {
        bail!("expected an http:// URL");
    };
    let host_port = rest.trim_end_matches('/');
    let (host, port) = host_port.rsplit_once(':').context("the URL needs a port")?;
    let port: u16 = port.parse().with_context(|| format!("port {port:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host == "localhost" { "127.0.0.1" } else { host };
    (host, port).to_socket_addrs()?.next().with_context(|| format!("resolving {host}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    fn parse(args: &[&str]) -> StoreCommand {
        let mut all = vec!["waggle", "store"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).expect("flags parse").command {
            Command::Store(cmd) => cmd,
            other => panic!("expected the store command, got {other:?}"),
        }
    }

    fn etcdctl(addr: SocketAddr, args: &[&str]) -> String {
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={addr}"))
            .args(args)
            .output()
            .expect("etcdctl runs");
        assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    }

    #[test]
    fn client_urls_resolve_like_etcd() {
        assert_eq!(socket_addr("http://localhost:2379").expect("parses"), "127.0.0.1:2379".parse().expect("addr"));
        assert_eq!(socket_addr("http://[::1]:4001/").expect("parses"), "[::1]:4001".parse().expect("addr"));
        assert!(socket_addr("https://127.0.0.1:2379").is_err());
        assert!(socket_addr("127.0.0.1:2379").is_err());
    }

    #[test]
    fn the_initial_cluster_is_checked() {
        let cmd = parse(&["--name", "a", "--initial-cluster", "a=http://127.0.0.1:2380,b=http://127.0.0.1:2381"]);
        assert_eq!(initial_cluster(&cmd.member).expect("parses").len(), 2);
        let cmd = parse(&["--name", "x"]);
        assert!(initial_cluster(&cmd.member).is_err(), "the default cluster names `default`, not `x`");
        let cmd = parse(&["--name", "a", "--initial-cluster", "a=http://127.0.0.1:2380,b=http://127.0.0.1:2380"]);
        assert!(initial_cluster(&cmd.member).is_err(), "one peer URL named twice");
        let cmd = parse(&["--name", "a", "--initial-cluster", "a"]);
        assert!(initial_cluster(&cmd.member).is_err(), "an entry without a URL");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_serves_etcdctl_keeps_writes_across_restarts_and_loads_a_restored_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("first");
        let data_dir_str = data_dir.to_str().expect("utf-8");
        let args = ["--name", "m1", "--initial-cluster", "m1=http://127.0.0.1:2380", "--data-dir", data_dir_str];
        let mut flags = args.to_vec();
        flags.extend(["--listen-client-urls", "http://127.0.0.1:0"]);
        let (stop, stopped) = watch::channel(false);
        let member = start(parse(&flags).member, stopped).await.expect("member starts");
        let addr = member.client_addrs[0];
        let out = tokio::task::spawn_blocking(move || {
            etcdctl(addr, &["put", "kept", "yes"]);
            let listed = etcdctl(addr, &["member", "list"]);
            let snap = dir.path().join("snap.db");
            etcdctl(addr, &["snapshot", "save", snap.to_str().expect("utf-8")]);
            (listed, snap, dir)
        })
        .await
        .expect("etcdctl thread");
        let (listed, snap, dir) = out;
        assert!(listed.contains("m1"), "{listed}");
        stop.send(true).expect("stop");
        member.wait().await.expect("clean stop");
        // The first member's store lets go of its database when its background tasks notice.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;

        let (stop, stopped) = watch::channel(false);
        let member = start(parse(&flags).member, stopped).await.expect("member restarts on its data dir");
        let addr = member.client_addrs[0];
        let got = tokio::task::spawn_blocking(move || etcdctl(addr, &["get", "kept"])).await.expect("etcdctl thread");
        assert_eq!(got, "kept\nyes\n", "the write survived the restart");
        stop.send(true).expect("stop");
        member.wait().await.expect("clean stop");

        let restored = dir.path().join("restored");
        run(parse(&["restore", snap.to_str().expect("utf-8"), "--data-dir", restored.to_str().expect("utf-8")]))
            .expect("restore");
        assert!(
            run(parse(&["restore", snap.to_str().expect("utf-8"), "--data-dir", restored.to_str().expect("utf-8")]))
                .is_err(),
            "restoring over an existing data dir is refused"
        );
        let flags = [
            "--name",
            "m1",
            "--initial-cluster",
            "m1=http://127.0.0.1:2380",
            "--data-dir",
            restored.to_str().expect("utf-8"),
            "--listen-client-urls",
            "http://127.0.0.1:0",
        ];
        let (stop, stopped) = watch::channel(false);
        let member = start(parse(&flags).member, stopped).await.expect("restored member starts");
        let addr = member.client_addrs[0];
        let got = tokio::task::spawn_blocking(move || etcdctl(addr, &["get", "kept"])).await.expect("etcdctl thread");
        assert_eq!(got, "kept\nyes\n");
        stop.send(true).expect("stop");
        member.wait().await.expect("clean stop");
    }

    #[tokio::test]
    async fn a_damaged_data_dir_is_refused_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = snapshot_path(dir.path());
        std::fs::create_dir_all(db.parent().expect("parent")).expect("mkdir");
        std::fs::write(&db, b"this is not a snapshot").expect("write");
        let err = open_store(dir.path(), MemStoreConfig::default()).expect_err("refused");
        assert!(format!("{err:#}").contains("is not a waggle store snapshot"), "{err:#}");
        std::fs::create_dir_all(dir.path().join("member").join("wal")).expect("mkdir");
        let err = open_store(dir.path(), MemStoreConfig::default()).expect_err("refused");
        assert!(err.to_string().contains("etcd write-ahead log"), "{err}");
    }
}
