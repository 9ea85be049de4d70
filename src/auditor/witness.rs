//! The completeness witness: evidence that does not come from audit-guard. The Kubernetes API
//! server's own audit log (audit.k8s.io/v1 Event JSON lines, written with the policy in
//! `manifests/audit/policy.yaml`) says which SignalProcessings were deleted, when and by whom;
//! Data Storage's records are held against it both ways.
//!
//! **What proves "gone".** With a finalizer, a DELETE only sets deletionTimestamp; the object
//! leaves at the update that removes its last finalizer. At Metadata level neither event says
//! whether the object left (both answer 200, neither carries the object), and a
//! `deletecollection` names no object at all. So the witness takes the deletion (a `delete` of
//! the name, or a `deletecollection` in its namespace) from the log, and "gone" from the API
//! server itself: the object is gone when a later successful `create` of the same name
//! appears in the log, or when the API server (read at the end) no longer has that object —
//! no object of that name, or one created after the deletion. With `--no-cluster`, every
//! deletion the log shows is taken as completed (a deletion still waiting then shows as
//! missing: a weaker mode for auditors without API access).
//!
//! **Lifecycles.** Names are reused, and Metadata-level delete and patch events carry no uid;
//! so a name's events are cut into lifecycles at each successful `create`, and a record
//! belongs to a lifecycle by namespace, name and time (its `deleted_at`, else `completed_at`,
//! inside the lifecycle), or by uid where the log shows one (updates carry it).
//!
//! **"Expected" deletions.** A record that carries `deleted_at` (trigger `deletion` or
//! `forced`) says its CR was being deleted at that moment. Where the log covers that moment
//! (between its first and last event) and that namespace, a successful `delete` of the name or
//! `deletecollection` of the namespace must span it (deletionTimestamp has second precision:
//! ±1 s); a record without one is listed — the trail claims a deletion the API server never
//! logged.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

pub const RESOURCE: &str = "signalprocessings";
pub const GROUP: &str = "kubernaut.ai";
/// deletionTimestamp is truncated to the second; requests take time.
const SLACK: Duration = Duration::seconds(1);

/// The parts of an audit.k8s.io/v1 Event the witness reads.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub api_version: String,
    #[serde(default, rename = "auditID")]
    pub audit_id: String,
    #[serde(default)]
    pub stage: String,
    pub verb: String,
    #[serde(default, rename = "requestURI")]
    pub request_uri: String,
    pub user: UserInfo,
    #[serde(default)]
    pub impersonated_user: Option<UserInfo>,
    #[serde(default)]
    pub object_ref: Option<ObjectRef>,
    #[serde(default)]
    pub response_status: Option<ResponseStatus>,
    pub request_received_timestamp: DateTime<Utc>,
    pub stage_timestamp: DateTime<Utc>,
}

#[derive(Deserialize, Debug, Clone, PartialEq, Default)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub api_group: String,
    #[serde(default)]
    pub subresource: String,
}

#[derive(Deserialize, Debug, Clone, PartialEq, Default)]
pub struct ResponseStatus {
    #[serde(default)]
    pub code: i32,
}

impl AuditEvent {
    fn object(&self) -> Option<&ObjectRef> {
        self.object_ref
            .as_ref()
            .filter(|o| o.resource == RESOURCE && o.api_group == GROUP && o.subresource.is_empty())
    }

    /// A dry-run request (`?dryRun=All`) changes nothing: no object is created or deleted.
    fn dry_run(&self) -> bool {
        self.request_uri
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|kv| kv.split('=').next() == Some("dryRun")))
    }

    fn succeeded(&self) -> bool {
        self.response_status.as_ref().is_some_and(|s| (200..300).contains(&s.code))
    }

    /// Who acted (the impersonated user when there is one).
    pub fn actor(&self) -> String {
        self.impersonated_user.as_ref().map_or_else(
            || self.user.username.clone(),
            |u| format!("{} (as {})", self.user.username, u.username),
        )
    }
}

/// How much of the input was usable.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStats {
    pub lines: u64,
    /// Lines that are not audit events (reported, never fatal: a log may hold other lines).
    pub unreadable: u64,
    /// Completed requests about signalprocessings (the main resource).
    pub signalprocessing_events: u64,
    pub first: Option<DateTime<Utc>>,
    pub last: Option<DateTime<Utc>>,
}

