//! Issuance from a public (or any RFC 8555) ACME CA, with the dns-01
//! challenge answered in the device zone.
//!
//! For each device CSR: a new order for the device's hostname (marked
//! `replaces` when it renews an unexpired certificate of this account, RFC
//! 9773), the challenge's TXT record at `_acme-challenge.<hostname>` published
//! through the [`DnsBackend`], a wait until every configured authoritative
//! server answers with it ([`propagation`]), then respond, poll, finalize with
//! the device's own CSR and download the chain. The TXT record is removed
//! afterwards, whether issuance succeeded or not. The CA's renewal window
//! (ARI) is fetched for the new certificate and handed to the device.
//!
//! The ACME account key is created once and kept in the data directory
//! (0600), one account per directory URL, so that renewals come from the
//! account that issued the certificate they replace.
//!
//! CA answers are mapped to problem types a device can act on
//! ([`map_acme_error`]): `rateLimited` with the CA's retry time, `badCSR`
//! (make a new key), and `issuanceFailed` with a Retry-After for the rest.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, Problem, RetryPolicy,
};
use lancert_protocol::problem::ProblemType;
use rustls::pki_types::Der;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use x509_cert::ext::pkix::AuthorityKeyIdentifier;
use x509_cert::Certificate;

use super::{IssueError, IssueRequest, IssuedChain, Issuer, RenewalWindow};
use crate::config::AcmeConfig;
use crate::dns::{propagation, DnsBackend};
use crate::error::Error;
use crate::BoxFuture;

/// One HTTP exchange with the CA may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the CA may take to validate the challenge, and then to issue.
const POLL_TIMEOUT: Duration = Duration::from_secs(300);
/// Retry-After for a CA that is unreachable or answers with an error.
const RETRY_CA_FAILURE_SECS: u64 = 300;
/// Retry-After for a failed validation: Let's Encrypt allows 5 per name per
/// hour.
const RETRY_VALIDATION_FAILURE_SECS: u64 = 900;
/// Retry-After for refusals the device cannot fix (CAA, rejected name).
const RETRY_POLICY_REFUSAL_SECS: u64 = 6 * 3600;
/// Retry-After for `rateLimited` when the CA's message gives no time.
const RETRY_RATE_LIMITED_SECS: u64 = 3600;
/// Longest Retry-After passed on (the agent clamps to a day as well).
const MAX_RETRY_SECS: u64 = 86_400;
/// ACME problem type prefix (RFC 8555 §6.7).
const ACME_ERROR: &str = "urn:ietf:params:acme:error:";

/// Where the challenge records go and who must see them first.
pub struct Challenges {
    /// The zone's DNS backend.
    pub dns: Arc<dyn DnsBackend>,
    /// Authoritative servers that must answer with a TXT record before the
    /// CA is asked to validate it.
    pub check_servers: Vec<SocketAddr>,
    /// How long to wait for them.
    pub propagation_timeout: Duration,
}

/// The `acme` issuer.
pub struct AcmeIssuer {
    config: AcmeConfig,
    account_file: PathBuf,
    challenges: Challenges,
    /// Loaded or created at the first issuance, so that the server starts
    /// while the CA is unreachable.
    account: Mutex<Option<Account>>,
    /// The CA answered an ARI request: renewals with `replaces` are exempt
    /// from its limits.
    ari: AtomicBool,
}

impl AcmeIssuer {
    /// An issuer for `config`, keeping its account in `data_dir`.
    pub fn new(config: AcmeConfig, data_dir: &Path, challenges: Challenges) -> AcmeIssuer {
        AcmeIssuer {
            account_file: data_dir.join(account_file_name(&config.directory_url)),
            config,
            challenges,
            account: Mutex::new(None),
            ari: AtomicBool::new(false),
        }
    }

    /// The file holding the account's key and URL.
    pub fn account_file(&self) -> &Path {
        &self.account_file
    }

