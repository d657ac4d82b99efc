//! `core/v1` pod template, pod spec, containers and volumes: what Pod,
//! Deployment, Job and CronJob share.
//!
//! Covers what kubectl's generators (`create deployment|job|cronjob`, `run`)
//! produce and the common hand-written fields. Anything rarer (affinity,
//! probes, security contexts, topology spread, other volume sources) is
//! refused with [`ProtobufError::UnsupportedField`] rather than dropped.

use k8s_pb::api::core::v1::{
    ConfigMapEnvSource, ConfigMapKeySelector, ConfigMapProjection, ConfigMapVolumeSource, Container, ContainerPort,
    DownwardAPIProjection, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    EnvVarSource, HostPathVolumeSource, KeyToPath, LocalObjectReference, ObjectFieldSelector,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, ProjectedVolumeSource, ResourceClaim,
    ResourceFieldSelector, ResourceRequirements, SecretEnvSource, SecretKeySelector, SecretProjection,
    SecretVolumeSource, ServiceAccountTokenProjection, Toleration, Volume, VolumeMount, VolumeProjection, VolumeSource,
};
use serde_json::Value;

use super::json::{Obj, Result, each, reject_set};
use super::meta::{object_meta, quantities, quantity};

/// `core/v1.PodTemplateSpec`: metadata and spec are non-pointer structs.
pub(super) fn pod_template_spec(t: PodTemplateSpec) -> Result<Value> {
    let PodTemplateSpec { metadata, spec } = t;
    Ok(Obj::new()
        .object("metadata", object_meta(metadata.unwrap_or_default())?)
        .object("spec", pod_spec(spec.unwrap_or_default())?)
        .build())
}

pub(super) fn pod_spec(s: PodSpec) -> Result<Value> {
    let PodSpec {
        volumes,
        init_containers,
        containers,
        ephemeral_containers,
        restart_policy,
        termination_grace_period_seconds,
        active_deadline_seconds,
        dns_policy,
        node_selector,
        service_account_name,
        service_account,
        automount_service_account_token,
        node_name,
        host_network,
        host_pid,
        host_ipc,
        share_process_namespace,
        security_context,
        image_pull_secrets,
        hostname,
        subdomain,
        affinity,
        scheduler_name,
        tolerations,
        host_aliases,
        priority_class_name,
        priority,
        dns_config,
        readiness_gates,
        runtime_class_name,
        enable_service_links,
        preemption_policy,
        overhead,
        topology_spread_constraints,
        set_hostname_as_fqdn,
        os,
        host_users,
        scheduling_gates,
        resource_claims,
        resources,
        hostname_override,
        workload_ref,
    } = s;
    reject_set!("PodSpec",
        ephemeral_containers => "ephemeralContainers",
        security_context => "securityContext",
        affinity => "affinity",
        host_aliases => "hostAliases",
        dns_config => "dnsConfig",
        readiness_gates => "readinessGates",
        topology_spread_constraints => "topologySpreadConstraints",
        os => "os",
        scheduling_gates => "schedulingGates",
        resource_claims => "resourceClaims",
        resources => "resources",
        workload_ref => "workloadRef",
    );
    Ok(Obj::new()
        .list("volumes", each(volumes, volume)?)
        .list("initContainers", each(init_containers, container)?)
        .list_always("containers", each(containers, container)?)
        .string("restartPolicy", restart_policy)
        .int_ptr("terminationGracePeriodSeconds", termination_grace_period_seconds)
        .int_ptr("activeDeadlineSeconds", active_deadline_seconds)
        .string("dnsPolicy", dns_policy)
        .map("nodeSelector", node_selector)
        .string("serviceAccountName", service_account_name)
        .string("serviceAccount", service_account)
        .bool_ptr("automountServiceAccountToken", automount_service_account_token)
        .string("nodeName", node_name)
        .bool("hostNetwork", host_network)
        .bool("hostPID", host_pid)
        .bool("hostIPC", host_ipc)
        .bool_ptr("shareProcessNamespace", share_process_namespace)
        .list("imagePullSecrets", image_pull_secrets.into_iter().map(local_object_reference).collect())
        .string("hostname", hostname)
        .string("subdomain", subdomain)
        .string("schedulerName", scheduler_name)
        .list("tolerations", tolerations.into_iter().map(toleration).collect())
        .string("priorityClassName", priority_class_name)
        .int_ptr("priority", priority)
        .string_ptr("runtimeClassName", runtime_class_name)
        .bool_ptr("enableServiceLinks", enable_service_links)
        .string_ptr("preemptionPolicy", preemption_policy)
        .object_map("overhead", quantities(overhead))
        .bool_ptr("setHostnameAsFQDN", set_hostname_as_fqdn)
        .bool_ptr("hostUsers", host_users)
        .string_ptr("hostnameOverride", hostname_override)
        .build())
}

