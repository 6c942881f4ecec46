//! Counters of the RESP front end (commands, errors, latencies,
//! connections) and the Prometheus text rendering of those plus the
//! replication counters.
//!
//! Guarantees: recording is lock-free (relaxed atomics, one fixed-size
//! histogram per command name), so it costs the hot path a few atomic adds;
//! the rendering follows the Prometheus text exposition format 0.0.4.

use crate::kv::backend::{BackendMetrics, NodeStatus};
use crate::kv::command::COMMAND_NAMES;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Histogram bucket upper bounds, in microseconds.
const BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// One command's counters.
#[derive(Debug, Default)]
struct CmdStats {
    calls: AtomicU64,
    errors: AtomicU64,
    /// Cumulative counts are computed at render time; these are per bucket,
    /// with one extra for +Inf.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

/// The front end's counters.
#[derive(Debug)]
pub struct Metrics {
    cmds: Vec<CmdStats>,
    /// Requests whose command was unknown or malformed.
    rejected: AtomicU64,
    /// Connections accepted so far.
    connections_total: AtomicU64,
    /// Connections open now.
    connections_open: AtomicU64,
    /// Protocol errors that closed a connection.
    protocol_errors: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            cmds: COMMAND_NAMES.iter().map(|_| CmdStats::default()).collect(),
            rejected: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Records one command (by [`crate::kv::command::Request::name`]) that
    /// took `latency`, and whether it was answered with an error.
    pub fn record(&self, name: &str, latency: Duration, error: bool) {
        let Some(i) = COMMAND_NAMES.iter().position(|n| *n == name) else {
            return;
        };
        let Some(s) = self.cmds.get(i) else { return };
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        s.calls.fetch_add(1, Relaxed);
        if error {
            s.errors.fetch_add(1, Relaxed);
        }
        s.sum_us.fetch_add(us, Relaxed);
        let b = BUCKETS_US
            .iter()
            .position(|&ub| us <= ub)
            .unwrap_or(BUCKETS_US.len());
        if let Some(c) = s.buckets.get(b) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Records a request that was not a valid command.
    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Relaxed);
    }

    /// Records a connection closed by a protocol error.
    pub fn protocol_error(&self) {
        self.protocol_errors.fetch_add(1, Relaxed);
    }

    /// Records a new connection.
    pub fn connection_opened(&self) {
        self.connections_total.fetch_add(1, Relaxed);
        self.connections_open.fetch_add(1, Relaxed);
    }

