//! The webhook's certificates: a CA and a serving certificate kept in one Secret (the source of
//! truth every replica agrees on), and the pure rotation plan.
//!
//! Secret data keys (upstream used the first three, spec 2.1):
//! - `ca.crt`: the trust bundle published as the webhook configurations' `caBundle` (one CA, or
//!   two during a CA rollover: the old one stays until it expires);
//! - `app.crt` / `app.pem`: the serving certificate and its key;
//! - `ca.key`: the key of the newest CA (the last one in `ca.crt`), to sign renewed serving
//!   certificates (upstream never renewed, so it did not keep it);
//! - `app.ca`: the CA certificate that signed `app.crt`.
//!
//! Rotation ([`next`]): the serving certificate is re-issued once less than a third of its
//! lifetime is left; the CA is rolled over the same way, in two steps so that no API server ever
//! sees a certificate it cannot verify: first the new CA is *added* to the bundle (and
//! published), then, once the published `caBundle` carries it, the serving certificate is
//! re-issued by the new CA. Expired CAs leave the bundle.

use std::collections::BTreeMap;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use time::{Duration as TimeDuration, OffsetDateTime};

/// Common name of every generated CA (as upstream).
pub const CA_COMMON_NAME: &str = "kubedirector-validator-ca";
/// Clock-skew allowance: certificates are valid from this long before their creation.
const BACKDATE: TimeDuration = TimeDuration::minutes(5);

/// Errors building or reading certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM document could not be read.
    #[error("invalid certificate in the webhook secret: {0}")]
    Parse(String),
    /// A key is missing from the Secret.
    #[error("webhook secret lacks key {0}")]
    Missing(&'static str),
}

/// Validity settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Lifetime of a serving certificate.
    pub serving: std::time::Duration,
    /// Lifetime of a CA.
    pub ca: std::time::Duration,
}

/// The content of the webhook Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertBundle {
    /// Trusted CA certificates (PEM, oldest first); the last one is the signing CA.
    pub trust: Vec<String>,
    /// Key of the signing CA (PEM).
    pub ca_key: String,
    /// Serving certificate (PEM).
    pub cert: String,
    /// Serving key (PEM, PKCS#8).
    pub key: String,
    /// The CA certificate that signed `cert` (PEM).
    pub cert_ca: String,
}

/// What [`next`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to change.
    Keep,
    /// Store this new content (the reason is logged).
    Write(Box<CertBundle>, &'static str),
}

fn to_time(t: std::time::SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

fn duration(d: std::time::Duration) -> TimeDuration {
    TimeDuration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2).max(1))
}

/// A new self-signed CA valid for `validity` from `now`: (certificate PEM, key PEM).
pub fn new_ca(
    now: std::time::SystemTime,
    validity: std::time::Duration,
) -> Result<(String, String), CertError> {
    let key = KeyPair::generate()?;
    let params = ca_params(to_time(now), duration(validity))?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn ca_params(now: OffsetDateTime, validity: TimeDuration) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    Ok(params)
}

/// The DNS names of the serving certificate: `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc` (as
/// upstream), plus `extra` (the host of an explicit webhook URL).
pub fn serving_hosts(service: &str, namespace: &str, extra: &[String]) -> Vec<String> {
    let mut hosts = vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
    ];
    for h in extra {
        if !hosts.contains(h) {
            hosts.push(h.clone());
        }
    }
    hosts
}

/// A serving certificate for `hosts` signed by the CA (`ca_cert`, `ca_key`), valid for
/// `validity` but never beyond the CA: (certificate PEM, key PEM).
pub fn issue_serving(
    ca_cert: &str,
    ca_key: &str,
    hosts: &[String],
    now: std::time::SystemTime,
    validity: std::time::Duration,
) -> Result<(String, String), CertError> {
    let ca_key = KeyPair::from_pem(ca_key)?;
    let ca_not_after = not_after(ca_cert)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert, &ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(hosts.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        hosts.get(2).or(hosts.first()).cloned().unwrap_or_default(),
    );
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = to_time(now);
    params.not_before = now - BACKDATE;
    params.not_after = (now + duration(validity)).min(ca_not_after);
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// `notAfter` of a PEM certificate.
pub fn not_after(pem: &str) -> Result<OffsetDateTime, CertError> {
    let (_, doc) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| CertError::Parse(e.to_string()))?;
    let cert = doc.parse_x509().map_err(|e| CertError::Parse(e.to_string()))?;
    OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
        .map_err(|e| CertError::Parse(e.to_string()))
}