fn container(c: Container) -> Result<Value> {
    let Container {
        name,
        image,
        command,
        args,
        working_dir,
        ports,
        env_from,
        env,
        resources,
        resize_policy,
        restart_policy,
        restart_policy_rules,
        volume_mounts,
        volume_devices,
        liveness_probe,
        readiness_probe,
        startup_probe,
        lifecycle,
        termination_message_path,
        termination_message_policy,
        image_pull_policy,
        security_context,
        stdin,
        stdin_once,
        tty,
    } = c;
    reject_set!("Container",
        resize_policy => "resizePolicy",
        restart_policy_rules => "restartPolicyRules",
        volume_devices => "volumeDevices",
        liveness_probe => "livenessProbe",
        readiness_probe => "readinessProbe",
        startup_probe => "startupProbe",
        lifecycle => "lifecycle",
        security_context => "securityContext",
    );
    Ok(Obj::new()
        .string_always("name", name)
        .string("image", image)
        .strings("command", command)
        .strings("args", args)
        .string("workingDir", working_dir)
        .list("ports", ports.into_iter().map(container_port).collect())
        .list("envFrom", env_from.into_iter().map(env_from_source).collect())
        .list("env", env.into_iter().map(env_var).collect())
        .object("resources", resource_requirements(resources.unwrap_or_default()))
        .string_ptr("restartPolicy", restart_policy)
        .list("volumeMounts", volume_mounts.into_iter().map(volume_mount).collect())
        .string("terminationMessagePath", termination_message_path)
        .string("terminationMessagePolicy", termination_message_policy)
        .string("imagePullPolicy", image_pull_policy)
        .bool("stdin", stdin)
        .bool("stdinOnce", stdin_once)
        .bool("tty", tty)
        .build())
}

fn container_port(p: ContainerPort) -> Value {
    let ContainerPort { name, host_port, container_port, protocol, host_ip } = p;
    Obj::new()
        .string("name", name)
        .int("hostPort", host_port)
        .int_always("containerPort", container_port)
        .string("protocol", protocol)
        .string("hostIP", host_ip)
        .build()
}

fn env_var(e: EnvVar) -> Value {
    let EnvVar { name, value, value_from } = e;
    Obj::new()
        .string_always("name", name)
        .string("value", value)
        .object_ptr("valueFrom", value_from.map(env_var_source))
        .build()
}

fn env_var_source(s: EnvVarSource) -> Value {
    let EnvVarSource { field_ref, resource_field_ref, config_map_key_ref, secret_key_ref, file_key_ref } = s;
    let key_ref = |name: Option<LocalObjectReference>, key: Option<String>, optional: Option<bool>| {
        Obj::new().string("name", local_name(name)).string_always("key", key).bool_ptr("optional", optional).build()
    };
    let mut obj = Obj::new()
        .object_ptr("fieldRef", field_ref.map(object_field_selector))
        .object_ptr("resourceFieldRef", resource_field_ref.map(resource_field_selector))
        .object_ptr(
            "configMapKeyRef",
            config_map_key_ref.map(|ConfigMapKeySelector { local_object_reference, key, optional }| {
                key_ref(local_object_reference, key, optional)
            }),
        )
        .object_ptr(
            "secretKeyRef",
            secret_key_ref.map(|SecretKeySelector { local_object_reference, key, optional }| {
                key_ref(local_object_reference, key, optional)
            }),
        );
    if let Some(f) = file_key_ref {
        // Alpha (EnvFiles); passed through field by field all the same.
        obj = obj.object(
            "fileKeyRef",
            Obj::new()
                .string_always("volumeName", f.volume_name)
                .string_always("path", f.path)
                .string_always("key", f.key)
                .bool_ptr("optional", f.optional)
                .build(),
        );
    }
    obj.build()
}

