//! Runs orders through the [`Issuer`] in background tasks and records the
//! outcome, so that requests never wait for the CA (protocol §8.2: the
//! device polls). Orders found `processing` at start are resumed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::chain_info;
use crate::issuer::{IssueError, IssueRequest, Issuer};
use crate::store::{Order, Store, StoreError};

/// Most issuances running at once; the rest wait their turn.
pub const MAX_CONCURRENT: usize = 4;
/// An issuance taking longer than this fails with `issuanceFailed`.
pub const TIMEOUT: Duration = Duration::from_secs(3600);
/// Retry-After for orders failed by [`TIMEOUT`] or a bad chain.
const RETRY_AFTER_FAILURE_SECS: u64 = 300;

/// The background issuance of orders.
#[derive(Clone)]
pub struct Issuance {
    store: Arc<Store>,
    issuer: Arc<dyn Issuer>,
    permits: Arc<Semaphore>,
}

impl Issuance {
    /// Issuance into `store` through `issuer`.
    pub fn new(store: Arc<Store>, issuer: Arc<dyn Issuer>) -> Issuance {
        Issuance {
            store,
            issuer,
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT)),
        }
    }

    /// Starts issuing a stored, processing order.
    pub fn start(&self, order: &Order) -> JoinHandle<()> {
        let this = self.clone();
        let (id, csr, hostname) = (order.id.clone(), order.csr.clone(), order.hostname.clone());
        tokio::spawn(async move { this.run(&id, &csr, &hostname).await })
    }

    /// Starts every order left processing (after a restart); returns how
    /// many.
    pub fn resume(&self) -> Result<usize, StoreError> {
        let orders = self.store.processing_orders()?;
        for order in &orders {
            log::info!("resuming order {} for {}", order.id, order.hostname);
            self.start(order);
        }
        Ok(orders.len())
    }

    async fn run(&self, id: &str, csr: &[u8], hostname: &str) {
        // The semaphore is never closed, so acquiring only waits.
        let _permit = self.permits.acquire().await;
        let request = IssueRequest {
            csr_der: csr.to_vec(),
            hostname: hostname.to_string(),
            replaces: None,
        };
        let outcome = match tokio::time::timeout(TIMEOUT, self.issuer.issue(&request)).await {
            Ok(result) => result,
            Err(_) => Err(IssueError {
                retry_after: Some(RETRY_AFTER_FAILURE_SECS),
                ..IssueError::failed("the CA did not answer in time")
            }),
        };
        let recorded = match outcome {
            Ok(chain) => match chain_info::leaf(&chain.pem_chain) {
                Ok(info) => {
                    log::info!("order {id}: issued {hostname}, serial {}", info.serial);
                    let renewal = chain.renewal.map(|w| (w.start, w.end));
                    self.store
                        .complete_order(id, &chain.pem_chain, &info.serial, info.not_after, renewal)
                }
                Err(e) => {
                    log::error!("order {id}: issuer returned an unreadable chain: {e}");
                    self.store.fail_order(
                        id,
                        "issuanceFailed",
                        "the CA returned an unreadable certificate",
                        Some(RETRY_AFTER_FAILURE_SECS),
                    )
                }
            },
            Err(e) => {
                log::warn!("order {id}: issuance for {hostname} failed: {e}");
                self.store.fail_order(id, e.problem.name(), &e.detail, e.retry_after)
            }
        };
        if let Err(e) = recorded {
            // The order stays processing and is resumed at the next start.
            log::error!("order {id}: {e}");
        }
    }
}