/// The DNS names and IP addresses (as text) of a PEM certificate.
pub fn dns_names(pem: &str) -> Result<Vec<String>, CertError> {
    let (_, doc) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| CertError::Parse(e.to_string()))?;
    let cert = doc.parse_x509().map_err(|e| CertError::Parse(e.to_string()))?;
    let names = cert
        .subject_alternative_name()
        .map_err(|e| CertError::Parse(e.to_string()))?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_string()),
                    x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                        4 => <[u8; 4]>::try_from(*ip)
                            .ok()
                            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
                        16 => <[u8; 16]>::try_from(*ip)
                            .ok()
                            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(names)
}

/// Splits a PEM bundle into its certificates.
pub fn split_pem(bundle: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    bundle
        .split_inclusive(END)
        .map(str::trim)
        .filter(|c| c.contains("-----BEGIN CERTIFICATE-----"))
        .map(|c| format!("{c}\n"))
        .collect()
}

/// A brand-new bundle: one CA and a serving certificate it signed.
pub fn fresh(
    hosts: &[String],
    now: std::time::SystemTime,
    lifetimes: Lifetimes,
) -> Result<CertBundle, CertError> {
    let (ca, ca_key) = new_ca(now, lifetimes.ca)?;
    let (cert, key) = issue_serving(&ca, &ca_key, hosts, now, lifetimes.serving)?;
    Ok(CertBundle {
        trust: vec![ca.clone()],
        ca_key,
        cert,
        key,
        cert_ca: ca,
    })
}

fn due(pem: &str, lifetime: std::time::Duration, now: OffsetDateTime) -> bool {
    match not_after(pem) {
        Ok(end) => end - now < duration(lifetime) / 3,
        Err(_) => true,
    }
}

/// The next content of the Secret. `published` says whether the webhook configurations already
/// carry exactly `current.trust` as their `caBundle` (the second step of a CA rollover waits
/// for it).
pub fn next(
    current: &CertBundle,
    hosts: &[String],
    now: std::time::SystemTime,
    lifetimes: Lifetimes,
    published: bool,
) -> Result<Step, CertError> {
    let t = to_time(now);
    let Some(signing) = current.trust.last() else {
        return Ok(Step::Write(
            Box::new(fresh(hosts, now, lifetimes)?),
            "no CA in the secret",
        ));
    };
    let alive: Vec<String> = current
        .trust
        .iter()
        .filter(|c| not_after(c).is_ok_and(|end| end > t))
        .cloned()
        .collect();
    if alive.len() != current.trust.len() && !alive.is_empty() && alive.contains(&current.cert_ca) {
        let mut b = current.clone();
        b.trust = alive;
        return Ok(Step::Write(Box::new(b), "dropping expired CA from the bundle"));
    }
    if due(signing, lifetimes.ca, t) || alive.is_empty() {
        let (ca, ca_key) = new_ca(now, lifetimes.ca)?;
        let mut b = current.clone();
        if !alive.contains(&current.cert_ca) {
            // The serving certificate's CA is gone: nothing to keep, start over.
            return Ok(Step::Write(Box::new(fresh(hosts, now, lifetimes)?), "CA expired"));
        }
        b.trust = alive;
        b.trust.push(ca);
        b.ca_key = ca_key;
        return Ok(Step::Write(
            Box::new(b),
            "CA rollover: new CA added to the bundle",
        ));
    }
    let wrong_hosts = dns_names(&current.cert).map_or(true, |names| names != hosts);
    let old_issuer = &current.cert_ca != signing;
    if old_issuer && !published {
        // Mid-rollover: only the new CA's key is kept, and an API server may not trust that CA
        // yet. The current certificate (still valid: the rollover starts with a third of the CA's
        // life left) is served until the bundle is published.
        return Ok(Step::Keep);
    }
    if due(&current.cert, lifetimes.serving, t) || wrong_hosts || (old_issuer && published) {
        let (cert, key) = issue_serving(signing, &current.ca_key, hosts, now, lifetimes.serving)?;
        let mut b = current.clone();
        b.cert = cert;
        b.key = key;
        b.cert_ca = signing.clone();
        let why = if old_issuer {
            "CA rollover: serving certificate re-issued by the new CA"
        } else if wrong_hosts {
            "serving certificate names changed"
        } else {
            "serving certificate renewal"
        };
        return Ok(Step::Write(Box::new(b), why));
    }
    Ok(Step::Keep)
}

impl CertBundle {
    /// The trust bundle as one PEM string (the `caBundle`).
    pub fn trust_pem(&self) -> String {
        self.trust.concat()
    }