    /// Loads the stored account, or registers a new one with the CA and
    /// stores it (0600). Called at startup to report configuration errors
    /// early, and again by issuance if that failed.
    pub async fn account(&self) -> Result<Account, IssueError> {
        let mut slot = self.account.lock().await;
        if let Some(account) = slot.as_ref() {
            return Ok(account.clone());
        }
        let account = self.load_or_register().await.map_err(account_unavailable)?;
        *slot = Some(account.clone());
        Ok(account)
    }

    async fn load_or_register(&self) -> Result<Account, Error> {
        let url = &self.config.directory_url;
        let builder = match &self.config.ca_file {
            Some(root) => Account::builder_with_root(root)
                .map_err(|e| Error::Other(format!("ACME CA root {}: {e}", root.display())))?,
            None => Account::builder().map_err(|e| Error::Other(format!("ACME HTTP client: {e}")))?,
        };
        match std::fs::read(&self.account_file) {
            Ok(bytes) => {
                let credentials: AccountCredentials = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Other(format!(
                        "ACME account file {} is damaged: {e}",
                        self.account_file.display()
                    ))
                })?;
                let account = timed(builder.from_credentials(credentials))
                    .await
                    .map_err(|e| Error::Other(format!("loading the ACME account from {url}: {e}")))?;
                log::info!("ACME account {} at {url}", account.id());
                Ok(account)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
                let new = NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: self.config.agree_terms,
                    only_return_existing: false,
                };
                let (account, credentials) = timed(builder.create(&new, url.clone(), None))
                    .await
                    .map_err(|e| Error::Other(format!("creating an ACME account at {url}: {e}")))?;
                let json = serde_json::to_vec(&credentials)
                    .map_err(|e| Error::Other(format!("encoding the ACME account: {e}")))?;
                super::local_ca::write_file(&self.account_file, &json, 0o600)?;
                log::info!(
                    "created ACME account {} at {url}, stored in {}",
                    account.id(),
                    self.account_file.display()
                );
                Ok(account)
            }
            Err(e) => Err(Error::io("reading ACME account", &self.account_file, e)),
        }
    }

    /// Forgets an account the CA no longer knows (a test CA restarted, a
    /// staging reset): its file is kept aside as `<file>.unknown-<time>` and
    /// a new account is registered.
    async fn reregister(&self) -> Result<Account, IssueError> {
        let mut slot = self.account.lock().await;
        let aside = self
            .account_file
            .with_extension(format!("json.unknown-{}", crate::clock::now()));
        if let Err(e) = std::fs::rename(&self.account_file, &aside) {
            log::warn!("moving {} aside: {e}", self.account_file.display());
        }
        log::warn!(
            "the CA no longer knows the ACME account; registering a new one (old file: {})",
            aside.display()
        );
        *slot = None;
        let account = self.load_or_register().await.map_err(account_unavailable)?;
        *slot = Some(account.clone());
        Ok(account)
    }

    async fn run(&self, request: &IssueRequest) -> Result<IssuedChain, IssueError> {
        let mut account = self.account().await?;
        let hostname = &request.hostname;
        let replaces = request.replaces.as_deref().and_then(|pem| match certificate_id(pem) {
            Ok(id) => Some(id),
            Err(e) => {
                log::warn!("{hostname}: cannot identify the certificate to replace ({e}); ordering without replaces");
                None
            }
        });
        match &replaces {
            Some(id) => log::info!("ordering {hostname} from the CA; it replaces {id}"),
            None => log::info!("ordering {hostname} from the CA"),
        }
        let identifiers = [Identifier::Dns(hostname.clone())];
        let mut order = match self.new_order(&account, &identifiers, replaces.clone()).await {
            Err(e) if account_unknown(&e) => {
                account = self.reregister().await?;
                // A new account cannot replace the old one's certificate.
                self.new_order(&account, &identifiers, None).await
            }
            Err(e) if replaces.is_some() && replacement_refused(&e) => {
                // The CA does not know the old certificate as this account's
                // (another account, or already replaced): a plain order.
                log::warn!("{hostname}: the CA refused `replaces` ({e}); ordering without it");
                self.new_order(&account, &identifiers, None).await
            }
            other => other,
        }
        .map_err(|e| self.ca_error("creating the order", &e))?;

        let mut published = Vec::new();
        let outcome = self.validate_and_finalize(&mut order, request, &mut published).await;
        for name in published {
            if let Err(e) = self.challenges.dns.set_txt(&name, &[]).await {
                log::warn!("removing the challenge record {name}: {e}");
            }
        }
        let pem_chain = outcome?;
        let renewal = self.renewal_window(&account, &pem_chain).await;
        Ok(IssuedChain { pem_chain, renewal })
    }

    /// [`map_acme_error`] for a step with this CA, naming its directory.
    fn ca_error(&self, doing: &str, e: &instant_acme::Error) -> IssueError {
        map_acme_error(&format!("{doing} at {}", self.config.directory_url), e)
    }

    async fn new_order(
        &self,
        account: &Account,
        identifiers: &[Identifier],
        replaces: Option<CertificateIdentifier<'static>>,
    ) -> Result<instant_acme::Order, instant_acme::Error> {
        let mut new = NewOrder::new(identifiers);
        if let Some(id) = replaces {
            new = new.replaces(id);
        }
        if let Some(profile) = &self.config.profile {
            new = new.profile(profile);
        }
        timed(account.new_order(&new)).await
    }

    async fn validate_and_finalize(
        &self,
        order: &mut instant_acme::Order,
        request: &IssueRequest,
        published: &mut Vec<String>,
    ) -> Result<String, IssueError> {
        {
            let mut authorizations = order.authorizations();
            while let Some(next) = timed_opt(authorizations.next()).await {
                let mut authz = next.map_err(|e| self.ca_error("reading the authorization", &e))?;
                match authz.status {
                    AuthorizationStatus::Valid => continue,
                    AuthorizationStatus::Pending => {}
                    other => {
                        return Err(IssueError {
                            retry_after: Some(RETRY_CA_FAILURE_SECS),
                            ..IssueError::failed(format!("the CA's authorization is {other:?}"))
                        })
                    }
                }
                let Some(mut challenge) = authz.challenge(ChallengeType::Dns01) else {
                    return Err(IssueError {
                        retry_after: Some(RETRY_POLICY_REFUSAL_SECS),
                        ..IssueError::failed("the CA offers no dns-01 challenge for this name")
                    });
                };
                let name = format!("_acme-challenge.{}", request.hostname);
                let value = challenge.key_authorization().dns_value();
                published.push(name.clone());
                self.challenges
                    .dns
                    .set_txt(&name, std::slice::from_ref(&value))
                    .await
                    .map_err(|e| IssueError {
                        retry_after: Some(RETRY_CA_FAILURE_SECS),
                        ..IssueError::failed(format!("publishing the challenge record {name}: {e}"))
                    })?;
                propagation::wait_for_txt(
                    &self.challenges.check_servers,
                    &name,
                    &value,
                    self.challenges.propagation_timeout,
                )
                .await
                .map_err(|e| IssueError {
                    retry_after: Some(RETRY_CA_FAILURE_SECS),
                    ..IssueError::failed(format!("waiting for the challenge record: {e}"))
                })?;
                timed(challenge.set_ready())
                    .await
                    .map_err(|e| self.ca_error("answering the challenge", &e))?;
            }
        }
        let polling = RetryPolicy::new()
            .initial_delay(Duration::from_millis(500))
            .backoff(1.5)
            .timeout(POLL_TIMEOUT);
        let status = order
            .poll_ready(&polling)
            .await
            .map_err(|e| self.ca_error("waiting for validation", &e))?;
        if status != OrderStatus::Ready {
            return Err(self.validation_error(order).await);
        }
        timed(order.finalize_csr(&request.csr_der))
            .await
            .map_err(|e| self.ca_error("finalizing the order", &e))?;
        order
            .poll_certificate(&polling)
            .await
            .map_err(|e| self.ca_error("downloading the certificate", &e))
    }

    /// The error of an invalid order: the failed challenge's problem, so
    /// that the device and the operator see why (DNS, CAA, ...).
    async fn validation_error(&self, order: &mut instant_acme::Order) -> IssueError {
        let mut authorizations = order.authorizations();
        while let Some(Ok(authz)) = timed_opt(authorizations.next()).await {
            if let Some(problem) = authz.challenges.iter().find_map(|c| c.error.clone()) {
                let mut error = map_problem("validating the challenge", &problem);
                error.validation_failed = true;
                return error;
            }
        }
        IssueError {
            retry_after: Some(RETRY_VALIDATION_FAILURE_SECS),
            validation_failed: true,
            ..IssueError::failed("the CA found the order invalid")
        }
    }

    /// The CA's suggested renewal window for the new leaf (ARI), if it
    /// offers one.
    async fn renewal_window(&self, account: &Account, pem_chain: &str) -> Option<RenewalWindow> {
        let id = match certificate_id(pem_chain) {
            Ok(id) => id,
            Err(e) => {
                log::warn!("issued certificate: {e}; no renewal window");
                return None;
            }
        };
        match timed(account.renewal_info(&id)).await {
            Ok((info, _)) => {
                self.ari.store(true, Ordering::Relaxed);
                let window = info.suggested_window;
                Some(RenewalWindow {
                    start: window.start.unix_timestamp(),
                    end: window.end.unix_timestamp(),
                })
            }
            Err(instant_acme::Error::Unsupported(_)) => None,
            Err(e) => {
                log::warn!("renewal information for {id}: {e}");
                None
            }
        }
    }
}

