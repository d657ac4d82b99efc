//! The CNI benchmark: ADD and DEL latency of waggle-cni and of the reference
//! `bridge` + `host-local` plugins, same network shape, same run, each plugin
//! exec'd from inside a "host" namespace the benchmark creates (so bridges
//! never land in the machine's root namespace).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args as ClapArgs;
use serde_json::{Value, json};
use waggle_tests::{NetNs, is_root, names};

use crate::report;

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The waggle-cni binary.
    #[arg(long)]
    pub plugin: PathBuf,
    /// Where the reference plugins live.
    #[arg(long, default_value = "/usr/lib/cni")]
    pub reference_dir: PathBuf,
    /// ADD/DEL pairs per plugin.
    #[arg(long, default_value_t = 200)]
    pub runs: usize,
    /// Where the JSON report goes.
    #[arg(long)]
    pub out: PathBuf,
}

struct Timings {
    add: Vec<Duration>,
    del: Vec<Duration>,
    /// CPU time (user + system) of each call's process and the processes it
    /// waited for: far less sensitive to the shared machine's load than
    /// wall-clock latency.
    add_cpu: Vec<Duration>,
    del_cpu: Vec<Duration>,
}

/// One finished call: its wall-clock time, its CPU time, its stdout.
struct Call {
    wall: Duration,
    cpu: Duration,
    stdout: Vec<u8>,
}

/// User + system time of every child this process has waited for so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Runs `cmd` with `stdin` from inside `host`, timing it from spawn to exit.
fn timed(host: &NetNs, mut cmd: Command, stdin: &[u8]) -> anyhow::Result<Call> {
    host.run(|| -> anyhow::Result<Call> {
        let what = format!("{cmd:?}");
        let cpu_before = children_cpu();
        let start = Instant::now();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {what}"))?;
        std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, stdin)?;
        let out = child.wait_with_output()?;
        let wall = start.elapsed();
        let cpu = children_cpu().saturating_sub(cpu_before);
        anyhow::ensure!(
            out.status.success(),
            "{what} failed: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Call { wall, cpu, stdout: out.stdout })
    })?
}

fn invoke(
    host: &NetNs,
    plugin: &Path,
    cni_path: &Path,
    cmd: &str,
    pod: &NetNs,
    id: &str,
    conf: &Value,
) -> anyhow::Result<Call> {
    let mut command = Command::new(plugin);
    command
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni_path);
    timed(host, command, &serde_json::to_vec(conf)?)
}

/// One plugin under test: its binary, CNI_PATH and network config, run from
/// its own host namespace.
struct Subject<'a> {
    plugin: &'a Path,
    cni_path: &'a Path,
    conf: &'a Value,
    host: NetNs,
    timings: Timings,
}

/// ADD/DEL pairs of every subject, interleaved run by run, so that both see
/// the same machine load (a shared 2-core machine drifts over a minute).
/// Each run also measures the floor every bridge plugin's DEL stands on: a
/// waggle-cni ADD, then `ip link del` of its host veth end (a process that
/// sends one RTM_DELLINK, nothing else), then a DEL to release the address.
fn measure(subjects: &mut [Subject<'_>], floor: &mut Vec<Duration>, runs: usize) -> anyhow::Result<()> {
    for subject in subjects.iter() {
        subject.host.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]).ok();
    }
    for i in 0..runs {
        for s in subjects.iter_mut() {
            let pod = NetNs::new("bcp")?;
            let id = format!("bench-{i}");
            let add = invoke(&s.host, s.plugin, s.cni_path, "ADD", &pod, &id, s.conf)?;
            let del = invoke(&s.host, s.plugin, s.cni_path, "DEL", &pod, &id, s.conf)?;
            s.timings.add.push(add.wall);
            s.timings.add_cpu.push(add.cpu);
            s.timings.del.push(del.wall);
            s.timings.del_cpu.push(del.cpu);
        }
        let s = &subjects[0];
        let pod = NetNs::new("bcp")?;
        let id = format!("floor-{i}");
        let add = invoke(&s.host, s.plugin, s.cni_path, "ADD", &pod, &id, s.conf)?;
        let result: Value = serde_json::from_slice(&add.stdout).context("ADD's result")?;
        let host_end = result["interfaces"][1]["name"].as_str().context("ADD's result names no host veth")?;
        let mut ip = Command::new("ip");
        ip.args(["link", "del", host_end]);
        floor.push(timed(&s.host, ip, &[])?.wall);
        invoke(&s.host, s.plugin, s.cni_path, "DEL", &pod, &id, s.conf)?;
    }
    Ok(())
}

