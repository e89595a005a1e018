//! The proxy-wasm side: root context (config, audit shipping timer) and HTTP contexts.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use behavry_core::decision_table::{POLICY_TABLE_PATH, PolicyTable};
use behavry_core::fingerprint::ClientFingerprint;
use behavry_core::flow::FlowMemory;
use behavry_core::pins::{PIN_OBSERVATIONS_PATH, PINS_PATH, PinObservation, PinSet};
use behavry_core::wire::{
    CREDENTIALS_PATH, DECIDE_PATH, DecisionResponse, EVENTS_PATH, REVOCATIONS_PATH, RevocationList,
    ServerPoisoning, TaskFacts, ToolFacts, USAGE_PATH, UsageReport,
};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{FailureMode, FilterConfig};
use crate::credentials::{CredentialCache, CredentialFailure, UpstreamCredential};
use crate::exchange::{
    BodyAction, ChunkAction, CredentialStep, DecisionAction, Exchange, HeadAction, Known,
    LocalReply, PinContext, RequestHead, ResponseHeadAction, unrouted,
};
use crate::inline::InlinePolicy;
use crate::resource_metadata;
use crate::revocation::RevocationSet;
use crate::shipping::AuditShipper;
use crate::{BUILD_ID, VERSION};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(BehavryRoot::default()) });
}}

fn log(level: LogLevel, message: &str) {
    // Nothing better to do if logging itself fails.
    let _ = hostcalls::log(level, message);
}

fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn random_bytes(salt: u32) -> [u8; 24] {
    let mut bytes = [0u8; 24];
    if getrandom::fill(&mut bytes).is_err() {
        // The host has no entropy source: fall back on time and context id, which is still
        // unique per call for trace ids (not a security value).
        let seed = now_ms().to_le_bytes();
        for ((i, b), s) in bytes.iter_mut().enumerate().zip(seed.iter().cycle()) {
            *b = s ^ (salt.rotate_left(i as u32) as u8);
        }
    }
    bytes
}

#[derive(Default)]
struct BehavryRoot {
    config: Option<Rc<FilterConfig>>,
    queue_id: Option<u32>,
    audit_metrics: AuditMetrics,
    shipper: AuditShipper,
    /// Shared with this worker's HTTP contexts (one thread per VM: no locking needed).
    revocations: Rc<RefCell<RevocationSet>>,
    revocation_call: Option<u32>,
    next_revocation_poll_ms: u64,
    /// Upstream credentials of this worker, shared by its HTTP contexts.
    credentials: Rc<RefCell<CredentialCache>>,
    /// The decision table and decision cache of this worker, shared by its HTTP contexts.
    inline: Rc<RefCell<InlinePolicy>>,
    table_call: Option<u32>,
    next_table_poll_ms: u64,
    /// Response sizes of budgeted calls, queued by HTTP contexts for the sidecar.
    usage_queue_id: Option<u32>,
    usage_call: Option<u32>,
    /// The pin set this worker last polled (docs/pins.md), shared with its HTTP contexts.
    pins: Rc<RefCell<Option<Arc<PinSet>>>>,
    pins_call: Option<u32>,
    next_pins_poll_ms: u64,
    /// Listed definitions not pinned, queued by HTTP contexts for the sidecar.
    pins_queue_id: Option<u32>,
    pins_report_call: Option<u32>,
    /// A set of another tenant was logged once (every poll would say the same).
    foreign_pins_logged: bool,
}

impl Context for BehavryRoot {
    fn on_done(&mut self) -> bool {
        // A root context that goes away (reload, drain) puts back what it took and was not
        // acknowledged, so another one ships it; so too the unused calls of its leases.
        if let Ok(mut inline) = self.inline.try_borrow_mut() {
            inline.end_all_leases();
            queue_returns(&mut inline, self.usage_queue_id);
        }
        if let Some(queue_id) = self.queue_id {
            for line in self.shipper.take_unacknowledged() {
                if let Err(status) = hostcalls::enqueue_shared_queue(queue_id, Some(&line)) {
                    log(
                        LogLevel::Error,
                        &format!("audit event lost at shutdown: {status:?}"),
                    );
                    adjust_audit_backlog(-1);
                }
            }
        }
        true
    }

    fn on_http_call_response(
        &mut self,
        token: u32,
        headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if self.revocation_call == Some(token) {
            self.revocation_call = None;
            self.revocations_received(headers, body_size);
            return;
        }
        if self.table_call == Some(token) {
            self.table_call = None;
            self.table_received(headers, body_size);
            return;
        }
        if self.pins_call == Some(token) {
            self.pins_call = None;
            self.pins_received(headers, body_size);
            return;
        }
        if self.pins_report_call == Some(token) {
            self.pins_report_call = None;
            if call_status(headers).as_deref() != Some("200") {
                log(
                    LogLevel::Warn,
                    "the authz-sidecar did not take listed tool definitions; they are reported again with the next listing",
                );
            }
            return;
        }
        if self.usage_call == Some(token) {
            self.usage_call = None;
            if call_status(headers).as_deref() != Some("200") {
                log(
                    LogLevel::Warn,
                    "the authz-sidecar did not take a usage report: response bytes not counted",
                );
            }
            return;
        }
        if !self.shipper.owns(token) {
            return;
        }
        let status = call_status(headers);
        let acknowledged = status.as_deref() == Some("200");
        let stored = self.shipper.finished(acknowledged, now_ms());
        if stored > 0 {
            let backlog = adjust_audit_backlog(-i64::try_from(stored).unwrap_or(i64::MAX));
            self.audit_metrics.show_backlog(backlog);
        }
        if acknowledged {
            log(
                LogLevel::Debug,
                &format!("audit-sink stored {stored} events"),
            );
            // More may be waiting: keep going instead of waiting for the next tick.
            self.ship();
            return;
        }
        let body = String::from_utf8_lossy(&call_body(body_size.min(1024))).into_owned();
        if let Some(line) = refused_line(status.as_deref(), &body, self.shipper.batch_events())
            && let Some(event) = self.shipper.set_aside(line)
        {
            // Never silently: the event is logged whole, and the rest goes again now.
            log(
                LogLevel::Critical,
                &format!(
                    "the audit-sink refuses an event as it is ({body}); set aside from the log: {}",
                    String::from_utf8_lossy(&event)
                ),
            );
            let backlog = adjust_audit_backlog(-1);
            self.audit_metrics.show_backlog(backlog);
            self.ship();
            return;
        }
        log(
            LogLevel::Warn,
            &format!(
                "audit-sink did not acknowledge a batch (status {}): {body}; {} events kept for retry",
                status
                    .as_deref()
                    .unwrap_or("none: unreachable or timed out"),
                self.shipper.unacknowledged()
            ),
        );
    }
}

