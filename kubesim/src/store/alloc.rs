//! Service ClusterIP / NodePort allocation (the allocators of the real API server's service
//! storage), kept in the store's state so that allocation commits with the object.

use crate::error::{ApiError, Cause};
use crate::resources::ResourceInfo;
use crate::util::set_path;
use serde_json::{json, Value};
use std::collections::HashSet;

fn is(info: &ResourceInfo, group: &str, resource: &str) -> bool {
    info.group == group && info.resource == resource
}

/// Allocated service IPs and node ports.
#[derive(Debug, Default)]
pub struct Allocations {
    ips: HashSet<u32>,
    node_ports: HashSet<u16>,
}

const SVC_BASE: u32 = (10 << 24) | (96 << 16); // 10.96.0.0/12
const SVC_SIZE: u32 = 1 << 20;

fn ip_to_string(ip: u32) -> String {
    format!(
        "{}.{}.{}.{}",
        ip >> 24,
        (ip >> 16) & 255,
        (ip >> 8) & 255,
        ip & 255
    )
}

fn parse_ip(s: &str) -> Option<u32> {
    let parts: Vec<u32> = s
        .split('.')
        .map(|p| p.parse::<u32>().ok().filter(|n| *n < 256))
        .collect::<Option<_>>()?;
    if parts.len() != 4 {
        return None;
    }
    Some((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3])
}