fn env_from_source(s: EnvFromSource) -> Value {
    let EnvFromSource { prefix, config_map_ref, secret_ref } = s;
    let source = |name: Option<LocalObjectReference>, optional: Option<bool>| {
        Obj::new().string("name", local_name(name)).bool_ptr("optional", optional).build()
    };
    Obj::new()
        .string("prefix", prefix)
        .object_ptr(
            "configMapRef",
            config_map_ref.map(|ConfigMapEnvSource { local_object_reference, optional }| {
                source(local_object_reference, optional)
            }),
        )
        .object_ptr(
            "secretRef",
            secret_ref
                .map(|SecretEnvSource { local_object_reference, optional }| source(local_object_reference, optional)),
        )
        .build()
}

fn object_field_selector(s: ObjectFieldSelector) -> Value {
    let ObjectFieldSelector { api_version, field_path } = s;
    Obj::new().string("apiVersion", api_version).string_always("fieldPath", field_path).build()
}

fn resource_field_selector(s: ResourceFieldSelector) -> Value {
    let ResourceFieldSelector { container_name, resource, divisor } = s;
    Obj::new()
        .string("containerName", container_name)
        .string_always("resource", resource)
        // A non-pointer Quantity: Go writes "0" when unset.
        .object("divisor", divisor.map_or_else(|| Value::String("0".into()), quantity))
        .build()
}

fn resource_requirements(r: ResourceRequirements) -> Value {
    let ResourceRequirements { limits, requests, claims } = r;
    Obj::new()
        .object_map("limits", quantities(limits))
        .object_map("requests", quantities(requests))
        .list(
            "claims",
            claims
                .into_iter()
                .map(|ResourceClaim { name, request }| {
                    Obj::new().string_always("name", name).string("request", request).build()
                })
                .collect(),
        )
        .build()
}

fn volume_mount(m: VolumeMount) -> Value {
    let VolumeMount { name, read_only, recursive_read_only, mount_path, sub_path, mount_propagation, sub_path_expr } =
        m;
    Obj::new()
        .string_always("name", name)
        .bool("readOnly", read_only)
        .string_ptr("recursiveReadOnly", recursive_read_only)
        .string_always("mountPath", mount_path)
        .string("subPath", sub_path)
        .string_ptr("mountPropagation", mount_propagation)
        .string("subPathExpr", sub_path_expr)
        .build()
}

pub(super) fn toleration(t: Toleration) -> Value {
    let Toleration { key, operator, value, effect, toleration_seconds } = t;
    Obj::new()
        .string("key", key)
        .string("operator", operator)
        .string("value", value)
        .string("effect", effect)
        .int_ptr("tolerationSeconds", toleration_seconds)
        .build()
}

/// `LocalObjectReference` as a list element (`imagePullSecrets`).
pub(super) fn local_object_reference(r: LocalObjectReference) -> Value {
    Obj::new().string("name", r.name).build()
}

/// The name of an embedded (inlined) `LocalObjectReference`.
fn local_name(r: Option<LocalObjectReference>) -> Option<String> {
    r.and_then(|r| r.name)
}

