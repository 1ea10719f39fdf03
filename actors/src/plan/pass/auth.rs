//! Service auth tokens (spec 4.2, 3.9, feature F71).
//!
//! For a role with a `hasAuthToken` service, every intended member without an `authToken` gets
//! one: 32 lowercase hex characters, the MD5 of a random string (upstream hashes a random UUID;
//! here the random part is [`PlanContext::auth_token_seed`](crate::plan::PlanContext), a fresh
//! UUIDv4 per pass, combined with the pod name so members created in the same pass differ). The
//! token is kept in the member status, so it is stable across passes and operator restarts, and
//! mirrored into annotation `kubedirector.hpe.com/kd-auth-token` of the member's Service.
//!
//! Differences from upstream (spec 7 R2, R10): tokens are assigned in the pass, before member
//! services are synced, instead of inside configmeta generation with a blocking annotation-write
//! retry loop (up to ~2.3 h of sleeping in a worker); the annotation is part of the member
//! Service's desired state, so a lost write is repaired by drift correction like any other field.

use md5::{Digest as _, Md5};

use kubedirector_crds::app::KubeDirectorApp;

use super::super::config::configmeta::INTENDED_STATES;
use super::Pass;

/// The token for `pod` drawn from the pass's random `seed`: MD5 hex of `<seed>/<pod>`.
pub fn auth_token(seed: &str, pod: &str) -> String {
    let mut h = Md5::new();
    h.update(seed.as_bytes());
    h.update(b"/");
    h.update(pod.as_bytes());
    hex::encode(h.finalize())
}

/// Whether some service assigned to `role_id` has `endpoint.hasAuthToken`.
pub fn role_has_auth_token(app: &KubeDirectorApp, role_id: &str) -> bool {
    app.spec.role_services(role_id).iter().any(|s| {
        s.endpoint
            .as_ref()
            .and_then(|e| e.has_auth_token)
            .unwrap_or(false)
    })
}

impl Pass<'_> {
    /// Gives every intended member of a role with a `hasAuthToken` service a token (spec 4.2).
    pub(super) fn assign_auth_tokens(&mut self) {
        let Some(app) = self.info.app else { return };
        for role in &mut self.status.roles {
            if !role_has_auth_token(app, &role.id) {
                continue;
            }
            for m in &mut role.members {
                if m.pod.is_empty()
                    || !INTENDED_STATES.contains(&m.state)
                    || m.auth_token.as_deref().is_some_and(|t| !t.is_empty())
                {
                    continue;
                }
                m.auth_token = Some(auth_token(&self.auth_token_seed, &m.pod));
            }
        }
    }

    /// The member Service annotation value for member `mi` of role status `idx` (spec 3.9):
    /// its token when the role has a `hasAuthToken` service.
    pub(super) fn auth_token_annotation(&self, idx: usize, mi: usize) -> Option<String> {
        let app = self.info.app?;
        let role = self.status.roles.get(idx)?;
        if !role_has_auth_token(app, &role.id) {
            return None;
        }
        role.members.get(mi)?.auth_token.clone().filter(|t| !t.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testing::*;
    use crate::plan::*;
    use kubedirector_crds::wire::ANNOTATION_AUTH_TOKEN;

    fn app_with_token() -> kubedirector_crds::app::KubeDirectorApp {
        let mut app = app_centos();
        app.spec.services[0].endpoint.as_mut().unwrap().has_auth_token = Some(true);
        app
    }

    #[test]
    fn token_is_32_lowercase_hex_and_depends_on_seed_and_pod() {
        let t = auth_token("seed", "pod-0");
        assert_eq!(t.len(), 32);
        assert!(t
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(t, auth_token("seed", "pod-1"));
        assert_ne!(t, auth_token("other", "pod-0"));
        assert_eq!(t, auth_token("seed", "pod-0"));
    }

    #[test]
    fn members_of_a_token_role_get_stable_distinct_tokens_mirrored_on_their_services() {
        let mut sim = Sim::new(cluster_centos(2), app_with_token());
        sim.converge(20);
        let ms = members(&sim, "vanilla_centos");
        let tokens: Vec<String> = ms.iter().map(|m| m.auth_token.clone().unwrap()).collect();
        assert_eq!(tokens.len(), 2);
        assert_ne!(tokens[0], tokens[1]);
        for (m, t) in ms.iter().zip(&tokens) {
            assert_eq!(t.len(), 32);
            let svc = &sim.obs.services[&m.service];
            assert_eq!(
                svc.metadata.annotations.as_ref().unwrap()[ANNOTATION_AUTH_TOKEN],
                *t
            );
        }
        // Further passes (each with a new seed) and a scale-up keep the existing tokens.
        sim.set_members("vanilla_centos", 3);
        sim.converge(20);
        let after = members(&sim, "vanilla_centos");
        assert_eq!(after.len(), 3);
        assert_eq!(after[0].auth_token.as_ref(), Some(&tokens[0]));
        assert_eq!(after[1].auth_token.as_ref(), Some(&tokens[1]));
        assert!(after[2].auth_token.as_ref().is_some_and(|t| t.len() == 32));
    }

    #[test]
    fn a_lost_service_annotation_is_restored() {
        let mut sim = Sim::new(cluster_centos(1), app_with_token());
        sim.converge(20);
        let m = members(&sim, "vanilla_centos")[0].clone();
        sim.obs
            .services
            .get_mut(&m.service)
            .unwrap()
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(ANNOTATION_AUTH_TOKEN);
        let plan = sim.pass();
        let fixed = plan.commands.iter().any(|c| {
            matches!(c, Command::EnsureMemberService(s)
                if s.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_AUTH_TOKEN)) == m.auth_token.as_ref())
        });
        assert!(fixed, "{:?}", plan.commands);
    }

    #[test]
    fn roles_without_token_services_get_no_token() {
        let mut sim = Sim::new(cluster_centos(1), app_centos());
        sim.converge(20);
        let m = &members(&sim, "vanilla_centos")[0];
        assert_eq!(m.auth_token, None);
        let svc = &sim.obs.services[&m.service];
        assert!(svc
            .metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key(ANNOTATION_AUTH_TOKEN)));
    }
}