impl RootContext for BehavryRoot {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        log(
            LogLevel::Info,
            &format!("behavry-filter {VERSION} (build {BUILD_ID}) starting"),
        );
        true
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let config = match FilterConfig::from_json(&bytes) {
            Ok(config) => config,
            Err(err) => {
                log(LogLevel::Critical, &format!("{err}"));
                return false;
            }
        };
        match hostcalls::register_shared_queue(&config.audit.queue_name) {
            Ok(id) => self.queue_id = Some(id),
            Err(status) => {
                log(
                    LogLevel::Critical,
                    &format!(
                        "cannot register audit queue `{}`: {status:?}",
                        config.audit.queue_name
                    ),
                );
                return false;
            }
        }
        if let Err(status) =
            hostcalls::set_tick_period(Duration::from_millis(config.audit.flush_interval_ms))
        {
            log(
                LogLevel::Critical,
                &format!("cannot start the audit timer: {status:?}"),
            );
            return false;
        }
        log(
            LogLevel::Info,
            &format!(
                "behavry-filter {VERSION} (build {BUILD_ID}) configured with {} MCP routes",
                config.routes.len()
            ),
        );
        self.inline = Rc::new(RefCell::new(InlinePolicy::new(config.inline.cache_entries)));
        self.audit_metrics = AuditMetrics::define();
        self.audit_metrics.show_backlog(audit_backlog());
        match hostcalls::register_shared_queue(PINS_QUEUE) {
            Ok(id) => self.pins_queue_id = Some(id),
            // Not fatal: first uses are then not pinned by the sidecar (logged once here).
            Err(status) => log(
                LogLevel::Error,
                &format!("cannot register the pins queue: {status:?}; definitions not reported"),
            ),
        }
        match hostcalls::register_shared_queue(USAGE_QUEUE) {
            Ok(id) => self.usage_queue_id = Some(id),
            // Not fatal: without it, `bytes` budgets are not fed (logged once here).
            Err(status) => log(
                LogLevel::Error,
                &format!("cannot register the usage queue: {status:?}; bytes budgets not fed"),
            ),
        }
        self.config = Some(Rc::new(config));
        true
    }

    fn on_tick(&mut self) {
        self.ship();
        self.poll_revocations();
        self.poll_pins();
        self.poll_table();
        if let Ok(mut inline) = self.inline.try_borrow_mut() {
            inline.sweep(now_ms());
            queue_returns(&mut inline, self.usage_queue_id);
        }
        self.ship_usage();
        self.ship_pin_observations();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: proxy-wasm 0.2 panics on it. Without a configuration (which Envoy should
        // not allow) every request is refused.
        Some(Box::new(BehavryHttp {
            context_id,
            config: self.config.clone(),
            queue_id: self.queue_id,
            audit_metrics: self.audit_metrics,
            usage_queue_id: self.usage_queue_id,
            pins_queue_id: self.pins_queue_id,
            pins: Rc::clone(&self.pins),
            revocations: Rc::clone(&self.revocations),
            credentials: Rc::clone(&self.credentials),
            inline: Rc::clone(&self.inline),
            exchange: None,
            authz_call: None,
            credential_call: None,
            sync_commit: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl BehavryRoot {
    fn poll_revocations(&mut self) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let now = now_ms();
        if self.revocation_call.is_some() || now < self.next_revocation_poll_ms {
            return;
        }
        self.next_revocation_poll_ms = now.saturating_add(config.revocation_poll_ms);
        self.revocation_call = get_from_authz(&config, REVOCATIONS_PATH, "revocations");
    }

    /// The pin set is polled at the revocation list's period.
    fn poll_pins(&mut self) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let now = now_ms();
        if self.pins_call.is_some() || now < self.next_pins_poll_ms {
            return;
        }
        self.next_pins_poll_ms = now.saturating_add(config.revocation_poll_ms);
        // A tenant name needs no escaping in a query (checked at load).
        let path = format!("{PINS_PATH}?tenant={}", config.tenant);
        self.pins_call = get_from_authz(&config, &path, "the pin set");
    }

    /// A failed poll keeps the set held; an older version than the one held is ignored.
    fn pins_received(&mut self, headers: usize, body_size: usize) {
        if call_status(headers).as_deref() != Some("200") {
            return;
        }
        match serde_json::from_slice::<PinSet>(&call_body(body_size)) {
            Ok(set) if self.config.as_ref().is_some_and(|c| c.tenant != set.tenant) => {
                if !std::mem::replace(&mut self.foreign_pins_logged, true) {
                    log(
                        LogLevel::Warn,
                        &format!(
                            "pin set of tenant `{}` ignored: not this proxy's (an authz-sidecar without tenants?); tool listings stay refused",
                            set.tenant
                        ),
                    );
                }
            }
            Ok(set) => {
                if let Ok(mut held) = self.pins.try_borrow_mut()
                    && held.as_ref().is_none_or(|old| set.version > old.version)
                {
                    log(
                        LogLevel::Info,
                        &format!("pin set version {} in force", set.version),
                    );
                    *held = Some(Arc::new(set));
                }
            }
            Err(err) => log(LogLevel::Warn, &format!("unreadable pin set: {err}")),
        }
    }

    /// Send the queued observations (one batch in flight at a time). A batch the sidecar does
    /// not take is not sent again: the next listing of the same definitions reports them again.
    fn ship_pin_observations(&mut self) {
        let (Some(config), Some(queue_id)) = (self.config.clone(), self.pins_queue_id) else {
            return;
        };
        if self.pins_report_call.is_some() {
            return;
        }
        let body = drain_queue(queue_id, MAX_PIN_BATCH_BYTES, "pins");
        if body.is_empty() {
            return;
        }
        match call_authz(
            &config,
            "POST",
            PIN_OBSERVATIONS_PATH,
            Some(("application/x-ndjson", &body)),
        ) {
            Ok(token) => self.pins_report_call = Some(token),
            Err(status) => log(
                LogLevel::Warn,
                &format!("cannot send listed tool definitions: {status:?}"),
            ),
        }
    }

    fn poll_table(&mut self) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let now = now_ms();
        if !config.inline.enabled || self.table_call.is_some() || now < self.next_table_poll_ms {
            return;
        }
        self.next_table_poll_ms = now.saturating_add(config.inline.poll_interval_ms);
        self.table_call = get_from_authz(&config, POLICY_TABLE_PATH, "the decision table");
    }

    /// Send the queued usage reports (one batch in flight at a time). A report the sidecar does not
    /// take is not sent again: `bytes` budgets are approximate, and a lost report counts low.
    fn ship_usage(&mut self) {
        let (Some(config), Some(queue_id)) = (self.config.clone(), self.usage_queue_id) else {
            return;
        };
        if self.usage_call.is_some() {
            return;
        }
        let body = drain_queue(queue_id, MAX_USAGE_BATCH_BYTES, "usage");
        if body.is_empty() {
            return;
        }
        match call_authz(
            &config,
            "POST",
            USAGE_PATH,
            Some(("application/x-ndjson", &body)),
        ) {
            Ok(token) => self.usage_call = Some(token),
            Err(status) => log(
                LogLevel::Warn,
                &format!("cannot send usage reports: {status:?}; response bytes not counted"),
            ),
        }
    }

    fn table_received(&mut self, headers: usize, body_size: usize) {
        // A failed poll keeps what is held: its digest still guards the cache.
        if call_status(headers).as_deref() != Some("200") {
            return;
        }
        match serde_json::from_slice::<PolicyTable>(&call_body(body_size)) {
            Ok(published) => {
                let digest = published.bundle_digest.clone();
                if let Ok(mut inline) = self.inline.try_borrow_mut() {
                    if inline.update(published) {
                        log(
                            LogLevel::Info,
                            &format!("decision table of bundle {digest} in force"),
                        );
                    }
                    queue_returns(&mut inline, self.usage_queue_id);
                }
            }
            Err(err) => log(LogLevel::Warn, &format!("unreadable decision table: {err}")),
        }
    }

    fn revocations_received(&mut self, headers: usize, body_size: usize) {
        // A failed poll keeps the list already held: revocation never switches itself off.
        if call_status(headers).as_deref() != Some("200") {
            return;
        }
        match serde_json::from_slice::<RevocationList>(&call_body(body_size)) {
            Ok(list) => {
                if let Ok(mut set) = self.revocations.try_borrow_mut()
                    && set.update(list)
                {
                    log(
                        LogLevel::Info,
                        &format!("revocation list version {} in force", set.version()),
                    );
                }
            }
            Err(err) => log(
                LogLevel::Warn,
                &format!("unreadable revocation list: {err}"),
            ),
        }
    }

    /// Sends the next audit batch when none is in flight.
    fn ship(&mut self) {
        let (Some(config), Some(queue_id)) = (self.config.clone(), self.queue_id) else {
            return;
        };
        let now = now_ms();
        let mut dequeue = || match hostcalls::dequeue_shared_queue(queue_id) {
            Ok(item) => item,
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("audit queue read failed: {status:?}"),
                );
                None
            }
        };
        let Some(batch) = self.shipper.next_batch(
            now,
            config.audit.max_batch,
            config.audit.max_batch_bytes,
            &mut dequeue,
        ) else {
            return;
        };
        let sink = &config.audit.sink;
        match post_events(&config, &batch.body) {
            Ok(token) => self.shipper.sent(token),
            Err(status) => {
                log(
                    LogLevel::Warn,
                    &format!("cannot reach audit cluster `{}`: {status:?}", sink.cluster),
                );
                self.shipper.delivery_failed(now);
            }
        }
    }
}

/// Lines taken from a shared queue as an NDJSON body, until the queue is empty or the body holds
/// at least `max_bytes`.
fn drain_queue(queue_id: u32, max_bytes: usize, what: &str) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < max_bytes {
        match hostcalls::dequeue_shared_queue(queue_id) {
            Ok(Some(line)) => {
                body.extend_from_slice(&line);
                body.push(b'\n');
            }
            Ok(None) => break,
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("{what} queue read failed: {status:?}"),
                );
                break;
            }
        }
    }
    body
}

