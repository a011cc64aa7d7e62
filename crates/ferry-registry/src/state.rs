//! The registry's state, rebuilt from the `_schemas` records (pure): subjects and their versions,
//! schemas by global id, compatibility levels and modes. Reads answer from it; a write is
//! decided here ([`State::plan_register`], [`State::plan_delete_subject`], ...) into records,
//! which the store writes and every instance applies when it reads them back.

use std::collections::{BTreeMap, HashMap};

use crate::error::ApiError;
use crate::records::{ClearSubjectValue, ConfigValue, DeleteSubjectValue, ModeValue, Record, Reference, SchemaValue};
use crate::schema::{Compatibility, Mode, SchemaType};

/// A schema known by its global id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub schema_type: SchemaType,
    pub schema: String,
    pub references: Vec<Reference>,
}

/// What makes two registrations the same schema (the same id): type, canonical text, references.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Identity {
    schema_type: SchemaType,
    canonical: String,
    references: Vec<Reference>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub id: i64,
    pub deleted: bool,
}

#[derive(Debug, Default)]
pub struct State {
    schemas: BTreeMap<i64, Schema>,
    ids: HashMap<Identity, i64>,
    subjects: BTreeMap<String, BTreeMap<i32, Version>>,
    global_compatibility: Option<Compatibility>,
    compatibility: HashMap<String, Compatibility>,
    global_mode: Option<Mode>,
    modes: HashMap<String, Mode>,
    /// The highest id ever seen: ids are never reused, even after a permanent delete.
    max_id: i64,
    /// Records that could not be applied (reported, never fatal).
    pub malformed: u64,
}

/// Which versions a listing includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Live ones only (the default).
    Exclude,
    /// Live and soft-deleted (`deleted=true`).
    Include,
    /// Soft-deleted only (`deletedOnly=true`).
    Only,
}

impl Deleted {
    fn admits(self, deleted: bool) -> bool {
        match self {
            Deleted::Exclude => !deleted,
            Deleted::Include => true,
            Deleted::Only => deleted,
        }
    }
}

impl State {
    /// Applies one record read from `_schemas` (in log order).
    pub fn apply(&mut self, record: Record) {
        match record {
            Record::Schema { subject, version, value: Some(v) } => {
                let Ok(schema_type) = SchemaType::from_name(v.schema_type.as_deref()) else {
                    self.malformed += 1;
                    return;
                };
                self.max_id = self.max_id.max(v.id);
                let identity = Identity { schema_type, canonical: crate::schema::canonical(schema_type, &v.schema), references: v.references.clone() };
                self.ids.entry(identity).or_insert(v.id);
                self.schemas.entry(v.id).or_insert(Schema { schema_type, schema: v.schema, references: v.references });
                self.subjects.entry(subject).or_default().insert(version, Version { id: v.id, deleted: v.deleted });
            }
            Record::Schema { subject, version, value: None } => {
                // A permanent delete of one version. The schema text stays known by its id while
                // any version still uses it (the id is never given to another schema).
                if let Some(versions) = self.subjects.get_mut(&subject) {
                    versions.remove(&version);
                    if versions.is_empty() {
                        self.subjects.remove(&subject);
                    }
                }
            }
            Record::Config { subject: None, value } => self.global_compatibility = value.and_then(|v| Compatibility::parse(&v.compatibility_level).ok()),
            Record::Config { subject: Some(s), value } => set_or_clear(&mut self.compatibility, s, value.and_then(|v| Compatibility::parse(&v.compatibility_level).ok())),
            Record::Mode { subject: None, value } => self.global_mode = value.and_then(|v| Mode::parse(&v.mode).ok()),
            Record::Mode { subject: Some(s), value } => set_or_clear(&mut self.modes, s, value.and_then(|v| Mode::parse(&v.mode).ok())),
            Record::DeleteSubject { subject, value: Some(v) } => {
                // Soft delete of every version up to `version`.
                if let Some(versions) = self.subjects.get_mut(&subject) {
                    for (_, entry) in versions.range_mut(..=v.version) {
                        entry.deleted = true;
                    }
                }
            }
            Record::ClearSubject { subject, value: Some(_) } => {
                // Permanent delete of the soft-deleted versions.
                if let Some(versions) = self.subjects.get_mut(&subject) {
                    versions.retain(|_, v| !v.deleted);
                    if versions.is_empty() {
                        self.subjects.remove(&subject);
                    }
                }
            }
            Record::DeleteSubject { value: None, .. } | Record::ClearSubject { value: None, .. } | Record::Noop => {}
        }
    }

