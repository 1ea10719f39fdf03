//! The headless cluster service (spec 3.8) and the per-member services (spec 3.9).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubedirector_crds::cluster::RoleSpec;

use super::statefulset::role_port_services;
use super::{
    is_subset, merge_labels, owner_refs_match, ClusterInfo, LABEL_CLUSTER, LABEL_HEADLESS, LABEL_POD_NAME,
    LABEL_ROLE,
};

/// Name of the headless service's placeholder port.
pub const HEADLESS_PORT_NAME: &str = "port";
/// Number of the headless service's placeholder port.
pub const HEADLESS_PORT: i32 = 8888;
/// Member `service` value of roles that expose no ports.
pub const NO_SERVICE: &str = "n/a";

/// Builds the headless cluster service named `name` (spec 3.8).
pub fn build_headless_service(info: &ClusterInfo<'_>, name: &str) -> Service {
    let annotations = info.base_annotations();
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(info.namespace().to_owned()),
            labels: Some(info.base_labels()),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![info.owner_reference()]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(BTreeMap::from([(
                LABEL_HEADLESS.to_owned(),
                info.name().to_owned(),
            )])),
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![ServicePort {
                name: Some(HEADLESS_PORT_NAME.to_owned()),
                port: HEADLESS_PORT,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The member-service ports of a role: `<lowercased urlScheme>-<id>` or `generic-<id>`, one per
/// kdapp service (kdapp order) of the role with an endpoint port. Empty when the role exposes no
/// ports (the member then gets `service: n/a`).
pub fn member_service_ports(info: &ClusterInfo<'_>, role_id: &str) -> Vec<ServicePort> {
    role_port_services(info, role_id)
        .into_iter()
        .filter_map(|s| {
            let e = s.endpoint.as_ref()?;
            let prefix = e
                .url_scheme
                .as_deref()
                .filter(|u| !u.is_empty())
                .map(str::to_lowercase)
                .unwrap_or_else(|| "generic".to_owned());
            Some(ServicePort {
                name: Some(format!("{prefix}-{}", s.id)),
                port: e.port,
                ..ServicePort::default()
            })
        })
        .collect()
}

/// Builds the per-member service `name` for `pod` of `role` (spec 3.9); `None` when the role
/// exposes no ports.
pub fn build_member_service(
    info: &ClusterInfo<'_>,
    role: &RoleSpec,
    pod: &str,
    name: &str,
) -> Option<Service> {
    let ports = member_service_ports(info, &role.id);
    if ports.is_empty() {
        return None;
    }
    let mut protected = info.base_labels();
    protected.insert(LABEL_ROLE.to_owned(), role.id.clone());
    let labels = merge_labels(
        &[role.service_labels.as_ref(), info.config.service_labels.as_ref()],
        &protected,
    );
    let annotations = merge_labels(
        &[
            Some(&info.base_annotations()),
            role.service_annotations.as_ref(),
            info.config.service_annotations.as_ref(),
        ],
        &BTreeMap::new(),
    );
    Some(Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(info.namespace().to_owned()),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![info.owner_reference()]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(info.service_type.clone()),
            selector: Some(BTreeMap::from([(LABEL_POD_NAME.to_owned(), pod.to_owned())])),
            publish_not_ready_addresses: Some(true),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// The type of an observed service (`ClusterIP` when unset, as the API server defaults it).
pub fn service_type(svc: &Service) -> &str {
    svc.spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("ClusterIP")
}

/// `true` when a change from `current` to `desired` type is done by deleting and re-creating
/// the service (upstream's rule, spec 3.9): current NodePort/LoadBalancer and desired
/// ClusterIP/LoadBalancer.
pub fn type_change_needs_recreate(current: &str, desired: &str) -> bool {
    matches!(current, "NodePort" | "LoadBalancer") && matches!(desired, "ClusterIP" | "LoadBalancer")
}

fn ports_key(svc: &Service) -> Vec<(Option<String>, i32)> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(|ps| ps.iter().map(|p| (p.name.clone(), p.port)).collect())
        .unwrap_or_default()
}

/// Desired-fields comparison of a service (spec 7 R17): `true` when `observed` lacks one of the
/// desired labels/annotations, does not carry exactly the kdcluster owner reference, or differs in
/// type, selector, `publishNotReadyAddresses` or ports (name and number). Fields the API server
/// or other managers own (clusterIP, nodePorts, extra labels) are ignored.
pub fn service_drifted(desired: &Service, observed: &Service) -> bool {
    let d = &desired.metadata;
    let o = &observed.metadata;
    let meta_ok = d.labels.as_ref().is_none_or(|l| is_subset(l, o.labels.as_ref()))
        && d.annotations
            .as_ref()
            .is_none_or(|a| is_subset(a, o.annotations.as_ref()))
        && match d.owner_references.as_deref() {
            Some([owner]) => owner_refs_match(owner, o.owner_references.as_ref()),
            _ => true,
        };
    let ds = desired.spec.clone().unwrap_or_default();
    let os = observed.spec.clone().unwrap_or_default();
    let spec_ok = service_type(desired) == service_type(observed)
        && ds.selector == os.selector
        && ds.publish_not_ready_addresses.unwrap_or(false) == os.publish_not_ready_addresses.unwrap_or(false)
        && ports_key(desired) == ports_key(observed)
        && (ds.cluster_ip.as_deref() != Some("None") || os.cluster_ip.as_deref() == Some("None"));
    !(meta_ok && spec_ok)
}

/// The replacement that repairs `observed` into `desired` (spec 7 R17), for a write conditional
/// on the observed version (it carries `observed`'s resourceVersion and uid): `observed` with the
/// desired labels and annotations added, exactly the desired owner references, and the desired
/// type, selector, `publishNotReadyAddresses` and ports. What the API server or other managers
/// own stays: clusterIP(s), the nodePort of a port kept, extra labels and annotations.
pub fn service_repair(observed: &Service, desired: &Service) -> Service {
    let mut out = observed.clone();
    let d = &desired.metadata;
    let m = &mut out.metadata;
    if let Some(l) = &d.labels {
        m.labels.get_or_insert_with(BTreeMap::new).extend(l.clone());
    }
    if let Some(a) = &d.annotations {
        m.annotations.get_or_insert_with(BTreeMap::new).extend(a.clone());
    }
    m.owner_references.clone_from(&d.owner_references);
    let ds = desired.spec.clone().unwrap_or_default();
    let spec = out.spec.get_or_insert_with(ServiceSpec::default);
    let kept: Vec<ServicePort> = spec.ports.clone().unwrap_or_default();
    spec.ports = ds.ports.map(|ports| {
        ports
            .into_iter()
            .map(|mut p| {
                if p.node_port.is_none() {
                    p.node_port = kept
                        .iter()
                        .find(|k| k.name == p.name && k.port == p.port)
                        .and_then(|k| k.node_port);
                }
                p
            })
            .collect()
    });
    spec.type_ = ds.type_;
    spec.selector = ds.selector;
    spec.publish_not_ready_addresses = ds.publish_not_ready_addresses;
    if spec.cluster_ip.is_none() {
        spec.cluster_ip = ds.cluster_ip;
    }
    if !matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer")) {
        for p in spec.ports.iter_mut().flatten() {
            p.node_port = None;
        }
    }
    out
}

/// Labels identifying every object of a kdcluster (for list/delete-collection selectors).
pub fn cluster_selector(info: &ClusterInfo<'_>) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_CLUSTER.to_owned(), info.name().to_owned())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::objects::{ANNOTATION_PRETTY_NAME, LABEL_APP, LABEL_APP_CATALOG};
    use crate::plan::testing::*;
    use kubedirector_crds::config::KubeDirectorConfigSpec;

    #[test]
    fn a_repair_restores_desired_fields_and_keeps_the_servers_and_others() {
        let cluster = cluster_spark();
        let app = app_spark();
        let cfg = KubeDirectorConfigSpec::default();
        let info = ClusterInfo::new(&cluster, Some(&app), &cfg);
        let desired = build_headless_service(&info, "kdhs-abcde");
        let mut observed = desired.clone();
        observed.metadata.uid = Some("u1".into());
        observed.metadata.resource_version = Some("7".into());
        observed.metadata.labels.as_mut().unwrap().remove(LABEL_CLUSTER);
        observed
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("extra".into(), "x".into());
        observed.metadata.owner_references = None;
        let spec = observed.spec.as_mut().unwrap();
        spec.selector = Some(BTreeMap::from([("app".to_owned(), "other".to_owned())]));
        spec.ports.as_mut().unwrap().push(ServicePort {
            port: 1,
            ..ServicePort::default()
        });
        assert!(service_drifted(&desired, &observed));
        let fixed = service_repair(&observed, &desired);
        assert!(!service_drifted(&desired, &fixed), "{fixed:?}");
        assert_eq!(fixed.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(fixed.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(fixed.metadata.labels.as_ref().unwrap()["extra"], "x");
        assert_eq!(fixed.spec.as_ref().unwrap().cluster_ip.as_deref(), Some("None"));
        // A NodePort keeps the node ports the server allocated for the ports it keeps.
        let mut desired = desired;
        let ds = desired.spec.as_mut().unwrap();
        ds.type_ = Some("NodePort".into());
        ds.cluster_ip = None;
        let mut observed = desired.clone();
        observed.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(30001);
        observed.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        let fixed = service_repair(&observed, &desired);
        assert_eq!(fixed.spec.as_ref().unwrap().type_.as_deref(), Some("NodePort"));
        assert_eq!(
            fixed.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port,
            Some(30001)
        );
    }

    #[test]
    fn headless_service_fields() {
        let cluster = cluster_spark();
        let app = app_spark();
        let cfg = KubeDirectorConfigSpec {
            service_labels: Some(BTreeMap::from([("g".to_owned(), "v".to_owned())])),
            ..Default::default()
        };
        let info = ClusterInfo::new(&cluster, Some(&app), &cfg);
        let svc = build_headless_service(&info, "kdhs-abcde");
        let md = &svc.metadata;
        assert_eq!(md.name.as_deref(), Some("kdhs-abcde"));
        assert_eq!(md.namespace.as_deref(), Some("ns1"));
        let l = md.labels.clone().unwrap();
        assert_eq!(l.len(), 3, "no role, no user/global labels: {l:?}");
        assert_eq!(l[LABEL_CLUSTER], "spark");
        assert_eq!(l[LABEL_APP], "spark245");
        assert_eq!(l[LABEL_APP_CATALOG], "local");
        assert_eq!(
            md.annotations.clone().unwrap()[ANNOTATION_PRETTY_NAME],
            "Spark 2.4.5 + Jupyterhub"
        );
        assert_eq!(md.owner_references.clone().unwrap()[0].uid, "uid-spark");
        let spec = svc.spec.clone().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(
            spec.selector.unwrap(),
            BTreeMap::from([(LABEL_HEADLESS.to_owned(), "spark".to_owned())])
        );
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let ports = spec.ports.unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!((ports[0].name.as_deref(), ports[0].port), (Some("port"), 8888));
        assert!(!service_drifted(&svc, &svc));
    }

    #[test]
    fn headless_without_app_has_no_pretty_name() {
        let cluster = cluster_spark();
        let cfg = config_default();
        let info = ClusterInfo::new(&cluster, None, &cfg);
        assert!(build_headless_service(&info, "x").metadata.annotations.is_none());
    }

    #[test]
    fn member_service_fields() {
        let mut cluster = cluster_spark();
        cluster.spec.service_type = Some(kubedirector_crds::cluster::ServiceType::NodePort);
        cluster.spec.roles[0].service_labels = Some(BTreeMap::from([
            ("a".to_owned(), "role".to_owned()),
            ("b".to_owned(), "role".to_owned()),
            (LABEL_ROLE.to_owned(), "hijack".to_owned()),
        ]));
        cluster.spec.roles[0].service_annotations =
            Some(BTreeMap::from([("x".to_owned(), "role".to_owned())]));
        let cfg = KubeDirectorConfigSpec {
            service_labels: Some(BTreeMap::from([("b".to_owned(), "global".to_owned())])),
            service_annotations: Some(BTreeMap::from([("x".to_owned(), "global".to_owned())])),
            ..Default::default()
        };
        let app = app_spark();
        let info = ClusterInfo::new(&cluster, Some(&app), &cfg);
        let svc =
            build_member_service(&info, &cluster.spec.roles[0], "kdss-abcde-0", "s-kdss-abcde-0").unwrap();
        let l = svc.metadata.labels.clone().unwrap();
        assert_eq!(l["a"], "role");
        assert_eq!(l["b"], "global");
        assert_eq!(l[LABEL_ROLE], "spark-master");
        assert_eq!(l[LABEL_CLUSTER], "spark");
        assert!(!l.contains_key(LABEL_HEADLESS));
        let a = svc.metadata.annotations.clone().unwrap();
        assert_eq!(a["x"], "global");
        assert_eq!(a[ANNOTATION_PRETTY_NAME], "Spark 2.4.5 + Jupyterhub");
        let spec = svc.spec.clone().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(
            spec.selector.unwrap(),
            BTreeMap::from([(LABEL_POD_NAME.to_owned(), "kdss-abcde-0".to_owned())])
        );
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let ports: Vec<(String, i32)> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.port))
            .collect();
        assert_eq!(
            ports,
            vec![
                ("http-spark-web".to_owned(), 8080),
                ("spark-spark-master".to_owned(), 7077)
            ]
        );
    }

    #[test]
    fn member_service_generic_port_name_and_none_without_ports() {
        let cluster = cluster_centos(1);
        let mut app = app_centos();
        let cfg = config_default();
        let info = ClusterInfo::new(&cluster, Some(&app), &cfg);
        let svc = build_member_service(&info, &cluster.spec.roles[0], "p-0", "s-p-0").unwrap();
        assert_eq!(
            svc.spec.unwrap().ports.unwrap()[0].name.as_deref(),
            Some("generic-ssh")
        );
        app.spec.services[0].endpoint = None;
        let info = ClusterInfo::new(&cluster, Some(&app), &cfg);
        assert!(build_member_service(&info, &cluster.spec.roles[0], "p-0", "s-p-0").is_none());
        assert!(member_service_ports(&info, "vanilla_centos").is_empty());
    }

    #[test]
    fn url_scheme_is_lowercased() {
        let cluster = cluster_spark();
        let mut app = app_spark();
        app.spec.services[0].endpoint.as_mut().unwrap().url_scheme = Some("HTTPS".into());
        let cfg = config_default();
        let info = ClusterInfo::new(&cluster, Some(&app), &cfg);
        assert_eq!(
            member_service_ports(&info, "spark-master")[0].name.as_deref(),
            Some("https-spark-web")
        );
    }

    #[test]
    fn drift_detection() {
        let cluster = cluster_spark();
        let app = app_spark();
        let cfg = config_default();
        let info = ClusterInfo::new(&cluster, Some(&app), &cfg);
        let desired = build_member_service(&info, &cluster.spec.roles[0], "pod-0", "s-pod-0").unwrap();
        let mut observed = desired.clone();
        // Server-populated fields are ignored.
        observed.spec.as_mut().unwrap().cluster_ip = Some("10.0.0.1".into());
        observed.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(30001);
        observed
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("user".into(), "x".into());
        assert!(!service_drifted(&desired, &observed));
        let mut edited = observed.clone();
        edited.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 1;
        assert!(service_drifted(&desired, &edited));
        let mut edited = observed.clone();
        edited.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        assert!(service_drifted(&desired, &edited));
        let mut edited = observed.clone();
        edited.metadata.owner_references = None;
        assert!(service_drifted(&desired, &edited));
        let mut edited = observed;
        edited.spec.as_mut().unwrap().selector = None;
        assert!(service_drifted(&desired, &edited));
    }

    #[test]
    fn type_change_rule() {
        assert!(type_change_needs_recreate("NodePort", "ClusterIP"));
        assert!(type_change_needs_recreate("LoadBalancer", "ClusterIP"));
        assert!(type_change_needs_recreate("NodePort", "LoadBalancer"));
        assert!(!type_change_needs_recreate("ClusterIP", "NodePort"));
        assert!(!type_change_needs_recreate("LoadBalancer", "NodePort"));
        assert!(!type_change_needs_recreate("ClusterIP", "LoadBalancer"));
    }
}