/// Start a `GET path` to the authz cluster; the call's token, or `None` (logged) when it cannot
/// be sent.
fn get_from_authz(config: &FilterConfig, path: &str, what: &str) -> Option<u32> {
    match call_authz(config, "GET", path, None) {
        Ok(token) => Some(token),
        Err(status) => {
            log(
                LogLevel::Warn,
                &format!(
                    "cannot poll {what} from `{}`: {status:?}",
                    config.authz.cluster
                ),
            );
            None
        }
    }
}

/// One call to the authz cluster, with the proxy credential when configured, and the body with
/// its content type when there is one.
fn call_authz(
    config: &FilterConfig,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> Result<u32, proxy_wasm::types::Status> {
    let authz = &config.authz;
    let authorization = config.authz_authorization();
    let mut headers = vec![
        (":method", method),
        (":path", path),
        (":authority", authz.authority.as_str()),
    ];
    if let Some((content_type, _)) = body {
        headers.push(("content-type", content_type));
    }
    if let Some(value) = authorization.as_deref() {
        headers.push(("authorization", value));
    }
    hostcalls::dispatch_http_call(
        &authz.cluster,
        headers,
        body.map(|(_, bytes)| bytes),
        vec![],
        Duration::from_millis(authz.timeout_ms),
    )
}

struct BehavryHttp {
    context_id: u32,
    /// `None` only if the root context was never configured (Envoy refuses the filter then).
    config: Option<Rc<FilterConfig>>,
    queue_id: Option<u32>,
    audit_metrics: AuditMetrics,
    usage_queue_id: Option<u32>,
    pins_queue_id: Option<u32>,
    pins: Rc<RefCell<Option<Arc<PinSet>>>>,
    revocations: Rc<RefCell<RevocationSet>>,
    credentials: Rc<RefCell<CredentialCache>>,
    inline: Rc<RefCell<InlinePolicy>>,
    exchange: Option<Exchange>,
    authz_call: Option<u32>,
    credential_call: Option<u32>,
    /// `audit.sync`: the commit of this call's records the call waits for.
    sync_commit: Option<SyncCommit>,
}

/// `:status` of the answer to a `dispatch_http_call`, or `None` when there is none. When a call
/// fails (reset, timeout, overflow) Envoy reports it with no headers and no header map at all;
/// asking that absent map for one value makes proxy-wasm panic, so the count is checked first and
/// the whole map is read (an absent map reads as empty).
fn call_status(num_headers: usize) -> Option<String> {
    if num_headers == 0 {
        return None;
    }
    // Bytes, not `get_map`: that one panics on a value that is not UTF-8.
    hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders)
        .ok()?
        .into_iter()
        .find_map(|(name, value)| (name == ":status").then(|| String::from_utf8(value).ok()))
        .flatten()
}

fn call_body(body_size: usize) -> Vec<u8> {
    if body_size == 0 {
        return Vec::new();
    }
    hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn replace_response_body(size: usize, bytes: &[u8]) {
    if let Err(status) = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, size, bytes) {
        log(
            LogLevel::Error,
            &format!("cannot rewrite response body: {status:?}"),
        );
    }
}

/// A header's value as text. Read as bytes: proxy-wasm 0.2's `get_map_value` panics on a value
/// that is not UTF-8, and RFC 9110 §5.5 allows such bytes (obs-text) from any client. A value
/// that is not UTF-8 is treated as absent (none of the headers read here can hold one).
fn header_text(map: MapType, name: &str) -> Option<String> {
    let bytes = hostcalls::get_map_value_bytes(map, name).ok().flatten()?;
    String::from_utf8(bytes).ok()
}

fn request_header(name: &str) -> Option<String> {
    header_text(MapType::HttpRequestHeaders, name)
}

fn response_header(name: &str) -> Option<String> {
    header_text(MapType::HttpResponseHeaders, name)
}

/// Lowercase names of the request headers (for the client fingerprint's header shape). Values
/// are read as bytes and dropped, for the same reason as in [`header_text`]; names are tokens
/// (RFC 9110 §5.1), which Envoy's codecs enforce.
fn request_header_names() -> Vec<String> {
    hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
        .map(|pairs| {
            pairs
                .into_iter()
                .map(|(name, _)| name.to_ascii_lowercase())
                .filter(|name| !name.starts_with(':'))
                .collect()
        })
        .unwrap_or_default()
}

/// Puts the upstream credential on the held request headers: the agent's `Authorization` goes
/// in any case. Called only while the request headers are held (proxy-wasm 0.2 panics on a
/// header write the host refuses). The value is never logged.
fn set_credential(credential: &UpstreamCredential) -> bool {
    for name in credential.headers_to_remove() {
        if request_header(name).is_some()
            && let Err(status) = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name)
        {
            log(
                LogLevel::Error,
                &format!("cannot remove `{name}`: {status:?}"),
            );
            return false;
        }
    }
    if let Err(status) = hostcalls::set_map_value(
        MapType::HttpRequestHeaders,
        &credential.header,
        Some(&credential.value),
    ) {
        log(
            LogLevel::Error,
            &format!(
                "cannot set the upstream credential header `{}`: {status:?}",
                credential.header
            ),
        );
        return false;
    }
    true
}

fn send_reply(reply: &LocalReply) {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Err(status) = hostcalls::send_http_response(reply.status, headers, Some(&reply.body)) {
        log(LogLevel::Error, &format!("local reply failed: {status:?}"));
    }
}

/// Queue one usage report for the sidecar (shipped by a root context's tick).
fn queue_usage(report: &UsageReport, usage_queue_id: Option<u32>) {
    let Some(queue_id) = usage_queue_id else {
        return;
    };
    if let Ok(line) = serde_json::to_vec(report)
        && let Err(status) = hostcalls::enqueue_shared_queue(queue_id, Some(&line))
    {
        log(
            LogLevel::Warn,
            &format!("usage report not queued: {status:?}"),
        );
    }
}

/// Queue the unused calls of the leases that ended, to be given back.
fn queue_returns(inline: &mut InlinePolicy, usage_queue_id: Option<u32>) {
    for report in inline.take_returns() {
        queue_usage(&report, usage_queue_id);
    }
}

/// Envoy shared queue of the usage reports (response bytes of budgeted calls, unused calls of
/// leases).
const USAGE_QUEUE: &str = "behavry.usage";
/// A batch of usage reports to the sidecar is closed once it holds this many bytes.
const MAX_USAGE_BATCH_BYTES: usize = 64 * 1024;
/// Envoy shared queue of the listed tool definitions that are not pinned (docs/pins.md).
const PINS_QUEUE: &str = "behavry.pins";
/// A batch of definitions is closed once it holds this many bytes (the sidecar takes 1 MiB).
const MAX_PIN_BATCH_BYTES: usize = 256 * 1024;
/// A definition larger than this is not reported (the sidecar takes definitions up to 256 KiB).
const MAX_PIN_OBSERVATION_BYTES: usize = 256 * 1024;

/// Prefix of the shared-data keys that bind an MCP session to the agent that opened it.
const SESSION_KEY_PREFIX: &str = "behavry.session/";
/// Shared-data key prefix of the client fingerprint recorded when a session was opened.
const SESSION_CLIENT_KEY_PREFIX: &str = "behavry.session-client/";

/// A shared-data key: the prefix, then the JSON array `[first, second]`, so that no two names
/// make the same key.
fn pair_key(prefix: &str, first: &str, second: &str) -> String {
    let names = serde_json::to_string(&[first, second]).unwrap_or_default();
    format!("{prefix}{names}")
}

/// Shared-data key prefix of what a server's `tools/list` said of each tool (its annotations),
/// for the decision input of later calls on any worker. The rest of the key is the JSON array
/// `[server, tool]`, so no name can make two keys collide.
const TOOL_KEY_PREFIX: &str = "behavry.tool/";
/// At most this many tools of one listing are remembered, so an upstream cannot fill the shared
/// data with names.
const MAX_REMEMBERED_TOOLS: usize = 1000;

fn tool_key(server: &str, tool: &str) -> String {
    pair_key(TOOL_KEY_PREFIX, server, tool)
}

/// What the last listing of `server` said of `tool`.
fn known_tool(server: &str, tool: &str) -> Option<ToolFacts> {
    let (value, _) = hostcalls::get_shared_data(&tool_key(server, tool)).ok()?;
    serde_json::from_slice(&value?).ok()
}