impl Issuer for AcmeIssuer {
    fn name(&self) -> String {
        format!("acme {}", self.config.directory_url)
    }

    fn issue<'a>(&'a self, request: &'a IssueRequest) -> BoxFuture<'a, Result<IssuedChain, IssueError>> {
        Box::pin(self.run(request))
    }

    fn renewals_exempt(&self) -> bool {
        self.ari.load(Ordering::Relaxed)
    }
}

/// `acme-account-<first 8 bytes of SHA-256(url)>.json`: one account per CA
/// directory, so switching from staging to production keeps both.
fn account_file_name(directory_url: &str) -> String {
    let digest = Sha256::digest(directory_url.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("acme-account-{hex}.json")
}

async fn timed<T>(
    future: impl std::future::Future<Output = Result<T, instant_acme::Error>>,
) -> Result<T, instant_acme::Error> {
    match tokio::time::timeout(REQUEST_TIMEOUT, future).await {
        Ok(result) => result,
        Err(_) => Err(instant_acme::Error::Str("the CA did not answer within 60 s")),
    }
}

async fn timed_opt<T>(future: impl std::future::Future<Output = Option<T>>) -> Option<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, future).await.ok().flatten()
}

/// The ARI identifier (RFC 9773 §4.1) of the first certificate of a PEM
/// chain: its authority key identifier and serial.
pub fn certificate_id(pem_chain: &str) -> Result<CertificateIdentifier<'static>, String> {
    let certs = Certificate::load_pem_chain(pem_chain.as_bytes()).map_err(|e| format!("not PEM: {e}"))?;
    let leaf = certs.first().ok_or("no certificate")?;
    let aki = leaf
        .tbs_certificate()
        .get_extension::<AuthorityKeyIdentifier>()
        .map_err(|e| format!("authority key identifier: {e}"))?
        .and_then(|(_, aki)| aki.key_identifier)
        .ok_or("the certificate has no authority key identifier")?;
    let serial = leaf.tbs_certificate().serial_number().as_bytes();
    Ok(CertificateIdentifier::new(Der::from_slice(aki.as_bytes()), Der::from_slice(serial)).into_owned())
}