    /// 42205 when `subject` (or the registry) is in a read-only mode.
    pub fn check_writable(&self, subject: &str) -> Result<(), ApiError> {
        if matches!(self.mode(Some(subject)).0, Mode::ReadOnly | Mode::ReadOnlyOverride) {
            return Err(ApiError::not_permitted(&format!("Subject {subject} is in read-only mode")));
        }
        Ok(())
    }

    pub fn schema(&self, id: i64) -> Option<&Schema> {
        self.schemas.get(&id)
    }

    /// Schemas held (ids that resolve, soft-deleted ones included).
    pub fn schema_count(&self) -> usize {
        self.schemas.len()
    }

    pub fn max_id(&self) -> i64 {
        self.max_id
    }

    /// Subjects with at least one version `deleted` admits, in name order.
    pub fn subjects(&self, prefix: &str, deleted: Deleted) -> Vec<&str> {
        self.subjects
            .iter()
            .filter(|(s, versions)| s.starts_with(prefix) && versions.values().any(|v| deleted.admits(v.deleted)))
            .map(|(s, _)| s.as_str())
            .collect()
    }

    /// A subject's versions `deleted` admits; 40401 if it has none at all, 40404 if all are
    /// soft-deleted and those are not asked for.
    pub fn versions(&self, subject: &str, deleted: Deleted) -> Result<Vec<(i32, Version)>, ApiError> {
        let versions = self.subjects.get(subject).ok_or_else(|| ApiError::subject_not_found(subject))?;
        let out: Vec<(i32, Version)> = versions.iter().filter(|(_, v)| deleted.admits(v.deleted)).map(|(n, v)| (*n, *v)).collect();
        if out.is_empty() && deleted == Deleted::Exclude {
            return Err(ApiError::subject_not_found(subject));
        }
        Ok(out)
    }

    /// One version: a number, or `latest` / `-1` (the newest version `deleted` admits).
    pub fn version(&self, subject: &str, version: &str, deleted: bool) -> Result<(i32, Version), ApiError> {
        let versions = self.subjects.get(subject).ok_or_else(|| ApiError::subject_not_found(subject))?;
        let admits = |v: &Version| deleted || !v.deleted;
        if version == "latest" || version == "-1" {
            return versions.iter().rev().find(|(_, v)| admits(v)).map(|(n, v)| (*n, *v)).ok_or_else(|| ApiError::subject_not_found(subject));
        }
        let n: i32 = version.parse().ok().filter(|n| *n > 0).ok_or_else(|| ApiError::invalid_version(version))?;
        match versions.get(&n) {
            Some(v) if admits(v) => Ok((n, *v)),
            _ => Err(ApiError::version_not_found(n)),
        }
    }

    /// The (subject, version) pairs that use schema `id`.
    pub fn uses_of(&self, id: i64, deleted: bool) -> Vec<(&str, i32)> {
        let mut out = Vec::new();
        for (subject, versions) in &self.subjects {
            for (n, v) in versions {
                if v.id == id && (deleted || !v.deleted) {
                    out.push((subject.as_str(), *n));
                }
            }
        }
        out
    }

    /// A referenced schema, if that subject version exists (live).
    pub fn referenced(&self, r: &Reference) -> Option<Schema> {
        let v = self.subjects.get(&r.subject)?.get(&r.version).filter(|v| !v.deleted)?;
        self.schemas.get(&v.id).cloned()
    }

    /// Ids of the live schemas that reference `subject` at `version`.
    pub fn referenced_by(&self, subject: &str, version: i32) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .subjects
            .values()
            .flat_map(|versions| versions.values())
            .filter(|v| !v.deleted)
            .map(|v| v.id)
            .filter(|id| self.schemas.get(id).is_some_and(|s| s.references.iter().any(|r| r.subject == subject && r.version == version)))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The compatibility level for `subject` (`None`: the global one), and whether it is the
    /// subject's own setting.
    pub fn compatibility(&self, subject: Option<&str>, default: Compatibility) -> (Compatibility, bool) {
        match subject.and_then(|s| self.compatibility.get(s)) {
            Some(c) => (*c, true),
            None => (self.global_compatibility.unwrap_or(default), false),
        }
    }

    pub fn mode(&self, subject: Option<&str>) -> (Mode, bool) {
        match subject.and_then(|s| self.modes.get(s)) {
            Some(m) => (*m, true),
            None => (self.global_mode.unwrap_or(Mode::ReadWrite), false),
        }
    }