/// Record the tools of a listing. The latest listing wins, except that a tool once listed as
/// destructive stays so (hints may only add restrictions: a second route or credential to the
/// same server cannot clear one).
fn remember_tools(server: &str, tools: &[(String, ToolFacts)]) {
    let names: Vec<String> = tools
        .iter()
        .take(MAX_REMEMBERED_TOOLS)
        .map(|(name, _)| name.clone())
        .collect();
    update_shared(
        TOOL_NAMES_KEY,
        "tool names",
        |all: &mut BTreeMap<String, Vec<String>>| {
            if all.len() < MAX_NAMED_SERVERS || all.contains_key(server) {
                all.insert(server.to_owned(), names.clone());
            }
        },
    );
    for (name, facts) in tools.iter().take(MAX_REMEMBERED_TOOLS) {
        if known_tool(server, name).is_some_and(|old| old.is_destructive())
            && !facts.is_destructive()
        {
            continue;
        }
        let Ok(json) = serde_json::to_vec(facts) else {
            continue;
        };
        if let Err(status) = hostcalls::set_shared_data(&tool_key(server, name), Some(&json), None)
        {
            log(
                LogLevel::Warn,
                &format!("tool facts not stored: {status:?}"),
            );
            return;
        }
    }
}

/// Shared-data key prefix of the servers blocked for a poisoned tool (docs/poisoning.md):
/// `behavry.server-blocked/<server as JSON>` → [`ServerPoisoning`], or nothing.
const SERVER_BLOCK_KEY_PREFIX: &str = "behavry.server-blocked/";

fn server_block_key(server: &str) -> String {
    format!(
        "{SERVER_BLOCK_KEY_PREFIX}{}",
        serde_json::to_string(server).unwrap_or_default()
    )
}

/// Mark the server blocked (`Some`) or lift its block (`None`).
fn block_server(server: &str, block: Option<&ServerPoisoning>) {
    let value = block.and_then(|b| serde_json::to_vec(b).ok());
    if let Err(status) =
        hostcalls::set_shared_data(&server_block_key(server), value.as_deref(), None)
    {
        log(
            LogLevel::Warn,
            &format!("server block not stored: {status:?}"),
        );
    }
}

/// Shared-data key of the tool names each server listed last (name collisions and shadowing
/// across the servers behind this Envoy, docs/poisoning.md): `{server: [names]}`.
const TOOL_NAMES_KEY: &str = "behavry.tool-names";
/// Most servers whose tool names are kept.
const MAX_NAMED_SERVERS: usize = 256;

/// Shared-data key prefix of the tool definitions this Envoy took on first use and the polled
/// pin set may not hold yet: `behavry.pins-first-use/[tenant, server]` → `{tool: hash}`.
const FIRST_USE_KEY_PREFIX: &str = "behavry.pins-first-use/";
/// Shared-data key prefix of the definitions last shown to a session (or an agent without
/// sessions): `<tenant>/[server, scope]` → `{tool: hash}`.
const SHOWN_PINS_KEY_PREFIX: &str = "behavry.pins-shown/";

/// Per tenant: a listing through another tenant's listener says nothing of what this one showed.
fn shown_pins_key(tenant: &str, server: &str, scope: &str) -> String {
    pair_key(&format!("{SHOWN_PINS_KEY_PREFIX}{tenant}/"), server, scope)
}

/// Per tenant: two listeners of one Envoy may serve two tenants with the same server names.
fn first_use_key(tenant: &str, server: &str) -> String {
    pair_key(FIRST_USE_KEY_PREFIX, tenant, server)
}

/// The line of a batch the sink will never take as it is: a `badLine` refusal (400) names it; a
/// batch of one event over the sink's size (413) is that event.
fn refused_line(status: Option<&str>, body: &str, events: usize) -> Option<usize> {
    match status? {
        "400" => serde_json::from_str::<serde_json::Value>(body)
            .ok()?
            .get("line")?
            .as_u64()
            .and_then(|line| usize::try_from(line).ok()),
        "413" if events == 1 => Some(1),
        _ => None,
    }
}

/// Starts `POST /v1/events` of an NDJSON `body` to the audit-sink's cluster; the call's token.
fn post_events(config: &FilterConfig, body: &[u8]) -> Result<u32, Status> {
    let sink = &config.audit.sink;
    hostcalls::dispatch_http_call(
        &sink.cluster,
        vec![
            (":method", "POST"),
            (":path", EVENTS_PATH),
            (":authority", sink.authority.as_str()),
            ("content-type", "application/x-ndjson"),
        ],
        Some(body),
        vec![],
        Duration::from_millis(sink.timeout_ms),
    )
}

/// Audit events as NDJSON lines (one that cannot be encoded is logged).
fn encode_events(events: &[behavry_core::wire::AuditEvent]) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|event| match serde_json::to_vec(event) {
            Ok(line) => Some(line),
            Err(err) => {
                log(
                    LogLevel::Error,
                    &format!("audit event {} not encoded: {err}", event.event_id),
                );
                None
            }
        })
        .collect()
}

/// Puts audit lines on the shared queue, counted in the backlog before they are queued (a
/// worker that ships and is acknowledged first must find them counted).
fn queue_lines(queue_id: Option<u32>, metrics: &AuditMetrics, lines: Vec<Vec<u8>>) {
    let Some(queue_id) = queue_id else {
        return;
    };
    if lines.is_empty() {
        return;
    }
    let mut backlog = adjust_audit_backlog(i64::try_from(lines.len()).unwrap_or(i64::MAX));
    for line in lines {
        if let Err(status) = hostcalls::enqueue_shared_queue(queue_id, Some(&line)) {
            log(
                LogLevel::Error,
                &format!(
                    "audit event not queued: {status:?}: {}",
                    String::from_utf8_lossy(&line)
                ),
            );
            backlog = adjust_audit_backlog(-1);
        }
    }
    metrics.show_backlog(backlog);
}

/// A commit in flight in `audit.sync` mode: what the call does once it lands, and the lines to
/// queue if it does not.
struct SyncCommit {
    token: u32,
    action: DecisionAction,
    lines: Vec<Vec<u8>>,
}

/// Shared data: the audit events queued by this Envoy's workers and not yet acknowledged by the
/// sink (docs/filter.md "Audit delivery").
const AUDIT_BACKLOG_KEY: &str = "behavry.audit-backlog";

/// The audit backlog now (never below zero; see [`adjust_audit_backlog`]).
fn audit_backlog() -> u64 {
    u64::try_from(shared_value::<i64>(AUDIT_BACKLOG_KEY).0).unwrap_or(0)
}

/// Adds `delta` events to the audit backlog (compare-and-swap until it lands: a lost decrement
/// would keep refusing calls); the new backlog. The count is signed: a batch acknowledged by
/// one worker before another counted its events up leaves it below zero for that moment, and
/// clamping there would lose the decrement for good.
fn adjust_audit_backlog(delta: i64) -> u64 {
    for _ in 0..64 {
        let (value, cas) = shared_value::<i64>(AUDIT_BACKLOG_KEY);
        let next = value.saturating_add(delta);
        match hostcalls::set_shared_data(AUDIT_BACKLOG_KEY, Some(next.to_string().as_bytes()), cas)
        {
            Ok(()) => return u64::try_from(next).unwrap_or(0),
            Err(Status::CasMismatch) => continue,
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("audit backlog not counted ({delta:+} events): {status:?}"),
                );
                return u64::try_from(value).unwrap_or(0);
            }
        }
    }
    log(
        LogLevel::Error,
        &format!("audit backlog not counted ({delta:+} events): contended"),
    );
    audit_backlog()
}

/// The filter's audit delivery metrics (Envoy stats in its `wasmcustom` namespace): the backlog as a
/// gauge, calls refused at the bound and calls let through over it as counters.
#[derive(Debug, Clone, Copy, Default)]
struct AuditMetrics {
    backlog: Option<u32>,
    refused: Option<u32>,
    over_limit: Option<u32>,
}

impl AuditMetrics {
    fn define() -> AuditMetrics {
        // proxy-wasm 0.2 panics only on a status Envoy does not give for these two valid types.
        let define = |kind, name: &str| hostcalls::define_metric(kind, name).ok();
        AuditMetrics {
            backlog: define(MetricType::Gauge, "behavry_audit_backlog"),
            refused: define(MetricType::Counter, "behavry_audit_backlog_refused_calls"),
            over_limit: define(
                MetricType::Counter,
                "behavry_audit_backlog_over_limit_calls",
            ),
        }
    }