/// Allocate ClusterIP / NodePorts for a new Service.
pub fn allocate(
    info: &ResourceInfo,
    obj: &mut Value,
    alloc: &mut Allocations,
    dry_run: bool,
) -> Result<(), ApiError> {
    if !is(info, "", "services") {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let t = obj["spec"]["type"].as_str().unwrap_or("ClusterIP").to_string();
    if t == "ExternalName" {
        return Ok(());
    }
    let ip = obj["spec"]["clusterIP"].as_str().unwrap_or_default().to_string();
    let mut new_ip = None;
    if ip == "None" {
        set_path(obj, &["spec", "clusterIPs"], json!(["None"]));
    } else if ip.is_empty() {
        let mut chosen = None;
        for _ in 0..10_000 {
            let cand = SVC_BASE + 10 + rand::random::<u32>() % (SVC_SIZE - 12);
            if !alloc.ips.contains(&cand) {
                chosen = Some(cand);
                break;
            }
        }
        let Some(c) = chosen else {
            return Err(ApiError::internal(
                "failed to allocate a serviceIP: range is full",
            ));
        };
        set_path(obj, &["spec", "clusterIP"], json!(ip_to_string(c)));
        set_path(obj, &["spec", "clusterIPs"], json!([ip_to_string(c)]));
        new_ip = Some(c);
    } else {
        let bad = |msg: &str| {
            ApiError::invalid(
                "",
                "Service",
                &name,
                vec![Cause::invalid(
                    "spec.clusterIPs",
                    &json!(format!("[]string{{{ip:?}}}")),
                    msg,
                )],
            )
        };
        let Some(n) = parse_ip(&ip) else {
            return Err(bad(
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        };
        if !(SVC_BASE..SVC_BASE + SVC_SIZE).contains(&n) {
            return Err(bad(&format!(
                "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is 10.96.0.0/12"
            )));
        }
        if alloc.ips.contains(&n) {
            return Err(bad(&format!(
                "failed to allocate IP {ip}: provided IP is already allocated"
            )));
        }
        new_ip = Some(n);
    }
    let mut new_ports = Vec::new();
    if t == "NodePort" || t == "LoadBalancer" {
        if let Some(ports) = obj["spec"].get_mut("ports").and_then(Value::as_array_mut) {
            for (i, p) in ports.iter_mut().enumerate().filter(|(_, p)| p.is_object()) {
                match p["nodePort"].as_i64().filter(|np| *np != 0) {
                    Some(np) => {
                        let field = format!("spec.ports[{i}].nodePort");
                        let invalid = |detail: &str| {
                            ApiError::invalid(
                                "",
                                "Service",
                                &name,
                                vec![Cause::invalid(&field, &json!(np), detail)],
                            )
                        };
                        // The API server validates the number as a port first (no 16-bit
                        // wrap-around), then the allocator checks the NodePort range.
                        let Some(np) = u16::try_from(np).ok().filter(|np| *np >= 1) else {
                            return Err(invalid("must be between 1 and 65535, inclusive"));
                        };
                        if !(30000..=32767).contains(&np) {
                            return Err(invalid(
                                "provided port is not in the valid range. The range of valid ports is 30000-32767",
                            ));
                        }
                        if alloc.node_ports.contains(&np) || new_ports.contains(&np) {
                            return Err(invalid("provided port is already allocated"));
                        }
                        new_ports.push(np);
                    }
                    None => {
                        let mut chosen = None;
                        for _ in 0..100_000 {
                            let c = 30000 + (rand::random::<u16>() % 2768);
                            if !alloc.node_ports.contains(&c) && !new_ports.contains(&c) {
                                chosen = Some(c);
                                break;
                            }
                        }
                        let Some(c) = chosen else {
                            return Err(ApiError::internal("failed to allocate a nodePort: range is full"));
                        };
                        p["nodePort"] = json!(c);
                        new_ports.push(c);
                    }
                }
            }
        }
    }
    if !dry_run {
        if let Some(n) = new_ip {
            alloc.ips.insert(n);
        }
        alloc.node_ports.extend(new_ports);
    }
    Ok(())
}

/// Free what a deleted object held.
pub fn release(info: &ResourceInfo, obj: &Value, alloc: &mut Allocations) {
    if !is(info, "", "services") {
        return;
    }
    if let Some(ip) = obj["spec"]["clusterIP"].as_str().and_then(parse_ip) {
        alloc.ips.remove(&ip);
    }
    if let Some(ports) = obj["spec"]["ports"].as_array() {
        for p in ports {
            if let Some(np) = p["nodePort"].as_u64().and_then(|np| u16::try_from(np).ok()) {
                alloc.node_ports.remove(&np);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Registry, ResourceKey};

    #[test]
    fn service_ip_allocation_and_conflict() {
        let reg = Registry::with_builtins();
        let info = reg.get(&ResourceKey::core("services")).unwrap();
        let mut alloc = Allocations::default();
        let mut a = json!({"metadata":{"name":"a"},"spec":{"type":"NodePort","ports":[{"port":80}]}});
        allocate(&info, &mut a, &mut alloc, false).unwrap();
        let ip = parse_ip(a["spec"]["clusterIP"].as_str().unwrap()).unwrap();
        assert!((SVC_BASE..SVC_BASE + SVC_SIZE).contains(&ip));
        let np = a["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        assert!((30000..=32767).contains(&np));
        let mut b = json!({"metadata":{"name":"b"},"spec":{"clusterIP": a["spec"]["clusterIP"].clone(),"ports":[{"port":80}]}});
        let e = allocate(&info, &mut b, &mut alloc, false).unwrap_err();
        assert_eq!(e.code, 422);
        release(&info, &a, &mut alloc);
        allocate(&info, &mut b, &mut alloc, false).unwrap();
    }

    #[test]
    fn node_ports_outside_16_bits_or_the_range_are_rejected_not_wrapped() {
        let reg = Registry::with_builtins();
        let info = reg.get(&ResourceKey::core("services")).unwrap();
        let mut alloc = Allocations::default();
        let svc = |np: i64| json!({"metadata":{"name":"s"},"spec":{"type":"NodePort","ports":[{"port":80,"nodePort":np}]}});
        // 95536 wraps to 30000 in 16 bits: it must be refused as a port number instead.
        for (np, detail) in [
            (95536, "must be between 1 and 65535, inclusive"),
            (-1, "must be between 1 and 65535, inclusive"),
            (
                8080,
                "provided port is not in the valid range. The range of valid ports is 30000-32767",
            ),
        ] {
            let e = allocate(&info, &mut svc(np), &mut alloc, false).unwrap_err();
            assert_eq!(e.code, 422, "{np}");
            assert_eq!(
                e.message,
                format!("Service \"s\" is invalid: spec.ports[0].nodePort: Invalid value: {np}: {detail}")
            );
        }
        assert!(alloc.node_ports.is_empty());
        let mut ok = svc(30000);
        allocate(&info, &mut ok, &mut alloc, false).unwrap();
        let e = allocate(&info, &mut svc(30000), &mut alloc, false).unwrap_err();
        assert!(
            e.message.ends_with("provided port is already allocated"),
            "{}",
            e.message
        );
    }
}
