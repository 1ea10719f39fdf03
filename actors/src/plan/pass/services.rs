//! Services (spec 3.8-3.9): the headless cluster service (step 9) and the per-member services
//! (step 12), re-created with their stored names when lost and repaired when they drift
//! (a service-type change that Kubernetes cannot apply in place is a delete, then a re-create).

use k8s_openapi::api::core::v1::Service;
use kubedirector_crds::cluster::RoleSpec;
use kubedirector_crds::wire::ANNOTATION_AUTH_TOKEN;

use super::super::names;
use super::super::objects::service::{
    build_headless_service, build_member_service, member_service_ports, service_drifted, service_repair,
    service_type, type_change_needs_recreate, NO_SERVICE,
};
use super::super::{Command, EventReason, NOT_OURS};
use super::members::REPLICA_STATES;
use super::orphans::{ours, owned_by, MAX_NAME_ATTEMPTS};
use super::Pass;

impl Pass<'_> {
    pub(super) fn choose_headless_name(&self) -> String {
        let mut name = String::new();
        for attempt in 0..MAX_NAME_ATTEMPTS {
            name = names::headless_service_name(
                self.info.naming_scheme,
                self.info.name(),
                self.info.uid(),
                attempt,
            );
            match self.obs.services.get(&name) {
                None => return name,
                Some(svc) if self.adoptable(&svc.metadata) => return name,
                Some(_) => {}
            }
        }
        name
    }

    pub(super) fn sync_headless_service(&mut self) -> Result<(), String> {
        let name = if self.status.cluster_service.is_empty() {
            self.choose_headless_name()
        } else {
            self.status.cluster_service.clone()
        };
        let desired = build_headless_service(&self.info, &name);
        match self.obs.services.get(&name) {
            None => {
                if !self.status.cluster_service.is_empty() {
                    self.normal(EventReason::Cluster, "re-creating missing cluster service");
                }
                self.commands.push(Command::EnsureHeadlessService(desired));
            }
            Some(svc) if svc.metadata.deletion_timestamp.is_some() => {
                // Being deleted: re-created (same name) once it is gone.
            }
            Some(svc) if !ours(&svc.metadata, self.info.uid(), self.info.name()) => {
                // Someone else's Service took the name: never written to.
                self.warning(
                    EventReason::Cluster,
                    format!("{NOT_OURS}: service{{{name}}} (cluster service)"),
                );
            }
            Some(svc) => {
                if service_drifted(&desired, svc) {
                    self.commands
                        .push(Command::EnsureHeadlessService(service_repair(svc, &desired)));
                }
            }
        }
        self.status.cluster_service = name.clone();
        self.info.cluster_service = name;
        Ok(())
    }

    pub(super) fn sync_member_services(&mut self) -> Result<(), String> {
        let default_spec = RoleSpec::default();
        for idx in 0..self.status.roles.len() {
            let role_id = self.status.roles[idx].id.clone();
            let spec = self.info.roles().iter().find(|r| r.id == role_id);
            let role_spec = spec.cloned().unwrap_or_else(|| RoleSpec {
                id: role_id.clone(),
                ..default_spec.clone()
            });
            let needs: Vec<usize> = self.status.roles[idx]
                .members
                .iter()
                .enumerate()
                .filter(|(_, m)| {
                    !m.pod.is_empty() && m.service != NO_SERVICE && REPLICA_STATES.contains(&m.state)
                })
                .map(|(i, _)| i)
                .collect();
            if needs.is_empty() {
                continue;
            }
            if self.info.app.is_none() {
                return Err("app referenced by cluster does not exist".to_owned());
            }
            let has_ports = !member_service_ports(&self.info, &role_id).is_empty();
            for mi in needs {
                let (pod, stored) = {
                    let m = &self.status.roles[idx].members[mi];
                    (m.pod.clone(), m.service.clone())
                };
                if !has_ports {
                    self.status.roles[idx].members[mi].service = NO_SERVICE.to_owned();
                    continue;
                }
                let name = if stored.is_empty() {
                    names::member_service_name(self.info.naming_scheme, &pod)
                } else {
                    stored.clone()
                };
                let Some(mut desired) = build_member_service(&self.info, &role_spec, &pod, &name) else {
                    continue;
                };
                if let Some(token) = self.auth_token_annotation(idx, mi) {
                    desired
                        .metadata
                        .annotations
                        .get_or_insert_with(Default::default)
                        .insert(ANNOTATION_AUTH_TOKEN.to_owned(), token);
                }
                match self.obs.services.get(&name) {
                    None => {
                        if !stored.is_empty() {
                            self.normal(
                                EventReason::Member,
                                format!(
                                    "re-creating missing service for member{{{pod}}} in role{{{role_id}}}"
                                ),
                            );
                        }
                        self.commands.push(Command::EnsureMemberService(desired));
                    }
                    Some(svc) if svc.metadata.deletion_timestamp.is_some() => {}
                    Some(svc) if stored.is_empty() && !owned_by(&svc.metadata, self.info.uid()) => {
                        self.warning(
                            EventReason::Member,
                            format!(
                                "failed to create member service for member{{{pod}}} in role{{{role_id}}}"
                            ),
                        );
                        return Err(format!(
                            "service {name} already exists and is not owned by this kdcluster"
                        ));
                    }
                    Some(svc) if !ours(&svc.metadata, self.info.uid(), self.info.name()) => {
                        self.warning(
                            EventReason::Member,
                            format!("{NOT_OURS}: service{{{name}}} of member{{{pod}}}"),
                        );
                    }
                    Some(svc) => self.repair_member_service(svc, desired),
                }
                self.status.roles[idx].members[mi].service = name;
            }
        }
        Ok(())
    }

    pub(super) fn repair_member_service(&mut self, observed: &Service, desired: Service) {
        let name = desired.metadata.name.clone().unwrap_or_default();
        let current = service_type(observed).to_owned();
        let wanted = service_type(&desired).to_owned();
        if current != wanted {
            self.normal(
                EventReason::Member,
                format!("modifying serviceType from {current} to {wanted} for service{{{name}}}"),
            );
            if type_change_needs_recreate(&current, &wanted) {
                self.normal(EventReason::Member, format!("deleting service {{{name}}}"));
                self.commands.push(Command::DeleteService { name });
            } else {
                self.commands
                    .push(Command::EnsureMemberService(service_repair(observed, &desired)));
            }
        } else if service_drifted(&desired, observed) {
            self.commands
                .push(Command::EnsureMemberService(service_repair(observed, &desired)));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::testing::*;
    use crate::plan::*;

    #[test]
    fn missing_headless_and_member_services_are_recreated_with_their_names() {
        let mut sim = configured_centos(1, false);
        let hs = sim.status().cluster_service.clone();
        let svc = members(&sim, "vanilla_centos")[0].service.clone();
        sim.obs.services.clear();
        let plan = sim.pass();
        let msgs = msgs(&plan);
        let pod = members(&sim, "vanilla_centos")[0].pod.clone();
        assert!(msgs.contains(&"re-creating missing cluster service".to_owned()));
        assert!(msgs.contains(&format!(
            "re-creating missing service for member{{{pod}}} in role{{vanilla_centos}}"
        )));
        let names: Vec<String> = plan
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::EnsureHeadlessService(s) | Command::EnsureMemberService(s) => {
                    s.metadata.name.clone()
                }
                _ => None,
            })
            .collect();
        assert_eq!(names, vec![hs, svc]);
        assert!(!plan.status_changed);
    }

    #[test]
    fn a_service_of_another_controller_is_left_alone_and_one_stripped_of_its_owner_repaired() {
        let mut sim = configured_centos(1, false);
        let svc = members(&sim, "vanilla_centos")[0].service.clone();
        let observed = sim.obs.services.get_mut(&svc).unwrap();
        let mut theirs = observed.metadata.owner_references.clone().unwrap();
        theirs[0].uid = "a-predecessor".into();
        observed.metadata.owner_references = Some(theirs);
        observed.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 2222;
        let plan = sim.pass();
        assert!(
            !plan.commands.iter().any(|c| matches!(c,
                Command::EnsureMemberService(s) if s.metadata.name.as_deref() == Some(svc.as_str()))
                || matches!(c, Command::DeleteService { name } if *name == svc)),
            "{:?}",
            plan.commands
        );
        assert!(msgs(&plan)
            .iter()
            .any(|m| m.starts_with(NOT_OURS) && m.contains(&svc)));
        // Labelled for the cluster, no controller: ours, owner reference restored.
        sim.obs.services.get_mut(&svc).unwrap().metadata.owner_references = None;
        let plan = sim.pass();
        assert!(plan.commands.iter().any(|c| matches!(c,
                    Command::EnsureMemberService(s) if s.metadata.name.as_deref() == Some(svc.as_str())
                        && s.metadata.owner_references.as_ref().is_some_and(|o| o.len() == 1)
        )));
    }

    #[test]
    fn service_type_change_to_cluster_ip_deletes_then_recreates() {
        let mut sim = configured_centos(1, false);
        let svc = members(&sim, "vanilla_centos")[0].service.clone();
        sim.obs.cluster.spec.service_type = Some(kubedirector_crds::cluster::ServiceType::ClusterIp);
        let plan = sim.pass();
        let msgs = msgs(&plan);
        assert!(msgs.contains(&format!(
            "modifying serviceType from LoadBalancer to ClusterIP for service{{{svc}}}"
        )));
        assert!(msgs.contains(&format!("deleting service {{{svc}}}")));
        assert!(plan
            .commands
            .contains(&Command::DeleteService { name: svc.clone() }));
        let plan = sim.pass();
        assert!(plan
            .commands
            .iter()
            .any(|c| matches!(c, Command::EnsureMemberService(s)
            if s.spec.clone().unwrap().type_.as_deref() == Some("ClusterIP"))));
        // ClusterIP -> NodePort is updated in place.
        sim.obs.cluster.spec.service_type = Some(kubedirector_crds::cluster::ServiceType::NodePort);
        let plan = sim.pass();
        assert!(!plan
            .commands
            .iter()
            .any(|c| matches!(c, Command::DeleteService { .. })));
        assert!(plan
            .commands
            .iter()
            .any(|c| matches!(c, Command::EnsureMemberService(_))));
    }
}