    fn show_backlog(&self, backlog: u64) {
        if let Some(id) = self.backlog {
            let _ = hostcalls::record_metric(id, backlog);
        }
    }

    fn count(&self, counter: Option<u32>) {
        if let Some(id) = counter {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}

/// A JSON value in shared data (the default when absent or unreadable), with its CAS token.
fn shared_value<T: DeserializeOwned + Default>(key: &str) -> (T, Option<u32>) {
    match hostcalls::get_shared_data(key) {
        Ok((Some(value), cas)) => (serde_json::from_slice(&value).unwrap_or_default(), cas),
        Ok((None, cas)) => (T::default(), cas),
        Err(_) => (T::default(), None),
    }
}

/// Change the value at `key` (compare-and-swap, retried, so two workers changing it at once both
/// land); `what` names it in the log when it cannot be stored.
fn update_shared<T: DeserializeOwned + Serialize + Default>(
    key: &str,
    what: &str,
    change: impl Fn(&mut T),
) {
    for _ in 0..8 {
        let (mut value, cas) = shared_value::<T>(key);
        change(&mut value);
        let Ok(json) = serde_json::to_vec(&value) else {
            return;
        };
        match hostcalls::set_shared_data(key, Some(&json), cas) {
            Ok(()) => return,
            Err(Status::CasMismatch) => continue,
            Err(status) => {
                log(LogLevel::Warn, &format!("{what} not stored: {status:?}"));
                return;
            }
        }
    }
}

/// A `{name: hash}` map in shared data.
fn shared_map(key: &str) -> BTreeMap<String, String> {
    shared_value(key).0
}

/// Add `entries` to the map at `key`, keeping at most [`MAX_REMEMBERED_TOOLS`] names.
fn merge_shared_map(key: &str, entries: &[(String, String)]) {
    update_shared(key, "pins", |map: &mut BTreeMap<String, String>| {
        for (name, hash) in entries {
            if map.len() < MAX_REMEMBERED_TOOLS || map.contains_key(name) {
                map.insert(name.clone(), hash.clone());
            }
        }
    });
}

/// Shared-data key prefix of what an agent's recent answers returned (docs/injection.md,
/// "Cross-server flow"): `behavry.flow/<agent as JSON>` → [`FlowMemory`].
const FLOW_KEY_PREFIX: &str = "behavry.flow/";

fn flow_key(agent: &str) -> String {
    format!(
        "{FLOW_KEY_PREFIX}{}",
        serde_json::to_string(agent).unwrap_or_default()
    )
}

/// Add what an answer returned to the agent's flow memory (bounded, old entries forgotten).
fn remember_flow(agent: &str, record: FlowMemory) {
    let now = now_ms();
    update_shared(&flow_key(agent), "flow", |memory: &mut FlowMemory| {
        memory.merge(record.clone(), now);
    });
}

/// Send `body` upstream instead of the `size` bytes received; its length is no longer the one the
/// client declared (the headers are still held: the filter paused them for the body).
/// `false` when the host refused: the caller must not let the request go. (proxy-wasm 0.2's
/// host calls stop the VM on a status they do not expect, which keeps the request from going
/// too.)
fn replace_request_body(size: usize, body: &[u8]) -> bool {
    let replaced = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, size, body)
        .and_then(|()| hostcalls::remove_map_value(MapType::HttpRequestHeaders, "content-length"));
    if let Err(status) = &replaced {
        log(
            LogLevel::Error,
            &format!("cannot replace the request body: {status:?}"),
        );
    }
    replaced.is_ok()
}

/// Queue the definitions a listing showed that are not pinned, for the sidecar.
fn queue_pin_observations(observations: &[PinObservation], queue_id: Option<u32>) {
    let Some(queue_id) = queue_id else {
        return;
    };
    for observation in observations {
        let Ok(line) = serde_json::to_vec(observation) else {
            continue;
        };
        if line.len() > MAX_PIN_OBSERVATION_BYTES {
            log(
                LogLevel::Warn,
                &format!(
                    "definition of tool `{}` on `{}` too large to report ({} bytes)",
                    observation.tool,
                    observation.server,
                    line.len()
                ),
            );
            continue;
        }
        if let Err(status) = hostcalls::enqueue_shared_queue(queue_id, Some(&line)) {
            log(
                LogLevel::Warn,
                &format!("listed definition not queued: {status:?}"),
            );
        }
    }
}

/// Shared-data key prefix of the call that created a task: `[server, taskId]` → [`TaskFacts`].
const TASK_KEY_PREFIX: &str = "behavry.task/";
/// Shared-data key prefix of the tasks an agent created: `[server, agent]` → JSON array of ids.
const AGENT_TASKS_KEY_PREFIX: &str = "behavry.tasks/";
/// At most this many task ids are kept per agent and server for `tasks/list` (the oldest go
/// first; a task no longer listed stays reachable by its id).
const MAX_LISTED_TASKS: usize = 256;

/// What this Envoy remembers of a server (shared by its workers).
struct SharedMemory<'a> {
    server: &'a str,
    /// The tenant of this listener's pins: listeners of one Envoy share the data (one `vm_id`).
    tenant: &'a str,
    /// The worker's pin set.
    pins: Option<Arc<PinSet>>,
}

impl Known for SharedMemory<'_> {
    fn tool(&self, tool: &str) -> Option<ToolFacts> {
        known_tool(self.server, tool)
    }

    fn task(&self, task_id: &str) -> Option<TaskFacts> {
        let key = pair_key(TASK_KEY_PREFIX, self.server, task_id);
        let (value, _) = hostcalls::get_shared_data(&key).ok()?;
        serde_json::from_slice(&value?).ok()
    }

    fn pins(&self) -> Option<PinContext> {
        Some(PinContext {
            set: self.pins.clone()?,
            provisional: shared_map(&first_use_key(self.tenant, self.server)),
        })
    }

    fn listed_pins(&self, scope: &str) -> BTreeMap<String, String> {
        shared_map(&shown_pins_key(self.tenant, self.server, scope))
    }

    fn server_poisoning(&self) -> Option<ServerPoisoning> {
        shared_value(&server_block_key(self.server)).0
    }

    fn other_servers_tools(&self) -> BTreeMap<String, Vec<String>> {
        let mut all: BTreeMap<String, Vec<String>> = shared_value(TOOL_NAMES_KEY).0;
        all.remove(self.server);
        all
    }

    fn flow(&self, agent: &str) -> FlowMemory {
        shared_value(&flow_key(agent)).0
    }

    fn tasks_of(&self, agent: &str, delegation: &[String]) -> Vec<String> {
        // Only ids still bound to this agent and chain (an id handed out again is no one's).
        agent_tasks(self.server, agent)
            .0
            .into_iter()
            .filter(|id| {
                self.task(id)
                    .is_some_and(|task| task.belongs_to(agent, delegation))
            })
            .collect()
    }
}

fn agent_tasks(server: &str, agent: &str) -> (Vec<String>, Option<u32>) {
    let key = pair_key(AGENT_TASKS_KEY_PREFIX, server, agent);
    match hostcalls::get_shared_data(&key) {
        Ok((Some(value), cas)) => (serde_json::from_slice(&value).unwrap_or_default(), cas),
        Ok((None, cas)) => (Vec::new(), cas),
        Err(_) => (Vec::new(), None),
    }
}