    /// A schema registered under `subject`: its version there (live), if any.
    pub fn lookup(&self, subject: &str, schema_type: SchemaType, canonical: &str, references: &[Reference], deleted: bool) -> Option<(i32, i64)> {
        let id = *self.ids.get(&Identity { schema_type, canonical: canonical.to_string(), references: references.to_vec() })?;
        self.subjects.get(subject)?.iter().rev().find(|(_, v)| v.id == id && (deleted || !v.deleted)).map(|(n, _)| (*n, id))
    }

    /// Registering a schema under `subject`: `Ok(Err(id))` when it is registered there already
    /// (live; nothing to write), else the record to write and the id it gets (its existing id
    /// anywhere, or the next one; in IMPORT mode the caller's). Compatibility is checked by the
    /// caller against [`State::to_check`].
    pub fn plan_register(&self, subject: &str, schema_type: SchemaType, schema: &str, references: &[Reference], import: Option<(i64, Option<i32>)>) -> Result<Result<Record, i64>, ApiError> {
        let canonical = crate::schema::canonical(schema_type, schema);
        let identity = Identity { schema_type, canonical: canonical.clone(), references: references.to_vec() };
        let existing = self.ids.get(&identity).copied();
        if import.is_none() {
            if let Some((_, id)) = self.lookup(subject, schema_type, &canonical, references, false) {
                return Ok(Err(id));
            }
        }
        for r in references {
            match self.subjects.get(&r.subject).and_then(|v| v.get(&r.version)) {
                Some(v) if !v.deleted => {}
                _ => return Err(ApiError::invalid_schema(&format!("reference '{}' names {} version {}, which does not exist", r.name, r.subject, r.version))),
            }
        }
        let id = match import {
            Some((id, _)) => {
                if let Some(known) = self.schemas.get(&id) {
                    if crate::schema::canonical(known.schema_type, &known.schema) != canonical || known.schema_type != schema_type {
                        return Err(ApiError::id_mismatch(id));
                    }
                }
                id
            }
            None => existing.unwrap_or(self.max_id + 1),
        };
        let latest = self.subjects.get(subject).and_then(|v| v.keys().next_back().copied()).unwrap_or(0);
        let version = match import {
            Some((_, Some(v))) => v,
            _ => latest + 1,
        };
        let schema_text = match self.schemas.get(&id) {
            Some(known) => known.schema.clone(),
            None => canonical,
        };
        Ok(Ok(Record::Schema {
            subject: subject.to_string(),
            version,
            value: Some(SchemaValue {
                subject: subject.to_string(),
                version,
                id,
                schema: schema_text,
                schema_type: schema_type.stored_name().map(String::from),
                references: references.to_vec(),
                deleted: false,
            }),
        }))
    }

    /// The live versions a new schema under `subject` must be compatible with: the latest only,
    /// or every one (transitive), newest first.
    pub fn to_check(&self, subject: &str, transitive: bool) -> Vec<(i32, i64, &Schema)> {
        let Some(versions) = self.subjects.get(subject) else { return Vec::new() };
        let live = versions.iter().rev().filter(|(_, v)| !v.deleted).filter_map(|(n, v)| Some((*n, v.id, self.schemas.get(&v.id)?)));
        if transitive {
            live.collect()
        } else {
            live.take(1).collect()
        }
    }

    /// Soft delete of a subject (every live version), or permanent delete of its soft-deleted
    /// versions. Returns the records and the versions deleted.
    pub fn plan_delete_subject(&self, subject: &str, permanent: bool) -> Result<(Vec<Record>, Vec<i32>), ApiError> {
        let versions = self.subjects.get(subject).ok_or_else(|| ApiError::subject_not_found(subject))?;
        let live: Vec<i32> = versions.iter().filter(|(_, v)| !v.deleted).map(|(n, _)| *n).collect();
        if permanent {
            if !live.is_empty() {
                return Err(ApiError::subject_not_soft_deleted(subject));
            }
            let all: Vec<i32> = versions.keys().copied().collect();
            let records = all.iter().map(|&version| Record::Schema { subject: subject.to_string(), version, value: None }).collect();
            return Ok((records, all));
        }
        if live.is_empty() {
            return Err(ApiError::subject_soft_deleted(subject));
        }
        for &n in &live {
            if let Some(v) = versions.get(&n) {
                if !self.referenced_by(subject, n).is_empty() {
                    return Err(ApiError::reference_exists(subject, n, v.id));
                }
            }
        }
        let latest = *live.last().expect("live is not empty");
        let record = Record::DeleteSubject { subject: subject.to_string(), value: Some(DeleteSubjectValue { subject: subject.to_string(), version: latest }) };
        Ok((vec![record], live))
    }