impl<'a> Subject<'a> {
    fn new(plugin: &'a Path, cni_path: &'a Path, conf: &'a Value, runs: usize) -> anyhow::Result<Self> {
        let timings = Timings {
            add: Vec::with_capacity(runs),
            del: Vec::with_capacity(runs),
            add_cpu: Vec::with_capacity(runs),
            del_cpu: Vec::with_capacity(runs),
        };
        Ok(Self { plugin, cni_path, conf, host: NetNs::new("bch")?, timings })
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(is_root(), "the CNI benchmark creates network namespaces: run it as root");
    let dir = tempfile::Builder::new().prefix("waggle-bench-cni-").tempdir_in("/var/tmp")?;
    let plugin_dir = args.plugin.parent().context("plugin has no directory")?.to_path_buf();
    let waggle_conf = json!({
        "cniVersion": "1.0.0", "name": names::unique("wgtbench"), "type": "waggle-cni",
        "bridge": names::unique_ifname("wbb"), "isGateway": true,
        "ipam": {"type": "waggle", "dataDir": dir.path().join("waggle"), "ranges": [[{"subnet": "10.88.0.0/16"}]]},
    });
    let reference_conf = json!({
        "cniVersion": "1.0.0", "name": names::unique("wgtbench"), "type": "bridge",
        "bridge": names::unique_ifname("wbr"), "isGateway": true,
        "ipam": {"type": "host-local", "dataDir": dir.path().join("ref"), "ranges": [[{"subnet": "10.89.0.0/16"}]]},
    });
    println!("waggle-cni and reference bridge + host-local: {} ADD/DEL pairs each, interleaved…", args.runs);
    let bridge = args.reference_dir.join("bridge");
    let mut subjects = [
        Subject::new(&args.plugin, &plugin_dir, &waggle_conf, args.runs)?,
        Subject::new(&bridge, &args.reference_dir, &reference_conf, args.runs)?,
    ];
    let load_before = report::load_average();
    let mut floor = Vec::with_capacity(args.runs);
    measure(&mut subjects, &mut floor, args.runs)?;
    let load_after = report::load_average();
    let [waggle, reference] = subjects;
    let (mut waggle, mut reference) = (waggle.timings, reference.timings);

    let stats = |t: &mut Timings| {
        json!({
            "add": report::percentiles(&mut t.add),
            "del": report::percentiles(&mut t.del),
            "cpu": {"add": report::percentiles(&mut t.add_cpu), "del": report::percentiles(&mut t.del_cpu)},
        })
    };
    let (w, r) = (stats(&mut waggle), stats(&mut reference));
    let floor = report::percentiles(&mut floor);
    let ratio = |op: &str, q: &str| w[op][q].as_f64().unwrap_or(0.0) / r[op][q].as_f64().unwrap_or(f64::NAN);
    let cpu_ratio =
        |op: &str| w["cpu"][op]["p50_ms"].as_f64().unwrap_or(0.0) / r["cpu"][op]["p50_ms"].as_f64().unwrap_or(f64::NAN);
    let report = json!({
        "bench": "cni",
        "runs": args.runs,
        "load_average": [load_before, load_after],
        "waggle_cni": w,
        "reference_bridge_host_local": r,
        "ratio_waggle_over_reference": {
            "add_p50": ratio("add", "p50_ms"), "add_p99": ratio("add", "p99_ms"),
            "del_p50": ratio("del", "p50_ms"), "del_p99": ratio("del", "p99_ms"),
            "add_cpu_p50": cpu_ratio("add"), "del_cpu_p50": cpu_ratio("del"),
        },
        "floor_ip_link_del_of_the_veth": floor,
        "goal": "at most 0.3x the reference",
    });
    report::write(&args.out, &report)?;
    println!();
    println!("{:<10} {:>14} {:>14} {:>8}", "ms", "waggle-cni", "reference", "ratio");
    for (op, q) in [("add", "p50_ms"), ("add", "p99_ms"), ("del", "p50_ms"), ("del", "p99_ms")] {
        println!(
            "{:<10} {:>14.2} {:>14.2} {:>8.2}",
            format!("{} {}", op.to_uppercase(), &q[..3]),
            w[op][q].as_f64().unwrap_or(0.0),
            r[op][q].as_f64().unwrap_or(0.0),
            ratio(op, q)
        );
    }
    println!(
        "{:<10} {:>14.2} {:>14.2} {:>8.2}",
        "CPU ADD",
        w["cpu"]["add"]["p50_ms"].as_f64().unwrap_or(0.0),
        r["cpu"]["add"]["p50_ms"].as_f64().unwrap_or(0.0),
        cpu_ratio("add")
    );
    println!(
        "{:<10} {:>14.2} {:>14.2} {:>8.2}",
        "CPU DEL",
        w["cpu"]["del"]["p50_ms"].as_f64().unwrap_or(0.0),
        r["cpu"]["del"]["p50_ms"].as_f64().unwrap_or(0.0),
        cpu_ratio("del")
    );
    println!(
        "floor: `ip link del` of the veth p50 {:.2} ms, p99 {:.2} ms (every bridge plugin's DEL pays it)",
        floor["p50_ms"].as_f64().unwrap_or(0.0),
        floor["p99_ms"].as_f64().unwrap_or(0.0)
    );
    println!("load average {load_before:.2} before, {load_after:.2} after");
    println!("report: {}", args.out.display());
    Ok(())
}