/// Binds a task the server created to the call that created it. An id the server hands out
/// again for another agent, chain or tool is bound to no one from then on (every request about
/// it is answered "not found"): neither creator may reach the other's task.
fn remember_task(server: &str, task_id: &str, facts: &TaskFacts) {
    let memory = SharedMemory {
        server,
        tenant: "",
        pins: None,
    };
    let record = match memory.task(task_id) {
        None => facts.clone(),
        Some(known) if known == *facts => return,
        Some(_) => {
            log(
                LogLevel::Warn,
                &format!(
                    "server {server} created task {task_id:?} again for another call; the task is bound to no one"
                ),
            );
            TaskFacts::unbound(&facts.tool)
        }
    };
    let Ok(json) = serde_json::to_vec(&record) else {
        return;
    };
    let key = pair_key(TASK_KEY_PREFIX, server, task_id);
    if let Err(status) = hostcalls::set_shared_data(&key, Some(&json), None) {
        log(
            LogLevel::Warn,
            &format!("task binding not stored: {status:?}"),
        );
        return;
    }
    if record.agent.is_empty() {
        return;
    }
    // The agent's list, compare-and-swap so two workers adding at once both land.
    let key = pair_key(AGENT_TASKS_KEY_PREFIX, server, &facts.agent);
    for _ in 0..8 {
        let (mut ids, cas) = agent_tasks(server, &facts.agent);
        ids.push(task_id.to_owned());
        let excess = ids.len().saturating_sub(MAX_LISTED_TASKS);
        ids.drain(..excess);
        let Ok(json) = serde_json::to_vec(&ids) else {
            return;
        };
        match hostcalls::set_shared_data(&key, Some(&json), cas) {
            Ok(()) => return,
            Err(Status::CasMismatch) => continue,
            Err(status) => {
                log(LogLevel::Warn, &format!("task list not stored: {status:?}"));
                return;
            }
        }
    }
}

fn jwt_metadata_bytes(key: &str, field: &str) -> Option<Vec<u8>> {
    let path = vec![
        "metadata",
        "filter_metadata",
        "envoy.filters.http.jwt_authn",
        key,
        field,
    ];
    hostcalls::get_property(path).ok().flatten()
}

/// One verified string from `jwt_authn`'s dynamic metadata (`<key>.<field>`), read as plain
/// bytes (DESIGN: reading the whole map gives Envoy's pair serialization, not JSON). Identity never
/// comes from a request header.
fn jwt_metadata(key: &str, field: &str) -> Option<String> {
    let value = String::from_utf8(jwt_metadata_bytes(key, field)?).ok()?;
    (!value.is_empty()).then_some(value)
}

/// A numeric claim from `jwt_authn`'s metadata, in whole seconds. Envoy hands a protobuf `Value`
/// number over as its 8-byte little-endian double; a decimal string is accepted too.
fn jwt_metadata_seconds(key: &str, field: &str) -> Option<i64> {
    let bytes = jwt_metadata_bytes(key, field)?;
    let value = match <[u8; 8]>::try_from(bytes.as_slice()) {
        Ok(raw) => f64::from_le_bytes(raw),
        Err(_) => std::str::from_utf8(&bytes).ok()?.trim().parse().ok()?,
    };
    // Saturating float-to-int conversion; NaN is no time at all.
    (!value.is_nan()).then_some(value as i64)
}

fn session_owner(session_id: &str) -> Option<String> {
    let key = format!("{SESSION_KEY_PREFIX}{session_id}");
    let (value, _) = hostcalls::get_shared_data(&key).ok()?;
    String::from_utf8(value?).ok().filter(|v| !v.is_empty())
}

/// The client fingerprint recorded when the session was opened, if any.
fn session_client(session_id: &str) -> Option<ClientFingerprint> {
    let key = format!("{SESSION_CLIENT_KEY_PREFIX}{session_id}");
    let (value, _) = hostcalls::get_shared_data(&key).ok()?;
    serde_json::from_slice(&value?).ok()
}

fn bind_session_client(session_id: &str, fingerprint_json: &str) {
    let key = format!("{SESSION_CLIENT_KEY_PREFIX}{session_id}");
    // Like the owner: the fingerprint of the request that opened the session, set once.
    let Ok((existing, cas)) = hostcalls::get_shared_data(&key) else {
        return;
    };
    if existing.is_some_and(|v| !v.is_empty()) {
        return;
    }
    if let Err(status) = hostcalls::set_shared_data(&key, Some(fingerprint_json.as_bytes()), cas) {
        log(
            LogLevel::Warn,
            &format!("session fingerprint not stored: {status:?}"),
        );
    }
}

fn bind_session(session_id: &str, agent: &str) {
    let key = format!("{SESSION_KEY_PREFIX}{session_id}");
    // First binding wins: an existing owner is never replaced.
    let Ok((existing, cas)) = hostcalls::get_shared_data(&key) else {
        return;
    };
    if existing.is_some_and(|v| !v.is_empty()) {
        return;
    }
    if let Err(status) = hostcalls::set_shared_data(&key, Some(agent.as_bytes()), cas) {
        log(
            LogLevel::Warn,
            &format!("session binding not stored: {status:?}"),
        );
    }
}

impl BehavryHttp {
    fn flush_audit(&mut self) {
        let Some(exchange) = &mut self.exchange else {
            return;
        };
        if let Some(report) = exchange.take_usage() {
            if let Some(key) = exchange.lease_key()
                && let Ok(mut inline) = self.inline.try_borrow_mut()
            {
                inline.count_response_bytes(&key, report.bytes);
                queue_returns(&mut inline, self.usage_queue_id);
            }
            queue_usage(&report, self.usage_queue_id);
        }
        let events = exchange.take_audit_events();
        if events.is_empty() {
            return;
        }
        let Some(queue_id) = self.queue_id else {
            return;
        };
        queue_lines(Some(queue_id), &self.audit_metrics, encode_events(&events));
    }

    /// At the audit backlog's bound, a governed call is refused when `audit.whenFull` is closed
    /// (its refusal is recorded), else let through and counted. `None`: go on deciding.
    fn audit_backlog_refusal(&mut self, config: &FilterConfig) -> Option<Action> {
        // This call's intent is already counted: refuse only past the bound.
        let queued = audit_backlog();
        if queued <= config.audit.max_queued {
            return None;
        }
        if config.audit.when_full == FailureMode::Open {
            self.audit_metrics.count(self.audit_metrics.over_limit);
            return None;
        }
        self.audit_metrics.count(self.audit_metrics.refused);
        let exchange = self.exchange.as_mut()?;
        let action = exchange.refuse_for_audit_backlog(queued, config.audit.max_queued, now_ms());
        Some(self.after_decision(action))
    }

    fn ask_authz(config: &FilterConfig, body: &[u8]) -> Result<u32, String> {
        call_authz(
            config,
            "POST",
            DECIDE_PATH,
            Some(("application/json", body)),
        )
        .map_err(|status| format!("cannot call cluster `{}`: {status:?}", config.authz.cluster))
    }

    fn ask_credentials(config: &FilterConfig, body: &[u8]) -> Result<u32, String> {
        let Some(source) = &config.credentials else {
            return Err("no `credentials` section is configured".to_string());
        };
        let target = &source.target;
        // RFC 6750 §2.1: the proxy authenticates to the sidecar with its bearer token.
        let authorization = format!("Bearer {}", source.proxy_token);
        hostcalls::dispatch_http_call(
            &target.cluster,
            vec![
                (":method", "POST"),
                (":path", CREDENTIALS_PATH),
                (":authority", target.authority.as_str()),
                ("content-type", "application/json"),
                ("authorization", authorization.as_str()),
            ],
            Some(body),
            vec![],
            Duration::from_millis(target.timeout_ms),
        )
        .map_err(|status| format!("cannot call cluster `{}`: {status:?}", target.cluster))
    }

    /// At the point the request would be forwarded on a route with `upstreamCredential`:
    /// `Continue` when the credential is in place now, `Pause` while it is fetched (the answer
    /// resumes the request) or when the agent was answered.
    fn with_credential(&mut self) -> Action {
        let Some(exchange) = self.exchange.as_mut() else {
            return Action::Pause;
        };
        let now = now_ms();
        let step = match self.credentials.try_borrow() {
            Ok(cache) => exchange.credential_step(&cache, now),
            // Not reachable on one thread; a miss is the safe reading.
            Err(_) => exchange.credential_step(&CredentialCache::with_capacity(1), now),
        };
        self.carry_out(step)
    }

    fn carry_out(&mut self, step: CredentialStep) -> Action {
        let Some(config) = self.config.clone() else {
            return Action::Pause;
        };
        let action = match step {
            CredentialStep::Use(credential) => {
                if set_credential(&credential) {
                    Action::Continue
                } else {
                    self.refuse_credential("the credential could not be set on the request")
                }
            }
            CredentialStep::Fetch(body) => match Self::ask_credentials(&config, &body) {
                Ok(token) => {
                    self.credential_call = Some(token);
                    Action::Pause
                }
                Err(why) => self.refuse_credential(&why),
            },
            CredentialStep::Reply(reply) => {
                send_reply(&reply);
                Action::Pause
            }
        };
        self.flush_audit();
        action
    }