    /// Soft or permanent delete of one version (`latest`/`-1` or a number).
    pub fn plan_delete_version(&self, subject: &str, version: &str, permanent: bool) -> Result<(Record, i32), ApiError> {
        let (n, v) = self.version(subject, version, permanent)?;
        if permanent && !v.deleted {
            return Err(ApiError::version_not_soft_deleted(subject, n));
        }
        if !permanent && v.deleted {
            return Err(ApiError::version_soft_deleted(subject, n));
        }
        if !v.deleted && !self.referenced_by(subject, n).is_empty() {
            return Err(ApiError::reference_exists(subject, n, v.id));
        }
        let record = if permanent {
            Record::Schema { subject: subject.to_string(), version: n, value: None }
        } else {
            let schema = self.schemas.get(&v.id).ok_or_else(|| ApiError::store(&format!("schema {} of {subject} version {n} is unknown", v.id)))?;
            Record::Schema {
                subject: subject.to_string(),
                version: n,
                value: Some(SchemaValue {
                    subject: subject.to_string(),
                    version: n,
                    id: v.id,
                    schema: schema.schema.clone(),
                    schema_type: schema.schema_type.stored_name().map(String::from),
                    references: schema.references.clone(),
                    deleted: true,
                }),
            }
        };
        Ok((record, n))
    }

    pub fn config_record(subject: Option<&str>, level: Option<Compatibility>) -> Record {
        Record::Config { subject: subject.map(String::from), value: level.map(|c| ConfigValue { compatibility_level: c.name().to_string() }) }
    }

    pub fn mode_record(subject: Option<&str>, mode: Option<Mode>) -> Record {
        Record::Mode { subject: subject.map(String::from), value: mode.map(|m| ModeValue { mode: m.name().to_string() }) }
    }

    pub fn clear_record(subject: &str) -> Record {
        Record::ClearSubject { subject: subject.to_string(), value: Some(ClearSubjectValue { subject: subject.to_string() }) }
    }
}