    /// Secret `data` (string values; the caller base64-encodes).
    pub fn to_data(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("ca.crt".to_string(), self.trust_pem()),
            ("ca.key".to_string(), self.ca_key.clone()),
            ("app.crt".to_string(), self.cert.clone()),
            ("app.pem".to_string(), self.key.clone()),
            ("app.ca".to_string(), self.cert_ca.clone()),
        ])
    }

    /// Reads Secret `data`.
    pub fn from_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, CertError> {
        let get = |k: &'static str| {
            data.get(k)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .ok_or(CertError::Missing(k))
        };
        let trust = split_pem(&get("ca.crt")?);
        let cert_ca = match data.get("app.ca") {
            Some(v) => String::from_utf8_lossy(v).into_owned(),
            None => trust.last().cloned().unwrap_or_default(),
        };
        Ok(Self {
            trust,
            ca_key: get("ca.key")?,
            cert: get("app.crt")?,
            key: get("app.pem")?,
            cert_ca,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn hosts() -> Vec<String> {
        serving_hosts("kubedirector-validator", "kd", &[])
    }

    fn lifetimes() -> Lifetimes {
        Lifetimes {
            serving: Duration::from_secs(3000),
            ca: Duration::from_secs(30000),
        }
    }

    #[test]
    fn fresh_bundle_has_upstream_names_and_round_trips_through_secret_data() {
        let now = SystemTime::now();
        let b = fresh(&hosts(), now, lifetimes()).unwrap();
        assert_eq!(
            dns_names(&b.cert).unwrap(),
            vec![
                "kubedirector-validator",
                "kubedirector-validator.kd",
                "kubedirector-validator.kd.svc"
            ]
        );
        let data = b
            .to_data()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        assert_eq!(CertBundle::from_data(&data).unwrap(), b);
        assert_eq!(next(&b, &hosts(), now, lifetimes(), true).unwrap(), Step::Keep);
    }

    #[test]
    fn serving_certificate_is_renewed_in_the_last_third_of_its_life() {
        let now = SystemTime::now();
        let b = fresh(&hosts(), now, lifetimes()).unwrap();
        let later = now + Duration::from_secs(2100);
        let Step::Write(renewed, why) = next(&b, &hosts(), later, lifetimes(), true).unwrap() else {
            panic!("expected a renewal");
        };
        assert_eq!(why, "serving certificate renewal");
        assert_eq!(renewed.trust, b.trust, "same CA");
        assert_ne!(renewed.cert, b.cert);
        assert!(not_after(&renewed.cert).unwrap() > not_after(&b.cert).unwrap());
    }

    #[test]
    fn ca_rollover_adds_the_new_ca_first_and_switches_the_serving_cert_once_published() {
        let now = SystemTime::now();
        let b = fresh(&hosts(), now, lifetimes()).unwrap();
        let later = now + Duration::from_secs(21000);
        let Step::Write(step1, _) = next(&b, &hosts(), later, lifetimes(), true).unwrap() else {
            panic!("expected the CA rollover");
        };
        assert_eq!(step1.trust.len(), 2);
        assert_eq!(step1.trust[0], b.trust[0]);
        assert_eq!(step1.cert, b.cert, "serving cert unchanged in step 1");
        // Not yet published: wait.
        assert_eq!(
            next(&step1, &hosts(), later, lifetimes(), false).unwrap(),
            Step::Keep
        );
        let Step::Write(step2, why) = next(&step1, &hosts(), later, lifetimes(), true).unwrap() else {
            panic!("expected the re-issue");
        };
        assert_eq!(why, "CA rollover: serving certificate re-issued by the new CA");
        assert_eq!(step2.cert_ca, step1.trust[1]);
        assert_eq!(step2.trust.len(), 2, "old CA kept while it is valid");
        // After the old CA expired it leaves the bundle.
        let much_later = now + Duration::from_secs(30500);
        let Step::Write(step3, why) = next(&step2, &hosts(), much_later, lifetimes(), true).unwrap() else {
            panic!("expected pruning");
        };
        assert_eq!(why, "dropping expired CA from the bundle");
        assert_eq!(step3.trust, vec![step1.trust[1].clone()]);
    }

    #[test]
    fn changed_host_names_reissue_and_pem_bundles_split() {
        let now = SystemTime::now();
        let b = fresh(&hosts(), now, lifetimes()).unwrap();
        let more = serving_hosts("kubedirector-validator", "kd", &["localhost".into()]);
        let Step::Write(w, why) = next(&b, &more, now, lifetimes(), true).unwrap() else {
            panic!("expected a re-issue");
        };
        assert_eq!(why, "serving certificate names changed");
        assert_eq!(dns_names(&w.cert).unwrap(), more);
        let two = format!("{}{}", b.trust[0], w.cert);
        assert_eq!(split_pem(&two), vec![b.trust[0].clone(), w.cert.clone()]);
    }
}