    fn refuse_credential(&mut self, why: &str) -> Action {
        if let Some(exchange) = self.exchange.as_mut() {
            let reply = exchange
                .credential_failure(CredentialFailure::Unavailable(why.to_string()), now_ms());
            send_reply(&reply);
        }
        Action::Pause
    }

    fn credential_received(&mut self, headers: usize, body_size: usize) {
        let Some(exchange) = self.exchange.as_mut() else {
            return;
        };
        let status = call_status(headers);
        let body = call_body(body_size);
        let now = now_ms();
        let step = match self.credentials.try_borrow_mut() {
            Ok(mut cache) => {
                exchange.on_credential_answer(&mut cache, status.as_deref(), &body, now)
            }
            Err(_) => exchange.on_credential_answer(
                &mut CredentialCache::with_capacity(1),
                status.as_deref(),
                &body,
                now,
            ),
        };
        if let Action::Continue = self.carry_out(step)
            && let Err(status) = hostcalls::resume_http_request()
        {
            log(
                LogLevel::Error,
                &format!("cannot resume request: {status:?}"),
            );
        }
    }

    /// Applies a decision (or the failure to get one); `Continue` means the request may go on.
    fn decided(&mut self, decision: Result<DecisionResponse, String>) -> Action {
        let (Some(config), Some(exchange)) = (self.config.clone(), self.exchange.as_mut()) else {
            return Action::Pause;
        };
        if config.inline.enabled
            && let Ok(decision) = &decision
            && let Ok(mut inline) = self.inline.try_borrow_mut()
        {
            inline.remember(
                || exchange.decision_key(),
                || exchange.agent_identity(),
                decision,
                now_ms(),
            );
            queue_returns(&mut inline, self.usage_queue_id);
        }
        let action = exchange.on_decision(&config, decision, now_ms());
        self.after_decision(action)
    }

    /// Carry out what a decision asks for.
    fn after_decision(&mut self, action: DecisionAction) -> Action {
        if let Some(config) = self.config.clone()
            && config.audit.sync
            && !matches!(action, DecisionAction::Reply(_))
        {
            return self.commit_then(action, &config);
        }
        self.flush_audit();
        self.carry_on(action)
    }

    /// `audit.sync`: the call's records so far (intent, decision) go to the sink now, and the
    /// call waits for their commit before `action` is carried out.
    fn commit_then(&mut self, action: DecisionAction, config: &FilterConfig) -> Action {
        let events = self
            .exchange
            .as_mut()
            .map(Exchange::take_audit_events)
            .unwrap_or_default();
        // Usage reports still go their way.
        self.flush_audit();
        let lines = encode_events(&events);
        let mut body = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in &lines {
            body.extend_from_slice(line);
            body.push(b'\n');
        }
        match post_events(config, &body) {
            Ok(token) => {
                self.sync_commit = Some(SyncCommit {
                    token,
                    action,
                    lines,
                });
                Action::Pause
            }
            Err(status) => self.uncommitted(
                lines,
                &format!(
                    "cannot reach audit cluster `{}`: {status:?}",
                    config.audit.sink.cluster
                ),
            ),
        }
    }

    /// The sink answered the commit of `audit.sync`.
    fn commit_answered(&mut self, commit: SyncCommit, headers: usize, body_size: usize) {
        let status = call_status(headers);
        if status.as_deref() == Some("200") {
            if let Action::Continue = self.carry_on(commit.action)
                && let Err(status) = hostcalls::resume_http_request()
            {
                log(
                    LogLevel::Error,
                    &format!("cannot resume request: {status:?}"),
                );
            }
            return;
        }
        let why = match status {
            Some(status) => format!(
                "the audit-sink answered HTTP {status}: {}",
                String::from_utf8_lossy(&call_body(body_size.min(200)))
            ),
            None => "the audit-sink is unreachable or timed out".to_owned(),
        };
        self.uncommitted(commit.lines, &why);
    }

    /// The records could not be committed: they are queued (nothing is lost) and the call is
    /// refused.
    fn uncommitted(&mut self, lines: Vec<Vec<u8>>, why: &str) -> Action {
        queue_lines(self.queue_id, &self.audit_metrics, lines);
        if let Some(exchange) = self.exchange.as_mut() {
            let reply = exchange.refuse_uncommitted(why, now_ms());
            send_reply(&reply);
        }
        self.flush_audit();
        Action::Pause
    }

    /// Carry out what a decision asks for, its records dealt with.
    fn carry_on(&mut self, action: DecisionAction) -> Action {
        match action {
            DecisionAction::Resume => Action::Continue,
            DecisionAction::NeedCredential => self.with_credential(),
            DecisionAction::Reply(reply) => {
                send_reply(&reply);
                Action::Pause
            }
        }
    }

    fn request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (Some(config), Some(exchange)) = (self.config.clone(), self.exchange.as_mut()) else {
            return Action::Continue;
        };
        let body = if end_of_stream {
            match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
                Ok(body) => Some(body.unwrap_or_default()),
                Err(status) => {
                    log(
                        LogLevel::Error,
                        &format!("cannot read request body: {status:?}"),
                    );
                    Some(Vec::new())
                }
            }
        } else {
            None
        };
        let server = exchange.server().to_owned();
        let action = exchange.on_request_body(
            &config,
            body_size,
            body.as_deref(),
            now_ms(),
            &SharedMemory {
                server: &server,
                tenant: &config.tenant,
                pins: self.pins.borrow().clone(),
            },
        );
        // The body is replaced before the outcome that says it was redacted is queued.
        if let Some(exchange) = self.exchange.as_mut()
            && let Some(rewritten) = exchange.take_request_rewrite()
            && !replace_request_body(body_size, &rewritten)
        {
            send_reply(&exchange.unredactable_request());
            self.flush_audit();
            return Action::Pause;
        }
        // `audit.sync`: a call to be decided keeps its intent until the decision, so that both
        // are committed together before it runs.
        if !(config.audit.sync && matches!(action, BodyAction::AskAuthz(_))) {
            self.flush_audit();
        }
        match action {
            BodyAction::Buffer => Action::Pause,
            BodyAction::Forward => Action::Continue,
            BodyAction::NeedCredential => self.with_credential(),
            BodyAction::AskAuthz(request) => {
                if let Some(refused) = self.audit_backlog_refusal(&config) {
                    return refused;
                }
                // The worker's table or cache may know the answer: no callout then.
                let Some(exchange) = self.exchange.as_mut() else {
                    return Action::Pause;
                };
                let local = if config.inline.enabled {
                    self.inline
                        .try_borrow_mut()
                        .ok()
                        .and_then(|mut inline| exchange.local_decision(&mut inline, now_ms()))
                } else {
                    None
                };
                if let Some((decision, source)) = local {
                    let action = exchange.on_local_decision(&config, decision, source, now_ms());
                    return self.after_decision(action);
                }
                match Self::ask_authz(&config, &request) {
                    Ok(token) => {
                        self.authz_call = Some(token);
                        Action::Pause
                    }
                    Err(why) => self.decided(Err(why)),
                }
            }
            BodyAction::Reply(reply) => {
                send_reply(&reply);
                Action::Pause
            }
        }
    }
}