/// Reads audit log lines; keeps the completed requests about signalprocessings.
pub fn read_events<'a>(lines: impl Iterator<Item = &'a str>, stats: &mut LogStats, out: &mut Vec<AuditEvent>) {
    for line in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        stats.lines += 1;
        let Ok(ev) = serde_json::from_str::<AuditEvent>(line) else {
            stats.unreadable += 1;
            continue;
        };
        if ev.kind != "Event" || !ev.api_version.starts_with("audit.k8s.io/") {
            stats.unreadable += 1;
            continue;
        }
        // The log's span: every completed request, whatever it is about.
        if ev.stage == "ResponseComplete" {
            stats.first = Some(stats.first.map_or(ev.stage_timestamp, |f| f.min(ev.stage_timestamp)));
            stats.last = Some(stats.last.map_or(ev.stage_timestamp, |l| l.max(ev.stage_timestamp)));
        }
        if ev.stage == "ResponseComplete" && ev.object().is_some() && !ev.dry_run() {
            stats.signalprocessing_events += 1;
            out.push(ev);
        }
    }
}

/// A deletion request as the log shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Deletion {
    pub requested: DateTime<Utc>,
    pub completed: DateTime<Utc>,
    pub by: String,
    /// `delete` or `deletecollection`.
    pub verb: String,
}

/// A successful write as the log shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Write {
    pub at: DateTime<Utc>,
    pub by: String,
    pub verb: String,
}

/// One object of a name, from its create (if the log has it) to the next create.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Lifecycle {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub created: Option<DateTime<Utc>>,
    /// When the next object of the same name was created (this one was gone by then).
    pub succeeded_by: Option<DateTime<Utc>>,
    pub first_seen: DateTime<Utc>,
    pub deletion: Option<Deletion>,
    /// The last successful patch, update or delete (the object left at one of them).
    pub last_write: Option<Write>,
}

/// Cuts each name's events into lifecycles and applies each namespace's deletecollections.
pub fn lifecycles(events: &[AuditEvent]) -> Vec<Lifecycle> {
    let mut by_name: BTreeMap<(String, String), Vec<&AuditEvent>> = BTreeMap::new();
    let mut collections: BTreeMap<String, Vec<&AuditEvent>> = BTreeMap::new();
    for ev in events.iter().filter(|e| e.succeeded()) {
        let Some(o) = ev.object() else { continue };
        match (ev.verb.as_str(), o.name.is_empty()) {
            ("deletecollection", _) => collections.entry(o.namespace.clone()).or_default().push(ev),
            (_, false) => by_name.entry((o.namespace.clone(), o.name.clone())).or_default().push(ev),
            _ => {}
        }
    }
    let mut out = vec![];
    for ((namespace, name), mut evs) in by_name {
        evs.sort_by_key(|e| e.stage_timestamp);
        let mut current: Option<Lifecycle> = None;
        for ev in evs {
            if ev.verb == "create" {
                if let Some(mut done) = current.take() {
                    done.succeeded_by = Some(ev.stage_timestamp);
                    out.push(done);
                }
            }
            let lc = current.get_or_insert_with(|| Lifecycle {
                namespace: namespace.clone(),
                name: name.clone(),
                uid: None,
                created: None,
                succeeded_by: None,
                first_seen: ev.stage_timestamp,
                deletion: None,
                last_write: None,
            });
            if let Some(uid) = ev.object().map(|o| o.uid.clone()).filter(|u| !u.is_empty()) {
                lc.uid = Some(uid);
            }
            match ev.verb.as_str() {
                "create" => lc.created = Some(ev.stage_timestamp),
                "delete" | "patch" | "update" => {
                    if ev.verb == "delete" && lc.deletion.is_none() {
                        lc.deletion = Some(Deletion {
                            requested: ev.request_received_timestamp,
                            completed: ev.stage_timestamp,
                            by: ev.actor(),
                            verb: ev.verb.clone(),
                        });
                    }
                    lc.last_write = Some(Write {
                        at: ev.stage_timestamp,
                        by: ev.actor(),
                        verb: ev.verb.clone(),
                    });
                }
                _ => {}
            }
        }
        out.extend(current);
    }
    // A deletecollection applies to every lifecycle of its namespace alive when it ran (its
    // label selector is not something a Metadata-level log lets us evaluate; whether an object
    // actually went is decided by "gone" below).
    for lc in &mut out {
        for ev in collections.get(&lc.namespace).into_iter().flatten() {
            let alive =
                lc.created.is_none_or(|c| c <= ev.stage_timestamp) && lc.succeeded_by.is_none_or(|s| ev.request_received_timestamp < s);
            let earlier = lc.deletion.as_ref().is_some_and(|d| d.requested <= ev.request_received_timestamp);
            if alive && !earlier {
                lc.deletion = Some(Deletion {
                    requested: ev.request_received_timestamp,
                    completed: ev.stage_timestamp,
                    by: ev.actor(),
                    verb: ev.verb.clone(),
                });
            }
        }
    }
    out
}