/// A subject's own setting: set, or cleared (the global one applies again).
fn set_or_clear<T>(settings: &mut HashMap<String, T>, subject: String, value: Option<T>) {
    match value {
        Some(v) => {
            settings.insert(subject, v);
        }
        None => {
            settings.remove(&subject);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRING: &str = r#""string""#;
    const RECORD: &str = r#"{"type": "record", "name": "r", "fields": [{"name": "a", "type": "int"}]}"#;

    fn register(state: &mut State, subject: &str, schema: &str) -> i64 {
        match state.plan_register(subject, SchemaType::Avro, schema, &[], None).unwrap() {
            Ok(record) => {
                let Record::Schema { value: Some(v), .. } = &record else { panic!() };
                let id = v.id;
                state.apply(record);
                id
            }
            Err(id) => id,
        }
    }

    #[test]
    fn ids_are_global_and_a_schema_registered_again_keeps_its_id_and_version() {
        let mut s = State::default();
        let a = register(&mut s, "x-value", STRING);
        assert_eq!(a, 1);
        assert_eq!(register(&mut s, "x-value", "\"string\"  "), 1, "same canonical text, same subject: nothing new");
        assert_eq!(s.versions("x-value", Deleted::Exclude).unwrap().len(), 1);
        assert_eq!(register(&mut s, "y-value", STRING), 1, "another subject: the same id, a version there");
        assert_eq!(register(&mut s, "x-value", RECORD), 2);
        assert_eq!(s.version("x-value", "latest", false).unwrap(), (2, Version { id: 2, deleted: false }));
        assert_eq!(s.uses_of(1, false), vec![("x-value", 1), ("y-value", 1)]);
    }

    #[test]
    fn soft_then_permanent_delete_and_ids_are_never_reused() {
        let mut s = State::default();
        register(&mut s, "x", STRING);
        register(&mut s, "x", RECORD);
        assert_eq!(s.plan_delete_subject("x", true).unwrap_err().error_code, 40405, "permanent needs a soft delete first");
        let (records, versions) = s.plan_delete_subject("x", false).unwrap();
        assert_eq!(versions, vec![1, 2]);
        records.into_iter().for_each(|r| s.apply(r));
        assert_eq!(s.versions("x", Deleted::Exclude).unwrap_err().error_code, 40401);
        assert_eq!(s.versions("x", Deleted::Only).unwrap().len(), 2);
        assert_eq!(s.subjects("", Deleted::Exclude), Vec::<&str>::new());
        assert_eq!(s.subjects("", Deleted::Include), vec!["x"]);
        assert_eq!(s.plan_delete_subject("x", false).unwrap_err().error_code, 40404);
        assert!(s.schema(2).is_some(), "soft-deleted ids still resolve");
        // Registered again after a soft delete: the same id, a new version.
        assert_eq!(register(&mut s, "x", RECORD), 2);
        assert_eq!(s.version("x", "latest", false).unwrap().0, 3);
        let (record, n) = s.plan_delete_version("x", "3", false).unwrap();
        s.apply(record);
        let (records, _) = s.plan_delete_subject("x", true).unwrap();
        records.into_iter().for_each(|r| s.apply(r));
        assert!(s.versions("x", Deleted::Include).is_err());
        assert_eq!(n, 3);
        let third = r#"{"type": "enum", "name": "e", "symbols": ["A"]}"#;
        assert_eq!(register(&mut s, "z", third), 3, "id 2 was permanently deleted and is never given again");
    }

    #[test]
    fn a_referenced_version_cannot_be_deleted_and_references_must_exist() {
        let mut s = State::default();
        register(&mut s, "base", RECORD);
        let refs = [Reference { name: "r".into(), subject: "base".into(), version: 1 }];
        let record = s.plan_register("user", SchemaType::Avro, r#"{"type":"record","name":"u","fields":[{"name":"r","type":"r"}]}"#, &refs, None).unwrap().unwrap();
        s.apply(record);
        assert_eq!(s.referenced_by("base", 1), vec![2]);
        assert_eq!(s.plan_delete_version("base", "1", false).unwrap_err().error_code, 42206);
        let missing = [Reference { name: "m".into(), subject: "nowhere".into(), version: 1 }];
        assert_eq!(s.plan_register("user", SchemaType::Avro, STRING, &missing, None).unwrap_err().error_code, 42201);
    }

    #[test]
    fn versions_by_number_latest_and_minus_one() {
        let mut s = State::default();
        register(&mut s, "x", STRING);
        assert_eq!(s.version("x", "-1", false).unwrap().0, 1);
        assert_eq!(s.version("x", "2", false).unwrap_err().error_code, 40402);
        assert_eq!(s.version("x", "zero", false).unwrap_err().error_code, 42202);
        assert_eq!(s.version("x", "0", false).unwrap_err().error_code, 42202);
        assert_eq!(s.version("nope", "1", false).unwrap_err().error_code, 40401);
    }

    #[test]
    fn config_and_mode_per_subject_fall_back_to_global() {
        let mut s = State::default();
        assert_eq!(s.compatibility(Some("x"), Compatibility::Backward), (Compatibility::Backward, false));
        s.apply(State::config_record(None, Some(Compatibility::Full)));
        s.apply(State::config_record(Some("x"), Some(Compatibility::None)));
        assert_eq!(s.compatibility(Some("x"), Compatibility::Backward), (Compatibility::None, true));
        assert_eq!(s.compatibility(Some("y"), Compatibility::Backward), (Compatibility::Full, false));
        s.apply(State::config_record(Some("x"), None));
        assert_eq!(s.compatibility(Some("x"), Compatibility::Backward), (Compatibility::Full, false));
        s.apply(State::mode_record(Some("x"), Some(Mode::ReadOnly)));
        assert_eq!(s.mode(Some("x")), (Mode::ReadOnly, true));
        assert_eq!(s.mode(None), (Mode::ReadWrite, false));
    }

    #[test]
    fn import_mode_keeps_the_callers_id_and_refuses_a_different_schema_under_it() {
        let mut s = State::default();
        let record = s.plan_register("x", SchemaType::Avro, STRING, &[], Some((42, Some(5)))).unwrap().unwrap();
        s.apply(record);
        assert_eq!(s.version("x", "5", false).unwrap().1.id, 42);
        assert_eq!(s.max_id(), 42);
        assert_eq!(s.plan_register("y", SchemaType::Avro, RECORD, &[], Some((42, None))).unwrap_err().error_code, 42207);
        assert_eq!(register(&mut s, "z", RECORD), 43, "new ids continue after the imported ones");
    }
}