impl Context for BehavryHttp {
    fn on_http_call_response(
        &mut self,
        token: u32,
        headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if self.credential_call == Some(token) {
            self.credential_call = None;
            self.credential_received(headers, body_size);
            return;
        }
        if self.sync_commit.as_ref().is_some_and(|c| c.token == token) {
            if let Some(commit) = self.sync_commit.take() {
                self.commit_answered(commit, headers, body_size);
            }
            return;
        }
        if self.authz_call != Some(token) {
            return;
        }
        self.authz_call = None;
        let status = call_status(headers);
        let body = call_body(body_size);
        let decision = match status.as_deref() {
            Some("200") => serde_json::from_slice::<DecisionResponse>(&body)
                .map_err(|e| format!("authz-sidecar answered with an unreadable decision: {e}")),
            Some(other) => Err(format!(
                "authz-sidecar answered HTTP {other}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )),
            None => Err("authz-sidecar unreachable or timed out".to_string()),
        };
        if let Action::Continue = self.decided(decision)
            && let Err(status) = hostcalls::resume_http_request()
        {
            log(
                LogLevel::Error,
                &format!("cannot resume request: {status:?}"),
            );
        }
    }
}

impl HttpContext for BehavryHttp {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        // A `:path` (or `:method`) that is missing or not UTF-8 cannot be matched against the
        // routes; treating it as "not MCP" would let a governed call through undecided (Envoy's
        // HTTP/2 codec passes bytes ≥ 0x80 in `:path`). Refused outright (RFC 9110 §15.5.1).
        let (Some(path), Some(_)) = (request_header(":path"), request_header(":method")) else {
            send_reply(&LocalReply {
                status: 400,
                headers: vec![],
                body: b"request path or method is not valid UTF-8".to_vec(),
            });
            return Action::Pause;
        };
        let Some(config) = self.config.clone() else {
            send_reply(&LocalReply {
                status: 503,
                headers: vec![],
                body: b"behavry filter is not configured".to_vec(),
            });
            return Action::Pause;
        };
        // The verified payload is for this filter only: it never goes upstream, on any path,
        // whether or not it is used (it carries the agent's claims).
        let jwt_payload = request_header(&config.jwt_payload_header);
        if jwt_payload.is_some()
            && let Err(status) =
                hostcalls::remove_map_value(MapType::HttpRequestHeaders, &config.jwt_payload_header)
        {
            log(
                LogLevel::Error,
                &format!("cannot remove the token payload header: {status:?}"),
            );
            send_reply(&LocalReply {
                status: 500,
                headers: vec![],
                body: b"behavry filter could not strip the token payload".to_vec(),
            });
            return Action::Pause;
        }
        let session_id = request_header("mcp-session-id");
        let head = RequestHead {
            method: request_header(":method").unwrap_or_default(),
            path,
            session_owner: session_id.as_deref().and_then(session_owner),
            session_client: session_id.as_deref().and_then(session_client),
            session_id,
            protocol_version: request_header("mcp-protocol-version"),
            mcp_method: request_header("mcp-method"),
            mcp_name: request_header("mcp-name"),
            traceparent: request_header("traceparent"),
            agent: jwt_metadata(&config.jwt_metadata_key, "sub"),
            token_type: jwt_metadata(&config.jwt_header_metadata_key, "typ"),
            issued_at: jwt_metadata_seconds(&config.jwt_metadata_key, "iat"),
            now_secs: now_ms() / 1000,
            revoked: false,
            jwt_payload,
            scheme: request_header(":scheme"),
            authority: request_header(":authority"),
            user_agent: request_header("user-agent"),
            header_names: request_header_names(),
        };
        let head = RequestHead {
            revoked: self.revocations.try_borrow().is_ok_and(|set| {
                set.is_revoked(
                    jwt_metadata(&config.jwt_metadata_key, "jti").as_deref(),
                    head.agent.as_deref(),
                )
            }),
            ..head
        };
        if let Some(reply) = resource_metadata::answer(
            &config,
            &head.method,
            &head.path,
            &request_header(":scheme").unwrap_or_else(|| "http".to_string()),
            &request_header(":authority").unwrap_or_default(),
        ) {
            send_reply(&reply);
            return Action::Pause;
        }
        let random = random_bytes(self.context_id);
        let Some(mut exchange) = Exchange::start(&config, head.clone(), random) else {
            if let Some(reply) = unrouted(&config, &head.path) {
                send_reply(&reply);
                return Action::Pause;
            }
            return Action::Continue;
        };
        let action = exchange.on_request_head(end_of_stream);
        self.exchange = Some(exchange);
        match action {
            HeadAction::Continue | HeadAction::WaitForBody | HeadAction::NeedCredential => {
                // Answers are read and re-emitted as they are: ask for them uncompressed.
                if request_header("accept-encoding").is_some()
                    && let Err(status) =
                        hostcalls::remove_map_value(MapType::HttpRequestHeaders, "accept-encoding")
                {
                    log(
                        LogLevel::Error,
                        &format!("cannot drop accept-encoding: {status:?}"),
                    );
                }
                match action {
                    HeadAction::WaitForBody => Action::Pause,
                    HeadAction::NeedCredential => self.with_credential(),
                    _ => Action::Continue,
                }
            }
            HeadAction::Reply(reply) => {
                send_reply(&reply);
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.request_body(body_size, end_of_stream)
    }

    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        // Continuing here would release a request whose body was never decided.
        let Some(exchange) = &mut self.exchange else {
            return Action::Continue;
        };
        match exchange.on_request_trailers() {
            Some(reply) => {
                send_reply(&reply);
                Action::Pause
            }
            None => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let (Some(config), Some(exchange)) = (self.config.clone(), self.exchange.as_mut()) else {
            return Action::Continue;
        };
        let status = response_header(":status")
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
        let content_type = response_header("content-type");
        if let Some((session, agent)) =
            exchange.session_to_bind(response_header("mcp-session-id").as_deref())
        {
            bind_session(&session, &agent);
            if let Some(client) = exchange.session_client_json() {
                bind_session_client(&session, &client);
            }
        }
        let action = exchange.on_response_head(
            status,
            content_type.as_deref(),
            end_of_stream,
            &config,
            now_ms(),
        );
        self.flush_audit();
        match action {
            ResponseHeadAction::Continue => Action::Continue,
            ResponseHeadAction::StreamWithoutLength => {
                if response_header("content-length").is_some()
                    && let Err(status) =
                        hostcalls::remove_map_value(MapType::HttpResponseHeaders, "content-length")
                {
                    log(
                        LogLevel::Error,
                        &format!("cannot drop content-length: {status:?}"),
                    );
                }
                Action::Continue
            }
            ResponseHeadAction::WaitForBody => Action::Pause,
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (Some(config), Some(exchange)) = (self.config.clone(), self.exchange.as_mut()) else {
            return Action::Continue;
        };
        let chunk = if exchange.needs_response_bytes(end_of_stream) && body_size > 0 {
            match hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size) {
                Ok(chunk) => chunk.unwrap_or_default(),
                Err(status) => {
                    log(
                        LogLevel::Error,
                        &format!("cannot read response body: {status:?}"),
                    );
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        let action = exchange.on_response_body(&config, body_size, &chunk, end_of_stream, now_ms());
        let listed = exchange.take_listed_tools();
        if !listed.is_empty() {
            remember_tools(exchange.server(), &listed);
        }
        queue_pin_observations(&exchange.take_pin_observations(), self.pins_queue_id);
        let (shown, first_use) = exchange.take_shown_pins();
        if !first_use.is_empty() {
            let key = first_use_key(&config.tenant, exchange.server());
            merge_shared_map(&key, &first_use);
        }
        if !shown.is_empty() {
            let key = shown_pins_key(&config.tenant, exchange.server(), &exchange.pin_scope());
            merge_shared_map(&key, &shown);
        }
        if let Some((task_id, facts)) = exchange.take_created_task() {
            remember_task(exchange.server(), &task_id, &facts);
        }
        if let Some(block) = exchange.take_server_block() {
            block_server(exchange.server(), block.as_ref());
        }
        if let Some((agent, record)) = exchange.take_flow(now_ms()) {
            remember_flow(&agent, record);
        }
        self.flush_audit();
        match action {
            ChunkAction::Continue => Action::Continue,
            ChunkAction::Buffer => Action::Pause,
            ChunkAction::Replace(bytes) => {
                replace_response_body(body_size, &bytes);
                Action::Continue
            }
            ChunkAction::ReplaceBody(bytes) => {
                replace_response_body(body_size, &bytes);
                // The headers are still held (JSON bodies): the length must match the new body.
                // Only called then: proxy-wasm 0.2 panics on a header write the host refuses.
                if let Err(status) = hostcalls::set_map_value(
                    MapType::HttpResponseHeaders,
                    "content-length",
                    Some(&bytes.len().to_string()),
                ) {
                    log(
                        LogLevel::Error,
                        &format!("cannot set content-length: {status:?}"),
                    );
                }
                Action::Continue
            }
        }
    }

    fn on_http_response_trailers(&mut self, _trailers: usize) -> Action {
        if let Some(exchange) = &mut self.exchange {
            exchange.on_response_trailers(now_ms());
        }
        self.flush_audit();
        Action::Continue
    }

    fn on_log(&mut self) {
        // A stream that ended while its `audit.sync` commit was in flight: its records go the
        // usual way (the sink ignores them if the commit landed after all).
        if let Some(commit) = self.sync_commit.take() {
            queue_lines(self.queue_id, &self.audit_metrics, commit.lines);
        }
        if let Some(exchange) = &mut self.exchange {
            exchange.on_done(now_ms());
        }
        self.flush_audit();
    }
}