/// An object the API server has now.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveObject {
    pub uid: String,
    pub created: DateTime<Utc>,
    pub deleting: bool,
}

/// What the API server holds at the end, by (namespace, name).
pub type Live = HashMap<(String, String), LiveObject>;

/// The parts of a stored record the witness reads.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RecordRef {
    pub id: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub trigger: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    pub completed_at: DateTime<Utc>,
    #[serde(default)]
    pub deleted_at: Option<DateTime<Utc>>,
}

impl RecordRef {
    /// The moment the record speaks of: its CR's deletion, else its completion.
    fn moment(&self) -> DateTime<Utc> {
        self.deleted_at.unwrap_or(self.completed_at)
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Missing {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub created: Option<DateTime<Utc>>,
    pub deletion: Deletion,
    pub last_write: Option<Write>,
    /// How the witness knows the object is gone.
    pub gone_because: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Unmatched {
    pub record: RecordRef,
    pub detail: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct WitnessReport {
    pub log: LogStats,
    pub namespaces: Vec<String>,
    pub lifecycles: u64,
    pub deletions: u64,
    pub gone: u64,
    pub records: u64,
    /// Deletions that completed (the object is gone) with no record.
    pub missing: Vec<Missing>,
    /// Deletions requested whose object is still there, waiting, with no record yet.
    pub pending: Vec<Missing>,
    /// Records that say their CR was being deleted at a moment the log covers, without a
    /// deletion in the log.
    pub records_without_deletion: Vec<Unmatched>,
    /// Whether the API server's current state was read (else every deletion counts as done).
    pub cluster_checked: bool,
    /// Whether recorded deletions were tied to transparency-log entries ([`tie_to_log`]).
    #[serde(default)]
    pub log_checked: bool,
    /// Recorded deletions whose record has a log index.
    #[serde(default)]
    pub logged: u64,
    /// Recorded deletions whose record the transparency log does not hold.
    #[serde(default)]
    pub without_log_entry: Vec<Unlogged>,
}

/// A deletion with its record, where no record of it is in the transparency log.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Unlogged {
    pub namespace: String,
    pub name: String,
    pub deletion: Deletion,
    /// The records that belong to the deleted object (none of them has a log index).
    pub record_ids: Vec<String>,
}

impl WitnessReport {
    pub fn ok(&self) -> bool {
        self.missing.is_empty() && self.records_without_deletion.is_empty() && self.without_log_entry.is_empty()
    }
}

fn belongs(r: &RecordRef, lc: &Lifecycle) -> bool {
    if r.namespace.as_deref() != Some(lc.namespace.as_str()) || r.name.as_deref() != Some(lc.name.as_str()) {
        return false;
    }
    if let (Some(a), Some(b)) = (&lc.uid, &r.uid) {
        return a == b;
    }
    let t = r.moment();
    lc.created.is_none_or(|c| t >= c - SLACK) && lc.succeeded_by.is_none_or(|s| t < s)
}

/// Whether (and why) a lifecycle's object is gone.
fn gone(lc: &Lifecycle, deletion: &Deletion, live: Option<&Live>) -> Option<String> {
    if let Some(s) = lc.succeeded_by {
        return Some(format!("another object of this name was created at {}", s.to_rfc3339()));
    }
    let Some(live) = live else {
        return Some("taken as completed (--no-cluster: the API server's state was not read)".into());
    };
    match live.get(&(lc.namespace.clone(), lc.name.clone())) {
        None => Some("the API server no longer has it".into()),
        Some(obj) if obj.created > deletion.completed + SLACK || lc.uid.as_ref().is_some_and(|u| *u != obj.uid) => Some(format!(
            "the API server's object of this name is a newer one (uid {}, created {})",
            obj.uid,
            obj.created.to_rfc3339()
        )),
        Some(_) => None,
    }
}

/// The records by their CR's (namespace, name).
fn records_by_name(records: &[RecordRef]) -> HashMap<(&str, &str), Vec<&RecordRef>> {
    let mut by_name: HashMap<(&str, &str), Vec<&RecordRef>> = HashMap::new();
    for r in records {
        if let (Some(ns), Some(name)) = (r.namespace.as_deref(), r.name.as_deref()) {
            by_name.entry((ns, name)).or_default().push(r);
        }
    }
    by_name
}

/// Holds the lifecycles (with the API server's state at the end, if read) against the records.
pub fn judge(lifecycles: &[Lifecycle], log: &LogStats, live: Option<&Live>, records: &[RecordRef], namespaces: &[String]) -> WitnessReport {
    let in_scope = |ns: &str| namespaces.is_empty() || namespaces.iter().any(|n| n == ns);
    let by_name = records_by_name(records);
    let mut report = WitnessReport {
        log: log.clone(),
        namespaces: namespaces.to_vec(),
        records: records.len() as u64,
        cluster_checked: live.is_some(),
        ..Default::default()
    };
    for lc in lifecycles.iter().filter(|lc| in_scope(&lc.namespace)) {
        report.lifecycles += 1;
        let Some(deletion) = &lc.deletion else { continue };
        report.deletions += 1;
        let recorded = by_name
            .get(&(lc.namespace.as_str(), lc.name.as_str()))
            .is_some_and(|rs| rs.iter().any(|r| belongs(r, lc)));
        let gone_because = gone(lc, deletion, live);
        if gone_because.is_some() {
            report.gone += 1;
        }
        if recorded {
            continue;
        }
        let live_deleting = live
            .and_then(|l| l.get(&(lc.namespace.clone(), lc.name.clone())))
            .is_some_and(|o| o.deleting);
        let entry = |gone_because: String| Missing {
            namespace: lc.namespace.clone(),
            name: lc.name.clone(),
            uid: lc.uid.clone(),
            created: lc.created,
            deletion: deletion.clone(),
            last_write: lc.last_write.clone(),
            gone_because,
        };
        match gone_because {
            Some(why) => report.missing.push(entry(why)),
            // Still there: waiting on its record only if it is being deleted (a deletecollection
            // whose selector did not match it leaves it untouched).
            None if live_deleting => report.pending.push(entry("still in the cluster, being deleted".into())),
            None => {}
        }
    }
    // Records that say their CR was being deleted, where the log should show it.
    let deletions: Vec<(&Lifecycle, &Deletion)> = lifecycles.iter().filter_map(|lc| lc.deletion.as_ref().map(|d| (lc, d))).collect();
    let covered = |t: DateTime<Utc>| log.first.is_some_and(|f| t >= f) && log.last.is_some_and(|l| t <= l);
    for r in records {
        let (Some(deleted_at), Some(ns), Some(name)) = (r.deleted_at, r.namespace.as_deref(), r.name.as_deref()) else {
            continue;
        };
        if !in_scope(ns) || !covered(deleted_at) {
            continue;
        }
        let matched = deletions.iter().any(|(lc, d)| {
            lc.namespace == ns
                && (lc.name == name || d.verb == "deletecollection")
                && deleted_at >= d.requested - SLACK
                && deleted_at <= d.completed + SLACK
        });
        if !matched {
            report.records_without_deletion.push(Unmatched {
                record: r.clone(),
                detail: format!(
                    "the record says {ns}/{name} was being deleted at {}, and the audit log (which covers that moment) shows no deletion of it then",
                    deleted_at.to_rfc3339()
                ),
            });
        }
    }
    report
}

/// The deletions in scope with the records that belong to their objects (empty: no record).
pub fn deletion_records<'a>(
    lifecycles: &'a [Lifecycle],
    records: &'a [RecordRef],
    namespaces: &[String],
) -> Vec<(&'a Lifecycle, &'a Deletion, Vec<&'a RecordRef>)> {
    let in_scope = |ns: &str| namespaces.is_empty() || namespaces.iter().any(|n| n == ns);
    let by_name = records_by_name(records);
    lifecycles
        .iter()
        .filter(|lc| in_scope(&lc.namespace))
        .filter_map(|lc| {
            let deletion = lc.deletion.as_ref()?;
            let candidates = by_name.get(&(lc.namespace.as_str(), lc.name.as_str()));
            let belonging = candidates.into_iter().flatten().copied().filter(|r| belongs(r, lc)).collect();
            Some((lc, deletion, belonging))
        })
        .collect()
}

/// Ties each recorded deletion to the transparency log: `indexes` maps record ids to their log
/// index (as Data Storage's inclusion endpoint answers). A deletion whose records have none is
/// named; deletions without a record are already reported as missing or pending.
pub fn tie_to_log(report: &mut WitnessReport, deletions: &[(&Lifecycle, &Deletion, Vec<&RecordRef>)], indexes: &HashMap<String, u64>) {
    report.log_checked = true;
    for (lc, deletion, recs) in deletions.iter().filter(|(_, _, recs)| !recs.is_empty()) {
        if recs.iter().any(|r| indexes.contains_key(&r.id)) {
            report.logged += 1;
        } else {
            report.without_log_entry.push(Unlogged {
                namespace: lc.namespace.clone(),
                name: lc.name.clone(),
                deletion: (*deletion).clone(),
                record_ids: recs.iter().map(|r| r.id.clone()).collect(),
            });
        }
    }
}

/// A people's summary, one line per finding.
pub fn to_text(r: &WitnessReport) -> String {
    let mut o = format!(
        "audit log: {} lines ({} unreadable), {} completed signalprocessings requests, from {} to {}\n",
        r.log.lines,
        r.log.unreadable,
        r.log.signalprocessing_events,
        r.log.first.map_or("-".into(), |t| t.to_rfc3339()),
        r.log.last.map_or("-".into(), |t| t.to_rfc3339())
    );
    o.push_str(&format!(
        "{} objects seen, {} deletions, {} gone{}; {} records read\n",
        r.lifecycles,
        r.deletions,
        r.gone,
        if r.cluster_checked {
            " (checked against the API server)"
        } else {
            " (API server not read: every deletion taken as completed)"
        },
        r.records
    ));
    o.push_str(&format!("MISSING (deletion completed, no record): {}\n", r.missing.len()));
    for m in &r.missing {
        o.push_str(&format!(
            "  {}/{} uid={} deleted by {} ({}) at {}; last write {}; gone: {}\n",
            m.namespace,
            m.name,
            m.uid.as_deref().unwrap_or("?"),
            m.deletion.by,
            m.deletion.verb,
            m.deletion.completed.to_rfc3339(),
            m.last_write
                .as_ref()
                .map_or("-".into(), |w| format!("{} by {} at {}", w.verb, w.by, w.at.to_rfc3339())),
            m.gone_because
        ));
    }
    o.push_str(&format!("pending (being deleted, waiting on its record): {}\n", r.pending.len()));
    for m in &r.pending {
        o.push_str(&format!(
            "  {}/{} deletion requested by {} at {}\n",
            m.namespace,
            m.name,
            m.deletion.by,
            m.deletion.requested.to_rfc3339()
        ));
    }
    o.push_str(&format!(
        "RECORDS WITHOUT A DELETION IN THE LOG: {}\n",
        r.records_without_deletion.len()
    ));
    for u in &r.records_without_deletion {
        o.push_str(&format!("  {}: {}\n", u.record.id, u.detail));
    }
    if r.log_checked {
        o.push_str(&format!(
            "recorded deletions with a transparency-log entry: {}\nDELETIONS WHOSE RECORD IS NOT IN THE LOG: {}\n",
            r.logged,
            r.without_log_entry.len()
        ));
        for u in &r.without_log_entry {
            o.push_str(&format!(
                "  {}/{} deleted by {} at {}: record {} has no log index\n",
                u.namespace,
                u.name,
                u.deletion.by,
                u.deletion.completed.to_rfc3339(),
                u.record_ids.join(", ")
            ));
        }
    } else {
        o.push_str("transparency log: not checked (records read from an export file)\n");
    }
    o
}

/// The namespaces of the records (for logs and messages).
pub fn namespaces_of(records: &[RecordRef]) -> BTreeSet<String> {
    records.iter().filter_map(|r| r.namespace.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(verb: &str, ns: &str, name: &str, user: &str, at: &str, code: i32) -> String {
        json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": "x", "stage": "ResponseComplete",
               "requestURI": format!("/apis/kubernaut.ai/v1alpha1/namespaces/{ns}/signalprocessings/{name}"), "verb": verb,
               "user": {"username": user, "groups": ["g"]},
               "objectRef": {"resource": "signalprocessings", "namespace": ns, "name": name, "apiGroup": "kubernaut.ai", "apiVersion": "v1alpha1"},
               "responseStatus": {"metadata": {}, "code": code},
               "requestReceivedTimestamp": at, "stageTimestamp": at})
        .to_string()
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn read(lines: &[String]) -> (Vec<AuditEvent>, LogStats) {
        let mut stats = LogStats::default();
        let mut out = vec![];
        read_events(lines.iter().map(String::as_str), &mut stats, &mut out);
        (out, stats)
    }

    fn rec(id: &str, ns: &str, name: &str, completed: &str, deleted: Option<&str>) -> RecordRef {
        RecordRef {
            id: id.into(),
            namespace: Some(ns.into()),
            name: Some(name.into()),
            uid: Some(id.into()),
            trigger: Some(if deleted.is_some() { "deletion" } else { "completion" }.into()),
            status: Some("completed".into()),
            completed_at: t(completed),
            deleted_at: deleted.map(t),
        }
    }

    fn live(entries: &[(&str, &str, &str, bool)]) -> Live {
        entries
            .iter()
            .map(|(ns, name, created, deleting)| {
                (
                    (ns.to_string(), name.to_string()),
                    LiveObject {
                        uid: "live".into(),
                        created: t(created),
                        deleting: *deleting,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_finalizer_deletion_with_its_record_is_complete() {
        let (events, stats) = read(&[
            ev("create", "ns", "a", "alice", "2026-01-01T10:00:00Z", 201),
            ev("delete", "ns", "a", "gc", "2026-01-01T11:00:00.2Z", 200),
            ev(
                "patch",
                "ns",
                "a",
                "system:serviceaccount:audit-guard:audit-guard",
                "2026-01-01T11:00:01Z",
                200,
            ),
        ]);
        let lcs = lifecycles(&events);
        assert_eq!(lcs.len(), 1);
        assert_eq!(lcs[0].deletion.as_ref().unwrap().by, "gc");
        let records = [rec("u1", "ns", "a", "2026-01-01T10:30:00Z", Some("2026-01-01T11:00:00Z"))];
        let r = judge(&lcs, &stats, Some(&live(&[])), &records, &[]);
        assert!(r.ok(), "{}", to_text(&r));
        assert_eq!((r.deletions, r.gone), (1, 1));
    }

    #[test]
    fn a_recorded_deletion_without_a_log_entry_is_named() {
        let (events, stats) = read(&[
            ev("create", "ns", "a", "alice", "2026-01-01T10:00:00Z", 201),
            ev("create", "ns", "b", "alice", "2026-01-01T10:00:00Z", 201),
            ev("create", "ns", "c", "alice", "2026-01-01T10:00:00Z", 201),
            ev("delete", "ns", "a", "gc", "2026-01-01T11:00:00Z", 200),
            ev("delete", "ns", "b", "gc", "2026-01-01T11:00:00Z", 200),
        ]);
        let lcs = lifecycles(&events);
        let records = [
            rec("ua", "ns", "a", "2026-01-01T10:30:00Z", Some("2026-01-01T11:00:00Z")),
            rec("ub", "ns", "b", "2026-01-01T10:30:00Z", Some("2026-01-01T11:00:00Z")),
        ];
        let mut r = judge(&lcs, &stats, Some(&live(&[])), &records, &[]);
        assert!(r.ok(), "{}", to_text(&r));
        let deletions = deletion_records(&lcs, &records, &[]);
        assert_eq!(deletions.len(), 2, "c was never deleted");
        tie_to_log(&mut r, &deletions, &HashMap::from([("ua".to_string(), 7)]));
        assert_eq!(r.logged, 1);
        assert_eq!(r.without_log_entry.len(), 1);
        assert_eq!(
            (r.without_log_entry[0].name.as_str(), r.without_log_entry[0].record_ids.clone()),
            ("b", vec!["ub".to_string()])
        );
        assert!(!r.ok());
        assert!(to_text(&r).contains("ns/b deleted by gc"), "{}", to_text(&r));
    }

    #[test]
    fn a_bypass_is_named_and_a_waiting_deletion_is_only_pending() {
        let (events, stats) = read(&[
            ev("create", "ns", "bypassed", "alice", "2026-01-01T10:00:00Z", 201),
            ev("create", "ns", "waiting", "alice", "2026-01-01T10:00:00Z", 201),
            ev("create", "ns", "untouched", "alice", "2026-01-01T10:00:00Z", 201),
            ev("patch", "ns", "bypassed", "admin", "2026-01-01T10:05:00Z", 200),
            ev("delete", "ns", "bypassed", "admin", "2026-01-01T10:06:00Z", 200),
            ev("delete", "ns", "waiting", "gc", "2026-01-01T10:06:00Z", 200),
            // A refused request changes nothing.
            ev("delete", "ns", "untouched", "mallory", "2026-01-01T10:06:00Z", 403),
        ]);
        let lcs = lifecycles(&events);
        let state = live(&[
            ("ns", "waiting", "2026-01-01T10:00:00Z", true),
            ("ns", "untouched", "2026-01-01T10:00:00Z", false),
        ]);
        let r = judge(&lcs, &stats, Some(&state), &[], &[]);
        assert_eq!(r.missing.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["bypassed"]);
        assert_eq!(r.missing[0].last_write.as_ref().unwrap().by, "admin");
        assert_eq!(r.pending.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["waiting"]);
        assert!(!r.ok());
        // Without the API server's state every deletion counts as done.
        let r = judge(&lcs, &stats, None, &[], &[]);
        assert_eq!(r.missing.len(), 2);
    }

    #[test]
    fn deletecollection_covers_the_namespace_and_the_api_server_says_what_went() {
        let mut coll =
            serde_json::from_str::<serde_json::Value>(&ev("deletecollection", "ns", "", "admin", "2026-01-01T11:00:00Z", 200)).unwrap();
        coll["objectRef"].as_object_mut().unwrap().remove("name");
        let (events, stats) = read(&[
            ev("create", "ns", "m1", "alice", "2026-01-01T10:00:00Z", 201),
            ev("create", "ns", "m2", "alice", "2026-01-01T10:00:00Z", 201),
            ev("create", "ns", "extra", "alice", "2026-01-01T10:00:00Z", 201),
            coll.to_string(),
            ev("patch", "ns", "m1", "controller", "2026-01-01T11:00:02Z", 200),
            ev("patch", "ns", "m2", "controller", "2026-01-01T11:00:02Z", 200),
        ]);
        let lcs = lifecycles(&events);
        let records = [
            rec("u1", "ns", "m1", "2026-01-01T10:30:00Z", None),
            rec("u2", "ns", "m2", "2026-01-01T10:30:00Z", Some("2026-01-01T11:00:00Z")),
        ];
        let state = live(&[("ns", "extra", "2026-01-01T10:00:00Z", false)]);
        let r = judge(&lcs, &stats, Some(&state), &records, &[]);
        assert!(r.ok(), "{}", to_text(&r));
        assert_eq!((r.gone, r.pending.len()), (2, 0), "the selector left extra alone");
        // m2's record gone: named.
        let r = judge(&lcs, &stats, Some(&state), &records[..1], &["ns".into()]);
        assert_eq!(r.missing.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["m2"]);
        // Another namespace is out of scope.
        assert!(judge(&lcs, &stats, Some(&state), &[], &["other".into()]).ok());
    }

    #[test]
    fn names_are_reused_across_lifecycles() {
        let (events, stats) = read(&[
            ev("create", "ns", "a", "alice", "2026-01-01T10:00:00Z", 201),
            ev("delete", "ns", "a", "gc", "2026-01-01T10:10:00Z", 200),
            ev("create", "ns", "a", "alice", "2026-01-01T10:20:00Z", 201),
            ev("delete", "ns", "a", "gc", "2026-01-01T10:30:00Z", 200),
        ]);
        let lcs = lifecycles(&events);
        assert_eq!(lcs.len(), 2);
        // The second object is still there (being deleted); only the first needs its record.
        let state = live(&[("ns", "a", "2026-01-01T10:20:00Z", true)]);
        let first = rec("u1", "ns", "a", "2026-01-01T10:05:00Z", None);
        let r = judge(&lcs, &stats, Some(&state), std::slice::from_ref(&first), &[]);
        assert!(r.ok() && r.pending.len() == 1, "{}", to_text(&r));
        // The first object's record alone does not cover the second once it is gone.
        let r = judge(&lcs, &stats, Some(&live(&[])), &[first], &[]);
        assert_eq!(r.missing.len(), 1);
        assert_eq!(r.missing[0].created, Some(t("2026-01-01T10:20:00Z")));
    }

    #[test]
    fn a_record_claiming_an_unlogged_deletion_is_listed() {
        let (events, stats) = read(&[
            ev("create", "ns", "a", "alice", "2026-01-01T10:00:00Z", 201),
            ev("delete", "ns", "a", "gc", "2026-01-01T11:00:00Z", 200),
            ev("create", "ns", "z", "alice", "2026-01-01T12:00:00Z", 201),
        ]);
        let lcs = lifecycles(&events);
        let good = rec("u1", "ns", "a", "2026-01-01T10:30:00Z", Some("2026-01-01T11:00:00Z"));
        let forged = rec("u2", "ns", "b", "2026-01-01T10:30:00Z", Some("2026-01-01T11:30:00Z"));
        let outside = rec("u3", "ns", "c", "2025-12-01T10:30:00Z", Some("2025-12-01T11:30:00Z"));
        let r = judge(&lcs, &stats, Some(&live(&[])), &[good, forged, outside], &[]);
        assert_eq!(
            r.records_without_deletion.iter().map(|u| u.record.id.as_str()).collect::<Vec<_>>(),
            ["u2"]
        );
    }

    #[test]
    fn other_lines_and_resources_are_counted_not_fatal() {
        let mut other = serde_json::from_str::<serde_json::Value>(&ev("delete", "ns", "p", "x", "2026-01-01T10:00:00Z", 200)).unwrap();
        other["objectRef"]["resource"] = json!("pods");
        let mut status = serde_json::from_str::<serde_json::Value>(&ev("patch", "ns", "a", "x", "2026-01-01T10:00:00Z", 200)).unwrap();
        status["objectRef"]["subresource"] = json!("status");
        let (events, stats) = read(&[
            "not json".into(),
            json!({"kind": "Other"}).to_string(),
            other.to_string(),
            status.to_string(),
        ]);
        assert!(events.is_empty());
        assert_eq!((stats.lines, stats.unreadable, stats.signalprocessing_events), (4, 2, 0));
        // A dry run creates nothing (the webhook probes of a test or of `kubectl --dry-run=server`).
        let mut dry = serde_json::from_str::<serde_json::Value>(&ev("create", "ns", "probe", "x", "2026-01-01T10:00:00Z", 201)).unwrap();
        dry["requestURI"] = json!("/apis/kubernaut.ai/v1alpha1/namespaces/ns/signalprocessings?dryRun=All&fieldManager=x");
        let (events, _) = read(&[dry.to_string()]);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(stats.first, Some(t("2026-01-01T10:00:00Z")));
    }
}