/// What the device is told when the account cannot be loaded or
/// registered: the CA is down or refuses; try again later.
fn account_unavailable(e: Error) -> IssueError {
    IssueError {
        retry_after: Some(RETRY_CA_FAILURE_SECS),
        ..IssueError::failed(e.to_string())
    }
}

/// Whether the CA says the account does not exist (RFC 8555 §7.3.1).
fn account_unknown(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(p) if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist"))
}

/// Whether the CA refused an order because of its `replaces` field.
fn replacement_refused(e: &instant_acme::Error) -> bool {
    match e {
        instant_acme::Error::Unsupported(_) => true,
        instant_acme::Error::Api(problem) => {
            let kind = problem.r#type.as_deref().unwrap_or("");
            let detail = problem.detail.as_deref().unwrap_or("").to_ascii_lowercase();
            kind.ends_with(":alreadyReplaced") || kind.ends_with(":conflict") || detail.contains("replace")
        }
        _ => false,
    }
}

/// What the device is told when the CA step `doing` failed with `e`.
pub fn map_acme_error(doing: &str, e: &instant_acme::Error) -> IssueError {
    match e {
        instant_acme::Error::Api(problem) => map_problem(doing, problem),
        other => IssueError {
            retry_after: Some(RETRY_CA_FAILURE_SECS),
            ..IssueError::failed(format!(
                "{doing}: the CA could not be reached or answered badly: {}",
                with_causes(other)
            ))
        },
    }
}