fn volume(v: Volume) -> Result<Value> {
    let Volume { name, volume_source } = v;
    let VolumeSource {
        host_path,
        empty_dir,
        gce_persistent_disk,
        aws_elastic_block_store,
        git_repo,
        secret,
        nfs,
        iscsi,
        glusterfs,
        persistent_volume_claim,
        rbd,
        flex_volume,
        cinder,
        cephfs,
        flocker,
        downward_api,
        fc,
        azure_file,
        config_map,
        vsphere_volume,
        quobyte,
        azure_disk,
        photon_persistent_disk,
        projected,
        portworx_volume,
        scale_io,
        storageos,
        csi,
        ephemeral,
        image,
    } = volume_source.unwrap_or_default();
    reject_set!("VolumeSource",
        gce_persistent_disk => "gcePersistentDisk",
        aws_elastic_block_store => "awsElasticBlockStore",
        git_repo => "gitRepo",
        nfs => "nfs",
        iscsi => "iscsi",
        glusterfs => "glusterfs",
        rbd => "rbd",
        flex_volume => "flexVolume",
        cinder => "cinder",
        cephfs => "cephfs",
        flocker => "flocker",
        fc => "fc",
        azure_file => "azureFile",
        vsphere_volume => "vsphereVolume",
        quobyte => "quobyte",
        azure_disk => "azureDisk",
        photon_persistent_disk => "photonPersistentDisk",
        portworx_volume => "portworxVolume",
        scale_io => "scaleIO",
        storageos => "storageos",
        csi => "csi",
        ephemeral => "ephemeral",
        image => "image",
    );
    Ok(Obj::new()
        .string_always("name", name)
        .object_ptr(
            "hostPath",
            host_path.map(|HostPathVolumeSource { path, r#type }| {
                Obj::new().string_always("path", path).string_ptr("type", r#type).build()
            }),
        )
        .object_ptr(
            "emptyDir",
            empty_dir.map(|EmptyDirVolumeSource { medium, size_limit }| {
                Obj::new().string("medium", medium).object_ptr("sizeLimit", size_limit.map(quantity)).build()
            }),
        )
        .object_ptr(
            "secret",
            secret.map(|SecretVolumeSource { secret_name, items, default_mode, optional }| {
                Obj::new()
                    .string("secretName", secret_name)
                    .list("items", key_to_paths(items))
                    .int_ptr("defaultMode", default_mode)
                    .bool_ptr("optional", optional)
                    .build()
            }),
        )
        .object_ptr(
            "persistentVolumeClaim",
            persistent_volume_claim.map(|PersistentVolumeClaimVolumeSource { claim_name, read_only }| {
                Obj::new().string_always("claimName", claim_name).bool("readOnly", read_only).build()
            }),
        )
        .object_ptr(
            "downwardAPI",
            downward_api.map(|DownwardAPIVolumeSource { items, default_mode }| {
                Obj::new()
                    .list("items", items.into_iter().map(downward_api_file).collect())
                    .int_ptr("defaultMode", default_mode)
                    .build()
            }),
        )
        .object_ptr(
            "configMap",
            config_map.map(|ConfigMapVolumeSource { local_object_reference, items, default_mode, optional }| {
                Obj::new()
                    .string("name", local_name(local_object_reference))
                    .list("items", key_to_paths(items))
                    .int_ptr("defaultMode", default_mode)
                    .bool_ptr("optional", optional)
                    .build()
            }),
        )
        .object_ptr("projected", projected.map(projected_volume).transpose()?)
        .build())
}

fn key_to_paths(items: Vec<KeyToPath>) -> Vec<Value> {
    items
        .into_iter()
        .map(|KeyToPath { key, path, mode }| {
            Obj::new().string_always("key", key).string_always("path", path).int_ptr("mode", mode).build()
        })
        .collect()
}

fn downward_api_file(f: DownwardAPIVolumeFile) -> Value {
    let DownwardAPIVolumeFile { path, field_ref, resource_field_ref, mode } = f;
    Obj::new()
        .string_always("path", path)
        .object_ptr("fieldRef", field_ref.map(object_field_selector))
        .object_ptr("resourceFieldRef", resource_field_ref.map(resource_field_selector))
        .int_ptr("mode", mode)
        .build()
}

fn projected_volume(p: ProjectedVolumeSource) -> Result<Value> {
    let ProjectedVolumeSource { sources, default_mode } = p;
    Ok(Obj::new()
        .list_always("sources", each(sources, volume_projection)?)
        .int_ptr("defaultMode", default_mode)
        .build())
}

fn volume_projection(p: VolumeProjection) -> Result<Value> {
    let VolumeProjection {
        secret,
        downward_api,
        config_map,
        service_account_token,
        cluster_trust_bundle,
        pod_certificate,
    } = p;
    reject_set!("VolumeProjection",
        cluster_trust_bundle => "clusterTrustBundle",
        pod_certificate => "podCertificate",
    );
    let named = |name: Option<LocalObjectReference>, items: Vec<KeyToPath>, optional: Option<bool>| {
        Obj::new()
            .string("name", local_name(name))
            .list("items", key_to_paths(items))
            .bool_ptr("optional", optional)
            .build()
    };
    Ok(Obj::new()
        .object_ptr(
            "secret",
            secret.map(|SecretProjection { local_object_reference, items, optional }| {
                named(local_object_reference, items, optional)
            }),
        )
        .object_ptr(
            "downwardAPI",
            downward_api.map(|DownwardAPIProjection { items }| {
                Obj::new().list("items", items.into_iter().map(downward_api_file).collect()).build()
            }),
        )
        .object_ptr(
            "configMap",
            config_map.map(|ConfigMapProjection { local_object_reference, items, optional }| {
                named(local_object_reference, items, optional)
            }),
        )
        .object_ptr(
            "serviceAccountToken",
            service_account_token.map(|ServiceAccountTokenProjection { audience, expiration_seconds, path }| {
                Obj::new()
                    .string("audience", audience)
                    .int_ptr("expirationSeconds", expiration_seconds)
                    .string_always("path", path)
                    .build()
            }),
        )
        .build())
}
