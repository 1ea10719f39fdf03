//! Generated object names (spec 5.3) and member DNS names (spec 3.8, 4.2).
//!
//! Upstream lets the API server pick the 5-character suffix of StatefulSet and headless-Service
//! names (`generateName`). We keep exactly the same wire shape but derive the suffix
//! **deterministically** from (kdcluster uid, role id or `"headless"`, attempt counter), mapped
//! into Kubernetes' own `generateName` alphabet. A create that is retried after a crash (before
//! the name reached the status) therefore targets the same name, gets `AlreadyExists`, and the
//! existing object is adopted instead of being duplicated. The attempt counter only moves on when
//! the name is taken by an object we cannot adopt (another owner, or one being deleted). Names
//! already stored in the status are always reused.
//!
//! The fixed prefixes of the scheme are wire constants ([`kubedirector_crds::wire`]).

use kubedirector_crds::wire::{
    BLOCK_PVC_PREFIX, PREFIX_HEADLESS_SERVICE, PREFIX_MEMBER_SERVICE, PREFIX_STATEFULSET,
};

/// Kubernetes' `generateName` alphabet (`k8s.io/apimachinery/pkg/util/rand`): no vowels, no
/// characters that look alike.
pub const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Length of the generated suffix, as with `generateName`.
pub const SUFFIX_LEN: usize = 5;

/// Key used instead of a role id when naming the headless cluster service.
pub const HEADLESS_KEY: &str = "headless";

/// Maximum number of characters of a name kept by [`mung`].
pub const MUNG_MAX: usize = 46;

/// Naming scheme of generated objects (kdcluster `spec.namingScheme`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NamingScheme {
    /// `UID` (the default): `kdss-xxxxx`, `kdhs-xxxxx`, `s-<pod>`.
    #[default]
    Uid,
    /// `CrNameRole`: `<cluster>-<role>-xxxxx`, `<cluster>xxxxx`, `<pod>`.
    CrNameRole,
}

impl NamingScheme {
    /// Parses the wire value; anything but `CrNameRole` (including absent) is the default `UID`
    /// (spec 7 R21: objects that bypassed the webhook get the webhook's default).
    pub fn from_wire(value: Option<&str>) -> Self {
        match value {
            Some("CrNameRole") => NamingScheme::CrNameRole,
            _ => NamingScheme::Uid,
        }
    }
}

/// Upstream's `MungObjectName`: keep at most the first 46 characters, lowercase them, replace `.`
/// and `_` with `-`; a `.` or `_` in the 46th position is dropped (whether or not the name was
/// longer: upstream checks the index, not the truncation).
pub fn mung(name: &str) -> String {
    name.chars()
        .take(MUNG_MAX)
        .enumerate()
        .filter(|(i, c)| !(*i == MUNG_MAX - 1 && matches!(c, '.' | '_')))
        .flat_map(|(_, c)| c.to_lowercase())
        .map(|c| if c == '.' || c == '_' { '-' } else { c })
        .collect()
}