    /// Records a closed connection.
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }

    /// Total commands recorded (all names).
    pub fn total_commands(&self) -> u64 {
        self.cmds.iter().map(|s| s.calls.load(Relaxed)).sum()
    }

    /// Renders everything in the Prometheus text format.
    pub fn render(&self, status: &NodeStatus, b: &BackendMetrics) -> String {
        let mut o = String::with_capacity(8 * 1024);
        let counter = |o: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            &mut o,
            "vsync_kv_deliveries_total",
            "Replicated commands delivered and applied.",
            b.deliveries as f64,
        );
        counter(
            &mut o,
            "vsync_kv_view_changes_total",
            "Views installed by this replica.",
            b.view_changes as f64,
        );
        counter(
            &mut o,
            "vsync_kv_state_transfer_sent_bytes_total",
            "Snapshot bytes sent as a state-transfer donor.",
            b.state_transfer_bytes_sent as f64,
        );
        counter(
            &mut o,
            "vsync_kv_state_transfer_received_bytes_total",
            "Snapshot bytes received as a joiner.",
            b.state_transfer_bytes_received as f64,
        );
        counter(
            &mut o,
            "vsync_kv_state_transfers_received_total",
            "State transfers received as a joiner (catch-ups included).",
            b.state_transfers_received as f64,
        );
        counter(
            &mut o,
            "vsync_kv_catch_ups_received_total",
            "State transfers that sent only the commands this replica lacked.",
            b.catch_ups_received as f64,
        );
        counter(
            &mut o,
            "vsync_kv_checkpoints_total",
            "Checkpoints taken.",
            b.checkpoints as f64,
        );
        counter(
            &mut o,
            "vsync_kv_checkpoint_seconds_total",
            "Time spent taking checkpoints.",
            b.checkpoint_seconds_total,
        );
        let _ = writeln!(
            o,
            "# HELP vsync_kv_last_checkpoint_seconds Duration of the last checkpoint.\n# TYPE vsync_kv_last_checkpoint_seconds gauge\nvsync_kv_last_checkpoint_seconds {}",
            b.last_checkpoint_seconds
        );
        let _ = writeln!(
            o,
            "# HELP vsync_kv_position Replicated commands applied by this replica.\n# TYPE vsync_kv_position gauge\nvsync_kv_position {}",
            status.position
        );
        let _ = writeln!(
            o,
            "# HELP vsync_kv_members Members of the current view.\n# TYPE vsync_kv_members gauge\nvsync_kv_members {}",
            status.members.len()
        );
        let _ = writeln!(
            o,
            "# HELP vsync_kv_minority 1 while this replica is blocked in a minority partition.\n# TYPE vsync_kv_minority gauge\nvsync_kv_minority {}",
            u8::from(status.partition == "minority")
        );
        let _ = writeln!(
            o,
            "# HELP vsync_kv_keys Keys stored.\n# TYPE vsync_kv_keys gauge\nvsync_kv_keys {}",
            status.keys
        );
        counter(
            &mut o,
            "vsync_kv_divergences_total",
            "Times this replica's side of a partition lost a merge (partitionable policy).",
            status.divergences as f64,
        );
        counter(
            &mut o,
            "vsync_kv_discarded_writes_total",
            "Writes discarded by lost partition merges (partitionable policy).",
            status.discarded_writes as f64,
        );
        counter(
            &mut o,
            "vsync_kv_connections_total",
            "RESP connections accepted.",
            self.connections_total.load(Relaxed) as f64,
        );
        let _ = writeln!(
            o,
            "# HELP vsync_kv_connections RESP connections open.\n# TYPE vsync_kv_connections gauge\nvsync_kv_connections {}",
            self.connections_open.load(Relaxed)
        );
        counter(
            &mut o,
            "vsync_kv_rejected_requests_total",
            "Requests answered with an unknown-command, arity or syntax error.",
            self.rejected.load(Relaxed) as f64,
        );
        counter(
            &mut o,
            "vsync_kv_protocol_errors_total",
            "Connections closed after a malformed frame.",
            self.protocol_errors.load(Relaxed) as f64,
        );
        o.push_str("# HELP vsync_kv_commands_total RESP commands answered, by command.\n# TYPE vsync_kv_commands_total counter\n");
        for (name, s) in COMMAND_NAMES.iter().zip(&self.cmds) {
            let _ = writeln!(
                o,
                "vsync_kv_commands_total{{cmd=\"{name}\"}} {}",
                s.calls.load(Relaxed)
            );
        }
        o.push_str("# HELP vsync_kv_command_errors_total RESP commands answered with an error, by command.\n# TYPE vsync_kv_command_errors_total counter\n");
        for (name, s) in COMMAND_NAMES.iter().zip(&self.cmds) {
            let _ = writeln!(
                o,
                "vsync_kv_command_errors_total{{cmd=\"{name}\"}} {}",
                s.errors.load(Relaxed)
            );
        }
        o.push_str("# HELP vsync_kv_command_duration_seconds Time from a request's arrival to its reply, by command.\n# TYPE vsync_kv_command_duration_seconds histogram\n");
        for (name, s) in COMMAND_NAMES.iter().zip(&self.cmds) {
            let calls = s.calls.load(Relaxed);
            if calls == 0 {
                continue;
            }
            let mut cum = 0;
            for (ub, c) in BUCKETS_US.iter().zip(&s.buckets) {
                cum += c.load(Relaxed);
                let _ = writeln!(
                    o,
                    "vsync_kv_command_duration_seconds_bucket{{cmd=\"{name}\",le=\"{}\"}} {cum}",
                    *ub as f64 / 1e6
                );
            }
            cum += s.buckets.last().map_or(0, |c| c.load(Relaxed));
            let _ = writeln!(
                o,
                "vsync_kv_command_duration_seconds_bucket{{cmd=\"{name}\",le=\"+Inf\"}} {cum}"
            );
            let _ = writeln!(
                o,
                "vsync_kv_command_duration_seconds_sum{{cmd=\"{name}\"}} {}",
                s.sum_us.load(Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                o,
                "vsync_kv_command_duration_seconds_count{{cmd=\"{name}\"}} {cum}"
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_match() {
        let m = Metrics::default();
        m.record("get", Duration::from_micros(30), false);
        m.record("get", Duration::from_micros(700), false);
        m.record("get", Duration::from_secs(5), true);
        m.record("no-such", Duration::from_micros(1), false);
        let text = m.render(&NodeStatus::default(), &BackendMetrics::default());
        assert!(text.contains("vsync_kv_commands_total{cmd=\"get\"} 3"));
        assert!(text.contains("vsync_kv_command_errors_total{cmd=\"get\"} 1"));
        assert!(
            text.contains("vsync_kv_command_duration_seconds_bucket{cmd=\"get\",le=\"0.00005\"} 1")
        );
        assert!(
            text.contains("vsync_kv_command_duration_seconds_bucket{cmd=\"get\",le=\"0.001\"} 2")
        );
        assert!(text.contains("vsync_kv_command_duration_seconds_bucket{cmd=\"get\",le=\"1\"} 2"));
        assert!(
            text.contains("vsync_kv_command_duration_seconds_bucket{cmd=\"get\",le=\"+Inf\"} 3")
        );
        assert!(text.contains("vsync_kv_command_duration_seconds_count{cmd=\"get\"} 3"));
        assert_eq!(m.total_commands(), 3);
    }
}
