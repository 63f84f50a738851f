//! The API's query parameters, parsed without I/O: every rejection is a reason for a 400.
//!
//! Times are ms since the epoch, RFC 3339 (`2026-11-21T10:00:00Z`, any offset) or a date
//! (`2026-11-21`, midnight UTC), read by chrono, so `2026-02-31` is refused rather than rolled
//! over into March. Lists are paged: `limit` (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`])
//! and `after`, the cursor a previous page's `next` gave.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate};
use kaudit_alerting::AlertKind;

/// Longest range one `/api/v1/buckets` call may ask for.
pub const MAX_RANGE_MS: i64 = 7 * 86_400_000;
/// Items per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 500;
/// Most items per page.
pub const MAX_LIMIT: usize = 5_000;

/// The raw parameters, as axum's `Query` decodes them.
pub type Params = HashMap<String, String>;

/// Which page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub limit: usize,
    /// Only items whose key sorts after this one.
    pub after: Option<String>,
}

/// `GET /api/v1/buckets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketsQuery {
    pub topic: String,
    pub from: i64,
    pub to: i64,
    /// Buckets per answer; the rest from `next` on.
    pub limit: usize,
}

/// `GET /api/v1/alerts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsQuery {
    /// `firing` or `resolved`; all when absent.
    pub state: Option<String>,
    /// Only alerts of this kind, topic and tier, each when given: all three name one alert (the
    /// link every notification carries, [`kaudit_alerting::link`]).
    pub kind: Option<AlertKind>,
    pub topic: Option<String>,
    pub tier: Option<String>,
    pub page: Page,
}

impl AlertsQuery {
    /// Whether `alert` (an alert's JSON, as stored) passes the `kind`, `topic` and `tier` filters.
    pub fn matches(&self, alert: &serde_json::Value) -> bool {
        let is = |field: &str, want: Option<&str>| want.is_none_or(|w| alert[field].as_str() == Some(w));
        is("kind", self.kind.map(AlertKind::as_str))
            && is("topic", self.topic.as_deref())
            && is("tier", self.tier.as_deref())
    }
}

/// Refuse parameters other than `allowed`.
pub fn only(params: &Params, allowed: &[&str]) -> Result<(), String> {
    let mut unknown: Vec<&String> = params.keys().filter(|k| !allowed.contains(&k.as_str())).collect();
    unknown.sort();
    match unknown.first() {
        Some(k) if allowed.is_empty() => Err(format!("unknown parameter {k:?}; this path takes none")),
        Some(k) => Err(format!("unknown parameter {k:?}; expected {}", allowed.join(", "))),
        None => Ok(()),
    }
}

/// `limit` and `after`.
pub fn page(params: &Params) -> Result<Page, String> {
    let limit = limit(params)?;
    let after = params.get("after").cloned();
    if after.as_deref() == Some("") {
        return Err("after=\"\": give the `next` of the previous page, or leave it out".into());
    }
    Ok(Page { limit, after })
}

fn limit(params: &Params) -> Result<usize, String> {
    let Some(raw) = params.get("limit") else { return Ok(DEFAULT_LIMIT) };
    match raw.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!("limit={raw:?} is not a number from 1 to {MAX_LIMIT}")),
    }
}

/// A time parameter: ms since the epoch, RFC 3339 or a date; not before 1970.
pub fn time_param(params: &Params, name: &str) -> Result<i64, String> {
    let raw = params
        .get(name)
        .ok_or_else(|| format!("missing parameter {name:?} (ms since the epoch, RFC 3339 or YYYY-MM-DD)"))?;
    let t = parse_time(raw).map_err(|why| format!("{name}={raw:?} is not a time: {why}"))?;
    if t < 0 {
        return Err(format!("{name}={raw:?} is before 1970"));
    }
    Ok(t)
}

