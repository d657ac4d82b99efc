//! The real kubectl (1.33 and 1.29, by path) against waggle's API server.
//! Each test starts its own server on a free port with its own data dir.

mod support;

use std::time::Duration;

use support::{Kubectl, TestServer};

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports: [{containerPort: 80}]
";

fn ensure_contains(haystack: &str, needle: &str) -> anyhow::Result<()> {
    anyhow::ensure!(haystack.contains(needle), "expected {needle:?} in:\n{haystack}");
    Ok(())
}

async fn discovery_and_version(k: &Kubectl) -> anyhow::Result<()> {
    ensure_contains(&k.ok(&["version"])?, "Server Version: v1.33.0-waggle")?;
    // kubectl 1.29 colours this line; 1.33 does not.
    let info = k.ok(&["cluster-info"])?;
    ensure_contains(&info, "Kubernetes control plane")?;
    ensure_contains(&info, "https://127.0.0.1:")?;
    let resources = k.ok(&["api-resources"])?;
    for line in ["deployments", "deploy", "apps/v1", "pods", "networkpolicies", "leases"] {
        ensure_contains(&resources, line)?;
    }
    ensure_contains(&k.ok(&["explain", "deployment.spec.replicas"])?, "Number of desired pods")?;
    ensure_contains(&k.ok(&["explain", "pods.spec.containers"])?, "<[]Container>")?;
    let namespaces = k.ok(&["get", "namespaces"])?;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure_contains(&namespaces, ns)?;
    }
    Ok(())
}

async fn apply_get_patch_scale_delete(k: &Kubectl) -> anyhow::Result<()> {
    ensure_contains(&k.ok_stdin(&["apply", "-f", "-"], DEPLOYMENT)?, "deployment.apps/web created")?;
    ensure_contains(&k.ok_stdin(&["apply", "-f", "-"], DEPLOYMENT)?, "deployment.apps/web unchanged")?;
    ensure_contains(
        &k.ok_stdin(&["apply", "-f", "-"], &DEPLOYMENT.replace("replicas: 2", "replicas: 3"))?,
        "configured",
    )?;
    let fields = k.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.replicas} {.metadata.generation} {.spec.strategy.type}",
    ])?;
    anyhow::ensure!(fields == "3 2 RollingUpdate", "after apply: {fields}");

    // Output formats.
    let wide = k.ok(&["get", "deploy", "-o", "wide"])?;
    ensure_contains(&wide, "CONTAINERS")?;
    ensure_contains(&wide, "nginx:1.25")?;
    ensure_contains(&k.ok(&["get", "deploy", "web", "-o", "yaml"])?, "kind: Deployment")?;
    let json: serde_json::Value = serde_json::from_str(&k.ok(&["get", "deploy", "web", "-o", "json"])?)?;
    anyhow::ensure!(json["metadata"]["uid"].is_string(), "no uid: {json}");
    ensure_contains(&k.ok(&["get", "deploy", "-A"])?, "default")?;

    // label, annotate, patches, scale, set image.
    k.ok(&["label", "deploy", "web", "tier=frontend"])?;
    ensure_contains(&k.ok(&["get", "deploy", "--show-labels"])?, "tier=frontend")?;
    k.ok(&["annotate", "deploy", "web", "note=hello"])?;
    k.ok(&["patch", "deploy", "web", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/replicas","value":1}]"#])?;
    k.ok(&["patch", "deploy", "web", "--type=merge", "-p", r#"{"metadata":{"labels":{"tier":null}}}"#])?;
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.26"}]}}}}"#,
    ])?;
    k.ok(&["scale", "deploy", "web", "--replicas=4"])?;
    let fields = k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.metadata.annotations.note} {.metadata.labels.tier}"])?;
    anyhow::ensure!(fields == "4 nginx:1.26 hello ", "after patches: {fields:?}");
    let ports =
        k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].ports[0].containerPort}"])?;
    anyhow::ensure!(ports == "80", "strategic merge kept the container's other fields: {ports:?}");

    // edit with a scripted editor.
    let out =
        k.command(&["edit", "deploy", "web"]).env("KUBE_EDITOR", "sed -i s/replicas:\\ 4/replicas:\\ 6/").output()?;
    anyhow::ensure!(out.status.success(), "edit: {}", String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(
        k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])? == "6",
        "edit changed replicas"
    );

    // server-side apply (update of an existing object, then a new one): the
    // fields edit, scale and patch changed belong to them, so it takes force.
    let conflict = k.output_stdin(&["apply", "--server-side", "-f", "-"], DEPLOYMENT)?;
    anyhow::ensure!(!conflict.status.success(), "fields owned by other managers conflict");
    ensure_contains(&String::from_utf8_lossy(&conflict.stderr), "Apply failed with")?;
    ensure_contains(
        &k.ok_stdin(&["apply", "--server-side", "--force-conflicts", "-f", "-"], DEPLOYMENT)?,
        "serverside-applied",
    )?;
    let ssa = DEPLOYMENT.replace("name: web\n", "name: web-ssa\n");
    ensure_contains(
        &k.ok_stdin(&["apply", "--server-side", "-f", "-"], &ssa)?,
        "deployment.apps/web-ssa serverside-applied",
    )?;

    // delete waits for the object to go.
    ensure_contains(&k.ok(&["delete", "deploy", "web", "web-ssa"])?, "deleted")?;
    ensure_contains(&k.fails(&["get", "deploy", "web"])?, r#"deployments.apps "web" not found"#)?;
    Ok(())
}

