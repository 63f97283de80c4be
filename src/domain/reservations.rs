//! Reservations: sandboxes set aside for a scheduled class (docs/api.md, *Reservations*).
//!
//! Rule: from `starts_at` less the lead time until `ends_at`, a reservation holds `count`
//! sandboxes for its lab: rows move from `available` to `reserved` (with `reserved_for`
//! naming it) until the rows it holds plus the allocations already drawn from it make
//! `count`. Only its lab's allocations draw on those rows, and they draw on them first.
//! What is still held at `ends_at`, or when it is deleted, returns to the pool. A new
//! reservation is refused with its shortfall when the pool, less what overlapping
//! reservations still need, cannot hold it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::time::EpochSecs;
use super::{LabName, NamePrefix, ValidationError};

/// What every reservation id starts with.
pub const ID_PREFIX: &str = "res_";
/// The most sandboxes one reservation may hold.
pub const COUNT_LIMIT: u64 = 100_000;
/// The longest a reservation may last, from `starts_at` to `ends_at`.
pub const LONGEST_SECS: i64 = 31 * 86_400;
/// How long an ended reservation stays listed (with what it used) before it is forgotten.
pub const KEPT_AFTER_END_SECS: i64 = 7 * 86_400;

/// A reservation as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Its id (`res_…`): `DELETE /v1/admin/reservations/{id}`, and `reserved_for` on rows.
    pub id: String,
    /// The lab (`X-Instruqt-Track-ID`) it holds sandboxes for.
    #[serde(rename = "track_name")]
    pub lab: String,
    /// Only sandboxes whose name starts with this are held; empty: any.
    #[serde(default)]
    pub name_prefix: String,
    /// How many sandboxes the class needs.
    pub count: u64,
    /// When the class starts (sandboxes are held from the lead time before).
    pub starts_at: EpochSecs,
    /// When it ends: what is unused returns to the pool.
    pub ends_at: EpochSecs,
    /// When an admin made it.
    pub created_at: EpochSecs,
}

/// The settings as sent, before validation.
#[derive(Debug, Clone, Default)]
pub struct RawReservationSpec {
    /// `track_name`.
    pub track_name: Option<String>,
    /// `name_prefix`.
    pub name_prefix: Option<String>,
    /// `count`.
    pub count: Option<i64>,
    /// `starts_at`, epoch seconds.
    pub starts_at: Option<i64>,
    /// `ends_at`, epoch seconds.
    pub ends_at: Option<i64>,
}

/// What a reservation holds and has given out, counted from the rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReservationCounts {
    /// Rows `reserved` for it now: set aside, not yet handed out.
    pub held: u64,
    /// Rows allocated from it (whatever became of them since).
    pub used: u64,
}