/// 64-bit FNV-1a followed by the splitmix64 finalizer: small, dependency-free, and stable across
/// releases (the names it produces are persisted, so the function must never change).
fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // Field separator that cannot occur in uids/role ids.
            h ^= 0x1f;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The deterministic 5-character suffix for (kdcluster uid, role id or [`HEADLESS_KEY`],
/// attempt).
pub fn suffix(cluster_uid: &str, key: &str, attempt: u32) -> String {
    let attempt = attempt.to_string();
    let mut h = stable_hash(&[cluster_uid, key, &attempt]);
    let base = SUFFIX_ALPHABET.len() as u64;
    let mut out = String::with_capacity(SUFFIX_LEN);
    for _ in 0..SUFFIX_LEN {
        let idx = usize::try_from(h % base).unwrap_or(0);
        out.push(char::from(SUFFIX_ALPHABET.get(idx).copied().unwrap_or(b'b')));
        h /= base;
    }
    out
}

/// StatefulSet name for a role: `kdss-<suffix>` (`UID`) or `mung(<cluster>-<role>)-<suffix>`
/// (`CrNameRole`).
pub fn statefulset_name(
    scheme: NamingScheme,
    cluster_name: &str,
    cluster_uid: &str,
    role_id: &str,
    attempt: u32,
) -> String {
    let sfx = suffix(cluster_uid, role_id, attempt);
    match scheme {
        NamingScheme::Uid => format!("{PREFIX_STATEFULSET}{sfx}"),
        NamingScheme::CrNameRole => format!("{}-{sfx}", mung(&format!("{cluster_name}-{role_id}"))),
    }
}

/// Headless cluster service name: `kdhs-<suffix>` (`UID`) or `mung(<cluster>)<suffix>` (no dash,
/// `CrNameRole`).
pub fn headless_service_name(
    scheme: NamingScheme,
    cluster_name: &str,
    cluster_uid: &str,
    attempt: u32,
) -> String {
    let sfx = suffix(cluster_uid, HEADLESS_KEY, attempt);
    match scheme {
        NamingScheme::Uid => format!("{PREFIX_HEADLESS_SERVICE}{sfx}"),
        NamingScheme::CrNameRole => format!("{}{sfx}", mung(cluster_name)),
    }
}

/// Pod name of a member: `<statefulSet>-<ordinal>`.
pub fn pod_name(statefulset: &str, ordinal: usize) -> String {
    format!("{statefulset}-{ordinal}")
}

/// Ordinal of a pod name `<statefulSet>-<ordinal>`, if it has that shape.
pub fn pod_ordinal(statefulset: &str, pod: &str) -> Option<usize> {
    pod.strip_prefix(statefulset)?.strip_prefix('-')?.parse().ok()
}

/// Per-member service name: `s-<pod>` (`UID`) or `<pod>` (`CrNameRole`).
pub fn member_service_name(scheme: NamingScheme, pod: &str) -> String {
    match scheme {
        NamingScheme::Uid => format!("{PREFIX_MEMBER_SERVICE}{pod}"),
        NamingScheme::CrNameRole => pod.to_owned(),
    }
}

/// Name of the volume claim template for member storage.
pub use kubedirector_crds::wire::PVC_TEMPLATE;

/// Filesystem PVC of a member: `p-<pod>`.
pub fn pvc_name(pod: &str) -> String {
    format!("{PVC_TEMPLATE}-{pod}")
}

/// Name of the `i`-th block volume claim template / pod volume: `b<i>`.
pub fn block_template_name(index: usize) -> String {
    format!("{BLOCK_PVC_PREFIX}{index}")
}

/// `i`-th block PVC of a member: `b<i>-<pod>`.
pub fn block_pvc_name(index: usize, pod: &str) -> String {
    format!("{BLOCK_PVC_PREFIX}{index}-{pod}")
}

/// Block device path `<pathPrefix><i>`.
pub fn block_device_path(path_prefix: &str, index: usize) -> String {
    format!("{path_prefix}{index}")
}

/// Cluster DNS domain `<clusterService>.<namespace><clusterSvcDomainBase>` (spec 4.2).
pub fn domain(cluster_service: &str, namespace: &str, svc_domain_base: &str) -> String {
    format!("{cluster_service}.{namespace}{svc_domain_base}")
}

/// Member FQDN `<pod>.<clusterService>.<namespace><clusterSvcDomainBase>` (spec 3.8).
pub fn fqdn(pod: &str, cluster_service: &str, namespace: &str, svc_domain_base: &str) -> String {
    format!("{pod}.{}", domain(cluster_service, namespace, svc_domain_base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mung_lowercases_and_replaces_dots_and_underscores() {
        assert_eq!(mung("My.Cluster_Name"), "my-cluster-name");
    }

    #[test]
    fn mung_truncates_to_46_characters() {
        let long = "a".repeat(60);
        assert_eq!(mung(&long).len(), 46);
        let exact = "b".repeat(46);
        assert_eq!(mung(&exact), exact);
    }

    #[test]
    fn mung_drops_separator_in_46th_position_of_truncated_name() {
        let name = format!("{}_{}", "a".repeat(45), "tail");
        assert_eq!(mung(&name), "a".repeat(45));
        let dotted = format!("{}.{}", "a".repeat(45), "tail");
        assert_eq!(mung(&dotted), "a".repeat(45));
        // Exactly 46 characters (not truncated): the separator in position 46 is still dropped
        // (upstream tests the index, spec 3.7 / 5.3).
        let exact = format!("{}_", "a".repeat(45));
        assert_eq!(mung(&exact), "a".repeat(45));
        let exact_dot = format!("{}.", "B".repeat(45));
        assert_eq!(mung(&exact_dot), "b".repeat(45));
        // A separator before position 46 becomes a dash.
        let early = format!("{}_{}", "a".repeat(44), "b");
        assert_eq!(mung(&early), format!("{}-b", "a".repeat(44)));
        // Not truncated: a trailing underscore becomes a dash.
        assert_eq!(mung("abc_"), "abc-");
    }

    #[test]
    fn suffix_uses_generate_name_alphabet_and_length() {
        for attempt in 0..50 {
            let s = suffix("0b6f2c1e-uid", "worker", attempt);
            assert_eq!(s.len(), SUFFIX_LEN);
            assert!(s.bytes().all(|b| SUFFIX_ALPHABET.contains(&b)), "{s}");
        }
    }

    #[test]
    fn suffix_is_deterministic_and_depends_on_every_input() {
        let a = suffix("uid-1", "worker", 0);
        assert_eq!(a, suffix("uid-1", "worker", 0));
        assert_ne!(a, suffix("uid-2", "worker", 0));
        assert_ne!(a, suffix("uid-1", "master", 0));
        assert_ne!(a, suffix("uid-1", "worker", 1));
        // Field boundaries matter.
        assert_ne!(suffix("ab", "c", 0), suffix("a", "bc", 0));
    }

    #[test]
    fn uid_scheme_names() {
        let sts = statefulset_name(NamingScheme::Uid, "c1", "u", "worker", 0);
        assert!(sts.starts_with("kdss-"));
        assert_eq!(sts.len(), 10);
        let hs = headless_service_name(NamingScheme::Uid, "c1", "u", 0);
        assert!(hs.starts_with("kdhs-"));
        assert_eq!(hs.len(), 10);
        assert_eq!(
            member_service_name(NamingScheme::Uid, "kdss-abcde-0"),
            "s-kdss-abcde-0"
        );
    }

    #[test]
    fn crnamerole_scheme_names() {
        let sts = statefulset_name(NamingScheme::CrNameRole, "My.Spark", "u", "Worker_1", 0);
        let sfx = suffix("u", "Worker_1", 0);
        assert_eq!(sts, format!("my-spark-worker-1-{sfx}"));
        let hs = headless_service_name(NamingScheme::CrNameRole, "My.Spark", "u", 0);
        assert_eq!(hs, format!("my-spark{}", suffix("u", HEADLESS_KEY, 0)));
        assert_eq!(
            member_service_name(NamingScheme::CrNameRole, "my-spark-worker-1-abcde-0"),
            "my-spark-worker-1-abcde-0"
        );
    }

    #[test]
    fn naming_scheme_defaults_to_uid() {
        assert_eq!(NamingScheme::from_wire(None), NamingScheme::Uid);
        assert_eq!(NamingScheme::from_wire(Some("bogus")), NamingScheme::Uid);
        assert_eq!(NamingScheme::from_wire(Some("UID")), NamingScheme::Uid);
        assert_eq!(
            NamingScheme::from_wire(Some("CrNameRole")),
            NamingScheme::CrNameRole
        );
    }

    #[test]
    fn member_object_names() {
        assert_eq!(pod_name("kdss-abcde", 3), "kdss-abcde-3");
        assert_eq!(pod_ordinal("kdss-abcde", "kdss-abcde-3"), Some(3));
        assert_eq!(pod_ordinal("kdss-abcde", "kdss-abcdf-3"), None);
        assert_eq!(pvc_name("kdss-abcde-0"), "p-kdss-abcde-0");
        assert_eq!(block_pvc_name(2, "kdss-abcde-0"), "b2-kdss-abcde-0");
        assert_eq!(block_template_name(1), "b1");
        assert_eq!(block_device_path("/dev/xvd", 1), "/dev/xvd1");
    }

    #[test]
    fn fqdn_and_domain() {
        assert_eq!(
            domain("kdhs-x7k2p", "default", ".svc.cluster.local"),
            "kdhs-x7k2p.default.svc.cluster.local"
        );
        assert_eq!(
            fqdn("kdss-abcde-0", "kdhs-x7k2p", "ns1", ".svc.cluster.local"),
            "kdss-abcde-0.kdhs-x7k2p.ns1.svc.cluster.local"
        );
    }
}
