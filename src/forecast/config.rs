//! The `[forecast]` section of the config file and the known events it lists.

use super::*;

/// `[forecast]` section of the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForecastConfig {
    /// Price of one GB·h (any currency); actions then carry a money cost.
    pub price_per_gbh: Option<f64>,
    /// Nominal coverage of the intervals, in (0, 1).
    pub interval_coverage: f64,
    /// Known events (`[[forecast.events]]`).
    pub events: Vec<EventConfig>,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self {
            price_per_gbh: None,
            interval_coverage: DEFAULT_INTERVAL_COVERAGE,
            events: Vec::new(),
        }
    }
}

impl ForecastConfig {
    /// Check the section (called when the config file is read).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(p) = self.price_per_gbh {
            if !(p.is_finite() && p >= 0.0) {
                return Err("[forecast] price_per_gbh must be a number ≥ 0".into());
            }
        }
        if !(self.interval_coverage > 0.0 && self.interval_coverage < 1.0) {
            return Err("[forecast] interval_coverage must be in (0, 1)".into());
        }
        for e in &self.events {
            if e.times().is_none() {
                return Err(format!(
                    "[forecast] event {:?}: start and end must be RFC 3339 UTC times with start < end",
                    e.name
                ));
            }
            if !(e.demand_factor.is_finite() && e.demand_factor >= 0.0) {
                return Err(format!(
                    "[forecast] event {:?}: demand_factor must be a number ≥ 0",
                    e.name
                ));
            }
        }
        Ok(())
    }

    /// The maintenance windows, as times.
    pub fn maintenance(&self) -> Vec<(SystemTime, SystemTime)> {
        self.events
            .iter()
            .filter(|e| e.kind == EventKind::Maintenance)
            .filter_map(EventConfig::times)
            .collect()
    }
}

/// A known event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// No jobs run while it lasts.
    Maintenance,
    /// Demand × `demand_factor` while it lasts.
    Campaign,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Maintenance => "maintenance",
            EventKind::Campaign => "campaign",
        }
    }
}

/// One `[[forecast.events]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventConfig {
    pub name: String,
    pub kind: EventKind,
    /// RFC 3339 UTC.
    pub start: String,
    pub end: String,
    /// Campaigns: demand multiplier while it lasts (default 2).
    #[serde(default = "default_demand_factor")]
    pub demand_factor: f64,
}

pub(super) fn default_demand_factor() -> f64 {
    2.0
}

impl EventConfig {
    /// Start and end, when both parse and start < end.
    pub fn times(&self) -> Option<(SystemTime, SystemTime)> {
        let s = humantime::parse_rfc3339_weak(&self.start).ok()?;
        let e = humantime::parse_rfc3339_weak(&self.end).ok()?;
        (s < e).then_some((s, e))
    }
}

/// Known events and what each does to demand over a horizon.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventEffect {
    pub name: String,
    /// `maintenance` or `campaign`.
    pub kind: &'static str,
    pub start: String,
    pub end: String,
    /// Hours of the horizon the event covers.
    pub overlap_hours: f64,
    /// Demand multiplier while it lasts (0 for maintenance).
    pub demand_factor: f64,
}

/// Effects of the configured events on `[now, now + h)`.
pub fn event_effects(cfg: &ForecastConfig, now: SystemTime, h: f64) -> Vec<EventEffect> {
    let t0 = now;
    let t1 = now + Duration::try_from_secs_f64(h * 3600.0).unwrap_or_default();
    cfg.events
        .iter()
        .filter_map(|e| {
            let (s, t) = e.times()?;
            let a = s.max(t0);
            let b = t.min(t1);
            let overlap = b.duration_since(a).ok()?.as_secs_f64() / 3600.0;
            (overlap > 0.0).then(|| EventEffect {
                name: e.name.clone(),
                kind: e.kind.as_str(),
                start: rfc3339(s),
                end: rfc3339(t),
                overlap_hours: overlap,
                demand_factor: match e.kind {
                    EventKind::Maintenance => 0.0,
                    EventKind::Campaign => e.demand_factor,
                },
            })
        })
        .collect()
}

/// Multiplier of the jobs over a horizon of `h` hours: each event replaces the demand of
/// the hours it covers by its factor × the demand (at least 0).
pub(super) fn event_factor(events: &[EventEffect], h: f64) -> f64 {
    events
        .iter()
        .map(|e| (e.demand_factor - 1.0) * e.overlap_hours / h)
        .fold(1.0f64, |acc, d| acc + d)
        .max(0.0)
}