/// An error and its sources ("client error (Connect): tcp connect error:
/// Connection refused"): HTTP client errors hide the useful part there.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = cause.source();
    }
    text
}

/// Maps an ACME problem document (RFC 8555 §6.7) to the device's problem
/// type and Retry-After.
pub fn map_problem(doing: &str, problem: &Problem) -> IssueError {
    let kind = problem
        .r#type
        .as_deref()
        .unwrap_or("")
        .strip_prefix(ACME_ERROR)
        .unwrap_or("");
    let detail = problem.detail.as_deref().unwrap_or("no detail");
    let text = format!("{doing}: the CA answered {kind}: {detail}");
    let (problem_type, retry, validation_failed) = match kind {
        "rateLimited" => (
            ProblemType::RateLimited,
            retry_from_detail(detail, crate::clock::now()).unwrap_or(RETRY_RATE_LIMITED_SECS),
            false,
        ),
        "badCSR" | "badPublicKey" | "badSignatureAlgorithm" => (ProblemType::BadCsr, RETRY_CA_FAILURE_SECS, false),
        "caa" | "rejectedIdentifier" | "unsupportedIdentifier" => {
            (ProblemType::IssuanceFailed, RETRY_POLICY_REFUSAL_SECS, false)
        }
        "dns" | "connection" | "incorrectResponse" | "unauthorized" | "tls" => {
            return IssueError {
                problem: ProblemType::IssuanceFailed,
                detail: format!("{doing}: the CA could not validate the challenge record ({kind}): {detail}"),
                retry_after: Some(RETRY_VALIDATION_FAILURE_SECS),
                validation_failed: true,
            }
        }
        _ => (ProblemType::IssuanceFailed, RETRY_CA_FAILURE_SECS, false),
    };
    IssueError {
        problem: problem_type,
        detail: text,
        retry_after: Some(retry.clamp(1, MAX_RETRY_SECS)),
        validation_failed,
    }
}

