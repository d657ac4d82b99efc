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
}

fn invoke(
    host: &NetNs,
    plugin: &Path,
    cni_path: &Path,
    cmd: &str,
    pod: &NetNs,
    id: &str,
    conf: &Value,
) -> anyhow::Result<Duration> {
    let conf = serde_json::to_vec(conf)?;
    host.run(|| -> anyhow::Result<Duration> {
        let start = Instant::now();
        let mut child = Command::new(plugin)
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", pod.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", plugin.display()))?;
        std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, &conf)?;
        let out = child.wait_with_output()?;
        let took = start.elapsed();
        anyhow::ensure!(
            out.status.success(),
            "{} {cmd} failed: {} {}",
            plugin.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(took)
    })?
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
fn measure(subjects: &mut [Subject<'_>], runs: usize) -> anyhow::Result<()> {
    for subject in subjects.iter() {
        subject.host.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]).ok();
    }
    for i in 0..runs {
        for s in subjects.iter_mut() {
            let pod = NetNs::new("bcp")?;
            let id = format!("bench-{i}");
            s.timings.add.push(invoke(&s.host, s.plugin, s.cni_path, "ADD", &pod, &id, s.conf)?);
            s.timings.del.push(invoke(&s.host, s.plugin, s.cni_path, "DEL", &pod, &id, s.conf)?);
        }
    }
    Ok(())
}

impl<'a> Subject<'a> {
    fn new(plugin: &'a Path, cni_path: &'a Path, conf: &'a Value, runs: usize) -> anyhow::Result<Self> {
        let timings = Timings { add: Vec::with_capacity(runs), del: Vec::with_capacity(runs) };
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
    measure(&mut subjects, args.runs)?;
    let [waggle, reference] = subjects;
    let (mut waggle, mut reference) = (waggle.timings, reference.timings);

    let stats =
        |t: &mut Timings| json!({"add": report::percentiles(&mut t.add), "del": report::percentiles(&mut t.del)});
    let (w, r) = (stats(&mut waggle), stats(&mut reference));
    let ratio = |op: &str, q: &str| w[op][q].as_f64().unwrap_or(0.0) / r[op][q].as_f64().unwrap_or(f64::NAN);
    let report = json!({
        "bench": "cni",
        "runs": args.runs,
        "waggle_cni": w,
        "reference_bridge_host_local": r,
        "ratio_waggle_over_reference": {
            "add_p50": ratio("add", "p50_ms"), "add_p99": ratio("add", "p99_ms"),
            "del_p50": ratio("del", "p50_ms"), "del_p99": ratio("del", "p99_ms"),
        },
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
    println!("report: {}", args.out.display());
    Ok(())
}