async fn watch_sees_a_change(k: &Kubectl) -> anyhow::Result<()> {
    k.ok(&["create", "configmap", "watched", "--from-literal=a=1"]).or_else(|_| {
        k.ok_stdin(
            &["apply", "-f", "-"],
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: watched}\ndata: {a: '1'}\n",
        )
    })?;
    let mut child = k
        .command(&["get", "configmap", "watched", "-w", "-o", "jsonpath={.data.a}{\"\\n\"}"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    k.ok(&["patch", "configmap", "watched", "--type=merge", "-p", r#"{"data":{"a":"2"}}"#])?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let _ = child.kill();
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(text.lines().any(|l| l == "1") && text.lines().any(|l| l == "2"), "watch output: {text:?}");
    Ok(())
}

async fn error_paths(k: &Kubectl) -> anyhow::Result<()> {
    ensure_contains(
        &k.fails(&["get", "deploy", "missing"])?,
        r#"Error from server (NotFound): deployments.apps "missing" not found"#,
    )?;
    let bad = "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec: {containers: [{name: c}]}\n";
    let out = k.output_stdin(&["apply", "-f", "-"], bad)?;
    anyhow::ensure!(!out.status.success(), "an invalid pod was accepted");
    ensure_contains(
        &String::from_utf8_lossy(&out.stderr),
        r#"The Pod "bad" is invalid: spec.containers[0].image: Required value"#,
    )?;
    ensure_contains(&k.fails(&["get", "pods", "-l", "app in web"])?, "unable to parse requirement")?;
    // fieldValidation: kubectl asks for Strict by default; --validate=warn gets a warning and the field dropped.
    let typo = DEPLOYMENT.replace("replicas: 2", "replica: 2").replace("name: web\n", "name: typo\n");
    let out = k.output_stdin(&["apply", "-f", "-"], &typo)?;
    anyhow::ensure!(!out.status.success(), "a misspelt field was accepted under Strict");
    ensure_contains(&String::from_utf8_lossy(&out.stderr), r#"strict decoding error: unknown field "spec.replica""#)?;
    let out = k.output_stdin(&["apply", "--validate=warn", "-f", "-"], &typo)?;
    anyhow::ensure!(out.status.success(), "warn mode accepts: {}", String::from_utf8_lossy(&out.stderr));
    ensure_contains(&String::from_utf8_lossy(&out.stderr), r#"unknown field "spec.replica""#)?;
    k.ok(&["delete", "deploy", "typo"])?;
    Ok(())
}

/// `kubectl create …` generators: protobuf bodies from 1.32 on, JSON before.
async fn typed_creates(k: &Kubectl) -> anyhow::Result<()> {
    ensure_contains(&k.ok(&["create", "namespace", "demo"])?, "namespace/demo created")?;
    ensure_contains(
        &k.ok(&["create", "deployment", "hello", "--image=nginx:1.25", "--replicas=2", "-n", "demo"])?,
        "deployment.apps/hello created",
    )?;
    let fields = k.ok(&[
        "-n",
        "demo",
        "get",
        "deploy",
        "hello",
        "-o",
        "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.strategy.type}",
    ])?;
    anyhow::ensure!(fields == "2 nginx:1.25 RollingUpdate", "created deployment: {fields:?}");
    k.ok(&["-n", "demo", "create", "service", "clusterip", "hello", "--tcp=80:8080"])?;
    let ip = k.ok(&["-n", "demo", "get", "svc", "hello", "-o", "jsonpath={.spec.clusterIP}"])?;
    anyhow::ensure!(ip.starts_with("10.9"), "a ClusterIP from the service CIDR: {ip:?}");
    k.ok(&["-n", "demo", "create", "secret", "generic", "s", "--from-literal=k=v"])?;
    k.ok(&["-n", "demo", "create", "serviceaccount", "robot"])?;
    anyhow::ensure!(k.ok(&["auth", "can-i", "create", "deployments"])?.trim() == "yes", "can-i");
    ensure_contains(&k.fails(&["create", "namespace", "demo"])?, "AlreadyExists")?;
    k.ok(&["delete", "-n", "demo", "deploy", "hello"])?;
    Ok(())
}

async fn run_all(minor: u32) -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let k = server.kubectl(minor);
    discovery_and_version(&k).await?;
    typed_creates(&k).await?;
    apply_get_patch_scale_delete(&k).await?;
    watch_sees_a_change(&k).await?;
    error_paths(&k).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_manages_deployments_end_to_end() -> anyhow::Result<()> {
    run_all(33).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_29_manages_deployments_end_to_end() -> anyhow::Result<()> {
    run_all(29).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_credentials_get_401_but_version_is_public() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let base = format!("https://{}", server.server.addr);
    let curl = |path: &str| -> anyhow::Result<String> {
        let out = std::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("{base}{path}"))
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    anyhow::ensure!(curl("/api/v1/namespaces")? == "401", "anonymous list must be refused");
    anyhow::ensure!(curl("/version")? == "200", "version is public");
    anyhow::ensure!(curl("/healthz")? == "200", "healthz is public");
    Ok(())
}

/// Polls `check` for up to 10 s.
async fn eventually(what: &str, mut check: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    for _ in 0..100 {
        if check()? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("timed out waiting until {what}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_removes_its_objects_and_then_the_namespace() -> anyhow::Result<()> {
    let server = TestServer::with_controllers().await?;
    let k = server.kubectl(31);
    k.ok(&["create", "namespace", "demo"])?;
    k.ok(&["-n", "demo", "create", "configmap", "c1", "--from-literal=a=b"])?;
    k.ok_stdin(&["-n", "demo", "apply", "-f", "-"], DEPLOYMENT)?;
    // kubectl waits until the namespace is gone.
    ensure_contains(&k.ok(&["delete", "namespace", "demo", "--timeout=20s"])?, "namespace \"demo\" deleted")?;
    ensure_contains(&k.fails(&["get", "namespace", "demo"])?, "not found")?;
    k.ok(&["create", "namespace", "demo"])?;
    let leftovers = k.ok(&["-n", "demo", "get", "configmaps,deployments", "-o", "name"])?;
    anyhow::ensure!(leftovers.trim().is_empty(), "a recreated namespace starts empty: {leftovers}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_deletion_propagates_background_foreground_and_orphan() -> anyhow::Result<()> {
    let server = TestServer::with_controllers().await?;
    let k = server.kubectl(31);
    for mode in ["background", "foreground", "orphan"] {
        k.ok_stdin(&["apply", "-f", "-"], DEPLOYMENT)?;
        let uid = k.ok(&["get", "deploy", "web", "-o", "jsonpath={.metadata.uid}"])?;
        let dependent = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dep-{mode}\n  ownerReferences: [{{apiVersion: apps/v1, kind: Deployment, name: web, uid: {uid}, controller: true, blockOwnerDeletion: true}}]\n"
        );
        k.ok_stdin(&["apply", "-f", "-"], &dependent)?;
        k.ok(&["delete", "deploy", "web", &format!("--cascade={mode}"), "--timeout=20s"])?;
        let name = format!("dep-{mode}");
        if mode == "orphan" {
            eventually("the orphan loses its owner reference", || {
                Ok(k.ok(&["get", "cm", &name, "-o", "jsonpath={.metadata.ownerReferences}"])?.trim().is_empty())
            })
            .await?;
        } else {
            eventually(&format!("the {mode} dependent is collected"), || {
                Ok(!k.output(&["get", "cm", &name])?.status.success())
            })
            .await?;
        }
        ensure_contains(&k.fails(&["get", "deploy", "web"])?, "not found")?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_applies_through_openapi_v2_with_server_side_validation() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let k = server.kubectl(27);
    ensure_contains(&k.ok_stdin(&["apply", "-f", "-"], DEPLOYMENT)?, "deployment.apps/web created")?;
    ensure_contains(
        &k.ok_stdin(&["apply", "-f", "-"], &DEPLOYMENT.replace("replicas: 2", "replicas: 3"))?,
        "configured",
    )?;
    let out = k.output_stdin(&["apply", "-f", "-"], &DEPLOYMENT.replace("replicas: 2", "replica: 2"))?;
    anyhow::ensure!(!out.status.success(), "kubectl 1.27 asked for Strict validation");
    ensure_contains(&String::from_utf8_lossy(&out.stderr), r#"unknown field "spec.replica""#)?;
    Ok(())
}

/// Server-side apply as upstream's structured merge: a field another manager
/// set differently is a conflict naming that manager; force takes it over;
/// fields the applier stops naming go; managedFields show who owns what.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_conflicts_forces_prunes_and_shows_managed_fields() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let k = server.kubectl(33);
    ensure_contains(&k.ok_stdin(&["apply", "-f", "-"], DEPLOYMENT)?, "deployment.apps/web created")?;

    // Client-side apply set replicas; applying another value conflicts with it.
    let three = DEPLOYMENT.replace("replicas: 2", "replicas: 3");
    let out = k.output_stdin(&["apply", "--server-side", "-f", "-"], &three)?;
    anyhow::ensure!(!out.status.success(), "a conflicting apply must fail");
    ensure_contains(
        &String::from_utf8_lossy(&out.stderr),
        r#"Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas"#,
    )?;
    anyhow::ensure!(k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])? == "2", "nothing changed");

    // The same values are shared without conflict; force takes replicas.
    ensure_contains(&k.ok_stdin(&["apply", "--server-side", "-f", "-"], DEPLOYMENT)?, "serverside-applied")?;
    let labelled = three.replace("labels: {app: web}\nspec", "labels: {app: web, tier: front}\nspec");
    ensure_contains(
        &k.ok_stdin(&["apply", "--server-side", "--force-conflicts", "-f", "-"], &labelled)?,
        "deployment.apps/web serverside-applied",
    )?;
    let fields = k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.metadata.labels.tier}"])?;
    anyhow::ensure!(fields == "3 front", "forced apply: {fields:?}");

    // managedFields in upstream's shape, shown with --show-managed-fields only.
    let yaml = k.ok(&["get", "deploy", "web", "-o", "yaml", "--show-managed-fields"])?;
    for needle in ["managedFields:", "manager: kubectl", "operation: Apply", "fieldsType: FieldsV1", "f:replicas: {}"] {
        ensure_contains(&yaml, needle)?;
    }
    ensure_contains(&yaml, r#"k:{"name":"nginx"}:"#)?;
    let plain = k.ok(&["get", "deploy", "web", "-o", "yaml"])?;
    anyhow::ensure!(!plain.contains("managedFields"), "hidden by default:\n{plain}");

    // Re-applying without the label removes it: only the applier owned it.
    ensure_contains(&k.ok_stdin(&["apply", "--server-side", "-f", "-"], &three)?, "serverside-applied")?;
    let labels = k.ok(&["get", "deploy", "web", "-o", "jsonpath={.metadata.labels}"])?;
    anyhow::ensure!(!labels.contains("tier"), "the dropped label is gone: {labels}");

    // kubectl scale takes replicas; applying another value conflicts with it.
    k.ok(&["scale", "deploy", "web", "--replicas=5"])?;
    let out = k.output_stdin(&["apply", "--server-side", "-f", "-"], &three)?;
    anyhow::ensure!(!out.status.success(), "replicas now belong to scale");
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure_contains(&stderr, "Apply failed with 1 conflict: conflict with")?;
    ensure_contains(&stderr, r#"with subresource "scale" using apps/v1: .spec.replicas"#)?;
    ensure_contains(
        &k.ok_stdin(&["apply", "--server-side", "--force-conflicts", "-f", "-"], &three)?,
        "serverside-applied",
    )?;
    anyhow::ensure!(k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])? == "3", "forced back to 3");
    Ok(())
}

/// `kubectl get` prints upstream's columns for the kinds beyond workloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_prints_upstreams_columns_for_policies_claims_and_priorities() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let k = server.kubectl(33);
    let objects = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny}
spec:
  podSelector: {matchLabels: {app: web}}
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
";
    k.ok_stdin(&["apply", "-f", "-"], objects)?;
    let np = k.ok(&["get", "networkpolicy", "deny"])?;
    ensure_contains(&np, "POD-SELECTOR")?;
    ensure_contains(&np, "app=web")?;
    let pc = k.ok(&["get", "priorityclass", "high"])?;
    ensure_contains(&pc, "GLOBAL-DEFAULT")?;
    ensure_contains(&pc, "1000")?;
    let pvc = k.ok(&["get", "pvc", "data"])?;
    for header in ["STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS"] {
        ensure_contains(&pvc, header)?;
    }
    ensure_contains(&pvc, "Pending")?;
    Ok(())
}