impl Reservation {
    /// Validates `raw` at `now` and makes the reservation `id` of it.
    pub fn parse(
        raw: RawReservationSpec,
        id: String,
        now: EpochSecs,
    ) -> Result<Self, ValidationError> {
        let RawReservationSpec {
            track_name,
            name_prefix,
            count,
            starts_at,
            ends_at,
        } = raw;
        let lab = LabName::parse(
            "track_name",
            track_name
                .as_deref()
                .ok_or_else(|| ValidationError::new("track_name", "is required"))?,
        )?;
        let name_prefix = match name_prefix.as_deref() {
            None | Some("") => String::new(),
            Some(prefix) => NamePrefix::parse("name_prefix", prefix)?
                .as_str()
                .to_owned(),
        };
        let count = count
            .and_then(|count| u64::try_from(count).ok())
            .filter(|count| (1..=COUNT_LIMIT).contains(count))
            .ok_or_else(|| {
                ValidationError::new("count", format!("must be between 1 and {COUNT_LIMIT}"))
            })?;
        let instant = |field: &'static str, value: Option<i64>| {
            value
                .filter(|at| *at > 0)
                .map(EpochSecs::new)
                .ok_or_else(|| ValidationError::new(field, "is required, in epoch seconds"))
        };
        let starts_at = instant("starts_at", starts_at)?;
        let ends_at = instant("ends_at", ends_at)?;
        if ends_at <= starts_at {
            return Err(ValidationError::new("ends_at", "must be after starts_at"));
        }
        if ends_at <= now {
            return Err(ValidationError::new("ends_at", "must be in the future"));
        }
        if ends_at - starts_at > LONGEST_SECS {
            return Err(ValidationError::new(
                "ends_at",
                format!(
                    "must be at most {} days after starts_at",
                    LONGEST_SECS / 86_400
                ),
            ));
        }
        Ok(Self {
            id,
            lab: lab.as_str().to_owned(),
            name_prefix,
            count,
            starts_at,
            ends_at,
            created_at: now,
        })
    }

    /// When it starts holding sandboxes: `starts_at` less `lead_secs`.
    pub fn holds_from(&self, lead_secs: i64) -> EpochSecs {
        self.starts_at - lead_secs
    }

    /// Whether it holds sandboxes at `now`.
    pub fn holding(&self, now: EpochSecs, lead_secs: i64) -> bool {
        self.holds_from(lead_secs) <= now && now < self.ends_at
    }

    /// Whether an allocation for `lab` at `prefix` may draw on it: its lab, and every row
    /// it holds matches the request's prefix.
    pub fn serves(&self, lab: &str, prefix: &str) -> bool {
        self.lab == lab && self.name_prefix.starts_with(prefix)
    }

    /// Whether its holding window and `other`'s overlap, and the same rows could serve both.
    fn competes_with(&self, other: &Self, lead_secs: i64) -> bool {
        let overlap = self.holds_from(lead_secs) < other.ends_at
            && other.holds_from(lead_secs) < self.ends_at;
        let shared = self.name_prefix.starts_with(&other.name_prefix)
            || other.name_prefix.starts_with(&self.name_prefix);
        overlap && shared && self.id != other.id
    }

    /// How many more it still needs, given what it holds and used.
    pub fn still_needed(&self, counts: ReservationCounts) -> u64 {
        self.count.saturating_sub(counts.used)
    }
}

/// The reservation an allocation for `lab` at `prefix` draws on at `now`: among those
/// holding and serving it, the one that ends first (so the class that leaves first
/// releases its rows first).
pub fn drawn_on<'a>(
    reservations: &'a [Reservation],
    lab: &str,
    prefix: &str,
    now: EpochSecs,
    lead_secs: i64,
) -> Option<&'a Reservation> {
    reservations
        .iter()
        .filter(|r| r.holding(now, lead_secs) && r.serves(lab, prefix))
        .min_by_key(|r| (r.ends_at, r.id.clone()))
}

/// How many sandboxes `new` lacks: the pool at its prefix (`pool`: rows available or
/// reserved there) less what competing reservations still need, against its count. Zero:
/// it fits.
pub fn shortfall(
    new: &Reservation,
    existing: &[Reservation],
    counts: &HashMap<String, ReservationCounts>,
    pool: u64,
    lead_secs: i64,
) -> u64 {
    let promised: u64 = existing
        .iter()
        .filter(|other| new.competes_with(other, lead_secs))
        .map(|other| other.still_needed(counts.get(&other.id).copied().unwrap_or_default()))
        .sum();
    new.count.saturating_sub(pool.saturating_sub(promised))
}

/// What the reservations job does for one reservation id that has rows or a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// Move this many more `available` rows at its prefix to `reserved` for it.
    Hold(u64),
    /// Return every row it holds to the pool (it ended, was deleted, or has not begun).
    Return,
    /// Nothing to do.
    Keep,
}