/// ms since the epoch from `raw`, or why not.
pub fn parse_time(raw: &str) -> Result<i64, String> {
    if !raw.is_empty() && raw.trim_start_matches('-').chars().all(|c| c.is_ascii_digit()) {
        return raw.parse::<i64>().map_err(|_| "ms since the epoch out of range".into());
    }
    if raw.len() == 10 {
        let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|e| date_reason(raw, &e))?;
        return Ok(date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_millis());
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{e} (expected RFC 3339 such as 2026-11-21T10:00:00Z, or a date, or ms since the epoch)"))
}

/// Why a `YYYY-MM-DD` is refused: chrono's reason, and for a day past the month's end, which.
fn date_reason(raw: &str, e: &chrono::ParseError) -> String {
    let mut parts = raw.splitn(3, '-').map(|p| p.parse::<i32>().ok());
    if let (Some(Some(y)), Some(Some(m)), Some(Some(d))) = (parts.next(), parts.next(), parts.next())
        && let Some(first) = u32::try_from(m).ok().and_then(|m| NaiveDate::from_ymd_opt(y, m, 1))
    {
        let next = first.checked_add_months(chrono::Months::new(1)).unwrap_or(first);
        let days = next.signed_duration_since(first).num_days();
        if d > days as i32 {
            return format!("{} has {days} days", first.format("%B %Y"));
        }
    }
    format!("{e} (expected YYYY-MM-DD)")
}

/// `topic`, `from`, `to`, `limit` of `/api/v1/buckets`.
pub fn buckets_query(params: &Params) -> Result<BucketsQuery, String> {
    only(params, &["topic", "from", "to", "limit"])?;
    let topic = params.get("topic").filter(|t| !t.is_empty()).ok_or("missing parameter \"topic\"")?.clone();
    let (from, to) = (time_param(params, "from")?, time_param(params, "to")?);
    if from >= to {
        return Err(format!("from ({from}) must be before to ({to})"));
    }
    if to - from > MAX_RANGE_MS {
        return Err(format!("range of {} ms is over the 7-day limit", to - from));
    }
    Ok(BucketsQuery { topic, from, to, limit: limit(params)? })
}

/// `state`, `kind`, `topic`, `tier`, `limit`, `after` of `/api/v1/alerts`.
pub fn alerts_query(params: &Params) -> Result<AlertsQuery, String> {
    only(params, &["state", "kind", "topic", "tier", "limit", "after"])?;
    let state = params.get("state").cloned();
    if let Some(st) = state.as_deref().filter(|st| !["firing", "resolved"].contains(st)) {
        return Err(format!("state={st:?}: expected firing or resolved"));
    }
    let kind = match params.get("kind") {
        None => None,
        Some(k) => Some(AlertKind::from_name(k).ok_or_else(|| {
            let kinds: Vec<&str> = AlertKind::ALL.iter().map(|k| k.as_str()).collect();
            format!("kind={k:?}: expected one of {}", kinds.join(", "))
        })?),
    };
    let (topic, tier) = (non_empty(params, "topic")?, non_empty(params, "tier")?);
    Ok(AlertsQuery { state, kind, topic, tier, page: page(params)? })
}

/// An optional parameter that, when given, is not empty.
fn non_empty(params: &Params, name: &str) -> Result<Option<String>, String> {
    match params.get(name) {
        Some(v) if v.is_empty() => Err(format!("{name}=\"\": give a value or leave it out")),
        v => Ok(v.cloned()),
    }
}

/// `limit`, `after` of `/api/v1/topics`.
pub fn topics_query(params: &Params) -> Result<Page, String> {
    only(params, &["limit", "after"])?;
    page(params)
}

/// The page of `items` (sorted by `key`) after the cursor, and the cursor of the next page.
pub fn paginate<T>(
    items: impl IntoIterator<Item = T>,
    page: &Page,
    key: impl Fn(&T) -> &str,
) -> (Vec<T>, Option<String>) {
    let mut out: Vec<T> = Vec::new();
    let mut more = false;
    for item in items {
        if page.after.as_deref().is_some_and(|a| key(&item) <= a) {
            continue;
        }
        if out.len() == page.limit {
            more = true;
            break;
        }
        out.push(item);
    }
    let next = if more { out.last().map(|i| key(i).to_string()) } else { None };
    (out, next)
}

#[cfg(test)]
mod tests;