/// Seconds until the time in Let's Encrypt's rate-limit message ("...
/// retry after 2026-11-23 22:00:00 UTC ..."), if it has one.
fn retry_from_detail(detail: &str, now: i64) -> Option<u64> {
    let at = detail.find("retry after ")? + "retry after ".len();
    let stamp = detail.get(at..at + 19)?;
    let rfc3339 = format!("{}T{}Z", stamp.get(..10)?, stamp.get(11..)?);
    let when = lancert_protocol::time::parse_rfc3339(&rfc3339).ok()?;
    Some((when - now).max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: &str, detail: &str) -> Problem {
        serde_json::from_value(
            serde_json::json!({"type": format!("{ACME_ERROR}{kind}"), "detail": detail, "status": 400}),
        )
        .unwrap()
    }

    #[test]
    fn ca_problems_become_problems_a_device_can_act_on() {
        let now = crate::clock::now();
        let stamp = lancert_protocol::time::format_rfc3339(now + 7200);
        let le = format!(
            "too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after {} {} UTC: see https://letsencrypt.org/docs/rate-limits/",
            &stamp[..10],
            &stamp[11..19]
        );
        let e = map_problem("creating the order", &problem("rateLimited", &le));
        assert_eq!(e.problem, ProblemType::RateLimited);
        let retry = e.retry_after.unwrap();
        assert!((7190..=7200).contains(&retry), "{retry}");

        let e = map_problem("x", &problem("rateLimited", "too many"));
        assert_eq!(e.retry_after, Some(RETRY_RATE_LIMITED_SECS));

        let e = map_problem("finalizing", &problem("badCSR", "key too weak"));
        assert_eq!(e.problem, ProblemType::BadCsr);
        assert!(e.detail.contains("key too weak") && e.detail.contains("finalizing"));

        let e = map_problem(
            "validating",
            &problem("caa", "CAA record for example.com prevents issuance"),
        );
        assert_eq!(e.problem, ProblemType::IssuanceFailed);
        assert_eq!(e.retry_after, Some(RETRY_POLICY_REFUSAL_SECS));
        assert!(e.detail.contains("CAA"));
        assert!(!e.validation_failed);

        let e = map_problem("validating", &problem("unauthorized", "Incorrect TXT record"));
        assert!(e.validation_failed);
        assert_eq!(e.retry_after, Some(RETRY_VALIDATION_FAILURE_SECS));

        let e = map_problem("x", &problem("serverInternal", "oops"));
        assert_eq!(e.problem, ProblemType::IssuanceFailed);
        assert_eq!(e.retry_after, Some(RETRY_CA_FAILURE_SECS));
    }

    #[test]
    fn retry_time_is_read_from_the_detail_only_when_well_formed() {
        assert_eq!(retry_from_detail("retry after 1970-01-01 01:00:00 UTC", 0), Some(3600));
        assert_eq!(retry_from_detail("retry after 1970-01-01 00:00:00 UTC", 100), Some(1));
        assert_eq!(retry_from_detail("retry after soon", 0), None);
        assert_eq!(retry_from_detail("retry after 1970-01-01", 0), None);
        assert_eq!(retry_from_detail("", 0), None);
    }

    #[test]
    fn replaces_refusals_are_recognised() {
        let e = instant_acme::Error::Api(problem("alreadyReplaced", "already replaced"));
        assert!(replacement_refused(&e));
        let e = instant_acme::Error::Api(problem(
            "malformed",
            "cannot replace a certificate issued to another account",
        ));
        assert!(replacement_refused(&e));
        let e = instant_acme::Error::Api(problem("rateLimited", "too many"));
        assert!(!replacement_refused(&e));
        assert!(!account_unknown(&e));
        assert!(account_unknown(&instant_acme::Error::Api(problem(
            "accountDoesNotExist",
            "no such account"
        ))));
    }

    #[test]
    fn account_files_differ_per_directory() {
        let staging = account_file_name("https://acme-staging-v02.api.letsencrypt.org/directory");
        let production = account_file_name("https://acme-v02.api.letsencrypt.org/directory");
        assert_ne!(staging, production);
        assert!(staging.starts_with("acme-account-") && staging.ends_with(".json"));
        assert_eq!(staging.len(), "acme-account-.json".len() + 16);
    }

    #[test]
    fn certificate_id_is_aki_dot_serial() {
        // A leaf from the local CA, which sets the authority key identifier.
        let dir = crate::issuer::local_ca::tests::temp_dir("acme-id");
        let ca = crate::issuer::local_ca::LocalCa::open_or_create(&dir, 3600, 0, false).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let host = crate::csr_check::tests::HOST;
        let chain = ca
            .sign(&crate::csr_check::tests::csr(&key, &[host], None), host)
            .unwrap();
        let id = certificate_id(&chain.pem_chain).unwrap();
        let text = id.to_string();
        let (aki, serial) = text.split_once('.').unwrap();
        assert_eq!(
            lancert_protocol::base64url::decode(aki).unwrap().len(),
            20,
            "SHA-1 key id"
        );
        let info = crate::chain_info::leaf(&chain.pem_chain).unwrap();
        let serial_bytes = lancert_protocol::base64url::decode(serial).unwrap();
        assert_eq!(crate::chain_info::serial_hex(&serial_bytes), info.serial);
        assert!(certificate_id("garbage").is_err());
    }
}