/// What to do for a reservation (`None`: no record any more, deleted) that `counts` says
/// holds and used so many rows, at `now`.
pub fn plan(
    reservation: Option<&Reservation>,
    counts: ReservationCounts,
    now: EpochSecs,
    lead_secs: i64,
) -> Holding {
    match reservation {
        Some(r) if r.holding(now, lead_secs) => {
            let wanted = r.still_needed(counts);
            if counts.held < wanted {
                Holding::Hold(wanted - counts.held)
            } else if counts.held > wanted {
                // More than it can use (never by this job; a restore of an older export):
                // give everything back, and the next run holds exactly what is needed.
                Holding::Return
            } else {
                Holding::Keep
            }
        }
        _ if counts.held > 0 => Holding::Return,
        _ => Holding::Keep,
    }
}

/// Whether an ended reservation's record may be forgotten at `now`.
pub fn forgotten(reservation: &Reservation, now: EpochSecs) -> bool {
    now >= reservation.ends_at + KEPT_AFTER_END_SECS
}

/// A new reservation id from random bytes.
pub fn new_id(random: [u8; 8]) -> String {
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{ID_PREFIX}{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEAD: i64 = 1800;

    fn reservation(
        id: &str,
        lab: &str,
        prefix: &str,
        count: u64,
        from: i64,
        to: i64,
    ) -> Reservation {
        Reservation {
            id: id.to_owned(),
            lab: lab.to_owned(),
            name_prefix: prefix.to_owned(),
            count,
            starts_at: EpochSecs::new(from),
            ends_at: EpochSecs::new(to),
            created_at: EpochSecs::new(1),
        }
    }

    fn raw(count: i64, from: i64, to: i64) -> RawReservationSpec {
        RawReservationSpec {
            track_name: Some("lab-a".into()),
            name_prefix: None,
            count: Some(count),
            starts_at: Some(from),
            ends_at: Some(to),
        }
    }

    #[test]
    fn a_spec_is_checked_field_by_field() {
        let now = EpochSecs::new(10_000);
        let ok = Reservation::parse(raw(300, 20_000, 30_000), "res_1".into(), now).unwrap();
        assert_eq!((ok.count, ok.name_prefix.as_str()), (300, ""));
        let field = |raw| {
            Reservation::parse(raw, "res_1".into(), now)
                .unwrap_err()
                .field
        };
        assert_eq!(field(raw(0, 20_000, 30_000)), "count");
        assert_eq!(field(raw(100_001, 20_000, 30_000)), "count");
        assert_eq!(field(raw(1, 20_000, 20_000)), "ends_at");
        assert_eq!(field(raw(1, 1_000, 9_000)), "ends_at", "already over");
        assert_eq!(field(raw(1, 20_000, 20_000 + LONGEST_SECS + 1)), "ends_at");
        assert_eq!(
            field(RawReservationSpec {
                track_name: None,
                ..raw(1, 20_000, 30_000)
            }),
            "track_name"
        );
        assert_eq!(
            field(RawReservationSpec {
                starts_at: None,
                ..raw(1, 20_000, 30_000)
            }),
            "starts_at"
        );
        let bad_prefix = RawReservationSpec {
            name_prefix: Some("a\u{7}".into()),
            ..raw(1, 20_000, 30_000)
        };
        assert_eq!(field(bad_prefix), "name_prefix");
    }

    #[test]
    fn it_holds_from_the_lead_time_before_its_start_until_its_end() {
        let r = reservation("res_1", "lab-a", "", 3, 10_000, 20_000);
        assert!(!r.holding(EpochSecs::new(10_000 - LEAD - 1), LEAD));
        assert!(r.holding(EpochSecs::new(10_000 - LEAD), LEAD));
        assert!(r.holding(EpochSecs::new(19_999), LEAD));
        assert!(
            !r.holding(EpochSecs::new(20_000), LEAD),
            "its end returns the rows"
        );
    }

    #[test]
    fn only_its_lab_draws_on_it_and_only_at_a_prefix_its_rows_all_match() {
        let r = reservation("res_1", "lab-a", "lab-", 3, 10_000, 20_000);
        assert!(r.serves("lab-a", ""));
        assert!(r.serves("lab-a", "lab"));
        assert!(r.serves("lab-a", "lab-"));
        assert!(
            !r.serves("lab-a", "lab-x"),
            "its rows need not start with lab-x"
        );
        assert!(!r.serves("lab-b", ""));
        let early = reservation("res_2", "lab-a", "", 3, 10_000, 15_000);
        let all = [r.clone(), early.clone()];
        let now = EpochSecs::new(12_000);
        assert_eq!(
            drawn_on(&all, "lab-a", "", now, LEAD),
            Some(&early),
            "the one ending first"
        );
        assert_eq!(drawn_on(&all, "lab-a", "lab-", now, LEAD), Some(&r));
        assert_eq!(
            drawn_on(&all, "lab-a", "", EpochSecs::new(16_000), LEAD),
            Some(&r)
        );
        assert_eq!(drawn_on(&all, "lab-b", "", now, LEAD), None);
    }

    #[test]
    fn the_shortfall_counts_only_overlapping_reservations_on_shared_rows() {
        let new = reservation("new", "lab-a", "lab-", 300, 10_000, 20_000);
        let overlapping = reservation("o", "lab-b", "", 200, 15_000, 25_000);
        let later = reservation("l", "lab-b", "lab-", 400, 20_000 + LEAD, 30_000);
        let elsewhere = reservation("e", "lab-c", "nios-", 400, 10_000, 20_000);
        let existing = [overlapping, later, elsewhere];
        let mut counts = HashMap::new();
        assert_eq!(shortfall(&new, &existing, &counts, 450, LEAD), 50);
        assert_eq!(shortfall(&new, &existing, &counts, 500, LEAD), 0);
        counts.insert(
            "o".to_owned(),
            ReservationCounts {
                held: 50,
                used: 150,
            },
        );
        assert_eq!(
            shortfall(&new, &existing, &counts, 350, LEAD),
            0,
            "o needs only 50 more"
        );
        assert_eq!(shortfall(&new, &existing, &counts, 100, LEAD), 250);
        assert_eq!(
            shortfall(&new, std::slice::from_ref(&new), &HashMap::new(), 300, LEAD),
            0,
            "not itself"
        );
    }

    #[test]
    fn the_job_holds_what_is_still_needed_and_returns_the_rest() {
        let r = reservation("res_1", "lab-a", "", 300, 10_000, 20_000);
        let at = |t| EpochSecs::new(t);
        let counts = |held, used| ReservationCounts { held, used };
        assert_eq!(
            plan(Some(&r), counts(0, 0), at(9_000), LEAD),
            Holding::Hold(300)
        );
        assert_eq!(
            plan(Some(&r), counts(100, 150), at(12_000), LEAD),
            Holding::Hold(50)
        );
        assert_eq!(
            plan(Some(&r), counts(150, 150), at(12_000), LEAD),
            Holding::Keep
        );
        assert_eq!(
            plan(Some(&r), counts(0, 300), at(12_000), LEAD),
            Holding::Keep
        );
        assert_eq!(
            plan(Some(&r), counts(10, 300), at(12_000), LEAD),
            Holding::Return
        );
        assert_eq!(
            plan(Some(&r), counts(0, 0), at(1_000), LEAD),
            Holding::Keep,
            "not yet"
        );
        assert_eq!(
            plan(Some(&r), counts(40, 260), at(20_000), LEAD),
            Holding::Return,
            "ended"
        );
        assert_eq!(
            plan(None, counts(40, 0), at(12_000), LEAD),
            Holding::Return,
            "deleted"
        );
        assert_eq!(plan(None, counts(0, 5), at(12_000), LEAD), Holding::Keep);
        assert!(!forgotten(&r, at(20_000 + KEPT_AFTER_END_SECS - 1)));
        assert!(forgotten(&r, at(20_000 + KEPT_AFTER_END_SECS)));
    }
}
