"""The Python `kubernetes` client against waggle: create, list, watch, patch, delete.

Usage: python client_flow.py KUBECONFIG NAMESPACE
Prints one line per step; exits non-zero on the first failure.
"""
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def main(kubeconfig, namespace):
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    apps = client.AppsV1Api()

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    print("created namespace")

    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    seen = []
    done = threading.Event()

    def watcher():
        w = watch.Watch()
        for ev in w.stream(core.list_namespaced_config_map, namespace, resource_version=rv, timeout_seconds=10):
            seen.append((ev["type"], ev["object"].metadata.name, (ev["object"].data or {}).get("k")))
            if len(seen) >= 3:
                w.stop()
        done.set()

    t = threading.Thread(target=watcher)
    t.start()

    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py", labels={"from": "python"}), data={"k": "1"})
    core.create_namespaced_config_map(namespace, cm)
    listed = core.list_namespaced_config_map(namespace, label_selector="from=python")
    assert [i.metadata.name for i in listed.items] == ["py"], listed.items
    print("created and listed")

    core.patch_namespaced_config_map("py", namespace, {"data": {"k": "2"}})
    assert core.read_namespaced_config_map("py", namespace).data["k"] == "2"
    print("patched")

    core.delete_namespaced_config_map("py", namespace)
    try:
        core.read_namespaced_config_map("py", namespace)
        raise AssertionError("still there after delete")
    except ApiException as e:
        assert e.status == 404, e
    print("deleted")

    done.wait(15)
    assert seen == [("ADDED", "py", "1"), ("MODIFIED", "py", "2"), ("DELETED", "py", "2")], seen
    print("watched", seen)

    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "py-web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "py-web"}},
            "template": {"metadata": {"labels": {"app": "py-web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
        },
    }
    created = apps.create_namespaced_deployment(namespace, dep)
    assert created.spec.strategy.type == "RollingUpdate"
    apps.patch_namespaced_deployment_scale("py-web", namespace, {"spec": {"replicas": 3}})
    assert apps.read_namespaced_deployment("py-web", namespace).spec.replicas == 3
    print("deployment created and scaled")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
